"""The writing half of a framed connection: the writer task, the timer task, and the ending.

:class:`FrameWriter` is the base of :class:`~qkdn_sdk.transport.FramedConnection`; the theory of
operation of both halves is in :mod:`qkdn_sdk.transport._framed`. This half deals in encoded
frames, never in messages: it writes every frame from one queue (the *writer*), keeps every
deadline (the *timer*: each request's, the write's under way, and the idleness that bounds the
reading) and ends the connection (:meth:`FrameWriter._finish`). What the frames mean, and the
reading, are the connection's.
"""

from __future__ import annotations

import collections
import math
import ssl

import trio

from qkdn_sdk.errors import ConnectionBroken, QkdnError
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import explain_tls_failure
from qkdn_sdk.transport._api import Limits

__all__ = ["ANSWER", "OURS", "REPLY", "FrameWriter", "Pending", "Sleeper", "why_broken"]

_WRITE_SIZE = 65536
"""Bytes the writer task joins into one ``send_all`` at most (a frame over it goes alone)."""


class Sleeper:
    """Where one task sleeps until another wakes it: trio's :class:`~trio.Event` without the
    event (nothing to reset, no parking lot), for the waits taken once per frame."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    async def sleep(self) -> None:
        """Sleep until :meth:`wake` (or cancellation)."""
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> bool:
        """Wake the sleeping task; ``False`` when none sleeps (any more)."""
        task, self._task = self._task, None
        if task is None:
            return False
        trio.lowlevel.reschedule(task)
        return True


class Pending(Sleeper):
    """One of our requests waiting for its response (or its error, or its deadline)."""

    __slots__ = ("deadline", "done", "error", "expected", "response", "timed_out")

    def __init__(self, expected: type[Message], deadline: float) -> None:
        super().__init__()
        self.expected = expected
        self.deadline = deadline
        self.done = False
        self.response: Message | None = None
        self.error: QkdnError | None = None
        self.timed_out = False

    def finish(self, response: Message | None = None, error: QkdnError | None = None) -> None:
        if not self.done:
            self.done = True
            self.response, self.error = response, error
            self.wake()

    def expire(self) -> None:
        if not self.done:
            self.done = self.timed_out = True
            self.wake()


# What a frame waiting for the writer is, for the counts kept when it has been written.
OURS = 0
"""One of our requests or one-way messages."""
ANSWER = 1
"""An answer of ours that is not a handler's (a refusal, an error indication): counted in
``_replies_queued`` until written."""
REPLY = 2
"""A handler's answer to a peer request: counted in ``_replies_queued`` and ``_in_flight``."""


