"""The ETSI GS QKD 014 clients (:class:`~qkdn_https.Etsi014Client` and the https://
:class:`~qkdn_sdk.transport.Connection`) against the plugin's real server on loopback mTLS.

What went over HTTP is read from httpx's request hook (method, URL, body); what the server made
of it, from the handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import orjson
import pytest
import trio
import trio.testing
from qkdn_https import MAX_RESPONSE_SIZE, Etsi014Client, Etsi014Error

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import (
    ConnectionBroken,
    FailureResponse,
    IdentityMismatch,
    LocalProtocolError,
    NotAuthorized,
    NotCarried,
    QkdnError,
    RemoteProtocolError,
    RequestRefused,
    RequestTimeout,
    TransportError,
)
from qkdn_sdk.messages import JSONObject, Key, KeyId, Message, Role, ak, example, kq1, received_by
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.testing import CLIENT_ID, SERVER_ID, ConformancePKI, conformance_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, connect, serve

_GUARD = 10  # seconds: no test here may hang longer
_AK = frozenset(cls for cls in received_by(Role.KM) if cls.interface is ak.KeyRequest.interface)
_KEYS = example(ak.ResponseToKeyRequest)


@pytest.fixture
def pki(tmp_path: Path) -> ConformancePKI:
    return conformance_pki(tmp_path)


@attrs.define
class Sent:
    """One HTTP request as it left the client."""

    method: str
    path: str
    query: dict[str, str]
    body: object


class Kme:
    """The server's handler: records what arrives and answers with the example responses;
    the slave (or master) SAE ID of a request picks a misbehaviour."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.connections: list[Connection] = []
        self.stalled = trio.Event()

    async def __call__(self, message: Message, connection: Connection) -> Message | None:
        self.received.append(message)
        self.connections.append(connection)
        sae = getattr(message, "application_destination_id", None) or getattr(
            message, "application_source_id", None
        )
        if sae == "refuse":
            raise RequestRefused(
                "size 7 is not a multiple of 8", etsi014_message=etsi014.SIZE_NOT_MULTIPLE_OF_8
            )
        if sae == "deny":
            raise NotAuthorized("application 'app-c' is not served by this KM")
        if sae == "fail":
            raise QkdnError("no keys left for fail")
        if sae == "bug":
            raise RuntimeError("a secret")
        if sae == "huge":
            return ak.ResponseToKeyRequest(
                keys=[Key(key=bytes(MAX_RESPONSE_SIZE * 3 // 4 + 1024), key_id="huge")],
                response="success",
            )
        if sae == "wrong":
            return example(ak.Status)  # a status where a key container belongs
        if sae == "stall":
            self.stalled.set()
            await trio.sleep_forever()
        response_type = type(message).response_type()
        assert response_type is not None
        return example(response_type, sender=SERVER_ID)


@asynccontextmanager
async def _server(
    pki: ConformancePKI,
    handler: Kme,
    *,
    accepts: Collection[type[Message]] = _AK,
    limits: Limits | None = None,
) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: serve(
                "https://127.0.0.1:0",
                handler,
                tls=pki.server,
                accepts=accepts,
                limits=limits,
                task_status=task_status,
            )
        )
        yield info.url
        nursery.cancel_scope.cancel()


def _record(kme: Etsi014Client) -> list[Sent]:
    """Record every HTTP request ``kme`` sends (httpx's request hook on its client)."""
    sent: list[Sent] = []

    async def hook(request: httpx.Request) -> None:
        body = orjson.loads(request.content) if request.content else None
        query = dict(request.url.params)
        sent.append(Sent(request.method, request.url.path, query, body))

    kme._http.event_hooks["request"].append(hook)
    return sent


# --- Etsi014Client ------------------------------------------------------------------------------


async def test_get_status(pki: ConformancePKI) -> None:
    handler = Kme()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, Etsi014Client(url, pki.client) as kme:
            sent = _record(kme)
            assert kme.peer_id is None
            status = await kme.get_status("app-b")
            assert kme.peer_id == SERVER_ID
    assert status == example(ak.Status)
    assert sent == [Sent("GET", "/api/v1/keys/app-b/status", {}, None)]
    assert handler.received == [ak.StatusRequest(application_destination_id="app-b")]
    assert handler.connections[0].peer_id == CLIENT_ID


async def test_get_key_with_number_and_size_only_is_a_get(pki: ConformancePKI) -> None:
    handler = Kme()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, Etsi014Client(url, pki.client) as kme:
            sent = _record(kme)
            container = await kme.get_key("app-b", number=2, size=256)
            await kme.get_key("app-b")
    assert sent == [
        Sent("GET", "/api/v1/keys/app-b/enc_keys", {"number": "2", "size": "256"}, None),
        Sent("GET", "/api/v1/keys/app-b/enc_keys", {}, None),
    ]
    assert handler.received == [
        ak.KeyRequest(application_destination_id="app-b", number_of_keys=2, size_of_key=256),
        ak.KeyRequest(application_destination_id="app-b"),
    ]
    assert container.keys == _KEYS.keys
    assert container.key_container_extension == etsi014.extension_object(_KEYS.extension)


async def test_get_key_with_more_is_a_post(pki: ConformancePKI) -> None:
    handler = Kme()
    mandatory: list[JSONObject] = [{"route": "direct"}]
    optional: list[JSONObject] = [{"priority": 1}, {"label": "x"}]
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, Etsi014Client(url, pki.client) as kme:
            sent = _record(kme)
            container = await kme.get_key(
                "app-b",
                number=1,
                additional_slave_sae_ids=["app-c", "app-d"],
                extension_mandatory=mandatory,
                extension_optional=optional,
            )
            await kme.get_key("app-b", additional_slave_sae_ids=["app-c"])
    assert container.keys == _KEYS.keys
    assert sent == [
        Sent(
            "POST",
            "/api/v1/keys/app-b/enc_keys",
            {},
            {
                "number": 1,
                "extension_mandatory": mandatory,
                "additional_slave_SAE_IDs": ["app-c", "app-d"],
                "extension_optional": optional,
            },
        ),
        Sent("POST", "/api/v1/keys/app-b/enc_keys", {}, {"additional_slave_SAE_IDs": ["app-c"]}),
    ]
    assert handler.received == [
        ak.KeyRequest(
            application_destination_id="app-b",
            number_of_keys=1,
            extension=[
                {etsi014.MANDATORY: mandatory},
                {etsi014.ADDITIONAL_SLAVES: ["app-c", "app-d"]},
                *optional,
            ],
        ),
        ak.KeyRequest(
            application_destination_id="app-b",
            extension=[{etsi014.ADDITIONAL_SLAVES: ["app-c"]}],
        ),
    ]


async def test_get_key_with_key_ids(pki: ConformancePKI) -> None:
    """One key ID alone is a GET; several, or any extension, a POST."""
    handler = Kme()
    marked = KeyId(key_id="k-3", key_id_extension={"hash": "abc"})
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, Etsi014Client(url, pki.client) as kme:
            sent = _record(kme)
            container = await kme.get_key_with_key_ids("app-m", ["k-1"])
            await kme.get_key_with_key_ids("app-m", ["k-1", KeyId(key_id="k-2")])
            await kme.get_key_with_key_ids("app-m", ["k-1"], key_ids_extension={"batch": 7})
            await kme.get_key_with_key_ids("app-m", [marked])
    assert container.keys == _KEYS.keys
    assert sent == [
        Sent("GET", "/api/v1/keys/app-m/dec_keys", {"key_ID": "k-1"}, None),
        Sent(
            "POST",
            "/api/v1/keys/app-m/dec_keys",
            {},
            {"key_IDs": [{"key_ID": "k-1"}, {"key_ID": "k-2"}]},
        ),
        Sent(
            "POST",
            "/api/v1/keys/app-m/dec_keys",
            {},
            {"key_IDs": [{"key_ID": "k-1"}], "key_IDs_extension": {"batch": 7}},
        ),
        Sent(
            "POST",
            "/api/v1/keys/app-m/dec_keys",
            {},
            {"key_IDs": [{"key_ID": "k-3", "key_ID_extension": {"hash": "abc"}}]},
        ),
    ]
    one, two = KeyId(key_id="k-1"), KeyId(key_id="k-2")
    assert handler.received == [
        ak.KeyRequestWithId(application_source_id="app-m", key_ids=[one]),
        ak.KeyRequestWithId(application_source_id="app-m", key_ids=[one, two]),
        ak.KeyRequestWithId(application_source_id="app-m", key_ids=[one], extension=[{"batch": 7}]),
        ak.KeyRequestWithId(application_source_id="app-m", key_ids=[marked]),
    ]


async def test_errors_are_typed_with_status_and_014_message(pki: ConformancePKI) -> None:
    handler = Kme()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, Etsi014Client(url, pki.client) as kme:
            with pytest.raises(Etsi014Error) as refused:
                await kme.get_key("refuse", size=7)
            assert refused.value.http_status == 400
            assert refused.value.message == etsi014.SIZE_NOT_MULTIPLE_OF_8
            assert refused.value.details == [{"reason": "size 7 is not a multiple of 8"}]

            with pytest.raises(Etsi014Error) as denied:
                await kme.get_key_with_key_ids("deny", ["k-1"])
            assert denied.value.http_status == 401
            assert denied.value.message == etsi014.UNAUTHORIZED
            assert denied.value.details == []

            with pytest.raises(Etsi014Error) as failed:
                await kme.get_status("fail")
            assert failed.value.http_status == 503
            assert failed.value.message == "no keys left for fail"

            with pytest.raises(Etsi014Error) as bug:
                await kme.get_key("bug")
            assert bug.value.http_status == 503
            assert bug.value.message == etsi014.SERVER_ERROR
            assert "secret" not in str(bug.value)

            # the errors went over one connection, which goes on
            assert (await kme.get_key("app-b")).keys == _KEYS.keys
    assert len({id(connection) for connection in handler.connections}) == 1


async def test_an_answer_that_is_not_014_is_a_remote_protocol_error(pki: ConformancePKI) -> None:
    handler = Kme()
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, Etsi014Client(url, pki.client) as kme:
            with pytest.raises(RemoteProtocolError, match=f"over {MAX_RESPONSE_SIZE} bytes"):
                await kme.get_key("huge")
            with pytest.raises(RemoteProtocolError, match="the key container has no keys array"):
                await kme.get_key("wrong")
            assert (await kme.get_key("app-b")).keys == _KEYS.keys


async def test_an_unreachable_kme_is_a_transport_error(pki: ConformancePKI) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(_GUARD):
        async with Etsi014Client(f"https://127.0.0.1:{port}", pki.client) as kme:
            with pytest.raises(TransportError, match=r"cannot connect to https://127\.0\.0\.1"):
                await kme.get_status("app-b")
            assert kme.peer_id is None
    with pytest.raises(TransportError, match="https://HOST:PORT"):
        Etsi014Client(f"http://127.0.0.1:{port}", pki.client)


async def test_a_kme_our_ca_did_not_certify_is_refused(pki: ConformancePKI, tmp_path: Path) -> None:
    handler = Kme()
    wrong_ca = TLSConfig(ca=tmp_path / "other-ca.pem", cert=pki.client.cert, key=pki.client.key)
    with trio.fail_after(_GUARD):
        async with _server(pki, handler) as url, Etsi014Client(url, wrong_ca) as kme:
            with pytest.raises(TransportError, match="did not verify"):
                await kme.get_status("app-b")
            assert kme.peer_id is None
    assert handler.received == []


async def test_concurrent_requests_share_at_most_max_connections(pki: ConformancePKI) -> None:
    arrived: list[Connection] = []
    both_in = trio.Event()

    async def handler(message: Message, connection: Connection) -> Message | None:
        arrived.append(connection)
        if len(arrived) == 2:
            both_in.set()
        await both_in.wait()  # the first two are in flight at once, on two connections
        return example(ak.ResponseToKeyRequest)

    results: list[int] = []

    async def ask(kme: Etsi014Client) -> None:
        results.append(len((await kme.get_key("app-b")).keys))

    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as server:
            info: ServerInfo = await server.start(
                lambda task_status: serve(
                    "https://127.0.0.1:0", handler, tls=pki.server, task_status=task_status
                )
            )
            async with (
                Etsi014Client(info.url, pki.client, max_connections=2) as kme,
                trio.open_nursery() as nursery,
            ):
                for _ in range(6):
                    nursery.start_soon(ask, kme)
            server.cancel_scope.cancel()
    assert results == [len(_KEYS.keys)] * 6
    assert len({id(connection) for connection in arrived}) == 2


# --- the https:// Connection --------------------------------------------------------------------


async def test_a_014_error_is_a_failure_response(pki: ConformancePKI) -> None:
    handler = Kme()
    with trio.fail_after(_GUARD):
        async with (
            _server(pki, handler) as url,
            connect(url, tls=pki.client) as connection,
        ):
            assert connection.local_id == CLIENT_ID
            with pytest.raises(FailureResponse) as refused:
                await connection.request(
                    ak.KeyRequest(application_destination_id="refuse", size_of_key=7)
                )
            cause = refused.value.__cause__
            assert isinstance(cause, Etsi014Error)
            assert cause.http_status == 400
            assert cause.message == etsi014.SIZE_NOT_MULTIPLE_OF_8
            response = refused.value.response
            assert isinstance(response, ak.ResponseToKeyRequest)
            assert response.keys == []
            assert response.response.startswith("failure: 400 size shall be a multiple of 8")

            with pytest.raises(FailureResponse) as denied:
                await connection.request(ak.StatusRequest(application_destination_id="deny"))
            assert isinstance(denied.value.__cause__, Etsi014Error)
            assert denied.value.__cause__.http_status == 401
            # the Status table has no Response parameter: the failure is an error indication
            assert isinstance(denied.value.response, ErrorIndication)
            assert denied.value.response.reason == "failure: 401 Unauthorized."

            assert not connection.closed
            answer = await connection.request(ak.KeyRequest(application_destination_id="app-b"))
            assert answer == _KEYS
            assert connection.peer_id == SERVER_ID


async def test_a_kq1_connection_carries_the_kq1_requests(pki: ConformancePKI) -> None:
    handler = Kme()
    kq1_accepts = {kq1.StatusRequest, kq1.KeyRequest, kq1.KeyRequestWithKeyIds}
    request = kq1.KeyRequest(number_of_keys=2, extension=[{etsi014.SLAVE: "km-b"}])
    with trio.fail_after(_GUARD):
        async with (
            _server(pki, handler, accepts=kq1_accepts) as url,
            connect(url, tls=pki.client) as connection,
        ):
            assert await connection.request(request) == example(kq1.ResponseToKeyRequest)
            with pytest.raises(LocalProtocolError, match="names the slave SAE"):
                await connection.request(kq1.KeyRequest(number_of_keys=2))
            assert not connection.closed
    assert handler.received == [request]


async def test_what_014_cannot_carry_is_refused_before_sending(pki: ConformancePKI) -> None:
    handler = Kme()
    with trio.fail_after(_GUARD):
        async with (
            _server(pki, handler) as url,
            connect(url, tls=pki.client) as connection,
        ):
            session = example(ak.SessionCreationRequest, sender=CLIENT_ID)
            with pytest.raises(NotCarried) as request:
                await connection.request(session)
            assert "https:// (ETSI 014) cannot carry" in str(request.value)
            assert "tcp+tls://" in str(request.value)
            with pytest.raises(NotCarried, match="tcp\\+tls://"):
                await connection.send(example(ak.ResponseToKeyRequest))
            # 014 takes the sender from the certificate: another claimed ID is refused
            with pytest.raises(IdentityMismatch, match="'app-z'"):
                await connection.request(
                    ak.KeyRequest(application_source_id="app-z", application_destination_id="b")
                )
            assert not connection.closed
            own = ak.KeyRequest(application_source_id=CLIENT_ID, application_destination_id="b")
            assert await connection.request(own) == _KEYS
    assert handler.received == [ak.KeyRequest(application_destination_id="b")]


async def test_a_request_times_out_and_the_connection_goes_on(pki: ConformancePKI) -> None:
    handler = Kme()
    with trio.fail_after(_GUARD):
        async with (
            _server(pki, handler) as url,
            connect(url, tls=pki.client) as connection,
        ):
            with pytest.raises(RequestTimeout):
                await connection.request(
                    ak.KeyRequest(application_destination_id="stall"), timeout=0.2
                )
            assert handler.stalled.is_set()
            assert not connection.closed
            assert await connection.request(ak.KeyRequest(application_destination_id="b")) == _KEYS


async def test_the_connection_ends_when_the_server_is_gone(pki: ConformancePKI) -> None:
    handler = Kme()
    stopped = trio.Event()
    server_scope = trio.CancelScope()

    async def run_server(task_status: trio.TaskStatus[ServerInfo]) -> None:
        try:
            with server_scope:
                await serve("https://127.0.0.1:0", handler, tls=pki.server, task_status=task_status)
        finally:
            stopped.set()

    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(run_server)
            async with connect(info.url, tls=pki.client) as connection:
                assert await connection.request(ak.StatusRequest(application_destination_id="b"))
                server_scope.cancel()
                await stopped.wait()  # its listener and connections are closed
                with pytest.raises(TransportError) as caught:
                    await connection.request(ak.StatusRequest(application_destination_id="b"))
                assert isinstance(caught.value, ConnectionBroken)
                assert connection.closed
                # and it stays ended, without trying the network again
                with pytest.raises(ConnectionBroken):
                    await connection.request(ak.StatusRequest(application_destination_id="b"))
    assert len(handler.received) == 1
