"""The ``qkdn`` command line. Commands are thin: they parse, delegate, and print.

Every mistake a user can make ends as one line on stderr, never a traceback:

- usage errors (an unknown option, a missing argument, ``--timeout -1``): ``qkdn: ...`` and exit
  status 2, as every click program;
- everything else (a bad frame, a busy port, a missing TLS file, a refused connection, a failure
  response): ``qkdn: ...`` and exit status 1;
- Ctrl-C: nothing (a newline on a terminal) and exit status 130.

trio wraps the errors of a nursery in exception groups; :func:`_run` takes the one error out, so
the commands catch :class:`~qkdn_sdk.errors.QkdnError` as if there were no groups. Options are
checked here before anything is started, so errors speak of ``--ca``, ``--cert`` and ``--key``
rather than of Python objects.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import hashlib
import logging
import math
import os
import signal
import string
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import attrs
import orjson
import trio
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from qkdn_sdk.bench import DEFAULT_TRANSPORTS, Figure, run_bench
from qkdn_sdk.catalogue import (
    SELECTIONS,
    catalogue,
    hex_code,
    qualified_name,
    render_reference,
    select,
)
from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.codecs.frame import MAX_FRAME_SIZE, MAX_PAYLOAD_SIZE, FrameDecoder, decode_message
from qkdn_sdk.codecs.payload import encode_payload, message_from_dict, message_to_dict
from qkdn_sdk.errors import FailureResponse, QkdnError, TransportError
from qkdn_sdk.messages import Key, Message, ak, all_messages, example, kq1, message_class
from qkdn_sdk.network import (
    ENDPOINTS_FILE,
    ApplicationSpec,
    Network,
    Topology,
    TopologyError,
    load_topology,
    parse_topology,
)
from qkdn_sdk.network.deployment import ROLES, load_role_config, write_role_configs
from qkdn_sdk.pki import write_dev_pki
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.km import KMConfig, Routing
from qkdn_sdk.tls import TLSConfig, TLSConfigError
from qkdn_sdk.transport import Connection, ServerInfo, Transport, connect, serve, transport_registry

__all__ = ["app", "main"]

app = typer.Typer(
    name="qkdn",
    help="Messages, transports and roles of the ITU-T QKD network protocols (Ak, Kq-1, Ck).",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _show_help_without_command(context: typer.Context) -> None:
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())


def fail(message: str) -> NoReturn:
    """End the command with one line on stderr and exit status 1."""
    typer.echo(f"qkdn: {message}", err=True)
    raise typer.Exit(1)


def _print_json(value: object) -> None:
    sys.stdout.write(_json(value, indent=True) + "\n")


def _json(value: object, *, indent: bool = False) -> str:
    """``value`` as JSON text."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode()


def _interrupted() -> NoReturn:
    """End the command after Ctrl-C: quietly, with the status a shell gives SIGINT (128 + 2)."""
    if sys.stderr.isatty():
        sys.stderr.write("\n")  # the shell prompt starts on a line of its own, not after ^C
    raise typer.Exit(130)


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


_T = TypeVar("_T")


def _run(function: Callable[[], Awaitable[_T]]) -> _T:
    """``trio.run(function)``, with the error that ended it taken out of trio's exception groups.

    Ctrl-C (a :class:`KeyboardInterrupt`, alone or anywhere in a group) ends the command through
    :func:`_interrupted`. A group holding only :class:`~qkdn_sdk.errors.QkdnError` is raised as
    its first one, so callers catch ``QkdnError`` (or a subclass) as usual. Any other exception
    is a bug and is raised as it is: its traceback is for whoever fixes it.
    """
    try:
        return trio.run(function)
    except KeyboardInterrupt:
        _interrupted()
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            _interrupted()
        if all(isinstance(leaf, QkdnError) for leaf in leaves):
            raise leaves[0] from None
        raise


@app.command()
def messages(
    interface: Annotated[
        str | None,
        typer.Option(
            "--interface",
            "-i",
            help=f"Only this interface ({', '.join(SELECTIONS[:-1])}) or 'ext' for the SDK "
            "extensions.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a JSON array of {interface, code, name, class, table, extension, sender, "
            "receiver, response_code, fields: [{name, json_name, mandatory}]}; codes are hex "
            'strings such as "0x2101".',
        ),
    ] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the Markdown message reference (docs).")
    ] = False,
) -> None:
    """List the message catalogue: command code, direction, spec name and table."""
    if markdown:
        sys.stdout.write(render_reference())
        return
    try:
        classes = select(interface)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        _print_json(catalogue(interface))
        return
    for cls in classes:
        response = cls.response_type()
        answer = f" -> {hex_code(response.code)}" if response else ""
        extension = " (extension)" if cls.is_extension else ""
        typer.echo(
            f"{hex_code(cls.code)}  {cls.interface.value:<4} {cls.sender.value:>11} -> "
            f"{cls.receiver.value:<11} {cls.spec_name}{extension} [{cls.table}]{answer}"
        )


