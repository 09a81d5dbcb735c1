"""A good client's latency with and without hostile peers, and the server's memory.

    python benchmarks/bench_hostile.py [--requests 2000]

The server runs in a process of its own (``tcp+tls://``, mutual TLS, default ``Limits`` but 512
connections per peer, since every attacker here shares one certificate), answering every request
with its example, so its resident memory (``VmRSS``) is its alone. The good client sends
sequential key requests on one connection and records each round trip: alone; beside 4
connections flooding valid 61 KB key requests with 1,270 key IDs; beside 4 flooding 64 KB frames
of 32,700 wrong items (the CPU-amplification frame); and under the whole attack at once:

- those 4 bad-frame floods, reading the failures;
- 200 connections trickling one byte every 0.2 s of a frame that never completes;
- 50 connections sending requests for large answers and never reading them;
- 600 connection attempts past the server's cap of 512 (each closed at once, over the cap).

Speed is never asserted: this prints figures for the issue note.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import trio

from qkdn_sdk.codecs.frame import encode_message
from qkdn_sdk.messages import Key, Message, ak, example
from qkdn_sdk.testing import CLIENT_ID, conformance_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, connect, serve

REQUEST = example(ak.KeyRequest, sender=CLIENT_ID)
BIG = ak.KeyRequest(application_destination_id="app-b", application_name="big")
BAD = orjson.dumps({"application_source_id": CLIENT_ID, "key_ids": [1] * 32_700})
# A valid key request with ID of the same size: 2,000 key IDs.
GOOD = orjson.dumps(
    {
        "application_source_id": CLIENT_ID,
        "key_ids": [{"key_id": f"{index:08d}-0000-4000-8000-0000000000"} for index in range(1270)],
    }
)


async def _answer(message: Message, _connection: Connection) -> Message | None:
    if message == BIG:
        keys = [Key(key=bytes(32), key_id=f"{index:08d}") for index in range(700)]
        return ak.ResponseToKeyRequest(keys=keys, response="success")
    response_type = message.response_type()
    return None if response_type is None else example(response_type)


def run_server(directory: Path) -> None:
    """The server process: serve, print the URL, run until killed."""
    tls = TLSConfig(directory / "ca.pem", directory / "km-a.pem", directory / "km-a.key")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve(
                    "tcp+tls://127.0.0.1:0",
                    _answer,
                    tls=tls,
                    # the attackers share one certificate here; real ones would hold many
                    limits=Limits(max_connections_per_peer=512),
                    task_status=task_status,
                )
            )
            print(info.url, flush=True)

    trio.run(main)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def good_client(url: str, tls: TLSConfig, requests: int) -> list[float]:
    times = []
    async with connect(url, tls=tls) as client:
        for _ in range(requests):
            start = time.perf_counter()
            await client.request(REQUEST)
            times.append(time.perf_counter() - start)
    return times


async def _raw(url: str, tls: TLSConfig) -> trio.SSLStream[trio.SocketStream]:
    host, port = url.split("://")[1].rsplit(":", 1)
    stream = trio.SSLStream(
        await trio.open_tcp_stream(host, int(port)), tls.client_context(), server_hostname=host
    )
    await stream.do_handshake()
    return stream


async def flood(
    url: str, tls: TLSConfig, stop: trio.Event, counts: dict[str, int], payload: bytes = BAD
) -> None:
    try:
        await _flood(url, tls, stop, counts, payload)
    except (trio.BrokenResourceError, OSError):
        counts["attackers cut off"] += 1


async def _flood(
    url: str, tls: TLSConfig, stop: trio.Event, counts: dict[str, int], payload: bytes
) -> None:
    stream = await _raw(url, tls)
    frame = b"\x00\x01\x00\x00\x00\x01\x21\x02" + len(payload).to_bytes(2, "big") + payload
    async with stream, trio.open_nursery() as nursery:

        async def read() -> None:
            while await stream.receive_some(65536):
                pass

        nursery.start_soon(read)
        while not stop.is_set():
            await stream.send_all(frame)
            counts["frames"] += 1
        nursery.cancel_scope.cancel()


async def trickle(url: str, tls: TLSConfig, stop: trio.Event) -> None:
    try:
        stream = await _raw(url, tls)
    except (trio.BrokenResourceError, OSError):
        return
    async with stream:
        header = b"\x00\x01\x00\x00\x00\x01\x21\x01\xff\xff"
        for byte in header + b"x" * 65535:
            if stop.is_set():
                return
            try:
                await stream.send_all(bytes([byte]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await trio.sleep(0.2)


async def not_reading(url: str, tls: TLSConfig, stop: trio.Event) -> None:
    try:
        stream = await _raw(url, tls)
    except (trio.BrokenResourceError, OSError):
        return
    async with stream:
        message_id = 1
        while not stop.is_set():
            try:
                await stream.send_all(encode_message(BIG, message_id))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            message_id += 2


async def over_the_cap(url: str, counts: dict[str, int]) -> None:
    host, port = url.split("://")[1].rsplit(":", 1)
    streams = []
    for _ in range(600):
        try:
            streams.append(await trio.open_tcp_stream(host, int(port)))
            counts["connection attempts"] += 1
        except OSError:
            counts["refused at connect"] += 1
    for stream in streams:
        await stream.aclose()


def summary(times: list[float]) -> str:
    cut = statistics.quantiles(times, n=100)
    return f"p50 {cut[49] * 1e3:.2f} ms, p99 {cut[98] * 1e3:.2f} ms ({len(times)} round trips)"


async def flood_phase(url: str, tls: TLSConfig, requests: int, payload: bytes) -> str:
    """The good client beside 4 connections flooding frames of ``payload``."""
    stop = trio.Event()
    counts = {"frames": 0, "attackers cut off": 0}
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(flood, url, tls, stop, counts, payload)
        times = await good_client(url, tls, requests)
        stop.set()
        nursery.cancel_scope.cancel()
    return f"{summary(times)}; {counts['frames']} frames of {len(payload)} bytes"


async def bench(url: str, tls: TLSConfig, pid: int, requests: int) -> None:
    print(f"server RSS at start:       {rss_mib(pid):.1f} MiB")
    calm = await good_client(url, tls, requests)
    print(f"good client alone:         {summary(calm)}")
    print(f"server RSS after it:       {rss_mib(pid):.1f} MiB")
    assert len(GOOD) <= 65535, len(GOOD)
    print(f"beside 4 floods of valid frames: {await flood_phase(url, tls, requests, GOOD)}")
    print(f"beside 4 floods of bad frames:   {await flood_phase(url, tls, requests, BAD)}")
    print(f"server RSS after the floods: {rss_mib(pid):.1f} MiB")
    stop = trio.Event()
    counts = {
        "frames": 0,
        "connection attempts": 0,
        "refused at connect": 0,
        "attackers cut off": 0,
    }
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(flood, url, tls, stop, counts)
        for _ in range(200):
            nursery.start_soon(trickle, url, tls, stop)
        for _ in range(50):
            nursery.start_soon(not_reading, url, tls, stop)
        await trio.sleep(2)  # let the attack build up before measuring
        nursery.start_soon(over_the_cap, url, counts)
        attacked = await good_client(url, tls, requests)
        peak = rss_mib(pid)
        stop.set()
        nursery.cancel_scope.cancel()
    print(f"good client under the whole attack: {summary(attacked)}")
    print(f"attack: {counts}")
    print(f"server RSS under attack:   {peak:.1f} MiB")
    await trio.sleep(1)
    print(f"server RSS after attack:   {rss_mib(pid):.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        run_server(arguments.serve)
        return
    with tempfile.TemporaryDirectory() as directory:
        pki = conformance_pki(Path(directory))
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", directory], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            trio.run(bench, url, pki.client, server.pid, arguments.requests)
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
