"""JSON payload codec: round trips, exact JSON names, golden payloads and exact error texts."""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import dataclasses
import enum
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkdn_sdk.catalogue import message_entry
from qkdn_sdk.codecs import payload as payload_codec
from qkdn_sdk.codecs.payload import (
    MAX_DEPTH,
    decode_payload,
    duplicate_member,
    encode_payload,
    message_from_dict,
    message_to_dict,
)
from qkdn_sdk.errors import (
    FrameError,
    InvalidMessage,
    LocalProtocolError,
    PayloadError,
    RemoteProtocolError,
)
from qkdn_sdk.messages import Key, KeyId, Message, ak, all_messages, ck, example, kq1, kx, mgmt
from qkdn_sdk.messages._base import identifier
from tests.fuzzing import DrawSource, example_payloads, mutate_json
from tests.strategies import json_objects, json_values, messages

MESSAGES = all_messages()
PROPERTY = settings(max_examples=40, deadline=None)


def _id(cls: type[Message]) -> str:
    return f"0x{cls.code:04X}-{cls.__name__}"


def _assert_wire_shape(value: Any, wire: Any) -> None:
    """``wire`` is what the wire conventions make of ``value`` (an attrs object, or a field value):
    every attrs field that is set is there under its own name, none that is absent is (no
    ``null``), key data is standard base64, result codes are plain integers."""
    if attrs.has(type(value)):
        assert isinstance(wire, dict)
        expected = {
            field.name
            for field in attrs.fields(type(value))
            if field.default is attrs.NOTHING or getattr(value, field.name) != field.default
        }
        assert set(wire) == expected
        for name in expected:
            assert wire[name] is not None, f"{name} is null on the wire"
            _assert_wire_shape(getattr(value, name), wire[name])
    elif isinstance(value, list):
        assert isinstance(wire, list)
        assert len(wire) == len(value)
        for item, wire_item in zip(value, wire, strict=True):
            _assert_wire_shape(item, wire_item)
    elif isinstance(value, bytes):
        assert wire == base64.standard_b64encode(value).decode("ascii")
    elif isinstance(value, enum.Enum):
        assert type(wire) is int
        assert wire == value.value
    else:
        assert wire == value


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@PROPERTY
@given(data=st.data())
def test_payload_round_trip(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(messages(cls))
    payload = encode_payload(message)
    assert isinstance(payload, bytes)
    assert decode_payload(cls, payload) == message
    as_dict = message_to_dict(message)
    assert orjson.loads(payload) == as_dict
    assert message_from_dict(cls, as_dict) == message
    _assert_wire_shape(message, as_dict)


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_fully_populated_round_trip(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(messages(cls, full=True))
    assert decode_payload(cls, encode_payload(message)) == message


# --- exact JSON names --------------------------------------------------------------------------


def _resolve(wire: Any, json_name: str) -> list[Any]:
    """The values at a catalogue JSON path (``keys[].key_id``) of a payload object."""
    values = [wire]
    for part in json_name.split("."):
        is_list = part.endswith("[]")
        name = part.removesuffix("[]")
        found = []
        for value in values:
            assert isinstance(value, dict), json_name
            assert name in value, f"{json_name}: {name!r} not in {sorted(value)}"
            if is_list:
                assert isinstance(value[name], list), json_name
                found.extend(value[name])
            else:
                found.append(value[name])
        values = found
    return values


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_json_names_are_the_field_names_and_the_catalogue(
    cls: type[Message], data: st.DataObject
) -> None:
    message = data.draw(messages(cls, full=True))
    wire = orjson.loads(encode_payload(message))
    field_names = {field.name for field in attrs.fields(cls)}
    catalogue_names = [entry["json_name"] for entry in message_entry(cls)["fields"]]
    top_level = {name for name in catalogue_names if "." not in name and "[" not in name}
    assert set(wire) == field_names
    assert set(wire) == top_level
    # Rows of nested objects (keys[].key_id, key_ids[].key_id_extension) are on the wire
    # where the catalogue says.
    for name in catalogue_names:
        if "." in name:
            assert _resolve(wire, name) is not None


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
def test_json_names_are_snake_case(cls: type[Message]) -> None:
    for field in attrs.fields(cls):
        assert field.name == field.name.lower()
        assert field.name.isidentifier()
        assert not field.name.startswith("_")


def test_design_json_names_are_used() -> None:
    # DESIGN "Wire conventions": the JSON names of the spec parameters.
    wire = message_to_dict(
        ck.KeyRelayRequest(
            source_kma_id="kma-a",
            destination_kma_id="kma-c",
            transit_kma_ids=["kma-b"],
            key_relay_request_id="r-1",
        )
    )
    assert list(wire) == [
        "source_kma_id",
        "destination_kma_id",
        "transit_kma_ids",
        "key_relay_request_id",
    ]


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_absent_optional_fields_are_omitted(cls: type[Message], data: st.DataObject) -> None:
    full = data.draw(messages(cls, full=True))
    mandatory = {field.name for field in attrs.fields(cls) if field.default is attrs.NOTHING}
    rules = {name for rule in cls.rules for name in rule.fields}
    # Keep the mandatory fields (and what the conditional rules need); drop every optional one.
    keep = mandatory | rules
    minimal = attrs.evolve(
        full,
        **{
            field.name: field.default
            for field in attrs.fields(cls)
            if field.name not in keep and field.init
        },
    )
    wire = orjson.loads(encode_payload(minimal))
    assert set(wire) <= keep
    assert mandatory <= set(wire)
    assert None not in wire.values()


def test_null_for_an_optional_field_reads_as_absent() -> None:
    message = decode_payload(
        ak.KeyRequest, b'{"application_destination_id":"app-b","application_name":null}'
    )
    assert message == ak.KeyRequest(application_destination_id="app-b")


def test_key_data_is_standard_base64() -> None:
    key = b"\xfb\xff\xfe\xfb\xef"  # 6-bit groups 62 and 63: '+' and '/', and padding
    wire = message_to_dict(ak.ResponseToKeyRequest(keys=[Key(key=key, key_id="k")], response="ok"))
    assert wire["keys"][0]["key"] == "+//+++8="
    assert base64.b64decode(wire["keys"][0]["key"], validate=True) == key


# --- golden payloads, written from the tables --------------------------------------------------

KEY_1 = bytes.fromhex("00112233445566778899aabbccddeeff")  # base64 ABEiM0RVZneImaq7zN3u/w==
KEY_2 = bytes.fromhex("fbfffe")  # base64 +//+
KEY_ID_1 = "bc490419-7d60-487f-adc1-4ddcc177c139"
KEY_ID_2 = "0a782fb5-3e40-4b3e-9b16-b34a2d9d8b3a"

GOLDEN: list[tuple[Message, bytes]] = [
    (
        # Q.4161 Table 3: response to key request with two keys, the second with an extension.
        ak.ResponseToKeyRequest(
            keys=[
                Key(key=KEY_1, key_id=KEY_ID_1),
                Key(key=KEY_2, key_id=KEY_ID_2, key_extension={"hash_value": "e3b0"}),
            ],
            response="success",
        ),
        b'{"keys":['
        b'{"key":"ABEiM0RVZneImaq7zN3u/w==","key_id":"bc490419-7d60-487f-adc1-4ddcc177c139"},'
        b'{"key":"+//+","key_id":"0a782fb5-3e40-4b3e-9b16-b34a2d9d8b3a",'
        b'"key_extension":{"hash_value":"e3b0"}}'
        b'],"response":"success"}',
    ),
    (
        # Q.4161 Table 1: key request.
        ak.KeyRequest(
            application_source_id="app-a",
            application_destination_id="app-b",
            number_of_keys=2,
            size_of_key=256,
        ),
        b'{"application_source_id":"app-a","application_destination_id":"app-b",'
        b'"number_of_keys":2,"size_of_key":256}',
    ),
    (
        # Q.4161 Table 2: key request with ID.
        ak.KeyRequestWithId(
            application_source_id="app-a",
            key_ids=[KeyId(key_id=KEY_ID_1), KeyId(key_id=KEY_ID_2, key_id_extension={"x": 1})],
            extension=[{"vendor": "acme"}],
        ),
        b'{"application_source_id":"app-a","key_ids":['
        b'{"key_id":"bc490419-7d60-487f-adc1-4ddcc177c139"},'
        b'{"key_id":"0a782fb5-3e40-4b3e-9b16-b34a2d9d8b3a","key_id_extension":{"x":1}}'
        b'],"extension":[{"vendor":"acme"}]}',
    ),
    (
        # Q.4161 Table 4, with a non-ASCII application name (UTF-8 on the wire).
        ak.SessionCreationRequest(
            application_source_id="app-a",
            application_destination_id="app-b",
            application_name="Caf\u00e9",
        ),
        b'{"application_source_id":"app-a","application_destination_id":"app-b",'
        b'"application_name":"Caf\xc3\xa9"}',
    ),
    (
        # Q.4162 Table 1: key supply (key length in bits).
        kq1.KeySupply(
            key=KEY_1,
            key_id=KEY_ID_1,
            qkd_module_id="qkdm-alice",
            matching_qkd_module_id="qkdm-bob",
            key_length=128,
            generation_time_stamp="2024-05-01T12:00:00Z",
        ),
        b'{"key":"ABEiM0RVZneImaq7zN3u/w==","key_id":"bc490419-7d60-487f-adc1-4ddcc177c139",'
        b'"qkd_module_id":"qkdm-alice","matching_qkd_module_id":"qkdm-bob","key_length":128,'
        b'"generation_time_stamp":"2024-05-01T12:00:00Z"}',
    ),
    (
        # Q.4162 Table 3: every parameter optional.
        kq1.KeyRequest(),
        b"{}",
    ),
    (
        # Q.4164 Table 2.
        ck.ResponseToKeyRelayNextHopRequest(destination_kma_id="kma-c", next_kma_ids=["kma-b"]),
        b'{"destination_kma_id":"kma-c","next_kma_ids":["kma-b"]}',
    ),
    (
        # Q.4164 Table 11: Response is an integer, 0 for success.
        ck.ResponseToKeyReservationRequest(
            source_kma_id="kma-a",
            destination_kma_id="kma-c",
            key_ids=[KeyId(key_id="r-1"), KeyId(key_id="r-2")],
            response=0,
        ),
        b'{"source_kma_id":"kma-a","destination_kma_id":"kma-c",'
        b'"key_ids":[{"key_id":"r-1"},{"key_id":"r-2"}],"response":0}',
    ),
    (
        # FG QIT4N D2.3 Table 7-3: response code 0x01 success.
        mgmt.AuthenticationResponse(sender_id="km-a", response_code=mgmt.ResultCode.SUCCESS),
        b'{"sender_id":"km-a","response_code":1}',
    ),
    (
        # SDK error indication: closing=False is the default and is left out.
        mgmt.ErrorIndication(reason="unknown command code 0x7777", command_code=0x7777),
        b'{"reason":"unknown command code 0x7777","command_code":30583}',
    ),
    (
        kx.KeyRelay(
            key_relay_request_id="r-1",
            sender_kma_id="kma-a",
            source_kma_id="kma-a",
            destination_kma_id="kma-c",
            link_key_ids=["l-1", "l-2", "l-3"],
            encrypted_metadata=KEY_1,
            encrypted_key=KEY_2,
            integrity_value=KEY_1,
            message_authentication_code=KEY_1,
        ),
        b'{"key_relay_request_id":"r-1","sender_kma_id":"kma-a","source_kma_id":"kma-a",'
        b'"destination_kma_id":"kma-c","link_key_ids":["l-1","l-2","l-3"],'
        b'"encrypted_metadata":"ABEiM0RVZneImaq7zN3u/w==","encrypted_key":"+//+",'
        b'"integrity_value":"ABEiM0RVZneImaq7zN3u/w==",'
        b'"message_authentication_code":"ABEiM0RVZneImaq7zN3u/w=="}',
    ),
]


@pytest.mark.parametrize(("message", "payload"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_payload_encodes_exactly(message: Message, payload: bytes) -> None:
    assert encode_payload(message) == payload


@pytest.mark.parametrize(("message", "payload"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_payload_decodes(message: Message, payload: bytes) -> None:
    assert decode_payload(type(message), payload) == message


def test_decoding_ignores_key_order_and_whitespace() -> None:
    payload = b"""
        { "response" : "success",
          "keys" : [ { "key_id" : "k-1", "key" : "ABEiM0RVZneImaq7zN3u/w==" } ] }
    """
    assert decode_payload(ak.ResponseToKeyRequest, payload) == ak.ResponseToKeyRequest(
        keys=[Key(key=KEY_1, key_id="k-1")], response="success"
    )


def test_empty_payload_reads_as_an_empty_object() -> None:
    assert decode_payload(kq1.KeyRequest, b"") == kq1.KeyRequest()
    with pytest.raises(PayloadError) as caught:
        decode_payload(ak.KeyRequest, b"")
    assert caught.value.errors == ["application_destination_id: missing"]


# --- errors: exact texts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "payload", "errors"),
    [
        (
            ak.KeyRequest,
            b'{"application_destination_id":"app-b","number_of_keys":"5"}',
            ["number_of_keys: expected an integer"],
        ),
        (
            ak.KeyRequest,
            b'{"application_destination_id":"app-b","number_of_keys":true}',
            ["number_of_keys: expected an integer"],
        ),
        (
            ak.KeyRequest,
            b'{"application_destination_id":"app-b","number_of_keys":2.0}',
            ["number_of_keys: expected an integer"],
        ),
        (
            ak.KeyRequestWithId,
            b'{"application_source_id":"app-a",'
            b'"key_ids":[{"key_id":"k-1"},{"key_id":"k-2"},{"key_id_extension":{}}]}',
            ["key_ids[2].key_id: missing"],
        ),
        (
            ak.KeyRequest,
            b'{"application_destination_id":"app-b","number_of_key":2}',
            ["payload: unexpected field 'number_of_key'"],
        ),
        (ak.KeyRequest, b'["app-b"]', ["payload: expected a JSON object"]),
        (ak.KeyRequest, b'"app-b"', ["payload: expected a JSON object"]),
        (ak.KeyRequest, b"null", ["payload: expected a JSON object"]),
        (
            ak.ResponseToKeyRequest,
            b'{"keys":[{"key":"not base64!","key_id":"k-1"}],"response":"success"}',
            ["keys[0].key: expected a base64 string (RFC 4648)"],
        ),
        (
            ak.ResponseToKeyRequest,
            b'{"keys":[{"key":"ABE","key_id":"k-1"}],"response":"success"}',
            ["keys[0].key: expected a base64 string (RFC 4648)"],
        ),
        (
            ak.ResponseToKeyRequest,
            b'{"keys":[{"key":"-_-_","key_id":"k-1"}],"response":"success"}',
            ["keys[0].key: expected a base64 string (RFC 4648)"],
        ),
        (
            mgmt.AuthenticationResponse,
            b'{"sender_id":"km-a","response_code":3}',
            ["response_code: expected one of 1 (success), 2 (failure)"],
        ),
        (
            mgmt.AuthenticationResponse,
            b'{"sender_id":"km-a","response_code":"1"}',
            ["response_code: expected one of 1 (success), 2 (failure)"],
        ),
        (
            ak.KeyRequest,
            b'{"application_destination_id":null}',
            ["application_destination_id: expected a string"],
        ),
        (
            ak.KeyRequest,
            b'{"application_destination_id":"app-b","extension":{"a":1}}',
            ["extension: expected an array"],
        ),
        (
            ak.KeyRequest,
            b'{"application_destination_id":"app-b","extension":[1]}',
            ["extension[0]: expected a JSON object"],
        ),
        (
            ak.KeyRequest,
            b'{"application_destination_id":"app-b","number_of_keys":0}',
            ["number_of_keys: must be >= 1 and < 2**63, got 0"],
        ),
        (
            ak.KeyRequest,
            b'{"application_destination_id":""}',
            ["application_destination_id: must not be empty"],
        ),
        (
            ak.ResponseToKeyRequest,
            b'{"keys":[{"key":"","key_id":"k-1"}],"response":"success"}',
            ["keys[0].key: must not be empty"],
        ),
        (
            ck.KeyRelayNextHopRequest,
            b'{"source_kma_id":"kma-a"}',
            [
                "destination_kma_id: either destination_kma_id or application_destination_id "
                "is mandatory"
            ],
        ),
        (
            kq1.KeySupply,
            b'{"key":"AAAA","key_id":"k-1","key_length":8}',
            ["key_length: is 8 bits but the key has 24 bits"],
        ),
        (
            mgmt.ErrorIndication,
            b'{"reason":"x","closing":1}',
            ["closing: expected true or false"],
        ),
    ],
)
def test_payload_error_names_field_and_rule(
    cls: type[Message], payload: bytes, errors: list[str]
) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload(cls, payload)
    assert caught.value.errors == errors
    assert str(caught.value) == f"invalid {cls.spec_name}: " + "; ".join(errors)
    assert caught.value.command_code is None
    assert caught.value.message_id is None


def test_every_error_of_a_payload_is_reported() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload(ak.KeyRequest, b'{"number_of_keys":"5","size_of_key":true}')
    assert sorted(caught.value.errors) == [
        "application_destination_id: missing",
        "number_of_keys: expected an integer",
        "size_of_key: expected an integer",
    ]


def test_not_json() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload(ak.KeyRequest, b'{"application_destination_id":')
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith("payload: not valid JSON")
    assert str(caught.value).startswith("invalid Key request: payload: not valid JSON")


@pytest.mark.parametrize(
    "payload", [b"\xff\xfe{}", b'{"application_destination_id":"\xed\xa0\x80"}', b"NaN"]
)
def test_invalid_utf8_and_non_json_numbers_are_not_json(payload: bytes) -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        decode_payload(ak.KeyRequest, payload)


def test_payload_error_is_a_remote_protocol_error() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload(ak.KeyRequest, b"{}")
    error = caught.value
    assert isinstance(error, RemoteProtocolError)
    assert isinstance(error, FrameError)
    assert error.http_status == 400
    assert error.framing_intact is True
    assert (
        error.response_text == "failure: invalid Key request: application_destination_id: missing"
    )


# --- a member named twice -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "payload", "name"),
    [
        (
            ak.KeyRequest,
            b'{"application_destination_id":"b","number_of_keys":1,"number_of_keys":5}',
            "number_of_keys",
        ),
        (  # in an extension object, at any depth
            ak.KeyRequest,
            b'{"application_destination_id":"b","extension":[{"a":[{"x":1,"x":1}]}]}',
            "x",
        ),
        (  # in a key's extension
            ak.ResponseToKeyRequest,
            b'{"keys":[{"key_id":"1","key":"AA==","key_extension":{"k":1,"k":2}}],'
            b'"response":"success"}',
            "k",
        ),
        (  # spelt with an escape once
            ak.KeyRequest,
            b'{"application_destination_id":"b","number_of_keys":1,"number_of_key\\u0073":5}',
            "number_of_keys",
        ),
        (  # a colon escaped in a string makes up for the member dropped: a count would miss it
            ak.KeyRequest,
            b'{"application_destination_id":"b","application_destination_id":"c",'
            b'"application_name":"\\u003a"}',
            "application_destination_id",
        ),
    ],
)
def test_a_member_named_twice_is_refused_by_name(
    cls: type[Message], payload: bytes, name: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload(cls, payload)
    assert caught.value.errors == [f"payload: duplicate member {name!r}"]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"application_destination_id":"b:c","application_name":"::"}',
        b'{"application_destination_id":"\\u0062","extension":[{"a\\"b:":"\\\\:"}]}',
        b'{ "application_destination_id" : "b" ,\n "number_of_keys" : 2 }',
    ],
)
def test_colons_and_escapes_in_strings_are_no_members(payload: bytes) -> None:
    assert decode_payload(ak.KeyRequest, payload) == message_from_dict(
        ak.KeyRequest, orjson.loads(payload)
    )


class _Pairs(tuple[tuple[str, Any], ...]):
    """A JSON object as its members in order, a name possibly twice."""


_names = st.text(alphabet='ab:"\\\u00e9\n', max_size=2)
_trees: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _names,
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(st.tuples(_names, children), max_size=4).map(_Pairs)
    ),
    max_leaves=12,
)


