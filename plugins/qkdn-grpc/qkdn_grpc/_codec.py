"""Message <-> protobuf bytes for gRPC: a sans-IO codec over the messages of ``qkdn.proto``.

The mapping is the one :mod:`qkdn_grpc._schema` renders into ``qkdn.proto`` (one model drives
both, so the codec and the schema cannot disagree):

- :func:`encode` / :func:`decode`: one message as the body of a unary RPC (:func:`rpc_path` names
  the method); :func:`encode_envelope` / :func:`decode_envelope`: one message with its MessageID
  on the ``Peer.Reverse`` stream.
- Decoding builds the SDK message, so the table's validators and rules run, and refuses anything
  wrong with one :class:`~qkdn_sdk.errors.PayloadError` whose text names each field (by its
  protobuf name) and rule, as the JSON payload codec does: bytes that are not protobuf of that
  message, a field the table does not have, a JSON text that is not a JSON object, a code that
  is not one of its values, a mandatory nested object missing, a value the table refuses, an
  envelope with no body.
- Presence is kept: optional scalars are proto3 ``optional``, and an optional list is ``None``
  only when it has no items and its ``<name>_present`` flag is unset.
- Q.4164 Appendix II fields (``start_km``, ``key_id``, ``result_code``...) are converted both
  ways; their SDK companions (``key_id_extension``, the whole ``extension``) make every round trip
  exact: ``decode(type(m), encode(m)) == m`` for every valid message ``m``.

A bad input costs about what a good one does: at most
:data:`~qkdn_sdk.codecs.payload.MAX_ERRORS` problems are looked for and worded, a list stops being
checked after that many, and what the peer chose is quoted shortened.

Nothing here does I/O.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

# protobuf ships no type information: types-protobuf has it (then these ignores are unused).
from google.protobuf import unknown_fields  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from qkdn_grpc import qkdn_pb2
from qkdn_grpc._schema import (
    ERROR_MESSAGE,
    EXTENSION,
    INTERFACES,
    PACKAGE,
    FieldMap,
    Kind,
    Mapping,
    MessageMap,
    ProtoField,
    appendix_ii_renames,
    envelope_fields,
    message_map,
    proto_names,
    rename_text,
    services,
)
from qkdn_sdk.codecs.payload import MAX_DEPTH, MAX_ERRORS, deeper_than
from qkdn_sdk.errors import InvalidMessage, LocalProtocolError, PayloadError, shorten
from qkdn_sdk.messages import KeyId, Message

__all__ = [
    "MAX_JSON_DEPTH",
    "decode",
    "decode_envelope",
    "encode",
    "encode_envelope",
    "proto_name",
    "rpc_path",
    "service_of",
]

M = TypeVar("M", bound=Message)

MAX_JSON_DEPTH = MAX_DEPTH - 3
"""The deepest nesting of arrays and objects in one JSON object text. A JSON object sits at most
three levels down in a JSON payload (payload, ``key_ids``, key ID object, ``key_id_extension``),
so a message decoded here also encodes as a JSON payload (:data:`~qkdn_sdk.codecs.payload.MAX_DEPTH`
levels at most)."""

_AS_IS = frozenset({Kind.STRING, Kind.INT, Kind.BOOL, Kind.BYTES})
"""Kinds whose protobuf value is the SDK value (protobuf checked the type)."""
_SUCCESS = "success"
_ENVELOPE = "envelope"
_MAX_MESSAGE_ID = 2**32


# --- names ----------------------------------------------------------------------------------------


def proto_name(cls: type[Any]) -> str:
    """The protobuf message name of a registered message class (or a class one nests)."""
    try:
        return proto_names()[cls]
    except KeyError:
        raise ValueError(f"{cls!r} is not a registered message class") from None


def service_of(cls: type[Message]) -> str:
    """The service of ``cls``'s interface (``"Ak"``, ``"Kq1"``, ``"Ck"``, ``"KmLink"``, ``"Cq"``).

    Raises :class:`ValueError` for a message of no service (the error indication, which goes
    only in an ``Envelope``)."""
    service = INTERFACES[cls.interface].service
    if service is None:
        raise ValueError(f"{cls.__qualname__} ({cls.interface.value}) belongs to no service")
    return service


def rpc_path(cls: type[Message]) -> str:
    """The gRPC method path of a request or one-way message: ``"/qkdn.v1.Ak/KeyRequest"``.

    Raises :class:`ValueError` for a response or the error indication (they answer RPCs)."""
    service = service_of(cls)
    for rpc in services()[service]:
        if rpc.request is cls:
            return f"/{PACKAGE}.{service}/{rpc.name}"
    raise ValueError(f"{cls.__qualname__} is not a request or one-way message: it has no RPC")


_BODY_CLASSES: dict[str, type[Message]] = {
    field.name: cls for cls, field in envelope_fields().items()
}


# --- the compiled conversion of each class -------------------------------------------------------
# Each class's fields are turned once into small closures that do only their field's work, so a
# message costs its fields, not a walk of the schema model per value.

_Write = Callable[[Any, Any], None]
"""``write(pb, instance)``: set ``pb``'s fields from the attrs instance."""
_Read = Callable[[Any, str, list[str]], Any]
"""``read(pb, prefix, problems)``: the value ``pb`` carries, or ``None`` with a problem said;
``prefix`` is the path of ``pb`` in the message (``"keys[2]."``, ``""`` at the top)."""


