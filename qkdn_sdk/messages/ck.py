"""Ck: KM <-> QKDN controller, ITU-T Q.4164 (consent text 2023-10), Tables 1-13.

Command codes are those of Q.4164 Table I.1: "14" KM -> controller, "41" controller -> KM.

- Distributed QKDN (clause 7.1): :class:`KeyRelayNextHopRequest` -> next hop KMAs.
- Centralized QKDN (clause 7.2, Figure 2): the KM sends the one-way
  :class:`KeyRelayRequestNotification`; the controller sends the KM its own request,
  :class:`KeyRelayRequest`, with the whole route; the KM answers that request with
  :class:`ResponseToKeyRelayRequest` once the relay has completed. Each response answers the
  request its name says; the notification has none.
- Sessions (clauses 7.3, 7.4), key reservation (7.5) and key allocation (7.6).

Where the consent text is inconsistent the SDK chooses, and the catalogue says so in the remark:
Table 4 types "Transit KMA IDs" as string but describes a list (a list of strings here); Tables
11-13 carry "Key IDs" of reserved KMA-keys (typed string in Table 11, array of objects in Tables 12
and 13: a list of key ID objects in all three, so a reservation's answer can be allocated as is);
Table 13 lost its Extension row at a page break (restored, as gRPC Table II.5-2 maps it).

A failure is answered in the table's own response, also where a mandatory parameter has nothing
to hold (the SDK's reading): Table 2 with no Next KMA IDs ("IDs of KMAs available as a next relay
hop": none is) and the reason as the Extension object ``{"error_message": ...}``; Table 7 with its
Response ``"failure: <reason>"`` and an empty Destination KM ID when no destination KM is known.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from qkdn_sdk.messages._base import (
    EitherMandatory,
    JSONObject,
    KeyId,
    MandatoryIfRequestHad,
    Message,
    at_least,
    identifier,
    no_empty_member,
    non_empty,
    spec,
)

__all__ = [
    "AVOID_EXTENSION",
    "KEY_BITS_EXTENSION",
    "RELAY_ID_EXTENSION",
    "KeyAllocationRequest",
    "KeyRelayNextHopRequest",
    "KeyRelayRequest",
    "KeyRelayRequestNotification",
    "KeyReservationRequest",
    "ResponseToKeyAllocationRequest",
    "ResponseToKeyRelayNextHopRequest",
    "ResponseToKeyRelayRequest",
    "ResponseToKeyReservationRequest",
    "ResponseToSessionCreationNotification",
    "ResponseToSessionCreationRequest",
    "SessionCreationNotification",
    "SessionCreationRequest",
    "SessionEndNotification",
    "SessionEndedNotification",
]

KEY_BITS_EXTENSION = "key_bits"
"""SDK Extension member (Q.4164 Tables 1, 3) naming the key bits a relay needs on each link it
crosses: ``extension=[{"key_bits": 1024}]``."""
AVOID_EXTENSION = "avoid_kma_ids"
"""SDK Extension member (Q.4164 Tables 1, 3, and the KM-link relay) naming KMs the route must
not cross (a KM found them unreachable): ``extension=[{"avoid_kma_ids": ["km-b"]}]``."""
RELAY_ID_EXTENSION = "key_relay_request_id"
"""SDK Extension member of a key relay request notification (Table 3) that the controller echoes
as the Key relay request ID of its key relay request (Table 4)."""

_EXTENSION = "Extension"
_SOURCE_KMA = "Source KMA ID"
_DESTINATION_KMA = "Destination KMA ID"
_APPLICATION_DESTINATION = "Application destination ID"
_EITHER_DESTINATION = EitherMandatory(("destination_kma_id", "application_destination_id"))
_DESTINATION_IF_APPLICATION = MandatoryIfRequestHad(
    "destination_kma_id", "application_destination_id"
)


@attrs.frozen
class _MandatoryIfHopGiven(MandatoryIfRequestHad):
    """Table 2's rule, read as applying to an answer that gives a next hop: one with no Next
    KMA IDs (none is available) may name no destination, as the controller cannot when the
    destination application is unknown to it."""

    def describe(self) -> str:
        return f"{super().describe()} and next_kma_ids is not empty"

    def check(self, request: Message, response: Message) -> None:
        if getattr(response, "next_kma_ids", None):
            super().check(request, response)


def _destination_km(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Table 7's Destination KM ID is an ID, or empty in a failure (a Response beginning
    "failure"): the KM of a destination application no one knows cannot be named."""
    if value == "" and instance.response.lower().startswith("failure"):
        return
    identifier(instance, attribute, value)


