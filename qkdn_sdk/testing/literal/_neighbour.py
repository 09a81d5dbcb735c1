"""The literal neighbouring KM on the KM link (FG QIT4N D2.3 clause 7.2.2)."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Collection
from typing import Any

from qkdn_sdk.messages import Message, Role, kx
from qkdn_sdk.testing.literal._base import (
    LiteralPeer,
    NonConformance,
    Trace,
    check,
    hash_value,
    quote,
)
from qkdn_sdk.transport import Connection

__all__ = ["LiteralNeighbour"]

_D23 = (kx.Hello, kx.SessionMessage, kx.Update)
"""The KM link messages D2.3 gives a table: Tables 7-8, 7-9, 7-10."""


def session_hash(session_id: str) -> str:
    """The Hash value of a SESSION (D2.3 Table 7-9, "of the KMA-key ID") as the SDK reads it:
    the SHA-256 of the Session ID, hex."""
    return hash_value("sha256", session_id.encode())


class LiteralNeighbour(LiteralPeer):
    """A neighbouring KM written from D2.3 clause 7.2.2 alone: HELLO (Table 7-8), SESSION
    (Table 7-9) and UPDATE (Table 7-10), with the SDK's codes for them (0x1180-0x1182: D2.3
    gives none) and its reading of what answers them (a HELLO answers a HELLO, the SESSION
    agreed a SESSION; an UPDATE has no answer). The KM link's key ID synchronisation and key
    relay are the SDK's own, with no D2.3 table: it neither sends nor accepts them.

    Connected to a KM's KM link URL (:meth:`connected`) with the certificate of one of its
    neighbours, it says hello, opens link sessions and distributes their KMA-key IDs; served
    (:meth:`serve`, in a neighbour's place) it answers the same. A HELLO answered must name the
    KM (its certificate's ID) and, when it names one, our ``community``; a SESSION answered,
    the same Session ID and Hash value and a Timer no longer than ours."""

    role = Role.KM

    def __init__(
        self,
        name: str = "neighbour KM",
        trace: Trace | None = None,
        *,
        community: str = "qkdn",
        sender_ip: str | None = None,
        ignore_sdk_members: bool = False,
    ) -> None:
        super().__init__(name, trace, ignore_sdk_members=ignore_sdk_members)
        self.community = community
        self.sender_ip = sender_ip
        self.sessions: dict[str, int | None] = {}
        """The link sessions agreed, by Session ID: their Timer."""
        self.updates: list[kx.Update] = []
        """The UPDATEs received, in order."""

    def accepted(self) -> Collection[type[Message]]:
        return _D23

    def _hello(self, community: str | None) -> kx.Hello:
        return kx.Hello(sender_ip=self.sender_ip, sender_id=self.own_id(), community_id=community)

    async def hello(self) -> kx.Hello:
        """D2.3 Table 7-8: say hello; the KM's HELLO, checked."""
        answer = await self.ask(self._hello(self.community), kx.Hello)
        self._check_hello(answer, self.peer_id)
        return answer

    async def hello_refused(self, community: str) -> Message:
        """A HELLO naming ``community``, not the KM's: the failure that refuses it (a HELLO has
        no failure parameter: an error indication)."""
        return await self.ask_refused(self._hello(community), f"a HELLO of community {community}")

    async def open_session(self, timer: int) -> kx.SessionMessage:
        """D2.3 Table 7-9: a new link session (a new Session ID, ``timer`` seconds, its Hash
        value); the SESSION the KM agrees to, checked."""
        session_id = str(uuid.uuid4())
        session = kx.SessionMessage(
            session_id=session_id, timer=timer, hash_value=session_hash(session_id)
        )
        answer = await self.ask(session, kx.SessionMessage)
        if (
            answer.session_id != session_id
            or answer.hash_value not in (None, session.hash_value)
            or (answer.timer or 0) > timer
        ):
            raise NonConformance(
                f"{self.name} opened {quote(session)}, and the KM agreed to {quote(answer)}"
            )
        self.sessions[session_id] = answer.timer
        return answer

    async def update(self, kma_key_id: str, qos: dict[str, Any] | None = None) -> None:
        """D2.3 Table 7-10: distribute ``kma_key_id`` with ``qos`` (one-way)."""
        await self.send(kx.Update(sender_ip=self.sender_ip, kma_key_id=kma_key_id, qos=qos))

    async def answer(self, message: Message, connection: Connection) -> Message | None:
        check(self.name, message, _D23, success=False, members=self.refuse_sdk_members)
        if isinstance(message, kx.Hello):
            self._check_hello(message, connection.peer_id)
            return self._hello(self.community)
        if isinstance(message, kx.SessionMessage):
            if message.hash_value not in (None, session_hash(message.session_id)):
                raise NonConformance(
                    f"{self.name}: the Hash value is not the SHA-256 of the Session ID: "
                    f"{quote(message)}"
                )
            self.sessions[message.session_id] = message.timer
            return kx.SessionMessage(
                session_id=message.session_id,
                timer=message.timer,
                hash_value=session_hash(message.session_id),
            )
        assert isinstance(message, kx.Update)
        self.updates.append(message)
        return None

    def _check_hello(self, hello: kx.Hello, sender: str | None) -> None:
        """Table 7-8: the sender's ID is its certificate's, its community (if named) ours, its
        Sender IP (if given) an IP address."""
        wrong = []
        if sender is not None and hello.sender_id != sender:
            wrong.append(f"Sender ID is not {sender}")
        if hello.community_id not in (None, self.community):
            wrong.append(f"Community ID is not {self.community}")
        if hello.sender_ip is not None:
            try:
                ipaddress.ip_address(hello.sender_ip)
            except ValueError:
                wrong.append("Sender IP is no IP address")
        if wrong:
            raise NonConformance(f"{self.name}: {'; '.join(wrong)}: {quote(hello)}")
