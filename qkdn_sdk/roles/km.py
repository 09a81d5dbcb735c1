"""The key manager (KM): acquires QKD-keys, keeps them, relays keys and supplies applications.

Theory of operation
-------------------
A :class:`KeyManager` serves four interfaces (each its own URL): Ak to applications (Q.4161),
Kq-1 to QKD modules that push keys (Q.4162 clause 7.1), Ck to the QKDN controller (Q.4164) and
the KM link to neighbouring KMs (D2.3 clause 7.1.3, :mod:`qkdn_sdk.messages.kx`). It calls out
through :class:`~qkdn_sdk.roles._peer.Dialer` connections: to the controller, to each neighbour,
and to QKD modules that supply keys on request (Q.4162 clause 7.2). Every key it holds lives in
its :class:`~qkdn_sdk.roles.keystore.KeyStore`, in pools:

``qkd:<neighbour>``
    QKD-keys of the link to ``<neighbour>`` that the neighbour may not hold yet.
``link:<neighbour>:out`` / ``link:<neighbour>:in``
    Link key units both ends hold (key ID synchronisation): those this KM spends sending to the
    neighbour, and those the neighbour spends sending here (:mod:`qkdn_sdk.roles.relay`).
``app:<source application>:<destination application>``
    Keys waiting for the destination application to fetch them by ID (Q.4161 clause 7.1.2).

Relayed keys that arrived but that the source KM has not confirmed yet are held in memory, not
in the store (a KM that stops could not have them confirmed anyway): the confirmation stores them
and takes the link units of their hop, one transaction. A transit KM takes the units of the hop
that came and of the hop it sends in one transaction too: a relay over ``h`` hops costs ``h + 1``
durable transactions and one read.

**Key supply upon request** (Q.4161 clause 7.1). A :class:`~qkdn_sdk.messages.ak.KeyRequest`
from the source application makes fresh keys. When the destination application is served here
they go to its ``app:`` pool at once. Otherwise they are relayed: the KM asks the controller for
the next hop (Q.4164 clause 7.1, distributed mode), spends link units of that hop on a one-time
pad and a one-time MAC and sends :class:`~qkdn_sdk.messages.kx.KeyRelay`; every transit KM does
the same towards the destination, which checks the end-to-end integrity value and holds the keys
*pending*, in memory. Only once the answer came back does the source KM send
:class:`~qkdn_sdk.messages.kx.KeyRelayConfirmation` along the same hops; the destination then
stores the keys in the ``app:`` pool, and only after that answer does the source application get
its keys and their IDs. A relay that fails anywhere fails the key request with a reason that
names the cause; keys it left pending are never supplied and are dropped after
``pending_timeout`` (or when the KM stops). The destination application fetches them once, with
:class:`~qkdn_sdk.messages.ak.KeyRequestWithId`: a key leaves the store exactly once.

**Link keys.** Modules push QKD-keys (``kq1.KeySupply``) or the KM fetches them
(``kq1.KeyRequest``); they wait in ``qkd:`` until the KM whose ID sorts first on the link sends
:class:`~qkdn_sdk.messages.kx.KeyIdSynchronizationRequest` with their IDs and the neighbour
answers with those it holds too: then both cut those keys into link units.

**Status.** Every ``report_interval`` the KM tells the controller how many bits it can spend
towards each neighbour (an unsolicited D2.3 Table 8-2 status information supply).

Nothing here knows which transport carries a message.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, TypeVar

import attrs
import trio

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import (
    FailureResponse,
    NotAuthorized,
    QkdnError,
    RequestRefused,
    TransportError,
    quoted,
)
from qkdn_sdk.messages import (
    Key,
    KeyId,
    Message,
    Role,
    ak,
    ck,
    failure_response,
    kq1,
    kx,
    mgmt,
    received_by,
)
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles._peer import Dialer
from qkdn_sdk.roles.keystore import (
    DuplicateKey,
    InsufficientKeys,
    KeyStore,
    KeyStoreError,
    StoredKey,
    UnknownKeys,
)
from qkdn_sdk.roles.qkd_module import Kq1Mode
from qkdn_sdk.roles.sessions import (
    SessionError,
    Sessions,
    session_application,
    session_pool,
)
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, serve

__all__ = [
    "INTERFACES",
    "ROUTE_TYPE_EXTENSION",
    "STATUS_PARAMETERS",
    "KMConfig",
    "KMLink",
    "KeyManager",
    "KeyManagerError",
    "Routing",
    "listen_interface",
]

logger = logging.getLogger("qkdn_sdk.roles.km")

_T = TypeVar("_T")

INTERFACES = ("ak", "ck", "kq1", "kx")
"""The interfaces a KM serves, each on its own URL."""
ROUTE_TYPE_EXTENSION = "route_type"
"""The ``extension_mandatory`` parameter of an ETSI 014 Get key a KM supports:
``{"route_type": "direct"}`` asks for keys no trusted node relays (the slave's KM is this KM
or a neighbour); ``"any"`` is the default."""
_MIN_SIZE_OF_KEY = 8
STATUS_PARAMETERS = ("key_amount", "key_generation_rate", "key_consumption_rate", "status")
"""The parameters of a KM link in this KM's status table (D2.3 Table 8-2)."""

_SENDER_BY_INTERFACE = {
    "ak": Role.APPLICATION,
    "ck": Role.CONTROLLER,
    "kq1": Role.QKD_MODULE,
    "kx": Role.KM,
}

_SYNC_BATCH = 256
"""QKD-key IDs in one key ID synchronisation request."""
_ACQUIRE_BATCH = 64
"""QKD-keys asked of a module in one Kq-1 key request."""
_KME_BATCH = 32
"""QKD-keys asked by ID of an ETSI 014 KME in one Get key with key IDs."""
_MAX_REROUTES = 4
"""Times a relay is tried again around an unreachable KM."""
_UNREACHABLE = re.compile(r"neighbour KM (.+?) is unreachable while")
_MAX_RESERVED_BITS = 1 << 24
"""At most this many bits of link key in one reservation."""
_COMMUNITY = "qkdn"
"""The HELLO community name of the KMs of one network."""
_AUTHENTICATION = "mtls"
"""HELLO authentication: the KM link's mutual TLS (the sender ID is its certificate's)."""
_LINK_SESSION_TIMER = 3600
_PUSH_BATCH = 16
"""Keys of a session pool read at a time to push them."""
_MAX_RELAY_BITS = 1 << 17
"""At most this many key bits in one key request (16 KiB): what a key relay and a response carry
stays well under the 65,535-byte payload (a relay of 128 keys of 1024 bits is about 49 KB: the
base64 pad and the IDs of its link key units; twice as many bits would not fit)."""


class KeyManagerError(QkdnError):
    """Why a KM refused a request: the text goes to the peer as the failure reason."""


class Routing(enum.Enum):
    """How a KM learns the route of a key relay (Q.4164 clause 7)."""

    DISTRIBUTED = "distributed"
    """Clause 7.1: every KM on the way asks the controller for its next hop (0x1401 -> 0x4102)."""
    CENTRALIZED = "centralized"
    """Clause 7.2: the source KM notifies the controller (0x1403), which sends it the whole
    route in a key relay request (0x4104); the KM answers that (0x1405) once the relay ended."""


def _who(reason: str) -> str:
    """A peer's failure text without its ``failure:`` prefix, to pass it on."""
    for prefix in ("failure: ", "failure:", "failure"):
        if reason.startswith(prefix):
            return reason[len(prefix) :].strip() or reason
    return reason


@attrs.frozen
class KMLink:
    """One QKD link of a KM: the neighbouring KM at its other end and our QKD module on it."""

    neighbour: str
    module_id: str
    """Our QKD module's ID (its certificate ID): the only module whose keys this link takes."""
    mode: Kq1Mode = Kq1Mode.PROACTIVE
    """Q.4162 mode: the module pushes keys to our Kq-1 URL, or we ask the module for them."""
    module_url: str | None = None
    """Where the module serves, when we ask it for keys (:attr:`Kq1Mode.ON_REQUEST`)."""
    kme_pair: bool = False
    """The link's key source is a pair of ETSI GS QKD 014 KMEs (QKD devices; Q.4162 Appendix
    II: the KMs are the SAEs) at ``module_url`` and at the neighbour: the KM whose ID sorts first
    gets keys with Get key, names them in the key ID synchronisation, and the neighbour fetches
    the same keys from its own KME with Get key with key IDs."""
    peer_sae_id: str | None = None
    """The neighbour's SAE ID at the KMEs (the slave of our Get key, the master of our Get key
    with key IDs); ``None``: the neighbour's KM ID."""
    tls: TLSConfig | None = None
    """TLS settings for the module or KME, when not the KM's own (a device with its own CA)."""

    @property
    def sae_of_neighbour(self) -> str:
        return self.peer_sae_id or self.neighbour

    def __attrs_post_init__(self) -> None:
        if self.mode is Kq1Mode.ON_REQUEST and self.module_url is None:
            raise ValueError(f"link to {self.neighbour}: on-request mode needs the module's URL")
        if self.kme_pair and self.mode is not Kq1Mode.ON_REQUEST:
            raise ValueError(f"link to {self.neighbour}: a KME pair is asked for keys (on-request)")


@attrs.frozen
class _Batch:
    """Keys a source KM made for a key request, to relay."""

    source: str
    destination: str
    key_ids: list[str]
    keys: list[bytes] = attrs.field(repr=False)
    size: int
    session_id: str | None = None
    direct: bool = False
    """Relay only to a neighbour (ETSI 014 ``{"route_type": "direct"}``): no trusted node."""

    def supplied(self) -> list[Key]:
        """The keys as a response to the source application carries them."""
        return [
            Key(key=key, key_id=key_id) for key_id, key in zip(self.key_ids, self.keys, strict=True)
        ]


@attrs.frozen
class _Received:
    """A relay received here (the destination), held until its confirmation."""

    pool: str
    """Where its keys go once confirmed."""
    keys: list[StoredKey] = attrs.field(repr=False)
    sender: str
    unit_ids: list[str]
    """The link units of the hop from ``sender``, taken with the confirmation."""


@attrs.define
class _Reservation:
    """Link units set aside towards ``next_km`` for relays from ``source_km`` to
    ``destination_km`` (Q.4164 clause 7.5), not yet allocated."""

    next_km: str
    source_km: str
    destination_km: str
    unit_ids: set[str]


@attrs.define
class _CentralRoute:
    """A relay this KM started in a centralized QKDN, between its key relay request
    notification and the end of the relay (Q.4164 Figure 2)."""

    routed: trio.Event = attrs.Factory(trio.Event)
    request: ck.KeyRelayRequest | None = None
    """The controller's key relay request, once it came."""
    ended: trio.Event = attrs.Factory(trio.Event)
    outcome: str = "failure: the relay was cancelled"
    """What the response to the controller's request says once ``ended`` is set."""


