"""The ETSI GS QKD 014 mapping (qkdn_sdk.codecs.etsi014): properties and the exact 014 answers.

The properties say that nothing a 014 peer sends is dropped (a 014 body decoded to a message and
encoded again is the same body), that our server's answers read back as the messages they came
from, and that no request, however bad, makes the decoder raise anything but a 400/404/405.
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import (
    IdentityMismatch,
    NotAuthorized,
    QkdnError,
    RemoteProtocolError,
    RequestRefused,
    UnknownApplication,
)
from qkdn_sdk.messages import Interface, Key, KeyId, ak, example, kq1
from tests.strategies import json_objects, json_values, messages

_ids = st.text(min_size=1, max_size=12)
_INTERFACES = st.sampled_from([Interface.AK, Interface.KQ1])


def _split(path: str) -> tuple[str, bytes]:
    path, _, query = path.partition("?")
    return path, query.encode()


def _round_trip(message: Any) -> Any:
    """``message`` encoded by our server and read back by our client."""
    status, body = etsi014.encode_response(message)
    request = (
        ak.StatusRequest(application_destination_id="b")
        if isinstance(message, ak.Status)
        else kq1.StatusRequest(slave_sae_id="b")
        if isinstance(message, kq1.Status)
        else ak.KeyRequest(application_destination_id="b")
        if isinstance(message, ak.ResponseToKeyRequest)
        else kq1.KeyRequest()
    )
    return etsi014.decode_response(request, status, orjson.dumps(body))


# --- our server to our client: every answer reads back as it was -------------------------------


def _successful(message: Any) -> Any:
    return attrs.evolve(message, response="success")


@given(
    st.one_of(
        messages(ak.Status),
        messages(kq1.Status),
        messages(ak.ResponseToKeyRequest).map(_successful),
        messages(kq1.ResponseToKeyRequest).map(_successful),
    )
)
def test_answers_read_back_as_they_were(message: Any) -> None:
    assert _round_trip(message) == message


# --- a 014 peer to us: nothing it sends is dropped --------------------------------------------

_key_request_bodies = st.fixed_dictionaries(
    {},
    optional={
        "number": st.integers(1, 2**53),
        "size": st.integers(1, 2**53),
        "additional_slave_SAE_IDs": st.lists(_ids, min_size=1, max_size=3),
        "extension_mandatory": st.lists(json_objects, min_size=1, max_size=3),
        "extension_optional": st.lists(json_objects, min_size=1, max_size=3),
    },
)


@given(_ids, _key_request_bodies, _INTERFACES)
def test_a_key_request_body_is_kept_whole(slave: str, body: dict[str, Any], interface: Any) -> None:
    path = etsi014.API_PREFIX + urllib.parse.quote(slave, safe="") + "/enc_keys"
    message = etsi014.decode_request("POST", path, b"", orjson.dumps(body), interface=interface)
    again = etsi014.encode_request(message)
    assert again.path.partition("?")[0] == path
    if again.method == "POST":
        assert again.body == body
    else:  # only number and size: the GET form of the same request
        assert again.body is None
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(again.path).query))
        assert query == {name: str(value) for name, value in body.items()}


@given(
    _ids,
    st.lists(
        st.fixed_dictionaries({"key_ID": _ids}, optional={"key_ID_extension": json_objects}),
        min_size=1,
        max_size=4,
    ),
    st.none() | json_objects,
    _INTERFACES,
)
def test_a_key_ids_body_is_kept_whole(
    master: str, key_ids: list[dict[str, Any]], extension: Any, interface: Any
) -> None:
    body: dict[str, Any] = {"key_IDs": key_ids}
    if extension is not None:
        body["key_IDs_extension"] = extension
    path = etsi014.API_PREFIX + urllib.parse.quote(master, safe="") + "/dec_keys"
    message = etsi014.decode_request("POST", path, b"", orjson.dumps(body), interface=interface)
    again = etsi014.encode_request(message)
    if again.method == "POST":
        assert (again.path, again.body) == (path, body)
    else:
        assert again.path == path + "?" + urllib.parse.urlencode({"key_ID": key_ids[0]["key_ID"]})
        assert body == {"key_IDs": [{"key_ID": key_ids[0]["key_ID"]}]}


_containers = st.fixed_dictionaries(
    {
        "keys": st.lists(
            st.fixed_dictionaries(
                {
                    "key_ID": _ids,
                    "key": st.binary(min_size=1, max_size=32).map(
                        lambda data: base64.b64encode(data).decode()
                    ),
                },
                optional={"key_ID_extension": json_objects, "key_extension": json_values},
            ),
            max_size=4,
        )
    },
    optional={"key_container_extension": json_objects},
)


@given(_containers)
def test_a_key_container_is_kept_whole(container: dict[str, Any]) -> None:
    for item in container["keys"]:  # a null member is no member, in 014 as in the SDK
        if item.get("key_extension", 0) is None:
            del item["key_extension"]
    response = etsi014.decode_response(
        ak.KeyRequest(application_destination_id="b"), 200, orjson.dumps(container)
    )
    status, body = etsi014.encode_response(response)
    assert status == 200
    assert _without_empty_id_extensions(body) == _without_empty_id_extensions(container)


def _without_empty_id_extensions(container: dict[str, Any]) -> dict[str, Any]:
    """An empty ``key_ID_extension`` beside a ``key_extension`` is the same as none."""
    keys = [
        {
            name: value
            for name, value in key.items()
            if not (name == "key_ID_extension" and not value and "key_extension" in key)
        }
        for key in container["keys"]
    ]
    return {**container, "keys": keys}


# --- nothing a peer sends makes the decoder fail otherwise ---------------------------------------


@given(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    st.sampled_from(["status", "enc_keys", "dec_keys", "other", ""]).flatmap(
        lambda name: st.text(max_size=8).map(
            lambda sae: etsi014.API_PREFIX + urllib.parse.quote(sae, safe="/") + "/" + name
        )
    )
    | st.text(max_size=30),
    st.binary(max_size=40) | st.sampled_from([b"number=2&size=256", b"key_ID=x", b"a=1&a=2"]),
    st.binary(max_size=60) | json_values.map(orjson.dumps),
    _INTERFACES,
)
def test_any_request_is_a_message_or_a_client_error(
    method: str, path: str, query: bytes, body: bytes, interface: Any
) -> None:
    try:
        message = etsi014.decode_request(method, path, query, body, interface=interface)
    except etsi014.Etsi014Error as exc:
        status, answer = etsi014.encode_error(exc)
    else:
        assert type(message).interface is interface
        return
    assert status in (400, 404, 405)
    assert answer is not None
    assert len(orjson.dumps(answer)) < 1024


# --- the exact 014 answers ----------------------------------------------------------------------

_BAD_REQUESTS = [
    ("POST", "/api/v1/keys/b/enc_keys", b"", b"{", 400, "the body is not JSON"),
    ("POST", "/api/v1/keys/b/enc_keys", b"", b"[1]", 400, "not a JSON object"),
    ("POST", "/api/v1/keys/b/enc_keys", b"", b'{"number": "2"}', 400, "number: expected"),
    ("POST", "/api/v1/keys/b/enc_keys", b"", b'{"number": true}', 400, "number: expected"),
    ("POST", "/api/v1/keys/b/enc_keys", b"", b'{"number": 0}', 400, "number: expected"),
    ("POST", "/api/v1/keys/b/enc_keys", b"", b'{"size": -8}', 400, "size: expected"),
    ("POST", "/api/v1/keys/b/enc_keys", b"", b'{"colour": 1}', 400, "unknown parameters"),
    (
        "POST",
        "/api/v1/keys/b/enc_keys",
        b"",
        b'{"number": 1, "number": 5}',
        400,
        "the body has a duplicate member 'number'",
    ),
    (
        "POST",
        "/api/v1/keys/b/enc_keys",
        b"",
        b'{"extension_optional": [{"a": {"b": 1, "b": 1}}]}',
        400,
        "the body has a duplicate member 'b'",
    ),
    ("POST", "/api/v1/keys/b/enc_keys", b"", b'{"extension_mandatory": {}}', 400, "array of"),
    ("POST", "/api/v1/keys/b/enc_keys", b"", b'{"additional_slave_SAE_IDs": [""]}', 400, "SAE"),
    ("POST", "/api/v1/keys/b/enc_keys", b"number=1", b"", 400, "not the query"),
    ("GET", "/api/v1/keys/b/enc_keys", b"number=x", b"", 400, "number: expected"),
    ("GET", "/api/v1/keys/b/enc_keys", b"number=1&number=2", b"", 400, "given twice"),
    ("GET", "/api/v1/keys/b/enc_keys", b"extension_mandatory=1", b"", 400, "unknown"),
    ("GET", "/api/v1/keys/b/enc_keys", b"", b"{}", 400, "a GET has no body"),
    ("GET", "/api/v1/keys/a/dec_keys", b"", b"", 400, "names one key"),
    ("POST", "/api/v1/keys/a/dec_keys", b"", b'{"key_IDs": []}', 400, "non-empty array"),
    ("POST", "/api/v1/keys/a/dec_keys", b"", b'{"key_IDs": [{"key_ID": 7}]}', 400, "key_ID"),
    (
        "POST",
        "/api/v1/keys/b/enc_keys",
        b"",
        b'{"extension_optional": [{"a": ' + b"[" * 63 + b"]" * 63 + b"}]}",
        400,
        "nested deeper than 64",
    ),
    ("GET", "/api/v1/keys/b/status", b"number=1", b"", 400, "takes no parameters"),
    ("POST", "/api/v1/keys/b/status", b"", b"", 405, "status takes GET"),
    ("PUT", "/api/v1/keys/b/enc_keys", b"", b"", 405, "enc_keys takes GET or POST"),
    ("GET", "/api/v1/keys/b/keys", b"", b"", 404, "no ETSI 014 method"),
    ("GET", "/api/v2/keys/b/status", b"", b"", 404, "no ETSI 014 method"),
    ("GET", "/api/v1/keys//status", b"", b"", 404, "no ETSI 014 method"),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "status", "detail"), _BAD_REQUESTS)
def test_bad_requests_get_the_014_answer(
    method: str, path: str, query: bytes, body: bytes, status: int, detail: str
) -> None:
    with pytest.raises(etsi014.Etsi014Error) as caught:
        etsi014.decode_request(method, path, query, body, interface=Interface.AK)
    answer_status, answer = etsi014.encode_error(caught.value)
    assert answer_status == status
    assert answer is not None
    if status == 400:
        assert answer["message"] == etsi014.BAD_REQUEST
    assert detail in answer["details"][0]["reason"]


def test_an_sae_id_may_hold_a_slash() -> None:
    message = etsi014.decode_request(
        "GET", "/api/v1/keys/site%2Fapp-b/status", b"", b"", interface=Interface.AK
    )
    assert message == ak.StatusRequest(application_destination_id="site/app-b")
    assert etsi014.encode_request(message).path == "/api/v1/keys/site%2Fapp-b/status"


def test_the_014_forms_of_the_requests() -> None:
    """GET where 014 allows it (number and size only; one key ID), POST otherwise."""
    simple = ak.KeyRequest(application_destination_id="b", number_of_keys=3, size_of_key=1024)
    assert etsi014.encode_request(simple) == etsi014.HttpRequest(
        "GET", "/api/v1/keys/b/enc_keys?number=3&size=1024"
    )
    multicast = ak.KeyRequest(
        application_destination_id="b", extension=[{"additional_slave_SAE_IDs": ["c"]}]
    )
    assert etsi014.encode_request(multicast) == etsi014.HttpRequest(
        "POST", "/api/v1/keys/b/enc_keys", {"additional_slave_SAE_IDs": ["c"]}
    )
    with_extension = KeyId(key_id="k1", key_id_extension={"x": 1})
    one = ak.KeyRequestWithId(application_source_id="a", key_ids=[with_extension])
    assert etsi014.encode_request(one).method == "POST"
    bare = ak.KeyRequestWithId(application_source_id="a", key_ids=[KeyId(key_id="k1")])
    assert etsi014.encode_request(bare) == etsi014.HttpRequest(
        "GET", "/api/v1/keys/a/dec_keys?key_ID=k1"
    )


def test_a_kq1_key_request_names_its_slave() -> None:
    request = kq1.KeyRequest(number_of_keys=2, extension=[{etsi014.SLAVE: "km-b"}])
    assert etsi014.encode_request(request).path == "/api/v1/keys/km-b/enc_keys?number=2"
    decoded = etsi014.decode_request(
        "GET", "/api/v1/keys/km-b/enc_keys", b"number=2", b"", interface=Interface.KQ1
    )
    assert decoded == request
    with pytest.raises(QkdnError, match="names the slave SAE"):
        etsi014.encode_request(kq1.KeyRequest())


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            RequestRefused("size_of_key 12 ...", etsi014_message=etsi014.SIZE_NOT_MULTIPLE_OF_8),
            400,
            {
                "message": "size shall be a multiple of 8",
                "details": [{"reason": "size_of_key 12 ..."}],
            },
        ),
        (
            RequestRefused("number_of_keys 500 is over 128"),
            400,
            {"message": "number_of_keys 500 is over 128"},
        ),
        (
            UnknownApplication("mallory"),
            400,
            {
                "message": "the SAE ID 'mallory' is not known to this KME",
                "details": [{"reason": "unknown destination application 'mallory'"}],
            },
        ),
        (NotAuthorized("keys for app-c"), 401, None),
        (IdentityMismatch("app-z is not app-a"), 401, None),
        (QkdnError("insufficient keys"), 503, {"message": "insufficient keys"}),
        (RemoteProtocolError("bad"), 400, {"message": "bad"}),
        (
            RuntimeError("a bug, with a secret"),
            503,
            {"message": etsi014.SERVER_ERROR, "details": [{"reason": "internal error"}]},
        ),
    ],
)
def test_errors_become_014_answers(error: BaseException, status: int, body: Any) -> None:
    assert etsi014.encode_error(error) == (status, body)


def test_a_failure_response_is_a_503_with_its_reason() -> None:
    failure = ak.ResponseToKeyRequest(keys=[], response="failure: insufficient keys")
    assert etsi014.encode_response(failure) == (503, {"message": "failure: insufficient keys"})


@pytest.mark.parametrize(
    ("status", "body", "message", "details"),
    [
        (400, b'{"message": "size shall be a multiple of 8"}', "size shall be a multiple of 8", []),
        (401, b"", "Unauthorized.", []),
        (
            503,
            b'{"message": "no keys", "details": [{"reason": "link down"}, 7]}',
            "no keys",
            [{"reason": "link down"}],
        ),
        (503, b"<html>busy</html>", "Error on server side.", []),
        (404, b'{"message": "Not found"}', "Not found", []),
    ],
)
def test_error_answers_read_as_typed_errors(
    status: int, body: bytes, message: str, details: list[Any]
) -> None:
    with pytest.raises(etsi014.Etsi014Error) as caught:
        etsi014.decode_response(ak.KeyRequest(application_destination_id="b"), status, body)
    assert (caught.value.http_status, caught.value.message, caught.value.details) == (
        status,
        message,
        details,
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"keys": {}}',
        b'{"keys": [{"key_ID": "k", "key": "***"}]}',
        b'{"keys": [{"key_ID": "", "key": "AA=="}]}',
        b'{"keys": [{"key_ID": "k", "key": ""}]}',
        b'{"keys": [], "key_container_extension": 3}',
        b'{"keys": [], "key_container_extension": {"a": ' + b"[" * 63 + b"]" * 63 + b"}}",
    ],
)
def test_a_bad_key_container_is_the_peers_error(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        etsi014.decode_response(ak.KeyRequest(application_destination_id="b"), 200, body)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (b'{"keys": [], "keys": [{"key_ID": "k", "key": "AA=="}]}', "keys"),
        (b'{"keys": [{"key_ID": "k", "key_ID": "j", "key": "AA=="}]}', "key_ID"),
    ],
)
def test_a_key_container_with_a_member_twice_is_the_peers_error(body: bytes, name: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        etsi014.decode_response(ak.KeyRequest(application_destination_id="b"), 200, body)
    assert str(caught.value) == f"the response has a duplicate member {name!r}"


def test_a_status_over_its_own_maximum_is_the_peers_error() -> None:
    status = dict(etsi014.encode_response(example(ak.Status))[1])
    status["stored_key_count"] = status["max_key_count"] + 1
    with pytest.raises(RemoteProtocolError, match="stored_key_count"):
        etsi014.decode_response(
            ak.StatusRequest(application_destination_id="b"), 200, orjson.dumps(status)
        )


def test_key_extensions_follow_table_ii_3() -> None:
    """A key's extension is the 014 ``key_ID_extension``; the 014 ``key_extension`` is its
    member ``key_extension``."""
    key = Key(key=b"\x01", key_id="k", key_extension={"hash": "h", "key_extension": {"x": 1}})
    _, body = etsi014.encode_response(ak.ResponseToKeyRequest(keys=[key], response="success"))
    assert body["keys"] == [
        {"key_ID": "k", "key": "AQ==", "key_ID_extension": {"hash": "h"}, "key_extension": {"x": 1}}
    ]


def test_a_status_whose_ids_are_numbers_is_read_as_their_text() -> None:
    """A third-party KME sends ``"target_KME_ID": 0``: 014's intent (an ID) is clear, and the
    client reads it as ``"0"``; a count sent as text is still refused."""
    status = dict(etsi014.encode_response(example(ak.Status))[1])
    request = ak.StatusRequest(application_destination_id="b")
    numbered = status | {"source_KME_ID": 7, "target_KME_ID": 0}
    decoded = etsi014.decode_response(request, 200, orjson.dumps(numbered))
    assert isinstance(decoded, ak.Status)
    assert (decoded.source_kme_id, decoded.target_kme_id) == ("7", "0")
    with pytest.raises(RemoteProtocolError, match="key_size"):
        etsi014.decode_response(request, 200, orjson.dumps(status | {"key_size": "256"}))
    with pytest.raises(RemoteProtocolError, match="target_KME_ID"):
        etsi014.decode_response(request, 200, orjson.dumps(status | {"target_KME_ID": True}))
