"""Round trips of the SDK beside the bare transport, measured in the same run.

    python benchmarks/bench_transport.py [--seconds 2]

Bare: a trio client and server on loopback exchanging frames of the same size as the SDK's
(10-byte header + the JSON payload of a key request / a 4-key response), with no decoding. SDK:
``Connection.request`` of the same messages over the installed tcp:// plugin, which adds the JSON
codec, validation, MessageID matching and the handler task. Both with and without mutual TLS,
sequential on one connection and with 16 requests in flight.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import trio

from qkdn_sdk.codecs.frame import FrameDecoder, decode_message, encode_message
from qkdn_sdk.codecs.payload import decode_payload, encode_payload
from qkdn_sdk.messages import Key, Message, ak
from qkdn_sdk.testing import conformance_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, ServerInfo, connect, serve

REQUEST = ak.KeyRequest(application_destination_id="app-b", number_of_keys=4, size_of_key=256)
RESPONSE = ak.ResponseToKeyRequest(
    keys=[
        Key(key=bytes(32), key_id=f"{index:08d}-0000-4000-8000-000000000000") for index in range(4)
    ],
    response="success",
)
BIG = ak.ResponseToKeyRequest(
    keys=[
        Key(key=bytes(32), key_id=f"{index:08d}-0000-4000-8000-000000000000")
        for index in range(100)
    ],
    response="success",
)


def codec_figures() -> list[tuple[str, float]]:
    rows = []
    for label, message in (("key request", REQUEST), ("response, 100 keys", BIG)):
        payload = encode_payload(message)
        number = 2000
        encode = timeit.timeit(lambda m=message: encode_message(m, 1), number=number) / number
        frame = encode_message(message, 1)

        def decode(frame: bytes = frame) -> Message:
            decoder = FrameDecoder()
            decoder.receive_data(frame)
            found = decoder.next_frame()
            assert found is not None
            return decode_message(found)

        decoded = timeit.timeit(decode, number=number) / number
        payload_only = (
            timeit.timeit(lambda p=payload, m=message: decode_payload(type(m), p), number=number)
            / number
        )
        rows += [
            (f"encode frame, {label} ({len(payload)} B)", encode * 1e6),
            (f"decode frame, {label}", decoded * 1e6),
            ("  of which JSON + validation", payload_only * 1e6),
        ]
    return rows


async def _bare_server(tls: TLSConfig | None, task_status: trio.TaskStatus[int]) -> None:
    response_frame = encode_message(RESPONSE, 1)
    context = tls.server_context() if tls else None

    async def handle(stream: trio.SocketStream) -> None:
        s: trio.abc.Stream = (
            trio.SSLStream(stream, context, server_side=True) if context else stream
        )
        decoder = FrameDecoder()
        try:
            while data := await s.receive_some(65536):
                decoder.receive_data(data)
                while decoder.next_frame() is not None:
                    await s.send_all(response_frame)
        except trio.BrokenResourceError:
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _bare_client(
    port: int, tls: TLSConfig | None, seconds: float, parallel: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    request_frame = encode_message(REQUEST, 1)
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
        if tls:
            stream = trio.SSLStream(stream, tls.client_context(), server_hostname="localhost")
        decoder = FrameDecoder()
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await stream.send_all(request_frame)
            while decoder.next_frame() is None:
                decoder.receive_data(await stream.receive_some(65536))
            latencies.append(time.perf_counter() - start)
        await stream.aclose()

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(parallel):
            nursery.start_soon(one)
    return len(latencies) / (time.perf_counter() - began), latencies


async def _sdk(
    url: str, tls: TLSConfig | None, client_tls: TLSConfig | None, seconds: float, parallel: int
) -> tuple[float, list[float]]:
    async def handler(message: Message, _connection: Connection) -> Message | None:
        return RESPONSE

    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: serve(url, handler, tls=tls, task_status=task_status)
        )
        async with connect(info.url.replace("127.0.0.1", "localhost"), tls=client_tls) as client:
            deadline = time.perf_counter() + seconds

            async def one() -> None:
                while time.perf_counter() < deadline:
                    start = time.perf_counter()
                    await client.request(REQUEST)
                    latencies.append(time.perf_counter() - start)

            began = time.perf_counter()
            async with trio.open_nursery() as inner:
                for _ in range(parallel):
                    inner.start_soon(one)
            rate = len(latencies) / (time.perf_counter() - began)
        nursery.cancel_scope.cancel()
    return rate, latencies


def _row(label: str, rate: float, latencies: list[float]) -> str:
    quantiles = [value * 1e6 for value in statistics.quantiles(latencies, n=100)]
    return (
        f"{label:<40} {rate:>8,.0f}/s  p50 {quantiles[49]:>6.0f} µs  p99 {quantiles[98]:>6.0f} µs"
    )


async def transport_figures(seconds: float) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        pki = conformance_pki(Path(directory))
        for secure in (False, True):
            server_tls = pki.server if secure else None
            client_tls = pki.client if secure else None
            for parallel in (1, 16):
                async with trio.open_nursery() as nursery:
                    port = await nursery.start(_bare_server, server_tls)
                    rate, latencies = await _bare_client(
                        port, client_tls if secure else None, seconds, parallel
                    )
                    nursery.cancel_scope.cancel()
                name = "tcp+tls" if secure else "tcp"
                rows.append(_row(f"bare {name}, {parallel} in flight", rate, latencies))
                scheme = "tcp+tls" if secure else "tcp"
                rate, latencies = await _sdk(
                    f"{scheme}://127.0.0.1:0", server_tls, client_tls, seconds, parallel
                )
                rows.append(_row(f"SDK  {name}, {parallel} in flight", rate, latencies))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    arguments = parser.parse_args()
    print("codec (µs per operation)")
    for label, micros in codec_figures():
        print(f"  {label:<46} {micros:8.1f}")
    print("round trips, key request -> 4-key response, loopback")
    for row in trio.run(transport_figures, arguments.seconds):
        print("  " + row)


if __name__ == "__main__":
    main()
