"""Who may send what to a role (DESIGN.md, "Interoperability and trust"): identity is the
certificate, the role comes from configuration.

Every message says which role sends it (the sender digit of its command code,
:attr:`~qkdn_sdk.messages.Message.sender`): the table of who may send what is the message
registry itself. A role server knows from its configuration which role each peer identity has
(its applications, its neighbouring KMs, its QKD modules, its controller); :class:`Authorization`
refuses a message whose sender role the peer does not have, before any handler runs, so a
refused request changes nothing. A peer that did not authenticate (plain ``tcp://``, no
certificate) has only the IDs it claims; nothing is checked here then.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import trio

from qkdn_sdk.errors import NotAuthorized, quoted
from qkdn_sdk.messages import Message, Role

__all__ = ["Authorization"]

logger = logging.getLogger("qkdn_sdk.roles")

_LOG_EVERY = 60.0
"""Seconds between two log lines about the refusals of one peer."""
_PEERS_LOGGED = 4096
"""Peers whose last logged refusal is remembered (then the memory starts again)."""


class Authorization:
    """The roles of the peers of ``owner`` (``{identity: roles}``), and how a refusal reads for
    each sender role: ``refusals[role]`` is a text with ``{peer}`` (the peer's ID, quoted) and
    ``{owner}``; a role without one reads "{peer} may not send <message> to {owner}"."""

    def __init__(
        self,
        owner: str,
        roles: Mapping[str, Collection[Role]],
        refusals: Mapping[Role, str] | None = None,
    ) -> None:
        self._owner = owner
        self._roles = {peer: frozenset(peer_roles) for peer, peer_roles in roles.items()}
        self._refusals = dict(refusals or {})
        self._logged: dict[str, float] = {}

    def roles(self, peer: str) -> frozenset[Role]:
        """The roles ``peer`` has here (none: it is unknown)."""
        return self._roles.get(peer, frozenset())

    def check(self, message: Message, peer: str | None) -> None:
        """Raise :class:`~qkdn_sdk.errors.NotAuthorized` unless ``peer`` (the authenticated
        identity of the connection; ``None``: nobody authenticated) has the role that sends
        ``message``. The refusal is logged, at most once a minute per peer."""
        sender = type(message).sender
        if peer is None or sender is Role.ANY or sender in self.roles(peer):
            return
        template = self._refusals.get(sender, "{peer} may not send {message} to {owner}")
        reason = template.format(peer=quoted(peer), owner=self._owner, message=message.spec_name)
        self._log(peer, message, reason)
        raise NotAuthorized(reason)

    def _log(self, peer: str, message: Message, reason: str) -> None:
        now = trio.current_time()
        if now - self._logged.get(peer, -_LOG_EVERY) < _LOG_EVERY:
            return
        if len(self._logged) >= _PEERS_LOGGED:
            self._logged.clear()
        self._logged[peer] = now
        logger.warning(
            "%s: refused 0x%04X %s from %s: %s (further refusals of %s are not logged for %g s)",
            self._owner,
            message.code,
            message.spec_name,
            quoted(peer),
            reason,
            quoted(peer),
            _LOG_EVERY,
        )
