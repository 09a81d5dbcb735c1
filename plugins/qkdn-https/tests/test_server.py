"""The ETSI GS QKD 014 server against real HTTP clients over real mutual TLS on loopback.

The clients here are httpx (so the tests see exactly what went over HTTP: statuses, headers,
bodies) or hand-written bytes in a TLS stream (for what no HTTP client would send), and the
plugin's own :class:`~qkdn_https.Etsi014Client` where only the outcome matters.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from qkdn_https import Etsi014Client
from qkdn_https._server import MAX_HEAD_SIZE, ServerSide

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import NotAuthorized, NotCarried, QkdnError, RequestRefused, TransportError
from qkdn_sdk.messages import KeyId, Message, Role, ak, example, kq1, received_by
from qkdn_sdk.testing import CLIENT_ID, SERVER_ID, ConformancePKI, conformance_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, serve

_GUARD = 10  # seconds: no test here may hang longer
_AK = frozenset(cls for cls in received_by(Role.KM) if cls.interface is ak.KeyRequest.interface)
_KQ1 = frozenset({kq1.StatusRequest, kq1.KeyRequest, kq1.KeyRequestWithKeyIds})
_ENC_KEYS = "/api/v1/keys/app-b/enc_keys"


@pytest.fixture
def pki(tmp_path: Path) -> ConformancePKI:
    return conformance_pki(tmp_path)


class Recorder:
    """A handler that records what arrives (with the connection it came on) and answers with
    the example response; ``application_destination_id`` picks a misbehaviour."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.connections: list[Connection] = []

    async def __call__(self, message: Message, connection: Connection) -> Message | None:
        self.received.append(message)
        self.connections.append(connection)
        behaviour = getattr(message, "application_destination_id", None)
        if behaviour == "refuse":
            raise RequestRefused(
                "size 7 is not a multiple of 8", etsi014_message=etsi014.SIZE_NOT_MULTIPLE_OF_8
            )
        if behaviour == "deny":
            raise NotAuthorized("application 'app-c' is not served by this KM")
        if behaviour == "fail":
            raise QkdnError("no keys left for deny-me")
        if behaviour == "bug":
            raise RuntimeError("a secret the client must never see")
        if behaviour == "failure":
            return ak.ResponseToKeyRequest(keys=[], response="failure: the QKD link is down")
        if behaviour == "silent":
            return None
        response_type = type(message).response_type()
        assert response_type is not None
        return example(response_type, sender=SERVER_ID)


@asynccontextmanager
async def _server(
    pki: ConformancePKI,
    handler: Recorder,
    *,
    accepts: Collection[type[Message]] = _AK,
    limits: Limits | None = None,
    tls: TLSConfig | None = None,
) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: serve(
                "https://127.0.0.1:0",
                handler,
                tls=tls or pki.server,
                accepts=accepts,
                limits=limits,
                task_status=task_status,
            )
        )
        yield info.url
        nursery.cancel_scope.cancel()


def _context(tls: TLSConfig) -> ssl.SSLContext:
    context = tls.client_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _http(pki: ConformancePKI, url: str, tls: TLSConfig | None = None) -> httpx.AsyncClient:
    """A plain httpx client with the certificate of ``app-a`` (one connection at a time)."""
    return httpx.AsyncClient(
        base_url=url,
        verify=_context(tls or pki.client),
        limits=httpx.Limits(max_connections=1),
    )


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """The 014 error body of ``response``, checked to be ``{message, details: [{...}]}``."""
    assert response.headers["content-type"] == "application/json"
    body = orjson.loads(response.content)
    assert isinstance(body, dict)
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], list)
    assert body["details"]
    assert all(isinstance(item, dict) for item in body["details"])
    return body


