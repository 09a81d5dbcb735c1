"""How a :class:`~qkdn_sdk.transport.FramedConnection` works under load: writes shared by
pipelined frames, handlers that do not hold each other up, and the deadlines one timer keeps
(request timeouts, the send timeout, the idle timeout), each on time.

The peer is a FramedConnection or raw bytes over an in-memory stream; time is trio's
:class:`~trio.testing.MockClock` with autojump where a test asserts when something happens.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from qkdn_sdk.codecs.frame import FrameDecoder, decode_message, encode_message
from qkdn_sdk.errors import ConnectionBroken, RequestTimeout
from qkdn_sdk.messages import Message, ak, example
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.transport import Connection, FramedConnection, Handler, Limits
from qkdn_sdk.transport._framed import _MAX_QUEUED_REPLIES
from qkdn_sdk.transport._memory import MemoryTransport

_GUARD = 30.0
_RESPONSE = example(ak.ResponseToKeyRequest)
_STATUS = example(ak.Status)


def _request(name: str) -> ak.KeyRequest:
    return ak.KeyRequest(application_destination_id=name)


class _CountingStream(trio.abc.HalfCloseableStream):
    """A stream that counts the ``send_all`` calls made on it."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self.writes = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


class _RawPeer:
    """Bytes in, frames out."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()

    async def next_message(self) -> tuple[int, Message]:
        while (frame := self.decoder.next_frame()) is None:
            data = await self.stream.receive_some(65536)
            assert data, "the connection closed"
            self.decoder.receive_data(data)
        return frame.message_id, decode_message(frame)


def _connection(
    stream: trio.abc.Stream,
    *,
    is_client: bool,
    handler: Handler | None = None,
    limits: Limits | None = None,
) -> FramedConnection:
    return FramedConnection(
        stream,
        transport=MemoryTransport(),
        is_client=is_client,
        handler=handler,
        limits=limits or Limits(),
    )


@asynccontextmanager
async def _served_raw(
    handler: Handler, limits: Limits | None = None
) -> AsyncIterator[tuple[_RawPeer, _CountingStream]]:
    """A serving FramedConnection with a raw peer, and its stream (to count its writes)."""
    peer_end, server_end = trio.testing.memory_stream_pair()
    counting = _CountingStream(server_end)
    server = _connection(counting, is_client=False, handler=handler, limits=limits)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        yield _RawPeer(peer_end), counting
        await server.aclose()


@asynccontextmanager
async def _pair(
    handler: Handler, server_limits: Limits | None = None
) -> AsyncIterator[tuple[FramedConnection, trio.Event]]:
    """A client FramedConnection to a serving one; the event is set when the client's
    connection has ended (the server closed it)."""
    client_end, server_end = trio.testing.memory_stream_pair()
    server = _connection(server_end, is_client=False, handler=handler, limits=server_limits)
    client = _connection(client_end, is_client=True)
    ended = trio.Event()

    async def run_client() -> None:
        await client.run()
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        nursery.start_soon(run_client)
        yield client, ended
        await client.aclose()
        await server.aclose()


async def _answer(_message: Message, _connection: Connection) -> Message | None:
    return _RESPONSE


# --- shared writes -------------------------------------------------------------------------------


async def test_pipelined_requests_are_each_answered_in_a_few_writes() -> None:
    """Forty requests in one write get forty answers, each with its own MessageID; the answers
    share writes instead of taking one each, and handlers that do not wait share a task."""
    count = 40
    handled_in: set[trio.lowlevel.Task] = set()

    async def answer(_message: Message, _connection: Connection) -> Message | None:
        handled_in.add(trio.lowlevel.current_task())
        return _RESPONSE

    with trio.fail_after(_GUARD):
        async with _served_raw(answer) as (peer, server_stream):
            await peer.stream.send_all(
                b"".join(encode_message(_request(f"r{i}"), 2 * i + 1) for i in range(count))
            )
            answers = [await peer.next_message() for _ in range(count)]
    assert sorted(message_id for message_id, _ in answers) == [2 * i + 1 for i in range(count)]
    assert all(answer == _RESPONSE for _, answer in answers)
    assert server_stream.writes <= 3
    assert len(handled_in) == 1


async def test_queued_answers_go_out_whole_and_in_the_order_they_were_queued() -> None:
    """Frames with unknown command codes, read at once, are refused at once: their error
    indications go out in the order of the frames, sharing writes (as many at a time as the
    reader queues before it waits for the writer)."""
    count = 30
    frames = b"".join(
        struct.pack(">HIHH", 1, 2 * i + 1, 0x7F00 + i, 2) + b"{}" for i in range(count)
    )
    with trio.fail_after(_GUARD):
        async with _served_raw(_answer) as (peer, server_stream):
            await peer.stream.send_all(frames)
            answers = [await peer.next_message() for _ in range(count)]
    assert [message_id for message_id, _ in answers] == [2 * i + 1 for i in range(count)]
    indications = [answer for _, answer in answers if isinstance(answer, ErrorIndication)]
    assert [indication.command_code for indication in indications] == [
        0x7F00 + i for i in range(count)
    ]
    assert server_stream.writes == -(-count // _MAX_QUEUED_REPLIES)


async def test_a_request_given_up_before_its_frame_went_out_is_not_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While the peer does not read, a request that times out in the writer's queue is dropped
    from it; the frames queued around it still go out."""
    client_end, peer_end = trio.testing.lockstep_stream_pair()
    client = _connection(client_end, is_client=True)
    peer = _RawPeer(peer_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        nursery.start_soon(client.send, _STATUS)  # the writer blocks on it: the peer waits
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RequestTimeout):
            await client.request(_request("given up"), timeout=1)
        nursery.start_soon(client.send, _STATUS)
        await trio.testing.wait_all_tasks_blocked()
        received = [await peer.next_message(), await peer.next_message()]
        await trio.testing.wait_all_tasks_blocked()  # the sends return
        await client.aclose()
    assert received == [(1, _STATUS), (5, _STATUS)]  # (3 was the request's ID)


