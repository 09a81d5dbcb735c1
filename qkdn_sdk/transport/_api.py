"""What roles and applications program against: :class:`Connection`, :data:`Handler`,
:class:`Limits`; and what a transport plugin implements: :class:`Transport`."""

from __future__ import annotations

import abc
import urllib.parse
from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import attrs
import trio

from qkdn_sdk.errors import IdentityMismatch, quoted
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import TLSConfig

__all__ = [
    "DEFAULT_TIMEOUT",
    "BareExchange",
    "ConnectHook",
    "Connection",
    "Handler",
    "Limits",
    "ServerInfo",
    "Transport",
    "check_claims",
]

DEFAULT_TIMEOUT = 30.0
"""Seconds :meth:`Connection.request` waits for a response unless told otherwise."""


class Connection(abc.ABC):
    """A bidirectional message connection to one peer.

    Either side may send requests and await their responses (:meth:`request`, matched by
    MessageID, so requests may be pipelined), send one-way messages (:meth:`send`), and handle
    the peer's requests (the :data:`Handler` given to ``connect``/``serve``).
    """

    @property
    @abc.abstractmethod
    def peer_id(self) -> str | None:
        """The peer's verified identity (the ID in its TLS certificate), or ``None`` when the
        transport authenticates nobody (plain ``tcp://``)."""

    @property
    @abc.abstractmethod
    def local_id(self) -> str | None:
        """Our identity as the peer sees it (our certificate's ID), when known."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once the connection is closed (by either side) or broken, or the peer has
        stopped sending (a request could get no answer)."""

    @abc.abstractmethod
    async def request(
        self, message: Message, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Message:
        """Send a request and return the peer's response (of ``message.response_type()``).

        Raises :class:`~qkdn_sdk.errors.FailureResponse` when the peer answers with a failure
        (the response is on the error), :class:`~qkdn_sdk.errors.RequestTimeout` after
        ``timeout`` seconds (``None``: wait for ever), :class:`~qkdn_sdk.errors.PeerClosed` or
        :class:`~qkdn_sdk.errors.ConnectionBroken` when the connection ends first,
        :class:`~qkdn_sdk.errors.RemoteProtocolError` for an invalid response,
        :class:`~qkdn_sdk.errors.PayloadTooLarge`, :class:`~qkdn_sdk.errors.NotCarried` or
        :class:`~qkdn_sdk.errors.LocalProtocolError` for a message that cannot be sent.
        Cancelling it is safe: a frame is never half written.
        """

    @abc.abstractmethod
    async def send(self, message: Message) -> None:
        """Send a one-way message (one that expects no response). Raises as :meth:`request`."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the connection. Pending requests fail with
        :class:`~qkdn_sdk.errors.ConnectionBroken`. Closing twice is harmless."""


def check_claims(message: Message, identity: str | None) -> None:
    """Raise :class:`~qkdn_sdk.errors.IdentityMismatch` when ``message`` names as its sender
    (``Message.claims``) another ID than ``identity``, the one its sender authenticated with
    (``None``: nobody authenticated, nothing to check). Every transport checks what it
    receives so; one that cannot carry the claim checks what it sends."""
    if identity is None:
        return
    for name in message.claims:
        claimed = getattr(message, name)
        if claimed is not None and claimed != identity:
            raise IdentityMismatch(
                f"{name} {quoted(claimed)} is not the authenticated peer {identity!r}"
            )


Handler = Callable[[Message, Connection], Awaitable[Message | None]]
"""Handles a message from the peer: returns the response to a request (a message of the
request's ``response_type()``, or an error indication), and ``None`` for a one-way message.
An exception becomes a failure response (a :class:`~qkdn_sdk.errors.QkdnError` with its own
text, anything else as "internal error"); the connection goes on either way. A response that no
request of ours awaits (a proactive status supply, or one that came after its request timed
out) reaches the handler as a one-way message."""

ConnectHook = Callable[[Connection], None]
"""Told of each new connection a server accepts, once its peer is authenticated (after the TLS
handshake and the connection caps) and before its first message is handled: the connection on
which the server can send the peer requests of its own. It must return at once (start any work
in a nursery of its own); an exception it raises ends that connection, never the server."""


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"Limits.{attribute.name} must be > 0, got {value}")


