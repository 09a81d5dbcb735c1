"""Proactive key supply (Q.4161 clause 7.2, Q.4164 clauses 7.3, 7.4): sessions between two
applications, keys asked for by session ID at the source KM and pushed by the destination KM.

An application connected to its KM receives session creation notifications and pushed keys:
over TLS the handshake is the mutual authentication Q.4161 clause 8 asks for, so an application
written from Q.4161 alone needs no more than to connect. They go to the last connection on which
it sent the D2.3 authentication (clause 7.2.1 a)), else to its oldest open connection (a
short-lived second connection, such as a command line tool's, takes none of them). A KM
configured with ``require_authentication`` counts only authenticated connections and serves no
other Ak request before it. The source KM opens a session through the controller, which
makes its ID and has the destination KM notify its application (or opens it itself when both
applications are its own); keys asked for in the session are made at the source, relayed like
any other, and held at the destination in the application's ``session:`` pool until it
acknowledges each one pushed (:meth:`ProactiveSupply.keys_stored` wakes its pusher).
"""

from __future__ import annotations

import logging
import uuid
import weakref

import trio

from qkdn_sdk.errors import FailureResponse, NotAuthorized, QkdnError, quoted
from qkdn_sdk.messages import Key, ak, ck, mgmt
from qkdn_sdk.roles.keystore import KeyStore
from qkdn_sdk.roles.km.config import (
    AUTHENTICATION,
    KeyManagerError,
    KMConfig,
    Spawn,
    passed_on,
)
from qkdn_sdk.roles.km.keys import Batch, fresh_keys
from qkdn_sdk.roles.km.peers import Peers
from qkdn_sdk.roles.km.quotas import Quotas
from qkdn_sdk.roles.km.relays import Relay
from qkdn_sdk.roles.sessions import SessionError, Sessions, session_application, session_pool
from qkdn_sdk.transport import Connection

__all__ = ["ProactiveSupply"]

logger = logging.getLogger("qkdn_sdk.roles.km")

_PUSH_BATCH = 16
"""Keys of a session pool read at a time to push them."""


