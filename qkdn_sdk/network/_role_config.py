"""Reading one role's config file (what ``qkdn network configure`` writes and ``qkdn serve``
reads) into a :class:`RoleConfig`, and serving the role it describes; the file format is in
:mod:`qkdn_sdk.network.deployment`, which exports these names."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry

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
from qkdn_sdk.network.topology import km_options
from qkdn_sdk.roles.controller import Controller, ControllerConfig
from qkdn_sdk.roles.keystore import (
    POSTGRES_SCHEMES,
    KeyStore,
    PostgresKeyStore,
    SQLiteKeyStore,
    load_kek,
)
from qkdn_sdk.roles.km import KeyManager, KMConfig, KMLink, Routing, listen_interface
from qkdn_sdk.roles.metrics import check_address, serve_metrics
from qkdn_sdk.roles.qkd_module import (
    BUFFER_KEYS,
    HASH_ALGORITHMS,
    Kq1Mode,
    QKDModule,
    QKDModuleConfig,
    check_hash_algorithm,
)
from qkdn_sdk.tls import TLSConfig

__all__ = ["ROLES", "RoleConfig", "RoleConfigError", "Serving", "load_role_config"]

ROLES = ("controller", "km", "qkd-module")
"""The roles a config file can describe (``qkdn serve ROLE``)."""
CONFIG_DIR = "config"


class RoleConfigError(QkdnError):
    """A role config file cannot be used (or written); the text says which file, where and
    why, in one line."""


# --- reading -------------------------------------------------------------------------------


@attrs.frozen
class Serving:
    """What :meth:`RoleConfig.run` reports once its role serves."""

    urls: dict[str, str] | str | None
    """The URLs the role serves: per interface for a KM, the URL of the controller and of an
    on-request QKD module, ``None`` for a proactive module."""
    metrics: str | None = None
    """Where its metrics are (``http://HOST:PORT/metrics``), when its file asks for them."""


@attrs.frozen
class RoleConfig:
    """One role as its config file describes it; ``await nursery.start(role.run)`` serves it
    and reports what it serves (:class:`Serving`)."""

    role: str
    """One of :data:`ROLES`."""
    config: KMConfig | ControllerConfig | QKDModuleConfig
    tls: TLSConfig | None = None
    store: Path | str | None = None
    """A KM's key store: the path of its SQLite file, or the URL of its PostgreSQL database
    (``postgresql://...``)."""
    key_encryption_key: str | None = None
    """Where a KM's store's key-encryption key comes from (``file:``, ``env:``, ``command:``;
    :func:`~qkdn_sdk.roles.keystore.load_kek`); None: the store's path + ``.kek``."""
    directory: Mapping[str, str] = attrs.field(factory=dict)
    """A KM's peers: the controller's Ck URL and each neighbour's KM-link URL, by ID."""
    metrics: str | None = None
    """``HOST:PORT`` where the role serves its Prometheus metrics (none: it keeps none)."""

    @property
    def id(self) -> str:
        config = self.config
        if isinstance(config, KMConfig):
            return config.km_id
        if isinstance(config, ControllerConfig):
            return config.controller_id
        return config.module_id

    async def run(
        self, *, task_status: trio.TaskStatus[Serving] = trio.TASK_STATUS_IGNORED
    ) -> None:
        registry = None if self.metrics is None else CollectorRegistry()
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(self._run_role, registry)
            metrics = None
            if registry is not None:
                assert self.metrics is not None
                metrics = await nursery.start(serve_metrics, registry, self.metrics)
            task_status.started(Serving(urls, metrics))

    async def _run_role(
        self, registry: CollectorRegistry | None, *, task_status: trio.TaskStatus[Any]
    ) -> None:
        config = self.config
        if isinstance(config, ControllerConfig):
            controller = Controller(config, tls=self.tls, registry=registry)
            await controller.run(task_status=task_status)
        elif isinstance(config, QKDModuleConfig):
            module = QKDModule(config, tls=self.tls, registry=registry)
            await module.run(task_status=task_status)
        else:
            assert self.store is not None
            kek = None
            if self.key_encryption_key is not None:
                kek = await trio.to_thread.run_sync(load_kek, self.key_encryption_key)
            store: KeyStore
            if isinstance(self.store, str):
                assert kek is not None  # _km saw to it
                store = await PostgresKeyStore.open(self.store, kek=kek)
            else:
                store = await SQLiteKeyStore.open(self.store, kek=kek)
            async with store:
                km = KeyManager(
                    config, store, tls=self.tls, directory=self.directory, registry=registry
                )
                await km.run(task_status=task_status)


def load_role_config(path: Path, role: str) -> RoleConfig:
    """Read the config file of a ``role`` (one of :data:`ROLES`) at ``path``. Raises
    :class:`RoleConfigError` when it cannot be read, is not valid TOML, describes another role,
    or has a missing, unknown or wrong entry."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RoleConfigError(f"{path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RoleConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        described = get(data, "role", str, "top level")
        if described != role:
            raise Problem(f"this is the config of a {described}, not of a {role}")
        read = {"km": _km, "controller": _controller, "qkd-module": _module}[role]
        metrics = checked(data, "metrics", check_address, None) if "metrics" in data else None
        return attrs.evolve(read(data, path.parent), metrics=metrics)
    except Problem as exc:
        raise RoleConfigError(f"{path}: {exc}") from None
    except (ValueError, TypeError) as exc:  # what the role's own config refuses
        raise RoleConfigError(f"{path}: {exc}") from None


def _tls(data: Mapping[str, Any], here: Path, key: str = "tls") -> TLSConfig | None:
    table = get(data, key, dict, "top level", None)
    if table is None:
        return None
    known_keys(table, {"ca", "cert", "key"}, key)
    return TLSConfig(
        ca=_path(here, get(table, "ca", str, key)),
        cert=_path(here, get(table, "cert", str, key)),
        key=_path(here, get(table, "key", str, key)),
    )


def _path(here: Path, value: str) -> Path:
    """``value``, a path relative to the directory ``here`` of the config file (or absolute)."""
    return Path(os.path.normpath(here / value))


def _strings(data: Mapping[str, Any], key: str, where: str) -> list[str]:
    values = get(data, key, list, where, [])
    if not all(isinstance(value, str) for value in values):
        raise Problem(f"{where}: {key} must be a list of strings")
    return [str(value) for value in values]


def _km(data: Mapping[str, Any], here: Path) -> RoleConfig:
    known_keys(
        data,
        {
            "role",
            "id",
            "store",
            "key_encryption_key",
            "replica",
            "applications",
            "routing",
            "listen",
            "controller",
            "tls",
            "options",
            "link",
            "metrics",
        },
        "top level",
    )
    km_id = identifier(get(data, "id", str, "top level"), "id")
    listen = get(data, "listen", dict, "top level")
    for key in listen:
        try:
            listen_interface(key)
        except ValueError as exc:
            raise Problem(f"listen: {exc}") from None
    controller = get(data, "controller", dict, "top level")
    known_keys(controller, {"id", "url"}, "controller")
    controller_id = get(controller, "id", str, "controller")
    directory = {controller_id: get(controller, "url", str, "controller")}
    links = []
    for index, table in enumerate(tables(data, "link"), 1):
        where = f"link {index}"
        known_keys(
            table,
            {"neighbour", "url", "module", "mode", "module_url", "kme_pair", "peer_sae_id"}
            | {"kme_tls", "hash_algorithm", "key_size"},
            where,
        )
        neighbour = get(table, "neighbour", str, where)
        directory[neighbour] = get(table, "url", str, where)
        links.append(
            KMLink(
                neighbour=neighbour,
                module_id=get(table, "module", str, where),
                mode=choice(table, "mode", Kq1Mode, where),
                module_url=get(table, "module_url", str, where, None),
                kme_pair=get(table, "kme_pair", bool, where, False),
                peer_sae_id=get(table, "peer_sae_id", str, where, None),
                tls=_tls(table, here, "kme_tls"),
                hash_algorithm=checked(
                    table, "hash_algorithm", check_hash_algorithm, where, HASH_ALGORITHMS[0]
                ),
                key_size=get(table, "key_size", int, where, None),
            )
        )
    options = km_options(get(data, "options", dict, "top level", {}), "options")
    routing = choice(data, "routing", Routing, None, Routing.DISTRIBUTED.value)
    config = KMConfig(
        km_id=km_id,
        routing=routing,
        listen={interface: str(url) for interface, url in listen.items()},
        controller_id=controller_id,
        links=tuple(links),
        applications=frozenset(_strings(data, "applications", "top level")),
        replica=get(data, "replica", bool, "top level", False),
        **options,
    )
    location: str = get(data, "store", str, "top level")
    store: Path | str = location
    kek = _kek_source(data, here)
    if location.startswith(POSTGRES_SCHEMES):
        if kek is None:
            raise Problem(
                "top level: a PostgreSQL store needs a key_encryption_key (file:, env: or "
                "command:): the database has no place beside it for one"
            )
    elif config.replica:
        raise Problem(
            "top level: a replica shares its primary's PostgreSQL store (store = "
            '"postgresql://..."), not a SQLite file'
        )
    else:
        store = _path(here, location)
    return RoleConfig(
        role="km",
        config=config,
        tls=_tls(data, here),
        store=store,
        key_encryption_key=kek,
        directory=directory,
    )


def _kek_source(data: Mapping[str, Any], here: Path) -> str | None:
    """The KM file's ``key_encryption_key``, a ``file:`` path made absolute from the file."""
    source: str | None = get(data, "key_encryption_key", str, "top level", None)
    if source is None:
        return None
    kind, _, rest = source.partition(":")
    if kind not in ("file", "env", "command") or not rest:
        raise Problem(
            f"top level: key_encryption_key must be file:<path>, env:<name> or "
            f"command:<command>, not {source!r}"
        )
    return f"file:{_path(here, rest)}" if kind == "file" else source


def _controller(data: Mapping[str, Any], here: Path) -> RoleConfig:
    known_keys(
        data,
        {"role", "id", "listen", "also_listen", "kms", "links", "applications", "modules"}
        | {"tls", "require_authentication", "metrics"},
        "top level",
    )
    applications = get(data, "applications", dict, "top level", {})
    links = get(data, "links", list, "top level", [])
    modules = get(data, "modules", dict, "top level", {})
    for module, link in modules.items():
        if not isinstance(link, list) or not all(isinstance(km, str) for km in link):
            raise Problem(f"modules: {module} must be the list of the two KMs of its link")
    config = ControllerConfig(
        controller_id=identifier(get(data, "id", str, "top level"), "id"),
        listen_url=get(data, "listen", str, "top level"),
        also_listen=tuple(_strings(data, "also_listen", "top level")),
        kms=_strings(data, "kms", "top level"),
        links=links,
        applications=applications,
        modules=modules,
        require_authentication=get(data, "require_authentication", bool, "top level", False),
    )
    return RoleConfig(role="controller", config=config, tls=_tls(data, here))


def _module(data: Mapping[str, Any], here: Path) -> RoleConfig:
    where = "top level"
    known_keys(
        data,
        {
            "role",
            "id",
            "matching_id",
            "km_id",
            "peer_km_id",
            "mode",
            "km_url",
            "listen",
            "secret_key_rate",
            "key_size",
            "buffer_keys",
            "hash_algorithm",
            "epoch",
            "link_secret",
            "controller",
            "report_interval",
            "tls",
            "metrics",
        },
        where,
    )
    controller = get(data, "controller", dict, where, {})
    known_keys(controller, {"id", "url"}, "controller")
    reporting: dict[str, Any] = (
        {
            "controller_id": get(controller, "id", str, "controller"),
            "controller_url": get(controller, "url", str, "controller"),
        }
        if controller
        else {}
    )
    if "report_interval" in data:
        reporting["report_interval"] = get(data, "report_interval", float, where)
    try:
        secret = bytes.fromhex(get(data, "link_secret", str, where))
    except ValueError:
        raise Problem("link_secret must be hexadecimal") from None
    config = QKDModuleConfig(
        module_id=identifier(get(data, "id", str, where), "id"),
        matching_module_id=get(data, "matching_id", str, where),
        link_secret=secret,
        epoch=get(data, "epoch", float, where),
        secret_key_rate=get(data, "secret_key_rate", float, where),
        mode=choice(data, "mode", Kq1Mode, where),
        key_size=get(data, "key_size", int, where, 4096),
        buffer_keys=get(data, "buffer_keys", int, where, BUFFER_KEYS),
        hash_algorithm=checked(
            data, "hash_algorithm", check_hash_algorithm, where, HASH_ALGORITHMS[0]
        ),
        km_url=get(data, "km_url", str, where, None),
        listen_url=get(data, "listen", str, where, None),
        km_id=get(data, "km_id", str, where, None),
        peer_km_id=get(data, "peer_km_id", str, where, None),
        **reporting,
    )
    return RoleConfig(role="qkd-module", config=config, tls=_tls(data, here))
