"""``https://``: ETSI GS QKD 014 (REST over mutual TLS), as Q.4161 and Q.4162 Appendix II map
key supply upon request onto it.

A server serves the five 014 endpoints (status; ``enc_keys`` and ``dec_keys``, GET and POST) to
the same :data:`~qkdn_sdk.transport.Handler` as every transport: a KM's Ak handler (the
application is the SAE) or a QKD module's Kq-1 handler (the KM is the SAE) when ``accepts``
holds the Kq-1 key request. The SAE ID is the ID in the verified client certificate.

A client connection (:func:`qkdn_sdk.transport.connect`) carries the Ak and Kq-1 status and key
requests, as :mod:`qkdn_sdk.codecs.etsi014` maps them; everything else (sessions, proactive
supply, Ck, the KM link, anything sent by the server) is refused with
:class:`~qkdn_sdk.errors.NotCarried`. :class:`Etsi014Client` is the same client, typed for the
014 methods, for use on its own against any 014 KME.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

import trio

from qkdn_https._bare import BareHttps
from qkdn_https._client import MAX_RESPONSE_SIZE, Etsi014Client, KeyContainer
from qkdn_https._server import serve_connections
from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import (
    ConnectionBroken,
    FailureResponse,
    NotCarried,
    RemoteProtocolError,
    RequestTimeout,
    TransportError,
)
from qkdn_sdk.messages import Message, ak, failure_response, kq1
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
    check_claims,
    hookimpl,
    open_listeners,
    tcp_address,
    transport_registry,
)

__all__ = [
    "CARRIED",
    "MAX_RESPONSE_SIZE",
    "Etsi014Client",
    "Etsi014Error",
    "HttpsConnection",
    "HttpsTransport",
    "KeyContainer",
    "qkdn_register_transports",
]

Etsi014Error = etsi014.Etsi014Error

logger = logging.getLogger("qkdn_https")

CARRIED: frozenset[type[Message]] = frozenset(
    {
        ak.StatusRequest,
        ak.KeyRequest,
        ak.KeyRequestWithId,
        kq1.StatusRequest,
        kq1.KeyRequest,
        kq1.KeyRequestWithKeyIds,
    }
)
"""The requests a client sends over 014; their responses come back. Nothing else."""


class HttpsConnection(Connection):
    """A client's connection to a 014 KME (a pool of HTTP/1.1 connections under it).

    Any failure below HTTP (the KME unreachable, a connection cut mid-answer) ends it, as a
    broken TCP connection does: later requests raise
    :class:`~qkdn_sdk.errors.ConnectionBroken`. A 014 error answer is a
    :class:`~qkdn_sdk.errors.FailureResponse` whose ``response`` is the failure response of the
    request's table and whose ``__cause__`` is the :class:`Etsi014Error` (status and message).
    """

    def __init__(self, client: Etsi014Client, local_id: str | None) -> None:
        self._client = client
        self._local_id = local_id
        self._end: TransportError | None = None

    @property
    def peer_id(self) -> str | None:
        return self._client.peer_id

    @property
    def local_id(self) -> str | None:
        return self._local_id

    @property
    def closed(self) -> bool:
        return self._end is not None

    async def request(
        self, message: Message, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Message:
        if type(message) not in CARRIED:
            raise _not_carried(type(message))
        if self._end is not None:
            raise type(self._end)(str(self._end))
        # 014 takes the sender's ID from its certificate and has no place for a claimed one:
        # a message claiming another ID is refused here rather than sent without it
        check_claims(message, self._local_id)
        try:
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                return await self._client.exchange(message)
        except trio.TooSlowError:
            raise RequestTimeout(f"no answer to {type(message).__name__} in {timeout} s") from None
        except etsi014.Etsi014Error as exc:
            response_type = type(message).response_type()
            assert response_type is not None
            reason = str(exc)
            raise FailureResponse(reason, failure_response(response_type, reason)) from exc
        except (TransportError, RemoteProtocolError) as exc:
            self._end = ConnectionBroken(f"connection broken: {exc}")
            raise self._end from None

    async def send(self, message: Message) -> None:
        raise _not_carried(type(message))

    async def aclose(self) -> None:
        if self._end is None:
            self._end = ConnectionBroken("the connection was closed")
        await self._client.aclose()


def _not_carried(message_type: type[Message]) -> NotCarried:
    able = transport_registry().carrying(message_type, from_client=True)
    return NotCarried(
        f"https:// (ETSI 014) cannot carry {message_type.spec_name} ({message_type.__name__}); "
        f"transports that can: {', '.join(f'{scheme}://' for scheme in able) or 'none'}"
    )


class HttpsTransport(Transport):
    """ETSI GS QKD 014: ``https://HOST:PORT``, mutual TLS."""

    name = "https"
    schemes = ("https",)
    secure_schemes = ("https",)

    def carries(self, message_type: type[Message], *, from_client: bool) -> bool:
        return from_client and message_type in CARRIED

    def capabilities(self) -> str:
        return "ETSI GS QKD 014: Ak and Kq-1 status and key requests, client to server only"

    def as_carried(self, message: Message) -> Message:
        return etsi014.as_carried(message)

    def bare_exchange(self, scheme: str) -> BareExchange:
        """hypercorn answering a canned 014 body, and httpx (:mod:`qkdn_https._bare`)."""
        return BareHttps()

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
        tcp_address(url)
        if tls is None:
            raise TransportError("https:// needs TLS settings (CA, certificate and key)")
        client = Etsi014Client(
            url.geturl(),
            tls,
            timeout=None,  # Connection.request times out by trio
            max_connections=limits.max_connections_per_peer,
        )
        connection = HttpsConnection(client, tls.identity())
        try:
            yield connection
        finally:
            await connection.aclose()

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
        """``on_connect`` is never called: ETSI 014 has no request from the KME to the SAE."""
        if tls is None:
            raise TransportError("https:// needs TLS settings (CA, certificate and key)")
        context = tls.server_context()
        context.set_alpn_protocols(["http/1.1"])
        listeners, bound_url = await open_listeners(url)
        task_status.started(ServerInfo(bound_url))
        await serve_connections(
            listeners,
            handler,
            context=context,
            local_id=tls.identity(),
            limits=limits,
            accepts=accepts,
        )


@hookimpl
def qkdn_register_transports(registry: TransportRegistry) -> None:
    """The hook qkdn-sdk calls when it loads the entry point: register the transport."""
    registry.add(HttpsTransport)
