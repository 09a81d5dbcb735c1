"""One role per process: a config file per role of a topology, and the role it describes.

Theory of operation
-------------------
:func:`write_role_configs` turns a :class:`~qkdn_sdk.network.topology.Topology` into what the
machines of a deployment need: the development PKI in ``DIR/pki`` (when the transport uses TLS),
a secret and a start time per QKD link, ``DIR/config/<id>.toml`` for the controller, every
KM and every QKD module, and ``DIR/endpoints.json`` (as ``qkdn network up`` writes it). Every
URL gets a fixed port (a role in another process cannot learn a port chosen at start-up), the
next free one from ``first_port`` unless the topology fixes it.

A directory that already holds a deployment is refused unless told what to do with it
(:class:`Existing`): replace it, or update it, keeping what the running roles hold (the PKI,
each link's secret and start time, the ports and key store of every role still there), adding
the roles that are new and removing the files of those that are gone. Roles started from the
old files and roles started from the new ones then still find and match each other. The
directory is locked while it is written (:func:`~qkdn_sdk.network._state.locked`), so neither
a second configure nor ``qkdn network up`` writes into it meanwhile.

:func:`load_role_config` reads one such file back into a :class:`RoleConfig`: the role's own
configuration object (:class:`~qkdn_sdk.roles.km.KMConfig`,
:class:`~qkdn_sdk.roles.controller.ControllerConfig` or
:class:`~qkdn_sdk.roles.qkd_module.QKDModuleConfig`), its TLS files and, for a KM, its key store
and the URLs of its peers. ``await nursery.start(role.run)`` serves it, exactly as
:class:`~qkdn_sdk.network.Network` runs the same role in one process. Relative paths in a file
are relative to the file. The files are what ``qkdn network configure`` writes and ``qkdn serve``
reads; they are meant to be read and edited by an operator (hosts, ports, paths).

A KM file::

    role = "km"
    id = "km-a"
    store = "../km-a.sqlite3"          # its SQLite key store, or a PostgreSQL database:
                                       # "postgresql://user@host/db" (key_encryption_key needed)
    key_encryption_key = "file:../km-a.kek"  # optional: or env:NAME, command:... (default:
                                       # the store's path + ".kek", made when missing)
    applications = ["alice"]           # the applications it serves
    routing = "distributed"            # or "centralized" (Q.4164 clauses 7.1, 7.2)
    listen = {ak = "tcp+tls://127.0.0.1:7001", ck = "...", kq1 = "...", kx = "..."}
    controller = {id = "controller", url = "tcp+tls://127.0.0.1:7000"}
    tls = {ca = "../pki/ca.pem", cert = "../pki/km-a.pem", key = "../pki/km-a.key"}
    options = {relay_timeout = 10.0}   # optional: further KMConfig fields
    replica = false                    # true: a second process of km-a on its PostgreSQL
                                       # store, serving Ak only (listen = {ak = ...})
    metrics = "127.0.0.1:9101"         # optional: serve Prometheus metrics at
                                       # http://127.0.0.1:9101/metrics (port 0: any free one)

    [[link]]
    neighbour = "km-b"
    url = "tcp+tls://127.0.0.1:7008"   # the neighbour's KM-link (kx) URL
    module = "km-a.km-b"               # our QKD module on the link
    mode = "on-request"
    module_url = "tcp+tls://127.0.0.1:7012"   # on-request only: where the module serves
    hash_algorithm = "sha3_256"        # optional: of the Kq-1 hash values (default sha256)
    key_size = 4096                    # optional: bits per QKD-key asked of the module or KME

A controller file has ``role = "controller"``, ``id``, ``listen`` (its Ck URL), ``kms``,
``links`` (pairs of KM IDs), ``applications`` (application ID = KM ID), ``modules`` (QKD module
ID = the two KMs of its link) and ``tls``. A QKD module file has ``role = "qkd-module"``, ``id``,
``matching_id``, ``km_id``, ``mode``, ``km_url`` (proactive: its KM's Kq-1 URL) or ``listen``
(on-request), ``secret_key_rate``, ``key_size``, ``buffer_keys``, ``hash_algorithm`` (unless
SHA-256), ``epoch``, ``link_secret`` (hex: the secret both modules of the link share; the file
is written with mode 0600), ``controller = {id, url}`` (the controller it reports its QKD link's
status to; optional, with ``report_interval``, seconds) and ``tls``. Every file may have
``metrics = "HOST:PORT"``: the role then serves its Prometheus metrics there
(:mod:`qkdn_sdk.roles.metrics`, plain HTTP).
"""

