"""``qkdn network up``, ``qkdn network configure``, ``qkdn serve ROLE`` and ``qkdn demo``: running
the roles of a QKD network.

``network up`` runs every role of a topology file in this process, on loopback with real
transports; ``network configure`` writes one config file per role and ``serve`` runs one role
from its file, for the deployment where every node is its own process; ``demo`` runs the line3
network and relays keys from one application to another across it, showing each step.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import attrs
import trio
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from qkdn_sdk.cli._common import _choice, _logging_to_stderr, _run, fail
from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.network import (
    ENDPOINTS_FILE,
    ApplicationSpec,
    Network,
    Topology,
    TopologyError,
    load_topology,
    parse_topology,
)
from qkdn_sdk.network._state import stop_network
from qkdn_sdk.network.deployment import Existing, load_role_config, write_role_configs
from qkdn_sdk.network.status import watch
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.km import KMConfig, Routing

__all__ = [
    "DemoMode",
    "DemoTransport",
    "demo",
    "network_app",
    "network_configure",
    "network_down",
    "network_up",
    "serve_app",
]


network_app = typer.Typer(
    help="Run a whole QKD network from a topology file.", no_args_is_help=True
)

_ROLE_LOGGERS = ("qkdn_sdk.roles", "qkdn_sdk.transport", "qkdn_tcp")
_DEFAULT_TOPOLOGY = "line3.toml"


def _topology(path: Path | None) -> Topology:
    try:
        if path is None:
            text = resources.files("qkdn_sdk.network").joinpath("topologies", _DEFAULT_TOPOLOGY)
            return parse_topology(text.read_text(encoding="utf-8"), source=_DEFAULT_TOPOLOGY)
        return load_topology(path)
    except TopologyError as exc:
        fail(str(exc))


async def _until_terminated(cancel_scope: trio.CancelScope) -> None:
    """Cancel ``cancel_scope`` on SIGTERM (Ctrl-C raises KeyboardInterrupt as usual)."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            cancel_scope.cancel()
            return


def _run_until_stopped(
    run: Callable[[], Awaitable[None]], name: str, *, prefix: str, level: int
) -> None:
    """Run roles until Ctrl+C or SIGTERM, their log records from ``level`` up on stderr (one
    line each, after ``prefix``); errors end the command with one line; ``<name> stopped``."""
    with _logging_to_stderr(prefix, _ROLE_LOGGERS, level):
        try:
            _run(run)
        except QkdnError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot start {name}: {exc}")
    typer.echo(f"{name} stopped", err=True)


_Topology = Annotated[Path, typer.Argument(metavar="TOPOLOGY", help="The topology file (TOML).")]


@network_app.command("up")
def network_up(
    topology: _Topology,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            help="Where the PKI, the key stores and endpoints.json go (made when missing); "
            "one network at a time.",
        ),
    ],
    store: Annotated[
        str,
        typer.Option(
            "--store",
            help="Where the KMs keep keys: sqlite (a file each in STATE_DIR), memory, or the "
            "URL of a PostgreSQL database (postgresql://...: a schema per KM, its KEK in "
            "STATE_DIR/<km>.kek).",
        ),
    ] = "sqlite",
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics/--no-metrics",
            help="Every role serves Prometheus metrics on loopback (plain HTTP); "
            "endpoints.json lists their URLs under metrics ('qkdn network status' reads them).",
        ),
    ] = True,
) -> None:
    """Start every role of TOPOLOGY on loopback with real transports, write
    STATE_DIR/endpoints.json once all serve, and run until Ctrl+C or SIGTERM ('qkdn network
    down STATE_DIR' from elsewhere).

    Applications reach their KM with the URL, CA, certificate and key that endpoints.json gives
    them, speaking only the standards (Q.4161 over the spec's TCP frames). Once every link has
    key, a terminal shows each link's key level and rates, the KMs' relays and failures ('qkdn
    network status'); a log gets one summary line a minute."""
    spec = _topology(topology)
    try:
        network = Network(spec, state_dir, store=store, metrics=metrics)
    except ValueError as exc:
        fail(f"--store: {exc}")

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_terminated, nursery.cancel_scope)
            await nursery.start(network.run)
            typer.echo(
                f"network up: {len(spec.kms)} KMs, {len(spec.links)} QKD links, "
                f"{len(spec.applications)} applications; endpoints in "
                f"{state_dir / ENDPOINTS_FILE} (Ctrl+C to stop)",
                err=True,
            )
            await network.wait_for_keys()
            typer.echo("every QKD link has key: applications can get keys", err=True)
            if metrics:
                applications = {app.id: app.km for app in spec.applications}
                console = Console(stderr=True, highlight=False)
                nursery.start_soon(watch, network.metrics_urls, applications, console)

    _run_until_stopped(run, "network", prefix="qkdn network", level=logging.WARNING)


