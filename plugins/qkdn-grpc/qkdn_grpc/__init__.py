"""``grpc://`` and ``grpcs://``: every SDK message over gRPC, as ``qkdn.proto`` defines it
(Q.4164 Appendix II names for Ck), with mutual TLS for ``grpcs://``.

A client sends each request or one-way message as the unary RPC of its interface's service
(``/qkdn.v1.Ak/KeyRequest``...) and gets the response message back. The serving side sends its
own requests (session creation notification, proactive key supply, key relay request...) on the
``Peer.Reverse`` stream, which a client with a handler opens when it connects; each carries a
MessageID in its ``Envelope``, and the client answers on the same stream. Every call of one
client connection carries the ``qkdn-channel`` metadata, so the server knows which calls and
which stream belong together (:class:`~qkdn_sdk.transport.Connection` semantics: a connection,
its peer's identity, requests both ways).

As on every transport: the peer's ID is the one in its certificate, a message claiming another
ID is refused, a handler's error is a failure response, and a request the server does not
accept, or cannot decode, is answered with a clear error (gRPC ``INVALID_ARGUMENT``, a
:class:`~qkdn_sdk.errors.FailureResponse` at the client) while the server goes on serving.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import urllib.parse
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from functools import partial

import trio

from qkdn_grpc._bare import BareGrpc
from qkdn_grpc._bridge import ByteStream, CallInfo, ConnectionEnded, GrpcChannel, serve_grpc
from qkdn_grpc._codec import decode, decode_envelope, encode, encode_envelope, rpc_path
from qkdn_grpc._schema import PACKAGE, services
from qkdn_sdk.errors import (
    ConnectionBroken,
    FailureResponse,
    IdentityMismatch,
    InvalidMessage,
    LocalProtocolError,
    PayloadError,
    QkdnError,
    RemoteProtocolError,
    RequestTimeout,
    TransportError,
)
from qkdn_sdk.messages import (
    Message,
    check_response,
    failure_reason,
    failure_response,
)
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import (
    DEFAULT_TIMEOUT,
    BareExchange,
    ConnectHook,
    Connection,
    Handler,
    Limits,
    ServerInfo,
    Transport,
    TransportRegistry,
    bound_url,
    check_claims,
    hookimpl,
    tcp_address,
)

__all__ = ["REVERSE", "GrpcTransport", "qkdn_register_transports"]

logger = logging.getLogger("qkdn_grpc")

REVERSE = f"/{PACKAGE}.Peer/Reverse"
"""The bidirectional stream on which the serving side sends its own requests."""

_RPCS: dict[type[Message], str] = {
    rpc.request: rpc_path(rpc.request) for rpcs in services().values() for rpc in rpcs
}
"""The method path of every request and one-way message (responses answer them)."""


# --- the side that sends requests on a stream and awaits their answers -------------------------


class _Answers:
    """Requests sent on a stream, by MessageID, until their responses come."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[Message]] = {}

    def new(self) -> tuple[int, trio.MemoryReceiveChannel[Message]]:
        message_id = next(self._ids) % 2**32 or next(self._ids)
        send, receive = trio.open_memory_channel[Message](1)
        self._waiting[message_id] = send
        return message_id, receive

    def forget(self, message_id: int) -> None:
        self._waiting.pop(message_id, None)

    def deliver(self, message_id: int, message: Message) -> bool:
        waiting = self._waiting.pop(message_id, None)
        if waiting is None:
            return False
        waiting.send_nowait(message)
        return True

    def fail_all(self) -> None:
        for waiting in self._waiting.values():
            waiting.close()
        self._waiting.clear()


async def _await_answer(
    request: Message,
    answers: _Answers,
    send: ByteStream,
    timeout: float | None,
) -> Message:
    message_id, answer = answers.new()
    try:
        with trio.fail_after(math.inf if timeout is None else timeout):
            await send.send(encode_envelope(message_id, request))
            try:
                response = await answer.receive()
            except trio.EndOfChannel:
                raise ConnectionBroken("the stream ended before the answer came") from None
    except trio.TooSlowError:
        raise RequestTimeout(f"no response to {type(request).__name__} in {timeout} s") from None
    finally:
        answers.forget(message_id)
    return _checked(request, response)