from __future__ import annotations

import enum
import os
import secrets
import socket
import time
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from qkdn_sdk._files import write_atomically
from qkdn_sdk.network._network import ENDPOINTS_FILE, endpoints_of, write_endpoints
from qkdn_sdk.network._role_config import (
    ROLES,
    RoleConfig,
    RoleConfigError,
    Serving,
    load_role_config,
)
from qkdn_sdk.network._state import (
    CA_NAME,
    PKI_DIR,
    locked,
    make_state_dir,
    reuse_dev_pki,
)
from qkdn_sdk.network.topology import Topology, module_id
from qkdn_sdk.pki import CA_CERT_FILE, dev_tls_config, write_dev_pki
from qkdn_sdk.roles.controller import ControllerConfig
from qkdn_sdk.roles.km import KMConfig, KMLink
from qkdn_sdk.roles.qkd_module import (
    HASH_ALGORITHMS,
    LINK_SECRET_SIZE,
    Kq1Mode,
)

__all__ = [
    "CONFIG_DIR",
    "ROLES",
    "Existing",
    "RoleConfig",
    "RoleConfigError",
    "Serving",
    "load_role_config",
    "write_role_configs",
]

CONFIG_DIR = "config"


class Existing(enum.Enum):
    """What :func:`write_role_configs` does with a deployment already in its directory (its
    ``config/`` or ``pki/``)."""

    REFUSE = "refuse"
    """Raise :class:`RoleConfigError`, changing nothing."""
    REPLACE = "replace"
    """Write every file anew: new ports, link secrets, certificates and keys (the CA is kept,
    as :func:`~qkdn_sdk.pki.write_dev_pki` keeps it)."""
    UPDATE = "update"
    """Keep the PKI, link secrets and start times, ports and key stores of the roles still in
    the topology; add the new roles; remove the files of the roles that are gone."""


# --- writing ------------------------------------------------------------------------------


def write_role_configs(
    topology: Topology,
    directory: Path,
    *,
    first_port: int,
    existing: Existing = Existing.REFUSE,
    metrics: bool = False,
) -> dict[str, Path]:
    """Write the PKI, one config file per role of ``topology`` and ``endpoints.json`` into
    ``directory``; return the file of each role ID, in start order (controller, KMs, QKD
    modules).

    Every URL the topology leaves at port 0 gets the next port from ``first_port`` that is free
    on this machine now (with :attr:`Existing.UPDATE`, the port its role's file has, when the
    role and interface are still there). With ``metrics``, every role serves its metrics on
    loopback, on a port of its own from the same ones (``metrics = "127.0.0.1:PORT"``; a role
    kept by :attr:`Existing.UPDATE` keeps its address). ``directory`` is made owner-only when
    missing, with a ``.gitignore`` of ``*``. Raises :class:`RoleConfigError` when the directory
    holds a deployment and ``existing`` is :attr:`Existing.REFUSE`, when an existing role file
    to update cannot be read (nothing is written then), or when a file cannot be written;
    :class:`~qkdn_sdk.network._state.StateDirInUse` when a network or another configure uses
    the directory; :class:`~qkdn_sdk.pki.PKIError` for the PKI.
    """
    directory = Path(directory).absolute()
    make_state_dir(directory)
    with locked(directory):
        present = [name for name in (CONFIG_DIR, PKI_DIR) if (directory / name).exists()]
        if present and existing is Existing.REFUSE:
            found = " and ".join(f"{directory / name}/" for name in present)
            raise RoleConfigError(
                f"{directory} already holds a deployment ({found}): update it with --update "
                "(keeps its PKI, link secrets and ports) or replace it with --force"
            )
        previous = _Previous.read(directory, topology) if existing is Existing.UPDATE else None
        return _write_deployment(
            topology,
            directory,
            first_port,
            previous or _Previous(),
            update=previous is not None,
            metrics=metrics,
        )