class ProactiveSupply:
    """The sessions of one KM's applications and the pushes of their keys."""

    def __init__(
        self,
        config: KMConfig,
        store: KeyStore,
        peers: Peers,
        relay: Relay,
        sessions: Sessions,
        quotas: Quotas,
        spawn: Spawn,
    ) -> None:
        self._config = config
        self._km_id = config.km_id
        self._store = store
        self._peers = peers
        self._relay = relay
        self._sessions = sessions
        self._quotas = quotas
        self._spawn = spawn
        self._connections: dict[str, list[Connection]] = {}
        """The connections of each application in the order they came, one authenticated again
        moved last (:meth:`_connection_of` chooses)."""
        self._authenticated: weakref.WeakSet[Connection] = weakref.WeakSet()
        """Connections on which an application authenticated (D2.3 clause 7.2.1 a))."""
        self._push_wanted: dict[str, trio.Event] = {}
        self.pushed: dict[str, int] = {}
        """Session keys each application acknowledged, each taken from the store since."""
        self._pushed_more = trio.Event()
        self._connected_more = trio.Event()

    async def wait_connected(self, application: str) -> None:
        """Return once ``application`` has an open connection that its sessions and pushed keys
        reach."""
        while self._connection_of(application) is None:
            await self._connected_more.wait()

    async def wait_pushed(self, application: str, count: int) -> None:
        """Return once ``application`` acknowledged ``count`` session keys pushed to it, and
        each was taken from the store (Q.4161 clause 7.2.4)."""
        while self.pushed.get(application, 0) < count:
            await self._pushed_more.wait()

    def connected(self, connection: Connection) -> None:
        """A :data:`~qkdn_sdk.transport.ConnectHook` of the Ak port: an application of this KM
        that connected with its certificate is connected to the KM (Q.4161 clause 8): its
        sessions and pushed keys can come on this connection. Unless the KM requires D2.3
        authentication: then only :meth:`authenticate` does that."""
        application = connection.peer_id
        if application in self._config.applications and not self._config.require_authentication:
            self._add_connection(application, connection)

    def check_authenticated(self, connection: Connection) -> None:
        """Raise :class:`KeyManagerError` unless the KM requires no D2.3 authentication or the
        application authenticated on ``connection``."""
        if self._config.require_authentication and connection not in self._authenticated:
            raise KeyManagerError(
                f"{self._km_id} requires D2.3 authentication: send the command message for "
                "authentication (0x2180) on this connection first"
            )

    def keys_stored(self, pool: str) -> None:
        """Keys were stored in ``pool``: when it is a session pool, push them."""
        application = session_application(pool)
        if application is not None:
            self._wake_pusher(application)

    async def authenticate(
        self, command: mgmt.AuthenticationCommand, connection: Connection
    ) -> mgmt.AuthenticationResponse:
        """D2.3 clause 7.2.1 a): an application served here authenticates; its ID is the one
        its certificate holds (the transport refuses another ``sender_id``). The KM then
        authenticates to it in turn (mutual authentication) before it answers. The connection
        then receives the application's session creation notifications and proactive key
        supplies."""
        application = self._config.served_application(command.sender_id, connection.peer_id)
        ours = mgmt.KMAuthenticationCommand(
            sender_id=self._km_id, authentication_info=AUTHENTICATION
        )
        try:
            await connection.request(ours, timeout=self._config.relay_timeout)
        except QkdnError as exc:
            raise KeyManagerError(
                f"application {quoted(application)} did not accept {self._km_id}'s "
                f"authentication: {exc}"
            ) from None
        self._authenticated.add(connection)
        self._add_connection(application, connection)
        logger.info("%s: application %s authenticated", self._km_id, application)
        return mgmt.AuthenticationResponse(
            sender_id=self._km_id, response_code=mgmt.ResultCode.SUCCESS
        )

    async def session_creation_request(
        self, request: ak.SessionCreationRequest, connection: Connection
    ) -> ak.ResponseToSessionCreationRequest:
        """Q.4161 clause 7.2.1 (Figure 3), with Q.4164 clause 7.3: the controller makes the
        session ID and has the destination KM notify its application; an application of this
        KM is notified here."""
        session_id = str(uuid.uuid4())  # this attempt's; the controller's replaces it
        try:
            source = self._config.served_application(
                request.application_source_id, connection.peer_id
            )
            destination = request.application_destination_id
            if destination == source:
                raise KeyManagerError("the destination application is the source application")
            max_keys = request.number_of_keys or self._config.default_session_keys
            self._sessions.check_room(source)  # before anyone is told of the session
            if destination in self._config.applications:
                await self._notify_session(session_id, destination, source, max_keys)
                destination_km = self._km_id
            else:
                session_id, destination_km = await self._session_from_controller(
                    source, destination, max_keys
                )
            self._sessions.open(
                session_id,
                source=source,
                destination=destination,
                source_km=self._km_id,
                destination_km=destination_km,
                max_keys=max_keys,
            )
        except (KeyManagerError, NotAuthorized, SessionError) as exc:  # Table 5: why, with an ID
            logger.info("%s: no session: %s", self._km_id, exc)
            return ak.ResponseToSessionCreationRequest(
                session_id=session_id,
                response=f"failure: {passed_on(str(exc))}",
                source_km_id=self._km_id,
            )
        logger.info("%s: session %s of %s with %s", self._km_id, session_id, source, destination)
        return ak.ResponseToSessionCreationRequest(
            session_id=session_id, response="success", source_km_id=self._km_id
        )

    async def _session_from_controller(
        self, source: str, destination: str, max_keys: int
    ) -> tuple[str, str]:
        """``(session ID, destination KM)`` from the controller (Q.4164 clause 7.3). Raises
        :class:`KeyManagerError` with the controller's reason when it answers a failure: Table 7
        with its Response ``"failure: ..."`` (whose session ID and Destination KM ID, empty when
        the destination application is unknown, are then not used), or an error indication, as
        other controllers may answer; and when the controller cannot be reached."""
        request = ck.SessionCreationRequest(
            application_source_id=source,
            application_destination_id=destination,
            number_of_keys=max_keys,
        )
        # the destination KM asks its application before the controller answers
        response = await self._peers.ask_controller(request, timeout=2 * self._config.relay_timeout)
        assert isinstance(response, ck.ResponseToSessionCreationRequest)
        return response.session_id, response.destination_km_id

    async def _notify_session(
        self, session_id: str, destination: str, source: str, max_keys: int
    ) -> None:
        """Q.4161 clause 7.2.2 (Figure 4): tell ``destination``, an application of ours, that
        ``source`` opened a session with it; raises :class:`KeyManagerError` unless it
        accepts."""
        connection = self._connection_of(destination)
        if connection is None:
            how = "authenticated" if self._config.require_authentication else "connected"
            raise KeyManagerError(
                f"application {quoted(destination)} is not {how} to {self._km_id}"
            )
        notification = ak.SessionCreationNotification(
            application_source_id=destination,  # Table 6: the application that receives it
            application_destination_id=source,
            session_id=session_id,
            number_of_keys=max_keys,
        )
        try:
            await connection.request(notification, timeout=self._config.relay_timeout)
        except FailureResponse as exc:
            raise KeyManagerError(
                f"application {quoted(destination)} refused the session: {passed_on(exc.reason)}"
            ) from None
        except QkdnError as exc:
            raise KeyManagerError(
                f"application {quoted(destination)} did not answer the session creation "
                f"notification ({exc})"
            ) from None

    async def on_session_creation_notification(
        self, notification: ck.SessionCreationNotification, connection: Connection
    ) -> ck.ResponseToSessionCreationNotification:
        """Q.4164 clause 7.4: the controller opens a session with one of our applications."""
        destination = notification.application_destination_id
        if destination not in self._config.applications:
            raise KeyManagerError(
                f"application {quoted(destination)} is not served by {self._km_id}"
            )
        max_keys = notification.number_of_keys or self._config.default_session_keys
        try:  # before the application is told of the session
            self._sessions.check_room(notification.application_source_id, notification.session_id)
        except SessionError as exc:
            raise KeyManagerError(str(exc)) from None
        await self._notify_session(
            notification.session_id, destination, notification.application_source_id, max_keys
        )
        try:
            self._sessions.open(
                notification.session_id,
                source=notification.application_source_id,
                destination=destination,
                source_km=notification.source_km_id,
                destination_km=self._km_id,
                max_keys=max_keys,
            )
        except SessionError as exc:
            raise KeyManagerError(str(exc)) from None
        return ck.ResponseToSessionCreationNotification(
            session_id=notification.session_id, response="success"
        )

    async def end_session(self, session_id: str, application: str) -> int:
        """D2.3 Table 7-6 with a session ID alone: ``application``, one of the session's two,
        ends it here; what is still held for it in the session is deleted (the number is
        returned). A session with an application of another KM ends there too: the controller
        passes its end on (:class:`~qkdn_sdk.messages.ck.SessionEndNotification`)."""
        why = f"ended by {application}"
        try:
            session = self._sessions.end(session_id, application, why)
        except SessionError as exc:
            raise KeyManagerError(str(exc)) from None
        deleted = 0
        if session.destination == application:
            deleted = await self._store.discard(session_pool(application, session_id))
        other = session.destination_km if session.source_km == self._km_id else session.source_km
        if other != self._km_id:
            self._spawn(self._tell_session_end, other, session_id, why)
        return deleted

    async def _tell_session_end(self, other_km: str, session_id: str, why: str) -> None:
        notification = ck.SessionEndNotification(
            km_id=self._km_id, peer_km_id=other_km, session_id=session_id, reason=why
        )
        try:
            await self._peers.tell_controller(notification)
        except QkdnError as exc:  # the other KM refuses its next relay in the session then
            logger.warning("%s: %s could not reach %s: %s", self._km_id, why, other_km, exc)

    async def on_session_ended(
        self, notification: ck.SessionEndedNotification, connection: Connection
    ) -> None:
        """The controller passes on the end of a session at its other KM: it ends here too,
        and what is still held in it for the destination application is deleted. A notice
        about a session unknown here, or from a KM that is not its other one, is ignored."""
        try:
            session = self._sessions.get(notification.session_id)
        except SessionError as exc:
            logger.info("%s: session end from %s ignored: %s", self._km_id, notification.km_id, exc)
            return
        other = session.destination_km if session.source_km == self._km_id else session.source_km
        if notification.km_id != other:
            logger.warning(
                "%s: %s says session %s ended, and its other KM is %s: ignored",
                self._km_id,
                notification.km_id,
                session.session_id,
                other,
            )
            return
        self._sessions.end(session.session_id, session.source, notification.reason)
        if session.destination_km == self._km_id:
            await self._store.discard(session_pool(session.destination, session.session_id))
        logger.info(
            "%s: session %s %s at %s",
            self._km_id,
            session.session_id,
            notification.reason,
            notification.km_id,
        )

    async def key_request_with_session_id(
        self, request: ak.KeyRequestWithSessionId, connection: Connection
    ) -> ak.ResponseToKeyRequestWithSessionId:
        """Q.4161 clause 7.2.3 (Figure 5): keys of a session for its source application, once its
        quotas admit them (keys per second, its share of the first hop's link key; the keys a
        destination KM holds for a session are not counted as held); the destination KM pushes
        the same keys to the destination application (clause 7.2.4)."""
        source = self._config.served_application(None, connection.peer_id)  # Table 8 names none
        number = request.number_of_keys or self._config.default_number_of_keys
        size = request.size_of_key or self._config.default_size_of_key
        self._config.check_amount(number, size)
        try:  # a session that cannot serve is refused before its quotas count anything
            session = self._sessions.get(request.session_id)
        except SessionError as exc:
            raise KeyManagerError(str(exc)) from None
        hops = await self._quotas.first_hops([session.destination], number, size)
        with self._quotas.admitted(source, number, local=(), hops=hops):
            try:
                session = self._sessions.supply(request.session_id, source, number)
            except SessionError as exc:
                raise KeyManagerError(str(exc)) from None
            batch = Batch(
                source, session.destination, *fresh_keys(number, size), size, session.session_id
            )
            try:
                if session.destination_km == self._km_id:
                    pool = session_pool(session.destination, session.session_id)
                    await self._store.put(batch.stored(pool))
                    self._wake_pusher(session.destination)
                else:
                    await self._relay.relay(batch)
            except BaseException:
                self._sessions.refund(session, number)
                raise
        return ak.ResponseToKeyRequestWithSessionId(
            session_id=session.session_id, keys=batch.supplied(), response="success"
        )

    def _add_connection(self, application: str, connection: Connection) -> None:
        """Add ``connection`` (again) as the latest of ``application``, and push its keys."""
        connections = self._connections.setdefault(application, [])
        connections[:] = [known for known in connections if known is not connection]
        connections.append(connection)
        self._connection_of(application)  # forget those closed meanwhile
        self._connected_more.set()
        self._connected_more = trio.Event()
        if application not in self._push_wanted:  # its first connection: its pusher starts
            self._push_wanted[application] = trio.Event()
            self._spawn(self._push_session_keys, application)
        self._wake_pusher(application)

    def _connection_of(self, application: str) -> Connection | None:
        """Where the sessions and keys of ``application`` go: the last open connection on which
        it authenticated, else its oldest open connection (``None`` when none is open)."""
        connections = self._connections.get(application)
        if not connections:
            return None
        connections[:] = [connection for connection in connections if not connection.closed]
        authenticated = [known for known in connections if known in self._authenticated]
        if authenticated:
            return authenticated[-1]
        return connections[0] if connections else None

    def _wake_pusher(self, application: str) -> None:
        wanted = self._push_wanted.get(application)
        if wanted is not None:
            wanted.set()

    async def _push_session_keys(self, application: str) -> None:
        """Q.4161 clause 7.2.4 (Figure 6): push every key held for ``application`` in its
        sessions to its connection (:meth:`_connection_of`), whenever keys come or it connects
        again; the one pusher of the application, for as long as the KM runs."""
        prefix = session_pool(application, "")
        while True:
            wanted = self._push_wanted[application] = trio.Event()
            connection = self._connection_of(application)
            if connection is None or not await self._push_to(application, connection, prefix):
                await wanted.wait()  # new keys, or a new connection of the application

    async def _push_to(self, application: str, connection: Connection, prefix: str) -> bool:
        """Push the keys held for ``application`` over ``connection``, one proactive key supply
        per key, taking each key from the store only once the application acknowledged it: keys
        not acknowledged are pushed again, acknowledged ones never. True when pushing should go
        on at once: more keys came, or the connection failed and another may be open."""
        acknowledged = 0
        for pool in sorted(self._store.counts(prefix)):
            session_id = pool.rpartition(":")[2]
            for key in await self._store.peek(pool, _PUSH_BATCH):
                supply = ak.ProactiveKeySupply(
                    session_id=session_id, keys=[Key(key=key.key, key_id=key.key_id)]
                )
                try:
                    response = await connection.request(supply, timeout=self._config.relay_timeout)
                except FailureResponse as exc:  # kept, and pushed again when woken
                    logger.warning(
                        "%s: %s refused a key of session %s: %s",
                        self._km_id,
                        application,
                        session_id,
                        exc.reason,
                    )
                    return False
                except QkdnError:  # gone: its other or next connection gets the keys
                    connections = self._connections.get(application, [])
                    connections[:] = [known for known in connections if known is not connection]
                    return True
                assert isinstance(response, ak.ResponseToProactiveKeySupply)
                if response.key_id != key.key_id:
                    logger.warning(
                        "%s: %s acknowledged key %s for key %s",
                        self._km_id,
                        application,
                        quoted(response.key_id),
                        key.key_id,
                    )
                    return False
                taken = len(await self._store.take_present(pool, [key.key_id]))
                acknowledged += taken
                self.pushed[application] = self.pushed.get(application, 0) + taken
                self._pushed_more.set()
                self._pushed_more = trio.Event()
        return bool(acknowledged and self._store.counts(prefix))
