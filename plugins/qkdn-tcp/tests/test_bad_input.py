"""Bad input and hostile peers against a real tcp:// or tcp+tls:// server on loopback.

The peer here is hand-made: raw frames written to a socket (wrapped in real TLS for tcp+tls), so
nothing in the SDK's client side can smooth over what the server does.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import orjson
import pytest
import trio

from qkdn_sdk.codecs.frame import encode_message
from qkdn_sdk.errors import ConnectionBroken, FailureResponse, PeerClosed, TransportError
from qkdn_sdk.messages import Message, ak, example
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.testing import CLIENT_ID, SERVER_ID, ConformancePKI, RawPeer, conformance_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, _admission, connect, serve

_GUARD = 10


@pytest.fixture
def pki(tmp_path: Path) -> ConformancePKI:
    return conformance_pki(tmp_path)


@pytest.fixture(params=["tcp", "tcp+tls"])
def scheme(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


async def _answer(message: Message, _connection: Connection) -> Message | None:
    if isinstance(message, ak.KeyRequest) and message.application_name == "stall":
        await trio.sleep_forever()
    response_type = message.response_type()
    return None if response_type is None else example(response_type)


@asynccontextmanager
async def _server(
    scheme: str, pki: ConformancePKI, limits: Limits | None = None
) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: serve(
                f"{scheme}://127.0.0.1:0",
                _answer,
                tls=pki.server if scheme == "tcp+tls" else None,
                limits=limits,
                task_status=task_status,
            )
        )
        yield info.url
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _raw_peer(url: str, pki: ConformancePKI) -> AsyncIterator[RawPeer]:
    host, port = url.split("://")[1].rsplit(":", 1)
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, int(port))
    if url.startswith("tcp+tls"):
        stream = trio.SSLStream(stream, pki.client.client_context(), server_hostname=host)
        await stream.do_handshake()
    try:
        yield RawPeer(stream)
    finally:
        await trio.aclose_forcefully(stream)


def _tls(scheme: str, pki: ConformancePKI) -> object:
    return pki.client if scheme == "tcp+tls" else None


async def test_unknown_command_code_gets_an_error_indication(
    scheme: str, pki: ConformancePKI
) -> None:
    with trio.fail_after(_GUARD):
        async with _server(scheme, pki) as url, _raw_peer(url, pki) as peer:
            await peer.frame(77, 0x2199, b"{}")
            message_id, answer = await peer.next_message()
            assert message_id == 77
            assert isinstance(answer, ErrorIndication)
            assert answer.command_code == 0x2199
            assert not answer.closing
            assert "unknown command code 0x2199" in answer.reason
            # framing held: the same connection still serves
            await peer.stream.send_all(encode_message(example(ak.KeyRequest, sender=CLIENT_ID), 78))
            assert await peer.next_message() == (78, example(ak.ResponseToKeyRequest))


async def test_request_with_bad_parameters_gets_its_own_failure_response(
    scheme: str, pki: ConformancePKI
) -> None:
    with trio.fail_after(_GUARD):
        async with _server(scheme, pki) as url, _raw_peer(url, pki) as peer:
            payload = orjson.dumps({"application_destination_id": "app-b", "number_of_keys": "5"})
            await peer.frame(5, ak.KeyRequest.code, payload)
            message_id, answer = await peer.next_message()
            assert message_id == 5
            assert isinstance(answer, ak.ResponseToKeyRequest)
            assert answer.keys == []
            assert answer.response.startswith("failure")
            assert "number_of_keys: expected an integer" in answer.response

            # the failure echoes the IDs it can: session_id of a key request with session ID
            bad = orjson.dumps({"session_id": "s-9", "number_of_keys": 0})
            await peer.frame(6, ak.KeyRequestWithSessionId.code, bad)
            message_id, answer = await peer.next_message()
            assert message_id == 6
            assert isinstance(answer, ak.ResponseToKeyRequestWithSessionId)
            assert answer.session_id == "s-9"
            assert "number_of_keys: must be >= 1" in answer.response

            await peer.frame(7, ak.KeyRequest.code, b"{not json")
            message_id, answer = await peer.next_message()
            assert message_id == 7
            assert isinstance(answer, ak.ResponseToKeyRequest)
            assert "not valid JSON" in answer.response


async def test_bad_one_way_message_gets_an_error_indication(
    scheme: str, pki: ConformancePKI
) -> None:
    with trio.fail_after(_GUARD):
        async with _server(scheme, pki) as url, _raw_peer(url, pki) as peer:
            await peer.frame(9, ak.ResponseToKeyRequest.code, b'{"response": 3}')
            message_id, answer = await peer.next_message()
            assert message_id == 9
            assert isinstance(answer, ErrorIndication)
            assert "keys: missing" in answer.reason
            assert "response: expected a string" in answer.reason


async def test_lost_framing_is_announced_then_the_connection_closes(
    scheme: str, pki: ConformancePKI
) -> None:
    with trio.fail_after(_GUARD):
        async with _server(scheme, pki) as url:
            async with _raw_peer(url, pki) as peer:
                await peer.frame(11, ak.KeyRequest.code, b"{}", version=7)
                message_id, answer = await peer.next_message()
                assert message_id == 11
                assert isinstance(answer, ErrorIndication)
                assert answer.closing
                assert "unsupported frame version 7" in answer.reason
                assert await peer.closed_by_server()
            # the server itself is unharmed
            async with connect(url, tls=_tls(scheme, pki)) as client:  # type: ignore[arg-type]
                assert await client.request(example(ak.KeyRequest, sender=CLIENT_ID)) == example(
                    ak.ResponseToKeyRequest
                )


async def test_a_stalled_peer_does_not_hold_up_another(scheme: str, pki: ConformancePKI) -> None:
    """A peer that sends half a frame and goes silent is dropped at its idle timeout; a peer
    on another connection is served meanwhile."""
    limits = Limits(idle_timeout=0.5)
    with trio.fail_after(_GUARD):
        async with _server(scheme, pki, limits) as url, _raw_peer(url, pki) as stalled:
            await stalled.stream.send_all(b"\x00\x01\x00\x00")
            async with connect(url, tls=_tls(scheme, pki)) as client:  # type: ignore[arg-type]
                for _ in range(3):
                    assert await client.request(
                        example(ak.KeyRequest, sender=CLIENT_ID)
                    ) == example(ak.ResponseToKeyRequest)
            assert await stalled.closed_by_server()


async def test_in_flight_requests_are_bounded(scheme: str, pki: ConformancePKI) -> None:
    limits = Limits(max_in_flight=2)
    stall = ak.KeyRequest(application_destination_id="app-b", application_name="stall")
    with trio.fail_after(_GUARD):
        async with _server(scheme, pki, limits) as url, _raw_peer(url, pki) as peer:
            for message_id in (21, 23):
                await peer.stream.send_all(encode_message(stall, message_id))
            await peer.stream.send_all(encode_message(example(ak.KeyRequest, sender=CLIENT_ID), 25))
            message_id, answer = await peer.next_message()
            assert message_id == 25
            assert isinstance(answer, ak.ResponseToKeyRequest)
            assert "too many requests in flight on this connection (limit 2)" in answer.response


async def test_tls_handshake_timeout(pki: ConformancePKI) -> None:
    """A client that opens TCP but never starts TLS is dropped at the handshake timeout,
    while a proper client is served."""
    limits = Limits(handshake_timeout=0.5)
    with trio.fail_after(_GUARD):
        async with _server("tcp+tls", pki, limits) as url:
            host, port = url.split("://")[1].rsplit(":", 1)
            silent = await trio.open_tcp_stream(host, int(port))
            async with connect(url, tls=pki.client) as client:
                assert client.peer_id == SERVER_ID
                await client.request(example(ak.KeyRequest, sender=CLIENT_ID))
            assert await silent.receive_some(100) == b""
            await silent.aclose()


async def test_identity_claims_are_checked_against_the_certificate(pki: ConformancePKI) -> None:
    with trio.fail_after(_GUARD):
        async with _server("tcp+tls", pki) as url, connect(url, tls=pki.client) as client:
            assert client.peer_id == SERVER_ID
            assert client.local_id == CLIENT_ID
            own = ak.KeyRequestWithId(
                application_source_id="app-z",
                application_destination_id=CLIENT_ID,
                key_ids=example(ak.KeyRequestWithId).key_ids,
            )
            await client.request(own)
            with pytest.raises(FailureResponse, match="application_destination_id 'app-q'"):
                await client.request(
                    ak.KeyRequestWithId(
                        application_source_id="app-z",
                        application_destination_id="app-q",
                        key_ids=own.key_ids,
                    )
                )


async def test_plain_client_cannot_talk_to_a_tls_server(pki: ConformancePKI) -> None:
    with trio.fail_after(_GUARD):
        async with _server("tcp+tls", pki) as url:
            plain = url.replace("tcp+tls://", "tcp://")
            async with connect(plain) as client:
                with pytest.raises((PeerClosed, ConnectionBroken)):
                    await client.request(example(ak.KeyRequest, sender=CLIENT_ID), timeout=5)


def _nameless(pki: ConformancePKI, tmp_path: Path) -> TLSConfig:
    """A certificate from the right CA that names no one: no CN, and only an IP address as
    subjectAltName (valid for 127.0.0.1, so TLS itself accepts it)."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "nameless-ca.pem"))
    issued = ca.issue_cert("127.0.0.1")
    issued.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "nameless.pem"))
    # trust both CAs on the other side, so only the missing name can be the reason to refuse
    both = tmp_path / "both-cas.pem"
    both.write_bytes(pki.server.ca.read_bytes() + (tmp_path / "nameless-ca.pem").read_bytes())
    return TLSConfig(ca=both, cert=tmp_path / "nameless.pem")


