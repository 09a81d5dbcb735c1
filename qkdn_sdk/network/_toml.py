"""Checks shared by the network's TOML files (topology, role configs): each failure is a
:class:`Problem` whose text says where and what, for one error line."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

__all__ = ["Problem", "checked", "choice", "get", "identifier", "known_keys", "tables"]

_E = TypeVar("_E", bound=enum.Enum)


class Problem(Exception):
    pass


_KINDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "a table",
}
"""What a value of each Python type is called in TOML."""


def get(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise Problem(f"{where}: {key} is missing")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise Problem(f"{where}: {key} must be {_KINDS.get(kind, kind.__name__)}, not {value!r}")
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


def choice(
    table: Mapping[str, Any], key: str, kind: type[_E], where: str | None, default: Any = ...
) -> _E:
    """The member of the string enum ``kind`` that ``table[key]`` names. ``where`` prefixes
    the refusal (none for the top level of a file)."""
    name = get(table, key, str, where or "top level", default)
    try:
        return kind(name)
    except ValueError:
        names = [member.value for member in kind]
        prefix = f"{where}: " if where else ""
        raise Problem(f"{prefix}{key} must be one of {names}, not {name!r}") from None


def checked(
    table: Mapping[str, Any],
    key: str,
    check: Callable[[str], str],
    where: str | None,
    default: Any = ...,
) -> str:
    """The string ``table[key]`` as ``check`` takes it; the :class:`ValueError` of ``check``
    is the refusal, ``where`` its prefix (none for the top level of a file)."""
    value = get(table, key, str, where or "top level", default)
    try:
        return check(value)
    except ValueError as exc:
        prefix = f"{where}: " if where else ""
        raise Problem(f"{prefix}{exc}") from None


def known_keys(table: Mapping[str, Any], known: Collection[str], where: str | None) -> None:
    """Refuse keys of ``table`` outside ``known``; ``where`` prefixes the refusal."""
    unknown = sorted(set(table) - set(known))
    if unknown:
        prefix = f"{where}: " if where else ""
        raise Problem(f"{prefix}unknown keys {unknown} (expected {sorted(known)})")