@app.command()
def decode(
    frame_hex: Annotated[
        list[str],
        typer.Argument(
            metavar="HEX",
            help="Frame bytes in hex (spaces, colons and a 0x prefix allowed); several frames "
            "may follow each other.",
        ),
    ],
) -> None:
    """Decode TCP frames (Q.416x Appendix I): print each header and message, or say precisely
    why the bytes are not a valid frame."""
    cleaned = "".join(part.removeprefix("0x") for part in frame_hex).replace(":", "")
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        fail("not hexadecimal: expected pairs of hex digits such as 0001 0000002a 2101 ...")
    # Every byte is already in memory: the decoder may hold them all (its bound is for streams).
    decoder = FrameDecoder(max_buffer_size=max(len(data), MAX_FRAME_SIZE))
    decoder_count = 0
    try:
        decoder.receive_data(data)
        while (frame := decoder.next_frame()) is not None:
            decoder_count += 1
            try:
                name = message_class(frame.command_code).spec_name
            except KeyError:
                name = "unknown"
            typer.echo(
                f"frame {decoder_count}: version {frame.version}, message ID {frame.message_id}, "
                f"command code {hex_code(frame.command_code)} ({name}), "
                f"length {len(frame.payload)}"
            )
            message = decode_message(frame)
            _print_json(
                {
                    "message": type(message).__name__,
                    "interface": message.interface.value,
                    "sender": message.sender.value,
                    "receiver": message.receiver.value,
                    "payload": message_to_dict(message),
                }
            )
        decoder.receive_eof()
    except QkdnError as exc:
        fail(f"invalid frame: {exc}")
    if decoder_count == 0:
        fail("no frame: expected at least 10 header bytes")


@app.command()
def transports(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a JSON array of {plugin, distribution, schemes, capabilities} (and "
            "{plugin, distribution, error} for plugins that failed to load).",
        ),
    ] = False,
) -> None:
    """List the installed transport plugins, their schemes and what they carry."""
    registry = transport_registry()
    entries: list[dict[str, Any]] = [
        {
            "plugin": entry.plugin,
            "distribution": entry.distribution,
            "transport": type(entry.transport).__name__,
            "schemes": list(type(entry.transport).schemes),
            "secure_schemes": list(type(entry.transport).secure_schemes),
            "capabilities": entry.transport.capabilities(),
        }
        for entry in registry.entries()
    ]
    failures = [
        {"plugin": failure.plugin, "distribution": failure.distribution, "error": failure.error}
        for failure in registry.failures
    ]
    if as_json:
        _print_json(entries + failures)
        return
    for entry in entries:
        schemes = ", ".join(f"{scheme}://" for scheme in entry["schemes"])
        typer.echo(
            f"{entry['plugin']:<10} {schemes:<24} {entry['capabilities']} "
            f"[{entry['distribution'] or 'not packaged'}]"
        )
    for failure in failures:
        typer.echo(f"{failure['plugin']:<10} FAILED TO LOAD: {failure['error']}")


# --- TLS options shared by send and listen ---------------------------------------------------

_CA = Annotated[
    Path | None, typer.Option("--ca", help="CA certificate (PEM) that verifies the peer.")
]
_CERT = Annotated[Path | None, typer.Option("--cert", help="Our certificate (PEM).")]
_KEY = Annotated[Path | None, typer.Option("--key", help="Our private key (PEM).")]
_IDENTITY = Annotated[
    str | None,
    typer.Option("--identity", help="Our ID where no certificate gives it (memory://)."),
]


_TLS_OPTIONS = ("--ca", "--cert", "--key")
_TLS_FILE_OPTIONS = {"CA": "--ca", "certificate": "--cert", "key": "--key"}


