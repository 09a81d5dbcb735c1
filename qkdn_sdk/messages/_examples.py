"""Deterministic example messages, built from the tables, for conformance tests and demos."""

from __future__ import annotations

import enum
import typing
from typing import Any, TypeVar

import attrs

__all__ = ["example"]

T = TypeVar("T")

_KEY = bytes(range(32))  # 256 bits, so a key_length of 256 matches it


def example(cls: type[T], *, full: bool = True, tag: str = "1", sender: str | None = None) -> T:
    """A valid instance of the message (or key) class ``cls``.

    ``full`` fills every optional parameter too; otherwise only the mandatory ones (and, for an
    "either ... or ..." rule, its first parameter). Strings carry ``tag``, so two examples can be
    told apart. Results mean success (``response="success"``, 0, or the success code). Fields
    that name the sender (``cls.claims``) are ``sender`` when given.
    """
    values: dict[str, Any] = {}
    claims = getattr(cls, "claims", ()) if sender is not None else ()
    needed = {rule.fields[0] for rule in getattr(cls, "rules", ())}
    for attribute in attrs.fields(attrs.resolve_types(cls)):  # type: ignore[type-var,arg-type]
        if attribute.default is not attrs.NOTHING and not full and attribute.name not in needed:
            continue
        if attribute.name in claims:
            values[attribute.name] = sender
        else:
            values[attribute.name] = _value(attribute.name, attribute.type, tag)
    return cls(**values)


def _value(name: str, annotation: Any, tag: str) -> Any:
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is list:
        return [_value(name, args[0], f"{tag}.{index}") for index in (1, 2)]
    if len(args) == 1:  # X | None
        return _value(name, args[0], tag)
    if attrs.has(annotation):
        return example(annotation, tag=tag)
    if isinstance(annotation, type) and issubclass(annotation, enum.IntEnum):
        return next(iter(annotation))
    if annotation is str:
        return "success" if name == "response" else f"{name}-{tag}"
    if annotation is bool:
        return False
    if annotation is int:
        return 0 if name == "response" else 256
    if annotation is bytes:
        return _KEY
    if annotation == dict[str, Any]:
        return {"note": f"{name}-{tag}", "level": 1}
    raise TypeError(f"no example for {name}: {annotation!r}")
