"""HTTP/2 on a grpcs:// server, over real mutual TLS: rapid reset (CVE-2023-44487) and h2c.

The attacker is a real HTTP/2 client: the ``h2`` state machine on a trio TLS stream, with ALPN
``h2`` and a valid client certificate. It opens gRPC calls, each a complete Ak key request to
``/qkdn.v1.Ak/KeyRequest``, and resets each at once, as fast as ``h2`` writes them; then it
ignores the server's SETTINGS_MAX_CONCURRENT_STREAMS. A good client
(:func:`qkdn_sdk.transport.connect`) must be served all along and right after the attacker
leaves, and the server must be idle within a second of the attacker closing its connection.
An HTTP/1.1 client asking to upgrade to h2c gets no way in.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest
import trio
from qkdn_grpc._codec import encode, rpc_path

from qkdn_sdk.messages import Message, Role, ak, example, received_by
from qkdn_sdk.testing import CLIENT_ID, ConformancePKI, conformance_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, connect, serve

_GUARD = 60  # seconds: the test may not hang longer
_LIMITS = Limits()
_STREAMS = 20_000  # the attacker's calls that are opened and reset at once
_BURST = 200  # calls per write
_CHECKPOINT = 10  # every so many bursts, the attacker waits for the good client to be served
_HELD = 8  # calls the attacker opens before the burst and keeps open until it leaves
_EXTRA = 16  # calls the attacker opens beyond the server's SETTINGS_MAX_CONCURRENT_STREAMS
_ATTACKER = "rapid reset"  # the application_name of the attacker's requests
_GOOD = attrs.evolve(example(ak.KeyRequest), application_source_id=CLIENT_ID)
_ANSWER = example(ak.ResponseToKeyRequest)


@pytest.fixture
def pki(tmp_path: Path) -> ConformancePKI:
    return conformance_pki(tmp_path)


class _Handler:
    """Answers the good client at once; an attacker's request is served until it is cancelled
    (so a call the server did not cancel shows as ``attacker_served``)."""

    def __init__(self) -> None:
        self.calls = 0
        """Every request that reached the handler."""
        self.attacker_served = 0
        """The attacker's requests being served now."""
        self.most_attacker_served = 0
        self._changed = trio.Event()

    async def __call__(self, message: Message, _connection: Connection) -> Message | None:
        self.calls += 1
        if getattr(message, "application_name", None) != _ATTACKER:
            return _ANSWER
        self.attacker_served += 1
        self.most_attacker_served = max(self.most_attacker_served, self.attacker_served)
        self._changed.set()
        try:
            await trio.sleep_forever()
        finally:
            self.attacker_served -= 1
        raise AssertionError("unreachable: only cancellation ends an attacker's request")

    async def wait_attacker_served(self, count: int) -> None:
        while self.attacker_served < count:
            self._changed = trio.Event()
            await self._changed.wait()


@asynccontextmanager
async def _server(pki: ConformancePKI, handler: _Handler) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: serve(
                "grpcs://127.0.0.1:0",
                handler,
                tls=pki.server,
                accepts=received_by(Role.KM),
                limits=_LIMITS,
                task_status=task_status,
            )
        )
        try:
            yield int(info.url.rsplit(":", 1)[1])
        finally:
            nursery.cancel_scope.cancel()


class _UnrulyH2(h2.connection.H2Connection):
    """An HTTP/2 client that, once told to, opens streams beyond the server's
    SETTINGS_MAX_CONCURRENT_STREAMS (``h2`` refuses to on its own), as an attacker does."""

    ignore_stream_limit = False

    @property
    def open_outbound_streams(self) -> int:
        count = super().open_outbound_streams
        return 0 if self.ignore_stream_limit else count


def _code_name(code: int | None) -> str:
    """The name of an HTTP/2 error code (the number when it has none)."""
    return next((known.name for known in h2.errors.ErrorCodes if known == code), str(code))


@attrs.define
class _Seen:
    """What the server did to the attacker."""

    max_concurrent_streams: int | None = None
    """The server's SETTINGS_MAX_CONCURRENT_STREAMS."""
    resets: Counter[str] = attrs.field(factory=Counter)
    """The RST_STREAM frames the server sent, by error code."""
    pings: int = 0
    goaway: str | None = None
    """The error code of the server's GOAWAY, if it sent one."""
    ended_by_server: bool = False


