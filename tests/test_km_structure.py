"""The key manager's structure: every message a KM receives has exactly one handler, named in
:data:`qkdn_sdk.roles.km.HANDLERS`; the parts never import the composition; no file of the SDK
is one a reader cannot take in; docs/architecture.md says which file handles each message
code."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

from qkdn_sdk.messages import Message
from qkdn_sdk.roles.keystore import MemoryKeyStore
from qkdn_sdk.roles.km import HANDLERS, INTERFACES, KeyManager, KMConfig, KMLink
from qkdn_sdk.roles.km.manager import accepted
from tests.test_import_layers import import_graph

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qkdn_sdk"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_FILE_LINES = 800
MAX_CLASS_LINES = 500


def test_every_request_a_km_accepts_has_one_handler() -> None:
    every = {cls for interface in INTERFACES for cls in accepted(interface)}
    requests = {cls for cls in every if cls.response_type() is not None}
    assert requests - HANDLERS.keys() == set()
    # a handler for a message no interface of the KM accepts would never run
    assert HANDLERS.keys() - every == set()
    # the rest of what a KM accepts answers its own requests (and the one-way UPDATE)
    for cls in every - HANDLERS.keys():
        assert cls.response_type() is None, cls


def test_each_interface_has_its_own_handlers() -> None:
    """A message is accepted on one interface only, so the table needs no interface column."""
    seen: dict[type[Message], str] = {}
    for interface in INTERFACES:
        for cls in accepted(interface) & HANDLERS.keys():
            assert cls not in seen, f"{cls.__name__} on {seen[cls]} and {interface}"
            seen[cls] = interface
    assert seen.keys() == HANDLERS.keys()


def _km() -> KeyManager:
    config = KMConfig(
        km_id="km-a",
        listen={},
        controller_id="controller",
        links=(KMLink(neighbour="km-b", module_id="km-a.km-b"),),
    )
    return KeyManager(config, MemoryKeyStore())


async def test_every_handler_is_a_method_of_its_part_taking_its_message() -> None:
    km = _km()
    for cls, (part, method) in HANDLERS.items():
        handler = getattr(getattr(km, part), method)
        assert inspect.iscoroutinefunction(handler), (cls, part, method)
        hints = typing.get_type_hints(handler)
        parameters = list(inspect.signature(handler).parameters)
        assert parameters[1] == "connection", (part, method)
        assert hints[parameters[0]] is cls, (cls, part, method, hints[parameters[0]])


def test_no_part_imports_the_composition() -> None:
    """The parts of the KM import neither :mod:`~qkdn_sdk.roles.km.manager` nor the package
    (whose ``__init__`` imports it). That they import each other one way only, the test of
    import circles checks for the whole SDK (``tests/test_import_layers.py``)."""
    composition = {"qkdn_sdk.roles.km", "qkdn_sdk.roles.km.manager"}
    parts = {
        module: imported
        for module, imported in import_graph(PACKAGE).items()
        if module.startswith("qkdn_sdk.roles.km.") and module not in composition
    }
    assert len(parts) > 10
    for module, imported in parts.items():
        assert imported.isdisjoint(composition), module


def _long_classes(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.name, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_CLASS_LINES
    ]


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: str(path.relative_to(ROOT))
)
def test_no_file_or_class_is_too_long_to_read(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_FILE_LINES, f"{lines} lines: cut it along its duties"
    assert _long_classes(path) == []


def handlers_table(km: KeyManager) -> str:
    """The table of docs/architecture.md: which file and method of the KM handles each code."""
    interface_of = {
        cls: interface for interface in INTERFACES for cls in accepted(interface) & HANDLERS.keys()
    }
    rows = ["| code | message | interface | handled by |", "|---|---|---|---|"]
    for cls in sorted(HANDLERS, key=lambda cls: cls.code):
        part, method = HANDLERS[cls]
        module = getattr(getattr(km, part), method).__module__
        path = module.replace(".", "/") + ".py"
        rows.append(
            f"| 0x{cls.code:04X} | {cls.spec_name} | {interface_of[cls]} | "
            f"`{path}` `{type(getattr(km, part)).__name__}.{method}` |"
        )
    return "\n".join(rows) + "\n"


async def test_the_architecture_says_which_file_handles_each_message() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    begin, end = "<!-- handlers -->\n", "<!-- /handlers -->"
    assert begin in text, f"{ARCHITECTURE.name} has no handlers table"
    assert end in text, f"{ARCHITECTURE.name}: the handlers table does not end"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    expected = handlers_table(_km())
    assert table == expected, (
        f"the handlers table of {ARCHITECTURE.name} is stale; it is:\n{expected}"
    )
