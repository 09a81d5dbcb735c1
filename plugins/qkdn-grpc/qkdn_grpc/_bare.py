"""The bare baseline of ``grpc://`` and ``grpcs://``: grpcio through the same trio bridge.

The server is :func:`~qkdn_grpc._bridge.serve_grpc` with one unary handler that answers every
call with the same bytes, the protobuf of the answer encoded once; the client is a
:class:`~qkdn_grpc._bridge.GrpcChannel` calling the request's RPC with the protobuf of the
request encoded once. No message layer, no validation: what grpcio and the bridge between its
threads and trio cost. Calls in flight at once share the channel's one HTTP/2 connection.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import trio

from qkdn_grpc._bridge import CallInfo, GrpcChannel, serve_grpc
from qkdn_grpc._codec import encode, rpc_path
from qkdn_sdk.messages import Message
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import BareExchange, Limits, bound_url, tcp_address

__all__ = ["BareGrpc"]


class BareGrpc(BareExchange):
    """:class:`~qkdn_sdk.transport.BareExchange` of ``scheme`` (``grpc`` or ``grpcs``)."""

    description = "grpcio with canned protobuf, same bridge"

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    async def serve(
        self,
        request: Message,
        answer: Message,
        tls: TLSConfig | None,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        answer_bytes = encode(answer)

        async def answer_call(_request: bytes, _info: CallInfo) -> bytes:
            return answer_bytes

        unary = {rpc_path(type(request)): answer_call}
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(
                    serve_grpc, "127.0.0.1", 0, unary=unary, streams={}, tls=tls, limits=Limits()
                )
            )
            task_status.started(bound_url(self.scheme, "127.0.0.1", port))

    @asynccontextmanager
    async def connect(
        self, url: str, request: Message, tls: TLSConfig | None
    ) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        host, port = tcp_address(urllib.parse.urlsplit(url))
        path, request_bytes = rpc_path(type(request)), encode(request)
        async with GrpcChannel(host, port, tls=tls, limits=Limits()) as channel:

            async def call() -> None:
                await channel.call(path, request_bytes, timeout=None)

            yield call
