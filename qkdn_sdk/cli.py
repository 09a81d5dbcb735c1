"""The ``qkdn`` command line. Commands are thin: they parse, delegate, and print.

Errors a user can cause (a bad frame, a bad option value) end as one line on stderr and exit
status 1, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import trio
import typer

from qkdn_sdk.catalogue import SELECTIONS, catalogue, qualified_name, render_reference, select
from qkdn_sdk.codecs.frame import MAX_FRAME_SIZE, FrameDecoder, decode_message
from qkdn_sdk.codecs.payload import message_from_dict, message_to_dict
from qkdn_sdk.errors import FailureResponse, QkdnError
from qkdn_sdk.messages import Message, all_messages, example, message_class
from qkdn_sdk.pki import write_dev_pki
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, ServerInfo, connect, serve, transport_registry

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
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


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
            help="Print a JSON array of {interface, code, name, sender, receiver, response_code, "
            "fields: [{name, json_name, mandatory}]}.",
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
        answer = f" -> 0x{response.code:04X}" if response else ""
        extension = " (extension)" if cls.is_extension else ""
        typer.echo(
            f"0x{cls.code:04X}  {cls.interface.value:<4} {cls.sender.value:>11} -> "
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
                f"command code 0x{frame.command_code:04X} ({name}), "
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


def _tls(ca: Path | None, cert: Path | None, key: Path | None) -> TLSConfig | None:
    if ca is None:
        if cert is not None or key is not None:
            fail("--cert and --key need --ca (the CA that verifies the peer)")
        return None
    return TLSConfig(ca=ca, cert=cert, key=key)


def _resolve_message(name: str) -> type[Message]:
    """A message class from ``ak.KeyRequest``, ``KeyRequest`` (when unambiguous) or ``0x2101``."""
    if name.lower().startswith("0x"):
        try:
            return message_class(int(name, 16))
        except (KeyError, ValueError):
            fail(f"no message has command code {name} (see 'qkdn messages')")
    matches = [cls for cls in all_messages() if name in (cls.__name__, qualified_name(cls))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = ", ".join(qualified_name(cls) for cls in matches)
        fail(f"{name} is ambiguous: say {choices}")
    fail(f"no message is called {name} (see 'qkdn messages')")


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


@app.command()
def send(
    url: Annotated[str, typer.Argument(help="The peer: tcp://HOST:PORT, tcp+tls://HOST:PORT...")],
    message: Annotated[
        str, typer.Argument(help="Message: ak.KeyRequest, KeyRequest or its code 0x2101.")
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
        float, typer.Option("--timeout", help="Seconds to wait for the response.")
    ] = 30.0,
) -> None:
    """Send one message and print the response as JSON (a one-way message prints nothing)."""
    cls = _resolve_message(message)
    try:
        outgoing = message_from_dict(cls, _parse_fields(field or [], json_source))
    except QkdnError as exc:
        fail(str(exc))
    tls = _tls(ca, cert, key)

    async def run() -> Message | None:
        async with connect(url, tls=tls, identity=identity) as connection:
            if cls.response_type() is None:
                await connection.send(outgoing)
                return None
            return await connection.request(outgoing, timeout=timeout)

    try:
        response = trio.run(run)
    except FailureResponse as exc:
        if isinstance(exc.response, Message):
            _print_json(_described(exc.response))
        fail(exc.reason)
    except QkdnError as exc:
        fail(str(exc))
    if response is not None:
        _print_json(_described(response))


def _described(message: Message, *, redact_keys: bool = False) -> dict[str, Any]:
    payload = message_to_dict(message)
    if redact_keys:
        payload = _redact(payload)
    return {
        "message": qualified_name(type(message)),
        "code": message.code,
        "name": message.spec_name,
        "payload": payload,
    }


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


@app.command()
def listen(
    url: Annotated[str, typer.Argument(help="Where to listen: tcp://127.0.0.1:5000...")],
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
            help="Answer every request with a valid example of its response (a reference peer "
            "to test a client against) instead of a failure.",
        ),
    ] = False,
) -> None:
    """Print every message received (one JSON object a line), for debugging a peer. Requests
    are answered with a failure response saying this is a listener (or, with
    --answer-examples, with example responses)."""
    tls = _tls(ca, cert, key)

    async def handler(message: Message, connection: Connection) -> Message | None:
        line = _described(message, redact_keys=not show_keys)
        line["peer"] = connection.peer_id
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()
        response_type = message.response_type()
        if response_type is None:
            return None
        if answer_examples:
            return example(response_type, sender=connection.local_id)
        raise QkdnError("qkdn listen is a listener: it prints messages and answers none")

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve(
                    url, handler, tls=tls, identity=identity, task_status=task_status
                )
            )
            typer.echo(f"listening on {info.url} (Ctrl+C to stop)", err=True)

    try:
        trio.run(run)
    except QkdnError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command()
def certs(
    directory: Annotated[Path, typer.Argument(help="Directory for the PEM files.")],
    ca_name: Annotated[str, typer.Option("--ca", help="Name of the CA (its CN).")] = "qkdn-dev-ca",
    entity: Annotated[
        list[str] | None,
        typer.Option(
            "--entity", "-e", help="An entity ID (repeatable): km-a, app-a, controller..."
        ),
    ] = None,
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
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


def main() -> None:
    """Entry point of the ``qkdn`` script: usage errors, like domain errors, are one line."""
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
    sys.exit(status if isinstance(status, int) else 0)
