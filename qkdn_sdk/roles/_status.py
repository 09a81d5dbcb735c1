"""When a role supplies its status to the QKDN controller unsolicited, and with which parameters
(FG QIT4N D2.3 clause 8.1.1 b), Table 8-1): shared by the KM and the QKD module, which "may
proactively supply status information" and take the period and parameters of the controller's
latest status command that has a period."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from qkdn_sdk.errors import RequestRefused
from qkdn_sdk.messages import mgmt

__all__ = ["ReportSchedule"]


class ReportSchedule:
    """The unsolicited status supplies of one role: every :attr:`period` seconds (``interval``
    until the controller sets one), carrying :attr:`parameters` (all of ``known`` until the
    controller chooses)."""

    def __init__(self, interval: float, known: Sequence[str]) -> None:
        self._known = tuple(known)
        self.period = interval
        """Seconds between two unsolicited supplies."""
        self.parameters = list(known)
        """What the unsolicited supplies carry."""
        self._wanted = trio.Event()

    def asked(self, command: mgmt.StatusInformationSupplyCommand) -> list[str]:
        """The parameters ``command`` asks for (all it may name when it names none). With a
        ``period``, the unsolicited supplies come at that period, with those parameters, and
        the next one now. Raises :class:`~qkdn_sdk.errors.RequestRefused` naming the parameters
        not among those known (nothing changes then)."""
        parameters = command.status_table or list(self._known)
        unknown = sorted(set(parameters) - set(self._known))
        if unknown:
            raise RequestRefused(
                f"unknown status parameters {unknown} (known: {list(self._known)})"
            )
        if command.period is not None:
            self.period = float(command.period)
            self.parameters = list(parameters)
            self.report_now()  # start the new period now
        return list(parameters)

    def report_now(self) -> None:
        """Have the next supply go now (a link went up or down, the period changed)."""
        self._wanted.set()

    async def wait(self) -> None:
        """Return when the next supply is due: a period from now, or sooner if
        :meth:`report_now` is called meanwhile."""
        self._wanted = trio.Event()
        with trio.move_on_after(self.period):
            await self._wanted.wait()
