"""``qkdn conformance km|controller``: the conformance suite (:mod:`qkdn_sdk.conformance`) against
a running role, ours or another vendor's.

The suite presents the identities it is given, in order (``--cert``/``--key`` pairs over TLS,
``--identity`` on schemes without certificates): for a controller, KMs of its network along a
route, source first and destination last; for a KM, two applications it serves (source, then
destination) and, for the Ck procedures, its controller. It prints one row per procedure
(pass, fail with the first wrong message quoted, or skip with the reason), or ``--json``; the
exit status is 1 when a procedure failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qkdn_sdk.cli._common import _CA, _positive_seconds, _print_json, _run, _tls_settings, fail
from qkdn_sdk.conformance import (
    DEFAULT_TIMEOUT,
    ControllerTarget,
    Identity,
    KMTarget,
    Result,
    run_suite,
)
from qkdn_sdk.errors import QkdnError

__all__ = ["conformance_app", "conformance_controller", "conformance_km"]

conformance_app = typer.Typer(
    help="Play the literal peers of the standards against a running KM or QKDN controller.",
    no_args_is_help=True,
)

_CERTS = Annotated[
    list[Path] | None,
    typer.Option("--cert", help="A certificate (PEM) the suite presents; repeat, in order."),
]
_KEYS = Annotated[
    list[Path] | None,
    typer.Option("--key", help="The private key (PEM) of the --cert at the same place."),
]
_IDENTITIES = Annotated[
    list[str] | None,
    typer.Option("--identity", help="An ID the suite claims where no certificate gives it."),
]
_JSON = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]
_TIMEOUT = Annotated[
    float,
    typer.Option("--timeout", help="Seconds one procedure may take.", callback=_positive_seconds),
]
_OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "skip": "yellow"}


def _identities(
    url: str,
    ca: Path | None,
    certs: list[Path] | None,
    keys: list[Path] | None,
    claimed: list[str] | None,
) -> list[Identity]:
    """The identities given for ``url``, in order, their files checked; ends the command with
    one line when they do not fit the URL's scheme."""
    certs, keys, claimed = certs or [], keys or [], claimed or []
    if claimed:
        _tls_settings(url, ca, None, None, None, server=False)  # refuses TLS files on tcp://
        if certs or keys:
            fail("give identities with --cert and --key, or with --identity, not both")
        return [Identity(identity) for identity in claimed]
    if len(certs) != len(keys):
        fail(f"every --cert needs its --key: {len(certs)} --cert, {len(keys)} --key")
    if not certs:
        tls = _tls_settings(url, ca, None, None, None, server=False)
        assert tls is None  # a TLS scheme ends the command above: it needs --cert and --key
        fail("give the identities the suite presents: --cert and --key, or --identity")
    identities = []
    for cert, key in zip(certs, keys, strict=True):
        tls = _tls_settings(url, ca, cert, key, None, server=False)
        if tls is None:
            fail("give --identity, not --cert and --key, for a scheme without TLS")
        try:
            identities.append(Identity.of(tls))
        except QkdnError as exc:
            fail(f"--cert {cert}: {exc}")
    return identities


def _report(kind: str, url: str, results: list[Result], as_json: bool) -> None:
    """Print ``results``; end with exit status 1 when one failed."""
    failed = any(result.outcome == "fail" for result in results)
    if as_json:
        _print_json(
            {
                "target": kind,
                "url": url,
                "passed": not failed,
                "results": [result.as_json() for result in results],
            }
        )
    else:
        table = Table(title=f"conformance of the {kind} at {url}")
        for column in ("procedure", "clause", "figure", "result", "first wrong message / why"):
            table.add_column(column, overflow="fold")
        for result in results:
            style = _OUTCOME_STYLE[result.outcome]
            table.add_row(
                result.name,
                result.clause,
                result.figure,
                f"[{style}]{result.outcome}[/{style}]",
                result.detail,
            )
        Console().print(table)
    if failed:
        raise typer.Exit(1)


def _results(target: ControllerTarget | KMTarget) -> list[Result]:
    async def main() -> list[Result]:
        return await run_suite(target)

    try:
        return _run(main)
    except QkdnError as exc:
        fail(str(exc))


@conformance_app.command("controller")
def conformance_controller(
    url: Annotated[str, typer.Argument(help="The controller's Ck URL.")],
    ca: _CA = None,
    cert: _CERTS = None,
    key: _KEYS = None,
    identity: _IDENTITIES = None,
    application: Annotated[
        str | None,
        typer.Option(help="An application the last KM serves (for the procedures naming one)."),
    ] = None,
    timeout: _TIMEOUT = DEFAULT_TIMEOUT,
    as_json: _JSON = False,
) -> None:
    """Play KMs against the QKDN controller at URL (Q.4164). Give the identities of KMs of its
    network along a route: the source KM first, the destination KM last, and the KMs between to
    follow next hops through them (without, the next hop procedure is skipped)."""
    identities = _identities(url, ca, cert, key, identity)
    if len(identities) < 2:
        fail("a controller is tested as two KMs at least: give the source and destination KMs")
    target = ControllerTarget(url, identities, application=application, timeout=timeout)
    _report("controller", url, _results(target), as_json)


@conformance_app.command("km")
def conformance_km(
    url: Annotated[str, typer.Argument(help="The KM's Ak URL.")],
    ck: Annotated[
        str | None, typer.Option("--ck", help="The KM's Ck URL (for the Ck procedures).")
    ] = None,
    ca: _CA = None,
    cert: _CERTS = None,
    key: _KEYS = None,
    identity: _IDENTITIES = None,
    peer_km: Annotated[
        str | None, typer.Option(help="A neighbouring KM, towards which key is reserved.")
    ] = None,
    timeout: _TIMEOUT = DEFAULT_TIMEOUT,
    as_json: _JSON = False,
) -> None:
    """Play applications (Q.4161) and the QKDN controller (Q.4164) against the KM at URL. Give
    the identities of two applications it serves (the source, then the destination) and, with
    --ck, of its controller third."""
    identities = _identities(url, ca, cert, key, identity)
    if len(identities) not in (2, 3):
        fail(
            f"a KM is tested as two of its applications and, with --ck, its controller: "
            f"give 2 or 3 identities, not {len(identities)}"
        )
    controller = identities[2] if len(identities) == 3 else None
    if (ck is None) != (controller is None):
        fail("the Ck procedures need both --ck and a third identity, the KM's controller")
    target = KMTarget(
        url,
        identities[:2],
        ck_url=ck,
        controller=controller,
        peer_km=peer_km,
        timeout=timeout,
    )
    _report("KM", url, _results(target), as_json)
