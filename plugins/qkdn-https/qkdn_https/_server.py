"""The ETSI GS QKD 014 server: hypercorn (trio worker) serving the five 014 endpoints to a
qkdn-sdk :data:`~qkdn_sdk.transport.Handler`.

Theory of operation
-------------------
The server accepts TCP connections itself (``trio.serve_listeners``), so that every limit of
:class:`~qkdn_sdk.transport.Limits` holds as on the other transports: the connection caps
(:class:`~qkdn_sdk.transport.Admission`), the handshake timeout, and a certificate that names no
one is refused. After the TLS handshake the verified client certificate gives the SAE ID, and
the connection is handed to hypercorn's trio ``TCPServer`` with an ASGI app made for that one
connection, which knows the SAE ID. (hypercorn 0.18 puts no client certificate in the ASGI
scope; ``TCPServer`` is hypercorn's own per-connection server, which is why hypercorn is pinned.)

Each HTTP request is decoded by :mod:`qkdn_sdk.codecs.etsi014` into a message, the handler
answers it, and the answer (or the handler's error, by its ``http_status``) is encoded back.
Nothing a peer sends ends the server or another connection: a bad request is a 400/404/405
with ``{message, details}``; a handler's bug is a 503 and a log line.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import h11
import orjson
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Event, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import NotCarried, QkdnError
from qkdn_sdk.messages import Interface, Message, kq1
from qkdn_sdk.tls import explain_tls_failure, peer_identity
from qkdn_sdk.transport import Admission, Connection, Handler, Limits

__all__ = ["MAX_HEAD_SIZE", "serve_connections"]

logger = logging.getLogger("qkdn_https")

_JSON = [(b"content-type", b"application/json")]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

MAX_HEAD_SIZE = 16 * 1024
"""The most bytes of a request's head (request line, header fields and the empty line that ends
them); one byte more is answered 431 and the connection closes."""


class ServerSide(Connection):
    """What a handler sees of one HTTPS connection: the client's verified SAE ID. HTTPS cannot
    push to its client, so :meth:`request` and :meth:`send` raise
    :class:`~qkdn_sdk.errors.NotCarried`; :meth:`aclose` ends the TCP connection."""

    def __init__(self, peer_id: str, local_id: str | None, scope: trio.CancelScope) -> None:
        self._peer_id = peer_id
        self._local_id = local_id
        self._scope = scope

    @property
    def peer_id(self) -> str | None:
        return self._peer_id

    @property
    def local_id(self) -> str | None:
        return self._local_id

    @property
    def closed(self) -> bool:
        return self._scope.cancel_called

    async def request(self, message: Message, *, timeout: float | None = None) -> Message:
        raise _cannot_push(message)

    async def send(self, message: Message) -> None:
        raise _cannot_push(message)

    async def aclose(self) -> None:
        self._scope.cancel()


def _cannot_push(message: Message) -> NotCarried:
    return NotCarried(
        f"https:// cannot carry {type(message).__name__} from the server to its client (HTTP "
        "has no requests from the server): use tcp+tls://"
    )


class _HTTP11Only(H11Protocol):
    """hypercorn's HTTP/1.1, without its ways into HTTP/2 on a connection that chose HTTP/1.1 by
    ALPN: a request with ``Upgrade: h2c`` is answered in HTTP/1.1 (a server may ignore an
    upgrade, RFC 9110 clause 7.8), and the HTTP/2 connection preface is the bad HTTP/1.1 request
    it is. ETSI 014 is HTTP/1.1; HTTP/2's streams would outrun the connection limits (168,200
    streams opened and reset at once took a KM from 232 to 749 MB: rapid reset,
    CVE-2023-44487)."""

    async def _check_protocol(self, event: Any) -> None:
        return None

    async def handle(self, event: Event) -> None:
        """Hand h11 what was read in pieces that keep the head within :data:`MAX_HEAD_SIZE`.

        h11 refuses a head only while it is incomplete and over ``h11_max_incomplete_size``
        bytes; a whole head in one read (hypercorn reads 64 KiB) was read however long. Fed no
        more than fills its buffer to :data:`MAX_HEAD_SIZE`, h11 holds a head of one byte more
        incomplete at that size, over its limit of one byte less, and answers 431 (its status
        hint for a receive buffer too long)."""
        if not isinstance(event, RawData) or not event.data:  # b"": the client's end, for h11
            await super().handle(event)
            return
        data = event.data
        while data:
            connection = self.connection
            if not isinstance(connection, h11.Connection):  # a WebSocket's bytes, refused anyway
                await super().handle(RawData(data=data))
                return
            if connection.their_state is h11.ERROR:  # answered and closing: the rest is moot
                return
            room = max(1, MAX_HEAD_SIZE - len(connection.trailing_data[0]))
            await super().handle(RawData(data=data[:room]))
            data = data[room:]


class _TCPServer(TCPServer):
    """hypercorn's ``TCPServer``, speaking HTTP/1.1 only (:class:`_HTTP11Only`), which ends when
    the client closes its connection. (hypercorn leaves its keep-alive timer running once the
    client is gone, so the connection, and its place under the connection limits, lasted until
    the idle timeout.)"""

    @property
    def protocol(self) -> ProtocolWrapper:
        return self._protocol

    @protocol.setter
    def protocol(self, wrapper: ProtocolWrapper) -> None:
        # The ALPN context offers http/1.1 alone, so the wrapper always starts with HTTP/1.1.
        if type(wrapper.protocol) is H11Protocol:
            wrapper.protocol.__class__ = _HTTP11Only
        self._protocol = wrapper

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()


def _config(limits: Limits) -> Config:
    config = Config()
    config.keep_alive_timeout = limits.idle_timeout or math.inf
    config.keep_alive_max_requests = 2**62  # a KM's clients keep one connection for ever
    config.read_timeout = math.ceil(limits.idle_timeout) if limits.idle_timeout else None
    config.include_server_header = False
    config.graceful_timeout = 0
    config.h11_max_incomplete_size = MAX_HEAD_SIZE - 1  # with _HTTP11Only.handle, exact
    config.accesslog = None
    config.errorlog = None
    return config


def _interface(accepts: Collection[type[Message]] | None) -> Interface:
    """Kq-1 for a QKD module (it receives the Kq-1 key request), else Ak."""
    return Interface.KQ1 if accepts is not None and kq1.KeyRequest in accepts else Interface.AK


async def _respond(
    send: Send,
    status: int,
    body: dict[str, Any] | None,
    *,
    kind: str = "http.response",
    close: bool = False,
) -> None:
    """Send the answer: ``kind`` is ``"websocket.http.response"`` to answer a WebSocket
    handshake with a plain HTTP response (the ASGI extension hypercorn offers); ``close`` tells
    the client that the connection ends with it."""
    content = b"" if body is None else orjson.dumps(body)
    headers = [(b"content-length", str(len(content)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send(
        {
            "type": f"{kind}.start",
            "status": status,
            "headers": headers + (_JSON if body is not None else []),
        }
    )
    await send({"type": f"{kind}.body", "body": content})


async def _refuse_websocket(send: Send, status: int, body: dict[str, Any] | None) -> None:
    """014 has no WebSocket: a handshake gets ``status`` and ``body`` as a plain HTTP answer
    (an app that answers nothing makes hypercorn send a 500)."""
    await _respond(send, status, body, kind="websocket.http.response")


class _ClientLeft(Exception):
    """The client left before its request was complete: the request never reaches the
    handler (a truncated body can still be valid JSON, and a Get key would spend keys that
    nobody receives)."""


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or ``None`` once it grows over :data:`etsi014.MAX_BODY_SIZE`.
    Raises :class:`_ClientLeft` when the client left before the body was complete."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] != "http.request":
            raise _ClientLeft
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > etsi014.MAX_BODY_SIZE:
            return None
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)


def _app(
    handler: Handler,
    connection: ServerSide,
    interface: Interface,
    accepts: Collection[type[Message]] | None,
) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """The ASGI app of one connection: every request goes to ``handler`` as ``connection``'s."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            reason = "ETSI 014 has no WebSocket: send the request without Upgrade"
            await _refuse_websocket(
                send, 400, {"message": etsi014.BAD_REQUEST, "details": [{"reason": reason}]}
            )
            return
        if scope["type"] != "http":
            return
        try:
            body = await _read_body(receive)
        except _ClientLeft:
            return
        if body is None:
            too_big = f"the body is over {etsi014.MAX_BODY_SIZE} bytes"
            # the rest of the body is never read: the connection ends, and the client is told
            await _respond(
                send,
                400,
                {"message": etsi014.BAD_REQUEST, "details": [{"reason": too_big}]},
                close=True,
            )
            return
        status, answer = await _answer(handler, connection, interface, accepts, scope, body)
        await _respond(send, status, answer)

    return app


