"""A byte-level bridge between grpcio (threads) and trio.

It knows nothing about protobuf: requests and responses are :class:`bytes` (grpcio's generic
handlers and multicallables with no (de)serializer pass bytes through). The transport plugin maps
messages onto it.

Theory of operation
-------------------
grpcio's synchronous API runs on threads; trio runs on one. The bridge keeps every blocking grpcio
call off the trio thread and every trio call on it:

- **Server** (:func:`serve_grpc`): a ``grpc.server`` whose bounded ``ThreadPoolExecutor`` runs the
  servicer functions. A unary servicer thread calls ``trio.from_thread.run`` to run the trio
  handler (a trio system task) inside a :class:`trio.CancelScope`; the RPC's termination callback
  (client cancel, deadline, disconnect, server stop) cancels that scope through
  ``TrioToken.run_sync_soon``. A bidirectional stream uses two threads: the servicer thread writes
  what the handler sends (it iterates an :class:`_Outbox`), and one reader thread per stream
  feeds what the client sends into a trio memory channel; the handler itself runs in a nursery
  of :func:`serve_grpc`.
- **Client** (:class:`GrpcChannel`): a unary call is ``multicallable.future(...)``; its done
  callback wakes the trio task (``run_sync_soon`` sets a :class:`trio.Event`), and the call is
  cancelled (``future.cancel()``) when the trio task is cancelled. A stream is a
  ``stream_stream`` call whose request iterator is an :class:`_Outbox` fed from trio (grpcio
  consumes it in a thread of its own) and whose responses are read by one reader thread per
  stream into a trio memory channel.
- **Back-pressure**: every direction of a stream holds at most :data:`STREAM_BUFFER` messages;
  a sender waits (in trio) while they are all unwritten, and a reader thread stops reading the
  socket while trio does not take what it read, so HTTP/2 flow control stops the peer.
- **Threads**: none outlives its owner. :func:`serve_grpc` stops grpcio (``server.stop``), shuts
  its executor down and joins grpcio's polling thread before it returns; :meth:`ByteStream.aclose`
  joins the stream's reader thread and grpcio's request-consuming thread;
  :meth:`GrpcChannel.aclose` closes the streams, closes the channel and joins grpcio's
  channel-spin threads that ran our callbacks. Blocking waits and joins run in short-lived helper
  threads that are themselves joined, never on the trio thread. (grpcio's C core keeps a few
  native threads of its own for the whole process, which are not Python threads.)
- **Errors**: a handler's exception becomes a gRPC status (:func:`status_for_exception`), never a
  traceback; the client turns a status back into a typed error of :mod:`qkdn_sdk.errors`
  (:func:`error_for_status`). No ``grpc.RpcError`` reaches a caller.

Identity
--------
With TLS the server requires a client certificate signed by ``tls.ca``
(``require_client_auth=True``) and reads the client's ID from the verified certificate in the
call's auth context (``x509_pem_cert``, by the rule of :func:`qkdn_sdk.tls.peer_identity_from_der`);
a certificate that names no one is refused with ``UNAUTHENTICATED``.

grpcio's synchronous client API exposes no auth context (the C core has one, Python does not
surface it), so the client cannot read the certificate of the connection gRPC made. gRPC itself
verifies that certificate against ``tls.ca`` and the host name we dial. :class:`GrpcChannel` learns
the server's ID with a *probe*: when it is entered it makes one TLS handshake of its own to the
same host and port, with the same CA and host name check, and reads the ID from that certificate
(:attr:`GrpcChannel.peer_id`), sending an HTTP/2 preface to see the server accept our
certificate too. This also reports TLS problems in words
(:func:`qkdn_sdk.tls.explain_tls_failure`) before gRPC's terse ``UNAVAILABLE``. The gap: the probe
and gRPC's connection are two handshakes, so the ID is that of *a* server holding a certificate
from our CA for that host name at that address. Where the expected ID is known in advance, the
transport can close the gap by passing it as ``grpc.ssl_target_name_override`` (gRPC then
requires the certificate to name it as a DNS subjectAltName, which ``qkdn certs`` writes).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import queue
import re
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import attrs

# grpcio's C core logs to stderr (every GOAWAY of a closed connection, a port it cannot bind);
# the SDK reports what matters itself, in one line. A user who wants the core's log sets
# GRPC_VERBOSITY before importing.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
import outcome
import trio

from qkdn_sdk.errors import (
    ConnectionBroken,
    FailureResponse,
    IdentityMismatch,
    NotAuthorized,
    PayloadTooLarge,
    PeerClosed,
    QkdnError,
    RemoteProtocolError,
    RequestRefused,
    RequestTimeout,
    TransportError,
    shorten,
)
from qkdn_sdk.tls import TLSConfig, explain_tls_failure, peer_identity_from_der
from qkdn_sdk.transport import Limits

__all__ = [
    "CHANNEL_METADATA",
    "MAX_MESSAGE_SIZE",
    "STREAM_BUFFER",
    "ByteStream",
    "CallFailed",
    "CallInfo",
    "ConnectionEnded",
    "GrpcChannel",
    "StreamHandler",
    "UnaryHandler",
    "error_for_status",
    "serve_grpc",
    "status_for_exception",
]

_LOG = logging.getLogger("qkdn_grpc")
_T = TypeVar("_T")

MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024
"""The largest message (request, response or stream message) either side sends or accepts:
4 MiB, gRPC's own default receive limit. A Q.416x payload is at most 65,535 bytes; a gRPC
message carries one. Sending more raises :class:`~qkdn_sdk.errors.PayloadTooLarge` locally;
receiving more fails the call with ``RESOURCE_EXHAUSTED``."""

CHANNEL_METADATA: Final = "qkdn-channel"
"""The metadata key naming the client channel a call belongs to."""

STREAM_BUFFER: Final = 16
"""Messages buffered in each direction of a stream before the sender waits."""

_MAX_WORKERS: Final = 256
"""The most servicer threads one server runs (see :func:`serve_grpc`)."""

_SHUTTING_DOWN = "the server is shutting down"
_METHOD_PATH = re.compile(r"/[^/\s]+/[^/\s]+")


@attrs.frozen
class CallInfo:
    """What a server handler knows about the call it serves."""

    peer_id: str | None
    """The ID in the client's verified certificate; ``None`` on plaintext (``grpc://``)."""
    method: str
    """The method path, ``"/pkg.Service/Method"``."""
    channel_id: str | None = None
    """The ``qkdn-channel`` metadata the client's :class:`GrpcChannel` sends on every call: the
    calls and streams of one channel say so (``None`` when absent)."""


