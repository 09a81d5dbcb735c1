"""Programs the bench runs in processes of their own: a network as ``qkdn network up`` runs it,
and a transport's bare stack serving (``python -m qkdn_sdk.bench._processes bare ...``).

A KM is deployed in a process of its own, with its applications elsewhere; measured in the
bench's own process, a KM would share one event loop (and the GIL) with the applications
measuring it. Its bare baseline is measured the same way: the bare server in a process of its
own, the bare clients in the bench's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import trio

from qkdn_sdk.bench._codec import key_response
from qkdn_sdk.bench._measure import Sample, measure
from qkdn_sdk.bench._round_trips import tls_pair
from qkdn_sdk.messages import ak
from qkdn_sdk.transport import transport_registry

__all__ = ["bare_key_requests", "key_request", "network_process", "running"]

_SERVING = "bare server serving "
"""How the bare server's line on stderr starts: its URL follows."""


def key_request(destination: str, number: int, size: int) -> ak.KeyRequest:
    """The key request that both the SDK's clients and the bare ones send."""
    return ak.KeyRequest(
        application_destination_id=destination, number_of_keys=number, size_of_key=size
    )


@asynccontextmanager
async def running(arguments: Sequence[str], ready: str) -> AsyncIterator[tuple[int, str]]:
    """``python -m <arguments>`` in a process of its own until the block ends (then it is sent
    SIGTERM and waited for). Entered once the program wrote a line starting with ``ready`` on its
    stderr: yields its process ID and that line. Raises :class:`RuntimeError` with what it wrote
    when it ends before."""
    command = [sys.executable, "-m", *arguments]
    ended: str | None = None
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        assert process.stderr is not None
        written = b""
        while (line := _line_starting(written, ready)) is None:
            data = await process.stderr.receive_some()
            if not data:
                ended = written.decode(errors="replace").strip()
                break
            written += data
        if line is not None:
            nursery.start_soon(_drain, process.stderr)
            try:
                yield process.pid, line
            finally:
                nursery.cancel_scope.cancel()  # run_process sends SIGTERM and waits
    if ended is not None:  # raised here, not in an exception group
        raise RuntimeError(f"{' '.join(arguments[:3])} ended before it served: {ended}")


def _line_starting(written: bytes, prefix: str) -> str | None:
    for line in written.decode(errors="replace").splitlines(keepends=True):
        if line.startswith(prefix) and line.endswith("\n"):
            return line.rstrip("\n")
    return None


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    """Read what the program writes on (so it never blocks writing it)."""
    while await stream.receive_some():
        pass


@asynccontextmanager
async def network_process(state_dir: Path, topology: str) -> AsyncIterator[tuple[int, Any]]:
    """The network of ``topology`` (TOML text) run by ``qkdn network up`` in a process of its
    own, with its state in ``state_dir``: yields the process ID and ``endpoints.json`` (its paths
    made absolute) once every role serves."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "topology.toml"
    path.write_text(topology, encoding="utf-8")
    arguments = ["qkdn_sdk", "network", "up", str(path), "--state-dir", str(state_dir)]
    async with running(arguments, "network up:") as (pid, _line):
        endpoints = orjson.loads((state_dir / "endpoints.json").read_bytes())
        endpoints["ca"] = str(state_dir / endpoints["ca"])
        for application in endpoints["apps"].values():
            application["cert"] = str(state_dir / application["cert"])
            application["key"] = str(state_dir / application["key"])
        yield pid, endpoints


async def bare_key_requests(
    scheme: str, pki: Path, request: ak.KeyRequest, connections: int, seconds: float
) -> Sample:
    """The bare stack of ``scheme`` answering ``request`` with as many keys (of zero bytes), the
    server in a process of its own, and ``connections`` connections of this process asking one
    request at a time on each."""
    bare = transport_registry().lookup(scheme).bare_exchange(scheme)
    assert bare is not None
    _server_tls, client_tls = tls_pair(pki, scheme)  # writes the PKI the server then reads
    destination = request.application_destination_id or ""
    number, size = str(request.number_of_keys), str(request.size_of_key)
    arguments = [__name__, "bare", scheme, str(pki), destination, number, size]
    async with running(arguments, _SERVING) as (_pid, line), AsyncExitStack() as stack:
        url = line.removeprefix(_SERVING)
        calls = [
            await stack.enter_async_context(bare.connect(url, request, client_tls))
            for _ in range(connections)
        ]
        sample = await measure(calls, seconds)
    return sample


def _serve_bare(scheme: str, pki: str, destination: str, number: str, size: str) -> None:
    """The bare server of :func:`bare_key_requests`, until it is terminated."""
    bare = transport_registry().lookup(scheme).bare_exchange(scheme)
    assert bare is not None
    server_tls, _client_tls = tls_pair(Path(pki), scheme)
    request = key_request(destination, int(number), int(size))
    answer = key_response(int(number), int(size))

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(bare.serve, request, answer, server_tls))
            print(f"{_SERVING}{url}", file=sys.stderr, flush=True)

    trio.run(serve)


if __name__ == "__main__":  # pragma: no cover (run in a process of its own)
    if sys.argv[1:2] == ["bare"]:
        _serve_bare(*sys.argv[2:])
    else:
        sys.exit(f"usage: python -m {__spec__.name if __spec__ else __name__} bare SCHEME ...")
