"""The application client: what a cryptographic application imports to get keys from its KM.

::

    async with KeyManagerClient.connect("tcp+tls://km-a:5000", tls=tls) as km:
        keys = await km.get_keys("bob", number=2, size=256)          # source side
        ...                                                           # send [k.key_id ...] to bob
    async with KeyManagerClient.connect("tcp+tls://km-c:5000", tls=bob_tls) as km:
        same = await km.get_keys_with_ids("alice", key_ids)           # destination side

Key supply upon request, Q.4161 clause 7.1: :meth:`KeyManagerClient.get_keys` sends a
:class:`~qkdn_sdk.messages.ak.KeyRequest` (Table 1), :meth:`~KeyManagerClient.get_keys_with_ids`
a :class:`~qkdn_sdk.messages.ak.KeyRequestWithId` (Table 2); both return the keys of the
:class:`~qkdn_sdk.messages.ak.ResponseToKeyRequest` (Table 3).

Proactive key supply, Q.4161 clause 7.2::

    async with KeyManagerClient.connect(km_c_url, tls=bob_tls) as bob:
        # sessions and keys come on this connection (bob's oldest open one, or the last one
        # bob.authenticate()d, which a KM with require_authentication needs)
        async for key in bob.proactive_keys:         # key.session_id, key.key_id, key.key
            ...
    async with KeyManagerClient.connect(km_a_url, tls=alice_tls) as alice:
        session = await alice.create_session("bob")  # Tables 4, 5
        keys = await session.get_keys(4)             # Tables 8, 9: bob's KM pushes the same keys

The destination application accepts every session opened with it (Tables 6, 7) and
acknowledges every key pushed to it (Tables 10, 11); keys it did not acknowledge are pushed
again to its connection, this one or its next (so a key whose acknowledgement was lost with the
connection comes again: an application drops a key ID it already holds). Either application
ends a session with :meth:`KeyManagerClient.end_session`, and deletes keys held for it with
:meth:`KeyManagerClient.delete_keys` (FG QIT4N D2.3 Table 7-6).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from qkdn_sdk.errors import FailureResponse, QkdnError
from qkdn_sdk.messages import Key, KeyId, Message, Role, ak, mgmt, received_by
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import DEFAULT_TIMEOUT, Connection, connect

__all__ = ["KeyManagerClient", "KeysRefused", "Session", "SuppliedKey"]

_PUSHED_KEYS = 1024
"""Pushed keys queued for :attr:`KeyManagerClient.proactive_keys`; beyond, the KM waits."""


class KeysRefused(QkdnError):
    """The KM answered with a failure; ``reason`` is its text (e.g. ``"failure: not enough key
    on link km-b-km-c: 0 bits, 768 needed"``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class SuppliedKey:
    """One key supplied to the application: its ID (to tell the peer) and its bytes, and the
    session it belongs to (proactive key supply)."""

    key_id: str
    key: bytes = attrs.field(repr=False)
    session_id: str | None = None

    @property
    def size(self) -> int:
        """Bits."""
        return 8 * len(self.key)


class KeyManagerClient:
    """A connection from one application to its KM (interface Ak)."""

    def __init__(self, *, identity: str | None, timeout: float) -> None:
        self._connection: Connection | None = None
        self._identity = identity
        self._timeout = timeout
        self._keys_in, self._keys_out = trio.open_memory_channel[SuppliedKey](_PUSHED_KEYS)
        self.km_id: str | None = None
        """Our KM's ID, once it authenticated to us (:meth:`authenticate`)."""
        self.sessions: dict[str, str] = {}
        """The sessions opened with us (destination side): session ID -> the peer that opened
        it."""

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        tls: TLSConfig | None = None,
        identity: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AsyncIterator[KeyManagerClient]:
        """Connect to the KM at ``url``. Over TLS our application ID is the one in our
        certificate; ``identity`` is it where no certificate says it (``memory://``, ``tcp://``).
        Raises :class:`~qkdn_sdk.errors.TransportError` when the KM cannot be reached."""
        client = cls(identity=identity, timeout=timeout)
        async with connect(
            url,
            tls=tls,
            identity=identity,
            handler=client._handle,
            accepts=received_by(Role.APPLICATION),
        ) as connection:
            client._connection = connection
            client._identity = connection.local_id or identity
            yield client

    @property
    def _km(self) -> Connection:
        assert self._connection is not None
        return self._connection

    async def get_keys(
        self, peer: str, number: int | None = None, size: int | None = None
    ) -> list[SuppliedKey]:
        """New keys shared with the application ``peer`` (``number`` keys of ``size`` bits; the
        KM's defaults when left out). Give ``peer`` their IDs; it gets the same keys from its
        own KM with :meth:`get_keys_with_ids`. Raises :class:`KeysRefused` with the KM's
        reason."""
        request = ak.KeyRequest(
            application_source_id=self._identity,
            application_destination_id=peer,
            number_of_keys=number,
            size_of_key=size,
        )
        return await self._keys(request)

    async def get_keys_with_ids(self, peer: str, key_ids: Sequence[str]) -> list[SuppliedKey]:
        """The keys ``key_ids`` that the application ``peer`` got for us, each exactly once.
        Raises :class:`KeysRefused` with the KM's reason."""
        request = ak.KeyRequestWithId(
            application_source_id=peer,
            application_destination_id=self._identity,
            key_ids=[KeyId(key_id=key_id) for key_id in key_ids],
        )
        return await self._keys(request)

    async def _keys(self, request: ak.KeyRequest | ak.KeyRequestWithId) -> list[SuppliedKey]:
        try:
            response = await self._km.request(request, timeout=self._timeout)
        except FailureResponse as exc:
            raise KeysRefused(exc.reason) from None
        assert isinstance(response, ak.ResponseToKeyRequest)
        return [_supplied(key) for key in response.keys]

    # --- proactive key supply (Q.4161 clause 7.2) ------------------------------------------------

    async def authenticate(self, authentication_info: str = "mtls") -> None:
        """Authenticate to the KM (FG QIT4N D2.3 Table 7-2; over TLS our ID is our
        certificate's), and have it authenticate to us: it must be the KM the connection
        reached (:attr:`km_id`). From then on, sessions opened with us and their keys come on
        this connection (over TLS, connecting is enough, to the oldest connection we have
        open, unless the KM requires this authentication). Raises :class:`KeysRefused` when
        either side refuses."""
        command = mgmt.AuthenticationCommand(
            sender_id=self._require_identity(), authentication_info=authentication_info
        )
        await self._ask(command)

    async def create_session(self, peer: str, number: int | None = None) -> Session:
        """Open a proactive key supply session with the application ``peer`` for at most
        ``number`` keys (the KM's default when left out); ``peer``'s KM pushes it the keys we
        get in it. Raises :class:`KeysRefused` with the KM's reason."""
        request = ak.SessionCreationRequest(
            application_source_id=self._require_identity(),
            application_destination_id=peer,
            number_of_keys=number,
        )
        response = await self._ask(request)
        assert isinstance(response, ak.ResponseToSessionCreationRequest)
        return Session(self, response.session_id, peer)

    @property
    def proactive_keys(self) -> trio.MemoryReceiveChannel[SuppliedKey]:
        """The keys our KM pushes to us, in the order they come (after :meth:`authenticate`):
        ``await proactive_keys.receive()``, or ``async for key in proactive_keys``. Each was
        acknowledged to the KM once it was queued here."""
        return self._keys_out

    async def end_session(self, session_id: str, peer: str) -> None:
        """End the session ``session_id`` with ``peer`` at our KM; keys it still holds for us
        in it are deleted. Raises :class:`KeysRefused` when it is not one of ours."""
        await self._ask(
            mgmt.KeyDeletionCommand(
                sender_id=self._require_identity(),
                source_id=self._require_identity(),
                target_id=peer,
                session_id=session_id,
            )
        )

    async def delete_keys(self, peer: str, key_ids: Sequence[str]) -> None:
        """Have our KM delete the keys ``key_ids`` that ``peer`` got for us and that we did not
        fetch (FG QIT4N D2.3 Table 7-6): no one can fetch them afterwards."""
        await self._ask(
            mgmt.KeyDeletionCommand(
                sender_id=self._require_identity(),
                source_id=peer,
                target_id=self._require_identity(),
                key_ids=[KeyId(key_id=key_id) for key_id in key_ids],
            )
        )

    async def _ask(self, request: Message) -> Message:
        try:
            return await self._km.request(request, timeout=self._timeout)
        except FailureResponse as exc:
            raise KeysRefused(exc.reason) from None

    def _require_identity(self) -> str:
        if self._identity is None:
            raise QkdnError("this application has no ID: connect with tls= or identity=")
        return self._identity

    async def _handle(self, message: Message, connection: Connection) -> Message | None:
        """What the KM sends us: session creation notifications (accepted when they name us)
        and proactive key supplies (queued for :attr:`proactive_keys`)."""
        if isinstance(message, mgmt.KMAuthenticationCommand):  # the KM proves itself too
            if connection.peer_id is None or message.sender_id != connection.peer_id:
                raise QkdnError(
                    f"{message.sender_id} is not the KM this connection reached "
                    f"({connection.peer_id or 'unauthenticated'})"
                )
            self.km_id = message.sender_id
            return mgmt.KMAuthenticationResponse(
                sender_id=self._require_identity(), response_code=mgmt.ResultCode.SUCCESS
            )
        if isinstance(message, ak.SessionCreationNotification):
            # Table 6 reads both ways (ak.SessionCreationNotification): the peer is the ID
            # that is not ours, whichever field holds it
            source, destination = message.application_source_id, message.application_destination_id
            if self._identity not in (source, destination):
                raise QkdnError(f"this is {self._identity}, not {source} or {destination}")
            self.sessions[message.session_id] = destination if source == self._identity else source
            return ak.ResponseToSessionCreationNotification(
                session_id=message.session_id, response="success"
            )
        if isinstance(message, ak.ProactiveKeySupply):
            for key in message.keys:
                await self._keys_in.send(
                    SuppliedKey(key_id=key.key_id, key=key.key, session_id=message.session_id)
                )
            return ak.ResponseToProactiveKeySupply(
                session_id=message.session_id, key_id=message.keys[-1].key_id, response="success"
            )
        return None


class Session:
    """A proactive key supply session we opened (source side, Q.4161 clause 7.2.3)."""

    def __init__(self, client: KeyManagerClient, session_id: str, peer: str) -> None:
        self.session_id = session_id
        self.peer = peer
        self._client = client

    async def get_keys(
        self, number: int | None = None, size: int | None = None
    ) -> list[SuppliedKey]:
        """New keys of the session (Tables 8, 9); the peer's KM pushes it the same ones.
        Raises :class:`KeysRefused` with the KM's reason (e.g. the session ended)."""
        request = ak.KeyRequestWithSessionId(
            session_id=self.session_id, number_of_keys=number, size_of_key=size
        )
        response = await self._client._ask(request)
        assert isinstance(response, ak.ResponseToKeyRequestWithSessionId)
        return [
            SuppliedKey(key_id=key.key_id, key=key.key, session_id=self.session_id)
            for key in response.keys
        ]

    async def end(self) -> None:
        """End the session at our KM: it supplies no more keys in it."""
        await self._client.end_session(self.session_id, self.peer)


def _supplied(key: Key) -> SuppliedKey:
    return SuppliedKey(key_id=key.key_id, key=key.key)
