"""Key reservation and allocation at a KM (Q.4164 clauses 7.5, 7.6): link key towards a
neighbour set aside for the relays between two KMs, then given to them.

Reserved units move to a ``reserved:`` pool of the store, where no relay takes them; allocated
ones to an ``allocated:`` pool that the relays between those two KMs spend before any other key
of the link. Reservations live in memory: a KM that starts gives the units a previous run left
reserved back to their links (:meth:`Reservations.restore`); allocated units stay allocated.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import attrs
import trio

from qkdn_sdk.codecs.frame import MAX_PAYLOAD_SIZE
from qkdn_sdk.codecs.payload import encode_payload
from qkdn_sdk.errors import quoted
from qkdn_sdk.messages import KeyId, ck
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import KeyStore, UnknownKeys
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig, Spawn
from qkdn_sdk.roles.km.keys import allocated_pool, out_pool, reserved_pool
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.routes import Routes
from qkdn_sdk.transport import Connection

__all__ = ["Reservations", "units_answerable"]

logger = logging.getLogger("qkdn_sdk.roles.km")

_MAX_RESERVED_BITS = 1 << 24
"""At most this many bits of link key in one reservation."""
_TERMS = {"next_kma_id", ck.KEY_BITS_EXTENSION, "lifetime"}
"""The parameters of the SDK's extension of a key reservation request."""


def units_answerable(answer: ck.ResponseToKeyReservationRequest) -> int:
    """How many link unit IDs ``answer`` can name and still fit the payload of one TCP frame,
    the strictest transport's limit."""
    unit = KeyId(key_id=str(uuid.UUID(int=0)))  # every unit ID is a UUID: each costs the same
    one, two = (len(encode_payload(attrs.evolve(answer, key_ids=[unit] * n))) for n in (1, 2))
    per_unit = two - one
    return (MAX_PAYLOAD_SIZE - (one - per_unit)) // per_unit


@attrs.define
class _Reservation:
    """Link units set aside towards ``next_km`` for relays from ``source_km`` to
    ``destination_km`` (Q.4164 clause 7.5), not yet allocated."""

    next_km: str
    source_km: str
    destination_km: str
    unit_ids: set[str]


