"""The literal application (Q.4161)."""

from __future__ import annotations

from collections.abc import Sequence

from qkdn_sdk.messages import Key, KeyId, Message, Role, ak
from qkdn_sdk.testing.literal._base import LiteralPeer, NonConformance, Trace, check, quote
from qkdn_sdk.transport import Connection

__all__ = ["LiteralApplication"]


class LiteralApplication(LiteralPeer):
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
        check(
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
