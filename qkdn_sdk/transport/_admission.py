"""Admission: the connection caps of one server (:attr:`Limits.max_connections`,
:attr:`Limits.max_connections_per_peer`), shared by every transport's ``serve``.

Theory of operation
-------------------
A server asks twice. When a connection is accepted, before any TLS handshake,
:meth:`Admission.connection` counts it against ``max_connections``; over the cap the transport
closes it at once, so a flood costs a socket for a moment and never exhausts file descriptors.
Once the peer is known (its certificate's ID, or its address on plain ``tcp://``),
:meth:`Admission.peer` counts it against ``max_connections_per_peer``; over that cap the transport
sends an error indication that says so (:func:`refuse_connection`) and closes.

:func:`close_gracefully` ends a connection after a last word (a refusal here, the error
indication of a lost framing in :class:`~qkdn_sdk.transport.FramedConnection`): the peer is told
the end at once, and no TCP reset overtakes the last word.

Refusals are logged without spam: the first one, then at most one line every
:data:`LOG_INTERVAL` seconds with how many more there were.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Iterator

import trio

from qkdn_sdk.codecs.frame import encode_message
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.transport._api import Limits

__all__ = ["LINGER", "LOG_INTERVAL", "Admission", "close_gracefully", "refuse_connection"]

logger = logging.getLogger("qkdn_sdk.transport")

LOG_INTERVAL = 10.0
"""Seconds between two log lines about refused connections."""


class Admission:
    """Counts one server's connections. Not thread-safe: use it from the server's trio run."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._open = 0
        self._per_peer: collections.Counter[str] = collections.Counter()
        self._refused_since_log = 0
        self._logged_at = -float("inf")

    @property
    def open(self) -> int:
        """Connections admitted and not yet ended."""
        return self._open

    @contextlib.contextmanager
    def connection(self) -> Iterator[bool]:
        """Count a newly accepted connection while the block runs; yields ``False`` (and counts
        nothing) when the server already holds ``max_connections``: close it at once."""
        if self._open >= self._limits.max_connections:
            self._refused(f"the server holds {self._open} connections, its limit")
            yield False
            return
        self._open += 1
        try:
            yield True
        finally:
            self._open -= 1

    @contextlib.contextmanager
    def peer(self, peer: str) -> Iterator[str | None]:
        """Count a connection of ``peer`` while the block runs; yields ``None`` when admitted, or
        the reason it is not (``peer`` already holds ``max_connections_per_peer``)."""
        limit = self._limits.max_connections_per_peer
        if self._per_peer[peer] >= limit:
            self._refused(f"{peer} holds {limit} connections, its limit")
            yield f"too many connections from {peer} (limit {limit})"
            return
        self._per_peer[peer] += 1
        try:
            yield None
        finally:
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]

    def _refused(self, why: str) -> None:
        self._refused_since_log += 1
        now = trio.current_time()
        if now - self._logged_at >= LOG_INTERVAL:
            more = self._refused_since_log - 1
            suffix = f" ({more} more refused in the last {LOG_INTERVAL:g} s)" if more else ""
            logger.warning("refused a connection: %s%s", why, suffix)
            self._logged_at = now
            self._refused_since_log = 0


LINGER = 1.0
"""Seconds :func:`close_gracefully` waits, after telling the peer the end, for the peer to close
its side (reading and dropping what it sends meanwhile)."""


async def refuse_connection(stream: trio.abc.Stream, reason: str, limits: Limits) -> None:
    """Tell the peer why its connection is refused (an error indication with ``closing``, sent
    within ``limits.send_timeout``), then close ``stream`` (:func:`close_gracefully`). Never
    raises for the peer.
    """
    indication = ErrorIndication(reason=f"failure: {reason}", closing=True)
    with (
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        trio.move_on_after(limits.send_timeout),
    ):
        await stream.send_all(encode_message(indication, 0))
    await close_gracefully(stream)


async def close_gracefully(stream: trio.abc.Stream) -> None:
    """Close ``stream`` after a last word to the peer, so that the peer reads it.

    The end is said at once, so the peer need not wait for it: a TLS close_notify, then our side
    of TCP half-closed. Then what the peer sends is read and dropped until it closes its side,
    for at most :data:`LINGER` seconds and 64 KiB: closing a socket with unread bytes makes the
    kernel send a reset, which may overtake the last word and make the peer's kernel drop it.
    Never raises for the peer.
    """
    transport = stream
    with trio.move_on_after(LINGER):
        with contextlib.suppress(
            trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError
        ):
            if isinstance(stream, trio.SSLStream):
                transport = stream.transport_stream
                # Sends close_notify, then waits for the peer's: it breaks off when the peer
                # sends data or closes instead, and the rest is read below as plain bytes.
                await stream.unwrap()
        with contextlib.suppress(
            trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError
        ):
            if isinstance(transport, trio.abc.HalfCloseableStream):
                await transport.send_eof()
            dropped = 0
            while dropped < 65536 and (data := await transport.receive_some(16384)):
                dropped += len(data)
    await trio.aclose_forcefully(stream)
    await trio.aclose_forcefully(transport)  # an SSLStream unwrapped leaves it open
