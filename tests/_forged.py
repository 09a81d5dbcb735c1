"""A hop of a key relay no KM made, for the tests of what a KM does with hops it receives."""

from __future__ import annotations

import secrets
import uuid

from qkdn_sdk.messages import kx
from qkdn_sdk.roles import relay as otp


def forged_hop(sender: str, destination: str, units: list[str]) -> kx.KeyRelay:
    """A hop of one key of 256 bits from ``sender`` towards the KM ``destination``, naming the
    link units ``units`` (a MAC key, a metadata key and a pad need 4), with a MAC no key made."""
    return kx.KeyRelay(
        key_relay_request_id=str(uuid.uuid4()),
        sender_kma_id=sender,
        source_kma_id=sender,
        destination_kma_id=destination,
        link_key_ids=units,
        encrypted_metadata=secrets.token_bytes(100),
        encrypted_key=secrets.token_bytes(otp.MAC_KEY_BYTES + 32),
        integrity_value=secrets.token_bytes(16),
        message_authentication_code=secrets.token_bytes(16),
    )