# identifier, relaxed in a failure: ``__wrapped__`` tells introspection (test strategies) so
functools.update_wrapper(_destination_km, identifier, assigned=(), updated=())


@attrs.frozen(kw_only=True, slots=False)
class KeyRelayNextHopRequest(
    Message,
    code=0x1401,
    name="Key relay next hop request",
    table="Q.4164 Table 1",
    response="ResponseToKeyRelayNextHopRequest",
    rules=(_EITHER_DESTINATION,),
):
    """Key relay next hop request message (Q.4164 clause 8.1, Table 1): in a distributed QKDN a
    KM asks the controller for the next hop towards the destination. Either
    ``destination_kma_id`` or ``application_destination_id`` is mandatory."""

    source_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_SOURCE_KMA), validator=identifier
    )
    destination_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_DESTINATION_KMA), validator=identifier
    )
    application_destination_id: str | None = attrs.field(
        default=None, metadata=spec(_APPLICATION_DESTINATION), validator=identifier
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeyRelayNextHopRequest(
    Message,
    code=0x4102,
    name="Response to key relay next hop request",
    table="Q.4164 Table 2",
    pair_rules=(_MandatoryIfHopGiven("destination_kma_id", "application_destination_id"),),
):
    """Response to key relay next hop request message (Q.4164 clause 8.2, Table 2): the KMAs
    available as the next hop. ``destination_kma_id`` is mandatory if the request named the
    destination by ``application_destination_id`` and a next hop is given (checked by
    :func:`qkdn_sdk.messages.check_response`).

    An empty ``next_kma_ids`` says that no KMA is available as the next hop: the failure of the
    request (Table 2 has no Response parameter), with the reason as the Extension object
    ``{"error_message": "failure: ..."}`` (SDK convention, as a Table 4 without a route).
    :func:`qkdn_sdk.messages.failure_reason` reads it so."""

    source_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_SOURCE_KMA), validator=identifier
    )
    destination_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_DESTINATION_KMA), validator=identifier
    )
    next_kma_ids: list[str] = attrs.field(
        metadata=spec(
            "Next KMA IDs",
            "empty when no KMA is available as the next hop: the failure, with an extension "
            "{error_message} saying why (SDK convention)",
        ),
        validator=no_empty_member,
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class KeyRelayRequestNotification(
    Message,
    code=0x1403,
    name="Key relay request notification",
    table="Q.4164 Table 3",
    rules=(_EITHER_DESTINATION,),
):
    """Key relay request notification message (Q.4164 clause 8.3, Table 3): in a centralized QKDN
    a KM asks the controller for the whole relay route. Either ``destination_kma_id`` or
    ``application_destination_id`` is mandatory. A notification: nothing answers it; the
    controller then sends the KM a :class:`KeyRelayRequest` of its own (Figure 2)."""

    source_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_SOURCE_KMA), validator=identifier
    )
    destination_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_DESTINATION_KMA), validator=identifier
    )
    application_destination_id: str | None = attrs.field(
        default=None, metadata=spec(_APPLICATION_DESTINATION), validator=identifier
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class KeyRelayRequest(
    Message,
    code=0x4104,
    name="Key relay request",
    table="Q.4164 Table 4",
    response="ResponseToKeyRelayRequest",
    pair_rules=(_DESTINATION_IF_APPLICATION,),
):
    """Key relay request message (Q.4164 clause 8.4, Table 4): the controller gives the KM every
    transit KMA of the route, in answer to its :class:`KeyRelayRequestNotification`; the KM
    answers with :class:`ResponseToKeyRelayRequest` once the relay has completed.
    ``destination_kma_id`` is mandatory when the notification named the destination application
    only: as this request answers no request of the KM's, the controller checks it with
    ``check_response(notification, key_relay_request)`` before sending it."""

    source_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_SOURCE_KMA), validator=identifier
    )
    destination_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_DESTINATION_KMA), validator=identifier
    )
    transit_kma_ids: list[str] = attrs.field(
        metadata=spec(
            "Transit KMA IDs",
            "typed string in the text; a list of KMA IDs, in order: the KMs after the source up "
            "to the destination. Empty, with an extension {error_message}, when the controller "
            "finds no route (SDK convention)",
        ),
        validator=no_empty_member,
    )
    key_relay_request_id: str | None = attrs.field(
        default=None, metadata=spec("Key relay request ID"), validator=identifier
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeyRelayRequest(
    Message, code=0x1405, name="Response to key relay request", table="Q.4164 Table 5"
):
    """Response to key relay request message (Q.4164 clause 8.5, Table 5): the source KM reports
    that the relay completed (or why it failed)."""

    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    key_relay_request_id: str | None = attrs.field(
        default=None, metadata=spec("Key relay request ID"), validator=identifier
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class SessionCreationRequest(
    Message,
    code=0x1406,
    name="Session creation request",
    table="Q.4164 Table 6",
    response="ResponseToSessionCreationRequest",
):
    """Session creation request message (Q.4164 clause 8.6, Table 6): the source KM asks the
    controller to create a key supply session."""

    application_source_id: str = attrs.field(
        metadata=spec("Application source ID"), validator=identifier
    )
    application_destination_id: str = attrs.field(
        metadata=spec(_APPLICATION_DESTINATION), validator=identifier
    )
    number_of_keys: int | None = attrs.field(
        default=None,
        metadata=spec("Number of keys", "maximum number of KSA-keys during the session"),
        validator=at_least(1),
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToSessionCreationRequest(
    Message,
    code=0x4107,
    name="Response to session creation request",
    table="Q.4164 Table 7",
):
    """Response to session creation request message (Q.4164 clause 8.7, Table 7). A failure
    has its Response ``"failure: <reason>"``, the ID of the session that was not created, and
    ``destination_km_id`` empty when the controller knows no destination KM (an unknown
    destination application): the parameter is mandatory, and there is no KM to name."""

    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    destination_km_id: str = attrs.field(
        metadata=spec(
            "Destination KM ID",
            "empty in a failure when no destination KM is known (SDK convention)",
        ),
        validator=_destination_km,
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class SessionCreationNotification(
    Message,
    code=0x4108,
    name="Session creation notification",
    table="Q.4164 Table 8",
    response="ResponseToSessionCreationNotification",
):
    """Session creation notification message (Q.4164 clause 8.8, Table 8): the controller tells
    the destination KM about a new session."""

    application_source_id: str = attrs.field(
        metadata=spec("Application source ID"), validator=identifier
    )
    application_destination_id: str = attrs.field(
        metadata=spec(_APPLICATION_DESTINATION), validator=identifier
    )
    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    source_km_id: str = attrs.field(metadata=spec("Source KM ID"), validator=identifier)
    number_of_keys: int | None = attrs.field(
        default=None,
        metadata=spec("Number of keys", "maximum number of KSA-keys during the session"),
        validator=at_least(1),
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToSessionCreationNotification(
    Message,
    code=0x1409,
    name="Response to session creation notification",
    table="Q.4164 Table 9",
):
    """Response to session creation notification message (Q.4164 clause 8.9, Table 9)."""

    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class KeyReservationRequest(
    Message,
    code=0x410A,
    name="Key reservation request",
    table="Q.4164 Table 10",
    response="ResponseToKeyReservationRequest",
):
    """Key reservation request message (Q.4164 clause 8.10, Table 10): the controller asks a KM
    to reserve KMA-keys for a relay from ``source_kma_id`` to ``destination_kma_id``."""

    source_kma_id: str = attrs.field(metadata=spec(_SOURCE_KMA), validator=identifier)
    destination_kma_id: str = attrs.field(metadata=spec(_DESTINATION_KMA), validator=identifier)
    application_destination_id: str | None = attrs.field(
        default=None, metadata=spec(_APPLICATION_DESTINATION), validator=identifier
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeyReservationRequest(
    Message,
    code=0x140B,
    name="Response to key reservation request",
    table="Q.4164 Table 11",
):
    """Response to key reservation request message (Q.4164 clause 8.11, Table 11): the KMA-keys
    reserved. ``response`` is an integer: 0 success (gRPC ``result_code`` 0: OK, 1: NG)."""

    source_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_SOURCE_KMA), validator=identifier
    )
    destination_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_DESTINATION_KMA), validator=identifier
    )
    application_destination_id: str | None = attrs.field(
        default=None, metadata=spec(_APPLICATION_DESTINATION), validator=identifier
    )
    key_ids: list[KeyId] = attrs.field(
        metadata=spec("Key IDs", "typed string in the text; key ID objects as in Tables 12, 13")
    )
    response: int = attrs.field(
        metadata=spec("Response", "integer: 0 success, otherwise failure"), validator=at_least(0)
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class KeyAllocationRequest(
    Message,
    code=0x410C,
    name="Key allocation request",
    table="Q.4164 Table 12",
    response="ResponseToKeyAllocationRequest",
):
    """Key allocation request message (Q.4164 clause 8.12, Table 12): the controller allocates
    KMA-keys reserved earlier."""

    source_kma_id: str = attrs.field(metadata=spec(_SOURCE_KMA), validator=identifier)
    destination_kma_id: str = attrs.field(metadata=spec(_DESTINATION_KMA), validator=identifier)
    application_destination_id: str | None = attrs.field(
        default=None, metadata=spec(_APPLICATION_DESTINATION), validator=identifier
    )
    key_ids: list[KeyId] = attrs.field(metadata=spec("Key IDs"), validator=non_empty)
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeyAllocationRequest(
    Message,
    code=0x140D,
    name="Response to key allocation request",
    table="Q.4164 Table 13",
):
    """Response to key allocation request message (Q.4164 clause 8.13, Table 13). ``response``
    is an integer: 0 success."""

    source_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_SOURCE_KMA), validator=identifier
    )
    destination_kma_id: str | None = attrs.field(
        default=None, metadata=spec(_DESTINATION_KMA), validator=identifier
    )
    application_destination_id: str | None = attrs.field(
        default=None, metadata=spec(_APPLICATION_DESTINATION), validator=identifier
    )
    key_ids: list[KeyId] | None = attrs.field(default=None, metadata=spec("Key IDs"))
    response: int = attrs.field(
        metadata=spec("Response", "integer: 0 success, otherwise failure"), validator=at_least(0)
    )
    extension: list[JSONObject] | None = attrs.field(
        default=None,
        metadata=spec(_EXTENSION, "row lost at a page break; gRPC Table II.5-2 maps it"),
    )


# --- SDK extensions: the end of a session reaches its other KM ---------------------------------


@attrs.frozen(kw_only=True, slots=False)
class SessionEndNotification(
    Message,
    claims=("km_id",),
    code=0x1486,
    name="Session end notification",
    table="SDK extension (Q.4164 clause 7.3)",
):
    """A session created through the controller (Q.4164 clause 7.3) ended at ``km_id`` (its
    application ended it, or its lifetime ran out): the controller tells the session's other
    KM, ``peer_km_id``, which ends it too. Q.4164 has no message for the end of a session.
    One-way."""

    km_id: str = attrs.field(
        metadata=spec("KM ID", "the KM where the session ended: the sender"), validator=identifier
    )
    peer_km_id: str = attrs.field(
        metadata=spec("Peer KM ID", "the session's other KM"), validator=identifier
    )
    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    reason: str = attrs.field(metadata=spec("Reason", "why it ended, e.g. 'ended by alice'"))


@attrs.frozen(kw_only=True, slots=False)
class SessionEndedNotification(
    Message,
    code=0x4187,
    name="Session ended notification",
    table="SDK extension (Q.4164 clause 7.3)",
):
    """The controller passes a :class:`SessionEndNotification` on to the session's other KM:
    the session ``session_id`` ended at ``km_id``; this KM ends it too, if ``km_id`` is that
    session's other KM. One-way."""

    km_id: str = attrs.field(
        metadata=spec("KM ID", "the KM where the session ended"), validator=identifier
    )
    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    reason: str = attrs.field(metadata=spec("Reason", "why it ended"))
