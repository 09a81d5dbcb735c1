"""A QKD network as an operator writes it down: a TOML topology file.

::

    transport = "tcp+tls"        # scheme of every interface (tcp+tls, or memory in tests)
    host = "127.0.0.1"           # where roles listen; ports are chosen at start-up

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
from qkdn_sdk.roles.km import INTERFACES
from qkdn_sdk.roles.qkd_module import Kq1Mode

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
    except _Problem as exc:
        raise TopologyError(f"{source}: {exc}") from None


class _Problem(Exception):
    pass


def _get(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise _Problem(f"{where}: {key} is missing")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _Problem(f"{where}: {key} must be a {kind.__name__}, not {value!r}")
    return value


def _tables(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _Problem(f"{key} must be an array of tables ([[{key}]])")
    return value


def _identifier(value: str, where: str) -> str:
    if not value or not value.isprintable() or "/" in value or "\\" in value or ":" in value:
        raise _Problem(f"{where}: {value!r} is not a usable ID (printable, no / \\ or :)")
    return value


def _topology(data: Mapping[str, Any]) -> Topology:
    known = {"transport", "host", "controller", "km", "link", "application"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise _Problem(f"unknown keys {unknown} (expected {sorted(known)})")
    transport = _get(data, "transport", str, "top level", "tcp+tls")
    if transport not in _SCHEMES:
        raise _Problem(f"transport must be one of {list(_SCHEMES)}, not {transport!r}")
    host = _get(data, "host", str, "top level", "127.0.0.1")

    def default_url(name: str) -> str:
        if transport == "memory":
            return f"memory://{name}"
        return f"{transport}://{host}:0"

    controller = data.get("controller")
    if not isinstance(controller, dict):
        raise _Problem("[controller] is missing")
    controller_id = _identifier(_get(controller, "id", str, "controller"), "controller")
    controller_listen = _get(
        controller, "listen", str, "controller", default_url(f"{controller_id}/ck")
    )

    kms: list[KMSpec] = []
    for index, table in enumerate(_tables(data, "km"), 1):
        where = f"km {index}"
        km_id = _identifier(_get(table, "id", str, where), where)
        listen = dict(_get(table, "listen", dict, f"km {km_id}", {}))
        for interface in listen:
            if interface not in INTERFACES:
                raise _Problem(f"km {km_id}: unknown interface {interface!r} in listen")
        for interface in INTERFACES:
            listen.setdefault(interface, default_url(f"{km_id}/{interface}"))
        kms.append(KMSpec(id=km_id, listen=listen))
    if not kms:
        raise _Problem("no [[km]]")
    km_ids = [km.id for km in kms]

    links: list[LinkSpec] = []
    for index, table in enumerate(_tables(data, "link"), 1):
        where = f"link {index}"
        pair = _get(table, "kms", list, where)
        if len(pair) != 2 or pair[0] == pair[1] or any(km not in km_ids for km in pair):
            raise _Problem(f"{where}: kms must name two different KMs of [[km]], not {pair!r}")
        rate = _get(table, "secret_key_rate", float, where)
        if not rate > 0:
            raise _Problem(f"{where}: secret_key_rate must be > 0 bits/s")
        mode_name = _get(table, "mode", str, where, Kq1Mode.PROACTIVE.value)
        try:
            mode = Kq1Mode(mode_name)
        except ValueError:
            modes = [mode.value for mode in Kq1Mode]
            raise _Problem(f"{where}: mode must be one of {modes}, not {mode_name!r}") from None
        key_size = _get(table, "key_size", int, where, 4096)
        if key_size < 256 or key_size % 256:
            raise _Problem(f"{where}: key_size must be a positive multiple of 256 bits")
        links.append(
            LinkSpec(kms=(pair[0], pair[1]), secret_key_rate=rate, mode=mode, key_size=key_size)
        )
    names = [frozenset(link.kms) for link in links]
    if len(set(names)) != len(names):
        raise _Problem("two links join the same two KMs")

    applications: list[ApplicationSpec] = []
    for index, table in enumerate(_tables(data, "application"), 1):
        where = f"application {index}"
        app_id = _identifier(_get(table, "id", str, where), where)
        km = _get(table, "km", str, f"application {app_id}")
        if km not in km_ids:
            raise _Problem(f"application {app_id}: km {km!r} is not a [[km]]")
        applications.append(ApplicationSpec(id=app_id, km=km))

    topology = Topology(
        transport=transport,
        host=host,
        controller_id=controller_id,
        controller_listen=controller_listen,
        kms=tuple(kms),
        links=tuple(links),
        applications=tuple(applications),
    )
    entities = topology.entities()
    twice = sorted({entity for entity in entities if entities.count(entity) > 1})
    if twice:
        raise _Problem(f"IDs used twice: {twice}")
    return topology
