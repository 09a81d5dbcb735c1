"""Key relay at a trusted node and at the destination (D2.3 clause 7.1.3): hops that come from
a neighbouring KM.

A trusted node takes the link units the hop came with and those of the hop it sends in one
transaction, unseals the hop (checking its MAC), and sends it on towards the destination: to the
next KM of the relay's route (centralized routing) or to the controller's next hop (distributed).
The destination unseals the hop, checks the end-to-end integrity value of the keys (D2.3 clause
7.1.5) and holds them *pending*, in memory, with the hop's units; the source's confirmation,
passed on by every trusted node, stores them and takes those units in one transaction, with
their KSA-key metadata and the relay metadata of the last hop (D2.3 clause 7.1.3). Keys never
confirmed are dropped after ``pending_timeout`` (or when the KM stops), and the units of a hop
that fails are spent all the same: a unit is used once.

Both keep a record of every relay that reached them, and of what became of it
(:attr:`RelayReceiver.records`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import attrs
import trio

from qkdn_sdk.errors import QkdnError, quoted
from qkdn_sdk.messages import ck, kx
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import (
    DuplicateKey,
    InsufficientKeys,
    KeyStore,
    KeyStoreError,
    StoredKey,
    UnknownKeys,
)
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig, Spawn
from qkdn_sdk.roles.km.keys import app_pool, in_pool, ksa_metadata
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.peers import Peers
from qkdn_sdk.roles.km.quotas import Quotas
from qkdn_sdk.roles.km.relay_hops import (
    CONFIRMED,
    MAX_REROUTES,
    PENDING,
    HopSender,
    RelayRecord,
    RelayRecords,
    RelayRole,
)
from qkdn_sdk.roles.km.routes import Routes
from qkdn_sdk.roles.sessions import SessionError, Sessions, session_pool
from qkdn_sdk.transport import Connection

__all__ = ["RelayReceiver"]

logger = logging.getLogger("qkdn_sdk.roles.km")

_T = TypeVar("_T")


@attrs.frozen
class _Received:
    """A relay received here (the destination), held until its confirmation."""

    pool: str
    """Where its keys go once confirmed."""
    keys: list[StoredKey] = attrs.field(repr=False)
    sender: str
    unit_ids: list[str]
    """The link units of the hop from ``sender``, taken with the confirmation."""


class RelayReceiver:
    """The hops one KM receives: those it passes on (a trusted node) and those that end here
    (the destination). ``stored(pool)`` is called once relayed keys are stored in ``pool`` (the
    session pusher wakes for them)."""

    def __init__(
        self,
        config: KMConfig,
        store: KeyStore,
        links: LinkTable,
        peers: Peers,
        routes: Routes,
        sessions: Sessions,
        hops: HopSender,
        quotas: Quotas,
        *,
        stored: Callable[[str], None],
        spawn: Spawn,
    ) -> None:
        self._config = config
        self._km_id = config.km_id
        self._store = store
        self._links = links
        self._quotas = quotas
        self._peers = peers
        self._routes = routes
        self._sessions = sessions
        self._hops = hops
        self._stored = stored
        self._spawn = spawn
        self._pending: dict[str, _Received] = {}
        """Relays received (destination), by ID. Held in memory: a KM that stops before the
        confirmation never supplies them."""
        self._pending_units: set[str] = set()
        """The link units of the relays in ``_pending``: no other hop may use them."""
        self._next_hops: dict[str, str] = {}
        """Relays passed on (transit): the next hop, for the confirmation."""
        self.forwarded = 0
        """Relays this KM passed on (a trusted node)."""
        self.received = 0
        """Relays that ended here (the destination), confirmed or not."""
        self._records = RelayRecords(self._km_id)

    @property
    def records(self) -> list[RelayRecord]:
        """The last relays that reached this KM, passed on (transit) or ended here
        (destination), refused ones too, oldest first: for audit."""
        return self._records.entries

    @property
    def pending_key_ids(self) -> dict[str, list[str]]:
        """The key IDs of each relay received here and not confirmed yet, by key relay request
        ID (none of them can be fetched)."""
        return {
            relay_id: [key.key_id for key in received.keys]
            for relay_id, received in self._pending.items()
        }

    # --- at a trusted node --------------------------------------------------------------------

    async def on_key_relay(
        self, relay: kx.KeyRelay, connection: Connection
    ) -> kx.ResponseToKeyRelay:
        """A hop from a neighbour: held here when this KM is the destination, else passed on
        towards it (the next hop from the relay's route, or from the controller)."""
        sender = self._links.neighbour(relay.sender_kma_id)
        relay_id = relay.key_relay_request_id
        if relay_id in self._next_hops or relay_id in self._pending:
            raise KeyManagerError(f"relay {quoted(relay_id)} came back to {self._km_id} (a loop)")
        here = relay.destination_kma_id == self._km_id
        self._records.begin(
            relay_id,
            RelayRole.DESTINATION if here else RelayRole.TRANSIT,
            sender,
            kma_key_id=otp.kma_key_id(sender, self._km_id, relay.link_key_ids),
        )
        try:
            self._check_units_free(relay)
            otp.check_hop_units(relay)
            if here:
                units = await self._with_received_units(
                    sender, lambda: self._store.peek_ids(in_pool(sender), relay.link_key_ids)
                )
                plaintext, metadata = otp.unseal(relay, [unit.key for unit in units])
                return self._receive_relayed(relay, metadata, sender, plaintext)
            if relay.transit_kma_ids is not None:  # centralized: the route came with the relay
                next_km = self._after(self._km_id, relay.transit_kma_ids)
            else:
                _, next_km = await self._routes.next_hop(
                    km=relay.destination_kma_id,
                    bits=len(relay.link_key_ids) * otp.UNIT_BITS,
                    avoid=_avoided(relay.extension),
                    source=relay.source_kma_id,
                )
        except QkdnError as exc:  # the units of a hop that fails here are spent all the same
            self._records.update(relay_id, outcome=f"failure: {exc}")
            await self._spend_received(sender, relay.link_key_ids)
            raise
        self._remember(self._next_hops, relay_id, next_km)
        self._records.update(relay_id, next_kma_id=next_km)
        try:
            await self._pass_on(relay, sender, next_km)
        except QkdnError as exc:
            self._records.update(relay_id, outcome=f"failure: {exc}")
            raise
        self._records.update(relay_id, outcome=PENDING)
        self.forwarded += 1
        return kx.ResponseToKeyRelay(key_relay_request_id=relay_id, response="success")

    async def _pass_on(self, relay: kx.KeyRelay, sender: str, next_km: str) -> None:
        """At a trusted node: take the units the hop from ``sender`` came with and those of the
        hop to ``next_km`` in one transaction, unseal it, and send it on. (Should the hop then
        fail its MAC, both are spent: only ``sender``, our authenticated neighbour, can have
        named units we hold, and it could spend ours as well with hops that pass.)"""
        needed = otp.units_for(len(relay.encrypted_key))
        pool = self._hops.spending_pool(relay, next_km, needed)
        try:
            received, units = await self._with_received_units(
                sender,
                lambda: self._store.take_ids_and_oldest(
                    in_pool(sender), relay.link_key_ids, pool, needed
                ),
            )
        except InsufficientKeys as exc:
            await self._spend_received(sender, relay.link_key_ids)
            raise self._hops.not_enough_key(next_km, exc, needed) from None
        plaintext, metadata = otp.unseal(relay, [unit.key for unit in received])
        metadata = attrs.evolve(metadata, relay_metadata=self._hops.hop_metadata(next_km, units))
        self._records.update(
            relay.key_relay_request_id,
            number_of_keys=len(metadata.key_ids),
            kma_key_id=metadata.relay_metadata.kma_key_metadata.kma_key_id,
        )
        await self._hops.send(relay, plaintext, metadata, next_km, units)

    def _after(self, km_id: str, route: list[str]) -> str:
        """The KM after ``km_id`` on a centralized relay's route: one of our neighbours."""
        try:
            next_km = route[route.index(km_id) + 1]
        except (ValueError, IndexError):
            raise KeyManagerError(f"{km_id} is not a transit KM of the route {route}") from None
        if next_km not in self._links.neighbours:
            raise KeyManagerError(
                f"the route {route} goes on to {quoted(next_km)}, not a neighbour of {km_id}"
            )
        return next_km

    async def _with_received_units(self, sender: str, use: Callable[[], Awaitable[_T]]) -> _T:
        """``use()`` of the link units ``sender`` spent on a hop to us (it raises
        :class:`UnknownKeys` when we lack one). When we started a key ID synchronisation with
        ``sender`` that has not ended, the sender may already use units it cut while answering
        it: we wait for it to end before refusing."""
        try:
            return await use()
        except UnknownKeys:
            in_flight = self._links.sync_rounds.get(sender)
            if in_flight is not None and not in_flight.is_set():
                with trio.move_on_after(self._config.relay_timeout):
                    await in_flight.wait()
        try:
            return await use()
        except UnknownKeys as exc:
            raise KeyManagerError(
                f"{self._km_id} does not hold {len(exc.missing)} of the link keys of "
                f"{sender}-{self._km_id} used (spent, or not synchronised yet)"
            ) from None

    def _check_units_free(self, relay: kx.KeyRelay) -> None:
        if not self._pending_units.isdisjoint(relay.link_key_ids):
            raise KeyManagerError(
                f"the link keys of relay {quoted(relay.key_relay_request_id)} are those of a "
                "relay pending here"
            )

    async def _spend_received(self, sender: str, unit_ids: list[str]) -> None:
        """Take (and drop) those of ``unit_ids`` we hold from ``sender``: the units of a hop
        are used once, whatever became of it (but those a pending relay holds, which its
        confirmation takes)."""
        unit_ids = [unit_id for unit_id in unit_ids if unit_id not in self._pending_units]
        with suppress(KeyStoreError):
            if await self._store.take_present(in_pool(sender), unit_ids):
                self._links.notify_change()

    # --- at the destination -------------------------------------------------------------------

    def _check_pair_room(self, source: str, destination: str, pool: str, number: int) -> None:
        """Refuse ``number`` keys more for the pair when it would hold more than
        ``max_keys_held_per_pair`` here (those of relays waiting for their confirmation
        counted)."""
        pending = sum(len(held.keys) for held in self._pending.values() if held.pool == pool)
        room = self._quotas.pair_room(source, destination) - pending
        if number > room:
            raise KeyManagerError(
                f"{quoted(destination)} holds its quota of keys from {quoted(source)} at "
                f"{self._km_id} (max_keys_held_per_pair "
                f"{self._config.max_keys_held_per_pair}): it can take {max(0, room)} more, "
                f"{number} were relayed"
            )

    def _receive_relayed(
        self, relay: kx.KeyRelay, metadata: kx.RelayedKeyMetadata, sender: str, plaintext: bytes
    ) -> kx.ResponseToKeyRelay:
        """At the destination: check the keys end to end and hold them pending, with the link
        units of the hop from ``sender`` (the confirmation takes both in one transaction)."""
        relay_id = relay.key_relay_request_id
        self._records.update(relay_id, number_of_keys=len(metadata.key_ids))
        source = metadata.application_source_id
        destination = metadata.application_destination_id
        if source is None or destination is None:
            raise KeyManagerError("a relay to a KM must name both applications")
        if destination not in self._config.applications:
            raise KeyManagerError(
                f"application {quoted(destination)} is not served by {self._km_id}"
            )
        if metadata.size_of_key % 8:
            raise KeyManagerError("size_of_key must be a multiple of 8")
        pool = app_pool(source, destination)
        if metadata.session_id is not None:
            try:
                session = self._sessions.get(metadata.session_id)
            except SessionError as exc:
                raise KeyManagerError(str(exc)) from None
            if (session.source, session.destination) != (source, destination):
                raise KeyManagerError(
                    f"session {quoted(session.session_id)} is not one of {source} -> {destination}"
                )
            pool = session_pool(destination, session.session_id)
        key_ids = [key_id.key_id for key_id in metadata.key_ids]
        if metadata.session_id is None:
            self._check_pair_room(source, destination, pool, len(key_ids))
        size = metadata.size_of_key
        mac_key, keys = otp.split_relay_plaintext(plaintext, len(key_ids), size // 8)
        otp.check_end_to_end(mac_key, key_ids, keys, relay.integrity_value)
        stored_metadata = ksa_metadata(source, destination, size)
        stored_metadata["relay"] = attrs.asdict(metadata.relay_metadata)
        stored_metadata["source_kma_id"] = relay.source_kma_id
        stored = [
            StoredKey(key_id, pool, key, stored_metadata)
            for key_id, key in zip(key_ids, keys, strict=True)
        ]
        self._check_units_free(relay)  # again: another hop may have named them meanwhile
        self._remember(self._pending, relay_id, _Received(pool, stored, sender, relay.link_key_ids))
        self._pending_units.update(relay.link_key_ids)
        self._records.update(relay_id, outcome=PENDING)
        self.received += 1
        return kx.ResponseToKeyRelay(key_relay_request_id=relay_id, response="success")

    def _remember(self, table: dict[str, _T], relay_id: str, value: _T) -> None:
        """Keep ``value`` in ``table`` for ``pending_timeout``."""
        table[relay_id] = value
        self._spawn(self._forget, table, relay_id)

    async def _forget(self, table: dict[str, Any], relay_id: str) -> None:
        await trio.sleep(self._config.pending_timeout)
        forgotten = table.pop(relay_id, None)
        if forgotten is not None and self._records.outcome(relay_id) == PENDING:
            self._records.update(relay_id, outcome="failure: the relay was never confirmed")
        if isinstance(forgotten, _Received):
            logger.warning(
                "%s: relay %s was never confirmed; its keys dropped", self._km_id, relay_id
            )
            self._pending_units.difference_update(forgotten.unit_ids)
            await self._spend_received(forgotten.sender, forgotten.unit_ids)

    async def on_confirmation(
        self, confirmation: kx.KeyRelayConfirmation, connection: Connection
    ) -> kx.ResponseToKeyRelayConfirmation:
        """The source confirms a relay: a transit KM passes the confirmation on; the
        destination stores the keys held pending, taking the hop's units in one transaction."""
        self._links.neighbour(confirmation.sender_kma_id)
        relay_id = confirmation.key_relay_request_id
        try:
            await self._confirm(confirmation)
        except QkdnError as exc:
            if self._records.outcome(relay_id) == PENDING:
                self._records.update(relay_id, outcome=f"failure: {exc}")
            raise
        self._records.update(relay_id, outcome=CONFIRMED)
        return kx.ResponseToKeyRelayConfirmation(key_relay_request_id=relay_id, response="success")

    async def _confirm(self, confirmation: kx.KeyRelayConfirmation) -> None:
        """:meth:`on_confirmation` past its checks: pass it on, or store the keys."""
        relay_id = confirmation.key_relay_request_id
        if confirmation.destination_kma_id != self._km_id:
            next_km = self._next_hops.pop(relay_id, None)
            if next_km is None:
                raise KeyManagerError(f"{self._km_id} knows no relay {quoted(relay_id)} to confirm")
            await self._peers.ask_neighbour(
                next_km,
                attrs.evolve(confirmation, sender_kma_id=self._km_id),
                "confirming the relay",
            )
        else:
            pending = self._pending.pop(relay_id, None)
            if pending is None:
                raise KeyManagerError(
                    f"relay {quoted(relay_id)} is unknown at {self._km_id} or expired"
                )
            self._pending_units.difference_update(pending.unit_ids)
            try:
                await self._store.take_ids(
                    in_pool(pending.sender), pending.unit_ids, replace_with=pending.keys
                )
            except DuplicateKey as exc:
                await self._spend_received(pending.sender, pending.unit_ids)
                raise KeyManagerError(f"key ID {quoted(exc.key_id)} was relayed before") from None
            except UnknownKeys:
                raise KeyManagerError(
                    f"the link keys relay {quoted(relay_id)} came with are no longer held at "
                    f"{self._km_id}"
                ) from None
            self._links.notify_change()  # link key spent: a full link end may acquire again
            self._stored(pending.pool)


def _avoided(extension: list[dict[str, Any]] | None) -> list[str]:
    """The KMs a relay's route must avoid (its ``avoid_kma_ids`` extension)."""
    for item in extension or ():
        value = item.get(ck.AVOID_EXTENSION)
        if isinstance(value, list) and all(isinstance(km, str) for km in value):
            return list(value[:MAX_REROUTES])
    return []