async def _raw_exchange(url: str, tls: TLSConfig, data: bytes, *more: bytes) -> bytes:
    """Send ``data`` on a fresh TLS connection (then each of ``more``, a TLS record of its own,
    which the server reads apart) and read until the server ends it."""
    host, port = url.split("://")[1].rsplit(":", 1)
    tcp = await trio.open_tcp_stream(host, int(port))
    stream = trio.SSLStream(tcp, _context(tls), server_hostname=host)
    answer = b""
    try:
        await stream.do_handshake()
        for piece in (data, *more):
            await stream.send_all(piece)
        while chunk := await stream.receive_some(65536):
            answer += chunk
    except trio.BrokenResourceError:
        pass  # the server cut the connection (no TLS close_notify): it ended all the same
    finally:
        await trio.aclose_forcefully(stream)
    return answer


# --- what reaches the handler -------------------------------------------------------------------


async def test_the_sae_id_of_the_client_certificate_reaches_the_handler(
    pki: ConformancePKI,
) -> None:
    handler = Recorder()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, _http(pki, url) as http:
            response = await http.get(_ENC_KEYS, params={"number": "2", "size": "256"})
            assert response.status_code == 200
            keys = orjson.loads(response.content)["keys"]
            assert [key["key_ID"] for key in keys] == [
                key.key_id for key in example(ak.ResponseToKeyRequest).keys
            ]
            # an SAE ID holding "/" travels percent-encoded, and arrives decoded
            response = await http.get("/api/v1/keys/sae%2Fb/status")
            assert response.status_code == 200
    assert handler.received == [
        ak.KeyRequest(application_destination_id="app-b", number_of_keys=2, size_of_key=256),
        ak.StatusRequest(application_destination_id="sae/b"),
    ]
    connection = handler.connections[0]
    assert connection.peer_id == CLIENT_ID
    assert connection.local_id == SERVER_ID


async def test_a_qkd_module_gets_kq1_requests(pki: ConformancePKI) -> None:
    """With the Kq-1 key request in ``accepts`` the caller is a KM: Get key becomes the Kq-1
    key request, whose slave SAE (the other KM) is an extension entry."""
    handler = Recorder()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler, accepts=_KQ1) as url, _http(pki, url) as http:
            get = await http.get("/api/v1/keys/km-b/enc_keys", params={"number": "3"})
            assert get.status_code == 200
            post = await http.post(
                "/api/v1/keys/km-b/dec_keys", json={"key_IDs": [{"key_ID": "k-1"}]}
            )
            assert post.status_code == 200
            status = await http.get("/api/v1/keys/km-b/status")
            assert status.status_code == 200
    assert handler.received == [
        kq1.KeyRequest(number_of_keys=3, extension=[{etsi014.SLAVE: "km-b"}]),
        kq1.KeyRequestWithKeyIds(master_sae_id="km-b", key_ids=[KeyId(key_id="k-1")]),
        kq1.StatusRequest(slave_sae_id="km-b"),
    ]
    assert handler.connections[0].peer_id == CLIENT_ID


async def test_a_method_the_role_does_not_receive_is_not_found(pki: ConformancePKI) -> None:
    handler = Recorder()
    with trio.fail_after(_GUARD):
        async with (
            _server(pki, handler, accepts={kq1.KeyRequest}) as url,
            _http(pki, url) as http,
        ):
            response = await http.get("/api/v1/keys/km-b/status")
            assert response.status_code == 404
            assert "does not serve /api/v1/keys/km-b/status" in str(_error_body(response))
    assert handler.received == []


async def test_the_server_cannot_push_to_its_client(pki: ConformancePKI) -> None:
    refusals: list[str] = []

    async def handler(message: Message, connection: Connection) -> Message | None:
        for push in (connection.request, connection.send):
            try:
                await push(example(ak.SessionCreationNotification))
            except NotCarried as exc:
                refusals.append(str(exc))
        return example(ak.Status)

    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve(
                    "https://127.0.0.1:0", handler, tls=pki.server, task_status=task_status
                )
            )
            async with _http(pki, info.url) as http:
                response = await http.get("/api/v1/keys/app-b/status")
                assert response.status_code == 200
            nursery.cancel_scope.cancel()
    assert len(refusals) == 2
    assert all("use tcp+tls://" in refusal for refusal in refusals)


