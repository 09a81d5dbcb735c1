"""``qkdn conformance km|controller|qkd-module``: the conformance suite
(:mod:`qkdn_sdk.conformance`) against a running role, ours or another vendor's.

The suite presents the identities it is given, in order (``--cert``/``--key`` pairs over TLS,
``--identity`` on schemes without certificates): for a controller, KMs of its network along a
route, source first and destination last; for a KM, two applications it serves (source, then
destination) and then, for the procedures of each interface given, its controller (``--ck``),
a neighbour (``--kx``) and its QKD module (``--kq1``); for a QKD module, its KM. It prints
one row per procedure (pass, fail with the first wrong message quoted, or skip with the
reason), or ``--json``; the exit status is 1 when a procedure failed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qkdn_sdk.cli._common import _CA, _positive_seconds, _print_json, _run, _tls_settings, fail
from qkdn_sdk.conformance import (
    DEFAULT_COMMUNITY,
    DEFAULT_HASH_ALGORITHM,
    DEFAULT_TIMEOUT,
    ControllerTarget,
    Identity,
    KMTarget,
    QKDModuleTarget,
    Result,
    run_suite,
)
from qkdn_sdk.errors import QkdnError

__all__ = [
    "conformance_app",
    "conformance_controller",
    "conformance_km",
    "conformance_qkd_module",
]

conformance_app = typer.Typer(
    help=(
        "Play the literal peers of the standards against a running KM, QKDN controller or QKD "
        "module."
    ),
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


def _known_hash(name: str) -> str:
    if name not in hashlib.algorithms_available:
        raise typer.BadParameter(f"{name} is no hash algorithm of this Python (hashlib)")
    return name


_HASH = Annotated[
    str,
    typer.Option(
        "--hash-algorithm",
        help="The algorithm of the QKD module's Hash values (Q.4162 Table 1 fixes none).",
        callback=_known_hash,
    ),
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


def _results(target: ControllerTarget | KMTarget | QKDModuleTarget) -> list[Result]:
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
    kx: Annotated[
        str | None,
        typer.Option("--kx", help="The KM's KM link URL (for the D2.3 HELLO, SESSION, UPDATE)."),
    ] = None,
    kq1: Annotated[
        str | None, typer.Option("--kq1", help="The KM's Kq-1 URL (for the Q.4162 procedures).")
    ] = None,
    ca: _CA = None,
    cert: _CERTS = None,
    key: _KEYS = None,
    identity: _IDENTITIES = None,
    peer_km: Annotated[
        str | None, typer.Option(help="A neighbouring KM, towards which key is reserved.")
    ] = None,
    community: Annotated[
        str, typer.Option(help="The KM's community (D2.3 Table 7-8 Community ID).")
    ] = DEFAULT_COMMUNITY,
    hash_algorithm: _HASH = DEFAULT_HASH_ALGORITHM,
    timeout: _TIMEOUT = DEFAULT_TIMEOUT,
    as_json: _JSON = False,
) -> None:
    """Play applications (Q.4161), the QKDN controller (Q.4164), a neighbouring KM (D2.3) and
    a QKD module (Q.4162) against the KM at URL. Give the identities of two applications it
    serves (the source, then the destination) and then, in this order, of its controller with
    --ck, of a neighbour with --kx and of its QKD module with --kq1."""
    interfaces = {"--ck": ck, "--kx": kx, "--kq1": kq1}
    given = [name for name, value in interfaces.items() if value is not None]
    identities = _identities(url, ca, cert, key, identity)
    if len(identities) != 2 + len(given):
        fail(
            f"a KM is tested as two of its applications and one peer for each of "
            f"{', '.join(interfaces)} given: give {2 + len(given)} identities, not "
            f"{len(identities)}"
        )
    peers = dict(zip(given, identities[2:], strict=True))
    target = KMTarget(
        url,
        identities[:2],
        ck_url=ck,
        controller=peers.get("--ck"),
        peer_km=peer_km,
        kx_url=kx,
        neighbour=peers.get("--kx"),
        kq1_url=kq1,
        module=peers.get("--kq1"),
        community=community,
        hash_algorithm=hash_algorithm,
        timeout=timeout,
    )
    _report("KM", url, _results(target), as_json)


@conformance_app.command("qkd-module")
def conformance_qkd_module(
    url: Annotated[
        str | None,
        typer.Argument(help="The URL of a QKD module that supplies keys upon request."),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            help="A URL to serve as the module's KM, for a module that supplies keys "
            "proactively (configured to connect there)."
        ),
    ] = None,
    ca: _CA = None,
    cert: _CERTS = None,
    key: _KEYS = None,
    identity: _IDENTITIES = None,
    hash_algorithm: _HASH = DEFAULT_HASH_ALGORITHM,
    timeout: _TIMEOUT = DEFAULT_TIMEOUT,
    as_json: _JSON = False,
) -> None:
    """Play the KM (Q.4162) against a QKD module: ask it for keys at URL (key supply upon
    request), or serve --listen and take the keys it pushes there (proactive key supply). Give
    the identity of its KM."""
    where = url or listen
    if where is None:
        fail("give the module's URL, or --listen for a module that connects to its KM")
    identities = _identities(where, ca, cert, key, identity)
    if len(identities) != 1:
        fail(f"a QKD module is tested as its KM: give 1 identity, not {len(identities)}")
    target = QKDModuleTarget(
        url, identities[0], listen=listen, hash_algorithm=hash_algorithm, timeout=timeout
    )
    _report("QKD module", where, _results(target), as_json)
