"""What the benchmarks share: timing calls one after another, and printing the figures."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

__all__ = ["figures", "timed"]


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Seconds each of ``count`` calls took, one after another."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return latencies


def figures(name: str, latencies: list[float], unit: str | None = None) -> None:
    """Print p50 and p99 of ``latencies`` (and, with ``unit``, how many per second)."""
    ordered = sorted(latencies)
    p99 = ordered[int(0.99 * len(ordered)) - 1]
    rate = f", {len(ordered) / sum(ordered):.0f} {unit}/s" if unit else ""
    print(
        f"{name}: p50 {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms{rate}",
        flush=True,
    )
