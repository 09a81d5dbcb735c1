"""The message model: one frozen attrs class per specification table.

Theory of operation
-------------------
A message class is an attrs class whose fields are the rows of its table. Each field carries the
spec parameter name in its metadata (:func:`spec`); a field without a default is mandatory (M), one
with ``default=None`` is optional (O). Python attribute names are the JSON names of the DESIGN wire
conventions (the spec name in snake_case), so the codec needs no renaming table.

The class keywords say what the table cannot: the TCP command code (Table I.1 of each
Recommendation, or an SDK extension code), the spec's message name, the table it comes from, and
the name of the message expected in response. Everything else is derived from the command code:
its first hex digit is the sender and its second the receiver (1 KM, 2 application, 3 QKD module,
4 QKDN controller, 0 any), the pair of roles gives the interface, and a low byte of 0x80 or above
marks an SDK extension.

Conditional rules ("Either Destination KMA ID or Application destination ID is mandatory") are data
on the class (``rules``) checked when a message is built; rules that need the request a response
answers (Q.4164 Table 2) are ``pair_rules``, checked by :func:`check_response`.

Nothing here does I/O.
"""

from __future__ import annotations

import enum
import sys
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from qkdn_sdk.errors import InvalidMessage

__all__ = [
    "FIRST_EXTENSION_LOW_BYTE",
    "EitherMandatory",
    "FieldInfo",
    "Interface",
    "JSONObject",
    "Key",
    "KeyId",
    "MandatoryIfRequestHad",
    "Message",
    "Role",
    "all_messages",
    "at_least",
    "check_response",
    "field_infos",
    "identifier",
    "message_class",
    "no_empty_member",
    "non_empty",
    "received_by",
    "spec",
]

JSONObject = dict[str, Any]
"""A JSON object, as the tables' "Object" and "Array of objects" data types."""

FIRST_EXTENSION_LOW_BYTE = 0x80
"""SDK extension codes use low bytes from 0x80 up, so they never collide with ITU-assigned codes."""


class Role(enum.Enum):
    """The functional elements that exchange messages (the digits of a command code)."""

    KM = "km"
    APPLICATION = "application"
    QKD_MODULE = "qkd_module"
    CONTROLLER = "controller"
    ANY = "any"


class Interface(enum.Enum):
    """The reference points of the QKDN (Q.4160): which pair of roles a message travels between."""

    AK = "ak"
    """Cryptographic application <-> KM (Q.4161)."""
    KQ1 = "kq1"
    """QKD module <-> KM (Q.4162)."""
    CK = "ck"
    """KM <-> QKDN controller (Q.4164)."""
    KX = "kx"
    """KM <-> KM, the KM link (FG QIT4N D2.3; SDK extension codes only)."""
    CQ = "cq"
    """QKD module <-> QKDN controller (Y.3800 Cq; FG QIT4N D2.3 clause 8.1; SDK extension codes
    only)."""
    ANY = "any"
    """Any connection (the SDK error indication)."""


# Appendix I of Q.4161/Q.4162/Q.4164: "The first two digits ... indicate" sender and receiver.
_ROLE_BY_DIGIT: dict[int, Role] = {
    0x0: Role.ANY,
    0x1: Role.KM,
    0x2: Role.APPLICATION,
    0x3: Role.QKD_MODULE,
    0x4: Role.CONTROLLER,
}

_INTERFACE_BY_ROLES: dict[frozenset[Role], Interface] = {
    frozenset({Role.APPLICATION, Role.KM}): Interface.AK,
    frozenset({Role.QKD_MODULE, Role.KM}): Interface.KQ1,
    frozenset({Role.CONTROLLER, Role.KM}): Interface.CK,
    frozenset({Role.KM}): Interface.KX,
    frozenset({Role.QKD_MODULE, Role.CONTROLLER}): Interface.CQ,
    frozenset({Role.ANY}): Interface.ANY,
}


@attrs.frozen
class FieldSpec:
    """Field metadata: the parameter name as the table writes it, and a remark."""

    name: str
    remark: str | None = None


def spec(name: str, remark: str | None = None) -> dict[str, FieldSpec]:
    """Field metadata naming the table's parameter: ``attrs.field(metadata=spec("Key ID"))``."""
    return {"spec": FieldSpec(name, remark)}


# --- validators -----------------------------------------------------------------------------------
# attrs validators that raise InvalidMessage naming the field, so a bad value reads the same
# whether a caller built it or a peer sent it.

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def at_least(minimum: int) -> _Validator:
    """Integers (when present) must be ``>= minimum`` and fit a signed 64-bit JSON integer."""

    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if not minimum <= value < 2**63:
            raise InvalidMessage(attribute.name, f"must be >= {minimum} and < 2**63, got {value}")

    return check


