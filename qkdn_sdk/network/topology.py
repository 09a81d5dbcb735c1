"""A QKD network as an operator writes it down: a TOML topology file.

::

    transport = "tcp+tls"        # scheme of every interface (tcp+tls, or memory in tests)
    host = "127.0.0.1"           # where roles listen; ports are chosen at start-up
    routing = "distributed"      # Q.4164 clause 7.1 (next hop per KM) or "centralized" (7.2)

    [controller]
    id = "controller"

    [[km]]
    id = "km-a"                  # optional: listen = {ak = "tcp+tls://127.0.0.1:7001", ...}

    [[link]]                     # a QKD link: one simulated QKD module at each end
    kms = ["km-a", "km-b"]
    secret_key_rate = 256_000    # bits per second
    mode = "proactive"           # Kq-1 mode: "proactive" (Q.4162 7.1) or "on-request" (7.2)
    key_size = 4096              # bits per QKD-key (optional)

    [[application]]
    id = "alice"
    km = "km-a"

:func:`load_topology` reads and checks it; every problem is one :class:`TopologyError` line
naming the file and the entry.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from qkdn_sdk.errors import QkdnError
from qkdn_sdk.network._toml import Problem, choice, get, identifier, known_keys, tables
from qkdn_sdk.roles.controller import ControllerConfig
from qkdn_sdk.roles.km import INTERFACES, KMConfig, KMLink, Routing
from qkdn_sdk.roles.qkd_module import Kq1Mode, QKDModuleConfig

__all__ = [
    "ApplicationSpec",
    "KMSpec",
    "LinkSpec",
    "Topology",
    "TopologyError",
    "load_topology",
    "module_id",
    "parse_topology",
]

_SCHEMES = ("tcp+tls", "tcp", "memory")


class TopologyError(QkdnError):
    """The topology cannot be used; the text says where and why, in one line."""


def module_id(km: str, neighbour: str) -> str:
    """The ID of ``km``'s QKD module on its link to ``neighbour`` (its certificate ID)."""
    return f"{km}.{neighbour}"


@attrs.frozen
class KMSpec:
    id: str
    listen: Mapping[str, str]
    """URL per interface (``ak``, ``ck``, ``kq1``, ``kx``)."""


@attrs.frozen
class LinkSpec:
    kms: tuple[str, str]
    secret_key_rate: float
    mode: Kq1Mode
    key_size: int

    @property
    def name(self) -> str:
        return f"{self.kms[0]}-{self.kms[1]}"


@attrs.frozen
class ApplicationSpec:
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
        return f"{self.transport}://{self.host}:0"

    def controller_config(self) -> ControllerConfig:
        """The controller's configuration: every KM, link and application of the topology."""
        return ControllerConfig(
            controller_id=self.controller_id,
            listen_url=self.controller_listen,
            kms=frozenset(km.id for km in self.kms),
            links=frozenset(frozenset(link.kms) for link in self.links),
            applications={app.id: app.km for app in self.applications},
        )

    def km_config(self, km_id: str, module_urls: Mapping[str, str], **options: Any) -> KMConfig:
        """The configuration of the KM ``km_id``; ``module_urls`` gives the URL of each QKD
        module (by ID) that serves on-request keys; ``options`` are further
        :class:`~qkdn_sdk.roles.km.KMConfig` fields (timeouts, intervals, limits)."""
        links = tuple(
            KMLink(
                neighbour=neighbour,
                module_id=module_id(km_id, neighbour),
                mode=link.mode,
                module_url=module_urls.get(module_id(km_id, neighbour)),
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
            **options,
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
    ) -> QKDModuleConfig:
        """The configuration of ``km``'s QKD module on the link to ``neighbour``: it pushes
        keys to ``km_url`` (proactive link) or serves ``listen_url`` (on-request link)."""
        link = next(link for other, link in self.links_of(km) if other == neighbour)
        return QKDModuleConfig(
            module_id=module_id(km, neighbour),
            matching_module_id=module_id(neighbour, km),
            link_secret=link_secret,
            epoch=epoch,
            secret_key_rate=link.secret_key_rate,
            mode=link.mode,
            key_size=link.key_size,
            km_url=km_url,
            listen_url=listen_url,
            km_id=km,
        )

    def entities(self) -> list[str]:
        """Every ID that needs a certificate: controller, KMs, QKD modules, applications."""
        modules = [module_id(a, b) for link in self.links for a, b in (link.kms, link.kms[::-1])]
        return [
            self.controller_id,
            *(km.id for km in self.kms),
            *modules,
            *(app.id for app in self.applications),
        ]


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


def _topology(data: Mapping[str, Any]) -> Topology:
    known_keys(
        data, {"transport", "host", "routing", "controller", "km", "link", "application"}, None
    )
    transport = get(data, "transport", str, "top level", "tcp+tls")
    if transport not in _SCHEMES:
        raise Problem(f"transport must be one of {list(_SCHEMES)}, not {transport!r}")
    host = get(data, "host", str, "top level", "127.0.0.1")
    routing = choice(data, "routing", Routing, None, Routing.DISTRIBUTED.value)

    def default_url(name: str) -> str:
        if transport == "memory":
            return f"memory://{name}"
        return f"{transport}://{host}:0"

    controller = data.get("controller")
    if not isinstance(controller, dict):
        raise Problem("[controller] is missing")
    controller_id = identifier(get(controller, "id", str, "controller"), "controller")
    controller_listen = get(
        controller, "listen", str, "controller", default_url(f"{controller_id}/ck")
    )

    kms: list[KMSpec] = []
    for index, table in enumerate(tables(data, "km"), 1):
        where = f"km {index}"
        km_id = identifier(get(table, "id", str, where), where)
        listen = dict(get(table, "listen", dict, f"km {km_id}", {}))
        for interface in listen:
            if interface not in INTERFACES:
                raise Problem(f"km {km_id}: unknown interface {interface!r} in listen")
        for interface in INTERFACES:
            listen.setdefault(interface, default_url(f"{km_id}/{interface}"))
        kms.append(KMSpec(id=km_id, listen=listen))
    if not kms:
        raise Problem("no [[km]]")
    km_ids = [km.id for km in kms]

    links: list[LinkSpec] = []
    for index, table in enumerate(tables(data, "link"), 1):
        where = f"link {index}"
        pair = get(table, "kms", list, where)
        if len(pair) != 2 or pair[0] == pair[1] or any(km not in km_ids for km in pair):
            raise Problem(f"{where}: kms must name two different KMs of [[km]], not {pair!r}")
        rate = get(table, "secret_key_rate", float, where)
        if not rate > 0:
            raise Problem(f"{where}: secret_key_rate must be > 0 bits/s")
        mode = choice(table, "mode", Kq1Mode, where, Kq1Mode.PROACTIVE.value)
        key_size = get(table, "key_size", int, where, 4096)
        if key_size < 256 or key_size % 256:
            raise Problem(f"{where}: key_size must be a positive multiple of 256 bits")
        links.append(
            LinkSpec(kms=(pair[0], pair[1]), secret_key_rate=rate, mode=mode, key_size=key_size)
        )
    names = [frozenset(link.kms) for link in links]
    if len(set(names)) != len(names):
        raise Problem("two links join the same two KMs")

    applications: list[ApplicationSpec] = []
    for index, table in enumerate(tables(data, "application"), 1):
        where = f"application {index}"
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
    entities = topology.entities()
    twice = sorted({entity for entity in entities if entities.count(entity) > 1})
    if twice:
        raise Problem(f"IDs used twice: {twice}")
    return topology
