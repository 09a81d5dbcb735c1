"""``qkdn bench``: how fast the SDK is, each figure beside the bare stack doing the same work in
the same run.

Figures (:class:`Figure`, by name):

- ``codec_1_key``, ``codec_100_keys``, ``codec_max_frame``: µs to encode a response to a key
  request into a frame and decode it back, beside orjson alone on the same payload;
- ``ak_round_trip`` (1 in flight) and ``ak_round_trip_pipelined`` (16 in flight on one
  connection): round trips per second of a key request answered with 4 keys, per transport,
  beside the transport's bare stack (:meth:`~qkdn_sdk.transport.Transport.bare_exchange`);
- ``ak_keys_delivered``: keys of 256 bits per second that applications get from a KM over
  ``tcp+tls``, in requests of the KM's ``max_key_per_request``, for 1 and 16 applications,
  the KM in a process of its own as deployed (:mod:`qkdn_sdk.bench._processes`);
- ``relay_latency``: ms per hop of a key request relayed over 1 to 8 hops (p50, p99);
- ``relay_latency_by_size``: ms per hop of a key relayed end to end along lines of 6, 12 and 24
  KMs in one process (as ``qkdn demo`` runs a network), every link acquiring meanwhile;
- ``kq1_ingest``: Mb/s of QKD-keys a KM takes from its QKD module;
- ``key_store``: keys per second taken (and deleted) from a SQLite key store of 10^6 keys, its
  resident memory, its file size and the bytes on disk per byte of key.

Nothing here is a test: the figures depend on the machine. :func:`run_bench` reports each as
it is measured.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from qkdn_sdk.bench._codec import codec_figures
from qkdn_sdk.bench._figure import Figure
from qkdn_sdk.bench._km import km_figures
from qkdn_sdk.bench._round_trips import round_trip_figures

__all__ = ["DEFAULT_TRANSPORTS", "FIGURE_NAMES", "Figure", "run_bench"]

FIGURE_NAMES = (
    "codec_1_key",
    "codec_100_keys",
    "codec_max_frame",
    "ak_round_trip",
    "ak_round_trip_pipelined",
    "ak_keys_delivered",
    "relay_latency",
    "relay_latency_by_size",
    "kq1_ingest",
    "key_store",
)

DEFAULT_TRANSPORTS = ("tcp", "tcp+tls", "https", "grpcs")
"""The transports measured when none are named (those installed)."""


async def run_bench(
    transports: Sequence[str],
    *,
    quick: bool,
    report: Callable[[Figure], None],
    progress: Callable[[str], None] = lambda _step: None,
) -> list[Figure]:
    """Measure every figure (the round trips for each of ``transports``), calling ``report``
    with each as it is measured and ``progress`` with what is measured next; return them all.

    ``quick``: about half a second per measurement and fewer requests (under 2 minutes in
    all on 2 cores), instead of two seconds.
    """
    seconds = 0.5 if quick else 2.0
    figures: list[Figure] = []

    def reported(new: list[Figure]) -> None:
        for figure in new:
            report(figure)
        figures.extend(new)

    progress("codec")
    reported(codec_figures(seconds / 2))
    with tempfile.TemporaryDirectory(prefix="qkdn-bench-") as directory:
        for scheme in transports:
            progress(f"round trips over {scheme}://")
            reported(await round_trip_figures(scheme, Path(directory) / "pki", seconds))
        await km_figures(
            Path(directory), quick=quick, seconds=seconds, report=reported, progress=progress
        )
    return figures
