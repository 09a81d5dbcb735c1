"""TCP frame codec (Q.4161/Q.4162/Q.4164 Appendix I): golden frames and the incremental decoder.

A frame is ``Version(2) MessageID(4) CommandCode(2) Length(2) Payload``, big-endian. The golden
frames below are written by hand from that format: header bytes in hex, payload as JSON text.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from qkdn_sdk.codecs.frame import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    MAX_PAYLOAD_SIZE,
    Frame,
    FrameDecoder,
    decode_message,
    encode_frame,
    encode_message,
)
from qkdn_sdk.codecs.payload import encode_payload
from qkdn_sdk.errors import (
    FrameError,
    LocalProtocolError,
    PayloadError,
    PayloadTooLarge,
    QkdnError,
    RemoteProtocolError,
    UnknownCommandCode,
    UnsupportedVersion,
)
from qkdn_sdk.messages import Key, Message, ak, all_messages, ck, example, kq1, kx, mgmt
from tests.strategies import any_message

KEY_1 = bytes.fromhex("00112233445566778899aabbccddeeff")  # base64 ABEiM0RVZneImaq7zN3u/w==

# (message, MessageID, hand-built frame)
GOLDEN_FRAMES: list[tuple[Message, int, bytes]] = [
    (  # Ak, application -> KM: Q.4161 Table 1, code 0x2101, 57 payload bytes
        ak.KeyRequest(application_destination_id="app-b", number_of_keys=2),
        1,
        bytes.fromhex("0001 00000001 2101 0039")
        + b'{"application_destination_id":"app-b","number_of_keys":2}',
    ),
    (  # Ak, KM -> application: Q.4161 Table 3, code 0x1203, answering MessageID 1
        ak.ResponseToKeyRequest(keys=[Key(key=KEY_1, key_id="k-1")], response="success"),
        1,
        bytes.fromhex("0001 00000001 1203 0051")
        + b'{"keys":[{"key":"ABEiM0RVZneImaq7zN3u/w==","key_id":"k-1"}],"response":"success"}',
    ),
    (  # Kq-1, QKD module -> KM: Q.4162 Table 1, code 0x3101
        kq1.KeySupply(key=KEY_1, key_id="k-1", key_length=128),
        0x2A,
        bytes.fromhex("0001 0000002a 3101 0042")
        + b'{"key":"ABEiM0RVZneImaq7zN3u/w==","key_id":"k-1","key_length":128}',
    ),
    (  # Kq-1, KM -> QKD module: Q.4162 Table 2, code 0x1302
        kq1.ResponseToKeySupply(key_id="k-1", response="success"),
        0x2A,
        bytes.fromhex("0001 0000002a 1302 0025") + b'{"key_id":"k-1","response":"success"}',
    ),
    (  # Kq-1, KM -> QKD module: Q.4162 Table 3 with no parameter, the largest MessageID
        kq1.KeyRequest(),
        0xFFFFFFFF,
        bytes.fromhex("0001 ffffffff 1303 0002") + b"{}",
    ),
    (  # Ck, KM -> controller: Q.4164 Table 1, code 0x1401
        ck.KeyRelayNextHopRequest(destination_kma_id="kma-c"),
        0x01020304,
        bytes.fromhex("0001 01020304 1401 001e") + b'{"destination_kma_id":"kma-c"}',
    ),
    (  # Ck, controller -> KM: Q.4164 Table 2, code 0x4102
        ck.ResponseToKeyRelayNextHopRequest(destination_kma_id="kma-c", next_kma_ids=["kma-b"]),
        0x01020304,
        bytes.fromhex("0001 01020304 4102 0037")
        + b'{"destination_kma_id":"kma-c","next_kma_ids":["kma-b"]}',
    ),
    (  # extension, any -> any: SDK error indication, code 0x0080
        mgmt.ErrorIndication(reason="unknown command code 0x7777", command_code=0x7777),
        7,
        bytes.fromhex("0001 00000007 0080 003d")
        + b'{"reason":"unknown command code 0x7777","command_code":30583}',
    ),
    (  # extension, KM -> KM: response to key relay, code 0x1184
        kx.ResponseToKeyRelay(key_relay_request_id="r-1", response="success"),
        0x100,
        bytes.fromhex("0001 00000100 1184 0033")
        + b'{"key_relay_request_id":"r-1","response":"success"}',
    ),
]


def _golden_id(value: object) -> str:
    return type(value).__name__ if isinstance(value, Message) else ""


@pytest.mark.parametrize(("message", "message_id", "frame"), GOLDEN_FRAMES, ids=_golden_id)
def test_golden_frame_encodes_exactly(message: Message, message_id: int, frame: bytes) -> None:
    assert encode_message(message, message_id) == frame


@pytest.mark.parametrize(("message", "message_id", "frame"), GOLDEN_FRAMES, ids=_golden_id)
def test_golden_frame_decodes(message: Message, message_id: int, frame: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    decoded = decoder.next_frame()
    assert decoded == Frame(message_id, message.code, frame[HEADER_SIZE:], 1)
    assert decoder.next_frame() is None
    assert decoder.buffered == 0
    decoder.receive_eof()
    assert decode_message(decoded) == message


def test_golden_frames_cover_every_interface_both_ways() -> None:
    directions = {(m.interface, m.sender, m.receiver) for m, _, _ in GOLDEN_FRAMES}
    interfaces = {interface for interface, _, _ in directions}
    assert {"ak", "kq1", "ck"} <= {interface.value for interface in interfaces}
    for interface in ("ak", "kq1", "ck"):
        assert len({d for d in directions if d[0].value == interface}) == 2
    assert any(m.is_extension for m, _, _ in GOLDEN_FRAMES)


def test_empty_payload_frame_decodes_as_empty_object() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(bytes.fromhex("0001 00000005 1303 0000"))
    frame = decoder.next_frame()
    assert frame == Frame(5, 0x1303, b"")
    assert decode_message(frame) == kq1.KeyRequest()


def test_frame_repr_hides_the_payload() -> None:
    frame = Frame(1, 0x1203, b'{"keys":[{"key":"c2VjcmV0LWtleQ=="}]}')
    assert "c2VjcmV0" not in repr(frame)


# --- encoding limits -------------------------------------------------------------------------


def _key_request_of_payload_size(size: int) -> ak.KeyRequest:
    """A key request whose JSON payload is exactly ``size`` bytes (padded application name)."""
    empty = len(encode_payload(ak.KeyRequest(application_destination_id="b", application_name="")))
    message = ak.KeyRequest(application_destination_id="b", application_name="x" * (size - empty))
    assert len(encode_payload(message)) == size
    return message


def test_payload_of_65535_bytes_is_accepted() -> None:
    message = _key_request_of_payload_size(MAX_PAYLOAD_SIZE)
    frame = encode_message(message, 9)
    assert len(frame) == HEADER_SIZE + 65535 == MAX_FRAME_SIZE
    assert frame[:HEADER_SIZE] == bytes.fromhex("0001 00000009 2101 ffff")
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    decoded = decoder.next_frame()
    assert decoded is not None
    assert decode_message(decoded) == message


@pytest.mark.parametrize("message_id", [-1, 0, 0xFFFF_FFFF, 0x1_0000_0000])
def test_a_message_encodes_as_its_frame(message_id: int) -> None:
    message = example(ak.KeyRequest)
    try:
        expected: bytes | str = encode_frame(
            Frame(message_id, message.code, encode_payload(message))
        )
    except LocalProtocolError as exc:
        expected = str(exc)
    try:
        encoded: bytes | str = encode_message(message, message_id)
    except LocalProtocolError as exc:
        encoded = str(exc)
    assert encoded == expected


def test_payload_over_65535_bytes_is_refused_not_truncated() -> None:
    message = _key_request_of_payload_size(MAX_PAYLOAD_SIZE + 1)
    with pytest.raises(PayloadTooLarge) as caught:
        encode_message(message, 9)
    assert caught.value.size == 65536
    assert caught.value.limit == 65535
    assert "65536" in str(caught.value)
    assert isinstance(caught.value, LocalProtocolError)
    with pytest.raises(PayloadTooLarge):
        encode_frame(Frame(1, 0x2101, b" " * 70000))


@pytest.mark.parametrize(
    "frame",
    [Frame(-1, 0x2101, b"{}"), Frame(2**32, 0x2101, b"{}"), Frame(1, 0x10000, b"{}")],
    ids=["negative id", "id over 4 bytes", "code over 2 bytes"],
)
def test_header_values_must_fit(frame: Frame) -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(frame)


# --- decoding: chunking --------------------------------------------------------------------------


def _drain(decoder: FrameDecoder) -> list[Frame]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


@settings(max_examples=60, deadline=None)
@given(
    sent=st.lists(st.tuples(any_message(), st.integers(0, 0xFFFFFFFF)), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_frames_split_anywhere_decode_the_same(
    sent: list[tuple[Message, int]], cuts: list[int]
) -> None:
    stream = b"".join(encode_message(message, message_id) for message, message_id in sent)
    decoder = FrameDecoder()
    received: list[Frame] = []
    for chunk in _split(stream, cuts):
        decoder.receive_data(chunk)
        received.extend(_drain(decoder))
        assert decoder.buffered < MAX_FRAME_SIZE
    decoder.receive_eof()
    assert decoder.buffered == 0
    assert [(frame.message_id, frame.command_code) for frame in received] == [
        (message_id, message.code) for message, message_id in sent
    ]
    assert [decode_message(frame) for frame in received] == [message for message, _ in sent]


def test_one_byte_at_a_time() -> None:
    stream = b"".join(frame for _, _, frame in GOLDEN_FRAMES)
    decoder = FrameDecoder()
    received = []
    for index in range(len(stream)):
        decoder.receive_data(stream[index : index + 1])
        received.extend(_drain(decoder))
    assert [decode_message(frame) for frame in received] == [m for m, _, _ in GOLDEN_FRAMES]


# --- decoding: arbitrary bytes -------------------------------------------------------------------

_header_v1 = st.builds(
    lambda message_id, code, length: (
        bytes.fromhex("0001")
        + message_id.to_bytes(4, "big")
        + code.to_bytes(2, "big")
        + length.to_bytes(2, "big")
    ),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([cls.code for cls in all_messages()]) | st.integers(0, 0xFFFF),
    st.integers(0, 64) | st.integers(0, 0xFFFF),
)
_valid_frame = st.builds(encode_message, any_message(), st.integers(0, 0xFFFFFFFF))
_junk_stream = st.lists(
    _valid_frame | _header_v1 | st.binary(max_size=80) | _header_v1.map(lambda h: h + b"{"),
    max_size=8,
).map(b"".join)


def _feed(decoder: FrameDecoder, chunks: list[bytes], eof: bool) -> list[Frame]:
    """Feed ``chunks``, taking every frame after each; the frames read until an error."""
    frames: list[Frame] = []
    limit = sum(map(len, chunks)) // HEADER_SIZE
    for chunk in chunks:
        decoder.receive_data(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
            # Each frame consumes at least a header: the loop ends.
            assert len(frames) <= limit
        assert decoder.buffered <= 2 * MAX_FRAME_SIZE
    if eof:
        decoder.receive_eof()
    return frames


def _decode(frame: Frame) -> Message | QkdnError:
    try:
        return decode_message(frame)
    except QkdnError as exc:
        return exc


@settings(max_examples=150, deadline=None)
@given(
    data=_junk_stream | st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    eof=st.booleans(),
)
def test_arbitrary_bytes_never_crash_hang_or_grow(data: bytes, cuts: list[int], eof: bool) -> None:
    decoder = FrameDecoder()
    frames: list[Frame] = []
    lost: QkdnError | None = None
    try:
        frames = _feed(decoder, _split(data, cuts), eof)
    except QkdnError as exc:  # anything else is a crash
        lost = exc
    for frame in frames:
        outcome = _decode(frame)
        event(f"frame: {type(outcome).__name__}")
        if isinstance(outcome, QkdnError):
            # A bad frame inside intact framing: answered with an error indication.
            assert isinstance(outcome, UnknownCommandCode | PayloadError)
            assert outcome.framing_intact
            assert outcome.message_id == frame.message_id
        else:
            assert outcome.code == frame.command_code
    if lost is not None:
        event(f"stream: {type(lost).__name__}")
        assert decoder.buffered <= 2 * MAX_FRAME_SIZE
        if isinstance(lost, FrameError):
            assert isinstance(lost, RemoteProtocolError)
            assert not lost.framing_intact
            # Framing is lost: the decoder refuses to go on, with the same error.
            with pytest.raises(FrameError) as again:
                decoder.next_frame()
            assert again.value is lost
        else:  # the buffer bound
            assert isinstance(lost, LocalProtocolError)


@settings(max_examples=40, deadline=None)
@given(payload=st.binary(max_size=200), code=st.sampled_from([c.code for c in all_messages()]))
def test_any_payload_of_a_known_code_raises_only_payload_error(payload: bytes, code: int) -> None:
    outcome = _decode(Frame(77, code, payload))
    if isinstance(outcome, QkdnError):
        assert isinstance(outcome, PayloadError)
        assert outcome.message_id == 77
        assert outcome.command_code == code
        assert outcome.framing_intact
    else:
        assert outcome.code == code


# --- decoding: each error ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 0x0100, 0xFFFF])
def test_unknown_version_breaks_the_decoder(version: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(version.to_bytes(2, "big") + bytes.fromhex("0000002a 2101 0002") + b"{}")
    with pytest.raises(UnsupportedVersion) as caught:
        decoder.next_frame()
    error = caught.value
    assert error.version == version
    assert error.framing_intact is False
    assert error.message_id == 0x2A
    assert f"unsupported frame version {version}" in str(error)
    assert isinstance(error, FrameError)
    # Broken for good: a valid frame after it is not read.
    with pytest.raises(UnsupportedVersion):
        decoder.next_frame()
    with pytest.raises(UnsupportedVersion):
        decoder.receive_data(GOLDEN_FRAMES[0][2])
    with pytest.raises(UnsupportedVersion):
        decoder.receive_eof()


def test_unknown_version_is_seen_from_the_first_two_bytes() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00")
    assert decoder.next_frame() is None
    decoder.receive_data(b"\x02")
    with pytest.raises(UnsupportedVersion) as caught:
        decoder.next_frame()
    assert caught.value.message_id is None


def test_unknown_code_keeps_framing() -> None:
    unknown = 0x7777  # digit 7 names no role: never a registered code
    decoder = FrameDecoder()
    decoder.receive_data(bytes.fromhex("0001 00000063 7777 0002") + b"{}" + GOLDEN_FRAMES[0][2])
    frame = decoder.next_frame()
    assert frame == Frame(0x63, unknown, b"{}")
    with pytest.raises(UnknownCommandCode) as caught:
        decode_message(frame)
    assert caught.value.framing_intact is True
    assert caught.value.message_id == 0x63
    assert caught.value.code == unknown
    assert str(caught.value) == "unknown command code 0x7777"
    following = decoder.next_frame()
    assert following is not None
    assert decode_message(following) == GOLDEN_FRAMES[0][0]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b'{"application_destination_id":', "payload: not valid JSON"),
        (b'{"application_destination_id":"b","number_of_keys":"5"}', "number_of_keys: expected"),
        (b"[]", "payload: expected a JSON object"),
    ],
)
def test_bad_payload_keeps_framing(payload: bytes, error: str) -> None:
    header = bytes.fromhex("0001 0000abcd 2101") + len(payload).to_bytes(2, "big")
    decoder = FrameDecoder()
    decoder.receive_data(header + payload + GOLDEN_FRAMES[0][2])
    frame = decoder.next_frame()
    assert frame is not None
    with pytest.raises(PayloadError) as caught:
        decode_message(frame)
    assert caught.value.message_id == 0xABCD
    assert caught.value.command_code == 0x2101
    assert caught.value.framing_intact is True
    assert caught.value.errors[0].startswith(error)
    following = decoder.next_frame()
    assert following is not None
    assert decode_message(following) == GOLDEN_FRAMES[0][0]


@pytest.mark.parametrize("received", [1, 3, 9])
def test_eof_inside_the_header(received: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(GOLDEN_FRAMES[0][2][:received])
    assert decoder.next_frame() is None
    with pytest.raises(FrameError) as caught:
        decoder.receive_eof()
    assert caught.value.framing_intact is False
    assert caught.value.message_id is None
    assert str(caught.value) == f"stream ended inside a frame header ({received} of 10 bytes)"
    assert not isinstance(caught.value, UnsupportedVersion | UnknownCommandCode | PayloadError)


def test_eof_inside_the_payload() -> None:
    frame = GOLDEN_FRAMES[0][2]  # 57 payload bytes
    decoder = FrameDecoder()
    decoder.receive_data(frame[:-7])
    assert decoder.next_frame() is None
    with pytest.raises(FrameError) as caught:
        decoder.receive_eof()
    assert caught.value.framing_intact is False
    assert caught.value.message_id == 1
    assert str(caught.value) == (
        "stream ended inside a frame: its header announces 57 payload bytes, 50 arrived"
    )
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_eof_between_frames_is_not_an_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_eof()
    decoder.receive_data(GOLDEN_FRAMES[0][2])
    assert len(_drain(decoder)) == 1
    decoder.receive_eof()


def test_feeding_past_the_buffer_bound_is_refused() -> None:
    decoder = FrameDecoder()
    # A header announcing the largest payload, and more bytes than two frames' worth.
    header = bytes.fromhex("0001 00000001 2101 ffff")
    decoder.receive_data(header + b" " * (2 * MAX_FRAME_SIZE - HEADER_SIZE))
    assert decoder.buffered == 2 * MAX_FRAME_SIZE
    with pytest.raises(LocalProtocolError, match="exceed"):
        decoder.receive_data(b" ")
    assert decoder.buffered == 2 * MAX_FRAME_SIZE  # nothing was added
    # Draining makes room again.
    frame = decoder.next_frame()
    assert frame is not None
    assert len(frame.payload) == MAX_PAYLOAD_SIZE
    decoder.receive_data(b" ")
    assert decoder.buffered == MAX_FRAME_SIZE + 1


def test_custom_buffer_bound() -> None:
    with pytest.raises(ValueError, match="one frame"):
        FrameDecoder(max_buffer_size=MAX_FRAME_SIZE - 1)
    decoder = FrameDecoder(max_buffer_size=MAX_FRAME_SIZE)
    decoder.receive_data(b"\x00\x01" + b"\x00" * (MAX_FRAME_SIZE - 2))
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"\x00")
