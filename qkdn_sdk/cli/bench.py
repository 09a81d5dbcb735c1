"""``qkdn bench``: measure the SDK beside the bare transports (:mod:`qkdn_sdk.bench`), print
each figure as it is measured, and write them all as JSON with ``--json``.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from qkdn_sdk.bench import DEFAULT_TRANSPORTS, Figure, run_bench
from qkdn_sdk.cli._common import _not_one_of, _run, fail
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.transport import transport_registry

__all__ = ["bench"]


def bench(
    transports: Annotated[
        list[str] | None,
        typer.Option(
            "--transport",
            metavar="SCHEME",
            help="A scheme whose round trips to measure (repeat for several); default: "
            + ", ".join(DEFAULT_TRANSPORTS)
            + " (those installed).",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Half a second per measurement and fewer relays (under 2 minutes)."
        ),
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help='Also write {"figures": [{name, transport, value, unit, baseline, ratio, '
            "...}]} to this file.",
        ),
    ] = None,
) -> None:
    """Measure the SDK beside the bare transports, in one run: the codec, round trips per
    transport, keys a KM delivers, relay latency over 1 to 8 hops, QKD-key ingest and the key
    store. Each figure's baseline is the bare stack doing the same work; ratio = SDK / bare."""
    registry = transport_registry()
    installed = {scheme for entry in registry.entries() for scheme in type(entry.transport).schemes}
    if transports is None:
        transports = [scheme for scheme in DEFAULT_TRANSPORTS if scheme in installed]
    for scheme in transports:
        if scheme not in installed:
            fail(f"--transport: {_not_one_of(scheme, 'an installed transport', sorted(installed))}")
    if json_path is not None:  # said now, not after minutes of measuring
        directory = json_path.parent
        if json_path.is_dir():
            fail(f"--json {json_path}: it is a directory")
        if not directory.is_dir():
            fail(f"--json {json_path}: no directory {directory}")
        if not os.access(directory, os.W_OK):
            fail(f"--json {json_path}: cannot write in {directory}")
    console = Console(stderr=True)
    typer.echo(f"{'figure':<24} {'transport':<9} {'SDK':>22} {'bare':>10} {'ratio':>6}  case")

    def report(figure: Figure) -> None:
        baseline = "" if figure.baseline is None else _figure(figure.baseline)
        ratio = "" if figure.ratio is None else f"{figure.ratio:.2f}"
        value = f"{_figure(figure.value)} {figure.unit}"
        latency = ""
        if figure.p50 is not None and figure.p99 is not None:
            latency = f" (p50 {figure.p50:.3g} ms, p99 {figure.p99:.3g} ms)"
        typer.echo(
            f"{figure.name:<24} {figure.transport or '':<9} {value:>22} {baseline:>10} {ratio:>6}"
            f"  {figure.case or ''}{latency}"
        )

    started = time.perf_counter()

    def progress(step: str) -> None:
        elapsed = time.perf_counter() - started
        console.print(f"[dim]{elapsed:4.0f} s: measuring {step}...[/dim]", highlight=False)

    try:
        figures = _run(
            partial(run_bench, transports, quick=quick, report=report, progress=progress)
        )
    except QkdnError as exc:
        fail(str(exc))
    console.print(f"[dim]{len(figures)} figures in {time.perf_counter() - started:.0f} s[/dim]")
    if json_path is not None:
        document = {"figures": [figure.to_json() for figure in figures]}
        try:
            json_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as exc:
            fail(f"--json {json_path}: cannot write it ({exc.strerror or exc})")


def _figure(value: float) -> str:
    """A measured value to three significant digits, thousands separated (``12,345``)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
