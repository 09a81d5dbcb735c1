"""Lifetimes of the keys a KM holds for applications: what no application takes in time is
erased (an SDK policy: Q.4161, ETSI GS QKD 014 and D2.3 set no lifetime for a supplied key).

Theory of operation
-------------------
Every key entered its pool at a time the store keeps (:meth:`KeyStore.put`, or a move into
it). :meth:`Expiry.expire`, run every ``expiry_interval`` seconds, erases in one store
transaction per rule of :data:`LIFETIMES` the keys of the rule's pools older than its lifetime,
a :class:`~qkdn_sdk.roles.km.config.KMConfig` field:

- keys waiting for their destination application to fetch them by ID (``app:`` pools, which
  also hold the keys of a relay whose confirmation was interrupted: the source application was
  told the request failed, so nobody will ask for them) after ``key_lifetime``;
- session keys never pushed and acknowledged (``session:`` pools) after ``key_lifetime``;
- keys fetched and kept for a re-fetch (``delivered:`` pools) after ``refetch_window``.

Relayed keys waiting for their confirmation are not in the store: the relay receiver holds them
in memory and drops them after ``pending_timeout``. A sweep that fails (the store cannot be
written) is logged and tried again at the next one; nothing is lost by waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import trio

from qkdn_sdk.roles.keystore import KeyStore, KeyStoreError
from qkdn_sdk.roles.km.config import KMConfig

__all__ = ["LIFETIMES", "Expiry"]

logger = logging.getLogger("qkdn_sdk.roles.km")

LIFETIMES: Mapping[str, tuple[str, str]] = {
    "unfetched": ("app:", "key_lifetime"),
    "unpushed": ("session:", "key_lifetime"),
    "delivered": ("delivered:", "refetch_window"),
}
"""What expires, by kind: ``{kind: (prefix of its pools, the KMConfig field of its
lifetime)}``; the pools are those :mod:`~qkdn_sdk.roles.km.keys` names."""


class Expiry:
    """The lifetimes of one KM's application keys: a sweep on demand (:meth:`expire`) and on a
    schedule (:meth:`run`)."""

    def __init__(self, config: KMConfig, store: KeyStore) -> None:
        self._config = config
        self._store = store
        self.expired: dict[str, int] = dict.fromkeys(LIFETIMES, 0)
        """Keys erased since the KM started, by kind (:data:`LIFETIMES`)."""

    async def expire(self, now: float | None = None) -> dict[str, int]:
        """Erase the keys whose lifetime ended by ``now`` (Unix time; the clock's when
        ``None``) and return how many of each kind (those with none left out). Raises
        :class:`~qkdn_sdk.roles.keystore.KeyStoreError` when the store fails; the kinds swept
        before stay swept."""
        now = time.time() if now is None else now
        erased: dict[str, int] = {}
        for kind, (prefix, lifetime) in LIFETIMES.items():
            pools = await self._store.expire(prefix, now - getattr(self._config, lifetime))
            count = sum(pools.values())
            if count:
                erased[kind] = count
                self.expired[kind] += count
        if erased:
            logger.info(
                "%s: erased expired keys: %s",
                self._config.km_id,
                ", ".join(f"{count} {kind}" for kind, count in erased.items()),
            )
        return erased

    async def run(self) -> None:
        """Sweep every ``expiry_interval`` seconds, for as long as the KM runs."""
        while True:
            await trio.sleep(self._config.expiry_interval)
            try:
                await self.expire()
            except KeyStoreError as exc:
                logger.warning("%s: expired keys not erased: %s", self._config.km_id, exc)
