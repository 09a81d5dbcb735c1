"""The KM link (D2.3 clauses 7.1.2, 7.2.2): HELLO and link sessions with each neighbouring KM,
and key ID synchronisation, which turns the QKD-keys both ends of a link hold into link key.

Both ends receive a link's QKD-keys in the order its modules made them. The KM whose ID sorts
first asks (:class:`~qkdn_sdk.messages.kx.KeyIdSynchronizationRequest` with the IDs waiting in
its ``qkd:`` pool), the neighbour answers with those it holds too, and both cut those QKD-keys
into link units (:func:`~qkdn_sdk.roles.km.keys.link_units`): the units of each QKD-key
alternate between the two KMs, starting at the one a bit of a hash of its ID names
(:func:`~qkdn_sdk.roles.relay.spent_by_first`), so both ends can spend whatever the length of
the QKD-keys.

QKD-keys one end holds that the other never will are discarded, so they cannot fill the cap on
the key a link end holds (:mod:`~qkdn_sdk.roles.km.link_table`): at either end, those older than
the newest key both hold that the request does not match; and, while the end is full, the keys
of a request nothing of which matched (the two ends took keys at different moments: each waits
for keys the other will never take). A discarded key is only wasted: units are cut of the keys
both ends named in one request and answer, never of others.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import urllib.parse
import uuid
from functools import partial
from typing import Any

import trio

from qkdn_sdk.errors import QkdnError, TransportError, quoted
from qkdn_sdk.messages import KeyId, kx
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import KeyStore, KeyStoreError
from qkdn_sdk.roles.km.acquisition import Acquisition
from qkdn_sdk.roles.km.config import AUTHENTICATION, KeyManagerError, KMConfig, Spawn
from qkdn_sdk.roles.km.keys import in_pool, link_units, qkd_pool
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.peers import Peers
from qkdn_sdk.roles.km.status import StatusSupply
from qkdn_sdk.transport import Connection

__all__ = ["KMLinks"]

logger = logging.getLogger("qkdn_sdk.roles.km")

_LINK_SESSION_TIMER = 3600
"""Seconds a link session (its KMA-key ID, D2.3 Table 7-9 "Timer") lasts before the KM whose ID
sorts first opens the next."""
_SYNC_BATCH = 256
"""QKD-key IDs in one key ID synchronisation request."""


class KMLinks:
    """The KM links of one KM: who answers, their link sessions, their key ID synchronisation.
    :meth:`start` runs a HELLO loop per link, and a synchronisation loop per link this KM asks
    on."""

    def __init__(
        self,
        config: KMConfig,
        store: KeyStore,
        links: LinkTable,
        peers: Peers,
        acquisition: Acquisition,
        status: StatusSupply,
        spawn: Spawn,
    ) -> None:
        self._config = config
        self._km_id = config.km_id
        self._store = store
        self._links = links
        self._peers = peers
        self._acquisition = acquisition
        self._status = status
        self._spawn = spawn
        self.link_sessions: dict[str, str] = {}
        """The link session (D2.3 Table 7-9) with each neighbour that answers HELLOs."""
        self._session_ends: dict[str, float] = {}
        """When each link session's timer runs out (trio time)."""
        self.neighbour_qos: dict[str, dict[str, Any]] = {}
        """The QoS each neighbour's latest UPDATE gave for our link (D2.3 Table 7-10)."""
        self._hello_message = kx.Hello(
            sender_ip=_sender_ip(config.listen.get("kx")),
            sender_id=self._km_id,
            community_id=config.community_id,
            authentication_info=AUTHENTICATION,
        )
        self._answering: set[str] = set()
        """Neighbours whose latest HELLO was answered."""
        self._ready: set[str] = set()
        """Neighbours whose link had link key cut once (logged once)."""

    def start(self, nursery: trio.Nursery) -> None:
        for link in self._config.links:
            nursery.start_soon(self._hello, link.neighbour)
            if self._km_id < link.neighbour:
                nursery.start_soon(self._synchronise, link.neighbour)

    # --- HELLO, SESSION, UPDATE (D2.3 Tables 7-8 to 7-10) ---------------------------------------

    async def on_hello(self, hello: kx.Hello, connection: Connection) -> kx.Hello:
        """D2.3 Table 7-8: a neighbour of our community says hello; we answer with ours."""
        self._links.neighbour(hello.sender_id)
        self._check_hello(hello)
        return self._hello_message

    def _check_hello(self, hello: kx.Hello) -> None:
        """Raise :class:`KeyManagerError` unless ``hello`` (Table 7-8) names our community (or
        none) and, if it gives one, an IP address as its Sender IP. Sender ID is the
        certificate's (the transport checks it); Authentication info names how the sender
        authenticated, which the link's mutual TLS did already."""
        community = hello.community_id
        if community is not None and community != self._config.community_id:
            raise KeyManagerError(
                f"{hello.sender_id} is in community {quoted(community)}, and {self._km_id} in "
                f"{quoted(self._config.community_id)}"
            )
        if hello.sender_ip is not None:
            try:
                ipaddress.ip_address(hello.sender_ip)
            except ValueError:
                raise KeyManagerError(
                    f"the Sender IP {quoted(hello.sender_ip)} of {hello.sender_id} is not an IP "
                    "address"
                ) from None

    async def on_session(
        self, session: kx.SessionMessage, connection: Connection
    ) -> kx.SessionMessage:
        """D2.3 Table 7-9: the neighbour opens a link session. Its Hash value, when given, must
        be that of its Session ID (the KMA-key ID the two KMs agree on); we agree to its Timer,
        or to ours when it asks for more or names none, and answer with the session agreed."""
        neighbour = self._links.neighbour(connection.peer_id or "")
        if session.hash_value is not None and session.hash_value != _session_hash(
            session.session_id
        ):
            raise KeyManagerError(
                f"the Hash value of link session {quoted(session.session_id)} is not the "
                "SHA-256 of its Session ID"
            )
        timer = min(session.timer or _LINK_SESSION_TIMER, _LINK_SESSION_TIMER)
        self._agree(neighbour, session.session_id, timer)
        return kx.SessionMessage(
            session_id=session.session_id,
            timer=timer,
            hash_value=_session_hash(session.session_id),
        )

    def _agree(self, neighbour: str, session_id: str, timer: int) -> None:
        self.link_sessions[neighbour] = session_id
        self._session_ends[neighbour] = trio.current_time() + timer

    async def on_update(self, update: kx.Update, connection: Connection) -> None:
        """D2.3 Table 7-10: a neighbour distributes the KMA-key ID of our link (the link session
        agreed) with its QoS. One naming our link session is recorded
        (:attr:`neighbour_qos`); any other is out of step with us and only logged. Routes are
        the controller's (Q.4164): an UPDATE selects none."""
        neighbour = self._links.neighbour(connection.peer_id or "")
        agreed = self.link_sessions.get(neighbour)
        if update.kma_key_id != agreed:
            logger.info(
                "%s: UPDATE from %s names KMA-key ID %s, and our link session is %s: ignored",
                self._km_id,
                neighbour,
                quoted(update.kma_key_id),
                agreed,
            )
            return
        self.neighbour_qos[neighbour] = dict(update.qos or {})

    async def _send_update(self, neighbour: str, session_id: str) -> None:
        """D2.3 Table 7-10, once a link session we opened is agreed: its KMA-key ID to the
        neighbour, with the key we can spend towards it as QoS."""
        update = kx.Update(
            sender_ip=self._hello_message.sender_ip,
            kma_key_id=session_id,
            qos={"key_amount": self._links.link_key_bits(neighbour)},
        )
        try:
            await self._peers.dialer(neighbour).send(update)
        except QkdnError as exc:
            logger.info("%s: no UPDATE to %s: %s", self._km_id, neighbour, exc)

    async def _hello(self, neighbour: str) -> None:
        """D2.3 clause 7.2.2: a HELLO to ``neighbour`` every ``hello_interval``, answered by
        its own. A neighbour that stops answering is unreachable: its link is reported down
        (and without key) to the controller at once, and again up when it answers. When the
        link comes up, the KM whose ID sorts first opens a link session (SESSION, Table 7-9)."""
        while True:
            if self._peers.dialer(neighbour).url is not None:
                try:
                    answer = await self._peers.dialer(neighbour).request(
                        self._hello_message, timeout=self._config.relay_timeout
                    )
                    assert isinstance(answer, kx.Hello)
                    self._check_hello(answer)
                    up = True
                except QkdnError as exc:
                    if isinstance(exc, KeyManagerError) and neighbour in self._answering:
                        logger.warning("%s: HELLO of %s refused: %s", self._km_id, neighbour, exc)
                    up = False
                if up and neighbour not in self._answering:
                    self._answering.add(neighbour)
                    self._links.unreachable.discard(neighbour)
                    if self._km_id < neighbour:
                        await self._open_link_session(neighbour)
                    logger.info("%s: link to %s is up", self._km_id, neighbour)
                    self._status.report_now()
                elif not up and neighbour in self._answering:
                    self._answering.discard(neighbour)
                    self._links.unreachable.add(neighbour)
                    self.link_sessions.pop(neighbour, None)
                    self._session_ends.pop(neighbour, None)
                    logger.warning("%s: link to %s is down (no HELLO)", self._km_id, neighbour)
                    self._status.report_now()
                elif not up:
                    self._links.unreachable.add(neighbour)
                elif self._km_id < neighbour and trio.current_time() >= self._session_ends.get(
                    neighbour, 0.0
                ):  # its timer ran out (or no session was agreed yet): the next one
                    await self._open_link_session(neighbour)
            await trio.sleep(self._config.hello_interval)

    async def _open_link_session(self, neighbour: str) -> None:
        """D2.3 Table 7-9: a new link session with ``neighbour``, agreed when its answer names
        the same Session ID with that ID's Hash value (if any) and a Timer no longer than
        ours."""
        session_id = str(uuid.uuid4())
        session = kx.SessionMessage(
            session_id=session_id, timer=_LINK_SESSION_TIMER, hash_value=_session_hash(session_id)
        )
        try:
            answer = await self._peers.dialer(neighbour).request(
                session, timeout=self._config.relay_timeout
            )
        except QkdnError as exc:
            logger.warning("%s: no link session with %s: %s", self._km_id, neighbour, exc)
            return
        assert isinstance(answer, kx.SessionMessage)
        timer = answer.timer or _LINK_SESSION_TIMER
        if (
            answer.session_id != session_id
            or answer.hash_value not in (None, session.hash_value)
            or timer > _LINK_SESSION_TIMER
        ):
            logger.warning(
                "%s: %s did not agree to link session %s (it answered session %s, timer %s)",
                self._km_id,
                neighbour,
                session_id,
                quoted(answer.session_id),
                answer.timer,
            )
            return
        self._agree(neighbour, session_id, timer)
        self._spawn(self._send_update, neighbour, session_id)

    # --- key ID synchronisation (0x1185, 0x1186) ------------------------------------------------

    async def _synchronise(self, neighbour: str) -> None:
        """Key ID synchronisation, run by the KM whose ID sorts first on the link.

        Both ends receive a link's QKD-keys in the order its modules made them, so a key we
        hold that the neighbour lacks while it holds a newer one will never reach it (its
        module dropped the key, or its KM was down): such keys are discarded. A request asks
        for the oldest waiting IDs; when none of those is held and more wait, the next one asks
        for the newest, so a run of keys the neighbour never got does not stall the link.
        While this end is full, keys of which the neighbour holds none are discarded when a
        later round names them again and they still do not match: at the first, the neighbour
        may not have asked its module for them yet.
        """
        wanted = self._links.sync_wanted
        failing = False
        newest = False
        unmatched: set[str] = set()  # named last round while full, and not held there
        while True:
            with trio.move_on_after(self._config.sync_interval):
                await wanted[neighbour].wait()
            wanted[neighbour] = trio.Event()
            if self._peers.dialer(neighbour).url is None:  # not started yet
                continue
            waiting = self._store.count(qkd_pool(neighbour))
            if not waiting:
                continue
            try:
                ids = await self._store.key_ids(qkd_pool(neighbour), _SYNC_BATCH, newest=newest)
            except KeyStoreError as exc:  # its database restarts: the next round reconnects
                logger.warning(
                    "%s: key ID synchronisation with %s: %s", self._km_id, neighbour, exc
                )
                continue
            if not ids:
                continue
            request = kx.KeyIdSynchronizationRequest(
                source_kma_id=self._km_id,
                destination_kma_id=neighbour,
                key_ids=[KeyId(key_id=key_id) for key_id in ids],
            )
            in_flight = self._links.sync_rounds[neighbour] = trio.Event()
            try:
                response = await self._peers.dialer(neighbour).request(
                    request, timeout=self._config.relay_timeout
                )
                assert isinstance(response, kx.ResponseToKeyIdSynchronizationRequest)
                held = {key.key_id for key in response.key_ids}
                both = [key_id for key_id in ids if key_id in held]
                await self._discard_unmatched(neighbour, ids, both)
                if not both and not self._links.room_bits(neighbour):
                    # the neighbour may not have asked its module for them yet: gone if they
                    # do not match next round either (both ends full, each with keys the other
                    # lacks, would wait for each other forever)
                    again = [key_id for key_id in ids if key_id in unmatched]
                    await self._discard(neighbour, again, "nothing matched while the link is full")
                    unmatched = (unmatched | set(ids)).difference(again)
                else:
                    unmatched = set()
                await self._adopt(neighbour, both)
            except QkdnError as exc:
                if isinstance(exc, TransportError):
                    self._links.unreachable.add(neighbour)
                if not failing:
                    logger.warning(
                        "%s: key ID synchronisation with %s failed: %s", self._km_id, neighbour, exc
                    )
                failing = True
                continue
            finally:
                in_flight.set()
            if failing:
                logger.info(
                    "%s: key ID synchronisation with %s works again", self._km_id, neighbour
                )
            failing = False
            self._links.unreachable.discard(neighbour)
            newest = not both and not newest and waiting > _SYNC_BATCH
            if len(ids) == _SYNC_BATCH or newest:
                wanted[neighbour].set()

    async def _discard_unmatched(self, neighbour: str, asked: list[str], both: list[str]) -> None:
        """Discard the QKD-keys of ``asked`` (oldest first) that the neighbour does not hold
        although it holds a newer one of them: it never will."""
        if not both:
            return
        newest_held = asked.index(both[-1])
        matched = set(both)
        dead = [key_id for key_id in asked[:newest_held] if key_id not in matched]
        await self._discard(neighbour, dead, f"{neighbour} never got them")

    async def _discard(self, neighbour: str, qkd_key_ids: list[str], why: str) -> None:
        """Discard those of the QKD-keys ``qkd_key_ids`` of the link to ``neighbour`` that
        wait here (logged with ``why``)."""
        if not qkd_key_ids:
            return
        discarded = await self._store.take_present(qkd_pool(neighbour), qkd_key_ids)
        if discarded:
            self._links.notify_change()  # the link end may have room again
            logger.info(
                "%s: %d QKD-keys of the link to %s discarded: %s",
                self._km_id,
                len(discarded),
                neighbour,
                why,
            )

    async def _discard_stale(self, neighbour: str, both: list[str]) -> None:
        """At the answering end, before the QKD-keys ``both`` (those a synchronisation request
        named that we hold) are cut: discard the QKD-keys waiting here that the neighbour will
        never name. It names the oldest it holds, so one of ours older than the newest of
        ``both`` that it did not name, it lacks while it holds a newer one: it never gets it.
        While this end is full and nothing matched, our oldest waiting keys go too (the ends
        took keys at different moments; the neighbour discards its own likewise)."""
        if self._store.count(qkd_pool(neighbour)) <= len(both):
            return  # every key waiting here is one of them (the usual case): no read
        waiting = await self._store.key_ids(qkd_pool(neighbour), _SYNC_BATCH)
        matched = set(both)
        last = max((index for index, key_id in enumerate(waiting) if key_id in matched), default=-1)
        if last < 0 and both and len(waiting) == _SYNC_BATCH:
            last = len(waiting)  # more wait than we read: those of ``both`` come after these
        if last >= 0:
            stale = [key_id for key_id in waiting[:last] if key_id not in matched]
            await self._discard(neighbour, stale, f"{neighbour} never got them")
        elif waiting and not both and not self._links.room_bits(neighbour):
            await self._discard(neighbour, waiting, "nothing matched while the link is full")

    async def on_synchronisation(
        self, request: kx.KeyIdSynchronizationRequest, connection: Connection
    ) -> kx.ResponseToKeyIdSynchronizationRequest:
        """The neighbour whose ID sorts first names QKD-keys it holds: answer with those held
        here too (fetched first from our KME, on a KME pair), and cut them."""
        neighbour = self._links.neighbour(request.source_kma_id)
        if request.destination_kma_id != self._km_id:
            raise KeyManagerError(
                f"this is {self._km_id}, not {quoted(request.destination_kma_id)}"
            )
        if len(request.key_ids) > _SYNC_BATCH:
            raise KeyManagerError(f"at most {_SYNC_BATCH} key IDs per synchronisation")
        asked = [key.key_id for key in request.key_ids]
        previous = self._links.sync_rounds.get(neighbour)
        if previous is not None:  # the keys of the last answer are cut before any is discarded
            await previous.wait()
        held = await self._store.seen(asked)  # here now, or cut into link units before
        link = self._config.link(neighbour)
        if link.kme_pair:
            missing = [key_id for key_id in asked if key_id not in held]
            fits = self._links.keys_to_ask(neighbour, len(missing))
            self._links.refused_keys[neighbour] += len(missing) - fits
            await self._acquisition.fetch_from_kme(link, missing[:fits])
            held = await self._store.seen(asked)
        both = [key_id for key_id in asked if key_id in held]
        await self._discard_stale(neighbour, both)
        if both:
            # Answered at once, cut meanwhile: both ends cut their units at the same time. A
            # hop on units we have not cut yet waits for this round (Relay.with_received_units).
            adopted = self._links.sync_rounds[neighbour] = trio.Event()
            self._spawn(self._adopt_answered, neighbour, both, adopted)
        return kx.ResponseToKeyIdSynchronizationRequest(
            key_ids=[KeyId(key_id=key_id) for key_id in both], response="success"
        )

    async def _adopt_answered(
        self, neighbour: str, qkd_key_ids: list[str], adopted: trio.Event
    ) -> None:
        """:meth:`_adopt` the keys a synchronisation request of ``neighbour`` was answered
        with, then set ``adopted``."""
        try:
            await self._adopt(neighbour, qkd_key_ids)
        except KeyStoreError as exc:
            logger.warning(
                "%s: the QKD-keys of the link to %s could not be cut: %s",
                self._km_id,
                neighbour,
                exc,
            )
        finally:
            adopted.set()

    async def _adopt(self, neighbour: str, qkd_key_ids: list[str]) -> None:
        """Cut those of the QKD-keys both ends hold that are still whole into link units."""
        if not qkd_key_ids:
            return
        first = self._km_id < neighbour
        qkd_keys = await self._store.take_present(
            qkd_pool(neighbour), qkd_key_ids, split=partial(link_units, neighbour, first)
        )
        self._links.generated_bits[neighbour] += otp.UNIT_BITS * sum(
            otp.units_spent_by(qkd_key.key_id, len(qkd_key.key) // otp.UNIT_BYTES, first=first)
            for qkd_key in qkd_keys
        )
        self._links.notify_change()
        if neighbour not in self._ready:
            self._ready.add(neighbour)
            logger.info(
                "%s: link to %s ready: %d bits of link key to send with, %d to receive",
                self._km_id,
                neighbour,
                self._links.link_key_bits(neighbour),
                self._store.count(in_pool(neighbour)) * otp.UNIT_BITS,
            )


def _session_hash(session_id: str) -> str:
    """The Hash value of a link session's KMA-key ID (D2.3 Table 7-9): SHA-256, hex."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def _sender_ip(url: str | None) -> str | None:
    """The Sender IP of our HELLOs (D2.3 Table 7-8): the host of the KM link URL when it is an
    IP address that names this host (not 0.0.0.0 or ::); otherwise none (the address a
    neighbour reaches depends on its side of the network)."""
    if url is None:
        return None
    try:
        address = ipaddress.ip_address(urllib.parse.urlsplit(url).hostname or "")
    except ValueError:
        return None
    return None if address.is_unspecified else str(address)