@attrs.frozen
class Limits:
    """What one peer may cost. Defaults suit a KM serving applications; every limit is enforced
    by every transport."""

    max_in_flight: int = attrs.field(default=64, validator=_positive)
    """Peer requests handled at once on one connection; more get a failure response."""
    max_connections: int = attrs.field(default=512, validator=_positive)
    """Connections one server holds at once; a connection over it is closed as soon as it is
    accepted (before any TLS handshake), so file descriptors never run out."""
    max_connections_per_peer: int = attrs.field(default=32, validator=_positive)
    """Connections one peer identity (its certificate's ID; on plain ``tcp://`` its address) holds
    at once on one server; one more gets an error indication saying so, and is closed."""
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Seconds a new connection has to finish its TLS handshake."""
    idle_timeout: float | None = attrs.field(default=300.0, validator=_positive)
    """A connection with no complete frame in either direction for this long, and no request
    waiting for its answer, is closed (``None``: never). Bytes that do not complete a frame do
    not count: a peer cannot keep a connection by trickling."""
    send_timeout: float = attrs.field(default=30.0, validator=_positive)
    """A peer that does not read a frame for this long is disconnected."""
    drain_timeout: float = attrs.field(default=30.0, validator=_positive)
    """Once a peer stops sending (it half-closed, or its framing was lost), the requests it sent
    before are still answered, for at most this many seconds; then the connection closes."""


@attrs.frozen
class ServerInfo:
    """What ``serve`` reports once it listens: the URL that reaches it (with the port the system
    chose when asked for port 0)."""

    url: str


_Call = Callable[[], Awaitable[None]]


class BareExchange(abc.ABC):
    """A transport's own stack exchanging one request and its answer as bytes, without the SDK:
    no message layer, no validation, no MessageID matching beyond what the stack itself needs.
    ``qkdn bench`` measures the SDK beside it in the same run (:meth:`Transport.bare_exchange`).
    """

    description: ClassVar[str]
    """What the bare stack is, in a few words (``"trio exchanging frames"``)."""

    @abc.abstractmethod
    async def serve(
        self,
        request: Message,
        answer: Message,
        tls: TLSConfig | None,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on loopback (a port the system chooses) and answer every ``request`` (its
        type says where it arrives, for a transport with a path per request) with the bytes
        that carry ``answer``, encoded once, without reading what arrives beyond where it
        ends; report the URL with ``task_status.started(url)``; serve until cancelled."""

    @abc.abstractmethod
    def connect(
        self, url: str, request: Message, tls: TLSConfig | None
    ) -> AbstractAsyncContextManager[_Call]:
        """One connection to ``url``: the call sends the bytes that carry ``request`` (encoded
        once) and returns when an answer has arrived. Several tasks may call at once: the
        requests are then in flight together on the one connection."""


class Transport(abc.ABC):
    """A transport plugin: the schemes it serves and how it connects and serves.

    Subclasses are registered by a ``qkdn_register_transports`` hook (see
    :mod:`qkdn_sdk.transport.hookspecs`); they are instantiated once per registry.
    """

    name: ClassVar[str]
    """Short name shown by ``qkdn transports`` (``"tcp"``)."""
    schemes: ClassVar[tuple[str, ...]]
    """URL schemes handled (``("tcp", "tcp+tls")``)."""
    secure_schemes: ClassVar[tuple[str, ...]] = ()
    """Those of ``schemes`` that use TLS (and require a :class:`~qkdn_sdk.tls.TLSConfig`)."""

    def carries(self, message_type: type[Message], *, from_client: bool) -> bool:
        """Whether this transport can carry ``message_type`` sent by the side that connected
        (``from_client``) or by the side that serves. Default: every message, both ways."""
        return True

    def capabilities(self) -> str:
        """One line saying what the transport carries (for ``qkdn transports``)."""
        return "every message, both directions"

    def as_carried(self, message: Message) -> Message:
        """``message`` as the peer receives it. A transport that maps messages onto another
        protocol (ETSI 014) carries only the parameters the mapping has. Default: all of it."""
        return message

    def bare_exchange(self, scheme: str) -> BareExchange | None:
        """The bare stack under ``scheme`` (the baseline of ``qkdn bench``), or ``None`` when the
        plugin offers none. Default: none."""
        return None

    @abc.abstractmethod
    def connect(
        self,
        url: urllib.parse.SplitResult,
        *,
        tls: TLSConfig | None,
        identity: str | None,
        handler: Handler | None,
        limits: Limits,
        accepts: Collection[type[Message]] | None,
    ) -> AbstractAsyncContextManager[Connection]:
        """Connect to ``url``; the context manager closes the connection. ``accepts``: the
        messages the peer may send us (``None``: all); others get an error indication."""

    @abc.abstractmethod
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
        """Serve ``url`` until cancelled, calling ``handler`` for every accepted message of every
        peer; report the bound address with ``task_status.started(ServerInfo(...))``.

        ``on_connect`` (:data:`ConnectHook`) is called with each connection on which the server
        can send the peer its own requests, as soon as it can; a transport that cannot (ETSI
        014's request and answer) never calls it.

        Every limit of ``limits`` holds, the connection caps included (use
        :class:`~qkdn_sdk.transport.Admission`); over TLS, a peer whose certificate carries no
        identity is refused."""
