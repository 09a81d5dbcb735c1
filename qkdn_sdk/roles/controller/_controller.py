"""The QKDN controller's Ck role: the messages KMs send it, the requests it sends them, and what
it keeps between them (sessions, reservations, status reports). The network model and the routes
it answers with are :class:`~qkdn_sdk.roles.controller._network.KeyNetwork`'s; the
:mod:`qkdn_sdk.roles.controller` docstring says how the two work together.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry

from qkdn_sdk.errors import FailureResponse, NotAuthorized, QkdnError, UnknownApplication, quoted
from qkdn_sdk.messages import (
    Interface,
    KeyId,
    Message,
    Role,
    check_response,
    ck,
    failure_response,
    mgmt,
    received_by,
)
from qkdn_sdk.roles._authorization import Authorization
from qkdn_sdk.roles.controller._modules import QKDModules
from qkdn_sdk.roles.controller._network import MAX_KEY_BITS, ControllerConfig, KeyNetwork, NoRoute
from qkdn_sdk.roles.controller._reporters import Reporters
from qkdn_sdk.roles.metrics import controller_metrics
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, serve

__all__ = ["LOG_INTERVAL", "Controller", "KMRequestFailed", "Reservation"]

logger = logging.getLogger("qkdn_sdk.roles.controller")

LOG_INTERVAL = 10.0
"""Seconds between two log lines about ignored status reports or entries (the first is logged at
once; the next says how many more there were)."""

_MAX_PROBLEMS_LOGGED = 3  # malformed entries described per report; the rest are counted
_RELAY_RESULT_TIMEOUT = 120.0
"""Seconds the controller waits for a KM to report how a centralized relay ended."""
_MAX_RELAY_ID_LENGTH = 128
_MAX_AVOIDED = 64
_SESSION_TIMEOUT = 30.0
"""Seconds the controller waits for a destination KM to create a session (it asks its
application)."""


class KMRequestFailed(QkdnError):
    """A KM could not do what the controller asked (reserve or allocate key, supply its status);
    the text names it and says why."""


@attrs.frozen
class Reservation:
    """Link key reserved along a route (Q.4164 clause 7.5): the key IDs each KM answered, to
    allocate as they are (clause 7.6)."""

    source_km: str
    destination_km: str
    application: str | None
    route: tuple[str, ...]
    key_ids: Mapping[str, list[str]]
    """Per KM of the route but the last: the IDs of the link key units it reserved towards the
    next KM."""


class _Refused(Exception):
    """A request the controller answers with a failure (internal: becomes the failure text).
    ``known``: response parameters the controller can fill all the same (the session ID it
    made, the destination KM it found)."""

    def __init__(self, reason: str, **known: str) -> None:
        super().__init__(reason)
        self.known = known


class _QuietLog:
    """Logs warnings about what peers sent without spam: the first at once, then at most one
    line every :data:`LOG_INTERVAL` seconds, with how many were not logged. The number of lines
    is bounded whatever peers send."""

    def __init__(self) -> None:
        self._unlogged = 0
        self._logged_at = -float("inf")

    def warning(self, text: str) -> None:
        now = trio.current_time()
        if now - self._logged_at < LOG_INTERVAL:
            self._unlogged += 1
            return
        more = self._unlogged
        suffix = f" ({more} more not logged in the last {LOG_INTERVAL:g} s)" if more else ""
        logger.warning("%s%s", text, suffix)
        self._logged_at = now
        self._unlogged = 0


class Controller:
    """A QKDN controller in a distributed QKDN (Q.4164 clause 7.1).

    It answers *key relay next hop request* (Q.4164 Table 1) with the next hop towards the
    destination (Table 2), and records the key amounts KMs report in unsolicited *status
    information supply* responses (FG QIT4N D2.3 Table 8-2). Other Ck requests get a failure
    saying they are not supported yet. The QKD modules of the network authenticate and supply the
    status of their QKD links on the same URLs (D2.3 clause 8.1, over Cq: :attr:`modules`).
    Given a ``registry``, it puts its metrics there (:mod:`qkdn_sdk.roles.metrics`). Use it
    from one trio run.
    """

    def __init__(
        self,
        config: ControllerConfig,
        *,
        tls: TLSConfig | None = None,
        limits: Limits | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self._tls = tls
        self._limits = limits
        self._nursery: trio.Nursery | None = None
        self._km_connections: dict[str, Connection] = {}
        """The latest connection each KM sent us something on: where we reach it."""
        self._network = KeyNetwork(config)
        self._quiet = _QuietLog()
        self._reports = Reporters(config.controller_id, "KM", config.kms, self._quiet.warning)
        self.authenticated = self._reports.authenticated
        """The KMs that authenticated to the controller (D2.3 clause 8.1.1 a))."""
        self.modules = QKDModules(config, self._quiet.warning)
        """The QKD modules of the network: their authentication and the status of their QKD
        links they supply (D2.3 clause 8.1, over Cq)."""
        self._authorization = Authorization(
            config.controller_id,
            {km: {Role.KM} for km in config.kms}
            | {module: {Role.QKD_MODULE} for module in config.modules},
            {
                Role.KM: "{peer} is not a KM of the network of {owner}",
                Role.QKD_MODULE: "{peer} is not a QKD module of the network of {owner}",
            },
        )
        self.urls: list[str] = []
        """The URLs that reach the controller once it listens: ``listen_url``'s first."""
        self._requests = None if registry is None else controller_metrics(registry, self)

    # --- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve ``config.listen_url`` (and ``config.also_listen``) until cancelled, accepting
        the messages a QKDN controller receives (``received_by(Role.CONTROLLER)``). Use
        ``await nursery.start(controller.run)`` to get the URL that reaches it once it listens
        (with the real port when asked for 0; :attr:`urls` has them all). Raises
        :class:`~qkdn_sdk.errors.TransportError` when a URL cannot be served."""
        self.urls.clear()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for url in (self.config.listen_url, *self.config.also_listen):
                info = await nursery.start(self._serve, url)
                self.urls.append(info.url)
            task_status.started(self.urls[0])

    async def _serve(
        self, url: str, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve(
            url,
            self.handle,
            tls=self._tls,
            identity=self.config.controller_id,
            limits=self._limits,
            accepts=received_by(Role.CONTROLLER),
            on_connect=self._connected,
            task_status=task_status,
        )

    def _connected(self, connection: Connection) -> None:
        """A KM of the network connected: session creation notifications (and the end of a
        session) reach it on its latest connection, even if it never sends anything first."""
        if connection.peer_id in self.config.kms:
            self._km_connections[connection.peer_id] = connection
        self.modules.connected(connection)

    # --- what the controller knows ------------------------------------------------------------

    def key_amount(self, source_km: str, destination_km: str) -> int | None:
        """The bits of key ``source_km`` last reported it has to send to ``destination_km``, or
        ``None`` when it never reported that link."""
        return self._network.key_amount(source_km, destination_km)

    def link_state(self, source_km: str, destination_km: str) -> str | None:
        """``"up"`` or ``"down"``: the state ``source_km`` last reported of its KM link to
        ``destination_km`` (D2.3 Table 8-2 ``status``; down when it stopped answering HELLOs);
        ``None`` when it never said."""
        return self._network.link_state(source_km, destination_km)

    def report_count(self, km_id: str) -> int:
        """How many status reports from ``km_id`` were handled (applied, or ignored entry by
        entry) since the controller was made; 0 for a KM not in the network."""
        return self._reports.count(km_id)

    async def wait_for_report(self, km_id: str, count: int = 1) -> None:
        """Return once :meth:`report_count` of ``km_id`` is at least ``count`` (at once if it
        already is): the report that made it so has been applied."""
        await self._reports.wait(km_id, count)

    def route(
        self,
        source_km: str,
        destination_km: str,
        key_bits: int = 0,
        avoid: Collection[str] = (),
    ) -> list[str]:
        """The cheapest route from ``source_km`` to ``destination_km`` whose every link holds at
        least ``key_bits`` bits (source first, destination last), as the package docstring says,
        through none of the KMs ``avoid`` (found unreachable by a KM that relayed).

        Raises :class:`NoRoute` naming the cause: an unknown KM, the same KM at both ends, KMs
        the topology does not connect, or the links skipped for lack of key. Raises
        :class:`ValueError` for a negative ``key_bits``.
        """
        return self._network.route(source_km, destination_km, key_bits, avoid)

    # --- key reservation and allocation (Q.4164 clauses 7.5, 7.6) -----------------------------

    async def reserve(
        self,
        source_km: str,
        destination_km: str,
        key_bits: int,
        *,
        application: str | None = None,
        lifetime: float | None = None,
    ) -> Reservation:
        """Reserve ``key_bits`` of link key on every hop of the route from ``source_km`` to
        ``destination_km`` (Q.4164 clause 7.5, Figure 5): a key reservation request to each KM
        but the last, over the connection it keeps to us, naming its next KM on the route in
        the extension ``{"next_kma_id", "key_bits", "lifetime"}``. Reserved key serves no other
        relay; unless :meth:`allocate` d within ``lifetime`` seconds (the KM's default when
        ``None``), it goes back to its link.

        Raises :class:`NoRoute` when no route has the key, and :class:`KMRequestFailed` when
        a KM is not connected or refuses (what other KMs reserved is released in time)."""
        route = self.route(source_km, destination_km, key_bits)
        terms: dict[str, Any] = {ck.KEY_BITS_EXTENSION: key_bits}
        if lifetime is not None:
            terms["lifetime"] = lifetime
        key_ids: dict[str, list[str]] = {}
        for here, there in itertools.pairwise(route):
            request = ck.KeyReservationRequest(
                source_kma_id=source_km,
                destination_kma_id=destination_km,
                application_destination_id=application,
                extension=[{**terms, "next_kma_id": there}],
            )
            response = await self._ask_km(here, request, "reserve key")
            assert isinstance(response, ck.ResponseToKeyReservationRequest)
            key_ids[here] = [key_id.key_id for key_id in response.key_ids]
        return Reservation(
            source_km=source_km,
            destination_km=destination_km,
            application=application,
            route=tuple(route),
            key_ids=key_ids,
        )

    async def allocate(self, reservation: Reservation) -> None:
        """Allocate the key of ``reservation`` to the relays from its source to its destination
        KM (Q.4164 clause 7.6, Figure 6): a key allocation request with the key IDs each KM
        reserved. Raises :class:`KMRequestFailed` naming the KM that refused."""
        for km_id, key_ids in reservation.key_ids.items():
            request = ck.KeyAllocationRequest(
                source_kma_id=reservation.source_km,
                destination_kma_id=reservation.destination_km,
                application_destination_id=reservation.application,
                key_ids=[KeyId(key_id=key_id) for key_id in key_ids],
            )
            await self._ask_km(km_id, request, "allocate key")

    async def request_status(
        self,
        km_id: str,
        *,
        period: int | None = None,
        parameters: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Ask the KM ``km_id`` for its status table now (D2.3 clause 8.1 b), Table 8-1), and,
        with ``period``, to supply it every ``period`` seconds from then on; ``parameters``:
        which of its link parameters (all when ``None``). The table is applied as a report is.
        Raises :class:`KMRequestFailed` when the KM is not connected or refuses."""
        command = mgmt.StatusInformationSupplyCommand(
            sender_id=self.config.controller_id, period=period, status_table=parameters
        )
        response = await self._ask_km(km_id, command, "get the status")
        assert isinstance(response, mgmt.StatusInformationSupplyResponse)
        self._apply(km_id, response.status_table)
        return list(response.status_table)

    async def _ask_km(self, km_id: str, request: Message, doing: str) -> Message:
        connection = self._km_connections.get(km_id)
        if connection is None:
            raise KMRequestFailed(f"cannot {doing} at {km_id}: it is not connected")
        try:
            return await connection.request(request)
        except FailureResponse as exc:
            raise KMRequestFailed(f"{km_id} refused to {doing}: {exc.reason}") from None
        except QkdnError as exc:
            raise KMRequestFailed(f"cannot {doing} at {km_id}: {exc}") from None

    # --- the handler --------------------------------------------------------------------------

    async def handle(self, message: Message, connection: Connection) -> Message | None:
        """The :data:`~qkdn_sdk.transport.Handler` of the controller's Ck server.

        A failure is answered in the request's own response type
        (:func:`~qkdn_sdk.messages.failure_response`): a key relay next hop request (Q.4164
        Table 1) that gets no next hop, with a Table 2 response whose Next KMA IDs are empty
        (none is available), the source and destination KMs it knows, and the reason as the
        Extension ``{"error_message": "failure: ..."}``; a session creation request (Table 6)
        that fails, with a Table 7 response whose Response is ``"failure: <reason>"``, the ID of
        the session made for it (a new one when none was), and the destination KM (empty when
        the application is unknown). Records an unsolicited status information supply (D2.3
        Table 8-2) and returns ``None``; answers any other request it does not support with a
        failure saying so; ignores other one-way messages. Never raises for what the peer sent.
        Only the KMs of the network are answered: any other peer gets a failure (its one-way
        messages are dropped). The QKD modules' messages go to :attr:`modules`, from the modules
        of the network only. Counted, when the controller keeps metrics.
        """
        try:
            if self._requests is None:
                return await self._answer(message, connection)
            return await self._requests.count(message, self._answer(message, connection))
        except NotAuthorized as exc:
            return None if type(message).response_type() is None else _failure(message, str(exc))

    async def _answer(self, message: Message, connection: Connection) -> Message | None:
        """:meth:`handle` but the counting and the answer to a sender refused
        (:class:`~qkdn_sdk.errors.NotAuthorized`)."""
        self._authorization.check(message, connection.peer_id)
        self._check_authenticated(message, connection)
        if type(message).interface is Interface.CQ:
            return await self.modules.handle(message, connection)
        if isinstance(message, ck.KeyRelayNextHopRequest):
            try:
                return self._next_hop(message, connection)
            except (_Refused, NoRoute) as exc:
                logger.info("no next hop for %s: %s", _requester(connection), exc)
                known = {
                    "source_kma_id": message.source_kma_id or connection.peer_id,
                    "destination_kma_id": self._destination_km(message),
                }
                return _failure(message, str(exc), known)
        self._connected(connection)  # the KM's latest: where notifications reach it
        if isinstance(message, mgmt.CkAuthenticationCommand):
            return self._reports.authenticate(message, mgmt.CkAuthenticationResponse)
        if isinstance(message, ck.SessionCreationRequest):
            try:
                return await self._session_creation_request(message, connection)
            except _Refused as exc:
                logger.info(
                    "no session %s -> %s: %s",
                    message.application_source_id,
                    message.application_destination_id,
                    exc,
                )
                return _failure(message, str(exc), exc.known)
        if isinstance(message, ck.KeyRelayRequestNotification):
            assert self._nursery is not None
            self._nursery.start_soon(self._key_relay_request, message, connection)
            return None
        if isinstance(message, ck.SessionEndNotification):
            assert self._nursery is not None
            self._nursery.start_soon(_pass_session_end, message, self._km_connections)
            return None
        if isinstance(message, mgmt.StatusInformationSupplyResponse):
            self._reports.receive(message, connection, self._apply)
            return None
        if isinstance(message, mgmt.RouteInformationSupplyCommand):
            try:
                route = self.route(
                    message.source_id, message.destination_id, message.key_amount or 0
                )
            except NoRoute as exc:
                logger.info("no route information for %s: %s", _requester(connection), exc)
                return failure_response(
                    mgmt.RouteInformationSupplyResponse,
                    str(exc),
                    sender_id=self.config.controller_id,
                )
            return mgmt.RouteInformationSupplyResponse(
                sender_id=self.config.controller_id,
                route_table=route,
                response_code=mgmt.ResultCode.SUCCESS,
            )
        response_type = type(message).response_type()
        if response_type is None:
            return None
        return _failure(
            message, f"{type(message).spec_name} is not supported by this controller yet"
        )

    def _check_authenticated(self, message: Message, connection: Connection) -> None:
        """With :attr:`ControllerConfig.require_authentication`, raise
        :class:`~qkdn_sdk.errors.NotAuthorized` for a message of a sender that has not
        authenticated (D2.3 clause 8.1.1 a)) other than its authentication."""
        if not self.config.require_authentication or isinstance(
            message, (mgmt.CkAuthenticationCommand, mgmt.CqAuthenticationCommand)
        ):
            return
        peer = connection.peer_id
        if peer in self.authenticated or peer in self.modules.authenticated:
            return
        command = "0x3480" if type(message).interface is Interface.CQ else "0x1480"
        raise NotAuthorized(
            f"{self.config.controller_id} requires D2.3 authentication: send the command "
            f"message for authentication ({command}) first"
        )

    def _next_hop(
        self, request: ck.KeyRelayNextHopRequest, connection: Connection
    ) -> ck.ResponseToKeyRelayNextHopRequest:
        """Q.4164 clause 7.1: the next hop of the KM that asks (its certificate's ID), on its
        way to the destination. Source KMA ID is the source of the entire relay route (Table 1),
        which a transit KM names as well: the hop is computed from the asker, and only an
        unauthenticated asker is taken to be that source."""
        source, destination = self._ends(request, connection)
        if source not in self.config.kms:
            raise NoRoute(f"unknown source KM {quoted(source)}")
        asker = connection.peer_id or source
        key_bits = _key_bits(request.extension)
        path = self.route(asker, destination, key_bits, _avoided(request.extension))
        logger.debug("next hop from %s to %s: %s (route %s)", asker, destination, path[1], path)
        return ck.ResponseToKeyRelayNextHopRequest(
            source_kma_id=source, destination_kma_id=destination, next_kma_ids=[path[1]]
        )

    def _ends(
        self,
        request: ck.KeyRelayNextHopRequest | ck.KeyRelayRequestNotification,
        connection: Connection,
    ) -> tuple[str, str]:
        """The source and destination KMs of a relay (Q.4164 Tables 1 and 3)."""
        source = request.source_kma_id or connection.peer_id
        if source is None:
            raise _Refused(
                "no source KM: source_kma_id is absent and the peer is not authenticated"
            )
        destination = self._destination_km(request)
        if destination is None:
            application = request.application_destination_id
            raise _Refused(str(UnknownApplication(application or "")))
        return source, destination

    def _destination_km(
        self, request: ck.KeyRelayNextHopRequest | ck.KeyRelayRequestNotification
    ) -> str | None:
        """The destination KM of a relay (Q.4164 Tables 1 and 3): the one named, else the KM
        that serves the destination application; ``None`` when that application is unknown."""
        if request.destination_kma_id is not None:
            return request.destination_kma_id
        application = request.application_destination_id
        assert application is not None  # Tables 1 and 3: either one is mandatory
        return self.config.applications.get(application)

    async def _key_relay_request(
        self, notification: ck.KeyRelayRequestNotification, connection: Connection
    ) -> None:
        """Q.4164 clause 7.2 (Figure 2): answer a KM's key relay request notification with a key
        relay request of our own carrying the whole route, as Table 4 writes it (the KMs between
        the source and the destination as Transit KMA IDs, none when the destination is a
        neighbour; the destination KMA ID; a Key relay request ID of our own), and wait for the
        KM's response to it: sent once the relay has completed.

        When no route exists the request has no transit KM and an ``error_message`` extension
        that says why (Table 4 has no failure parameter). The ``key_relay_request_id`` extension
        of the notification, when it has one, is echoed in the request's extension, so the KM
        can tell its relays apart; a KM that sent none matches the requests to its
        notifications in order."""
        relay_id = _relay_id(notification.extension)
        echoed = [{ck.RELAY_ID_EXTENSION: relay_id}] if relay_id is not None else []
        requester = _requester(connection)
        request_id = str(uuid.uuid4())
        try:
            source, destination = self._ends(notification, connection)
            extension = notification.extension
            path = self.route(source, destination, _key_bits(extension), _avoided(extension))
            request = ck.KeyRelayRequest(
                source_kma_id=source,
                destination_kma_id=destination,
                transit_kma_ids=path[1:-1],
                key_relay_request_id=request_id,
                extension=echoed or None,
            )
            check_response(notification, request)
        except (_Refused, NoRoute) as exc:
            logger.info("no key relay route for %s: %s", requester, exc)
            request = ck.KeyRelayRequest(
                source_kma_id=notification.source_kma_id,
                destination_kma_id=notification.destination_kma_id,
                transit_kma_ids=[],
                key_relay_request_id=request_id,
                extension=[*echoed, {"error_message": f"failure: {exc}"}],
            )
        try:
            response = await connection.request(request, timeout=_RELAY_RESULT_TIMEOUT)
        except FailureResponse as exc:
            logger.info("key relay %s of %s failed: %s", request_id, requester, exc.reason)
        except QkdnError as exc:
            self._quiet.warning(
                f"no response to key relay request {request_id} of {requester}: {exc}"
            )
        else:
            assert isinstance(response, ck.ResponseToKeyRelayRequest)
            logger.info(
                "key relay %s of %s along %s completed",
                request_id,
                requester,
                request.transit_kma_ids,
            )

    async def _session_creation_request(
        self, request: ck.SessionCreationRequest, connection: Connection
    ) -> ck.ResponseToSessionCreationRequest:
        """Q.4164 clause 7.3 (Figure 3): make a session ID, have the destination KM create the
        session (session creation notification, clause 7.4) and answer the source KM. Raises
        :class:`_Refused` with what Table 7 can say besides the reason: the session ID once made,
        the destination KM once known."""
        destination = request.application_destination_id
        destination_km = self.config.applications.get(destination)
        if destination_km is None:
            raise _Refused(str(UnknownApplication(destination)))
        source_km = connection.peer_id
        if source_km is None:
            raise _Refused("the source KM is not authenticated", destination_km_id=destination_km)
        session_id = str(uuid.uuid4())
        known = {"session_id": session_id, "destination_km_id": destination_km}
        km = self._km_connections.get(destination_km)
        if km is None:
            raise _Refused(f"the destination KM {destination_km} is not connected", **known)
        notification = ck.SessionCreationNotification(
            application_source_id=request.application_source_id,
            application_destination_id=destination,
            session_id=session_id,
            source_km_id=source_km,
            number_of_keys=request.number_of_keys,
        )
        try:
            await km.request(notification, timeout=_SESSION_TIMEOUT)
        except FailureResponse as exc:
            raise _Refused(exc.reason, **known) from None
        except QkdnError as exc:
            raise _Refused(
                f"the destination KM {destination_km} did not answer ({exc})", **known
            ) from None
        logger.info(
            "session %s: %s (%s) -> %s (%s)",
            session_id,
            request.application_source_id,
            source_km,
            destination,
            destination_km,
        )
        return ck.ResponseToSessionCreationRequest(
            session_id=session_id, response="success", destination_km_id=destination_km
        )

    def _apply(self, sender: str, status_table: list[Any]) -> None:
        """Record each entry ``{"km_link": <neighbour>, "key_amount": <bits>}`` as the amount of
        ``sender -> neighbour``; entries that are malformed or name no KM link are ignored."""
        problems: list[str] = []
        for index, entry in enumerate(status_table):
            problem = self._network.record(sender, entry)
            if problem is not None:
                problems.append(f"status_table[{index}]: {problem}")
        if problems:
            described = problems[:_MAX_PROBLEMS_LOGGED]
            if len(problems) > _MAX_PROBLEMS_LOGGED:
                described.append(f"and {len(problems) - _MAX_PROBLEMS_LOGGED} more")
            self._quiet.warning(
                f"ignored {len(problems)} entries of {sender}'s status report: "
                + "; ".join(described)
            )


