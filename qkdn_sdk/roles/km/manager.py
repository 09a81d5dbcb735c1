"""The composition: :class:`KeyManager` builds the parts of a KM from its :class:`KMConfig`,
serves its interfaces, routes every message to the one part that handles it (:data:`HANDLERS`)
and runs the parts' background tasks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from functools import partial
from typing import Any

import trio
from prometheus_client import CollectorRegistry

from qkdn_sdk.errors import NotAuthorized
from qkdn_sdk.messages import Interface, Message, Role, ak, ck, kq1, kx, mgmt, received_by
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles._authorization import Authorization
from qkdn_sdk.roles.keystore import KeyStore, KeyStoreError
from qkdn_sdk.roles.km.acquisition import Acquisition
from qkdn_sdk.roles.km.applications import KeySupply
from qkdn_sdk.roles.km.config import KMConfig, listen_interface
from qkdn_sdk.roles.km.expiry import Expiry
from qkdn_sdk.roles.km.keys import in_pool
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.links import KMLinks
from qkdn_sdk.roles.km.peers import Peers
from qkdn_sdk.roles.km.proactive import ProactiveSupply
from qkdn_sdk.roles.km.quotas import OverQuota, Quotas
from qkdn_sdk.roles.km.relay_hops import HopSender, RelayRecord
from qkdn_sdk.roles.km.relay_receiver import RelayReceiver
from qkdn_sdk.roles.km.relays import Relay
from qkdn_sdk.roles.km.reservation import Reservations
from qkdn_sdk.roles.km.routes import Routes
from qkdn_sdk.roles.km.status import STATUS_PARAMETERS, StatusSupply
from qkdn_sdk.roles.metrics import km_metrics
from qkdn_sdk.roles.qkd_module import Kq1Mode
from qkdn_sdk.roles.sessions import Sessions
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, serve

__all__ = ["HANDLERS", "KeyManager", "accepted", "authorization"]

logger = logging.getLogger("qkdn_sdk.roles.km")

HANDLERS: Mapping[type[Message], tuple[str, str]] = {
    # Ak (Q.4161; D2.3 Tables 7-2 to 7-6 on Ak), from applications
    ak.KeyRequest: ("key_supply", "key_request"),
    ak.KeyRequestWithId: ("key_supply", "key_request_with_id"),
    ak.StatusRequest: ("key_supply", "status"),
    mgmt.KeySupplyCommand: ("key_supply", "key_supply_command"),
    mgmt.KeyDeletionCommand: ("key_supply", "key_deletion"),
    mgmt.AuthenticationCommand: ("proactive", "authenticate"),
    ak.SessionCreationRequest: ("proactive", "session_creation_request"),
    ak.KeyRequestWithSessionId: ("proactive", "key_request_with_session_id"),
    # Ck (Q.4164; D2.3 Table 8-1 on Ck), from the QKDN controller
    ck.KeyRelayRequest: ("relay", "on_key_relay_request"),
    ck.SessionCreationNotification: ("proactive", "on_session_creation_notification"),
    ck.SessionEndedNotification: ("proactive", "on_session_ended"),
    ck.KeyReservationRequest: ("reservations", "on_key_reservation"),
    ck.KeyAllocationRequest: ("reservations", "on_key_allocation"),
    mgmt.StatusInformationSupplyCommand: ("status", "on_status_command"),
    # Kq-1 (Q.4162), from QKD modules
    kq1.KeySupply: ("acquisition", "on_key_supply"),
    # the KM link (D2.3 clause 7.1), from neighbouring KMs
    kx.Hello: ("links", "on_hello"),
    kx.SessionMessage: ("links", "on_session"),
    kx.Update: ("links", "on_update"),
    kx.KeyIdSynchronizationRequest: ("links", "on_synchronisation"),
    kx.KeyRelay: ("relay_receiver", "on_key_relay"),
    kx.KeyRelayConfirmation: ("relay_receiver", "on_confirmation"),
}
"""Which part of a KM handles each message it receives, and with which method: ``{message
class: (attribute of the KeyManager, method)}``. A message not here is a response a request of
the KM awaits (or one that came too late); nothing answers it."""

_SENDER_BY_INTERFACE = {
    "ak": Role.APPLICATION,
    "ck": Role.CONTROLLER,
    "kq1": Role.QKD_MODULE,
    "kx": Role.KM,
}


_REFUSALS = {
    Role.APPLICATION: "application {peer} is not served by {owner}",
    Role.KM: "{peer} is not a neighbour of {owner}",
    Role.QKD_MODULE: "QKD module {peer} has no link at {owner}",
    Role.CONTROLLER: "{peer} is not the QKDN controller of {owner}",
}
"""How a KM words the refusal of a message from a peer without the role that sends it."""


def authorization(config: KMConfig) -> Authorization:
    """Who may send what to the KM of ``config``: its controller, its neighbouring KMs, the QKD
    modules of its links and its applications, each what its role sends."""
    roles: dict[str, set[Role]] = {}
    for peer, role in (
        (config.controller_id, Role.CONTROLLER),
        *((link.neighbour, Role.KM) for link in config.links),
        *((link.module_id, Role.QKD_MODULE) for link in config.links),
        *((application, Role.APPLICATION) for application in config.applications),
    ):
        roles.setdefault(peer, set()).add(role)
    return Authorization(config.km_id, roles, _REFUSALS)


def accepted(interface: str) -> frozenset[type[Message]]:
    """The messages a KM accepts on ``interface``: those the specs have the interface's peer
    send to a KM."""
    sender = _SENDER_BY_INTERFACE[interface]
    return frozenset(cls for cls in received_by(Role.KM) if cls.sender in (sender, Role.ANY))


class KeyManager:
    """A KM role. ``await nursery.start(km.run)`` serves every interface of ``config.listen``
    and returns ``{interface: URL}``; cancelling it stops the KM.

    ``directory`` maps peer IDs (the controller, neighbouring KMs) to the URL that reaches
    them: for neighbours the KM-link (``kx``) URL, for the controller its Ck URL. It is read when
    a connection is opened, so a network can fill it in once every role listens.

    The parts (each handed only what it uses; :mod:`qkdn_sdk.roles.km` draws how they depend on
    each other): :attr:`key_supply`, :attr:`proactive`, :attr:`relay`, :attr:`links`,
    :attr:`acquisition`, :attr:`routes`, :attr:`reservations`, :attr:`status`, the
    applications' :attr:`quotas` and :attr:`sessions`, and the :attr:`expiry` of the keys held
    for them.

    Given a ``registry``, the KM puts its metrics there (:mod:`qkdn_sdk.roles.metrics`).
    """

    def __init__(
        self,
        config: KMConfig,
        store: KeyStore,
        *,
        tls: TLSConfig | None = None,
        directory: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._tls = tls
        self._limits = limits
        self._nursery: trio.Nursery | None = None
        self._authorization = authorization(config)
        metrics = None
        if registry is not None:
            metrics = km_metrics(registry, self, {OverQuota: "refused-over-quota"})
            metrics.watch_store(store)
        self._requests = metrics.requests if metrics is not None else None
        self.link_table = LinkTable(config, store)
        self.peers = Peers(
            config,
            self.link_table,
            handler=self._handle,
            accepted=accepted,
            tls=tls,
            directory=directory if directory is not None else {},
            limits=limits,
        )
        self.sessions = sessions = Sessions(
            lifetime=config.session_lifetime, per_application=config.max_sessions_per_application
        )
        self.routes = Routes(config, self.link_table, self.peers)
        self.status = StatusSupply(config, self.link_table, self.peers)
        self.reservations = Reservations(config, store, self.link_table, self.routes, self._spawn)
        self.acquisition = Acquisition(config, store, self.link_table, self.peers)
        self.links = KMLinks(
            config,
            store,
            self.link_table,
            self.peers,
            self.acquisition,
            self.status,
            self._spawn,
        )
        hops = HopSender(
            config, store, self.link_table, self.peers, metrics.hop_seconds if metrics else None
        )
        self.relay = Relay(config, store, self.link_table, self.peers, self.routes, hops)
        self.quotas = Quotas(config, store, self.link_table, self.routes)
        self.proactive = ProactiveSupply(
            config, store, self.peers, self.relay, sessions, self.quotas, self._spawn
        )
        self.relay_receiver = RelayReceiver(
            config,
            store,
            self.link_table,
            self.peers,
            self.routes,
            sessions,
            hops,
            self.quotas,
            stored=self.proactive.keys_stored,
            spawn=self._spawn,
        )
        self.key_supply = KeySupply(
            config, store, self.routes, self.relay, self.proactive, sessions, self.quotas
        )
        self.expiry = Expiry(config, store)

    async def _handle(self, message: Message, connection: Connection) -> Message | None:
        """The answer of the part :data:`HANDLERS` names for ``message``, once the peer was
        found to have the role that sends it (a refused request changes nothing; a refused
        one-way message is dropped); counted, when the KM keeps metrics."""
        route = HANDLERS.get(type(message))
        if route is None:
            return None
        try:
            if self._requests is None:
                return await self._answer(route, message, connection)
            return await self._requests.count(message, self._answer(route, message, connection))
        except NotAuthorized:
            if type(message).response_type() is None:
                return None
            raise

    async def _answer(
        self, route: tuple[str, str], message: Message, connection: Connection
    ) -> Message | None:
        """:meth:`_handle` but the counting: the checks of the sender, then the part's answer."""
        self._authorization.check(message, connection.peer_id)
        if type(message).interface is Interface.AK and not isinstance(
            message, mgmt.AuthenticationCommand
        ):
            self.proactive.check_authenticated(connection)
        part, method = route
        handler = getattr(getattr(self, part), method)
        response: Message | None = await handler(message, connection)
        return response

    def _spawn(self, function: Callable[..., Awaitable[object]], *args: object) -> None:
        assert self._nursery is not None, "the KM runs"
        self._nursery.start_soon(function, *args)

    async def run(
        self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled. Keys that earlier versions left pending in the store are
        discarded first, and link key a previous run reserved goes back to its links (its
        allocated key stays allocated)."""
        replica = self.config.replica
        if not replica:  # a replica's primary does it
            discarded = await self.store.discard_prefix("pending:")
            if discarded:
                logger.info("%s: discarded %d relayed keys never confirmed", self.km_id, discarded)
            await self.reservations.restore()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.peers.open(nursery)
            urls: dict[str, str] = {}
            for key, url in self.config.listen.items():
                interface = listen_interface(key)
                info: ServerInfo = await nursery.start(
                    partial(
                        serve,
                        url,
                        self._handle,
                        tls=self._tls,
                        identity=self.km_id,
                        limits=self._limits,
                        accepts=accepted(interface),
                        on_connect=self.proactive.connected if interface == "ak" else None,
                    )
                )
                urls[key] = info.url
            if replica:
                nursery.start_soon(self._follow_primary)
            else:
                self.links.start(nursery)
                for link in self.config.links:
                    if link.mode is Kq1Mode.ON_REQUEST and (
                        not link.kme_pair or self.km_id < link.neighbour
                    ):  # of a KME pair, the neighbour fetches by ID what we name
                        nursery.start_soon(self.acquisition.run, link)
                nursery.start_soon(self.status.run)
                nursery.start_soon(self.expiry.run)
            task_status.started(urls)

    async def _follow_primary(self) -> None:
        """A replica's counts of the key its primary acquires, read from the store every
        ``report_interval`` (and after each of its own transactions); a relay waiting for link
        key looks again."""
        while True:
            await trio.sleep(self.config.report_interval)
            try:
                await self.store.refresh()
            except KeyStoreError as exc:  # the database restarts: the next one reconnects
                logger.warning("%s: %s", self.km_id, exc)
                continue
            self.link_table.notify_change()

    # --- what a network, a test or an operator reads of a running KM -------------------------

    @property
    def km_id(self) -> str:
        return self.config.km_id

    @property
    def spent_bits(self) -> dict[str, int]:
        """Link key bits this KM spent sending towards each neighbour (relays and MACs)."""
        return self.link_table.spent_bits

    @property
    def generated_bits(self) -> dict[str, int]:
        """Link key bits this KM got to spend towards each neighbour (cut from QKD-keys)."""
        return self.link_table.generated_bits

    @property
    def relays(self) -> dict[str, int]:
        """Relays this KM started (source), forwarded (transit) and received (destination)."""
        receiver = self.relay_receiver
        return {
            "started": self.relay.started,
            "forwarded": receiver.forwarded,
            "received": receiver.received,
        }

    @property
    def relay_records(self) -> list[RelayRecord]:
        """The last relays this KM took part in, as source, transit or destination, by the time
        each reached it (D2.3 clause 7.1.6: a KMA keeps the key management activities it works
        on). No key material."""
        records = [*self.relay.records, *self.relay_receiver.records]
        return sorted(records, key=lambda record: record.time_stamp)

    @property
    def pending_key_ids(self) -> dict[str, list[str]]:
        """The key IDs of each relay received here and not confirmed yet, by key relay request
        ID (none of them can be fetched)."""
        return self.relay_receiver.pending_key_ids

    @property
    def supplied(self) -> dict[tuple[str, str], int]:
        """Keys made here at a source application's request, by ``(source, destination)``."""
        return self.key_supply.supplied

    @property
    def pushed(self) -> dict[str, int]:
        """Session keys each application acknowledged, each taken from the store since."""
        return self.proactive.pushed

    @property
    def expired(self) -> dict[str, int]:
        """Keys erased since the KM started because their lifetime ended, by kind
        (:data:`~qkdn_sdk.roles.km.expiry.LIFETIMES`)."""
        return self.expiry.expired

    async def expire_keys(self, now: float | None = None) -> dict[str, int]:
        """Erase now what has expired by ``now`` (Unix time; the clock's when ``None``), as
        the KM does every ``expiry_interval``: :meth:`Expiry.expire`."""
        return await self.expiry.expire(now)

    @property
    def link_sessions(self) -> dict[str, str]:
        """The link session (D2.3 Table 7-9) with each neighbour that answers HELLOs."""
        return self.links.link_sessions

    @property
    def report_period(self) -> float:
        """Seconds between two unsolicited status supplies (:attr:`StatusSupply.report_period`)."""
        return self.status.report_period

    def link_key_bits(self, neighbour: str) -> int:
        """Bits of link key this KM can spend towards ``neighbour`` now."""
        return self.link_table.link_key_bits(neighbour)

    async def wait_link_key(self, neighbour: str, bits: int) -> None:
        """Return once this KM can spend ``bits`` towards ``neighbour``."""
        await self.link_table.wait_link_key(neighbour, bits)

    async def wait_link_change(self) -> None:
        """Return at the next change of this KM's link keys (units cut, spent, reserved,
        allocated or released)."""
        await self.link_table.wait_change()

    async def wait_pushed(self, application: str, count: int) -> None:
        """Return once ``application`` acknowledged ``count`` session keys pushed to it, and
        each was taken from the store (Q.4161 clause 7.2.4)."""
        await self.proactive.wait_pushed(application, count)

    def receive_key_bits(self, neighbour: str) -> int:
        """Bits of link key ``neighbour`` can spend sending to this KM now (the units this KM
        holds to receive with)."""
        return self.store.count(in_pool(neighbour)) * otp.UNIT_BITS

    def reserved_bits(self, neighbour: str) -> int:
        """Bits of link key towards ``neighbour`` reserved and not yet allocated."""
        return self.link_table.reserved_bits(neighbour)

    def allocated_bits(self, neighbour: str) -> int:
        """Bits of link key towards ``neighbour`` allocated to relays (Q.4164 clause 7.6)."""
        return self.link_table.allocated_bits(neighbour)

    def link_status(self, parameters: Collection[str] = STATUS_PARAMETERS) -> list[dict[str, Any]]:
        """The D2.3 Table 8-2 status table (:meth:`StatusSupply.link_status`)."""
        return self.status.link_status(parameters)

    async def route_information(self, destination_km: str, key_bits: int = 0) -> list[str]:
        """The controller's route from this KM to ``destination_km`` for ``key_bits`` (D2.3
        clause 8.1 c)): KM IDs, this KM first."""
        return await self.routes.route_information(destination_km, key_bits)
