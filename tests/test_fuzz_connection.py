"""Fuzzing live connections: every message's example frame, mutated, written to a real server.

For every message class, ``example(cls)`` is encoded and mutated (bits flipped, bytes inserted or
deleted, truncated, Version, MessageID, CommandCode or Length changed, the payload replaced by
mutated JSON or junk, frames concatenated, bursts of requests over the in-flight limit, writes
split anywhere) and written to the serving side of a
:class:`~qkdn_sdk.transport.FramedConnection`, followed by a valid request (the *probe*).
The peer is hand-made (raw bytes on the stream), so nothing on the client side can smooth over
what the server does.

The contract checked (docs/transports.md, "Hostile peers"; qkdn_sdk/transport/_framed.py): every
frame gets what it is owed, with its own MessageID --

- a request that decodes: its response (here, ``example(response_type)`` from the handler);
- a request whose payload breaks its table, or that a peer ID claim refutes: a failure of its
  response type, or an error indication;
- an unknown command code, or a bad message that is not a request: an error indication naming
  the code;
- a one-way message that decodes (a response, an error indication, an update): nothing;

and the connection ends only in a documented way: a frame with a Version other than 1, or a
stream that ends inside a frame, gets the answers owed for the frames before it, then one error
indication with ``closing: true``, then EOF; a peer that half-closes gets its answers, then EOF.

Which frames a byte stream holds comes from the model in tests/fuzzing.py (written from the frame
format, not from the decoder); what each frame is owed, from decoding it. The server's own
errors (an ERROR log of the transport: a handler or a connection that failed, an answer that
could not be encoded) fail the input that caused them.

Most inputs go over an in-memory stream (``trio.testing.memory_stream_pair``), some thousands
over real ``tcp://`` on 127.0.0.1. Each input is built from a seeded :class:`random.Random`: a
failure prints the seed (``QKDN_FUZZ_SEED`` replays it) and the bytes written, in hex.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal

import attrs
import pytest
import trio
import trio.testing

from qkdn_sdk.codecs.frame import Frame, FrameDecoder, decode_message, encode_message
from qkdn_sdk.errors import MAX_REASON_LENGTH, FrameError, PayloadError
from qkdn_sdk.messages import (
    Message,
    Role,
    ak,
    example,
    failure_reason,
    message_class,
    received_by,
)
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.transport import Connection, FramedConnection, Limits, ServerInfo, serve
from qkdn_sdk.transport._memory import MemoryTransport
from tests.fuzzing import (
    MESSAGES,
    RandomSource,
    Split,
    WireFrame,
    budget,
    example_frame,
    mutate_frame,
    split_frames,
)

SEED = int(os.environ.get("QKDN_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
"""The seed of this run's inputs; set ``QKDN_FUZZ_SEED`` to replay a failure."""

MEMORY_INPUTS = budget("connections over memory")
TCP_INPUTS = budget("connections over tcp")
_SECONDS_PER_1000_INPUTS = 10.0  # the guard on a whole test: ten times what a slow CI machine needs
_PER_INPUT = 10.0  # seconds one input may take before it counts as unanswered
_PEER_ID = "fuzz-peer"
_BUSY = "too many requests in flight"
_PROBE = example(ak.KeyRequest)
_LIMITS = Limits(idle_timeout=None, drain_timeout=10.0)
_LOGGER = logging.getLogger("tests.fuzz")


_ANSWERS = {cls: example(response) for cls in MESSAGES if (response := cls.response_type())}


async def _answer(message: Message, _connection: Connection) -> Message | None:
    return _ANSWERS.get(type(message))


# --- what each input is owed ------------------------------------------------------------------