def _text(tree: Any, ascii_only: bool, colons_escaped: bool) -> str:
    """``tree`` as JSON text (``json.dumps`` writes the scalars and the names), non-ASCII
    characters escaped or not, and each ``:`` in a string written ``\\u003a`` or not."""

    def text(value: Any) -> str:
        if isinstance(value, _Pairs):
            return "{" + ",".join(f"{text(name)}:{text(item)}" for name, item in value) + "}"
        if isinstance(value, list):
            return "[" + ",".join(text(item) for item in value) + "]"
        written = json.dumps(value, ensure_ascii=ascii_only, allow_nan=False)
        return written.replace(":", "\\u003a") if colons_escaped else written

    return text(tree)


def _named_twice(tree: Any) -> set[str]:
    """Every name that some object of ``tree`` has twice."""
    twice: set[str] = set()
    if isinstance(tree, _Pairs):
        names = [name for name, _ in tree]
        twice.update(name for name in names if names.count(name) > 1)
    if isinstance(tree, (_Pairs, list)):
        for item in tree:
            twice |= _named_twice(item[1] if isinstance(tree, _Pairs) else item)
    return twice


@settings(max_examples=300, deadline=None)  # cheap, and a miss needs a rare coincidence
@given(tree=_trees, ascii_only=st.booleans(), colons_escaped=st.booleans())
def test_duplicate_member_finds_a_name_twice_exactly_when_there_is_one(
    tree: Any, ascii_only: bool, colons_escaped: bool
) -> None:
    data = _text(tree, ascii_only, colons_escaped).encode()
    found = duplicate_member(data, orjson.loads(data))
    twice = _named_twice(tree)
    assert found in twice if twice else found is None


