"""The cryptography of key relay: one-time pads and one-time MACs made of KM link keys.

Theory of operation
-------------------
Both KMs of a KM link receive the same QKD-keys from their QKD modules. Once both hold a QKD-key
(key ID synchronisation, :class:`~qkdn_sdk.messages.kx.KeyIdSynchronizationRequest`), each cuts
it into *link key units* of :data:`UNIT_BITS` bits (D2.3 clause 7.1.2: the KMA re-formats
QKD-keys into keys of a prescribed unit length) whose IDs derive from the QKD-key ID and the
offset (:func:`split_qkd_key`), so both ends name every unit alike without a message.

Relays may cross on a link in both directions at once, so the units are split between the two
ends once and for all (:func:`spent_by_first`): the units of a QKD-key alternate between the two
KMs, and one bit of a hash of the QKD-key ID (the hash its unit IDs come from) says which KM
gets unit 0. So both ends spend whatever the length of the QKD-keys (a link of 256-bit QKD-keys,
one unit each, gives each end about half of them) and derive the same split from what both
hold, with no message. A unit is spent once: the sender takes it from its store before sending,
the receiver takes it from its own when the relay arrives and refuses a unit it no longer
holds.

One hop of a relay (D2.3 clause 7.1.3) spends ``2 + ceil(len(plaintext) / 32)`` units
(:func:`units_for`), named in this order in the hop's ``link_key_ids``:

1. the *MAC key*: a Poly1305 one-time MAC over every parameter of the hop, both ciphertexts
   included (:func:`hop_data`; Wegman-Carter: secure without computational assumptions, as the
   pad is, since its key is never reused);
2. the *metadata key*: ChaCha20-Poly1305 (:mod:`cryptography`) of the hop's
   :class:`~qkdn_sdk.messages.kx.RelayedKeyMetadata` (the key IDs and size, the applications,
   the session, the relay metadata), :func:`seal_metadata`;
3. the *pad*: the one-time pad XORed with the plaintext (:func:`seal`, :func:`unseal`).

D2.3 clause 7.1.3 XORs the key data and its metadata alike. The SDK keeps the one-time pad for
the keys and the end-to-end MAC key (information-theoretic), and encrypts the metadata with a
256-bit key of the link under ChaCha20-Poly1305 (computational): the key IDs and metadata of a
relay of 128 keys of 256 bits would cost more link key than the keys themselves, where one unit
hides any amount of metadata. What stays in clear is what a transit KM routes by.

The plaintext is an end-to-end MAC key followed by the keys relayed (:func:`relay_plaintext`):
the destination KM checks the keys against the ``integrity_value`` the source computed with that
key (:func:`end_to_end_tag`, D2.3 clause 7.1.5), so a transit KM that corrupted them is caught.

A hop's link units are the KMA-key it spends (D2.3 Table 7-1 (2)); :func:`kma_key_id` names it
alike at both of its KMs.
"""

from __future__ import annotations

import functools
import hashlib
import math
import uuid
from collections.abc import Sequence
from typing import cast

import orjson
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.poly1305 import Poly1305

from qkdn_sdk.codecs import payload
from qkdn_sdk.errors import PayloadError, QkdnError
from qkdn_sdk.messages import Message, kx

__all__ = [
    "KEY_UNITS",
    "MAC_KEY_BYTES",
    "MAX_UNITS",
    "UNIT_BITS",
    "UNIT_BYTES",
    "RelayIntegrityError",
    "check_end_to_end",
    "check_hop_units",
    "end_to_end_tag",
    "hop_data",
    "kma_key_id",
    "mac",
    "relay_plaintext",
    "seal",
    "seal_metadata",
    "spent_by_first",
    "split_qkd_key",
    "split_relay_plaintext",
    "units_for",
    "units_spent_by",
    "unseal",
    "unseal_metadata",
]

UNIT_BITS = 256
"""Bits of one link key unit."""
UNIT_BYTES = UNIT_BITS // 8
MAC_KEY_BYTES = 32
"""A Poly1305 one-time key: one unit."""
KEY_UNITS = 2
"""The units of a hop before its pad: the MAC key, then the metadata key."""