def identifier(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """IDs (when present) are non-empty strings."""
    if value is not None and not value:
        raise InvalidMessage(attribute.name, "must not be empty")


def non_empty(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Lists (when present) are not empty, and lists of IDs have no empty member."""
    if value is not None and not value:
        raise InvalidMessage(attribute.name, "must not be empty")
    no_empty_member(instance, attribute, value)


def no_empty_member(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Lists of IDs (when present; possibly empty) have no empty member."""
    for index, item in enumerate(value or ()):
        if isinstance(item, str) and not item:
            raise InvalidMessage(f"{attribute.name}[{index}]", "must not be empty")


# --- conditional rules ------------------------------------------------------------------------


@attrs.frozen
class EitherMandatory:
    """At least one of ``fields`` is present ("Either Destination KMA ID or Application
    destination ID is mandatory", Q.4164 Tables 1 and 3)."""

    fields: tuple[str, ...]

    def describe(self) -> str:
        return "either " + " or ".join(self.fields) + " is mandatory"

    def check(self, message: Message) -> None:
        if all(getattr(message, name) is None for name in self.fields):
            raise InvalidMessage(self.fields[0], self.describe())


@attrs.frozen
class MandatoryIfRequestHad:
    """``field`` of a response is mandatory when the request carried ``request_field``
    (Q.4164 Table 2: "Mandatory if Application destination ID is contained in the ... request")."""

    field: str
    request_field: str

    def describe(self) -> str:
        return f"{self.field} is mandatory if the request had {self.request_field}"

    def check(self, request: Message, response: Message) -> None:
        if (
            getattr(request, self.request_field, None) is not None
            and getattr(response, self.field) is None
        ):
            raise InvalidMessage(self.field, self.describe())


# --- the message base and its registry --------------------------------------------------------

_BY_CODE: dict[int, type[Message]] = {}


class Message:
    """Base of every message class. Subclasses are frozen attrs classes declared as::

        @attrs.frozen(kw_only=True, slots=False)
        class KeyRequest(Message, code=0x2101, name="Key request", table="Q.4161 Table 1",
                         response="ResponseToKeyRequest"):
            application_destination_id: str = attrs.field(metadata=spec("Application dest. ID"))

    Building an instance checks its table's rules and raises :class:`InvalidMessage` naming the
    field. (``slots=False`` keeps the class object that ``__init_subclass__`` registered.)
    """

    if typing.TYPE_CHECKING:  # every subclass is an attrs class (runtime hints must not see it)
        __attrs_attrs__: ClassVar[tuple[attrs.Attribute[Any], ...]]

    code: ClassVar[int]
    """TCP CommandCode (Q.416x Table I.1, or an SDK extension code)."""
    spec_name: ClassVar[str]
    """The message name as the specification writes it ("Key relay next hop request")."""
    table: ClassVar[str]
    """The table that defines the parameters ("Q.4164 Table 1")."""
    sender: ClassVar[Role]
    receiver: ClassVar[Role]
    interface: ClassVar[Interface]
    is_extension: ClassVar[bool]
    """True for SDK extension codes (messages the ITU-T texts name but give no code)."""
    rules: ClassVar[tuple[EitherMandatory, ...]] = ()
    pair_rules: ClassVar[tuple[MandatoryIfRequestHad, ...]] = ()
    claims: ClassVar[tuple[str, ...]] = ()
    """Fields that name the *sender* of the message ("the application that sends this message"):
    over an authenticated connection they must equal the peer's verified identity."""
    _response_name: ClassVar[str | None]

    def __init_subclass__(
        cls,
        *,
        code: int,
        name: str,
        table: str,
        response: str | None = None,
        rules: tuple[EitherMandatory, ...] = (),
        pair_rules: tuple[MandatoryIfRequestHad, ...] = (),
        claims: tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if not 0 <= code <= 0xFFFF:
            raise ValueError(f"{cls.__name__}: command code 0x{code:X} does not fit 2 bytes")
        if code in _BY_CODE:
            raise ValueError(
                f"{cls.__name__}: command code 0x{code:04X} already used by "
                f"{_BY_CODE[code].__qualname__}"
            )
        try:
            cls.sender = _ROLE_BY_DIGIT[code >> 12]
            cls.receiver = _ROLE_BY_DIGIT[(code >> 8) & 0xF]
            cls.interface = _INTERFACE_BY_ROLES[frozenset({cls.sender, cls.receiver})]
        except KeyError:
            raise ValueError(
                f"{cls.__name__}: 0x{code:04X} does not name a sender and receiver"
            ) from None
        cls.code = code
        cls.spec_name = name
        cls.table = table
        cls.is_extension = (code & 0xFF) >= FIRST_EXTENSION_LOW_BYTE
        cls.rules = rules
        cls.pair_rules = pair_rules
        if claims is not None:  # otherwise inherited (the Ck authentication messages)
            cls.claims = claims
        cls._response_name = response
        _BY_CODE[code] = cls

    def __attrs_post_init__(self) -> None:
        for rule in self.rules:
            rule.check(self)

    @classmethod
    def response_type(cls) -> type[Message] | None:
        """The message class a peer answers this message with, or ``None`` for a response or a
        one-way message."""
        try:
            return _RESPONSE_TYPES[cls]
        except KeyError:  # the first call: the class is looked up by its name once
            pass
        response: type[Message] | None = None
        if cls._response_name is not None:
            response = getattr(sys.modules[cls.__module__], cls._response_name)
        _RESPONSE_TYPES[cls] = response
        return response


_RESPONSE_TYPES: dict[type[Message], type[Message] | None] = {}


def message_class(code: int) -> type[Message]:
    """The message class of a command code. Raises :class:`KeyError` for an unknown code."""
    return _BY_CODE[code]


def all_messages() -> list[type[Message]]:
    """Every registered message class, ordered by interface and then command code low byte."""
    order = list(Interface)
    return sorted(
        _BY_CODE.values(), key=lambda cls: (order.index(cls.interface), cls.code & 0xFF, cls.code)
    )


def received_by(role: Role) -> frozenset[type[Message]]:
    """The messages the specs have ``role`` receive (the receiver digit of their command code),
    and the error indication, which any peer may get: what a server of that role accepts.
    ``received_by(Role.KM)`` holds the Ak requests of applications but not the Ak session
    creation notification (0x1206), which only a KM sends."""
    return frozenset(cls for cls in _BY_CODE.values() if cls.receiver in (role, Role.ANY))


def check_response(request: Message, response: Message) -> None:
    """Check the rules of ``response`` that depend on the ``request`` it answers.

    Raises :class:`InvalidMessage` naming the field (Q.4164 Table 2: ``destination_kma_id`` is
    mandatory if the request had ``application_destination_id``).
    """
    for rule in type(response).pair_rules:
        rule.check(request, response)


# --- field introspection (docs, catalogue, codec errors) --------------------------------------


@attrs.frozen
class FieldInfo:
    """One parameter of a table as the catalogue shows it."""

    name: str
    """The spec parameter name ("Application destination ID")."""
    json_name: str
    """Its JSON path in the payload (``keys[].key_id`` for rows of a nested key object)."""
    mandatory: bool
    condition: str | None
    """For conditional parameters (M/O "C"): the rule that makes them mandatory."""
    remark: str | None


def field_infos(cls: type[Any], prefix: str = "") -> list[FieldInfo]:
    """The parameters of an attrs message or key class, nested rows included, in table order."""
    conditions: dict[str, str] = {}
    for rule in getattr(cls, "rules", ()):
        for name in rule.fields:
            conditions[name] = rule.describe()
    for pair_rule in getattr(cls, "pair_rules", ()):
        conditions[pair_rule.field] = pair_rule.describe()
    infos: list[FieldInfo] = []
    for attribute in attrs.fields(attrs.resolve_types(cls)):
        field_spec: FieldSpec = attribute.metadata["spec"]
        json_name = prefix + attribute.name
        infos.append(
            FieldInfo(
                name=field_spec.name,
                json_name=json_name,
                mandatory=attribute.default is attrs.NOTHING,
                condition=conditions.get(attribute.name),
                remark=field_spec.remark,
            )
        )
        nested, is_list = _nested_attrs_class(attribute.type)
        if nested is not None:
            infos.extend(field_infos(nested, json_name + ("[]." if is_list else ".")))
    return infos


def _nested_attrs_class(annotation: Any) -> tuple[type[Any] | None, bool]:
    """``(C, is_list)`` when ``annotation`` is an attrs class C, a list of C, or either | None."""
    is_list = False
    while True:
        if attrs.has(annotation):
            return annotation, is_list
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if typing.get_origin(annotation) is list:
            is_list = True
        if len(args) != 1:
            return None, False
        annotation = args[0]


# --- the key objects shared by several tables -------------------------------------------------


@attrs.frozen(kw_only=True)
class Key:
    """One key with its ID: the rows under "Keys" of Q.4161 Tables 3, 9, 10 and Q.4162 Table 4.

    The key data never appears in ``repr()`` (so never in logs); on the wire it is base64.
    """

    key: bytes = attrs.field(metadata=spec("Key", "base64 of the key bytes"), repr=False)
    key_id: str = attrs.field(metadata=spec("Key ID"), validator=identifier)
    key_extension: JSONObject | None = attrs.field(
        default=None, metadata=spec("Key extension", "hash value, etc.")
    )

    def __attrs_post_init__(self) -> None:
        if not self.key:
            raise InvalidMessage("key", "must not be empty")


@attrs.frozen(kw_only=True)
class KeyId:
    """A key ID with its extension: the rows under "Key IDs" of Q.4161 Table 2 and Q.4164
    Tables 11-13."""

    key_id: str = attrs.field(metadata=spec("Key ID"), validator=identifier)
    key_id_extension: JSONObject | None = attrs.field(
        default=None, metadata=spec("Key ID extension")
    )
