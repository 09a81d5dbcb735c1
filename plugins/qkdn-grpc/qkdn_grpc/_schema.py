"""The protobuf schema of the qkdn-sdk messages: ``qkdn.proto``, rendered from the message registry.

Nothing here names a message class but the seven Ck messages to which Q.4164 Appendix II gives gRPC
names (:data:`APPENDIX_II`): every protobuf message, field and RPC is derived from the registered
classes by the rules below, so a message added to the registry appears in ``qkdn.proto`` once it is
rendered again (``python -m qkdn_grpc._schema``; a test fails until then).

Messages
    One per class of :func:`~qkdn_sdk.messages.all_messages`, one per attrs class they nest
    (``Key``, ``KeyId``), ``Empty`` (the answer to a one-way message) and
    ``Envelope`` (a message on the ``Peer.Reverse`` stream). A class keeps its name when no other
    registered class has it; otherwise its interface prefixes it (``AkKeyRequest``,
    ``Kq1KeyRequest``). The names of Q.4164 Appendix II Table II.1-1 win for the seven it names.
Fields
    The SDK JSON names (the attribute names), numbered in attribute order from 1. The seven
    Appendix II messages take the names of Tables II.2-1 to II.5-2 where those give one
    (:data:`APPENDIX_II_FIELDS`); what the appendix leaves "not mapped" keeps its SDK field, so
    nothing is lost. Companion fields are numbered from the field they serve: ``100 + n`` is the
    presence flag of the optional list in field ``n``, ``200 + n`` the companion Appendix II needs
    beside field ``n`` (``key_id_extension`` beside ``key_id``, ``error_message`` beside
    ``result_code``).
Types
    ``str`` string, ``int`` int64, ``bool`` bool, ``bytes`` bytes (raw; base64 is the JSON form),
    the D2.3 codes (``IntEnum``) int32 with their values in the comment (proto3 enums must start at
    0 and put their values in the package scope, where ``SUCCESS`` would clash: an int32 keeps the
    D2.3 value as it is), a nested attrs class its message, ``list[X]`` repeated, and a JSON object
    (the tables' "Object") a string holding its JSON text (``google.protobuf.Struct`` would turn
    every integer into a double).
Presence
    An optional scalar (``X | None``) is proto3 ``optional``, so absence is kept; a nested message
    has presence of its own. A repeated field cannot tell an absent list from an empty one, so each
    optional list has a ``bool <name>_present`` flag: the list is present when the flag is set or
    when it has items (a peer that never sets the flag loses only the empty list).
Services
    One per interface (:data:`INTERFACES`): a unary RPC per request and per one-way message of the
    interface, whichever side sends it, named after the class and returning its response
    (``Empty`` for a one-way message). ``Peer.Reverse`` is a stream of ``Envelope`` on which the
    serving side sends its own requests and receives their responses.
"""

from __future__ import annotations

import enum
import functools
import importlib
import re
import sys
import tempfile
import textwrap
import typing
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from qkdn_sdk.messages import (
    FieldInfo,
    Interface,
    KeyId,
    Message,
    Role,
    all_messages,
    ck,
    field_infos,
)

__all__ = [
    "APPENDIX_II",
    "APPENDIX_II_FIELDS",
    "COMPANION_OFFSET",
    "ERROR_MESSAGE",
    "EXTENSION",
    "GENERATED",
    "GENERATED_HEADER",
    "INTERFACES",
    "KEY_ID_EXTENSION",
    "PACKAGE",
    "PRESENCE_OFFSET",
    "PROTO_FILE",
    "AppendixII",
    "FieldMap",
    "InterfaceNames",
    "Kind",
    "Mapping",
    "MessageMap",
    "ProtoField",
    "Rpc",
    "appendix_ii_renames",
    "envelope_fields",
    "main",
    "message_map",
    "nested_classes",
    "proto_names",
    "protoc_arguments",
    "rename_text",
    "render_proto",
    "services",
]

PACKAGE = "qkdn.v1"
PROTO_FILE = Path(__file__).with_name("qkdn.proto")
PLUGIN_ROOT = Path(__file__).resolve().parent.parent
"""The directory protoc is run from (``-I``): the proto is ``qkdn_grpc/qkdn.proto`` under it, so
the generated module is ``qkdn_grpc.qkdn_pb2``."""