class _Attacker:
    """A raw HTTP/2 client on mutual TLS; :meth:`connected` reads what the server sends (and
    answers its SETTINGS and PINGs, as ``h2`` does) into :attr:`seen`."""

    def __init__(self, port: int, tls: TLSConfig) -> None:
        self._port = port
        self._tls = tls
        self._h2 = _UnrulyH2(h2.config.H2Configuration(client_side=True))
        self._send_lock = trio.Lock()
        self._stream: trio.SSLStream[trio.SocketStream]
        self._settings = trio.Event()
        self._changed = trio.Event()
        self.seen = _Seen()
        self.opened = 0
        self._headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", rpc_path(ak.KeyRequest)),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        request = attrs.evolve(_GOOD, application_name=_ATTACKER)
        message = encode(request)
        self._body = b"\x00" + len(message).to_bytes(4, "big") + message  # gRPC, uncompressed

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[_Attacker]:
        """Connect, exchange SETTINGS; leaving the block closes the TCP connection at once."""
        context = self._tls.client_context()
        context.set_alpn_protocols(["h2"])
        tcp = await trio.open_tcp_stream("127.0.0.1", self._port)
        self._stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
        try:
            await self._stream.do_handshake()
            assert self._stream.selected_alpn_protocol() == "h2"
            self._h2.initiate_connection()
            await self._flush()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read)
                await self._settings.wait()
                yield self
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(self._stream)

    async def _flush(self) -> None:
        async with self._send_lock:
            data = self._h2.data_to_send()
            if data:
                await self._stream.send_all(data)

    async def _read(self) -> None:
        try:
            while data := await self._stream.receive_some(65536):
                for event in self._h2.receive_data(data):
                    self._record(event)
                self._changed.set()
                await self._flush()
        except (trio.BrokenResourceError, h2.exceptions.ProtocolError):
            pass
        self.seen.ended_by_server = True
        self._changed.set()

    def _record(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.seen.max_concurrent_streams = self._h2.remote_settings.max_concurrent_streams
            self._settings.set()
        elif isinstance(event, h2.events.StreamReset) and event.remote_reset:
            self.seen.resets[_code_name(event.error_code)] += 1
        elif isinstance(event, h2.events.PingReceived):
            self.seen.pings += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.seen.goaway = _code_name(event.error_code)

    async def wait_refused(self, count: int) -> None:
        """Until the server refused ``count`` streams (or ended the connection)."""
        while self.seen.resets["REFUSED_STREAM"] < count and not self.seen.ended_by_server:
            self._changed = trio.Event()
            await self._changed.wait()

    def _open(self) -> int:
        stream_id = self._h2.get_next_available_stream_id()
        self._h2.send_headers(stream_id, self._headers)
        self._h2.send_data(stream_id, self._body, end_stream=True)
        self.opened += 1
        return stream_id

    async def hold(self, count: int, *, beyond_limit: bool = False) -> None:
        """Open ``count`` calls and keep them open."""
        self._h2.ignore_stream_limit = beyond_limit
        for _ in range(count):
            self._open()
        await self._flush()

    async def rapid_reset(
        self, streams: int, *, between_bursts: Callable[[int], Awaitable[None]]
    ) -> None:
        """Open ``streams`` calls and reset each at once, :data:`_BURST` per write; stops when
        the server ends the connection."""
        for burst, start in enumerate(range(0, streams, _BURST)):
            try:
                for _ in range(min(_BURST, streams - start)):
                    self._h2.reset_stream(self._open(), h2.errors.ErrorCodes.CANCEL)
                await self._flush()
            except (h2.exceptions.ProtocolError, trio.BrokenResourceError):
                return
            await between_bursts(burst)


class _GoodClient:
    """Sends the good request over and over until :meth:`stop`; any failure fails the test."""

    def __init__(self, client: Connection) -> None:
        self._client = client
        self.served = 0
        self._stopped = False
        self._progress = trio.Event()

    async def run(self) -> None:
        while not self._stopped:
            assert await self._client.request(_GOOD) == _ANSWER
            self.served += 1
            self._progress.set()

    async def served_once_more(self) -> None:
        target = self.served + 1
        while self.served < target:
            self._progress = trio.Event()
            await self._progress.wait()

    def stop(self) -> None:
        self._stopped = True


async def test_a_rapid_reset_burst_leaves_the_good_client_served_and_the_server_idle(
    pki: ConformancePKI,
) -> None:
    """20,000 calls opened and reset at once on one connection, with calls held open before
    and beyond SETTINGS_MAX_CONCURRENT_STREAMS: the good client on its own connection is served
    throughout and right after; the server refuses the streams beyond the limit; the attacker's
    calls never reach the handler beyond the limit, are all cancelled within a second of the
    attacker closing, and the server is idle then."""
    handler = _Handler()
    with trio.fail_after(_GUARD):
        async with (
            _server(pki, handler) as port,
            connect(f"grpcs://127.0.0.1:{port}", tls=pki.client) as client,
        ):
            good = _GoodClient(client)
            attacker = _Attacker(port, pki.client)

            async def let_the_good_client_in(burst: int) -> None:
                # The attack runs flat out between checkpoints; at one, the good client must
                # be served while the attacker's resets are still arriving.
                if burst % _CHECKPOINT == _CHECKPOINT - 1:
                    await good.served_once_more()

            async with trio.open_nursery() as nursery:
                async with attacker.connected():
                    assert attacker.seen.max_concurrent_streams == _LIMITS.max_in_flight
                    await attacker.hold(_HELD)
                    await handler.wait_attacker_served(_HELD)
                    nursery.start_soon(good.run)
                    await attacker.rapid_reset(_STREAMS, between_bursts=let_the_good_client_in)
                    served_during_burst = good.served
                    await attacker.hold(_LIMITS.max_in_flight - _HELD + _EXTRA, beyond_limit=True)
                    await attacker.wait_refused(_EXTRA)
                closed_at = trio.current_time()
                good.stop()
            assert await client.request(_GOOD) == _ANSWER  # served right after

            # What grpcio 1.85 does to the attacker: it refuses the streams beyond the limit
            # (REFUSED_STREAM) and keeps the connection (no GOAWAY); the resets themselves are
            # accepted (and answered with a PING now and then).
            seen = attacker.seen
            assert not seen.ended_by_server, seen
            assert seen.goaway is None, seen
            assert attacker.opened == _STREAMS + _LIMITS.max_in_flight + _EXTRA
            assert seen.resets["REFUSED_STREAM"] >= _EXTRA, seen
            assert served_during_burst >= _STREAMS // _BURST // _CHECKPOINT
            assert handler.most_attacker_served <= _LIMITS.max_in_flight

            # "Idle within a second of the attacker closing", measured: from a second after
            # the close, the handler is serving nothing of the attacker's and gets no call,
            # and the process (server, client and test) spends a small share of one core over
            # a quiet period. A server still working through the attacker's 20,000 streams
            # keeps a core busy; an idle one uses about 1 %: the bound is generous.
            await trio.sleep_until(closed_at + 1.0)
            assert handler.attacker_served == 0
            calls = handler.calls
            cpu_before, wall_before = time.process_time(), trio.current_time()
            await trio.sleep(1.0)  # the quiet period measured
            cpu = time.process_time() - cpu_before
            wall = trio.current_time() - wall_before
            assert handler.calls == calls
            assert cpu < 0.2 * wall, f"{cpu:.3f} s of CPU in {wall:.3f} s after the attack"


_H2C_UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
)


async def test_an_h2c_upgrade_gets_no_way_in(pki: ConformancePKI) -> None:
    """gRPC over TLS is HTTP/2 negotiated by ALPN: a client offering only ``http/1.1`` that asks
    to upgrade to h2c is answered nothing (never ``101 Switching Protocols``), its connection is
    closed, and the good client is served after it."""
    with trio.fail_after(_GUARD):
        async with (
            _server(pki, _Handler()) as port,
            connect(f"grpcs://127.0.0.1:{port}", tls=pki.client) as client,
        ):
            context = pki.client.client_context()
            context.set_alpn_protocols(["http/1.1"])
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            answer = b""
            async with trio.SSLStream(tcp, context, server_hostname="127.0.0.1") as stream:
                try:
                    await stream.send_all(_H2C_UPGRADE)
                    while data := await stream.receive_some(65536):
                        answer += data
                except trio.BrokenResourceError:
                    pass  # the server closed the connection
            assert answer == b""
            assert await client.request(_GOOD) == _ANSWER
