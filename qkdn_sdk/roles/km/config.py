"""What a KM is (:class:`KMConfig`): its ID, where it listens, its links, its applications, its
controller, and the limits of what it supplies; and :class:`KeyManagerError`, the refusal every
part of the KM raises."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping

import attrs

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import NotAuthorized, QkdnError, RequestRefused, quoted
from qkdn_sdk.roles.qkd_module import HASH_ALGORITHMS, Kq1Mode, check_hash_algorithm
from qkdn_sdk.tls import TLSConfig

__all__ = [
    "AUTHENTICATION",
    "INTERFACES",
    "MAX_RELAY_BITS",
    "MIN_SIZE_OF_KEY",
    "KMConfig",
    "KMLink",
    "KeyManagerError",
    "Routing",
    "Spawn",
    "listen_interface",
    "passed_on",
]

INTERFACES = ("ak", "ck", "kq1", "kx")
"""The interfaces a KM serves, each on its own URL."""
AUTHENTICATION = "mtls"
"""The authentication information a KM gives (D2.3 Tables 7-2, 7-8): the mutual TLS of the
interface, so the sender ID is its certificate's."""
MIN_SIZE_OF_KEY = 8
"""The smallest key, in bits, a KM supplies."""
MAX_RELAY_BITS = 1 << 17
"""At most this many key bits in one key request (16 KiB): what a key relay and a response carry
stays well under the 65,535-byte payload (a relay of 128 keys of 1024 bits is about 49 KB: the
base64 pad and the IDs of its link key units; twice as many bits would not fit)."""

Spawn = Callable[..., None]
"""How a part of a KM starts a background task: ``spawn(async_function, *args)`` runs it in the
KM's nursery (it ends when the KM stops)."""


class KeyManagerError(QkdnError):
    """Why a KM refused a request: the text goes to the peer as the failure reason."""


def passed_on(reason: str) -> str:
    """A peer's failure text without its ``failure:`` prefix, to pass it on."""
    for prefix in ("failure: ", "failure:", "failure"):
        if reason.startswith(prefix):
            return reason[len(prefix) :].strip() or reason
    return reason