class Reservations:
    """The reservations of one KM, by reservation ID. ``spawn(function, *args)`` starts a
    background task (the release of a reservation when its lifetime ends)."""

    def __init__(
        self, config: KMConfig, store: KeyStore, links: LinkTable, routes: Routes, spawn: Spawn
    ) -> None:
        self._config = config
        self._routes = routes
        self._km_id = config.km_id
        self._store = store
        self._links = links
        self._spawn = spawn
        self._reservations: dict[str, _Reservation] = {}

    async def restore(self) -> None:
        """Give the link key a previous run reserved back to its links."""
        for pool in list(self._store.counts("reserved:")):  # reservations lived in memory
            await self._store.move(pool, out_pool(pool.split(":")[1]))

    async def on_key_reservation(
        self, request: ck.KeyReservationRequest, connection: Connection
    ) -> ck.ResponseToKeyReservationRequest:
        """Q.4164 clause 7.5: set link key towards the next KM of a route aside for relays from
        ``source_kma_id`` to ``destination_kma_id``. The units answered are taken by no one else;
        unless allocated in time they go back to the link.

        Table 10 says no more than the route's ends. The next KM is the destination when it is
        a neighbour, else the controller's next hop towards it; the amount is
        ``reservation_bits``, and the time ``reservation_lifetime``. The SDK's extension
        ``{"next_kma_id", "key_bits", "lifetime"}`` may say each (each optional)."""
        next_km, bits, lifetime = await self._terms(request)
        needed = -(-bits // otp.UNIT_BITS)
        answer = ck.ResponseToKeyReservationRequest(
            source_kma_id=request.source_kma_id,
            destination_kma_id=request.destination_kma_id,
            application_destination_id=request.application_destination_id,
            key_ids=[],
            response=0,
        )
        most = units_answerable(answer)
        if needed > most:  # checked before anything is reserved
            raise KeyManagerError(
                f"key_bits {bits} are {needed} link key units, more than one key reservation "
                f"response can name; at most {most * otp.UNIT_BITS} bits"
            )
        reservation_id = str(uuid.uuid4())
        pool = reserved_pool(next_km, reservation_id)
        unit_ids = await self._store.key_ids(out_pool(next_km), needed)
        if len(unit_ids) < needed:
            raise KeyManagerError(
                f"not enough key on link {self._km_id}-{next_km} to reserve {bits} bits: "
                f"{len(unit_ids) * otp.UNIT_BITS} bits"
            )
        try:
            await self._store.move(out_pool(next_km), pool, key_ids=unit_ids)
        except UnknownKeys:  # a relay took some meanwhile
            raise KeyManagerError(f"link {self._km_id}-{next_km} changed; ask again") from None
        self._reservations[reservation_id] = _Reservation(
            next_km=next_km,
            source_km=request.source_kma_id,
            destination_km=request.destination_kma_id,
            unit_ids=set(unit_ids),
        )
        self._links.notify_change()
        self._spawn(self._release_later, reservation_id, lifetime)
        logger.info(
            "%s: reserved %d bits towards %s for %s -> %s (%g s)",
            self._km_id,
            needed * otp.UNIT_BITS,
            next_km,
            request.source_kma_id,
            request.destination_kma_id,
            lifetime,
        )
        return attrs.evolve(answer, key_ids=[KeyId(key_id=unit_id) for unit_id in unit_ids])

    async def _terms(self, request: ck.KeyReservationRequest) -> tuple[str, int, float]:
        """``(next KM, bits, lifetime)`` of a key reservation request: from its extension, or
        from the route and this KM's configuration where it says nothing."""
        terms: dict[str, Any] = next(
            (item for item in request.extension or () if _TERMS & set(item)), {}
        )
        next_km = terms.get("next_kma_id")
        if next_km is None:
            next_km = await self._next_km(request.source_kma_id, request.destination_kma_id)
        if not isinstance(next_km, str) or next_km not in self._links.neighbours:
            raise KeyManagerError(f"next_kma_id {next_km!r} is not a neighbour of {self._km_id}")
        bits = terms.get(ck.KEY_BITS_EXTENSION, self._config.reservation_bits)
        if (
            isinstance(bits, bool)
            or not isinstance(bits, int)
            or not 0 < bits <= _MAX_RESERVED_BITS
        ):
            raise KeyManagerError(f"key_bits must be an integer from 1 to {_MAX_RESERVED_BITS}")
        lifetime = terms.get("lifetime", self._config.reservation_lifetime)
        longest = 10 * self._config.reservation_lifetime
        if (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or not 0 < lifetime <= longest
        ):
            raise KeyManagerError(
                f"lifetime must be a number of seconds, more than 0 and at most {longest:g}"
            )
        return next_km, bits, float(lifetime)

    async def _next_km(self, source_km: str, destination_km: str) -> str:
        """The neighbour a route from ``source_km`` to ``destination_km`` leaves this KM by:
        the destination itself when it is a neighbour, else the controller's next hop."""
        if destination_km in self._links.neighbours:
            return destination_km
        if destination_km == self._km_id:
            raise KeyManagerError(f"{self._km_id} is the destination: it relays no key on")
        _, next_km = await self._routes.next_hop(
            km=destination_km, bits=otp.UNIT_BITS, source=source_km
        )
        return next_km

    async def _release_later(self, reservation_id: str, lifetime: float) -> None:
        await trio.sleep(lifetime)
        reservation = self._reservations.pop(reservation_id, None)
        if reservation is None or not reservation.unit_ids:
            return
        released = await self._store.move(
            reserved_pool(reservation.next_km, reservation_id), out_pool(reservation.next_km)
        )
        self._links.notify_change()
        logger.info(
            "%s: released %d bits reserved towards %s, never allocated",
            self._km_id,
            released * otp.UNIT_BITS,
            reservation.next_km,
        )

    async def on_key_allocation(
        self, request: ck.KeyAllocationRequest, connection: Connection
    ) -> ck.ResponseToKeyAllocationRequest:
        """Q.4164 clause 7.6: the units of earlier reservations (the key IDs they answered) go
        to the relays from ``source_kma_id`` to ``destination_kma_id``, which spend them before
        any other key of the link. All or none."""
        ends = (request.source_kma_id, request.destination_kma_id)
        owners: dict[str, list[str]] = {}
        for unit_id in (key_id.key_id for key_id in request.key_ids):
            owner = next(
                (
                    reservation_id
                    for reservation_id, reservation in self._reservations.items()
                    if unit_id in reservation.unit_ids
                    and (reservation.source_km, reservation.destination_km) == ends
                ),
                None,
            )
            if owner is None:
                raise KeyManagerError(
                    f"key {quoted(unit_id)} is in no reservation of {self._km_id} for "
                    f"{request.source_kma_id} -> {request.destination_kma_id} (released, or "
                    "never reserved)"
                )
            owners.setdefault(owner, []).append(unit_id)
        for reservation_id, ids in owners.items():
            reservation = self._reservations[reservation_id]
            await self._store.move(
                reserved_pool(reservation.next_km, reservation_id),
                allocated_pool(
                    reservation.next_km, reservation.source_km, reservation.destination_km
                ),
                key_ids=ids,
            )
            reservation.unit_ids.difference_update(ids)
            if not reservation.unit_ids:
                del self._reservations[reservation_id]
        self._links.notify_change()
        return ck.ResponseToKeyAllocationRequest(
            source_kma_id=request.source_kma_id,
            destination_kma_id=request.destination_kma_id,
            application_destination_id=request.application_destination_id,
            key_ids=request.key_ids,
            response=0,
        )
