"""Relay latency and keys per second on line3 (alice on km-a, bob on km-c, relayed by km-b).

Runs the whole network in this process over tcp+tls with SQLite key stores, in distributed then
centralized routing, at line3's own link rate (256 kbit/s per link: 128 kbit/s of link key each
way), and times, in the same run:

- a bare tcp+tls request/response on one connection (the transport alone);
- a key request of alice for carol, another application of km-a (no relay);
- a key request of alice for bob, relayed km-a -> km-b -> km-c and confirmed: one at a time
  (p50/p99), then 8 at once (keys/s). Each relay of 4 keys of 256 bits spends 1536 bits of link
  key per hop, so the links' own rate bounds the keys/s at about 128000 / 1536 * 4 = 333.
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

from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.messages import Message, ak, example
from qkdn_sdk.network import Network, parse_topology
from qkdn_sdk.transport import Connection, ServerInfo, connect, serve

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 50
NUMBER, SIZE = 4, 256
CAROL = '\n[[application]]\nid = "carol"\nkm = "km-a"\n'


async def bare_round_trip(network: Network) -> list[float]:
    """The transport alone: a canned response to a key request over tcp+tls, one connection."""
    response = example(ak.ResponseToKeyRequest)

    async def answer(message: Message, connection: Connection) -> Message:
        return response

    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            partial(serve, "tcp+tls://127.0.0.1:0", answer, tls=network.tls("km-a"))
        )
        request = ak.KeyRequest(application_destination_id="bob", number_of_keys=NUMBER)
        async with connect(info.url, tls=network.tls("alice")) as connection:
            latencies = await timed(partial(connection.request, request), REQUESTS)
        nursery.cancel_scope.cancel()
    return latencies


async def main() -> None:
    logging.getLogger("qkdn_sdk.roles").setLevel(logging.ERROR)
    for routing in ("distributed", "centralized"):
        print(
            f"-- {routing} routing (Q.4164 clause {'7.1' if routing == 'distributed' else '7.2'})"
        )
        await run(routing)


async def run(routing: str) -> None:
    text = (ROOT / "examples" / "topologies" / "line3.toml").read_text() + CAROL
    text = text.replace('host = "127.0.0.1"', f'host = "127.0.0.1"\nrouting = "{routing}"', 1)
    with tempfile.TemporaryDirectory() as state:
        network = Network(parse_topology(text), Path(state), km_options={"report_interval": 0.1})
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(network.run)
            figures("bare tcp+tls request/response", await bare_round_trip(network))
            url = endpoints["kms"]["km-a"]["ak"]["tcp+tls"]
            async with KeyManagerClient.connect(url, tls=network.tls("alice")) as alice:
                same_km = await timed(partial(alice.get_keys, "carol", NUMBER, SIZE), REQUESTS)
                figures(
                    f"key request, {NUMBER} x {SIZE}-bit keys, alice -> carol (no relay)", same_km
                )

                assert network.controller is not None
                needed = 2 * REQUESTS * 1536
                await network.kms["km-a"].wait_link_key("km-b", needed)
                await network.kms["km-b"].wait_link_key("km-c", needed)
                for km in network.kms:
                    await network.controller.wait_for_report(
                        km, network.controller.report_count(km) + 1
                    )
                relayed = await timed(partial(alice.get_keys, "bob", NUMBER, SIZE), REQUESTS)
                figures(
                    f"key request, {NUMBER} x {SIZE}-bit keys, alice -> bob relayed "
                    "km-a -> km-b -> km-c",
                    relayed,
                )
                done = 0
                started = time.perf_counter()

                async def worker() -> None:
                    nonlocal done
                    for _ in range(REQUESTS // 8):
                        await alice.get_keys("bob", NUMBER, SIZE)
                        done += NUMBER

                async with trio.open_nursery() as workers:
                    for _ in range(8):
                        workers.start_soon(worker)
                elapsed = time.perf_counter() - started
                print(f"keys/s relayed, 8 concurrent requests of {NUMBER}: {done / elapsed:.0f}")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(trio.run(main))