PRESENCE_OFFSET = 100
"""Field ``100 + n`` is the presence flag of the optional list in field ``n``."""
COMPANION_OFFSET = 200
"""Field ``200 + n`` is the Appendix II companion of field ``n``."""
_WIDTH = 100


# --- the rules as data ----------------------------------------------------------------------------


@attrs.frozen
class AppendixII:
    """A Ck message that Q.4164 Appendix II maps: its gRPC name (Table II.1-1) and the table that
    maps its parameters."""

    name: str
    table: str


APPENDIX_II: dict[type[Message], AppendixII] = {
    ck.KeyRelayRequestNotification: AppendixII("KeyRelayRequestNotification", "Table II.2-1"),
    ck.KeyRelayRequest: AppendixII("KeyRelayRequest", "Table II.3-1"),
    ck.ResponseToKeyRelayRequest: AppendixII("KeyRelayResponse", "Table II.3-2"),
    ck.KeyReservationRequest: AppendixII("KeyReservationRequest", "Table II.4-1"),
    ck.ResponseToKeyReservationRequest: AppendixII("KeyReservationResponse", "Table II.4-2"),
    ck.KeyAllocationRequest: AppendixII("KeyAllocationRequest", "Table II.5-1"),
    ck.ResponseToKeyAllocationRequest: AppendixII("KeyAllocationResponse", "Table II.5-2"),
}
"""The Q.4164 Appendix II messages (Table II.1-1): the only names given per message."""

APPENDIX_II_FIELDS: dict[str, str] = {
    "Source KMA ID": "start_km",
    "Destination KMA ID": "end_km",
    "Transit KMA IDs": "kma_id",
    "Key relay request ID": "keyrelayrequest_id",
    "Key IDs": "key_id",
    "Response": "result_code",
}
"""Spec parameter -> gRPC field name, as Tables II.2-1 to II.5-2 map them in every one of the seven
messages. "Application destination ID" is never mapped and "Extension" only in responses, to
``error_message`` (the failure text): both keep their SDK fields."""

EXTENSION = "extension"
"""The SDK attribute of the tables' Extension row."""
KEY_ID_EXTENSION = "key_id_extension"
"""The SDK companion of the Appendix II ``key_id`` strings: the Key ID extension of each."""
ERROR_MESSAGE = "error_message"
"""The Appendix II companion of ``result_code`` (Extension of the responses): the failure text."""


@attrs.frozen
class InterfaceNames:
    """How an interface names things in the schema."""

    prefix: str
    """Prefix of a class name that another registered class shares (``AkKeyRequest``)."""
    service: str | None
    """The service of its requests; ``None``: its messages get no RPC."""
    description: str


INTERFACES: dict[Interface, InterfaceNames] = {
    Interface.AK: InterfaceNames(
        "Ak", "Ak", "cryptographic application <-> KM (Q.4161; FG QIT4N D2.3 key supply protocol)"
    ),
    Interface.KQ1: InterfaceNames("Kq1", "Kq1", "QKD module <-> KM (Q.4162)"),
    Interface.CK: InterfaceNames(
        "Ck", "Ck", "KM <-> QKDN controller (Q.4164; FG QIT4N D2.3 routing control protocol)"
    ),
    Interface.KX: InterfaceNames("Kx", "KmLink", "KM <-> KM, the KM link (FG QIT4N D2.3)"),
    Interface.CQ: InterfaceNames(
        "Cq", "Cq", "QKD module <-> QKDN controller (Y.3800 Cq; FG QIT4N D2.3 clause 8.1)"
    ),
    Interface.ANY: InterfaceNames("Any", None, "any connection"),
}

_ROLES = {
    Role.KM: "KM",
    Role.APPLICATION: "application",
    Role.QKD_MODULE: "QKD module",
    Role.CONTROLLER: "QKDN controller",
    Role.ANY: "any peer",
}


# --- the model: how each class travels --------------------------------------------------------


class Kind(enum.Enum):
    """The protobuf type of one value."""

    STRING = "string"
    INT = "int64"
    BOOL = "bool"
    BYTES = "bytes"
    JSON = "JSON object text"
    CODE = "int32"
    MESSAGE = "message"


_SCALARS: dict[Any, Kind] = {str: Kind.STRING, int: Kind.INT, bool: Kind.BOOL, bytes: Kind.BYTES}
_PROTO_TYPES = {
    Kind.STRING: "string",
    Kind.INT: "int64",
    Kind.BOOL: "bool",
    Kind.BYTES: "bytes",
    Kind.JSON: "string",
    Kind.CODE: "int32",
}


