"""JSON payload codec: Message <-> payload bytes, per the DESIGN wire conventions.

One cattrs converter, configured once (:func:`make_converter`), with orjson for the bytes:

- JSON names are the attribute names (the spec parameter names in snake_case);
- absent optional parameters are omitted, never ``null`` (a received ``null`` reads as absent);
- key data (``bytes``) is base64 (RFC 4648); sizes and lengths are integers (bits);
- types are strict: ``"5"`` is not an integer, ``true`` is not an integer, a string is not a list;
- fields the table does not have are refused (extensions go in ``extension``).

A payload that breaks any of this raises one :class:`~qkdn_sdk.errors.PayloadError` whose text
names each field and rule (``number_of_keys: expected an integer``, ``key_ids[2].key_id:
missing``).

A bad payload costs about what a good one does: a list stops being checked after
:data:`MAX_ERRORS` bad items, only the first :data:`MAX_ERRORS` problems are worded, and a name
or value the peer chose is shortened before it is quoted, so neither the work nor the text grows
with what a hostile peer sends.
"""

from __future__ import annotations

import base64
import binascii
import enum
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
import orjson
from cattrs.cols import is_sequence
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn

from qkdn_sdk.errors import InvalidMessage, LocalProtocolError, PayloadError, quoted
from qkdn_sdk.messages import Message

__all__ = [
    "MAX_DEPTH",
    "MAX_ERRORS",
    "decode_payload",
    "encode_payload",
    "make_converter",
    "message_from_dict",
    "message_to_dict",
]

M = TypeVar("M", bound=Message)

MAX_DEPTH = 254
"""The deepest nesting of arrays and objects in a payload. orjson reads 1,024 levels but writes
only 254: a deeper payload is refused when decoded, so every decoded message encodes back."""


MAX_ERRORS = 5
"""The most problems one :class:`~qkdn_sdk.errors.PayloadError` reports (and the most bad items
of one list that are looked at): enough to be precise about the first errors, few enough that a
frame of 30,000 wrong items costs no more than a valid one."""


class _Expected(ValueError):
    """A value of the wrong JSON type; the text is the rule (``expected an integer``)."""


def _strict(python_type: type[Any], description: str) -> Callable[[Any, type[Any]], Any]:
    def structure(value: Any, _type: type[Any]) -> Any:
        # type() and not isinstance(): bool is an int subclass, and True is not a number of keys.
        if type(value) is not python_type:
            raise _Expected(f"expected {description}")
        return value

    return structure


