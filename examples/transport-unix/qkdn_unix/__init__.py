"""``unix://PATH``: Q.416x Appendix I frames over a Unix domain socket.

What a transport plugin is made of (qkdn-sdk's *Writing a transport plugin*):

- a :class:`~qkdn_sdk.transport.Transport` subclass saying its schemes, with ``connect`` and
  ``serve``; both hand their byte stream to qkdn-sdk's
  :class:`~qkdn_sdk.transport.FramedConnection`, which does the framing, the message IDs,
  refusing bad input and the limits, so this module only opens sockets;
- :func:`qkdn_register_transports`, the hook qkdn-sdk calls, named by the entry point in
  ``pyproject.toml``.

There is no TLS on a Unix socket: who may connect is the socket file's permissions, and peers
are told apart by their user ID (``SO_PEERCRED``) for the per-peer connection cap. A client's
``identity`` is what it says it is, as on ``tcp://``.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from qkdn_sdk.errors import TransportError
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import (
    Admission,
    ConnectHook,
    Connection,
    FramedConnection,
    Handler,
    Limits,
    ServerInfo,
    Transport,
    TransportRegistry,
    hookimpl,
    refuse_connection,
    running,
)

__all__ = ["UnixTransport", "qkdn_register_transports"]

logger = logging.getLogger("qkdn_unix")

_BACKLOG = 128


def _path(url: urllib.parse.SplitResult) -> str:
    if url.netloc:
        raise TransportError(f"{url.geturl()}: a unix:// URL names a path (unix:///run/km.sock)")
    return url.path


class UnixTransport(Transport):
    """Unix domain socket transport: ``unix:///path/to/socket``."""

    name = "unix"
    schemes = ("unix",)
    secure_schemes = ()

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
            raise TransportError("unix:// has no TLS: the socket file's permissions protect it")
        path = _path(url)
        try:
            with trio.fail_after(limits.handshake_timeout):
                stream = await trio.open_unix_socket(path)
        except OSError as exc:
            raise TransportError(f"cannot connect to {url.geturl()}: {exc.strerror}") from None
        except trio.TooSlowError:
            raise TransportError(f"connecting to {url.geturl()} took too long") from None
        connection = FramedConnection(
            stream,
            transport=self,
            is_client=True,
            handler=handler,
            limits=limits,
            peer_id=None,
            local_id=identity,
            accepts=accepts,
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
        accepts: Collection[type[Message]] | None,
        on_connect: ConnectHook | None = None,
        task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if tls is not None:
            raise TransportError("unix:// has no TLS: the socket file's permissions protect it")
        made = None if _path(url) else tempfile.mkdtemp(prefix="qkdn-unix-")
        path = str(Path(made) / "socket") if made else _path(url)
        listening = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await listening.bind(path)
        except OSError as exc:
            listening.close()
            raise TransportError(f"cannot serve on {path}: {exc.strerror}") from None
        listening.listen(_BACKLOG)
        admission = Admission(limits)

        async def serve_one(stream: trio.SocketStream) -> None:
            with admission.connection() as admitted:
                if not admitted:
                    await trio.aclose_forcefully(stream)
                    return
                try:
                    with admission.peer(_peer_of(stream)) as refusal:
                        if refusal is not None:
                            await refuse_connection(stream, refusal, limits)
                            return
                        await FramedConnection(
                            stream,
                            transport=self,
                            is_client=False,
                            handler=handler,
                            limits=limits,
                            peer_id=None,
                            local_id=identity,
                            accepts=accepts,
                            on_connect=on_connect,
                        ).run()
                except Exception:  # one connection's failure must never stop the server
                    logger.exception("a connection failed")
                finally:
                    await trio.aclose_forcefully(stream)

        try:
            async with trio.open_nursery() as nursery:
                task_status.started(ServerInfo(f"unix://{path}"))
                listener = trio.SocketListener(listening)
                await trio.serve_listeners(serve_one, [listener], handler_nursery=nursery)
        finally:
            listening.close()
            os.unlink(path)
            if made:
                os.rmdir(made)


def _peer_of(stream: trio.SocketStream) -> str:
    """Who the peer is, for the per-peer cap: its user ID."""
    credentials = stream.socket.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return f"uid {uid}"


@hookimpl
def qkdn_register_transports(registry: TransportRegistry) -> None:
    """The hook qkdn-sdk calls when it loads the entry point: register the transport."""
    registry.add(UnixTransport)