async def _next_envelope(stream: ByteStream) -> tuple[int, Message] | None:
    """The (MessageID, message) of the next envelope the peer sends on ``stream``; ``None``
    once the stream ended. An envelope that does not decode is logged and skipped."""
    while True:
        try:
            data = await stream.receive()
        except QkdnError:
            return None
        try:
            return decode_envelope(data)
        except PayloadError as exc:
            logger.info("a bad message on a reverse stream: %s", exc)


def _checked(request: Message, response: Message) -> Message:
    """``response``, or the :class:`FailureResponse` it reports."""
    reason = failure_reason(response)
    if reason is not None:
        raise FailureResponse(reason, response)
    expected = type(request).response_type()
    if type(response) is not expected:
        raise RemoteProtocolError(
            f"{type(request).__name__} was answered with {type(response).__name__}"
        )
    try:
        check_response(request, response)
    except InvalidMessage as exc:
        raise RemoteProtocolError(f"invalid {type(response).__name__}: {exc}") from None
    return response


async def _answer(
    handler: Handler | None,
    accepts: Collection[type[Message]] | None,
    peer_id: str | None,
    message: Message,
    connection: Connection,
) -> Message | None:
    """What a handler answers ``message`` with, as every transport does: a refusal when it is
    not accepted or claims another ID, a failure response when the handler fails."""
    response_type = type(message).response_type()
    try:
        check_claims(message, peer_id)
    except IdentityMismatch as exc:
        claim: str | None = exc.response_text
    else:
        claim = None
    if accepts is not None and type(message) not in accepts:
        reason = f"{message.spec_name} (0x{message.code:04X}) is not accepted here"
    elif claim is not None:
        reason = claim
    elif handler is None:
        reason = "this side takes no requests"
    else:
        try:
            response = await handler(message, connection)
        except QkdnError as exc:
            reason = exc.response_text
        except Exception:
            logger.exception("the handler of %s failed", type(message).__name__)
            reason = "failure: internal error"
        else:
            if response_type is None or isinstance(response, ErrorIndication):
                return response
            if response is None:
                reason = "failure: no answer"
            elif type(response) is not response_type:
                logger.error("a handler answered %s with %s", message, type(response).__name__)
                reason = "failure: internal error"
            else:
                return response
    if response_type is None:
        logger.info("refused a one-way %s: %s", type(message).__name__, reason)
        return None
    return failure_response(response_type, reason, echo=_echo(message), command_code=message.code)


def _echo(message: Message) -> dict[str, object]:
    """The IDs of a request its failure response repeats (as the framed transports do)."""
    names = ("session_id", "key_id", "keys")
    return {name: getattr(message, name) for name in names if hasattr(message, name)}


# --- client ---------------------------------------------------------------------------------