_UNIT_NAMESPACE = uuid.UUID("5d0b7f52-8a0e-4c55-9f39-3b1f6f0b2a61")
_KMA_KEY_NAMESPACE = uuid.UUID("53587cc6-efe7-49a5-89ec-a9b5355caf0f")
_METADATA_NONCE = bytes(12)
"""Fixed: a metadata key is a link unit, used for one encryption only, so the pair (key, nonce)
never repeats, which is all ChaCha20-Poly1305 asks of a nonce (RFC 8439 clause 4)."""


class RelayIntegrityError(QkdnError):
    """A relayed message or key failed its MAC: it was changed on the way, or the two ends of a
    link do not hold the same link keys. The text names which check failed, never key data."""


MAX_UNITS = 2**16
"""Most link units one QKD-key is cut into (a QKD-key of at most 16 Mbit): a unit's index is the
last 16 bits of its ID."""


def split_qkd_key(qkd_key_id: str, key: bytes) -> list[tuple[int, str, bytes]]:
    """``(index, unit ID, unit bytes)`` of every whole unit of a QKD-key; a remainder shorter
    than a unit is dropped. Both ends of a link derive the same IDs from the same QKD-key ID:
    unit ``i``'s is a version 8 UUID (RFC 9562 clause 5.8) of the first 14 bytes of
    ``SHA-1(namespace + QKD-key ID)`` (the version and variant bits set) and then ``i`` in 2
    bytes, big-endian.

    The IDs of a QKD-key's units differ in their last four hex digits only, so they sit side by
    side in the key store's index of IDs: cutting a QKD-key writes one page of it, not one per
    unit (cutting QKD-keys of 4096 bits took 40 % less time than with an independent hash per
    unit). Raises :class:`ValueError` for a key of more than :data:`MAX_UNITS` units.
    """
    count = len(key) // UNIT_BYTES
    if count > MAX_UNITS:
        raise ValueError(f"a QKD-key of {count} link units is over {MAX_UNITS}")
    prefix = _unit_id_prefix(qkd_key_id)
    return [
        (index, f"{prefix}{index:04x}", key[start : start + UNIT_BYTES])
        for index, start in enumerate(range(0, count * UNIT_BYTES, UNIT_BYTES))
    ]


@functools.lru_cache(maxsize=1024)
def _unit_digest(qkd_key_id: str) -> bytes:
    """``SHA-1(namespace + QKD-key ID)``: unit IDs and the split of units come from it (cached:
    a QKD-key's units are named and split one after the other)."""
    return hashlib.sha1(_UNIT_NAMESPACE.bytes + qkd_key_id.encode(), usedforsecurity=False).digest()


def _unit_id_prefix(qkd_key_id: str) -> str:
    """The first 32 hex digits (with dashes) of every unit ID of a QKD-key."""
    data = bytearray(_unit_digest(qkd_key_id))
    data[6] = (data[6] & 0x0F) | 0x80
    data[8] = (data[8] & 0x3F) | 0x80
    text = data.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:28]}"


def spent_by_first(qkd_key_id: str, index: int) -> bool:
    """Whether unit ``index`` of the QKD-key ``qkd_key_id`` is spent by the KM whose ID sorts
    first on its link (else by its neighbour): ``(index + b) % 2 == 0``, where ``b`` is the
    lowest bit of the last byte of ``SHA-1(namespace + QKD-key ID)`` (a byte no unit ID
    carries).

    The units of a QKD-key alternate between the ends, so a key of ``n`` units gives each end
    ``n // 2`` or ``n // 2 + 1`` of them, and ``b`` decides which end gets the odd one out: a
    one-unit QKD-key (a 256-bit key, the default of many ETSI 014 KMEs) goes to either end
    with probability one half. A rule by unit index alone (even units to the first KM) gave the
    other end nothing on such a link. ``b`` is a function of what both ends hold, so they split
    alike with no message; a module or KME, which names the QKD-keys, could steer it, but it
    holds the keys themselves anyway."""
    return (index + (_unit_digest(qkd_key_id)[-1] & 1)) % 2 == 0