@attrs.frozen
class Owed:
    """A reply the server owes: to the frame with ``message_id`` and ``command_code``."""

    message_id: int
    command_code: int
    kind: Literal["answer", "failure", "indication"]
    response_type: type[Message] | None = None

    def accepts(self, reply: Message) -> bool:
        # A request over the in-flight limit gets a failure instead of its answer (docs:
        # "more get a failure response"); a failure may come as an error indication when its
        # table cannot carry it; a failure text is cut to MAX_REASON_LENGTH characters.
        if isinstance(reply, ErrorIndication):
            return (
                not reply.closing
                and reply.command_code == self.command_code
                and reply.reason.startswith("failure")
                and len(reply.reason) <= MAX_REASON_LENGTH
                and (self.kind != "answer" or _BUSY in reply.reason)
            )
        if type(reply) is not self.response_type:
            return False
        reason = failure_reason(reply)
        if reason is not None and len(reason) > MAX_REASON_LENGTH:
            return False
        if self.kind == "answer":
            return reply == _ANSWERS[message_class(self.command_code)] or _BUSY in (reason or "")
        return reason is not None


@attrs.frozen
class Server:
    """How the serving side is set up: whose ID it authenticated, which messages it accepts."""

    peer_id: str | None = None
    accepts: frozenset[type[Message]] | None = None


def owed(frame: WireFrame, server: Server) -> Owed | None:
    """What the server owes ``frame``, read with framing intact (``None``: no reply)."""
    message_id, code = frame.message_id, frame.command_code
    try:
        cls = message_class(code)
    except KeyError:
        return Owed(message_id, code, "indication")
    response_type = cls.response_type()
    kind: Literal["failure", "indication"] = "indication" if response_type is None else "failure"
    refused = Owed(message_id, code, kind, response_type)
    try:
        message = decode_message(Frame(message_id, code, frame.payload))
    except PayloadError:
        return refused
    if isinstance(message, ErrorIndication):
        return None
    if server.accepts is not None and type(message) not in server.accepts:
        return Owed(message_id, code, "indication")
    if server.peer_id is not None and any(
        getattr(message, name) not in (None, server.peer_id) for name in message.claims
    ):
        return refused
    if response_type is None:
        return None
    return Owed(message_id, code, "answer", response_type)


# --- inputs ----------------------------------------------------------------------------------


@attrs.frozen
class Input:
    """One fuzz input: the bytes written (in ``writes``), what they hold, what is owed."""

    number: int
    cls: type[Message]
    writes: list[bytes]
    half_close: bool
    split: Split
    owed: list[Owed]
    closing_ids: frozenset[int]
    """MessageIDs the closing error indication may carry (empty: no closing indication)."""

    def describe(self, seed: int) -> str:
        writes = " | ".join(write.hex() for write in self.writes)
        return (
            f"input #{self.number} (QKDN_FUZZ_SEED={seed}), from {self.cls.__qualname__} "
            f"0x{self.cls.code:04X}: stream ends {self.split.end}"
            f"{', then half-closed' if self.half_close else ''}; "
            f"owed {[(o.message_id, f'0x{o.command_code:04X}', o.kind) for o in self.owed]}; "
            f"writes (hex): {writes}"
        )