class Mapping(enum.Enum):
    """How an attribute's value becomes protobuf fields."""

    VALUE = "value"
    """The value in one field (repeated for a list)."""
    KEY_ID_STRINGS = "key_id_strings"
    """Appendix II ``key_id``: a ``list[KeyId]`` as the key ID strings, their extensions in the
    ``key_id_extension`` companion."""
    RESULT_CODE = "result_code"
    """Appendix II ``result_code`` (integer, 0 OK) and its ``error_message`` companion."""


@attrs.frozen
class ProtoField:
    """One field as ``qkdn.proto`` declares it."""

    name: str
    number: int
    declaration: str
    """Label and type: ``"optional string"``, ``"repeated Key"``, ``"int64"``."""
    comment: str


@attrs.frozen
class FieldMap:
    """How one attribute of an SDK class travels in protobuf."""

    attribute: str
    item: Any
    """The Python type of one value (``str``, an ``IntEnum``, an attrs class, ``dict``...)."""
    kind: Kind
    optional: bool
    """The attribute may be ``None``."""
    repeated: bool
    mapping: Mapping
    field: ProtoField
    present: ProtoField | None = None
    """The presence flag of an optional list."""
    companion: ProtoField | None = None
    """``key_id_extension`` or ``error_message`` (Appendix II mappings)."""

    def proto_fields(self) -> list[ProtoField]:
        return [f for f in (self.field, self.present, self.companion) if f is not None]


@attrs.frozen
class MessageMap:
    """An SDK message class, or an attrs class it nests, as a protobuf message."""

    cls: type[Any]
    name: str
    comment: str
    fields: tuple[FieldMap, ...]
    error_message_in_extension: bool = False
    """An Appendix II message whose Response is an integer: its ``error_message`` is the
    ``error_message`` member of an ``extension`` object (SDK convention)."""


@attrs.frozen
class Rpc:
    """One unary RPC: a request or one-way message and what answers it (``None``: ``Empty``)."""

    name: str
    request: type[Message]
    response: type[Message] | None


