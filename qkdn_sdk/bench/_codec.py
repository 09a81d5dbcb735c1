"""``codec_*``: encode + decode of one frame, beside orjson alone on the same payload."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import orjson

from qkdn_sdk.bench._figure import Figure
from qkdn_sdk.bench._measure import time_per_call
from qkdn_sdk.codecs.frame import MAX_PAYLOAD_SIZE, FrameDecoder, decode_message, encode_message
from qkdn_sdk.codecs.payload import encode_payload, message_to_dict
from qkdn_sdk.messages import Key, Message, ak

__all__ = ["codec_figures", "key_response"]


def key_response(number: int, size: int = 256) -> ak.ResponseToKeyRequest:
    """A response to a key request with ``number`` keys of ``size`` bits (UUID key IDs)."""
    keys = [Key(key=bytes(size // 8), key_id=str(uuid.UUID(int=index))) for index in range(number)]
    return ak.ResponseToKeyRequest(keys=keys, response="success")


def _largest_response() -> ak.ResponseToKeyRequest:
    """The response with the most 256-bit keys whose payload fits one frame."""
    one = len(encode_payload(key_response(2))) - len(encode_payload(key_response(1)))
    number = MAX_PAYLOAD_SIZE // one
    while len(encode_payload(key_response(number))) > MAX_PAYLOAD_SIZE:
        number -= 1
    return key_response(number)


def _keys(number: int) -> str:
    return f"{number} key" if number == 1 else f"{number} keys"


def _round_trip(message: Message) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_message(message, 1))
    frame = decoder.next_frame()
    assert frame is not None
    decode_message(frame)


def _json_round_trip(payload: dict[str, Any]) -> None:
    orjson.loads(orjson.dumps(payload))


def codec_figures(seconds: float) -> list[Figure]:
    """``codec_1_key``, ``codec_100_keys``, ``codec_max_frame``: µs to encode a response to a
    key request into a frame and decode it back, beside orjson dumping and loading the same
    payload object (the JSON alone: no frame, no base64, no message objects)."""
    figures = []
    for name, message in (
        ("codec_1_key", key_response(1)),
        ("codec_100_keys", key_response(100)),
        ("codec_max_frame", _largest_response()),
    ):
        payload = message_to_dict(message)
        value = time_per_call(partial(_round_trip, message), seconds)
        baseline = time_per_call(partial(_json_round_trip, payload), seconds)
        figures.append(
            Figure(
                name=name,
                value=value * 1e6,
                unit="µs",
                baseline=baseline * 1e6,
                case=f"{_keys(len(message.keys))} of 256 bits, {len(encode_payload(message))} B",
                baseline_is="orjson dumps + loads of the payload",
            )
        )
    return figures