@attrs.frozen
class _Previous:
    """What :attr:`Existing.UPDATE` keeps of the role files already in a directory."""

    urls: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    """Role ID -> slot -> URL: a KM's interface keys, ``listen`` (the controller's Ck URL, an
    on-request module's) and ``also:<scheme>`` (the controller's further Ck URLs)."""
    links: Mapping[str, tuple[bytes, float]] = attrs.field(factory=dict)
    """QKD module ID -> its link's secret and start time."""
    stores: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    """KM ID -> its file's ``store`` and ``key_encryption_key`` entries."""

    @classmethod
    def read(cls, directory: Path, topology: Topology) -> _Previous:
        """The files of the roles of ``topology`` in ``directory/config`` that exist. Raises
        :class:`RoleConfigError` for one that cannot be read."""
        config_dir = directory / CONFIG_DIR
        roles = {
            topology.controller_id: "controller",
            **{km.id: "km" for km in topology.kms},
            **{
                module_id(km, neighbour): "qkd-module"
                for link in topology.links
                if not link.kmes
                for km, neighbour in (link.kms, link.kms[::-1])
            },
        }
        urls: dict[str, dict[str, str]] = {}
        links: dict[str, tuple[bytes, float]] = {}
        stores: dict[str, dict[str, str]] = {}
        for role_id, role in roles.items():
            path = config_dir / f"{role_id}.toml"
            if not path.exists():
                continue  # a new role
            config = load_role_config(path, role)
            if isinstance(config.config, ControllerConfig):
                urls[role_id] = {"listen": config.config.listen_url} | {
                    f"also:{_scheme(url)}": url for url in config.config.also_listen
                }
            elif isinstance(config.config, KMConfig):
                urls[role_id] = dict(config.config.listen)
                stores[role_id] = _store_entries(config, config_dir)
            else:
                if config.config.listen_url is not None:
                    urls[role_id] = {"listen": config.config.listen_url}
                links[role_id] = (config.config.link_secret, config.config.epoch)
            if config.metrics is not None:
                urls.setdefault(role_id, {})["metrics"] = f"http://{config.metrics}/metrics"
        return cls(urls=urls, links=links, stores=stores)

    def url(self, role_id: str, slot: str) -> str | None:
        return self.urls.get(role_id, {}).get(slot)

    def ports(self) -> set[int]:
        """Every port the kept files name: no new URL gets one of them."""
        return {
            port
            for slots in self.urls.values()
            for url in slots.values()
            if (port := urllib.parse.urlsplit(url).port)
        }


def _store_entries(role: RoleConfig, config_dir: Path) -> dict[str, str]:
    """A KM file's ``store`` and ``key_encryption_key`` as the file said them: paths relative
    to the file again."""
    store = role.store
    assert store is not None  # _km always sets it
    entries = {"store": os.path.relpath(store, config_dir) if isinstance(store, Path) else store}
    kek = role.key_encryption_key
    if kek is not None:
        kind, _, rest = kek.partition(":")
        entries["key_encryption_key"] = (
            f"file:{os.path.relpath(rest, config_dir)}" if kind == "file" else kek
        )
    return entries


