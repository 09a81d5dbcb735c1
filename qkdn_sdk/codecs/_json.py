"""JSON text checks the codecs share beyond what orjson does."""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["duplicate_member"]


def duplicate_member(data: bytes, value: Any) -> str | None:
    """A member name that an object of the JSON text ``data`` has twice, at any depth, or
    ``None``. ``value`` is orjson's reading of ``data``, no deeper than :data:`MAX_DEPTH` (orjson
    writes it here: refuse a deeper one first).

    RFC 8259 clause 4 leaves such an object's meaning open, and orjson keeps the last member: a
    peer could say ``number`` twice and see which one a proxy and the KM each read. orjson
    cannot tell, so the test is made on the text, exact, for less than orjson's reading costs
    (the standard library's reader, which can tell, costs four times as much): every member of
    ``data`` has one ``:`` outside strings, and with no backslash in it (no escape) each string
    is written back as it was read, so orjson writes ``value`` with as many ``:`` as ``data``
    has exactly when it dropped no member. Otherwise (a backslash, or fewer ``:``) the standard
    library's reader, which hands each object's members over in order, finds the name.
    """
    if b"\\" not in data and orjson.dumps(value).count(b":") == data.count(b":"):
        return None
    try:
        _PAIRS.decode(data.decode())
    except _Duplicate as exc:
        return exc.name
    return None


class _Duplicate(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _members_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The object of ``pairs``; raises :class:`_Duplicate` with a name that comes twice."""
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Duplicate(name)
            seen.add(name)
    return members


_PAIRS = json.JSONDecoder(object_pairs_hook=_members_once)
