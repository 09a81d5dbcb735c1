"""The protobuf codec: exact round trips, Q.4164 Appendix II conversions, and refusals that name
the field and rule (and only ever as PayloadError)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if importlib.util.find_spec("qkdn_grpc") is None:  # the plugin is not installed: its source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qkdn_grpc import qkdn_pb2
from qkdn_grpc._codec import (
    MAX_JSON_DEPTH,
    decode,
    decode_envelope,
    encode,
    encode_envelope,
)

from qkdn_sdk.codecs.payload import MAX_ERRORS, decode_payload, encode_payload
from qkdn_sdk.errors import LocalProtocolError, PayloadError
from qkdn_sdk.messages import (
    Key,
    KeyId,
    Message,
    ak,
    all_messages,
    ck,
    example,
    failure_reason,
    failure_response,
    kq1,
    mgmt,
)
from tests.strategies import any_message, messages

_FAST = settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
_CLASSES = all_messages()


def _refused(cls: type[Message], data: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        decode(cls, data)
    return caught.value


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True], ids=["minimal", "full"])
@pytest.mark.parametrize("cls", _CLASSES, ids=lambda cls: f"{cls.__module__[18:]}.{cls.__name__}")
@_FAST
@given(data=st.data())
def test_every_message_round_trips(cls: type[Message], full: bool, data: st.DataObject) -> None:
    message = data.draw(messages(cls, full=full))
    assert decode(cls, encode(message)) == message
    # and what the gRPC side decoded still travels as a JSON payload
    assert decode_payload(cls, encode_payload(message)) == message


@settings(max_examples=60, deadline=None, database=None)
@given(message=any_message(), message_id=st.integers(0, 2**32 - 1))
def test_envelopes_round_trip(message: Message, message_id: int) -> None:
    assert decode_envelope(encode_envelope(message_id, message)) == (message_id, message)


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda cls: cls.__qualname__)
def test_examples_and_failure_responses_round_trip(cls: type[Message]) -> None:
    message = example(cls)
    assert decode(cls, encode(message)) == message
    failure = failure_response(cls, "no keys left", echo={"session_id": "s-1"})
    assert decode(type(failure), encode(failure)) == failure


def test_a_message_of_no_field_is_still_an_envelope_body() -> None:
    assert decode_envelope(encode_envelope(0, kq1.KeyRequest())) == (0, kq1.KeyRequest())
    assert encode(kq1.KeyRequest()) == b""
    assert decode(kq1.KeyRequest, b"") == kq1.KeyRequest()


# --- hostile bytes ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, database=None)
@given(cls=st.sampled_from(_CLASSES), data=st.binary(max_size=64))
def test_random_bytes_only_ever_raise_payload_error(cls: type[Message], data: bytes) -> None:
    errors: list[PayloadError] = []
    for decoder in (decode, lambda _cls, data: decode_envelope(data)):
        try:
            decoder(cls, data)
        except PayloadError as exc:
            errors.append(exc)
    assert all(len(str(error)) < 2000 for error in errors)


@settings(max_examples=120, deadline=None, database=None)
@given(message=any_message(), data=st.data())
def test_damaged_encodings_only_ever_raise_payload_error(message: Message, data: Any) -> None:
    encoded = bytearray(encode_envelope(1, message))
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, max(0, len(encoded) - 1)))
        if encoded and data.draw(st.booleans()):
            encoded[index] = data.draw(st.integers(0, 255))
        else:
            del encoded[index:]
    try:
        message_id, decoded = decode_envelope(bytes(encoded))
    except PayloadError:
        return
    assert decode_envelope(encode_envelope(message_id, decoded)) == (message_id, decoded)


# --- presence -------------------------------------------------------------------------------------


def test_absent_and_empty_lists_are_told_apart() -> None:
    absent = ak.ResponseToKeyRequest(keys=[], response="success")
    empty = ak.ResponseToKeyRequest(keys=[], response="success", extension=[])
    assert decode(ak.ResponseToKeyRequest, encode(absent)).extension is None
    assert decode(ak.ResponseToKeyRequest, encode(empty)).extension == []
    assert qkdn_pb2.AkResponseToKeyRequest.FromString(encode(empty)).extension_present
    # a peer that never sets the flag: a list with items is present
    pb = qkdn_pb2.AkResponseToKeyRequest(response="success", extension=['{"a":1}'])
    decoded = decode(ak.ResponseToKeyRequest, pb.SerializeToString())
    assert decoded.extension == [{"a": 1}]


def test_absent_and_empty_optional_scalars_are_told_apart() -> None:
    absent = ak.KeyRequest(application_destination_id="app-b")
    empty_name = ak.KeyRequest(application_destination_id="app-b", application_name="")
    assert decode(ak.KeyRequest, encode(absent)).application_name is None
    assert decode(ak.KeyRequest, encode(empty_name)).application_name == ""
    closing = mgmt.ErrorIndication(reason="", command_code=0, closing=True)
    assert decode(mgmt.ErrorIndication, encode(closing)) == closing


def test_json_objects_travel_as_their_text_losslessly() -> None:
    extension = [{"big": 2**62, "float": 0.1, "nested": {"list": [1, "x", None, True]}}]
    message = ak.KeyRequest(application_destination_id="b", extension=extension)
    pb = qkdn_pb2.AkKeyRequest.FromString(encode(message))
    text = '{"big":4611686018427387904,"float":0.1,"nested":{"list":[1,"x",null,true]}}'
    assert list(pb.extension) == [text]
    assert decode(ak.KeyRequest, encode(message)).extension == extension


# --- Q.4164 Appendix II ---------------------------------------------------------------------------


def test_appendix_ii_request_fields() -> None:
    request = ck.KeyRelayRequest(
        source_kma_id="km-a",
        destination_kma_id="km-c",
        transit_kma_ids=["km-b", "km-c"],
        key_relay_request_id="r-1",
        extension=[{"key_bits": 256}],
    )
    pb = qkdn_pb2.KeyRelayRequest.FromString(encode(request))
    assert (pb.start_km, pb.end_km, list(pb.kma_id), pb.keyrelayrequest_id) == (
        "km-a",
        "km-c",
        ["km-b", "km-c"],
        "r-1",
    )
    assert list(pb.extension) == ['{"key_bits":256}']


def test_appendix_ii_key_ids_keep_their_extensions_beside() -> None:
    response = ck.ResponseToKeyReservationRequest(
        source_kma_id="km-a",
        destination_kma_id="km-b",
        key_ids=[KeyId(key_id="k1"), KeyId(key_id="k2", key_id_extension={"bits": 256})],
        response=0,
    )
    pb = qkdn_pb2.KeyReservationResponse.FromString(encode(response))
    assert list(pb.key_id) == ["k1", "k2"]
    assert list(pb.key_id_extension) == ["", '{"bits":256}']
    assert (pb.result_code, pb.HasField("error_message")) == (0, False)
    plain = ck.ResponseToKeyReservationRequest(key_ids=[KeyId(key_id="k1")], response=0)
    assert list(qkdn_pb2.KeyReservationResponse.FromString(encode(plain)).key_id_extension) == []
    assert decode(ck.ResponseToKeyReservationRequest, encode(response)) == response


def test_appendix_ii_key_ids_absent_and_empty_are_told_apart() -> None:
    absent = ck.ResponseToKeyAllocationRequest(response=0)
    empty = ck.ResponseToKeyAllocationRequest(response=0, key_ids=[])
    assert decode(ck.ResponseToKeyAllocationRequest, encode(absent)).key_ids is None
    assert decode(ck.ResponseToKeyAllocationRequest, encode(empty)).key_ids == []


def test_integer_response_is_the_result_code_and_its_failure_text_the_error_message() -> None:
    failure = failure_response(ck.ResponseToKeyAllocationRequest, "key k1 not reserved")
    assert isinstance(failure, ck.ResponseToKeyAllocationRequest)
    pb = qkdn_pb2.KeyAllocationResponse.FromString(encode(failure))
    assert (pb.result_code, pb.error_message) == (1, "failure: key k1 not reserved")
    assert decode(ck.ResponseToKeyAllocationRequest, encode(failure)) == failure
    # a code of its own is kept as it is
    odd = ck.ResponseToKeyAllocationRequest(response=7, extension=[{"x": 1}])
    pb = qkdn_pb2.KeyAllocationResponse.FromString(encode(odd))
    assert (pb.result_code, pb.HasField("error_message")) == (7, False)
    assert decode(ck.ResponseToKeyAllocationRequest, encode(odd)) == odd


def test_an_appendix_ii_peer_that_knows_only_its_fields_is_understood() -> None:
    pb = qkdn_pb2.KeyAllocationResponse(
        start_km="km-a", end_km="km-b", key_id=["k1", "k2"], result_code=1, error_message="NG"
    )
    decoded = decode(ck.ResponseToKeyAllocationRequest, pb.SerializeToString())
    assert decoded == ck.ResponseToKeyAllocationRequest(
        source_kma_id="km-a",
        destination_kma_id="km-b",
        key_ids=[KeyId(key_id="k1"), KeyId(key_id="k2")],
        response=1,
        extension=[{"error_message": "NG"}],
    )
    assert failure_reason(decoded) == "NG"
    # its error_message goes first when the extension reports another text
    pb = qkdn_pb2.KeyAllocationResponse(result_code=1, error_message="NG", extension=['{"a":1}'])
    decoded = decode(ck.ResponseToKeyAllocationRequest, pb.SerializeToString())
    assert decoded.extension == [{"error_message": "NG"}, {"a": 1}]


@pytest.mark.parametrize(
    ("response", "result_code", "error_message"),
    [
        ("success", 0, None),
        ("failure: relay timed out", 1, "failure: relay timed out"),
        ("Failure", 1, "Failure"),
        ("done", 0, "done"),  # not a failure as failure_reason reads it
        ("", 0, ""),
    ],
)
def test_string_response_as_result_code(
    response: str, result_code: int, error_message: str | None
) -> None:
    message = ck.ResponseToKeyRelayRequest(response=response, key_relay_request_id="r-1")
    pb = qkdn_pb2.KeyRelayResponse.FromString(encode(message))
    assert pb.result_code == result_code
    assert (pb.error_message if pb.HasField("error_message") else None) == error_message
    assert decode(ck.ResponseToKeyRelayRequest, encode(message)) == message


@pytest.mark.parametrize(
    ("result_code", "error_message", "response"),
    [
        (0, None, "success"),
        (1, None, "failure: result code 1"),
        (1, "no route", "failure: no route"),
        (2, "failure: no route", "failure: no route"),
    ],
)
def test_string_response_from_an_appendix_ii_peer(
    result_code: int, error_message: str | None, response: str
) -> None:
    pb = qkdn_pb2.KeyRelayResponse(result_code=result_code, keyrelayrequest_id="r-1")
    if error_message is not None:
        pb.error_message = error_message
    decoded = decode(ck.ResponseToKeyRelayRequest, pb.SerializeToString())
    assert decoded.response == response
    assert (failure_reason(decoded) is None) == (result_code == 0)


# --- refusals name the field and the rule ---------------------------------------------------------


def test_bytes_that_are_not_protobuf() -> None:
    error = _refused(ak.KeyRequest, b"\xff\xff\xff")
    assert "payload: not a protobuf AkKeyRequest" in str(error)
    assert error.command_code == ak.KeyRequest.code
    with pytest.raises(PayloadError, match="envelope: not a protobuf Envelope"):
        decode_envelope(b"\x0a\xff")


def test_a_field_the_table_does_not_have() -> None:
    data = encode(ak.KeyRequest(application_destination_id="b")) + b"\x98\x06\x01"  # field 99
    assert "payload: unexpected field number 99" in str(_refused(ak.KeyRequest, data))
    nested = qkdn_pb2.Key(key=b"k", key_id="1").SerializeToString() + b"\x98\x06\x01"
    data = qkdn_pb2.AkResponseToKeyRequest(response="success").SerializeToString()
    data += b"\x0a" + bytes([len(nested)]) + nested
    assert "keys[0]: unexpected field number 99" in str(_refused(ak.ResponseToKeyRequest, data))


def test_a_field_of_the_wrong_wire_type() -> None:
    data = b"\x10\x05"  # field 2 (application_destination_id, a string) as a varint
    error = _refused(ak.KeyRequest, data)
    assert "unexpected field number 2" in str(error)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("[1, 2]", "extension[0]: expected the text of a JSON object"),
        ("nope", "extension[0]: not valid JSON"),
        ("", "extension[0]: expected the text of a JSON object, got an empty string"),
        ('{"a": NaN}', "extension[0]: not valid JSON"),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "extension[0]: expected"),
        (
            '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1),
            f"extension[0]: nested deeper than {MAX_JSON_DEPTH}",
        ),
    ],
)
def test_a_json_string_that_is_not_a_json_object(text: str, rule: str) -> None:
    pb = qkdn_pb2.AkKeyRequest(application_destination_id="b", extension=[text])
    assert rule in str(_refused(ak.KeyRequest, pb.SerializeToString()))


def test_the_deepest_json_object_allowed_also_travels_as_a_json_payload() -> None:
    deep: dict[str, Any] = {}
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = {"a": deep}
    key_ids = [KeyId(key_id="k", key_id_extension=deep)]
    message = ak.KeyRequestWithId(application_source_id="a", key_ids=key_ids)
    decoded = decode(ak.KeyRequestWithId, encode(message))
    assert decode_payload(ak.KeyRequestWithId, encode_payload(decoded)) == message


def test_a_code_that_is_not_one_of_its_values() -> None:
    pb = qkdn_pb2.AuthenticationResponse(sender_id="app-a", response_code=9)
    error = _refused(mgmt.AuthenticationResponse, pb.SerializeToString())
    assert "response_code: expected one of 1 (success), 2 (failure)" in str(error)
    missing = qkdn_pb2.AuthenticationResponse(sender_id="app-a").SerializeToString()
    assert "response_code: expected one of" in str(_refused(mgmt.AuthenticationResponse, missing))


def test_values_the_table_refuses() -> None:
    pb = qkdn_pb2.AkKeyRequest(application_destination_id="b", number_of_keys=0)
    assert "number_of_keys: must be >= 1" in str(_refused(ak.KeyRequest, pb.SerializeToString()))
    pb = qkdn_pb2.AkKeyRequest(number_of_keys=1)  # mandatory ID left out
    error = str(_refused(ak.KeyRequest, pb.SerializeToString()))
    assert "application_destination_id: must not be empty" in error
    pb = qkdn_pb2.AkResponseToKeyRequest(
        response="success", keys=[qkdn_pb2.Key(key=b"k", key_id="1"), qkdn_pb2.Key(key_id="2")]
    )
    error = str(_refused(ak.ResponseToKeyRequest, pb.SerializeToString()))
    assert "keys[1].key: must not be empty" in error
    pb = qkdn_pb2.KeySupply(key=b"ab", key_id="k", key_length=8)
    assert "key_length: is 8 bits but the key has 16 bits" in str(
        _refused(kq1.KeySupply, pb.SerializeToString())
    )


def test_appendix_ii_refusals_use_the_appendix_ii_names() -> None:
    pb = qkdn_pb2.KeyReservationRequest(start_km="", end_km="km-b")
    error = _refused(ck.KeyReservationRequest, pb.SerializeToString())
    assert "start_km: must not be empty" in str(error)
    pb = qkdn_pb2.KeyRelayRequestNotification(start_km="km-a")
    error = _refused(ck.KeyRelayRequestNotification, pb.SerializeToString())
    assert "end_km: either end_km or application_destination_id is mandatory" in str(error)
    pb = qkdn_pb2.KeyRelayRequest(kma_id=["km-b", ""])
    error = _refused(ck.KeyRelayRequest, pb.SerializeToString())
    assert "kma_id[1]: must not be empty" in str(error)
    pb = qkdn_pb2.KeyAllocationRequest(start_km="a", end_km="b", key_id=["k1", ""])
    error = _refused(ck.KeyAllocationRequest, pb.SerializeToString())
    assert "key_id[1]: must not be empty" in str(error)
    pb = qkdn_pb2.KeyAllocationRequest(start_km="a", end_km="b", key_id=[])
    error = _refused(ck.KeyAllocationRequest, pb.SerializeToString())
    assert "key_id: must not be empty" in str(error)
    pb = qkdn_pb2.KeyAllocationRequest(
        start_km="a", end_km="b", key_id=["k1", "k2"], key_id_extension=["{}"]
    )
    error = _refused(ck.KeyAllocationRequest, pb.SerializeToString())
    assert "key_id_extension: has 1 items for 2 in key_id" in str(error)
    pb = qkdn_pb2.KeyReservationResponse(result_code=-1)
    error = _refused(ck.ResponseToKeyReservationRequest, pb.SerializeToString())
    assert "result_code: must be >= 0" in str(error)
    pb = qkdn_pb2.KeyRelayResponse(result_code=0, error_message="failure: lost")
    error = _refused(ck.ResponseToKeyRelayRequest, pb.SerializeToString())
    assert "error_message: is a failure text but result_code is 0 (OK)" in str(error)


def test_an_envelope_with_no_body() -> None:
    with pytest.raises(PayloadError, match="body: missing") as caught:
        decode_envelope(qkdn_pb2.Envelope(message_id=42).SerializeToString())
    assert caught.value.message_id == 42
    unknown = qkdn_pb2.Envelope(message_id=5).SerializeToString() + b"\xf8\x3e\x01"  # field 999
    with pytest.raises(PayloadError, match="body: a message this SDK does not know"):
        decode_envelope(unknown)


def test_a_bad_body_carries_the_message_id_and_code() -> None:
    envelope = qkdn_pb2.Envelope(message_id=9)
    envelope.ak_key_request.application_destination_id = "app-b"
    envelope.ak_key_request.number_of_keys = 0
    with pytest.raises(PayloadError) as caught:
        decode_envelope(envelope.SerializeToString())
    assert (caught.value.message_id, caught.value.command_code) == (9, ak.KeyRequest.code)
    assert "number_of_keys: must be >= 1" in str(caught.value)


def test_many_bad_items_cost_a_bounded_error() -> None:
    bad = qkdn_pb2.AkKeyRequest(application_destination_id="b", extension=["[]"] * 30_000)
    error = _refused(ak.KeyRequest, bad.SerializeToString())
    assert len(error.errors) == MAX_ERRORS + 1
    assert error.errors[-1] == "further errors not checked"
    assert len(str(error)) < 1000
    keys = [qkdn_pb2.Key(key_id="x" * 10_000) for _ in range(1000)]
    bad_keys = qkdn_pb2.AkResponseToKeyRequest(response="s", keys=keys)
    error = _refused(ak.ResponseToKeyRequest, bad_keys.SerializeToString())
    assert len(error.errors) <= MAX_ERRORS + 1
    assert len(str(error)) < 1000
    text = "x" * 100_000
    long_json = qkdn_pb2.AkKeyRequest(application_destination_id="b", extension=[text])
    assert len(str(_refused(ak.KeyRequest, long_json.SerializeToString()))) < 1000


# --- encoding refuses what cannot be carried ------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        mgmt.ErrorIndication(reason="x", command_code=2**64),
        ak.ResponseToKeyRequest(keys="abc", response="success"),  # type: ignore[arg-type]
        ak.KeyRequest(application_destination_id="b", extension=[{"n": 2**70}]),
        ak.KeyRequest(application_destination_id="b", extension=["not an object"]),  # type: ignore[list-item]
        ck.ResponseToKeyRelayRequest(response=0),  # type: ignore[arg-type]
        ak.KeyRequest(application_destination_id="\ud800"),
    ],
    ids=["int-too-big", "wrong-type", "json-int", "json-not-object", "response-type", "surrogate"],
)
def test_encode_raises_only_local_protocol_error(message: Message) -> None:
    with pytest.raises(LocalProtocolError, match="cannot be encoded"):
        encode(message)
    with pytest.raises(LocalProtocolError):
        encode_envelope(1, message)


def test_encode_envelope_refuses_a_message_id_that_does_not_fit() -> None:
    for message_id in (-1, 2**32):
        with pytest.raises(LocalProtocolError, match="message_id"):
            encode_envelope(message_id, kq1.KeyRequest())
    with pytest.raises(LocalProtocolError, match="not a registered message class"):
        encode(Key(key=b"k", key_id="1"))  # type: ignore[arg-type]