def _unpack(annotation: Any) -> tuple[Any, bool, bool]:
    """``(item type, optional, repeated)`` of an attribute's type."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, _UnionType):
        args = typing.get_args(annotation)
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            raise TypeError(f"no protobuf type for {annotation!r}: extend qkdn_grpc._schema")
        annotation, optional = rest[0], True
    repeated = typing.get_origin(annotation) is list
    if repeated:
        (annotation,) = typing.get_args(annotation)
    return annotation, optional, repeated


_UnionType = type(int | None)


def _kind(item: Any) -> Kind:
    if isinstance(item, type) and issubclass(item, enum.IntEnum):
        return Kind.CODE
    if item in _SCALARS:
        return _SCALARS[item]
    if item == dict[str, Any]:
        return Kind.JSON
    if attrs.has(item):
        return Kind.MESSAGE
    raise TypeError(f"no protobuf type for {item!r}: extend qkdn_grpc._schema")


def _fields(cls: type[Any]) -> tuple[attrs.Attribute[Any], ...]:
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(attrs.resolve_types(cls))
    return fields


@functools.cache
def nested_classes() -> tuple[type[Any], ...]:
    """The attrs classes the messages nest (``KeyId``, ``Key``), by first use."""
    found: dict[type[Any], None] = {}

    def walk(cls: type[Any]) -> None:
        for attribute in _fields(cls):
            item, _optional, _repeated = _unpack(attribute.type)
            if attrs.has(item) and item not in found:
                found[item] = None
                walk(item)

    for cls in all_messages():
        walk(cls)
    return tuple(found)


@functools.cache
def proto_names() -> dict[type[Any], str]:
    """The protobuf message name of every registered class and nested class."""
    classes = all_messages()
    counts = Counter(cls.__name__ for cls in classes)
    names: dict[type[Any], str] = {}
    for cls in classes:
        if cls in APPENDIX_II:
            names[cls] = APPENDIX_II[cls].name
        elif counts[cls.__name__] > 1:
            names[cls] = INTERFACES[cls.interface].prefix + cls.__name__
        else:
            names[cls] = cls.__name__
    for nested in nested_classes():
        names[nested] = nested.__name__
    taken = [*names.values(), "Empty", "Envelope", "Peer"]
    taken += [each.service for each in INTERFACES.values() if each.service is not None]
    clashes = sorted(name for name, count in Counter(taken).items() if count > 1)
    if clashes:
        raise ValueError(f"protobuf names used twice: {', '.join(clashes)}")
    return names


def _row(info: FieldInfo, renames: dict[str, str]) -> str:
    """``Application source ID (O): the application that sends this message.``"""
    presence = "M" if info.mandatory else "O"
    if info.condition:
        presence = f"C: {rename_text(info.condition, renames)}"
    text = f"{info.name} ({presence})" + (f": {info.remark}" if info.remark else "")
    return text if text.endswith(".") else text + "."


def _type_note(kind: Kind, item: Any, repeated: bool) -> str:
    if kind is Kind.JSON:
        return " Each item is the text of a JSON object." if repeated else " JSON object text."
    if kind is Kind.CODE:
        values = ", ".join(f"{member.value} {member.name}" for member in item)
        return f" Values ({item.__name__}): {values}."
    if kind is Kind.BYTES:
        return " Raw bytes here (base64 is the JSON form)."
    return ""


def _declaration(kind: Kind, item: Any, optional: bool, repeated: bool) -> str:
    type_name = proto_names()[item] if kind is Kind.MESSAGE else _PROTO_TYPES[kind]
    if repeated:
        return f"repeated {type_name}"
    if optional and kind is not Kind.MESSAGE:
        return f"optional {type_name}"
    return type_name


def _presence_flag(name: str, number: int) -> ProtoField:
    return ProtoField(
        f"{name}_present",
        PRESENCE_OFFSET + number,
        "bool",
        f"SDK field: {name} is present (set whenever it is, so that an empty list is told from "
        f"an absent one; {name} with items is present whatever this says).",
    )


def appendix_ii_renames(cls: type[Any]) -> dict[str, str]:
    """SDK attribute -> Appendix II field name, in the seven Appendix II messages (else empty)."""
    if cls not in APPENDIX_II:
        return {}
    renames = _RENAMES.get(cls)
    if renames is None:
        renames = _RENAMES[cls] = _appendix_ii_renames(cls)
    return renames


_RENAMES: dict[type[Any], dict[str, str]] = {}
_MAPS: dict[type[Any], MessageMap] = {}


def _appendix_ii_renames(cls: type[Any]) -> dict[str, str]:
    return {
        attribute.name: APPENDIX_II_FIELDS[attribute.metadata["spec"].name]
        for attribute in _fields(cls)
        if attribute.metadata["spec"].name in APPENDIX_II_FIELDS
    }


def rename_text(text: str, renames: dict[str, str]) -> str:
    """``text`` (a rule of the SDK) with the SDK attribute names in ``renames`` replaced."""
    if not renames:
        return text
    pattern = r"\b(" + "|".join(re.escape(name) for name in renames) + r")\b"
    return re.sub(pattern, lambda match: renames[match.group(1)], text)


def message_map(cls: type[Any]) -> MessageMap:
    """How ``cls`` (a registered message class or a class one nests) travels in protobuf."""
    plan = _MAPS.get(cls)
    if plan is None:
        plan = _MAPS[cls] = _message_map(cls)
    return plan


def _message_map(cls: type[Any]) -> MessageMap:
    appendix = APPENDIX_II.get(cls)
    renames = appendix_ii_renames(cls)
    infos = {info.json_name: info for info in field_infos(cls)}
    fields: list[FieldMap] = []
    error_message_in_extension = False
    for number, attribute in enumerate(_fields(cls), start=1):
        if number >= PRESENCE_OFFSET:
            raise ValueError(f"{cls.__name__}: more than {PRESENCE_OFFSET - 1} fields")
        info = infos[attribute.name]
        row = _row(info, renames)
        item, optional, repeated = _unpack(attribute.type)
        kind = _kind(item)
        name = renames.get(attribute.name, attribute.name)
        declaration = _declaration(kind, item, optional, repeated)
        comment = row + _type_note(kind, item, repeated)
        companion: ProtoField | None = None
        mapping = Mapping.VALUE
        if appendix is not None and attribute.name not in renames:
            mapped = (
                "maps it to error_message, the failure text only"
                if info.name == "Extension" and _has_response(cls)
                else "does not map it"
            )
            comment = f"SDK field (Q.4164 Appendix II {appendix.table} {mapped}): {comment}"
        elif appendix is not None:
            comment = f"Q.4164 Appendix II {appendix.table} name of {row}"
            if name == "key_id":
                if item is not KeyId or not repeated:
                    raise TypeError(f"{cls.__name__}.{attribute.name}: Key IDs must be KeyId")
                mapping, kind, declaration = Mapping.KEY_ID_STRINGS, Kind.STRING, "repeated string"
                comment += " The key ID strings."
                companion = ProtoField(
                    KEY_ID_EXTENSION,
                    COMPANION_OFFSET + number,
                    "repeated string",
                    "SDK field: the Key ID extension of each key_id, in order: the text of a JSON "
                    'object, or "" for a key ID without one; empty when no key ID has one.',
                )
            elif name == "result_code":
                if optional or repeated or item not in (str, int):
                    raise TypeError(f"{cls.__name__}.{attribute.name}: Response must be str or int")
                if item is int and not any(a.name == EXTENSION for a in _fields(cls)):
                    raise TypeError(f"{cls.__name__}: an integer Response needs an Extension")
                error_message_in_extension = item is int
                mapping, kind, declaration = Mapping.RESULT_CODE, Kind.INT, "int64"
                comment += _RESULT_CODE[item]
                companion = ProtoField(
                    ERROR_MESSAGE,
                    COMPANION_OFFSET + number,
                    "optional string",
                    f"Q.4164 Appendix II {appendix.table} name of Extension:{_ERROR_MESSAGE[item]}",
                )
            else:
                comment += _type_note(kind, item, repeated)
        present = _presence_flag(name, number) if optional and repeated else None
        fields.append(
            FieldMap(
                attribute=attribute.name,
                item=item,
                kind=kind,
                optional=optional,
                repeated=repeated,
                mapping=mapping,
                field=ProtoField(name, number, declaration, comment),
                present=present,
                companion=companion,
            )
        )
    names = [proto_field.name for field in fields for proto_field in field.proto_fields()]
    clashes = sorted(name for name, count in Counter(names).items() if count > 1)
    if clashes:
        raise ValueError(f"{cls.__name__}: protobuf field names used twice: {', '.join(clashes)}")
    return MessageMap(
        cls, proto_names()[cls], _message_comment(cls), tuple(fields), error_message_in_extension
    )


_RESULT_CODE: dict[Any, str] = {
    str: (
        ' 0 (OK) unless the SDK response reports a failure (a text beginning "failure"), then '
        "1 (NG); any value but 0 reads as a failure."
    ),
    int: " The SDK integer itself: 0 success (OK), anything else a failure (1: NG).",
}
"""What ``result_code`` carries, by the SDK type of Response."""

_ERROR_MESSAGE: dict[Any, str] = {
    str: (
        ' the SDK response text whenever it is not "success". Absent: "success" with '
        'result_code 0, "failure: result code N" with any other; with a non-zero result_code '
        'a text that does not begin "failure" gets "failure: " put before it, and with 0 a '
        "text that does is refused."
    ),
    int: (
        " the failure text: the error_message member of the first extension object that has "
        "one (SDK convention), absent when none has. Received when extension lacks it, it is put "
        'first in extension as {"error_message": ...}.'
    ),
}
"""What ``error_message`` carries, by the SDK type of Response."""


def _has_response(cls: type[Any]) -> bool:
    return any(attribute.name == "response" for attribute in _fields(cls))


def _public_path(cls: type[Any]) -> str:
    return f"{cls.__module__.removesuffix('._base')}.{cls.__qualname__}"


def _message_comment(cls: type[Any]) -> str:
    if not (isinstance(cls, type) and issubclass(cls, Message)):
        summary = " ".join((cls.__doc__ or cls.__name__).split("\n\n")[0].split())
        return f"{summary} SDK class {_public_path(cls)}."
    text = (
        f"{cls.spec_name}: {cls.table}. SDK class {_public_path(cls)}, command code "
        f"0x{cls.code:04X}, {_ROLES[cls.sender]} -> {_ROLES[cls.receiver]}."
    )
    appendix = APPENDIX_II.get(cls)
    if appendix is not None:
        text += (
            f" Name from Q.4164 Appendix II Table II.1-1; field names from {appendix.table} where "
            "it maps the parameter, SDK fields for the rest."
        )
    return text


@functools.cache
def services() -> dict[str, tuple[Rpc, ...]]:
    """Service name -> its RPCs: every request and one-way message of its interface."""
    classes = all_messages()
    responses = {cls.response_type() for cls in classes} - {None}
    by_service: dict[str, list[Rpc]] = {
        names.service: [] for names in INTERFACES.values() if names.service is not None
    }
    for cls in classes:
        service = INTERFACES[cls.interface].service
        response = cls.response_type()
        if service is None or (response is None and cls in responses):
            continue
        by_service[service].append(Rpc(cls.__name__, cls, response))
    for service, rpcs in by_service.items():
        clashes = sorted(name for name, n in Counter(rpc.name for rpc in rpcs).items() if n > 1)
        if clashes:
            raise ValueError(f"service {service}: RPC names used twice: {', '.join(clashes)}")
    return {service: tuple(rpcs) for service, rpcs in by_service.items()}


def _snake(name: str) -> str:
    """``KMAuthenticationCommand`` -> ``km_authentication_command``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@functools.cache
