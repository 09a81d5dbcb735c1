"""Fuzzing the sans-IO codecs: the frame decoder and the payload codec, fed what a hostile peer
could send.

- The frame decoder, fed any bytes in any chunking and drained after every read (as its docs
  say), reads exactly the frames of the frame format (tests/fuzzing.py has a model written from
  the format alone), raises nothing but :class:`~qkdn_sdk.errors.FrameError`, and once the
  framing is lost keeps raising the same error. A caller that does not drain gets
  :class:`~qkdn_sdk.errors.LocalProtocolError` exactly when the buffer bound is passed.
- The payload codec, fed any JSON-like value and every message's example payload mutated
  (fields dropped, retyped, nulled, wrapped, nested past the limit, repeated, huge numbers, odd
  unicode), for every message class: a message or a :class:`~qkdn_sdk.errors.PayloadError`,
  nothing else; what decodes encodes back and decodes to the same message; error texts are
  bounded.

Inputs per run: see tests/fuzzing.py (``QKDN_FUZZ_PROFILE``, ``QKDN_FUZZ_EXAMPLES``) and
docs/fuzzing.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from qkdn_sdk.codecs.frame import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    Frame,
    FrameDecoder,
    decode_message,
    encode_frame,
)
from qkdn_sdk.codecs.payload import decode_payload, encode_payload, message_from_dict
from qkdn_sdk.errors import (
    FrameError,
    LocalProtocolError,
    PayloadError,
    UnknownCommandCode,
    UnsupportedVersion,
)
from qkdn_sdk.messages import Message
from tests.fuzzing import (
    KNOWN_CODES,
    MESSAGES,
    SHARES,
    DrawSource,
    WireFrame,
    example_frame,
    example_payloads,
    fuzz_settings,
    mutate_frame,
    mutate_json,
    split_frames,
    to_json_bytes,
    wide_json_values,
)

# A failing example can be large (a 64 KiB stream): hypothesis warns that printing it is costly,
# and filterwarnings=error would put that warning in the place of the failure.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)

MAX_ERROR_TEXT = 2048
"""The longest error text a peer can make the codec produce (it is echoed back on the wire)."""


def _id(cls: type[Message]) -> str:
    return f"0x{cls.code:04X}-{cls.__name__}"


# --- byte streams ------------------------------------------------------------------------------

_message_ids = st.integers(0, 0xFFFF_FFFF)
_classes = st.sampled_from(MESSAGES)


@st.composite
def _segments(draw: st.DrawFn) -> bytes:
    """One piece of a stream: a valid example frame, a mutated one, a bare header, or junk."""
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "header", "junk"]))
    if kind == "junk":
        return draw(st.binary(max_size=40))
    frame = example_frame(draw(_classes), draw(_message_ids), full=draw(st.booleans()))
    if kind == "valid":
        return frame
    if kind == "header":
        return frame[:HEADER_SIZE]
    return mutate_frame(frame, DrawSource(draw))


_streams = st.lists(_segments(), min_size=1, max_size=5).map(b"".join)


_READ = 65536
"""The most a transport reads at once (what the decoder's buffer bound is made for)."""


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (taken modulo its length) and wherever a read would end."""
    reads = range(_READ, len(data), _READ)
    points = sorted({0, len(data), *reads, *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def _visible_at(chunks: list[bytes], offset: int, needed: int) -> int:
    """The end of the first chunk by which ``needed`` bytes from ``offset`` have arrived."""
    end = 0
    for chunk in chunks:
        end += len(chunk)
        if end - offset >= needed:
            return end
    raise AssertionError("never visible")


# --- the frame decoder -------------------------------------------------------------------------


@fuzz_settings("frame decoder")
@given(data=_streams | st.binary(max_size=200), cuts=st.lists(st.integers(0), max_size=8))
def test_decoder_reads_exactly_the_frames_of_the_format(data: bytes, cuts: list[int]) -> None:
    """Drained after every read, the decoder hands out the model's frames (each re-encodes to
    its own bytes), raises only FrameError, and is broken for good once framing is lost."""
    split = split_frames(data)
    chunks = _chunks(data, cuts)
    decoder = FrameDecoder()
    frames: list[Frame] = []
    lost: FrameError | None = None
    fed = 0
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            fed += len(chunk)
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
            assert decoder.buffered < MAX_FRAME_SIZE
    except FrameError as exc:  # anything else fails the test
        lost = exc
    event(f"stream ends {split.end}")

    expected = split.frames if lost is None else split.frames[: len(frames)]
    assert [(f.message_id, f.command_code, f.payload) for f in frames] == [
        (f.message_id, f.command_code, f.payload) for f in expected
    ]
    for frame, wire in zip(frames, expected, strict=True):
        assert frame.version == 1
        assert encode_frame(frame) == data[wire.offset : wire.end]
        _check_frame_decodes(frame)

    if split.end == "lost":
        assert isinstance(lost, UnsupportedVersion)
        assert frames == [_frame(f) for f in split.frames]  # every frame before the bad one
        assert lost.version == split.version
        assert lost.framing_intact is False
        # Seen from its first two bytes; its MessageID is known when the read had six.
        seen_at = _visible_at(chunks, split.rest, 2)
        assert fed == seen_at
        assert lost.message_id == split.header_id(data[:seen_at], 6)
    else:
        assert lost is None
        assert decoder.buffered == len(data) - split.rest
        try:
            decoder.receive_eof()
        except FrameError as exc:
            lost = exc
        if split.end == "clean":
            assert lost is None
            return
        assert type(lost) is FrameError  # not one of the subclasses: a frame ended early
        assert lost.framing_intact is False
        assert lost.message_id == split.header_id(data, HEADER_SIZE)
        assert "stream ended inside a frame" in str(lost)
    # Framing lost: the decoder raises the same error whatever it is asked.
    for call in (
        decoder.next_frame,
        lambda: decoder.receive_data(b"\x00\x01"),
        decoder.receive_eof,
    ):
        with pytest.raises(FrameError) as again:
            call()
        assert again.value is lost


def _frame(wire: WireFrame) -> Frame:
    return Frame(wire.message_id, wire.command_code, wire.payload)


def _outcome(decode: Callable[[], Message]) -> Message | FrameError:
    """What ``decode`` returns, or the FrameError it raises (anything else fails the test)."""
    try:
        return decode()
    except FrameError as exc:
        return exc


def _check_frame_decodes(frame: Frame) -> None:
    """A frame read with framing intact decodes to its message or to an error that keeps the
    framing and names the frame; a decoded message encodes back to the same message."""
    outcome = _outcome(lambda: decode_message(frame))
    if isinstance(outcome, FrameError):
        assert (outcome.framing_intact, outcome.message_id) == (True, frame.message_id)
        if frame.command_code in KNOWN_CODES:
            assert isinstance(outcome, PayloadError)
            assert outcome.command_code == frame.command_code
        else:
            assert isinstance(outcome, UnknownCommandCode)
            assert outcome.code == frame.command_code
        return
    assert outcome.code == frame.command_code
    assert decode_payload(type(outcome), encode_payload(outcome)) == outcome


_STREAM = b"".join(example_frame(cls, index) for index, cls in enumerate(MESSAGES * 30))


@fuzz_settings("frame decoder not drained")
@given(
    max_buffer_size=st.integers(MAX_FRAME_SIZE, 3 * MAX_FRAME_SIZE),
    steps=st.lists(st.tuples(st.integers(0, 70_000), st.booleans()), min_size=1, max_size=10),
)
def test_decoder_buffer_is_bounded_for_a_caller_that_does_not_drain(
    max_buffer_size: int, steps: list[tuple[int, bool]]
) -> None:
    """``receive_data`` refuses (LocalProtocolError) exactly the chunk that would take the buffer
    past its bound, and keeps what it had; drained, the decoder holds less than a frame."""
    decoder = FrameDecoder(max_buffer_size=max_buffer_size)
    fed = 0
    frames: list[Frame] = []

    def drain() -> None:
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
        assert decoder.buffered < MAX_FRAME_SIZE

    for size, drains in steps:
        chunk = _STREAM[fed : fed + size]
        if decoder.buffered + len(chunk) > max_buffer_size:
            before = decoder.buffered
            with pytest.raises(LocalProtocolError, match="buffer would exceed"):
                decoder.receive_data(chunk)
            assert decoder.buffered == before
            event("refused")
            drain()
            chunk = chunk[: max_buffer_size - decoder.buffered]
        decoder.receive_data(chunk)
        fed += len(chunk)
        assert decoder.buffered <= max_buffer_size
        if drains:
            drain()
    drain()
    assert frames == [_frame(f) for f in split_frames(_STREAM[:fed]).frames]


def test_decoder_refuses_a_buffer_smaller_than_a_frame() -> None:
    with pytest.raises(ValueError, match="must hold one frame"):
        FrameDecoder(max_buffer_size=MAX_FRAME_SIZE - 1)


# --- the payload codec -------------------------------------------------------------------------


def _any_values(cls: type[Message]) -> st.SearchStrategy[Any]:
    """Any JSON-like value, and objects of the message's own field names with any values."""
    names = sorted({name for payload in example_payloads(cls) for name in payload})
    return wide_json_values | st.dictionaries(
        st.sampled_from(names), wide_json_values, max_size=len(names)
    )