async def _answer(
    handler: Handler,
    connection: ServerSide,
    interface: Interface,
    accepts: Collection[type[Message]] | None,
    scope: dict[str, Any],
    body: bytes,
) -> tuple[int, dict[str, Any] | None]:
    try:
        message = etsi014.decode_request(
            scope["method"],
            scope["raw_path"].decode("latin-1"),
            scope["query_string"],
            body,
            interface=interface,
        )
        if accepts is not None and type(message) not in accepts:
            raise etsi014.Etsi014Error(
                404, "Not found.", [{"reason": f"this server does not serve {scope['path']}"}]
            )
        response = await handler(message, connection)
    except QkdnError as exc:
        return etsi014.encode_error(exc)
    except Exception as exc:  # a handler's bug is the server's error, never a dead server
        logger.exception("the handler failed")
        return etsi014.encode_error(exc)
    if response is None:
        return 503, {"message": etsi014.SERVER_ERROR, "details": [{"reason": "no answer"}]}
    return etsi014.encode_response(response)


def _refusal_app(
    status: int, reason: str
) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """An app that answers every request of a connection with ``status`` and ``reason``."""
    body = (
        None
        if status == 401
        else {"message": etsi014.SERVER_ERROR, "details": [{"reason": reason}]}
    )

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _refuse_websocket(send, status, body)
        elif scope["type"] == "http":
            try:
                await _read_body(receive)
            except _ClientLeft:
                return
            await _respond(send, status, body)

    return app


