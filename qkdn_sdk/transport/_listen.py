"""What every TCP-based transport does with its URL: read ``HOST:PORT`` and listen on it."""

from __future__ import annotations

import urllib.parse

import trio

from qkdn_sdk.errors import TransportError

__all__ = ["bound_url", "open_listeners", "tcp_address"]


def tcp_address(url: urllib.parse.SplitResult) -> tuple[str, int]:
    """``(host, port)`` of ``scheme://HOST:PORT``; :class:`~qkdn_sdk.errors.TransportError`
    saying the expected form for anything else (no port, a path)."""
    try:
        port = url.port
    except ValueError:
        port = None
    if not url.hostname or port is None or url.path not in ("", "/"):
        raise TransportError(f"{url.geturl()}: expected {url.scheme}://HOST:PORT")
    return url.hostname, port


async def open_listeners(url: urllib.parse.SplitResult) -> tuple[list[trio.SocketListener], str]:
    """Listen on ``url``'s address: the listeners, and the URL that reaches them (with the port
    the system chose for port 0). Raises :class:`~qkdn_sdk.errors.TransportError` saying why
    it cannot (the port is taken...)."""
    host, port = tcp_address(url)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise TransportError(f"cannot listen on {url.geturl()}: {exc.strerror or exc}") from None
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    return listeners, bound_url(url.scheme, bound_host, bound_port)


def bound_url(scheme: str, host: str, port: int) -> str:
    """The URL that reaches a server listening on ``host`` (an IPv6 address in brackets)."""
    shown_host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown_host}:{port}"
