"""The bare baseline of ``tcp://`` and ``tcp+tls://``: trio exchanging frames, nothing more.

The server reads frames (only their headers: the 10-byte header says where a frame ends) and
answers each with the same frame bytes, encoded once; the client writes the bytes of one
request frame and counts the frames that come back; requests made together (by several tasks
at once) go out in one write, as a client that pipelines sends them. Over ``tcp+tls://`` both
sides use the same :class:`~qkdn_sdk.tls.TLSConfig` contexts as the SDK. No payload is
decoded, no MessageID matched: answers come back in the order the requests went.
"""

from __future__ import annotations

import collections
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from qkdn_sdk.codecs.frame import FrameDecoder, encode_message
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import BareExchange, tcp_address

__all__ = ["BareFrames"]

_READ_SIZE = 65536


class BareFrames(BareExchange):
    """:class:`~qkdn_sdk.transport.BareExchange` of ``scheme`` (``tcp`` or ``tcp+tls``)."""

    description = "trio exchanging frames, same TLS"

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    async def serve(
        self,
        request: Message,
        answer: Message,
        tls: TLSConfig | None,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        answer_frame = encode_message(answer, 2)
        context = tls.server_context() if tls is not None else None

        async def answer_all(tcp_stream: trio.SocketStream) -> None:
            stream: trio.abc.Stream = tcp_stream
            if context is not None:
                stream = trio.SSLStream(tcp_stream, context, server_side=True)
            decoder = FrameDecoder()
            try:
                while data := await stream.receive_some(_READ_SIZE):
                    decoder.receive_data(data)
                    count = 0
                    while decoder.next_frame() is not None:
                        count += 1
                    if count:
                        await stream.send_all(answer_frame * count)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await trio.aclose_forcefully(stream)

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(f"{self.scheme}://127.0.0.1:{port}")
            await trio.serve_listeners(answer_all, listeners, handler_nursery=nursery)

    @asynccontextmanager
    async def connect(
        self, url: str, request: Message, tls: TLSConfig | None
    ) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        host, port = tcp_address(urllib.parse.urlsplit(url))
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if tls is not None:
            stream = trio.SSLStream(stream, tls.client_context(), server_hostname=host)
        request_frame = encode_message(request, 1)
        waiting: collections.deque[trio.Event] = collections.deque()
        outbox = bytearray()
        queued = trio.Event()

        async def read_answers() -> None:
            decoder = FrameDecoder()
            while data := await stream.receive_some(_READ_SIZE):
                decoder.receive_data(data)
                while decoder.next_frame() is not None:
                    waiting.popleft().set()

        async def write_requests() -> None:
            nonlocal queued
            while True:
                await queued.wait()
                queued = trio.Event()
                data = bytes(outbox)
                outbox.clear()
                await stream.send_all(data)

        async def call() -> None:
            answered = trio.Event()
            waiting.append(answered)
            outbox.extend(request_frame)
            queued.set()
            await answered.wait()

        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(read_answers)
            nursery.start_soon(write_requests)
            yield call
            nursery.cancel_scope.cancel()