class _Bad(ValueError):
    """A value its field refuses; the text is the rule (``expected one of 1 (success)...``)."""


class _Codec:
    __slots__ = ("pb_class", "read", "write")

    def __init__(self, pb_class: Any, write: _Write, read: _Read) -> None:
        self.pb_class = pb_class
        self.write = write
        self.read = read


_CODECS: dict[type[Any], _Codec] = {}


def _codec(cls: type[Any]) -> _Codec:
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _compile(message_map(cls))
    return codec


def _compile(plan: MessageMap) -> _Codec:
    writers = [_writer(field) for field in plan.fields]
    readers = [(field.attribute, _reader(field)) for field in plan.fields]
    cls = plan.cls
    renames = appendix_ii_renames(cls)
    error_message_in_extension = plan.error_message_in_extension

    def write(pb: Any, instance: Any) -> None:
        for step in writers:
            step(pb, instance)

    def read(pb: Any, prefix: str, problems: list[str]) -> Any:
        before = len(problems)
        if len(unknown_fields.UnknownFieldSet(pb)):
            problems.append(_unknown(pb, prefix))
        values: dict[str, Any] = {}
        for attribute, step in readers:
            if len(problems) >= MAX_ERRORS:
                return None
            values[attribute] = step(pb, prefix, problems)
        if len(problems) > before:
            return None
        if error_message_in_extension and pb.HasField(ERROR_MESSAGE):
            _error_message_in(values, pb.error_message)
        try:
            return cls(**values)
        except InvalidMessage as exc:
            problems.append(_invalid(exc, renames, prefix))
            return None

    return _Codec(getattr(qkdn_pb2, plan.name), write, read)


