"""A QKD network as an operator writes it down: a TOML topology file.

::

    transport = "tcp+tls"        # scheme of every interface (tcp+tls, or memory in tests)
    host = "127.0.0.1"           # where roles listen; ports are chosen at start-up
    routing = "distributed"      # Q.4164 clause 7.1 (next hop per KM) or "centralized" (7.2)
    also = {ak = ["https"]}      # interfaces also served by other transports (optional):
                                 # Ak as ETSI GS QKD 014 on https://; "grpcs" for gRPC

    [controller]
    id = "controller"

    [[km]]
    id = "km-a"                  # optional: listen = {ak = "tcp+tls://127.0.0.1:7001", ...}
    options = {max_keys_held_per_pair = 10_000}   # optional: further KMConfig fields

    [[link]]                     # a QKD link: one simulated QKD module at each end
    kms = ["km-a", "km-b"]
    secret_key_rate = 256_000    # bits per second
    mode = "proactive"           # Kq-1 mode: "proactive" (Q.4162 7.1) or "on-request" (7.2)
    key_size = 4096              # bits per QKD-key (optional; what the KMs ask of KMEs too)
    buffer_keys = 256            # ready keys a module holds for its KM (optional)
    hash_algorithm = "sha256"    # of each key's Kq-1 "Hash value" (optional): SHA-2, SHA-3, BLAKE2
    etsi014 = true               # on-request: the modules serve Kq-1 as ETSI 014 (optional)

    [[link]]                     # a QKD link whose keys come from two ETSI 014 KMEs (devices)
    kms = ["km-b", "km-c"]
    kme.km-b = {url = "https://qkd-b:443", sae_id = "km-b", ca = "..", cert = "..", key = ".."}
    kme.km-c = {url = "https://qkd-c:443"}   # sae_id: the KM's ID; TLS: the network's PKI

    [[application]]
    id = "alice"
    km = "km-a"

:func:`load_topology` reads and checks it; every problem is one :class:`TopologyError` line
naming the file and the entry (a key the table does not have, too).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from qkdn_sdk.errors import QkdnError
from qkdn_sdk.network._toml import (
    Problem,
    checked,
    choice,
    get,
    identifier,
    known_keys,
    tables,
)
from qkdn_sdk.roles.controller import ControllerConfig
from qkdn_sdk.roles.km import INTERFACES, KMConfig, KMLink, Routing, listen_interface
from qkdn_sdk.roles.qkd_module import (
    BUFFER_KEYS,
    HASH_ALGORITHMS,
    Kq1Mode,
    QKDModuleConfig,
    check_hash_algorithm,
)
from qkdn_sdk.tls import TLSConfig

__all__ = [
    "KM_OPTIONS",
    "ApplicationSpec",
    "KMESpec",
    "KMSpec",
    "LinkSpec",
    "Topology",
    "TopologyError",
    "km_options",
    "load_topology",
    "module_id",
    "parse_topology",
]

_SCHEMES = ("tcp+tls", "tcp", "grpcs", "grpc", "memory")
KM_OPTIONS: Mapping[str, Any] = {
    field.name: field.default
    for field in attrs.fields(KMConfig)
    if field.name
    not in ("km_id", "listen", "controller_id", "links", "applications", "routing", "replica")
}
"""The further KMConfig fields (quotas, caps, lifetimes, limits, timeouts, intervals) a KM's
``options`` may set, in a topology's ``[[km]]`` or a KM's role file, with their defaults."""
_TLS_SCHEMES = ("tcp+tls", "grpcs", "https")


class TopologyError(QkdnError):
    """The topology cannot be used; the text says where and why, in one line."""


def module_id(km: str, neighbour: str) -> str:
    """The ID of ``km``'s QKD module on its link to ``neighbour`` (its certificate ID)."""
    return f"{km}.{neighbour}"