def _and(items: Iterable[str], word: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    listed = list(items)
    return ", ".join(listed[:-1]) + f" {word} " + listed[-1] if len(listed) > 1 else listed[0]


def _transport_of(url: str) -> tuple[str, Transport]:
    """The scheme of ``url`` and the installed transport that serves it; ends the command when
    ``url`` is not a URL or no transport serves its scheme (the error names those installed)."""
    example_url = "e.g. tcp://127.0.0.1:5000"
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError as exc:  # an unclosed [IPv6 address, for one
        fail(f"{url!r} is not a URL ({exc}): expected SCHEME://HOST:PORT, {example_url}")
    # "localhost:5000" parses as scheme "localhost": the "://" is what says a scheme was meant.
    if not scheme or f"{scheme}://" not in url:
        fail(f"{url!r} is not a URL: expected SCHEME://HOST:PORT, {example_url}")
    try:
        return scheme, transport_registry().lookup(scheme)
    except TransportError as exc:
        fail(str(exc))


def _tls_settings(
    url: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    identity: str | None,
    *,
    server: bool,
) -> TLSConfig | None:
    """The TLS settings ``url`` needs, checked before anything starts: a TLS scheme needs
    ``--ca``, ``--cert`` and ``--key`` (mutual authentication: a ``qkdn listen`` server asks the
    client for its certificate), readable and matching; any other scheme takes none of them.
    Ends the command with one line that names the options when they do not fit."""
    scheme, transport = _transport_of(url)
    values = dict(zip(_TLS_OPTIONS, (ca, cert, key), strict=True))
    given = [option for option, value in values.items() if value is not None]
    if scheme not in transport.secure_schemes:
        if given:
            secure = [f"{name}://" for name in transport.secure_schemes]
            instead = f", or use {_and(secure, 'or')} for TLS" if secure else ""
            fail(f"{scheme}:// does not use TLS: leave out {_and(given)}{instead}")
        return None
    missing = [option for option, value in values.items() if value is None]
    if missing:
        fail(f"{scheme}:// needs {_and(_TLS_OPTIONS)} ({_and(missing)} missing)")
    if identity is not None:
        fail(f"--identity is for schemes without certificates: {scheme}:// uses the ID in --cert")
    assert ca is not None  # for mypy: checked just above
    config = TLSConfig(ca=ca, cert=cert, key=key)
    try:  # read the files now, so a bad one is named before a port is bound or a peer called
        config.server_context() if server else config.client_context()
    except TLSConfigError as exc:
        if exc.kind is None or exc.path is None:
            fail(str(exc))
        fail(f"{_TLS_FILE_OPTIONS[exc.kind]} {exc.path}: {exc.problem}")
    return config


def _normal(name: str) -> str:
    return " ".join(name.casefold().split())


def _names(cls: type[Message]) -> tuple[str, str, str]:
    """What a user may call a message: ``ak.KeyRequest``, ``KeyRequest``, ``Key request``."""
    return qualified_name(cls), cls.__name__, cls.spec_name


def _by_code(wanted: str) -> list[type[Message]]:
    """The messages whose command code ``wanted`` may be: ``0x2101``, or bare hex digits ``2101``
    (the specs write every code in hex), and then the decimal reading of the digits too when it
    also names a message (so that ``2101`` is refused as ambiguous rather than guessed)."""
    digits = wanted.removeprefix("0x")
    if not 0 < len(digits) <= 4 or not set(digits) <= set(string.hexdigits):
        return []
    readings = [int(digits, 16)]
    if digits.isdigit() and not wanted.startswith("0x"):
        readings.append(int(digits))
    found = []
    for code in dict.fromkeys(readings):
        with contextlib.suppress(KeyError):
            found.append(message_class(code))
    return found


def _resolve_message(name: str) -> type[Message]:
    """The message class ``name`` means, in any case: a class name (``ak.KeyRequest``, or
    ``KeyRequest`` when one module has it), the spec name (``Key request``) or the command code
    (``0x2101``, ``2101``). Ends the command with one line naming the choices when ``name`` is
    ambiguous, or the closest names when nothing matches."""
    wanted = _normal(name)
    matches = [cls for cls in all_messages() if wanted in {_normal(n) for n in _names(cls)}]
    matches = list(dict.fromkeys(matches + _by_code(wanted)))
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = [f"{qualified_name(cls)} ({hex_code(cls.code)}, {cls.table})" for cls in matches]
        fail(f"{name!r} is ambiguous: say {_and(choices, 'or')}")
    if wanted.startswith("0x") or wanted.isdigit():  # meant as a code, not a name
        try:
            code = hex_code(int(wanted.removeprefix("0x"), 16))
        except ValueError:
            fail(f"{name!r} is not a command code: expected hex digits such as 0x2101")
        fail(f"no message has command code {code} (see 'qkdn messages')")
    forms: dict[str, list[type[Message]]] = {}
    for cls in all_messages():
        for form in _names(cls):
            forms.setdefault(_normal(form), []).append(cls)
    close = difflib.get_close_matches(wanted, forms, n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(qualified_name(cls) for form in close for cls in forms[form]))
    hint = f"; did you mean {_and(suggestions, 'or')}?" if suggestions else ""
    fail(f"no message is called {name!r}{hint} (see 'qkdn messages')")


def _parse_fields(fields: list[str], json_source: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if json_source is not None:
        try:
            text = sys.stdin.read() if json_source == "-" else Path(json_source).read_text()
            loaded = orjson.loads(text)
        except OSError as exc:
            fail(f"cannot read {json_source}: {exc.strerror or exc}")
        except orjson.JSONDecodeError as exc:
            fail(f"{json_source} is not JSON: {exc}")
        if not isinstance(loaded, dict):
            fail(f"{json_source} must hold a JSON object of the message's parameters")
        values.update(loaded)
    for field in fields:
        name, equals, raw = field.partition("=")
        if not equals or not name:
            fail(f"--field {field!r}: expected NAME=VALUE")
        try:  # numbers, arrays and objects as JSON; anything else is a string
            values[name] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            values[name] = raw
    return values


def _positive_seconds(value: float) -> float:
    if not value > 0:  # not "value <= 0": nan must be refused too
        raise typer.BadParameter(f"must be more than 0 seconds, not {value:g}")
    return value


def _seconds(value: float) -> float:
    if not value >= 0:
        raise typer.BadParameter(f"must be 0 seconds or more, not {value:g}")
    return value


@app.command()
def send(
    url: Annotated[
        str,
        typer.Argument(metavar="URL", help="The peer: tcp://HOST:PORT, tcp+tls://HOST:PORT..."),
    ],
    message: Annotated[
        str,
        typer.Argument(
            metavar="MESSAGE",
            help="The message, in any case: its class (ak.KeyRequest, or KeyRequest where only "
            "one interface has it), its spec name ('Key request' where unambiguous) or its "
            "command code (0x2101 or 2101); see 'qkdn messages'.",
        ),
    ],
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            "-f",
            help="A parameter as NAME=VALUE (repeatable); VALUE is JSON when it parses, else a "
            "string: -f number_of_keys=2 -f application_destination_id=app-b",
        ),
    ] = None,
    json_source: Annotated[
        str | None,
        typer.Option("--json", help="Parameters as a JSON object from FILE, or - for stdin."),
    ] = None,
    ca: _CA = None,
    cert: _CERT = None,
    key: _KEY = None,
    identity: _IDENTITY = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds to wait for the response (more than 0; inf waits for ever).",
            callback=_positive_seconds,
        ),
    ] = 30.0,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            help="Seconds to keep trying to connect while the peer cannot be reached yet (a "
            "listener that is still starting); 0 tries once.",
            callback=_seconds,
        ),
    ] = 0.0,
) -> None:
    """Send one message and print the response as JSON (a one-way message prints nothing).

    A failure response is printed too, and its reason ends the command with exit status 1."""
    cls = _resolve_message(message)
    try:
        outgoing = message_from_dict(cls, _parse_fields(field or [], json_source))
    except QkdnError as exc:
        fail(str(exc))
    tls = _tls_settings(url, ca, cert, key, identity, server=False)

    async def run() -> Message | None:
        async with contextlib.AsyncExitStack() as stack:
            connection = await _connect(stack, url, tls=tls, identity=identity, wait=wait)
            if cls.response_type() is None:
                await connection.send(outgoing)
                return None
            return await connection.request(outgoing, timeout=timeout)

    try:
        response = _run(run)
    except FailureResponse as exc:
        if isinstance(exc.response, Message):
            _print_json(_described(exc.response))
        fail(exc.reason)
    except QkdnError as exc:
        fail(str(exc))
    if response is not None:
        _print_json(_described(response))


