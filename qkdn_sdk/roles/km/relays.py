"""Key relay at its source (D2.3 clause 7.1.3, routed by Q.4164 clauses 7.1 and 7.2): keys
made here carried hop by hop, one-time padded with link key, to the KM of their destination
application.

:meth:`Relay.relay` asks the controller for the next hop (distributed routing) or the whole route
(centralized), spends link units of that hop on a one-time pad and a one-time MAC and sends
:class:`~qkdn_sdk.messages.kx.KeyRelay` (:class:`~qkdn_sdk.roles.km.relay_hops.HopSender`); every
transit KM passes it on towards the destination, which checks the end-to-end integrity value and
holds the keys *pending*, in memory (:mod:`qkdn_sdk.roles.km.relay_receiver`). Only once the
answer came back does the source KM send :class:`~qkdn_sdk.messages.kx.KeyRelayConfirmation`
along the same hops; the destination then stores the keys, and only after that answer does the
source application get its keys and their IDs. A relay over ``h`` hops costs ``h + 1`` durable
transactions and one read. A relay that fails anywhere fails with a reason that names the
cause; a relay that failed because a KM on the way is unreachable is tried again on a route
that avoids it.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from typing import Any

import attrs
import trio

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import QkdnError, RequestRefused, quoted
from qkdn_sdk.messages import KeyId, ck, kx
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import InsufficientKeys, KeyStore
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig, Routing, passed_on
from qkdn_sdk.roles.km.keys import Batch
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.peers import Peers
from qkdn_sdk.roles.km.relay_hops import (
    CONFIRMED,
    MAX_REROUTES,
    HopSender,
    RelayRecord,
    RelayRecords,
    RelayRole,
)
from qkdn_sdk.roles.km.routes import Routes
from qkdn_sdk.transport import Connection

__all__ = ["Relay", "not_direct"]

logger = logging.getLogger("qkdn_sdk.roles.km")

_UNREACHABLE = re.compile(r"neighbour KM (.+?) is unreachable while")
_SHORT_OF_KEY = re.compile(r"not enough key on link |bits of key per link")


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
    """The relays one KM starts, for the key requests of its applications."""

    def __init__(
        self,
        config: KMConfig,
        store: KeyStore,
        links: LinkTable,
        peers: Peers,
        routes: Routes,
        hops: HopSender,
    ) -> None:
        self._config = config
        self._km_id = config.km_id
        self._store = store
        self._links = links
        self._peers = peers
        self._routes = routes
        self._hops = hops
        self._central_routes: dict[str, _CentralRoute] = {}
        """Relays started here in a centralized QKDN, by ID."""
        self.started = 0
        """Relays this KM started and had confirmed."""
        self._records = RelayRecords(self._km_id)

    @property
    def records(self) -> list[RelayRecord]:
        """The last relays this KM started (each attempt of a relay tried again on another
        route is a relay of its own), oldest first: for audit."""
        return self._records.entries

    async def relay(self, batch: Batch) -> None:
        """Relay ``batch`` to the KM of its destination and have it confirm them; raises
        :class:`KeyManagerError` naming the cause when anything fails on the way.

        A relay that fails for too little link key (on our link, on one further on, or on every
        route the controller knows) is tried again as key comes, for at most
        ``link_key_wait`` seconds (Q.4161 clause 7.1.1: without enough keys the KM "initiates
        key generation or key relay ... and supplies them ... when ... completed"). A relay
        that fails because a KM on the way is unreachable is tried again on a route
        that avoids it (the extension ``{"avoid_kma_ids": [...]}`` of the route requests and of
        the relay), as long as the controller finds one; nothing of the failed attempt is
        usable (it was never confirmed)."""
        deadline = trio.current_time() + self._config.link_key_wait
        while True:
            try:
                await self._relay_around(batch)
                return
            except KeyManagerError as exc:
                if not _short_of_key(str(exc)) or trio.current_time() >= deadline:
                    raise
                logger.info(
                    "%s: %s; trying again as key comes (for %.1f s more)",
                    self._km_id,
                    exc,
                    deadline - trio.current_time(),
                )
            # our own link's key shows here at once; the others' in the controller's reports
            report = trio.current_time() + self._config.report_interval
            with trio.move_on_at(min(deadline, report)):
                await self._links.wait_change()

    async def _relay_around(self, batch: Batch) -> None:
        """:meth:`relay` once, and again around each KM found unreachable."""
        avoid: list[str] = []
        first: KeyManagerError | None = None
        while True:
            try:
                await self._relay_once(batch, avoid)
                return
            except KeyManagerError as exc:
                down = _unreachable_km(str(exc))
                if down is None or down in avoid or len(avoid) >= MAX_REROUTES:
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
        keys, key_ids, destination = batch.keys, batch.key_ids, batch.destination
        mac_key = secrets.token_bytes(otp.MAC_KEY_BYTES)
        plaintext = otp.relay_plaintext(mac_key, keys)
        bits = otp.units_for(len(plaintext)) * otp.UNIT_BITS
        central = None
        if self._config.routing is Routing.CENTRALIZED:
            central = self._central_routes[relay_id] = _CentralRoute()
        self._records.begin(relay_id, RelayRole.SOURCE, None, len(keys))
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
            self._records.update(relay_id, next_kma_id=next_km)
            if batch.direct and (transit or [next_km]) != [destination_km]:
                raise not_direct(destination, destination_km)
            relay = kx.KeyRelay(
                key_relay_request_id=relay_id,
                sender_kma_id=self._km_id,
                source_kma_id=self._km_id,
                destination_kma_id=destination_km,
                transit_kma_ids=transit,
                link_key_ids=["-"],  # the hop's: HopSender.send sets them, and what they seal
                encrypted_metadata=b"",
                encrypted_key=b"",
                integrity_value=otp.end_to_end_tag(mac_key, key_ids, keys),
                message_authentication_code=b"",
                extension=[{ck.AVOID_EXTENSION: avoid}] if avoid else None,
            )
            await self._send(relay, plaintext, batch, next_km)
            confirmation = kx.KeyRelayConfirmation(
                key_relay_request_id=relay_id,
                sender_kma_id=self._km_id,
                source_kma_id=self._km_id,
                destination_kma_id=destination_km,
            )
            await self._peers.ask_neighbour(next_km, confirmation, "confirming the relay")
            self.started += 1
            self._records.update(relay_id, outcome=CONFIRMED)
            if central is not None:
                central.outcome = "success"
        except QkdnError as exc:
            self._records.update(relay_id, outcome=f"failure: {exc}")
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
                {ck.KEY_BITS_EXTENSION: bits, ck.RELAY_ID_EXTENSION: relay_id}
                | ({ck.AVOID_EXTENSION: avoid} if avoid else {})
            ],
        )
        await self._peers.tell_controller(notification)
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

    async def _send(self, relay: kx.KeyRelay, plaintext: bytes, batch: Batch, next_km: str) -> None:
        """At the source: spend link units towards ``next_km`` on ``plaintext`` and the
        metadata of ``batch``, send the hop."""
        needed = otp.units_for(len(plaintext))
        try:
            units = await self._store.take(self._hops.spending_pool(relay, next_km, needed), needed)
        except InsufficientKeys as exc:
            raise self._hops.not_enough_key(next_km, exc, needed) from None
        metadata = kx.RelayedKeyMetadata(
            application_source_id=batch.source,
            application_destination_id=batch.destination,
            session_id=batch.session_id,
            key_ids=[KeyId(key_id=key_id) for key_id in batch.key_ids],
            size_of_key=batch.size,
            relay_metadata=self._hops.hop_metadata(next_km, units),
        )
        self._records.update(
            relay.key_relay_request_id,
            kma_key_id=metadata.relay_metadata.kma_key_metadata.kma_key_id,
        )
        await self._hops.send(relay, plaintext, metadata, next_km, units)


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


def _short_of_key(reason: str) -> bool:
    """Whether a relay failure says a link had too little key (this KM's own text, a KM's on
    the way passed back, or the controller's route refusal)."""
    return _SHORT_OF_KEY.search(reason) is not None


def _echoed(extension: list[dict[str, Any]] | None) -> str | None:
    """The relay ID a controller's key relay request echoes in its extension, if any."""
    for item in extension or ():
        value = item.get(ck.RELAY_ID_EXTENSION)
        if isinstance(value, str):
            return value
    return None
