"""The link table: what a KM knows of each of its KM links at any moment, shared by the parts
that use the links (D2.3 clause 7.1).

Every part that sends on a link, cuts its keys or reports on it reads or writes here, and nothing
else: the link key it can spend (counted in the key store), the bits spent and got, whether the
neighbour answers, and the events that tie key acquisition, key ID synchronisation and the relay
together.
"""

from __future__ import annotations

import trio

from qkdn_sdk.errors import quoted
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import KeyStore
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig
from qkdn_sdk.roles.km.keys import out_pool

__all__ = ["LinkTable"]


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

    def neighbour(self, claimed: str) -> str:
        """``claimed``, when it is a neighbour; else :class:`KeyManagerError`."""
        if claimed not in self.neighbours:
            raise KeyManagerError(f"{quoted(claimed)} is not a neighbour of {self.km_id}")
        return claimed

    def link_key_bits(self, neighbour: str) -> int:
        """Bits of link key this KM can spend towards ``neighbour`` now."""
        return self._store.count(out_pool(neighbour)) * otp.UNIT_BITS

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
