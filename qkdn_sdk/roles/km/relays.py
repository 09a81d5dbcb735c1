"""Key relay (D2.3 clause 7.1.3): keys made at a source KM carried hop by hop, one-time padded
with link key, to the KM of their destination application, routed by the QKDN controller
(Q.4164 clauses 7.1, 7.2).

At the source, :meth:`Relay.relay` asks the controller for the next hop (distributed routing)
or the whole route (centralized), spends link units of that hop on a one-time pad and a one-time
MAC (:mod:`qkdn_sdk.roles.relay`) and sends :class:`~qkdn_sdk.messages.kx.KeyRelay`; every
transit KM takes the units of the hop that came and of the hop it sends in one transaction and
does the same towards the destination, which checks the end-to-end integrity value and holds the
keys *pending*, in memory. Only once the answer came back does the source KM send
:class:`~qkdn_sdk.messages.kx.KeyRelayConfirmation` along the same hops; the destination then
stores the keys, taking the hop's units in the same transaction, and only after that answer does
the source application get its keys and their IDs. A relay over ``h`` hops costs ``h + 1``
durable transactions and one read. A relay that fails anywhere fails with a reason that names
the cause; keys it left pending are never supplied and are dropped after ``pending_timeout``
(or when the KM stops). A relay that failed because a KM on the way is unreachable is tried
again on a route that avoids it.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import attrs
import trio

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import QkdnError, RequestRefused, quoted
from qkdn_sdk.messages import KeyId, ck, kx
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import (
    DuplicateKey,
    InsufficientKeys,
    KeyStore,
    KeyStoreError,
    StoredKey,
    UnknownKeys,
)
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig, Routing, Spawn, passed_on
from qkdn_sdk.roles.km.keys import (
    Batch,
    allocated_pool,
    app_pool,
    in_pool,
    ksa_metadata,
    now,
    out_pool,
)
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.peers import Peers
from qkdn_sdk.roles.km.routes import Routes
from qkdn_sdk.roles.sessions import SessionError, Sessions, session_pool
from qkdn_sdk.transport import Connection

__all__ = ["Relay", "not_direct"]

logger = logging.getLogger("qkdn_sdk.roles.km")

_T = TypeVar("_T")

_MAX_REROUTES = 4
"""Times a relay is tried again around an unreachable KM."""
_UNREACHABLE = re.compile(r"neighbour KM (.+?) is unreachable while")


@attrs.frozen
class _Received:
    """A relay received here (the destination), held until its confirmation."""

    pool: str
    """Where its keys go once confirmed."""
    keys: list[StoredKey] = attrs.field(repr=False)
    sender: str
    unit_ids: list[str]
    """The link units of the hop from ``sender``, taken with the confirmation."""


@attrs.define
class _CentralRoute:
    """A relay this KM started in a centralized QKDN, between its key relay request
    notification and the end of the relay (Q.4164 Figure 2)."""

    routed: trio.Event = attrs.Factory(trio.Event)
    request: ck.KeyRelayRequest | None = None
    """The controller's key relay request, once it came."""
    ended: trio.Event = attrs.Factory(trio.Event)
    outcome: str = "failure: the relay was cancelled"
    """What the response to the controller's request says once ``ended`` is set."""


