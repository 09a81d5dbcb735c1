"""Keys per second and relay latency on line3 (alice on km-a, bob on km-c, relayed by km-b).

Runs the whole network in this process over tcp+tls with SQLite key stores (line3's 256 kbit/s
links), waits for enough link key for every request, then times key requests of alice at km-a
(each relayed, confirmed and answered): one at a time (p50/p99), and 8 at once (keys/s).
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.network import Network, parse_topology

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 50
NUMBER, SIZE = 4, 256


async def main() -> None:
    logging.getLogger("qkdn_sdk.roles").setLevel(logging.ERROR)  # modules dropping keys
    text = (ROOT / "examples" / "topologies" / "line3.toml").read_text()
    # big QKD-keys at a high rate: few Kq-1 messages, plenty of link key
    text = text.replace(
        "secret_key_rate = 256_000", "secret_key_rate = 4_000_000\nkey_size = 65536"
    )
    with tempfile.TemporaryDirectory() as state:
        network = Network(parse_topology(text), Path(state), km_options={"report_interval": 0.1})
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(network.run)
            assert network.controller is not None
            needed = 2 * REQUESTS * 1536
            await network.kms["km-a"].wait_link_key("km-b", needed)
            await network.kms["km-b"].wait_link_key("km-c", needed)
            for km in network.kms:
                await network.controller.wait_for_report(
                    km, network.controller.report_count(km) + 1
                )
            url = endpoints["kms"]["km-a"]["ak"]["tcp+tls"]
            async with KeyManagerClient.connect(url, tls=network.tls("alice")) as alice:
                latencies = []
                for _ in range(REQUESTS):
                    started = time.perf_counter()
                    await alice.get_keys("bob", NUMBER, SIZE)
                    latencies.append(time.perf_counter() - started)
                latencies.sort()
                print(
                    f"relay latency, {NUMBER} x {SIZE}-bit keys, km-a -> km-b -> km-c, sequential: "
                    f"p50 {statistics.median(latencies) * 1000:.2f} ms, "
                    f"p99 {latencies[int(0.99 * len(latencies)) - 1] * 1000:.2f} ms"
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
