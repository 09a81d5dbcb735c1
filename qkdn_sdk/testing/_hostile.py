"""The hostile-peer suite: what a framed transport's server does when the peer is an attacker.

A plugin whose transport carries the Appendix I frames subclasses :class:`HostilePeerConformance`
beside :class:`~qkdn_sdk.testing.TransportConformance`, with the same ``target`` fixture. The
attacker writes raw bytes (:meth:`HostilePeerConformance.raw_stream`: TCP, wrapped in real TLS for
TLS targets, or the in-memory pipe for ``memory://``); a good client on a connection of its own
is served all along. Each test asserts the rules of ``docs/transports.md`` ("Hostile peers"):

- every bad frame gets an answer of bounded size, and a valid request on the same connection
  succeeds afterwards wherever the framing held;
- requests already sent are answered after a half-close or a lost framing;
- a trickle is closed at the idle timeout, a peer that does not read at the send timeout;
- connections over a cap are refused promptly, and the slots come back;
- a flood of bad frames leaves the server's memory where it was.
"""

from __future__ import annotations

import struct
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
import trio

from qkdn_sdk.codecs.frame import FrameDecoder, decode_message, encode_message
from qkdn_sdk.codecs.payload import MAX_DEPTH
from qkdn_sdk.errors import MAX_REASON_LENGTH
from qkdn_sdk.messages import Key, Message, Role, ak, example, failure_reason, received_by
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.testing._conformance import (
    _GUARD,
    CLIENT_ID,
    ConformancePKI,
    ConformanceTarget,
    TransportConformance,
    _answer_examples,
)
from qkdn_sdk.transport import Connection, Limits, transport_registry

__all__ = ["HostilePeerConformance", "RawPeer"]

_REQUEST = example(ak.KeyRequest, sender=CLIENT_ID)
_RESPONSE = example(ak.ResponseToKeyRequest)
_BIG = ak.KeyRequest(application_destination_id="app-b", application_name="big")


async def _answer(message: Message, connection: Connection) -> Message | None:
    """Examples, and a response of about 60 KB to ``_BIG`` (to fill a peer that does not read)."""
    if message == _BIG:
        keys = [Key(key=bytes(32), key_id=f"{index:08d}") for index in range(700)]
        return ak.ResponseToKeyRequest(keys=keys, response="success")
    return await _answer_examples(message, connection)


