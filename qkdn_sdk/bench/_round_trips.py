"""``ak_round_trip`` and ``ak_round_trip_pipelined``: an Ak key request answered with 4 keys,
over a transport, beside the transport's bare stack doing the same exchange
(:meth:`~qkdn_sdk.transport.Transport.bare_exchange`) in the same run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from qkdn_sdk.bench._codec import key_response
from qkdn_sdk.bench._figure import Figure
from qkdn_sdk.bench._measure import Call, Sample, measure
from qkdn_sdk.messages import Message, ak
from qkdn_sdk.pki import dev_tls_config, write_dev_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import (
    BareExchange,
    Connection,
    ServerInfo,
    connect,
    serve,
    transport_registry,
)

__all__ = ["IN_FLIGHT", "bare_exchange", "round_trip_figures", "sdk_exchange", "tls_pair"]

IN_FLIGHT = 16
"""Requests in flight together on one connection, for ``ak_round_trip_pipelined``."""

REQUEST = ak.KeyRequest(application_destination_id="app-b", number_of_keys=4, size_of_key=256)


@asynccontextmanager
async def sdk_exchange(
    scheme: str,
    server_tls: TLSConfig | None,
    client_tls: TLSConfig | None,
    request: Message,
    answer: Message,
) -> AsyncIterator[list[Call]]:
    """``serve`` with a handler that returns ``answer``, and ``connect`` sending ``request``."""

    async def handler(_message: Message, _connection: Connection) -> Message:
        return answer

    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            partial(serve, f"{scheme}://127.0.0.1:0", handler, tls=server_tls)
        )
        async with connect(info.url, tls=client_tls) as connection:
            yield [partial(connection.request, request)]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def bare_exchange(
    bare: BareExchange,
    server_tls: TLSConfig | None,
    client_tls: TLSConfig | None,
    request: Message,
    answer: Message,
    *,
    connections: int = 1,
) -> AsyncIterator[list[Call]]:
    """The bare stack serving ``answer``, and a call sending ``request`` on each of
    ``connections`` connections of it."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        url: str = await nursery.start(partial(bare.serve, request, answer, server_tls))
        calls: list[Call] = [
            await stack.enter_async_context(bare.connect(url, request, client_tls))
            for _ in range(connections)
        ]
        yield calls
        await stack.aclose()
        nursery.cancel_scope.cancel()


def tls_pair(directory: Path, scheme: str) -> tuple[TLSConfig | None, TLSConfig | None]:
    """A server's and a client's TLS settings from a dev PKI in ``directory`` (both ``None``
    for a scheme without TLS)."""
    if scheme not in transport_registry().lookup(scheme).secure_schemes:
        return None, None
    if not (directory / "ca.pem").exists():
        write_dev_pki(directory, "qkdn-bench-ca", ["km-a", "app-a"])
    return dev_tls_config(directory, "km-a"), dev_tls_config(directory, "app-a")


async def _sample(
    exchange: Callable[[], AbstractAsyncContextManager[list[Call]]], in_flight: int, seconds: float
) -> Sample:
    async with exchange() as calls:
        return await measure(calls * in_flight, seconds)


async def round_trip_figures(scheme: str, pki: Path, seconds: float) -> list[Figure]:
    """Round trips per second of a key request (4 keys of 256 bits in the answer) on one
    connection, 1 and :data:`IN_FLIGHT` in flight, SDK and bare stack one after the other."""
    bare = transport_registry().lookup(scheme).bare_exchange(scheme)
    server_tls, client_tls = tls_pair(pki, scheme)
    answer = key_response(4)
    figures = []
    for name, in_flight in (("ak_round_trip", 1), ("ak_round_trip_pipelined", IN_FLIGHT)):
        baseline = None
        if bare is not None:
            baseline = await _sample(
                partial(bare_exchange, bare, server_tls, client_tls, REQUEST, answer),
                in_flight,
                seconds,
            )
        sdk = await _sample(
            partial(sdk_exchange, scheme, server_tls, client_tls, REQUEST, answer),
            in_flight,
            seconds,
        )
        figures.append(
            Figure(
                name=name,
                transport=scheme,
                value=sdk.rate,
                unit="round trips/s",
                baseline=None if baseline is None else baseline.rate,
                case=f"{in_flight} in flight on one connection",
                baseline_is=None if bare is None else bare.description,
                p50=sdk.p50 * 1e3,
                p99=sdk.p99 * 1e3,
            )
        )
    return figures