def make_input(rng: random.Random, number: int, server: Server) -> Input:
    """The ``number``-th input: a mutated example frame of a message class (they take turns),
    sometimes followed by another frame, then the probe; cut into one to four writes."""
    source = RandomSource(rng)
    cls = MESSAGES[number % len(MESSAGES)]
    base_id = 0x1000_0000 + 4 * number
    data = mutate_frame(example_frame(cls, base_id, full=rng.random() < 0.7), source)
    if rng.random() < 0.15:  # frames concatenated
        other = example_frame(rng.choice(MESSAGES), base_id + 1, full=rng.random() < 0.5)
        data += mutate_frame(other, source) if rng.random() < 0.5 else other
    if rng.random() < 0.01:  # a burst of requests, more than may be in flight at once (64)
        burst = range(0x4000_0000 + 128 * number, 0x4000_0000 + 128 * number + rng.randint(65, 99))
        data += b"".join(encode_message(_PROBE, message_id) for message_id in burst)
    data += encode_message(_PROBE, 0x7000_0000 + number)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 3))))
    if rng.random() < 0.6:
        cuts = []
    writes = [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    split = split_frames(data)
    owed_replies = [reply for frame in split.frames if (reply := owed(frame, server)) is not None]
    if split.end == "lost":
        # The bad Version is seen from two bytes; its MessageID is read when six arrived with
        # them, which is sure when they were written at once, within one read and one TCP
        # segment (64 KiB less headers on loopback).
        header_id = split.header_id(data, 6)
        at_once = any(
            start <= split.rest and split.rest + 6 <= start + len(write)
            for start, write in zip([0, *cuts], writes, strict=True)
        )
        if header_id is None:
            closing_ids = frozenset({0})
        elif at_once and len(data) <= 60_000:
            closing_ids = frozenset({header_id})
        else:
            closing_ids = frozenset({header_id, 0})
    elif split.end == "partial":
        closing_ids = frozenset({split.header_id(data, 10) or 0})
    else:
        closing_ids = frozenset()
    # A stream that ends inside a frame is only read to its end once the peer half-closes.
    half_close = split.end == "partial" or rng.random() < 0.05
    return Input(number, cls, writes, half_close, split, owed_replies, closing_ids)


# --- the raw peer ------------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Records the ERROR logs of the transports: bugs the server caught, not the peer's doing."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        taken = [self.format(record) for record in self.records]
        self.records.clear()
        return taken


@asynccontextmanager
async def _error_log() -> AsyncIterator[ErrorLog]:
    log = ErrorLog()
    loggers = [logging.getLogger(name) for name in ("qkdn_sdk", "qkdn_tcp", _LOGGER.name)]
    for logger in loggers:
        logger.addHandler(log)
    try:
        yield log
    finally:
        for logger in loggers:
            logger.removeHandler(log)


class RawPeer:
    """A peer that writes whatever bytes it is told to, and reads frames back."""

    def __init__(
        self, stream: trio.abc.HalfCloseableStream, served: trio.Event | None = None
    ) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.served = served
        """Set when the serving side's task has ended (where the test runs it)."""

    async def served_to_the_end(self) -> None:
        """Wait for the serving side's task to end, so that what it logged is there to see."""
        if self.served is not None:
            await self.served.wait()

    async def next_frame(self) -> Frame | Literal["eof", "reset"]:
        """The next frame from the server, or how the stream ended: at EOF (which must fall
        between frames: the server never writes half a frame), or reset by the peer."""
        while (frame := self.decoder.next_frame()) is None:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return "reset"
            if not data:
                self.decoder.receive_eof()
                return "eof"
            self.decoder.receive_data(data)
        return frame


async def exchange(peer: RawPeer, item: Input) -> None:
    """Write ``item`` and read until every reply it is owed has come (and the EOF it is owed,
    when the connection must end). Raises AssertionError for anything else."""
    written = 0
    try:
        for write in item.writes:
            await peer.stream.send_all(write)
            written += len(write)
        if item.half_close:
            await peer.stream.send_eof()
    except trio.BrokenResourceError:
        # The server may close as soon as it has seen a bad Version: writing after that fails
        # (TCP), and what it sent before is still to be read.
        assert item.split.end == "lost", "the connection broke while the input was written"
        assert written >= item.split.rest + 2, "the connection broke before the bad Version"
    replies: list[tuple[int, Message]] = []
    ends = item.half_close or item.split.end != "clean"
    closing: ErrorIndication | None = None
    while len(replies) < len(item.owed) or ends:
        frame = await peer.next_frame()
        if frame == "reset":
            # TCP: a socket closed with input unread sends a reset, not an EOF. That is a close
            # only where one is owed and its error indication came first (the lost framing of
            # a peer that kept writing); on Linux the data before the reset is still read.
            assert closing is not None, "the connection was reset without a closing indication"
            assert item.split.end == "lost", "the connection was reset, not closed"
            frame = "eof"
        if frame == "eof":
            assert ends, "the server closed a connection whose framing holds"
            _check_replies(item.owed, replies, complete=True)
            assert (closing is not None) == bool(item.closing_ids), (
                f"closing indication {closing!r}; expected one with MessageID in "
                f"{set(item.closing_ids)}"
            )
            return
        assert closing is None, "a frame after the closing error indication"
        try:
            reply = decode_message(frame)
        except FrameError as exc:
            raise AssertionError(f"an invalid reply frame ({frame}): {exc}") from None
        if isinstance(reply, ErrorIndication) and reply.closing:
            assert frame.message_id in item.closing_ids, (
                f"closing indication with MessageID {frame.message_id}: {reply!r}"
            )
            _check_replies(item.owed, replies, complete=True)
            closing = reply
            continue
        replies.append((frame.message_id, reply))
        _check_reply(item.owed, replies)
    _check_replies(item.owed, replies, complete=True)


def _check_reply(owed: list[Owed], replies: list[tuple[int, Message]]) -> None:
    """The last reply answers something owed (the one-to-one check waits for them all)."""
    message_id, reply = replies[-1]
    assert len(replies) <= len(owed), f"more replies than owed: {replies}; owed {owed}"
    assert any(o.message_id == message_id and o.accepts(reply) for o in owed), (
        f"a reply nothing was owed: MessageID {message_id}, {reply!r}; owed {owed}"
    )


def _check_replies(owed: list[Owed], replies: list[tuple[int, Message]], *, complete: bool) -> None:
    """Each reply answers an owed reply of its own (a matching, as two frames may share a
    MessageID); ``complete``: every owed reply has come."""
    assert len(replies) <= len(owed), f"more replies than owed: {replies}; owed {owed}"
    fits = [
        [index for index, o in enumerate(owed) if o.message_id == message_id and o.accepts(reply)]
        for message_id, reply in replies
    ]
    for (message_id, reply), choices in zip(replies, fits, strict=True):
        assert choices, f"a reply nothing was owed: MessageID {message_id}, {reply!r}; owed {owed}"
    assert _matches(fits), f"replies {replies} do not answer {owed} one to one"
    if complete:
        assert len(replies) == len(owed), f"replies owed and not sent: {owed}; came {replies}"


def _matches(fits: list[list[int]]) -> bool:
    """Whether every reply can be given an owed reply of its own (Kuhn's augmenting paths)."""
    owner: dict[int, int] = {}

    def place(reply: int, seen: set[int]) -> bool:
        for choice in fits[reply]:
            if choice not in seen:
                seen.add(choice)
                if choice not in owner or place(owner[choice], seen):
                    owner[choice] = reply
                    return True
        return False

    return all(place(reply, set()) for reply in range(len(fits)))


# --- running inputs ----------------------------------------------------------------------------

Connect = Callable[[Server], Awaitable[RawPeer]]


async def fuzz(connect: Connect, count: int, servers: list[Server]) -> Counter[str]:
    """Run ``count`` inputs, reconnecting whenever the server closes; the counts of what
    happened. Raises AssertionError naming the seed and the input that failed."""
    rng = random.Random(SEED)
    seen: Counter[str] = Counter()
    peer: RawPeer | None = None
    previous: Input | None = None
    connections = 0
    server = servers[0]
    try:
        async with _error_log() as errors:
            for number in range(count):
                if peer is None:  # each new connection serves the next way in turn
                    server = servers[connections % len(servers)]
                    peer = await connect(server)
                    connections += 1
                item = make_input(rng, number, server)
                try:
                    with trio.fail_after(_PER_INPUT):
                        await exchange(peer, item)
                        if item.half_close or item.split.end != "clean":
                            # It has read the end: it closes its side, as a peer does (the server
                            # reads until then, so that no reset overtakes its last frame).
                            await peer.stream.aclose()
                            await peer.served_to_the_end()
                    assert not errors.records, f"the server logged errors: {errors.take()}"
                except (AssertionError, trio.TooSlowError, FrameError) as exc:
                    with trio.move_on_after(1):  # for what the server logs as it fails
                        await peer.served_to_the_end()
                    before = f"\nthe input before: {previous.describe(SEED)}" if previous else ""
                    logged = "".join(f"\nthe server logged: {error}" for error in errors.take())
                    raise AssertionError(
                        f"{item.describe(SEED)}:\n{exc!r}{logged}{before}"
                    ) from exc
                if item.half_close or item.split.end != "clean":
                    peer = None
                previous = item
                seen["inputs"] += 1
                seen[f"stream ends {item.split.end}"] += 1
                seen["half-closed"] += item.half_close
                seen["bursts"] += len(item.split.frames) > 60
                seen[f"class {item.cls.__qualname__}"] += 1
                for reply in item.owed:
                    seen[f"owed {reply.kind}"] += 1
                seen["frames with no reply"] += len(item.split.frames) - len(item.owed)
    finally:
        if peer is not None:
            await trio.aclose_forcefully(peer.stream)
    return seen


def _check_coverage(seen: Counter[str], count: int) -> None:
    """Every input ran, every class was mutated, and every kind of outcome happened."""
    assert seen["inputs"] == count
    if count < 2000:
        return  # too few inputs (QKDN_FUZZ_EXAMPLES is small) to expect every outcome
    for cls in MESSAGES:
        assert seen[f"class {cls.__qualname__}"] >= count // len(MESSAGES)
    outcomes = ["stream ends clean", "stream ends lost", "stream ends partial", "half-closed"]
    outcomes += ["bursts", "owed answer", "owed failure", "owed indication", "frames with no reply"]
    for outcome in outcomes:
        assert seen[outcome] > 0, f"no input ended as {outcome!r}: {seen}"


def _guard(count: int) -> float:
    return 30 + _SECONDS_PER_1000_INPUTS * count / 1000


# --- over memory ---------------------------------------------------------------------------------


async def _run(connection: FramedConnection, served: trio.Event) -> None:
    """Run the serving side; ``run()`` never raises for what the peer does, and if it does, the
    error fails the input that caused it rather than the whole test run."""
    try:
        await connection.run()
    except Exception:
        _LOGGER.exception("FramedConnection.run() raised")
    finally:
        served.set()


@asynccontextmanager
async def _memory_server() -> AsyncIterator[Connect]:
    """A FramedConnection serving each new in-memory stream, as ``memory://`` does."""
    transport = MemoryTransport()
    async with trio.open_nursery() as nursery:

        async def connect(server: Server) -> RawPeer:
            client, serving = trio.testing.memory_stream_pair()
            connection = FramedConnection(
                serving,
                transport=transport,
                is_client=False,
                handler=_answer,
                limits=_LIMITS,
                peer_id=server.peer_id,
                accepts=server.accepts,
            )
            served = trio.Event()
            nursery.start_soon(_run, connection, served)
            return RawPeer(client, served)

        yield connect
        nursery.cancel_scope.cancel()


async def test_mutated_frames_over_memory() -> None:
    """Most inputs: the serving FramedConnection over an in-memory stream, set up three ways
    (no peer ID, a peer ID that the examples' claims do not name, a KM's accepted messages)."""
    servers = [Server(), Server(peer_id=_PEER_ID), Server(accepts=received_by(Role.KM))]
    with trio.fail_after(_guard(MEMORY_INPUTS)):
        async with _memory_server() as connect:
            seen = await fuzz(connect, MEMORY_INPUTS, servers)
    _check_coverage(seen, MEMORY_INPUTS)


# --- over tcp:// ------------------------------------------------------------------------------


@asynccontextmanager
async def _tcp_server() -> AsyncIterator[Connect]:
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: serve(
                "tcp://127.0.0.1:0", _answer, limits=_LIMITS, task_status=task_status
            )
        )
        host, port = info.url.removeprefix("tcp://").rsplit(":", 1)

        async def connect(_server: Server) -> RawPeer:
            return RawPeer(await trio.open_tcp_stream(host, int(port)))

        yield connect
        nursery.cancel_scope.cancel()