class ByteStream(trio.abc.AsyncResource):
    """One bidirectional gRPC stream, seen from trio: messages are :class:`bytes`.

    Both ends get one: the client from :meth:`GrpcChannel.open_stream`, the server handler as its
    argument. Each direction buffers at most :data:`STREAM_BUFFER` messages: :meth:`send` waits
    while the peer does not read.

    A clean end, both ways: one side calls :meth:`send_eof` (the client usually, after its last
    message); the other side's :meth:`receive` raises :class:`~qkdn_sdk.errors.PeerClosed` once
    it has read everything, answers what it has to and ends too. On the server, the end of what it
    sends is the end of the call (gRPC's status): the handler returning, :meth:`send_eof` and
    :meth:`aclose` all end it with ``OK``, and what the client sends afterwards is dropped.
    A client that calls :meth:`aclose` before the server ended the call cancels it (the server
    handler is cancelled). A client stream must be closed (``async with`` it, or close its
    channel): until then grpcio keeps a thread waiting for what it sends.

    Made by the bridge, never by users.
    """

    def __init__(self, token: trio.lowlevel.TrioToken, method: str) -> None:
        self._token = token
        self._method = method
        self._outbox = _Outbox(token)
        self._incoming_send, self._incoming = trio.open_memory_channel[bytes](STREAM_BUFFER)
        self._incoming_end: Callable[[], Exception] = self._peer_ended
        self._credits = threading.Semaphore(STREAM_BUFFER)
        """Room left in ``_incoming``: the reader thread takes one per message it hands to
        trio, :meth:`receive` gives it back."""
        self._stop_reading = False
        self._reader: threading.Thread | None = None
        self._reader_done = trio.Event()
        self._closed = False

    @property
    def method(self) -> str:
        """The method path of the stream (``"/pkg.Service/Method"``)."""
        return self._method

    async def send(self, data: bytes) -> None:
        """Send one message; waits while :data:`STREAM_BUFFER` messages are still unwritten.

        Raises :class:`~qkdn_sdk.errors.PayloadTooLarge` for a message over
        :data:`MAX_MESSAGE_SIZE`, :class:`trio.ClosedResourceError` after :meth:`send_eof` or
        :meth:`aclose`, and the call's error (:class:`~qkdn_sdk.errors.PeerClosed` when the peer
        ended the call, a :class:`~qkdn_sdk.errors.TransportError` when it broke) once the call is
        over.
        """
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        if len(data) > MAX_MESSAGE_SIZE:
            raise PayloadTooLarge(len(data), MAX_MESSAGE_SIZE)
        await self._outbox.put(bytes(data))

    async def send_eof(self) -> None:
        """End what we send (our half of the stream); :meth:`receive` keeps working.

        Waits for nothing. Further :meth:`send` calls raise :class:`trio.ClosedResourceError`.
        """
        await trio.lowlevel.checkpoint()
        self._outbox.end()

    async def receive(self) -> bytes:
        """The next message from the peer.

        Raises :class:`~qkdn_sdk.errors.PeerClosed` once the peer has ended its half and
        everything it sent was read; the call's typed error when the call failed;
        :class:`trio.ClosedResourceError` after :meth:`aclose`.
        """
        try:
            message = await self._incoming.receive()
        except trio.EndOfChannel:
            raise self._incoming_end() from None
        self._credits.release()
        return message

    def _peer_ended(self) -> QkdnError:
        return PeerClosed(f"the peer ended the stream {self._method}")

    # --- the reader thread ----------------------------------------------------------------

    def _start_reader(self, messages: Iterator[bytes], name: str) -> None:
        self._reader = threading.Thread(target=self._read, args=(messages,), name=name, daemon=True)
        self._reader.start()

    def _read(self, messages: Iterator[bytes]) -> None:
        """Reader thread: what the peer sends, into the trio memory channel, until the peer ends,
        the call ends, or trio stops taking messages (:meth:`_stop_reader`). It waits for room
        (a credit) before it reads the next message, so a full buffer stops the peer."""
        end: Callable[[], Exception] = self._peer_ended
        try:
            self._credits.acquire()
            for message in messages:
                if self._stop_reading:
                    break
                _call_soon(self._token, functools.partial(self._deliver, message))
                self._credits.acquire()
        except grpc.RpcError as exc:
            end = self._read_error(exc)
        except Exception as exc:  # grpcio failed in a way it does not document
            end = functools.partial(ConnectionBroken, f"stream {self._method} broke: {exc!r}")
        finally:
            self._incoming_end = end
            _call_soon(self._token, self._reader_finished)  # after every _deliver: FIFO

    def _deliver(self, message: bytes) -> None:
        # Trio thread; never full (the credits); dropped once trio closed its side.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._incoming_send.send_nowait(message)

    def _reader_finished(self) -> None:
        self._incoming_send.close()
        self._reader_done.set()

    def _stop_reader(self) -> None:
        """Trio thread: nobody reads any more. The reader stops at its next message (it may
        still wait for one: the end of the call ends that)."""
        self._stop_reading = True
        self._incoming.close()
        self._credits.release()  # a reader waiting for room goes on, to see the stop

    def _read_error(self, exc: grpc.RpcError) -> Callable[[], Exception]:
        raise NotImplementedError

    async def _join_reader(self) -> None:
        with trio.CancelScope(shield=True):
            await self._reader_done.wait()
            if self._reader is not None:
                await _join_threads([self._reader])