async def _connect(
    stack: contextlib.AsyncExitStack,
    url: str,
    *,
    tls: TLSConfig | None,
    identity: str | None,
    wait: float,
) -> Connection:
    """Connect to ``url`` (closed with ``stack``), trying again while connecting fails with a
    :class:`~qkdn_sdk.errors.TransportError`, until ``wait`` seconds have passed; then the last
    error is raised."""
    deadline = trio.current_time() + wait
    delay = 0.05
    while True:
        try:
            return await stack.enter_async_context(connect(url, tls=tls, identity=identity))
        except TransportError:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise
        await trio.sleep(min(delay, remaining))  # a retry interval, doubling up to 1 s
        delay = min(2 * delay, 1.0)


def _described(message: Message, *, redact_keys: bool = False) -> dict[str, Any]:
    payload = message_to_dict(message)
    if redact_keys:
        payload = _redact(payload)
    return {
        "message": qualified_name(type(message)),
        "code": hex_code(message.code),
        "name": message.spec_name,
        "payload": payload,
    }


# --- what qkdn listen --answer-examples answers ------------------------------------------------

_DEFAULT_NUMBER_OF_KEYS = 1
"""Keys given when a key request leaves number_of_keys out ("a default value is applied")."""
_DEFAULT_KEY_SIZE = 256
"""Bits per key when a key request leaves size_of_key out, or has none (ak.KeyRequestWithId)."""