class _ClientConnection(Connection):
    """A client's connection: unary calls on its channel, and the reverse stream."""

    def __init__(
        self,
        channel: GrpcChannel,
        *,
        local_id: str | None,
        handler: Handler | None,
        accepts: Collection[type[Message]] | None,
        limits: Limits,
    ) -> None:
        self._channel = channel
        self._local_id = local_id
        self._handler = handler
        self._accepts = accepts
        self._limits = limits
        self._end: TransportError | None = None
        self._stream: ByteStream | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def peer_id(self) -> str | None:
        return self._channel.peer_id

    @property
    def local_id(self) -> str | None:
        return self._local_id

    @property
    def closed(self) -> bool:
        return self._end is not None

    async def request(
        self, message: Message, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Message:
        path = self._path(message, request=True)
        data = await self._call(path, message, timeout)
        response_type = type(message).response_type()
        assert response_type is not None
        try:
            response = decode(response_type, data)
        except PayloadError as exc:
            raise RemoteProtocolError(str(exc)) from None
        return _checked(message, response)

    async def send(self, message: Message) -> None:
        """One-way messages go on the reverse stream (opened now if needed), so they reach the
        server in the order sent, as on one TCP connection; the unary RPCs ``qkdn.proto``
        declares for them are for clients of other languages."""
        if message.response_type() is not None:
            raise LocalProtocolError(f"{type(message).__name__} is a request: use request()")
        if self._end is not None:
            raise type(self._end)(str(self._end))
        stream = await self._reverse()
        try:
            await stream.send(encode_envelope(0, message))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._end = self._end or ConnectionBroken("the connection's stream ended")
            raise self._end from None

    async def _reverse(self) -> ByteStream:
        """The reverse stream, opened now if the connection has none yet."""
        if self._stream is None:
            assert self._nursery is not None
            await self._nursery.start(self.run_reverse)
        if self._stream is None:
            self._end = self._end or ConnectionBroken("the connection's stream ended")
            raise self._end
        return self._stream

    def _path(self, message: Message, *, request: bool) -> str:
        if self._end is not None:
            raise type(self._end)(str(self._end))
        if (message.response_type() is not None) != request:
            raise LocalProtocolError(f"{type(message).__name__} is not a request")
        path = _RPCS.get(type(message))
        if path is None:
            raise LocalProtocolError(f"{type(message).__name__} has no RPC: it answers one")
        return path

    async def _call(self, path: str, message: Message, timeout: float | None) -> bytes:
        try:
            return await self._channel.call(path, encode(message), timeout=timeout)
        except RequestTimeout:
            raise  # the connection goes on
        except TransportError as exc:  # unreachable, broken, or ended by the server
            self._end = exc
            raise
        except FailureResponse as exc:
            # the server could not take the request (it could not decode it, or does not
            # accept it): an error indication, as the framed transports answer
            reason = exc.reason if exc.reason.startswith("failure") else f"failure: {exc.reason}"
            raise FailureResponse(reason, ErrorIndication(reason=reason)) from exc

    async def run_reverse(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Open the reverse stream and answer what the server sends on it until it ends (then
        the connection is broken) or the task is cancelled. Raises nothing."""
        try:
            stream = await self._channel.open_stream(REVERSE)
        except QkdnError as exc:
            logger.info("no reverse stream: %s", exc)
            task_status.started()
            return
        self._stream = stream
        task_status.started()
        in_flight = trio.Semaphore(self._limits.max_in_flight)
        try:
            async with trio.open_nursery() as nursery:
                while (envelope := await _next_envelope(stream)) is not None:
                    await in_flight.acquire()
                    nursery.start_soon(self._serve, stream, in_flight, *envelope)
        finally:
            self._stream = None
            self._end = self._end or ConnectionBroken("the server ended the connection's stream")
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _serve(
        self, stream: ByteStream, in_flight: trio.Semaphore, message_id: int, message: Message
    ) -> None:
        try:
            response = await _answer(self._handler, self._accepts, self.peer_id, message, self)
            if response is not None:
                await stream.send(encode_envelope(message_id, response))
        except (QkdnError, trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            logger.info("could not answer %s: %s", type(message).__name__, exc)
        finally:
            in_flight.release()

    async def aclose(self) -> None:
        if self._end is None:
            self._end = ConnectionBroken("the connection was closed")
        await self._channel.aclose()


# --- server ---------------------------------------------------------------------------------


class _ServerSide(Connection):
    """One client connection as the server sees it: the calls of one channel, and its reverse
    stream for the server's own requests."""

    def __init__(self, peer_id: str | None, local_id: str | None, limits: Limits) -> None:
        self._peer_id = peer_id
        self._local_id = local_id
        self._limits = limits
        self.stream: ByteStream | None = None
        self.stream_ready = trio.Event()
        self.answers = _Answers()
        self.ended = False
        self.reverse_ended = False
        """Its reverse stream was open and is no longer: the server can send it nothing more."""
        self.in_flight = trio.Semaphore(limits.max_in_flight)

    @property
    def peer_id(self) -> str | None:
        return self._peer_id

    @property
    def local_id(self) -> str | None:
        return self._local_id

    @property
    def closed(self) -> bool:
        return self.ended or self.reverse_ended

    async def _stream(self) -> ByteStream:
        if self.ended:
            raise ConnectionBroken("the connection was closed")
        with trio.move_on_after(self._limits.handshake_timeout):
            await self.stream_ready.wait()
        if self.stream is None:
            raise TransportError(
                "the client opened no reverse stream: it takes no requests over gRPC"
            )
        return self.stream

    async def request(
        self, message: Message, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Message:
        if message.response_type() is None:
            raise LocalProtocolError(f"{type(message).__name__} is not a request")
        return await _await_answer(message, self.answers, await self._stream(), timeout)

    async def send(self, message: Message) -> None:
        stream = await self._stream()
        await stream.send(encode_envelope(0, message))

    async def aclose(self) -> None:
        self.ended = True
        self.answers.fail_all()
        if self.stream is not None:
            await self.stream.aclose()


class _Server:
    """The handlers of one gRPC server: unary calls and reverse streams, by client channel."""

    def __init__(
        self,
        handler: Handler,
        *,
        local_id: str | None,
        limits: Limits,
        accepts: Collection[type[Message]] | None,
        on_connect: ConnectHook | None,
    ) -> None:
        self._handler = handler
        self._on_connect = on_connect
        self._local_id = local_id
        self._limits = limits
        self._accepts = accepts
        self._connections: collections.OrderedDict[tuple[str | None, str], _ServerSide] = (
            collections.OrderedDict()
        )

    def _connection(self, info: CallInfo) -> _ServerSide:
        """The connection a call belongs to (one per client channel; a call without a channel
        ID is a connection of its own). At most ``max_connections`` are remembered: the oldest
        without a stream are forgotten first."""
        if info.channel_id is None:
            return _ServerSide(info.peer_id, self._local_id, self._limits)
        key = (info.peer_id, info.channel_id)
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connections[key] = _ServerSide(
                info.peer_id, self._local_id, self._limits
            )
            while len(self._connections) > self._limits.max_connections:
                idle = next(
                    (k for k, c in self._connections.items() if c.stream is None and k != key),
                    None,
                )
                if idle is None:
                    break
                del self._connections[idle]
        self._connections.move_to_end(key)
        return connection

    async def unary(self, cls: type[Message], data: bytes, info: CallInfo) -> bytes:
        connection = self._connection(info)
        if connection.ended:
            raise ConnectionEnded("the server closed this connection")
        try:
            message = decode(cls, data)
        except PayloadError as exc:
            raise RemoteProtocolError(str(exc)) from None
        if connection.in_flight.value == 0:
            raise RemoteProtocolError(
                f"more than {self._limits.max_in_flight} requests in flight on one connection"
            )
        async with connection.in_flight:
            response = await _answer(
                self._handler, self._accepts, info.peer_id, message, connection
            )
        if connection.ended:
            raise ConnectionEnded("the server closed this connection")
        if response is None:
            return b""  # a one-way message: Empty
        if isinstance(response, ErrorIndication):
            raise RemoteProtocolError(response.reason)
        return encode(response)

    async def _one_way(
        self,
        connection: _ServerSide,
        messages: trio.MemoryReceiveChannel[Message],
        info: CallInfo,
    ) -> None:
        async for message in messages:
            await _answer(self._handler, self._accepts, info.peer_id, message, connection)

    async def reverse(self, stream: ByteStream, info: CallInfo) -> None:
        connection = self._connection(info)
        if connection.stream is not None or connection.ended:
            await stream.aclose()
            return
        connection.stream = stream
        connection.stream_ready.set()
        try:
            if self._on_connect is not None:  # the server's requests can reach it from now on
                self._on_connect(connection)
            send, receive = trio.open_memory_channel[Message](self._limits.max_in_flight)
            async with trio.open_nursery() as nursery, send:
                nursery.start_soon(self._one_way, connection, receive, info)
                await self._read_reverse(stream, connection, info, send)
        finally:
            connection.stream = None
            connection.reverse_ended = True
            connection.answers.fail_all()
            if info.channel_id is not None and not connection.ended:
                self._connections.pop((info.peer_id, info.channel_id), None)

    async def _read_reverse(
        self,
        stream: ByteStream,
        connection: _ServerSide,
        info: CallInfo,
        one_way: trio.MemorySendChannel[Message],
    ) -> None:
        """Deliver the client's answers to our requests, and its one-way messages."""
        while (envelope := await _next_envelope(stream)) is not None:
            message_id, message = envelope
            if connection.answers.deliver(message_id, message):
                continue  # the answer to one of our requests (HELLO answers HELLO)
            if message.response_type() is not None:
                logger.info("ignored a request on a reverse stream: %s", message.spec_name)
            else:
                # a one-way message (or a response no request of ours awaits, as on every
                # transport): the handler takes them one after another, in order
                await one_way.send(message)


# --- the transport ------------------------------------------------------------------------------


def _tls(url: urllib.parse.SplitResult, tls: TLSConfig | None) -> TLSConfig | None:
    if url.scheme == "grpc":
        if tls is not None:
            raise TransportError("grpc:// does not use TLS: use grpcs:// with TLS settings")
        return None
    if tls is None:
        raise TransportError("grpcs:// needs TLS settings (CA, certificate and key)")
    return tls


class GrpcTransport(Transport):
    """gRPC: ``grpc://HOST:PORT`` and ``grpcs://HOST:PORT`` (mutual TLS)."""

    name = "grpc"
    schemes = ("grpc", "grpcs")
    secure_schemes = ("grpcs",)

    def capabilities(self) -> str:
        return "every message, both directions (qkdn.proto; the server's requests on a stream)"

    def bare_exchange(self, scheme: str) -> BareExchange:
        """grpcio echoing canned protobuf through the same bridge (:mod:`qkdn_grpc._bare`)."""
        return BareGrpc(scheme)

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
        host, port = tcp_address(url)
        channel_tls = _tls(url, tls)
        local_id = tls.identity() if channel_tls is not None and tls is not None else identity
        async with GrpcChannel(host, port, tls=channel_tls, limits=limits) as channel:
            connection = _ClientConnection(
                channel, local_id=local_id, handler=handler, accepts=accepts, limits=limits
            )
            try:
                async with trio.open_nursery() as nursery:
                    connection._nursery = nursery
                    if handler is not None:
                        await nursery.start(connection.run_reverse)
                    try:
                        yield connection
                    finally:
                        nursery.cancel_scope.cancel()
                        await connection.aclose()
            except BaseExceptionGroup as group:  # the reverse stream's task raises nothing:
                if len(group.exceptions) != 1:  # the block's error comes out as itself
                    raise
                error = group.exceptions[0]
                raise error from error.__cause__

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
        """``on_connect`` is called when a client opens its reverse stream, on which the
        server's own requests reach it."""
        host, port = tcp_address(url)
        server_tls = _tls(url, tls)
        local_id = server_tls.identity() if server_tls is not None else identity
        server = _Server(
            handler, local_id=local_id, limits=limits, accepts=accepts, on_connect=on_connect
        )
        unary = {path: partial(server.unary, cls) for cls, path in _RPCS.items()}
        async with trio.open_nursery() as nursery:
            bound: int = await nursery.start(
                partial(
                    serve_grpc,
                    host,
                    port,
                    unary=unary,
                    streams={REVERSE: server.reverse},
                    tls=server_tls,
                    limits=limits,
                )
            )
            task_status.started(ServerInfo(bound_url(url.scheme, host, bound)))


@hookimpl
def qkdn_register_transports(registry: TransportRegistry) -> None:
    """The hook qkdn-sdk calls when it loads the entry point: register the transport."""
    registry.add(GrpcTransport)
