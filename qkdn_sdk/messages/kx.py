"""KM link (KM <-> KM): FG QIT4N D2.3 key relay protocol messages and the SDK relay messages.

None of these has an ITU-assigned code: all use SDK extension codes 0x1180 and up ("11": KM to
KM). As in :mod:`qkdn_sdk.messages.mgmt`, D2.3 gives no M/O column and the SDK fixes it.

- HELLO, SESSION and UPDATE (D2.3 clause 7.2.2.2, Tables 7-8, 7-9, 7-10).
- What a KM needs to relay keys hop by hop (D2.3 clause 7.1.3, Figures 7-4/7-5): :class:`KeyRelay`
  carries keys one-time-pad encrypted with keys of the KM link, their IDs and the Table 7-1 (3)
  relay metadata encrypted (:class:`RelayedKeyMetadata`), a one-time MAC of the hop and an
  end-to-end integrity value; :class:`ResponseToKeyRelay`
  acknowledges it; :class:`KeyRelayConfirmation` makes relayed keys available at the destination
  once the source knows they arrived (D2.3 clause 7.1.5); and
  :class:`KeyIdSynchronizationRequest` keeps the link keys of two neighbours in step.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from qkdn_sdk.messages._base import (
    JSONObject,
    KeyId,
    Message,
    at_least,
    identifier,
    non_empty,
    spec,
)

__all__ = [
    "Hello",
    "KeyIdSynchronizationRequest",
    "KeyRelay",
    "KeyRelayConfirmation",
    "KmaKeyMetadata",
    "RelayMetadata",
    "RelayedKeyMetadata",
    "ResponseToKeyIdSynchronizationRequest",
    "ResponseToKeyRelay",
    "ResponseToKeyRelayConfirmation",
    "SessionMessage",
    "Update",
]

_EXTENSION = "Extension"


@attrs.frozen(kw_only=True, slots=False)
class Hello(
    Message,
    claims=("sender_id",),
    code=0x1180,
    name="HELLO message",
    table="FG QIT4N D2.3 Table 7-8",
    response="Hello",
):
    """HELLO message (D2.3 Table 7-8): neighbourhood setting between KMs for authentication.
    A KM answers a HELLO with its own HELLO."""

    sender_ip: str | None = attrs.field(default=None, metadata=spec("Sender IP"))
    sender_id: str = attrs.field(
        metadata=spec("Sender ID", "hostname (ID) of the sender KM"), validator=identifier
    )
    community_id: str | None = attrs.field(
        default=None, metadata=spec("Community ID", "community name")
    )
    authentication_info: str | None = attrs.field(
        default=None, metadata=spec("Authentication info", "authentication string"), repr=False
    )


@attrs.frozen(kw_only=True, slots=False)
class SessionMessage(
    Message,
    code=0x1181,
    name="SESSION message",
    table="FG QIT4N D2.3 Table 7-9",
    response="SessionMessage",
):
    """SESSION message (D2.3 Table 7-9): creating and negotiating KMA-key IDs between KMs.
    The peer answers with the SESSION it agrees to."""

    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    timer: int | None = attrs.field(
        default=None,
        metadata=spec("Timer", "lifetime of the KMA-key ID, seconds"),
        validator=at_least(1),
    )
    hash_value: str | None = attrs.field(
        default=None, metadata=spec("Hash value", "of the KMA-key ID")
    )


@attrs.frozen(kw_only=True, slots=False)
class Update(Message, code=0x1182, name="UPDATE message", table="FG QIT4N D2.3 Table 7-10"):
    """UPDATE message (D2.3 Table 7-10): route selection and KMA-key ID distribution across the
    network. One-way."""

    sender_ip: str | None = attrs.field(default=None, metadata=spec("Sender IP"))
    receiver_ip: str | None = attrs.field(default=None, metadata=spec("Receiver IP"))
    kma_key_id: str = attrs.field(metadata=spec("KMA-key ID"), validator=identifier)
    qos: JSONObject | None = attrs.field(default=None, metadata=spec("QoS", "quality of service"))


@attrs.frozen(kw_only=True)
class KmaKeyMetadata:
    """KMA-key metadata (D2.3 Table 7-1 (2)) of the KMA-key one hop of a relay spends: its link
    key units, which both KMs of the hop hold (D2.3 clause 7.1.2: KMA-keys are QKD-keys cut to
    a unit length). Only the rows the SDK fills; the two mandatory ones are mandatory here."""

    kma_key_id: str = attrs.field(
        metadata=spec("KMA-key ID", "the same at both KMs of the hop, unique in the QKDN"),
        validator=identifier,
    )
    key_length: int | None = attrs.field(
        default=None,
        metadata=spec("Key length", "bits of link key the hop spent"),
        validator=at_least(1),
    )
    kma_id: str | None = attrs.field(
        default=None, metadata=spec("KMA ID", "the hop's sender"), validator=identifier
    )
    matching_kma_id: str = attrs.field(
        metadata=spec("Matching KMA ID", "the hop's receiver"), validator=identifier
    )


@attrs.frozen(kw_only=True)
class RelayMetadata:
    """Relayed KMA-key metadata (D2.3 Table 7-1 (3)): updated at every hop with the current node
    as source and the next node as destination (clause 7.1.3)."""

    source_kma_id: str | None = attrs.field(
        default=None, metadata=spec("Source KMA ID", "this hop's sender"), validator=identifier
    )
    destination_kma_id: str | None = attrs.field(
        default=None,
        metadata=spec("Destination KMA ID", "this hop's receiver"),
        validator=identifier,
    )
    key_relay_time_stamp: str | None = attrs.field(
        default=None, metadata=spec("Key relay time stamp", "RFC 3339 UTC")
    )
    key_relay_encryption_method: str | None = attrs.field(
        default=None, metadata=spec("Key relay encryption method", "e.g. otp")
    )
    kma_key_metadata: KmaKeyMetadata = attrs.field(
        metadata=spec("KMA-key metadata", "Table 7-1 (2) metadata of this hop's KMA-key")
    )


@attrs.frozen(kw_only=True)
class RelayedKeyMetadata:
    """What a hop of a key relay carries encrypted besides the keys (D2.3 clause 7.1.3: the
    metadata of the key and the key relay information travel encrypted): the plaintext of
    :attr:`KeyRelay.encrypted_metadata`, a JSON object of these fields under the wire
    conventions of every payload. Not a message: no code, never sent alone."""

    spec_name: ClassVar[str] = "Key relay metadata"
    """What a payload error calls it (as a message's name)."""

    application_source_id: str | None = attrs.field(
        default=None, metadata=spec("Application source ID"), validator=identifier
    )
    application_destination_id: str | None = attrs.field(
        default=None, metadata=spec("Application destination ID"), validator=identifier
    )
    session_id: str | None = attrs.field(
        default=None,
        metadata=spec(
            "Session ID", "the proactive key supply session of the keys (Q.4161 clause 7.2)"
        ),
        validator=identifier,
    )
    key_ids: list[KeyId] = attrs.field(
        metadata=spec("Key IDs", "the keys relayed, in order"), validator=non_empty
    )
    size_of_key: int = attrs.field(
        metadata=spec("Size of key", "bits of each key relayed"), validator=at_least(1)
    )
    relay_metadata: RelayMetadata = attrs.field(metadata=spec("Relayed KMA-key metadata"))


@attrs.frozen(kw_only=True, slots=False)
class KeyRelay(
    Message,
    code=0x1183,
    claims=("sender_kma_id",),
    name="Key relay",
    table="SDK extension (FG QIT4N D2.3 clause 7.1.3, Table 7-1 (3))",
    response="ResponseToKeyRelay",
):
    """Key relay over one KM link (D2.3 clause 7.1.3, Figures 7-4 and 7-5): keys on their way
    from ``source_kma_id`` to ``destination_kma_id`` (the ends of the whole route, as in
    Q.4164), encrypted with link keys that both neighbours of this hop hold.

    In clear travels only what a transit KM routes by: the relay's ID, this hop's sender, the
    ends of the route, the transit KMs, the link keys spent and the extension. The keys' IDs and
    size, the applications, the session and the relay metadata (:class:`RelayedKeyMetadata`)
    are ``encrypted_metadata``; the keys, after an end-to-end MAC key, are ``encrypted_key``.

    ``link_key_ids`` names the link keys spent, in order: the first keys this hop's one-time
    message authentication code (``message_authentication_code``, over every other parameter),
    the second ``encrypted_metadata``, the rest are the one-time pad of ``encrypted_key``.
    ``integrity_value`` lets the final destination check the keys end to end (D2.3 clause
    7.1.5). How all of them are computed is the relay engine's (:mod:`qkdn_sdk.roles.relay`);
    the message carries them as base64 bytes.
    """

    key_relay_request_id: str = attrs.field(
        metadata=spec("Key relay request ID", "as in Q.4164 Table 4"), validator=identifier
    )
    sender_kma_id: str = attrs.field(
        metadata=spec("Sender KMA ID", "the KM that sends this hop"), validator=identifier
    )
    source_kma_id: str = attrs.field(
        metadata=spec("Source KMA ID", "source of the whole relay route"), validator=identifier
    )
    destination_kma_id: str = attrs.field(
        metadata=spec("Destination KMA ID", "destination of the whole relay route"),
        validator=identifier,
    )
    transit_kma_ids: list[str] | None = attrs.field(
        default=None,
        metadata=spec("Transit KMA IDs", "the rest of the route, centralized QKDN"),
        validator=non_empty,
    )
    link_key_ids: list[str] = attrs.field(
        metadata=spec(
            "Link key IDs", "the KM link keys spent: MAC key, metadata key, then the pad"
        ),
        validator=non_empty,
    )
    encrypted_metadata: bytes = attrs.field(
        metadata=spec(
            "Encrypted metadata",
            "base64 of the key IDs, applications, session and relayed KMA-key metadata, "
            "ChaCha20-Poly1305 under the metadata key",
        ),
        repr=False,
    )
    encrypted_key: bytes = attrs.field(
        metadata=spec("Encrypted key", "base64 of the keys XOR the pad"), repr=False
    )
    integrity_value: bytes = attrs.field(
        metadata=spec("Integrity value", "base64; checked at the final destination"), repr=False
    )
    message_authentication_code: bytes = attrs.field(
        metadata=spec("Message authentication code", "base64; one-time MAC of this hop"),
        repr=False,
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeyRelay(
    Message,
    code=0x1184,
    name="Response to key relay",
    table="SDK extension (FG QIT4N D2.3 clause 7.1.3)",
):
    """Response to key relay: the destination KM holds the keys (pending until the source KM
    confirms them, :class:`KeyRelayConfirmation`), or why not. The link keys of the hop are
    spent either way."""

    key_relay_request_id: str = attrs.field(
        metadata=spec("Key relay request ID"), validator=identifier
    )
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class KeyRelayConfirmation(
    Message,
    code=0x1187,
    claims=("sender_kma_id",),
    name="Key relay confirmation",
    table="SDK extension (FG QIT4N D2.3 clause 7.1.5)",
    response="ResponseToKeyRelayConfirmation",
):
    """Key relay confirmation: the source KM tells the destination KM, hop by hop along the
    route of the relay, that the relayed keys may now be supplied. Until then the destination
    holds them pending, and a relay that is never confirmed leaves no key any application can
    get."""

    key_relay_request_id: str = attrs.field(
        metadata=spec("Key relay request ID"), validator=identifier
    )
    sender_kma_id: str = attrs.field(
        metadata=spec("Sender KMA ID", "the KM that sends this hop"), validator=identifier
    )
    source_kma_id: str = attrs.field(metadata=spec("Source KMA ID"), validator=identifier)
    destination_kma_id: str = attrs.field(metadata=spec("Destination KMA ID"), validator=identifier)
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeyRelayConfirmation(
    Message,
    code=0x1188,
    name="Response to key relay confirmation",
    table="SDK extension (FG QIT4N D2.3 clause 7.1.5)",
):
    """Response to key relay confirmation: the destination KM made the keys available, or why
    not."""

    key_relay_request_id: str = attrs.field(
        metadata=spec("Key relay request ID"), validator=identifier
    )
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class KeyIdSynchronizationRequest(
    Message,
    code=0x1185,
    claims=("source_kma_id",),
    name="Key ID synchronization request",
    table="SDK extension (FG QIT4N D2.3 clause 7.2, key synchronization protocol)",
    response="ResponseToKeyIdSynchronizationRequest",
):
    """Key ID synchronization request: the IDs of the link keys the sender holds for this KM
    link, so both neighbours agree which keys they share before using them as pads."""

    source_kma_id: str = attrs.field(metadata=spec("Source KMA ID"), validator=identifier)
    destination_kma_id: str = attrs.field(metadata=spec("Destination KMA ID"), validator=identifier)
    key_ids: list[KeyId] = attrs.field(metadata=spec("Key IDs", "link keys the sender holds"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeyIdSynchronizationRequest(
    Message,
    code=0x1186,
    name="Response to key ID synchronization request",
    table="SDK extension (FG QIT4N D2.3 clause 7.2, key synchronization protocol)",
):
    """Response to key ID synchronization request: the IDs both neighbours hold."""

    key_ids: list[KeyId] = attrs.field(metadata=spec("Key IDs", "link keys both sides hold"))
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))
