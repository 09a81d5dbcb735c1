"""JSON payload codec: Message <-> payload bytes, per the DESIGN wire conventions.

One cattrs converter, configured once (:func:`make_converter`), with orjson for the bytes:

- JSON names are the attribute names (the spec parameter names in snake_case);
- absent optional parameters are omitted, never ``null`` (a received ``null`` reads as absent);
- key data (``bytes``) is base64 (RFC 4648); sizes and lengths are integers (bits);
- types are strict: ``"5"`` is not an integer, ``true`` is not an integer, a string is not a list;
- fields the table does not have are refused (extensions go in ``extension``);
- an object that names a member twice is refused, at any depth (:func:`duplicate_member`).

A payload that breaks any of this raises one :class:`~qkdn_sdk.errors.PayloadError` whose text
names each field and rule (``number_of_keys: expected an integer``, ``key_ids[2].key_id:
missing``).

A bad payload costs about what a good one does: a list stops being checked after
:data:`MAX_ERRORS` bad items, only the first :data:`MAX_ERRORS` problems are worded, and a name
or value the peer chose is shortened before it is quoted, so neither the work nor the text grows
with what a hostile peer sends.

The converter's generic hooks cost several times what orjson does, so a fast path goes first.
Each class gets, built once from its attrs fields and their types, a structure function that
takes orjson's output on trust and checks it cheaply (``type(value) is int``: no bool, no
subclass), then builds the message by its own class call, so every validator and table rule runs
as for any caller (the keys of a key response alone are built without ``Key.__init__``, after
its very checks); and an unstructure function that writes the payload object in table order and
leaves the contents of JSON objects (extensions) to orjson, under options that refuse whatever
the converter would rewrite first. Neither words an error: at the first thing it cannot vouch
for (a type, a missing or unknown field, a rule broken, a value orjson refuses) it gives up, and
the converter does the work again, so the outcome, errors and their texts included, is the
converter's. A bad payload costs what it did before, plus what the fast path spent on it before
giving up: no more than the payload would have cost had it been good.
"""

from __future__ import annotations

import base64
import binascii
import enum
import types
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

from qkdn_sdk.codecs._json import duplicate_member
from qkdn_sdk.errors import InvalidMessage, LocalProtocolError, PayloadError, quoted
from qkdn_sdk.messages import JSONObject, Key, KeyId, Message

__all__ = [
    "MAX_DEPTH",
    "MAX_ERRORS",
    "decode_payload",
    "deeper_than",
    "duplicate_member",
    "encode_payload",
    "make_converter",
    "message_from_dict",
    "message_to_dict",
]

