"""``qkdn network show`` and ``qkdn network status``: a network drawn, from its topology file or
live from its state directory, and its key levels, rates and failures read from the roles'
metrics (:mod:`qkdn_sdk.network.status`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from qkdn_sdk.cli._common import _choice, _run, fail
from qkdn_sdk.cli.network import _topology
from qkdn_sdk.network import ENDPOINTS_FILE, status
from qkdn_sdk.network.picture import Format, live_picture, picture_of, render

__all__ = ["network_show", "network_status_command"]


def _endpoints(state_dir: Path) -> dict[str, Any]:
    """``STATE_DIR/endpoints.json``, or the command ends in one line saying why not."""
    path = state_dir / ENDPOINTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"{path} does not exist: is a network running there ('qkdn network up')?")
    except (OSError, ValueError) as exc:
        fail(f"{path}: cannot read it ({exc})")
    if not isinstance(data, dict):
        fail(f"{path}: not the endpoints of a network")
    return data


def _metrics_urls(state_dir: Path, endpoints: dict[str, Any]) -> dict[str, str]:
    urls = endpoints.get("metrics")
    if not urls:
        fail(
            f"the network in {state_dir} serves no metrics: start it with "
            "'qkdn network up' (without --no-metrics)"
        )
    return dict(urls)


def _applications(endpoints: dict[str, Any]) -> dict[str, str]:
    return {app: info["km"] for app, info in endpoints.get("apps", {}).items()}


_STATE_DIR = Annotated[
    Path,
    typer.Argument(
        metavar="STATE_DIR",
        help="The state directory of a running network (its endpoints.json).",
    ),
]


def network_status_command(
    state_dir: _STATE_DIR = Path(),
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep the view on screen, refreshed every second.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show a running network from its roles' metrics: each link end's key level (bar), its
    key generation and consumption rates and whether it is up; each KM's applications, keys
    held, relays and failed requests; QKD modules that dropped keys; roles not answering."""
    endpoints = _endpoints(state_dir)
    urls = _metrics_urls(state_dir, endpoints)
    applications = _applications(endpoints)
    if as_json and watch:
        raise typer.BadParameter("--json prints one status; leave out --watch", param_hint="--json")

    async def once() -> status.NetworkStatus:
        return await status.status_now(urls, applications)

    async def live() -> None:
        await status.watch(urls, applications, Console())

    if watch:
        _run(live)
        return
    found = _run(once)
    if as_json:
        typer.echo(json.dumps(found.as_json(), indent=2))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:  # a file or a pipe: the tables whole, not cut at 80
            console.width = 120
        console.print(status.render_status(found))


def network_show(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="TOPOLOGY|STATE_DIR",
            help="A topology file, or the state directory of a running network (its key "
            "levels are drawn).",
        ),
    ],
    form: Annotated[
        Format,
        typer.Option(
            "--format",
            parser=_choice(Format, "a format"),
            help="What to draw (Mermaid: GitHub draws it).",
        ),
    ] = Format.TEXT,
) -> None:
    """Draw a network: its controller, KMs, QKD links and applications, as text, a Mermaid
    flowchart or an SVG image, on stdout. From a topology file each link is labelled with its
    secret key rate and mode; from a running network's state directory, with the link key both
    of its ends hold now."""
    if not source.is_dir():
        typer.echo(render(picture_of(_topology(source)), form.value), nl=False)
        return
    endpoints = _endpoints(source)
    urls = _metrics_urls(source, endpoints)

    async def levels() -> status.NetworkStatus:
        return status.network_status(await status.scrape(urls), {})

    found = _run(levels)
    if found.unreachable:
        role, reason = sorted(found.unreachable.items())[0]
        fail(f"{role}: {reason}")
    picture = live_picture(
        endpoints["controller"]["id"],
        list(endpoints["kms"]),
        _applications(endpoints),
        {(end.km, end.neighbour): end.send_bits for end in found.links},
    )
    typer.echo(render(picture, form.value), nl=False)