# --- bad input ----------------------------------------------------------------------------------

_BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # method, path, httpx arguments, status, what the reason says
    ("POST", _ENC_KEYS, {"content": b'{"number": 1'}, 400, "the body is not JSON"),
    ("POST", _ENC_KEYS, {"content": b"[1, 2]"}, 400, "the body is not a JSON object"),
    ("POST", _ENC_KEYS, {"content": b"\xff\xfe{}"}, 400, "the body is not JSON"),
    ("POST", _ENC_KEYS, {"json": {"number": "2"}}, 400, "number: expected a positive integer"),
    ("POST", _ENC_KEYS, {"json": {"number": True}}, 400, "number: expected a positive integer"),
    ("POST", _ENC_KEYS, {"json": {"size": 2.5}}, 400, "size: expected a positive integer"),
    ("POST", _ENC_KEYS, {"json": {"number": 0}}, 400, "number: expected a positive integer"),
    ("POST", _ENC_KEYS, {"json": {"number": 1, "colour": "red"}}, 400, "unknown parameters"),
    (
        "POST",
        _ENC_KEYS,
        {"json": {"additional_slave_SAE_IDs": "app-c"}},
        400,
        "additional_slave_SAE_IDs: expected an array of SAE IDs",
    ),
    (
        "POST",
        _ENC_KEYS,
        {"json": {"extension_mandatory": [1]}},
        400,
        "extension_mandatory: expected an array of objects",
    ),
    (
        "POST",
        "/api/v1/keys/app-m/dec_keys",
        {"json": {"key_IDs": []}},
        400,
        "key_IDs: expected a non-empty array",
    ),
    (
        "POST",
        "/api/v1/keys/app-m/dec_keys",
        {"json": {"key_IDs": [{"key_ID": 5}]}},
        400,
        "key_IDs[0].key_ID: expected a non-empty string",
    ),
    ("GET", "/api/v1/keys/app-m/dec_keys", {}, 400, "a GET of dec_keys names one key"),
    ("GET", _ENC_KEYS + "?number=two", {}, 400, "number: expected a positive integer"),
    ("GET", _ENC_KEYS + "?number=1&number=2", {}, 400, "'number' is given twice"),
    ("GET", _ENC_KEYS + "?colour=red", {}, 400, "unknown parameters"),
    ("GET", _ENC_KEYS, {"content": b'{"number": 1}'}, 400, "a GET has no body"),
    ("POST", _ENC_KEYS + "?number=1", {"json": {}}, 400, "not the query"),
    ("GET", "/api/v1/keys/app-b/status?x=1", {}, 400, "Get status takes no parameters"),
    ("GET", "/api/v1/keys/app-b/nothing", {}, 404, "no ETSI 014 method"),
    ("GET", "/api/v1/keys//status", {}, 404, "no ETSI 014 method"),
    ("GET", "/api/v1/keys/%FF/status", {}, 404, "no ETSI 014 method"),
    ("GET", "/index.html", {}, 404, "no ETSI 014 method"),
    ("DELETE", _ENC_KEYS, {}, 405, "enc_keys takes GET or POST"),
    ("PUT", "/api/v1/keys/app-m/dec_keys", {"json": {}}, 405, "dec_keys takes GET or POST"),
    ("POST", "/api/v1/keys/app-b/status", {"json": {}}, 405, "status takes GET"),
]