def units_spent_by(qkd_key_id: str, units: int, *, first: bool) -> int:
    """How many of the ``units`` units of the QKD-key ``qkd_key_id`` the KM whose ID sorts
    first (``first``), or its neighbour, spends: :func:`spent_by_first` counted at once."""
    by_first = (units + 1 - (_unit_digest(qkd_key_id)[-1] & 1)) // 2
    return by_first if first else units - by_first


def units_for(plaintext_bytes: int) -> int:
    """Link key units one hop spends to carry ``plaintext_bytes``: a MAC key, a metadata key and
    the pad."""
    return KEY_UNITS + math.ceil(plaintext_bytes / UNIT_BYTES)


def kma_key_id(sender: str, receiver: str, unit_ids: Sequence[str]) -> str:
    """The KMA-key ID (D2.3 Table 7-1 (2)) of the link units ``unit_ids`` a hop from ``sender``
    to ``receiver`` spends: a version 5 UUID (RFC 9562 clause 5.5) of the two KMs' IDs, sorted,
    and the unit IDs in order, as JSON.

    Both KMs of the hop compute the same ID ("the same for the pair of keys for Alice and Bob"),
    and it is "unique in a QKD network" as Table 7-1 asks, which the unit IDs alone are not (two
    links' QKD modules may name QKD-keys alike): D2.3's own hint, an ID from "the hash value
    generated from the names of the pair"."""
    name = orjson.dumps([sorted((sender, receiver)), list(unit_ids)]).decode("utf-8")
    return str(uuid.uuid5(_KMA_KEY_NAMESPACE, name))


def relay_plaintext(mac_key: bytes, keys: Sequence[bytes]) -> bytes:
    """What a relay carries: the end-to-end MAC key, then the keys."""
    return mac_key + b"".join(keys)


def split_relay_plaintext(
    plaintext: bytes, number: int, size_bytes: int
) -> tuple[bytes, list[bytes]]:
    """The end-to-end MAC key and the ``number`` keys of ``size_bytes`` in ``plaintext``.

    Raises :class:`RelayIntegrityError` when the length does not match."""
    if len(plaintext) != MAC_KEY_BYTES + number * size_bytes:
        raise RelayIntegrityError(
            f"relayed data has {len(plaintext)} bytes, not the {MAC_KEY_BYTES} + "
            f"{number} x {size_bytes} announced"
        )
    keys = plaintext[MAC_KEY_BYTES:]
    return plaintext[:MAC_KEY_BYTES], [
        keys[index * size_bytes : (index + 1) * size_bytes] for index in range(number)
    ]


def end_to_end_tag(mac_key: bytes, key_ids: Sequence[str], keys: Sequence[bytes]) -> bytes:
    """Poly1305 tag of the relayed key IDs and keys, under the relay's one-time key."""
    return Poly1305.generate_tag(mac_key, _e2e_data(key_ids, keys))


def check_end_to_end(
    mac_key: bytes, key_ids: Sequence[str], keys: Sequence[bytes], tag: bytes
) -> None:
    """Raise :class:`RelayIntegrityError` unless ``tag`` is that of the keys and their IDs."""
    try:
        Poly1305.verify_tag(mac_key, _e2e_data(key_ids, keys), tag)
    except InvalidSignature:
        raise RelayIntegrityError(
            "the relayed keys failed the end-to-end integrity check"
        ) from None


def _e2e_data(key_ids: Sequence[str], keys: Sequence[bytes]) -> bytes:
    return orjson.dumps(list(key_ids)) + b"".join(keys)


def hop_data(relay: kx.KeyRelay) -> bytes:
    """The bytes a hop's MAC covers: every parameter of the relay but the MAC itself: the clear
    ones as a JSON array (the length of the encrypted metadata last), then the encrypted
    metadata, then the encrypted key."""
    header = [
        relay.key_relay_request_id,
        relay.sender_kma_id,
        relay.source_kma_id,
        relay.destination_kma_id,
        relay.transit_kma_ids,
        relay.link_key_ids,
        relay.integrity_value.hex(),
        relay.extension,
        len(relay.encrypted_metadata),
    ]
    return orjson.dumps(header) + relay.encrypted_metadata + relay.encrypted_key


