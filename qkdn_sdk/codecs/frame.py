"""TCP frame codec, sans-IO (Q.4161/Q.4162/Q.4164 Appendix I, Figure I.1).

Theory of operation
-------------------
A frame is ``Version(2) MessageID(4) CommandCode(2) Length(2) Payload(Length)``, big-endian, with
a JSON payload. Nothing here touches a socket: :func:`encode_message` turns a message into frame
bytes, and a :class:`FrameDecoder` is fed whatever bytes arrive, in any chunking
(:meth:`~FrameDecoder.receive_data`), and hands out whole frames (:meth:`~FrameDecoder.next_frame`),
as h11 does for HTTP. :func:`decode_message` then turns a frame into its message.

What can go wrong, and whether the stream can still be read afterwards:

=============================  ==================================  ===============
problem                         raised                              framing intact
=============================  ==================================  ===============
Version is not 1                :class:`UnsupportedVersion`         no
stream ends inside a frame      :class:`FrameError`                 no
CommandCode not in catalogue    :class:`UnknownCommandCode`         yes
payload not JSON / breaks table :class:`PayloadError`               yes
=============================  ==================================  ===============

Once framing is lost the decoder refuses further use (it raises the same error again). The decoder
buffer is bounded: the caller drains frames after every :meth:`~FrameDecoder.receive_data`, so the
buffer never needs more than one frame plus one read.
"""

from __future__ import annotations

import struct

import attrs

from qkdn_sdk.codecs.payload import decode_payload, encode_payload
from qkdn_sdk.errors import (
    FrameError,
    LocalProtocolError,
    PayloadError,
    PayloadTooLarge,
    UnknownCommandCode,
    UnsupportedVersion,
)
from qkdn_sdk.messages import Message, message_class

__all__ = [
    "HEADER_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_ID",
    "MAX_PAYLOAD_SIZE",
    "VERSION",
    "Frame",
    "FrameDecoder",
    "decode_message",
    "encode_frame",
    "encode_message",
]

VERSION = 1
"""The frame Version this SDK speaks (DESIGN wire conventions)."""

_HEADER = struct.Struct(">HIHH")
HEADER_SIZE = _HEADER.size  # 10
MAX_PAYLOAD_SIZE = 0xFFFF
"""Length is 2 bytes: a payload holds at most 65,535 bytes."""
MAX_FRAME_SIZE = HEADER_SIZE + MAX_PAYLOAD_SIZE
MAX_MESSAGE_ID = 0xFFFF_FFFF


@attrs.frozen
class Frame:
    """One frame as read off the wire. ``payload`` is left out of ``repr()``: it may hold keys."""

    message_id: int
    command_code: int
    payload: bytes = attrs.field(repr=False)
    version: int = VERSION


def encode_frame(frame: Frame) -> bytes:
    """The bytes of ``frame``.

    Raises :class:`~qkdn_sdk.errors.PayloadTooLarge` for a payload over 65,535 bytes (never
    truncated) and :class:`~qkdn_sdk.errors.LocalProtocolError` for a header value that does not
    fit its field.
    """
    return _framed(frame.version, frame.message_id, frame.command_code, frame.payload)


def encode_message(message: Message, message_id: int) -> bytes:
    """The frame bytes of ``message`` sent with ``message_id`` (as :func:`encode_frame` makes
    them, without building the :class:`Frame`).

    Raises :class:`~qkdn_sdk.errors.PayloadTooLarge` when the JSON payload exceeds 65,535 bytes,
    and :class:`~qkdn_sdk.errors.LocalProtocolError` for a message ID that does not fit 4 bytes.
    """
    return _framed(VERSION, message_id, message.code, encode_payload(message))