# --- helpers ----------------------------------------------------------------------------------


async def _pass_session_end(
    notification: ck.SessionEndNotification, connections: Mapping[str, Connection]
) -> None:
    """A session ended at one of its KMs (its ``km_id``, the sender: the transport checks it):
    tell the other KM, over the connection it keeps to the controller (SDK extension; Q.4164
    has no message for it). The controller keeps no sessions of its own."""
    peer_km = notification.peer_km_id
    connection = connections.get(peer_km)
    if connection is None:
        logger.info(
            "session %s %s at %s: %s is not connected, and refuses the session's next relay",
            notification.session_id,
            notification.reason,
            notification.km_id,
            quoted(peer_km),
        )
        return
    ended = ck.SessionEndedNotification(
        km_id=notification.km_id, session_id=notification.session_id, reason=notification.reason
    )
    try:
        await connection.send(ended)
    except QkdnError as exc:
        logger.info("session %s: cannot tell %s of its end: %s", ended.session_id, peer_km, exc)


def _failure(
    request: Message, reason: str, known: Mapping[str, str | None] | None = None
) -> Message:
    """The failure answering ``request``, in its own response type where that can say it:
    filled from the request and from ``known`` (what the controller found out; it wins)."""
    response_type = type(request).response_type()
    assert response_type is not None
    return failure_response(
        response_type,
        reason,
        echo={**attrs.asdict(request, recurse=False), **(known or {})},
        command_code=type(request).code,
    )