M = TypeVar("M", bound=Message)

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects in a payload, counting the payload object: a deeper
payload is refused when decoded, and a message nested deeper is refused when encoded. orjson reads
1,024 levels and refuses to write more than 254, but its writer (3.13) overran its buffer on a
payload 251 levels deep, aborting the process; whatever a peer sends must never reach it that
deep, and 64 levels is far more than any table's extensions need."""


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
    types: ``ResponseToKeyRequest(keys="abc")`` or ``response=5`` can be built, and is refused
    here, naming the field).
    """
    data = _fast_payload(message)
    if data is not None:
        return data
    try:
        problem = _type_problem(message, type(message), "")
        if problem is not None:
            raise LocalProtocolError(f"{message.spec_name} cannot be encoded: {problem}")
        payload = message_to_dict(message)
        if not deeper_than(payload, MAX_DEPTH):
            return orjson.dumps(payload)
    except LocalProtocolError:
        raise
    except orjson.JSONEncodeError as exc:
        raise LocalProtocolError(f"{message.spec_name} cannot be encoded as JSON: {exc}") from None
    except Exception as exc:  # a value of the wrong type, found by cattrs or by orjson
        raise LocalProtocolError(
            f"{message.spec_name} cannot be encoded: a parameter is not of its table's type "
            f"({type(exc).__name__})"
        ) from None
    raise LocalProtocolError(
        f"{message.spec_name} cannot be encoded: nested deeper than {MAX_DEPTH} arrays and objects"
    )


def _type_problem(value: Any, annotation: Any, path: str) -> str | None:
    """What makes ``value`` not of its field's type ``annotation`` (the wire's types: ``True``
    is no integer, a string no list), worded with its ``path``; ``None`` when nothing does."""
    annotation, nullable = _without_none(annotation)
    if value is None:
        return None if nullable else f"{path or 'payload'}: expected a value, got null"
    expected = None
    if annotation is str:
        expected = None if isinstance(value, str) else "a string"
    elif annotation is int:
        expected = None if isinstance(value, int) and type(value) is not bool else "an integer"
    elif annotation is bool:
        expected = None if type(value) is bool else "true or false"
    elif annotation is bytes:
        expected = None if isinstance(value, bytes | bytearray) else "bytes"
    elif annotation == JSONObject:
        expected = None if isinstance(value, dict) else "a JSON object (dict)"
    elif isinstance(annotation, type) and issubclass(annotation, enum.IntEnum):
        valid = isinstance(value, annotation) or (
            type(value) is int and value in annotation._value2member_map_
        )
        expected = None if valid else f"a {annotation.__name__}"
    elif typing.get_origin(annotation) is list:
        if not isinstance(value, list | tuple):
            expected = "a list"
        else:
            (item_type,) = typing.get_args(annotation)
            for index, item in enumerate(value):
                problem = _type_problem(item, item_type, f"{path}[{index}]")
                if problem is not None:
                    return problem
    elif attrs.has(annotation):
        if not isinstance(value, annotation):
            expected = f"a {annotation.__name__}"
        else:
            for field in attrs.fields(attrs.resolve_types(annotation)):
                if not field.init:  # the converter leaves these out
                    continue
                item, default = getattr(value, field.name), field.default
                if isinstance(default, _FACTORY):
                    default = attrs.NOTHING if default.takes_self else default.factory()
                if default is not attrs.NOTHING and not item != default:  # noqa: SIM202 (as omit_if_default)
                    continue  # left out of the payload, as omit_if_default leaves it
                name = f"{path}.{field.name}" if path else field.name
                problem = _type_problem(item, field.type, name)
                if problem is not None:
                    return problem
    if expected is None:
        return None
    return f"{path or 'payload'}: expected {expected}, got {type(value).__name__}"


def message_from_dict(cls: type[M], payload: Any) -> M:
    """Build a ``cls`` from a decoded JSON payload.

    Raises :class:`~qkdn_sdk.errors.PayloadError` naming every field that breaks the table.
    """
    if type(payload) is not dict:
        raise PayloadError(["payload: expected a JSON object"], message_name=cls.spec_name)
    # The fast path refuses a JSON object nested too deep (its typed fields nest a few levels).
    message = _fast_message(cls, payload)
    if message is not None:
        return message
    if deeper_than(payload, MAX_DEPTH):
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
    message = message_from_dict(cls, payload)  # which refuses a payload nested too deep
    name = duplicate_member(data, payload)
    if name is not None:
        raise PayloadError(
            [f"payload: duplicate member {quoted(name)}"], message_name=cls.spec_name
        )
    return message


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` arrays and objects (dicts, lists and tuples, as
    orjson writes them), itself counted: ``deeper_than([[]], 1)`` is true. Level by level, with no
    recursion limit to hit however deep ``value`` goes."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        inner = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, _CONTAINERS):
                    inner.append(child)
        level = inner
        depth += 1
    return False


_CONTAINERS = (dict, list, tuple)


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


# --- the fast path ----------------------------------------------------------------------------
# Per attrs class, built on first use: a structure function (JSON object -> instance) and an
# unstructure function (instance -> JSON object), made of one hook per field. A hook takes a value
# and returns it (un)structured, or raises: _GiveUp where it does not vouch for the value, or
# whatever a class call or orjson raised. The callers catch everything and take the converter's
# path instead, so a hook may refuse more than the converter does (that costs time only) but must
# never accept what it refuses, nor return anything it would not.

_Hook = Callable[[Any], Any]

_PLAIN_JSON = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
"""orjson options that make it refuse the values the converter rewrites, or may read otherwise,
before orjson sees them (a dataclass: without its default fields; a subclass of str, int, dict or
list): whatever orjson writes under them, it writes alike from the converter's output."""


class _GiveUp(Exception):
    """The fast path does not vouch for a value: the converter decides."""