class Routing(enum.Enum):
    """How a KM learns the route of a key relay (Q.4164 clause 7)."""

    DISTRIBUTED = "distributed"
    """Clause 7.1: every KM on the way asks the controller for its next hop (0x1401 -> 0x4102)."""
    CENTRALIZED = "centralized"
    """Clause 7.2: the source KM notifies the controller (0x1403), which sends it the whole
    route in a key relay request (0x4104); the KM answers that (0x1405) once the relay ended."""


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
    hash_algorithm: str = attrs.field(default=HASH_ALGORITHMS[0], converter=check_hash_algorithm)
    """The algorithm of the "Hash value" the module gives each key it pushes (Q.4162 Table 1
    does not fix one; :data:`~qkdn_sdk.roles.qkd_module.HASH_ALGORITHMS`)."""
    key_size: int | None = attrs.field(default=None)
    """Bits per QKD-key the KM asks of an on-request module or KME (the ``size`` of an ETSI 014
    Get key, checked against the KME's Get status); ``None``: the source's default size."""

    @key_size.validator
    def _check_key_size(self, _attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and (value < 8 or value % 8):
            raise ValueError(
                f"link to {self.neighbour}: key_size must be a positive multiple of 8 bits, "
                f"not {value}"
            )

    @property
    def sae_of_neighbour(self) -> str:
        return self.peer_sae_id or self.neighbour

    def __attrs_post_init__(self) -> None:
        if self.mode is Kq1Mode.ON_REQUEST and self.module_url is None:
            raise ValueError(f"link to {self.neighbour}: on-request mode needs the module's URL")
        if self.kme_pair and self.mode is not Kq1Mode.ON_REQUEST:
            raise ValueError(f"link to {self.neighbour}: a KME pair is asked for keys (on-request)")


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
    reservation_bits: int = 8192
    """Bits of link key a key reservation request that does not say how much sets aside (Q.4164
    Table 10 has no amount)."""
    link_key_wait: float = 5.0
    """Seconds a key request with too little link key on its route waits for more (Q.4161
    clause 7.1.1) before it fails; 0: it fails at once. Keep it below the applications'
    request timeouts."""
    community_id: str = "qkdn"
    """The community of the KMs of one network (D2.3 Table 7-8): a HELLO naming another is
    refused."""
    require_authentication: bool = False
    """Serve an application only on a connection where it sent the D2.3 authentication command
    (0x2180) first. Off: the TLS handshake is the authentication (Q.4161 clause 8), and an
    application written from Q.4161 alone, which knows no 0x2180, is served."""
    default_number_of_keys: int = 1
    default_size_of_key: int = 256
    max_key_per_request: int = 128
    max_size_of_key: int = 8192
    max_sae_id_count: int = 4
    """The most ``additional_slave_SAE_IDs`` of an ETSI 014 Get key (key multicast); 0: none."""
    max_keys_per_second: float = math.inf
    """Per application: keys its key requests may get a second, a token bucket of one second's
    worth (at least ``max_key_per_request``); ``inf``, the default: no limit
    (:mod:`~qkdn_sdk.roles.km.quotas`, as the next four)."""
    max_keys_held: int = 1_000_000
    """Per application: keys made here at its request that its peers at this KM have not
    fetched yet (keys relayed to another KM are held there)."""
    max_keys_held_per_pair: int = 100_000
    """Per pair of applications of this KM: keys made here at the source's request that the
    destination has not fetched yet. ETSI 014 Get status reports it as ``max_key_count``."""
    min_share: float = 0.1
    """The share of a link's recent key an application pair is always served from the link's
    reserve while it has used less, however many pairs share the link (an equal split among
    the pairs that use it, when that is more)."""
    fair_share_reserve_bits: int = 524_288
    """The last bits of each link's key, kept under contention for application pairs within
    their share (about four relays of the most bits one key request may carry); 0: no
    fair share."""
    fair_share_window_bits: int = 8_388_608
    """The link key a pair's share is measured on: the last bits relays started here spent on
    the link (about 33 s of a 256 kbit/s link)."""
    relay_timeout: float = 10.0
    """Seconds a hop waits for the next KM (and the controller) to answer."""
    pending_timeout: float = 60.0
    """Seconds relayed keys wait for their confirmation before they are dropped."""
    key_lifetime: float = 3600.0
    """Seconds a key held for an application waits to be fetched by ID (its ``app:`` pool,
    where the keys of a relay whose confirmation was interrupted stay too) or pushed in a
    session and acknowledged, before it is erased (:mod:`~qkdn_sdk.roles.km.expiry`)."""
    refetch_window: float = 60.0
    """Seconds after a fetch by ID during which the same destination application asking for
    the same key IDs gets the same keys again (its response may have been lost); then they are
    erased."""
    expiry_interval: float = 5.0
    """Seconds between two sweeps that erase expired keys: a key is erased at most this long
    after its lifetime ends."""
    report_interval: float = 0.5
    """Seconds between two status reports to the controller."""
    sync_interval: float = 0.25
    """Seconds between two key ID synchronisations of a link (sooner when keys arrive)."""
    acquire_interval: float = 0.25
    """Seconds between two Kq-1 key requests to a module that supplies upon request."""
    max_link_key_bits: int = 2**24
    """The most key one end of each link holds (bits): its QKD-keys waiting for synchronisation
    and its link units, both directions, reserved and allocated ones included. At the cap the
    KM stops acquiring on the link (refuses pushed QKD-keys, asks for none) until consumption
    brings it to three quarters of the cap (:mod:`~qkdn_sdk.roles.km.link_table`). The default,
    2 MiB, is about 127 relays of the largest key request (131,072 bits), twice
    ``fair_share_window_bits``, a minute of a 256 kbit/s link (the disk holds it with the
    store's overhead)."""

    replica: bool = False
    """This process serves Ak only, beside the KM's *primary* process (the one without
    ``replica``), on the same PostgreSQL key store: it listens on Ak interfaces only, fetches
    by ID the keys the primary stored, answers Get status from the store, and serves key
    requests, relaying their keys with the links' key it takes from the store. The primary
    alone acquires key on the links, synchronises it, receives relays, talks with the QKD
    modules, reports to the controller and erases expired keys. Sessions and rate quotas are
    each process's own."""

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
        if not MIN_SIZE_OF_KEY <= size <= self.max_size_of_key:
            raise RequestRefused(
                f"size_of_key {size} is outside this KM's {MIN_SIZE_OF_KEY} to "
                f"{self.max_size_of_key} bits"
            )
        if number * size > MAX_RELAY_BITS:
            raise RequestRefused(
                f"{number} keys of {size} bits are over the {MAX_RELAY_BITS} bits one request "
                "may carry"
            )

    def served_application(self, claimed: str | None, peer_id: str | None) -> str:
        """The application a request comes from: the ID its certificate holds (``peer_id``),
        else the one it ``claimed``. Raises :class:`~qkdn_sdk.errors.NotAuthorized` for an
        application this KM does not serve."""
        application = peer_id or claimed
        if application is None:
            raise KeyManagerError("say which application sends this (its ID)")
        if application not in self.applications:
            raise NotAuthorized(f"application {quoted(application)} is not served by {self.km_id}")
        return application

    def link(self, neighbour: str) -> KMLink:
        """The link to ``neighbour`` (one of :attr:`links`)."""
        return next(link for link in self.links if link.neighbour == neighbour)

    def __attrs_post_init__(self) -> None:
        for key in self.listen:
            listen_interface(key)
        if self.replica and any(listen_interface(key) != "ak" for key in self.listen):
            raise ValueError(f"{self.km_id}: a replica listens on Ak interfaces only")
        if not self.max_keys_per_second > 0:
            raise ValueError(
                f"{self.km_id}: max_keys_per_second must be > 0, not {self.max_keys_per_second}"
            )
        for name, least in (
            ("max_keys_held", 0),
            ("max_keys_held_per_pair", 0),
            ("fair_share_reserve_bits", 0),
            ("fair_share_window_bits", 1),
            ("max_link_key_bits", 1),
        ):
            if getattr(self, name) < least:
                raise ValueError(
                    f"{self.km_id}: {name} must be at least {least}, not {getattr(self, name)}"
                )
        for name in ("key_lifetime", "refetch_window", "expiry_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{self.km_id}: {name} must be > 0, not {getattr(self, name)}")
        if not 0 <= self.min_share <= 1:
            raise ValueError(f"{self.km_id}: min_share must be 0 to 1, not {self.min_share}")
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
