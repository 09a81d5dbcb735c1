"""The ``qkdn`` command line. Commands are thin: they parse, delegate, and print.

Errors a user can cause (a bad frame, a bad option value) end as one line on stderr and exit
status 1, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import orjson
import typer

from qkdn_sdk.catalogue import SELECTIONS, catalogue, render_reference, select
from qkdn_sdk.codecs.frame import FrameDecoder, decode_message
from qkdn_sdk.codecs.payload import message_to_dict
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.messages import message_class

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
    decoder = FrameDecoder()
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