@network_app.command("configure")
def network_configure(
    topology: _Topology,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            help="Where the PKI, the role config files (STATE_DIR/config) and key stores go.",
        ),
    ],
    first_port: Annotated[
        int,
        typer.Option(
            "--first-port",
            min=1,
            max=65535,
            help="Interfaces the topology leaves at port 0 get free ports from this one up.",
        ),
    ] = 7000,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help='Every role file gets metrics = "127.0.0.1:PORT": the role serves Prometheus '
            "metrics there (plain HTTP), on a port of its own.",
        ),
    ] = False,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="STATE_DIR holds a deployment: keep its PKI, link secrets and start times, "
            "and the ports and key stores of the roles still in TOPOLOGY; add the new roles, "
            "remove the files of those that are gone.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="STATE_DIR holds a deployment: replace it (new ports, link secrets, "
            "certificates; running roles no longer match).",
        ),
    ] = False,
) -> None:
    """Write the PKI, one config file per role of TOPOLOGY (controller, KMs, QKD modules),
    every URL on a fixed port, and STATE_DIR/endpoints.json, for running each role as its own
    process with 'qkdn serve'. A STATE_DIR that holds a deployment is refused unless --update
    or --force says what to do with it.

    Prints the command that starts each role. QKD module files hold their link's secret and are
    readable by their owner only."""
    if update and force:
        fail("--update and --force exclude each other: keep the deployment or replace it")
    spec = _topology(topology)
    existing = Existing.UPDATE if update else Existing.REPLACE if force else Existing.REFUSE
    try:
        files = write_role_configs(
            spec, state_dir, first_port=first_port, existing=existing, metrics=metrics
        )
    except QkdnError as exc:
        fail(str(exc))
    roles = {spec.controller_id: "controller", **{km.id: "km" for km in spec.kms}}
    for role_id, path in files.items():
        typer.echo(f"qkdn serve {roles.get(role_id, 'qkd-module')} --config {path}")
    typer.echo(f"endpoints in {state_dir / ENDPOINTS_FILE}", err=True)


@network_app.command("down")
def network_down(
    state_dir: Annotated[
        Path,
        typer.Argument(metavar="STATE_DIR", help="The --state-dir of the running network."),
    ],
) -> None:
    """Stop the network 'qkdn network up' runs in STATE_DIR: SIGTERM to the process its
    pidfile names (after checking that it holds STATE_DIR's lock), then wait, at most 30
    seconds, until it has stopped every role."""
    try:
        stop_network(state_dir)
    except QkdnError as exc:
        fail(str(exc))
    typer.echo(f"network in {state_dir} stopped", err=True)


serve_app = typer.Typer(
    help="Run one role of a deployment as this process, from the config file 'qkdn network "
    "configure' wrote for it, until Ctrl+C or SIGTERM: the deployment where every node is its "
    "own machine.",
    no_args_is_help=True,
)

_Config = Annotated[
    Path, typer.Option("--config", help="The role's config file ('qkdn network configure').")
]
_Verbose = Annotated[
    bool, typer.Option("--verbose", help="Log every request served, not only problems.")
]


@serve_app.command("km")
def serve_km(config: _Config, verbose: _Verbose = False) -> None:
    """Run a key manager: it serves its applications (Ak), its neighbour KMs (KM link),
    its QKD modules (Kq-1) and reports to the controller (Ck).

    Its file (STATE_DIR/config/<km>.toml from 'qkdn network configure'; relative paths are
    relative to the file) holds its ID, its key store, the applications it serves, its URLs, its
    controller, its TLS files and one [[link]] per neighbour:

    \b
        role = "km"
        id = "km-a"
        store = "../km-a.sqlite3"     # or "postgresql://user@host/db"
        applications = ["alice"]
        routing = "distributed"       # or "centralized" (Q.4164 clauses 7.1, 7.2)
        [listen]
        ak = "tcp+tls://127.0.0.1:7002"
        "ak@https" = "https://127.0.0.1:7006"    # more schemes of one interface
        ck = "tcp+tls://127.0.0.1:7003"
        kq1 = "tcp+tls://127.0.0.1:7004"
        kx = "tcp+tls://127.0.0.1:7005"
        [controller]
        id = "controller"
        url = "tcp+tls://127.0.0.1:7000"
        [tls]
        ca = "../pki/ca.pem"
        cert = "../pki/km-a.pem"
        key = "../pki/km-a.key"
        [[link]]
        neighbour = "km-b"
        url = "tcp+tls://127.0.0.1:7012"   # km-b's KM link (kx) URL
        module = "km-a.km-b"               # our QKD module on the link
        mode = "proactive"                 # or "on-request", with module_url

    Optional: key_encryption_key (file:PATH, env:NAME or command:...), options (further
    KMConfig fields), replica = true (a second process of a KM on its PostgreSQL store)."""
    _serve("km", config, verbose)


