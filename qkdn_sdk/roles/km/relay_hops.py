"""One hop of a key relay (D2.3 clause 7.1.3), as the source KM and every trusted node send
it: link units towards the next KM (allocated to the relay's ends first, Q.4164 clause 7.6),
the relay metadata of the hop (Table 7-1 (3), with the Table 7-1 (2) metadata of the KMA-key
the hop spends), the plaintext one-time padded, the metadata encrypted and the hop MACed with
them (:mod:`qkdn_sdk.roles.relay`), the :class:`~qkdn_sdk.messages.kx.KeyRelay` sent to the
neighbour.

And the record every KM on a relay's route keeps of the relays it took part in
(:class:`RelayRecords`): for audit, the KMA-keys it spent or received for each one named as its
neighbour names them.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import Callable

import attrs
import trio

from qkdn_sdk.messages import kx
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import InsufficientKeys, KeyStore, StoredKey
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig
from qkdn_sdk.roles.km.keys import allocated_pool, now, out_pool
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.peers import Peers

__all__ = [
    "CONFIRMED",
    "ENCRYPTION_METHOD",
    "MAX_RECORDS",
    "MAX_REROUTES",
    "PENDING",
    "HopSender",
    "RelayRecord",
    "RelayRecords",
    "RelayRole",
]

logger = logging.getLogger("qkdn_sdk.roles.km")

MAX_REROUTES = 4
"""Times a relay is tried again around an unreachable KM (so: KMs a relay's route avoids)."""
MAX_RECORDS = 1000
"""Relays a part of a KM keeps a record of: the oldest record goes first."""
ENCRYPTION_METHOD = "otp+poly1305"
"""The key relay encryption method of the relayed keys (D2.3 Table 7-1 (3)): a one-time pad,
and a one-time Poly1305 MAC of the hop (its metadata travels under ChaCha20-Poly1305)."""
PENDING = "pending"
"""The outcome of a relay a KM passed on or holds, until its confirmation."""
CONFIRMED = "confirmed"


class RelayRole(enum.Enum):
    """The part a KM takes in a relay."""

    SOURCE = "source"
    TRANSIT = "transit"
    DESTINATION = "destination"


@attrs.frozen(kw_only=True)
class RelayRecord:
    """A relay one KM took part in, as it saw it. No key material: IDs, counts and texts."""

    relay_id: str
    role: RelayRole
    previous_kma_id: str | None
    """The KM the hop came from (none at the source)."""
    next_kma_id: str | None
    """The KM this KM sent the hop to (none at the destination, or before a route was found)."""
    time_stamp: str
    """When the relay reached this KM (RFC 3339 UTC)."""
    number_of_keys: int | None
    """Keys relayed (none when the hop was refused before its metadata was read)."""
    kma_key_ids: tuple[str, ...] = ()
    """The KMA-keys (D2.3 Table 7-1 (2)) of the hops this KM received and sent, in order: its
    neighbours' records name each alike."""
    outcome: str = PENDING
    """``pending``, ``confirmed``, or ``failure: <reason>``."""


class RelayRecords:
    """The last :data:`MAX_RECORDS` relays one part of a KM took part in, by key relay request
    ID, oldest first. Each record is logged (info) when its outcome is known."""

    def __init__(self, km_id: str) -> None:
        self._km_id = km_id
        self._records: OrderedDict[str, RelayRecord] = OrderedDict()

    @property
    def entries(self) -> list[RelayRecord]:
        """The records, oldest first (a copy; each record is frozen)."""
        return list(self._records.values())

    def begin(
        self,
        relay_id: str,
        role: RelayRole,
        previous_kma_id: str | None,
        number_of_keys: int | None = None,
        *,
        kma_key_id: str | None = None,
    ) -> None:
        """A relay reaches this KM (from ``previous_kma_id`` over the KMA-key ``kma_key_id``)."""
        self._records.pop(relay_id, None)  # a relay ID seen again goes last
        self._records[relay_id] = RelayRecord(
            relay_id=relay_id,
            role=role,
            previous_kma_id=previous_kma_id,
            next_kma_id=None,
            time_stamp=now(),
            number_of_keys=number_of_keys,
            kma_key_ids=() if kma_key_id is None else (kma_key_id,),
        )
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)

    def update(
        self,
        relay_id: str,
        *,
        next_kma_id: str | None = None,
        number_of_keys: int | None = None,
        kma_key_id: str | None = None,
        outcome: str | None = None,
    ) -> None:
        """Add to the record of ``relay_id`` (if it is still kept) what became known; log it
        when its outcome is set."""
        record = self._records.get(relay_id)
        if record is None:
            return
        record = attrs.evolve(
            record,
            next_kma_id=next_kma_id or record.next_kma_id,
            number_of_keys=record.number_of_keys if number_of_keys is None else number_of_keys,
            kma_key_ids=(*record.kma_key_ids, kma_key_id) if kma_key_id else record.kma_key_ids,
            outcome=outcome or record.outcome,
        )
        self._records[relay_id] = record
        if outcome is not None:
            logger.info(
                "%s: relay %s (%s, from %s to %s, %s keys): %s",
                self._km_id,
                relay_id,
                record.role.value,
                record.previous_kma_id or "-",
                record.next_kma_id or "-",
                "?" if record.number_of_keys is None else record.number_of_keys,
                outcome,
            )

    def outcome(self, relay_id: str) -> str | None:
        """The outcome of the record of ``relay_id``, if it is still kept."""
        record = self._records.get(relay_id)
        return None if record is None else record.outcome


