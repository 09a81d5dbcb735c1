"""One real TLS connection on loopback, for the TLS and PKI tests.

:func:`tls_exchange` runs a trio TLS server and client on 127.0.0.1 (real sockets, real
handshakes), makes the client send ``ping`` and the server answer ``pong``, and reports what each
side saw. With TLS 1.3 a client whose certificate the server refuses still completes its own
handshake; it only learns of the refusal on its first read, so both sides exchange data before a
connection counts as accepted.
"""

from __future__ import annotations

import ssl
from typing import Any

import attrs
import trio

TIMEOUT = 10  # seconds; a guard against a hang, never a wait


@attrs.define
class Side:
    """What one end of the connection saw."""

    peer_cert: dict[str, Any] | None = None
    peer_der: bytes | None = None
    version: str | None = None
    received: bytes = b""
    error: BaseException | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None and self.received in (b"ping", b"pong")


_FAILURES = (trio.BrokenResourceError, ssl.SSLError)


async def tls_exchange(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    server_hostname: str = "localhost",
    *,
    host: str = "127.0.0.1",
) -> tuple[Side, Side]:
    """Connect once; return (server side, client side). Never raises a TLS failure: it is
    recorded in ``Side.error``."""
    server, client = Side(), Side()
    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host=host)
        async with listeners[0] as listener:
            port = listener.socket.getsockname()[1]

            client_done = trio.Event()

            async def serve() -> None:
                stream = trio.SSLStream(await listener.accept(), server_context, server_side=True)
                # After answering, hold the connection open until the client has read the
                # answer: closing first could reset the connection under the unread reply.
                await _run(
                    stream, server, send=None, expect=b"ping", reply=b"pong", linger=client_done
                )

            async def connect() -> None:
                try:
                    tcp = await trio.open_tcp_stream(host, port)
                    stream = trio.SSLStream(tcp, client_context, server_hostname=server_hostname)
                    await _run(stream, client, send=b"ping", expect=b"pong", reply=None)
                finally:
                    client_done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                nursery.start_soon(connect)
    return server, client


async def _run(
    stream: trio.SSLStream[trio.SocketStream],
    side: Side,
    *,
    send: bytes | None,
    expect: bytes,
    reply: bytes | None,
    linger: trio.Event | None = None,
) -> None:
    try:
        await stream.do_handshake()
        side.peer_cert = stream.getpeercert()
        side.peer_der = stream.getpeercert(binary_form=True)
        side.version = stream.version()
        if send is not None:
            await stream.send_all(send)
        side.received = bytes(await stream.receive_some())  # b"" when the peer closed cleanly
        if side.received != expect:
            side.error = EOFError(f"expected {expect!r}, got {side.received!r}")
        elif reply is not None:
            await stream.send_all(reply)
            if linger is not None:
                await linger.wait()
    except _FAILURES as exc:
        side.error = exc
    finally:
        await trio.aclose_forcefully(stream)


def ssl_cause(side: Side) -> BaseException | None:
    """The ssl error behind a side's failure (trio wraps it in BrokenResourceError)."""
    error = side.error
    if isinstance(error, trio.BrokenResourceError):
        return error.__cause__
    return error
