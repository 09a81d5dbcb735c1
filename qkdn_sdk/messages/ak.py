"""Ak: cryptographic application <-> KM, ITU-T Q.4161 (12/2023), Tables 1-11.

Command codes are those of Q.4161 Table I.1: "21" application -> KM, "12" KM -> application.
Key supply upon request (clause 8.1): the application asks with :class:`KeyRequest` (source side)
or :class:`KeyRequestWithId` (destination side) and gets :class:`ResponseToKeyRequest`.
Proactive key supply (clause 8.2): sessions, then :class:`KeyRequestWithSessionId` on the source
side and :class:`ProactiveKeySupply` pushed by the KM on the destination side.
ETSI GS QKD 014 Get status (Appendix II maps no message to it): :class:`StatusRequest` and
:class:`Status`, SDK extensions.
"""

from __future__ import annotations

import attrs

from qkdn_sdk.messages._base import (
    JSONObject,
    Key,
    KeyId,
    Message,
    at_least,
    identifier,
    non_empty,
    spec,
)
from qkdn_sdk.messages._status import STATUS_TABLE, StatusFields

__all__ = [
    "KeyRequest",
    "KeyRequestWithId",
    "KeyRequestWithSessionId",
    "ProactiveKeySupply",
    "ResponseToKeyRequest",
    "ResponseToKeyRequestWithSessionId",
    "ResponseToProactiveKeySupply",
    "ResponseToSessionCreationNotification",
    "ResponseToSessionCreationRequest",
    "SessionCreationNotification",
    "SessionCreationRequest",
    "Status",
    "StatusRequest",
]

_EXTENSION = "Extension"