def _key_bits(extension: list[dict[str, Any]] | None) -> int:
    """The ``key_bits`` of the first Extension object that has one (0 when none does)."""
    for item in extension or ():
        if ck.KEY_BITS_EXTENSION in item:
            value = item[ck.KEY_BITS_EXTENSION]
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Refused("extension key_bits must be an integer")
            if not 0 <= value <= MAX_KEY_BITS:
                raise _Refused(f"extension key_bits must be between 0 and {MAX_KEY_BITS}")
            return value
    return 0


def _avoided(extension: list[dict[str, Any]] | None) -> frozenset[str]:
    """The KMs the first Extension object with ``avoid_kma_ids`` names (none when none does)."""
    for item in extension or ():
        if ck.AVOID_EXTENSION in item:
            value = item[ck.AVOID_EXTENSION]
            if not isinstance(value, list) or not all(isinstance(km, str) for km in value):
                raise _Refused("extension avoid_kma_ids must be a list of KM IDs")
            return frozenset(value[:_MAX_AVOIDED])
    return frozenset()


def _relay_id(extension: list[dict[str, Any]] | None) -> str | None:
    """The ``key_relay_request_id`` of the first Extension object that has a usable one."""
    for item in extension or ():
        value = item.get(ck.RELAY_ID_EXTENSION)
        if isinstance(value, str) and 0 < len(value) <= _MAX_RELAY_ID_LENGTH:
            return value
    return None


def _requester(connection: Connection) -> str:
    return connection.peer_id or "an unauthenticated peer"