async def test_bad_requests_get_014_errors_and_the_server_goes_on(pki: ConformancePKI) -> None:
    handler = Recorder()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, _http(pki, url) as http:
            for method, path, arguments, status, reason in _BAD_REQUESTS:
                response = await http.request(method, path, **arguments)
                assert (method, path, response.status_code) == (method, path, status)
                body = _error_body(response)
                if status == 400:
                    assert body["message"] == etsi014.BAD_REQUEST
                assert reason in body["details"][0]["reason"], (method, path, body)
            assert handler.received == []
            good = await http.get(_ENC_KEYS)
            assert good.status_code == 200
            assert handler.received == [ak.KeyRequest(application_destination_id="app-b")]
            # all of it went over one connection, which the bad requests never broke
            assert len({id(connection) for connection in handler.connections}) == 1


def _padded_body(size: int) -> bytes:
    """A valid Get key body of exactly ``size`` bytes."""
    empty = orjson.dumps({"number": 1, "extension_optional": [{"pad": ""}]})
    body = orjson.dumps({"number": 1, "extension_optional": [{"pad": "x" * (size - len(empty))}]})
    assert len(body) == size
    return body


async def test_a_body_over_the_limit_is_refused(pki: ConformancePKI) -> None:
    """The largest body is read; one byte more gets 400 without reaching the handler, whether
    its length was announced or it came in chunks; the server goes on."""
    handler = Recorder()
    at_limit = _padded_body(etsi014.MAX_BODY_SIZE)
    over = _padded_body(etsi014.MAX_BODY_SIZE + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(over), 1000):
            yield over[start : start + 1000]

    too_big = f"the body is over {etsi014.MAX_BODY_SIZE} bytes"
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, _http(pki, url) as http:
            accepted = await http.post(_ENC_KEYS, content=at_limit)
            assert accepted.status_code == 200
            assert len(handler.received) == 1

            # the server does not read the rest of such a body, so the connection ends, and
            # the client is told (or its next request would go down a closing connection)
            announced = await http.post(_ENC_KEYS, content=over)
            assert announced.status_code == 400
            assert announced.headers["connection"] == "close"
            assert _error_body(announced) == {
                "message": etsi014.BAD_REQUEST,
                "details": [{"reason": too_big}],
            }
            chunked = await http.post(_ENC_KEYS, content=chunks())
            assert chunked.request.headers["transfer-encoding"] == "chunked"
            assert chunked.status_code == 400
            assert chunked.headers["connection"] == "close"
            assert _error_body(chunked)["details"] == [{"reason": too_big}]
            assert len(handler.received) == 1

            good = await http.get(_ENC_KEYS)
            assert good.status_code == 200
            assert len(handler.received) == 2


def _head(size: int) -> bytes:
    """A Get status request whose head (request line, header fields, empty line) is exactly
    ``size`` bytes; the server closes the connection after its answer."""
    start = b"GET /api/v1/keys/app-b/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


async def test_a_request_head_over_16_kib_is_refused(pki: ConformancePKI) -> None:
    """The finding: a head of 17 KB was served (h11 bounds only a head it has not read whole,
    and a read holds a TLS record, up to 16 KiB). The largest head is served; one byte more gets
    431, in one record or in two; the server goes on."""
    handler = Recorder()
    status = ak.StatusRequest(application_destination_id="app-b")
    over = _head(MAX_HEAD_SIZE + 1)
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url:
            at_limit = await _raw_exchange(url, pki.client, _head(MAX_HEAD_SIZE))
            assert at_limit.startswith(b"HTTP/1.1 200 "), at_limit[:100]
            for pieces in ([over], [over[:1000], over[1000:]]):
                answer = await _raw_exchange(url, pki.client, *pieces)
                assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
            assert handler.received == [status]
            async with _http(pki, url) as http:
                big = await http.get("/api/v1/keys/app-b/status", headers={"x-big": "a" * 17_000})
                assert big.status_code == 431
                assert big.headers["connection"] == "close"
                good = await http.get("/api/v1/keys/app-b/status")
                assert good.status_code == 200
    assert handler.received == [status, status]


