"""What the grpc:// server does with what a hostile or careless gRPC client sends: bytes that are
not the RPC's protobuf message, a message the server does not accept, garbage on the reverse
stream; each gets a clear answer and the server goes on serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from qkdn_grpc import REVERSE
from qkdn_grpc._bridge import CallFailed, GrpcChannel
from qkdn_grpc._codec import decode, decode_envelope, encode, encode_envelope, rpc_path

from qkdn_sdk.errors import FailureResponse
from qkdn_sdk.messages import Message, Role, ak, example, kq1, received_by
from qkdn_sdk.transport import Connection, Limits, ServerInfo, connect, serve

_GUARD = 20


async def _answer(message: Message, connection: Connection) -> Message | None:
    response_type = type(message).response_type()
    return None if response_type is None else example(response_type)


@asynccontextmanager
async def _server(handler: object = _answer) -> AsyncIterator[tuple[str, int]]:
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: serve(
                "grpc://127.0.0.1:0",
                handler,  # type: ignore[arg-type]
                identity="km-a",
                accepts=received_by(Role.KM),
                task_status=task_status,
            )
        )
        try:
            yield info.url, int(info.url.rsplit(":", 1)[1])
        finally:
            nursery.cancel_scope.cancel()


async def test_bytes_that_are_not_the_message_get_invalid_argument() -> None:
    path = rpc_path(ak.KeyRequest)
    with trio.fail_after(_GUARD):
        async with (
            _server() as (_url, port),
            GrpcChannel("127.0.0.1", port, tls=None, limits=Limits()) as channel,
        ):
            for garbage in (b"\xff\xff\xff", b"\x0a\x05abc", encode(example(kq1.KeySupply))):
                with pytest.raises(CallFailed) as caught:
                    await channel.call(path, garbage, timeout=5)
                assert caught.value.status == "INVALID_ARGUMENT"
                assert "invalid" in caught.value.reason.lower()
            good = await channel.call(path, encode(example(ak.KeyRequest)), timeout=5)
            assert decode(ak.ResponseToKeyRequest, good) == example(ak.ResponseToKeyRequest)


async def test_a_message_the_server_does_not_accept_is_refused() -> None:
    """A KM's server receives no Kq-1 key request (a KM sends those): refused, with why."""
    with trio.fail_after(_GUARD):
        async with _server() as (url, _port), connect(url, identity="app-a") as client:
            with pytest.raises(FailureResponse, match="is not accepted here") as caught:
                await client.request(example(kq1.KeyRequest))
            assert isinstance(caught.value.response, kq1.ResponseToKeyRequest)
            assert await client.request(example(ak.KeyRequest)) == example(ak.ResponseToKeyRequest)


async def test_garbage_on_the_reverse_stream_is_skipped() -> None:
    """Bytes that are no envelope, and a request where an answer belongs, are skipped; the
    stream and the server go on (a one-way message after them still arrives)."""
    arrived = trio.Event()
    got: list[Message] = []

    async def handler(message: Message, connection: Connection) -> Message | None:
        if isinstance(message, ak.ResponseToSessionCreationNotification):  # one-way here
            got.append(message)
            arrived.set()
            return None
        return await _answer(message, connection)

    with trio.fail_after(_GUARD):
        async with (
            _server(handler) as (_url, port),
            GrpcChannel("127.0.0.1", port, tls=None, limits=Limits()) as channel,
        ):
            stream = await channel.open_stream(REVERSE)
            async with stream:
                await stream.send(b"\x01\x02\x03 not an envelope")
                await stream.send(encode_envelope(7, example(ak.KeyRequest)))
                one_way = example(ak.ResponseToSessionCreationNotification)
                await stream.send(encode_envelope(0, one_way))
                await arrived.wait()
            assert got == [one_way]
            response = await channel.call(
                rpc_path(ak.KeyRequest), encode(example(ak.KeyRequest)), timeout=5
            )
            assert decode(ak.ResponseToKeyRequest, response) == example(ak.ResponseToKeyRequest)


async def test_the_server_sends_its_requests_on_the_stream_of_that_connection() -> None:
    """Two connections of one peer: a server request during a call of the second goes on the
    second's stream, not the first's."""
    seen: list[str] = []

    async def server_handler(message: Message, connection: Connection) -> Message | None:
        notification = example(ak.SessionCreationNotification)
        await connection.request(notification, timeout=5)
        return await _answer(message, connection)

    def client_handler(name: str) -> object:
        async def handler(message: Message, connection: Connection) -> Message | None:
            seen.append(name)
            return await _answer(message, connection)

        return handler

    with trio.fail_after(_GUARD):
        async with (
            _server(server_handler) as (url, _port),
            connect(url, identity="app-a", handler=client_handler("first")),  # type: ignore[arg-type]
            connect(url, identity="app-a", handler=client_handler("second")) as second,  # type: ignore[arg-type]
        ):
            await second.request(example(ak.KeyRequest))
    assert seen == ["second"]
    assert decode_envelope(encode_envelope(1, example(ak.KeyRequest)))[0] == 1