class _ClientStream(ByteStream):
    def __init__(self, channel: GrpcChannel, method: str) -> None:
        super().__init__(channel._token, method)
        self._channel = channel
        assert channel._grpc is not None
        multicallable: grpc.StreamStreamMultiCallable[bytes, bytes]
        multicallable = channel._grpc.stream_stream(method, None, None)
        self._call = multicallable(self._outbox, timeout=None, metadata=channel.metadata)
        # The call is a grpc.Future too; types-grpcio's _CallIterator does not say so.
        self._call.add_done_callback(self._call_done)  # type: ignore[attr-defined]
        self._start_reader(self._call, name=f"qkdn-grpc client stream reader {method}")

    def _call_done(self, _call: object) -> None:
        self._channel._saw_thread()
        _call_soon(self._token, self._call_ended)

    def _reader_finished(self) -> None:
        super()._reader_finished()
        # The responses end when the call does, and grpcio may run the done callback later:
        # once receive() said the server ended the stream, send() must say so too.
        if self._call.done():  # type: ignore[attr-defined]  # a grpc.Future too
            self._call_ended()

    def _call_ended(self) -> None:
        code = self._call.code()
        if code is grpc.StatusCode.OK:
            self._outbox.fail(
                functools.partial(PeerClosed, f"the server ended the stream {self._method}")
            )
        else:
            details = self._call.details()
            self._outbox.fail(functools.partial(self._channel._error, code, details, self._method))

    def _read_error(self, exc: grpc.RpcError) -> Callable[[], Exception]:
        code, details = self._call.code(), self._call.details()
        if code is grpc.StatusCode.CANCELLED and self._closed:
            return functools.partial(trio.ClosedResourceError, "the stream is closed")
        return functools.partial(self._channel._error, code, details, self._method)

    async def aclose(self) -> None:
        """Close the stream: cancel the call unless the server already ended it, and join its
        threads. Closing twice is harmless."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._channel._streams.discard(self)
        self._outbox.end()
        self._outbox.fail(functools.partial(trio.ClosedResourceError, "the stream is closed"))
        self._stop_reader()
        self._call.cancel()  # nothing when the call is already over
        with trio.CancelScope(shield=True):
            await self._join_reader()
            await self._outbox.consumer_seen.wait()
            consumer = self._outbox.consumer
            if consumer is not None:
                await _join_threads([consumer])


class _ServerStream(ByteStream):
    def __init__(
        self, token: trio.lowlevel.TrioToken, method: str, context: grpc.ServicerContext
    ) -> None:
        super().__init__(token, method)
        self._context = context
        self._scope = trio.CancelScope()

    def _rpc_terminated(self) -> None:
        """Trio thread, once the RPC is over: a call that did not end by our own end of
        responses was cancelled, timed out or lost its client; the handler is cancelled."""
        if not self._outbox.finished:
            self._scope.cancel()
            self._outbox.fail(
                functools.partial(PeerClosed, f"the client went away from {self._method}")
            )

    def _read_error(self, exc: grpc.RpcError) -> Callable[[], Exception]:
        return functools.partial(PeerClosed, f"the client cancelled the stream {self._method}")

    async def aclose(self) -> None:
        """End the call with ``OK`` (as returning from the handler does). Closing twice is
        harmless."""
        await trio.lowlevel.checkpoint()
        if not self._closed:
            self._closed = True
            self._outbox.end()
            self._stop_reader()


class _End:
    """End of an :class:`_Outbox`, with the status the call ends with (servers)."""

    __slots__ = ("code", "details")

    def __init__(self, code: grpc.StatusCode | None = None, details: str = "") -> None:
        self.code = code
        self.details = details


class _Outbox:
    """Messages from trio to a grpcio thread that iterates this object.

    At most :data:`STREAM_BUFFER` messages are queued or being written at once: a message's slot
    is released when the consumer asks for the next one, which grpcio does once the previous one
    is written. :meth:`put` waits (in trio) for a slot.
    """

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._queue: queue.SimpleQueue[bytes | _End] = queue.SimpleQueue()
        self._lot = trio.lowlevel.ParkingLot()
        self._pending = 0
        self._taken = False
        self._end: _End | None = None
        self._failure: Callable[[], Exception] | None = None
        self.finished = False
        """Consumer thread: it reached the end (the call ends by our end of messages)."""
        self.consumer: threading.Thread | None = None
        self.consumer_seen = trio.Event()

    async def put(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._end is not None:
                raise trio.ClosedResourceError("sending was ended (send_eof)")
            if self._failure is not None:
                raise self._failure()
            if self._pending < STREAM_BUFFER:
                break
            await self._lot.park()
        self._pending += 1
        self._queue.put(data)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def end(self, code: grpc.StatusCode | None = None, details: str = "") -> None:
        """No more messages: the consumer's iteration stops. Only the first end counts."""
        if self._end is None:
            self._end = _End(code, details)
            self._queue.put(self._end)
            self._lot.unpark_all()

    def fail(self, error: Callable[[], Exception]) -> None:
        """The consumer is gone: waiting and future :meth:`put` calls raise ``error()`` (the
        first failure counts)."""
        if self._failure is None:
            self._failure = error
        self._lot.unpark_all()

    @property
    def end_status(self) -> _End | None:
        return self._end

    def _release(self) -> None:
        self._pending -= 1
        self._lot.unpark()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        """grpcio's thread: the next message, blocking until trio sends one or ends."""
        if self.consumer is None:
            self.consumer = threading.current_thread()
            _call_soon(self._token, self.consumer_seen.set)
        if self._taken:
            self._taken = False
            _call_soon(self._token, self._release)
        item = self._queue.get()
        if isinstance(item, _End):
            self._queue.put(item)  # whoever asks again sees the end too
            self.finished = True
            raise StopIteration
        self._taken = True
        return item