class Relay:
    """The relays of one KM: those it starts (source), passes on (transit) and receives
    (destination). ``stored(pool)`` is called once relayed keys are stored in ``pool`` (the
    session pusher wakes for them)."""

    def __init__(
        self,
        config: KMConfig,
        store: KeyStore,
        links: LinkTable,
        peers: Peers,
        routes: Routes,
        sessions: Sessions,
        *,
        stored: Callable[[str], None],
        spawn: Spawn,
    ) -> None:
        self._config = config
        self._km_id = config.km_id
        self._store = store
        self._links = links
        self._peers = peers
        self._routes = routes
        self._sessions = sessions
        self._stored = stored
        self._spawn = spawn
        self._pending: dict[str, _Received] = {}
        """Relays received (destination), by ID. Held in memory: a KM that stops before the
        confirmation never supplies them."""
        self._pending_units: set[str] = set()
        """The link units of the relays in ``_pending``: no other hop may use them."""
        self._next_hops: dict[str, str] = {}
        """Relays passed on (transit): the next hop, for the confirmation."""
        self._central_routes: dict[str, _CentralRoute] = {}
        """Relays started here in a centralized QKDN, by ID."""
        self.counts = {"started": 0, "forwarded": 0, "received": 0}
        """Relays this KM started (source), forwarded (transit) and received (destination)."""

    @property
    def pending_key_ids(self) -> dict[str, list[str]]:
        """The key IDs of each relay received here and not confirmed yet, by key relay request
        ID (none of them can be fetched)."""
        return {
            relay_id: [key.key_id for key in received.keys]
            for relay_id, received in self._pending.items()
        }

    # --- at the source ----------------------------------------------------------------------------

    async def relay(self, batch: Batch) -> None:
        """Relay ``batch`` to the KM of its destination and have it confirm them; raises
        :class:`KeyManagerError` naming the cause when anything fails on the way.

        A relay that fails because a KM on the way is unreachable is tried again on a route
        that avoids it (the extension ``{"avoid_kma_ids": [...]}`` of the route requests and of
        the relay), as long as the controller finds one; nothing of the failed attempt is
        usable (it was never confirmed)."""
        avoid: list[str] = []
        first: KeyManagerError | None = None
        while True:
            try:
                await self._relay_once(batch, avoid)
                return
            except KeyManagerError as exc:
                down = _unreachable_km(str(exc))
                if down is None or down in avoid or len(avoid) >= _MAX_REROUTES:
                    if first is None:
                        raise
                    raise KeyManagerError(f"{first}; then, around it: {exc}") from None
                first = first or exc
                avoid.append(down)
                logger.info(
                    "%s: KM %s is unreachable; relaying to %s around it",
                    self._km_id,
                    down,
                    batch.destination,
                )

    async def _relay_once(self, batch: Batch, avoid: list[str]) -> None:
        relay_id = str(uuid.uuid4())
        keys, key_ids, size, destination = batch.keys, batch.key_ids, batch.size, batch.destination
        mac_key = secrets.token_bytes(otp.MAC_KEY_BYTES)
        plaintext = otp.relay_plaintext(mac_key, keys)
        bits = otp.units_for(len(plaintext)) * otp.UNIT_BITS
        central = None
        if self._config.routing is Routing.CENTRALIZED:
            central = self._central_routes[relay_id] = _CentralRoute()
        try:
            transit = None
            if central is not None:
                destination_km, transit = await self._whole_route(
                    relay_id, destination, bits, central, avoid
                )
                next_km = transit[0]
            else:
                destination_km, next_km = await self._routes.next_hop(
                    application=destination, bits=bits, avoid=avoid
                )
            if batch.direct and (transit or [next_km]) != [destination_km]:
                raise not_direct(destination, destination_km)
            relay = kx.KeyRelay(
                key_relay_request_id=relay_id,
                sender_kma_id=self._km_id,
                source_kma_id=self._km_id,
                destination_kma_id=destination_km,
                application_source_id=batch.source,
                application_destination_id=destination,
                session_id=batch.session_id,
                transit_kma_ids=transit,
                key_ids=[KeyId(key_id=key_id) for key_id in key_ids],
                size_of_key=size,
                link_key_ids=["-"],
                encrypted_key=b"",
                relay_metadata=kx.RelayMetadata(kma_key_metadata={"key_length": size}),
                integrity_value=otp.end_to_end_tag(mac_key, key_ids, keys),
                message_authentication_code=b"",
                extension=[{ck.AVOID_EXTENSION: avoid}] if avoid else None,
            )
            await self._send(relay, plaintext, next_km)
            confirmation = kx.KeyRelayConfirmation(
                key_relay_request_id=relay_id,
                sender_kma_id=self._km_id,
                source_kma_id=self._km_id,
                destination_kma_id=destination_km,
            )
            await self._peers.ask_neighbour(next_km, confirmation, "confirming the relay")
            self.counts["started"] += 1
            if central is not None:
                central.outcome = "success"
        except QkdnError as exc:
            if central is not None:
                central.outcome = f"failure: {exc}"
            raise
        finally:
            if central is not None:
                central.ended.set()
                del self._central_routes[relay_id]

    async def _whole_route(
        self,
        relay_id: str,
        destination: str,
        bits: int,
        central: _CentralRoute,
        avoid: list[str],
    ) -> tuple[str, list[str]]:
        """``(destination KM, the KMs after us up to it)`` from the controller in a centralized
        QKDN (Q.4164 clause 7.2): a key relay request notification, then the controller's key
        relay request, which :meth:`on_key_relay_request` hands over."""
        controller = self._config.controller_id
        notification = ck.KeyRelayRequestNotification(
            source_kma_id=self._km_id,
            application_destination_id=destination,
            extension=[
                {
                    ck.KEY_BITS_EXTENSION: bits,
                    ck.RELAY_ID_EXTENSION: relay_id,
                    ck.AVOID_EXTENSION: avoid,
                }
            ],
        )
        with self._peers.reaching_controller():
            await self._peers.dialer(controller).send(notification)
        with trio.move_on_after(self._config.relay_timeout):
            await central.routed.wait()
        request = central.request
        if request is None:
            raise KeyManagerError(
                f"the QKDN controller {controller} sent no key relay request within "
                f"{self._config.relay_timeout:g} s"
            )
        for item in request.extension or ():
            if isinstance(item.get("error_message"), str):
                raise KeyManagerError(passed_on(item["error_message"]))
        return self._route_of(request)

    def _route_of(self, request: ck.KeyRelayRequest) -> tuple[str, list[str]]:
        """``(destination KM, the KMs after us up to it)`` of a key relay request (Q.4164 Table
        4). Its Transit KMA IDs are "the transition nodes" of the route: the KMs between the
        source and the destination, none when the destination is a neighbour, the destination
        named apart. A route that also lists the source first, or the destination last, reads
        the same."""
        transit = list(request.transit_kma_ids)
        destination_km = request.destination_kma_id or (transit[-1] if transit else None)
        if destination_km is None:
            raise KeyManagerError("the controller's key relay request names no destination KM")
        if transit and transit[0] == self._km_id:
            transit = transit[1:]
        if not transit or transit[-1] != destination_km:
            transit.append(destination_km)
        if transit[0] not in self._links.neighbours:
            raise KeyManagerError(
                f"the controller's route {request.transit_kma_ids} to {quoted(destination_km)} "
                f"does not start at a neighbour of {self._km_id}"
            )
        return destination_km, transit

    async def on_key_relay_request(
        self, request: ck.KeyRelayRequest, connection: Connection
    ) -> ck.ResponseToKeyRelayRequest:
        """Q.4164 clause 7.2: the controller's route for a relay we notified it of; answered
        once the relay has ended (Figure 2), with its failure reason if it failed.

        The request is the answer to the notification whose relay ID it echoes (the SDK's
        ``key_relay_request_id`` extension, or its own Key relay request ID); a controller that
        echoes nothing, as Table 4 needs not, answers the notifications in the order they were
        sent: the oldest still waiting for its route gets it."""
        central = self._awaiting_route(request)
        if central is None:
            relay_id = request.key_relay_request_id or _echoed(request.extension) or ""
            raise KeyManagerError(f"{self._km_id} awaits no route for relay {quoted(relay_id)}")
        central.request = request
        central.routed.set()
        await central.ended.wait()
        if central.outcome != "success":
            raise KeyManagerError(passed_on(central.outcome))
        return ck.ResponseToKeyRelayRequest(
            response="success", key_relay_request_id=request.key_relay_request_id
        )

    def _awaiting_route(self, request: ck.KeyRelayRequest) -> _CentralRoute | None:
        """The relay started here that ``request`` is the route of, if one still waits."""
        for relay_id in (_echoed(request.extension), request.key_relay_request_id):
            central = self._central_routes.get(relay_id or "")
            if central is not None:
                return central if central.request is None else None
        if request.source_kma_id not in (None, self._km_id):
            return None
        return next(
            (central for central in self._central_routes.values() if central.request is None),
            None,
        )

    async def _send(self, relay: kx.KeyRelay, plaintext: bytes, next_km: str) -> None:
        """At the source: spend link units towards ``next_km`` on ``plaintext``, send the hop."""
        needed = otp.units_for(len(plaintext))
        try:
            units = await self._store.take(self._spending_pool(relay, next_km, needed), needed)
        except InsufficientKeys as exc:
            raise self._not_enough_key(next_km, exc, needed) from None
        await self._send_hop(relay, plaintext, next_km, units)

    # --- at a trusted node --------------------------------------------------------------------

    async def _pass_on(self, relay: kx.KeyRelay, sender: str, next_km: str) -> None:
        """At a trusted node: take the units the hop from ``sender`` came with and those of the
        hop to ``next_km`` in one transaction, unseal it, and send it on. (Should the hop then
        fail its MAC, both are spent: only ``sender``, our authenticated neighbour, can have
        named units we hold, and it could spend ours as well with hops that pass.)"""
        needed = otp.units_for(len(relay.encrypted_key))
        pool = self._spending_pool(relay, next_km, needed)
        try:
            received, units = await self._with_received_units(
                sender,
                lambda: self._store.take_ids_and_oldest(
                    in_pool(sender), relay.link_key_ids, pool, needed
                ),
            )
        except InsufficientKeys as exc:
            await self._spend_received(sender, relay.link_key_ids)
            raise self._not_enough_key(next_km, exc, needed) from None
        plaintext = otp.unseal(relay, [unit.key for unit in received])
        await self._send_hop(relay, plaintext, next_km, units)

    def _spending_pool(self, relay: kx.KeyRelay, next_km: str, needed: int) -> str:
        """The key allocated to the relay's source and destination towards ``next_km`` when it
        holds ``needed`` units, else the link's own."""
        allocated = allocated_pool(next_km, relay.source_kma_id, relay.destination_kma_id)
        return allocated if self._store.count(allocated) >= needed else out_pool(next_km)

    def _not_enough_key(self, next_km: str, exc: InsufficientKeys, needed: int) -> KeyManagerError:
        return KeyManagerError(
            f"not enough key on link {self._km_id}-{next_km}: {exc.available * otp.UNIT_BITS}"
            f" bits, {needed * otp.UNIT_BITS} needed"
        )

    async def _send_hop(
        self, relay: kx.KeyRelay, plaintext: bytes, next_km: str, units: list[StoredKey]
    ) -> None:
        """Seal ``plaintext`` with ``units`` (taken towards ``next_km``) and send the hop."""
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

    async def on_key_relay(
        self, relay: kx.KeyRelay, connection: Connection
    ) -> kx.ResponseToKeyRelay:
        """A hop from a neighbour: held here when this KM is the destination, else passed on
        towards it (the next hop from the relay's route, or from the controller)."""
        sender = self._links.neighbour(relay.sender_kma_id)
        relay_id = relay.key_relay_request_id
        if relay_id in self._next_hops or relay_id in self._pending:
            raise KeyManagerError(f"relay {quoted(relay_id)} came back to {self._km_id} (a loop)")
        try:
            self._check_units_free(relay)
            otp.check_hop_units(relay)
            if relay.destination_kma_id == self._km_id:
                units = await self._with_received_units(
                    sender, lambda: self._store.peek_ids(in_pool(sender), relay.link_key_ids)
                )
                plaintext = otp.unseal(relay, [unit.key for unit in units])
                return self._receive_relayed(relay, sender, plaintext)
            if relay.transit_kma_ids is not None:  # centralized: the route came with the relay
                next_km = self._after(self._km_id, relay.transit_kma_ids)
            else:
                _, next_km = await self._routes.next_hop(
                    km=relay.destination_kma_id,
                    bits=len(relay.link_key_ids) * otp.UNIT_BITS,
                    avoid=_avoided(relay.extension),
                    source=relay.source_kma_id,
                )
        except QkdnError:  # the units of a hop that fails here are spent all the same
            await self._spend_received(sender, relay.link_key_ids)
            raise
        self._remember(self._next_hops, relay_id, next_km)
        await self._pass_on(relay, sender, next_km)
        self.counts["forwarded"] += 1
        return kx.ResponseToKeyRelay(key_relay_request_id=relay_id, response="success")

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

    def _receive_relayed(
        self, relay: kx.KeyRelay, sender: str, plaintext: bytes
    ) -> kx.ResponseToKeyRelay:
        """At the destination: check the keys end to end and hold them pending, with the link
        units of the hop from ``sender`` (the confirmation takes both in one transaction)."""
        source = relay.application_source_id
        destination = relay.application_destination_id
        if source is None or destination is None:
            raise KeyManagerError("a relay to a KM must name both applications")
        if destination not in self._config.applications:
            raise KeyManagerError(
                f"application {quoted(destination)} is not served by {self._km_id}"
            )
        if relay.size_of_key % 8:
            raise KeyManagerError("size_of_key must be a multiple of 8")
        pool = app_pool(source, destination)
        if relay.session_id is not None:
            try:
                session = self._sessions.get(relay.session_id)
            except SessionError as exc:
                raise KeyManagerError(str(exc)) from None
            if (session.source, session.destination) != (source, destination):
                raise KeyManagerError(
                    f"session {quoted(session.session_id)} is not one of {source} -> {destination}"
                )
            pool = session_pool(destination, session.session_id)
        key_ids = [key_id.key_id for key_id in relay.key_ids]
        mac_key, keys = otp.split_relay_plaintext(plaintext, len(key_ids), relay.size_of_key // 8)
        otp.check_end_to_end(mac_key, key_ids, keys, relay.integrity_value)
        relay_id = relay.key_relay_request_id
        metadata = ksa_metadata(source, destination, relay.size_of_key)
        metadata["relay"] = attrs.asdict(relay.relay_metadata)
        metadata["source_kma_id"] = relay.source_kma_id
        stored = [
            StoredKey(key_id, pool, key, metadata)
            for key_id, key in zip(key_ids, keys, strict=True)
        ]
        self._check_units_free(relay)  # again: another hop may have named them meanwhile
        self._remember(self._pending, relay_id, _Received(pool, stored, sender, relay.link_key_ids))
        self._pending_units.update(relay.link_key_ids)
        self.counts["received"] += 1
        return kx.ResponseToKeyRelay(key_relay_request_id=relay_id, response="success")

    def _remember(self, table: dict[str, _T], relay_id: str, value: _T) -> None:
        """Keep ``value`` in ``table`` for ``pending_timeout``."""
        table[relay_id] = value
        self._spawn(self._forget, table, relay_id)

    async def _forget(self, table: dict[str, Any], relay_id: str) -> None:
        await trio.sleep(self._config.pending_timeout)
        forgotten = table.pop(relay_id, None)
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
            self._stored(pending.pool)
        return kx.ResponseToKeyRelayConfirmation(key_relay_request_id=relay_id, response="success")


def not_direct(slave: str, km: str) -> RequestRefused:
    """The refusal of keys for ``slave`` (served by ``km``) that a trusted node would relay,
    when an ETSI 014 Get key asks for a direct route."""
    return RequestRefused(
        f"{quoted(slave)} is served by {km}, which is no neighbour: its keys would be relayed "
        "by a trusted node, and extension_mandatory asks for a direct route",
        etsi014_message=etsi014.MANDATORY_EXTENSION_UNMET,
    )


def _unreachable_km(reason: str) -> str | None:
    """The KM a relay failure says was unreachable (this KM's own text, or a KM's on the way
    passed back), or ``None``."""
    found = _UNREACHABLE.search(reason)
    return found.group(1) if found else None


def _echoed(extension: list[dict[str, Any]] | None) -> str | None:
    """The relay ID a controller's key relay request echoes in its extension, if any."""
    for item in extension or ():
        value = item.get(ck.RELAY_ID_EXTENSION)
        if isinstance(value, str):
            return value
    return None


def _avoided(extension: list[dict[str, Any]] | None) -> list[str]:
    """The KMs a relay's route must avoid (its ``avoid_kma_ids`` extension)."""
    for item in extension or ():
        value = item.get(ck.AVOID_EXTENSION)
        if isinstance(value, list) and all(isinstance(km, str) for km in value):
            return list(value[:_MAX_REROUTES])
    return []
