"""``qkdn keys get`` and ``qkdn keys fetch``: keys from a running QKD network, as one of its
applications.

Both act as the application ``APP`` of a network that ``qkdn network up`` runs: its KM, the URL
of the KM's Ak interface, and the CA, certificate and key the application presents all come
from ``endpoints.json`` (:func:`application_endpoint`; its paths are relative to the file's
directory). ``get`` asks for new keys shared with a peer (Q.4161 Table 1), ``fetch`` asks for
the keys a peer got, by their IDs (Table 2); both print the keys of the response (Table 3).
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any

import attrs
import orjson
import typer

from qkdn_sdk.cli._common import _and, _choice, _print_json, _run, fail
from qkdn_sdk.client import KeyManagerClient, SuppliedKey
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.network import ENDPOINTS_FILE
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import transport_registry

__all__ = ["ApplicationEndpoint", "KeyFormat", "application_endpoint", "keys_app"]

keys_app = typer.Typer(
    help="Get keys from a running QKD network ('qkdn network up') as one of its applications.",
    no_args_is_help=True,
)

_PREFERRED_SCHEME = "tcp+tls"
"""The Ak scheme used when a KM serves several: Q.4161 Appendix I frames over mutual TLS."""


class KeyFormat(enum.Enum):
    """How ``qkdn keys`` prints keys."""

    HEX = "hex"
    BASE64 = "base64"
    JSON = "json"


@attrs.frozen
class ApplicationEndpoint:
    """What an application needs to reach its KM: the KM, the URL of its Ak interface, and
    the TLS files to present (``None``: a scheme without TLS, where ``app_id`` is told)."""

    app_id: str
    km_id: str
    url: str
    tls: TLSConfig | None


def application_endpoint(path: Path, app_id: str) -> ApplicationEndpoint:
    """Where application ``app_id`` of the network whose ``endpoints.json`` is ``path`` gets
    its keys: its KM's Ak URL for ``tcp+tls`` when the KM serves it, else for the first scheme
    it serves that an installed transport speaks; the TLS files' paths taken relative to
    ``path``'s directory.

    Raises :class:`~qkdn_sdk.errors.QkdnError` (one sentence naming ``path``) when the file is
    missing or not an endpoints file, or has no application ``app_id``."""
    try:
        endpoints = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise QkdnError(
            f"no endpoints file {path}: 'qkdn network up TOPOLOGY --state-dir DIR' writes "
            f"DIR/{ENDPOINTS_FILE} once the network serves"
        ) from None
    except OSError as exc:
        raise QkdnError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise QkdnError(f"{path} is not an endpoints file: not JSON ({exc})") from None
    here = path.parent
    try:
        apps: dict[str, Any] = endpoints["apps"]
        kms: dict[str, Any] = endpoints["kms"]
        if app_id not in apps:
            known = _and(sorted(apps)) if apps else "none"
            raise QkdnError(f"no application {app_id!r} in {path} (its applications: {known})")
        app = apps[app_id]
        km_id: str = app["km"]
        urls: dict[str, str] = kms[km_id]["ak"]
        ca = endpoints["ca"]
        tls = None if ca is None else TLSConfig(here / ca, here / app["cert"], here / app["key"])
    except KeyError as exc:
        raise QkdnError(f"{path} is not an endpoints file: no {exc} where expected") from None
    except TypeError:  # a list or a string where an object or a path belongs
        raise QkdnError(
            f"{path} is not an endpoints file: not laid out as 'qkdn network up' writes it"
        ) from None
    installed = {
        scheme
        for entry in transport_registry().entries()
        for scheme in type(entry.transport).schemes
    }
    schemes = [_PREFERRED_SCHEME, *urls] if _PREFERRED_SCHEME in urls else list(urls)
    usable = [scheme for scheme in schemes if scheme in installed]
    if not usable:
        raise QkdnError(
            f"{km_id} serves Ak over {_and(urls) if urls else 'nothing'} ({path}), "
            "and no installed transport speaks it (see 'qkdn transports')"
        )
    return ApplicationEndpoint(app_id=app_id, km_id=km_id, url=urls[usable[0]], tls=tls)


_App = Annotated[str, typer.Argument(metavar="APP", help="The application to act as.")]
_Size = Annotated[
    int | None,
    typer.Option("--size", min=1, metavar="BITS", help="Bits per key (default: the KM's)."),
]
_StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        metavar="DIR",
        help="The network's state directory ('qkdn network up --state-dir'): "
        f"DIR/{ENDPOINTS_FILE}.",
    ),
]
_Endpoints = Annotated[
    Path | None,
    typer.Option("--endpoints", metavar="FILE", help=f"The network's {ENDPOINTS_FILE}."),
]
_Format = Annotated[
    KeyFormat,
    typer.Option(
        "--format",
        parser=_choice(KeyFormat, "a key format"),
        help="Each key as KEY_ID KEY, the key in hex or base64, or all as JSON: "
        '[{"key_id": ..., "key": BASE64}], as in Q.4161 Table 3.',
    ),
]


@keys_app.command("get")
def keys_get(
    app: _App,
    peer: Annotated[
        str,
        typer.Option("--to", metavar="PEER", help="The application to share the keys with."),
    ],
    number: Annotated[int, typer.Option("--number", "-n", min=1, help="Keys to get.")] = 1,
    size: _Size = None,
    state_dir: _StateDir = None,
    endpoints: _Endpoints = None,
    key_format: _Format = KeyFormat.HEX,
) -> None:
    """Get NUMBER new keys shared with PEER from APP's KM (Q.4161 Table 1) and print them, one
    KEY_ID KEY a line. PEER gets the same keys with 'qkdn keys fetch PEER --from APP KEY_ID...'."""
    where = _endpoint(app, state_dir, endpoints)

    async def get() -> list[SuppliedKey]:
        async with _client(where) as km:
            return await km.get_keys(peer, number, size)

    _print_keys(_keys_of(where, get), key_format)


@keys_app.command("fetch")
def keys_fetch(
    app: _App,
    peer: Annotated[
        str,
        typer.Option("--from", metavar="PEER", help="The application that got the keys."),
    ],
    key_ids: Annotated[
        list[str], typer.Argument(metavar="KEY_ID...", help="The IDs PEER got the keys with.")
    ],
    state_dir: _StateDir = None,
    endpoints: _Endpoints = None,
    key_format: _Format = KeyFormat.HEX,
) -> None:
    """Fetch from APP's KM the keys PEER got for APP, by their IDs (Q.4161 Table 2), and print
    them, one KEY_ID KEY a line."""
    where = _endpoint(app, state_dir, endpoints)

    async def fetch() -> list[SuppliedKey]:
        async with _client(where) as km:
            return await km.get_keys_with_ids(peer, key_ids)

    _print_keys(_keys_of(where, fetch), key_format)


def _endpoint(app: str, state_dir: Path | None, endpoints: Path | None) -> ApplicationEndpoint:
    try:
        return application_endpoint(_endpoints_file(state_dir, endpoints), app)
    except QkdnError as exc:
        fail(str(exc))


def _endpoints_file(state_dir: Path | None, endpoints: Path | None) -> Path:
    if state_dir is not None and endpoints is not None:
        raise typer.BadParameter(
            f"give --state-dir or --endpoints, not both (--state-dir means DIR/{ENDPOINTS_FILE})",
            param_hint="--endpoints",
        )
    if endpoints is not None:
        return endpoints
    if state_dir is not None:
        return state_dir / ENDPOINTS_FILE
    raise typer.BadParameter(
        "say which network: --state-dir DIR (of 'qkdn network up') or --endpoints FILE",
        param_hint="--state-dir",
    )


def _client(where: ApplicationEndpoint) -> AbstractAsyncContextManager[KeyManagerClient]:
    # Over TLS the certificate names us; without TLS the KM takes our word (identity).
    identity = where.app_id if where.tls is None else None
    return KeyManagerClient.connect(where.url, tls=where.tls, identity=identity)


def _keys_of(
    where: ApplicationEndpoint, ask: Callable[[], Awaitable[list[SuppliedKey]]]
) -> list[SuppliedKey]:
    """The keys ``ask`` gets; a refusal or an unreachable KM ends the command in one line."""
    try:
        return _run(ask)
    except QkdnError as exc:
        fail(f"{where.km_id} at {where.url}: {exc}")


def _print_keys(keys: list[SuppliedKey], key_format: KeyFormat) -> None:
    if key_format is KeyFormat.JSON:
        _print_json([{"key_id": k.key_id, "key": base64.b64encode(k.key).decode()} for k in keys])
        return
    for key in keys:
        text = key.key.hex() if key_format is KeyFormat.HEX else base64.b64encode(key.key).decode()
        typer.echo(f"{key.key_id} {text}")