# --- server ---------------------------------------------------------------------------------

UnaryHandler = Callable[[bytes, CallInfo], Awaitable[bytes]]
"""Serves one unary call: the request and what is known of the call in, the response out.
An exception becomes a gRPC status (:func:`status_for_exception`)."""

StreamHandler = Callable[[ByteStream, CallInfo], Awaitable[None]]
"""Serves one bidirectional stream; the call ends (``OK``) when it returns, or with the status
of its exception (:func:`status_for_exception`)."""


def status_for_exception(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status (code, details) a handler's exception is answered with.

    ===========================================================  =====================
    exception                                                    status
    ===========================================================  =====================
    :class:`~qkdn_sdk.errors.NotAuthorized`,                     ``PERMISSION_DENIED``
    :class:`~qkdn_sdk.errors.IdentityMismatch`
    :class:`~qkdn_sdk.errors.RequestRefused`                     ``FAILED_PRECONDITION``
    :class:`~qkdn_sdk.errors.RemoteProtocolError` (the request   ``INVALID_ARGUMENT``
    was bad)
    :class:`~qkdn_sdk.errors.PayloadTooLarge` (the response      ``RESOURCE_EXHAUSTED``
    does not fit)
    any other :class:`~qkdn_sdk.errors.QkdnError`                ``ABORTED``
    anything else                                                ``INTERNAL``, "internal
                                                                 error"
    ===========================================================  =====================

    A :class:`~qkdn_sdk.errors.QkdnError`'s text is the details (at most
    :data:`~qkdn_sdk.errors.MAX_REASON_LENGTH` characters); nothing else of an exception reaches
    the peer. ``UNAVAILABLE`` is left to gRPC (no connection, server shutting down), so a client
    can tell a handler's failure from the transport's.
    """
    if isinstance(exc, ConnectionEnded):
        return grpc.StatusCode.UNAVAILABLE, shorten(str(exc))
    if isinstance(exc, NotAuthorized | IdentityMismatch):
        return grpc.StatusCode.PERMISSION_DENIED, shorten(str(exc))
    if isinstance(exc, RequestRefused):
        return grpc.StatusCode.FAILED_PRECONDITION, shorten(str(exc))
    if isinstance(exc, RemoteProtocolError):
        return grpc.StatusCode.INVALID_ARGUMENT, shorten(str(exc))
    if isinstance(exc, PayloadTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, shorten(str(exc))
    if isinstance(exc, QkdnError):
        return grpc.StatusCode.ABORTED, shorten(str(exc))
    return grpc.StatusCode.INTERNAL, "internal error"


def _status_of_handler_failure(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    code, details = status_for_exception(exc)
    if code is grpc.StatusCode.INTERNAL:
        _LOG.error("handler of %s failed", method, exc_info=exc)
    return code, details


class _ServerBridge(grpc.GenericRpcHandler):
    """The generic handler of :func:`serve_grpc`: runs the trio handlers for grpcio's threads."""

    def __init__(
        self,
        *,
        token: trio.lowlevel.TrioToken,
        nursery: trio.Nursery,
        unary: Mapping[str, UnaryHandler],
        streams: Mapping[str, StreamHandler],
        authenticate: bool,
        limits: Limits,
    ) -> None:
        self._token = token
        self._nursery = nursery
        self._authenticate = authenticate
        self._limits = limits
        self.closing = False
        self._methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method, handler in unary.items():
            self._methods[method] = grpc.unary_unary_rpc_method_handler(
                functools.partial(self._serve_unary, method, handler)
            )
        for method, stream_handler in streams.items():
            self._methods[method] = grpc.stream_stream_rpc_method_handler(
                functools.partial(self._serve_stream, method, stream_handler)
            )

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The method handler for a method path; ``None`` (``UNIMPLEMENTED``) for others."""
        return self._methods.get(handler_call_details.method)

    def _call_info(self, method: str, context: grpc.ServicerContext) -> CallInfo:
        """Servicer thread. Aborts the call (``UNAUTHENTICATED``) when TLS is on and the client
        certificate names no one."""
        peer_id = None
        if self._authenticate:
            properties: Any = context.auth_context()
            pems = properties.get("x509_pem_cert") or ()
            peer_id = _identity_of_pem(pems[0]) if pems else None
            if peer_id is None:
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "the client certificate names no one"
                )
        channel_id = None
        for key, value in context.invocation_metadata() or ():
            if key == CHANNEL_METADATA and isinstance(value, str) and len(value) <= 64:
                channel_id = value
        return CallInfo(peer_id=peer_id, method=method, channel_id=channel_id)

    # unary

    def _serve_unary(
        self, method: str, handler: UnaryHandler, request: bytes, context: grpc.ServicerContext
    ) -> bytes:
        """Servicer thread: run ``handler`` in trio until it answers or the RPC ends."""
        info = self._call_info(method, context)
        scope = trio.CancelScope()
        if not context.add_callback(functools.partial(_call_soon, self._token, scope.cancel)):
            context.abort(grpc.StatusCode.CANCELLED, "the call ended before it was served")
        if self.closing:
            context.abort(grpc.StatusCode.UNAVAILABLE, _SHUTTING_DOWN)
        try:
            result = trio.from_thread.run(
                self._run_unary, handler, request, info, scope, trio_token=self._token
            )
        except (trio.RunFinishedError, trio.Cancelled):
            context.abort(grpc.StatusCode.UNAVAILABLE, _SHUTTING_DOWN)
        if isinstance(result, bytes):
            return result
        context.abort(*result)

    async def _run_unary(
        self, handler: UnaryHandler, request: bytes, info: CallInfo, scope: trio.CancelScope
    ) -> bytes | tuple[grpc.StatusCode, str]:
        with scope:
            try:
                response = await handler(request, info)
            except Exception as exc:
                return _status_of_handler_failure(exc, info.method)
            if not isinstance(response, bytes):
                _LOG.error(
                    "handler of %s returned %s, not bytes", info.method, type(response).__name__
                )
                return grpc.StatusCode.INTERNAL, "internal error"
            if len(response) > MAX_MESSAGE_SIZE:
                return status_for_exception(PayloadTooLarge(len(response), MAX_MESSAGE_SIZE))
            return response
        # The RPC is over (cancelled, timed out, client gone): nobody will read a status.
        return grpc.StatusCode.CANCELLED, "the call was cancelled"

    # streams

    def _serve_stream(
        self,
        method: str,
        handler: StreamHandler,
        requests: Iterator[bytes],
        context: grpc.ServicerContext,
    ) -> Iterator[bytes]:
        """Servicer thread: start the trio side of the stream, then write what it sends.

        A generator: grpcio iterates it in the servicer thread, which blocks between messages.
        """
        info = self._call_info(method, context)
        try:
            stream = trio.from_thread.run_sync(
                self._open_stream, method, handler, info, requests, context, trio_token=self._token
            )
        except (trio.RunFinishedError, trio.Cancelled, _ShuttingDown):
            context.abort(grpc.StatusCode.UNAVAILABLE, _SHUTTING_DOWN)
        yield from stream._outbox
        end = stream._outbox.end_status
        if end is not None and end.code is not None:
            context.set_code(end.code)
            context.set_details(end.details)

    def _open_stream(
        self,
        method: str,
        handler: StreamHandler,
        info: CallInfo,
        requests: Iterator[bytes],
        context: grpc.ServicerContext,
    ) -> _ServerStream:
        """Trio thread: the stream, its reader thread and its handler task."""
        if self.closing:
            raise _ShuttingDown
        stream = _ServerStream(self._token, method, context)
        if not context.add_callback(
            functools.partial(_call_soon, self._token, stream._rpc_terminated)
        ):
            stream._rpc_terminated()
        self._nursery.start_soon(self._run_stream, handler, stream, info)
        stream._start_reader(requests, name=f"qkdn-grpc server stream reader {method}")
        return stream

    async def _run_stream(
        self, handler: StreamHandler, stream: _ServerStream, info: CallInfo
    ) -> None:
        try:
            with stream._scope:  # cancelled when the call ends early
                try:
                    await handler(stream, info)
                except Exception as exc:
                    stream._outbox.end(*_status_of_handler_failure(exc, info.method))
        except trio.Cancelled:  # serve_grpc is cancelled: never end this call with OK
            stream._outbox.end(grpc.StatusCode.UNAVAILABLE, _SHUTTING_DOWN)
            raise
        finally:
            stream._closed = True
            stream._outbox.end()
            stream._stop_reader()
            with trio.CancelScope(shield=True):
                # The reader ends when the call does, which takes the servicer thread writing
                # what the handler sent; a client that reads nothing is cut off after a while.
                with trio.move_on_after(self._limits.drain_timeout):
                    await stream._reader_done.wait()
                if not stream._reader_done.is_set():
                    stream._context.cancel()
                await stream._join_reader()


class _ShuttingDown(Exception):
    pass


@functools.lru_cache(maxsize=256)
def _identity_of_pem(pem: bytes) -> str | None:
    try:
        return peer_identity_from_der(ssl.PEM_cert_to_DER_cert(pem.decode("ascii")))
    except ValueError:
        return None


def _worker_count(limits: Limits) -> int:
    return min(4 * limits.max_in_flight, _MAX_WORKERS)


def _server_options(limits: Limits) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.so_reuseport", 0),  # a port in use is an error, not a second listener
        ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
        ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
        ("grpc.max_concurrent_streams", limits.max_in_flight),
        # Rapid reset (CVE-2023-44487): a stream the client reset still counts against
        # max_concurrent_streams until the server has let go of its call, so a connection that
        # opens and resets streams at once gets REFUSED_STREAM instead of piling up calls.
        # grpcio 1.85 has it on by default but the core calls it experimental: we pin it.
        # Without it a burst of resets got a good client's calls cancelled
        # (tests/test_rapid_reset.py).
        ("grpc.http.overload_protection", 1),
        ("grpc.max_allowed_incoming_connections", limits.max_connections),
        ("grpc.server_handshake_timeout_ms", _ms(limits.handshake_timeout)),
        ("grpc.keepalive_time_ms", _ms(max(limits.send_timeout, 60.0))),
        ("grpc.keepalive_timeout_ms", _ms(limits.send_timeout)),
    ]
    if limits.idle_timeout is not None:
        options.append(("grpc.max_connection_idle_ms", _ms(limits.idle_timeout)))
    return options


def _ms(seconds: float) -> int:
    return max(1, min(math.ceil(seconds * 1000), 2**31 - 1))


async def serve_grpc(
    host: str,
    port: int,
    *,
    unary: Mapping[str, UnaryHandler],
    streams: Mapping[str, StreamHandler],
    tls: TLSConfig | None,
    limits: Limits,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve gRPC on ``host``:``port`` until cancelled; report the bound port (``port`` may be
    0) with ``task_status.started(port)``.

    ``unary`` and ``streams`` map method paths (``"/pkg.Service/Method"``) to the trio handlers
    of unary calls and of bidirectional streams; other methods get ``UNIMPLEMENTED``. A handler
    is cancelled when its call ends early (the client cancelled, its deadline passed, it
    disconnected); its exceptions become statuses (:func:`status_for_exception`) and the server
    goes on.

    ``tls``: ``None`` serves plaintext (``grpc://``); otherwise TLS (>= 1.2, gRPC's minimum) with
    the certificate and key of ``tls``, and, when ``tls.require_client_cert`` (the default), a
    client certificate verified by ``tls.ca`` is required and its ID reaches the handler
    (:attr:`CallInfo.peer_id`); a certificate that names no one is refused (``UNAUTHENTICATED``).

    ``limits``: messages up to :data:`MAX_MESSAGE_SIZE` each way; at most ``max_in_flight``
    calls at once on one connection (HTTP/2 ``max_concurrent_streams``: the client queues the
    others); at most ``min(4 * max_in_flight, 256)`` calls at once on the whole server (the
    servicer threads; more get ``RESOURCE_EXHAUSTED``; each stream holds one, plus a reader
    thread); at most ``max_connections`` connections; ``handshake_timeout`` for the TLS
    handshake; connections idle for ``idle_timeout`` closed (``grpc.max_connection_idle_ms``);
    keepalive pings every max(``send_timeout``, 60 s), a peer that does not answer one within
    ``send_timeout`` disconnected; a stream handler that returned gets ``drain_timeout`` for the
    client to read what it sent, then the call is cancelled. ``max_connections_per_peer`` is not
    enforced: grpcio gives no hook at connection level.

    When cancelled, the server stops: every call in progress is cancelled (its handler too), the
    servicer threads and grpcio's polling thread are joined, then it returns.

    Raises :class:`~qkdn_sdk.errors.TransportError` when the address cannot be bound,
    :class:`~qkdn_sdk.tls.TLSConfigError` for bad TLS files, :class:`ValueError` for a method
    path given twice or not of the form ``/pkg.Service/Method``.
    """
    both = set(unary) & set(streams)
    if both:
        raise ValueError(f"methods both unary and stream: {sorted(both)}")
    for method in (*unary, *streams):
        if not _METHOD_PATH.fullmatch(method):
            raise ValueError(f"{method!r} is not a gRPC method path (/pkg.Service/Method)")
    credentials = _server_credentials(tls) if tls is not None else None
    token = trio.lowlevel.current_trio_token()
    workers = _worker_count(limits)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qkdn-grpc-server")
    serve_threads: list[threading.Thread] = []
    try:
        async with trio.open_nursery() as nursery:
            bridge = _ServerBridge(
                token=token,
                nursery=nursery,
                unary=unary,
                streams=streams,
                authenticate=tls is not None and tls.require_client_cert,
                limits=limits,
            )
            server = grpc.server(
                executor,
                handlers=[bridge],
                options=_server_options(limits),
                maximum_concurrent_rpcs=workers,
            )
            try:
                address = f"{_host_for_target(host)}:{port}"
                try:
                    if credentials is None:
                        bound = server.add_insecure_port(address)
                    else:
                        bound = server.add_secure_port(address, credentials)
                except RuntimeError as exc:
                    raise TransportError(f"cannot listen on {address}: {exc}") from None
                if bound == 0:
                    raise TransportError(f"cannot listen on {address}")
                before = set(threading.enumerate())
                server.start()
                serve_threads = [
                    thread
                    for thread in set(threading.enumerate()) - before
                    if thread.name.endswith("(_serve)")
                ]
                task_status.started(bound)
                await trio.sleep_forever()
            finally:
                bridge.closing = True
                with trio.CancelScope(shield=True):
                    # grace=None: cancel every call now (their termination callbacks cancel
                    # the handlers) and wait until grpcio has stopped.
                    await _in_thread(lambda: server.stop(None), "qkdn-grpc server stop")
    finally:
        with trio.CancelScope(shield=True):
            await _in_thread(lambda: executor.shutdown(wait=True), "qkdn-grpc executor shutdown")
            await _join_threads(serve_threads)