async def test_mutated_frames_over_tcp() -> None:
    """Some thousands of inputs over real TCP on loopback, through ``serve("tcp://...")``."""
    with trio.fail_after(_guard(TCP_INPUTS)):
        async with _tcp_server() as connect:
            seen = await fuzz(connect, TCP_INPUTS, [Server()])
    _check_coverage(seen, TCP_INPUTS)


# --- reproducing one input ------------------------------------------------------------------------


async def replay(*writes_hex: str, server: Server | None = None) -> list[str]:
    r"""Write the hex ``writes_hex`` (as a failure prints them) to a fresh in-memory server,
    half-close, and return what came back: one line per frame, then how the stream ended::

        import trio
        from tests.test_fuzz_connection import replay

        print(*trio.run(replay, "0001...", "7b22..."), sep="\n")
    """
    lines: list[str] = []
    with trio.fail_after(_PER_INPUT):
        async with _error_log() as errors, _memory_server() as connect:
            peer = await connect(server or Server())
            for write in writes_hex:
                await peer.stream.send_all(bytes.fromhex(write))
            await peer.stream.send_eof()
            while not isinstance(frame := await peer.next_frame(), str):
                try:
                    reply: object = decode_message(frame)
                except FrameError as exc:
                    reply = exc
                lines.append(f"MessageID {frame.message_id}: {reply!r}")
            lines.append(frame)
            await peer.served_to_the_end()
            lines.extend(f"server error: {error}" for error in errors.take())
    return lines


