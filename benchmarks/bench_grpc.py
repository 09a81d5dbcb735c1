"""gRPC round trips: the SDK's grpcs:// transport beside a bare grpcio echo through the same
trio bridge, and beside tcp+tls, in one run (mutual TLS on loopback, one connection).

- bare echo: ``serve_grpc`` and ``GrpcChannel`` of ``qkdn_grpc._bridge`` with a handler that
  returns the request bytes (200 bytes): grpcio and the bridge, no protobuf, no SDK;
- grpcs:// transport: ``connect``/``serve`` with a handler that answers a key request (4 keys of
  256 bits) with a canned response: protobuf, the message layer and the connection;
- tcp+tls:// transport: the same request and response over the Appendix I frames.

Each: one request at a time (round trips/s, p50, p99), then 16 at once (round trips/s).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio
from _timing import figures, timed
from qkdn_grpc._bridge import CallInfo, GrpcChannel, serve_grpc

from qkdn_sdk.messages import Key, Message, ak
from qkdn_sdk.pki import dev_tls_config, write_dev_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, connect, serve

REQUESTS = 1000
CONCURRENT = 16
ECHO = "/bench.Bench/Echo"
REQUEST = ak.KeyRequest(application_destination_id="bob", number_of_keys=4, size_of_key=256)
RESPONSE = ak.ResponseToKeyRequest(
    keys=[Key(key=bytes(32), key_id=f"00000000-0000-4000-8000-00000000000{i}") for i in range(4)],
    response="success",
)


async def concurrently(call: Callable[[], Awaitable[object]], count: int) -> float:
    """Round trips per second of ``count`` calls made by :data:`CONCURRENT` tasks at once."""

    async def worker() -> None:
        for _ in range(count // CONCURRENT):
            await call()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENT):
            nursery.start_soon(worker)
    return (count // CONCURRENT * CONCURRENT) / (time.perf_counter() - started)


async def bare_echo(server: TLSConfig, client: TLSConfig) -> None:
    async def echo(request: bytes, _info: CallInfo) -> bytes:
        return request

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(
                serve_grpc,
                "127.0.0.1",
                0,
                unary={ECHO: echo},
                streams={},
                tls=server,
                limits=Limits(),
            )
        )
        async with GrpcChannel("127.0.0.1", port, tls=client, limits=Limits()) as channel:
            call = partial(channel.call, ECHO, bytes(200), timeout=10)
            figures(
                "bare grpcio echo through the bridge", await timed(call, REQUESTS), "round trips"
            )
            rate = await concurrently(call, REQUESTS)
            print(f"  {CONCURRENT} at once: {rate:.0f} round trips/s", flush=True)
        nursery.cancel_scope.cancel()


async def transport(scheme: str, server: TLSConfig, client: TLSConfig) -> None:
    async def answer(_message: Message, _connection: Connection) -> Message:
        return RESPONSE

    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            partial(serve, f"{scheme}://127.0.0.1:0", answer, tls=server)
        )
        async with connect(info.url, tls=client) as connection:
            call = partial(connection.request, REQUEST)
            figures(f"{scheme}:// key request", await timed(call, REQUESTS), "round trips")
            rate = await concurrently(call, REQUESTS)
            print(f"  {CONCURRENT} at once: {rate:.0f} round trips/s", flush=True)
        nursery.cancel_scope.cancel()


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="qkdn-bench-grpc-") as directory:
        pki = Path(directory)
        write_dev_pki(pki, "bench-ca", ["km-a", "app-a"])
        server, client = dev_tls_config(pki, "km-a"), dev_tls_config(pki, "app-a")
        await bare_echo(server, client)
        await transport("grpcs", server, client)
        await transport("tcp+tls", server, client)


if __name__ == "__main__":
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}", flush=True)
    trio.run(main)
