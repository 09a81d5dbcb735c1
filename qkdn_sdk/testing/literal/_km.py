"""The literal KM towards its QKDN controller (Q.4164, and the routing control protocol of FG
QIT4N D2.3 clause 8.1) and its QKD modules (Q.4162)."""

from __future__ import annotations

from typing import Any

import trio

from qkdn_sdk.messages import Key, Message, Role, ck, failure_reason, kq1, mgmt
from qkdn_sdk.testing.literal._base import (
    AUTHENTICATION_INFO,
    LiteralPeer,
    NonConformance,
    Trace,
    check,
    check_sender,
    hash_value,
    quote,
)
from qkdn_sdk.transport import Connection

__all__ = ["LiteralKM"]


class LiteralKM(LiteralPeer):
    """A KM written from Q.4164 and Q.4162 alone.

    Towards its QKDN controller (:meth:`connected` to its Ck URL) it asks for next hops (clause
    7.1) and whole routes (7.2), creates sessions (7.3), and answers the controller's key relay
    requests (Table 4, with Table 5 at once: it relays nothing) and session creation
    notifications (Table 8, with Table 9). With D2.3's routing control protocol (clause 8.1,
    the SDK's codes) it authenticates (Tables 7-2, 7-3), supplies its status unsolicited
    (Table 8-2) and asks for routes (Tables 8-3, 8-4).

    Towards a QKD module (Q.4162) it asks for keys (:meth:`key_request`, clause 7.2, connected
    to the module's URL), or, served (:meth:`serve`), takes the keys a module supplies (clause
    7.1: Table 1, answered by Table 2 at once). Every QKD-key must come once, under a Key ID
    never given before, with a Hash value that is ``hash_algorithm`` of the key when one is
    given (Table 1 fixes no algorithm), from the module whose certificate names the QKD module
    ID given; a key request's keys (Table 4) are read the same, with Table 1's parameters where
    a Key extension gives them (the SDK's reading)."""

    role = Role.KM

    def __init__(
        self,
        name: str = "KM",
        trace: Trace | None = None,
        *,
        hash_algorithm: str = "sha256",
        ignore_sdk_members: bool = False,
    ) -> None:
        super().__init__(name, trace, ignore_sdk_members=ignore_sdk_members)
        self.hash_algorithm = hash_algorithm
        self.supplied: list[kq1.KeySupply] = []
        """The key supplies of QKD modules (Table 1) taken, in order."""
        self._qkd_key_ids: set[str] = set()
        self._routes_in, self._routes_out = trio.open_memory_channel[ck.KeyRelayRequest](16)
        self.notified: dict[str, ck.SessionCreationNotification] = {}
        """Session creation notifications received, by session ID."""

    async def answer(self, message: Message, connection: Connection) -> Message | None:
        check(
            self.name,
            message,
            (ck.KeyRelayRequest, ck.SessionCreationNotification, kq1.KeySupply),
            success=False,
            members=self.refuse_sdk_members,
        )
        if isinstance(message, kq1.KeySupply):
            return self._take(message, connection.peer_id)
        if isinstance(message, ck.KeyRelayRequest):
            self._routes_in.send_nowait(message)
            return ck.ResponseToKeyRelayRequest(
                response="success", key_relay_request_id=message.key_relay_request_id
            )
        assert isinstance(message, ck.SessionCreationNotification)
        self.notified[message.session_id] = message
        return ck.ResponseToSessionCreationNotification(
            session_id=message.session_id, response="success"
        )

    async def next_hop(
        self,
        source: str,
        *,
        destination: str | None = None,
        application: str | None = None,
    ) -> ck.ResponseToKeyRelayNextHopRequest:
        """Q.4164 clause 7.1: the next hop towards ``destination`` (a KM) or the KM of
        ``application``, on a route from ``source`` (Tables 1, 2). A response that names no
        next hop, or names the asker, is a :class:`NonConformance`."""
        request = ck.KeyRelayNextHopRequest(
            source_kma_id=source,
            destination_kma_id=destination,
            application_destination_id=application,
        )
        response = await self.ask(request, ck.ResponseToKeyRelayNextHopRequest)
        if not response.next_kma_ids:
            raise NonConformance(f"{self.name} got no next hop: {quote(response)}")
        if self.identity in response.next_kma_ids:
            raise NonConformance(
                f"{self.name} ({self.identity}) is given itself as the next hop: {quote(response)}"
            )
        if application is not None and response.destination_kma_id is None:
            raise NonConformance(
                f"{self.name} named the destination application only, and the answer names "
                f"no Destination KMA ID (Table 2: mandatory then): {quote(response)}"
            )
        return response

    async def relay_route(
        self,
        *,
        destination: str | None = None,
        application: str | None = None,
        timeout: float = 30.0,
    ) -> ck.KeyRelayRequest:
        """Q.4164 clause 7.2 (Figure 2): notify the controller (Table 3) and return the key
        relay request it sends back (Table 4), already answered (Table 5). Transit KMA IDs are
        read as the KMs between source and destination: a list that names either end is a
        :class:`NonConformance`."""
        source = self.own_id()
        notification = ck.KeyRelayRequestNotification(
            source_kma_id=source,
            destination_kma_id=destination,
            application_destination_id=application,
        )
        await self.send(notification)
        with trio.move_on_after(timeout):
            request = await self._routes_out.receive()
            ends = {source, destination or request.destination_kma_id or source}
            named = sorted(ends & set(request.transit_kma_ids))
            if named:  # Table 4 read as the KMs between source and destination
                raise NonConformance(
                    f"{self.name}: Transit KMA IDs name an end of the route ({', '.join(named)}): "
                    f"{quote(request)}"
                )
            if application is not None and request.destination_kma_id is None:
                raise NonConformance(
                    f"{self.name} named the destination application only, and the key relay "
                    f"request names no Destination KMA ID (Table 4): {quote(request)}"
                )
            return request
        raise NonConformance(
            f"{self.name} sent {quote(notification)} and no key relay request came in {timeout:g} s"
        )

    async def create_session(
        self, source: str, destination: str, number: int | None = None
    ) -> ck.ResponseToSessionCreationRequest:
        """Q.4164 clause 7.3 (Figure 3): a session from application ``source`` to
        ``destination`` (Tables 6, 7)."""
        request = ck.SessionCreationRequest(
            application_source_id=source,
            application_destination_id=destination,
            number_of_keys=number,
        )
        return await self.ask(request, ck.ResponseToSessionCreationRequest)

    # --- D2.3 clause 8.1 -------------------------------------------------------------------------

    async def authenticate(self) -> mgmt.CkAuthenticationResponse:
        """D2.3 clause 8.1.1 a) (Figure 8-1): authenticate to the controller (Tables 7-2, 7-3);
        the answer must be a success from the controller (its certificate's ID)."""
        command = mgmt.CkAuthenticationCommand(
            sender_id=self.own_id(), authentication_info=AUTHENTICATION_INFO
        )
        response = await self.ask(command, mgmt.CkAuthenticationResponse)
        check_sender(self.name, response, self.peer_id)
        return response

    async def report_status(self, status_table: list[dict[str, Any]]) -> None:
        """D2.3 clause 8.1.1 b) (Figure 8-2): supply ``status_table`` unsolicited (Table 8-2,
        with no OrigMessage ID); the controller answers nothing."""
        await self.send(
            mgmt.StatusInformationSupplyResponse(
                sender_id=self.own_id(),
                status_table=status_table,
                response_code=mgmt.ResultCode.SUCCESS,
            )
        )

    async def route_information(
        self, source: str, destination: str
    ) -> mgmt.RouteInformationSupplyResponse:
        """D2.3 clause 8.1.1 c) (Figure 8-3): a route from KM ``source`` to KM ``destination``
        (Tables 8-3, 8-4): from the controller, ``source`` first, ``destination`` last, no KM
        twice."""
        command = mgmt.RouteInformationSupplyCommand(
            sender_id=self.own_id(), source_id=source, destination_id=destination
        )
        response = await self.ask(command, mgmt.RouteInformationSupplyResponse)
        check_sender(self.name, response, self.peer_id)
        route = response.route_table
        if (
            len(route) < 2
            or (route[0], route[-1]) != (source, destination)
            or len(set(route)) != len(route)
        ):
            raise NonConformance(
                f"{self.name} asked for a route from {source} to {destination}, got "
                f"{quote(response)}"
            )
        return response

    # --- towards a QKD module (Q.4162) ---------------------------------------------------------

    def _take(self, supply: kq1.KeySupply, module: str | None) -> kq1.ResponseToKeySupply:
        """Q.4162 clause 7.1: Table 1, answered by Table 2 with the same Key ID and module IDs."""
        self._check_key(supply.key_id, supply.key, supply.hash_value, supply)
        self._check_module(supply.qkd_module_id, module, supply)
        self.supplied.append(supply)
        return kq1.ResponseToKeySupply(
            key_id=supply.key_id,
            qkd_module_id=supply.qkd_module_id,
            matching_qkd_module_id=supply.matching_qkd_module_id,
            response="success",
        )

    async def wait_supplied(self, count: int) -> list[kq1.KeySupply]:
        """Return the key supplies taken once there are ``count`` (or a violation was found)."""
        while len(self.supplied) < count and not self.trace.violations:
            await self.trace.changed()
        return self.supplied[:count]

    async def key_request(
        self, number: int | None = None, size: int | None = None
    ) -> kq1.ResponseToKeyRequest:
        """Q.4162 clause 7.2: keys from the module (Tables 3, 4). A failure that gives no key
        is returned as it is (a module may have none ready); keys are checked: at most
        ``number``, of ``size`` bits (or all of one size), with the metadata of their Key
        extension, when it carries Table 1's, consistent."""
        request = kq1.KeyRequest(number_of_keys=number, size_of_key=size)
        response = await self.ask(request, kq1.ResponseToKeyRequest, success=False)
        failed = failure_reason(response) is not None
        if failed != (not response.keys):
            raise NonConformance(
                f"{self.name} asked {quote(request)}, answered "
                f"{'a failure with keys' if failed else 'success without a key'}: "
                f"{quote(response)}"
            )
        sizes = {8 * len(key.key) for key in response.keys}
        if (number is not None and len(response.keys) > number) or (
            len(sizes) > 1 or (size is not None and sizes - {size})
        ):
            raise NonConformance(
                f"{self.name} asked {quote(request)}, and got {len(response.keys)} keys of "
                f"{', '.join(map(str, sorted(sizes)))} bits: {quote(response)}"
            )
        for key in response.keys:
            self._check_table_1(key, response)
        return response

    def _check_table_1(self, key: Key, response: kq1.ResponseToKeyRequest) -> None:
        """A Table 4 key, with Table 1's parameters where its Key extension names them."""
        extension = key.key_extension or {}
        hashed, module = extension.get("hash_value"), extension.get("qkd_module_id")
        self._check_key(key.key_id, key.key, hashed if isinstance(hashed, str) else None, response)
        self._check_module(module if isinstance(module, str) else None, self.peer_id, response)

    def _check_key(self, key_id: str, key: bytes, hashed: str | None, message: Message) -> None:
        if key_id in self._qkd_key_ids:
            raise NonConformance(
                f"{self.name} was given QKD-key {key_id} a second time: {quote(message)}"
            )
        if hashed is not None and hashed != hash_value(self.hash_algorithm, key):
            raise NonConformance(
                f"{self.name}: the Hash value of QKD-key {key_id} is not the "
                f"{self.hash_algorithm} of its key data: {quote(message)}"
            )
        self._qkd_key_ids.add(key_id)

    def _check_module(self, named: str | None, module: str | None, message: Message) -> None:
        if named is not None and module is not None and named != module:
            raise NonConformance(
                f"{self.name}: QKD module {module} names itself {named}: {quote(message)}"
            )