# --- nothing but PayloadError, whatever the peer sends -----------------------------------------


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_arbitrary_json_raises_only_payload_error(cls: type[Message], data: st.DataObject) -> None:
    names = [field.name for field in attrs.fields(cls)]
    payload = data.draw(
        st.dictionaries(st.sampled_from(names), json_values, max_size=len(names)) | json_values
    )
    try:
        outcome: Message | PayloadError = message_from_dict(cls, payload)
    except PayloadError as exc:  # anything else fails the test
        outcome = exc
    if isinstance(outcome, PayloadError):
        assert outcome.errors
        assert all(isinstance(error, str) and error for error in outcome.errors)
    else:
        # Whatever was accepted is a valid message that encodes back to the same payload.
        assert isinstance(outcome, cls)
        assert message_from_dict(cls, orjson.loads(encode_payload(outcome))) == outcome


@PROPERTY
@given(cls=st.sampled_from(MESSAGES), payload=st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_payload_error(cls: type[Message], payload: bytes) -> None:
    with contextlib.suppress(PayloadError):
        decode_payload(cls, payload)


# --- what decodes encodes back; what cannot be JSON is a LocalProtocolError --------------------


def _nested_extension(depth: int) -> bytes:
    """A key request whose payload nests ``depth`` arrays and objects in all."""
    inner = depth - 3  # the payload object, the extension array, its object
    return (
        b'{"application_destination_id":"b","extension":[{"a":'
        + b"[" * inner
        + b"]" * inner
        + b"}]}"
    )


def test_payload_nested_as_deep_as_the_encoder_goes_round_trips() -> None:
    message = decode_payload(ak.KeyRequest, _nested_extension(MAX_DEPTH))
    assert encode_payload(message) == _nested_extension(MAX_DEPTH)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 400, 1000])
