"""The docs say what the code does: the generated message reference and the README example."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from qkdn_sdk.catalogue import render_reference
from qkdn_sdk.messages import all_messages, field_infos
from tests.test_cli import qkdn

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference" / "messages.md"
README = ROOT / "README.md"
REGENERATE = "regenerate it with `qkdn messages --markdown > docs/reference/messages.md`"


def test_message_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render_reference(), (
        f"{REFERENCE.relative_to(ROOT)} is stale: {REGENERATE}"
    )


def test_markdown_command_prints_the_reference() -> None:
    result = qkdn("messages", "--markdown")
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_reference()


@pytest.mark.parametrize("cls", all_messages(), ids=lambda cls: f"0x{cls.code:04X}")
def test_every_message_is_in_the_reference(cls: type) -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    heading = f"### 0x{cls.code:04X} {cls.spec_name}"
    assert heading in text, f"{heading!r} missing: {REGENERATE}"
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    for info in field_infos(cls):
        assert f"`{info.json_name}`" in section, f"{info.json_name} of 0x{cls.code:04X}"
    if cls.is_extension:
        assert heading + " (SDK extension)" in text


DOC_PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _all_docs() -> str:
    return "".join(page.read_text(encoding="utf-8") for page in DOC_PAGES)


CONSOLE_PAGES = [README, ROOT / "docs" / "message-layer.md"]
"""The pages whose ``console`` blocks show what the CLI prints, to the character (the other
pages' show commands to adapt, with their output abridged)."""


def _console_examples() -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` of each ``console`` block of :data:`CONSOLE_PAGES`."""
    examples = []
    text = "".join(page.read_text(encoding="utf-8") for page in CONSOLE_PAGES)
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        command: str | None = None
        output: list[str] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command is not None:
                    examples.append((command, output))
                command, output = line[2:], []
            elif command is not None:
                output.append(line)
        if command is not None:
            examples.append((command, output))
    return examples


def test_the_docs_have_a_decode_example() -> None:
    assert any(command.startswith("qkdn decode ") for command, _ in _console_examples())


@pytest.mark.parametrize(("command", "expected"), _console_examples(), ids=lambda v: str(v)[:30])
def test_a_console_example_is_what_the_cli_prints(command: str, expected: list[str]) -> None:
    program, *args = shlex.split(command)
    assert program == "qkdn"
    result = qkdn(*args)
    assert "Traceback" not in result.stderr
    # The page shows stdout then stderr, as a terminal does for this command.
    assert result.stdout.splitlines() + result.stderr.splitlines() == expected


def _commands() -> list[str]:
    """The commands and command groups of ``qkdn``."""
    from qkdn_sdk.cli import app

    commands = [command.name or command.callback.__name__ for command in app.registered_commands]  # type: ignore[union-attr]
    return sorted([*commands, *(str(group.name) for group in app.registered_groups)])


@pytest.mark.parametrize("command", _commands())
def test_every_cli_command_is_documented(command: str) -> None:
    docs = _all_docs()
    assert f"qkdn {command}" in docs, f"`qkdn {command}` is not in README.md or docs/"
    result = qkdn(command, "--help")
    assert result.returncode == 0, result.stderr


def test_the_cli_has_the_commands_the_docs_promise() -> None:
    assert _commands() == [
        "bench",
        "certs",
        "conformance",
        "decode",
        "demo",
        "keys",
        "listen",
        "messages",
        "network",
        "send",
        "serve",
        "transports",
    ]


def test_network_commands_are_documented() -> None:
    from qkdn_sdk.cli import network_app

    docs = _all_docs()
    for command in network_app.registered_commands:
        assert f"qkdn network {command.name}" in docs
        assert qkdn("network", str(command.name), "--help").returncode == 0


def test_the_demo_topology_is_the_example() -> None:
    """``qkdn demo`` runs the packaged copy of examples/topologies/line3.toml."""
    packaged = ROOT / "qkdn_sdk" / "network" / "topologies" / "line3.toml"
    example = ROOT / "examples" / "topologies" / "line3.toml"
    assert packaged.read_text(encoding="utf-8") == example.read_text(encoding="utf-8")


CLI_REFERENCE = ROOT / "docs" / "reference" / "cli.md"


def test_cli_reference_is_up_to_date() -> None:
    from qkdn_sdk.cli.reference import render_cli_reference

    assert CLI_REFERENCE.read_text(encoding="utf-8") == render_cli_reference(), (
        f"{CLI_REFERENCE.relative_to(ROOT)} is stale: regenerate it with "
        "`python -m qkdn_sdk.cli.reference > docs/reference/cli.md`"
    )


def _cli_commands() -> list[tuple[str, object]]:
    from qkdn_sdk.cli.reference import commands

    return list(commands())


CLI_COMMANDS = _cli_commands()


@pytest.mark.parametrize(("path", "command"), CLI_COMMANDS, ids=[path for path, _ in CLI_COMMANDS])
def test_every_command_argument_and_option_says_what_it_is(path: str, command: Any) -> None:
    from qkdn_sdk.cli.reference import help_records

    assert (command.help or "").strip(), f"`{path}` has no help"
    for names, meaning in help_records(command, path):
        said = re.sub(r"\s*\[(default: [^]]*|required)\]", "", meaning).strip()
        assert said, f"`{path}`: {names} has no help"


def test_every_page_is_in_the_site_navigation() -> None:
    """mkdocs builds only what ``nav`` names without a warning; ``nox -s docs`` builds with
    --strict, and this holds the two together where mkdocs is not installed."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config.split("\nnav:\n", 1)[1]
    named = set(re.findall(r":\s*(\S+\.md)\s*$", nav, re.M))
    pages = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")}
    assert named == pages


def test_procedure_diagrams_are_up_to_date() -> None:
    from qkdn_sdk.conformance.diagrams import render_procedures

    page = ROOT / "docs" / "reference" / "procedures.md"
    assert page.read_text(encoding="utf-8") == render_procedures(), (
        f"{page.relative_to(ROOT)} is stale: regenerate it with "
        "`python -m qkdn_sdk.conformance.diagrams > docs/reference/procedures.md`"
    )


def test_a_diagram_draws_who_sends_each_message() -> None:
    """The role under test sends what its role's digit says; between two KMs, the answer to what
    the neighbour sent (its HELLO answered by a HELLO); a refusal is the tested role's."""
    from qkdn_sdk.conformance import KM_PROCEDURES
    from qkdn_sdk.conformance.diagrams import sequence_diagram
    from qkdn_sdk.messages import Role

    drawn = {
        procedure.name: [
            line
            for line in sequence_diagram(procedure, "KM", Role.KM).splitlines()
            if "->>" in line
        ]
        for procedure in KM_PROCEDURES
    }
    assert drawn["km-link-hello"] == [
        "    P0->>T: 0x1180 HELLO message",
        "    T->>P0: 0x1180 HELLO message",
    ]
    assert drawn["km-link-hello-of-another-community"][-1] == "    T->>P0: 0x0080 Error indication"
    assert drawn["key-supply-upon-request"][:1] == ["    P0->>T: 0x2101 Key request"]


def _public_modules() -> list[str]:
    """qkdn_sdk's modules and the plugins' whose path has no part starting with ``_``."""
    names = []
    for package in ("qkdn_sdk", "qkdn_tcp", "qkdn_https", "qkdn_grpc"):
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if not any(part.startswith("_") for part in info.name.split(".")[1:]):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_name_says_what_it_is(name: str) -> None:
    """Every public module has a docstring, and so has every class and function its
    ``__all__`` exports (the Python API reference is made from them)."""
    module = importlib.import_module(name)
    assert (module.__doc__ or "").strip(), f"{name} has no docstring"
    for exported in getattr(module, "__all__", []):
        value = getattr(module, exported)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert (value.__doc__ or "").strip(), f"{name}.{exported} has no docstring"
