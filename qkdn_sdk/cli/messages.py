"""``qkdn messages``, ``qkdn decode`` and ``qkdn transports``: what the SDK knows, without a
peer. ``messages`` lists the message catalogue (as text, JSON or the Markdown reference),
``decode`` decodes TCP frames given in hex, or says why they are not valid frames, and
``transports`` lists the installed transport plugins and what they carry.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from qkdn_sdk.catalogue import SELECTIONS, catalogue, hex_code, render_reference, select
from qkdn_sdk.cli._common import _print_json, fail
from qkdn_sdk.codecs.frame import MAX_FRAME_SIZE, FrameDecoder, decode_message
from qkdn_sdk.codecs.payload import message_to_dict
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.messages import message_class
from qkdn_sdk.transport import transport_registry

__all__ = ["decode", "messages", "transports"]


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