def km_options(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``options`` table of a KM, each a field of :data:`KM_OPTIONS` of its type. Raises
    :class:`~qkdn_sdk.network._toml.Problem` (prefixed with ``where``) for another key or
    type."""
    known_keys(table, set(KM_OPTIONS), where)
    return {name: get(table, name, type(KM_OPTIONS[name]), where) for name in table}


@attrs.frozen
class KMSpec:
    """A ``[[km]]`` of the topology: its ID, where it listens, its options."""

    id: str
    listen: Mapping[str, str]
    """URL per interface (``ak``, ``ck``, ``kq1``, ``kx``), and ``<interface>@<scheme>`` for
    an interface served by another transport too (``ak@https``: ETSI GS QKD 014)."""
    options: Mapping[str, Any] = attrs.Factory(dict)
    """Further :class:`~qkdn_sdk.roles.km.KMConfig` fields of this KM (:data:`KM_OPTIONS`)."""


@attrs.frozen
class KMESpec:
    """An ETSI GS QKD 014 KME (a QKD device) at one end of a link: the KM there is its SAE."""

    url: str
    sae_id: str
    """The KM's SAE ID at the KME (the ID in the certificate it presents there)."""
    id: str | None = None
    """The KME's ID, for the logs; ``None``: the module ID of that end."""
    tls: TLSConfig | None = None
    """The CA of the KME and the KM's certificate and key for it; ``None``: the network's."""


@attrs.frozen
class LinkSpec:
    """A ``[[link]]`` of the topology: a QKD link between two KMs, how its modules make and
    hand over keys (or the ETSI 014 KMEs that do)."""

    kms: tuple[str, str]
    secret_key_rate: float
    mode: Kq1Mode
    key_size: int
    buffer_keys: int = BUFFER_KEYS
    """Ready keys each QKD module holds for its KM; beyond it the oldest are dropped."""
    hash_algorithm: str = HASH_ALGORITHMS[0]
    """The algorithm of the "Hash value" (Q.4162 Table 1) the modules give each key."""
    etsi014: bool = False
    """On-request links: the QKD modules serve Kq-1 as ETSI GS QKD 014 (``https://``)."""
    kmes: Mapping[str, KMESpec] = attrs.Factory(dict)
    """When set (both ends): the link's keys come from these external ETSI 014 KMEs, not from
    simulated QKD modules."""

    @property
    def name(self) -> str:
        return f"{self.kms[0]}-{self.kms[1]}"


@attrs.frozen
class ApplicationSpec:
    """An ``[[application]]`` of the topology: its ID and the KM that serves it."""

    id: str
    km: str


@attrs.frozen
class Topology:
    """A checked topology: KMs, links and applications in the order of the file."""

    transport: str
    host: str
    routing: Routing
    controller_id: str
    controller_listen: str
    kms: tuple[KMSpec, ...]
    links: tuple[LinkSpec, ...]
    applications: tuple[ApplicationSpec, ...]
    controller_also: tuple[str, ...] = ()
    """Further Ck URLs of the controller, by other transports."""

    @property
    def uses_tls(self) -> bool:
        """Whether the roles speak TLS (and need the network's PKI)."""
        return self.transport in _TLS_SCHEMES

    def km(self, km_id: str) -> KMSpec:
        return next(km for km in self.kms if km.id == km_id)

    def links_of(self, km_id: str) -> list[tuple[str, LinkSpec]]:
        """``(neighbour, link)`` for every link of ``km_id``."""
        return [
            (link.kms[1] if link.kms[0] == km_id else link.kms[0], link)
            for link in self.links
            if km_id in link.kms
        ]

    def applications_of(self, km_id: str) -> frozenset[str]:
        return frozenset(app.id for app in self.applications if app.km == km_id)

    def module_listen(self, km: str, neighbour: str) -> str:
        """Where ``km``'s QKD module on the link to ``neighbour`` serves when its KM asks it for
        keys (on-request links): on ``host``, any port."""
        if self.transport == "memory":
            return f"memory://{module_id(km, neighbour)}/kq1"
        link = next(link for other, link in self.links_of(km) if other == neighbour)
        return f"{'https' if link.etsi014 else self.transport}://{self.host}:0"

    def serving_also(self, also: Mapping[str, Sequence[str]]) -> Topology:
        """This topology with interfaces also served by other transports: ``also`` maps an
        interface to schemes (``{"ak": ["https"]}``: every KM serves Ak as ETSI GS QKD 014 too;
        ``{"ck": ["grpcs"]}``: the KMs and the controller serve Ck over gRPC too), each on
        ``host``, any port, unless a KM names its URL. Raises :class:`TopologyError` for an
        unknown interface or a ``memory`` topology."""
        if not self.uses_tls:
            raise TopologyError(
                f"other transports need a TLS transport (tcp+tls or grpcs), not {self.transport}"
            )
        kms = []
        for km in self.kms:
            listen = dict(km.listen)
            for interface, schemes in also.items():
                for scheme in schemes:
                    key = f"{interface}@{scheme}"
                    try:
                        listen_interface(key)
                    except ValueError as exc:
                        raise TopologyError(str(exc)) from None
                    listen.setdefault(key, f"{scheme}://{self.host}:0")
            kms.append(attrs.evolve(km, listen=listen))
        extra = tuple(f"{scheme}://{self.host}:0" for scheme in also.get("ck", ()))
        return attrs.evolve(
            self,
            kms=tuple(kms),
            controller_also=(*self.controller_also, *extra),
        )

    def controller_config(self) -> ControllerConfig:
        """The controller's configuration: every KM, link, application and (simulated) QKD
        module of the topology."""
        return ControllerConfig(
            controller_id=self.controller_id,
            listen_url=self.controller_listen,
            also_listen=self.controller_also,
            kms=frozenset(km.id for km in self.kms),
            links=frozenset(frozenset(link.kms) for link in self.links),
            applications={app.id: app.km for app in self.applications},
            modules={
                module_id(km, neighbour): frozenset(link.kms)
                for link in self.links
                if not link.kmes  # external ETSI 014 KMEs do not speak to the controller
                for km, neighbour in (link.kms, link.kms[::-1])
            },
        )

    def km_config(self, km_id: str, module_urls: Mapping[str, str], **options: Any) -> KMConfig:
        """The configuration of the KM ``km_id``; ``module_urls`` gives the URL of each QKD
        module (by ID) that serves on-request keys; ``options`` are further
        :class:`~qkdn_sdk.roles.km.KMConfig` fields (timeouts, intervals, limits), over those
        the KM's ``options`` in the topology give."""
        links = tuple(
            _kme_link(km_id, neighbour, link)
            if link.kmes
            else KMLink(
                neighbour=neighbour,
                module_id=module_id(km_id, neighbour),
                mode=link.mode,
                module_url=module_urls.get(module_id(km_id, neighbour)),
                hash_algorithm=link.hash_algorithm,
            )
            for neighbour, link in self.links_of(km_id)
        )
        return KMConfig(
            km_id=km_id,
            listen=self.km(km_id).listen,
            controller_id=self.controller_id,
            links=links,
            applications=self.applications_of(km_id),
            routing=self.routing,
            **{**self.km(km_id).options, **options},
        )

    def module_config(
        self,
        km: str,
        neighbour: str,
        link_secret: bytes,
        epoch: float,
        *,
        km_url: str | None = None,
        listen_url: str | None = None,
        controller_url: str | None = None,
    ) -> QKDModuleConfig:
        """The configuration of ``km``'s QKD module on the link to ``neighbour``: it pushes
        keys to ``km_url`` (proactive link) or serves ``listen_url`` (on-request link), and
        reports to the topology's controller at ``controller_url`` (none when ``None``)."""
        link = next(link for other, link in self.links_of(km) if other == neighbour)
        return QKDModuleConfig(
            module_id=module_id(km, neighbour),
            matching_module_id=module_id(neighbour, km),
            link_secret=link_secret,
            epoch=epoch,
            secret_key_rate=link.secret_key_rate,
            mode=link.mode,
            key_size=link.key_size,
            buffer_keys=link.buffer_keys,
            hash_algorithm=link.hash_algorithm,
            km_url=km_url,
            listen_url=listen_url,
            km_id=km,
            peer_km_id=neighbour,
            controller_id=self.controller_id if controller_url is not None else None,
            controller_url=controller_url,
        )

    def entities(self) -> list[str]:
        """Every ID that needs a certificate: controller, KMs, (simulated) QKD modules,
        applications."""
        modules = [
            module_id(a, b)
            for link in self.links
            if not link.kmes
            for a, b in (link.kms, link.kms[::-1])
        ]
        return [
            self.controller_id,
            *(km.id for km in self.kms),
            *modules,
            *(app.id for app in self.applications),
        ]


def _kme_link(km: str, neighbour: str, link: LinkSpec) -> KMLink:
    """``km``'s end of a link whose keys come from ETSI 014 KMEs: it asks for ``key_size``."""
    ours = link.kmes[km]
    return KMLink(
        neighbour=neighbour,
        module_id=ours.id or module_id(km, neighbour),
        mode=Kq1Mode.ON_REQUEST,
        module_url=ours.url,
        kme_pair=True,
        peer_sae_id=link.kmes[neighbour].sae_id,
        tls=ours.tls,
        key_size=link.key_size,
    )


def _kmes(value: Any, pair: list[str], where: str) -> dict[str, KMESpec]:
    """The ``kme`` table of a link: one ETSI 014 KME per end."""
    if not isinstance(value, dict) or set(value) != set(pair):
        raise Problem(f"{where}: kme names one KME for each of {pair}")
    kmes = {}
    for km in pair:
        table = get(value, km, dict, where)
        here = f"{where} kme {km}"
        known_keys(table, {"url", "sae_id", "id", "ca", "cert", "key"}, here)
        url = get(table, "url", str, here)
        if not url.startswith("https://"):
            raise Problem(f"{here}: url must be https://HOST:PORT (an ETSI 014 KME)")
        files = [get(table, name, str, here, None) for name in ("ca", "cert", "key")]
        if any(files) and not all(files):
            raise Problem(f"{here}: give ca, cert and key together (or none: the network's)")
        ca, cert, key = files
        kmes[km] = KMESpec(
            url=url,
            sae_id=get(table, "sae_id", str, here, km),
            id=get(table, "id", str, here, None),
            tls=TLSConfig(ca=ca, cert=cert, key=key) if ca and cert and key else None,
        )
    return kmes


def load_topology(path: Path) -> Topology:
    """Read and check the topology file at ``path``. Raises :class:`TopologyError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    return parse_topology(text, source=str(path))


def parse_topology(text: str, *, source: str = "topology") -> Topology:
    """Check a topology given as TOML text. Raises :class:`TopologyError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{source}: not valid TOML: {exc}") from None
    try:
        return _topology(data)
    except Problem as exc:
        raise TopologyError(f"{source}: {exc}") from None


_LINK_KEYS = {
    "kms",
    "secret_key_rate",
    "mode",
    "key_size",
    "buffer_keys",
    "hash_algorithm",
    "etsi014",
    "kme",
}


def _topology(data: Mapping[str, Any]) -> Topology:
    known_keys(
        data,
        {"transport", "host", "routing", "also", "controller", "km", "link", "application"},
        None,
    )
    transport = get(data, "transport", str, "top level", "tcp+tls")
    if transport not in _SCHEMES:
        raise Problem(f"transport must be one of {list(_SCHEMES)}, not {transport!r}")
    host = get(data, "host", str, "top level", "127.0.0.1")
    routing = choice(data, "routing", Routing, None, Routing.DISTRIBUTED.value)
    also = get(data, "also", dict, "top level", {})
    for interface, schemes in also.items():
        if not isinstance(schemes, list) or not all(isinstance(item, str) for item in schemes):
            raise Problem(f"also: {interface} must be a list of schemes, not {schemes!r}")

    def default_url(name: str) -> str:
        if transport == "memory":
            return f"memory://{name}"
        return f"{transport}://{host}:0"

    controller = data.get("controller")
    if not isinstance(controller, dict):
        raise Problem("[controller] is missing")
    known_keys(controller, {"id", "listen"}, "controller")
    controller_id = identifier(get(controller, "id", str, "controller"), "controller")
    controller_listen = get(
        controller, "listen", str, "controller", default_url(f"{controller_id}/ck")
    )

    kms: list[KMSpec] = []
    for index, table in enumerate(tables(data, "km"), 1):
        where = f"km {index}"
        known_keys(table, {"id", "listen", "options"}, where)
        km_id = identifier(get(table, "id", str, where), where)
        options = km_options(get(table, "options", dict, f"km {km_id}", {}), f"km {km_id} options")
        try:  # a value the KM would refuse is refused when the file is read
            KMConfig(km_id=km_id, listen={}, controller_id=controller_id, **options)
        except ValueError as exc:
            raise Problem(f"km {km_id} options: {exc}") from None
        listen = dict(get(table, "listen", dict, f"km {km_id}", {}))
        for key in listen:
            try:
                listen_interface(key)
            except ValueError as exc:
                raise Problem(f"km {km_id}: listen: {exc}") from None
        for interface in INTERFACES:
            listen.setdefault(interface, default_url(f"{km_id}/{interface}"))
        kms.append(KMSpec(id=km_id, listen=listen, options=options))
    if not kms:
        raise Problem("no [[km]]")
    km_ids = [km.id for km in kms]

    links: list[LinkSpec] = []
    for index, table in enumerate(tables(data, "link"), 1):
        where = f"link {index}"
        known_keys(table, _LINK_KEYS, where)
        pair = get(table, "kms", list, where)
        if len(pair) != 2 or pair[0] == pair[1] or any(km not in km_ids for km in pair):
            raise Problem(f"{where}: kms must name two different KMs of [[km]], not {pair!r}")
        kmes = _kmes(table["kme"], pair, where) if "kme" in table else {}
        rate = get(table, "secret_key_rate", float, where, 1.0 if kmes else ...)
        if not rate > 0:
            raise Problem(f"{where}: secret_key_rate must be > 0 bits/s")
        mode = choice(table, "mode", Kq1Mode, where, Kq1Mode.PROACTIVE.value)
        if kmes:
            if transport == "memory":
                raise Problem(f"{where}: a link with ETSI 014 KMEs needs tcp+tls, not memory")
            mode = Kq1Mode.ON_REQUEST  # the KMs ask the KMEs for keys
        key_size = get(table, "key_size", int, where, 4096)
        if key_size < 256 or key_size % 256:
            raise Problem(f"{where}: key_size must be a positive multiple of 256 bits")
        buffer_keys = get(table, "buffer_keys", int, where, BUFFER_KEYS)
        if buffer_keys < 1:
            raise Problem(f"{where}: buffer_keys must be at least 1")
        hash_algorithm = checked(
            table, "hash_algorithm", check_hash_algorithm, where, HASH_ALGORITHMS[0]
        )
        link_014 = get(table, "etsi014", bool, where, False)
        if link_014 and (mode is not Kq1Mode.ON_REQUEST or transport == "memory"):
            raise Problem(f'{where}: etsi014 = true needs mode = "on-request" and tcp+tls')
        links.append(
            LinkSpec(
                kms=(pair[0], pair[1]),
                secret_key_rate=rate,
                mode=mode,
                key_size=key_size,
                buffer_keys=buffer_keys,
                hash_algorithm=hash_algorithm,
                etsi014=link_014,
                kmes=kmes,
            )
        )
    names = [frozenset(link.kms) for link in links]
    if len(set(names)) != len(names):
        raise Problem("two links join the same two KMs")

    applications: list[ApplicationSpec] = []
    for index, table in enumerate(tables(data, "application"), 1):
        where = f"application {index}"
        known_keys(table, {"id", "km"}, where)
        app_id = identifier(get(table, "id", str, where), where)
        km = get(table, "km", str, f"application {app_id}")
        if km not in km_ids:
            raise Problem(f"application {app_id}: km {km!r} is not a [[km]]")
        applications.append(ApplicationSpec(id=app_id, km=km))

    topology = Topology(
        transport=transport,
        host=host,
        routing=routing,
        controller_id=controller_id,
        controller_listen=controller_listen,
        kms=tuple(kms),
        links=tuple(links),
        applications=tuple(applications),
    )
    if also:
        try:
            topology = topology.serving_also(also)
        except TopologyError as exc:
            raise Problem(f"also: {exc}") from None
    entities = topology.entities()
    twice = sorted({entity for entity in entities if entities.count(entity) > 1})
    if twice:
        raise Problem(f"IDs used twice: {twice}")
    return topology