@serve_app.command("controller")
def serve_controller(config: _Config, verbose: _Verbose = False) -> None:
    """Run the QKDN controller: it serves the KMs (Ck: routes, link status) and the QKD
    modules' link reports.

    Its file (STATE_DIR/config/controller.toml from 'qkdn network configure') holds its ID, its
    Ck URL, the network it controls (KMs, links, applications, QKD modules) and its TLS files:

    \b
        role = "controller"
        id = "controller"
        listen = "tcp+tls://127.0.0.1:7000"
        also_listen = ["grpcs://127.0.0.1:7001"]   # optional
        kms = ["km-a", "km-b", "km-c"]
        links = [["km-a", "km-b"], ["km-b", "km-c"]]
        [applications]
        alice = "km-a"
        bob = "km-c"
        [modules]
        "km-a.km-b" = ["km-a", "km-b"]
        "km-b.km-a" = ["km-a", "km-b"]
        [tls]
        ca = "../pki/ca.pem"
        cert = "../pki/controller.pem"
        key = "../pki/controller.key"
    """
    _serve("controller", config, verbose)


@serve_app.command("qkd-module")
def serve_qkd_module(config: _Config, verbose: _Verbose = False) -> None:
    """Run a simulated QKD module: one end of a QKD link, supplying QKD-keys to its KM (Kq-1)
    at the link's secret key rate.

    Its file (STATE_DIR/config/<km>.<neighbour>.toml from 'qkdn network configure'; readable by
    its owner only, as it holds the link's secret) holds its ID, the module at the other end,
    its KM, how it supplies keys, the link's rate and secret and its TLS files:

    \b
        role = "qkd-module"
        id = "km-a.km-b"
        matching_id = "km-b.km-a"      # the module at the other end of the link
        km_id = "km-a"
        peer_km_id = "km-b"
        mode = "proactive"             # pushes keys to km_url; "on-request": serves listen
        km_url = "tcp+tls://127.0.0.1:7004"
        secret_key_rate = 256000.0     # bits per second
        key_size = 4096
        buffer_keys = 256              # ready keys held for the KM; beyond, the oldest dropped
        epoch = 1796681983.2           # the link's start, the same at both ends
        link_secret = "ba76...ed20"    # hex, the same at both ends
        [controller]                   # optional: where it reports its link's status
        id = "controller"
        url = "tcp+tls://127.0.0.1:7000"
        [tls]
        ca = "../pki/ca.pem"
        cert = "../pki/km-a.km-b.pem"
        key = "../pki/km-a.km-b.key"
    """
    _serve("qkd-module", config, verbose)


def _role_name(role: str, role_id: str) -> str:
    """``km km-a``; just ``controller`` for the controller called controller."""
    return role if role_id == role else f"{role} {role_id}"


def _serve(role: str, config: Path, verbose: bool) -> None:
    """Run ``role`` from its file ``config`` until Ctrl+C or SIGTERM."""
    try:
        spec = load_role_config(config, role)
    except QkdnError as exc:
        fail(str(exc))
    name = _role_name(role, spec.id)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_terminated, nursery.cancel_scope)
            serving = await nursery.start(spec.run)
            urls = serving.urls
            if isinstance(urls, dict):
                where = ", ".join(f"{key} {url}" for key, url in urls.items())
            else:
                where = urls or f"pushing keys to {getattr(spec.config, 'km_url', None)}"
            typer.echo(f"{name} serves: {where} (Ctrl+C to stop)", err=True)
            if serving.metrics:
                typer.echo(f"{name} serves metrics: {serving.metrics}", err=True)

    level = logging.INFO if verbose else logging.WARNING
    _run_until_stopped(run, name, prefix=f"qkdn {name}", level=level)


class DemoMode(enum.Enum):
    """How the demo's destination application gets the keys (Q.4161 clause 7)."""

    REQUEST = "request"
    PROACTIVE = "proactive"


class DemoTransport(enum.Enum):
    """How the demo's applications reach their KMs."""

    TCP_TLS = "tcp+tls"
    HTTPS = "https"
    GRPCS = "grpcs"


