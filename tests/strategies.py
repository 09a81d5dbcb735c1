"""Hypothesis strategies that build any registered message from its attrs fields.

Nothing here names a message class: the strategies read each class's fields (types, defaults,
validators) and its conditional rules, so a message added to the registry is covered by every
property test without a change here.

How the table's constraints are met:

- a field without a default (M) is always drawn; one with a default (O) is drawn or left at its
  default, or always drawn with ``full=True`` (booleans then take the non-default value, so the
  field is on the wire);
- ``identifier`` fields are non-empty strings (also where a validator wraps ``identifier``, as
  Q.4164 Table 7's Destination KM ID, empty only in a failure), ``non_empty`` lists have at
  least one member, lists of IDs (``non_empty``, ``no_empty_member``) no empty string member,
  ``at_least(n)`` integers are in ``[n, 2**53)``;
- :class:`~qkdn_sdk.messages.EitherMandatory` rules: when every field of a rule came out absent,
  one of them is drawn;
- a ``key_length`` next to a ``key`` (Q.4162 Table 1) is the bit length of that key;
- key data (``bytes``) is never empty (a key of no bits is refused by the key objects);
- ``JSONObject`` values are JSON: no NaN or infinity, integers within +-2**53.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import strategies as st

from qkdn_sdk.messages import Message, all_messages
from qkdn_sdk.messages._base import identifier, no_empty_member, non_empty

__all__ = ["any_message", "attrs_instances", "json_objects", "json_values", "messages"]

MAX_JSON_INT = 2**53
"""Integers beyond this lose precision in many JSON implementations: the strategies stay below."""

_text = st.text(max_size=12)
_ids = st.text(min_size=1, max_size=12)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_JSON_INT + 1, MAX_JSON_INT - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=6,
)
"""Any JSON value (as orjson decodes it)."""

json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(_text, json_values, max_size=3)
"""A JSON object (the tables' "Object"; an element of "Array of objects")."""


def _validators(attribute: attrs.Attribute[Any]) -> list[Any]:
    """The validators of ``attribute``, with the one each wraps (``__wrapped__``)."""
    validator = attribute.validator
    if validator is None:
        return []
    found = list(getattr(validator, "_validators", (validator,)))
    return found + [wrapped for v in found if (wrapped := getattr(v, "__wrapped__", None))]


def _minimum(attribute: attrs.Attribute[Any]) -> int | None:
    """The ``n`` of an ``at_least(n)`` validator on ``attribute``, if it has one."""
    for validator in _validators(attribute):
        if inspect.isfunction(validator) and validator.__closure__:
            minimum = inspect.getclosurevars(validator).nonlocals.get("minimum")
            if isinstance(minimum, int):
                return minimum
    return None


def _maximum_field(attribute: attrs.Attribute[Any]) -> str | None:
    """The ``other`` of an ``_at_most(other)`` validator on ``attribute``, if it has one."""
    for validator in _validators(attribute):
        if inspect.isfunction(validator) and validator.__closure__:
            other = inspect.getclosurevars(validator).nonlocals.get("other")
            if isinstance(other, str):
                return other
    return None


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(annotation, False)`` otherwise."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) != len(typing.get_args(annotation)):
            if len(args) != 1:
                raise TypeError(f"unsupported union {annotation!r}")
            return args[0], True
    return annotation, False


def _for_type(
    annotation: Any, *, is_id: bool, minimum: int | None, full: bool, filled: bool = False
) -> Any:
    """A strategy for one value of ``annotation`` (not None); ``filled``: a list that has at
    least one member."""
    if annotation is bool:
        return st.booleans()
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return st.sampled_from(list(annotation))
    if annotation is int:
        low = -MAX_JSON_INT + 1 if minimum is None else minimum
        return st.integers(low, MAX_JSON_INT - 1)
    if annotation is str:
        return _ids if is_id else _text
    if annotation is bytes:
        return st.binary(min_size=1, max_size=40)
    if annotation == dict[str, Any]:
        return json_objects
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return st.lists(
            _for_type(item, is_id=is_id, minimum=None, full=full),
            min_size=1 if filled else 0,
            max_size=3,
        )
    if attrs.has(annotation):
        return attrs_instances(annotation, full=full)
    raise TypeError(f"no strategy for {annotation!r}: extend tests/strategies.py")


def _derived(attribute: attrs.Attribute[Any], drawn: dict[str, Any]) -> Callable[[], Any] | None:
    """A value that follows from fields drawn earlier (the cross-field rules of the tables)."""
    key = drawn.get("key")
    if attribute.name == "key_length" and isinstance(key, bytes):
        return lambda: 8 * len(key)
    return None


def attrs_instances(cls: type[Any], *, full: bool = False) -> st.SearchStrategy[Any]:
    """Valid instances of the attrs class ``cls`` (a message or a key object).

    ``full=True`` populates every optional field with a non-default value.
    """
    fields = attrs.fields(attrs.resolve_types(cls))
    rules = getattr(cls, "rules", ())

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        present = {
            field.name: full or field.default is attrs.NOTHING or draw(st.booleans())
            for field in fields
        }
        for rule in rules:
            if not any(present[name] for name in rule.fields):
                present[draw(st.sampled_from(rule.fields))] = True
        drawn: dict[str, Any] = {}
        for field in fields:
            if not present[field.name]:
                continue
            annotation, _optional = _strip_optional(field.type)
            derived = _derived(field, drawn)
            if derived is not None:
                drawn[field.name] = derived()
            elif annotation is bool and full and field.default is not attrs.NOTHING:
                drawn[field.name] = not field.default
            else:
                validators = _validators(field)
                is_id = bool({identifier, non_empty, no_empty_member} & set(validators))
                drawn[field.name] = draw(
                    _for_type(
                        annotation,
                        is_id=is_id,
                        minimum=_minimum(field),
                        full=full,
                        filled=non_empty in validators,
                    )
                )
        for field in fields:  # "at most <other field>" (the ETSI 014 status counts and sizes)
            other = _maximum_field(field)
            if other is not None and field.name in drawn and other in drawn:
                drawn[field.name] = min(drawn[field.name], drawn[other])
        return cls(**drawn)

    return build()


def messages(cls: type[Message], *, full: bool = False) -> st.SearchStrategy[Message]:
    """Valid instances of the message class ``cls``."""
    strategy: st.SearchStrategy[Message] = attrs_instances(cls, full=full)
    return strategy


def any_message() -> st.SearchStrategy[Message]:
    """A valid instance of any registered message class."""
    return st.sampled_from(all_messages()).flatmap(messages)