@attrs.frozen
class KMConfig:
    """What a KM is: its ID, where it listens, its links, its applications, its controller.

    The key supply limits are part of what the KM advertises: a key request may ask for at most
    ``max_key_per_request`` keys of at most ``max_size_of_key`` bits (a multiple of 8), and at
    most 131,072 bits in all, so every response and relay stays under the 65,535-byte payload.
    """

    km_id: str
    listen: Mapping[str, str]
    """URL per interface: ``{"ak": ..., "ck": ..., "kq1": ..., "kx": ...}`` (port 0: any); an
    interface served by another transport too has a second key ``"<interface>@<scheme>"``
    (``"ak@https": "https://..."``: Ak as ETSI GS QKD 014, Q.4161 Appendix II)."""
    controller_id: str
    links: tuple[KMLink, ...] = ()
    applications: frozenset[str] = frozenset()
    """The applications this KM serves (their certificate IDs)."""
    routing: Routing = Routing.DISTRIBUTED
    """How the relays this KM starts are routed."""
    session_lifetime: float = 3600.0
    """Seconds a proactive key supply session lasts (Q.4161 clause 7.2)."""
    default_session_keys: int = 1024
    """The most keys of a session whose creation request gives no ``number_of_keys``."""
    max_sessions_per_application: int = 64
    """Open sessions a source application may have at this KM."""
    hello_interval: float = 1.0
    """Seconds between two HELLOs to each neighbour (D2.3 Table 7-8): a neighbour that does
    not answer is reported down to the controller at once."""
    reservation_lifetime: float = 30.0
    """Seconds reserved link key waits for its allocation before it is released (Q.4164 clause
    7.5), unless the reservation request says otherwise (at most ten times as long)."""
    default_number_of_keys: int = 1
    default_size_of_key: int = 256
    max_key_per_request: int = 128
    max_size_of_key: int = 8192
    max_key_count: int = 100_000
    """The ETSI 014 ``max_key_count`` this KM reports: the most keys its status ever says it
    can supply to one pair of applications (``stored_key_count`` is never above it)."""
    max_sae_id_count: int = 4
    """The most ``additional_slave_SAE_IDs`` of an ETSI 014 Get key (key multicast); 0: none."""
    relay_timeout: float = 10.0
    """Seconds a hop waits for the next KM (and the controller) to answer."""
    pending_timeout: float = 60.0
    """Seconds relayed keys wait for their confirmation before they are dropped."""
    report_interval: float = 0.5
    """Seconds between two status reports to the controller."""
    sync_interval: float = 0.25
    """Seconds between two key ID synchronisations of a link (sooner when keys arrive)."""
    acquire_interval: float = 0.25
    """Seconds between two Kq-1 key requests to a module that supplies upon request."""

    def check_amount(self, number: int, size: int) -> None:
        """Raise :class:`~qkdn_sdk.errors.RequestRefused` saying why ``number`` keys of
        ``size`` bits are more than one key request may ask of this KM."""
        if number > self.max_key_per_request:
            raise RequestRefused(
                f"number_of_keys {number} is over this KM's max_key_per_request "
                f"({self.max_key_per_request})"
            )
        if size % 8:
            raise RequestRefused(
                f"size_of_key {size} is not a multiple of 8",
                etsi014_message=etsi014.SIZE_NOT_MULTIPLE_OF_8,
            )
        if not _MIN_SIZE_OF_KEY <= size <= self.max_size_of_key:
            raise RequestRefused(
                f"size_of_key {size} is outside this KM's {_MIN_SIZE_OF_KEY} to "
                f"{self.max_size_of_key} bits"
            )
        if number * size > _MAX_RELAY_BITS:
            raise RequestRefused(
                f"{number} keys of {size} bits are over the {_MAX_RELAY_BITS} bits one request "
                "may carry"
            )

    def __attrs_post_init__(self) -> None:
        for key in self.listen:
            listen_interface(key)
        neighbours = [link.neighbour for link in self.links]
        if len(set(neighbours)) != len(neighbours):
            raise ValueError(f"{self.km_id}: two links to the same neighbour")


def listen_interface(key: str) -> str:
    """The interface a key of :attr:`KMConfig.listen` serves: ``"ak"`` and ``"ak@https"`` both
    serve Ak. Raises :class:`ValueError` for anything else."""
    interface, at, scheme = key.partition("@")
    if interface not in INTERFACES or (at and not scheme):
        raise ValueError(
            f"unknown interface {key!r}: expected one of {list(INTERFACES)}, or "
            "<interface>@<scheme> for a second transport"
        )
    return interface


