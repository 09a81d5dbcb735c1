"""One hop of a key relay (D2.3 clause 7.1.3), as the source KM and every trusted node send
it: link units towards the next KM (allocated to the relay's ends first, Q.4164 clause 7.6),
the plaintext one-time padded and the hop MACed with them (:mod:`qkdn_sdk.roles.relay`), the
:class:`~qkdn_sdk.messages.kx.KeyRelay` sent to the neighbour."""

from __future__ import annotations

import attrs

from qkdn_sdk.messages import kx
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import InsufficientKeys, KeyStore, StoredKey
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig
from qkdn_sdk.roles.km.keys import allocated_pool, now, out_pool
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.peers import Peers

__all__ = ["MAX_REROUTES", "HopSender"]

MAX_REROUTES = 4
"""Times a relay is tried again around an unreachable KM (so: KMs a relay's route avoids)."""


class HopSender:
    """Sends the hops of one KM's relays, spending its link key."""

    def __init__(self, config: KMConfig, store: KeyStore, links: LinkTable, peers: Peers) -> None:
        self._km_id = config.km_id
        self._store = store
        self._links = links
        self._peers = peers

    def spending_pool(self, relay: kx.KeyRelay, next_km: str, needed: int) -> str:
        """The key allocated to the relay's source and destination towards ``next_km`` when it
        holds ``needed`` units, else the link's own."""
        allocated = allocated_pool(next_km, relay.source_kma_id, relay.destination_kma_id)
        return allocated if self._store.count(allocated) >= needed else out_pool(next_km)

    def not_enough_key(self, next_km: str, exc: InsufficientKeys, needed: int) -> KeyManagerError:
        return KeyManagerError(
            f"not enough key on link {self._km_id}-{next_km}: {exc.available * otp.UNIT_BITS}"
            f" bits, {needed * otp.UNIT_BITS} needed"
        )

    async def send(
        self, relay: kx.KeyRelay, plaintext: bytes, next_km: str, units: list[StoredKey]
    ) -> None:
        """Seal ``plaintext`` with ``units`` (taken towards ``next_km``), MAC the hop and send
        it; :class:`KeyManagerError` with the neighbour's failure reason, or saying it is
        unreachable."""
        self._links.spent_bits[next_km] += len(units) * otp.UNIT_BITS
        self._links.notify_change()
        ciphertext, mac_key = otp.seal(plaintext, [unit.key for unit in units])
        relay = attrs.evolve(
            relay,
            sender_kma_id=self._km_id,
            link_key_ids=[unit.key_id for unit in units],
            encrypted_key=ciphertext,
            relay_metadata=attrs.evolve(
                relay.relay_metadata,
                source_kma_id=self._km_id,
                destination_kma_id=next_km,
                key_relay_time_stamp=now(),
                key_relay_encryption_method="otp+poly1305",
            ),
        )
        relay = attrs.evolve(
            relay, message_authentication_code=otp.mac(mac_key, otp.hop_data(relay))
        )
        await self._peers.ask_neighbour(next_km, relay, "relaying keys")