def test_payload_nested_deeper_than_the_encoder_goes_is_refused(depth: int) -> None:
    # orjson reads 1024 levels: a payload that decodes must encode back.
    with pytest.raises(PayloadError) as caught:
        decode_payload(ak.KeyRequest, _nested_extension(depth))
    assert caught.value.errors == [f"payload: nested deeper than {MAX_DEPTH} arrays and objects"]


def test_a_key_extension_nested_too_deep_is_refused_both_ways() -> None:
    # The payload, "keys", the key, its extension: four levels, then MAX_DEPTH - 4 of lists.
    deep: Any = []
    for _ in range(MAX_DEPTH - 5):
        deep = [deep]
    key = Key(key=b"k", key_id="1", key_extension={"a": deep})
    fits = ak.ResponseToKeyRequest(keys=[key], response="success")
    assert decode_payload(ak.ResponseToKeyRequest, encode_payload(fits)) == fits
    too_deep = attrs.evolve(fits, keys=[attrs.evolve(fits.keys[0], key_extension={"a": [deep]})])
    with pytest.raises(LocalProtocolError, match=f"nested deeper than {MAX_DEPTH} arrays"):
        encode_payload(too_deep)
    with pytest.raises(PayloadError) as caught:
        decode_payload(ak.ResponseToKeyRequest, orjson.dumps(message_to_dict(too_deep)))
    assert caught.value.errors == [f"payload: nested deeper than {MAX_DEPTH} arrays and objects"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300])
