"""Transports: connect to and serve QKDN peers by URL, whatever carries the messages.

::

    async with connect("tcp+tls://km-a.example:5000", tls=TLSConfig(ca, cert, key)) as km:
        response = await km.request(ak.KeyRequest(application_destination_id="app-b"))

    await serve("tcp+tls://0.0.0.0:5000", handler, tls=TLSConfig(ca, cert, key))

Schemes come from transport plugins (:mod:`qkdn_sdk.transport.hookspecs`); ``memory://`` is built
in. Every transport gives the same :class:`Connection`.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

import trio

from qkdn_sdk.errors import TransportError
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import _framed, _memory
from qkdn_sdk.transport._admission import Admission, refuse_connection
from qkdn_sdk.transport._api import (
    DEFAULT_TIMEOUT,
    BareExchange,
    ConnectHook,
    Connection,
    Handler,
    Limits,
    ServerInfo,
    Transport,
    check_claims,
)
from qkdn_sdk.transport._framed import FramedConnection, running
from qkdn_sdk.transport._listen import bound_url, open_listeners, tcp_address
from qkdn_sdk.transport._registry import PluginFailure, TransportRegistry, load_registry
from qkdn_sdk.transport.hookspecs import hookimpl

__all__ = [
    "DEFAULT_TIMEOUT",
    "Admission",
    "BareExchange",
    "ConnectHook",
    "Connection",
    "FramedConnection",
    "Handler",
    "Limits",
    "PluginFailure",
    "ServerInfo",
    "Transport",
    "TransportRegistry",
    "bound_url",
    "check_claims",
    "connect",
    "hookimpl",
    "open_listeners",
    "refuse_connection",
    "running",
    "serve",
    "tcp_address",
    "transport_registry",
]


@functools.cache
def transport_registry() -> TransportRegistry:
    """The process-wide registry: the built-in ``memory://`` transport plus every plugin of the
    ``qkdn.transports`` entry-point group (loaded once, on first use)."""
    return load_registry([("memory", _memory)])


# The connections below ask the registry which transports carry what they cannot.
_framed.use_registry(transport_registry)


def _resolve(url: str, tls: TLSConfig | None) -> tuple[Transport, urllib.parse.SplitResult]:
    parsed = urllib.parse.urlsplit(url)
    if not parsed.scheme:
        raise TransportError(
            f"{url!r} is not a URL: expected scheme://address, e.g. tcp://host:port"
        )
    transport = transport_registry().lookup(parsed.scheme)
    if parsed.scheme in transport.secure_schemes and tls is None:
        raise TransportError(
            f"{parsed.scheme}:// needs TLS settings: a CA, a certificate and its key"
        )
    return transport, parsed


@asynccontextmanager
async def connect(
    url: str,
    *,
    tls: TLSConfig | None = None,
    identity: str | None = None,
    handler: Handler | None = None,
    limits: Limits | None = None,
    accepts: Collection[type[Message]] | None = None,
) -> AsyncIterator[Connection]:
    """Connect to the peer at ``url``; leaving the block closes the connection.

    ``handler`` answers the requests the peer sends us (session notifications, proactive key
    supply...); ``identity`` is our ID where the transport does not take it from a certificate
    (``memory://``). ``accepts`` is the set of messages the peer may send us, e.g.
    ``received_by(Role.APPLICATION)``; anything else gets an error indication and never reaches
    ``handler`` (``None``: every message). Raises :class:`~qkdn_sdk.errors.TransportError` when no
    transport serves the scheme or the peer cannot be reached.
    """
    transport, parsed = _resolve(url, tls)
    async with transport.connect(
        parsed,
        tls=tls,
        identity=identity,
        handler=handler,
        limits=limits or Limits(),
        accepts=accepts,
    ) as connection:
        yield connection


async def serve(
    url: str,
    handler: Handler,
    *,
    tls: TLSConfig | None = None,
    identity: str | None = None,
    limits: Limits | None = None,
    accepts: Collection[type[Message]] | None = None,
    on_connect: ConnectHook | None = None,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``url`` until cancelled: every accepted message of every peer goes to ``handler``.

    ``accepts`` is the set of messages the server's role receives, e.g.
    ``received_by(Role.KM)``; anything else gets an error indication naming it (``None``: every
    message). ``limits`` bounds what each peer may cost (:class:`Limits`). Use
    ``await nursery.start(serve, url, handler)`` to get the :class:`ServerInfo` (the real URL
    when the port was 0) once it listens. ``on_connect`` is told of each peer's connection on
    which the server can send requests of its own (:data:`ConnectHook`).
    """
    transport, parsed = _resolve(url, tls)
    await transport.serve(
        parsed,
        handler,
        tls=tls,
        identity=identity,
        limits=limits or Limits(),
        accepts=accepts,
        on_connect=on_connect,
        task_status=task_status,
    )
