"""A typed async client of ETSI GS QKD 014, for any KME (httpx over mutual TLS)."""

from __future__ import annotations

import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import attrs
import httpx

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import RemoteProtocolError, TransportError
from qkdn_sdk.messages import JSONObject, Key, KeyId, Message, ak
from qkdn_sdk.tls import TLSConfig, explain_tls_failure, peer_identity

__all__ = ["MAX_RESPONSE_SIZE", "Etsi014Client", "KeyContainer"]

MAX_RESPONSE_SIZE = 4 * 1024 * 1024
"""The largest answer the client reads; a KME that sends more is broken or hostile."""


@attrs.frozen
class KeyContainer:
    """The 014 Key container: the keys (IDs, bytes, ``key_ID_extension`` as ``key_extension``)
    and the ``key_container_extension``."""

    keys: list[Key]
    key_container_extension: JSONObject | None = None


class Etsi014Client:
    """An application's (or a KM's) client of one ETSI GS QKD 014 KME.

    ::

        async with Etsi014Client("https://kme-a.example:443", tls) as kme:
            status = await kme.get_status("sae-b")
            container = await kme.get_key("sae-b", number=2, size=256)
            # ... sae-b, with its own client of its own KME:
            same = await kme_b.get_key_with_key_ids("sae-a", [k.key_id for k in container.keys])

    ``tls`` holds the CA that certifies the KME and the SAE's certificate and key: the KME knows
    the SAE by its certificate. A KME's error answer raises
    :class:`~qkdn_sdk.codecs.etsi014.Etsi014Error` with the HTTP ``http_status`` and the 014
    ``message``; an unreachable KME or a failed handshake raises
    :class:`~qkdn_sdk.errors.TransportError`; an answer that is not what 014 says raises
    :class:`~qkdn_sdk.errors.RemoteProtocolError`. Requests may run concurrently (at most
    ``max_connections`` connections to the KME).
    """

    def __init__(
        self,
        url: str,
        tls: TLSConfig,
        *,
        timeout: float | None = 30.0,
        max_connections: int = 32,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise TransportError(f"{url!r}: an ETSI 014 KME is reached by https://HOST:PORT")
        self.url = f"https://{parsed.netloc}"
        self._peer_id: str | None = None
        self._http = httpx.AsyncClient(
            base_url=self.url,
            verify=client_context(tls),
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    @property
    def peer_id(self) -> str | None:
        """The KME's ID from its certificate, once a request was answered."""
        return self._peer_id

    async def __aenter__(self) -> Etsi014Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_status(self, slave_sae_id: str) -> ak.Status:
        """Get status: what the KME can supply for keys shared with ``slave_sae_id``."""
        status = await self.exchange(ak.StatusRequest(application_destination_id=slave_sae_id))
        assert isinstance(status, ak.Status)
        return status

    async def get_key(
        self,
        slave_sae_id: str,
        *,
        number: int | None = None,
        size: int | None = None,
        additional_slave_sae_ids: Sequence[str] = (),
        extension_mandatory: Sequence[JSONObject] = (),
        extension_optional: Sequence[JSONObject] = (),
    ) -> KeyContainer:
        """Get key: ``number`` new keys of ``size`` bits (the KME's defaults when ``None``)
        shared with ``slave_sae_id`` (and the ``additional_slave_sae_ids``, by multicast)."""
        extension: list[JSONObject] = []
        if extension_mandatory:
            extension.append({etsi014.MANDATORY: list(extension_mandatory)})
        if additional_slave_sae_ids:
            extension.append({etsi014.ADDITIONAL_SLAVES: list(additional_slave_sae_ids)})
        if extension_optional:
            extension.append({etsi014.OPTIONAL: list(extension_optional)})
        request = ak.KeyRequest(
            application_destination_id=slave_sae_id,
            number_of_keys=number,
            size_of_key=size,
            extension=extension or None,
        )
        return _container(await self.exchange(request))

    async def get_key_with_key_ids(
        self,
        master_sae_id: str,
        key_ids: Sequence[str | KeyId],
        *,
        key_ids_extension: JSONObject | None = None,
    ) -> KeyContainer:
        """Get key with key IDs: the keys ``master_sae_id`` got for us, by their IDs."""
        request = ak.KeyRequestWithId(
            application_source_id=master_sae_id,
            key_ids=[key if isinstance(key, KeyId) else KeyId(key_id=key) for key in key_ids],
            extension=[key_ids_extension] if key_ids_extension else None,
        )
        return _container(await self.exchange(request))

    async def exchange(self, message: Message) -> Message:
        """Send a request message the way 014 carries it and return the response message
        (the mapping of :mod:`qkdn_sdk.codecs.etsi014`)."""
        request = etsi014.encode_request(message)
        status, body = await self._send(request)
        return etsi014.decode_response(message, status, body)

    async def _send(self, request: etsi014.HttpRequest) -> tuple[int, bytes]:
        content = request.content()
        headers = {"content-type": "application/json"} if content is not None else None
        try:
            sent = self._http.build_request(
                request.method, request.path, content=content, headers=headers
            )
            sent.stream = _Body(content or b"")
            async with contextlib.aclosing(await self._http.send(sent, stream=True)) as response:
                self._check_peer(response)
                announced = response.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > MAX_RESPONSE_SIZE:
                    # refused before reading: stopping httpx's byte iterator half-way leaves
                    # its async generators to the garbage collector (a ResourceWarning on trio)
                    raise RemoteProtocolError(
                        f"the KME's answer is over {MAX_RESPONSE_SIZE} bytes ({announced} bytes)"
                    )
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > MAX_RESPONSE_SIZE:
                        raise RemoteProtocolError(
                            f"the KME's answer is over {MAX_RESPONSE_SIZE} bytes"
                        )
                return response.status_code, bytes(body)
        except httpx.ConnectError as exc:
            raise TransportError(f"cannot connect to {self.url}: {_why(exc)}") from None
        except httpx.TimeoutException:
            raise TransportError(f"{self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise TransportError(f"{self.url}: {_why(exc)}") from None

    def _check_peer(self, response: httpx.Response) -> None:
        stream: Any = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        peer = peer_identity(ssl_object.getpeercert() if ssl_object is not None else None)
        if peer is None:
            raise TransportError(
                f"{self.url} presented a certificate that names no one (no CN, no URI or DNS "
                "subjectAltName): refused"
            )
        self._peer_id = peer


class _Body(httpx.AsyncByteStream):
    """A request body, sent in one piece by an iterator that is not an async generator.

    httpx's own (``ByteStream``) is one, for every body, an empty one too: a request cancelled
    while httpcore sends its body leaves that generator to the garbage collector, which trio
    reports with a ResourceWarning. An iterator object holds nothing to finalise."""

    def __init__(self, content: bytes) -> None:
        self._parts = [content] if content else []

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self._parts:
            raise StopAsyncIteration
        return self._parts.pop()


def client_context(tls: TLSConfig) -> ssl.SSLContext:
    """The client TLS context of a 014 connection (HTTP/1.1 by ALPN)."""
    context = tls.client_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _container(response: Message) -> KeyContainer:
    assert isinstance(response, ak.ResponseToKeyRequest)
    return KeyContainer(
        keys=list(response.keys),
        key_container_extension=etsi014.extension_object(response.extension),
    )


def _why(exc: BaseException) -> str:
    """What went wrong under httpx: the TLS failure explained, or the OS's reason."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return explain_tls_failure(cause)
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