def _write_deployment(
    topology: Topology,
    directory: Path,
    first_port: int,
    previous: _Previous,
    *,
    update: bool,
    metrics: bool,
) -> dict[str, Path]:
    config_dir = directory / CONFIG_DIR
    try:  # owner-only: the configs hold link secrets, the PKI private keys, the stores keys
        config_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise RoleConfigError(f"cannot make {config_dir}: {exc.strerror or exc}") from None
    uses_tls = topology.uses_tls
    pki_dir = directory / PKI_DIR
    if uses_tls and update:
        reuse_dev_pki(pki_dir, topology.entities())
    elif uses_tls:
        write_dev_pki(pki_dir, CA_NAME, topology.entities())
    ports = _free_ports(first_port, previous.ports())
    topology = _fixed_ports(topology, ports, previous)
    module_urls = {
        module_id(km, neighbour): _fixed(
            topology.module_listen(km, neighbour),
            ports,
            previous.url(module_id(km, neighbour), "listen"),
        )
        for link in topology.links
        if link.mode is Kq1Mode.ON_REQUEST and not link.kmes
        for km, neighbour in (link.kms, link.kms[::-1])
    }

    def tls(entity: str) -> dict[str, dict[str, str]]:
        """The ``tls`` table of ``entity``: paths relative to its config file."""
        if not uses_tls:
            return {}
        config = dev_tls_config(pki_dir, entity)
        files = {"ca": config.ca, "cert": config.cert, "key": config.key}
        return {
            "tls": {
                name: str(Path("..") / path.relative_to(directory))
                for name, path in files.items()
                if path is not None
            }
        }

    files: dict[str, dict[str, Any]] = {}
    controller = topology.controller_config()
    files[controller.controller_id] = {
        "role": "controller",
        "id": controller.controller_id,
        "listen": controller.listen_url,
        **({"also_listen": list(controller.also_listen)} if controller.also_listen else {}),
        "kms": sorted(controller.kms),
        "links": sorted(sorted(link) for link in controller.links),
        "applications": dict(sorted(controller.applications.items())),
        "modules": {module: sorted(link) for module, link in sorted(controller.modules.items())},
        **tls(controller.controller_id),
    }
    for spec in topology.kms:
        km_config = topology.km_config(spec.id, module_urls)
        files[spec.id] = {
            "role": "km",
            "id": spec.id,
            **previous.stores.get(spec.id, {"store": f"../{spec.id}.sqlite3"}),
            "applications": sorted(km_config.applications),
            "routing": km_config.routing.value,
            "listen": dict(km_config.listen),
            "controller": {"id": km_config.controller_id, "url": topology.controller_listen},
            **tls(spec.id),
            **({"options": dict(spec.options)} if spec.options else {}),
            "link": [
                {
                    "neighbour": link.neighbour,
                    "url": topology.km(link.neighbour).listen["kx"],
                    "module": link.module_id,
                    "mode": link.mode.value,
                }
                | ({"module_url": link.module_url} if link.module_url else {})
                | _hash_entry(link.hash_algorithm)
                | ({"key_size": link.key_size} if link.key_size is not None else {})
                | _kme_entries(link)
                for link in km_config.links
            ],
        }
    for link in topology.links:
        if link.kmes:  # external ETSI 014 KMEs: no module of ours
            continue
        ends = (link.kms, link.kms[::-1])
        ids = [module_id(*end) for end in ends]
        kept = [previous.links[module] for module in ids if module in previous.links]
        secret, epoch = kept[0] if kept else (secrets.token_bytes(LINK_SECRET_SIZE), time.time())
        for km, neighbour in ends:
            module = topology.module_config(
                km,
                neighbour,
                secret,
                epoch,
                km_url=topology.km(km).listen["kq1"],
                listen_url=module_urls.get(module_id(km, neighbour)),
                controller_url=topology.controller_listen,
            )
            where = (
                {"km_url": module.km_url}
                if module.mode is Kq1Mode.PROACTIVE
                else {"listen": module.listen_url}
            )
            files[module.module_id] = {
                "role": "qkd-module",
                "id": module.module_id,
                "matching_id": module.matching_module_id,
                "km_id": module.km_id,
                "peer_km_id": module.peer_km_id,
                "mode": module.mode.value,
                **where,
                "secret_key_rate": module.secret_key_rate,
                "key_size": module.key_size,
                "buffer_keys": module.buffer_keys,
                **_hash_entry(module.hash_algorithm),
                "epoch": module.epoch,
                "link_secret": module.link_secret.hex(),
                "controller": {"id": module.controller_id, "url": module.controller_url},
                **tls(module.module_id),
            }
    written = {}
    served: dict[str, str] = {}  # role ID -> its metrics URL
    for role_id, content in files.items():
        metrics_url = previous.url(role_id, "metrics")
        if metrics or metrics_url:
            address = (
                urllib.parse.urlsplit(metrics_url).netloc
                if metrics_url
                else f"127.0.0.1:{next(ports)}"
            )
            content["metrics"] = address
            served[role_id] = f"http://{address}/metrics"
        path = config_dir / f"{role_id}.toml"
        private = content["role"] == "qkd-module"
        _write(
            path, partial(write_atomically, path, tomli_w.dumps(content).encode(), private=private)
        )
        written[role_id] = path
    _write(
        config_dir, partial(_remove_gone, config_dir, pki_dir, set(files), set(topology.entities()))
    )
    endpoints = endpoints_of(
        topology,
        [topology.controller_listen, *topology.controller_also],
        {km.id: km.listen for km in topology.kms},
        metrics=served or None,
    )
    _write(directory / ENDPOINTS_FILE, partial(write_endpoints, directory, endpoints))
    return written


