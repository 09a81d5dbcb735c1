"""The literal application (Q.4161, and the key supply protocol of FG QIT4N D2.3 clause
7.2.1)."""

from __future__ import annotations

from collections.abc import Sequence

from qkdn_sdk.messages import Key, KeyId, Message, Role, ak, mgmt
from qkdn_sdk.testing.literal._base import (
    AUTHENTICATION_INFO,
    LiteralPeer,
    NonConformance,
    Trace,
    check,
    check_sender,
    quote,
)
from qkdn_sdk.transport import Connection

__all__ = ["LiteralApplication"]


class LiteralApplication(LiteralPeer):
    """A cryptographic application written from Q.4161 alone: key requests (clause 7.1), and
    sessions with the keys its KM pushes (clause 7.2). It answers a session creation
    notification (Table 6) and every proactive key supply (Table 10) with success.

    Table 6 reads two ways (the ``ak.SessionCreationNotification`` docstring): the literal
    application takes the ID that is not its own as the peer's, whichever field holds it.

    It also speaks D2.3's key supply protocol (clause 7.2.1, the SDK's codes): authentication
    (Tables 7-2, 7-3; it answers the KM's own authentication, clause 7.2.1.1 a), with success
    when the KM's Sender ID is its certificate's), key supply (Tables 7-4, 7-5) and key deletion
    (Tables 7-6, 7-7). Its Source ID and Target ID are application IDs (the tables' remarks):
    a KM's ID would not say which of its applications is meant. It sends no Key size (no row of
    Table 7-4) and no Key IDs in a deletion (the SDK's addition to Table 7-6)."""

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
            (ak.SessionCreationNotification, ak.ProactiveKeySupply, mgmt.KMAuthenticationCommand),
            success=False,
            members=self.refuse_sdk_members,
        )
        if isinstance(message, mgmt.KMAuthenticationCommand):
            check_sender(self.name, message, connection.peer_id)
            return mgmt.KMAuthenticationResponse(
                sender_id=self.own_id(), response_code=mgmt.ResultCode.SUCCESS
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

    # --- D2.3 clause 7.2.1 ----------------------------------------------------------------------

    async def authenticate(self) -> mgmt.AuthenticationResponse:
        """D2.3 clause 7.2.1.1 a) (Figure 7-9): authenticate to the KM (Tables 7-2, 7-3); the
        answer must be a success from the KM (its certificate's ID)."""
        command = mgmt.AuthenticationCommand(
            sender_id=self.own_id(), authentication_info=AUTHENTICATION_INFO
        )
        response = await self.ask(command, mgmt.AuthenticationResponse)
        check_sender(self.name, response, self.peer_id)
        return response

    async def supply_keys(
        self, target: str, amount: int, *, session_id: str | None = None
    ) -> list[Key]:
        """D2.3 clause 7.2.1.1 b) (Figure 7-10): ``amount`` keys for encryption shared with the
        application ``target`` (in ``session_id`` when given), Tables 7-4, 7-5 (checked by
        :meth:`_supplied`)."""
        command = self._for_encryption(target, amount, session_id)
        keys = self._supplied(command, await self.ask(command, mgmt.KeySupplyResponse))
        if len(keys) != amount:
            raise NonConformance(f"{self.name} asked for {amount} keys and got {len(keys)}")
        return keys

    async def supply_keys_refused(
        self, target: str, amount: int, session_id: str, why: str
    ) -> Message:
        """A key supply for encryption in ``session_id``, which the KM must refuse (``why``)."""
        return await self.ask_refused(self._for_encryption(target, amount, session_id), why)

    def _for_encryption(
        self, target: str, amount: int, session_id: str | None
    ) -> mgmt.KeySupplyCommand:
        return mgmt.KeySupplyCommand(
            sender_id=self.own_id(),
            source_id=self.own_id(),
            target_id=target,
            session_id=session_id,
            application_code=mgmt.ApplicationCode.ENCRYPTION,
            key_amount=amount,
        )

    async def supply_key_by_id(self, target: str, key_id: str) -> Key:
        """D2.3 clause 7.2.1.1 b) (Figure 7-10): the key ``key_id`` that the application
        ``target`` was supplied for us, for decryption (Tables 7-4, 7-5)."""
        command = mgmt.KeySupplyCommand(
            sender_id=self.own_id(),
            source_id=self.own_id(),
            target_id=target,
            application_code=mgmt.ApplicationCode.DECRYPTION,
            key_id=key_id,
        )
        keys = self._supplied(command, await self.ask(command, mgmt.KeySupplyResponse))
        if [key.key_id for key in keys] != [key_id]:
            raise NonConformance(f"{self.name} asked for key {key_id}, got {len(keys)} keys")
        return keys[0]

    def _supplied(
        self, command: mgmt.KeySupplyCommand, response: mgmt.KeySupplyResponse
    ) -> list[Key]:
        """Table 7-5: from the KM, the command's Source ID, Target ID, Session ID, Application
        code and Key ID, Key amount (when given) the number of keys, Key size (when given, no
        row of Table 7-4 to echo) their size in bits."""
        check_sender(self.name, response, self.peer_id)
        keys = response.key_data or []
        echoed = ("source_id", "target_id", "session_id", "application_code", "key_id")
        wrong = [name for name in echoed if getattr(response, name) != getattr(command, name)]
        if response.key_amount is not None and response.key_amount != len(keys):
            wrong.append("key_amount")
        if response.key_size is not None and any(
            8 * len(key.key) != response.key_size for key in keys
        ):
            wrong.append("key_size")
        if wrong or not keys:
            what = ", ".join(wrong) if wrong else "no key data"
            raise NonConformance(
                f"{self.name} sent {quote(command)}, answered with wrong {what}: {quote(response)}"
            )
        return keys

    async def delete_keys(self, target: str, session_id: str) -> mgmt.KeyDeletionResponse:
        """D2.3 clause 7.2.1.1 c) (Figure 7-11): the keys of the key supply session
        ``session_id`` with the application ``target`` deleted (Tables 7-6, 7-7: success, from
        the KM, echoing Source ID, Target ID, Session ID and Application code)."""
        command = mgmt.KeyDeletionCommand(
            sender_id=self.own_id(),
            source_id=self.own_id(),
            target_id=target,
            session_id=session_id,
            application_code=mgmt.ApplicationCode.DECRYPTION,
        )
        response = await self.ask(command, mgmt.KeyDeletionResponse)
        check_sender(self.name, response, self.peer_id)
        echoed = ("source_id", "target_id", "session_id", "application_code")
        wrong = [name for name in echoed if getattr(response, name) != getattr(command, name)]
        if wrong:
            raise NonConformance(
                f"{self.name} sent {quote(command)}, answered with wrong {', '.join(wrong)}: "
                f"{quote(response)}"
            )
        return response