def _structure_bytes(value: Any, _type: type[Any]) -> bytes:
    if type(value) is not str:
        raise _Expected("expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Expected("expected a base64 string (RFC 4648)") from None


def _structure_object(value: Any, _type: type[Any]) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Expected("expected a JSON object")
    return value


def _attrs_object(cls: Any, converter: cattrs.Converter) -> Any:
    """Nested objects (keys, key IDs, relay metadata): a JSON object is checked for before the
    generated code looks inside it, so ``[1, 1]`` reads "expected a JSON object", not Python's
    "'int' object is not subscriptable"."""
    structure_fields = make_dict_structure_fn(cls, converter)

    def structure(value: Any, _type: Any) -> Any:
        if type(value) is not dict:
            raise _Expected("expected a JSON object")
        return structure_fields(value, _type)

    return structure


def _bounded_list(list_type: Any, converter: cattrs.Converter) -> Any:
    """Lists of the wire: a JSON array, each item structured; checking stops after
    :data:`MAX_ERRORS` bad items (the notes are cattrs' own, so error paths read the same)."""
    (item_type,) = typing.get_args(list_type) or (Any,)
    structure_item = converter.get_structure_hook(item_type)

    def structure(value: Any, _type: Any) -> list[Any]:
        if type(value) is not list:
            raise _Expected("expected an array")
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(structure_item(item, item_type))
            except Exception as exc:
                note = IterableValidationNote(
                    f"Structuring {list_type} @ index {index}", index, item_type
                )
                exc.__notes__ = [*getattr(exc, "__notes__", []), note]
                errors.append(exc)
                if len(errors) == MAX_ERRORS:
                    break
        if errors:
            raise IterableValidationError(f"While structuring {list_type!r}", errors, list_type)
        return items

    return structure


def _structure_int_enum(value: Any, enum_type: type[enum.IntEnum]) -> enum.IntEnum:
    if type(value) is not int or value not in enum_type._value2member_map_:
        choices = ", ".join(f"{member.value} ({member.name.lower()})" for member in enum_type)
        raise _Expected(f"expected one of {choices}")
    return enum_type(value)


def make_converter() -> cattrs.Converter:
    """The converter of the wire conventions (exposed so transports can reuse its rules)."""
    converter = cattrs.Converter(
        forbid_extra_keys=True, omit_if_default=True, detailed_validation=True
    )
    converter.register_structure_hook(int, _strict(int, "an integer"))
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(bool, _strict(bool, "true or false"))
    converter.register_structure_hook(bytes, _structure_bytes)
    # IntEnum comes before int in a result code's MRO, so this hook wins over the int one.
    converter.register_structure_hook(enum.IntEnum, _structure_int_enum)
    converter.register_structure_hook_func(lambda cls: cls == dict[str, Any], _structure_object)
    converter.register_structure_hook_factory(attrs.has, _attrs_object)
    converter.register_structure_hook_factory(is_sequence, _bounded_list)
    converter.register_unstructure_hook(bytes, lambda data: base64.b64encode(data).decode("ascii"))

    @converter.register_unstructure_hook_factory(attrs.has)
    def _in_table_order(cls: Any, converter: cattrs.Converter) -> Any:
        # cattrs' omit_if_default puts the fields without a default (M) before the others (O);
        # the wire keeps the order of the table's rows.
        unstructure = make_dict_unstructure_fn(
            cls, converter, _cattrs_omit_if_default=converter.omit_if_default
        )
        order = [attribute.name for attribute in attrs.fields(cls)]

        def in_order(instance: Any) -> dict[str, Any]:
            payload = unstructure(instance)
            return {name: payload[name] for name in order if name in payload}

        return in_order

    return converter


_CONVERTER = make_converter()


def message_to_dict(message: Message) -> dict[str, Any]:
    """The payload object of ``message`` (absent optional parameters left out)."""
    payload: dict[str, Any] = _CONVERTER.unstructure(message)
    return payload


def encode_payload(message: Message) -> bytes:
    """The JSON payload of ``message`` as UTF-8 bytes.

    Raises :class:`~qkdn_sdk.errors.LocalProtocolError`, and nothing else, when a value cannot
    be JSON (a lone surrogate in a string; in a JSON object: an integer beyond 64 bits, a set,
    nesting deeper than :data:`MAX_DEPTH`) or is not of its field's type (attrs does not check
    types: ``ResponseToKeyRequest(keys="abc")`` can be built, and is refused here).
    """
    try:
        return orjson.dumps(message_to_dict(message))
    except orjson.JSONEncodeError as exc:
        raise LocalProtocolError(f"{message.spec_name} cannot be encoded as JSON: {exc}") from None
    except Exception as exc:  # a value of the wrong type, found by cattrs or by orjson
        raise LocalProtocolError(
            f"{message.spec_name} cannot be encoded: a parameter is not of its table's type "
            f"({type(exc).__name__})"
        ) from None


def message_from_dict(cls: type[M], payload: Any) -> M:
    """Build a ``cls`` from a decoded JSON payload.

    Raises :class:`~qkdn_sdk.errors.PayloadError` naming every field that breaks the table.
    """
    return _structure(cls, payload, may_be_too_deep=True)


def _structure(cls: type[M], payload: Any, *, may_be_too_deep: bool) -> M:
    if type(payload) is not dict:
        raise PayloadError(["payload: expected a JSON object"], message_name=cls.spec_name)
    if may_be_too_deep and _deeper_than(payload, MAX_DEPTH):
        raise PayloadError(
            [f"payload: nested deeper than {MAX_DEPTH} arrays and objects"],
            message_name=cls.spec_name,
        )
    try:
        return _CONVERTER.structure(payload, cls)
    except InvalidMessage as exc:  # a rule of the whole message (EitherMandatory, key_length)
        raise PayloadError([str(exc)], message_name=cls.spec_name) from None
    except (ClassValidationError, IterableValidationError) as exc:
        errors = cattrs.transform_error(exc, path="$", format_exception=_describe)
        readable = [_readable(error) for error in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            readable.append("further errors not checked")
        raise PayloadError(readable, message_name=cls.spec_name) from None


def decode_payload(cls: type[M], data: bytes) -> M:
    """Decode JSON payload bytes into a ``cls``.

    An empty payload reads as ``{}`` (a table whose parameters are all optional, such as Q.4162
    Table 3, may be sent with none). Raises :class:`~qkdn_sdk.errors.PayloadError`.
    """
    if not data:
        return message_from_dict(cls, {})
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(
            [f"payload: not valid JSON ({exc})"], message_name=cls.spec_name
        ) from None
    # Each level of nesting opens a bracket: with no more brackets than the limit allows, the
    # walk of the decoded tree (a third of the decoding time of a 100-key response) is not needed.
    brackets = data.count(b"[") + data.count(b"{")
    return _structure(cls, payload, may_be_too_deep=brackets > MAX_DEPTH)


def _deeper_than(payload: Any, limit: int) -> bool:
    """Whether ``payload`` nests more than ``limit`` arrays and objects (iterative: no recursion
    limit to hit)."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend(
                (item, depth + 1) for item in value.values() if isinstance(item, dict | list)
            )
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return False


def _describe(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, KeyError):
        return "missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        names = sorted(exc.extra_fields)
        text = "unexpected field " + ", ".join(quoted(name) for name in names[:MAX_ERRORS])
        return text + (f" and {len(names) - MAX_ERRORS} more" if len(names) > MAX_ERRORS else "")
    if isinstance(exc, InvalidMessage):
        # Raised by a nested object's own rule: the path so far names the object, not the field.
        return f"\0{exc.field}\0{exc.rule}"
    if isinstance(exc, _Expected):
        return str(exc)
    # Anything else comes from inside cattrs or Python; its text ("argument of type 'int' is not
    # iterable") would mean nothing to the peer, and the hooks above leave no such case known.
    return "not of the expected type"


def _readable(error: str) -> str:
    """``"expected an integer @ $.keys[2].key_id"`` -> ``"keys[2].key_id: expected an integer"``."""
    text, _, path = error.rpartition(" @ ")
    path = path.removeprefix("$").removeprefix(".")
    if text.startswith("\0"):
        _, field, rule = text.split("\0", 2)
        return f"{path}.{field}: {rule}" if path else f"{field}: {rule}"
    return f"{path or 'payload'}: {text}"