def _mutated(cls: type[Message]) -> st.SearchStrategy[Any]:
    """An example payload of ``cls`` (full or minimal) mutated in one to four places."""

    @st.composite
    def mutated(draw: st.DrawFn) -> Any:
        source = DrawSource(draw)
        return mutate_json(source.choice(example_payloads(cls)), source)

    return mutated()


# Built once: a strategy built anew for every example costs more than the example.
_ANY_VALUES = {cls: _any_values(cls) for cls in MESSAGES}
_MUTATED = {cls: _mutated(cls) for cls in MESSAGES}


def _check_decode(cls: type[Message], value: Any, style: int) -> PayloadError | None:
    """The payload codec on ``value``: as a decoded JSON object, then as JSON bytes, alone and
    in a frame. Returns the error of the bytes, if any."""
    from_dict = _outcome(lambda: message_from_dict(cls, value))
    assert isinstance(from_dict, cls) or (isinstance(from_dict, PayloadError) and from_dict.errors)

    data = to_json_bytes(value, style)
    outcome = _outcome(lambda: decode_payload(cls, data))
    event(f"payload: {type(outcome).__name__}")
    if isinstance(outcome, FrameError):
        assert isinstance(outcome, PayloadError)
        assert outcome.errors
        assert all(isinstance(text, str) and text for text in outcome.errors)
        assert str(outcome).startswith(f"invalid {cls.spec_name}: ")
    else:
        assert type(outcome) is cls
        encoded = encode_payload(outcome)  # never raises for what a peer could send
        assert decode_payload(cls, encoded) == outcome

    in_frame = _outcome(lambda: decode_message(Frame(0xC0FFEE, cls.code, data)))
    if isinstance(outcome, PayloadError):
        assert isinstance(in_frame, PayloadError)
        assert in_frame.errors == outcome.errors
        assert (in_frame.message_id, in_frame.command_code) == (0xC0FFEE, cls.code)
        return outcome
    assert in_frame == outcome
    return None


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@fuzz_settings("any JSON value", among=len(MESSAGES))
@given(data=st.data(), style=st.integers(0, 2))
def test_any_json_value_decodes_or_raises_payload_error(
    cls: type[Message], data: st.DataObject, style: int
) -> None:
    _check_decode(cls, data.draw(_ANY_VALUES[cls]), style)


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@fuzz_settings("mutated example payloads", among=len(MESSAGES))
@given(data=st.data(), style=st.integers(0, 2))
def test_mutated_examples_decode_or_raise_payload_error(
    cls: type[Message], data: st.DataObject, style: int
) -> None:
    _check_decode(cls, data.draw(_MUTATED[cls]), style)


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
@fuzz_settings("error text bound", among=len(MESSAGES))
@given(data=st.data(), style=st.integers(0, 2))
def test_payload_error_text_is_bounded(cls: type[Message], data: st.DataObject, style: int) -> None:
    """An error text is echoed to the peer in a failure response: whatever the peer sent, it
    stays short (long names and thousands of bad items are summed up, not listed)."""
    value = data.draw(_MUTATED[cls] | _ANY_VALUES[cls])
    error = _check_decode(cls, value, style)
    if error is not None:
        event(f"error text over 512 characters: {len(str(error)) > 512}")
        assert len(str(error)) <= MAX_ERROR_TEXT, f"{len(str(error))} characters"


def test_the_shares_make_the_whole_budget() -> None:
    """The fuzz tests together run the budget (``QKDN_FUZZ_EXAMPLES``), not less."""
    assert math.isclose(sum(SHARES.values()), 1.0)
    assert all(share > 0 for share in SHARES.values())
