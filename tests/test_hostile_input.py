"""Regression tests for what hostile peers found (the rest runs in the conformance kit's
hostile-peer suite, on every transport): each fails on the code before its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing

from qkdn_sdk.codecs.frame import encode_message
from qkdn_sdk.codecs.payload import MAX_ERRORS, decode_payload, encode_payload
from qkdn_sdk.errors import (
    MAX_REASON_LENGTH,
    FailureResponse,
    LocalProtocolError,
    PayloadError,
    QkdnError,
)
from qkdn_sdk.messages import (
    Message,
    Role,
    ak,
    all_messages,
    ck,
    example,
    failure_response,
    kq1,
    kx,
    received_by,
)
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.testing import RawPeer
from qkdn_sdk.transport import (
    Connection,
    FramedConnection,
    Handler,
    Limits,
    ServerInfo,
    connect,
    serve,
)
from qkdn_sdk.transport._memory import MemoryTransport

_GUARD = 10
_RESPONSE_TYPES = [cls for cls in all_messages() if cls.response_type() is None]


# --- 1. a failure response never copies a value into a field of another type -----------------


@pytest.mark.parametrize("response_type", _RESPONSE_TYPES, ids=lambda cls: cls.__name__)
def test_failure_responses_encode_whatever_the_request_echoed(
    response_type: type[Message],
) -> None:
    echo = {attribute.name: "abc" for attribute in attrs.fields(response_type)}
    answer = failure_response(response_type, "bad request", echo=echo)
    encode_payload(answer)  # raised AttributeError for key_ids, keys, status_table... before


def test_key_ids_of_text_get_a_failure_that_names_the_problem() -> None:
    """The finding: {"key_ids": "abc"} to 0x410C made a failure whose encoding raised."""
    with pytest.raises(PayloadError) as caught:
        decode_payload(ck.KeyAllocationRequest, b'{"key_ids": "abc"}')
    answer = failure_response(
        ck.ResponseToKeyAllocationRequest, caught.value.response_text, echo={"key_ids": "abc"}
    )
    assert isinstance(answer, ck.ResponseToKeyAllocationRequest)
    assert "key_ids: expected an array" in encode_payload(answer).decode()


def test_a_mistyped_message_cannot_be_encoded_and_says_so() -> None:
    with pytest.raises(LocalProtocolError, match="keys: expected a list, got str"):
        encode_payload(ak.ResponseToKeyRequest(keys="abc", response="success"))  # type: ignore[arg-type]


async def test_a_handler_answer_that_cannot_be_encoded_becomes_a_failure() -> None:
    async def handler(message: Message, _connection: Connection) -> Message | None:
        if isinstance(message, ak.KeyRequest) and message.application_name == "broken":
            return ak.ResponseToKeyRequest(keys="abc", response="success")  # type: ignore[arg-type]
        return example(ak.ResponseToKeyRequest)

    with trio.fail_after(_GUARD):
        async with _memory_server(handler) as url, connect(url, identity="app-a") as client:
            broken = ak.KeyRequest(application_destination_id="b", application_name="broken")
            with pytest.raises(FailureResponse, match="cannot be encoded"):
                await client.request(broken)
            request = example(ak.KeyRequest, sender="app-a")
            assert await client.request(request) == example(ak.ResponseToKeyRequest)


async def test_a_hostile_server_cannot_break_the_client() -> None:
    """A server sends the client requests it cannot parse: the client answers each with a
    failure, keeps its connection, and nothing but QkdnError ever reaches its code."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = _framed(client_stream, is_client=True)
    server = RawPeer(server_stream)
    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            for message_id, (code, payload) in enumerate(
                [(0x410C, b'{"key_ids":"abc"}'), (0x1185, b'{"key_ids":"abc"}'), (0x1206, b"{}")],
                start=2,
            ):
                await server.frame(message_id, code, payload)
                answered_id, answer = await server.next_message()
                assert answered_id == message_id
                assert "failure" in orjson.dumps(attrs.asdict(answer)).decode()
            assert not client.closed
            await client.aclose()


async def test_a_payload_that_names_a_member_twice_gets_a_failure_naming_it() -> None:
    """The finding: orjson kept the last ``number_of_keys``, so a peer could send two and see
    which one a proxy and the KM each read."""
    handled: list[Message] = []

    async def handler(message: Message, _connection: Connection) -> Message | None:
        handled.append(message)
        return example(ak.ResponseToKeyRequest)

    server_stream, client_stream = trio.testing.memory_stream_pair()
    server = _framed(server_stream, is_client=False, handler=handler)
    client = RawPeer(client_stream)
    payload = b'{"application_destination_id":"b","number_of_keys":1,"number_of_keys":5}'
    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
            await client.frame(1, ak.KeyRequest.code, payload)
            assert await client.next_message() == (
                1,
                ak.ResponseToKeyRequest(
                    keys=[],
                    response="failure: invalid Key request: payload: duplicate member "
                    "'number_of_keys'",
                ),
            )
            await server.aclose()
    assert handled == []