def _answer(request: Message, response_type: type[Message], sender: str | None) -> Message:
    """The answer of ``qkdn listen --answer-examples`` to ``request``.

    A key request gets what it asks for: ``number_of_keys`` keys of ``size_of_key`` bits (the
    defaults where it leaves them out), random bytes from :func:`os.urandom` with fresh UUIDs as
    key IDs (Q.4161 ak.KeyRequest and ak.KeyRequestWithSessionId, Q.4162 kq1.KeyRequest), or a
    key for each ID of an ak.KeyRequestWithId. Any other request gets ``example(response_type)``.

    Raises :class:`~qkdn_sdk.errors.QkdnError` (answered as a failure naming the problem) when
    the keys asked for are not whole bytes or do not fit one frame (65,535 bytes of payload).
    """
    key_ids: list[str] | None = None
    if isinstance(request, ak.KeyRequest | ak.KeyRequestWithSessionId | kq1.KeyRequest):
        count = request.number_of_keys or _DEFAULT_NUMBER_OF_KEYS
        bits = request.size_of_key or _DEFAULT_KEY_SIZE
    elif isinstance(request, ak.KeyRequestWithId):
        key_ids = [key_id.key_id for key_id in request.key_ids]
        count, bits = len(key_ids), _DEFAULT_KEY_SIZE
    else:
        return example(response_type, sender=sender)
    too_large = QkdnError(
        f"{count} keys of {bits} bits do not fit one response: a frame payload holds at most "
        f"{MAX_PAYLOAD_SIZE:,} bytes; ask for fewer or smaller keys"
    )
    if bits % 8:
        raise QkdnError(f"size_of_key {bits} is not a whole number of bytes (a multiple of 8)")
    # The base64 of the keys alone is a lower bound of the payload: refuse before making keys,
    # so that asking for a billion costs nothing.
    if count * 4 * math.ceil(bits // 8 / 3) > MAX_PAYLOAD_SIZE:
        raise too_large
    ids = key_ids if key_ids is not None else [str(uuid.uuid4()) for _ in range(count)]
    keys = [Key(key=os.urandom(bits // 8), key_id=key_id) for key_id in ids]
    response: Message
    if isinstance(request, ak.KeyRequestWithSessionId):
        response = ak.ResponseToKeyRequestWithSessionId(
            session_id=request.session_id, keys=keys, response="success"
        )
    elif isinstance(request, kq1.KeyRequest):
        response = kq1.ResponseToKeyRequest(keys=keys, response="success")
    else:
        response = ak.ResponseToKeyRequest(keys=keys, response="success")
    if len(encode_payload(response)) > MAX_PAYLOAD_SIZE:
        raise too_large
    return response


_SECRET_FIELDS = {"key", "encrypted_key", "authentication_info"}


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            name: "<redacted>" if name in _SECRET_FIELDS else _redact(item)
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


_LISTEN_LOGGERS = ("qkdn_sdk.transport", "qkdn_tcp")
"""The loggers ``qkdn listen`` shows: the transport core and the TCP plugin, which say what they
refuse (a bad frame, a failed TLS handshake) and why."""


class _OneLineFormatter(logging.Formatter):
    """``PREFIX: message`` on one line (``PREFIX: warning: ...`` from WARNING up). Only an ERROR
    record that carries an exception adds its traceback: that is a bug (a handler that raised
    something other than a QkdnError), and the traceback is for whoever fixes it."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        line = f"{self._prefix}: {level}" + " ".join(record.getMessage().splitlines())
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)
        return line


@contextlib.contextmanager
def _logging_to_stderr(prefix: str, names: Iterable[str], level: int) -> Iterator[None]:
    """Within the block, records of the loggers ``names`` at ``level`` and above go to stderr,
    one line each (:class:`_OneLineFormatter`); the loggers are as they were afterwards."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter(prefix))
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old_level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(old_level)


@app.command()
def listen(
    url: Annotated[
        str, typer.Argument(metavar="URL", help="Where to listen: tcp://127.0.0.1:5000...")
    ],
    ca: _CA = None,
    cert: _CERT = None,
    key: _KEY = None,
    identity: _IDENTITY = None,
    show_keys: Annotated[
        bool, typer.Option("--show-keys", help="Print key data too (redacted by default).")
    ] = False,
    answer_examples: Annotated[
        bool,
        typer.Option(
            "--answer-examples",
            help="Answer requests instead of refusing them, as a reference peer to test a "
            "client against: key requests get the keys they ask for (random bytes; fresh key "
            "IDs, or the IDs asked for), other requests a valid example of their response.",
        ),
    ] = False,
) -> None:
    """Print every message received (one JSON object a line, on stdout), for debugging a peer.

    Requests are answered with a failure response saying this is a listener, or, with
    --answer-examples, with what they ask for. stderr says when it listens and what the
    transport refuses (bad frames, failed TLS handshakes). Ctrl+C stops it."""
    tls = _tls_settings(url, ca, cert, key, identity, server=True)

    async def handler(message: Message, connection: Connection) -> Message | None:
        line = _described(message, redact_keys=not show_keys)
        line["peer"] = connection.peer_id
        sys.stdout.write(_json(line) + "\n")
        sys.stdout.flush()
        response_type = message.response_type()
        if response_type is None:
            return None
        if answer_examples:
            return _answer(message, response_type, connection.local_id)
        raise QkdnError(
            "qkdn listen is a listener: it prints messages and answers none "
            "(qkdn listen --answer-examples answers them)"
        )

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve(
                    url, handler, tls=tls, identity=identity, task_status=task_status
                )
            )
            typer.echo(f"listening on {info.url} (Ctrl+C to stop)", err=True)

    with _logging_to_stderr("qkdn listen", _LISTEN_LOGGERS, logging.INFO):
        try:
            _run(run)
        except QkdnError as exc:
            fail(str(exc))


@app.command()
def certs(
    directory: Annotated[
        Path, typer.Argument(metavar="DIRECTORY", help="Directory for the PEM files.")
    ],
    ca_name: Annotated[str, typer.Option("--ca", help="Name of the CA (its CN).")] = "qkdn-dev-ca",
    entity: Annotated[
        list[str] | None,
        typer.Option(
            "--entity", "-e", help="An entity ID (repeatable): km-a, app-a, controller..."
        ),
    ] = None,
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = 365,
) -> None:
    """Write a development CA and a certificate and key per entity (ID in CN and SAN, valid
    for localhost and 127.0.0.1), for mutual TLS without openssl. An existing CA in DIRECTORY
    is reused."""
    try:
        written = write_dev_pki(directory, ca_name, entity or [], days=days)
    except QkdnError as exc:
        fail(str(exc))
    for path in written:
        typer.echo(str(path))


# --- roles and networks ---------------------------------------------------------------------

network_app = typer.Typer(
    help="Run a whole QKD network from a topology file.", no_args_is_help=True
)
app.add_typer(network_app, name="network")

_ROLE_LOGGERS = ("qkdn_sdk.roles", "qkdn_sdk.transport", "qkdn_tcp")
_DEFAULT_TOPOLOGY = "line3.toml"


def _topology(path: Path | None) -> Topology:
    try:
        if path is None:
            text = resources.files("qkdn_sdk.network").joinpath("topologies", _DEFAULT_TOPOLOGY)
            return parse_topology(text.read_text(encoding="utf-8"), source=_DEFAULT_TOPOLOGY)
        return load_topology(path)
    except TopologyError as exc:
        fail(str(exc))


async def _until_terminated(cancel_scope: trio.CancelScope) -> None:
    """Cancel ``cancel_scope`` on SIGTERM (Ctrl-C raises KeyboardInterrupt as usual)."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            cancel_scope.cancel()
            return


def _run_until_stopped(
    run: Callable[[], Awaitable[None]], name: str, *, prefix: str, level: int
) -> None:
    """Run roles until Ctrl+C or SIGTERM, their log records from ``level`` up on stderr (one
    line each, after ``prefix``); errors end the command with one line; ``<name> stopped``."""
    with _logging_to_stderr(prefix, _ROLE_LOGGERS, level):
        try:
            _run(run)
        except QkdnError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot start {name}: {exc}")
    typer.echo(f"{name} stopped", err=True)


_Topology = Annotated[Path, typer.Argument(metavar="TOPOLOGY", help="The topology file (TOML).")]


@network_app.command("up")
def network_up(
    topology: _Topology,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            help="Where the PKI, the key stores and endpoints.json go (made when missing).",
        ),
    ],
    memory_store: Annotated[
        bool, typer.Option("--memory-store", help="Keep keys in memory instead of SQLite.")
    ] = False,
) -> None:
    """Start every role of TOPOLOGY on loopback with real transports, write
    STATE_DIR/endpoints.json once all serve, and run until Ctrl+C or SIGTERM.

    Applications reach their KM with the URL, CA, certificate and key that endpoints.json gives
    them, speaking only the standards (Q.4161 over the spec's TCP frames)."""
    spec = _topology(topology)
    network = Network(spec, state_dir, store="memory" if memory_store else "sqlite")

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_terminated, nursery.cancel_scope)
            await nursery.start(network.run)
            typer.echo(
                f"network up: {len(spec.kms)} KMs, {len(spec.links)} QKD links, "
                f"{len(spec.applications)} applications; endpoints in "
                f"{state_dir / ENDPOINTS_FILE} (Ctrl+C to stop)",
                err=True,
            )
            await network.wait_for_keys()
            typer.echo("every QKD link has key: applications can get keys", err=True)

    _run_until_stopped(run, "network", prefix="qkdn network", level=logging.WARNING)


@network_app.command("configure")
def network_configure(
    topology: _Topology,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            help="Where the PKI, the role config files (STATE_DIR/config) and key stores go.",
        ),
    ],
    first_port: Annotated[
        int,
        typer.Option(
            "--first-port",
            min=1,
            max=65535,
            help="Interfaces the topology leaves at port 0 get free ports from this one up.",
        ),
    ] = 7000,
) -> None:
    """Write the PKI and one config file per role of TOPOLOGY (controller, KMs, QKD modules),
    every URL on a fixed port, for running each role as its own process with 'qkdn serve'.

    Prints the command that starts each role. QKD module files hold their link's secret and are
    readable by their owner only."""
    spec = _topology(topology)
    try:
        files = write_role_configs(spec, state_dir, first_port=first_port)
    except QkdnError as exc:
        fail(str(exc))
    roles = {spec.controller_id: "controller", **{km.id: "km" for km in spec.kms}}
    for role_id, path in files.items():
        typer.echo(f"qkdn serve {roles.get(role_id, 'qkd-module')} --config {path}")


@app.command("serve")
def serve_role(
    role: Annotated[str, typer.Argument(metavar="ROLE", help=f"One of: {', '.join(ROLES)}.")],
    config: Annotated[
        Path,
        typer.Option("--config", help="The role's config file ('qkdn network configure')."),
    ],
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Log every request served, not only problems.")
    ] = False,
) -> None:
    """Run one role (a KM, the QKDN controller or a simulated QKD module) as this process,
    until Ctrl+C or SIGTERM: the deployment where every node is its own machine."""
    if role not in ROLES:
        raise typer.BadParameter(
            f"must be one of {', '.join(ROLES)}, not {role!r}", param_hint="ROLE"
        )
    try:
        spec = load_role_config(config, role)
    except QkdnError as exc:
        fail(str(exc))

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_terminated, nursery.cancel_scope)
            urls = await nursery.start(spec.run)
            if isinstance(urls, dict):
                where = ", ".join(f"{name} {url}" for name, url in urls.items())
            else:
                where = urls or f"pushing keys to {getattr(spec.config, 'km_url', None)}"
            typer.echo(f"{role} {spec.id} serves: {where} (Ctrl+C to stop)", err=True)

    level = logging.INFO if verbose else logging.WARNING
    _run_until_stopped(run, f"{role} {spec.id}", prefix=f"qkdn {role} {spec.id}", level=level)