_NOT_HTTP = [
    pytest.param(b"\x00\x01\x02 this is no HTTP \xff\r\n\r\n", id="garbage"),
    pytest.param(
        b"GET /api/v1/keys/app-b/status HTTP/1.1\r\nhost: x\r\nx-big: "
        + b"a" * 70_000
        + b"\r\n\r\n",
        id="header-over-64KiB",
    ),
    pytest.param(b"GET /api/v1/keys/\xff/status HTTP/1.1\r\nhost: x\r\n\r\n", id="non-ascii-path"),
    pytest.param(b"GET /api/v1/keys/app-b/status HTTP/1.1\r\n\r\n", id="no-host"),
    pytest.param(
        b"POST /api/v1/keys/app-b/enc_keys HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n",
        id="negative-length",
    ),
]


@pytest.mark.parametrize("data", _NOT_HTTP)
async def test_what_is_not_http_ends_its_connection_only(pki: ConformancePKI, data: bytes) -> None:
    handler = Recorder()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url:
            answer = await _raw_exchange(url, pki.client, data)
            # an answer, if any, is a 4xx: never a server error
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
            async with _http(pki, url) as http:
                response = await http.get("/api/v1/keys/app-b/status")
                assert response.status_code == 200
    assert handler.received == [ak.StatusRequest(application_destination_id="app-b")]


async def test_a_websocket_handshake_gets_a_014_error(pki: ConformancePKI) -> None:
    """014 has no WebSocket: the handshake is answered 400 with the 014 error body (hypercorn
    answers 500 to an app that says nothing)."""
    handler = Recorder()
    handshake = (
        b"GET /api/v1/keys/app-b/status HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\n"
        b"upgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"sec-websocket-version: 13\r\n\r\n"
    )
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url:
            answer = await _raw_exchange(url, pki.client, handshake)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert orjson.loads(body) == {
        "message": etsi014.BAD_REQUEST,
        "details": [{"reason": "ETSI 014 has no WebSocket: send the request without Upgrade"}],
    }
    assert handler.received == []


async def test_a_request_cut_short_never_reaches_the_handler(pki: ConformancePKI) -> None:
    """A body announced longer than what came may still be valid JSON: if its Get key reached
    the handler, the keys would leave the pool for a client that is gone."""
    handler = Recorder()
    cut = (
        b"POST /api/v1/keys/app-b/enc_keys HTTP/1.1\r\nhost: x\r\ncontent-type: "
        b'application/json\r\ncontent-length: 100\r\n\r\n{"number": 5}'
    )
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url:
            host, port = url.split("://")[1].rsplit(":", 1)
            stream = trio.SSLStream(
                await trio.open_tcp_stream(host, int(port)),
                _context(pki.client),
                server_hostname=host,
            )
            await stream.send_all(cut)
            await stream.aclose()
            # the server has seen the end of that connection once every task waits again
            await trio.testing.wait_all_tasks_blocked()
            async with _http(pki, url) as http:
                assert (await http.get(_ENC_KEYS)).status_code == 200
    assert handler.received == [ak.KeyRequest(application_destination_id="app-b")]


# --- handler errors -----------------------------------------------------------------------------