def _fast_message(cls: type[M], payload: dict[str, Any]) -> M | None:
    """``cls`` built from ``payload`` by the fast path, or ``None`` where it gives up."""
    try:
        message: M = _structure_fields(cls, 1)(payload)
    except Exception:  # anything at all: the converter decides, and words the errors
        return None
    return message


def _fast_payload(message: Message) -> bytes | None:
    """The payload of ``message`` by the fast path, or ``None`` where it gives up."""
    try:
        return orjson.dumps(_unstructure_fields(type(message), 1)(message), option=_PLAIN_JSON)
    except Exception:  # anything at all, orjson's refusals included: the converter decides
        return None


# --- the fast path: structure ------------------------------------------------------------------

# Hooks know the level their value sits at (the payload object is level 1, its fields' values level
# 2): a JSON object (an extension) that would take the payload past MAX_DEPTH is not vouched for.

_STRUCTURE_FIELDS: dict[tuple[type[Any], int], Callable[[dict[str, Any]], Any]] = {}


def _structure_fields(cls: type[Any], level: int) -> Callable[[dict[str, Any]], Any]:
    """The fast structure function of the attrs class ``cls`` at ``level`` (built once)."""
    structure = _STRUCTURE_FIELDS.get((cls, level))
    if structure is None:
        structure = _STRUCTURE_FIELDS[cls, level] = _make_structure_fields(cls, level)
    return structure


def _make_structure_fields(cls: type[Any], level: int) -> Callable[[dict[str, Any]], Any]:
    """Each field from its JSON value (``null`` is ``None`` where the type allows it), every
    mandatory field there and no field the table does not have, then ``cls(**fields)``: its
    validators and rules run as for any caller."""
    plan: list[tuple[str, bool, bool, _Hook]] = []
    for field in attrs.fields(attrs.resolve_types(cls)):
        annotation, nullable = _without_none(field.type)
        mandatory = field.default is attrs.NOTHING
        plan.append((field.name, mandatory, nullable, _structure_hook(annotation, level + 1)))

    def structure(payload: dict[str, Any]) -> Any:
        fields: dict[str, Any] = {}
        for name, mandatory, nullable, hook in plan:
            if name in payload:
                value = payload[name]
                fields[name] = None if value is None and nullable else hook(value)
            elif mandatory:
                raise _GiveUp
        if len(fields) != len(payload):  # a field the table does not have
            raise _GiveUp
        return cls(**fields)

    return structure


def _structure_hook(annotation: Any, level: int) -> _Hook:
    """The fast structure hook of a field's type (``X | None`` taken off) for a value at
    ``level``: the converter's rules, checked on orjson's output."""
    if annotation in (str, int, bool):
        return _exact(annotation)
    if annotation == JSONObject:
        return _json_object(level)
    if annotation is bytes:
        return _from_base64
    if isinstance(annotation, type) and issubclass(annotation, enum.IntEnum):
        return _int_enum_member(annotation)
    if annotation == list[Key]:
        return _keys_from_payload(level)
    if annotation == list[KeyId]:
        return _key_ids_from_payload(level)
    if typing.get_origin(annotation) is list:
        (item_type,) = typing.get_args(annotation)
        return _list_of(_structure_hook(item_type, level + 1))
    if attrs.has(annotation):
        structure_fields = _structure_fields(annotation, level)

        def structure_object(value: Any) -> Any:
            if type(value) is not dict:
                raise _GiveUp
            return structure_fields(value)

        return structure_object
    return _give_up


def _from_base64(value: Any) -> bytes:
    """Key data. ``base64.b64decode(value, validate=True)`` is this very call after
    ``value.encode("ascii")`` (CPython 3.11 to 3.13), which ``a2b_base64`` does itself, refusing
    the same strings; a test holds the two to the same outcome."""
    if type(value) is not str:
        raise _GiveUp
    return binascii.a2b_base64(value, strict_mode=True)


def _int_enum_member(enum_type: type[enum.IntEnum]) -> _Hook:
    """A result code: an integer (not a bool) that is a value of ``enum_type``, as its member."""
    members = enum_type._value2member_map_

    def member(value: Any) -> Any:
        if type(value) is not int:
            raise _GiveUp
        return members[value]

    return member


_new_object = object.__new__
_set_key = vars(Key)["key"].__set__
_set_key_id = vars(Key)["key_id"].__set__
_set_key_extension = vars(Key)["key_extension"].__set__
_set_id_of_key_id = vars(KeyId)["key_id"].__set__
_set_key_id_extension = vars(KeyId)["key_id_extension"].__set__


