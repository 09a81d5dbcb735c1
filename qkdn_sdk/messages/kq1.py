"""Kq-1: QKD module <-> KM, ITU-T Q.4162 (12/2023), Tables 1-4.

Command codes are those of Q.4162 Table I.1: "31" QKD module -> KM, "13" KM -> QKD module.
Proactive key supply (clause 8.1): the module pushes each QKD-key with :class:`KeySupply`.
Key supply upon request (clause 8.2): the KM asks with :class:`KeyRequest`.
Over ETSI GS QKD 014 (Appendix II: the KM is the SAE, the module the KME), the SDK adds the 014
methods Appendix II leaves out: :class:`KeyRequestWithKeyIds` (Get key with key IDs) and
:class:`StatusRequest` / :class:`Status` (Get status), extension codes.
"""

from __future__ import annotations

import attrs

from qkdn_sdk.errors import InvalidMessage
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
    "KeyRequestWithKeyIds",
    "KeySupply",
    "ResponseToKeyRequest",
    "ResponseToKeySupply",
    "Status",
    "StatusRequest",
]

_EXTENSION = "Extension"


@attrs.frozen(kw_only=True, slots=False)
class KeySupply(
    Message,
    code=0x3101,
    name="Key supply",
    table="Q.4162 Table 1",
    response="ResponseToKeySupply",
    claims=("qkd_module_id",),
):
    """Key supply message (Q.4162 clause 8.1.1, Table 1): the QKD module supplies one QKD-key
    with its metadata (FG QIT4N D2.3 Table 7-1 (1)) to its KM.

    When ``key_length`` is given it must equal the bit length of ``key``.
    """

    key: bytes = attrs.field(metadata=spec("Key", "base64 of the key bytes"), repr=False)
    key_id: str = attrs.field(metadata=spec("Key ID"), validator=identifier)
    qkd_module_id: str | None = attrs.field(
        default=None, metadata=spec("QKD module ID"), validator=identifier
    )
    matching_qkd_module_id: str | None = attrs.field(
        default=None, metadata=spec("Matching QKD module ID"), validator=identifier
    )
    key_length: int | None = attrs.field(
        default=None, metadata=spec("Key length", "bits"), validator=at_least(1)
    )
    generation_time_stamp: str | None = attrs.field(
        default=None, metadata=spec("Generation time stamp", "RFC 3339 UTC")
    )
    hash_value: str | None = attrs.field(default=None, metadata=spec("Hash value"))
    extension: list[JSONObject] | None = attrs.field(
        default=None, metadata=spec(_EXTENSION, "for future use")
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if not self.key:
            raise InvalidMessage("key", "must not be empty")
        if self.key_length is not None and self.key_length != 8 * len(self.key):
            raise InvalidMessage(
                "key_length",
                f"is {self.key_length} bits but the key has {8 * len(self.key)} bits",
            )


@attrs.frozen(kw_only=True, slots=False)
class ResponseToKeySupply(
    Message, code=0x1302, name="Response to key supply", table="Q.4162 Table 2"
):
    """Response to key supply message (Q.4162 clause 8.1.2, Table 2): the KM reports the receipt
    of a QKD-key."""

    key_id: str = attrs.field(metadata=spec("Key ID"), validator=identifier)
    qkd_module_id: str | None = attrs.field(
        default=None, metadata=spec("QKD module ID"), validator=identifier
    )
    matching_qkd_module_id: str | None = attrs.field(
        default=None, metadata=spec("Matching QKD module ID"), validator=identifier
    )
    response: str = attrs.field(metadata=spec("Response", "success or failure reason"))
    extension: list[JSONObject] | None = attrs.field(
        default=None, metadata=spec(_EXTENSION, "for future use")
    )


@attrs.frozen(kw_only=True, slots=False)
class KeyRequest(
    Message,
    code=0x1303,
    name="Key request",
    table="Q.4162 Table 3",
    response="ResponseToKeyRequest",
):
    """Key request message (Q.4162 clause 8.2.1, Table 3): the KM asks its QKD module for
    QKD-keys."""

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
class ResponseToKeyRequest(
    Message, code=0x3104, name="Response to key request", table="Q.4162 Table 4"
):
    """Response to key request message (Q.4162 clause 8.2.2, Table 4): the QKD-keys supplied."""

    keys: list[Key] = attrs.field(metadata=spec("Keys", "key data and metadata"))
    response: str = attrs.field(metadata=spec("Response", "result of key supply"))
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class KeyRequestWithKeyIds(
    Message,
    code=0x1380,
    name="Key request with key IDs",
    table="ETSI GS QKD 014 Get key with key IDs (Q.4162 Appendix II)",
    response="ResponseToKeyRequest",
):
    """The ETSI GS QKD 014 Get key with key IDs method as a Kq-1 message (SDK extension): the
    KM at one end of a QKD link takes from its module the QKD-keys whose IDs the KM at the other
    end got by a :class:`KeyRequest` (the 014 slave SAE fetching the master's keys)."""

    master_sae_id: str = attrs.field(
        metadata=spec("master_SAE_ID", "the KM at the other end, which got the keys"),
        validator=identifier,
    )
    key_ids: list[KeyId] = attrs.field(
        metadata=spec("Key IDs", "as the other end's KM got them"), validator=non_empty
    )
    extension: list[JSONObject] | None = attrs.field(default=None, metadata=spec(_EXTENSION))


@attrs.frozen(kw_only=True, slots=False)
class StatusRequest(
    Message, code=0x1381, name="Status request", table=STATUS_TABLE, response="Status"
):
    """The ETSI GS QKD 014 Get status method as a Kq-1 message (SDK extension): the KM asks its
    QKD module how many QKD-keys it holds for the link."""

    slave_sae_id: str = attrs.field(
        metadata=spec("slave_SAE_ID", "the KM at the other end of the link"),
        validator=identifier,
    )


@attrs.frozen(kw_only=True, slots=False)
class Status(StatusFields, Message, code=0x3182, name="Status", table=STATUS_TABLE):
    """The ETSI GS QKD 014 Status data format (SDK extension), the answer to
    :class:`StatusRequest`: the module is the KME, the KMs at the link's ends are the SAEs."""