class DemoMode(enum.Enum):
    """How the demo's destination application gets the keys (Q.4161 clause 7)."""

    REQUEST = "request"
    PROACTIVE = "proactive"


class DemoTransport(enum.Enum):
    """How the demo's applications reach their KMs."""

    TCP_TLS = "tcp+tls"
    HTTPS = "https"
    GRPCS = "grpcs"


@app.command()
def demo(
    topology: Annotated[
        Path | None,
        typer.Option("--topology", help="A topology file instead of the built-in line3."),
    ] = None,
    number: Annotated[int, typer.Option("--number", min=1, help="Keys to share.")] = 4,
    size: Annotated[int, typer.Option("--size", min=8, help="Bits per key.")] = 256,
    routing: Annotated[
        Routing | None,
        typer.Option(
            "--routing",
            help="Q.4164 clause 7.1 (each KM asks for its next hop) or 7.2 (the source KM gets "
            "the whole route); default: the topology's.",
        ),
    ] = None,
    mode: Annotated[
        DemoMode,
        typer.Option(
            "--mode",
            help="Q.4161 clause 7.1 (bob fetches the keys by ID) or 7.2 (a session: bob's KM "
            "pushes them).",
        ),
    ] = DemoMode.REQUEST,
    transport: Annotated[
        DemoTransport,
        typer.Option(
            "--transport",
            help="How the applications reach their KMs: Q.4161 Appendix I frames over mutual "
            "TLS, ETSI GS QKD 014 (Appendix II; key supply upon request only), or gRPC with "
            "mutual TLS.",
        ),
    ] = DemoTransport.TCP_TLS,
) -> None:
    """Start a QKD network (line3: alice on km-a, bob on km-c, km-b in between), show link keys
    accumulating, relay keys from alice to bob across km-b, and check that both hold the same
    keys (exit status 1 if not). Key stores are SQLite files in a temporary directory."""
    spec = _topology(topology)
    if routing is not None:
        spec = attrs.evolve(spec, routing=routing)
    if transport is DemoTransport.HTTPS and mode is DemoMode.PROACTIVE:
        fail("--mode proactive needs --transport tcp+tls or grpcs: ETSI 014 has no sessions")
    if transport is not DemoTransport.TCP_TLS:
        try:
            spec = spec.serving_also({"ak": [transport.value]})
        except QkdnError as exc:
            fail(f"--transport {transport.value}: {exc}")
    if len(spec.applications) < 2:
        fail("the demo needs two applications in the topology")
    km_options: dict[str, Any] = {"report_interval": 0.1, "sync_interval": 0.1}
    limits = KMConfig(km_id="demo", listen={}, controller_id=spec.controller_id, **km_options)
    try:  # before anything starts: every KM of the demo has these limits
        limits.check_amount(number, size)
    except QkdnError as exc:
        fail(f"--number {number} --size {size}: {exc}")
    console = Console(stderr=False, highlight=False)
    with tempfile.TemporaryDirectory(prefix="qkdn-demo-") as state_dir:
        network = Network(spec, Path(state_dir), km_options=km_options)
        with _logging_to_stderr("qkdn demo", _ROLE_LOGGERS, logging.ERROR):
            try:
                same = _run(partial(_demo, network, console, number, size, mode, transport.value))
            except QkdnError as exc:
                fail(str(exc))
    if not same:
        fail("alice and bob do not hold the same keys")