def _framed(version: int, message_id: int, command_code: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise PayloadTooLarge(len(payload), MAX_PAYLOAD_SIZE)
    if not 0 <= message_id <= MAX_MESSAGE_ID:
        raise LocalProtocolError(f"message ID {message_id} does not fit 4 bytes")
    if not 0 <= command_code <= 0xFFFF or not 0 <= version <= 0xFFFF:
        raise LocalProtocolError("command code and version must fit 2 bytes")
    return _HEADER.pack(version, message_id, command_code, len(payload)) + payload


def decode_message(frame: Frame) -> Message:
    """The message a frame carries.

    Raises :class:`~qkdn_sdk.errors.UnknownCommandCode` or :class:`~qkdn_sdk.errors.PayloadError`,
    both with the frame's MessageID (framing stays intact).
    """
    try:
        cls = message_class(frame.command_code)
    except KeyError:
        raise UnknownCommandCode(frame.command_code, message_id=frame.message_id) from None
    try:
        return decode_payload(cls, frame.payload)
    except PayloadError as exc:
        raise PayloadError(
            exc.errors,
            message_name=cls.spec_name,
            command_code=frame.command_code,
            message_id=frame.message_id,
        ) from None


class FrameDecoder:
    """Incremental frame decoder: feed bytes, take frames.

    ::

        decoder = FrameDecoder()
        decoder.receive_data(chunk)
        while (frame := decoder.next_frame()) is not None:
            ...

    ``max_buffer_size`` bounds the bytes held; :meth:`receive_data` raises
    :class:`~qkdn_sdk.errors.LocalProtocolError` rather than grow past it (drain frames first).
    """

    def __init__(self, max_buffer_size: int = 2 * MAX_FRAME_SIZE) -> None:
        if max_buffer_size < MAX_FRAME_SIZE:
            raise ValueError(f"max_buffer_size must hold one frame ({MAX_FRAME_SIZE} bytes)")
        self._buffer = bytearray()
        self._max_buffer_size = max_buffer_size
        self._broken: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as frames."""
        return len(self._buffer)

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes read from the stream."""
        if self._broken is not None:
            raise self._broken
        if len(self._buffer) + len(data) > self._max_buffer_size:
            raise LocalProtocolError(
                f"frame decoder buffer would exceed {self._max_buffer_size} bytes: "
                "take frames with next_frame() before feeding more"
            )
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next whole frame, or ``None`` until more bytes arrive.

        Raises :class:`~qkdn_sdk.errors.UnsupportedVersion` (framing lost) for a frame whose
        Version is not 1.
        """
        if self._broken is not None:
            raise self._broken
        buffer = self._buffer
        if len(buffer) < HEADER_SIZE:
            if len(buffer) >= 2 and (version := int.from_bytes(buffer[:2], "big")) != VERSION:
                message_id = int.from_bytes(buffer[2:6], "big") if len(buffer) >= 6 else None
                self._broken = UnsupportedVersion(version, message_id=message_id)
                raise self._broken
            return None
        version, message_id, command_code, length = _HEADER.unpack_from(buffer)
        if version != VERSION:  # seen from two bytes, as above; the MessageID is whole here
            self._broken = UnsupportedVersion(version, message_id=message_id)
            raise self._broken
        end = HEADER_SIZE + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[HEADER_SIZE:end])
        del buffer[:end]
        return Frame(message_id, command_code, payload, version)

    def receive_eof(self) -> None:
        """The stream ended. Raises :class:`~qkdn_sdk.errors.FrameError` (framing lost) when it
        ended inside a frame; an end between frames is not an error."""
        if self._broken is not None:
            raise self._broken
        received = len(self._buffer)
        if not received:
            return
        if received < HEADER_SIZE:
            reason = f"stream ended inside a frame header ({received} of {HEADER_SIZE} bytes)"
            message_id = None
        else:
            _, message_id, _, length = _HEADER.unpack_from(self._buffer)
            reason = (
                f"stream ended inside a frame: its header announces {length} payload bytes, "
                f"{received - HEADER_SIZE} arrived"
            )
        self._broken = FrameError(reason, framing_intact=False, message_id=message_id)
        raise self._broken
