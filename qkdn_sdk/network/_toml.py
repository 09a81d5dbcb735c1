"""Checks shared by the network's TOML files (topology, role configs): each failure is a
:class:`Problem` whose text says where and what, for one error line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Problem", "get", "identifier", "tables"]


class Problem(Exception):
    pass


def get(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise Problem(f"{where}: {key} is missing")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise Problem(f"{where}: {key} must be a {kind.__name__}, not {value!r}")
    return value


def tables(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise Problem(f"{key} must be an array of tables ([[{key}]])")
    return value


def identifier(value: str, where: str) -> str:
    if not value or not value.isprintable() or "/" in value or "\\" in value or ":" in value:
        raise Problem(f"{where}: {value!r} is not a usable ID (printable, no / \\ or :)")
    return value