async def test_a_client_certificate_that_names_no_one_is_refused(
    pki: ConformancePKI, tmp_path: Path
) -> None:
    """The finding: such a client had no ID, so its claims were never checked, and it could
    say it was "app-z" and get success."""
    nameless = _nameless(pki, tmp_path)
    server_tls = TLSConfig(ca=nameless.ca, cert=pki.server.cert, key=pki.server.key)
    forged = ak.KeyRequest(application_source_id="app-z", application_destination_id="b")
    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve(
                    "tcp+tls://127.0.0.1:0", _answer, tls=server_tls, task_status=task_status
                )
            )
            client_tls = TLSConfig(ca=pki.server.ca, cert=nameless.cert)
            async with connect(info.url, tls=client_tls) as client:
                with pytest.raises(PeerClosed, match="the certificate names no one"):
                    await client.request(forged)
            nursery.cancel_scope.cancel()


async def test_a_server_certificate_that_names_no_one_is_refused(
    pki: ConformancePKI, tmp_path: Path
) -> None:
    nameless = _nameless(pki, tmp_path)
    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve(
                    "tcp+tls://127.0.0.1:0",
                    _answer,
                    tls=TLSConfig(ca=pki.server.ca, cert=nameless.cert, require_client_cert=False),
                    task_status=task_status,
                )
            )
            with pytest.raises(TransportError, match="names no one"):
                async with connect(info.url, tls=TLSConfig(ca=nameless.ca)):
                    pass
            nursery.cancel_scope.cancel()


