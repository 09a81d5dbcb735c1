"""The literal QKDN controller (Q.4164)."""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from collections.abc import Collection, Mapping, Sequence

import attrs

from qkdn_sdk.messages import KeyId, Message, Role, ck, mgmt
from qkdn_sdk.testing.literal._base import (
    LiteralPeer,
    NonConformance,
    Trace,
    check,
    check_sender,
    quote,
)
from qkdn_sdk.transport import Connection

__all__ = ["STATUS_LINK", "LiteralController"]

STATUS_LINK = "km_link"
"""The member of a D2.3 Table 8-2 entry that names the KM link it describes (the SDK's name:
D2.3 leaves the status table's format open)."""


@attrs.frozen
class _Topology:
    kms: frozenset[str]
    links: frozenset[frozenset[str]]
    applications: Mapping[str, str]

    def route(self, source: str, destination: str) -> list[str]:
        """A route with the fewest hops (breadth first, in KM ID order), source first."""
        before: dict[str, str | None] = {source: None}
        frontier = deque([source])
        while frontier:
            here = frontier.popleft()
            if here == destination:
                path = [here]
                while (previous := before[path[-1]]) is not None:
                    path.append(previous)
                return path[::-1]
            for link in sorted(self.links, key=sorted):
                if here in link:
                    (there,) = link - {here}
                    if there not in before:
                        before[there] = here
                        frontier.append(there)
        raise NonConformance(f"no route from {source} to {destination}")