def test_a_message_nested_deeper_than_a_payload_may_be_is_not_encoded(depth: int) -> None:
    message = ak.KeyRequest(application_destination_id="b", extension=[{"a": []}])
    inner = message.extension[0]["a"]  # type: ignore[index]
    for _ in range(depth - 4):
        inner.append([])
        inner = inner[0]
    with pytest.raises(LocalProtocolError, match=f"nested deeper than {MAX_DEPTH} arrays"):
        encode_payload(message)
    with pytest.raises(LocalProtocolError, match="nested deeper"):  # the converter's path too
        encode_payload(attrs.evolve(message, extension=(message.extension[0],)))  # type: ignore[index]


def test_deeper_than_counts_the_value_itself_and_what_orjson_writes_as_arrays() -> None:
    assert not payload_codec.deeper_than("text", 0)
    assert not payload_codec.deeper_than({}, 1)
    assert payload_codec.deeper_than({"a": []}, 1)
    assert not payload_codec.deeper_than({"a": [], "b": {"c": 1}}, 2)
    assert payload_codec.deeper_than([(), ((),)], 2)


_ORJSON_OVERRUN = """
import orjson, sys
from qkdn_sdk.codecs.payload import decode_payload
from qkdn_sdk.errors import PayloadError
from qkdn_sdk.messages import ak
child = b"[" * 204 + b"9007199254740993" + b"]" * 204
deep = b"[" * 47 + b",".join([child] * 50) + b"]" * 47
for payload in [deep, b'{"application_destination_id":"b","extension":[{"a":' + deep + b"}]}"]:
    try:
        decode_payload(ak.KeyRequest, payload)
    except PayloadError as exc:
        print(exc.errors)
"""


