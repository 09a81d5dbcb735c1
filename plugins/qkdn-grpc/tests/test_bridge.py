"""The grpcio <-> trio byte bridge over real loopback sockets, plaintext and mutual TLS."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import trio

from qkdn_sdk.errors import (
    ConnectionBroken,
    NotAuthorized,
    PayloadTooLarge,
    PeerClosed,
    RemoteProtocolError,
    RequestRefused,
    RequestTimeout,
    TransportError,
)
from qkdn_sdk.testing import ConformancePKI, conformance_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Limits

try:
    import qkdn_grpc  # noqa: F401
except ImportError:  # the plugin is not installed yet: test it from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qkdn_grpc._bridge import (
    MAX_MESSAGE_SIZE,
    ByteStream,
    CallFailed,
    CallInfo,
    GrpcChannel,
    StreamHandler,
    UnaryHandler,
    error_for_status,
    serve_grpc,
)

ECHO = "/qkdn.test.Bridge/Echo"
STALL = "/qkdn.test.Bridge/Stall"
FAIL = "/qkdn.test.Bridge/Fail"
CHAT = "/qkdn.test.Bridge/Chat"
_GUARD = 10  # seconds: no test may hang longer


@pytest.fixture
def pki(tmp_path: Path) -> ConformancePKI:
    return conformance_pki(tmp_path)


@pytest.fixture(params=["plain", "mtls"])
def tls_mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


async def _echo(request: bytes, _info: CallInfo) -> bytes:
    return request


@asynccontextmanager
async def _serving(
    tls: TLSConfig | None,
    *,
    unary: Mapping[str, UnaryHandler] | None = None,
    streams: Mapping[str, StreamHandler] | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(
            lambda task_status: serve_grpc(
                "127.0.0.1",
                0,
                unary={ECHO: _echo, **(unary or {})},
                streams=streams or {},
                tls=tls,
                limits=limits or Limits(),
                task_status=task_status,
            )
        )
        yield port
        nursery.cancel_scope.cancel()


def _channel(port: int, tls: TLSConfig | None, limits: Limits | None = None) -> GrpcChannel:
    return GrpcChannel("127.0.0.1", port, tls=tls, limits=limits or Limits())


class _Stall:
    """A handler that never answers; ``started`` and ``ended`` (set in a finally) show what the
    server did with it."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.ended = trio.Event()

    async def __call__(self, _request: bytes, _info: CallInfo) -> bytes:
        self.started.set()
        try:
            await trio.sleep_forever()
        finally:
            self.ended.set()


async def test_unary_echo_and_identities(pki: ConformancePKI, tls_mode: str) -> None:
    seen: list[CallInfo] = []

    async def who(request: bytes, info: CallInfo) -> bytes:
        seen.append(info)
        return request[::-1]

    server_tls, client_tls = (pki.server, pki.client) if tls_mode == "mtls" else (None, None)
    with trio.fail_after(_GUARD):
        async with (
            _serving(server_tls, unary={"/qkdn.test.Bridge/Who": who}) as port,
            _channel(port, client_tls) as channel,
        ):
            assert await channel.call(ECHO, b"hello", timeout=5) == b"hello"
            assert await channel.call(ECHO, b"", timeout=5) == b""
            assert await channel.call("/qkdn.test.Bridge/Who", b"abc", timeout=5) == b"cba"
            assert channel.peer_id == ("km-a" if tls_mode == "mtls" else None)
            channel_id = channel.channel_id
    expected = "app-a" if tls_mode == "mtls" else None
    assert seen == [
        CallInfo(peer_id=expected, method="/qkdn.test.Bridge/Who", channel_id=channel_id)
    ]


async def test_deadline_gives_request_timeout_and_cancels_the_handler(
    pki: ConformancePKI,
) -> None:
    stall = _Stall()
    with trio.fail_after(_GUARD):
        async with (
            _serving(pki.server, unary={STALL: stall}) as port,
            _channel(port, pki.client) as channel,
        ):
            with pytest.raises(RequestTimeout, match=r"within 0\.3 s"):
                await channel.call(STALL, b"", timeout=0.3)
            await stall.ended.wait()
            assert await channel.call(ECHO, b"still there", timeout=5) == b"still there"


