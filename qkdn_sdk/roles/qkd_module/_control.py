"""The QKD module's side of the routing control protocol (FG QIT4N D2.3 clause 8.1) with its QKDN
controller, over the Y.3800 reference point Cq: authentication (clause 8.1.1 a), Table 7-2 as
:class:`~qkdn_sdk.messages.mgmt.CqAuthenticationCommand`), then the status of its QKD link
(clause 8.1.1 b), Table 8-2 as :class:`~qkdn_sdk.messages.mgmt.CqStatusInformationSupplyResponse`),
unsolicited every report period and on the controller's status command (Table 8-1). It mirrors
the KM's :mod:`qkdn_sdk.roles.km.status`.

The controller is never needed for keys: while it is unreachable or refuses, the module keeps
supplying its KM and tries again a report period later (logged once per outage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

import trio

from qkdn_sdk.errors import FailureResponse, QkdnError, RequestRefused, quoted
from qkdn_sdk.messages import Interface, Message, Role, mgmt, received_by
from qkdn_sdk.roles._peer import Dialer
from qkdn_sdk.roles._status import ReportSchedule
from qkdn_sdk.roles.qkd_module._config import QKDModuleConfig
from qkdn_sdk.roles.qkd_module._keys import QKDModuleStats
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits

__all__ = ["AUTHENTICATION", "MODULE_STATUS_PARAMETERS", "ControllerLink"]

logger = logging.getLogger("qkdn_sdk.roles.qkd_module")

MODULE_STATUS_PARAMETERS = ("key_amount", "key_generation_rate", "status")
"""The parameters of a QKD link in a module's status table (D2.3 Table 8-2: "key generation rate
of a QKD link, status of a QKD link"), named as the KM's of a KM link
(:data:`qkdn_sdk.roles.km.status.STATUS_PARAMETERS`): ``key_amount`` is bits of key held for the
KM, ``key_generation_rate`` bits per second, ``status`` ``"up"`` or ``"down"``."""

AUTHENTICATION = "mtls"
"""The "Authentication info" of the module's Table 7-2 command, as the KM's: the mutual TLS of
the interface, so the sender ID is its certificate's (the transport checks it)."""

_ACCEPTS = frozenset(
    cls for cls in received_by(Role.QKD_MODULE) if cls.interface is not Interface.KQ1
)
"""What the controller may send a module: the Cq messages (and the error indication)."""

_TIMEOUT = 10.0
"""Seconds the module waits for the controller to answer its authentication."""


class ControllerLink:
    """A QKD module's status supply to its controller: :meth:`run` authenticates and reports,
    :meth:`handle` answers the controller's status commands.

    ``stats`` gives the module's key counts now; ``nursery`` holds the connection to the
    controller (opened again after it is lost).
    """

    def __init__(
        self,
        config: QKDModuleConfig,
        stats: Callable[[], QKDModuleStats],
        nursery: trio.Nursery,
        *,
        tls: TLSConfig | None,
        limits: Limits | None,
    ) -> None:
        assert config.controller_id is not None, "a module without a controller has no link"
        self._config = config
        self._controller_id = config.controller_id
        self._stats = stats
        self._dialer = Dialer(
            nursery,
            url=config.controller_url,
            tls=tls,
            identity=config.module_id,
            peer=config.controller_id,
            handler=self.handle,
            accepts=_ACCEPTS,
            limits=limits,
        )
        self._schedule = ReportSchedule(config.report_interval, MODULE_STATUS_PARAMETERS)
        self._authenticated = False
        """Whether the controller accepted the module's authentication (D2.3 clause 8.1.1 a))
        since the last failure to reach it."""

    def link_status(
        self, parameters: Collection[str] = MODULE_STATUS_PARAMETERS
    ) -> list[dict[str, Any]]:
        """The D2.3 Table 8-2 status table: one entry for the module's QKD link (``qkd_link``:
        the matching module's ID) with the ``parameters`` of :data:`MODULE_STATUS_PARAMETERS`
        asked for. ``key_amount``: bits of the keys buffered for the KM; ``key_generation_rate``:
        the link's secret key rate in bits per second; ``status``: ``"up"`` (a simulated link
        never fails)."""
        config = self._config
        rate = config.secret_key_rate
        buffered = min(self._stats().buffered, config.buffer_keys)
        values: dict[str, Any] = {
            "key_amount": buffered * config.key_size,
            "key_generation_rate": int(rate) if rate.is_integer() else rate,
            "status": "up",
        }
        entry = {"qkd_link": config.matching_module_id}
        return [entry | {name: values[name] for name in parameters}]

    async def handle(self, message: Message, connection: Connection) -> Message | None:
        """D2.3 clause 8.1.1 b): the controller asks for the link's status now, and every
        ``period`` seconds when it gives one (the unsolicited supplies then come at that period,
        with the parameters asked for). Anything else from the controller is refused; an
        error indication is logged."""
        if isinstance(message, mgmt.CqStatusInformationSupplyCommand):
            return mgmt.CqStatusInformationSupplyResponse(
                sender_id=self._config.module_id,
                status_table=self.link_status(self._schedule.asked(message)),
                response_code=mgmt.ResultCode.SUCCESS,
            )
        if isinstance(message, mgmt.ErrorIndication):
            logger.warning(
                "QKD module %s got an error indication from its controller: %s",
                self._config.module_id,
                quoted(message.reason, 200),
            )
            return None
        if type(message).response_type() is None:
            return None
        raise RequestRefused(f"{message.spec_name} is not supported by a QKD module")

    async def _authenticate(self) -> str | None:
        """Authenticate to the controller (Table 7-2); return why it failed, or ``None``."""
        command = mgmt.CqAuthenticationCommand(
            sender_id=self._config.module_id, authentication_info=AUTHENTICATION
        )
        try:
            response = await self._dialer.request(command, timeout=_TIMEOUT)
        except FailureResponse as exc:
            return f"it refused the authentication: {exc.reason}"
        except QkdnError as exc:
            return str(exc)
        assert isinstance(response, mgmt.CqAuthenticationResponse)
        if response.sender_id != self._controller_id:  # it proves who it is, too
            return f"{quoted(response.sender_id)} answered the authentication, not the controller"
        return None

    async def run(self) -> None:
        """Authenticate to the controller (D2.3 clause 8.1.1 a)), then supply the status table
        every report period; while that fails, try again a report period later, authenticating
        first."""
        module_id = self._config.module_id
        outage: str | None = None  # why the controller cannot be reported to, once logged
        while True:
            problem = None
            if not self._authenticated:
                problem = await self._authenticate()
                if problem is None:
                    self._authenticated = True
                    logger.info("QKD module %s: authenticated to its controller", module_id)
            if problem is None:
                report = mgmt.CqStatusInformationSupplyResponse(
                    sender_id=module_id,
                    status_table=self.link_status(self._schedule.parameters),
                    response_code=mgmt.ResultCode.SUCCESS,
                )
                try:
                    await self._dialer.send(report)
                except QkdnError as exc:
                    problem = str(exc)
            if problem is not None and outage is None:
                logger.warning(
                    "QKD module %s cannot report to its controller %s at %s: %s; retrying every "
                    "%g s (keys still go to its KM)",
                    module_id,
                    self._controller_id,
                    self._config.controller_url,
                    problem,
                    self._schedule.period,
                )
            elif problem is None and outage is not None:
                logger.info("QKD module %s reaches its controller again", module_id)
            if problem is not None:  # authenticate again first: it may be a new controller
                self._authenticated = False
            outage = problem
            await self._schedule.wait()