def test_a_payload_that_overran_orjsons_writer_is_refused_before_it_is_written() -> None:
    """The fuzzer's finding: a payload 251 levels deep (orjson 3.13 reads 1,024 and writes 254)
    made orjson's writer overrun its buffer and abort the process, when the decoder checked the
    depth by writing the payload back. Python's debug allocator checks every
    buffer's bounds when it is freed, so an overrun fails this test every time."""
    env = {**os.environ, "PYTHONMALLOC": "debug"}
    done = subprocess.run(
        [sys.executable, "-c", _ORJSON_OVERRUN],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "['payload: expected a JSON object']",
        f"['payload: nested deeper than {MAX_DEPTH} arrays and objects']",
    ]


@pytest.mark.parametrize(
    "message",
    [
        ak.KeyRequest(application_destination_id="b", extension=[{"a": {1, 2}}]),
        ak.KeyRequest(application_destination_id="b", extension=[{"a": 2**64}]),
        ak.KeyRequest(application_destination_id="\ud800"),
    ],
    ids=["set", "int over 64 bits", "lone surrogate"],
)
def test_a_message_that_is_not_json_is_a_local_protocol_error(message: Message) -> None:
    with pytest.raises(LocalProtocolError, match="Key request"):
        encode_payload(message)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (ak.ResponseToKeyRequest(keys=[], response=5), "response: expected a string, got int"),  # type: ignore[arg-type]
        (mgmt.ErrorIndication(reason="r", closing=1), "closing: expected true or false, got int"),  # type: ignore[arg-type]
        (
            ck.ResponseToKeyRelayNextHopRequest(next_kma_ids="abc"),  # type: ignore[arg-type]
            "next_kma_ids: expected a list, got str",
        ),
        (
            ak.KeyRequest(application_destination_id="b", number_of_keys=True),
            "number_of_keys: expected an integer, got bool",
        ),
        (
            ak.ResponseToKeyRequest(keys=[Key(key=b"k", key_id="1"), 7], response="success"),  # type: ignore[list-item]
            "keys[1]: expected a Key, got int",
        ),
        (
            ak.KeyRequest(application_destination_id=None),
            "application_destination_id: expected a value, got null",
        ),  # type: ignore[arg-type]
    ],
    ids=["str", "bool", "list", "bool for int", "list item", "mandatory null"],
)
def test_a_value_not_of_its_fields_type_is_refused_naming_the_field(
    message: Message, problem: str
) -> None:
    """attrs checks no types: a message built with the wrong ones must not reach the wire."""
    with pytest.raises(LocalProtocolError) as caught:
        encode_payload(message)
    assert str(caught.value) == f"{message.spec_name} cannot be encoded: {problem}"


# --- the fast path: the converter's outcome, sooner --------------------------------------------
# The codec tries a fast path first and, where it gives up, the cattrs converter. These tests hold
# the fast path to the converter: on valid messages it is taken and gives the same result; on
# anything else the codec's outcome (message, bytes, error text) is the converter's alone.


@contextlib.contextmanager
def _converter_alone() -> Iterator[None]:
    """The codec with its fast path switched off: what the cattrs converter alone makes of it."""
    with (
        mock.patch.object(payload_codec, "_fast_message", return_value=None),
        mock.patch.object(payload_codec, "_fast_payload", return_value=None),
    ):
        yield


def _typed(value: Any) -> Any:
    """``value`` with the exact type of everything in it (``==`` alone takes
    ``ResultCode.SUCCESS`` for ``1``, and ``True`` for ``1``)."""
    if attrs.has(type(value)):
        fields = attrs.fields(type(value))
        return type(value), [(field.name, _typed(getattr(value, field.name))) for field in fields]
    if type(value) is list:
        return list, [_typed(item) for item in value]
    if type(value) is dict:
        return dict, {name: _typed(item) for name, item in value.items()}
    return type(value), value


def _decoded(cls: type[Message], payload: Any) -> Any:
    """What :func:`message_from_dict` makes of ``payload``: the message (exact types), or the
    texts of the :class:`PayloadError` (any other exception fails the test)."""
    try:
        return _typed(message_from_dict(cls, payload))
    except PayloadError as exc:
        return "PayloadError", exc.errors, str(exc)


def _encoded(message: Message) -> Any:
    """What :func:`encode_payload` makes of ``message``: the bytes, or the text of the
    :class:`LocalProtocolError` (any other exception fails the test)."""
    try:
        return encode_payload(message)
    except LocalProtocolError as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@PROPERTY
