"""The ETSI GS QKD 014 Status data format, shared by the Ak and Kq-1 status messages.

Q.4161 and Q.4162 Appendix II map key supply upon request onto ETSI GS QKD 014 but give its Get
status method no message; the SDK adds one pair per interface (extension codes) with the fields
of the 014 Status data format, so a 014 KME's status reaches the same handler as its keys.
"""

from __future__ import annotations

from typing import Any

import attrs

from qkdn_sdk.errors import InvalidMessage
from qkdn_sdk.messages._base import JSONObject, at_least, identifier, spec

__all__ = ["STATUS_TABLE", "StatusFields"]

STATUS_TABLE = "ETSI GS QKD 014 Get status, Status data format (Q.416x Appendix II)"


def _at_most(other: str) -> Any:
    """A count or size that may not exceed the field ``other`` (checked once both are set)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value > getattr(instance, other):
            raise InvalidMessage(
                attribute.name, f"is {value}, over {other} ({getattr(instance, other)})"
            )

    return check


@attrs.frozen(kw_only=True, slots=False)
class StatusFields:
    """The parameters of the ETSI GS QKD 014 Status data format, in SDK JSON names
    (``source_KME_ID`` -> ``source_kme_id``). ``stored_key_count <= max_key_count`` always."""

    source_kme_id: str = attrs.field(metadata=spec("source_KME_ID"), validator=identifier)
    target_kme_id: str = attrs.field(metadata=spec("target_KME_ID"), validator=identifier)
    master_sae_id: str = attrs.field(metadata=spec("master_SAE_ID"), validator=identifier)
    slave_sae_id: str = attrs.field(metadata=spec("slave_SAE_ID"), validator=identifier)
    key_size: int = attrs.field(
        metadata=spec("key_size", "default size of key, bits"), validator=at_least(1)
    )
    stored_key_count: int = attrs.field(
        metadata=spec("stored_key_count", "keys the KME can deliver now"),
        validator=[at_least(0), _at_most("max_key_count")],
    )
    max_key_count: int = attrs.field(metadata=spec("max_key_count"), validator=at_least(0))
    max_key_per_request: int = attrs.field(
        metadata=spec("max_key_per_request"), validator=at_least(1)
    )
    max_key_size: int = attrs.field(metadata=spec("max_key_size", "bits"), validator=at_least(1))
    min_key_size: int = attrs.field(
        metadata=spec("min_key_size", "bits"), validator=[at_least(1), _at_most("max_key_size")]
    )
    max_sae_id_count: int = attrs.field(
        metadata=spec("max_SAE_ID_count", "0: no key multicast"), validator=at_least(0)
    )
    status_extension: JSONObject | None = attrs.field(
        default=None, metadata=spec("status_extension")
    )
