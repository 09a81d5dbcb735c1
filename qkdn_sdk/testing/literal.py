"""Literal peers: an application, a KM and a QKDN controller written from the specification
tables alone, as a vendor would write them.

Theory of operation
-------------------
A literal peer speaks one side of Ak (Q.4161) or Ck (Q.4164) through an ordinary
:class:`~qkdn_sdk.transport.Connection`, and does nothing the tables do not say:

- it sends only messages of the Recommendations (no SDK extension code) and fills only their
  table fields; it never puts anything in an ``extension``;
- it reads only table fields of what it receives;
- it fails loudly on anything else it receives: a message the procedure does not expect, an SDK
  extension message, an SDK object in an ``extension`` (:data:`SDK_EXTENSION_MEMBERS`), or a
  failure where the figure draws success, is a :class:`NonConformance` whose text quotes the
  message. (A message that misses a mandatory table field never reaches it: decoding one is
  refused by the message layer, and the request that waited for it fails.)

Every message a literal peer sends or receives is written, in order, to the :class:`Trace` the
peer is handed, under the peer's name; a non-conformance found while answering the other side
is kept there too (the other side gets a failure answer), so whoever runs the procedure (the
conformance suite, :mod:`qkdn_sdk.conformance`) sees it. The peers answer requests at once and
hold no keys: :class:`LiteralKM` answers a key relay request as completed without relaying.

Importing this module needs nothing of the test extra (no pytest).
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections import deque
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import attrs
import orjson
import trio

from qkdn_sdk.codecs.payload import message_to_dict
from qkdn_sdk.errors import FailureResponse, QkdnError, shorten
from qkdn_sdk.messages import Key, KeyId, Message, Role, ak, ck, failure_reason, received_by
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, ServerInfo, connect, serve

__all__ = [
    "SDK_EXTENSION_MEMBERS",
    "LiteralApplication",
    "LiteralController",
    "LiteralKM",
    "NonConformance",
    "Step",
    "Trace",
    "quote",
]

SDK_EXTENSION_MEMBERS = frozenset(
    {
        ck.KEY_BITS_EXTENSION,
        ck.AVOID_EXTENSION,
        ck.RELAY_ID_EXTENSION,
        "next_kma_id",  # the SDK's key reservation terms (with key_bits and lifetime)
        "lifetime",
        "error_message",  # the SDK's failure reason where a table has no Response
    }
)
"""Members of an Extension object that only the SDK gives a meaning: a literal peer refuses a
message that carries one, since a peer written from the tables could not read it."""

_QUOTE_LIMIT = 400
_M = TypeVar("_M", bound=Message)


class NonConformance(QkdnError):
    """A peer did something the tables do not allow: the text names what and quotes the message
    (``0x4104 Key relay request {...}``)."""


def quote(message: Message) -> str:
    """``message`` as its command code, spec name and JSON payload, key data left out,
    shortened: how a non-conformance quotes it."""
    payload = message_to_dict(message)
    for key in payload.get("keys", ()):
        if isinstance(key, dict) and "key" in key:
            key["key"] = "..."
    text = orjson.dumps(payload).decode()
    return shorten(f"0x{message.code:04X} {message.spec_name} {text}", _QUOTE_LIMIT)


@attrs.frozen
class Step:
    """One message of a procedure as a literal peer saw it: ``peer`` sent it, or received it."""

    peer: str
    sent: bool
    message: Message

    def describe(self) -> str:
        return f"{self.peer} {'sent' if self.sent else 'received'} {quote(self.message)}"


class Trace:
    """The messages the literal peers of one procedure sent and received, in order, and the
    non-conformances they found while answering (:attr:`violations`)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.violations: list[NonConformance] = []
        self._changed = trio.Event()

    def record(self, peer: str, message: Message, *, sent: bool) -> None:
        self.steps.append(Step(peer, sent, message))
        self._wake()

    def violation(self, error: NonConformance) -> None:
        self.violations.append(error)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Return at the next message or violation recorded."""
        await self._changed.wait()


def _check(
    peer: str,
    message: Message,
    expected: type[_M] | tuple[type[Message], ...],
    *,
    success: bool,
    members: bool,
) -> None:
    """Raise :class:`NonConformance` unless ``message`` is one of ``expected``, no SDK
    extension, (``success``) reporting no failure, and (``members``) with no SDK member in its
    Extension."""
    if type(message).is_extension:
        raise NonConformance(
            f"{peer} received {quote(message)}: an SDK extension message, which no "
            "Recommendation defines"
        )
    wanted = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(message, wanted):
        names = " or ".join(f"0x{cls.code:04X} {cls.spec_name}" for cls in wanted)
        raise NonConformance(f"{peer} expected {names}, received {quote(message)}")
    if success and failure_reason(message) is not None:  # its reason may be the SDK's
        raise NonConformance(
            f"{peer} received a failure where the figure draws success: {quote(message)}"
        )
    for item in getattr(message, "extension", None) or () if members else ():
        sdk = sorted(SDK_EXTENSION_MEMBERS & set(item)) if isinstance(item, dict) else []
        if sdk:
            raise NonConformance(
                f"{peer} received {quote(message)}: its extension carries the SDK's "
                f"{', '.join(sdk)}, which no table defines"
            )


class _LiteralPeer:
    """What every literal peer does: its one connection, its trace, the checks."""

    role: Role

    def __init__(
        self, name: str, trace: Trace | None = None, *, ignore_sdk_members: bool = False
    ) -> None:
        self.name = name
        self.refuse_sdk_members = not ignore_sdk_members
        """Whether an SDK member in a received Extension is a :class:`NonConformance` (the
        default), or is ignored, as by a peer that reads the table fields and knows nothing of
        what an Extension may carry."""
        self.trace = trace if trace is not None else Trace()
        """Where the peer writes what it sends and receives; a runner may hand it a new one per
        procedure."""
        self._connection: Connection | None = None
        self.identity: str | None = None
        """Our ID as the other side knows it (our certificate's), once connected."""

    @asynccontextmanager
    async def connected(
        self, url: str, *, tls: TLSConfig | None = None, identity: str | None = None
    ) -> AsyncIterator[Connection]:
        """Connect to ``url`` (``identity``: our ID where no certificate gives it); the
        connection's requests from the other side are answered by :meth:`answer`."""
        async with connect(
            url, tls=tls, identity=identity, handler=self._handle, accepts=received_by(self.role)
        ) as connection:
            self._connection = connection
            self.identity = connection.local_id or identity
            try:
                yield connection
            finally:
                self._connection = None

    @property
    def peer_id(self) -> str | None:
        """The other side's verified ID, while connected over TLS."""
        return self._connection.peer_id if self._connection is not None else None

    def own_id(self) -> str:
        if self.identity is None:
            raise NonConformance(f"{self.name} does not know its own ID: give it a certificate")
        return self.identity

    async def _handle(self, message: Message, connection: Connection) -> Message | None:
        self.trace.record(self.name, message, sent=False)
        try:
            answer = await self.answer(message, connection)
        except NonConformance as exc:
            self.trace.violation(exc)
            raise
        if answer is not None:
            self.trace.record(self.name, answer, sent=True)
        return answer

    async def answer(self, message: Message, connection: Connection) -> Message | None:
        """The answer to a message the other side sent; raises :class:`NonConformance` for one
        the peer does not expect."""
        raise NonConformance(f"{self.name} expected nothing, received {quote(message)}")

    async def ask(
        self,
        request: Message,
        expected: type[_M],
        *,
        connection: Connection | None = None,
        success: bool = True,
        timeout: float | None = 30.0,
    ) -> _M:
        """Send ``request``, and return the answer once checked (:func:`_check`)."""
        connection = connection or self._connection
        if connection is None:
            raise NonConformance(f"{self.name} is not connected")
        self.trace.record(self.name, request, sent=True)
        try:
            answer = await connection.request(request, timeout=timeout)
        except FailureResponse as exc:
            if not isinstance(exc.response, Message):
                raise NonConformance(
                    f"{self.name}: {quote(request)} failed: {exc.reason}"
                ) from None
            answer = exc.response
        except QkdnError as exc:
            raise NonConformance(f"{self.name} got no answer to {quote(request)}: {exc}") from None
        self.trace.record(self.name, answer, sent=False)
        _check(self.name, answer, expected, success=success, members=self.refuse_sdk_members)
        assert isinstance(answer, expected)
        return answer

    async def send(self, message: Message, *, connection: Connection | None = None) -> None:
        connection = connection or self._connection
        if connection is None:
            raise NonConformance(f"{self.name} is not connected")
        self.trace.record(self.name, message, sent=True)
        try:
            await connection.send(message)
        except QkdnError as exc:
            raise NonConformance(f"{self.name} could not send {quote(message)}: {exc}") from None


class LiteralApplication(_LiteralPeer):
    """A cryptographic application written from Q.4161 alone: key requests (clause 7.1), and
    sessions with the keys its KM pushes (clause 7.2). It answers a session creation
    notification (Table 6) and every proactive key supply (Table 10) with success.

    Table 6 reads two ways (the ``ak.SessionCreationNotification`` docstring): the literal
    application takes the ID that is not its own as the peer's, whichever field holds it."""

    role = Role.APPLICATION

    def __init__(
        self,
        name: str = "application",
        trace: Trace | None = None,
        *,
        ignore_sdk_members: bool = False,
    ) -> None:
        super().__init__(name, trace, ignore_sdk_members=ignore_sdk_members)
        self.notified: dict[str, ak.SessionCreationNotification] = {}
        """Session creation notifications received, by session ID."""
        self.pushed: list[tuple[str, Key]] = []
        """(session ID, key) of every key pushed to it, in order."""

    async def answer(self, message: Message, connection: Connection) -> Message | None:
        _check(
            self.name,
            message,
            (ak.SessionCreationNotification, ak.ProactiveKeySupply),
            success=False,
            members=self.refuse_sdk_members,
        )
        if isinstance(message, ak.SessionCreationNotification):
            ids = {message.application_source_id, message.application_destination_id}
            if self.identity is not None and self.identity not in ids:
                raise NonConformance(
                    f"{self.name} ({self.identity}) is named nowhere in {quote(message)}"
                )
            self.notified[message.session_id] = message
            return ak.ResponseToSessionCreationNotification(
                session_id=message.session_id, response="success"
            )
        assert isinstance(message, ak.ProactiveKeySupply)
        self.pushed.extend((message.session_id, key) for key in message.keys)
        # Table 11 has one Key ID: the first key's (a KM that pushes several names them all)
        return ak.ResponseToProactiveKeySupply(
            session_id=message.session_id, key_id=message.keys[0].key_id, response="success"
        )

    async def key_request(
        self, destination: str, number: int | None = None, size: int | None = None
    ) -> list[Key]:
        """Q.4161 clause 7.1.1: keys shared with ``destination`` (Tables 1, 3)."""
        request = ak.KeyRequest(
            application_source_id=self.identity,
            application_destination_id=destination,
            number_of_keys=number,
            size_of_key=size,
        )
        response = await self.ask(request, ak.ResponseToKeyRequest)
        return response.keys

    async def key_request_with_id(self, source: str, key_ids: Sequence[str]) -> list[Key]:
        """Q.4161 clause 7.1.2: the keys ``source`` got, by their IDs (Tables 2, 3)."""
        request = ak.KeyRequestWithId(
            application_source_id=source,
            application_destination_id=self.identity,
            key_ids=[KeyId(key_id=key_id) for key_id in key_ids],
        )
        response = await self.ask(request, ak.ResponseToKeyRequest)
        return response.keys

    async def create_session(self, destination: str, number: int | None = None) -> str:
        """Q.4161 clause 7.2.1: a session with ``destination`` (Tables 4, 5); its ID."""
        request = ak.SessionCreationRequest(
            application_source_id=self.own_id(),
            application_destination_id=destination,
            number_of_keys=number,
        )
        response = await self.ask(request, ak.ResponseToSessionCreationRequest)
        return response.session_id

    async def key_request_with_session_id(
        self, session_id: str, number: int | None = None, size: int | None = None
    ) -> list[Key]:
        """Q.4161 clause 7.2.3: keys of a session (Tables 8, 9)."""
        request = ak.KeyRequestWithSessionId(
            session_id=session_id, number_of_keys=number, size_of_key=size
        )
        response = await self.ask(request, ak.ResponseToKeyRequestWithSessionId)
        if response.session_id != session_id:
            raise NonConformance(
                f"{self.name} asked for session {session_id}, got {quote(response)}"
            )
        return response.keys

    async def wait_pushed(self, count: int) -> list[tuple[str, Key]]:
        """Return the pushed keys once there are ``count`` (or a violation was found)."""
        while len(self.pushed) < count and not self.trace.violations:
            await self.trace.changed()
        return self.pushed[:count]


class LiteralKM(_LiteralPeer):
    """A KM towards its QKDN controller, written from Q.4164 alone: it asks for next hops
    (clause 7.1) and whole routes (7.2), creates sessions (7.3), and answers the controller's
    key relay requests (Table 4, with Table 5 at once: it relays nothing) and session creation
    notifications (Table 8, with Table 9)."""

    role = Role.KM

    def __init__(
        self, name: str = "KM", trace: Trace | None = None, *, ignore_sdk_members: bool = False
    ) -> None:
        super().__init__(name, trace, ignore_sdk_members=ignore_sdk_members)
        self._routes_in, self._routes_out = trio.open_memory_channel[ck.KeyRelayRequest](16)
        self.notified: dict[str, ck.SessionCreationNotification] = {}
        """Session creation notifications received, by session ID."""

    async def answer(self, message: Message, connection: Connection) -> Message | None:
        _check(
            self.name,
            message,
            (ck.KeyRelayRequest, ck.SessionCreationNotification),
            success=False,
            members=self.refuse_sdk_members,
        )
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


class LiteralController(_LiteralPeer):
    """A QKDN controller written from Q.4164 alone.

    Served (:meth:`serve`) for the KMs of a network (``kms``, ``links``: pairs of KM IDs,
    ``applications``: application ID -> its KM), it answers next hop requests (Tables 1, 2:
    the hop from the KM that asks, its certificate's ID), key relay request notifications with
    a key relay request of its own over the same connection (Table 4 as the SDK reads it: the
    KMs between source and destination) and awaits its response (Table 5), and session creation
    requests by notifying the destination KM (Tables 6-9). Routes have the fewest hops: it
    knows nothing of key amounts, which only D2.3 reports. Connected to a KM's Ck URL
    (:meth:`connected`), it notifies sessions and reserves and allocates key."""

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
        self._nursery: trio.Nursery | None = None
        self._request_ids = itertools.count(1)
        self.relays: list[ck.ResponseToKeyRelayRequest] = []
        """The responses to its key relay requests (Table 5), in order."""

    # --- served to KMs -------------------------------------------------------------------------

    async def serve(
        self,
        url: str,
        *,
        tls: TLSConfig | None = None,
        identity: str | None = None,
        task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``url`` to the KMs until cancelled. It accepts the Q.4164 messages a controller
        receives: anything else (D2.3 status supplies...) gets the transport's error indication
        and never reaches it, as with a controller that does not know those codes."""
        accepts = {cls for cls in received_by(Role.CONTROLLER) if not cls.is_extension}
        self.identity = identity
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            info: ServerInfo = await nursery.start(
                functools.partial(
                    serve,
                    url,
                    self._handle,
                    tls=tls,
                    identity=identity,
                    accepts=accepts,
                    on_connect=self._km_connected,
                )
            )
            task_status.started(info)

    def _km_connected(self, connection: Connection) -> None:
        """Q.4164 says nothing of who connects: a KM's connection is where it is reached."""
        if connection.peer_id is not None and connection.peer_id in self._topology.kms:
            self._kms[connection.peer_id] = connection

    async def answer(self, message: Message, connection: Connection) -> Message | None:
        _check(
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