async def serve_connections(
    listeners: list[trio.SocketListener],
    handler: Handler,
    *,
    context: ssl.SSLContext,
    local_id: str | None,
    limits: Limits,
    accepts: Collection[type[Message]] | None,
) -> None:
    """Serve 014 on ``listeners`` until cancelled."""
    config = _config(limits)
    worker = WorkerContext(None)
    admission = Admission(limits)
    interface = _interface(accepts)

    async def serve_one(tcp_stream: trio.SocketStream) -> None:
        with admission.connection() as admitted:
            if not admitted:
                await trio.aclose_forcefully(tcp_stream)
                return
            stream = trio.SSLStream(tcp_stream, context, server_side=True, https_compatible=True)
            try:
                await _admitted(stream)
            except trio.BrokenResourceError as exc:
                logger.info("refused a client: %s", explain_tls_failure(exc))
            except Exception:  # one connection's failure must never stop the server
                logger.exception("a connection failed")
            finally:
                await trio.aclose_forcefully(stream)

    async def _admitted(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with trio.move_on_after(limits.handshake_timeout) as scope:
            await stream.do_handshake()
        if scope.cancelled_caught:
            logger.info("dropped a client: no TLS handshake in %s s", limits.handshake_timeout)
            return
        peer_id = peer_identity(stream.getpeercert() or {})
        if peer_id is None:
            logger.info("refused a client: its certificate names no one")
            await _serve_http(stream, _refusal_app(401, "the certificate names no one"))
            return
        with admission.peer(peer_id) as refusal:
            if refusal is not None:
                await _serve_http(stream, _refusal_app(503, refusal))
                return
            with trio.CancelScope() as connection_scope:
                connection = ServerSide(peer_id, local_id, connection_scope)
                try:
                    await _serve_http(stream, _app(handler, connection, interface, accepts))
                finally:
                    connection_scope.cancel()  # ServerSide.closed from now on

    async def _serve_http(
        stream: trio.SSLStream[trio.SocketStream],
        app: Callable[[dict[str, Any], Receive, Send], Awaitable[None]],
    ) -> None:
        server = _TCPServer(ASGIWrapper(app), config, worker, ConnectionState({}), stream)  # type: ignore[arg-type]
        await server.run()

    await trio.serve_listeners(serve_one, listeners)
