"""Routes from the QKDN controller (Q.4164 clause 7.1; D2.3 clause 8.1 c)): where the next hop of
a relay is, and the whole route to a KM. Nothing is spent asking."""

from __future__ import annotations

from qkdn_sdk.errors import UnknownApplication, quoted
from qkdn_sdk.messages import ck, mgmt
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.peers import Peers

__all__ = ["Routes"]


class Routes:
    """The controller's answers on routes, for a KM's relays and key supply."""

    def __init__(self, config: KMConfig, links: LinkTable, peers: Peers) -> None:
        self._km_id = config.km_id
        self._links = links
        self._peers = peers

    async def next_hop(
        self,
        *,
        bits: int,
        application: str | None = None,
        km: str | None = None,
        avoid: list[str] | None = None,
        source: str | None = None,
    ) -> tuple[str, str]:
        """``(destination KM, next hop)`` from the controller (Q.4164 clause 7.1) towards the
        KM ``km`` or the KM that serves ``application``, on links that can pay ``bits`` and
        avoiding the KMs ``avoid``. ``source`` is the source of the relay's entire route (Table
        1), when it is not this KM (a transit KM asks).

        Raises :class:`KeyManagerError` with the controller's reason when it names no next hop
        (a Table 2 response with no Next KMA IDs, the reason in its Extension ``error_message``
        or else "no route: ..."; or an error indication, as other controllers may answer), and
        when the controller cannot be reached."""
        request = ck.KeyRelayNextHopRequest(
            source_kma_id=source or self._km_id,
            destination_kma_id=km,
            application_destination_id=application,
            extension=[
                {ck.KEY_BITS_EXTENSION: bits} | ({ck.AVOID_EXTENSION: avoid} if avoid else {})
            ],
        )
        try:
            response = await self._peers.ask_controller(request)
        except KeyManagerError as exc:  # the controller's words, as ETSI 014 says it: 400
            if application is not None and str(exc) == str(UnknownApplication(application)):
                raise UnknownApplication(application) from None
            raise
        assert isinstance(response, ck.ResponseToKeyRelayNextHopRequest)
        destination_km = response.destination_kma_id or km
        next_km = response.next_kma_ids[0]  # an empty list was raised as the failure it is
        if destination_km is None or next_km not in self._links.neighbours:
            raise KeyManagerError(
                f"the controller named {quoted(next_km)} as next hop from {self._km_id}, "
                "which is not a neighbour"
            )
        return destination_km, next_km

    async def route_information(self, destination_km: str, key_bits: int = 0) -> list[str]:
        """The controller's route from this KM to ``destination_km`` for ``key_bits`` (D2.3
        clause 8.1 c), Tables 8-3, 8-4): KM IDs, this KM first. Raises
        :class:`KeyManagerError` when it has none or cannot be asked."""
        response = await self._peers.ask_controller(
            mgmt.RouteInformationSupplyCommand(
                sender_id=self._km_id,
                source_id=self._km_id,
                destination_id=destination_km,
                key_amount=key_bits,
            )
        )
        assert isinstance(response, mgmt.RouteInformationSupplyResponse)
        return list(response.route_table)