class RawPeer:
    """An attacker's end of a connection: writes whatever bytes it is told, reads frames."""

    def __init__(self, stream: trio.abc.HalfCloseableStream | trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()

    async def frame(self, message_id: int, code: int, payload: bytes, version: int = 1) -> None:
        await self.stream.send_all(_frame(message_id, code, payload, version))

    async def next_message(self) -> tuple[int, Message]:
        """The next frame the server sends, decoded. Fails the test if the server closes."""
        while (frame := self.decoder.next_frame()) is None:
            data = await self.stream.receive_some(65536)
            assert data, "the server closed the connection"
            self.decoder.receive_data(data)
        return frame.message_id, decode_message(frame)

    async def closed_by_server(self) -> bool:
        """Read (and drop) until the server closes: True at EOF or a reset."""
        try:
            while await self.stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return True


def _frame(message_id: int, code: int, payload: bytes, version: int = 1) -> bytes:
    return struct.pack(">HIHH", version, message_id, code, len(payload)) + payload


def _rss_bytes() -> int:
    """This process's resident memory now (Linux), or 0 where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    import resource

    return pages * resource.getpagesize()


class HostilePeerConformance(TransportConformance):
    """The hostile-peer suite (on top of the conformance kit) for transports of TCP frames.

    Override :meth:`raw_stream` for a transport the default does not know how to reach with raw
    bytes (the default knows ``memory://`` and TCP, with TLS for TLS targets).
    """

    @asynccontextmanager
    async def raw_stream(
        self, target: ConformanceTarget, pki: ConformancePKI, url: str
    ) -> AsyncIterator[trio.abc.Stream]:
        """A byte stream to the server at ``url``, authenticated as the kit's client."""
        parsed = urllib.parse.urlsplit(url)
        stream: trio.abc.Stream
        if parsed.scheme == "memory":
            transport = transport_registry().lookup("memory")
            stream = await transport.open_stream(parsed, identity=CLIENT_ID)  # type: ignore[attr-defined]
        else:
            assert parsed.hostname is not None
            assert parsed.port is not None
            stream = await trio.open_tcp_stream(parsed.hostname, parsed.port)
        try:
            if target.tls:
                stream = trio.SSLStream(
                    stream, pki.client.client_context(), server_hostname=parsed.hostname
                )
                await stream.do_handshake()
            yield stream
        finally:
            await trio.aclose_forcefully(stream)

    @asynccontextmanager
    async def _attack(
        self,
        target: ConformanceTarget,
        pki: ConformancePKI,
        limits: Limits | None = None,
    ) -> AsyncIterator[tuple[str, RawPeer]]:
        async with (
            self._server(target, pki, _answer, limits) as url,
            self.raw_stream(target, pki, url) as stream,
        ):
            yield url, RawPeer(stream)

    async def _good_client_is_served(
        self, target: ConformanceTarget, pki: ConformancePKI, url: str, rounds: int = 3
    ) -> None:
        async with self._client(target, pki, url) as client:
            for _ in range(rounds):
                assert await client.request(_REQUEST) == _RESPONSE

    # --- bad frames ------------------------------------------------------------------------------

    @pytest.mark.trio
    async def test_bad_frames_get_bounded_answers_and_the_connection_goes_on(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """Junk of every kind gets one answer each, never longer than the bound, and the same
        connection then serves a valid request; a good client is served meanwhile."""
        deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
        bad = [
            (0x2199, b"{}"),  # unknown code
            (ak.KeyRequest.code, b"{not json"),
            (ak.KeyRequest.code, b'{"application_destination_id": 5, "number_of_keys": "2"}'),
            (ak.KeyRequest.code, b'{"application_destination_id": "b", "extension": %s}' % deep),
            (0x410C, b'{"key_ids": "abc"}'),  # a failure must not copy text into a list
            (0x1185, b'{"key_ids": "abc"}'),
            (0x1203, orjson.dumps({"keys": [1] * 32_000, "response": "x"})),
            (0x2102, orjson.dumps({"application_source_id": "a", "key_ids": [1] * 32_700})),
            (ak.KeyRequest.code, orjson.dumps({"x" * 65_000: 1})),
            (ak.ResponseToSessionCreationRequest.code, b"[]"),
        ]
        with trio.fail_after(_GUARD):
            async with self._attack(target, pki) as (url, peer):
                for message_id, (code, payload) in enumerate(bad, start=100):
                    await peer.frame(message_id, code, payload)
                    answered_id, answer = await peer.next_message()
                    assert answered_id == message_id
                    reason = failure_reason(answer)
                    assert reason is not None, f"0x{code:04X} was not refused"
                    assert len(reason) <= MAX_REASON_LENGTH
                    assert len(encode_message(answer, 0)) <= 2 * MAX_REASON_LENGTH
                    await peer.stream.send_all(encode_message(_REQUEST, message_id + 1000))
                    assert await peer.next_message() == (message_id + 1000, _RESPONSE)
                await self._good_client_is_served(target, pki, url)

    @pytest.mark.trio
    async def test_a_message_the_server_does_not_accept_gets_an_error_indication(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """A server that accepts what a KM receives refuses the session creation notification
        (0x1206), which only a KM sends; its handler never sees it."""
        seen: list[Message] = []

        async def handler(message: Message, connection: Connection) -> Message | None:
            seen.append(message)
            return await _answer_examples(message, connection)

        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, handler, accepts=received_by(Role.KM)) as url,
                self.raw_stream(target, pki, url) as stream,
            ):
                peer = RawPeer(stream)
                await stream.send_all(encode_message(example(ak.SessionCreationNotification), 7))
                message_id, answer = await peer.next_message()
                assert message_id == 7
                assert isinstance(answer, ErrorIndication)
                assert answer.command_code == 0x1206
                assert "sent by a KM to an application" in answer.reason
                await stream.send_all(encode_message(_REQUEST, 9))
                assert await peer.next_message() == (9, _RESPONSE)
        assert seen == [_REQUEST]

    # --- the end of input ------------------------------------------------------------------------

    @pytest.fixture
    def half_closeable_target(self, target: ConformanceTarget) -> ConformanceTarget:
        """``target``, where a client can half-close (TLS has no half-close: its close_notify
        ends both directions)."""
        if target.tls:
            pytest.skip(f"{target.url}: TLS streams cannot half-close")
        return target

    @pytest.mark.trio
    async def test_requests_are_answered_after_a_half_close(
        self, half_closeable_target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        target = half_closeable_target
        with trio.fail_after(_GUARD):
            async with self._attack(target, pki) as (_url, peer):
                assert isinstance(peer.stream, trio.abc.HalfCloseableStream)
                await peer.stream.send_all(
                    encode_message(_REQUEST, 1) + encode_message(_REQUEST, 3)
                )
                await peer.stream.send_eof()
                answers = [await peer.next_message(), await peer.next_message()]
                assert sorted(answers, key=lambda pair: pair[0]) == [(1, _RESPONSE), (3, _RESPONSE)]
                assert await peer.closed_by_server()

    @pytest.mark.trio
    async def test_requests_before_a_lost_framing_are_answered(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """Valid requests in the same read as a frame of an unknown version get their answers,
        then the error indication that closes the connection."""
        with trio.fail_after(_GUARD):
            async with self._attack(target, pki) as (url, peer):
                await peer.stream.send_all(
                    encode_message(_REQUEST, 1)
                    + encode_message(_REQUEST, 3)
                    + _frame(5, ak.KeyRequest.code, b"{}", version=9)
                )
                answers = [await peer.next_message() for _ in range(3)]
                assert sorted(answers[:2], key=lambda pair: pair[0]) == [
                    (1, _RESPONSE),
                    (3, _RESPONSE),
                ]
                last_id, last = answers[2]
                assert last_id == 5
                assert isinstance(last, ErrorIndication)
                assert last.closing
                assert "unsupported frame version 9" in last.reason
                assert await peer.closed_by_server()
                await self._good_client_is_served(target, pki, url)

    # --- slow and greedy peers -------------------------------------------------------------------

    @pytest.mark.trio
    async def test_a_trickle_is_closed_at_the_idle_timeout(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """Idle time counts from the last complete frame: a peer that sends one byte at a time,
        well within the idle timeout each, is still closed at it."""
        limits = Limits(idle_timeout=0.5)
        closed = trio.Event()
        trickled = 0

        async def trickle(peer: RawPeer) -> None:
            nonlocal trickled
            header = struct.pack(">HIHH", 1, 1, ak.KeyRequest.code, 60_000)
            # The attack itself is paced; nothing here waits for the server with a sleep.
            for byte in header + b"x" * 60_000:
                if closed.is_set():
                    return
                try:
                    await peer.stream.send_all(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                trickled += 1
                await trio.sleep(0.05)

        with trio.fail_after(_GUARD):
            async with self._attack(target, pki, limits) as (url, peer), trio.open_nursery() as n:
                n.start_soon(trickle, peer)
                await self._good_client_is_served(target, pki, url)
                assert await peer.closed_by_server()
                closed.set()
        assert trickled < 200  # closed after about 10 bytes, not after the 60,010 of the frame

    @pytest.mark.trio
    async def test_a_peer_that_does_not_read_is_disconnected(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """A peer that asks for large answers and never reads them is cut off at the send
        timeout (its writes then fail); a good client is served meanwhile and afterwards."""
        limits = Limits(send_timeout=0.5)
        with trio.fail_after(_GUARD):
            async with self._attack(target, pki, limits) as (url, peer):
                sent = 0
                dropped = False
                while not dropped:  # the server reads until its answers back up, then drops us
                    try:
                        await peer.stream.send_all(encode_message(_BIG, 2 * sent + 1))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        dropped = True
                    sent += 1
                    if sent == 4:
                        await self._good_client_is_served(target, pki, url)
                await self._good_client_is_served(target, pki, url)
        assert sent > 4

    # --- caps ------------------------------------------------------------------------------------

    @pytest.mark.trio
    async def test_connections_over_the_per_peer_cap_are_refused(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        limits = Limits(max_connections=50, max_connections_per_peer=3)
        with trio.fail_after(_GUARD):
            async with self._server(target, pki, _answer, limits) as url:
                async with (
                    self.raw_stream(target, pki, url) as first,
                    self.raw_stream(target, pki, url) as _second,
                    self.raw_stream(target, pki, url) as _third,
                ):
                    async with self.raw_stream(target, pki, url) as fourth:
                        refused = RawPeer(fourth)
                        message_id, answer = await refused.next_message()
                        assert message_id == 0
                        assert isinstance(answer, ErrorIndication)
                        assert answer.closing
                        assert "too many connections from" in answer.reason
                        assert "(limit 3)" in answer.reason
                        assert await refused.closed_by_server()
                    kept = RawPeer(first)  # the connections within the cap work
                    await first.send_all(encode_message(_REQUEST, 1))
                    assert await kept.next_message() == (1, _RESPONSE)
                # the slots come back when the connections end
                await self._good_client_is_served(target, pki, url)

    @pytest.mark.trio
    async def test_a_flood_past_the_server_cap_is_closed_promptly(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """Over ``max_connections`` a connection is closed at once; when the flood ends, the
        server serves again."""
        limits = Limits(max_connections=4, max_connections_per_peer=4)
        with trio.fail_after(_GUARD):
            async with self._server(target, pki, _answer, limits) as url:
                async with (
                    self.raw_stream(target, pki, url) as a,
                    self.raw_stream(target, pki, url) as b,
                    self.raw_stream(target, pki, url) as c,
                    self.raw_stream(target, pki, url) as d,
                ):
                    for stream in (a, b, c, d):  # all four are in (and counted) before the flood
                        await stream.send_all(encode_message(_REQUEST, 1))
                        assert await RawPeer(stream).next_message() == (1, _RESPONSE)
                    for _ in range(20):
                        try:
                            async with self.raw_stream(target, pki, url) as extra:
                                assert await RawPeer(extra).closed_by_server()
                        except (trio.BrokenResourceError, OSError):
                            pass  # refused during the TLS handshake: also closed
                await self._good_client_is_served(target, pki, url)

    # --- memory ----------------------------------------------------------------------------------

    @pytest.mark.trio
    async def test_memory_stays_bounded_under_a_flood_of_bad_frames(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """2,000 bad frames of 64 KB (128 MB) through one connection: every one answered, and
        the process holds no more than a few MB more afterwards."""
        payload = orjson.dumps({"application_source_id": "a", "key_ids": [1] * 32_700})
        frames = 2_000
        with trio.fail_after(_GUARD * 3):
            async with self._attack(target, pki) as (url, peer):
                await peer.frame(1, 0x2102, payload)  # warm up: first answers allocate caches
                await peer.next_message()
                before = _rss_bytes()

                async def flood() -> None:
                    for message_id in range(3, 3 + 2 * frames, 2):
                        await peer.frame(message_id, 0x2102, payload)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood)
                    for _ in range(frames):
                        _, answer = await peer.next_message()
                        assert failure_reason(answer) is not None
                grown = _rss_bytes() - before
                await self._good_client_is_served(target, pki, url)
        assert grown < 32 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB"