def _server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    tls.server_context()  # checks every file, raising TLSConfigError that names it
    assert tls.cert is not None
    chain, key = _pem_material(tls)
    if tls.require_client_cert:
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=tls.ca.read_bytes(), require_client_auth=True
        )
    # No root certificates: no client certificate is asked for (never an unverified one).
    return grpc.ssl_server_credentials([(key, chain)])


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----\r?\n?", re.DOTALL)


def _pem_material(tls: TLSConfig) -> tuple[bytes, bytes]:
    """(certificate chain, private key) PEM of ``tls``; the key may sit in the certificate
    file."""
    assert tls.cert is not None
    blocks = list(_PEM_BLOCK.finditer(tls.cert.read_bytes()))
    chain = b"".join(m.group(0) for m in blocks if m.group(1) == b"CERTIFICATE")
    if tls.key is not None:
        return chain, tls.key.read_bytes()
    key = b"".join(m.group(0) for m in blocks if m.group(1).endswith(b"PRIVATE KEY"))
    return chain, key


def _host_for_target(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --- client ---------------------------------------------------------------------------------


class ConnectionEnded(QkdnError):
    """A handler ends the client's connection (the serving side closed it): the call is
    answered ``UNAVAILABLE``, which the client reads as its connection broken."""


class CallFailed(FailureResponse):
    """The server answered a call with a gRPC error status that has no more specific SDK error
    (see :func:`error_for_status`). ``status`` is the status name (``"INVALID_ARGUMENT"``),
    ``reason`` the server's text; ``response`` is ``None``."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason, None)
        self.status = status


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""The HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113 3.4)."""

_TLS_HINTS = ("ssl", "tls", "handshake", "certificate", "x509", "verification")


def error_for_status(
    code: grpc.StatusCode,
    details: str,
    *,
    method: str,
    target: str,
    timeout: float | None = None,
    connected: bool = False,
    secure: bool = False,
) -> QkdnError:
    """The SDK error for a call to ``method`` at ``target`` that ended with a non-OK status.

    ======================  =============================================================
    status                  error
    ======================  =============================================================
    DEADLINE_EXCEEDED       :class:`~qkdn_sdk.errors.RequestTimeout`
    UNAVAILABLE             :class:`~qkdn_sdk.errors.TransportError` (saying what
                            probably happened when a TLS handshake failed, or when a
                            ``secure`` channel that never got through was closed: the
                            server refused our certificate), or
                            :class:`~qkdn_sdk.errors.ConnectionBroken` once a call had
                            gone through (``connected``)
    UNAUTHENTICATED         :class:`~qkdn_sdk.errors.TransportError`: our certificate was
                            refused
    CANCELLED               :class:`~qkdn_sdk.errors.PeerClosed` (the server cancelled:
                            it is stopping); our own cancellation is trio's
    PERMISSION_DENIED       :class:`~qkdn_sdk.errors.NotAuthorized` with the server's text
    FAILED_PRECONDITION     :class:`~qkdn_sdk.errors.RequestRefused` with the server's text
    anything else           :class:`CallFailed` (``status`` and the server's text):
                            INVALID_ARGUMENT, ABORTED, INTERNAL, UNIMPLEMENTED,
                            RESOURCE_EXHAUSTED...
    ======================  =============================================================
    """
    text = shorten(details or code.name.lower().replace("_", " "))
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        within = f" within {timeout:g} s" if timeout is not None else ""
        return RequestTimeout(f"no response to {method} from {target}{within}")
    if code is grpc.StatusCode.UNAVAILABLE:
        lowered = details.lower()
        if any(hint in lowered for hint in _TLS_HINTS):
            return TransportError(
                f"TLS handshake with {target} failed: {_tls_hint(lowered)} ({text})"
            )
        if secure and not connected and "socket closed" in lowered:
            return TransportError(
                f"{target} closed the TLS connection: it probably refused our certificate "
                f"(none was sent, or a CA it does not trust signed it) ({text})"
            )
        if connected:
            return ConnectionBroken(f"connection to {target} broken: {text}")
        return TransportError(f"cannot reach {target}: {text}")
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return TransportError(f"{target} refused our identity: {text}")
    if code is grpc.StatusCode.CANCELLED:
        return PeerClosed(f"{target} cancelled the call to {method} (is it stopping?): {text}")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return NotAuthorized(text)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return RequestRefused(text)
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return CallFailed(code.name, f"{target} does not serve {method}")
    return CallFailed(code.name, text)


def _tls_hint(details: str) -> str:
    if "hostname verification" in details:
        return "the server's certificate does not name the host we dialled"
    if "certificate_verify_failed" in details or "certificate verify failed" in details:
        return "the server's certificate did not verify (is it signed by our CA?)"
    if "alert" in details and ("certificate" in details or "unknown ca" in details):
        return "the server refused our certificate (is it signed by a CA the server trusts?)"
    return "probably a certificate not signed by the peer's CA, or a missing client certificate"


class GrpcChannel:
    """A gRPC channel to one server, used from trio: an async context manager.

    ``tls``: ``None`` for plaintext (``grpc://``); otherwise the server is verified by
    ``tls.ca`` and the host name we dial, and our certificate (``tls.cert``/``tls.key``) is
    presented. Entering the channel with TLS makes one probe handshake to learn
    :attr:`peer_id` (see the module's notes on identity) and to report TLS problems in words.
    Limits: messages up to :data:`MAX_MESSAGE_SIZE` each way; ``handshake_timeout`` for the
    probe; ``idle_timeout`` as grpcio's ``client_idle_timeout_ms`` (an idle channel drops its
    connection and reconnects on the next call). The channel has a connection of its own (a
    local subchannel pool): it shares nothing with other channels.
    """

    def __init__(self, host: str, port: int, *, tls: TLSConfig | None, limits: Limits) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._limits = limits
        self._target = f"{_host_for_target(host)}:{port}"
        self.peer_id: str | None = None
        """The ID in the server's certificate, once entered (``None`` on plaintext)."""
        self.channel_id = uuid.uuid4().hex
        """Sent as ``qkdn-channel`` metadata on every call and stream of this channel, so the
        server can tell its calls from those of other channels (:attr:`CallInfo.channel_id`)."""
        self.metadata: tuple[tuple[str, str], ...] = ((CHANNEL_METADATA, self.channel_id),)
        self._grpc: grpc.Channel | None = None
        self._closed = False
        self._connected = False
        self._token: trio.lowlevel.TrioToken
        self._trio_thread: threading.Thread | None = None
        self._grpc_threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        self._streams: set[_ClientStream] = set()
        self._unary: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = {}

    @property
    def target(self) -> str:
        """``host:port`` as dialled."""
        return self._target

    async def __aenter__(self) -> GrpcChannel:
        if self._grpc is not None or self._closed:
            raise RuntimeError("a GrpcChannel is entered once")
        self._token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.current_thread()
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
            ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if self._limits.idle_timeout is not None:
            options.append(("grpc.client_idle_timeout_ms", _ms(self._limits.idle_timeout)))
        if self._tls is None:
            self._grpc = grpc.insecure_channel(self._target, options=options)
        else:
            credentials = _channel_credentials(self._tls)
            self.peer_id = await self._probe_identity(self._tls)
            self._grpc = grpc.secure_channel(self._target, credentials, options=options)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _probe_identity(self, tls: TLSConfig) -> str:
        context = tls.client_context()
        context.set_alpn_protocols(["h2"])
        try:
            with trio.fail_after(self._limits.handshake_timeout):
                tcp = await trio.open_tcp_stream(self._host, self._port)
                stream = trio.SSLStream(tcp, context, server_hostname=self._host)
                try:
                    await stream.do_handshake()
                    der = stream.getpeercert(binary_form=True)
                    # With TLS 1.3 the server judges our certificate after our side of the
                    # handshake is done: its answer to an HTTP/2 preface says if it took it.
                    await stream.send_all(_HTTP2_PREFACE)
                    if not await stream.receive_some(64):
                        raise TransportError(
                            f"{self._target} closed the connection after the TLS handshake: it "
                            "probably refused our certificate"
                        )
                finally:
                    await trio.aclose_forcefully(stream)
        except trio.TooSlowError:
            raise TransportError(
                f"{self._target} did not complete a TLS handshake and answer an HTTP/2 preface "
                f"within {self._limits.handshake_timeout:g} s"
            ) from None
        except trio.BrokenResourceError as exc:
            raise TransportError(
                f"TLS handshake with {self._target} failed: {explain_tls_failure(exc)}"
            ) from None
        except OSError as exc:
            raise TransportError(
                f"cannot connect to {self._target}: {exc.strerror or exc}"
            ) from None
        identity = peer_identity_from_der(der) if der else None
        if identity is None:
            raise TransportError(f"the certificate of {self._target} names no one")
        return identity

    def _require_open(self) -> grpc.Channel:
        if self._grpc is None:
            raise trio.ClosedResourceError(
                "the channel is closed" if self._closed else "enter the channel first"
            )
        return self._grpc

    def _saw_thread(self) -> None:
        """A grpcio thread runs our callback: remember it, to join it when closing."""
        thread = threading.current_thread()
        if thread is self._trio_thread:
            return
        with self._threads_lock:
            if thread not in self._grpc_threads:
                if len(self._grpc_threads) >= 8:
                    self._grpc_threads = {t for t in self._grpc_threads if t.is_alive()}
                self._grpc_threads.add(thread)

    def _error(
        self, code: grpc.StatusCode, details: str, method: str, timeout: float | None = None
    ) -> QkdnError:
        if self._closed and code is grpc.StatusCode.CANCELLED:
            return ConnectionBroken(f"the channel to {self._target} was closed")
        return error_for_status(
            code,
            details,
            method=method,
            target=self._target,
            timeout=timeout,
            connected=self._connected,
            secure=self._tls is not None,
        )

    async def call(self, method: str, request: bytes, *, timeout: float | None) -> bytes:
        """Call the unary ``method`` (``"/pkg.Service/Method"``) with ``request``; the response.

        ``timeout``: seconds (the call's gRPC deadline); ``None`` waits for ever. Cancelling the
        calling task cancels the call (the server handler is cancelled).

        Raises :class:`~qkdn_sdk.errors.PayloadTooLarge` for a request over
        :data:`MAX_MESSAGE_SIZE`, :class:`trio.ClosedResourceError` when the channel is not
        open, and what :func:`error_for_status` says for a failed call
        (:class:`~qkdn_sdk.errors.RequestTimeout`, :class:`~qkdn_sdk.errors.TransportError`,
        :class:`~qkdn_sdk.errors.ConnectionBroken` when the channel is closed meanwhile,
        :class:`CallFailed`...).
        """
        channel = self._require_open()
        if len(request) > MAX_MESSAGE_SIZE:
            raise PayloadTooLarge(len(request), MAX_MESSAGE_SIZE)
        multicallable = self._unary.get(method)
        if multicallable is None:
            multicallable = self._unary[method] = channel.unary_unary(method, None, None)
        done = trio.Event()
        future = multicallable.future(bytes(request), timeout=timeout, metadata=self.metadata)
        future.add_done_callback(functools.partial(self._call_done, done))
        try:
            await done.wait()
        finally:
            if not done.is_set():
                future.cancel()
        code = future.code()
        if code is grpc.StatusCode.OK:
            self._connected = True
            response: bytes = future.result()
            return response
        if code is not grpc.StatusCode.UNAVAILABLE:
            self._connected = True
        raise self._error(code, future.details(), method, timeout)

    def _call_done(self, done: trio.Event, _future: object) -> None:
        self._saw_thread()
        _call_soon(self._token, done.set)

    async def open_stream(self, method: str) -> ByteStream:
        """Open a bidirectional stream to ``method``. It has no deadline; close it with
        :meth:`ByteStream.aclose` (or ``async with``), which the channel's close does too.

        The call is made at once; a server that does not serve ``method`` or cannot be reached
        shows as the error of the stream's first :meth:`~ByteStream.receive` (or of a
        :meth:`~ByteStream.send` once the call has failed).
        """
        self._require_open()
        await trio.lowlevel.checkpoint()
        stream = _ClientStream(self, method)
        self._streams.add(stream)
        return stream

    async def aclose(self) -> None:
        """Close the streams and the channel; calls in progress fail with
        :class:`~qkdn_sdk.errors.ConnectionBroken`. Joins every thread grpcio ran our
        callbacks on. Closing twice is harmless."""
        channel, self._grpc = self._grpc, None
        self._closed = True
        with trio.CancelScope(shield=True):
            for stream in list(self._streams):
                await stream.aclose()
            if channel is not None:
                await _in_thread(channel.close, "qkdn-grpc channel close")
            with self._threads_lock:
                threads, self._grpc_threads = list(self._grpc_threads), set()
            await _join_threads(threads)


def _channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    tls.client_context()  # checks every file, raising TLSConfigError that names it
    if tls.cert is None:
        return grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())
    chain, key = _pem_material(tls)
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(), private_key=key, certificate_chain=chain
    )


# --- threads ----------------------------------------------------------------------------------


def _call_soon(token: trio.lowlevel.TrioToken, fn: Callable[[], object]) -> None:
    """Run ``fn`` in the trio thread soon, from any thread; nothing once the run is over."""
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(fn)


async def _in_thread(fn: Callable[[], _T], name: str) -> _T:
    """Run the blocking ``fn`` in a thread of its own, wait for it without blocking trio, join
    the thread and return what ``fn`` returned. Not cancellable: ``fn`` must end by itself."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[outcome.Outcome[_T]] = []

    def run() -> None:
        result.append(outcome.capture(fn))
        _call_soon(token, done.set)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    with trio.CancelScope(shield=True):
        await done.wait()
    thread.join()  # it has nothing left to do but return
    return result[0].unwrap()


async def _join_threads(threads: list[threading.Thread]) -> None:
    """Join ``threads`` (each must be about to end) without blocking trio."""
    current = threading.current_thread()
    alive = [thread for thread in threads if thread is not current and thread.is_alive()]
    if alive:

        def join_all() -> None:
            for thread in alive:
                thread.join()

        await _in_thread(join_all, "qkdn-grpc join")
    else:
        await trio.lowlevel.checkpoint()