async def _refused_reads_why(url: str, pki: ConformancePKI, *, sends_first: bool) -> None:
    """A client over the per-peer cap (app-a, limit 2) reads the refusal, then the end: a TLS
    close_notify, not a reset or a close without it."""
    async with _raw_peer(url, pki) as peer:
        if sends_first:  # bytes the server never reads: closing with them unread sends a reset
            await peer.stream.send_all(encode_message(example(ak.KeyRequest, sender=CLIENT_ID), 1))
        assert await peer.next_message() == (
            0,
            ErrorIndication(
                reason="failure: too many connections from app-a (limit 2)", closing=True
            ),
        )
        assert await peer.stream.receive_some(65536) == b""


async def test_every_connection_over_the_per_peer_cap_reads_why(pki: ConformancePKI) -> None:
    """The finding: of 1,381 refusals, 362 came as a bare close. Many at once, each refused
    client reads the error indication and a clean end, whether it sent a request first or not."""
    limits = Limits(max_connections=200, max_connections_per_peer=2)
    with trio.fail_after(4 * _GUARD):
        async with (
            _server("tcp+tls", pki, limits) as url,
            _raw_peer(url, pki) as first,
            _raw_peer(url, pki) as second,
        ):
            for peer in (first, second):  # both admitted: the cap is reached
                await peer.stream.send_all(
                    encode_message(example(ak.KeyRequest, sender=CLIENT_ID), 1)
                )
                assert (await peer.next_message())[0] == 1
            async with trio.open_nursery() as nursery:
                for index in range(80):
                    nursery.start_soon(
                        partial(_refused_reads_why, url, pki, sends_first=index % 2 == 0)
                    )


