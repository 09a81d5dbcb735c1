"""No module of qkdn_sdk imports itself through others (DESIGN.md, "Layers": imports point down).

The graph is read from the source with :mod:`ast`; nothing is imported. Module A depends on module
B when running A imports B: at A's top or inside one of A's functions (that runs later, but it
runs: a lazy import in a function is how a circle hides), B itself or a package B is in (whose
``__init__`` runs first). Imports under ``if TYPE_CHECKING:`` never run and do not count; nor do
A's own packages, which are being imported already when A runs, unless A names them
(``from package import name`` runs the package's ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

import qkdn_sdk

PACKAGE = Path(qkdn_sdk.__file__).parent


def module_files(package: Path) -> dict[str, Path]:
    """Every module of the package in the directory ``package``, by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if path.name == "__init__.py" or name not in found:  # a package shadows a module
            found[name] = path
    return found


def _packages_of(name: str) -> set[str]:
    """``a.b.c`` -> ``{"a", "a.b"}``."""
    parts = name.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements among ``nodes`` and everything in them, but those under
    ``if TYPE_CHECKING:`` (its ``else:`` runs)."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _runtime_imports(node.orelse)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        else:
            yield from _runtime_imports(ast.iter_child_nodes(node))


def _imported(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: Iterable[str]
) -> Iterator[str]:
    """The dotted names that ``node``, in ``module``, imports: a submodule where
    ``from package import name`` names one, else the package."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        base = here[: len(here) - node.level + 1]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        assert node.module is not None
        source = node.module
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        yield submodule if submodule in known else source


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` -> the modules of ``package`` that running it imports."""
    files = module_files(package)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        running_already = _packages_of(module) | {module}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in _runtime_imports([tree]):
            for imported in _imported(module, path.name == "__init__.py", node, files):
                if imported in files and imported != module:
                    targets.add(imported)
                targets.update(
                    parent
                    for parent in _packages_of(imported)
                    if parent in files and parent not in running_already
                )
        graph[module] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: each a sorted list of the modules that import each other
    (directly or not), the circles in order."""
    reach: dict[str, set[str]] = {}
    for start in graph:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        reach[start] = seen
    found = {
        tuple(sorted(other for other in reach[module] if module in reach[other]))
        for module in graph
        if module in reach[module]
    }
    return [list(circle) for circle in sorted(found)]


def _described(graph: dict[str, set[str]], circle: list[str]) -> str:
    edges = [f"    {a} -> {b}" for a in circle for b in sorted(graph[a]) if b in circle]
    return "\n".join(["  " + ", ".join(circle), *edges])


def test_qkdn_sdk_has_no_import_circle() -> None:
    graph = import_graph(PACKAGE)
    assert "qkdn_sdk.transport._api" in graph["qkdn_sdk.transport._framed"]  # the graph is read
    found = circles(graph)
    assert not found, "modules that import each other at runtime:\n" + "\n".join(
        _described(graph, circle) for circle in found
    )


# The checker itself, on small packages: what counts as an import, and what does not.
_CASES = {
    "a lazy import in a function closes a circle": (
        {
            "registry.py": "def load():\n    import pkg.memory\n",
            "framed.py": "from pkg.registry import load\n",
            "memory.py": "from .framed import load\n",
        },
        [["pkg.framed", "pkg.memory", "pkg.registry"]],
    ),
    "imports under TYPE_CHECKING do not count, its else does": (
        {
            "low.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.high import High\n",
            "high.py": "from . import low, other\n",
            "other.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    pass\nelse:\n    from pkg import high\n",
        },
        [["pkg.high", "pkg.other"]],
    ),
    "importing a submodule from its package does not run the package's __init__ again": (
        {
            "__init__.py": "from pkg.api import connect\nfrom pkg.sub.deep import x\n",
            "api.py": "from pkg import sub\nconnect = None\n",
            "sub/__init__.py": "",
            "sub/deep.py": "from .. import api\nfrom ..api import connect\nx = 1\n",
            "sub/shallow.py": "from pkg import connect\n",
        },
        [],
    ),
    "importing a name of one's own package's __init__ closes a circle": (
        {
            "__init__.py": "from pkg.memory import Memory\nclass Limits: ...\n",
            "memory.py": "from pkg import Limits\nclass Memory: ...\n",
        },
        [["pkg", "pkg.memory"]],
    ),
    "a module of another package runs that package's __init__ first": (
        {
            "a/__init__.py": "from pkg.a.one import f\n",
            "a/one.py": "from pkg.b.two import g\n",
            "b/__init__.py": "from pkg.b.three import h\n",
            "b/two.py": "",
            "b/three.py": "import pkg.a.one\n",
        },
        [["pkg.a", "pkg.a.one", "pkg.b", "pkg.b.three"]],
    ),
}


@pytest.mark.parametrize(("files", "expected"), _CASES.values(), ids=_CASES.keys())
def test_the_checker(tmp_path: Path, files: dict[str, str], expected: list[list[str]]) -> None:
    package = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text, encoding="utf-8")
    assert circles(import_graph(package)) == expected