# --- the fuzzer itself -------------------------------------------------------------------------


def test_owed_replies_follow_the_contract() -> None:
    """The oracle is right on hand-made frames (a wrong oracle would make the fuzzer pass
    anything or fail everything)."""
    request = WireFrame(0, 5, ak.KeyRequest.code, b'{"application_destination_id":"b"}')
    assert owed(request, Server()) == Owed(5, 0x2101, "answer", ak.ResponseToKeyRequest)
    bad = attrs.evolve(request, payload=b'{"number_of_keys":"5"}')
    assert owed(bad, Server()) == Owed(5, 0x2101, "failure", ak.ResponseToKeyRequest)
    assert owed(attrs.evolve(request, command_code=0x7777), Server()) == Owed(
        5, 0x7777, "indication"
    )
    response = WireFrame(0, 6, ak.ResponseToKeyRequest.code, b'{"keys":[],"response":"ok"}')
    assert owed(response, Server()) is None
    assert owed(attrs.evolve(response, payload=b"{}"), Server()) == Owed(6, 0x1203, "indication")
    # A KM does not accept what only a KM sends.
    notification = WireFrame(0, 7, 0x1206, example_frame(ak.SessionCreationNotification, 7)[10:])
    assert owed(notification, Server(accepts=received_by(Role.KM))) == Owed(7, 0x1206, "indication")
    assert owed(notification, Server()) == Owed(
        7, 0x1206, "answer", ak.ResponseToSessionCreationNotification
    )


