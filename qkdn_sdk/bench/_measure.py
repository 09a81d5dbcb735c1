"""How the benchmarks measure: calls in tasks for a while, their latencies, and the process's
resident memory."""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

__all__ = ["Call", "Sample", "measure", "resident_bytes", "resident_bytes_of", "time_per_call"]

Call = Callable[[], Awaitable[object]]


@attrs.frozen
class Sample:
    """What :func:`measure` saw: calls per second over all tasks, and the latency quantiles of
    one call in seconds."""

    rate: float
    p50: float
    p99: float
    count: int


def _quantiles(latencies: list[float]) -> tuple[float, float]:
    if len(latencies) < 2:
        only = latencies[0] if latencies else 0.0
        return only, only
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def measure(
    calls: Sequence[Call],
    seconds: float,
    *,
    warm_up: float = 0.1,
    minimum: int = 5,
    maximum: int | None = None,
) -> Sample:
    """Run each of ``calls`` in a task of its own, over and over, for ``seconds`` (after
    ``warm_up`` seconds not counted; every task makes at least ``minimum`` counted calls).
    Tasks given the same call share what it uses (requests in flight together on one
    connection).
    ``maximum``: the most calls of all tasks, warm-up included (when what they take runs
    out)."""
    made = 0

    async def loop(call: Call, until: float, latencies: list[float] | None) -> None:
        nonlocal made
        done = 0
        least = 0 if latencies is None else minimum
        while (done < least or time.perf_counter() < until) and (maximum is None or made < maximum):
            made += 1
            started = time.perf_counter()
            await call()
            if latencies is not None:
                latencies.append(time.perf_counter() - started)
            done += 1

    async with trio.open_nursery() as nursery:
        until = time.perf_counter() + warm_up
        for call in calls:
            nursery.start_soon(loop, call, until, None)
    latencies: list[float] = []
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(loop, call, started + seconds, latencies)
    elapsed = time.perf_counter() - started
    p50, p99 = _quantiles(latencies)
    return Sample(rate=len(latencies) / elapsed, p50=p50, p99=p99, count=len(latencies))


def time_per_call(call: Callable[[], object], seconds: float) -> float:
    """Seconds one call of ``call`` takes: the best of several rounds of many calls (the best
    round is the one least disturbed by everything else the machine does)."""
    number = 1
    while True:  # enough calls for a round of about 10 ms
        started = time.perf_counter()
        for _ in range(number):
            call()
        took = time.perf_counter() - started
        if took > 0.01:
            break
        number *= 4
    best = took / number
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        started = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def resident_bytes() -> int:
    """This process's resident memory now (Linux), else its peak."""
    now = resident_bytes_of("self")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if now is None else now


def resident_bytes_of(pid: int | str) -> int | None:
    """The resident memory now of process ``pid`` (Linux: ``None`` elsewhere)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None
