"""ETSI GS QKD 014 through the KMs of line3, beside a bare hypercorn handler, in one run.

Every figure is mutual TLS on loopback with one HTTP/1.1 keep-alive connection per client
(httpx), in this process; the two bare figures first, before the network runs (nothing else on
the event loop), then the network's:

- bare hypercorn: hypercorn's own trio server and an ASGI app that answers every request with
  the same 014 key container of 1 key (no SDK at all): what HTTP/1.1 over mTLS costs here;
- the https:// transport: the SDK's 014 server (hypercorn under the SDK's admission and
  identity) with a handler that answers a canned key container, and our client;
- enc+dec pairs through the KMs: ``Get key`` of 1 key of 256 bits by alice, then ``Get key with
  key IDs`` of it by the slave, for a slave of alice's KM (erin, no relay) and for bob (relayed
  km-a -> km-b -> km-c and confirmed), one pair at a time (p50/p99 and pairs/s), then 8 clients
  at once (pairs/s).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import trio
from _timing import figures, timed
from qkdn_https import Etsi014Client

from qkdn_sdk.messages import Key, Message, ak, example
from qkdn_sdk.network import Network, parse_topology
from qkdn_sdk.pki import write_dev_pki
from qkdn_sdk.transport import Connection, ServerInfo, serve, transport_registry

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 100
CONCURRENT = 8
ERIN = '\n[[application]]\nid = "erin"\nkm = "km-a"\n'


async def bare_hypercorn(network: Network) -> None:
    """The https transport's bare exchange: hypercorn answering a canned key container of 1 key
    through an ASGI app, and httpx (no SDK)."""
    bare = transport_registry().lookup("https").bare_exchange("https")
    assert bare is not None
    request = ak.KeyRequest(application_destination_id="bob")
    answer = ak.ResponseToKeyRequest(
        keys=[Key(key=bytes(32), key_id="6f1c2a3e-1d2b-4c5d-8e9f-0a1b2c3d4e5f")],
        response="success",
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(bare.serve, request, answer, network.tls("km-a"))
        async with bare.connect(url, request, network.tls("alice")) as call:
            latencies = await timed(call, 2 * PAIRS)
            figures("bare hypercorn, GET enc_keys (fixed answer)", latencies, "requests")
        nursery.cancel_scope.cancel()


async def bare_transport(network: Network) -> None:
    """The SDK's https:// server with a canned answer, and our typed client."""
    answer = example(ak.ResponseToKeyRequest)

    async def handler(message: Message, connection: Connection) -> Message:
        return answer

    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            partial(serve, "https://127.0.0.1:0", handler, tls=network.tls("km-a"))
        )
        tls = network.tls("alice")
        assert tls is not None
        async with Etsi014Client(info.url, tls) as kme:
            latencies = await timed(partial(kme.get_key, "bob"), 2 * PAIRS)
            figures("https:// transport, Get key (canned answer)", latencies, "requests")
        nursery.cancel_scope.cancel()


async def pairs(network: Network, slave: str) -> None:
    endpoints = network.endpoints()["kms"]
    slave_km = next(app.km for app in network.topology.applications if app.id == slave)
    alice_tls, slave_tls = network.tls("alice"), network.tls(slave)
    assert alice_tls is not None
    assert slave_tls is not None
    async with (
        Etsi014Client(endpoints["km-a"]["ak"]["https"], alice_tls) as alice,
        Etsi014Client(endpoints[slave_km]["ak"]["https"], slave_tls) as other,
    ):

        async def pair() -> None:
            (key,) = (await alice.get_key(slave)).keys
            (same,) = (await other.get_key_with_key_ids("alice", [key.key_id])).keys
            assert same == key

        where = "same KM" if slave_km == "km-a" else "relayed km-a -> km-b -> km-c"
        figures(f"enc+dec pair alice -> {slave} ({where})", await timed(pair, PAIRS), "pairs")
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENT):
                nursery.start_soon(timed, pair, PAIRS // CONCURRENT)
        elapsed = time.perf_counter() - started
        done = CONCURRENT * (PAIRS // CONCURRENT)
        print(f"  {CONCURRENT} pairs at once: {done / elapsed:.0f} pairs/s", flush=True)


async def main() -> None:
    logging.getLogger("qkdn_sdk.roles").setLevel(logging.ERROR)
    text = (ROOT / "examples" / "topologies" / "line3.toml").read_text(encoding="utf-8") + ERIN
    with tempfile.TemporaryDirectory(prefix="qkdn-bench-014-") as state_dir:
        network = Network(
            parse_topology(text),
            Path(state_dir),
            store="sqlite",
            km_options={"report_interval": 0.05, "sync_interval": 0.05},
        )
        # the network's PKI, made first, so the bare figures are taken on a quiet event loop
        write_dev_pki(Path(state_dir) / "pki", "qkdn-dev-ca", network.topology.entities())
        await bare_hypercorn(network)
        await bare_transport(network)
        async with trio.open_nursery() as nursery:
            await nursery.start(network.run)
            await network.wait_for_keys()
            for km_id, neighbour in (("km-a", "km-b"), ("km-b", "km-c")):
                await network.kms[km_id].wait_link_key(neighbour, otp_bits(2 * PAIRS))
            await pairs(network, "erin")
            await pairs(network, "bob")
            nursery.cancel_scope.cancel()


def otp_bits(count: int) -> int:
    """Link key one hop spends on ``count`` relays of one 256-bit key (2 units each)."""
    return count * 512


if __name__ == "__main__":
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}", flush=True)
    trio.run(main)
