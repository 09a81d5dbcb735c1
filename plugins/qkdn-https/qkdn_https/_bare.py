"""The bare baseline of ``https://``: hypercorn answering a canned 014 body, and httpx.

The server is hypercorn's own trio server (its TLS, no SDK admission or identity) with an ASGI
app that answers every request with the same status and JSON body, the ETSI 014 answer to the
request encoded once; the client is an httpx client with the same TLS and the same connection
pool as :class:`~qkdn_https.Etsi014Client`, sending the 014 request encoded once and reading
the body without parsing it. HTTP/1.1 has no pipelining: requests in flight at once use as many
connections of the pool, for the bare stack and the SDK alike.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from qkdn_https._client import client_context
from qkdn_sdk.codecs import etsi014
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import BareExchange

__all__ = ["BareHttps"]

_POOL = 32
"""Connections of the client's pool, as :class:`~qkdn_https.Etsi014Client`'s default."""


class BareHttps(BareExchange):
    """:class:`~qkdn_sdk.transport.BareExchange` of ``https``."""

    description = "hypercorn with a canned 014 body, httpx"

    async def serve(
        self,
        request: Message,
        answer: Message,
        tls: TLSConfig | None,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        assert tls is not None, "https:// needs TLS settings"
        status, document = etsi014.encode_response(answer)
        body = orjson.dumps(document)
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while (event := await receive())["type"] != "lifespan.shutdown":
                    await send({"type": event["type"] + ".complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            await send(start)
            await send({"type": "http.response.body", "body": body})

        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.certfile, config.keyfile, config.ca_certs = str(tls.cert), str(tls.key), str(tls.ca)
        config.verify_mode = ssl.CERT_REQUIRED
        config.keep_alive_max_requests = 2**62
        config.accesslog = config.errorlog = None
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, app, config, mode="asgi"))  # type: ignore[arg-type]
            task_status.started(binds[0])

    @asynccontextmanager
    async def connect(
        self, url: str, request: Message, tls: TLSConfig | None
    ) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        assert tls is not None, "https:// needs TLS settings"
        http_request = etsi014.encode_request(request)
        content = http_request.content()
        limits = httpx.Limits(max_connections=_POOL, max_keepalive_connections=_POOL)
        async with httpx.AsyncClient(
            base_url=url, verify=client_context(tls), limits=limits
        ) as http:

            async def call() -> None:
                response = await http.request(
                    http_request.method, http_request.path, content=content
                )
                response.raise_for_status()

            yield call
