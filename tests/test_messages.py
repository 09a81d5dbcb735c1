"""The message registry and the table rules, checked against the specification texts.

The expected codes, names and M/O values below are transcribed by hand from the spec tables
(Table I.1 of Q.4161, Q.4162 and Q.4164; the parameter tables of clause 8), not read from the
code under test.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs
import pytest

from qkdn_sdk.errors import InvalidMessage, LocalProtocolError
from qkdn_sdk.messages import (
    FIRST_EXTENSION_LOW_BYTE,
    Interface,
    Key,
    KeyId,
    Message,
    Role,
    ak,
    all_messages,
    check_response,
    ck,
    failure_reason,
    failure_response,
    field_infos,
    kq1,
    kx,
    message_class,
    mgmt,
)

# Q.4161 Table I.1
AK_CODES = {
    0x2101: "Key request",
    0x2102: "Key request with ID",
    0x1203: "Response to key request",
    0x2104: "Session creation request",
    0x1205: "Response to session creation request",
    0x1206: "Session creation notification",
    0x2107: "Response to session creation notification",
    0x2108: "Key request with session ID",
    0x1209: "Response to key request with session ID",
    0x120A: "Proactive key supply",
    0x210B: "Response to proactive key supply",
}
# Q.4162 Table I.1
KQ1_CODES = {
    0x3101: "Key supply",
    0x1302: "Response to key supply",
    0x1303: "Key request",
    0x3104: "Response to key request",
}
# Q.4164 (consent 2023-10) Table I.1
CK_CODES = {
    0x1401: "Key relay next hop request",
    0x4102: "Response to key relay next hop request",
    0x1403: "Key relay request notification",
    0x4104: "Key relay request",
    0x1405: "Response to key relay request",
    0x1406: "Session creation request",
    0x4107: "Response to session creation request",
    0x4108: "Session creation notification",
    0x1409: "Response to session creation notification",
    0x410A: "Key reservation request",
    0x140B: "Response to key reservation request",
    0x410C: "Key allocation request",
    0x140D: "Response to key allocation request",
}
ITU_CODES = {
    "Q.4161": (Interface.AK, AK_CODES),
    "Q.4162": (Interface.KQ1, KQ1_CODES),
    "Q.4164": (Interface.CK, CK_CODES),
}
ALL_ITU_CODES = {**AK_CODES, **KQ1_CODES, **CK_CODES}

# Appendix I of each Recommendation: "The first two digits ... indicate" sender and receiver.
ROLE_DIGITS = {
    0x0: Role.ANY,
    0x1: Role.KM,
    0x2: Role.APPLICATION,
    0x3: Role.QKD_MODULE,
    0x4: Role.CONTROLLER,
}

MESSAGES = all_messages()


def _id(cls: type[Message]) -> str:
    return f"0x{cls.code:04X}-{cls.__name__}"


# --- the registry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recommendation", "interface", "code", "name"),
    [
        (recommendation, interface, code, name)
        for recommendation, (interface, codes) in ITU_CODES.items()
        for code, name in codes.items()
    ],
    ids=lambda value: f"0x{value:04X}" if isinstance(value, int) else None,
)
def test_itu_code_is_registered_with_spec_name_and_table(
    recommendation: str, interface: Interface, code: int, name: str
) -> None:
    cls = message_class(code)
    assert cls.code == code
    assert cls.spec_name == name
    assert cls.interface is interface
    assert not cls.is_extension
    # In all three Recommendations the code's low byte is the number of the parameter table.
    assert cls.table == f"{recommendation} Table {code & 0xFF}"


def test_the_itu_codes_are_exactly_those_of_the_tables() -> None:
    assigned = {cls.code for cls in MESSAGES if not cls.is_extension}
    assert assigned == set(ALL_ITU_CODES)


def test_all_messages_lists_each_class_once_and_message_class_finds_it() -> None:
    codes = [cls.code for cls in MESSAGES]
    assert len(codes) == len(set(codes))
    for cls in MESSAGES:
        assert message_class(cls.code) is cls


def test_unknown_code_is_a_key_error() -> None:
    unused = next(code for code in range(0x0081, 0xFFFF) if code not in {c.code for c in MESSAGES})
    with pytest.raises(KeyError):
        message_class(unused)


@pytest.mark.parametrize("cls", [cls for cls in MESSAGES if cls.is_extension], ids=_id)
def test_extension_codes_use_low_bytes_from_0x80(cls: type[Message]) -> None:
    assert cls.code & 0xFF >= FIRST_EXTENSION_LOW_BYTE
    assert cls.code not in ALL_ITU_CODES


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
def test_is_extension_follows_the_low_byte(cls: type[Message]) -> None:
    assert cls.is_extension == (cls.code & 0xFF >= 0x80)


def test_spec_extensions_exist_for_every_interface() -> None:
    interfaces = {cls.interface for cls in MESSAGES if cls.is_extension}
    assert {Interface.AK, Interface.CK, Interface.KX, Interface.CQ, Interface.ANY} <= interfaces


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
def test_sender_and_receiver_are_the_first_two_digits(cls: type[Message]) -> None:
    assert cls.sender is ROLE_DIGITS[cls.code >> 12]
    assert cls.receiver is ROLE_DIGITS[(cls.code >> 8) & 0xF]


@pytest.mark.parametrize(
    ("code", "sender", "receiver", "interface"),
    [
        (0x2101, Role.APPLICATION, Role.KM, Interface.AK),
        (0x1203, Role.KM, Role.APPLICATION, Interface.AK),
        (0x3101, Role.QKD_MODULE, Role.KM, Interface.KQ1),
        (0x1303, Role.KM, Role.QKD_MODULE, Interface.KQ1),
        (0x1401, Role.KM, Role.CONTROLLER, Interface.CK),
        (0x4102, Role.CONTROLLER, Role.KM, Interface.CK),
        (0x1183, Role.KM, Role.KM, Interface.KX),
        (0x3480, Role.QKD_MODULE, Role.CONTROLLER, Interface.CQ),
        (0x4382, Role.CONTROLLER, Role.QKD_MODULE, Interface.CQ),
        (0x0080, Role.ANY, Role.ANY, Interface.ANY),
    ],
)
def test_direction_of_known_codes(
    code: int, sender: Role, receiver: Role, interface: Interface
) -> None:
    cls = message_class(code)
    assert (cls.sender, cls.receiver, cls.interface) == (sender, receiver, interface)


@pytest.mark.parametrize(
    "cls", [cls for cls in MESSAGES if cls.response_type() is not None], ids=_id
)
def test_response_goes_back_the_way_the_request_came(cls: type[Message]) -> None:
    response = cls.response_type()
    assert response is not None
    assert message_class(response.code) is response
    assert (response.sender, response.receiver) == (cls.receiver, cls.sender)
    assert response.interface is cls.interface


@pytest.mark.parametrize(
    ("request_code", "response_code"),
    [
        (0x2101, 0x1203),
        (0x2102, 0x1203),
        (0x2104, 0x1205),
        (0x1206, 0x2107),
        (0x2108, 0x1209),
        (0x120A, 0x210B),
        (0x3101, 0x1302),
        (0x1303, 0x3104),
        (0x1401, 0x4102),
        (0x4104, 0x1405),
        (0x1406, 0x4107),
        (0x4108, 0x1409),
        (0x410A, 0x140B),
        (0x410C, 0x140D),
    ],
)
def test_itu_request_response_pairs(request_code: int, response_code: int) -> None:
    response = message_class(request_code).response_type()
    assert response is not None
    assert response.code == response_code


@pytest.mark.parametrize("code", sorted(ALL_ITU_CODES))
def test_itu_responses_expect_no_answer(code: int) -> None:
    cls = message_class(code)
    if cls.spec_name.startswith("Response to"):
        assert cls.response_type() is None


def test_error_indication_is_one_way_on_any_connection() -> None:
    assert mgmt.ErrorIndication.response_type() is None
    assert mgmt.ErrorIndication.interface is Interface.ANY
    assert mgmt.ErrorIndication.is_extension


# --- fields: spec names and M/O -------------------------------------------------------------


def _mo(cls: type[Any]) -> dict[str, tuple[str, str]]:
    """json_name -> (spec parameter name, "M" / "O" / "C") for the rows of a table."""
    return {
        info.json_name: (info.name, "C" if info.condition else ("M" if info.mandatory else "O"))
        for info in field_infos(cls)
    }


@pytest.mark.parametrize(
    ("cls", "rows"),
    [
        (
            ak.KeyRequest,  # Q.4161 Table 1
            {
                "application_source_id": ("Application source ID", "O"),
                "application_destination_id": ("Application destination ID", "M"),
                "application_name": ("Application name", "O"),
                "number_of_keys": ("Number of keys", "O"),
                "size_of_key": ("Size of key", "O"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            ak.KeyRequestWithId,  # Q.4161 Table 2
            {
                "application_source_id": ("Application source ID", "M"),
                "application_destination_id": ("Application destination ID", "O"),
                "application_name": ("Application name", "O"),
                "key_ids": ("Key IDs", "M"),
                "key_ids[].key_id": ("Key ID", "M"),
                "key_ids[].key_id_extension": ("Key ID extension", "O"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            ak.ResponseToKeyRequest,  # Q.4161 Table 3
            {
                "keys": ("Keys", "M"),
                "keys[].key": ("Key", "M"),
                "keys[].key_id": ("Key ID", "M"),
                "keys[].key_extension": ("Key extension", "O"),
                "response": ("Response", "M"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            ak.ResponseToSessionCreationRequest,  # Q.4161 Table 5
            {
                "session_id": ("Session ID", "M"),
                "response": ("Response", "M"),
                "source_km_id": ("Source KM ID", "O"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            kq1.KeySupply,  # Q.4162 Table 1
            {
                "key": ("Key", "M"),
                "key_id": ("Key ID", "M"),
                "qkd_module_id": ("QKD module ID", "O"),
                "matching_qkd_module_id": ("Matching QKD module ID", "O"),
                "key_length": ("Key length", "O"),
                "generation_time_stamp": ("Generation time stamp", "O"),
                "hash_value": ("Hash value", "O"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            kq1.KeyRequest,  # Q.4162 Table 3
            {
                "number_of_keys": ("Number of keys", "O"),
                "size_of_key": ("Size of key", "O"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            ck.KeyRelayNextHopRequest,  # Q.4164 Table 1
            {
                "source_kma_id": ("Source KMA ID", "O"),
                "destination_kma_id": ("Destination KMA ID", "C"),
                "application_destination_id": ("Application destination ID", "C"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            ck.ResponseToKeyRelayNextHopRequest,  # Q.4164 Table 2
            {
                "source_kma_id": ("Source KMA ID", "O"),
                "destination_kma_id": ("Destination KMA ID", "C"),
                "next_kma_ids": ("Next KMA IDs", "M"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            ck.KeyRelayRequest,  # Q.4164 Table 4
            {
                "source_kma_id": ("Source KMA ID", "O"),
                "destination_kma_id": ("Destination KMA ID", "C"),
                "transit_kma_ids": ("Transit KMA IDs", "M"),
                "key_relay_request_id": ("Key relay request ID", "O"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            ck.ResponseToSessionCreationRequest,  # Q.4164 Table 7
            {
                "session_id": ("Session ID", "M"),
                "response": ("Response", "M"),
                "destination_km_id": ("Destination KM ID", "M"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            ck.SessionCreationNotification,  # Q.4164 Table 8
            {
                "application_source_id": ("Application source ID", "M"),
                "application_destination_id": ("Application destination ID", "M"),
                "session_id": ("Session ID", "M"),
                "source_km_id": ("Source KM ID", "M"),
                "number_of_keys": ("Number of keys", "O"),
                "extension": ("Extension", "O"),
            },
        ),
        (
            ck.ResponseToKeyAllocationRequest,  # Q.4164 Table 13
            {
                "source_kma_id": ("Source KMA ID", "O"),
                "destination_kma_id": ("Destination KMA ID", "O"),
                "application_destination_id": ("Application destination ID", "O"),
                "key_ids": ("Key IDs", "O"),
                "key_ids[].key_id": ("Key ID", "M"),
                "key_ids[].key_id_extension": ("Key ID extension", "O"),
                "response": ("Response", "M"),
                "extension": ("Extension", "O"),
            },
        ),
    ],
    ids=lambda value: value.table if isinstance(value, type) else "",
)
def test_parameters_and_mo_follow_the_table(
    cls: type[Message], rows: dict[str, tuple[str, str]]
) -> None:
    table = _mo(cls)
    assert list(table) == list(rows), "rows missing, extra or out of table order"
    assert table == rows


def test_table_order_is_the_attrs_field_order() -> None:
    assert [field.name for field in attrs.fields(ak.KeyRequest)] == [
        "application_source_id",
        "application_destination_id",
        "application_name",
        "number_of_keys",
        "size_of_key",
        "extension",
    ]


@pytest.mark.parametrize("cls", MESSAGES, ids=_id)
def test_every_field_names_its_spec_parameter(cls: type[Message]) -> None:
    for info in field_infos(cls):
        assert info.name.strip(), info.json_name
        assert info.json_name.replace("[]", "").replace(".", "_").isidentifier()


def test_mandatory_field_missing_is_refused() -> None:
    with pytest.raises(TypeError, match="application_destination_id"):
        ak.KeyRequest()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="destination_km_id"):
        ck.ResponseToSessionCreationRequest(  # type: ignore[call-arg]
            session_id="s", response="success"
        )


def test_optional_fields_default_to_absent() -> None:
    request = ak.KeyRequest(application_destination_id="app-b")
    assert request.application_source_id is None
    assert request.number_of_keys is None
    assert request.extension is None


# --- conditional rules (Q.4164 Tables 1 to 4) ------------------------------------------------


@pytest.mark.parametrize("cls", [ck.KeyRelayNextHopRequest, ck.KeyRelayRequestNotification])
def test_either_destination_is_mandatory(cls: type[Message]) -> None:
    with pytest.raises(InvalidMessage) as caught:
        cls(source_kma_id="kma-a")
    assert caught.value.field == "destination_kma_id"
    assert "destination_kma_id" in str(caught.value)
    assert "application_destination_id" in str(caught.value)
    assert isinstance(caught.value, LocalProtocolError)
    assert caught.value.http_status == 400


@pytest.mark.parametrize("cls", [ck.KeyRelayNextHopRequest, ck.KeyRelayRequestNotification])
def test_either_destination_alone_is_enough(cls: type[Message]) -> None:
    by_kma = cls(destination_kma_id="kma-b")
    by_application = cls(application_destination_id="app-b")
    both = cls(destination_kma_id="kma-b", application_destination_id="app-b")
    assert by_kma.destination_kma_id == "kma-b"  # type: ignore[attr-defined]
    assert by_application.application_destination_id == "app-b"  # type: ignore[attr-defined]
    assert both != by_kma


@pytest.mark.parametrize(
    ("request_cls", "response_cls", "response_fields"),
    [
        (ck.KeyRelayNextHopRequest, ck.ResponseToKeyRelayNextHopRequest, {"next_kma_ids": ["k"]}),
        (ck.KeyRelayRequestNotification, ck.KeyRelayRequest, {"transit_kma_ids": ["k"]}),
    ],
)
def test_destination_kma_mandatory_if_request_had_application_destination(
    request_cls: type[Message], response_cls: type[Message], response_fields: dict[str, Any]
) -> None:
    by_application = request_cls(application_destination_id="app-b")
    by_kma = request_cls(destination_kma_id="kma-b")
    without = response_cls(**response_fields)
    with_destination = response_cls(destination_kma_id="kma-b", **response_fields)

    with pytest.raises(InvalidMessage) as caught:
        check_response(by_application, without)
    assert caught.value.field == "destination_kma_id"
    assert "application_destination_id" in caught.value.rule

    check_response(by_application, with_destination)
    check_response(by_kma, without)
    check_response(by_kma, with_destination)


def test_a_next_hop_answer_that_gives_no_hop_need_not_name_the_destination() -> None:
    """Q.4164 Table 2: Destination KMA ID is mandatory when the request named the destination
    application; an answer with no Next KMA IDs (none is available: the request failed) may
    leave it out, as a controller that does not know the application cannot name its KM."""
    request = ck.KeyRelayNextHopRequest(application_destination_id="app-x")
    none_available = ck.ResponseToKeyRelayNextHopRequest(
        next_kma_ids=[], extension=[{"error_message": "failure: unknown application"}]
    )
    check_response(request, none_available)
    assert failure_reason(none_available) == "failure: unknown application"


def test_next_hop_and_session_failures_fill_their_own_tables() -> None:
    """Q.4164 Tables 2 and 7 carry a failure: Table 2 with no Next KMA IDs and the reason in
    the Extension, Table 7 with its Response, a session ID of its own and, when the request
    gives no destination KM, an empty Destination KM ID (allowed only in a failure)."""
    hop = failure_response(
        ck.ResponseToKeyRelayNextHopRequest,
        "unknown destination KM 'km-x'",
        echo={"source_kma_id": "km-a", "destination_kma_id": "km-x", "extension": [{"a": 1}]},
    )
    assert hop == ck.ResponseToKeyRelayNextHopRequest(
        source_kma_id="km-a",
        destination_kma_id="km-x",
        next_kma_ids=[],
        extension=[{"error_message": "failure: unknown destination KM 'km-x'"}],
    )
    assert failure_reason(hop) == "failure: unknown destination KM 'km-x'"
    assert failure_reason(ck.ResponseToKeyRelayNextHopRequest(next_kma_ids=[])) == (
        "failure: no route: the controller names no KMA available as the next hop"
    )
    assert failure_reason(ck.ResponseToKeyRelayNextHopRequest(next_kma_ids=["km-b"])) is None

    session = failure_response(ck.ResponseToSessionCreationRequest, "unknown application")
    assert isinstance(session, ck.ResponseToSessionCreationRequest)
    assert (session.response, session.destination_km_id) == ("failure: unknown application", "")
    assert str(uuid.UUID(session.session_id)) == session.session_id
    with pytest.raises(InvalidMessage, match="destination_km_id: must not be empty"):
        ck.ResponseToSessionCreationRequest(
            session_id="s", response="success", destination_km_id=""
        )


def test_centralized_routing_pairs_each_response_with_its_own_request() -> None:
    """Q.4164 Figure 2: the key relay request notification is one-way; the controller's key
    relay request is a request of its own, answered by the response to key relay request."""
    assert ck.KeyRelayRequestNotification.response_type() is None
    assert ck.KeyRelayRequest.response_type() is ck.ResponseToKeyRelayRequest
    refusal = ck.KeyRelayRequest(
        transit_kma_ids=[], extension=[{"error_message": "failure: no route"}]
    )
    assert refusal.transit_kma_ids == []
    with pytest.raises(InvalidMessage, match=r"transit_kma_ids\[1\]"):
        ck.KeyRelayRequest(transit_kma_ids=["km-b", ""])


def test_check_response_without_pair_rules_accepts_anything() -> None:
    check_response(
        ak.KeyRequest(application_destination_id="app-b"),
        ak.ResponseToKeyRequest(keys=[], response="failure: insufficient keys"),
    )


# --- key data never in repr --------------------------------------------------------------------

SECRET = b"\x5a\xc3\x96\x0f-TOP-SECRET-KEY-BYTES"


@pytest.mark.parametrize(
    "value",
    [
        Key(key=SECRET, key_id="k-1"),
        ak.ResponseToKeyRequest(keys=[Key(key=SECRET, key_id="k-1")], response="success"),
        kq1.KeySupply(key=SECRET, key_id="k-1", key_length=8 * len(SECRET)),
        kq1.ResponseToKeyRequest(keys=[Key(key=SECRET, key_id="k-1")], response="success"),
        kx.KeyRelay(
            key_relay_request_id="r-1",
            sender_kma_id="kma-a",
            source_kma_id="kma-a",
            destination_kma_id="kma-c",
            link_key_ids=["k-1"],
            encrypted_metadata=SECRET + b"-metadata",
            encrypted_key=SECRET,
            integrity_value=SECRET + b"-mac",
            message_authentication_code=SECRET + b"-hop",
        ),
    ],
    ids=lambda value: type(value).__qualname__,
)
def test_key_data_is_never_in_repr(value: object) -> None:
    text = repr(value) + str(value)
    assert "TOP-SECRET" not in text
    assert repr(SECRET) not in text
    assert SECRET.hex() not in text
    assert "k-1" in text  # the key ID is fine to log


def test_authentication_info_is_not_in_repr() -> None:
    command = mgmt.AuthenticationCommand(sender_id="app-a", authentication_info="hunter2-secret")
    hello = kx.Hello(sender_id="km-a", authentication_info="hunter2-secret")
    assert "hunter2" not in repr(command)
    assert "hunter2" not in repr(hello)


# --- validators ----------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [0, -1])
def test_number_of_keys_must_be_positive(number: int) -> None:
    with pytest.raises(InvalidMessage) as caught:
        ak.KeyRequest(application_destination_id="app-b", number_of_keys=number)
    assert caught.value.field == "number_of_keys"
    with pytest.raises(InvalidMessage):
        kq1.KeyRequest(size_of_key=number)


def test_integers_must_fit_a_json_integer() -> None:
    with pytest.raises(InvalidMessage, match="number_of_keys"):
        ak.KeyRequest(application_destination_id="app-b", number_of_keys=2**63)
    assert ak.KeyRequest(application_destination_id="b", number_of_keys=1).number_of_keys == 1


def test_response_integer_accepts_zero_but_not_negative() -> None:
    ok = ck.ResponseToKeyAllocationRequest(response=0)
    assert ok.response == 0
    with pytest.raises(InvalidMessage, match="response"):
        ck.ResponseToKeyAllocationRequest(response=-1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: KeyId(key_id=""),
        lambda: Key(key=b"k", key_id=""),
        lambda: ak.KeyRequestWithId(application_source_id="app-a", key_ids=[KeyId(key_id="")]),
        lambda: ak.ResponseToProactiveKeySupply(session_id="s", key_id="", response="success"),
        lambda: ak.KeyRequest(application_destination_id=""),
        lambda: kq1.KeySupply(key=b"k", key_id=""),
    ],
)
def test_empty_ids_are_refused(build: Any) -> None:
    with pytest.raises(InvalidMessage, match="must not be empty"):
        build()


def test_empty_lists_that_the_table_requires_are_refused() -> None:
    with pytest.raises(InvalidMessage, match="key_ids"):
        ak.KeyRequestWithId(application_source_id="app-a", key_ids=[])
    with pytest.raises(InvalidMessage, match=r"next_kma_ids\[0\]"):
        ck.ResponseToKeyRelayNextHopRequest(next_kma_ids=[""])
    with pytest.raises(InvalidMessage, match=r"transit_kma_ids\[1\]"):
        ck.KeyRelayRequest(transit_kma_ids=["kma-b", ""])


def test_empty_key_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="key"):
        Key(key=b"", key_id="k-1")
    with pytest.raises(InvalidMessage, match="key"):
        kq1.KeySupply(key=b"", key_id="k-1")


def test_key_length_must_match_the_key() -> None:
    assert kq1.KeySupply(key=bytes(32), key_id="k-1", key_length=256).key_length == 256
    assert kq1.KeySupply(key=bytes(32), key_id="k-1").key_length is None
    with pytest.raises(InvalidMessage) as caught:
        kq1.KeySupply(key=bytes(32), key_id="k-1", key_length=32)
    assert caught.value.field == "key_length"
    assert "256" in caught.value.rule


def test_messages_are_frozen() -> None:
    request = ak.KeyRequest(application_destination_id="app-b")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.number_of_keys = 3  # type: ignore[misc]