def seal(
    plaintext: bytes, metadata: kx.RelayedKeyMetadata, units: Sequence[bytes]
) -> tuple[bytes, bytes, bytes]:
    """``(encrypted key, encrypted metadata, MAC key)``: ``plaintext`` XORed with the pad
    ``units[2:]``, ``metadata`` sealed with ``units[1]`` (:func:`seal_metadata`); ``units[0]``
    keys the hop's MAC (compute it over :func:`hop_data` with :func:`mac`)."""
    mac_key, metadata_key, pad = _keys_and_pad(plaintext, units)
    return _xor(plaintext, pad), seal_metadata(metadata_key, metadata), mac_key


def seal_metadata(key: bytes, metadata: kx.RelayedKeyMetadata) -> bytes:
    """ChaCha20-Poly1305 (RFC 8439) under ``key`` (a link unit, used this once) of ``metadata``
    as a JSON object under the conventions of every payload (absent optional fields left out)."""
    data = payload.encode_payload(cast("Message", metadata))
    return ChaCha20Poly1305(key).encrypt(_METADATA_NONCE, data, None)


def unseal_metadata(key: bytes, sealed: bytes) -> kx.RelayedKeyMetadata:
    """The metadata :func:`seal_metadata` sealed under ``key``.

    Raises :class:`RelayIntegrityError` when it fails its authentication or is not a
    :class:`~qkdn_sdk.messages.kx.RelayedKeyMetadata` under the rules of every payload (the
    sender's error, both: the hop's MAC passed), naming what it breaks."""
    try:
        data = ChaCha20Poly1305(key).decrypt(_METADATA_NONCE, sealed, None)
    except InvalidTag:
        raise RelayIntegrityError(
            "the key relay's encrypted metadata failed its authentication"
        ) from None
    try:
        # The payload codec reads any table class that has a spec_name; it is typed for messages.
        opened = payload.decode_payload(cast("type[Message]", kx.RelayedKeyMetadata), data)
    except PayloadError as exc:
        raise RelayIntegrityError(str(exc)) from None
    return cast("kx.RelayedKeyMetadata", opened)


def mac(mac_key: bytes, data: bytes) -> bytes:
    """The hop's one-time Poly1305 tag."""
    return Poly1305.generate_tag(mac_key, data)


def check_hop_units(relay: kx.KeyRelay) -> None:
    """Raise :class:`RelayIntegrityError` unless ``relay`` names as many link units as its
    encrypted key needs (before any unit is taken for it)."""
    needed = units_for(len(relay.encrypted_key))
    if len(relay.link_key_ids) != needed:
        raise RelayIntegrityError(
            f"{len(relay.encrypted_key)} bytes need {needed} link key units, "
            f"got {len(relay.link_key_ids)}"
        )


def unseal(relay: kx.KeyRelay, units: Sequence[bytes]) -> tuple[bytes, kx.RelayedKeyMetadata]:
    """``(plaintext, metadata)`` of one hop, after checking its MAC with ``units[0]``.

    Raises :class:`RelayIntegrityError` when the MAC does not match, the units are too few, or
    the metadata fails (:func:`unseal_metadata`)."""
    mac_key, metadata_key, pad = _keys_and_pad(relay.encrypted_key, units)
    try:
        Poly1305.verify_tag(mac_key, hop_data(relay), relay.message_authentication_code)
    except InvalidSignature:
        raise RelayIntegrityError("the key relay failed its message authentication code") from None
    metadata = unseal_metadata(metadata_key, relay.encrypted_metadata)
    return _xor(relay.encrypted_key, pad), metadata


def _keys_and_pad(data: bytes, units: Sequence[bytes]) -> tuple[bytes, bytes, bytes]:
    """``(MAC key, metadata key, pad)`` of a hop of ``data``."""
    if len(units) != units_for(len(data)) or any(len(unit) != UNIT_BYTES for unit in units):
        raise RelayIntegrityError(
            f"{len(data)} bytes need {units_for(len(data))} link key units, got {len(units)}"
        )
    return units[0], units[1], b"".join(units[KEY_UNITS:])[: len(data)]


def _xor(data: bytes, pad: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(len(data), "big")
