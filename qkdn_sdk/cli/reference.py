"""The CLI reference (``docs/reference/cli.md``), generated from the ``qkdn`` command itself:
every command and group, its help, its usage, and each argument and option with its help and
default, in the order ``--help`` lists them.

``python -m qkdn_sdk.cli.reference > docs/reference/cli.md`` writes it; a test holds the file to
what this prints, and every command, argument and option to having help.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
import typer.main

from qkdn_sdk.cli import app

__all__ = ["commands", "help_records", "render_cli_reference"]

_HEADER = """\
# CLI reference

Generated from the `qkdn` command (`python -m qkdn_sdk.cli.reference > docs/reference/cli.md`);
a test keeps it in step. `qkdn COMMAND --help` prints the same on a terminal. Every mistake ends
as one line on stderr: exit status 2 for a usage error, 1 for any other, 130 for Ctrl-C.
"""


def commands() -> Iterator[tuple[str, Any]]:
    """``(path, command)`` of ``qkdn`` and of every command and group under it, depth first, in
    the order ``--help`` lists them (``path``: ``qkdn network up``)."""
    root = typer.main.get_command(app)

    def walk(path: str, command: Any, parent: Any) -> Iterator[tuple[str, Any]]:
        yield path, command
        if hasattr(command, "list_commands"):  # a group
            context = typer.Context(command, info_name=path, parent=parent)
            for name in command.list_commands(context):
                child = command.get_command(context, name)
                if child is not None and not child.hidden:
                    yield from walk(f"{path} {name}", child, context)

    yield from walk("qkdn", root, None)


def help_records(command: Any, path: str) -> list[tuple[str, str]]:
    """``(names, help)`` of each argument and option of ``command``, as ``--help`` prints them
    (``--help`` itself left out)."""
    context = typer.Context(command, info_name=path)
    records = []
    for param in command.get_params(context):
        record = param.get_help_record(context)
        if record is not None and record[0] != "--help":
            records.append(record)
    return records


def render_cli_reference() -> str:
    """The Markdown of the CLI reference."""
    return "\n".join([_HEADER, *(_section(path, command) for path, command in commands())])


def _section(path: str, command: Any) -> str:
    context = typer.Context(command, info_name=path)
    lines = [f"## `{path}`", ""]
    help_text = "\n".join(
        line for line in (command.help or "").strip().splitlines() if line.strip() != "\b"
    )
    if help_text:
        lines += [help_text, ""]
    usage = " ".join(command.collect_usage_pieces(context))
    lines += ["```text", f"{path} {usage}".rstrip(), "```", ""]
    records = help_records(command, path)
    if records:
        lines += ["| Argument or option | Meaning |", "| --- | --- |"]
        lines += [f"| `{names}` | {_cell(meaning)} |" for names, meaning in records]
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


if __name__ == "__main__":
    print(render_cli_reference(), end="")