class LiteralController(LiteralPeer):
    """A QKDN controller written from Q.4164 alone.

    Served (:meth:`serve`: only what Q.4164 has a controller receive reaches it; a KM's D2.3
    status supply gets the transport's error indication) for the KMs of a network (``kms``,
    ``links``: pairs of KM IDs, ``applications``: application ID -> its KM), it answers next
    hop requests (Tables 1, 2: the hop from the KM that asks, its certificate's ID), key relay
    request notifications with a key relay request of its own over the same connection (Table 4
    as the SDK reads it: the KMs between source and destination) and awaits its response (Table
    5), and session creation requests by notifying the destination KM (Tables 6-9). Routes have
    the fewest hops: it knows nothing of key amounts, which only D2.3 reports. Connected to a
    KM's Ck URL (:meth:`connected`), it notifies sessions, reserves and allocates key, and asks
    for status (D2.3 Tables 8-1, 8-2, the SDK's codes)."""

    role = Role.CONTROLLER

    def __init__(
        self,
        name: str = "controller",
        trace: Trace | None = None,
        *,
        kms: Collection[str] = (),
        links: Collection[Collection[str]] = (),
        applications: Mapping[str, str] | None = None,
        ignore_sdk_members: bool = False,
    ) -> None:
        super().__init__(name, trace, ignore_sdk_members=ignore_sdk_members)
        self._topology = _Topology(
            frozenset(kms), frozenset(frozenset(link) for link in links), dict(applications or {})
        )
        self._kms: dict[str, Connection] = {}
        self._request_ids = itertools.count(1)
        self.relays: list[ck.ResponseToKeyRelayRequest] = []
        """The responses to its key relay requests (Table 5), in order."""

    # --- served to KMs -------------------------------------------------------------------------

    def on_connect(self, connection: Connection) -> None:
        """Q.4164 says nothing of who connects: a KM's connection is where it is reached."""
        if connection.peer_id is not None and connection.peer_id in self._topology.kms:
            self._kms[connection.peer_id] = connection

    async def answer(self, message: Message, connection: Connection) -> Message | None:
        check(
            self.name,
            message,
            (ck.KeyRelayNextHopRequest, ck.KeyRelayRequestNotification, ck.SessionCreationRequest),
            success=False,
            members=self.refuse_sdk_members,
        )
        asker = connection.peer_id or getattr(message, "source_kma_id", None)
        if asker is None:
            raise NonConformance(f"{self.name} cannot tell which KM sent {quote(message)}")
        if isinstance(message, ck.SessionCreationRequest):
            return await self._session(message, asker)
        assert isinstance(message, ck.KeyRelayNextHopRequest | ck.KeyRelayRequestNotification)
        destination = message.destination_kma_id or self._topology.applications.get(
            message.application_destination_id or ""
        )
        if destination is None:
            raise NonConformance(f"{self.name} knows no destination of {quote(message)}")
        if isinstance(message, ck.KeyRelayNextHopRequest):
            path = self._topology.route(asker, destination)
            return ck.ResponseToKeyRelayNextHopRequest(
                source_kma_id=message.source_kma_id,
                destination_kma_id=destination,
                next_kma_ids=[path[1]],
            )
        path = self._topology.route(asker, destination)
        request = ck.KeyRelayRequest(
            source_kma_id=asker,
            destination_kma_id=destination,
            transit_kma_ids=path[1:-1],
            key_relay_request_id=f"literal-{next(self._request_ids)}",
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._relay, request, connection)
        return None

    async def _relay(self, request: ck.KeyRelayRequest, connection: Connection) -> None:
        try:
            response = await self.ask(
                request,
                ck.ResponseToKeyRelayRequest,
                connection=connection,
                success=False,
                timeout=120.0,
            )
        except NonConformance as exc:
            self.trace.violation(exc)
            return
        if response.key_relay_request_id not in (None, request.key_relay_request_id):
            self.trace.violation(
                NonConformance(f"{self.name} asked {quote(request)}, answered {quote(response)}")
            )
        self.relays.append(response)

    async def _session(
        self, request: ck.SessionCreationRequest, source_km: str
    ) -> ck.ResponseToSessionCreationRequest:
        destination_km = self._topology.applications.get(request.application_destination_id)
        session_id = str(uuid.uuid4())
        connection = self._kms.get(destination_km or "")
        if destination_km is None or connection is None:
            return ck.ResponseToSessionCreationRequest(
                session_id=session_id,
                destination_km_id=destination_km or "",
                response=f"failure: destination KM {destination_km} not connected",
            )
        await self.notify_session(
            source=request.application_source_id,
            destination=request.application_destination_id,
            source_km=source_km,
            number=request.number_of_keys,
            session_id=session_id,
            connection=connection,
        )
        return ck.ResponseToSessionCreationRequest(
            session_id=session_id, response="success", destination_km_id=destination_km
        )

    # --- towards a KM ---------------------------------------------------------------------------

    async def notify_session(
        self,
        *,
        source: str,
        destination: str,
        source_km: str,
        number: int | None = None,
        session_id: str | None = None,
        connection: Connection | None = None,
    ) -> ck.ResponseToSessionCreationNotification:
        """Q.4164 clause 7.4 (Figure 4): tell the KM of ``destination`` of a session that
        ``source`` at ``source_km`` opened (Tables 8, 9)."""
        notification = ck.SessionCreationNotification(
            application_source_id=source,
            application_destination_id=destination,
            session_id=session_id or str(uuid.uuid4()),
            source_km_id=source_km,
            number_of_keys=number,
        )
        response = await self.ask(
            notification, ck.ResponseToSessionCreationNotification, connection=connection
        )
        if response.session_id != notification.session_id:
            raise NonConformance(
                f"{self.name} sent {quote(notification)}, answered {quote(response)}"
            )
        return response

    async def reserve(
        self, source: str, destination: str, application: str | None = None
    ) -> ck.ResponseToKeyReservationRequest:
        """Q.4164 clause 7.5 (Figure 5): key for relays from ``source`` to ``destination``
        reserved at the KM, as Table 10 writes it (no extension); the answer (Table 11)."""
        request = ck.KeyReservationRequest(
            source_kma_id=source,
            destination_kma_id=destination,
            application_destination_id=application,
        )
        response = await self.ask(request, ck.ResponseToKeyReservationRequest)
        if not response.key_ids:
            raise NonConformance(f"{self.name}: the reservation names no key: {quote(response)}")
        return response

    async def allocate(
        self,
        source: str,
        destination: str,
        key_ids: Sequence[KeyId],
        application: str | None = None,
    ) -> ck.ResponseToKeyAllocationRequest:
        """Q.4164 clause 7.6 (Figure 6): the reserved ``key_ids`` allocated (Tables 12, 13)."""
        request = ck.KeyAllocationRequest(
            source_kma_id=source,
            destination_kma_id=destination,
            application_destination_id=application,
            key_ids=list(key_ids),
        )
        return await self.ask(request, ck.ResponseToKeyAllocationRequest)

    async def status(self, parameters: Sequence[str]) -> list[dict[str, object]]:
        """D2.3 clause 8.1.1 b) (Figure 8-2): the KM's status now, for ``parameters`` only, with
        no Period (Table 8-1); its status table (Table 8-2), from the KM (its certificate's ID),
        every entry an object with each parameter asked and nothing else but ``km_link``, the
        KM link it describes (D2.3 leaves the table's format open: these are the SDK's
        names)."""
        command = mgmt.StatusInformationSupplyCommand(
            sender_id=self.own_id(), status_table=list(parameters)
        )
        response = await self.ask(command, mgmt.StatusInformationSupplyResponse)
        check_sender(self.name, response, self.peer_id)
        allowed = {*parameters, STATUS_LINK}
        for entry in response.status_table:
            if not isinstance(entry, dict) or set(parameters) - set(entry):
                raise NonConformance(
                    f"{self.name} asked for {', '.join(parameters)}, and an entry lacks one: "
                    f"{quote(response)}"
                )
            others = sorted(set(entry) - allowed)
            if others:
                raise NonConformance(
                    f"{self.name} asked for {', '.join(parameters)}, and an entry carries "
                    f"{', '.join(others)} too: {quote(response)}"
                )
        return [dict(entry) for entry in response.status_table]
