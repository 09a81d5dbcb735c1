"""A :class:`Connection` that speaks the Q.416x Appendix I frames over any trio byte stream.

Theory of operation
-------------------
One reader task feeds a sans-IO :class:`~qkdn_sdk.codecs.frame.FrameDecoder` and dispatches each
frame; writers take turns on a lock and write whole frames (a write is shielded from
cancellation and bounded by ``Limits.send_timeout``, so a cancelled request never leaves half a
frame on the wire).

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
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import AsyncIterator, Collection
from typing import Any

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
from qkdn_sdk.tls import explain_tls_failure
from qkdn_sdk.transport._admission import close_gracefully
from qkdn_sdk.transport._api import (
    DEFAULT_TIMEOUT,
    Connection,
    Handler,
    Limits,
    Transport,
    check_claims,
)
from qkdn_sdk.transport._registry import transport_registry

__all__ = ["FramedConnection", "running"]

logger = logging.getLogger("qkdn_sdk.transport")

_READ_SIZE = 65536

_MAX_QUEUED_REPLIES = 8
"""Answers waiting for the writer before the reader stops taking frames: a peer that does not
read its answers stops being read, so it holds a few answers in memory, not ``max_in_flight``
of them, until ``Limits.send_timeout`` cuts it off."""

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


@attrs.define
class _Pending:
    """One of our requests waiting for its response."""

    expected: type[Message]
    done: trio.Event = attrs.field(factory=trio.Event)
    response: Message | None = None
    error: QkdnError | None = None

    def finish(self, response: Message | None = None, error: QkdnError | None = None) -> None:
        if not self.done.is_set():
            self.response, self.error = response, error
            self.done.set()


class FramedConnection(Connection):
    """A message connection over ``stream`` (already connected, and TLS-authenticated if any).

    Call :meth:`run` in a nursery: it reads until the connection ends, and runs the handler of
    every peer request in tasks of its own. ``is_client`` says which side connected (odd or even
    MessageIDs, and the direction :meth:`Transport.carries` is asked about).
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
    ) -> None:
        self._stream = stream
        self._transport = transport
        self._is_client = is_client
        self._handler = handler
        self._limits = limits
        self._peer_id = peer_id
        self._local_id = local_id
        self._accepts = None if accepts is None else frozenset(accepts)
        self._next_id = 1 if is_client else 2
        self._pending: dict[int, _Pending] = {}
        self._send_lock = trio.Lock()
        self._in_flight = 0
        self._end: QkdnError | None = None  # why the connection ended, once it has
        self._input_end: QkdnError | None = None  # why the peer sends no more, once it does
        self._last_frame_at = 0.0  # trio time of the last complete frame in either direction
        self._frames_received = 0
        self._closing_reason: str | None = None  # from the peer's last error indication
        self._replies_queued = 0  # answers built and waiting for (or being written by) the writer
        self._reply_written = trio.lowlevel.ParkingLot()
        self._read_scope: trio.CancelScope | None = None  # the pending read, bounded by idleness
        self._cancel_scope = trio.CancelScope()
        self._running = False
        self._finished = trio.Event()

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
        self._check_carried(type(message))
        if self._input_end is not None:  # the peer sends no more: no response could come
            raise type(self._input_end)(str(self._input_end))
        message_id = self._take_message_id()
        data = encode_message(message, message_id)
        pending = _Pending(expected)
        self._pending[message_id] = pending
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                await self._send_frame(data)
                await pending.done.wait()
        finally:
            del self._pending[message_id]
            self._rearm_idle()
        if scope.cancelled_caught:
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
        await self._send_frame(encode_message(message, self._take_message_id()))

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
                ending = await self._serve_frames()
                if ending.last_word is not None:
                    await self._reply_quietly(*ending.last_word)
                    await close_gracefully(self._stream)
        except Exception:  # a bug, not the peer: end this connection, never the server
            logger.exception("a connection failed")
            self._finish(ConnectionBroken("the connection failed (internal error)"))
        finally:
            self._finish(PeerClosed("the peer closed the connection"))
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._stream)
            self._finished.set()

    async def _serve_frames(self) -> _Ending:
        """Read until the peer stops sending, running handlers in a nursery; return once the
        handlers owed an answer are done (or cut off at the drain timeout)."""
        async with trio.open_nursery() as handlers:
            ending = await self._read_frames(handlers)
            self._input_end = ending.error
            for pending in self._pending.values():
                pending.finish(error=ending.error)
            if ending.answer_requests:
                handlers.cancel_scope.deadline = trio.current_time() + self._limits.drain_timeout
            else:
                handlers.cancel_scope.cancel()
        return ending

    def _finish(self, reason: QkdnError) -> None:
        """End the connection (first reason wins): fail pending requests, stop the reader."""
        if self._end is None:
            self._end = reason
            for pending in self._pending.values():
                pending.finish(error=reason)
        self._cancel_scope.cancel()

    def _idle_deadline(self) -> float:
        """When the connection counts as idle: ``idle_timeout`` after the last complete frame
        received or sent (bytes that do not complete a frame do not count), and never while a
        request in either direction waits for its answer."""
        if self._limits.idle_timeout is None or self._in_flight or self._pending:
            return math.inf
        return self._last_frame_at + self._limits.idle_timeout

    def _rearm_idle(self) -> None:
        """Move the pending read's deadline after a frame was sent or a request was answered."""
        if self._read_scope is not None:
            self._read_scope.deadline = self._idle_deadline()

    async def _read_frames(self, handlers: trio.Nursery) -> _Ending:
        decoder = FrameDecoder()
        while True:
            with trio.CancelScope(deadline=self._idle_deadline()) as scope:
                self._read_scope = scope
                try:
                    data = await self._stream.receive_some(_READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    why = f"connection broken: {_why(exc)}"
                    return _Ending(ConnectionBroken(why), answer_requests=False)
                finally:
                    self._read_scope = None
            if scope.cancelled_caught:
                if self._idle_deadline() > trio.current_time():  # a request began meanwhile
                    continue
                idle = self._limits.idle_timeout
                logger.info("closing a connection idle for %s s", idle)
                return _Ending(ConnectionBroken(f"connection idle for {idle} s"), False)
            try:
                if not data:
                    decoder.receive_eof()
                    if not self._frames_received:
                        why = _CLOSED_BEFORE_ANY_FRAME
                    else:
                        why = "the peer closed the connection"
                    return _Ending(PeerClosed(why), True)
                decoder.receive_data(data)
                while (frame := decoder.next_frame()) is not None:
                    while self._replies_queued >= _MAX_QUEUED_REPLIES:  # backpressure
                        await self._reply_written.park()
                    self._frames_received += 1
                    self._last_frame_at = trio.current_time()
                    await self._dispatch(frame, handlers)
                    if self._closing_reason is not None:  # its last word: it reads no more
                        why = f"the peer closed the connection: {self._closing_reason}"
                        return _Ending(PeerClosed(why), answer_requests=False)
            except FrameError as exc:  # framing lost: answer what was read, say so, then close
                logger.info("closing a connection: %s", exc)
                indication = ErrorIndication(reason=exc.response_text, closing=True)
                return _Ending(
                    ConnectionBroken(f"framing lost: {exc}"),
                    answer_requests=True,
                    last_word=(exc.message_id or 0, indication),
                )

    async def _dispatch(self, frame: Frame, nursery: trio.Nursery) -> None:
        message_id, code = frame.message_id, frame.command_code
        pending = self._pending.get(message_id)
        try:
            message = decode_message(frame)
        except PayloadError as exc:
            if pending is not None and code in (pending.expected.code, ErrorIndication.code):
                pending.finish(error=exc)  # our request got an invalid response
            else:
                await self._refuse(message_id, code, exc, _raw_fields(frame.payload))
            return
        except FrameError as exc:  # unknown command code; the frame itself was read
            await self._refuse(message_id, code, exc, {})
            return
        if pending is not None and isinstance(message, pending.expected | ErrorIndication):
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
            await self._refuse(message_id, code, refused, {}, indication=True)
            return
        try:
            check_claims(message, self._peer_id)
        except IdentityMismatch as exc:
            await self._refuse(message_id, code, exc, attrs.asdict(message, recurse=False))
            return
        if type(message).response_type() is None:
            nursery.start_soon(self._handle_one_way, message)
        elif self._in_flight >= self._limits.max_in_flight:
            limit = self._limits.max_in_flight
            busy = TransportError(f"too many requests in flight on this connection (limit {limit})")
            await self._refuse(message_id, code, busy, attrs.asdict(message, recurse=False))
        else:
            self._in_flight += 1
            nursery.start_soon(self._handle_request, message_id, message)

    async def _handle_request(self, message_id: int, message: Message) -> None:
        expected = type(message).response_type()
        assert expected is not None
        echo = attrs.asdict(message, recurse=False)
        try:
            try:
                response = await self._handler(message, self) if self._handler else None
            except QkdnError as exc:
                response = self._failure(expected, exc.response_text, echo, message.code)
            except Exception:  # a handler bug must not end the connection or the server
                logger.exception("the handler failed on %s", message.spec_name)
                response = self._failure(expected, "internal error", echo, message.code)
            if response is None:
                response = self._failure(
                    expected, "no handler answers this request", echo, message.code
                )
            elif not isinstance(response, expected | ErrorIndication):
                logger.error(
                    "the handler answered %s with %s", message.spec_name, type(response).__name__
                )
                response = self._failure(expected, "internal error", echo, message.code)
            await self._reply_quietly(message_id, response)
        finally:
            self._in_flight -= 1
            self._rearm_idle()

    async def _handle_one_way(self, message: Message) -> None:
        if self._handler is None:
            return
        try:
            await self._handler(message, self)
        except Exception:
            logger.exception("the handler failed on %s", message.spec_name)

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

    def _raise_if_ended(self) -> None:
        if self._end is not None:
            raise type(self._end)(str(self._end))

    def _check_carried(self, message_type: type[Message]) -> None:
        self._raise_if_ended()
        if not self._transport.carries(message_type, from_client=self._is_client):
            side = "the connecting side" if self._is_client else "the serving side"
            able = transport_registry().carrying(message_type, from_client=self._is_client)
            raise NotCarried(
                f"{self._transport.name} cannot carry {message_type.spec_name} from {side}; "
                f"transports that can: {', '.join(f'{scheme}://' for scheme in able) or 'none'}"
            )

    async def _send_frame(self, data: bytes) -> None:
        async with self._send_lock:
            self._raise_if_ended()
            # Shielded: a frame is written whole or the connection is dropped.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(self._limits.send_timeout) as scope,
            ):
                try:
                    await self._stream.send_all(data)
                    self._last_frame_at = trio.current_time()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    error = ConnectionBroken(f"connection broken: {_why(exc)}")
                    self._finish(error)
                    raise error from None
            if scope.cancelled_caught:
                error = ConnectionBroken(
                    f"the peer read nothing for {self._limits.send_timeout} s; disconnected"
                )
                self._finish(error)
                raise error

    async def _reply_quietly(self, message_id: int, message: Message) -> None:
        """Send a response or error indication; never raises. An answer that cannot be encoded
        (too large, a value of the wrong type) is replaced by a failure saying so; a connection
        that already ended is not an error here (the peer that broke it will not read it)."""
        try:
            data = encode_message(message, message_id)
        except LocalProtocolError as exc:  # the handler built an answer that cannot be sent
            logger.error("cannot send %s: %s", message.spec_name, exc)
            data = self._encode_failure(type(message), exc.response_text, message_id)
        self._replies_queued += 1
        try:
            with contextlib.suppress(TransportError):
                await self._send_frame(data)
        finally:
            self._replies_queued -= 1
            self._reply_written.unpark_all()

    def _encode_failure(self, response_type: type[Message], reason: str, message_id: int) -> bytes:
        """The frame of a failure of ``response_type`` (or an error indication) with ``reason``."""
        try:
            answer = failure_response(response_type, reason, sender_id=self._local_id)
            return encode_message(answer, message_id)
        except LocalProtocolError:  # our own ID cannot be sent, say: fall back on a constant
            return encode_message(ErrorIndication(reason="failure: internal error"), message_id)

    def _failure(
        self, response_type: type[Message], reason: str, echo: dict[str, Any], code: int
    ) -> Message:
        return failure_response(
            response_type, reason, echo=echo, sender_id=self._local_id, command_code=code
        )

    async def _refuse(
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
            answer = self._failure(expected, error.response_text, echo, code)
        await self._reply_quietly(message_id, answer)


_A_ROLE = {
    Role.KM: "a KM",
    Role.APPLICATION: "an application",
    Role.QKD_MODULE: "a QKD module",
    Role.CONTROLLER: "a QKDN controller",
    Role.ANY: "any peer",
}


def _why(exc: BaseException) -> str:
    """What broke a stream: trio's errors keep the OS or TLS reason in ``__cause__``; a TLS
    reason is said as what probably happened."""
    cause = exc.__cause__ or exc
    if isinstance(cause, ssl.SSLError):
        return explain_tls_failure(cause)
    return str(cause) or type(cause).__name__


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