# --- encoding -------------------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """The protobuf bytes of ``message`` (its ``qkdn.proto`` message).

    Raises :class:`~qkdn_sdk.errors.LocalProtocolError`, and nothing else, when a value does not
    fit its field (an integer beyond 64 bits, a JSON object orjson cannot write, a value not of
    its table's type: attrs does not check types)."""
    codec = _codec_of(message)
    pb = codec.pb_class()
    _write_checked(codec, pb, message)
    data: bytes = pb.SerializeToString()
    return data


def encode_envelope(message_id: int, message: Message) -> bytes:
    """The protobuf bytes of an ``Envelope`` carrying ``message`` with ``message_id`` (the
    MessageID of the TCP frame: 0 to 2**32 - 1). Raises
    :class:`~qkdn_sdk.errors.LocalProtocolError` as :func:`encode` does, or for a bad
    ``message_id``."""
    if type(message_id) is not int or not 0 <= message_id < _MAX_MESSAGE_ID:
        raise LocalProtocolError(f"message_id must be an integer from 0 to 2**32 - 1: {message_id}")
    codec = _codec_of(message)
    envelope = qkdn_pb2.Envelope(message_id=message_id)
    body = getattr(envelope, envelope_fields()[type(message)].name)
    body.SetInParent()  # a message of no field set is still the body
    _write_checked(codec, body, message)
    data: bytes = envelope.SerializeToString()
    return data


def _codec_of(message: Message) -> _Codec:
    if type(message) not in envelope_fields():
        raise LocalProtocolError(f"{type(message).__qualname__} is not a registered message class")
    return _codec(type(message))


def _write_checked(codec: _Codec, pb: Any, message: Message) -> None:
    try:
        codec.write(pb, message)
    except orjson.JSONEncodeError as exc:
        raise LocalProtocolError(
            f"{message.spec_name} cannot be encoded: a JSON object cannot be written ({exc})"
        ) from None
    except Exception as exc:  # a value of the wrong type or range, found by protobuf or by us
        raise LocalProtocolError(
            f"{message.spec_name} cannot be encoded: a parameter is not of its table's type "
            f"({type(exc).__name__}: {shorten(str(exc), 200)})"
        ) from None


def _dumps(value: Any) -> str:
    if type(value) is not dict:
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return orjson.dumps(value).decode()


_OUT: dict[Kind, Callable[[Any], Any] | None] = {
    Kind.STRING: None,
    Kind.INT: None,
    Kind.BOOL: None,
    Kind.BYTES: None,
    Kind.JSON: _dumps,
    Kind.CODE: int,
}
"""How one value becomes its protobuf value (``None``: as it is; protobuf checks the type)."""


def _writer(field: FieldMap) -> _Write:
    name = field.field.name
    get = operator.attrgetter(field.attribute)
    flag = field.present.name if field.present is not None else None
    optional = field.optional

    def value_of(instance: Any) -> Any:
        value = get(instance)
        if value is None and not optional:
            raise TypeError(f"{field.attribute}: mandatory, got None")
        return value

    if field.mapping is Mapping.RESULT_CODE:
        return _result_writer(field, get)
    if field.mapping is Mapping.KEY_ID_STRINGS:
        return _key_ids_writer(field, value_of)
    if field.kind is Kind.MESSAGE:
        nested = _codec(field.item).write
        if field.repeated:

            def write_messages(pb: Any, instance: Any) -> None:
                items = value_of(instance)
                if items is not None:
                    if flag is not None:
                        setattr(pb, flag, True)
                    add = getattr(pb, name).add
                    for item in items:
                        nested(add(), item)

            return write_messages

        def write_message(pb: Any, instance: Any) -> None:
            item = value_of(instance)
            if item is not None:
                sub = getattr(pb, name)
                sub.SetInParent()  # present even with no field set
                nested(sub, item)

        return write_message
    convert = _OUT[field.kind]
    if field.repeated:

        def write_list(pb: Any, instance: Any) -> None:
            items = value_of(instance)
            if items is not None:
                if flag is not None:
                    setattr(pb, flag, True)
                values = items if convert is None else [convert(item) for item in items]
                getattr(pb, name).extend(values)

        return write_list

    def write_value(pb: Any, instance: Any) -> None:
        value = value_of(instance)
        if value is not None:
            setattr(pb, name, value if convert is None else convert(value))

    return write_value


def _key_ids_writer(field: FieldMap, value_of: Callable[[Any], Any]) -> _Write:
    """Appendix II ``key_id`` strings, and their extensions in the companion when any has one."""
    name, companion, flag = field.field.name, _field_name(field.companion), field.present

    def write_key_ids(pb: Any, instance: Any) -> None:
        key_ids: list[KeyId] | None = value_of(instance)
        if key_ids is None:
            return
        if flag is not None:
            setattr(pb, flag.name, True)
        getattr(pb, name).extend([key_id.key_id for key_id in key_ids])
        if any(key_id.key_id_extension is not None for key_id in key_ids):
            getattr(pb, companion).extend(
                ["" if k.key_id_extension is None else _dumps(k.key_id_extension) for k in key_ids]
            )

    return write_key_ids


def _field_name(field: ProtoField | None) -> str:
    assert field is not None, "the schema gives this mapping a companion"
    return field.name


def _is_failure(text: str) -> bool:
    """A ``response`` text that reports a failure (as :func:`qkdn_sdk.messages.failure_reason`
    reads it)."""
    return text.lower().startswith("failure")


def _first_error_message(extension: Any) -> str | None:
    """The failure text of an integer Response (SDK convention, ``failure_reason``): the
    ``error_message`` member of the first extension object that has a string one."""
    for item in extension or ():
        text = item.get(ERROR_MESSAGE) if isinstance(item, dict) else None
        if isinstance(text, str):
            return text
    return None


def _result_writer(field: FieldMap, get: Callable[[Any], Any]) -> _Write:
    """Appendix II ``result_code`` and ``error_message`` of an SDK Response (a string or an int):
    a string is 0 unless it reports a failure, and its text goes in ``error_message`` unless it
    is ``"success"``; an integer is the result code, and the failure text of the extension goes
    in ``error_message``."""
    name = field.field.name
    get_extension = operator.attrgetter(EXTENSION)
    if field.item is str:

        def write_text(pb: Any, instance: Any) -> None:
            response = get(instance)
            if type(response) is not str:
                raise TypeError(f"{field.attribute}: expected a string")
            setattr(pb, name, 1 if _is_failure(response) else 0)
            if response != _SUCCESS:
                setattr(pb, ERROR_MESSAGE, response)

        return write_text

    def write_code(pb: Any, instance: Any) -> None:
        response = get(instance)
        if type(response) is not int:
            raise TypeError(f"{field.attribute}: expected an integer")
        setattr(pb, name, response)
        text = _first_error_message(get_extension(instance)) if response else None
        if text is not None:
            setattr(pb, ERROR_MESSAGE, text)

    return write_code


# --- decoding -------------------------------------------------------------------------------------


def decode(cls: type[M], data: bytes) -> M:
    """Decode the protobuf bytes of a ``cls`` (the body of its RPC, or of its response).

    Raises :class:`~qkdn_sdk.errors.PayloadError` naming each field and rule."""
    codec = _codec(cls)
    pb = codec.pb_class()
    try:
        pb.ParseFromString(data)
    except DecodeError as exc:
        raise PayloadError(
            [f"payload: not a protobuf {proto_names()[cls]} ({shorten(str(exc), 200)})"],
            message_name=cls.spec_name,
            command_code=cls.code,
        ) from None
    message: M = _read_checked(cls, codec, pb, message_id=None)
    return message


def decode_envelope(data: bytes) -> tuple[int, Message]:
    """Decode an ``Envelope``: ``(message_id, message)``.

    Raises :class:`~qkdn_sdk.errors.PayloadError`: its ``message_id`` is the envelope's when it
    could be read, its ``command_code`` the code of the body's message when there is one."""
    envelope = qkdn_pb2.Envelope()
    try:
        envelope.ParseFromString(data)
    except DecodeError as exc:
        raise PayloadError(
            [f"envelope: not a protobuf Envelope ({shorten(str(exc), 200)})"],
            message_name=_ENVELOPE,
        ) from None
    message_id: int = envelope.message_id
    which: str | None = envelope.WhichOneof("body")
    unknown = len(unknown_fields.UnknownFieldSet(envelope)) > 0
    if which is None:
        rule = "a message this SDK does not know" if unknown else "missing"
        raise PayloadError([f"body: {rule}"], message_name=_ENVELOPE, message_id=message_id)
    if unknown:
        raise PayloadError([_unknown(envelope, "")], message_name=_ENVELOPE, message_id=message_id)
    cls = _BODY_CLASSES[which]
    body = getattr(envelope, which)
    return message_id, _read_checked(cls, _codec(cls), body, message_id=message_id)


def _read_checked(cls: type[M], codec: _Codec, pb: Any, *, message_id: int | None) -> M:
    problems: list[str] = []
    message = codec.read(pb, "", problems)
    if problems or message is None:
        if len(problems) >= MAX_ERRORS:  # checking stopped there
            problems[MAX_ERRORS:] = ["further errors not checked"]
        raise PayloadError(
            problems, message_name=cls.spec_name, command_code=cls.code, message_id=message_id
        )
    built: M = message
    return built


def _unknown(pb: Any, prefix: str) -> str:
    """Fields the table does not have are refused (the JSON codec refuses unknown names); a
    known number sent with another wire type is unknown to protobuf too."""
    unknown = unknown_fields.UnknownFieldSet(pb)
    numbers = sorted({unknown[index].field_number for index in range(min(len(unknown), 16))})
    listed = ", ".join(str(number) for number in numbers[:MAX_ERRORS])
    more = " and more" if len(unknown) > len(numbers[:MAX_ERRORS]) else ""
    where = prefix.removesuffix(".") or "payload"
    return f"{where}: unexpected field number {listed}{more} (not in the table, or not of its type)"


def _invalid(exc: InvalidMessage, renames: dict[str, str], prefix: str) -> str:
    """An SDK rule's text with the protobuf names of the fields (Appendix II renames)."""
    head, bracket, tail = exc.field.partition("[")
    return f"{prefix}{renames.get(head, head)}{bracket}{tail}: {rename_text(exc.rule, renames)}"


def _json_value(text: str) -> dict[str, Any]:
    if not text:
        raise _Bad("expected the text of a JSON object, got an empty string")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Bad(f"not valid JSON ({shorten(str(exc), 200)})") from None
    if type(value) is not dict:
        raise _Bad("expected the text of a JSON object")
    # Each level of nesting opens a bracket: with few brackets, the tree need not be walked.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and deeper_than(value, MAX_JSON_DEPTH):
        raise _Bad(f"nested deeper than {MAX_JSON_DEPTH} arrays and objects")
    return value


def _code_converter(codes: type[enum.IntEnum]) -> Callable[[int], Any]:
    members = codes._value2member_map_
    choices = ", ".join(f"{member.value} ({member.name.lower()})" for member in codes)

    def convert(raw: int) -> Any:
        member = members.get(raw)
        if member is None:
            raise _Bad(f"expected one of {choices}")
        return member

    return convert


def _reader(field: FieldMap) -> _Read:
    name = field.field.name
    flag = field.present.name if field.present is not None else None
    optional = field.optional
    if field.mapping is Mapping.RESULT_CODE:
        return _result_reader(field)
    if field.mapping is Mapping.KEY_ID_STRINGS:
        return _key_ids_reader(field)

    def absent_list(pb: Any, items: Any) -> bool:
        return not items and flag is not None and not getattr(pb, flag)

    if field.kind is Kind.MESSAGE:
        nested = _codec(field.item).read
        if field.repeated:

            def read_messages(pb: Any, prefix: str, problems: list[str]) -> Any:
                items = getattr(pb, name)
                if absent_list(pb, items):
                    return None
                values = []
                for index, item in enumerate(items):
                    values.append(nested(item, f"{prefix}{name}[{index}].", problems))
                    if len(problems) >= MAX_ERRORS:
                        break
                return values

            return read_messages

        def read_message(pb: Any, prefix: str, problems: list[str]) -> Any:
            if not pb.HasField(name):
                if not optional:
                    problems.append(f"{prefix}{name}: missing")
                return None
            return nested(getattr(pb, name), f"{prefix}{name}.", problems)

        return read_message
    convert: Callable[[Any], Any] | None = (
        _json_value
        if field.kind is Kind.JSON
        else _code_converter(field.item)
        if field.kind is Kind.CODE
        else None
    )
    if field.repeated:

        def read_list(pb: Any, prefix: str, problems: list[str]) -> Any:
            items = getattr(pb, name)
            if absent_list(pb, items):
                return None
            if convert is None:
                return list(items)
            values = []
            for index, item in enumerate(items):
                try:
                    values.append(convert(item))
                except _Bad as exc:
                    problems.append(f"{prefix}{name}[{index}]: {exc}")
                    if len(problems) >= MAX_ERRORS:
                        break
            return values

        return read_list

    def read_value(pb: Any, prefix: str, problems: list[str]) -> Any:
        if optional and not pb.HasField(name):
            return None
        value = getattr(pb, name)
        if convert is None:
            return value
        try:
            return convert(value)
        except _Bad as exc:
            problems.append(f"{prefix}{name}: {exc}")
            return None

    return read_value


def _key_ids_reader(field: FieldMap) -> _Read:
    """Appendix II ``key_id`` strings and their ``key_id_extension`` companion as KeyIds."""
    name, companion, flag = field.field.name, _field_name(field.companion), field.present

    def read_key_ids(pb: Any, prefix: str, problems: list[str]) -> Any:
        ids = getattr(pb, name)
        extensions = getattr(pb, companion)
        if extensions and len(extensions) != len(ids):
            problems.append(
                f"{prefix}{companion}: has {len(extensions)} items for {len(ids)} in {name} "
                "(as many, or none)"
            )
            return None
        if not ids and flag is not None and not getattr(pb, flag.name):
            return None
        key_ids: list[KeyId] = []
        for index, key_id in enumerate(ids):
            extension = None
            if extensions and extensions[index]:
                try:
                    extension = _json_value(extensions[index])
                except _Bad as exc:
                    problems.append(f"{prefix}{companion}[{index}]: {exc}")
            try:
                key_ids.append(KeyId(key_id=key_id, key_id_extension=extension))
            except InvalidMessage as exc:
                problems.append(f"{prefix}{name}[{index}]: {exc.rule}")
            if len(problems) >= MAX_ERRORS:
                break
        return key_ids

    return read_key_ids


def _result_reader(field: FieldMap) -> _Read:
    """The SDK Response of Appendix II ``result_code`` and ``error_message``: an integer Response
    is the result code itself (its failure text goes to ``extension``: :func:`_error_message_in`);
    a string Response is ``"success"`` for 0 without a text, else the text, made a failure text
    when the code is not 0."""
    name = field.field.name
    if field.item is int:
        return lambda pb, _prefix, _problems: getattr(pb, name)

    def read_text(pb: Any, prefix: str, problems: list[str]) -> Any:
        code: int = getattr(pb, name)
        text: str | None = pb.error_message if pb.HasField(ERROR_MESSAGE) else None
        if code == 0:
            if text is None:
                return _SUCCESS
            if _is_failure(text):
                problems.append(
                    f"{prefix}{ERROR_MESSAGE}: is a failure text but {name} is 0 (OK): "
                    f"{shorten(repr(text), 60)}"
                )
                return None
            return text
        if text is None:
            return f"failure: result code {code}"
        return text if _is_failure(text) else f"failure: {text}"

    return read_text


def _error_message_in(values: dict[str, Any], text: str) -> None:
    """The ``error_message`` of an integer Response goes first in ``extension`` as
    ``{"error_message": text}``, unless ``extension`` already reports that text (as it does when
    the SDK encoded it: nothing is added, and the round trip is exact)."""
    extension = values.get(EXTENSION)
    if _first_error_message(extension) != text:
        values[EXTENSION] = [{ERROR_MESSAGE: text}, *(extension or ())]