def _accepted(interface: str) -> frozenset[type[Message]]:
    sender = _SENDER_BY_INTERFACE[interface]
    return frozenset(cls for cls in received_by(Role.KM) if cls.sender in (sender, Role.ANY))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class KeyManager:
    """A KM role. ``await nursery.start(km.run)`` serves every interface of ``config.listen``
    and returns ``{interface: URL}``; cancelling it stops the KM.

    ``directory`` maps peer IDs (the controller, neighbouring KMs) to the URL that reaches
    them: for neighbours the KM-link (``kx``) URL, for the controller its Ck URL. It is read when
    a connection is opened, so a network can fill it in once every role listens.
    """

    def __init__(
        self,
        config: KMConfig,
        store: KeyStore,
        *,
        tls: TLSConfig | None = None,
        directory: Mapping[str, str] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._tls = tls
        self._directory: Mapping[str, str] = directory if directory is not None else {}
        self._limits = limits
        self._links_by_module = {link.module_id: link for link in config.links}
        self._neighbours: dict[str, Dialer] = {}
        self._controller: Dialer | None = None
        self._modules: dict[str, Dialer] = {}
        self._pending: dict[str, _Received] = {}
        """Relays received (destination), by ID. Held in memory: a KM that stops before the
        confirmation never supplies them."""
        self._pending_units: set[str] = set()
        """The link units of the relays in ``_pending``: no other hop may use them."""
        self._routes: dict[str, str] = {}  # relay ID -> next hop, for its confirmation
        self._central_routes: dict[str, _CentralRoute] = {}  # relays we started, centralized
        self._unreachable: set[str] = set()
        self.link_sessions: dict[str, str] = {}
        self._answering: set[str] = set()  # neighbours whose latest HELLO was answered
        """The link session (D2.3 Table 7-9) with each neighbour that answers HELLOs."""
        self._reservations: dict[str, _Reservation] = {}
        """Neighbours the last request to failed to reach: their links carry no relay."""
        self._sessions = Sessions(
            lifetime=config.session_lifetime, per_application=config.max_sessions_per_application
        )
        self._applications: dict[str, Connection] = {}
        """The latest authenticated connection of each application: where session creation
        notifications and proactive key supply go."""
        self._push_wanted: dict[str, trio.Event] = {}
        self._pushing: dict[str, trio.Lock] = {}
        """Per application: held by a push loop from peeking keys until it took those pushed, so
        the loop of its next connection never pushes again a key acknowledged meanwhile."""
        self._sync_wanted = {link.neighbour: trio.Event() for link in config.links}
        self._sync_rounds: dict[str, trio.Event] = {}
        """Per neighbour, the latest key ID synchronisation we sent (or, answering them, the
        cutting of the keys of the latest we answered): set once it ended."""
        self._link_ready: set[str] = set()
        self._handlers: dict[str, Callable[[Message, Connection], Awaitable[Message | None]]] = {
            "ak": self._handle_ak,
            "ck": self._handle_ck,
            "kq1": self._handle_kq1,
            "kx": self._handle_kx,
        }
        """The handler of each interface, on the connections we serve and those we open."""
        self._nursery: trio.Nursery | None = None
        self._link_changed = trio.Event()
        self.spent_bits: dict[str, int] = {link.neighbour: 0 for link in config.links}
        """Link key bits this KM spent sending towards each neighbour (relays and MACs)."""
        self.generated_bits: dict[str, int] = {link.neighbour: 0 for link in config.links}
        """Link key bits this KM got to spend towards each neighbour (cut from QKD-keys)."""
        self._rates_since = (trio.current_time(), dict(self.generated_bits), dict(self.spent_bits))
        self._report_period: float = config.report_interval
        self._report_wanted = trio.Event()
        self.relays = {"started": 0, "forwarded": 0, "received": 0}
        self.pushed: dict[str, int] = {}
        """Session keys each application acknowledged, each taken from the store since."""
        self._pushed_more = trio.Event()
        """Relays this KM started (source), forwarded (transit) and received (destination)."""

    @property
    def km_id(self) -> str:
        return self.config.km_id

    @property
    def pending_key_ids(self) -> dict[str, list[str]]:
        """The key IDs of each relay received here and not confirmed yet, by key relay request
        ID (none of them can be fetched)."""
        return {
            relay_id: [key.key_id for key in received.keys]
            for relay_id, received in self._pending.items()
        }

    async def run(
        self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled. Keys that earlier versions left pending in the store are
        discarded first, and link key a previous run reserved goes back to its links (its
        allocated key stays allocated)."""
        discarded = await self.store.discard_prefix("pending:")
        if discarded:
            logger.info("%s: discarded %d relayed keys never confirmed", self.km_id, discarded)
        for pool in list(self.store.counts("reserved:")):  # reservations lived in memory
            await self.store.move(pool, _out_pool(pool.split(":")[1]))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._make_dialers(nursery)
            urls: dict[str, str] = {}
            for key, url in self.config.listen.items():
                interface = listen_interface(key)
                info: ServerInfo = await nursery.start(
                    partial(
                        serve,
                        url,
                        self._handlers[interface],
                        tls=self._tls,
                        identity=self.km_id,
                        limits=self._limits,
                        accepts=_accepted(interface),
                    )
                )
                urls[key] = info.url
            for link in self.config.links:
                nursery.start_soon(self._hello, link.neighbour)
                if self.km_id < link.neighbour:
                    nursery.start_soon(self._synchronise, link.neighbour)
                if link.mode is Kq1Mode.ON_REQUEST and (
                    not link.kme_pair or self.km_id < link.neighbour
                ):  # of a KME pair, the neighbour fetches by ID what we name
                    nursery.start_soon(self._acquire, link)
            nursery.start_soon(self._report_status)
            task_status.started(urls)

    def _make_dialers(self, nursery: trio.Nursery) -> None:
        def dial(
            peer: str, interface: str, url: str | None = None, tls: TLSConfig | None = None
        ) -> Dialer:
            return Dialer(
                nursery,
                url=url or self._directory.get(peer),
                tls=tls or self._tls,
                identity=self.km_id,
                handler=self._handlers[interface],
                accepts=_accepted(interface),
                limits=self._limits,
                connect_timeout=self.config.relay_timeout,
            )

        self._controller = dial(self.config.controller_id, "ck")
        for link in self.config.links:
            self._neighbours[link.neighbour] = dial(link.neighbour, "kx")
            if link.mode is Kq1Mode.ON_REQUEST:
                self._modules[link.neighbour] = dial(
                    link.module_id, "kq1", link.module_url, link.tls
                )

    def _dialer(self, peer: str) -> Dialer:
        dialer = self._neighbours.get(peer, self._controller)
        assert dialer is not None
        dialer.url = self._directory.get(peer, dialer.url)  # a restarted peer may have moved
        return dialer

    def link_key_bits(self, neighbour: str) -> int:
        """Bits of link key this KM can spend towards ``neighbour`` now."""
        return self.store.count(_out_pool(neighbour)) * otp.UNIT_BITS

    async def wait_link_key(self, neighbour: str, bits: int) -> None:
        """Return once this KM can spend ``bits`` towards ``neighbour``."""
        while self.link_key_bits(neighbour) < bits:
            await self._link_changed.wait()

    async def wait_pushed(self, application: str, count: int) -> None:
        """Return once ``application`` acknowledged ``count`` session keys pushed to it, and
        each was taken from the store (Q.4161 clause 7.2.4)."""
        while self.pushed.get(application, 0) < count:
            await self._pushed_more.wait()

    async def wait_link_change(self) -> None:
        """Return at the next change of this KM's link keys (units cut, spent, reserved,
        allocated or released)."""
        await self._link_changed.wait()

    def reserved_bits(self, neighbour: str) -> int:
        """Bits of link key towards ``neighbour`` reserved and not yet allocated."""
        return sum(self.store.counts(_reserved_pool(neighbour, "")).values()) * otp.UNIT_BITS

    def allocated_bits(self, neighbour: str) -> int:
        """Bits of link key towards ``neighbour`` allocated to relays (Q.4164 clause 7.6)."""
        return sum(self.store.counts(f"allocated:{neighbour}:").values()) * otp.UNIT_BITS

    def _notify_link_change(self) -> None:
        self._link_changed.set()
        self._link_changed = trio.Event()

    # --- Ak: applications (Q.4161) ------------------------------------------------------------

    async def _handle_ak(self, message: Message, connection: Connection) -> Message | None:
        if isinstance(message, ak.KeyRequest):
            return await self._key_request(message, connection)
        if isinstance(message, ak.KeyRequestWithId):
            return await self._key_request_with_id(message, connection)
        if isinstance(message, mgmt.AuthenticationCommand):
            return await self._authenticate(message, connection)
        if isinstance(message, ak.SessionCreationRequest):
            return await self._session_creation_request(message, connection)
        if isinstance(message, ak.KeyRequestWithSessionId):
            return await self._key_request_with_session_id(message, connection)
        if isinstance(message, mgmt.KeyDeletionCommand):
            return await self._key_deletion(message, connection)
        if isinstance(message, mgmt.KeySupplyCommand):
            return await self._key_supply_command(message, connection)
        if isinstance(message, ak.StatusRequest):
            return await self._status(message, connection)
        return _not_supported(message)

    async def _status(self, request: ak.StatusRequest, connection: Connection) -> ak.Status:
        """ETSI 014 Get status (Q.4161 Appendix II): what this KM can supply to the caller for
        keys shared with ``application_destination_id``. For an application of this KM keys
        are made on demand (``max_key_count``); for another, as many keys of ``key_size`` as
        the link key towards the first hop pays for (the controller names the hop and the
        slave's KM). Nothing is spent."""
        master = self._application(request.application_source_id, connection)
        slave = request.application_destination_id
        size = self.config.default_size_of_key
        if slave in self.config.applications:
            target_km, count = self.km_id, self.config.max_key_count
        else:
            target_km, next_km = await self._next_hop(application=slave, bits=otp.UNIT_BITS)
            units = self.store.count(_out_pool(next_km))
            count = max(0, (units - 2) * otp.UNIT_BYTES // (size // 8))
        return ak.Status(
            source_kme_id=self.km_id,
            target_kme_id=target_km,
            master_sae_id=master,
            slave_sae_id=slave,
            key_size=size,
            stored_key_count=min(count, self.config.max_key_count),
            max_key_count=self.config.max_key_count,
            max_key_per_request=self.config.max_key_per_request,
            max_key_size=self.config.max_size_of_key,
            min_key_size=_MIN_SIZE_OF_KEY,
            max_sae_id_count=self.config.max_sae_id_count,
        )

    async def _key_supply_command(
        self, command: mgmt.KeySupplyCommand, connection: Connection
    ) -> mgmt.KeySupplyResponse:
        """D2.3 Tables 7-4, 7-5, on the same keys as Q.4161: for encryption (the default), new
        keys shared with the application ``target_id`` (in ``session_id`` when given, as a key
        request with session ID; otherwise as a key request); for decryption, the key
        ``key_id`` that ``target_id`` got for us (as a key request with ID)."""
        application = self._application(command.sender_id, connection)
        if command.application_code is mgmt.ApplicationCode.DECRYPTION:
            if command.key_id is None:
                raise KeyManagerError("a key supply for decryption names its key: key_id")
            supplied = await self._key_request_with_id(
                ak.KeyRequestWithId(
                    application_source_id=command.target_id,
                    application_destination_id=application,
                    key_ids=[KeyId(key_id=command.key_id)],
                ),
                connection,
            )
            keys = supplied.keys
        elif command.session_id is not None:
            in_session = await self._key_request_with_session_id(
                ak.KeyRequestWithSessionId(
                    session_id=command.session_id,
                    number_of_keys=command.key_amount,
                    size_of_key=command.key_size,
                ),
                connection,
            )
            keys = in_session.keys
        else:
            fresh = await self._key_request(
                ak.KeyRequest(
                    application_source_id=application,
                    application_destination_id=command.target_id,
                    number_of_keys=command.key_amount,
                    size_of_key=command.key_size,
                ),
                connection,
            )
            keys = fresh.keys
        return mgmt.KeySupplyResponse(
            sender_id=self.km_id,
            source_id=command.source_id,
            target_id=command.target_id,
            session_id=command.session_id,
            application_code=command.application_code,
            key_amount=len(keys),
            key_size=8 * len(keys[0].key),  # what was asked, or the size of the key by ID
            key_id=command.key_id,
            key_data=keys,
            response_code=mgmt.KeySupplyResponseCode.SUCCESS,
        )

    def _application(self, claimed: str | None, connection: Connection) -> str:
        application = connection.peer_id or claimed
        if application is None:
            raise KeyManagerError("say which application sends this (its ID)")
        if application not in self.config.applications:
            raise NotAuthorized(f"application {quoted(application)} is not served by {self.km_id}")
        return application

    async def _key_request(
        self, request: ak.KeyRequest, connection: Connection
    ) -> ak.ResponseToKeyRequest:
        """Q.4161 clause 7.1.1: fresh keys for the source application, shared with the
        destination application (relayed to its KM when that is another)."""
        source = self._application(request.application_source_id, connection)
        destination = request.application_destination_id
        number = request.number_of_keys or self.config.default_number_of_keys
        size = request.size_of_key or self.config.default_size_of_key
        self.config.check_amount(number, size)
        options = etsi014.key_request_options(request)
        direct = self._route_type(options.mandatory)
        destinations = [destination, *self._additional_slaves(options.additional_slaves)]
        if source in destinations:
            raise RequestRefused("the destination application is the source application")
        key_ids, keys = _fresh_keys(number, size)
        if len(destinations) > 1:
            await self._check_multicast(destinations, direct=direct)
        for slave in destinations:  # the same keys for every slave (ETSI 014 key multicast)
            batch = _Batch(source, slave, key_ids, keys, size, direct=direct)
            if slave in self.config.applications:
                await self._hold(batch, _app_pool(source, slave))
            else:
                await self._relay(batch)
        logger.info(
            "%s: %d keys of %d bits for %s -> %s",
            self.km_id,
            number,
            size,
            source,
            ", ".join(destinations),
        )
        return ak.ResponseToKeyRequest(keys=batch.supplied(), response="success")

    def _route_type(self, mandatory: list[Any]) -> bool:
        """Whether the ``extension_mandatory`` of an ETSI 014 Get key asks for a direct route
        (:data:`ROUTE_TYPE_EXTENSION`); any parameter this KM does not support is refused."""
        direct = False
        for parameter in mandatory:
            if not isinstance(parameter, dict) or set(parameter) != {ROUTE_TYPE_EXTENSION}:
                raise RequestRefused(
                    f"this KM supports only {{{ROUTE_TYPE_EXTENSION!r}: 'direct' or 'any'}} in "
                    f"extension_mandatory, not {quoted(str(parameter), 80)}",
                    etsi014_message=etsi014.MANDATORY_EXTENSION_UNSUPPORTED,
                )
            value = parameter[ROUTE_TYPE_EXTENSION]
            if value not in ("direct", "any"):
                raise RequestRefused(
                    f"{ROUTE_TYPE_EXTENSION} {quoted(str(value))} is not 'direct' or 'any'",
                    etsi014_message=etsi014.MANDATORY_EXTENSION_UNSUPPORTED,
                )
            direct = direct or value == "direct"
        return direct

    def _additional_slaves(self, slaves: list[Any]) -> list[str]:
        """The ``additional_slave_SAE_IDs`` of an ETSI 014 Get key, checked."""
        if len(slaves) > self.config.max_sae_id_count:
            raise RequestRefused(
                f"{len(slaves)} additional_slave_SAE_IDs are over this KM's max_SAE_ID_count "
                f"({self.config.max_sae_id_count})"
            )
        if not all(isinstance(slave, str) and slave for slave in slaves):
            raise RequestRefused("additional_slave_SAE_IDs must be application IDs")
        return slaves

    async def _check_multicast(self, slaves: list[str], *, direct: bool) -> None:
        """Refuse a key multicast this KM cannot make, before any key is made: a slave named
        twice, or two slaves served by one KM (a KM holds a key ID once). Asks the controller
        where each remote slave is (nothing is spent)."""
        if len(set(slaves)) != len(slaves):
            raise RequestRefused("a slave application is named twice")
        at: dict[str, str] = {}
        for slave in slaves:
            if slave in self.config.applications:
                km = self.km_id
            else:
                km, next_km = await self._next_hop(application=slave, bits=otp.UNIT_BITS)
                if direct and km != next_km:
                    raise _not_direct(slave, km)
            if km in at:
                raise RequestRefused(
                    f"slaves {quoted(at[km])} and {quoted(slave)} are both served by {km}: one "
                    "KM holds a key ID once, so they cannot share keys by multicast"
                )
            at[km] = slave

    async def _key_request_with_id(
        self, request: ak.KeyRequestWithId, connection: Connection
    ) -> ak.ResponseToKeyRequest:
        """Q.4161 clause 7.1.2: the destination application fetches, once, the keys the source
        application got; only keys meant for it."""
        destination = self._application(request.application_destination_id, connection)
        key_ids = [key_id.key_id for key_id in request.key_ids]
        if len(key_ids) > self.config.max_key_per_request:
            raise RequestRefused(
                f"{len(key_ids)} key IDs are over this KM's max_key_per_request "
                f"({self.config.max_key_per_request})"
            )
        pool = _app_pool(request.application_source_id, destination)
        try:
            stored = await self.store.take_ids(pool, key_ids)
        except UnknownKeys as exc:
            held = await self.store.pools_of(exc.missing)
            if any(
                pool.startswith("app:") and not pool.endswith(f":{destination}")
                for pool in held.values()
            ):
                raise NotAuthorized(  # ETSI 014: 401 to a caller that is not the keys' slave
                    f"{quoted(destination)} is not the application the keys were made for"
                ) from None
            raise RequestRefused(
                f"{len(exc.missing)} of the {len(key_ids)} keys are not held for "
                f"{quoted(destination)} from {quoted(request.application_source_id)} (unknown, "
                "or already supplied)",
                etsi014_message=etsi014.KEYS_NOT_FOUND,
            ) from None
        logger.info(
            "%s: %d keys supplied to %s from %s",
            self.km_id,
            len(stored),
            destination,
            request.application_source_id,
        )
        return ak.ResponseToKeyRequest(
            keys=[Key(key=key.key, key_id=key.key_id) for key in stored], response="success"
        )

    # --- Ak: proactive key supply sessions (Q.4161 clause 7.2) --------------------------------

    async def _authenticate(
        self, command: mgmt.AuthenticationCommand, connection: Connection
    ) -> mgmt.AuthenticationResponse:
        """D2.3 clause 7.2.1 a): an application served here authenticates; its ID is the one
        its certificate holds (the transport refuses another ``sender_id``). The KM then
        authenticates to it in turn (mutual authentication) before it answers. The connection
        then receives the application's session creation notifications and proactive key
        supplies."""
        application = self._application(command.sender_id, connection)
        ours = mgmt.KMAuthenticationCommand(
            sender_id=self.km_id, authentication_info=_AUTHENTICATION
        )
        try:
            await connection.request(ours, timeout=self.config.relay_timeout)
        except QkdnError as exc:
            raise KeyManagerError(
                f"application {quoted(application)} did not accept {self.km_id}'s "
                f"authentication: {exc}"
            ) from None
        self._applications[application] = connection
        self._wake_pusher(application)  # the pusher of its previous connection ends
        assert self._nursery is not None
        self._nursery.start_soon(self._push_session_keys, application, connection)
        logger.info("%s: application %s authenticated", self.km_id, application)
        return mgmt.AuthenticationResponse(
            sender_id=self.km_id, response_code=mgmt.ResultCode.SUCCESS
        )

    async def _session_creation_request(
        self, request: ak.SessionCreationRequest, connection: Connection
    ) -> ak.ResponseToSessionCreationRequest:
        """Q.4161 clause 7.2.1 (Figure 3), with Q.4164 clause 7.3: the controller makes the
        session ID and has the destination KM notify its application; an application of this
        KM is notified here."""
        session_id = str(uuid.uuid4())  # this attempt's; the controller's replaces it
        try:
            source = self._application(request.application_source_id, connection)
            destination = request.application_destination_id
            if destination == source:
                raise KeyManagerError("the destination application is the source application")
            max_keys = request.number_of_keys or self.config.default_session_keys
            if destination in self.config.applications:
                await self._notify_session(session_id, destination, source, max_keys)
                destination_km = self.km_id
            else:
                session_id, destination_km = await self._session_from_controller(
                    source, destination, max_keys
                )
            self._sessions.open(
                session_id,
                source=source,
                destination=destination,
                source_km=self.km_id,
                destination_km=destination_km,
                max_keys=max_keys,
            )
        except (KeyManagerError, NotAuthorized, SessionError) as exc:  # Table 5: why, with an ID
            logger.info("%s: no session: %s", self.km_id, exc)
            return ak.ResponseToSessionCreationRequest(
                session_id=session_id,
                response=f"failure: {_who(str(exc))}",
                source_km_id=self.km_id,
            )
        logger.info("%s: session %s of %s with %s", self.km_id, session_id, source, destination)
        return ak.ResponseToSessionCreationRequest(
            session_id=session_id, response="success", source_km_id=self.km_id
        )

    async def _session_from_controller(
        self, source: str, destination: str, max_keys: int
    ) -> tuple[str, str]:
        """``(session ID, destination KM)`` from the controller (Q.4164 clause 7.3)."""
        request = ck.SessionCreationRequest(
            application_source_id=source,
            application_destination_id=destination,
            number_of_keys=max_keys,
        )
        # the destination KM asks its application before the controller answers
        response = await self._ask_controller(request, timeout=2 * self.config.relay_timeout)
        assert isinstance(response, ck.ResponseToSessionCreationRequest)
        return response.session_id, response.destination_km_id

    async def _notify_session(
        self, session_id: str, destination: str, source: str, max_keys: int
    ) -> None:
        """Q.4161 clause 7.2.2 (Figure 4): tell ``destination``, an application of ours, that
        ``source`` opened a session with it; raises :class:`KeyManagerError` unless it
        accepts."""
        connection = self._applications.get(destination)
        if connection is None:
            raise KeyManagerError(
                f"application {quoted(destination)} is not connected to {self.km_id} (it "
                "authenticates to receive sessions)"
            )
        notification = ak.SessionCreationNotification(
            application_source_id=destination,  # Table 6: the application that receives it
            application_destination_id=source,
            session_id=session_id,
            number_of_keys=max_keys,
        )
        try:
            await connection.request(notification, timeout=self.config.relay_timeout)
        except FailureResponse as exc:
            raise KeyManagerError(
                f"application {quoted(destination)} refused the session: {_who(exc.reason)}"
            ) from None
        except QkdnError as exc:
            raise KeyManagerError(
                f"application {quoted(destination)} did not answer the session creation "
                f"notification ({exc})"
            ) from None

    async def _on_session_creation_notification(
        self, notification: ck.SessionCreationNotification
    ) -> ck.ResponseToSessionCreationNotification:
        """Q.4164 clause 7.4: the controller opens a session with one of our applications."""
        destination = notification.application_destination_id
        if destination not in self.config.applications:
            raise KeyManagerError(
                f"application {quoted(destination)} is not served by {self.km_id}"
            )
        max_keys = notification.number_of_keys or self.config.default_session_keys
        await self._notify_session(
            notification.session_id, destination, notification.application_source_id, max_keys
        )
        try:
            self._sessions.open(
                notification.session_id,
                source=notification.application_source_id,
                destination=destination,
                source_km=notification.source_km_id,
                destination_km=self.km_id,
                max_keys=max_keys,
            )
        except SessionError as exc:
            raise KeyManagerError(str(exc)) from None
        return ck.ResponseToSessionCreationNotification(
            session_id=notification.session_id, response="success"
        )

    async def _key_request_with_session_id(
        self, request: ak.KeyRequestWithSessionId, connection: Connection
    ) -> ak.ResponseToKeyRequestWithSessionId:
        """Q.4161 clause 7.2.3 (Figure 5): keys of a session for its source application; the
        destination KM pushes the same keys to the destination application (clause 7.2.4)."""
        source = self._application(None, connection)  # Table 8 names no application
        number = request.number_of_keys or self.config.default_number_of_keys
        size = request.size_of_key or self.config.default_size_of_key
        self.config.check_amount(number, size)
        try:
            session = self._sessions.supply(request.session_id, source, number)
        except SessionError as exc:
            raise KeyManagerError(str(exc)) from None
        batch = _Batch(
            source, session.destination, *_fresh_keys(number, size), size, session.session_id
        )
        try:
            if session.destination_km == self.km_id:
                await self._hold(batch, session_pool(session.destination, session.session_id))
                self._wake_pusher(session.destination)
            else:
                await self._relay(batch)
        except BaseException:
            self._sessions.refund(session, number)
            raise
        return ak.ResponseToKeyRequestWithSessionId(
            session_id=session.session_id, keys=batch.supplied(), response="success"
        )

    async def _hold(self, batch: _Batch, pool: str) -> None:
        """Store ``batch``, made here for an application of ours, in ``pool``."""
        metadata = _ksa_metadata(batch.source, batch.destination, batch.size)
        await self.store.put(
            [
                StoredKey(key_id, pool, key, metadata)
                for key_id, key in zip(batch.key_ids, batch.keys, strict=True)
            ]
        )

    def _wake_pusher(self, application: str) -> None:
        self._push_wanted.setdefault(application, trio.Event()).set()

    async def _push_session_keys(self, application: str, connection: Connection) -> None:
        """Q.4161 clause 7.2.4 (Figure 6): push every key held for ``application`` in its
        sessions over ``connection``, one proactive key supply per key, taking each key from
        the store only once the application acknowledged it: keys not acknowledged are pushed
        again to its next authenticated connection, acknowledged ones never."""
        prefix = session_pool(application, "")
        pushing = self._pushing.setdefault(application, trio.Lock())
        while self._applications.get(application) is connection:
            wanted = self._push_wanted[application] = trio.Event()
            acknowledged = 0
            async with pushing:  # after the loop of an earlier connection took what it pushed
                if self._applications.get(application) is not connection:
                    return
                for pool in sorted(self.store.counts(prefix)):
                    session_id = pool.rpartition(":")[2]
                    for key in await self.store.peek(pool, _PUSH_BATCH):
                        supply = ak.ProactiveKeySupply(
                            session_id=session_id, keys=[Key(key=key.key, key_id=key.key_id)]
                        )
                        try:
                            response = await connection.request(
                                supply, timeout=self.config.relay_timeout
                            )
                        except FailureResponse as exc:  # kept, and pushed again when woken
                            logger.warning(
                                "%s: %s refused a key of session %s: %s",
                                self.km_id,
                                application,
                                session_id,
                                exc.reason,
                            )
                            break
                        except QkdnError:  # gone: its next connection gets the keys
                            if self._applications.get(application) is connection:
                                del self._applications[application]
                            return
                        assert isinstance(response, ak.ResponseToProactiveKeySupply)
                        if response.key_id != key.key_id:
                            logger.warning(
                                "%s: %s acknowledged key %s for key %s",
                                self.km_id,
                                application,
                                quoted(response.key_id),
                                key.key_id,
                            )
                            break
                        taken = len(await self.store.take_present(pool, [key.key_id]))
                        acknowledged += taken
                        self.pushed[application] = self.pushed.get(application, 0) + taken
                        self._pushed_more.set()
                        self._pushed_more = trio.Event()
            if not (acknowledged and self.store.counts(prefix)):
                await wanted.wait()  # new keys, or another connection of the application

    async def _key_deletion(
        self, command: mgmt.KeyDeletionCommand, connection: Connection
    ) -> mgmt.KeyDeletionResponse:
        """D2.3 Table 7-6: an application deletes keys held for it (``key_ids``), or ends a
        session of its own (``session_id`` alone), deleting what is still held for it in that
        session. Keys held for other applications are never touched."""
        application = self._application(command.sender_id, connection)
        deleted = 0
        if command.key_ids:
            key_ids = [key_id.key_id for key_id in command.key_ids]
            pools = [
                pool
                for pool in self.store.counts()
                if pool.startswith(session_pool(application, ""))
                or (pool.startswith("app:") and pool.endswith(f":{application}"))
            ]
            for pool in pools:
                deleted += len(await self.store.take_present(pool, key_ids))
        elif command.session_id is not None:
            try:
                session = self._sessions.end(
                    command.session_id, application, f"ended by {application}"
                )
            except SessionError as exc:
                raise KeyManagerError(str(exc)) from None
            if session.destination == application:
                deleted = await self.store.discard(session_pool(application, session.session_id))
        else:
            raise KeyManagerError("say which keys to delete: key_ids, or a session_id")
        logger.info("%s: %s deleted %d keys", self.km_id, application, deleted)
        return mgmt.KeyDeletionResponse(
            sender_id=self.km_id,
            source_id=command.source_id,
            target_id=command.target_id,
            session_id=command.session_id,
            application_code=command.application_code,
            response_code=mgmt.ResultCode.SUCCESS,
        )

    # --- key relay (D2.3 clause 7.1.3) -----------------------------------------------------

    async def _relay(self, batch: _Batch) -> None:
        """Relay ``batch`` to the KM of its destination and have it confirm them; raises
        :class:`KeyManagerError` naming the cause when anything fails on the way.

        A relay that fails because a KM on the way is unreachable is tried again on a route
        that avoids it (the extension ``{"avoid_kma_ids": [...]}`` of the route requests and of
        the relay), as long as the controller finds one; nothing of the failed attempt is
        usable (it was never confirmed)."""
        avoid: list[str] = []
        first: KeyManagerError | None = None
        while True:
            try:
                await self._relay_once(batch, avoid)
                return
            except KeyManagerError as exc:
                down = _unreachable_km(str(exc))
                if down is None or down in avoid or len(avoid) >= _MAX_REROUTES:
                    if first is None:
                        raise
                    raise KeyManagerError(f"{first}; then, around it: {exc}") from None
                first = first or exc
                avoid.append(down)
                logger.info(
                    "%s: KM %s is unreachable; relaying to %s around it",
                    self.km_id,
                    down,
                    batch.destination,
                )

    async def _relay_once(self, batch: _Batch, avoid: list[str]) -> None:
        relay_id = str(uuid.uuid4())
        keys, key_ids, size, destination = batch.keys, batch.key_ids, batch.size, batch.destination
        mac_key = secrets.token_bytes(otp.MAC_KEY_BYTES)
        plaintext = otp.relay_plaintext(mac_key, keys)
        bits = otp.units_for(len(plaintext)) * otp.UNIT_BITS
        central = None
        if self.config.routing is Routing.CENTRALIZED:
            central = self._central_routes[relay_id] = _CentralRoute()
        try:
            transit = None
            if central is not None:
                destination_km, transit = await self._whole_route(
                    relay_id, destination, bits, central, avoid
                )
                next_km = transit[0]
            else:
                destination_km, next_km = await self._next_hop(
                    application=destination, bits=bits, avoid=avoid
                )
            if batch.direct and (transit or [next_km]) != [destination_km]:
                raise _not_direct(destination, destination_km)
            relay = kx.KeyRelay(
                key_relay_request_id=relay_id,
                sender_kma_id=self.km_id,
                source_kma_id=self.km_id,
                destination_kma_id=destination_km,
                application_source_id=batch.source,
                application_destination_id=destination,
                session_id=batch.session_id,
                transit_kma_ids=transit,
                key_ids=[KeyId(key_id=key_id) for key_id in key_ids],
                size_of_key=size,
                link_key_ids=["-"],
                encrypted_key=b"",
                relay_metadata=kx.RelayMetadata(kma_key_metadata={"key_length": size}),
                integrity_value=otp.end_to_end_tag(mac_key, key_ids, keys),
                message_authentication_code=b"",
                extension=[{ck.AVOID_EXTENSION: avoid}] if avoid else None,
            )
            await self._send(relay, plaintext, next_km)
            confirmation = kx.KeyRelayConfirmation(
                key_relay_request_id=relay_id,
                sender_kma_id=self.km_id,
                source_kma_id=self.km_id,
                destination_kma_id=destination_km,
            )
            await self._ask_neighbour(next_km, confirmation, "confirming the relay")
            self.relays["started"] += 1
            if central is not None:
                central.outcome = "success"
        except QkdnError as exc:
            if central is not None:
                central.outcome = f"failure: {exc}"
            raise
        finally:
            if central is not None:
                central.ended.set()
                del self._central_routes[relay_id]

    async def _whole_route(
        self,
        relay_id: str,
        destination: str,
        bits: int,
        central: _CentralRoute,
        avoid: list[str],
    ) -> tuple[str, list[str]]:
        """``(destination KM, the KMs after us up to it)`` from the controller in a centralized
        QKDN (Q.4164 clause 7.2): a key relay request notification, then the controller's key
        relay request, which :meth:`_on_key_relay_request` hands over."""
        controller = self.config.controller_id
        notification = ck.KeyRelayRequestNotification(
            source_kma_id=self.km_id,
            application_destination_id=destination,
            extension=[
                {
                    ck.KEY_BITS_EXTENSION: bits,
                    ck.RELAY_ID_EXTENSION: relay_id,
                    ck.AVOID_EXTENSION: avoid,
                }
            ],
        )
        with self._reaching_controller():
            await self._dialer(controller).send(notification)
        with trio.move_on_after(self.config.relay_timeout):
            await central.routed.wait()
        request = central.request
        if request is None:
            raise KeyManagerError(
                f"the QKDN controller {controller} sent no key relay request within "
                f"{self.config.relay_timeout:g} s"
            )
        for item in request.extension or ():
            if isinstance(item.get("error_message"), str):
                raise KeyManagerError(_who(item["error_message"]))
        transit = request.transit_kma_ids
        destination_km = request.destination_kma_id
        if not transit or transit[0] not in self._neighbours or transit[-1] != destination_km:
            raise KeyManagerError(
                f"the controller's route {transit} to {quoted(str(destination_km))} does not start "
                f"at a neighbour of {self.km_id} or end at the destination KM"
            )
        return destination_km, transit

    async def _next_hop(
        self,
        *,
        bits: int,
        application: str | None = None,
        km: str | None = None,
        avoid: list[str] | None = None,
    ) -> tuple[str, str]:
        """``(destination KM, next hop)`` from the controller (Q.4164 clause 7.1)."""
        assert self._controller is not None
        request = ck.KeyRelayNextHopRequest(
            source_kma_id=self.km_id,
            destination_kma_id=km,
            application_destination_id=application,
            extension=[{ck.KEY_BITS_EXTENSION: bits, ck.AVOID_EXTENSION: avoid or []}],
        )
        response = await self._ask_controller(request)
        assert isinstance(response, ck.ResponseToKeyRelayNextHopRequest)
        destination_km = response.destination_kma_id or km
        next_km = response.next_kma_ids[0]
        if destination_km is None or next_km not in self._neighbours:
            raise KeyManagerError(
                f"the controller named {quoted(next_km)} as next hop from {self.km_id}, "
                "which is not a neighbour"
            )
        return destination_km, next_km

    async def _send(self, relay: kx.KeyRelay, plaintext: bytes, next_km: str) -> None:
        """At the source: spend link units towards ``next_km`` on ``plaintext``, send the hop."""
        needed = otp.units_for(len(plaintext))
        try:
            units = await self.store.take(self._spending_pool(relay, next_km, needed), needed)
        except InsufficientKeys as exc:
            raise self._not_enough_key(next_km, exc, needed) from None
        await self._send_hop(relay, plaintext, next_km, units)

    async def _pass_on(self, relay: kx.KeyRelay, sender: str, next_km: str) -> None:
        """At a trusted node: take the units the hop from ``sender`` came with and those of the
        hop to ``next_km`` in one transaction, unseal it, and send it on. (Should the hop then
        fail its MAC, both are spent: only ``sender``, our authenticated neighbour, can have
        named units we hold, and it could spend ours as well with hops that pass.)"""
        needed = otp.units_for(len(relay.encrypted_key))
        pool = self._spending_pool(relay, next_km, needed)
        try:
            received, units = await self._with_received_units(
                sender,
                lambda: self.store.take_ids_and_oldest(
                    _in_pool(sender), relay.link_key_ids, pool, needed
                ),
            )
        except InsufficientKeys as exc:
            await self._spend_received(sender, relay.link_key_ids)
            raise self._not_enough_key(next_km, exc, needed) from None
        plaintext = otp.unseal(relay, [unit.key for unit in received])
        await self._send_hop(relay, plaintext, next_km, units)

    def _spending_pool(self, relay: kx.KeyRelay, next_km: str, needed: int) -> str:
        """The key allocated to the relay's source and destination towards ``next_km`` when it
        holds ``needed`` units, else the link's own."""
        allocated = _allocated_pool(next_km, relay.source_kma_id, relay.destination_kma_id)
        return allocated if self.store.count(allocated) >= needed else _out_pool(next_km)

    def _not_enough_key(self, next_km: str, exc: InsufficientKeys, needed: int) -> KeyManagerError:
        return KeyManagerError(
            f"not enough key on link {self.km_id}-{next_km}: {exc.available * otp.UNIT_BITS}"
            f" bits, {needed * otp.UNIT_BITS} needed"
        )

    async def _send_hop(
        self, relay: kx.KeyRelay, plaintext: bytes, next_km: str, units: list[StoredKey]
    ) -> None:
        """Seal ``plaintext`` with ``units`` (taken towards ``next_km``) and send the hop."""
        self.spent_bits[next_km] += len(units) * otp.UNIT_BITS
        self._notify_link_change()
        ciphertext, mac_key = otp.seal(plaintext, [unit.key for unit in units])
        relay = attrs.evolve(
            relay,
            sender_kma_id=self.km_id,
            link_key_ids=[unit.key_id for unit in units],
            encrypted_key=ciphertext,
            relay_metadata=attrs.evolve(
                relay.relay_metadata,
                source_kma_id=self.km_id,
                destination_kma_id=next_km,
                key_relay_time_stamp=_now(),
                key_relay_encryption_method="otp+poly1305",
            ),
        )
        relay = attrs.evolve(
            relay, message_authentication_code=otp.mac(mac_key, otp.hop_data(relay))
        )
        await self._ask_neighbour(next_km, relay, "relaying keys")

    async def _ask_controller(self, request: Message, *, timeout: float | None = None) -> Message:
        """The controller's answer to ``request``; :class:`KeyManagerError` with its failure
        reason, or saying it is unreachable."""
        with self._reaching_controller():
            return await self._dialer(self.config.controller_id).request(
                request, timeout=timeout or self.config.relay_timeout
            )

    @contextmanager
    def _reaching_controller(self) -> Iterator[None]:
        """Within the block, a failure the controller answers, or not reaching it, is a
        :class:`KeyManagerError` saying so."""
        try:
            yield
        except FailureResponse as exc:
            raise KeyManagerError(_who(exc.reason)) from None
        except TransportError as exc:
            raise KeyManagerError(
                f"the QKDN controller {self.config.controller_id} is unreachable ({exc})"
            ) from None

    async def _ask_neighbour(self, neighbour: str, message: Message, doing: str) -> Message:
        try:
            response = await self._dialer(neighbour).request(
                message, timeout=self.config.relay_timeout
            )
        except FailureResponse as exc:
            self._unreachable.discard(neighbour)
            raise KeyManagerError(_who(exc.reason)) from None
        except TransportError as exc:
            self._unreachable.add(neighbour)  # reported as a link without key until it answers
            raise KeyManagerError(
                f"neighbour KM {neighbour} is unreachable while {doing} ({exc})"
            ) from None
        self._unreachable.discard(neighbour)
        return response

    # --- KM link (kx) -------------------------------------------------------------------------

    async def _handle_kx(self, message: Message, connection: Connection) -> Message | None:
        if isinstance(message, kx.Hello):
            self._neighbour(message.sender_id)
            return kx.Hello(
                sender_id=self.km_id, community_id=_COMMUNITY, authentication_info=_AUTHENTICATION
            )
        if isinstance(message, kx.SessionMessage):
            neighbour = self._neighbour(connection.peer_id or "")
            self.link_sessions[neighbour] = message.session_id
            return kx.SessionMessage(session_id=message.session_id, timer=message.timer)
        if isinstance(message, kx.Update):
            logger.debug("%s: UPDATE from %s ignored", self.km_id, connection.peer_id)
            return None
        if isinstance(message, kx.KeyRelay):
            return await self._on_key_relay(message)
        if isinstance(message, kx.KeyRelayConfirmation):
            return await self._on_confirmation(message)
        if isinstance(message, kx.KeyIdSynchronizationRequest):
            return await self._on_synchronisation(message, connection)
        return _not_supported(message)

    def _neighbour(self, claimed: str) -> str:
        if claimed not in self._neighbours:
            raise KeyManagerError(f"{quoted(claimed)} is not a neighbour of {self.km_id}")
        return claimed

    async def _on_key_relay(self, relay: kx.KeyRelay) -> kx.ResponseToKeyRelay:
        sender = self._neighbour(relay.sender_kma_id)
        relay_id = relay.key_relay_request_id
        if relay_id in self._routes or relay_id in self._pending:
            raise KeyManagerError(f"relay {quoted(relay_id)} came back to {self.km_id} (a loop)")
        try:
            self._check_units_free(relay)
            otp.check_hop_units(relay)
            if relay.destination_kma_id == self.km_id:
                units = await self._with_received_units(
                    sender, lambda: self.store.peek_ids(_in_pool(sender), relay.link_key_ids)
                )
                plaintext = otp.unseal(relay, [unit.key for unit in units])
                return self._receive_relayed(relay, sender, plaintext)
            if relay.transit_kma_ids is not None:  # centralized: the route came with the relay
                next_km = self._after(self.km_id, relay.transit_kma_ids)
            else:
                _, next_km = await self._next_hop(
                    km=relay.destination_kma_id,
                    bits=len(relay.link_key_ids) * otp.UNIT_BITS,
                    avoid=_avoided(relay.extension),
                )
        except QkdnError:  # the units of a hop that fails here are spent all the same
            await self._spend_received(sender, relay.link_key_ids)
            raise
        self._remember(self._routes, relay_id, next_km)
        await self._pass_on(relay, sender, next_km)
        self.relays["forwarded"] += 1
        return kx.ResponseToKeyRelay(key_relay_request_id=relay_id, response="success")

    def _after(self, km_id: str, route: list[str]) -> str:
        """The KM after ``km_id`` on a centralized relay's route: one of our neighbours."""
        try:
            next_km = route[route.index(km_id) + 1]
        except (ValueError, IndexError):
            raise KeyManagerError(f"{km_id} is not a transit KM of the route {route}") from None
        if next_km not in self._neighbours:
            raise KeyManagerError(
                f"the route {route} goes on to {quoted(next_km)}, not a neighbour of {km_id}"
            )
        return next_km

    async def _with_received_units(self, sender: str, use: Callable[[], Awaitable[_T]]) -> _T:
        """``use()`` of the link units ``sender`` spent on a hop to us (it raises
        :class:`UnknownKeys` when we lack one). When we started a key ID synchronisation with
        ``sender`` that has not ended, the sender may already use units it cut while answering
        it: we wait for it to end before refusing."""
        try:
            return await use()
        except UnknownKeys:
            in_flight = self._sync_rounds.get(sender)
            if in_flight is not None and not in_flight.is_set():
                with trio.move_on_after(self.config.relay_timeout):
                    await in_flight.wait()
        try:
            return await use()
        except UnknownKeys as exc:
            raise KeyManagerError(
                f"{self.km_id} does not hold {len(exc.missing)} of the link keys of "
                f"{sender}-{self.km_id} used (spent, or not synchronised yet)"
            ) from None

    def _check_units_free(self, relay: kx.KeyRelay) -> None:
        if not self._pending_units.isdisjoint(relay.link_key_ids):
            raise KeyManagerError(
                f"the link keys of relay {quoted(relay.key_relay_request_id)} are those of a "
                "relay pending here"
            )

    async def _spend_received(self, sender: str, unit_ids: list[str]) -> None:
        """Take (and drop) those of ``unit_ids`` we hold from ``sender``: the units of a hop
        are used once, whatever became of it (but those a pending relay holds, which its
        confirmation takes)."""
        unit_ids = [unit_id for unit_id in unit_ids if unit_id not in self._pending_units]
        with suppress(KeyStoreError):
            if await self.store.take_present(_in_pool(sender), unit_ids):
                self._notify_link_change()

    def _receive_relayed(
        self, relay: kx.KeyRelay, sender: str, plaintext: bytes
    ) -> kx.ResponseToKeyRelay:
        """At the destination: check the keys end to end and hold them pending, with the link
        units of the hop from ``sender`` (the confirmation takes both in one transaction)."""
        source = relay.application_source_id
        destination = relay.application_destination_id
        if source is None or destination is None:
            raise KeyManagerError("a relay to a KM must name both applications")
        if destination not in self.config.applications:
            raise KeyManagerError(
                f"application {quoted(destination)} is not served by {self.km_id}"
            )
        if relay.size_of_key % 8:
            raise KeyManagerError("size_of_key must be a multiple of 8")
        pool = _app_pool(source, destination)
        if relay.session_id is not None:
            try:
                session = self._sessions.get(relay.session_id)
            except SessionError as exc:
                raise KeyManagerError(str(exc)) from None
            if (session.source, session.destination) != (source, destination):
                raise KeyManagerError(
                    f"session {quoted(session.session_id)} is not one of {source} -> {destination}"
                )
            pool = session_pool(destination, session.session_id)
        key_ids = [key_id.key_id for key_id in relay.key_ids]
        mac_key, keys = otp.split_relay_plaintext(plaintext, len(key_ids), relay.size_of_key // 8)
        otp.check_end_to_end(mac_key, key_ids, keys, relay.integrity_value)
        relay_id = relay.key_relay_request_id
        metadata = _ksa_metadata(source, destination, relay.size_of_key)
        metadata["relay"] = attrs.asdict(relay.relay_metadata)
        metadata["source_kma_id"] = relay.source_kma_id
        stored = [
            StoredKey(key_id, pool, key, metadata)
            for key_id, key in zip(key_ids, keys, strict=True)
        ]
        self._check_units_free(relay)  # again: another hop may have named them meanwhile
        self._remember(self._pending, relay_id, _Received(pool, stored, sender, relay.link_key_ids))
        self._pending_units.update(relay.link_key_ids)
        self.relays["received"] += 1
        return kx.ResponseToKeyRelay(key_relay_request_id=relay_id, response="success")

    def _remember(self, table: dict[str, _T], relay_id: str, value: _T) -> None:
        """Keep ``value`` in ``table`` for ``pending_timeout``."""
        table[relay_id] = value
        assert self._nursery is not None
        self._nursery.start_soon(self._forget, table, relay_id)

    async def _forget(self, table: dict[str, Any], relay_id: str) -> None:
        await trio.sleep(self.config.pending_timeout)
        forgotten = table.pop(relay_id, None)
        if isinstance(forgotten, _Received):
            logger.warning(
                "%s: relay %s was never confirmed; its keys dropped", self.km_id, relay_id
            )
            self._pending_units.difference_update(forgotten.unit_ids)
            await self._spend_received(forgotten.sender, forgotten.unit_ids)

    async def _on_confirmation(
        self, confirmation: kx.KeyRelayConfirmation
    ) -> kx.ResponseToKeyRelayConfirmation:
        self._neighbour(confirmation.sender_kma_id)
        relay_id = confirmation.key_relay_request_id
        if confirmation.destination_kma_id != self.km_id:
            next_km = self._routes.pop(relay_id, None)
            if next_km is None:
                raise KeyManagerError(f"{self.km_id} knows no relay {quoted(relay_id)} to confirm")
            await self._ask_neighbour(
                next_km,
                attrs.evolve(confirmation, sender_kma_id=self.km_id),
                "confirming the relay",
            )
        else:
            pending = self._pending.pop(relay_id, None)
            if pending is None:
                raise KeyManagerError(
                    f"relay {quoted(relay_id)} is unknown at {self.km_id} or expired"
                )
            self._pending_units.difference_update(pending.unit_ids)
            try:
                await self.store.take_ids(
                    _in_pool(pending.sender), pending.unit_ids, replace_with=pending.keys
                )
            except DuplicateKey as exc:
                await self._spend_received(pending.sender, pending.unit_ids)
                raise KeyManagerError(f"key ID {quoted(exc.key_id)} was relayed before") from None
            except UnknownKeys:
                raise KeyManagerError(
                    f"the link keys relay {quoted(relay_id)} came with are no longer held at "
                    f"{self.km_id}"
                ) from None
            application = session_application(pending.pool)
            if application is not None:
                self._wake_pusher(application)
        return kx.ResponseToKeyRelayConfirmation(key_relay_request_id=relay_id, response="success")

    # --- link keys: acquisition (Q.4162) and key ID synchronisation ---------------------------

    async def _handle_kq1(self, message: Message, connection: Connection) -> Message | None:
        if isinstance(message, kq1.KeySupply):
            return await self._on_key_supply(message, connection)
        return _not_supported(message)

    async def _on_key_supply(
        self, supply: kq1.KeySupply, connection: Connection
    ) -> kq1.ResponseToKeySupply:
        """Q.4162 clause 7.1: a QKD module pushes one QKD-key."""
        module = connection.peer_id or supply.qkd_module_id
        link = self._links_by_module.get(module or "")
        if link is None:
            raise KeyManagerError(f"QKD module {quoted(module or '')} has no link at {self.km_id}")
        await self._store_qkd_keys(link, [(supply.key_id, supply.key, supply.hash_value)])
        return kq1.ResponseToKeySupply(
            key_id=supply.key_id,
            qkd_module_id=link.module_id,
            matching_qkd_module_id=supply.matching_qkd_module_id,
            response="success",
        )

    async def _store_qkd_keys(
        self,
        link: KMLink,
        keys: list[tuple[str, bytes, str | None]],
        *,
        drop_duplicates: bool = False,
    ) -> None:
        """Store QKD-keys of ``link`` in one transaction. A key ID supplied before (or twice)
        fails them all, or with ``drop_duplicates`` is logged and left out."""
        stored = []
        for key_id, key, hash_value in keys:
            if hash_value is not None and hash_value != hashlib.sha256(key).hexdigest():
                raise KeyManagerError(f"QKD-key {quoted(key_id)}: the hash value does not match")
            if len(key) > otp.MAX_UNITS * otp.UNIT_BYTES:
                raise KeyManagerError(
                    f"QKD-key {quoted(key_id)}: {8 * len(key)} bits, over the "
                    f"{otp.MAX_UNITS * otp.UNIT_BITS} this KM cuts into link units"
                )
            stored.append(
                StoredKey(
                    key_id=key_id,
                    pool=_qkd_pool(link.neighbour),
                    key=key,
                    metadata={"qkd_module_id": link.module_id, "key_length": 8 * len(key)},
                )
            )
        while stored:
            try:
                await self.store.put(stored)
            except DuplicateKey as exc:
                if not drop_duplicates:
                    raise KeyManagerError(
                        f"key ID {quoted(exc.key_id)} was supplied before"
                    ) from None
                stored = await self._without_duplicates(stored)
            else:
                self._sync_wanted[link.neighbour].set()
                return

    async def _without_duplicates(self, keys: list[StoredKey]) -> list[StoredKey]:
        """``keys`` without those stored before and the repeats of one given twice, each logged
        as a key supplied before."""
        before = await self.store.seen([key.key_id for key in keys])
        kept: dict[str, StoredKey] = {}
        for key in keys:
            if key.key_id in before or key.key_id in kept:
                logger.warning(
                    "%s: %s",
                    self.km_id,
                    KeyManagerError(f"key ID {quoted(key.key_id)} was supplied before"),
                )
            else:
                kept[key.key_id] = key
        return list(kept.values())

    async def _acquire(self, link: KMLink) -> None:
        """Q.4162 clause 7.2: ask the module for its keys, again and again: at once after a
        response of several keys (more may be ready), else after ``acquire_interval`` (a
        response of one key is all a module that makes keys slower than it is asked had).

        The keys of a response are stored while the next request is on its way: a task of
        their own stores them, all that arrived meanwhile in one transaction. At most two
        responses wait for it; the requests wait while they do."""
        dialer = self._modules[link.neighbour]
        # the slave SAE of an ETSI 014 Get key (Q.4162 Appendix II): the KM at the other end
        request = kq1.KeyRequest(
            number_of_keys=_ACQUIRE_BATCH, extension=[{etsi014.SLAVE: link.sae_of_neighbour}]
        )
        send, receive = trio.open_memory_channel[list[Key]](1)
        async with trio.open_nursery() as nursery, send:
            nursery.start_soon(self._store_acquired, link, receive)
            failing = False
            while True:
                try:
                    response = await dialer.request(request)
                    assert isinstance(response, kq1.ResponseToKeyRequest)
                    await send.send(response.keys)
                    failing = False
                    if len(response.keys) > 1:  # more may be ready: ask again at once
                        continue
                except FailureResponse:
                    pass  # no key ready yet
                except QkdnError as exc:
                    if not failing:
                        logger.warning(
                            "%s: QKD module %s: %s (retrying)", self.km_id, link.module_id, exc
                        )
                    failing = True
                await trio.sleep(self.config.acquire_interval)

    async def _store_acquired(
        self, link: KMLink, responses: trio.MemoryReceiveChannel[list[Key]]
    ) -> None:
        """Store the keys of the module's responses to :meth:`_acquire`, those of every
        response waiting in ``responses`` in one transaction."""
        async for keys in responses:
            while True:
                try:
                    keys = keys + responses.receive_nowait()
                except trio.WouldBlock:
                    break
            try:
                await self._store_qkd_keys(
                    link, [(key.key_id, key.key, None) for key in keys], drop_duplicates=True
                )
            except QkdnError as exc:
                logger.warning(
                    "%s: QKD module %s: %d QKD-keys not stored: %s",
                    self.km_id,
                    link.module_id,
                    len(keys),
                    exc,
                )

    async def _hello(self, neighbour: str) -> None:
        """D2.3 clause 7.2.2: a HELLO to ``neighbour`` every ``hello_interval``, answered by
        its own. A neighbour that stops answering is unreachable: its link is reported down
        (and without key) to the controller at once, and again up when it answers. When the
        link comes up, the KM whose ID sorts first opens a link session (SESSION, Table 7-9)."""
        hello = kx.Hello(
            sender_id=self.km_id, community_id=_COMMUNITY, authentication_info=_AUTHENTICATION
        )
        while True:
            if self._dialer(neighbour).url is not None:
                try:
                    await self._dialer(neighbour).request(hello, timeout=self.config.relay_timeout)
                    up = True
                except QkdnError:
                    up = False
                if up and neighbour not in self._answering:
                    self._answering.add(neighbour)
                    self._unreachable.discard(neighbour)
                    if self.km_id < neighbour:
                        await self._open_link_session(neighbour)
                    logger.info("%s: link to %s is up", self.km_id, neighbour)
                    self._report_wanted.set()
                elif not up and neighbour in self._answering:
                    self._answering.discard(neighbour)
                    self._unreachable.add(neighbour)
                    self.link_sessions.pop(neighbour, None)
                    logger.warning("%s: link to %s is down (no HELLO)", self.km_id, neighbour)
                    self._report_wanted.set()
                elif not up:
                    self._unreachable.add(neighbour)
            await trio.sleep(self.config.hello_interval)

    async def _open_link_session(self, neighbour: str) -> None:
        session = kx.SessionMessage(session_id=str(uuid.uuid4()), timer=_LINK_SESSION_TIMER)
        try:
            answer = await self._dialer(neighbour).request(
                session, timeout=self.config.relay_timeout
            )
        except QkdnError as exc:
            logger.warning("%s: no link session with %s: %s", self.km_id, neighbour, exc)
            return
        assert isinstance(answer, kx.SessionMessage)
        if answer.session_id == session.session_id:
            self.link_sessions[neighbour] = session.session_id

    async def _synchronise(self, neighbour: str) -> None:
        """Key ID synchronisation, run by the KM whose ID sorts first on the link.

        Both ends receive a link's QKD-keys in the order its modules made them, so a key we
        hold that the neighbour lacks while it holds a newer one will never reach it (its
        module dropped the key, or its KM was down): such keys are discarded. A request asks
        for the oldest waiting IDs; when none of those is held and more wait, the next one asks
        for the newest, so a run of keys the neighbour never got does not stall the link.
        """
        failing = False
        newest = False
        while True:
            with trio.move_on_after(self.config.sync_interval):
                await self._sync_wanted[neighbour].wait()
            self._sync_wanted[neighbour] = trio.Event()
            if self._dialer(neighbour).url is None:  # not started yet
                continue
            waiting = self.store.count(_qkd_pool(neighbour))
            if not waiting:
                continue
            ids = await self.store.key_ids(_qkd_pool(neighbour), _SYNC_BATCH, newest=newest)
            if not ids:
                continue
            request = kx.KeyIdSynchronizationRequest(
                source_kma_id=self.km_id,
                destination_kma_id=neighbour,
                key_ids=[KeyId(key_id=key_id) for key_id in ids],
            )
            in_flight = self._sync_rounds[neighbour] = trio.Event()
            try:
                response = await self._dialer(neighbour).request(
                    request, timeout=self.config.relay_timeout
                )
                assert isinstance(response, kx.ResponseToKeyIdSynchronizationRequest)
                held = {key.key_id for key in response.key_ids}
                both = [key_id for key_id in ids if key_id in held]
                await self._discard_unmatched(neighbour, ids, both)
                await self._adopt(neighbour, both)
            except QkdnError as exc:
                if isinstance(exc, TransportError):
                    self._unreachable.add(neighbour)
                if not failing:
                    logger.warning(
                        "%s: key ID synchronisation with %s failed: %s", self.km_id, neighbour, exc
                    )
                failing = True
                continue
            finally:
                in_flight.set()
            if failing:
                logger.info("%s: key ID synchronisation with %s works again", self.km_id, neighbour)
            failing = False
            self._unreachable.discard(neighbour)
            newest = not both and not newest and waiting > _SYNC_BATCH
            if len(ids) == _SYNC_BATCH or newest:
                self._sync_wanted[neighbour].set()

    async def _discard_unmatched(self, neighbour: str, asked: list[str], both: list[str]) -> None:
        """Discard the QKD-keys of ``asked`` (oldest first) that the neighbour does not hold
        although it holds a newer one of them: it never will."""
        if not both:
            return
        newest_held = asked.index(both[-1])
        matched = set(both)
        dead = [key_id for key_id in asked[:newest_held] if key_id not in matched]
        if dead:
            await self.store.take_present(_qkd_pool(neighbour), dead)
            logger.info(
                "%s: %d QKD-keys of the link to %s discarded: %s never got them",
                self.km_id,
                len(dead),
                neighbour,
                neighbour,
            )

    async def _on_synchronisation(
        self, request: kx.KeyIdSynchronizationRequest, connection: Connection
    ) -> kx.ResponseToKeyIdSynchronizationRequest:
        neighbour = self._neighbour(request.source_kma_id)
        if request.destination_kma_id != self.km_id:
            raise KeyManagerError(f"this is {self.km_id}, not {quoted(request.destination_kma_id)}")
        if len(request.key_ids) > _SYNC_BATCH:
            raise KeyManagerError(f"at most {_SYNC_BATCH} key IDs per synchronisation")
        asked = [key.key_id for key in request.key_ids]
        held = await self.store.seen(asked)  # here now, or cut into link units before
        link = self._link(neighbour)
        if link.kme_pair:
            await self._fetch_from_kme(link, [key_id for key_id in asked if key_id not in held])
            held = await self.store.seen(asked)
        both = [key_id for key_id in asked if key_id in held]
        if both:
            # Answered at once, cut meanwhile: both ends cut their units at the same time. A
            # hop on units we have not cut yet waits for this round (_with_received_units).
            adopted = self._sync_rounds[neighbour] = trio.Event()
            assert self._nursery is not None
            self._nursery.start_soon(self._adopt_answered, neighbour, both, adopted)
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
                self.km_id,
                neighbour,
                exc,
            )
        finally:
            adopted.set()

    async def _fetch_from_kme(self, link: KMLink, key_ids: list[str]) -> None:
        """Get the QKD-keys ``key_ids``, which the neighbour got from its KME, from ours (ETSI
        014 Get key with key IDs, in batches). A batch with a key our KME lacks (it dropped it)
        fails whole (014): then each of its keys is asked alone, and those it lacks are left
        out, as the synchronisation expects."""
        dialer = self._modules[link.neighbour]

        async def fetch(batch: list[str]) -> bool:
            request = kq1.KeyRequestWithKeyIds(
                master_sae_id=link.sae_of_neighbour,
                key_ids=[KeyId(key_id=key_id) for key_id in batch],
            )
            try:
                response = await dialer.request(request, timeout=self.config.relay_timeout)
            except FailureResponse:
                return False
            except QkdnError as exc:
                logger.warning("%s: KME %s: %s", self.km_id, link.module_id, exc)
                return True  # nothing to try key by key: the KME is out of reach
            assert isinstance(response, kq1.ResponseToKeyRequest)
            await self._store_qkd_keys(link, [(key.key_id, key.key, None) for key in response.keys])
            return True

        for start in range(0, len(key_ids), _KME_BATCH):
            batch = key_ids[start : start + _KME_BATCH]
            if not await fetch(batch) and len(batch) > 1:
                for key_id in batch:
                    await fetch([key_id])

    def _link(self, neighbour: str) -> KMLink:
        return next(link for link in self.config.links if link.neighbour == neighbour)

    async def _adopt(self, neighbour: str, qkd_key_ids: list[str]) -> None:
        """Cut those of the QKD-keys both ends hold that are still whole into link units."""
        if not qkd_key_ids:
            return
        first = self.km_id < neighbour
        qkd_keys = await self.store.take_present(
            _qkd_pool(neighbour), qkd_key_ids, split=partial(_link_units, neighbour, first)
        )
        self.generated_bits[neighbour] += otp.UNIT_BITS * sum(
            1
            for qkd_key in qkd_keys
            for index in range(len(qkd_key.key) // otp.UNIT_BYTES)
            if otp.spent_by_first(index) == first
        )
        self._notify_link_change()
        if neighbour not in self._link_ready:
            self._link_ready.add(neighbour)
            logger.info(
                "%s: link to %s ready: %d bits of link key to send with, %d to receive",
                self.km_id,
                neighbour,
                self.link_key_bits(neighbour),
                self.store.count(_in_pool(neighbour)) * otp.UNIT_BITS,
            )

    # --- Ck: the controller (Q.4164) ------------------------------------------------------------

    async def _handle_ck(self, message: Message, connection: Connection) -> Message | None:
        if isinstance(message, ck.KeyRelayRequest):
            return await self._on_key_relay_request(message)
        if isinstance(message, ck.SessionCreationNotification):
            return await self._on_session_creation_notification(message)
        if isinstance(message, ck.KeyReservationRequest):
            return await self._on_key_reservation(message)
        if isinstance(message, ck.KeyAllocationRequest):
            return await self._on_key_allocation(message)
        if isinstance(message, mgmt.StatusInformationSupplyCommand):
            return await self._on_status_command(message)
        return _not_supported(message)

    async def _on_key_reservation(
        self, request: ck.KeyReservationRequest
    ) -> ck.ResponseToKeyReservationRequest:
        """Q.4164 clause 7.5: set link key towards the next KM of a route aside for relays from
        ``source_kma_id`` to ``destination_kma_id``: the extension says which KM
        (``next_kma_id``), how much (``key_bits``) and, optionally, for how long
        (``lifetime``, seconds). The units answered are taken by no one else; unless allocated in
        time they go back to the link."""
        next_km, bits, lifetime = self._reservation_terms(request.extension)
        needed = -(-bits // otp.UNIT_BITS)
        reservation_id = str(uuid.uuid4())
        pool = _reserved_pool(next_km, reservation_id)
        unit_ids = await self.store.key_ids(_out_pool(next_km), needed)
        if len(unit_ids) < needed:
            raise KeyManagerError(
                f"not enough key on link {self.km_id}-{next_km} to reserve {bits} bits: "
                f"{len(unit_ids) * otp.UNIT_BITS} bits"
            )
        try:
            await self.store.move(_out_pool(next_km), pool, key_ids=unit_ids)
        except UnknownKeys:  # a relay took some meanwhile
            raise KeyManagerError(f"link {self.km_id}-{next_km} changed; ask again") from None
        self._reservations[reservation_id] = _Reservation(
            next_km=next_km,
            source_km=request.source_kma_id,
            destination_km=request.destination_kma_id,
            unit_ids=set(unit_ids),
        )
        self._notify_link_change()
        assert self._nursery is not None
        self._nursery.start_soon(self._release_later, reservation_id, lifetime)
        logger.info(
            "%s: reserved %d bits towards %s for %s -> %s (%g s)",
            self.km_id,
            needed * otp.UNIT_BITS,
            next_km,
            request.source_kma_id,
            request.destination_kma_id,
            lifetime,
        )
        return ck.ResponseToKeyReservationRequest(
            source_kma_id=request.source_kma_id,
            destination_kma_id=request.destination_kma_id,
            application_destination_id=request.application_destination_id,
            key_ids=[KeyId(key_id=unit_id) for unit_id in unit_ids],
            response=0,
        )

    def _reservation_terms(self, extension: list[dict[str, Any]] | None) -> tuple[str, int, float]:
        """``(next KM, bits, lifetime)`` from a key reservation request's extension."""
        terms = next((item for item in extension or () if "next_kma_id" in item), None)
        if terms is None:
            raise KeyManagerError(
                'say what to reserve: extension [{"next_kma_id": ..., "key_bits": ...}]'
            )
        next_km = terms["next_kma_id"]
        if not isinstance(next_km, str) or next_km not in self._neighbours:
            raise KeyManagerError(f"next_kma_id {next_km!r} is not a neighbour of {self.km_id}")
        bits = terms.get(ck.KEY_BITS_EXTENSION)
        if (
            isinstance(bits, bool)
            or not isinstance(bits, int)
            or not 0 < bits <= _MAX_RESERVED_BITS
        ):
            raise KeyManagerError(f"key_bits must be an integer from 1 to {_MAX_RESERVED_BITS}")
        lifetime = terms.get("lifetime", self.config.reservation_lifetime)
        longest = 10 * self.config.reservation_lifetime
        if (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or not 0 < lifetime <= longest
        ):
            raise KeyManagerError(
                f"lifetime must be a number of seconds, more than 0 and at most {longest:g}"
            )
        return next_km, bits, float(lifetime)

    async def _release_later(self, reservation_id: str, lifetime: float) -> None:
        await trio.sleep(lifetime)
        reservation = self._reservations.pop(reservation_id, None)
        if reservation is None or not reservation.unit_ids:
            return
        released = await self.store.move(
            _reserved_pool(reservation.next_km, reservation_id), _out_pool(reservation.next_km)
        )
        self._notify_link_change()
        logger.info(
            "%s: released %d bits reserved towards %s, never allocated",
            self.km_id,
            released * otp.UNIT_BITS,
            reservation.next_km,
        )

    async def _on_key_allocation(
        self, request: ck.KeyAllocationRequest
    ) -> ck.ResponseToKeyAllocationRequest:
        """Q.4164 clause 7.6: the units of earlier reservations (the key IDs they answered) go
        to the relays from ``source_kma_id`` to ``destination_kma_id``, which spend them before
        any other key of the link. All or none."""
        unit_ids = [key_id.key_id for key_id in request.key_ids]
        owners: dict[str, list[str]] = {}
        for unit_id in unit_ids:
            owner = next(
                (
                    reservation_id
                    for reservation_id, reservation in self._reservations.items()
                    if unit_id in reservation.unit_ids
                    and (reservation.source_km, reservation.destination_km)
                    == (request.source_kma_id, request.destination_kma_id)
                ),
                None,
            )
            if owner is None:
                raise KeyManagerError(
                    f"key {quoted(unit_id)} is in no reservation of {self.km_id} for "
                    f"{request.source_kma_id} -> {request.destination_kma_id} (released, or "
                    "never reserved)"
                )
            owners.setdefault(owner, []).append(unit_id)
        for reservation_id, ids in owners.items():
            reservation = self._reservations[reservation_id]
            await self.store.move(
                _reserved_pool(reservation.next_km, reservation_id),
                _allocated_pool(
                    reservation.next_km, reservation.source_km, reservation.destination_km
                ),
                key_ids=ids,
            )
            reservation.unit_ids.difference_update(ids)
            if not reservation.unit_ids:
                del self._reservations[reservation_id]
        self._notify_link_change()
        return ck.ResponseToKeyAllocationRequest(
            source_kma_id=request.source_kma_id,
            destination_kma_id=request.destination_kma_id,
            application_destination_id=request.application_destination_id,
            key_ids=request.key_ids,
            response=0,
        )

    async def _on_key_relay_request(
        self, request: ck.KeyRelayRequest
    ) -> ck.ResponseToKeyRelayRequest:
        """Q.4164 clause 7.2: the controller's route for a relay we notified it of; answered
        once the relay has ended (Figure 2), with its failure reason if it failed."""
        relay_id = request.key_relay_request_id or ""
        central = self._central_routes.get(relay_id)
        if central is None or central.request is not None:
            raise KeyManagerError(f"{self.km_id} awaits no route for relay {quoted(relay_id)}")
        central.request = request
        central.routed.set()
        await central.ended.wait()
        if central.outcome != "success":
            raise KeyManagerError(_who(central.outcome))
        return ck.ResponseToKeyRelayRequest(response="success", key_relay_request_id=relay_id)

    def link_status(self, parameters: Collection[str] = STATUS_PARAMETERS) -> list[dict[str, Any]]:
        """The D2.3 Table 8-2 status table: per neighbour (``km_link``), the ``parameters`` of
        :data:`STATUS_PARAMETERS` asked for. ``key_amount``: bits this KM can spend towards it
        (0 while it is unreachable); ``key_generation_rate`` and ``key_consumption_rate``: bits
        per second got and spent towards it since the previous status table; ``status``:
        ``"up"``, or ``"down"`` while the last request to it failed to reach it."""
        now, generated, spent = (
            trio.current_time(),
            dict(self.generated_bits),
            dict(self.spent_bits),
        )
        since, generated_before, spent_before = self._rates_since
        self._rates_since = (now, generated, spent)
        elapsed = max(now - since, 1e-9)
        table = []
        for link in self.config.links:
            neighbour = link.neighbour
            down = neighbour in self._unreachable
            values: dict[str, Any] = {
                "key_amount": 0 if down else self.link_key_bits(neighbour),
                "key_generation_rate": round(
                    (generated[neighbour] - generated_before[neighbour]) / elapsed
                ),
                "key_consumption_rate": round(
                    (spent[neighbour] - spent_before[neighbour]) / elapsed
                ),
                "status": "down" if down else "up",
            }
            table.append({"km_link": neighbour} | {name: values[name] for name in parameters})
        return table

    async def _on_status_command(
        self, command: mgmt.StatusInformationSupplyCommand
    ) -> mgmt.StatusInformationSupplyResponse:
        """D2.3 clause 8.1 b): the controller asks for status now, and every ``period`` seconds
        when it gives one (the KM's unsolicited supplies then come at that period)."""
        parameters = command.status_table or list(STATUS_PARAMETERS)
        unknown = sorted(set(parameters) - set(STATUS_PARAMETERS))
        if unknown:
            raise KeyManagerError(
                f"unknown status parameters {unknown} (known: {list(STATUS_PARAMETERS)})"
            )
        if command.period is not None:
            self._report_period = float(command.period)
            self._report_wanted.set()  # start the new period now
        return mgmt.StatusInformationSupplyResponse(
            sender_id=self.km_id,
            status_table=self.link_status(parameters),
            response_code=mgmt.ResultCode.SUCCESS,
        )

    @property
    def report_period(self) -> float:
        """Seconds between two unsolicited status supplies: ``report_interval``, or the period
        of the controller's latest status command."""
        return self._report_period

    async def _authenticate_to_controller(self) -> bool:
        command = mgmt.CkAuthenticationCommand(
            sender_id=self.km_id, authentication_info=_AUTHENTICATION
        )
        try:
            response = await self._dialer(self.config.controller_id).request(
                command, timeout=self.config.relay_timeout
            )
        except FailureResponse as exc:
            logger.warning("%s: the controller refused its authentication: %s", self.km_id, exc)
            return False
        except QkdnError:
            return False  # not reachable yet: the report below says so
        assert isinstance(response, mgmt.CkAuthenticationResponse)
        if response.sender_id != self.config.controller_id:  # it proves who it is, too
            logger.warning(
                "%s: %s answered the authentication, not the controller %s",
                self.km_id,
                quoted(response.sender_id),
                self.config.controller_id,
            )
            return False
        logger.info("%s: authenticated to the controller", self.km_id)
        return True

    async def route_information(self, destination_km: str, key_bits: int = 0) -> list[str]:
        """The controller's route from this KM to ``destination_km`` for ``key_bits`` (D2.3
        clause 8.1 c), Tables 8-3, 8-4): KM IDs, this KM first. Raises
        :class:`KeyManagerError` when it has none or cannot be asked."""
        response = await self._ask_controller(
            mgmt.RouteInformationSupplyCommand(
                sender_id=self.km_id,
                source_id=self.km_id,
                destination_id=destination_km,
                key_amount=key_bits,
            )
        )
        assert isinstance(response, mgmt.RouteInformationSupplyResponse)
        return list(response.route_table)

    async def _report_status(self) -> None:
        """Authenticate to the controller (D2.3 clause 8.1.1 a), Table 7-2 over Ck), then
        supply the status table every report period."""
        failing = False
        authenticated = False
        while True:
            if not authenticated:
                authenticated = await self._authenticate_to_controller()
            report = mgmt.StatusInformationSupplyResponse(
                sender_id=self.km_id,
                status_table=self.link_status(),
                response_code=mgmt.ResultCode.SUCCESS,
            )
            try:
                await self._dialer(self.config.controller_id).send(report)
                failing = False
            except QkdnError as exc:
                if not failing:
                    logger.warning("%s: cannot report to the controller: %s", self.km_id, exc)
                failing = True
            self._report_wanted = trio.Event()
            with trio.move_on_after(self._report_period):
                await self._report_wanted.wait()


def _not_supported(message: Message) -> Message | None:
    response_type = type(message).response_type()
    if response_type is None:
        return None
    return failure_response(
        response_type,
        f"{message.spec_name} is not supported by this KM yet",
        command_code=message.code,
    )


def _unreachable_km(reason: str) -> str | None:
    """The KM a relay failure says was unreachable (this KM's own text, or a KM's on the way
    passed back), or ``None``."""
    found = _UNREACHABLE.search(reason)
    return found.group(1) if found else None


def _avoided(extension: list[dict[str, Any]] | None) -> list[str]:
    """The KMs a relay's route must avoid (its ``avoid_kma_ids`` extension)."""
    for item in extension or ():
        value = item.get(ck.AVOID_EXTENSION)
        if isinstance(value, list) and all(isinstance(km, str) for km in value):
            return list(value[:_MAX_REROUTES])
    return []


def _not_direct(slave: str, km: str) -> RequestRefused:
    return RequestRefused(
        f"{quoted(slave)} is served by {km}, which is no neighbour: its keys would be relayed "
        "by a trusted node, and extension_mandatory asks for a direct route",
        etsi014_message=etsi014.MANDATORY_EXTENSION_UNMET,
    )


_UUID_VERSION_7 = bytes((byte & 0x0F) | 0x70 for byte in range(256))
"""Byte 6 of a UUID with its version bits set to 7 (RFC 9562 clause 5.7)."""
_UUID_VARIANT = bytes((byte & 0x3F) | 0x80 for byte in range(256))
"""Byte 8 of a UUID with its variant bits set to RFC 9562's."""
_RANDOM_DIGITS = tuple(position for position in range(14, 36) if position not in (18, 23))
"""Where the 20 hex digits of a UUID's bytes 6 to 15 go in its text (after the time's 12)."""


def _fresh_key_ids(number: int) -> list[str]:
    """``number`` version 7 UUIDs (RFC 9562 clause 5.7): the Unix time in milliseconds, then 74
    random bits from one :func:`os.urandom` draw for the batch.

    Time first, so the IDs a KM makes sort by when it made them: each one joins the key store's
    index of IDs at its end, where the pages just written are, instead of at a random place. With
    10^6 IDs stored, SQLite stored keys of version 7 IDs 3.7 times as fast as of version 4 ones.

    The texts are written column by column (each hex digit of every ID in one slice assignment),
    then cut: a third of the time of formatting each ID (190 ns an ID in a batch of 128).
    """
    raw = bytearray(os.urandom(10 * number))  # bytes 6 to 15 of each UUID
    raw[0::10] = raw[0::10].translate(_UUID_VERSION_7)
    raw[2::10] = raw[2::10].translate(_UUID_VARIANT)
    digits = raw.hex().encode("ascii")
    millis = (time.time_ns() // 1_000_000).to_bytes(6, "big").hex()
    text = bytearray(f"{millis[:8]}-{millis[8:]}-0000-0000-000000000000".encode("ascii") * number)
    for digit, position in enumerate(_RANDOM_DIGITS):
        text[position::36] = digits[digit::20]
    ids = text.decode("ascii")
    return [ids[start : start + 36] for start in range(0, 36 * number, 36)]


def _fresh_keys(number: int, size: int) -> tuple[list[str], list[bytes]]:
    """``number`` new keys of ``size`` bits (from one :func:`os.urandom` draw, as
    :func:`secrets.token_bytes` makes them) and their IDs (:func:`_fresh_key_ids`)."""
    length = size // 8
    keys = os.urandom(number * length)
    return _fresh_key_ids(number), [
        keys[start : start + length] for start in range(0, number * length, length)
    ]


def _link_units(neighbour: str, first: bool, qkd_key: StoredKey) -> list[StoredKey]:
    """The link units of a QKD-key both ends of the link to ``neighbour`` hold: those this KM
    spends (``first``: its ID sorts first on the link) and those it receives."""
    metadata = {"qkd_key_id": qkd_key.key_id}
    return [
        StoredKey(
            key_id=unit_id,
            pool=_out_pool(neighbour)
            if otp.spent_by_first(index) == first
            else _in_pool(neighbour),
            key=unit,
            metadata=metadata,
        )
        for index, unit_id, unit in otp.split_qkd_key(qkd_key.key_id, qkd_key.key)
    ]


def _ksa_metadata(source: str, destination: str, size: int) -> dict[str, Any]:
    """D2.3 Table 7-1 (4) KSA-key metadata."""
    return {
        "application_source_id": source,
        "application_destination_id": destination,
        "key_length": size,
        "time_stamp": _now(),
    }


def _qkd_pool(neighbour: str) -> str:
    return f"qkd:{neighbour}"


def _out_pool(neighbour: str) -> str:
    return f"link:{neighbour}:out"


def _in_pool(neighbour: str) -> str:
    return f"link:{neighbour}:in"


def _app_pool(source: str, destination: str) -> str:
    return f"app:{source}:{destination}"


def _reserved_pool(neighbour: str, reservation_id: str) -> str:
    return f"reserved:{neighbour}:{reservation_id}"


def _allocated_pool(neighbour: str, source_km: str, destination_km: str) -> str:
    """Units allocated towards ``neighbour`` (:meth:`KeyManager.allocated_bits` counts
    ``allocated:<neighbour>:``)."""
    return f"allocated:{neighbour}:{source_km}:{destination_km}"
