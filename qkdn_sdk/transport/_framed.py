"""A :class:`Connection` that speaks the Q.416x Appendix I frames over any trio byte stream.

Theory of operation
-------------------
A connection is four kinds of task, all under :meth:`FramedConnection.run`:

- The *reader* (``run``'s own task) reads up to 64 KiB at a time into a sans-IO
  :class:`~qkdn_sdk.codecs.frame.FrameDecoder` and dispatches every whole frame at once, without
  waiting: a response wakes the request that waits for it, a peer message goes to a worker, and
  the answer to a frame we refuse is queued for the writer. The read is all it awaits, so one
  cancel scope bounds all its reads by the idle timeout (its deadline is only brought forward;
  one that came too early is checked, and reading goes on); when answers back up it stops
  reading until the writer catches up (backpressure).
- *Workers* run the handler, one peer message at a time each. Idle ones wait to be woken; when
  none is idle another is started, so a slow handler (a KM relaying a request) never holds up
  the reader or another message, and a cheap one costs a wake-up rather than a task. Up to
  :data:`_SPARE_WORKERS` idle ones are kept.
- The *writer* writes every frame, ours and our answers alike, from one queue: whatever is
  waiting goes out in one ``send_all``, so requests and answers pipelined on one connection share
  writes (and TLS records). It runs in a shielded cancel scope of its own, so a frame is written
  whole or the connection is dropped: cancelling a request or a handler never cuts a frame.
  :meth:`~FramedConnection.request` queues its frame and waits for the response;
  :meth:`~FramedConnection.send` waits until its frame is written.
- The *timer* keeps the deadlines: each request's timeout (:class:`~qkdn_sdk.errors.RequestTimeout`
  on time) and ``Limits.send_timeout`` on the write under way. It sleeps until the earliest
  deadline, brought forward only when a sooner one comes; a deadline that was met wakes it once
  for nothing. So neither a request nor a write needs a cancel scope of its own (in trio, a cancel
  scope per frame costs more than all the rest of the connection's bookkeeping).

A received frame is a *response* when its MessageID is that of one of our pending requests and
its message is of the type that request expects (or an error indication); anything else comes
from the peer's own numbering and goes to the handler. Each side numbers its messages: the side
that connected uses odd MessageIDs and the side that accepted even ones, so our own peers never
make that question ambiguous.

Bad input (DESIGN, "Bad input on TCP"):

- a frame of a known request type whose payload breaks its table gets that request's response
  type with a failure reason (:func:`~qkdn_sdk.messages.failure_response`);
- an unknown command code, or a bad payload of any other message, gets an error indication
  echoing the MessageID;
- a message the server does not accept (``accepts``: one its role never receives, such as an
  application sending what only a KM sends) gets an error indication naming it;
- when the frame boundaries are lost (unknown version, a stream that ends inside a frame), the
  requests already read are answered, then an error indication that says so, and the connection
  closes. A peer that half-closes after its requests gets their answers the same way.

Containment: nothing a peer sends raises anything but a :class:`~qkdn_sdk.errors.QkdnError` to
the code using the connection, or ends any connection but its own. Every answer is built so that
it can be sent (a failure text is bounded, and an answer that cannot be encoded becomes a failure
that can); a bug that escapes anyway ends this connection with a logged error, never the server.

Used by the in-memory transport and the TCP plugin; other stream transports can reuse it.

The writer, the timer and the ending are the connection's base, :class:`FrameWriter`
(:mod:`qkdn_sdk.transport._frame_writer`), which deals in encoded frames only; the reader, the
workers and what every frame means are here.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any, Protocol

import attrs
import orjson
import trio

from qkdn_sdk.codecs.frame import (
    MAX_MESSAGE_ID,
    Frame,
    FrameDecoder,
    decode_message,
    encode_message,
)
from qkdn_sdk.errors import (
    ConnectionBroken,
    FailureResponse,
    FrameError,
    IdentityMismatch,
    InvalidMessage,
    LocalProtocolError,
    NotCarried,
    PayloadError,
    PeerClosed,
    QkdnError,
    RemoteProtocolError,
    RequestTimeout,
    TransportError,
)
from qkdn_sdk.messages import (
    Message,
    Role,
    check_response,
    failure_reason,
    failure_response,
    message_class,
)
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.transport._admission import close_gracefully
from qkdn_sdk.transport._api import (
    DEFAULT_TIMEOUT,
    ConnectHook,
    Connection,
    Handler,
    Limits,
    Transport,
    check_claims,
)
from qkdn_sdk.transport._frame_writer import (
    ANSWER,
    REPLY,
    FrameWriter,
    Pending,
    Sleeper,
    why_broken,
)

__all__ = ["Carriers", "FramedConnection", "running", "use_registry"]

logger = logging.getLogger("qkdn_sdk.transport")

_READ_SIZE = 65536

_SPARE_WORKERS = 4
"""Idle worker tasks a connection keeps for the next peer messages; more end (after a burst of
handlers that wait, say)."""

_MAX_QUEUED_REPLIES = 8
"""Answers queued for the writer (or being written) before the reader stops taking frames: a
peer that does not read its answers stops being read, so it holds a few answers in memory, not
``max_in_flight`` of them, until ``Limits.send_timeout`` cuts it off."""

_CLOSED_BEFORE_ANY_FRAME = (
    "the peer closed the connection before sending anything (a TLS endpoint does this to a "
    "plain tcp:// client)"
)


@attrs.frozen
class _Ending:
    """Why the reader stopped, and what is owed to the peer before the connection closes."""

    error: QkdnError
    """What our own pending requests fail with."""
    answer_requests: bool
    """The peer still reads: answer the requests already received (within the drain timeout)."""
    last_word: tuple[int, ErrorIndication] | None = None
    """An error indication to send after those answers (lost framing), with its MessageID."""


_Job = tuple[int | None, Message]
"""A peer message for a worker: its MessageID when it is a request (``None``: one-way)."""


class Carriers(Protocol):
    """The transport registry, as far as a connection asks it: which schemes carry a message it
    cannot (for the text of :class:`~qkdn_sdk.errors.NotCarried`)."""

    def carrying(self, message_type: type[Message], *, from_client: bool) -> list[str]: ...


_registry: Callable[[], Carriers] | None = None


def use_registry(registry: Callable[[], Carriers]) -> None:
    """Where connections find the transport registry
    (:func:`~qkdn_sdk.transport.transport_registry`). The registry sits above this module (it
    loads the transports that use this module), so the package's edge, :mod:`qkdn_sdk.transport`,
    hands it down when it is imported, rather than this module importing it."""
    global _registry
    _registry = registry


class FramedConnection(FrameWriter, Connection):
    """A message connection over ``stream`` (already connected, and TLS-authenticated if any).

    Call :meth:`run` in a nursery: it reads until the connection ends, and runs the handler of
    every peer message in worker tasks of its own. ``is_client`` says which side connected (odd
    or even MessageIDs, and the direction :meth:`Transport.carries` is asked about). A server
    gives ``on_connect`` (:data:`~qkdn_sdk.transport.ConnectHook`): :meth:`run` calls it
    before reading.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        transport: Transport,
        is_client: bool,
        handler: Handler | None,
        limits: Limits,
        peer_id: str | None = None,
        local_id: str | None = None,
        accepts: Collection[type[Message]] | None = None,
        on_connect: ConnectHook | None = None,
    ) -> None:
        super().__init__(stream, limits)
        self._on_connect = on_connect
        self._transport = transport
        self._is_client = is_client
        self._handler = handler
        self._peer_id = peer_id
        self._local_id = local_id
        self._accepts = None if accepts is None else frozenset(accepts)
        self._next_id = 1 if is_client else 2
        self._input_end: QkdnError | None = None  # why the peer sends no more, once it does
        self._running = False
        self._finished = trio.Event()
        # Reading.
        self._frames_received = 0
        self._closing_reason: str | None = None  # from the peer's last error indication
        # Peer messages, for the workers.
        self._jobs: collections.deque[_Job] = collections.deque()
        self._idle_workers: list[Sleeper] = []
        self._waking = 0  # workers woken or started that have not looked at the jobs yet
        self._one_way_running = 0  # peer one-way messages taken and not handled yet

    # --- Connection ---------------------------------------------------------------------------

    @property
    def peer_id(self) -> str | None:
        return self._peer_id

    @property
    def local_id(self) -> str | None:
        return self._local_id

    @property
    def closed(self) -> bool:
        # Once the peer sends no more, no request of ours can succeed, though the answers to
        # its own requests may still be on their way out.
        return self._end is not None or self._input_end is not None

    async def request(
        self, message: Message, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Message:
        expected = type(message).response_type()
        if expected is None:
            raise LocalProtocolError(
                f"{type(message).__name__} is not a request (it expects no response): use send()"
            )
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {timeout}")
        self._check_carried(type(message))
        if self._input_end is not None:  # the peer sends no more: no response could come
            raise type(self._input_end)(str(self._input_end))
        await trio.lowlevel.checkpoint_if_cancelled()  # cancelled already: send nothing
        message_id = self._take_message_id()
        data = encode_message(message, message_id)
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        pending = Pending(expected, deadline)
        self._pending[message_id] = pending
        if deadline < self._next_check:
            self._check_at(deadline)
        queued = self._queue(data)
        try:
            await pending.sleep()  # (nothing can have answered it yet)
        finally:
            del self._pending[message_id]
            if pending.response is None:  # timed out, cancelled, failed: unsent, it stays so
                self._unqueue(queued)
            self._rearm_idle()
        if pending.timed_out:
            raise RequestTimeout(
                f"no response to {message.spec_name} (message ID {message_id}) within {timeout} s"
            )
        if pending.error is not None:
            raise pending.error
        assert pending.response is not None
        response = pending.response
        try:
            check_response(message, response)
        except InvalidMessage as exc:
            raise RemoteProtocolError(
                f"invalid {response.spec_name} from the peer: {exc}"
            ) from None
        reason = failure_reason(response)
        if reason is not None:
            raise FailureResponse(reason, response)
        return response

    async def send(self, message: Message) -> None:
        if type(message).response_type() is not None:
            raise LocalProtocolError(
                f"{type(message).__name__} is a request (it expects a response): use request()"
            )
        self._check_carried(type(message))
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._wait_written(self._queue(encode_message(message, self._take_message_id())))

    async def aclose(self) -> None:
        self._finish(ConnectionBroken("the connection was closed locally"))
        if self._running:
            await self._finished.wait()

    # --- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read and dispatch until the connection ends; then close the stream. Never raises for
        anything the peer does.

        When the peer stops sending but may still read (it half-closed, or its framing was lost),
        the requests it already sent are answered first, for at most ``Limits.drain_timeout``
        seconds; then the error indication that ends a lost framing; then the stream closes.
        """
        self._running = True
        self._last_frame_at = trio.current_time()
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as helpers:
                    helpers.start_soon(self._write_queued)
                    helpers.start_soon(self._keep_deadlines)
                    try:
                        if self._on_connect is not None:
                            self._on_connect(self)
                        ending = await self._serve_frames()
                        if ending.last_word is not None:
                            with contextlib.suppress(TransportError):
                                await self._wait_written(self._answer(*ending.last_word))
                            await close_gracefully(self._stream)
                    finally:  # the writer is shielded: it stops when told (cancelled, too)
                        self._stop_writer()
                        helpers.cancel_scope.cancel()
        except Exception:  # a bug, not the peer: end this connection, never the server
            logger.exception("a connection failed")
            self._finish(ConnectionBroken("the connection failed (internal error)"))
        finally:
            self._finish(PeerClosed("the peer closed the connection"))
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._stream)
            self._finished.set()

    async def _serve_frames(self) -> _Ending:
        """Read until the peer stops sending, with the workers in a nursery; return once what is
        owed to the peer is written (or cut off at the drain timeout)."""
        async with trio.open_nursery() as workers:
            ending = await self._read_frames(workers)
            self._input_end = ending.error
            for pending in self._pending.values():
                pending.finish(error=ending.error)
            if ending.answer_requests:
                with trio.move_on_after(self._limits.drain_timeout):
                    while self._in_flight or self._one_way_running or self._replies_queued:
                        await self._wrote.park()
            workers.cancel_scope.cancel()
        return ending

    # --- reading --------------------------------------------------------------------------------

    async def _read_frames(self, workers: trio.Nursery) -> _Ending:
        decoder = FrameDecoder()
        while True:
            ending = None
            with trio.CancelScope(deadline=self._idle_deadline()) as scope:
                self._read_scope = scope
                try:
                    ending = await self._take_frames(decoder, workers)
                finally:
                    self._read_scope = None
            if ending is not None:
                return ending
            if scope.cancelled_caught:
                if self._idle_deadline() > trio.current_time():  # not idle after all
                    continue
                idle = self._limits.idle_timeout
                logger.info("closing a connection idle for %s s", idle)
                return _Ending(ConnectionBroken(f"connection idle for {idle} s"), False)
            while self._replies_queued >= _MAX_QUEUED_REPLIES:  # backpressure
                await self._wrote.park()

    async def _take_frames(self, decoder: FrameDecoder, workers: trio.Nursery) -> _Ending | None:
        """Read and dispatch frames until the peer stops sending (return why), or until answers
        back up (return ``None``: wait for the writer, then call again). The read is the only
        thing awaited here, so the idle deadline around this can only ever cancel the read."""
        try:
            while True:
                while True:  # the frames already read
                    if self._replies_queued >= _MAX_QUEUED_REPLIES:
                        return None  # backpressure
                    frame = decoder.next_frame()
                    if frame is None:
                        break
                    self._frames_received += 1
                    self._last_frame_at = trio.current_time()
                    self._dispatch(frame, workers)
                    if self._closing_reason is not None:  # its last word: it reads no more
                        why = f"the peer closed the connection: {self._closing_reason}"
                        return _Ending(PeerClosed(why), answer_requests=False)
                try:
                    data = await self._stream.receive_some(_READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    why = f"connection broken: {why_broken(exc)}"
                    return _Ending(ConnectionBroken(why), answer_requests=False)
                if not data:
                    decoder.receive_eof()
                    if not self._frames_received:
                        why = _CLOSED_BEFORE_ANY_FRAME
                    else:
                        why = "the peer closed the connection"
                    return _Ending(PeerClosed(why), True)
                decoder.receive_data(data)
        except FrameError as exc:  # framing lost: answer what was read, say so, then close
            logger.info("closing a connection: %s", exc)
            indication = ErrorIndication(reason=exc.response_text, closing=True)
            return _Ending(
                ConnectionBroken(f"framing lost: {exc}"),
                answer_requests=True,
                last_word=(exc.message_id or 0, indication),
            )

    def _dispatch(self, frame: Frame, workers: trio.Nursery) -> None:
        """Route one frame: a response to its request, a peer message to a worker, anything we
        will not handle to its refusal. Never waits."""
        message_id, code = frame.message_id, frame.command_code
        pending = self._pending.get(message_id)
        try:
            message = decode_message(frame)
        except PayloadError as exc:
            if pending is not None and code in (pending.expected.code, ErrorIndication.code):
                pending.finish(error=exc)  # our request got an invalid response
            else:
                self._refuse(message_id, code, exc, _raw_fields(frame.payload))
            return
        except FrameError as exc:  # unknown command code; the frame itself was read
            self._refuse(message_id, code, exc, {})
            return
        if pending is not None and isinstance(message, (pending.expected, ErrorIndication)):
            pending.finish(response=message)
            return
        if isinstance(message, ErrorIndication):
            logger.info("error indication from the peer: %s", message.reason)
            if message.closing:  # the peer is about to close: that is why our requests fail
                self._closing_reason = message.reason
            return
        if self._accepts is not None and type(message) not in self._accepts:
            refused = RemoteProtocolError(
                f"0x{code:04X} {message.spec_name} is sent by {_A_ROLE[message.sender]} to "
                f"{_A_ROLE[message.receiver]}; this peer does not accept it"
            )
            self._refuse(message_id, code, refused, {}, indication=True)
            return
        try:
            check_claims(message, self._peer_id)
        except IdentityMismatch as exc:
            self._refuse(message_id, code, exc, attrs.asdict(message, recurse=False))
            return
        if type(message).response_type() is None:
            self._one_way_running += 1
            self._give_job((None, message), workers)
        elif self._in_flight >= self._limits.max_in_flight:
            limit = self._limits.max_in_flight
            busy = TransportError(f"too many requests in flight on this connection (limit {limit})")
            self._refuse(message_id, code, busy, attrs.asdict(message, recurse=False))
        else:
            self._in_flight += 1
            self._give_job((message_id, message), workers)

    # --- handling peer messages -----------------------------------------------------------------

    def _give_job(self, job: _Job, workers: trio.Nursery) -> None:
        """Queue a peer message for the workers, and make sure a worker will look at it."""
        self._jobs.append(job)
        if not self._waking:
            self._wake_worker(workers)

    def _wake_worker(self, workers: trio.Nursery) -> None:
        """Wake an idle worker, or start one when none is idle."""
        self._waking += 1
        while self._idle_workers:
            if self._idle_workers.pop().wake():
                return
        workers.start_soon(self._work, workers)

    async def _work(self, workers: trio.Nursery) -> None:
        """A worker: handle the peer messages waiting, one after the other; then wait to be
        woken, or end when enough other workers wait already.

        Before it starts a handler, a worker that leaves messages waiting makes sure another
        worker is awake to take the next one, so a handler that waits holds up no other
        message; while handlers return without waiting, one worker takes them all, and the
        other one it woke finds nothing to do."""
        jobs = self._jobs
        idle = self._idle_workers
        sleeper = Sleeper()
        while True:
            self._waking -= 1  # it looks at the jobs now
            while jobs:
                message_id, message = jobs.popleft()
                if jobs and not self._waking:
                    self._wake_worker(workers)
                if message_id is None:
                    await self._handle_one_way(message)
                else:
                    await self._handle_request(message_id, message)
            if len(idle) >= _SPARE_WORKERS:
                return
            idle.append(sleeper)
            await sleeper.sleep()  # (cancelled only when the connection ends)

    async def _handle_request(self, message_id: int, message: Message) -> None:
        expected = type(message).response_type()
        assert expected is not None
        try:
            response = await self._handler(message, self) if self._handler else None
        except QkdnError as exc:
            response = self._failure(expected, exc.response_text, message)
        except Exception:  # a handler bug must not end the connection or the server
            logger.exception("the handler failed on %s", message.spec_name)
            response = self._failure(expected, "internal error", message)
        except BaseException:  # cancelled (the connection ends): no answer will be written
            self._in_flight -= 1
            raise
        if response is None:
            response = self._failure(expected, "no handler answers this request", message)
        elif not isinstance(response, (expected, ErrorIndication)):
            logger.error(
                "the handler answered %s with %s", message.spec_name, type(response).__name__
            )
            response = self._failure(expected, "internal error", message)
        self._answer(message_id, response, REPLY)

    async def _handle_one_way(self, message: Message) -> None:
        try:
            if self._handler is not None:
                await self._handler(message, self)
        except Exception:
            logger.exception("the handler failed on %s", message.spec_name)
        finally:
            self._one_way_running -= 1
            self._wrote.unpark_all()  # the drain waits for this too

    # --- sending --------------------------------------------------------------------------------

    def _take_message_id(self) -> int:
        """Our next MessageID: odd when we connected, even when we accepted; it wraps at 2**32
        and skips IDs still waiting for a response."""
        while True:
            message_id = self._next_id
            self._next_id += 2
            if self._next_id > MAX_MESSAGE_ID:
                self._next_id = 1 if self._is_client else 2
            if message_id not in self._pending:
                return message_id

    def _check_carried(self, message_type: type[Message]) -> None:
        self._raise_if_ended()
        if not self._transport.carries(message_type, from_client=self._is_client):
            side = "the connecting side" if self._is_client else "the serving side"
            able = (
                _registry().carrying(message_type, from_client=self._is_client) if _registry else []
            )
            raise NotCarried(
                f"{self._transport.name} cannot carry {message_type.spec_name} from {side}; "
                f"transports that can: {', '.join(f'{scheme}://' for scheme in able) or 'none'}"
            )

    def _answer(self, message_id: int, message: Message, kind: int = ANSWER) -> int:
        """Queue a response or error indication. One that cannot be encoded (too large, a value
        of the wrong type) is replaced by a failure saying so."""
        try:
            data = encode_message(message, message_id)
        except LocalProtocolError as exc:  # the handler built an answer that cannot be sent
            logger.error("cannot send %s: %s", message.spec_name, exc)
            data = self._encode_failure(type(message), exc.response_text, message_id)
        self._replies_queued += 1
        return self._queue(data, kind)

    def _encode_failure(self, response_type: type[Message], reason: str, message_id: int) -> bytes:
        """The frame of a failure of ``response_type`` (or an error indication) with ``reason``."""
        try:
            answer = failure_response(response_type, reason, sender_id=self._local_id)
            return encode_message(answer, message_id)
        except LocalProtocolError:  # our own ID cannot be sent, say: fall back on a constant
            return encode_message(ErrorIndication(reason="failure: internal error"), message_id)

    def _failure(self, response_type: type[Message], reason: str, request: Message) -> Message:
        return failure_response(
            response_type,
            reason,
            echo=attrs.asdict(request, recurse=False),
            sender_id=self._local_id,
            command_code=request.code,
        )

    def _refuse(
        self,
        message_id: int,
        code: int,
        error: QkdnError,
        echo: dict[str, Any],
        *,
        indication: bool = False,
    ) -> None:
        """Answer a frame we will not handle: with its response type where it has one (unless
        ``indication``), else with an error indication."""
        logger.info("refusing message ID %d (0x%04X): %s", message_id, code, error)
        try:
            expected = None if indication else message_class(code).response_type()
        except KeyError:
            expected = None
        if expected is None:
            answer: Message = ErrorIndication(reason=error.response_text, command_code=code)
        else:
            answer = failure_response(
                expected,
                error.response_text,
                echo=echo,
                sender_id=self._local_id,
                command_code=code,
            )
        self._answer(message_id, answer)


_A_ROLE = {
    Role.KM: "a KM",
    Role.APPLICATION: "an application",
    Role.QKD_MODULE: "a QKD module",
    Role.CONTROLLER: "a QKDN controller",
    Role.ANY: "any peer",
}


def _raw_fields(payload: bytes) -> dict[str, Any]:
    """The top-level fields of a payload that failed validation, to echo IDs in the failure."""
    try:
        fields = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return fields if isinstance(fields, dict) else {}


@contextlib.asynccontextmanager
async def running(connection: FramedConnection) -> AsyncIterator[FramedConnection]:
    """Run ``connection`` in the background while the block runs, and close it afterwards.

    What the block raises comes out as itself, not wrapped in an exception group: the
    connection's own task never raises, so the block's error is the only one there can be.
    """
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            try:
                yield connection
            finally:
                await connection.aclose()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
        raise error from error.__cause__