def _write(path: Path, write: Callable[[], None]) -> None:
    """``write()``, its :class:`OSError` a :class:`RoleConfigError` naming ``path``."""
    try:
        write()
    except OSError as exc:
        raise RoleConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def _remove_gone(config_dir: Path, pki_dir: Path, roles: set[str], entities: set[str]) -> None:
    """Remove the role files and the certificates and keys of roles and entities no longer in
    the topology. A role file is one named after the ``id`` it holds (a file the operator added,
    a KM replica's, is kept); a certificate is removed with its key only."""
    for path in config_dir.glob("*.toml"):
        if path.stem in roles:
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # not ours to judge
        if data.get("id") == path.stem and data.get("role") in ROLES:
            path.unlink()
    for cert in pki_dir.glob("*.pem"):
        key = cert.with_suffix(".key")
        if cert.stem not in entities and cert.name != CA_CERT_FILE and key.exists():
            cert.unlink()
            key.unlink()


def _free_ports(first: int, taken: set[int]) -> Iterator[int]:
    """Ports from ``first`` up, outside ``taken``, that nothing listens on now (on any
    address)."""
    for port in range(first, 65536):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
        yield port
    raise RoleConfigError(f"no free port left from {first}")


def _scheme(url: str) -> str:
    return urllib.parse.urlsplit(url).scheme


def _fixed(url: str, ports: Iterator[int], kept: str | None = None) -> str:
    """``url`` when it names its port; when it asks for any port (``:0``), ``url`` with the
    port of ``kept`` (the URL of the same role and interface in the file being updated, when of
    the same scheme) or else with the next port of ``ports``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "memory" or parts.port != 0:
        return url
    port = None
    if kept is not None and _scheme(kept) == parts.scheme:
        port = urllib.parse.urlsplit(kept).port
    port = port or next(ports)
    return parts._replace(netloc=f"{parts.netloc.rpartition(':')[0]}:{port}").geturl()


def _fixed_ports(topology: Topology, ports: Iterator[int], previous: _Previous) -> Topology:
    controller = topology.controller_id
    return attrs.evolve(
        topology,
        controller_listen=_fixed(
            topology.controller_listen, ports, previous.url(controller, "listen")
        ),
        controller_also=tuple(
            _fixed(url, ports, previous.url(controller, f"also:{_scheme(url)}"))
            for url in topology.controller_also
        ),
        kms=tuple(
            attrs.evolve(
                km,
                listen={
                    interface: _fixed(url, ports, previous.url(km.id, interface))
                    for interface, url in km.listen.items()
                },
            )
            for km in topology.kms
        ),
    )


def _hash_entry(algorithm: str) -> dict[str, Any]:
    """The ``hash_algorithm`` of a link or module file, unless it is the default."""
    return {} if algorithm == HASH_ALGORITHMS[0] else {"hash_algorithm": algorithm}


def _kme_entries(link: KMLink) -> dict[str, Any]:
    """What a KM file says of a link whose keys come from a pair of ETSI 014 KMEs."""
    if not link.kme_pair:
        return {}
    entries: dict[str, Any] = {"kme_pair": True, "peer_sae_id": link.sae_of_neighbour}
    if link.tls is not None:
        files = {"ca": link.tls.ca, "cert": link.tls.cert, "key": link.tls.key}
        entries["kme_tls"] = {
            name: str(Path(path).absolute()) for name, path in files.items() if path is not None
        }
    return entries
