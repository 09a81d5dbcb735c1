"""The roles' Prometheus metrics (qkdn_sdk.roles.metrics): scraped over real sockets from a
running line3 network, from a role file's ``metrics`` and from ``qkdn serve``; the table of
``docs/metrics.md``.

Nothing sleeps to wait: a value that moves on its own (a QKD module's keys) is scraped again
until it has moved, under a deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from qkdn_sdk.errors import QkdnError, TransportError
from qkdn_sdk.network import ENDPOINTS_FILE, Network, load_topology, parse_topology
from qkdn_sdk.network.deployment import RoleConfigError, load_role_config, write_role_configs
from qkdn_sdk.roles.metrics import METRICS, check_address, metrics_table, serve_metrics
from tests.test_network import BOTH_WAYS, FAST, WAIT, client, ready, relay_bits, topology_text
from tests.test_serve import LINE3, Role, first_port, role_of, stop_roles
from tests.test_sessions import listening

ROOT = Path(__file__).parent.parent
METRICS_MD = ROOT / "docs" / "metrics.md"
ROLE_IDS = {"controller", "km-a", "km-b", "km-c", *(f"{km}.{other}" for km, other in BOTH_WAYS)}
"""The roles of line3: its controller, KMs and QKD modules."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """Every sample ``url`` serves, by name and labels, parsed as Prometheus parses them."""
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when there is none)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape_until(url: str, holds: Callable[[Samples], bool]) -> Samples:
    """Scrape ``url`` until what it serves makes ``holds`` true (the caller sets the deadline)."""
    while not holds(samples := await scrape(url)):
        await trio.lowlevel.checkpoint()
    return samples


# --- the table -----------------------------------------------------------------------------


def test_the_docs_list_every_metric() -> None:
    text = METRICS_MD.read_text(encoding="utf-8")
    begin, end = "<!-- metrics -->\n", "<!-- /metrics -->"
    assert begin in text, f"{METRICS_MD.name} has no metrics table"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == metrics_table(), f"the table of {METRICS_MD.name} is stale; it is:\n" + (
        metrics_table()
    )


def test_the_names_follow_the_prometheus_conventions() -> None:
    names = [spec.name for spec in METRICS]
    assert len(set(names)) == len(names)
    for spec in METRICS:
        assert spec.name.startswith("qkdn_"), spec.name
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        assert spec.type != "histogram" or spec.name.endswith("_seconds"), spec.name
        assert spec.role in ("km", "controller", "qkd-module"), spec.name
        assert spec.labels[0] == {"km": "km", "controller": "controller"}.get(spec.role, "module")


# --- a whole network ------------------------------------------------------------------------


@asynccontextmanager
async def metered(tmp_path: Path, store: str = "memory") -> AsyncIterator[Network]:
    """line3 with metrics, running until the block ends."""
    network = Network(
        parse_topology(topology_text("tcp+tls")),
        tmp_path / "state",
        store=store,
        km_options=FAST,
        metrics=True,
    )
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await nursery.start(network.run)
        yield network
        nursery.cancel_scope.cancel()


async def test_a_networks_metrics_move_as_keys_flow(tmp_path: Path) -> None:
    # SQLite: its transactions are timed (a store with a worker thread)
    async with metered(tmp_path, "sqlite") as network:
        urls = network.metrics_urls
        assert set(urls) == ROLE_IDS
        written = json.loads((network.state_dir / ENDPOINTS_FILE).read_text(encoding="utf-8"))
        assert written["metrics"] == urls
        assert all(url.startswith("http://127.0.0.1:") for url in urls.values())

        await ready(network, relay_bits(4, 256))
        with trio.fail_after(WAIT):
            before = {role_id: await scrape(url) for role_id, url in urls.items()}
            async with client(network, "alice") as alice:
                keys = await alice.get_keys("bob", 4, 256)
            assert len(keys) == 4
            after = {role_id: await scrape(url) for role_id, url in urls.items()}

        def grew(role_id: str, name: str, **labels: str) -> float:
            return value(after[role_id], name, **labels) - value(before[role_id], name, **labels)

        # km-a: the request, the relay it started and confirmed, the link key it spent
        request = {"interface": "ak", "message": "KeyRequest", "outcome": "success"}
        assert grew("km-a", "qkdn_km_requests_total", km="km-a", **request) == 1
        assert grew("km-a", "qkdn_km_relays_total", km="km-a", role="source") == 1
        pair = {"km": "km-a", "source": "alice", "destination": "bob"}
        assert grew("km-a", "qkdn_km_supplied_keys_total", **pair) == 4
        confirmed = {"km": "km-a", "role": "source", "outcome": "confirmed"}
        assert grew("km-a", "qkdn_km_relay_records", **confirmed) == 1
        spent = grew("km-a", "qkdn_km_link_key_consumed_bits_total", km="km-a", neighbour="km-b")
        assert spent >= relay_bits(4, 256)
        hop = {"km": "km-a", "neighbour": "km-b"}
        assert grew("km-a", "qkdn_km_relay_hop_seconds_count", **hop) == 1
        assert grew("km-a", "qkdn_km_store_transaction_seconds_count", km="km-a") > 0
        # km-b passed it on, km-c holds the keys for bob
        assert grew("km-b", "qkdn_km_relays_total", km="km-b", role="transit") == 1
        assert grew("km-c", "qkdn_km_relays_total", km="km-c", role="destination") == 1
        assert value(after["km-c"], "qkdn_km_stored_keys", km="km-c", kind="app") == 4
        # the controller answered km-a's and km-b's next hop requests, and knows the links up
        next_hop = {
            "controller": "controller",
            "interface": "ck",
            "message": "KeyRelayNextHopRequest",
            "outcome": "success",
        }
        assert grew("controller", "qkdn_controller_requests_total", **next_hop) == 2
        link = {"controller": "controller", "km": "km-a", "neighbour": "km-b"}
        assert value(after["controller"], "qkdn_controller_km_link_up", **link) == 1
        assert value(after["controller"], "qkdn_controller_km_link_key_amount_bits", **link) > 0

        # the modules keep delivering keys to their KMs
        module = {"module": "km-b.km-c", "km": "km-b"}
        delivered = "qkdn_qkd_module_delivered_keys_total"
        with trio.fail_after(WAIT):
            await scrape_until(
                urls["km-b.km-c"],
                lambda now: (
                    value(now, delivered, **module) > value(after["km-b.km-c"], delivered, **module)
                ),
            )


async def test_a_refused_request_is_counted_as_one(tmp_path: Path) -> None:
    async with metered(tmp_path) as network:
        with trio.fail_after(WAIT):
            async with client(network, "alice") as alice:
                with pytest.raises(QkdnError, match="max_key_per_request"):
                    await alice.get_keys("bob", 10**6, 256)
            samples = await scrape(network.metrics_urls["km-a"])
        request = {"km": "km-a", "interface": "ak", "message": "KeyRequest"}
        assert value(samples, "qkdn_km_requests_total", **request, outcome="refused") == 1
        assert value(samples, "qkdn_km_requests_total", **request, outcome="success") == 0


async def test_a_km_started_again_serves_its_metrics_at_the_same_url(tmp_path: Path) -> None:
    async with metered(tmp_path) as network:
        with trio.fail_after(WAIT):
            url = network.metrics_urls["km-b"]
            first = network.kms["km-b"]
            await network.stop_km("km-b")
            with pytest.raises(httpx.ConnectError):
                await scrape(url)
            await network.start_km("km-b")
            assert network.kms["km-b"] is not first
            assert network.metrics_urls["km-b"] == url
            samples = await scrape(url)
        assert value(samples, "qkdn_km_relays_total", km="km-b", role="transit") == 0


# --- one role per process -------------------------------------------------------------------


def test_a_role_file_may_serve_metrics(tmp_path: Path) -> None:
    files = write_role_configs(
        load_topology(LINE3), tmp_path, first_port=first_port(), metrics=True
    )
    addresses = {
        role_id: load_role_config(path, role_of(path)).metrics for role_id, path in files.items()
    }
    assert set(addresses) == ROLE_IDS
    assert all(address and address.startswith("127.0.0.1:") for address in addresses.values())
    assert len(set(addresses.values())) == len(addresses)  # a port each
    plain = write_role_configs(load_topology(LINE3), tmp_path / "plain", first_port=first_port())
    assert load_role_config(plain["km-a"], "km").metrics is None
    assert "metrics" not in plain["km-a"].read_text()

    path = files["km-a"]
    text = path.read_text()
    path.write_text(text.replace(f'metrics = "{addresses["km-a"]}"', 'metrics = "9101"'))
    with pytest.raises(RoleConfigError, match=r"metrics must be HOST:PORT .*not '9101'"):
        load_role_config(path, "km")


@pytest.mark.parametrize("address", ["127.0.0.1:0", "[::1]:9101", "localhost:65535"])
def test_an_address_is_host_and_port(address: str) -> None:
    assert check_address(address) == address


@pytest.mark.parametrize("address", ["9101", ":9101", "127.0.0.1:", "127.0.0.1:http", "h:65536"])
def test_anything_else_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="metrics must be HOST:PORT"):
        check_address(address)


async def test_an_address_in_use_is_refused_in_one_line() -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_metrics, CollectorRegistry(), "127.0.0.1:0")
        address = url.removeprefix("http://").removesuffix("/metrics")
        with pytest.raises(TransportError, match=f"^cannot serve metrics at {address}: .+"):
            await serve_metrics(CollectorRegistry(), address)
        nursery.cancel_scope.cancel()


async def test_qkdn_serve_says_where_its_metrics_are(tmp_path: Path) -> None:
    files = write_role_configs(
        load_topology(LINE3), tmp_path, first_port=first_port(), metrics=True
    )
    path = files["km-b.km-c"]  # an on-request QKD module: it needs no other role to serve
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "qkdn_sdk", "serve", "qkd-module", "--config", str(path)],
        stderr=subprocess.PIPE,
    )
    role = Role(process, "km-b.km-c")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(role.read)
        try:
            with trio.fail_after(WAIT):
                await role.wait_for("serves metrics: ")
                await role.wait_for("/metrics\n")
                url = role.said.split("serves metrics: ", 1)[1].split("\n", 1)[0]
                address = load_role_config(path, "qkd-module").metrics
                assert url == f"http://{address}/metrics"
                samples = await scrape(url)
        finally:
            await stop_roles({"km-b.km-c": role})
    module = {"module": "km-b.km-c", "km": "km-b"}
    assert ("qkdn_qkd_module_produced_keys_total", frozenset(module.items())) in samples
    assert process.returncode == 0, role.said


async def test_open_sessions_are_counted_by_pair(tmp_path: Path) -> None:
    pair = {"km": "km-a", "source": "alice", "destination": "bob"}
    async with metered(tmp_path) as network:
        await ready(network, relay_bits(2, 256))
        url = network.metrics_urls["km-a"]
        with trio.fail_after(WAIT):
            async with listening(network, "bob"), client(network, "alice") as alice:
                assert value(await scrape(url), "qkdn_km_sessions", **pair) == 0
                session = await alice.create_session("bob", 2)
                assert value(await scrape(url), "qkdn_km_sessions", **pair) == 1
                await alice.end_session(session.session_id, "bob")
                assert value(await scrape(url), "qkdn_km_sessions", **pair) == 0