async def test_a_refused_client_is_told_the_end_without_waiting(
    pki: ConformancePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end comes right after the refusal: a client that waits for it (and closes only then)
    is not kept waiting for the server's linger (before, it got the end only once that was up)."""
    monkeypatch.setattr(_admission, "LINGER", 10 * _GUARD)
    limits = Limits(max_connections_per_peer=1)
    with trio.fail_after(_GUARD):
        async with _server("tcp+tls", pki, limits) as url, _raw_peer(url, pki) as first:
            await first.stream.send_all(encode_message(example(ak.KeyRequest, sender=CLIENT_ID), 1))
            assert (await first.next_message())[0] == 1
            async with _raw_peer(url, pki) as refused:
                _, indication = await refused.next_message()
                assert isinstance(indication, ErrorIndication)
                assert indication.reason == "failure: too many connections from app-a (limit 1)"
                assert await refused.stream.receive_some(65536) == b""


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        # a trio server sends no alert when its handshake fails: the client sees a close
        ("client_without_certificate", "refused us without saying why"),
        ("client_of_other_ca", "refused us without saying why"),
        ("plain", "before sending anything (a TLS endpoint does this to a plain tcp:// client)"),
    ],
)
async def test_tls_refusals_say_what_probably_happened(
    pki: ConformancePKI, client: str, expected: str
) -> None:
    with trio.fail_after(_GUARD):
        async with _server("tcp+tls", pki) as url:
            tls = None if client == "plain" else getattr(pki, client)
            target = url.replace("tcp+tls://", "tcp://") if client == "plain" else url
            with pytest.raises(TransportError) as caught:
                async with connect(target, tls=tls) as connection:
                    await connection.request(example(ak.KeyRequest, sender=CLIENT_ID), timeout=5)
            assert expected in str(caught.value)
            assert "SSL" not in str(caught.value)


@asynccontextmanager
async def _one_connection(end: Callable[[socket.socket], None]) -> AsyncIterator[str]:
    """A ``tcp+tls://`` URL whose server, on a real socket in a thread, accepts one connection
    and hands it to ``end`` (blocking), then closes it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(_GUARD)

    def serve_one() -> None:
        with listener, listener.accept()[0] as accepted:
            accepted.settimeout(_GUARD)
            end(accepted)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, serve_one)
        yield f"tcp+tls://127.0.0.1:{listener.getsockname()[1]}"


def _close_after_the_client_hello(accepted: socket.socket) -> None:
    accepted.recv(65536)


def _reset(accepted: socket.socket) -> None:
    accepted.recv(65536)
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _refuse_with_an_alert(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    """A handshake by the standard library's blocking TLS, which sends the alert of its
    refusal (and then waits for the client to close, so that no reset overtakes the alert)."""

    def end(accepted: socket.socket) -> None:
        with context.wrap_socket(accepted, server_side=True, do_handshake_on_connect=False) as tls:
            with pytest.raises(ssl.SSLError):
                tls.do_handshake()
            tls.shutdown(socket.SHUT_WR)  # plain TCP from here: the TLS layer failed
            while tls.recv(65536):
                pass

    return end


@pytest.mark.parametrize("end", [_close_after_the_client_hello, _reset])
async def test_a_close_in_the_tls_handshake_is_not_called_a_refused_certificate(
    pki: ConformancePKI, end: Callable[[socket.socket], None]
) -> None:
    """The finding: a peer that only closed (a KM stopped) was said to have "probably refused
    our certificate"."""
    with trio.fail_after(_GUARD):
        async with _one_connection(end) as url:
            with pytest.raises(TransportError) as caught:
                async with connect(url, tls=pki.client):
                    pass
    assert str(caught.value) == (
        f"TLS handshake with {url} failed: the peer closed the connection without a TLS alert: "
        "it stopped, or it refused us without saying why (it was full, or did not take our "
        "certificate)"
    )


async def test_a_tls_alert_about_our_certificate_says_so(pki: ConformancePKI) -> None:
    with trio.fail_after(_GUARD):
        async with _one_connection(_refuse_with_an_alert(pki.server.server_context())) as url:
            with pytest.raises(TransportError) as caught:  # TLS 1.3: at the first read
                async with connect(url, tls=pki.client_of_other_ca) as connection:
                    await connection.request(ak.KeyRequest(application_destination_id="b"))
    assert "the peer does not trust the CA that signed our certificate" in str(caught.value)
    assert "without a TLS alert" not in str(caught.value)


async def test_a_tls_client_to_a_plain_port_is_told_so(pki: ConformancePKI) -> None:
    with trio.fail_after(_GUARD):
        async with _server("tcp", pki) as url:
            with pytest.raises(TransportError, match="does not speak TLS"):
                async with connect(url.replace("tcp://", "tcp+tls://"), tls=pki.client):
                    pass