def demo(
    topology: Annotated[
        Path | None,
        typer.Option("--topology", help="A topology file instead of the built-in line3."),
    ] = None,
    number: Annotated[int, typer.Option("--number", min=1, help="Keys to share.")] = 4,
    size: Annotated[int, typer.Option("--size", min=8, help="Bits per key.")] = 256,
    routing: Annotated[
        Routing | None,
        typer.Option(
            "--routing",
            parser=_choice(Routing, "a routing"),
            help="Q.4164 clause 7.1 (each KM asks for its next hop) or 7.2 (the source KM gets "
            "the whole route); default: the topology's.",
        ),
    ] = None,
    mode: Annotated[
        DemoMode,
        typer.Option(
            "--mode",
            parser=_choice(DemoMode, "a mode"),
            help="Q.4161 clause 7.1 (bob fetches the keys by ID) or 7.2 (a session: bob's KM "
            "pushes them).",
        ),
    ] = DemoMode.REQUEST,
    transport: Annotated[
        DemoTransport,
        typer.Option(
            "--transport",
            parser=_choice(DemoTransport, "a transport"),
            help="How the applications reach their KMs: Q.4161 Appendix I frames over mutual "
            "TLS, ETSI GS QKD 014 (Appendix II; key supply upon request only), or gRPC with "
            "mutual TLS.",
        ),
    ] = DemoTransport.TCP_TLS,
) -> None:
    """Start a QKD network (line3: alice on km-a, bob on km-c, km-b in between), show link keys
    accumulating, relay keys from alice to bob across km-b, and check that both hold the same
    keys (exit status 1 if not). Key stores are SQLite files in a temporary directory."""
    spec = _topology(topology)
    if routing is not None:
        spec = attrs.evolve(spec, routing=routing)
    if transport is DemoTransport.HTTPS and mode is DemoMode.PROACTIVE:
        fail("--mode proactive needs --transport tcp+tls or grpcs: ETSI 014 has no sessions")
    if transport is not DemoTransport.TCP_TLS:
        try:
            spec = spec.serving_also({"ak": [transport.value]})
        except QkdnError as exc:
            fail(f"--transport {transport.value}: {exc}")
    if len(spec.applications) < 2:
        fail("the demo needs two applications in the topology")
    km_options: dict[str, Any] = {"report_interval": 0.1, "sync_interval": 0.1}
    limits = KMConfig(km_id="demo", listen={}, controller_id=spec.controller_id, **km_options)
    try:  # before anything starts: every KM of the demo has these limits
        limits.check_amount(number, size)
    except QkdnError as exc:
        fail(f"--number {number} --size {size}: {exc}")
    console = Console(stderr=False, highlight=False)
    with tempfile.TemporaryDirectory(prefix="qkdn-demo-") as state_dir:
        network = Network(spec, Path(state_dir), km_options=km_options)
        with _logging_to_stderr("qkdn demo", _ROLE_LOGGERS, logging.ERROR):
            try:
                same = _run(partial(_demo, network, console, number, size, mode, transport.value))
            except QkdnError as exc:
                fail(str(exc))
    if not same:
        fail("alice and bob do not hold the same keys")