def _keys_from_payload(level: int) -> _Hook:
    """The hook of the ``keys`` of the key responses (at ``level``), most of the bytes of the
    busiest messages.

    ``Key.__init__`` costs a microsecond a key, so the keys are built without it, their slots
    set from values checked as it checks them and no less: a ``key_id`` that is a non-empty string
    (its ``identifier`` validator) and a ``key`` of at least one byte (its
    ``__attrs_post_init__``); a test holds ``Key`` to exactly these checks. A key that fails one
    gives up, and the converter's call of ``Key`` raises the error.
    """
    check_extension = _json_object(level + 2)

    def keys_from_payload(value: Any) -> list[Key]:
        if type(value) is not list:
            raise _GiveUp
        keys = []
        for item in value:
            if type(item) is not dict:
                raise _GiveUp
            if len(item) == 2:
                extension = None
            elif len(item) == 3 and "key_extension" in item:
                extension = item["key_extension"]
                if extension is not None:
                    check_extension(extension)
            else:
                raise _GiveUp
            encoded, key_id = item["key"], item["key_id"]  # with the length: no other field
            if type(encoded) is not str or type(key_id) is not str or not key_id:
                raise _GiveUp
            data = binascii.a2b_base64(encoded, strict_mode=True)  # as _from_base64
            if not data:
                raise _GiveUp
            key: Key = _new_object(Key)
            _set_key(key, data)
            _set_key_id(key, key_id)
            _set_key_extension(key, extension)
            keys.append(key)
        return keys

    return keys_from_payload


def _key_ids_from_payload(level: int) -> _Hook:
    """The hook of a list of key IDs (at ``level``): requests name up to hundreds of them.

    Built without ``KeyId.__init__`` as :func:`_keys_from_payload` builds keys, after its checks
    and no less: a ``key_id`` that is a non-empty string (its ``identifier`` validator); a test
    holds ``KeyId`` to exactly this check.
    """
    check_extension = _json_object(level + 2)

    def key_ids_from_payload(value: Any) -> list[KeyId]:
        if type(value) is not list:
            raise _GiveUp
        key_ids = []
        for item in value:
            if type(item) is not dict:
                raise _GiveUp
            if len(item) == 1:
                extension = None
            elif len(item) == 2 and "key_id_extension" in item:
                extension = item["key_id_extension"]
                if extension is not None:
                    check_extension(extension)
            else:
                raise _GiveUp
            key_id = item["key_id"]  # with the length: no other field
            if type(key_id) is not str or not key_id:
                raise _GiveUp
            built: KeyId = _new_object(KeyId)
            _set_id_of_key_id(built, key_id)
            _set_key_id_extension(built, extension)
            key_ids.append(built)
        return key_ids

    return key_ids_from_payload


# --- the fast path: unstructure ----------------------------------------------------------------

_UNSTRUCTURE_FIELDS: dict[tuple[type[Any], int], Callable[[Any], dict[str, Any]]] = {}

_FACTORY = typing.cast(type[Any], attrs.Factory)  # a class, which attrs' stubs type a function


def _unstructure_fields(cls: type[Any], level: int) -> Callable[[Any], dict[str, Any]]:
    """The fast unstructure function of the attrs class ``cls`` at ``level`` (built once)."""
    unstructure = _UNSTRUCTURE_FIELDS.get((cls, level))
    if unstructure is None:
        unstructure = _UNSTRUCTURE_FIELDS[cls, level] = _make_unstructure_fields(cls, level)
    return unstructure


