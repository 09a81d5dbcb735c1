"""``memory://NAME``: both ends in one trio run, joined by an in-memory byte pipe.

For tests and for embedding a whole network in one process. It speaks the same frames as TCP (so
payload limits and bad input behave the same) over a pipe whose buffers are bounded like a
socket's: a peer that stops reading blocks its writer, and ``Limits.send_timeout`` applies. A
server holds its connection caps (``Limits.max_connections``, ``max_connections_per_peer``) as
every transport does. Identity is whatever each side says it is (``identity=``): everything runs
in one trusted process.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio

from qkdn_sdk.errors import TransportError
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport._admission import Admission, refuse_connection
from qkdn_sdk.transport._api import (
    ConnectHook,
    Connection,
    Handler,
    Limits,
    ServerInfo,
    Transport,
)
from qkdn_sdk.transport._framed import FramedConnection, running
from qkdn_sdk.transport.hookspecs import hookimpl

if TYPE_CHECKING:
    from qkdn_sdk.transport._registry import TransportRegistry

__all__ = ["MemoryTransport", "qkdn_register_transports"]

_CHUNK = 16384
_CHUNKS_BUFFERED = 16  # 256 KiB a direction, about what a loopback socket buffers


class _PipeEnd(trio.abc.HalfCloseableStream):
    """One end of an in-memory byte pipe. ``send_all`` waits while the pipe is full; the other
    end reads ``b""`` after :meth:`send_eof`, and a write to a closed end raises
    :class:`trio.BrokenResourceError`, as with a socket."""

    def __init__(
        self, outgoing: trio.MemorySendChannel[bytes], incoming: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self._unread = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        await trio.lowlevel.checkpoint()
        for start in range(0, len(view), _CHUNK):
            try:
                await self._outgoing.send(bytes(view[start : start + _CHUNK]))
            except trio.BrokenResourceError:
                raise trio.BrokenResourceError("the other end is closed") from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        self._outgoing.close()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._unread:
            try:
                self._unread = await self._incoming.receive()
            except trio.EndOfChannel:
                return b""
        else:
            await trio.lowlevel.checkpoint()
        size = len(self._unread) if max_bytes is None else max_bytes
        data, self._unread = self._unread[:size], self._unread[size:]
        return data

    async def aclose(self) -> None:
        # Both at once, before the checkpoint: aclose_forcefully() cancels that checkpoint.
        self._outgoing.close()
        self._incoming.close()
        await trio.lowlevel.checkpoint()


def _pipe() -> tuple[_PipeEnd, _PipeEnd]:
    to_server, from_client = trio.open_memory_channel[bytes](_CHUNKS_BUFFERED)
    to_client, from_server = trio.open_memory_channel[bytes](_CHUNKS_BUFFERED)
    return _PipeEnd(to_server, from_server), _PipeEnd(to_client, from_client)


@attrs.frozen
class _MemoryServer:
    nursery: trio.Nursery
    handler: Handler
    identity: str | None
    limits: Limits
    accepts: Collection[type[Message]] | None
    admission: Admission
    on_connect: ConnectHook | None


# Keyed by trio run as well as name: two trio runs (two tests) never see each other's servers.
_SERVERS: dict[tuple[object, str], _MemoryServer] = {}


def _key(url: urllib.parse.SplitResult) -> tuple[object, str]:
    name = url.netloc + url.path
    if not name:
        raise TransportError("memory:// URLs need a name: memory://km-a")
    return trio.lowlevel.current_root_task(), name


class MemoryTransport(Transport):
    """In-memory transport (``memory://NAME``)."""

    name = "memory"
    schemes = ("memory",)

    async def open_stream(
        self, url: urllib.parse.SplitResult, *, identity: str | None
    ) -> trio.abc.HalfCloseableStream:
        """A byte stream to the server at ``url``, as a client presenting ``identity``: what
        :meth:`connect` speaks frames over (and what a test uses to send raw bytes)."""
        server = _SERVERS.get(_key(url))
        if server is None:
            raise TransportError(f"nothing serves {url.geturl()}")
        client_end, server_end = _pipe()
        server.nursery.start_soon(self._serve_one, server, server_end, identity)
        await trio.lowlevel.checkpoint()
        return client_end

    @asynccontextmanager
    async def connect(
        self,
        url: urllib.parse.SplitResult,
        *,
        tls: TLSConfig | None,
        identity: str | None,
        handler: Handler | None,
        limits: Limits,
        accepts: Collection[type[Message]] | None,
    ) -> AsyncIterator[Connection]:
        if tls is not None:
            raise TransportError("memory:// does not use TLS")
        server = _SERVERS.get(_key(url))
        stream = await self.open_stream(url, identity=identity)
        connection = FramedConnection(
            stream,
            transport=self,
            is_client=True,
            handler=handler,
            limits=limits,
            peer_id=server.identity if server is not None else None,
            local_id=identity,
            accepts=accepts,
        )
        async with running(connection):
            yield connection

    async def _serve_one(
        self, server: _MemoryServer, stream: _PipeEnd, peer_id: str | None
    ) -> None:
        with server.admission.connection() as admitted:
            if not admitted:
                await trio.aclose_forcefully(stream)
                return
            with server.admission.peer(peer_id or "(no identity)") as refusal:
                if refusal is not None:
                    await refuse_connection(stream, refusal, server.limits)
                    return
                await FramedConnection(
                    stream,
                    transport=self,
                    is_client=False,
                    handler=server.handler,
                    limits=server.limits,
                    peer_id=peer_id,
                    local_id=server.identity,
                    accepts=server.accepts,
                    on_connect=server.on_connect,
                ).run()

    async def serve(
        self,
        url: urllib.parse.SplitResult,
        handler: Handler,
        *,
        tls: TLSConfig | None,
        identity: str | None,
        limits: Limits,
        accepts: Collection[type[Message]] | None,
        on_connect: ConnectHook | None = None,
        task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if tls is not None:
            raise TransportError("memory:// does not use TLS")
        key = _key(url)
        if key in _SERVERS:
            raise TransportError(f"{url.geturl()} is already served")
        async with trio.open_nursery() as nursery:
            _SERVERS[key] = _MemoryServer(
                nursery, handler, identity, limits, accepts, Admission(limits), on_connect
            )
            try:
                task_status.started(ServerInfo(url.geturl()))
                await trio.sleep_forever()
            finally:
                del _SERVERS[key]


@hookimpl
def qkdn_register_transports(registry: TransportRegistry) -> None:
    registry.add(MemoryTransport)