async def _demo(
    network: Network, console: Console, number: int, size: int, mode: DemoMode, transport: str
) -> bool:
    spec = network.topology
    source, destination = spec.applications[0], spec.applications[-1]
    needed = otp.units_for(otp.MAC_KEY_BYTES + number * size // 8) * otp.UNIT_BITS
    async with trio.open_nursery() as nursery:
        with console.status("starting the network (PKI, controller, QKD modules, KMs)..."):
            endpoints = await nursery.start(network.run)
        console.print(
            f"[bold]QKD network up[/]: {', '.join(km.id for km in spec.kms)}; "
            f"{source.id} on {source.km}, {destination.id} on {destination.km}"
        )
        await _show_link_keys(network, console, needed)
        assert network.controller is not None
        for km in network.kms:  # a report sent after the link keys were there
            await network.controller.wait_for_report(km, network.controller.report_count(km) + 1)
        if source.km != destination.km:
            route = network.controller.route(source.km, destination.km, needed)
            console.print(
                f"relay route from the controller ({spec.routing.value}): "
                f"[bold]{' -> '.join(route)}[/]"
            )
        spent_before = {km_id: dict(km.spent_bits) for km_id, km in network.kms.items()}

        def ak_url(app: ApplicationSpec) -> str:
            return str(endpoints["kms"][app.km]["ak"][transport])

        if transport != DemoTransport.TCP_TLS.value:
            over = {"https": "ETSI GS QKD 014", "grpcs": "gRPC"}[transport]
            console.print(
                f"{source.id} and {destination.id} reach their KMs over {over}: "
                f"{ak_url(source)}, {ak_url(destination)}"
            )

        async with (
            KeyManagerClient.connect(
                ak_url(source), tls=network.tls(source.id), identity=source.id
            ) as alice,
            KeyManagerClient.connect(
                ak_url(destination), tls=network.tls(destination.id), identity=destination.id
            ) as bob,
        ):
            started = time.perf_counter()
            if mode is DemoMode.PROACTIVE:
                await bob.authenticate()
                session = await alice.create_session(destination.id, number)
                console.print(
                    f"session {session.session_id} opened by {source.id} with {destination.id} "
                    f"(Q.4161 clause 7.2; {destination.id} was notified by {destination.km})"
                )
                keys = await session.get_keys(number, size)
            else:
                keys = await alice.get_keys(destination.id, number, size)
            elapsed = time.perf_counter() - started
            console.print(
                f"{source.id} got {len(keys)} keys of {size} bits from {source.km} in "
                f"{elapsed * 1000:.1f} ms (relayed, then confirmed by {destination.km})"
            )
            if mode is DemoMode.PROACTIVE:
                fetched = [await bob.proactive_keys.receive() for _ in keys]
                console.print(f"{destination.km} pushed them to {destination.id}")
            else:
                fetched = await bob.get_keys_with_ids(source.id, [key.key_id for key in keys])
                console.print(f"{destination.id} fetched them by ID from {destination.km}")
        table = Table(title=f"keys at {source.id} and {destination.id} (SHA-256 fingerprints)")
        table.add_column("key ID", min_width=36, no_wrap=True)
        table.add_column(source.id)
        table.add_column(destination.id)
        table.add_column("same")
        for mine, theirs in zip(keys, fetched, strict=True):
            table.add_row(
                mine.key_id,
                _fingerprint(mine.key),
                _fingerprint(theirs.key),
                "yes" if mine == theirs else "[red]NO[/]",
            )
        console.print(table)
        for km_id, manager in network.kms.items():
            for neighbour, bits in manager.spent_bits.items():
                spent = bits - spent_before[km_id][neighbour]
                if spent:
                    console.print(
                        f"{km_id} spent {spent} bits of link key on {km_id}-{neighbour}"
                        + (f": {_relay_cost(number, size)}" if spent == needed else "")
                    )
        same = keys == fetched  # the same IDs and the same bytes, in order
        if same:
            console.print(f"[bold green]{source.id} and {destination.id} hold the same keys[/]")
        nursery.cancel_scope.cancel()
    return same


async def _show_link_keys(network: Network, console: Console, needed: int) -> None:
    """A progress bar per link end until every KM can pay for the relay on each of its links."""
    ends = [(km_id, neighbour) for km_id, km in network.kms.items() for neighbour in km.spent_bits]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>7.0f} / {task.total:.0f} bits of link key"),
        console=console,
        transient=False,
    ) as progress:
        tasks = {end: progress.add_task(f"{end[0]} -> {end[1]}", total=needed) for end in ends}
        while True:
            ready = 0
            for (km_id, neighbour), task in tasks.items():
                bits = network.kms[km_id].link_key_bits(neighbour)
                progress.update(task, completed=min(bits, needed))
                ready += bits >= needed
            if ready == len(tasks):
                return
            await trio.sleep(0.05)  # screen refresh


def _relay_cost(number: int, size: int) -> str:
    """What the link key one hop of a relay of ``number`` keys of ``size`` bits spends pays for
    (:func:`qkdn_sdk.roles.relay.units_for`): ``1024 for the keys, 512 for authenticating the
    relay (...), 256 for encrypting its metadata``."""
    keys = number * size
    total = otp.units_for(otp.MAC_KEY_BYTES + keys // 8) * otp.UNIT_BITS
    # The hop's units: its one-time MAC key, then the metadata key (otp.KEY_UNITS), then the pad
    # of the end-to-end one-time MAC key and the keys, in whole units.
    authentication = otp.UNIT_BITS + otp.MAC_KEY_BYTES * 8
    metadata = (otp.KEY_UNITS - 1) * otp.UNIT_BITS
    parts = [
        f"{keys} for the keys",
        f"{authentication} for authenticating the relay (one-time MAC keys: this hop's and the "
        "end-to-end one)",
        f"{metadata} for encrypting its metadata",
    ]
    if fill := total - keys - authentication - metadata:
        parts.append(f"{fill} to fill the last unit of {otp.UNIT_BITS} bits")
    return ", ".join(parts)


def _fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]