@pytest.mark.parametrize(
    ("data", "end", "frames"),
    [
        (b"", "clean", 0),
        (b"\x00", "partial", 0),
        (b"\x00\x02", "lost", 0),
        (bytes.fromhex("0001 00000001 2101 0002") + b"{}", "clean", 1),
        (bytes.fromhex("0001 00000001 2101 0003") + b"{}", "partial", 0),
        (bytes.fromhex("0001 00000001 2101 0000 0007 00000002"), "lost", 1),
    ],
)
def test_the_framing_model(data: bytes, end: str, frames: int) -> None:
    split = split_frames(data)
    assert (split.end, len(split.frames)) == (end, frames)


def test_replies_are_matched_one_to_one() -> None:
    assert _matches([[0, 1], [0]])  # the first reply fits either, the second only the first
    assert not _matches([[0], [0]])  # two replies for one owed
    owed_twice = [Owed(5, 0x7777, "indication"), Owed(5, 0x2101, "answer", ak.ResponseToKeyRequest)]
    indication = ErrorIndication(reason="failure: unknown command code", command_code=0x7777)
    _check_replies(owed_twice, [(5, _ANSWERS[ak.KeyRequest]), (5, indication)], complete=True)
    with pytest.raises(AssertionError, match="nothing was owed"):
        _check_replies(owed_twice, [(6, indication)], complete=False)
    with pytest.raises(AssertionError, match="owed and not sent"):
        _check_replies(owed_twice, [(5, indication)], complete=True)


async def test_replay_shows_what_an_input_gets() -> None:
    unknown = bytes.fromhex("0001 00000009 7777 0002") + b"{}"
    lines = await replay(unknown.hex(), bytes.fromhex("0001 0000").hex())
    assert lines[0].startswith("MessageID 9: ErrorIndication(")
    assert "unknown command code 0x7777" in lines[0]
    assert lines[1].startswith("MessageID 0: ErrorIndication(")
    assert "closing=True" in lines[1]
    assert lines[2:] == ["eof"]