@given(data=st.data())
def test_the_fast_path_takes_valid_messages_to_the_converters_result(
    cls: type[Message], data: st.DataObject
) -> None:
    message = data.draw(messages(cls, full=data.draw(st.booleans())))
    payload = payload_codec._fast_payload(message)
    assert payload is not None, "the fast path gave up on a valid message"
    assert payload == orjson.dumps(message_to_dict(message))  # the converter's bytes
    as_object = orjson.loads(payload)
    decoded = payload_codec._fast_message(cls, as_object)
    assert decoded is not None, "the fast path gave up on a valid payload"
    assert _typed(decoded) == _typed(payload_codec._CONVERTER.structure(as_object, cls))
    assert _typed(decoded) == _typed(message)


def _bad_payloads(cls: type[Message]) -> st.SearchStrategy[Any]:
    """An example payload of ``cls`` mutated in one to four places (tests/fuzzing.py), or any
    JSON object of its field names."""

    @st.composite
    def mutated(draw: st.DrawFn) -> Any:
        source = DrawSource(draw)
        return mutate_json(source.choice(example_payloads(cls)), source)

    names = [field.name for field in attrs.fields(cls)]
    return mutated() | st.dictionaries(st.sampled_from(names), json_values, max_size=len(names))


_BAD_PAYLOADS = {cls: _bad_payloads(cls) for cls in MESSAGES}


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_a_bad_payload_gets_the_converters_error_text(
    cls: type[Message], data: st.DataObject
) -> None:
    payload = data.draw(_BAD_PAYLOADS[cls])
    outcome = _decoded(cls, payload)
    with _converter_alone():
        assert _decoded(cls, payload) == outcome


_KEY_DATA = st.binary(max_size=4).map(lambda data: base64.b64encode(data).decode("ascii"))
_KEY_ITEMS = st.fixed_dictionaries(
    {
        "key": _KEY_DATA | st.text(alphabet="AQg+/=-_ \n\u00e9", max_size=6) | json_values,
        "key_id": st.text(max_size=3) | json_values,
    },
    optional={"key_extension": st.none() | json_objects | json_values, "key_size": json_values},
)


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(_KEY_ITEMS | json_values, max_size=3),
    cls=st.sampled_from([ak.ResponseToKeyRequest, kq1.ResponseToKeyRequest]),
)
def test_keys_read_by_the_fast_path_are_the_converters(keys: list[Any], cls: type[Message]) -> None:
    payload = {"keys": keys, "response": "success"}
    outcome = _decoded(cls, payload)
    with _converter_alone():
        assert _decoded(cls, payload) == outcome


def test_keys_are_built_with_exactly_the_checks_of_key() -> None:
    # The fast path builds keys without Key.__init__, repeating its checks: these, and no other.
    checks = [(field.name, field.validator) for field in attrs.fields(Key)]
    assert checks == [("key", None), ("key_id", identifier), ("key_extension", None)]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3), key_id=st.text(max_size=3), extension=st.none() | json_objects)
def test_a_key_the_fast_path_builds_is_one_key_would_build(
    data: bytes, key_id: str, extension: dict[str, Any] | None
) -> None:
    item = {"key": base64.b64encode(data).decode("ascii"), "key_id": key_id}
    if extension is not None:
        item["key_extension"] = extension
    try:
        expected = Key(key=data, key_id=key_id, key_extension=extension)
    except InvalidMessage:
        with pytest.raises(payload_codec._GiveUp):
            payload_codec._keys_from_payload(2)([item])
    else:
        assert _typed(payload_codec._keys_from_payload(2)([item])) == _typed([expected])


_KEY_ID_ITEMS = st.fixed_dictionaries(
    {"key_id": st.text(max_size=3) | json_values},
    optional={"key_id_extension": st.none() | json_objects | json_values, "key": json_values},
)


@settings(max_examples=300, deadline=None)
@given(
    key_ids=st.lists(_KEY_ID_ITEMS | json_values, max_size=3),
    cls=st.sampled_from(
        [ak.KeyRequestWithId, kq1.KeyRequestWithKeyIds, kx.KeyIdSynchronizationRequest]
    ),
)
def test_key_ids_read_by_the_fast_path_are_the_converters(
    key_ids: list[Any], cls: type[Message]
) -> None:
    payload = message_to_dict(example(cls))
    payload["key_ids"] = key_ids
    outcome = _decoded(cls, payload)
    with _converter_alone():
        assert _decoded(cls, payload) == outcome


def test_key_ids_are_built_with_exactly_the_checks_of_key_id() -> None:
    # The fast path builds key IDs without KeyId.__init__, repeating its checks: these only.
    checks = [(field.name, field.validator) for field in attrs.fields(KeyId)]
    assert checks == [("key_id", identifier), ("key_id_extension", None)]


@settings(max_examples=200, deadline=None)
@given(key_id=st.text(max_size=3), extension=st.none() | json_objects)
def test_a_key_id_the_fast_path_builds_is_one_key_id_would_build(
    key_id: str, extension: dict[str, Any] | None
) -> None:
    item: dict[str, Any] = {"key_id": key_id}
    if extension is not None:
        item["key_id_extension"] = extension
    try:
        expected = KeyId(key_id=key_id, key_id_extension=extension)
    except InvalidMessage:
        with pytest.raises(payload_codec._GiveUp):
            payload_codec._key_ids_from_payload(2)([item])
    else:
        assert payload_codec._key_ids_from_payload(2)([item]) == [expected]


