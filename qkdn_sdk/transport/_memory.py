"""``memory://NAME``: both ends in one trio run, joined by an in-memory byte stream.

For tests and the embedded demo. It speaks the same frames as TCP (so payload limits and bad
input behave the same), through :func:`trio.testing.memory_stream_pair`. Identity is whatever each
side says it is (``identity=``): everything runs in one trusted process.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
import trio.testing

from qkdn_sdk.errors import TransportError
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport._api import Connection, Handler, Limits, ServerInfo, Transport
from qkdn_sdk.transport._framed import FramedConnection, running
from qkdn_sdk.transport.hookspecs import hookimpl

__all__ = ["MemoryTransport", "qkdn_register_transports"]


@attrs.frozen
class _MemoryServer:
    nursery: trio.Nursery
    handler: Handler
    identity: str | None
    limits: Limits


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

    @asynccontextmanager
    async def connect(
        self,
        url: urllib.parse.SplitResult,
        *,
        tls: TLSConfig | None,
        identity: str | None,
        handler: Handler | None,
        limits: Limits,
    ) -> AsyncIterator[Connection]:
        if tls is not None:
            raise TransportError("memory:// does not use TLS")
        server = _SERVERS.get(_key(url))
        if server is None:
            raise TransportError(f"nothing serves {url.geturl()}")
        client_stream, server_stream = trio.testing.memory_stream_pair()
        server_side = FramedConnection(
            server_stream,
            transport=self,
            is_client=False,
            handler=server.handler,
            limits=server.limits,
            peer_id=identity,
            local_id=server.identity,
        )
        server.nursery.start_soon(server_side.run)
        connection = FramedConnection(
            client_stream,
            transport=self,
            is_client=True,
            handler=handler,
            limits=limits,
            peer_id=server.identity,
            local_id=identity,
        )
        async with running(connection):
            yield connection

    async def serve(
        self,
        url: urllib.parse.SplitResult,
        handler: Handler,
        *,
        tls: TLSConfig | None,
        identity: str | None,
        limits: Limits,
        task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if tls is not None:
            raise TransportError("memory:// does not use TLS")
        key = _key(url)
        if key in _SERVERS:
            raise TransportError(f"{url.geturl()} is already served")
        async with trio.open_nursery() as nursery:
            _SERVERS[key] = _MemoryServer(nursery, handler, identity, limits)
            try:
                task_status.started(ServerInfo(url.geturl()))
                await trio.sleep_forever()
            finally:
                del _SERVERS[key]


@hookimpl
def qkdn_register_transports(registry: object) -> None:
    registry.add(MemoryTransport)  # type: ignore[attr-defined]
