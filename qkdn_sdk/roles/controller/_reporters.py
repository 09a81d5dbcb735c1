"""The peers that report to the controller, its KMs (over Ck) and its QKD modules (over Cq)
alike (FG QIT4N D2.3 clause 8.1): their authentication (Tables 7-2/7-3), and the unsolicited
status supplies they send (Table 8-2): the checks each passes before its status table is
recorded, and how many each sender's were, to wait on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import trio

from qkdn_sdk.errors import quoted
from qkdn_sdk.messages import mgmt
from qkdn_sdk.transport import Connection

__all__ = ["Reporters"]

logger = logging.getLogger("qkdn_sdk.roles.controller")

_Response = TypeVar("_Response", bound=mgmt.AuthenticationResponse)


class Reporters:
    """The reporting peers ``senders`` of the controller ``controller_id`` (the KMs, or the QKD
    modules, of its network; ``kind`` names them in the logs): ``warn`` says what is ignored,
    without spam."""

    def __init__(
        self,
        controller_id: str,
        kind: str,
        senders: Collection[str],
        warn: Callable[[str], None],
    ) -> None:
        self._controller_id = controller_id
        self._kind = kind
        self._senders = senders
        self._warn = warn
        self._counts: dict[str, int] = {}
        self._handled = trio.Event()
        self.authenticated: set[str] = set()
        """The senders that authenticated to the controller (D2.3 clause 8.1.1 a))."""

    def authenticate(
        self, command: mgmt.AuthenticationCommand, response_type: type[_Response]
    ) -> _Response:
        """D2.3 clause 8.1.1 a): the answer to a sender's authentication, a success for one of
        ours (over TLS, the one its certificate names: the transport refuses another
        ``sender_id``), a failure otherwise."""
        if command.sender_id not in self._senders:
            logger.warning(
                "refused the authentication of unknown %s %s",
                self._kind,
                quoted(command.sender_id),
            )
            code = mgmt.ResultCode.FAILURE
        else:
            self.authenticated.add(command.sender_id)
            code = mgmt.ResultCode.SUCCESS
        return response_type(sender_id=self._controller_id, response_code=code)

    def receive(
        self,
        supply: mgmt.StatusInformationSupplyResponse,
        connection: Connection,
        record: Callable[[str, list[Any]], None],
    ) -> None:
        """Hand the status table of ``supply`` to ``record(sender, table)`` and count it. A
        supply whose ``sender_id`` is not the authenticated peer, or no sender of ours, is
        ignored (and not counted); a failed one is counted, its table not recorded."""
        sender = supply.sender_id
        peer = connection.peer_id
        if peer is not None and sender != peer:  # the transport refuses these; never trust it
            self._warn(
                f"ignored a status report: sender_id {quoted(sender)} is not the peer {peer!r}"
            )
            return
        if sender not in self._senders:
            self._warn(f"ignored a status report from unknown {self._kind} {quoted(sender)}")
            return
        if supply.response_code != mgmt.ResultCode.SUCCESS:
            logger.info("%s reports that its status supply failed; nothing recorded", sender)
        else:
            record(sender, supply.status_table)
        self._counts[sender] = self._counts.get(sender, 0) + 1
        self._handled.set()
        self._handled = trio.Event()

    def count(self, sender: str) -> int:
        """How many supplies of ``sender`` were handled (0 for no sender of ours)."""
        return self._counts.get(sender, 0)

    async def wait(self, sender: str, count: int) -> None:
        """Return once :meth:`count` of ``sender`` is at least ``count`` (at once if it
        already is): the supply that made it so has been recorded."""
        while self.count(sender) < count:
            await self._handled.wait()