@attrs.frozen(kw_only=True, slots=False)
class KeyRequest(
    Message,
    code=0x2101,
    name="Key request",
    table="Q.4161 Table 1",
    response="ResponseToKeyRequest",
    claims=("application_source_id",),
):
    """Key request message (Q.4161 clause 8.1.1, Table 1): the source application asks its KM for
    keys to share with ``application_destination_id``."""

    application_source_id: str | None = attrs.field(
        default=None,
        metadata=spec("Application source ID", "the application that sends this message"),
        validator=identifier,
    )
    application_destination_id: str = attrs.field(
        metadata=spec("Application destination ID"), validator=identifier
    )
    application_name: str | None = attrs.field(default=None, metadata=spec("Application name"))
    number_of_keys: int | None = attrs.field(
        default=None,
        metadata=spec("Number of keys", "a default value is applied if omitted"),
        validator=at_least(1),
    )
    size_of_key: int | None = attrs.field(
        default=None,
        metadata=spec("Size of key", "bits; a default value is applied if omitted"),
        validator=at_least(1),
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class KeyRequestWithId(
    Message,
    code=0x2102,
    name="Key request with ID",
    table="Q.4161 Table 2",
    response="ResponseToKeyRequest",
    claims=("application_destination_id",),
):
    """Key request with identifier message (Q.4161 clause 8.1.2, Table 2): the destination
    application fetches the keys whose IDs the source application gave it."""

    application_source_id: str = attrs.field(
        metadata=spec("Application source ID"), validator=identifier
    )
    application_destination_id: str | None = attrs.field(
        default=None,
        metadata=spec("Application destination ID", "the application that sends this message"),
        validator=identifier,
    )
    application_name: str | None = attrs.field(default=None, metadata=spec("Application name"))
    key_ids: list[KeyId] = attrs.field(
        metadata=spec("Key IDs", "notified from the source application"),
        validator=non_empty,
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeyRequest(
    Message, code=0x1203, name="Response to key request", table="Q.4161 Table 3"
):
    """Response to key request message (Q.4161 clause 8.1.3, Table 3): the keys supplied for a
    :class:`KeyRequest` or :class:`KeyRequestWithId`, on either side."""

    keys: list[Key] = attrs.field(metadata=spec("Keys", "key data and metadata"))
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class SessionCreationRequest(
    Message,
    code=0x2104,
    name="Session creation request",
    table="Q.4161 Table 4",
    response="ResponseToSessionCreationRequest",
    claims=("application_source_id",),
):
    """Session creation request message (Q.4161 clause 8.2.1, Table 4): the source application
    opens a proactive key supply session with ``application_destination_id``."""

    application_source_id: str = attrs.field(
        metadata=spec("Application source ID"), validator=identifier
    )
    application_destination_id: str = attrs.field(
        metadata=spec("Application destination ID"), validator=identifier
    )
    application_name: str | None = attrs.field(default=None, metadata=spec("Application name"))
    number_of_keys: int | None = attrs.field(
        default=None,
        metadata=spec("Number of keys", "maximum number of KSA-keys during the session"),
        validator=at_least(1),
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToSessionCreationRequest(
    Message, code=0x1205, name="Response to session creation request", table="Q.4161 Table 5"
):
    """Response to session creation request message (Q.4161 clause 8.2.2, Table 5)."""

    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    response: str = attrs.field(
        metadata=spec("Response", "success, failure reason, or status table of key supply")
    )
    source_km_id: str | None = attrs.field(
        default=None, metadata=spec("Source KM ID"), validator=identifier
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class SessionCreationNotification(
    Message,
    code=0x1206,
    name="Session creation notification",
    table="Q.4161 Table 6",
    response="ResponseToSessionCreationNotification",
):
    """Session creation notification message (Q.4161 clause 8.2.3, Table 6): the destination KM
    tells its application that a session was opened by ``application_destination_id``.

    Table 6 reads two ways: its rows call ``application_source_id`` "the application that
    receives this message", while the clause says the KM notifies the receiver "with the ID of
    the source application". The SDK sends the rows' reading (the receiver's ID in
    ``application_source_id``, the application that opened the session in
    ``application_destination_id``): the rows are the normative part, and a receiver can tell
    either way which ID is the peer's, the one that is not its own, as the SDK's client does.
    """

    application_source_id: str = attrs.field(
        metadata=spec("Application source ID", "the application that receives this message"),
        validator=identifier,
    )
    application_destination_id: str = attrs.field(
        metadata=spec("Application destination ID"), validator=identifier
    )
    application_name: str | None = attrs.field(default=None, metadata=spec("Application name"))
    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    number_of_keys: int | None = attrs.field(
        default=None,
        metadata=spec("Number of keys", "maximum number of KSA-keys during the session"),
        validator=at_least(1),
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToSessionCreationNotification(
    Message,
    code=0x2107,
    name="Response to session creation notification",
    table="Q.4161 Table 7",
):
    """Response to session creation notification message (Q.4161 clause 8.2.4, Table 7)."""

    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class KeyRequestWithSessionId(
    Message,
    code=0x2108,
    name="Key request with session ID",
    table="Q.4161 Table 8",
    response="ResponseToKeyRequestWithSessionId",
):
    """Key request with session identifier message (Q.4161 clause 8.2.5, Table 8)."""

    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    number_of_keys: int | None = attrs.field(
        default=None,
        metadata=spec("Number of keys", "a default value is applied if omitted"),
        validator=at_least(1),
    )
    size_of_key: int | None = attrs.field(
        default=None,
        metadata=spec("Size of key", "bits; a default value is applied if omitted"),
        validator=at_least(1),
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeyRequestWithSessionId(
    Message,
    code=0x1209,
    name="Response to key request with session ID",
    table="Q.4161 Table 9",
):
    """Response to key request with session identifier message (Q.4161 clause 8.2.6, Table 9)."""

    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    keys: list[Key] = attrs.field(metadata=spec("Keys", "key data and metadata"))
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ProactiveKeySupply(
    Message,
    code=0x120A,
    name="Proactive key supply",
    table="Q.4161 Table 10",
    response="ResponseToProactiveKeySupply",
):
    """Proactive key supply message (Q.4161 clause 8.2.7, Table 10): the destination KM pushes
    the session's keys to its application."""

    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    keys: list[Key] = attrs.field(
        metadata=spec("Keys", "key data and metadata"), validator=non_empty
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class ResponseToProactiveKeySupply(
    Message, code=0x210B, name="Response to proactive key supply", table="Q.4161 Table 11"
):
    """Response to proactive key supply message (Q.4161 clause 8.2.8, Table 11)."""

    session_id: str = attrs.field(metadata=spec("Session ID"), validator=identifier)
    key_id: str = attrs.field(metadata=spec("Key ID"), validator=identifier)
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class StatusRequest(
    Message,
    code=0x2188,
    name="Status request",
    table=STATUS_TABLE,
    response="Status",
    claims=("application_source_id",),
):
    """The ETSI GS QKD 014 Get status method as a message (SDK extension): the master
    application asks its KM what keys it can have for ``application_destination_id`` (the slave
    SAE of the 014 URL ``/api/v1/keys/{slave_SAE_ID}/status``)."""

    application_source_id: str | None = attrs.field(
        default=None,
        metadata=spec("Application source ID", "the master SAE; over 014 its certificate"),
        validator=identifier,
    )
    application_destination_id: str = attrs.field(
        metadata=spec("Application destination ID", "the slave SAE"), validator=identifier
    )


@attrs.frozen(kw_only=True, slots=False)
class Status(StatusFields, Message, code=0x1289, name="Status", table=STATUS_TABLE):
    """The ETSI GS QKD 014 Status data format (SDK extension), the answer to
    :class:`StatusRequest`: the KM is the KME, the applications are the SAEs."""
