"""``qkdn send``, ``qkdn listen`` and ``qkdn certs``: talking to one peer, for debugging it or
testing a client against a reference peer.

``send`` sends one message, named as a user would name it (:func:`_resolve_message`) with its
parameters from ``--field`` and ``--json`` (:func:`_parse_fields`), and prints the response as
JSON; ``listen`` prints every message it receives, one JSON object a line, and refuses requests
or, with ``--answer-examples``, answers them (:func:`_answer`); ``certs`` writes a development
PKI for mutual TLS.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import string
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import orjson
import trio
import typer

from qkdn_sdk.catalogue import hex_code, qualified_name
from qkdn_sdk.cli._common import (
    _CA,
    _CERT,
    _IDENTITY,
    _KEY,
    _and,
    _json,
    _logging_to_stderr,
    _positive_seconds,
    _print_json,
    _run,
    _seconds,
    _tls_settings,
    fail,
)
from qkdn_sdk.codecs.frame import MAX_PAYLOAD_SIZE
from qkdn_sdk.codecs.payload import encode_payload, message_from_dict, message_to_dict
from qkdn_sdk.errors import FailureResponse, QkdnError, TransportError
from qkdn_sdk.messages import Key, Message, ak, all_messages, example, kq1, message_class
from qkdn_sdk.pki import write_dev_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, ServerInfo, connect, serve

__all__ = ["certs", "listen", "send"]


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