def envelope_fields() -> dict[type[Message], ProtoField]:
    """The ``Envelope.body`` member of every message class: numbered from 2 in registry order."""
    fields: dict[type[Message], ProtoField] = {}
    for number, cls in enumerate(all_messages(), start=2):
        name = proto_names()[cls]
        fields[cls] = ProtoField(_snake(name), number, name, f"{cls.spec_name}: {cls.table}.")
    names = Counter(field.name for field in fields.values())
    clashes = sorted(name for name, count in names.items() if count > 1)
    if clashes:
        raise ValueError(f"Envelope: body names used twice: {', '.join(clashes)}")
    return fields


# --- rendering ------------------------------------------------------------------------------------

_HEADER = f"""\
qkdn.proto: the qkdn-sdk messages (ITU-T Q.4161, Q.4162, Q.4164, FG QIT4N D2.3) for gRPC.

Rendered by qkdn_grpc._schema.render_proto() from the qkdn-sdk message registry: do not edit.
Regenerate this file and qkdn_pb2.py with `python -m qkdn_grpc._schema`.

Names: a message is named after its SDK class, prefixed by its interface (Ak, Kq1, Ck, Kx, Cq)
when another class has the same name; the seven Ck messages of Q.4164 Appendix II Table II.1-1 take
its names, and their fields the names of its Tables II.2-1 to II.5-2 where those map the parameter;
every other field is the SDK JSON name. Field numbers follow the table's rows from 1;
{PRESENCE_OFFSET} + n is the presence flag of the optional list in field n, {COMPANION_OFFSET} + n
the Appendix II companion of field n.
Values: JSON objects (the tables' "Object") are strings holding the JSON text; key data and MACs are
raw bytes (base64 is the JSON form); optional scalars are proto3 optional, so absence is kept; an
optional list is present when it has items or its <name>_present flag is set. The receiver applies
the table's rules (M/O, conditions, non-empty IDs) and refuses fields the table does not have.
Services: one per interface, one unary RPC per request and per one-way message (answered with
Empty), whichever side sends it; Peer.Reverse carries, in Envelopes, the serving side's own requests
and their responses."""