async def test_handler_errors_reach_http_by_their_status(
    pki: ConformancePKI, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Recorder()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, _http(pki, url) as http:
            refused = await http.get("/api/v1/keys/refuse/enc_keys", params={"size": "7"})
            assert refused.status_code == 400
            assert _error_body(refused) == {
                "message": etsi014.SIZE_NOT_MULTIPLE_OF_8,
                "details": [{"reason": "size 7 is not a multiple of 8"}],
            }

            denied = await http.get("/api/v1/keys/deny/enc_keys")
            assert denied.status_code == 401
            assert denied.content == b""

            failed = await http.get("/api/v1/keys/fail/enc_keys")
            assert failed.status_code == 503
            assert orjson.loads(failed.content) == {"message": "no keys left for deny-me"}

            with caplog.at_level(logging.ERROR, logger="qkdn_https"):
                bug = await http.get("/api/v1/keys/bug/enc_keys")
            assert bug.status_code == 503
            assert _error_body(bug)["message"] == etsi014.SERVER_ERROR
            assert b"secret" not in bug.content
            assert "the handler failed" in caplog.text
            assert "a secret the client must never see" in caplog.text

            failure = await http.get("/api/v1/keys/failure/enc_keys")
            assert failure.status_code == 503
            assert orjson.loads(failure.content) == {"message": "failure: the QKD link is down"}

            silent = await http.get("/api/v1/keys/silent/enc_keys")
            assert silent.status_code == 503
            assert _error_body(silent)["message"] == etsi014.SERVER_ERROR

            good = await http.get(_ENC_KEYS)
            assert good.status_code == 200
    assert len(handler.received) == 7
    assert len({id(connection) for connection in handler.connections}) == 1


# --- connections --------------------------------------------------------------------------------


async def test_one_connection_carries_many_requests(pki: ConformancePKI) -> None:
    """Keep-alive holds past hypercorn's default of 1000 requests per connection."""
    count = 1100
    handler = Recorder()
    with trio.fail_after(3 * _GUARD):
        async with _server(pki, handler) as url, _http(pki, url) as http:
            for _ in range(count):
                response = await http.get("/api/v1/keys/app-b/status")
                assert response.status_code == 200
                assert "connection" not in response.headers
    assert len(handler.received) == count
    first = handler.connections[0]
    assert isinstance(first, ServerSide)
    assert all(connection is first for connection in handler.connections)


async def test_connections_per_peer_are_bounded(pki: ConformancePKI) -> None:
    handler = Recorder()
    limits = Limits(max_connections_per_peer=2)
    with trio.fail_after(_GUARD):
        async with _server(pki, handler, limits=limits) as url:
            first, second, third = _http(pki, url), _http(pki, url), _http(pki, url)
            async with first, second:
                for http in (first, second):  # each holds its connection open (keep-alive)
                    assert (await http.get(_ENC_KEYS)).status_code == 200
                assert len({id(connection) for connection in handler.connections}) == 2

                async with third:
                    refused = await third.get(_ENC_KEYS)
                    assert refused.status_code == 503
                    body = _error_body(refused)
                    assert body["message"] == etsi014.SERVER_ERROR
                    assert body["details"] == [
                        {"reason": f"too many connections from {CLIENT_ID} (limit 2)"}
                    ]
                    assert len(handler.received) == 2  # the refused one never reached it

                await first.aclose()
                # once every task waits again, the server has seen the connections end
                await trio.testing.wait_all_tasks_blocked()
                async with _http(pki, url) as fourth:
                    assert (await fourth.get(_ENC_KEYS)).status_code == 200
                # the second still holds its own
                assert (await second.get(_ENC_KEYS)).status_code == 200
    assert len(handler.received) == 4
    assert len({id(connection) for connection in handler.connections}) == 3


async def test_a_connection_the_client_closed_gives_its_place_back(pki: ConformancePKI) -> None:
    """Each closed connection leaves the count at once, not at the idle timeout (hypercorn
    alone kept it for as long as its keep-alive timer ran)."""
    handler = Recorder()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler, limits=Limits(max_connections_per_peer=1)) as url:
            for _ in range(3):
                async with _http(pki, url) as http:
                    assert (await http.get(_ENC_KEYS)).status_code == 200
                await trio.testing.wait_all_tasks_blocked()
    assert len({id(connection) for connection in handler.connections}) == 3