def _make_unstructure_fields(cls: type[Any], level: int) -> Callable[[Any], dict[str, Any]]:
    """The fields in table order, each as the converter writes it; a field with a default is left
    out as ``omit_if_default`` leaves it, when ``value != default`` is false (``None``; ``False``
    for ``closing``)."""
    plan: list[tuple[str, Any, _Hook]] = []
    for field in attrs.fields(attrs.resolve_types(cls)):
        if not field.init:  # the converter leaves these out
            continue
        hook = _unstructure_hook(_without_none(field.type)[0], level + 1)
        if isinstance(field.default, _FACTORY) or field.converter is not None:
            hook = _give_up  # the converter compares with a default made or converted anew
        plan.append((field.name, field.default, hook))

    def unstructure(instance: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for name, default, hook in plan:
            value = getattr(instance, name)
            if default is attrs.NOTHING or value != default:
                payload[name] = hook(value)
        return payload

    return unstructure


def _unstructure_hook(annotation: Any, level: int) -> _Hook:
    """The fast unstructure hook of a field's type (``X | None`` taken off) for a value at
    ``level``. A string, integer or boolean of exactly its type goes as it is; any other value
    gives up, and the slow path says what is wrong with it."""
    if annotation in (str, int, bool):
        return _exact(annotation)
    if annotation == JSONObject:
        # Its contents are orjson's to write or refuse (_PLAIN_JSON), within MAX_DEPTH.
        return _json_object(level)
    if annotation is bytes:
        return _to_base64
    if isinstance(annotation, type) and issubclass(annotation, enum.IntEnum):
        return _int_enum_value(annotation)
    if annotation == list[Key]:
        return _keys_to_payload(level)
    if typing.get_origin(annotation) is list:
        (item_type,) = typing.get_args(annotation)
        return _list_of(_unstructure_hook(item_type, level + 1))
    if attrs.has(annotation):
        unstructure_fields = _unstructure_fields(annotation, level)

        def unstructure_object(value: Any) -> Any:
            if type(value) is not annotation:
                raise _GiveUp
            return unstructure_fields(value)

        return unstructure_object
    return _give_up


def _to_base64(value: Any) -> str:
    """Key data as base64 text (``base64.b64encode`` is this call)."""
    if type(value) is not bytes:
        raise _GiveUp
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def _int_enum_value(enum_type: type[enum.IntEnum]) -> _Hook:
    """A member of ``enum_type`` as its integer."""

    def value_of(value: Any) -> Any:
        if type(value) is not enum_type:
            raise _GiveUp
        return value._value_

    return value_of


def _keys_to_payload(level: int) -> _Hook:
    """The hook of the ``keys`` of the key responses (at ``level``) as
    :func:`_unstructure_fields` writes them, unrolled: ``key`` as base64, ``key_id`` as it is,
    ``key_extension`` unless ``None``."""
    write_extension = _json_object(level + 2)

    def keys_to_payload(value: Any) -> list[dict[str, Any]]:
        if type(value) is not list:
            raise _GiveUp
        payloads = []
        for key in value:
            if type(key) is not Key or type(key.key) is not bytes or type(key.key_id) is not str:
                raise _GiveUp
            payload: dict[str, Any] = {
                "key": binascii.b2a_base64(key.key, newline=False).decode("ascii"),
                "key_id": key.key_id,
            }
            extension = key.key_extension
            if extension is not None:
                payload["key_extension"] = write_extension(extension)
            payloads.append(payload)
        return payloads

    return keys_to_payload


# --- the fast path: shared hooks ---------------------------------------------------------------


def _give_up(_value: Any) -> Any:
    """The hook of a type the fast path does not know: the converter codes it."""
    raise _GiveUp


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(annotation, False)`` for any other annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 2:
        if args[1] is type(None):
            return args[0], True
        if args[0] is type(None):
            return args[1], True
    return annotation, False


def _json_object(level: int) -> _Hook:
    """A JSON object (a ``dict`` exactly) at ``level`` that keeps the payload within
    :data:`MAX_DEPTH`, as it is."""
    depth = MAX_DEPTH - level + 1  # the levels the object may take, itself counted

    def check(value: Any) -> Any:
        if type(value) is not dict:
            raise _GiveUp
        for item in value.values():  # most objects hold no array or object: no walk
            if isinstance(item, _CONTAINERS):
                if deeper_than(value, depth):
                    raise _GiveUp
                break
        return value

    return check


def _exact(python_type: type[Any]) -> _Hook:
    """A value of ``python_type`` exactly (``True`` is not an integer), as it is."""

    def check(value: Any) -> Any:
        if type(value) is not python_type:
            raise _GiveUp
        return value

    return check


def _list_of(item_hook: _Hook) -> _Hook:
    """A list (not a tuple, not a string), each item through ``item_hook``, as a new list."""

    def each(value: Any) -> list[Any]:
        if type(value) is not list:
            raise _GiveUp
        return [item_hook(item) for item in value]

    return each
