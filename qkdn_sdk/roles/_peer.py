"""A connection to one peer, opened when first needed and opened again after it was lost."""

from __future__ import annotations

from collections.abc import Collection

import trio

from qkdn_sdk.errors import QkdnError, TransportError
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import DEFAULT_TIMEOUT, Connection, Handler, Limits, connect

__all__ = ["Dialer"]


class Dialer:
    """Requests to the peer at ``url``, over one connection held open between them.

    The connection is opened by the first request (and again by the first request after it
    closed) in a task of ``nursery``; a peer that cannot be reached raises
    :class:`~qkdn_sdk.errors.TransportError` from :meth:`request` at once, so the caller can say
    which peer is down. ``url`` may be given later (:attr:`url`), before the first request.

    ``peer`` is the identity the peer must authenticate with (its certificate's ID): a server
    at ``url`` that is someone else is a :class:`~qkdn_sdk.errors.TransportError`, checked once
    the connection is up (or, over a transport that learns the server's identity with its first
    answer, as ETSI 014's does, before that answer is returned). ``None``: anyone at ``url``.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        url: str | None,
        tls: TLSConfig | None,
        identity: str,
        peer: str | None = None,
        handler: Handler | None = None,
        accepts: Collection[type[Message]] | None = None,
        limits: Limits | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._nursery = nursery
        self._tls = tls
        self._identity = identity
        self._peer = peer
        self._handler = handler
        self._accepts = accepts
        self._limits = limits
        self._connect_timeout = connect_timeout
        self._connection: Connection | None = None
        self._release = trio.Event()
        self._lock = trio.Lock()

    async def request(self, message: Message, *, timeout: float = DEFAULT_TIMEOUT) -> Message:
        """Send ``message`` and return the response; raises as :meth:`Connection.request`."""
        connection = await self._connected()
        response = await connection.request(message, timeout=timeout)
        self._check_peer(connection)
        return response

    async def send(self, message: Message) -> None:
        """Send a one-way message; raises as :meth:`Connection.send`."""
        connection = await self._connected()
        await connection.send(message)

    def _check_peer(self, connection: Connection) -> None:
        """Raise :class:`~qkdn_sdk.errors.TransportError` (and drop the connection) when the
        peer authenticated as someone else than :attr:`peer`."""
        if self._peer is None or connection.peer_id in (None, self._peer):
            return
        if connection is self._connection:
            self.close()
        raise TransportError(f"{self.url} is {connection.peer_id!r}, not {self._peer!r}: refused")

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        self._release.set()
        self._connection = None

    async def _connected(self) -> Connection:
        async with self._lock:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            self.close()
            if self.url is None:
                raise TransportError("no address is known for this peer")
            self._release = trio.Event()
            with trio.move_on_after(self._connect_timeout) as scope:
                self._connection = await self._nursery.start(self._hold, self._release)
            if scope.cancelled_caught or self._connection is None:
                raise TransportError(f"{self.url} did not answer within {self._connect_timeout} s")
            return self._connection

    async def _hold(self, release: trio.Event, *, task_status: trio.TaskStatus[Connection]) -> None:
        assert self.url is not None
        started = False
        try:
            async with connect(
                self.url,
                tls=self._tls,
                identity=self._identity,
                handler=self._handler,
                accepts=self._accepts,
                limits=self._limits,
            ) as connection:
                self._check_peer(connection)
                started = True
                task_status.started(connection)
                await release.wait()
        except QkdnError:
            # before started(): nursery.start re-raises it to the requester; after: the
            # connection ended, and the next request opens a new one.
            if not started:
                raise
