"""The QKDN controller's side of the routing control protocol with the QKD modules of its network
(FG QIT4N D2.3 clause 8.1, over the Y.3800 reference point Cq): their authentication (clause
8.1.1 a), Tables 7-2/7-3 as :class:`~qkdn_sdk.messages.mgmt.CqAuthenticationCommand` and its
response) and the status of their QKD links they supply (clause 8.1.1 b), Tables 8-1/8-2).

What the modules report is recorded, not used for routing: a relay spends key the KMs already
hold, which a QKD link that stopped generating does not take away, and the KMs report that key
themselves (:meth:`Controller.key_amount <qkdn_sdk.roles.controller.Controller.key_amount>`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from qkdn_sdk.errors import FailureResponse, QkdnError, shorten
from qkdn_sdk.messages import Message, failure_response, mgmt
from qkdn_sdk.roles.controller._network import MAX_KEY_BITS, ControllerConfig
from qkdn_sdk.roles.controller._reporters import Reporters
from qkdn_sdk.transport import Connection

__all__ = ["ModuleRequestFailed", "QKDModules"]

logger = logging.getLogger("qkdn_sdk.roles.controller")


class ModuleRequestFailed(QkdnError):
    """A QKD module could not supply the status the controller asked for; the text names it and
    says why."""


class QKDModules:
    """The QKD modules of ``config.modules`` as the controller knows them: which authenticated,
    the status each last supplied, the connection each keeps to the controller. ``warn`` logs
    what a peer sent wrong (without spam). The controller hands it every Cq message
    (:meth:`handle`) once the peer's role was checked."""

    def __init__(self, config: ControllerConfig, warn: Callable[[str], None]) -> None:
        self._config = config
        self._warn = warn
        self._connections: dict[str, Connection] = {}
        self._status: dict[str, dict[str, Any]] = {}
        self._rates: dict[frozenset[str], int | float] = {}
        self._reporters = Reporters(config.controller_id, "QKD module", config.modules, warn)
        self.authenticated = self._reporters.authenticated
        """The modules that authenticated to the controller (D2.3 clause 8.1.1 a))."""

    def connected(self, connection: Connection) -> None:
        """Keep the connection of a module of the network: status commands reach it there."""
        peer = connection.peer_id
        if peer is not None and peer in self._config.modules:
            self._connections[peer] = connection

    # --- what the controller knows ------------------------------------------------------------

    def status(self, module_id: str) -> dict[str, Any] | None:
        """The status of ``module_id``'s QKD link as it last supplied it (D2.3 Table 8-2): its
        status table entry, ``{"qkd_link", "key_amount", "key_generation_rate", "status"}``,
        each parameter the latest value supplied; ``None`` before it supplied any."""
        entry = self._status.get(module_id)
        return dict(entry) if entry is not None else None

    def key_generation_rate(self, km: str, other_km: str) -> int | float | None:
        """Bits per second the QKD link between ``km`` and ``other_km`` generates, as one of
        its two modules last supplied it; ``None`` when neither did."""
        return self._rates.get(frozenset((km, other_km)))

    def report_count(self, module_id: str) -> int:
        """How many status supplies from ``module_id`` were handled (recorded, or ignored as
        malformed); 0 for a module not in the network."""
        return self._reporters.count(module_id)

    async def wait_for_report(self, module_id: str, count: int = 1) -> None:
        """Return once :meth:`report_count` of ``module_id`` is at least ``count`` (at once if
        it already is): the supply that made it so has been recorded."""
        await self._reporters.wait(module_id, count)

    async def request_status(
        self, module_id: str, *, period: int | None = None, parameters: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Ask ``module_id`` for the status of its QKD link now (D2.3 Table 8-1), and, with
        ``period``, to supply it every ``period`` seconds from then on; ``parameters``: which
        (all when ``None``). The table is recorded as a supply is. Raises
        :class:`ModuleRequestFailed` when the module is not connected or refuses."""
        connection = self._connections.get(module_id)
        if connection is None:
            raise ModuleRequestFailed(f"cannot get the status of {module_id}: it is not connected")
        command = mgmt.CqStatusInformationSupplyCommand(
            sender_id=self._config.controller_id, period=period, status_table=parameters
        )
        try:
            response = await connection.request(command)
        except FailureResponse as exc:
            raise ModuleRequestFailed(
                f"{module_id} refused to supply its status: {exc.reason}"
            ) from None
        except QkdnError as exc:
            raise ModuleRequestFailed(f"cannot get the status of {module_id}: {exc}") from None
        assert isinstance(response, mgmt.CqStatusInformationSupplyResponse)
        self._record(module_id, response.status_table)
        return list(response.status_table)

    # --- the handler --------------------------------------------------------------------------

    async def handle(self, message: Message, connection: Connection) -> Message | None:
        """Answer a Cq message of a module of the network: its authentication (a success for a
        module of ``config.modules``, a failure otherwise) and its unsolicited status supply
        (recorded; ``None``). Another request gets a failure saying it is not supported."""
        self.connected(connection)
        if isinstance(message, mgmt.CqAuthenticationCommand):
            return self._reporters.authenticate(message, mgmt.CqAuthenticationResponse)
        if isinstance(message, mgmt.CqStatusInformationSupplyResponse):
            self._reporters.receive(message, connection, self._record)
            return None
        response_type = type(message).response_type()
        if response_type is None:
            return None
        return failure_response(
            response_type,
            f"{message.spec_name} is not supported by this controller",
            sender_id=self._config.controller_id,
        )

    def _record(self, module_id: str, status_table: list[Any]) -> None:
        """Record the entry of ``module_id``'s QKD link; an entry that is malformed is ignored
        (and said)."""
        for index, entry in enumerate(status_table[:1]):
            problem = _problem(entry)
            if problem is not None:
                self._warn(f"ignored status_table[{index}] of {module_id}: {problem}")
                continue
            previous = self._status.get(module_id, {})
            if entry.get("status") == "down" and previous.get("status") != "down":
                logger.info("the QKD link of %s is down", module_id)
            kept = {name: entry[name] for name in ("qkd_link", *_CHECKS) if name in entry}
            self._status[module_id] = previous | kept
            rate = entry.get("key_generation_rate")
            if rate is not None:
                self._rates[self._config.modules[module_id]] = rate
        if len(status_table) > 1:
            self._warn(f"ignored {len(status_table) - 1} more entries of {module_id}: one QKD link")


_CHECKS: Mapping[str, Callable[[Any], bool]] = {
    "key_amount": lambda value: _is_int(value) and 0 <= value <= MAX_KEY_BITS,
    "key_generation_rate": lambda value: _is_number(value) and 0 <= value <= MAX_KEY_BITS,
    "status": lambda value: value in ("up", "down"),
}
"""The parameters of a QKD link entry the controller records, each with its check (the module's
:data:`~qkdn_sdk.roles.qkd_module.MODULE_STATUS_PARAMETERS`; other parameters are dropped)."""


def _problem(entry: object) -> str | None:
    """Why ``entry`` is no QKD link status entry (D2.3 Table 8-2), or ``None``."""
    if not isinstance(entry, dict):
        return "not an object"
    if not isinstance(entry.get("qkd_link"), str):
        return "qkd_link is not a QKD module ID"
    for name, valid in _CHECKS.items():
        if name in entry and not valid(entry[name]):
            return f"{name} {shorten(repr(entry[name]), 40)} is not valid"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and value == value)
