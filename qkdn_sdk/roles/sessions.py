"""Proactive key supply sessions (Q.4161 clause 7.2, Q.4164 clauses 7.3-7.4): what a KM knows
of each session it takes part in, and the rules a key request with session ID must pass.

A session joins a source application, which asks its KM for keys by session ID, and a
destination application, to which its own KM pushes the same keys. Both KMs (one, when both
applications are its own) hold a :class:`Session` under the same ID, made by the controller (or
by the KM itself when both applications are its own). A session has a lifetime (``lifetime``
seconds from its creation) and a most keys (the ``number_of_keys`` of the creation request);
it ends when it expires, or when either application ends it (key deletion with its session ID,
FG QIT4N D2.3 Table 7-6). A request on a session that is unknown, ended or expired, or that would
go over its keys, is refused with a :class:`SessionError` that says which.

The table is in memory: a restarted KM knows no session (key requests on one fail, saying the
session is unknown); the keys a destination KM still holds for its application stay in the key
store and are pushed once the application is back.
"""

from __future__ import annotations

import attrs
import trio

from qkdn_sdk.errors import QkdnError, quoted

__all__ = ["Session", "SessionError", "Sessions", "session_application", "session_pool"]

_ENDED_KEPT = 4096


class SessionError(QkdnError):
    """A session cannot serve a request; the text says why."""


def session_pool(destination: str, session_id: str) -> str:
    """The key store pool of the keys a destination KM holds for ``destination`` in a session
    (until the application acknowledges each)."""
    return f"session:{destination}:{session_id}"


def session_application(pool: str) -> str | None:
    """The application whose session keys ``pool`` holds, or ``None`` for another pool."""
    kind, _, rest = pool.partition(":")
    return rest.partition(":")[0] if kind == "session" else None


@attrs.define
class Session:
    """One proactive key supply session (Q.4161 clause 7.2) as a KM keeps it."""

    session_id: str
    source: str
    """The source application: the one that asks for keys."""
    destination: str
    """The destination application: the one its KM pushes the keys to."""
    source_km: str
    destination_km: str
    max_keys: int
    expires_at: float
    """``trio.current_time()`` at which the session ends."""
    supplied: int = 0
    """Keys supplied so far (by the source KM)."""


class Sessions:
    """The sessions of one KM, by ID; at most ``per_application`` open ones per source
    application."""

    def __init__(self, *, lifetime: float, per_application: int) -> None:
        self._lifetime = lifetime
        self._per_application = per_application
        self._sessions: dict[str, Session] = {}
        self._ended: dict[str, str] = {}
        """Why the latest sessions ended early, for the refusals (at most :data:`_ENDED_KEPT`)."""

    def open(
        self,
        session_id: str,
        *,
        source: str,
        destination: str,
        source_km: str,
        destination_km: str,
        max_keys: int,
    ) -> Session:
        """Record a new session. Raises :class:`SessionError` when the ID is taken or the source
        application has ``per_application`` open sessions (:meth:`check_room`)."""
        self.check_room(source, session_id)
        session = Session(
            session_id=session_id,
            source=source,
            destination=destination,
            source_km=source_km,
            destination_km=destination_km,
            max_keys=max_keys,
            expires_at=trio.current_time() + self._lifetime,
        )
        self._sessions[session_id] = session
        return session

    def check_room(self, source: str, session_id: str | None = None) -> None:
        """Raise :class:`SessionError` when the application ``source`` cannot open one more
        session (it has ``per_application`` open ones), or ``session_id`` is taken: what
        :meth:`open` will refuse, to be checked before anyone is told of the session."""
        self._forget_expired()
        if session_id is not None and session_id in self._sessions:
            raise SessionError(f"session {quoted(session_id)} exists already")
        open_ones = sum(1 for session in self._sessions.values() if session.source == source)
        if open_ones >= self._per_application:
            raise SessionError(
                f"{quoted(source)} has {open_ones} open sessions, the most this KM allows"
            )

    def get(self, session_id: str) -> Session:
        """The open session ``session_id``. Raises :class:`SessionError` when it is unknown,
        ended or expired."""
        session = self._sessions.get(session_id)
        if session_id in self._ended:
            raise SessionError(f"session {quoted(session_id)} ended: {self._ended[session_id]}")
        if session is None:
            raise SessionError(f"session {quoted(session_id)} is unknown here")
        if trio.current_time() >= session.expires_at:
            raise SessionError(
                f"session {quoted(session_id)} expired (sessions last {self._lifetime:g} s)"
            )
        return session

    def supply(self, session_id: str, application: str, number: int) -> Session:
        """Count ``number`` keys that the source ``application`` asks for in the session.
        Raises :class:`SessionError` when the session cannot serve them."""
        session = self.get(session_id)
        if session.source != application:
            raise SessionError(
                f"session {quoted(session_id)} is not one of {quoted(application)} as source"
            )
        left = session.max_keys - session.supplied
        if number > left:
            raise SessionError(
                f"session {quoted(session_id)} has {left} of its {session.max_keys} keys left, "
                f"not {number}"
            )
        session.supplied += number
        return session

    def refund(self, session: Session, number: int) -> None:
        """Give back ``number`` keys counted by :meth:`supply` that were never supplied."""
        session.supplied -= number

    def end(self, session_id: str, application: str, why: str) -> Session:
        """End the session at the request of ``application``, one of its two applications;
        return it. Raises :class:`SessionError` when it is unknown or not one of the
        application's."""
        session = self._sessions.get(session_id)
        if session is None or application not in (session.source, session.destination):
            raise SessionError(f"{quoted(application)} has no session {quoted(session_id)} here")
        del self._sessions[session_id]
        self._ended[session_id] = why
        while len(self._ended) > _ENDED_KEPT:
            del self._ended[next(iter(self._ended))]
        return session

    def open_by_pair(self) -> dict[tuple[str, str], int]:
        """How many sessions are open now, by ``(source, destination)`` application pair."""
        self._forget_expired()
        pairs: dict[tuple[str, str], int] = {}
        for session in self._sessions.values():
            pair = (session.source, session.destination)
            pairs[pair] = pairs.get(pair, 0) + 1
        return pairs

    def _forget_expired(self) -> None:
        now = trio.current_time()
        for session_id in [
            session_id
            for session_id, session in self._sessions.items()
            if now >= session.expires_at
        ]:
            del self._sessions[session_id]
