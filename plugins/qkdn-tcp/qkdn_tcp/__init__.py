"""``tcp://`` and ``tcp+tls://``: Q.416x Appendix I frames over TCP, optionally with mutual TLS.

``tcp+tls://`` needs a :class:`~qkdn_sdk.tls.TLSConfig`: TLS 1.2 or later, the peer verified
against the CA, and (by default) a client certificate required by the server. Each side's
identity is the ID in its certificate (CN, or the first URI/DNS subjectAltName); messages that
claim another ID are refused by the connection.

A server runs every connection in its own task: a TLS handshake must finish within
``Limits.handshake_timeout``, a silent peer is dropped after ``Limits.idle_timeout``, a peer that
stops reading after ``Limits.send_timeout``; none of it touches the other connections. It holds
at most ``Limits.max_connections`` connections (one more is closed as soon as it is accepted,
before any handshake) and ``Limits.max_connections_per_peer`` per peer (the certificate's ID, or
on ``tcp://`` the peer's address). A certificate from the right CA that names no one (no CN, no
URI or DNS subjectAltName) is refused: an identity that cannot be checked is not trusted.
TLS failures are logged and raised as what probably happened (no client certificate, a CA the
peer does not trust, a plain ``tcp://`` peer on a TLS port), not as OpenSSL's codes.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

import trio

from qkdn_sdk.errors import TransportError
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import TLSConfig, explain_tls_failure, peer_identity
from qkdn_sdk.transport import (
    Admission,
    BareExchange,
    ConnectHook,
    Connection,
    FramedConnection,
    Handler,
    Limits,
    ServerInfo,
    Transport,
    TransportRegistry,
    hookimpl,
    open_listeners,
    refuse_connection,
    running,
    tcp_address,
)
from qkdn_tcp._bare import BareFrames

__all__ = ["TcpTransport", "qkdn_register_transports"]

logger = logging.getLogger("qkdn_tcp")


def _tls_context(
    url: urllib.parse.SplitResult, tls: TLSConfig | None, *, server: bool
) -> ssl.SSLContext | None:
    if url.scheme == "tcp":
        if tls is not None:
            raise TransportError("tcp:// does not use TLS: use tcp+tls:// with TLS settings")
        return None
    if tls is None:
        raise TransportError("tcp+tls:// needs TLS settings (CA, certificate and key)")
    return tls.server_context() if server else tls.client_context()


def _own_identity(tls: TLSConfig | None) -> str | None:
    return tls.identity() if tls is not None else None


class TcpTransport(Transport):
    """TCP transport: ``tcp://HOST:PORT`` and ``tcp+tls://HOST:PORT``."""

    name = "tcp"
    schemes = ("tcp", "tcp+tls")
    secure_schemes = ("tcp+tls",)

    def bare_exchange(self, scheme: str) -> BareExchange:
        """trio exchanging frames of the same bytes, over the same TLS (:mod:`qkdn_tcp._bare`)."""
        return BareFrames(scheme)

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
        context = _tls_context(url, tls, server=False)
        stream: trio.abc.Stream
        peer_id = None
        try:
            with trio.fail_after(limits.handshake_timeout):
                stream = await trio.open_tcp_stream(host, port)
                if context is not None:
                    try:
                        stream = trio.SSLStream(stream, context, server_hostname=host)
                        await stream.do_handshake()
                        peer_id = peer_identity(stream.getpeercert() or {})
                        if peer_id is None:
                            raise TransportError(
                                f"{url.geturl()} presented a certificate that names no one (no "
                                "CN, no URI or DNS subjectAltName): refused"
                            )
                    except BaseException:
                        await trio.aclose_forcefully(stream)
                        raise
        except OSError as exc:
            why = _connect_failure(exc)
            raise TransportError(f"cannot connect to {url.geturl()}: {why}") from None
        except trio.BrokenResourceError as exc:
            raise TransportError(
                f"TLS handshake with {url.geturl()} failed: {explain_tls_failure(exc)}"
            ) from None
        except trio.TooSlowError:
            raise TransportError(
                f"connecting to {url.geturl()} took more than {limits.handshake_timeout} s"
            ) from None
        local_id = _own_identity(tls) if context is not None else identity
        connection = FramedConnection(
            stream,
            transport=self,
            is_client=True,
            handler=handler,
            limits=limits,
            peer_id=peer_id,
            local_id=local_id,
            accepts=accepts,
        )
        async with running(connection):
            yield connection

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
        context = _tls_context(url, tls, server=True)
        local_id = _own_identity(tls) if context is not None else identity
        listeners, bound_url = await open_listeners(url)

        admission = Admission(limits)

        async def serve_one(tcp_stream: trio.SocketStream) -> None:
            with admission.connection() as admitted:
                if admitted:
                    await admitted_one(tcp_stream)
                else:
                    await trio.aclose_forcefully(tcp_stream)

        async def admitted_one(tcp_stream: trio.SocketStream) -> None:
            stream: trio.abc.Stream = tcp_stream
            try:
                peer_id = None
                if context is not None:
                    ssl_stream = trio.SSLStream(tcp_stream, context, server_side=True)
                    stream = ssl_stream
                    with trio.move_on_after(limits.handshake_timeout) as scope:
                        await ssl_stream.do_handshake()
                    if scope.cancelled_caught:
                        logger.info(
                            "dropped a client: no TLS handshake in %s s", limits.handshake_timeout
                        )
                        return
                    peer_id = peer_identity(ssl_stream.getpeercert() or {})
                    if peer_id is None:
                        logger.info("refused a client: its certificate names no one")
                        nobody = "the certificate names no one (no CN, no subjectAltName)"
                        await refuse_connection(stream, nobody, limits)
                        return
                with admission.peer(peer_id or _address_of(tcp_stream)) as refusal:
                    if refusal is not None:
                        await refuse_connection(stream, refusal, limits)
                        return
                    await FramedConnection(
                        stream,
                        transport=self,
                        is_client=False,
                        handler=handler,
                        limits=limits,
                        peer_id=peer_id,
                        local_id=local_id,
                        accepts=accepts,
                        on_connect=on_connect,
                    ).run()
            except trio.BrokenResourceError as exc:
                logger.info("refused a client: %s", explain_tls_failure(exc))
            except Exception:  # one connection's failure must never stop the server
                logger.exception("a connection failed")
            finally:
                await trio.aclose_forcefully(stream)

        async with trio.open_nursery() as nursery:
            task_status.started(ServerInfo(bound_url))
            await trio.serve_listeners(serve_one, listeners, handler_nursery=nursery)


def _connect_failure(exc: OSError) -> str:
    """Why a connection failed: trio's "all attempts to connect ... failed" keeps the reasons
    (one per address tried) in an exception group as its ``__cause__``."""
    cause = exc.__cause__
    reasons = cause.exceptions if isinstance(cause, BaseExceptionGroup) else [exc]
    texts = dict.fromkeys(
        reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        for reason in reasons
    )
    return "; ".join(texts) or str(exc)


def _address_of(stream: trio.SocketStream) -> str:
    """The peer's IP address: who a plain ``tcp://`` peer is, for the per-peer cap."""
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "(unknown address)"


@hookimpl
def qkdn_register_transports(registry: TransportRegistry) -> None:
    """The hook qkdn-sdk calls when it loads the entry point: register the transport."""
    registry.add(TcpTransport)
