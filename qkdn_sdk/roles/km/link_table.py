"""The link table: what a KM knows of each of its KM links at any moment, shared by the parts
that use the links (D2.3 clause 7.1).

Every part that sends on a link, cuts its keys or reports on it reads or writes here, and nothing
else: the link key it can spend (counted in the key store), the bits spent and got, whether the
neighbour answers, and the events that tie key acquisition, key ID synchronisation and the relay
together.

The key held at one end of a link is bounded
(:attr:`~qkdn_sdk.roles.km.config.KMConfig.max_link_key_bits`, :meth:`LinkTable.room_bits`): the
QKD-keys waiting for synchronisation and the link units, both directions, reserved and allocated
ones included. A link end that reaches the cap is *full*: it acquires nothing until consumption
brings it down to :data:`RESUME_AT` of the cap. Resuming only well below the cap makes each end
take a run of consecutive QKD-keys rather than one key now and then: the two ends take keys at
their own moments, and single keys taken apart would seldom be the same ones at both ends
(neither could cut them), where runs overlap.
"""

from __future__ import annotations

import trio

from qkdn_sdk.errors import quoted
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import KeyStore
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig
from qkdn_sdk.roles.km.keys import in_pool, out_pool, qkd_pool, reserved_pool

__all__ = ["RESUME_AT", "LinkTable"]

RESUME_AT = 0.75
"""The share of the cap a full link end comes down to before it acquires again."""


class LinkTable:
    """The KM links of ``config``, one entry per neighbour."""

    def __init__(self, config: KMConfig, store: KeyStore) -> None:
        self.km_id = config.km_id
        self._store = store
        self.neighbours = frozenset(link.neighbour for link in config.links)
        self.spent_bits: dict[str, int] = {link.neighbour: 0 for link in config.links}
        """Link key bits this KM spent sending towards each neighbour (relays and MACs)."""
        self.generated_bits: dict[str, int] = {link.neighbour: 0 for link in config.links}
        """Link key bits this KM got to spend towards each neighbour (cut from QKD-keys)."""
        self.unreachable: set[str] = set()
        """Neighbours the last request to failed to reach: their links carry no relay and are
        reported down (without key)."""
        self.sync_wanted = {link.neighbour: trio.Event() for link in config.links}
        """Set when QKD-keys of the link arrived: its key ID synchronisation runs sooner."""
        self.sync_rounds: dict[str, trio.Event] = {}
        """Per neighbour, the latest key ID synchronisation we sent (or, answering them, the
        cutting of the keys of the latest we answered): set once it ended."""
        self._changed = trio.Event()
        self.max_bits = config.max_link_key_bits
        """The cap on the key one end of each link holds."""
        self.qkd_key_bits: dict[str, int] = {
            link.neighbour: link.key_size or otp.UNIT_BITS for link in config.links
        }
        """Bits of the latest QKD-key of each link: the store counts keys, not bits, so the
        QKD-keys waiting for synchronisation count at this size each."""
        self.refused_keys: dict[str, int] = {link.neighbour: 0 for link in config.links}
        """QKD-keys of each link refused (pushed), or left at their source (asked for, at the
        last resumption, as its Get status counted them), because the link end was full."""
        self._full: set[str] = set()

    def neighbour(self, claimed: str) -> str:
        """``claimed``, when it is a neighbour; else :class:`KeyManagerError`."""
        if claimed not in self.neighbours:
            raise KeyManagerError(f"{quoted(claimed)} is not a neighbour of {self.km_id}")
        return claimed

    def link_key_bits(self, neighbour: str) -> int:
        """Bits of link key this KM can spend towards ``neighbour`` now."""
        return self._store.count(out_pool(neighbour)) * otp.UNIT_BITS

    def reserved_bits(self, neighbour: str) -> int:
        """Bits of link key towards ``neighbour`` reserved and not yet allocated (Q.4164 clause
        7.5)."""
        return sum(self._store.counts(reserved_pool(neighbour, "")).values()) * otp.UNIT_BITS

    def allocated_bits(self, neighbour: str) -> int:
        """Bits of link key towards ``neighbour`` allocated to relays (Q.4164 clause 7.6)."""
        return sum(self._store.counts(f"allocated:{neighbour}:").values()) * otp.UNIT_BITS

    def held_bits(self, neighbour: str) -> int:
        """Bits of key this end of the link to ``neighbour`` holds: its QKD-keys waiting for
        synchronisation (at :attr:`qkd_key_bits` each), link units both ways, reserved and
        allocated ones (O(pools), no I/O)."""
        units = self._store.count(out_pool(neighbour)) + self._store.count(in_pool(neighbour))
        waiting = self._store.count(qkd_pool(neighbour)) * self.qkd_key_bits[neighbour]
        return (
            waiting
            + units * otp.UNIT_BITS
            + self.reserved_bits(neighbour)
            + self.allocated_bits(neighbour)
        )

    def room_bits(self, neighbour: str) -> int:
        """Bits of QKD-key the link to ``neighbour`` may take now: 0 while it is full (it
        reached :attr:`max_bits` and has not come down to :data:`RESUME_AT` of it since), else
        what is left under the cap. A QKD-key is taken whenever this is above 0, so a link end
        holds at most one QKD-key (or one request's worth, :meth:`keys_to_ask`) over the cap."""
        held = self.held_bits(neighbour)
        if neighbour in self._full:
            if held > self.max_bits * RESUME_AT:
                return 0
            self._full.discard(neighbour)
        if held >= self.max_bits:
            self._full.add(neighbour)
            return 0
        return self.max_bits - held

    def keys_to_ask(self, neighbour: str, most: int, arriving_bits: int = 0) -> int:
        """How many QKD-keys of the link to ``neighbour`` to ask for now: enough to fill it to
        the cap, with ``arriving_bits`` already on their way, at the size of its latest QKD-key
        and at most ``most``; 0 while it is full or what arrives fills it."""
        room = self.room_bits(neighbour) - arriving_bits
        if room <= 0:
            return 0
        return min(most, -(-room // self.qkd_key_bits[neighbour]))

    async def wait_room(self, neighbour: str) -> None:
        """Return once the link to ``neighbour`` is not full (:meth:`room_bits`): woken by
        :meth:`notify_change` (link key spent, discarded, reserved or released), never a
        poll."""
        while not self.room_bits(neighbour):
            await self._changed.wait()

    def recheck_room(self) -> None:
        """Wake :meth:`wait_room` when a full link end came down to :data:`RESUME_AT` of the
        cap by a change nothing announced (a relay's confirmation takes its units at the
        destination): the status supply calls it every report period."""
        if any(self.room_bits(neighbour) for neighbour in list(self._full)):
            self.notify_change()

    def notify_change(self) -> None:
        """Wake everyone waiting for a change of the link keys (units cut, spent, reserved,
        allocated or released)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self) -> None:
        """Return at the next :meth:`notify_change`."""
        await self._changed.wait()

    async def wait_link_key(self, neighbour: str, bits: int) -> None:
        """Return once this KM can spend ``bits`` towards ``neighbour``."""
        while self.link_key_bits(neighbour) < bits:
            await self._changed.wait()
