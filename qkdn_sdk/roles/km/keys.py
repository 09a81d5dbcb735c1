"""The keys a KM holds: the pools of its key store, the keys it makes, and their metadata.

Every key a KM holds lives in its :class:`~qkdn_sdk.roles.keystore.KeyStore`, in pools named
here:

``qkd:<neighbour>``
    QKD-keys of the link to ``<neighbour>`` that the neighbour may not hold yet.
``link:<neighbour>:out`` / ``link:<neighbour>:in``
    Link key units both ends hold (key ID synchronisation): those this KM spends sending to the
    neighbour, and those the neighbour spends sending here (:mod:`qkdn_sdk.roles.relay`).
``app:<source application>:<destination application>``
    Keys waiting for the destination application to fetch them by ID (Q.4161 clause 7.1.2),
    erased after ``key_lifetime`` (:mod:`~qkdn_sdk.roles.km.expiry`).
``delivered:<source application>:<destination application>``
    Keys the destination application fetched, kept for ``refetch_window`` so that the same
    application asking again for the same IDs (its response was lost) gets them again; then
    erased. No quota or status counts them as held.
``session:<destination application>:<session ID>``
    Keys waiting to be pushed to the destination application of a session (Q.4161 clause 7.2.4,
    :func:`~qkdn_sdk.roles.sessions.session_pool`), erased after ``key_lifetime`` when never
    acknowledged.
``reserved:<neighbour>:<reservation ID>`` / ``allocated:<neighbour>:<source KM>:<destination KM>``
    Link units towards ``<neighbour>`` set aside by a key reservation, then allocated to the
    relays between two KMs (Q.4164 clauses 7.5, 7.6).
"""

from __future__ import annotations

import datetime
import os
import time
import uuid
from typing import Any

import attrs

from qkdn_sdk.messages import Key
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import StoredKey

__all__ = [
    "Batch",
    "allocated_pool",
    "app_pool",
    "delivered_pool",
    "fresh_key_ids",
    "fresh_keys",
    "in_pool",
    "ksa_metadata",
    "link_units",
    "now",
    "out_pool",
    "qkd_pool",
    "reserved_pool",
]


def qkd_pool(neighbour: str) -> str:
    """The pool of the QKD-keys of the link to ``neighbour`` waiting for synchronisation."""
    return f"qkd:{neighbour}"


def out_pool(neighbour: str) -> str:
    """The pool of the link units this KM spends towards ``neighbour``."""
    return f"link:{neighbour}:out"


def in_pool(neighbour: str) -> str:
    """The pool of the link units ``neighbour`` spends towards this KM."""
    return f"link:{neighbour}:in"


def app_pool(source: str, destination: str) -> str:
    """The pool of the keys of ``source`` waiting for ``destination`` to fetch them."""
    return f"app:{source}:{destination}"


def delivered_pool(source: str, destination: str) -> str:
    """The pool of the keys ``destination`` fetched, kept for a re-fetch."""
    return f"delivered:{source}:{destination}"


def reserved_pool(neighbour: str, reservation_id: str) -> str:
    """The pool of the link units towards ``neighbour`` of a reservation (Q.4164 clause 7.5)."""
    return f"reserved:{neighbour}:{reservation_id}"


def allocated_pool(neighbour: str, source_km: str, destination_km: str) -> str:
    """Units allocated towards ``neighbour`` (``allocated:<neighbour>:`` counts them all)."""
    return f"allocated:{neighbour}:{source_km}:{destination_km}"


def now() -> str:
    """The time now, RFC 3339 UTC to the millisecond."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def ksa_metadata(source: str, destination: str, size: int) -> dict[str, Any]:
    """D2.3 Table 7-1 (4) KSA-key metadata."""
    return {
        "application_source_id": source,
        "application_destination_id": destination,
        "key_length": size,
        "time_stamp": now(),
    }


@attrs.frozen
class Batch:
    """Keys a source KM made for a key request: to hold for an application of its own, or to
    relay."""

    source: str
    destination: str
    key_ids: list[str]
    keys: list[bytes] = attrs.field(repr=False)
    size: int
    session_id: str | None = None
    direct: bool = False
    """Relay only to a neighbour (ETSI 014 ``{"route_type": "direct"}``): no trusted node."""

    def supplied(self) -> list[Key]:
        """The keys as a response to the source application carries them."""
        return [
            Key(key=key, key_id=key_id) for key_id, key in zip(self.key_ids, self.keys, strict=True)
        ]

    def stored(self, pool: str) -> list[StoredKey]:
        """The keys as ``pool`` of the store holds them, with their KSA-key metadata."""
        metadata = ksa_metadata(self.source, self.destination, self.size)
        return [
            StoredKey(key_id, pool, key, metadata)
            for key_id, key in zip(self.key_ids, self.keys, strict=True)
        ]


_BATCH_IDS = 1 << 16
"""Key IDs of one batch: they differ in their last four hex digits, the key's index."""


def fresh_key_ids(number: int) -> list[str]:
    """``number`` version 7 UUIDs (RFC 9562 clause 5.7) named as one batch: the Unix time in
    milliseconds, 58 random bits (one :func:`os.urandom` draw per 65,536 IDs), then the ID's
    index in 16 bits.

    Time first, so the IDs a KM makes sort by when it made them; the index last, so the key
    store keeps a batch's keys in one row, found by the rest of the ID
    (:mod:`qkdn_sdk.roles.keystore._sql`). 58 random bits per millisecond leave a collision
    between two batches of one KM less likely than 2^-40 at a million batches a second.
    """
    ids: list[str] = []
    for start in range(0, number, _BATCH_IDS):
        stem = str(uuid.UUID(bytes=_uuid7_bytes()))[:32]
        ids += [f"{stem}{index:04x}" for index in range(min(_BATCH_IDS, number - start))]
    return ids


def _uuid7_bytes() -> bytes:
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = raw[6] & 0x0F | 0x70  # version 7
    raw[8] = raw[8] & 0x3F | 0x80  # the variant of RFC 9562
    return bytes(raw)


def fresh_keys(number: int, size: int) -> tuple[list[str], list[bytes]]:
    """``number`` new keys of ``size`` bits (from one :func:`os.urandom` draw, as
    :func:`secrets.token_bytes` makes them) and their IDs (:func:`fresh_key_ids`)."""
    length = size // 8
    keys = os.urandom(number * length)
    return fresh_key_ids(number), [
        keys[start : start + length] for start in range(0, number * length, length)
    ]


def link_units(neighbour: str, first: bool, qkd_key: StoredKey) -> list[StoredKey]:
    """The link units of a QKD-key both ends of the link to ``neighbour`` hold: those this KM
    spends (``first``: its ID sorts first on the link) and those it receives."""
    metadata = {"qkd_key_id": qkd_key.key_id}
    return [
        StoredKey(
            key_id=unit_id,
            pool=out_pool(neighbour)
            if otp.spent_by_first(qkd_key.key_id, index) == first
            else in_pool(neighbour),
            key=unit,
            metadata=metadata,
        )
        for index, unit_id, unit in otp.split_qkd_key(qkd_key.key_id, qkd_key.key)
    ]