async def _demo(
    network: Network, console: Console, number: int, size: int, mode: DemoMode, transport: str
) -> bool:
    spec = network.topology
    source, destination = spec.applications[0], spec.applications[-1]
    needed = otp.units_for(otp.MAC_KEY_BYTES + number * size // 8) * otp.UNIT_BITS
    async with trio.open_nursery() as nursery:
        with console.status("starting the network (PKI, controller, QKD modules, KMs)..."):
            endpoints = await nursery.start(network.run)
        console.print(
            f"[bold]QKD network up[/]: {', '.join(km.id for km in spec.kms)}; "
            f"{source.id} on {source.km}, {destination.id} on {destination.km}"
        )
        await _show_link_keys(network, console, needed)
        assert network.controller is not None
        for km in network.kms:  # a report sent after the link keys were there
            await network.controller.wait_for_report(km, network.controller.report_count(km) + 1)
        if source.km != destination.km:
            route = network.controller.route(source.km, destination.km, needed)
            console.print(
                f"relay route from the controller ({spec.routing.value}): "
                f"[bold]{' -> '.join(route)}[/]"
            )
        spent_before = {km_id: dict(km.spent_bits) for km_id, km in network.kms.items()}

        def ak_url(app: ApplicationSpec) -> str:
            return str(endpoints["kms"][app.km]["ak"][transport])

        if transport != DemoTransport.TCP_TLS.value:
            over = {"https": "ETSI GS QKD 014", "grpcs": "gRPC"}[transport]
            console.print(
                f"{source.id} and {destination.id} reach their KMs over {over}: "
                f"{ak_url(source)}, {ak_url(destination)}"
            )

        async with (
            KeyManagerClient.connect(
                ak_url(source), tls=network.tls(source.id), identity=source.id
            ) as alice,
            KeyManagerClient.connect(
                ak_url(destination), tls=network.tls(destination.id), identity=destination.id
            ) as bob,
        ):
            started = time.perf_counter()
            if mode is DemoMode.PROACTIVE:
                await bob.authenticate()
                session = await alice.create_session(destination.id, number)
                console.print(
                    f"session {session.session_id} opened by {source.id} with {destination.id} "
                    f"(Q.4161 clause 7.2; {destination.id} was notified by {destination.km})"
                )
                keys = await session.get_keys(number, size)
            else:
                keys = await alice.get_keys(destination.id, number, size)
            elapsed = time.perf_counter() - started
            console.print(
                f"{source.id} got {len(keys)} keys of {size} bits from {source.km} in "
                f"{elapsed * 1000:.1f} ms (relayed, then confirmed by {destination.km})"
            )
            if mode is DemoMode.PROACTIVE:
                fetched = [await bob.proactive_keys.receive() for _ in keys]
                console.print(f"{destination.km} pushed them to {destination.id}")
            else:
                fetched = await bob.get_keys_with_ids(source.id, [key.key_id for key in keys])
                console.print(f"{destination.id} fetched them by ID from {destination.km}")
        table = Table(title=f"keys at {source.id} and {destination.id} (SHA-256 fingerprints)")
        table.add_column("key ID", min_width=36, no_wrap=True)
        table.add_column(source.id)
        table.add_column(destination.id)
        table.add_column("same")
        for mine, theirs in zip(keys, fetched, strict=True):
            table.add_row(
                mine.key_id,
                _fingerprint(mine.key),
                _fingerprint(theirs.key),
                "yes" if mine == theirs else "[red]NO[/]",
            )
        console.print(table)
        for km_id, manager in network.kms.items():
            for neighbour, bits in manager.spent_bits.items():
                spent = bits - spent_before[km_id][neighbour]
                if spent:
                    console.print(f"{km_id} spent {spent} bits of link key on {km_id}-{neighbour}")
        same = keys == fetched  # the same IDs and the same bytes, in order
        if same:
            console.print(f"[bold green]{source.id} and {destination.id} hold the same keys[/]")
        nursery.cancel_scope.cancel()
    return same


async def _show_link_keys(network: Network, console: Console, needed: int) -> None:
    """A progress bar per link end until every KM can pay for the relay on each of its links."""
    ends = [(km_id, neighbour) for km_id, km in network.kms.items() for neighbour in km.spent_bits]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>7.0f} / {task.total:.0f} bits of link key"),
        console=console,
        transient=False,
    ) as progress:
        tasks = {end: progress.add_task(f"{end[0]} -> {end[1]}", total=needed) for end in ends}
        while True:
            ready = 0
            for (km_id, neighbour), task in tasks.items():
                bits = network.kms[km_id].link_key_bits(neighbour)
                progress.update(task, completed=min(bits, needed))
                ready += bits >= needed
            if ready == len(tasks):
                return
            await trio.sleep(0.05)  # screen refresh


@app.command()
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
            fail(
                f"--transport {scheme}: no installed transport serves {scheme}:// "
                "(see qkdn transports)"
            )
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


def _fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def main() -> None:
    """Entry point of the ``qkdn`` script: usage errors, like domain errors, are one line (exit
    status 2 for usage, 1 for the rest); Ctrl-C ends quietly with exit status 130."""
    try:
        status = app(standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument...
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "qkdn"
        typer.echo(f"qkdn: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("qkdn: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:  # typer turns one inside a command into status 130; not before it
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)