def _comment(text: str, indent: str) -> list[str]:
    lines = textwrap.wrap(
        text,
        width=_WIDTH - len(indent) - 3,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return [f"{indent}// {line}" for line in lines]


def _message_lines(message: MessageMap) -> list[str]:
    lines = _comment(message.comment, "")
    lines.append(f"message {message.name} {{")
    proto_fields = sorted(
        (proto_field for field in message.fields for proto_field in field.proto_fields()),
        key=lambda proto_field: proto_field.number,
    )
    for proto_field in proto_fields:
        lines += _comment(proto_field.comment, "  ")
        lines.append(f"  {proto_field.declaration} {proto_field.name} = {proto_field.number};")
    lines.append("}")
    return lines


def _rule(title: str) -> str:
    text = f"// --- {title} "
    return text + "-" * max(3, _WIDTH - len(text))


def render_proto() -> str:
    """The text of ``qkdn.proto``, from the message registry as it is now."""
    lines: list[str] = []
    for paragraph in _HEADER.split("\n\n"):
        lines += [*_comment(" ".join(paragraph.split()), ""), "//"]
    lines.pop()
    lines += ["", 'syntax = "proto3";', "", f"package {PACKAGE};", ""]
    lines += [_rule("objects the tables nest"), ""]
    for nested in nested_classes():
        lines += [*_message_lines(message_map(nested)), ""]
    lines += _comment("The answer to a one-way message (a notification): nothing.", "")
    lines += ["message Empty {}", ""]
    interface: Interface | None = None
    for cls in all_messages():
        if cls.interface is not interface:
            interface = cls.interface
            lines += [_rule(f"{interface.value}: {INTERFACES[interface].description}"), ""]
        lines += [*_message_lines(message_map(cls)), ""]
    lines += [_rule("the reverse stream"), ""]
    lines += _comment(
        "One message on Peer.Reverse: the serving side's own request or one-way message, or the "
        "client's response to one.",
        "",
    )
    lines += ["message Envelope {"]
    lines += _comment(
        "As the MessageID of the TCP frame (Q.416x Appendix I): each sender numbers its "
        "messages, and a response carries the message_id of the request it answers.",
        "  ",
    )
    lines += ["  uint32 message_id = 1;", "  oneof body {"]
    for body in envelope_fields().values():
        lines += _comment(body.comment, "    ")
        lines.append(f"    {body.declaration} {body.name} = {body.number};")
    lines += ["  }", "}", ""]
    lines += [_rule("services"), ""]
    descriptions = {names.service: names.description for names in INTERFACES.values()}
    for service, rpcs in services().items():
        lines += _comment(f"{service}: {descriptions[service]}.", "")
        lines.append(f"service {service} {{")
        for rpc in rpcs:
            request = rpc.request
            kind = "a one-way message" if rpc.response is None else "a request"
            lines += _comment(
                f"{request.spec_name}: {request.table}. {kind.capitalize()}, "
                f"{_ROLES[request.sender]} -> {_ROLES[request.receiver]}.",
                "  ",
            )
            # Types fully qualified: in the service's scope the RPC's name hides the message's.
            answer = "Empty" if rpc.response is None else proto_names()[rpc.response]
            head = f"  rpc {rpc.name} (.{PACKAGE}.{proto_names()[request]})"
            tail = f"returns (.{PACKAGE}.{answer});"
            fits = len(head) + 1 + len(tail) <= _WIDTH
            lines += [f"{head} {tail}"] if fits else [head, f"      {tail}"]
        lines += ["}", ""]
    lines += _comment(
        "The other direction: on a connection to a server, the server sends its own requests "
        "(proactive key supply, session creation notification, key reservation...) in "
        "Envelopes on this stream and the client answers each in an Envelope with the same "
        "message_id.",
        "",
    )
    lines += ["service Peer {", "  rpc Reverse (stream Envelope) returns (stream Envelope);", "}"]
    return "\n".join(lines) + "\n"


# --- regeneration ---------------------------------------------------------------------------------


GENERATED = ("qkdn_pb2.py", "qkdn_pb2.pyi")
"""The files protoc generates from ``qkdn.proto`` (message classes and their stubs only)."""

GENERATED_HEADER = (
    "# ruff: noqa\n"
    "# fmt: off\n"
    "# mypy: ignore-errors\n"
    "# (qkdn_grpc._schema adds the three lines above; the rest is protoc's output.)\n"
)
"""Put before each generated file: neither ruff nor mypy --strict holds protoc's code to the
project's rules (its ``.pyi`` leaves ``Mapping`` without type arguments, for one)."""


def protoc_arguments(out: Path) -> list[str]:
    """The ``grpc_tools.protoc.main`` arguments that generate :data:`GENERATED` from the
    checked-in ``qkdn.proto`` into ``out/qkdn_grpc/`` (message classes only: no service stubs)."""
    return [
        "grpc_tools.protoc",
        f"--proto_path={PLUGIN_ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"{PROTO_FILE.parent.name}/{PROTO_FILE.name}",
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m qkdn_grpc._schema``: write ``qkdn.proto`` from the registry, then generate
    ``qkdn_pb2.py`` and ``qkdn_pb2.pyi`` beside it with grpc_tools.protoc (grpcio-tools)."""
    if argv:
        print("usage: python -m qkdn_grpc._schema", file=sys.stderr)
        return 2
    PROTO_FILE.write_text(render_proto(), encoding="utf-8")
    protoc: Any = importlib.import_module("grpc_tools.protoc")
    with tempfile.TemporaryDirectory() as directory:
        status: int = protoc.main(protoc_arguments(Path(directory)))
        if status != 0:
            return status
        for name in GENERATED:
            text = (Path(directory) / PROTO_FILE.parent.name / name).read_text(encoding="utf-8")
            PROTO_FILE.with_name(name).write_text(GENERATED_HEADER + text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