def _framed(
    stream: trio.abc.Stream, *, is_client: bool, handler: Handler | None = None
) -> FramedConnection:
    """The SDK's framed connection over ``stream``, taking what a KM takes."""
    return FramedConnection(
        stream,
        transport=MemoryTransport(),
        is_client=is_client,
        handler=handler,
        limits=Limits(),
        accepts=received_by(Role.KM),
    )


# --- 2, 3, 8. bounded work and text, no Python internals ----------------------------------------


def test_a_list_of_thousands_of_bad_items_stops_after_a_few() -> None:
    payload = orjson.dumps({"application_source_id": "a", "key_ids": [1] * 32_700})
    with pytest.raises(PayloadError) as caught:
        decode_payload(ak.KeyRequestWithId, payload)
    errors = caught.value.errors
    assert errors[:MAX_ERRORS] == [
        f"key_ids[{index}]: expected a JSON object" for index in range(MAX_ERRORS)
    ]
    assert len(errors) <= MAX_ERRORS + 1  # was one per item: 32,700 of them, 1.8 MB of text
    assert len(str(caught.value)) < 1000


@pytest.mark.parametrize(
    "payload",
    [
        {"keys": [1] * 32_000, "response": "x"},
        {"x" * 65_000: 1, "response": "success", "keys": []},
        {f"field{index}": 1 for index in range(5000)},
    ],
    ids=["32k-bad-keys", "65k-field-name", "5000-unknown-fields"],
)
def test_error_texts_are_bounded(payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload(ak.ResponseToKeyRequest, orjson.dumps(payload))
    assert len(str(caught.value)) < 1000
    assert len(caught.value.response_text) <= MAX_REASON_LENGTH
    answer = ErrorIndication(reason=caught.value.response_text, command_code=0x1203)
    assert len(encode_message(answer, 1)) < 2 * MAX_REASON_LENGTH


def test_failure_texts_are_cut_to_the_bound() -> None:
    answer = failure_response(ak.ResponseToKeyRequest, "x" * 100_000)
    assert isinstance(answer, ak.ResponseToKeyRequest)
    assert len(answer.response) == MAX_REASON_LENGTH
    assert len(QkdnError("y" * 100_000).response_text) == MAX_REASON_LENGTH


_WRONG_VALUES = [1, -1, 1.5, "s", "", True, [], [1], ["s"], {}, {"a": 1}, [[]], [{}]]
_PYTHON_WORDS = ("' object", "argument of type", "NoneType", "subscriptable", "not iterable", "<cl")


@pytest.mark.parametrize("cls", all_messages(), ids=lambda cls: cls.__name__)
def test_errors_never_leak_python_internals(cls: type[Message]) -> None:
    valid = orjson.loads(encode_payload(example(cls)))
    for name in valid:
        for wrong in _WRONG_VALUES:
            try:
                decode_payload(cls, orjson.dumps({**valid, name: wrong}))
            except PayloadError as exc:
                text = str(exc)
                assert not any(word in text for word in _PYTHON_WORDS), text


# --- 5. identity ---------------------------------------------------------------------------------


def test_every_field_that_names_the_sender_is_a_claim() -> None:
    for cls in all_messages():
        names = {attribute.name for attribute in attrs.fields(cls)}
        if "sender_id" in names:
            assert "sender_id" in cls.claims, cls.__name__
    assert kq1.KeySupply.claims == ("qkd_module_id",)  # the module that supplies the key
    assert kx.KeyIdSynchronizationRequest.claims == ("source_kma_id",)


async def test_a_forged_qkd_module_id_is_refused() -> None:
    forged = attrs.evolve(example(kq1.KeySupply, sender="qkd-a"), qkd_module_id="qkd-z")
    with trio.fail_after(_GUARD):
        async with _memory_server(_examples) as url, connect(url, identity="qkd-a") as module:
            await module.request(example(kq1.KeySupply, sender="qkd-a"))
            with pytest.raises(FailureResponse, match="qkd_module_id 'qkd-z' is not the auth"):
                await module.request(forged)


# --- what a server accepts ------------------------------------------------------------------------


def test_received_by_is_what_the_codes_say() -> None:
    km = received_by(Role.KM)
    assert ak.KeyRequest in km
    assert kq1.KeySupply in km
    assert ck.KeyRelayRequest in km
    assert ErrorIndication in km
    assert ak.SessionCreationNotification not in km  # 0x1206: only a KM sends it
    assert received_by(Role.APPLICATION) >= {ak.SessionCreationNotification, ak.ProactiveKeySupply}


# --- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [{"idle_timeout": 0}, {"max_connections": 0}, {"send_timeout": -1}, {"drain_timeout": 0}],
)
def test_limits_refuse_values_that_would_disable_them(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        Limits(**limits)  # type: ignore[arg-type]


# --- helpers --------------------------------------------------------------------------------------


async def _examples(message: Message, _connection: Connection) -> Message | None:
    response_type = message.response_type()
    return None if response_type is None else example(response_type)


@asynccontextmanager
async def _memory_server(handler: Any) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: serve(
                "memory://km-a", handler, identity="km-a", task_status=task_status
            )
        )
        yield info.url
        nursery.cancel_scope.cancel()
