"""The KM's side of status supply to the QKDN controller (D2.3 clause 8.1): authentication to the
controller (Table 7-2 over Ck), the status table of the KM's links (Table 8-2), unsolicited every
report period and on the controller's status command."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import trio

from qkdn_sdk.errors import FailureResponse, QkdnError, quoted
from qkdn_sdk.messages import mgmt
from qkdn_sdk.roles._status import ReportSchedule
from qkdn_sdk.roles.km.config import AUTHENTICATION, KMConfig
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.peers import Peers
from qkdn_sdk.transport import Connection

__all__ = ["STATUS_PARAMETERS", "StatusSupply"]

logger = logging.getLogger("qkdn_sdk.roles.km")

STATUS_PARAMETERS = ("key_amount", "key_generation_rate", "key_consumption_rate", "status")
"""The parameters of a KM link in this KM's status table (D2.3 Table 8-2)."""


class StatusSupply:
    """Status information supply of one KM: :meth:`run` reports, :meth:`on_status_command`
    answers the controller."""

    def __init__(self, config: KMConfig, links: LinkTable, peers: Peers) -> None:
        self._config = config
        self._km_id = config.km_id
        self._links = links
        self._peers = peers
        self._rates_since = (
            trio.current_time(),
            dict(links.generated_bits),
            dict(links.spent_bits),
        )
        self._schedule = ReportSchedule(config.report_interval, STATUS_PARAMETERS)
        """When the unsolicited supplies go, and what they carry: the period and status table
        of the controller's latest status command with a period, else every parameter."""

    @property
    def report_period(self) -> float:
        """Seconds between two unsolicited status supplies: ``report_interval``, or the period
        of the controller's latest status command."""
        return self._schedule.period

    def report_now(self) -> None:
        """Have the next status supply go now (a link went up or down)."""
        self._schedule.report_now()

    def link_key_held(self) -> dict[str, dict[str, int]]:
        """Per neighbour, what this end of the link holds against its cap (the SDK's, beside
        Table 8-2, which has no parameter for it): ``held_bits`` (QKD-keys waiting for
        synchronisation, link units both ways, reserved and allocated), ``max_bits``
        (``max_link_key_bits``), ``room_bits`` (0 while full) and ``refused_keys``
        (QKD-keys refused or left at their source because the link end was full, since the KM
        started)."""
        return {
            link.neighbour: {
                "held_bits": self._links.held_bits(link.neighbour),
                "max_bits": self._links.max_bits,
                "room_bits": self._links.room_bits(link.neighbour),
                "refused_keys": self._links.refused_keys[link.neighbour],
            }
            for link in self._config.links
        }

    def link_status(self, parameters: Collection[str] = STATUS_PARAMETERS) -> list[dict[str, Any]]:
        """The D2.3 Table 8-2 status table: per neighbour (``km_link``), the ``parameters`` of
        :data:`STATUS_PARAMETERS` asked for. ``key_amount``: bits this KM can spend towards it
        (0 while it is unreachable); ``key_generation_rate`` and ``key_consumption_rate``: bits
        per second got and spent towards it since the previous status table; ``status``:
        ``"up"``, or ``"down"`` while the last request to it failed to reach it. (Built every
        report period, it also wakes the acquisition of a full link end that consumption
        brought down unannounced: :meth:`~qkdn_sdk.roles.km.link_table.LinkTable.recheck_room`.)
        """
        self._links.recheck_room()
        now, generated, spent = (
            trio.current_time(),
            dict(self._links.generated_bits),
            dict(self._links.spent_bits),
        )
        since, generated_before, spent_before = self._rates_since
        self._rates_since = (now, generated, spent)
        elapsed = max(now - since, 1e-9)
        table = []
        for link in self._config.links:
            neighbour = link.neighbour
            down = neighbour in self._links.unreachable
            values: dict[str, Any] = {
                "key_amount": 0 if down else self._links.link_key_bits(neighbour),
                "key_generation_rate": round(
                    (generated[neighbour] - generated_before[neighbour]) / elapsed
                ),
                "key_consumption_rate": round(
                    (spent[neighbour] - spent_before[neighbour]) / elapsed
                ),
                "status": "down" if down else "up",
            }
            table.append({"km_link": neighbour} | {name: values[name] for name in parameters})
        return table

    async def on_status_command(
        self, command: mgmt.StatusInformationSupplyCommand, connection: Connection
    ) -> mgmt.StatusInformationSupplyResponse:
        """D2.3 clause 8.1 b): the controller asks for status now, and every ``period`` seconds
        when it gives one (the KM's unsolicited supplies then come at that period, with the
        parameters this command asked for)."""
        return mgmt.StatusInformationSupplyResponse(
            sender_id=self._km_id,
            status_table=self.link_status(self._schedule.asked(command)),
            response_code=mgmt.ResultCode.SUCCESS,
        )

    async def _authenticate_to_controller(self) -> bool:
        controller = self._config.controller_id
        command = mgmt.CkAuthenticationCommand(
            sender_id=self._km_id, authentication_info=AUTHENTICATION
        )
        try:
            response = await self._peers.dialer(controller).request(
                command, timeout=self._config.relay_timeout
            )
        except FailureResponse as exc:
            logger.warning("%s: the controller refused its authentication: %s", self._km_id, exc)
            return False
        except QkdnError:
            return False  # not reachable yet: the report below says so
        assert isinstance(response, mgmt.CkAuthenticationResponse)
        if response.sender_id != controller:  # it proves who it is, too
            logger.warning(
                "%s: %s answered the authentication, not the controller %s",
                self._km_id,
                quoted(response.sender_id),
                controller,
            )
            return False
        logger.info("%s: authenticated to the controller", self._km_id)
        return True

    async def run(self) -> None:
        """Authenticate to the controller (D2.3 clause 8.1.1 a), Table 7-2 over Ck), then
        supply the status table every report period."""
        failing = False
        authenticated = False
        while True:
            if not authenticated:
                authenticated = await self._authenticate_to_controller()
            report = mgmt.StatusInformationSupplyResponse(
                sender_id=self._km_id,
                status_table=self.link_status(self._schedule.parameters),
                response_code=mgmt.ResultCode.SUCCESS,
            )
            try:
                await self._peers.dialer(self._config.controller_id).send(report)
                failing = False
            except QkdnError as exc:
                if not failing:
                    logger.warning("%s: cannot report to the controller: %s", self._km_id, exc)
                failing = True
            await self._schedule.wait()
