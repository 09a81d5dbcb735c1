"""A whole QKD network in one process: every role of a topology, started and stopped together.

Theory of operation
-------------------
:class:`Network` turns a :class:`~qkdn_sdk.network.topology.Topology` into running roles:

0. the state directory's lock (``STATE_DIR/network.lock``, held until the network stops: a
   second network on the directory is refused before it changes a file) and its pidfile
   ``STATE_DIR/network.pid`` (what ``qkdn network down`` signals), :mod:`._state`;
1. a development PKI in ``STATE_DIR/pki`` (one certificate per entity, the ID in it) when the
   transport uses TLS; the certificates and keys already there and valid are kept;
2. a secret and a start time per QKD link, drawn now (what the two modules of a link share);
3. the controller, then the QKD modules that serve (on-request links), then the KMs (each on its
   own SQLite key store ``STATE_DIR/<km>.sqlite3``, in memory, or in a schema of its own in one
   PostgreSQL database, its KEK in ``STATE_DIR/<km>.kek``), then the modules that push
   keys to their KM (proactive links); every module authenticates to the controller and supplies
   it the status of its QKD link (FG QIT4N D2.3 clause 8.1);
4. ``STATE_DIR/endpoints.json`` once everything listens (:meth:`Network.endpoints`).

With ``metrics``, every role keeps its metrics in a registry of its own and serves them on
loopback, beside it (:mod:`qkdn_sdk.roles.metrics`); a KM started again serves them at the same
URL.

Roles find each other through one directory (ID -> URL) filled as they start: KMs open their
connections to neighbours and controller only when first needed. Cancelling :meth:`Network.run`
stops every role; the key stores are closed.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from prometheus_client import CollectorRegistry

from qkdn_sdk._files import write_atomically
from qkdn_sdk.network._state import PKI_DIR, locked, make_state_dir, pidfile, reuse_dev_pki
from qkdn_sdk.network.topology import LinkSpec, Topology, module_id
from qkdn_sdk.pki import CA_CERT_FILE, dev_tls_config
from qkdn_sdk.roles.controller import Controller
from qkdn_sdk.roles.keystore import (
    POSTGRES_SCHEMES,
    KeyStore,
    MemoryKeyStore,
    PostgresKeyStore,
    SQLiteKeyStore,
    load_kek,
)
from qkdn_sdk.roles.km import KeyManager, KMConfig, listen_interface
from qkdn_sdk.roles.metrics import serve_metrics
from qkdn_sdk.roles.qkd_module import Kq1Mode, QKDModule
from qkdn_sdk.tls import TLSConfig

__all__ = ["ENDPOINTS_FILE", "Network", "endpoints_of", "write_endpoints"]

ENDPOINTS_FILE = "endpoints.json"


class Network:
    """Every role of ``topology``; ``await nursery.start(network.run)`` returns once all serve
    (and ``endpoints.json`` is written) and cancelling it stops them.

    ``store`` is ``"sqlite"`` (one file per KM in ``state_dir``), ``"memory"``, or the URL of
    a PostgreSQL database (``"postgresql://..."``: a schema per KM, named after it). ``km_options``
    are passed to every :class:`~qkdn_sdk.roles.km.KMConfig` (timeouts, intervals, limits).
    With ``metrics``, every role serves its Prometheus metrics on loopback (:attr:`metrics_urls`).
    """

    def __init__(
        self,
        topology: Topology,
        state_dir: Path,
        *,
        store: str = "sqlite",
        km_options: dict[str, Any] | None = None,
        metrics: bool = False,
    ) -> None:
        if store not in ("sqlite", "memory") and not store.startswith(POSTGRES_SCHEMES):
            raise ValueError(
                f"store must be 'sqlite', 'memory' or a postgresql:// URL, not {store!r}"
            )
        self.topology = topology
        self.state_dir = Path(state_dir)
        self._store_kind = store
        self._km_options = km_options or {}
        self._metrics = metrics
        self.metrics_urls: dict[str, str] = {}
        """Where each role serves its metrics, by role ID (``http://127.0.0.1:PORT/metrics``)."""
        self.directory: dict[str, str] = {}
        self.controller: Controller | None = None
        self.kms: dict[str, KeyManager] = {}
        self.modules: dict[str, QKDModule] = {}
        self._urls: dict[str, dict[str, str]] = {}
        self._module_urls: dict[str, str] = {}
        self._controller_urls: list[str] = []
        self._running: dict[str, tuple[trio.CancelScope, trio.Event]] = {}
        self._memory_stores: dict[str, KeyStore] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def uses_tls(self) -> bool:
        return self.topology.uses_tls

    def tls(self, entity: str) -> TLSConfig | None:
        """The TLS settings of ``entity`` (``None`` when the transport has no TLS)."""
        return dev_tls_config(self.state_dir / PKI_DIR, entity) if self.uses_tls else None

    async def run(
        self, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run every role until cancelled; ``task_status`` gets :meth:`endpoints` once all
        serve. Raises :class:`~qkdn_sdk.network._state.StateDirInUse` before changing a file
        when another network (or ``qkdn network configure``) uses the state directory."""
        await trio.to_thread.run_sync(make_state_dir, self.state_dir)
        with locked(self.state_dir), pidfile(self.state_dir):
            if self.uses_tls:
                await trio.to_thread.run_sync(
                    reuse_dev_pki, self.state_dir / PKI_DIR, self.topology.entities()
                )
            await self._run_roles(task_status)

    async def _run_roles(self, task_status: trio.TaskStatus[dict[str, Any]]) -> None:
        topology = self.topology
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            registry = self._registry()
            controller = Controller(
                topology.controller_config(),
                tls=self.tls(topology.controller_id),
                registry=registry,
            )
            self.controller = controller
            url = await nursery.start(self._run_controller, controller, registry)
            self.directory[topology.controller_id] = url
            self._controller_urls = list(controller.urls)

            shared = {link.name: (secrets.token_bytes(32), time.time()) for link in topology.links}

            async def start_module(
                km: str,
                neighbour: str,
                link: LinkSpec,
                *,
                km_url: str | None = None,
                listen_url: str | None = None,
            ) -> str | None:
                secret, epoch = shared[link.name]
                config = topology.module_config(
                    km,
                    neighbour,
                    secret,
                    epoch,
                    km_url=km_url,
                    listen_url=listen_url,
                    controller_url=controller.urls[0],
                )
                registry = self._registry()
                module = QKDModule(config, tls=self.tls(config.module_id), registry=registry)
                self.modules[config.module_id] = module
                return await nursery.start(  # type: ignore[no-any-return]
                    self._run_role, config.module_id, module.run, registry
                )

            for link in topology.links:
                if link.mode is Kq1Mode.ON_REQUEST and not link.kmes:  # KMEs: already there
                    for km, neighbour in (link.kms, link.kms[::-1]):
                        listen = topology.module_listen(km, neighbour)
                        url = await start_module(km, neighbour, link, listen_url=listen)
                        assert url is not None
                        self._module_urls[module_id(km, neighbour)] = url

            for spec in topology.kms:
                await self.start_km(spec.id)

            for link in topology.links:
                if link.mode is Kq1Mode.PROACTIVE:
                    for km, neighbour in (link.kms, link.kms[::-1]):
                        await start_module(km, neighbour, link, km_url=self._urls[km]["kq1"])

            endpoints = self.endpoints()
            await trio.to_thread.run_sync(write_endpoints, self.state_dir, endpoints)
            task_status.started(endpoints)
            await trio.sleep_forever()

    async def wait_for_keys(self) -> None:
        """Return once every KM holds link key to send on each of its links and the controller
        has a status supply from each saying so: relays can start."""
        assert self.controller is not None
        for km_id, km in self.kms.items():
            for link in km.config.links:
                await km.wait_link_key(link.neighbour, 1)
            while not all(
                (self.controller.key_amount(km_id, link.neighbour) or 0) > 0
                for link in km.config.links
            ):
                await self.controller.wait_for_report(
                    km_id, self.controller.report_count(km_id) + 1
                )

    async def start_km(self, km_id: str) -> None:
        """Start the KM ``km_id`` (again, after :meth:`stop_km`: on the same store and URLs)."""
        assert self._nursery is not None
        self._urls[km_id] = await self._nursery.start(self._run_km, km_id)
        self.directory[km_id] = self._urls[km_id]["kx"]

    async def stop_km(self, km_id: str) -> None:
        """Stop the KM ``km_id`` and close its key store; return once it stopped."""
        await self._stop(km_id)

    async def stop_controller(self) -> None:
        """Stop the controller; return once it stopped (KMs then fail to relay, saying so)."""
        await self._stop(self.topology.controller_id)

    async def _stop(self, role_id: str) -> None:
        scope, stopped = self._running[role_id]
        scope.cancel()
        await stopped.wait()

    @contextmanager
    def _stoppable(self, role_id: str) -> Iterator[None]:
        """Run the block as the role ``role_id`` that :meth:`_stop` stops."""
        stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._running[role_id] = (scope, stopped)
                yield
        finally:
            stopped.set()

    async def _run_controller(
        self,
        controller: Controller,
        registry: CollectorRegistry | None,
        *,
        task_status: trio.TaskStatus[str],
    ) -> None:
        controller_id = self.topology.controller_id
        with self._stoppable(controller_id):
            await self._run_role(controller_id, controller.run, registry, task_status=task_status)

    def _registry(self) -> CollectorRegistry | None:
        """A registry for the metrics of a role, when the network serves them."""
        return CollectorRegistry() if self._metrics else None

    async def _run_role(
        self,
        role_id: str,
        run: Callable[..., Awaitable[None]],
        registry: CollectorRegistry | None,
        *,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        """``await run(task_status=task_status)``, the ``run`` of the role ``role_id``, and its
        metrics served beside it from ``registry`` (when given) until it stops: at the URL they
        had when the role ran before, else on a free port of loopback."""
        async with trio.open_nursery() as nursery:
            started = await nursery.start(run)
            if registry is not None:
                before = self.metrics_urls.get(role_id)
                address = urllib.parse.urlsplit(before).netloc if before else "127.0.0.1:0"
                url = await nursery.start(serve_metrics, registry, address)
                self.metrics_urls[role_id] = url
            task_status.started(started)

    def km_config(self, km_id: str) -> KMConfig:
        """The configuration the KM ``km_id`` runs with (the URLs it listens on once started)."""
        config = self.topology.km_config(km_id, self._module_urls, **self._km_options)
        return attrs.evolve(config, listen=self._urls.get(km_id, config.listen))

    async def _run_km(self, km_id: str, *, task_status: trio.TaskStatus[dict[str, str]]) -> None:
        config = self.km_config(km_id)
        with self._stoppable(km_id):
            async with self._open_store(km_id) as store:
                registry = self._registry()
                km = KeyManager(
                    config,
                    store,
                    tls=self.tls(km_id),
                    directory=self.directory,
                    registry=registry,
                )
                self.kms[km_id] = km
                await self._run_role(km_id, km.run, registry, task_status=task_status)

    @asynccontextmanager
    async def _open_store(self, km_id: str) -> AsyncIterator[KeyStore]:
        if self._store_kind == "memory":  # kept for the life of the network
            yield self._memory_stores.setdefault(km_id, MemoryKeyStore())
            return
        store: KeyStore
        if self._store_kind == "sqlite":
            store = await SQLiteKeyStore.open(self.state_dir / f"{km_id}.sqlite3")
        else:
            kek = await trio.to_thread.run_sync(load_kek, f"file:{self.state_dir / km_id}.kek")
            store = await PostgresKeyStore.open(self._store_kind, kek=kek, schema=km_id)
        async with store:
            yield store

    def endpoints(self) -> dict[str, Any]:
        """What ``endpoints.json`` holds (:func:`endpoints_of`), with the URLs where the roles
        listen now, and where they serve their metrics when they do."""
        return endpoints_of(
            self.topology,
            self._controller_urls,
            self._urls,
            metrics=self.metrics_urls if self._metrics else None,
        )


def endpoints_of(
    topology: Topology,
    controller_urls: Sequence[str],
    km_urls: Mapping[str, Mapping[str, str]],
    *,
    metrics: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``endpoints.json`` of ``topology`` whose controller serves Ck at ``controller_urls``
    and whose KMs listen at ``km_urls`` (ID -> interface key -> URL, as
    :attr:`~qkdn_sdk.roles.km.KMConfig.listen`): the CA, the controller's and KMs' URLs (per
    interface, per scheme: ``ak@https`` is Ak's ``https`` URL) and every application's KM,
    certificate and key (paths relative to the state directory, where the file is); and, with
    ``metrics`` (role ID -> URL), where each role serves its metrics."""
    pki = Path(PKI_DIR)
    uses_tls = topology.uses_tls
    kms: dict[str, dict[str, dict[str, str]]] = {km.id: {} for km in topology.kms}
    for km_id, interfaces in kms.items():
        for key, url in km_urls[km_id].items():
            interfaces.setdefault(listen_interface(key), {})[_scheme(url)] = url
    return {
        "ca": str(pki / CA_CERT_FILE) if uses_tls else None,
        "controller": {
            "id": topology.controller_id,
            "ck": {_scheme(url): url for url in controller_urls},
        },
        "kms": kms,
        "apps": {
            app.id: {
                "km": app.km,
                "cert": str(pki / f"{app.id}.pem") if uses_tls else None,
                "key": str(pki / f"{app.id}.key") if uses_tls else None,
            }
            for app in topology.applications
        },
        **({"metrics": dict(metrics)} if metrics is not None else {}),
    }


def _scheme(url: str) -> str:
    return url.split("://", 1)[0]


def write_endpoints(state_dir: Path, endpoints: Mapping[str, Any]) -> None:
    """Write ``endpoints`` (:func:`endpoints_of`) to ``state_dir/endpoints.json``, whole or not
    at all. Raises :class:`OSError`."""
    data = orjson.dumps(endpoints, option=orjson.OPT_INDENT_2) + b"\n"
    write_atomically(state_dir / ENDPOINTS_FILE, data)
