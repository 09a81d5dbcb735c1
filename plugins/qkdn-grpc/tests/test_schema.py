"""qkdn.proto and qkdn_pb2: rendered from the registry, generated from the proto, and complete.

Two tests keep the checked-in files from drifting: ``qkdn.proto`` must be what ``render_proto()``
renders now, and ``qkdn_pb2.py``/``.pyi`` what grpc_tools.protoc generates from it now. When
either fails, regenerate both with ``python -m qkdn_grpc._schema`` (run in ``plugins/qkdn-grpc``).
The rest reads the generated descriptors, so it checks what other languages compile, not the
renderer's own model.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

if importlib.util.find_spec("qkdn_grpc") is None:  # the plugin is not installed: its source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from qkdn_grpc import _schema, qkdn_pb2
from qkdn_grpc._codec import proto_name, rpc_path, service_of

from qkdn_sdk.messages import (
    Interface,
    Key,
    KeyId,
    Message,
    ak,
    all_messages,
    ck,
    kq1,
    kx,
    mgmt,
)

REGENERATE = "regenerate with `python -m qkdn_grpc._schema` in plugins/qkdn-grpc"
FILE = qkdn_pb2.DESCRIPTOR
SERVICES = {
    Interface.AK: "Ak",
    Interface.KQ1: "Kq1",
    Interface.CK: "Ck",
    Interface.KX: "KmLink",
    Interface.CQ: "Cq",
}


def _message(name: str) -> Descriptor:
    descriptor: Descriptor = FILE.message_types_by_name[name]
    return descriptor


def _responses() -> set[type[Message]]:
    return {r for cls in all_messages() if (r := cls.response_type()) is not None}


# --- no drift -------------------------------------------------------------------------------------


def test_proto_file_is_what_the_registry_renders() -> None:
    assert _schema.PROTO_FILE.read_text(encoding="utf-8") == _schema.render_proto(), REGENERATE


def test_pb2_is_what_protoc_generates_from_the_proto(tmp_path: Path) -> None:
    protoc: Any = importlib.import_module("grpc_tools.protoc")
    assert protoc.main(_schema.protoc_arguments(tmp_path)) == 0
    for name in _schema.GENERATED:
        generated = (tmp_path / "qkdn_grpc" / name).read_text(encoding="utf-8")
        checked_in = (_schema.PROTO_FILE.parent / name).read_text(encoding="utf-8")
        assert checked_in == _schema.GENERATED_HEADER + generated, f"{name} is stale: {REGENERATE}"
    assert not (tmp_path / "qkdn_grpc" / "qkdn_pb2_grpc.py").exists()


def test_proto_compiles_on_its_own(tmp_path: Path) -> None:
    """Other languages compile the file alone: no import, no include path."""
    (tmp_path / "qkdn.proto").write_bytes(_schema.PROTO_FILE.read_bytes())
    protoc: Any = importlib.import_module("grpc_tools.protoc")
    arguments = ["protoc", f"-I{tmp_path}", f"--descriptor_set_out={tmp_path / 'set.pb'}"]
    assert protoc.main([*arguments, "qkdn.proto"]) == 0
    text = _schema.PROTO_FILE.read_text(encoding="utf-8")
    assert not re.search(r"^import ", text, re.MULTILINE)
    assert '\nsyntax = "proto3";\n' in text
    assert FILE.package == "qkdn.v1"


# --- messages -------------------------------------------------------------------------------------


def test_every_registered_message_and_nested_object_has_a_message() -> None:
    names = [proto_name(cls) for cls in all_messages()]
    assert len(set(names)) == len(names)
    for name in [*names, "Key", "KeyId", "Empty", "Envelope"]:
        assert name in FILE.message_types_by_name, name
    assert len(FILE.message_types_by_name) == len(names) + 4


def test_names_are_class_names_prefixed_by_interface_only_when_shared() -> None:
    assert proto_name(ak.KeyRequest) == "AkKeyRequest"
    assert proto_name(kq1.KeyRequest) == "Kq1KeyRequest"
    assert proto_name(ak.Status) == "AkStatus"
    assert proto_name(ck.SessionCreationRequest) == "CkSessionCreationRequest"
    assert proto_name(ak.KeyRequestWithId) == "KeyRequestWithId"
    assert proto_name(kx.KeyRelay) == "KeyRelay"
    assert proto_name(mgmt.ErrorIndication) == "ErrorIndication"
    assert proto_name(Key) == "Key"
    assert proto_name(KeyId) == "KeyId"


def _primary_fields(cls: type[Any]) -> list[FieldDescriptor]:
    """The fields of a message that carry its attributes (numbers 1..n)."""
    fields = _message(proto_name(cls)).fields
    return sorted((f for f in fields if f.number < _schema.PRESENCE_OFFSET), key=lambda f: f.number)


@pytest.mark.parametrize("cls", [*all_messages(), Key, KeyId], ids=lambda cls: cls.__qualname__)
def test_fields_follow_the_table_rows_with_the_sdk_types(cls: type[Any]) -> None:
    attributes = attrs.fields(attrs.resolve_types(cls))
    fields = _primary_fields(cls)
    assert [f.number for f in fields] == list(range(1, len(attributes) + 1))
    renames = _APPENDIX_II_FIELDS.get(proto_name(cls), {})
    by_number = {f.number: f for f in _message(proto_name(cls)).fields}
    for number, (attribute, field) in enumerate(zip(attributes, fields, strict=True), start=1):
        assert field.name == renames.get(attribute.name, attribute.name)
        optional = attribute.default is not attrs.NOTHING and "None" in str(attribute.type)
        if field.is_repeated:
            assert "list[" in str(attribute.type)
            present = by_number.get(_schema.PRESENCE_OFFSET + number)
            if optional:  # an absent list and an empty one are told apart
                assert present is not None
                assert present.name == f"{field.name}_present"
                assert present.type == FieldDescriptor.TYPE_BOOL
            else:
                assert present is None
        elif field.type != FieldDescriptor.TYPE_MESSAGE:
            assert field.has_presence == optional, field.name
        expected = _EXPECTED_TYPES[_type_key(attribute.type)]  # a new type: add its rule here
        if field.name not in ("result_code", "key_id"):  # Appendix II: as its tables type them
            assert field.type == expected, (field.name, attribute.type)


def _type_key(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    for wrapper in ("list[", " | None", "]"):
        text = text.replace(wrapper, "")
    return text


_EXPECTED_TYPES = {
    "<class 'str'>": FieldDescriptor.TYPE_STRING,
    "str": FieldDescriptor.TYPE_STRING,
    "<class 'int'>": FieldDescriptor.TYPE_INT64,
    "int": FieldDescriptor.TYPE_INT64,
    "<class 'bool'>": FieldDescriptor.TYPE_BOOL,
    "<class 'bytes'>": FieldDescriptor.TYPE_BYTES,
    "dict[str, Any": FieldDescriptor.TYPE_STRING,  # JSON object text
    "<enum 'ResultCode'>": FieldDescriptor.TYPE_INT32,
    "<enum 'KeySupplyResponseCode'>": FieldDescriptor.TYPE_INT32,
    "qkdn_sdk.messages.mgmt.ApplicationCode": FieldDescriptor.TYPE_INT32,
    "qkdn_sdk.messages._base.Key": FieldDescriptor.TYPE_MESSAGE,
    "qkdn_sdk.messages._base.KeyId": FieldDescriptor.TYPE_MESSAGE,
}


def test_every_message_and_field_has_a_comment() -> None:
    lines = _schema.PROTO_FILE.read_text(encoding="utf-8").splitlines()
    declaration = re.compile(r"^\s*(message \w+ \{|(optional |repeated )?[\w.]+ \w+ = \d+;)")
    for index, line in enumerate(lines):
        if declaration.match(line):
            assert lines[index - 1].lstrip().startswith("//"), line
    assert max(len(line) for line in lines) <= 100


def test_comments_name_the_spec_tables_and_parameters() -> None:
    text = _schema.PROTO_FILE.read_text(encoding="utf-8")
    assert "// Key request: Q.4161 Table 1. SDK class qkdn_sdk.messages.ak.KeyRequest" in text
    assert "// Number of keys (O): a default value is applied if omitted." in text
    assert "Values (ResultCode): 1 SUCCESS, 2 FAILURE." in text
    assert "// Q.4164 Appendix II Table II.3-1 name of Transit KMA IDs (M)" in text
    assert "SDK field (Q.4164 Appendix II Table II.2-1 does not map it): Application" in text


# --- Q.4164 Appendix II ---------------------------------------------------------------------------

_APPENDIX_II_NAMES = {
    ck.KeyRelayRequestNotification: "KeyRelayRequestNotification",
    ck.KeyRelayRequest: "KeyRelayRequest",
    ck.ResponseToKeyRelayRequest: "KeyRelayResponse",
    ck.KeyReservationRequest: "KeyReservationRequest",
    ck.ResponseToKeyReservationRequest: "KeyReservationResponse",
    ck.KeyAllocationRequest: "KeyAllocationRequest",
    ck.ResponseToKeyAllocationRequest: "KeyAllocationResponse",
}
"""Table II.1-1."""

_APPENDIX_II_FIELDS: dict[str, dict[str, str]] = {
    "KeyRelayRequestNotification": {"source_kma_id": "start_km", "destination_kma_id": "end_km"},
    "KeyRelayRequest": {
        "source_kma_id": "start_km",
        "destination_kma_id": "end_km",
        "transit_kma_ids": "kma_id",
        "key_relay_request_id": "keyrelayrequest_id",
    },
    "KeyRelayResponse": {"response": "result_code", "key_relay_request_id": "keyrelayrequest_id"},
    "KeyReservationRequest": {"source_kma_id": "start_km", "destination_kma_id": "end_km"},
    "KeyReservationResponse": {
        "source_kma_id": "start_km",
        "destination_kma_id": "end_km",
        "key_ids": "key_id",
        "response": "result_code",
    },
    "KeyAllocationRequest": {
        "source_kma_id": "start_km",
        "destination_kma_id": "end_km",
        "key_ids": "key_id",
    },
    "KeyAllocationResponse": {
        "source_kma_id": "start_km",
        "destination_kma_id": "end_km",
        "key_ids": "key_id",
        "response": "result_code",
    },
}
"""Tables II.2-1 to II.5-2: SDK attribute -> gRPC name."""


@pytest.mark.parametrize("cls", list(_APPENDIX_II_NAMES), ids=lambda cls: cls.__qualname__)
def test_appendix_ii_names_where_required(cls: type[Message]) -> None:
    name = _APPENDIX_II_NAMES[cls]
    assert proto_name(cls) == name
    fields = _message(name).fields_by_name
    for grpc_name in _APPENDIX_II_FIELDS[name].values():
        assert grpc_name in fields, (name, grpc_name)
    for grpc_name in ("start_km", "end_km", "keyrelayrequest_id"):
        if grpc_name in fields:
            assert fields[grpc_name].type == FieldDescriptor.TYPE_STRING
    for grpc_name in ("kma_id", "key_id"):  # "String": the IDs themselves
        if grpc_name in fields:
            assert fields[grpc_name].is_repeated
            assert fields[grpc_name].type == FieldDescriptor.TYPE_STRING
    if "key_id" in fields:  # the Key ID extensions, which Appendix II drops, kept beside
        assert fields["key_id_extension"].is_repeated
        assert fields["key_id_extension"].type == FieldDescriptor.TYPE_STRING
    if "result_code" in fields:  # Extension of the responses -> error_message
        assert fields["result_code"].type == FieldDescriptor.TYPE_INT64
        assert fields["error_message"].type == FieldDescriptor.TYPE_STRING
        assert fields["error_message"].has_presence
    # "not mapped" parameters keep their SDK fields: nothing is lost
    for attribute in attrs.fields(cls):
        if attribute.name not in _APPENDIX_II_FIELDS[name]:
            assert attribute.name in fields, (name, attribute.name)


def test_no_other_message_uses_appendix_ii_field_names() -> None:
    appendix = set(_APPENDIX_II_NAMES.values())
    for name, descriptor in FILE.message_types_by_name.items():
        if name not in appendix:
            assert not {"start_km", "end_km", "result_code"} & set(descriptor.fields_by_name)


# --- services and the envelope --------------------------------------------------------------------


def test_every_request_and_one_way_message_has_an_rpc_in_its_interface_service() -> None:
    responses = _responses()
    expected: dict[str, set[str]] = {service: set() for service in SERVICES.values()}
    for cls in all_messages():
        response = cls.response_type()
        if cls.interface is Interface.ANY or (response is None and cls in responses):
            continue
        service = SERVICES[cls.interface]
        assert service_of(cls) == service
        method = FILE.services_by_name[service].methods_by_name[cls.__name__]
        assert method.input_type.name == proto_name(cls)
        answer = "Empty" if response is None else proto_name(response)
        assert method.output_type.name == answer
        assert not method.client_streaming
        assert not method.server_streaming
        assert rpc_path(cls) == f"/qkdn.v1.{service}/{cls.__name__}"
        expected[service].add(cls.__name__)
    for service, methods in expected.items():
        assert set(FILE.services_by_name[service].methods_by_name) == methods
    assert rpc_path(ck.KeyRelayRequestNotification) == "/qkdn.v1.Ck/KeyRelayRequestNotification"
    assert rpc_path(kx.Update) == "/qkdn.v1.KmLink/Update"


def test_responses_and_the_error_indication_have_no_rpc() -> None:
    with pytest.raises(ValueError, match="no RPC"):
        rpc_path(ak.ResponseToKeyRequest)
    with pytest.raises(ValueError, match="no service"):
        rpc_path(mgmt.ErrorIndication)
    with pytest.raises(ValueError, match="not a registered"):
        proto_name(int)


def test_peer_reverse_is_a_bidirectional_stream_of_envelopes() -> None:
    assert set(FILE.services_by_name) == {*SERVICES.values(), "Peer"}
    reverse = FILE.services_by_name["Peer"].methods_by_name["Reverse"]
    assert reverse.input_type.name == reverse.output_type.name == "Envelope"
    assert reverse.client_streaming
    assert reverse.server_streaming


def test_envelope_has_one_body_member_per_message_in_registry_order() -> None:
    envelope = _message("Envelope")
    message_id = envelope.fields_by_number[1]
    assert (message_id.name, message_id.type) == ("message_id", FieldDescriptor.TYPE_UINT32)
    body = envelope.oneofs_by_name["body"]
    members = sorted(body.fields, key=lambda field: field.number)
    assert [f.number for f in members] == list(range(2, len(all_messages()) + 2))
    assert [f.message_type.name for f in members] == [proto_name(c) for c in all_messages()]