def _nameless(pki: ConformancePKI, tmp_path: Path) -> tuple[TLSConfig, TLSConfig]:
    """A client certificate that names no one (no CN; only an IP address as subjectAltName),
    and the server settings that trust its CA as well as the usual one, so that only the
    missing name can be the reason to refuse it."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "nameless-ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "nameless.pem")
    )
    both = tmp_path / "both-cas.pem"
    both.write_bytes(pki.server.ca.read_bytes() + (tmp_path / "nameless-ca.pem").read_bytes())
    server = TLSConfig(ca=both, cert=pki.server.cert, key=pki.server.key)
    client = TLSConfig(ca=pki.client.ca, cert=tmp_path / "nameless.pem")
    assert client.identity() is None
    return server, client


async def test_a_certificate_that_names_no_one_gets_401(
    pki: ConformancePKI, tmp_path: Path
) -> None:
    server_tls, nameless = _nameless(pki, tmp_path)
    handler = Recorder()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler, tls=server_tls) as url:
            async with _http(pki, url, tls=nameless) as http:
                response = await http.get(_ENC_KEYS)
                assert response.status_code == 401
                assert response.content == b""
            async with _http(pki, url) as http:
                assert (await http.get(_ENC_KEYS)).status_code == 200
    assert [connection.peer_id for connection in handler.connections] == [CLIENT_ID]


@pytest.mark.parametrize("client", ["client_of_other_ca", "client_without_certificate"])
async def test_a_client_the_ca_did_not_certify_gets_nothing_through(
    pki: ConformancePKI, client: str
) -> None:
    handler = Recorder()
    bad: TLSConfig = getattr(pki, client)
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url:
            async with Etsi014Client(url, bad) as kme:
                with pytest.raises(TransportError):
                    await kme.get_key("app-b")
                assert kme.peer_id is None
            assert handler.received == []
            async with Etsi014Client(url, pki.client) as kme:
                container = await kme.get_key("app-b", number=1)
                assert container.keys == example(ak.ResponseToKeyRequest).keys
    assert [connection.peer_id for connection in handler.connections] == [CLIENT_ID]


async def test_the_handler_may_end_its_connection(pki: ConformancePKI) -> None:
    """``ServerSide.aclose`` from the handler ends the TCP connection: its request gets no
    answer, the connection says it is closed, and the client's next request is served on a
    new one."""
    seen: list[Connection] = []

    async def handler(message: Message, connection: Connection) -> Message | None:
        seen.append(connection)
        if len(seen) == 1:
            await connection.aclose()
            assert connection.closed
            await trio.sleep_forever()  # cancelled with the connection
        return example(ak.ResponseToKeyRequest)

    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve(
                    "https://127.0.0.1:0", handler, tls=pki.server, task_status=task_status
                )
            )
            async with _http(pki, info.url) as http:
                with pytest.raises(httpx.RemoteProtocolError):
                    await http.get(_ENC_KEYS)
                assert (await http.get(_ENC_KEYS)).status_code == 200
                assert not seen[1].closed  # its connection goes on
            nursery.cancel_scope.cancel()
    assert len(seen) == 2
    assert seen[0] is not seen[1]
    assert seen[0].closed


_H2C_UPGRADE = (
    b"GET /api/v1/keys/app-b/status HTTP/1.1\r\nhost: x\r\n"
    b"connection: Upgrade, HTTP2-Settings, close\r\nupgrade: h2c\r\n"
    b"http2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
)
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


async def test_there_is_no_way_into_http_2(pki: ConformancePKI) -> None:
    """ETSI 014 is HTTP/1.1: an h2c upgrade is answered in HTTP/1.1 (never 101), the HTTP/2
    preface without ALPN is refused as a bad request (never a SETTINGS frame), and the server
    goes on serving."""
    handler = Recorder()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url:
            answer = await _raw_exchange(url, pki.client, _H2C_UPGRADE)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            assert b"upgrade" not in answer.split(b"\r\n\r\n", 1)[0].lower()
            answer = await _raw_exchange(url, pki.client, _H2_PREFACE)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
            async with _http(pki, url) as http:
                response = await http.get("/api/v1/keys/app-b/status")
                assert response.status_code == 200
    assert handler.received == [ak.StatusRequest(application_destination_id="app-b")] * 2