class HopSender:
    """Sends the hops of one KM's relays, spending its link key; ``observe`` gets the
    neighbour and the seconds of each hop it accepted (:mod:`qkdn_sdk.roles.metrics`)."""

    def __init__(
        self,
        config: KMConfig,
        store: KeyStore,
        links: LinkTable,
        peers: Peers,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self._km_id = config.km_id
        self._store = store
        self._links = links
        self._peers = peers
        self._observe = observe

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

    def hop_metadata(self, next_km: str, units: list[StoredKey]) -> kx.RelayMetadata:
        """The relay metadata of a hop to ``next_km`` spending ``units`` (D2.3 clause 7.1.3:
        this KM as the source, the next as the destination, the time now), with the Table 7-1
        (2) metadata of the KMA-key the hop spends: its units."""
        return kx.RelayMetadata(
            source_kma_id=self._km_id,
            destination_kma_id=next_km,
            key_relay_time_stamp=now(),
            key_relay_encryption_method=ENCRYPTION_METHOD,
            kma_key_metadata=kx.KmaKeyMetadata(
                kma_key_id=otp.kma_key_id(self._km_id, next_km, [unit.key_id for unit in units]),
                key_length=len(units) * otp.UNIT_BITS,
                kma_id=self._km_id,
                matching_kma_id=next_km,
            ),
        )

    async def send(
        self,
        relay: kx.KeyRelay,
        plaintext: bytes,
        metadata: kx.RelayedKeyMetadata,
        next_km: str,
        units: list[StoredKey],
    ) -> None:
        """Seal ``plaintext`` and ``metadata`` (its relay metadata this hop's,
        :meth:`hop_metadata`) with ``units`` (taken towards ``next_km``), MAC the hop and send
        it; :class:`KeyManagerError` with the neighbour's failure reason, or saying it is
        unreachable."""
        started = trio.current_time()
        self._links.spent_bits[next_km] += len(units) * otp.UNIT_BITS
        self._links.notify_change()
        ciphertext, sealed, mac_key = otp.seal(plaintext, metadata, [unit.key for unit in units])
        relay = attrs.evolve(
            relay,
            sender_kma_id=self._km_id,
            link_key_ids=[unit.key_id for unit in units],
            encrypted_metadata=sealed,
            encrypted_key=ciphertext,
        )
        relay = attrs.evolve(
            relay, message_authentication_code=otp.mac(mac_key, otp.hop_data(relay))
        )
        await self._peers.ask_neighbour(next_km, relay, "relaying keys")
        if self._observe is not None:
            self._observe(next_km, trio.current_time() - started)