class FrameWriter:
    """The writer, the timer and the end of a connection over ``stream``.

    The connection built on it (:class:`~qkdn_sdk.transport.FramedConnection`) queues its frames
    with :meth:`_queue`, runs :meth:`_write_queued` and :meth:`_keep_deadlines` as tasks within
    :attr:`_cancel_scope`, and reads within :attr:`_read_scope`; it keeps its requests in
    :attr:`_pending` and counts its peer's in :attr:`_in_flight`, which say when deadlines and
    idleness come. :meth:`_finish` ends it all.
    """

    def __init__(self, stream: trio.abc.Stream, limits: Limits) -> None:
        self._stream = stream
        self._limits = limits
        self._end: QkdnError | None = None  # why the connection ended, once it has
        self._cancel_scope = trio.CancelScope()
        # Our requests.
        self._pending: dict[int, Pending] = {}
        # Deadlines: the requests' and the write's, kept by one timer task.
        self._next_check = math.inf  # no deadline comes before this
        self._timer_scope: trio.CancelScope | None = None  # the timer's sleep until then
        # Idleness, which bounds the reading.
        self._last_frame_at = 0.0  # trio time of the last complete frame in either direction
        self._read_scope: trio.CancelScope | None = None  # the reading, bounded by idleness
        self._in_flight = 0  # peer requests taken whose answer is not written yet
        # Writing: every frame goes through _outgoing to the writer task.
        self._outgoing: collections.deque[tuple[bytes, int]] = collections.deque()
        self._queued_total = 0  # frames ever put in _outgoing
        self._written_total = 0  # of which written
        self._replies_queued = 0  # answers queued or being written
        self._writer_wakeup = Sleeper()
        self._writer_scope: trio.CancelScope | None = None
        self._writing = False  # the writer task is in send_all
        self._write_deadline = math.inf  # of the write under way
        self._writer_stopping = False
        self._wrote = trio.lowlevel.ParkingLot()  # unparked after every write and at the end

    # --- ending and deadlines -------------------------------------------------------------------

    def _finish(self, reason: QkdnError) -> None:
        """End the connection (first reason wins): fail pending requests, stop the reader."""
        if self._end is None:
            self._end = reason
            for pending in self._pending.values():
                pending.finish(error=reason)
            self._wrote.unpark_all()  # whoever waits for a frame to be written: it will not be
        self._stop_writer()
        self._cancel_scope.cancel()

    async def _keep_deadlines(self) -> None:
        """The timer task: fail our requests whose deadline has come, and cut a write that
        outlasts ``Limits.send_timeout``. It sleeps until the earliest deadline, which is only
        brought forward (a request or a write whose deadline comes sooner): a deadline of a
        request since answered or of a write since done wakes it for nothing once, and it sleeps
        again until the next that holds. So no request or write needs a timer of its own."""
        while True:
            with trio.CancelScope(deadline=self._next_check) as scope:
                self._timer_scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._timer_scope = None
            now = trio.current_time()
            next_check = math.inf
            if self._writing:
                if self._write_deadline <= now:
                    self._cut_write()
                else:
                    next_check = self._write_deadline
            for pending in self._pending.values():
                if pending.deadline <= now:
                    pending.expire()
                else:
                    next_check = min(next_check, pending.deadline)
            self._next_check = next_check

    def _check_at(self, deadline: float) -> None:
        """Bring the timer forward to ``deadline``."""
        self._next_check = deadline
        if self._timer_scope is not None:
            self._timer_scope.deadline = deadline

    def _idle_deadline(self) -> float:
        """When the connection counts as idle: ``idle_timeout`` after the last complete frame
        received or sent (bytes that do not complete a frame do not count), and never while a
        request in either direction waits for its answer."""
        if self._limits.idle_timeout is None or self._in_flight or self._pending:
            return math.inf
        return self._last_frame_at + self._limits.idle_timeout

    def _rearm_idle(self) -> None:
        """Bring the reading's deadline forward after a request was answered or a frame was
        sent, if idleness may now come sooner. A deadline that has become too early is not
        moved back: when it expires, the reader checks and reads on (once per idle timeout)."""
        scope = self._read_scope
        if scope is not None:
            deadline = self._idle_deadline()
            if deadline < scope.deadline:
                scope.deadline = deadline

    # --- writing --------------------------------------------------------------------------------

    def _raise_if_ended(self) -> None:
        if self._end is not None:
            raise type(self._end)(str(self._end))

    def _queue(self, data: bytes, kind: int = OURS) -> int:
        """Queue a frame for the writer task; return its number (see :meth:`_wait_written`)."""
        self._outgoing.append((data, kind))
        self._queued_total += 1
        if not self._writing:
            self._writer_wakeup.wake()
        return self._queued_total - 1

    def _unqueue(self, queued: int) -> None:
        """Make frame number ``queued`` an empty one if the writer has not taken it yet."""
        position = queued - (self._queued_total - len(self._outgoing))
        if position >= 0:
            self._outgoing[position] = (b"", OURS)

    async def _wait_written(self, queued: int) -> None:
        """Wait until frame number ``queued`` is written; raise why the connection ended if it
        ends first."""
        while self._written_total <= queued:
            self._raise_if_ended()
            await self._wrote.park()

    async def _write_queued(self) -> None:
        """The writer task: write what waits, as many frames as there are (up to
        :data:`_WRITE_SIZE` bytes) in one ``send_all``.

        It runs in a shielded cancel scope of its own, so a frame is written whole or the
        connection is dropped. What ends it is :meth:`_stop_writer` (at once when it waits, after
        the write under way otherwise) or the timer, which cuts a write that outlasts
        ``Limits.send_timeout`` (:meth:`_cut_write`)."""
        with trio.CancelScope(shield=True) as scope:
            self._writer_scope = scope
            try:
                await self._write_batches()
            finally:
                self._writer_scope = None
        if self._writing:  # cut at its deadline
            self._writing = False
            timeout = self._limits.send_timeout
            self._finish(ConnectionBroken(f"the peer read nothing for {timeout} s; disconnected"))

    async def _write_batches(self) -> None:
        outgoing = self._outgoing
        send_timeout = self._limits.send_timeout
        while not self._writer_stopping:
            if not outgoing:
                await self._writer_wakeup.sleep()
                continue
            batch = [outgoing.popleft()]
            size = len(batch[0][0])
            while outgoing and size + len(outgoing[0][0]) <= _WRITE_SIZE:
                batch.append(outgoing.popleft())
                size += len(batch[-1][0])
            if size:  # (not only requests given up before they were written)
                self._writing = True
                self._write_deadline = trio.current_time() + send_timeout
                if self._write_deadline < self._next_check:
                    self._check_at(self._write_deadline)
                try:
                    await self._stream.send_all(
                        batch[0][0] if len(batch) == 1 else b"".join(data for data, _ in batch)
                    )
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._writing = False
                    self._finish(ConnectionBroken(f"connection broken: {why_broken(exc)}"))
                    return
                self._writing = False
            self._wrote_frames(batch)

    def _wrote_frames(self, batch: list[tuple[bytes, int]]) -> None:
        self._last_frame_at = trio.current_time()
        self._written_total += len(batch)
        for _data, kind in batch:
            if kind != OURS:
                self._replies_queued -= 1
                if kind == REPLY:
                    self._in_flight -= 1
        if self._wrote:
            self._wrote.unpark_all()
        self._rearm_idle()

    def _cut_write(self) -> None:
        """End the write under way (at its deadline)."""
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    def _stop_writer(self) -> None:
        """Stop the writer task: now when it waits, after its write when it writes."""
        self._writer_stopping = True
        if self._writer_scope is not None:
            if self._writing:  # the timer may be stopping too: the write keeps its deadline
                self._writer_scope.deadline = self._write_deadline
            else:
                self._writer_scope.cancel()


def why_broken(exc: BaseException) -> str:
    """What broke a stream: trio's errors keep the OS or TLS reason in ``__cause__``; a TLS
    reason is said as what probably happened."""
    cause = exc.__cause__ or exc
    if isinstance(cause, ssl.SSLError):
        return explain_tls_failure(cause)
    return str(cause) or type(cause).__name__