async def test_trio_cancellation_cancels_the_server_handler(pki: ConformancePKI) -> None:
    stall = _Stall()
    with trio.fail_after(_GUARD):
        async with (
            _serving(pki.server, unary={STALL: stall}) as port,
            _channel(port, pki.client) as channel,
        ):
            async with trio.open_nursery() as nursery:

                async def call_and_watch() -> None:
                    with trio.CancelScope() as scope:
                        nursery.start_soon(_cancel_when, stall.started, scope)
                        await channel.call(STALL, b"", timeout=None)
                    assert scope.cancelled_caught

                nursery.start_soon(call_and_watch)
            await stall.ended.wait()
            assert await channel.call(ECHO, b"x", timeout=5) == b"x"


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def test_handler_errors_become_typed_errors_and_the_server_goes_on(
    pki: ConformancePKI, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail(request: bytes, _info: CallInfo) -> bytes:
        if request == b"refuse":
            raise RequestRefused("number_of_keys: at most 4 keys per request")
        if request == b"deny":
            raise NotAuthorized("keys of app-b are not for app-a")
        if request == b"garbage":
            raise RemoteProtocolError("invalid KeyRequest: size: expected an integer")
        raise ValueError("a secret the peer must not see")

    with trio.fail_after(_GUARD):
        async with (
            _serving(pki.server, unary={FAIL: fail}) as port,
            _channel(port, pki.client) as channel,
        ):
            with pytest.raises(RequestRefused, match="at most 4 keys per request"):
                await channel.call(FAIL, b"refuse", timeout=5)
            with pytest.raises(NotAuthorized, match="not for app-a"):
                await channel.call(FAIL, b"deny", timeout=5)
            with pytest.raises(CallFailed, match="expected an integer") as invalid:
                await channel.call(FAIL, b"garbage", timeout=5)
            assert invalid.value.status == "INVALID_ARGUMENT"
            with pytest.raises(CallFailed) as internal:
                await channel.call(FAIL, b"boom", timeout=5)
            assert internal.value.status == "INTERNAL"
            assert internal.value.reason == "internal error"
            assert "secret" not in str(internal.value)
            assert await channel.call(ECHO, b"after", timeout=5) == b"after"
    assert "a secret the peer must not see" in caplog.text  # logged at the server only


async def test_unknown_method(pki: ConformancePKI) -> None:
    with trio.fail_after(_GUARD):
        async with _serving(pki.server) as port, _channel(port, pki.client) as channel:
            with pytest.raises(CallFailed, match=r"does not serve /no\.Such/Method") as caught:
                await channel.call("/no.Such/Method", b"", timeout=5)
            assert caught.value.status == "UNIMPLEMENTED"
            async with await channel.open_stream("/no.Such/Stream") as stream:
                with pytest.raises(CallFailed, match="does not serve") as caught:
                    await stream.receive()
                assert caught.value.status == "UNIMPLEMENTED"
            assert await channel.call(ECHO, b"x", timeout=5) == b"x"


async def test_messages_over_the_limit_are_refused_locally(pki: ConformancePKI) -> None:
    big = bytes(MAX_MESSAGE_SIZE + 1)
    with trio.fail_after(_GUARD):
        async with _serving(None, streams={CHAT: _chat}) as port, _channel(port, None) as channel:
            with pytest.raises(PayloadTooLarge):
                await channel.call(ECHO, big, timeout=5)
            assert len(await channel.call(ECHO, big[:-1], timeout=5)) == MAX_MESSAGE_SIZE
            async with await channel.open_stream(CHAT) as stream:
                with pytest.raises(PayloadTooLarge):
                    await stream.send(big)


@pytest.mark.parametrize("client", ["client_of_other_ca", "client_without_certificate"])
async def test_clients_the_server_does_not_trust_are_refused(
    pki: ConformancePKI, client: str
) -> None:
    with trio.fail_after(_GUARD):
        async with _serving(pki.server) as port:
            with pytest.raises(TransportError) as caught:
                async with _channel(port, getattr(pki, client)) as channel:
                    await channel.call(ECHO, b"x", timeout=5)
            print(caught.value)
            assert "certificate" in str(caught.value)
            async with _channel(port, pki.client) as channel:
                assert await channel.call(ECHO, b"x", timeout=5) == b"x"


async def test_a_server_of_another_ca_is_refused(pki: ConformancePKI) -> None:
    rogue_server = TLSConfig(
        ca=pki.server.ca, cert=pki.client_of_other_ca.cert, key=pki.client_of_other_ca.key
    )
    with trio.fail_after(_GUARD):
        async with _serving(rogue_server) as port:
            with pytest.raises(TransportError, match="did not verify"):
                async with _channel(port, pki.client) as channel:
                    await channel.call(ECHO, b"x", timeout=5)


def _nameless(pki: ConformancePKI, tmp_path: Path) -> TLSConfig:
    """A certificate that names no one (no CN, only an IP address as subjectAltName, valid for
    127.0.0.1), its key in the same file; ``ca`` trusts its CA and the kit's."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    issued.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "nameless.pem"))
    both = tmp_path / "both-cas.pem"
    both.write_bytes(pki.server.ca.read_bytes() + ca.cert_pem.bytes())
    return TLSConfig(ca=both, cert=tmp_path / "nameless.pem")


async def test_a_client_certificate_that_names_no_one_is_refused(
    pki: ConformancePKI, tmp_path: Path
) -> None:
    nameless = _nameless(pki, tmp_path)
    server_tls = TLSConfig(ca=nameless.ca, cert=pki.server.cert, key=pki.server.key)
    client_tls = TLSConfig(ca=pki.server.ca, cert=nameless.cert)
    with trio.fail_after(_GUARD):
        async with _serving(server_tls) as port, _channel(port, client_tls) as channel:
            with pytest.raises(TransportError, match="certificate names no one"):
                await channel.call(ECHO, b"x", timeout=5)


async def test_a_server_certificate_that_names_no_one_is_refused(
    pki: ConformancePKI, tmp_path: Path
) -> None:
    nameless = _nameless(pki, tmp_path)
    with trio.fail_after(_GUARD):
        async with _serving(TLSConfig(ca=pki.server.ca, cert=nameless.cert)) as port:
            with pytest.raises(TransportError, match="names no one"):
                async with _channel(
                    port, TLSConfig(ca=nameless.ca, cert=pki.client.cert, key=pki.client.key)
                ):
                    pass


async def test_closing_the_channel_fails_calls_in_progress(pki: ConformancePKI) -> None:
    stall = _Stall()
    with trio.fail_after(_GUARD):
        async with _serving(pki.server, unary={STALL: stall}) as port:
            channel = _channel(port, pki.client)
            async with channel, trio.open_nursery() as nursery:

                async def pending() -> None:
                    with pytest.raises(ConnectionBroken, match="closed"):
                        await channel.call(STALL, b"", timeout=None)

                nursery.start_soon(pending)
                await stall.started.wait()
                await channel.aclose()
            await stall.ended.wait()
            with pytest.raises(trio.ClosedResourceError):
                await channel.call(ECHO, b"x", timeout=5)


async def test_unreachable_server() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with trio.fail_after(_GUARD):
            async with _channel(port, None) as channel:
                with pytest.raises(TransportError, match="cannot reach"):
                    await channel.call(ECHO, b"x", timeout=5)


_ADDRESS = "failed to connect to all addresses; last error: "


@pytest.mark.parametrize(
    ("code", "details", "connected", "expected", "text"),
    [
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", True, RequestTimeout, "within 2 s"),
        (
            "UNAVAILABLE",
            _ADDRESS + "UNKNOWN: ipv4:127.0.0.1:1: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
            "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED",
            False,
            TransportError,
            "certificate did not verify",
        ),
        (
            "UNAVAILABLE",
            _ADDRESS + "UNKNOWN: ipv4:127.0.0.1:1: Custom verification check failed with error: "
            "UNAUTHENTICATED: Hostname Verification Check failed.",
            False,
            TransportError,
            "does not name the host",
        ),
        (
            "UNAVAILABLE",
            _ADDRESS + "UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed",
            False,
            TransportError,
            "probably refused our certificate",
        ),
        ("UNAVAILABLE", "Socket closed", True, ConnectionBroken, "broken"),
        ("UNAUTHENTICATED", "the client certificate names no one", True, TransportError, "no one"),
        ("CANCELLED", "Cancelled on the server side", True, PeerClosed, "is it stopping"),
        ("PERMISSION_DENIED", "not yours", True, NotAuthorized, "not yours"),
        ("FAILED_PRECONDITION", "too many", True, RequestRefused, "too many"),
        ("RESOURCE_EXHAUSTED", "Concurrent RPC limit exceeded!", True, CallFailed, "limit"),
    ],
)
def test_status_mapping(
    code: str, details: str, connected: bool, expected: type[Exception], text: str
) -> None:
    error = error_for_status(
        getattr(grpc.StatusCode, code),
        details,
        method=ECHO,
        target="127.0.0.1:1",
        timeout=2,
        connected=connected,
        secure=True,
    )
    assert type(error) is expected
    assert text in str(error)


async def _chat(stream: ByteStream, info: CallInfo) -> None:
    """Answer every message with ``<peer>:<message>`` until the client ends, then say bye."""
    count = 0
    while True:
        try:
            message = await stream.receive()
        except PeerClosed:
            break
        count += 1
        await stream.send(f"{info.peer_id}:".encode() + message)
    await stream.send(f"bye after {count}".encode())


async def test_bidirectional_stream_both_ways_with_a_clean_end(
    pki: ConformancePKI, tls_mode: str
) -> None:
    server_tls, client_tls = (pki.server, pki.client) if tls_mode == "mtls" else (None, None)
    count = 2000  # well over the buffers: back-pressure both ways
    received: list[bytes] = []
    with trio.fail_after(_GUARD):
        async with (
            _serving(server_tls, streams={CHAT: _chat}) as port,
            _channel(port, client_tls) as channel,
            await channel.open_stream(CHAT) as stream,
        ):

            async def send_all() -> None:
                for number in range(count):
                    await stream.send(b"%d" % number)
                await stream.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all)
                while True:
                    try:
                        received.append(await stream.receive())
                    except PeerClosed:
                        break
            with pytest.raises(PeerClosed):
                await stream.receive()
            with pytest.raises(trio.ClosedResourceError):
                await stream.send(b"too late")
    prefix = b"app-a:" if tls_mode == "mtls" else b"None:"
    assert received == [prefix + b"%d" % n for n in range(count)] + [b"bye after %d" % count]


async def test_stream_ended_by_the_server_and_stream_errors(pki: ConformancePKI) -> None:
    async def countdown(stream: ByteStream, _info: CallInfo) -> None:
        start = int(await stream.receive())
        for number in range(start, 0, -1):
            await stream.send(b"%d" % number)
        # returning ends the call

    async def refuse(stream: ByteStream, _info: CallInfo) -> None:
        await stream.receive()
        raise RequestRefused("no key for that peer")

    streams = {"/qkdn.test.Bridge/Countdown": countdown, "/qkdn.test.Bridge/Refuse": refuse}
    with trio.fail_after(_GUARD):
        async with (
            _serving(pki.server, streams=streams) as port,
            _channel(port, pki.client) as channel,
        ):
            async with await channel.open_stream("/qkdn.test.Bridge/Countdown") as stream:
                await stream.send(b"50")
                got = [int(await stream.receive()) for _ in range(50)]
                assert got == list(range(50, 0, -1))
                with pytest.raises(PeerClosed):
                    await stream.receive()
                with pytest.raises(PeerClosed):
                    await stream.send(b"after the end")
            async with await channel.open_stream("/qkdn.test.Bridge/Refuse") as stream:
                await stream.send(b"hi")
                with pytest.raises(RequestRefused, match="no key for that peer"):
                    await stream.receive()


async def test_client_closing_a_stream_cancels_the_server_handler(pki: ConformancePKI) -> None:
    started, ended = trio.Event(), trio.Event()

    async def talker(stream: ByteStream, _info: CallInfo) -> None:
        try:
            while True:  # sends until the buffers are full, then waits for a reader
                await stream.send(b"chatter")
                started.set()
        finally:
            ended.set()

    with trio.fail_after(_GUARD):
        async with (
            _serving(pki.server, streams={"/qkdn.test.Bridge/Talk": talker}) as port,
            _channel(port, pki.client) as channel,
        ):
            stream = await channel.open_stream("/qkdn.test.Bridge/Talk")
            assert await stream.receive() == b"chatter"
            await started.wait()
            await stream.aclose()
            await ended.wait()
            await stream.aclose()  # harmless
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive()
            assert await channel.call(ECHO, b"x", timeout=5) == b"x"


async def test_many_concurrent_calls(pki: ConformancePKI) -> None:
    calls = 100
    arrived = 0
    all_in = trio.Event()

    async def gather(request: bytes, _info: CallInfo) -> bytes:
        nonlocal arrived
        arrived += 1
        if arrived == calls:
            all_in.set()
        await all_in.wait()  # answers only once every call is being served at once
        return request

    results: dict[int, bytes] = {}
    limits = Limits(max_in_flight=calls)
    with trio.fail_after(_GUARD):
        async with (
            _serving(pki.server, unary={"/qkdn.test.Bridge/Gather": gather}, limits=limits) as port,
            _channel(port, pki.client) as channel,
        ):

            async def one(number: int) -> None:
                results[number] = await channel.call(
                    "/qkdn.test.Bridge/Gather", b"%d" % number, timeout=5
                )

            async with trio.open_nursery() as nursery:
                for number in range(calls):
                    nursery.start_soon(one, number)
    assert results == {number: b"%d" % number for number in range(calls)}


async def test_no_thread_outlives_the_server_and_channel(pki: ConformancePKI) -> None:
    """Every thread the bridge or grpcio starts for a server, a channel, calls and streams has
    ended when ``serve_grpc`` and ``GrpcChannel.aclose`` return (grpcio starts no process-wide
    Python thread of its own for these)."""
    before = set(threading.enumerate())
    stall = _Stall()
    stopped = trio.Event()
    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:

            async def run_server(task_status: trio.TaskStatus[int]) -> None:
                await serve_grpc(
                    "127.0.0.1",
                    0,
                    unary={ECHO: _echo, STALL: stall},
                    streams={CHAT: _chat},
                    tls=pki.server,
                    limits=Limits(),
                    task_status=task_status,
                )

            async def server_until(
                scope: trio.CancelScope, task_status: trio.TaskStatus[int]
            ) -> None:
                with scope:
                    await run_server(task_status)
                stopped.set()

            server_scope = trio.CancelScope()
            port: int = await nursery.start(server_until, server_scope)
            async with _channel(port, pki.client) as channel:
                assert await channel.call(ECHO, b"x", timeout=5) == b"x"
                with pytest.raises(RequestTimeout):
                    await channel.call(STALL, b"", timeout=0.2)
                async with await channel.open_stream(CHAT) as stream:
                    await stream.send(b"one")
                    assert await stream.receive() == b"app-a:one"
                left_open = await channel.open_stream(CHAT)  # the server stops under it
                await left_open.send(b"two")
                assert await left_open.receive() == b"app-a:two"
                async with trio.open_nursery() as calls:
                    calls.start_soon(functools.partial(channel.call, STALL, b"", timeout=None))
                    await stall.started.wait()
                    calls.cancel_scope.cancel()
                server_scope.cancel()
                await stopped.wait()
                with pytest.raises(TransportError):
                    await left_open.receive()
                with pytest.raises(TransportError):
                    await channel.call(ECHO, b"x", timeout=5)
            # the channel closes the stream left open
    after = set(threading.enumerate())
    assert after - before == set(), f"threads left: {sorted(t.name for t in after - before)}"