# --- handlers ------------------------------------------------------------------------------------


async def test_a_slow_handler_holds_up_no_other_request() -> None:
    arrived = trio.Event()
    release = trio.Event()

    async def handler(message: Message, _connection: Connection) -> Message | None:
        assert isinstance(message, ak.KeyRequest)
        if message.application_destination_id == "slow":
            arrived.set()
            await release.wait()
        return _RESPONSE

    answered: list[str] = []

    async def ask(client: Connection, name: str) -> None:
        assert await client.request(_request(name)) == _RESPONSE
        answered.append(name)

    with trio.fail_after(_GUARD):
        async with _pair(handler) as (client, _ended), trio.open_nursery() as nursery:
            nursery.start_soon(ask, client, "slow")
            await arrived.wait()
            for index in range(5):
                await ask(client, f"quick {index}")
            assert answered == [f"quick {index}" for index in range(5)]
            release.set()
    assert answered[-1] == "slow"


async def test_requests_over_the_in_flight_limit_are_refused_while_handlers_wait() -> None:
    release = trio.Event()
    waiting = 0
    all_waiting = trio.Event()

    async def handler(_message: Message, _connection: Connection) -> Message | None:
        nonlocal waiting
        waiting += 1
        if waiting == 3:
            all_waiting.set()
        await release.wait()
        return _RESPONSE

    with trio.fail_after(_GUARD):
        async with _served_raw(handler, Limits(max_in_flight=3)) as (peer, _stream):
            await peer.stream.send_all(
                b"".join(encode_message(_request(f"r{i}"), 2 * i + 1) for i in range(4))
            )
            await all_waiting.wait()
            message_id, refusal = await peer.next_message()
            assert message_id == 7
            assert isinstance(refusal, ak.ResponseToKeyRequest)
            assert "too many requests in flight" in (refusal.response or "")
            release.set()
            answers = sorted([await peer.next_message() for _ in range(3)], key=lambda a: a[0])
    assert answers == [(1, _RESPONSE), (3, _RESPONSE), (5, _RESPONSE)]


# --- deadlines -----------------------------------------------------------------------------------


def _stalling(message: Message) -> bool:
    return isinstance(message, ak.KeyRequest) and message.application_destination_id == "stall"


async def _stall_or_answer(message: Message, _connection: Connection) -> Message | None:
    if _stalling(message):
        await trio.sleep_forever()
    return _RESPONSE


async def test_requests_time_out_on_time(autojump_clock: trio.testing.MockClock) -> None:
    """Each request times out at its own deadline, a sooner one after a later one included,
    and a deadline met earlier changes nothing."""
    timed_out: dict[str, float] = {}

    async def ask(client: Connection, name: str, timeout: float, after: float) -> None:
        await trio.sleep(after)
        with pytest.raises(RequestTimeout, match=f"within {timeout} s"):
            await client.request(_request("stall"), timeout=timeout)
        timed_out[name] = trio.current_time() - start

    async with _pair(_stall_or_answer) as (client, _ended):
        start = trio.current_time()
        assert await client.request(_request("quick"), timeout=0.5) == _RESPONSE
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, client, "long", 10.0, 0.0)
            nursery.start_soon(ask, client, "short", 3.0, 1.0)
            nursery.start_soon(ask, client, "none", 0.0, 2.0)
        assert not client.closed
        assert await client.request(_request("quick")) == _RESPONSE
    assert timed_out == {
        "long": pytest.approx(10.0),
        "short": pytest.approx(4.0),
        "none": pytest.approx(2.0),
    }


async def test_a_write_that_outlasts_the_send_timeout_is_cut_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The send timeout counts from the start of the write that hangs, not from an earlier
    write's: a peer that stops reading at 5 s is cut off at 5 + 7 s."""
    client_end, peer_end = trio.testing.lockstep_stream_pair()
    client = _connection(client_end, is_client=True, limits=Limits(send_timeout=7))
    peer = _RawPeer(peer_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        start = trio.current_time()
        async with trio.open_nursery() as first:
            first.start_soon(client.send, _STATUS)
            assert await peer.next_message() == (1, _STATUS)
        await trio.sleep(5)
        with pytest.raises(ConnectionBroken, match="read nothing for 7 s"):
            await client.send(_STATUS)
        assert trio.current_time() - start == pytest.approx(12.0)
        assert client.closed


async def test_a_connection_busy_for_longer_than_the_idle_timeout_is_not_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request handled for 25 s on a connection with a 10 s idle timeout is answered; the
    connection closes 10 s after that answer."""

    async def slow(_message: Message, _connection: Connection) -> Message | None:
        await trio.sleep(25)
        return _RESPONSE

    async with _pair(slow, Limits(idle_timeout=10)) as (client, ended):
        start = trio.current_time()
        assert await client.request(_request("slow")) == _RESPONSE
        assert trio.current_time() - start == pytest.approx(25.0)
        await ended.wait()
        assert trio.current_time() - start == pytest.approx(35.0)