def _attempt(call: Callable[[], bytes]) -> bytes | type[BaseException]:
    try:
        return call()
    except (binascii.Error, ValueError) as exc:
        return type(exc)


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet="AQg+/=-_ \n\x00\u00e9", max_size=10) | st.text(max_size=10))
def test_key_data_is_read_as_b64decode_with_validate_reads_it(text: str) -> None:
    assert _attempt(lambda: payload_codec._from_base64(text)) == _attempt(
        lambda: base64.b64decode(text, validate=True)
    )


class _Text(str):
    """A str subclass: orjson writes it as a string, and the converter might read it otherwise."""


@dataclasses.dataclass
class _Point:
    x: int = 0


def _key_holding(**values: Any) -> Key:
    """A key whose fields hold ``values``, types unchecked (as a careless caller can build)."""
    key = Key(key=b"k", key_id="k-1")
    for name, value in values.items():
        object.__setattr__(key, name, value)
    return key


_ODD_VALUES = st.sampled_from(
    [
        None,
        True,
        0,
        5,
        2**64,
        1.5,
        "",
        "abc",
        "\ud800",
        _Text("abc"),
        b"key",
        bytearray(b"key"),
        (),
        ("a",),
        {1, 2},
        [],
        ["a"],
        [1],
        [None],
        [{"a": 1}],
        [{"a": b"x"}],
        [{"a": (1, 2)}],
        [{"a": _Point()}],
        [{"a": [_Text("b")]}],
        [_Text("a")],
        {},
        {"a": b"x"},
        {"a": {1, 2}},
        {"a": _Point()},
        {"a": uuid.UUID(int=7)},
        {"a": mgmt.ResultCode.FAILURE},
        {"a": [_Text("b")]},
        {_Text("a"): 1},
        {1: 1},
        _Point(),
        mgmt.ResultCode.SUCCESS,
        mgmt.KeySupplyResponseCode.STATUS_TABLE,
        mgmt.ApplicationCode.DECRYPTION,
        KeyId(key_id="k-1"),
        [KeyId(key_id="k-1")],
        [Key(key=b"k", key_id="k-1")],
        [_key_holding(key="a2V5")],
        [_key_holding(key=bytearray(b"k"))],
        [_key_holding(key_id=5)],
        [_key_holding(key_extension=[1])],
        [_key_holding(key_extension={"a": b"x"})],
        [_key_holding(key_extension={})],
        kx.RelayMetadata(kma_key_metadata=kx.KmaKeyMetadata(kma_key_id="k", matching_kma_id="m")),
    ]
)


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_a_mistyped_message_gets_the_converters_bytes_or_error(
    cls: type[Message], data: st.DataObject
) -> None:
    message = copy.copy(data.draw(messages(cls)))
    names = [field.name for field in attrs.fields(cls)]
    for name in data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True)):
        object.__setattr__(message, name, data.draw(_ODD_VALUES | json_values))
    outcome = _encoded(message)
    with _converter_alone():
        assert _encoded(message) == outcome


@pytest.mark.parametrize("closing", [False, 0, 0.0, True, 1, "yes"], ids=repr)
def test_a_value_equal_to_its_default_is_left_out_as_the_converter_leaves_it(
    closing: Any,
) -> None:
    # omit_if_default compares with != : closing=0 is False there, and left out.
    message = mgmt.ErrorIndication(reason="r", closing=closing)
    outcome = _encoded(message)
    with _converter_alone():
        assert _encoded(message) == outcome


@attrs.frozen
class _FactoryDefault:
    names: list[str] = attrs.field(factory=list)


@attrs.frozen
class _Converted:
    count: int = attrs.field(default=0, converter=int)


@attrs.frozen
class _NotInit:
    name: str = "a"
    derived: str = attrs.field(init=False, default="b")


@attrs.frozen
class _UnknownType:
    ratio: float = 0.5


@pytest.mark.parametrize(
    ("instance", "gives_up"),
    [
        (_FactoryDefault(), True),  # the converter leaves out names == [], a new list each time
        (_FactoryDefault(names=["x"]), True),
        (_Converted(), False),  # equal to its default: left out, as the converter does
        (_Converted(count=2), True),
        (_NotInit(name="c"), False),
        (_UnknownType(ratio=1.5), True),
    ],
    ids=repr,
)
def test_what_the_tables_do_not_use_is_left_to_the_converter(instance: Any, gives_up: bool) -> None:
    unstructure = payload_codec._unstructure_fields(type(instance), 1)
    if gives_up:
        with pytest.raises(payload_codec._GiveUp):
            unstructure(instance)
    else:
        assert unstructure(instance) == payload_codec._CONVERTER.unstructure(instance)


def test_a_type_the_fast_path_does_not_know_is_read_by_the_converter() -> None:
    with pytest.raises(payload_codec._GiveUp):
        payload_codec._structure_fields(_UnknownType, 1)({"ratio": 1.5})
    assert payload_codec._CONVERTER.structure({"ratio": 1.5}, _UnknownType) == _UnknownType(1.5)
