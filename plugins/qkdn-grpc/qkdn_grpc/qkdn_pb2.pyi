# ruff: noqa
# fmt: off
# mypy: ignore-errors
# (qkdn_grpc._schema adds the three lines above; the rest is protoc's output.)
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyId(_message.Message):
    __slots__ = ("key_id", "key_id_extension")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    key_id_extension: str
    def __init__(self, key_id: _Optional[str] = ..., key_id_extension: _Optional[str] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("key", "key_id", "key_extension")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    key_id: str
    key_extension: str
    def __init__(self, key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., key_extension: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AkKeyRequest(_message.Message):
    __slots__ = ("application_source_id", "application_destination_id", "application_name", "number_of_keys", "size_of_key", "extension", "extension_present")
    APPLICATION_SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_KEYS_FIELD_NUMBER: _ClassVar[int]
    SIZE_OF_KEY_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    application_source_id: str
    application_destination_id: str
    application_name: str
    number_of_keys: int
    size_of_key: int
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, application_source_id: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., application_name: _Optional[str] = ..., number_of_keys: _Optional[int] = ..., size_of_key: _Optional[int] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyRequestWithId(_message.Message):
    __slots__ = ("application_source_id", "application_destination_id", "application_name", "key_ids", "extension", "extension_present")
    APPLICATION_SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    application_source_id: str
    application_destination_id: str
    application_name: str
    key_ids: _containers.RepeatedCompositeFieldContainer[KeyId]
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, application_source_id: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., application_name: _Optional[str] = ..., key_ids: _Optional[_Iterable[_Union[KeyId, _Mapping]]] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class AkResponseToKeyRequest(_message.Message):
    __slots__ = ("keys", "response", "extension", "extension_present")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class AkSessionCreationRequest(_message.Message):
    __slots__ = ("application_source_id", "application_destination_id", "application_name", "number_of_keys", "extension", "extension_present")
    APPLICATION_SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_KEYS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    application_source_id: str
    application_destination_id: str
    application_name: str
    number_of_keys: int
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, application_source_id: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., application_name: _Optional[str] = ..., number_of_keys: _Optional[int] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class AkResponseToSessionCreationRequest(_message.Message):
    __slots__ = ("session_id", "response", "source_km_id", "extension", "extension_present")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KM_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    response: str
    source_km_id: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, session_id: _Optional[str] = ..., response: _Optional[str] = ..., source_km_id: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class AkSessionCreationNotification(_message.Message):
    __slots__ = ("application_source_id", "application_destination_id", "application_name", "session_id", "number_of_keys", "extension", "extension_present")
    APPLICATION_SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_KEYS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    application_source_id: str
    application_destination_id: str
    application_name: str
    session_id: str
    number_of_keys: int
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, application_source_id: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., application_name: _Optional[str] = ..., session_id: _Optional[str] = ..., number_of_keys: _Optional[int] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class AkResponseToSessionCreationNotification(_message.Message):
    __slots__ = ("session_id", "response", "extension", "extension_present")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, session_id: _Optional[str] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyRequestWithSessionId(_message.Message):
    __slots__ = ("session_id", "number_of_keys", "size_of_key", "extension", "extension_present")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_KEYS_FIELD_NUMBER: _ClassVar[int]
    SIZE_OF_KEY_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    number_of_keys: int
    size_of_key: int
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, session_id: _Optional[str] = ..., number_of_keys: _Optional[int] = ..., size_of_key: _Optional[int] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class ResponseToKeyRequestWithSessionId(_message.Message):
    __slots__ = ("session_id", "keys", "response", "extension", "extension_present")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, session_id: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class ProactiveKeySupply(_message.Message):
    __slots__ = ("session_id", "keys", "extension", "extension_present")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, session_id: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class ResponseToProactiveKeySupply(_message.Message):
    __slots__ = ("session_id", "key_id", "response", "extension", "extension_present")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    key_id: str
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, session_id: _Optional[str] = ..., key_id: _Optional[str] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class AuthenticationCommand(_message.Message):
    __slots__ = ("sender_id", "authentication_info")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_INFO_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    authentication_info: str
    def __init__(self, sender_id: _Optional[str] = ..., authentication_info: _Optional[str] = ...) -> None: ...

class AuthenticationResponse(_message.Message):
    __slots__ = ("sender_id", "response_code")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    response_code: int
    def __init__(self, sender_id: _Optional[str] = ..., response_code: _Optional[int] = ...) -> None: ...

class KeySupplyCommand(_message.Message):
    __slots__ = ("sender_id", "source_id", "target_id", "session_id", "application_code", "key_amount", "key_size", "key_id")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    KEY_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    KEY_SIZE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    source_id: str
    target_id: str
    session_id: str
    application_code: int
    key_amount: int
    key_size: int
    key_id: str
    def __init__(self, sender_id: _Optional[str] = ..., source_id: _Optional[str] = ..., target_id: _Optional[str] = ..., session_id: _Optional[str] = ..., application_code: _Optional[int] = ..., key_amount: _Optional[int] = ..., key_size: _Optional[int] = ..., key_id: _Optional[str] = ...) -> None: ...

class KeySupplyResponse(_message.Message):
    __slots__ = ("sender_id", "source_id", "target_id", "session_id", "application_code", "key_amount", "key_size", "key_id", "count_id", "key_data", "response_code", "key_data_present")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    KEY_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    KEY_SIZE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_DATA_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    KEY_DATA_PRESENT_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    source_id: str
    target_id: str
    session_id: str
    application_code: int
    key_amount: int
    key_size: int
    key_id: str
    count_id: int
    key_data: _containers.RepeatedCompositeFieldContainer[Key]
    response_code: int
    key_data_present: bool
    def __init__(self, sender_id: _Optional[str] = ..., source_id: _Optional[str] = ..., target_id: _Optional[str] = ..., session_id: _Optional[str] = ..., application_code: _Optional[int] = ..., key_amount: _Optional[int] = ..., key_size: _Optional[int] = ..., key_id: _Optional[str] = ..., count_id: _Optional[int] = ..., key_data: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., response_code: _Optional[int] = ..., key_data_present: _Optional[bool] = ...) -> None: ...

class KeyDeletionCommand(_message.Message):
    __slots__ = ("sender_id", "source_id", "target_id", "session_id", "application_code", "key_ids", "key_ids_present")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_PRESENT_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    source_id: str
    target_id: str
    session_id: str
    application_code: int
    key_ids: _containers.RepeatedCompositeFieldContainer[KeyId]
    key_ids_present: bool
    def __init__(self, sender_id: _Optional[str] = ..., source_id: _Optional[str] = ..., target_id: _Optional[str] = ..., session_id: _Optional[str] = ..., application_code: _Optional[int] = ..., key_ids: _Optional[_Iterable[_Union[KeyId, _Mapping]]] = ..., key_ids_present: _Optional[bool] = ...) -> None: ...

class KeyDeletionResponse(_message.Message):
    __slots__ = ("sender_id", "source_id", "target_id", "session_id", "application_code", "response_code")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    source_id: str
    target_id: str
    session_id: str
    application_code: int
    response_code: int
    def __init__(self, sender_id: _Optional[str] = ..., source_id: _Optional[str] = ..., target_id: _Optional[str] = ..., session_id: _Optional[str] = ..., application_code: _Optional[int] = ..., response_code: _Optional[int] = ...) -> None: ...

class KMAuthenticationCommand(_message.Message):
    __slots__ = ("sender_id", "authentication_info")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_INFO_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    authentication_info: str
    def __init__(self, sender_id: _Optional[str] = ..., authentication_info: _Optional[str] = ...) -> None: ...

class KMAuthenticationResponse(_message.Message):
    __slots__ = ("sender_id", "response_code")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    response_code: int
    def __init__(self, sender_id: _Optional[str] = ..., response_code: _Optional[int] = ...) -> None: ...

class AkStatusRequest(_message.Message):
    __slots__ = ("application_source_id", "application_destination_id")
    APPLICATION_SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    application_source_id: str
    application_destination_id: str
    def __init__(self, application_source_id: _Optional[str] = ..., application_destination_id: _Optional[str] = ...) -> None: ...

class AkStatus(_message.Message):
    __slots__ = ("source_kme_id", "target_kme_id", "master_sae_id", "slave_sae_id", "key_size", "stored_key_count", "max_key_count", "max_key_per_request", "max_key_size", "min_key_size", "max_sae_id_count", "status_extension")
    SOURCE_KME_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_KME_ID_FIELD_NUMBER: _ClassVar[int]
    MASTER_SAE_ID_FIELD_NUMBER: _ClassVar[int]
    SLAVE_SAE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_SIZE_FIELD_NUMBER: _ClassVar[int]
    STORED_KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_KEY_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SAE_ID_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    source_kme_id: str
    target_kme_id: str
    master_sae_id: str
    slave_sae_id: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_sae_id_count: int
    status_extension: str
    def __init__(self, source_kme_id: _Optional[str] = ..., target_kme_id: _Optional[str] = ..., master_sae_id: _Optional[str] = ..., slave_sae_id: _Optional[str] = ..., key_size: _Optional[int] = ..., stored_key_count: _Optional[int] = ..., max_key_count: _Optional[int] = ..., max_key_per_request: _Optional[int] = ..., max_key_size: _Optional[int] = ..., min_key_size: _Optional[int] = ..., max_sae_id_count: _Optional[int] = ..., status_extension: _Optional[str] = ...) -> None: ...

class KeySupply(_message.Message):
    __slots__ = ("key", "key_id", "qkd_module_id", "matching_qkd_module_id", "key_length", "generation_time_stamp", "hash_value", "extension", "extension_present")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    QKD_MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHING_QKD_MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    GENERATION_TIME_STAMP_FIELD_NUMBER: _ClassVar[int]
    HASH_VALUE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    key_id: str
    qkd_module_id: str
    matching_qkd_module_id: str
    key_length: int
    generation_time_stamp: str
    hash_value: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., qkd_module_id: _Optional[str] = ..., matching_qkd_module_id: _Optional[str] = ..., key_length: _Optional[int] = ..., generation_time_stamp: _Optional[str] = ..., hash_value: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class ResponseToKeySupply(_message.Message):
    __slots__ = ("key_id", "qkd_module_id", "matching_qkd_module_id", "response", "extension", "extension_present")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    QKD_MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHING_QKD_MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    qkd_module_id: str
    matching_qkd_module_id: str
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, key_id: _Optional[str] = ..., qkd_module_id: _Optional[str] = ..., matching_qkd_module_id: _Optional[str] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class Kq1KeyRequest(_message.Message):
    __slots__ = ("number_of_keys", "size_of_key", "extension", "extension_present")
    NUMBER_OF_KEYS_FIELD_NUMBER: _ClassVar[int]
    SIZE_OF_KEY_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    number_of_keys: int
    size_of_key: int
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, number_of_keys: _Optional[int] = ..., size_of_key: _Optional[int] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class Kq1ResponseToKeyRequest(_message.Message):
    __slots__ = ("keys", "response", "extension", "extension_present")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyRequestWithKeyIds(_message.Message):
    __slots__ = ("master_sae_id", "key_ids", "extension", "extension_present")
    MASTER_SAE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    master_sae_id: str
    key_ids: _containers.RepeatedCompositeFieldContainer[KeyId]
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, master_sae_id: _Optional[str] = ..., key_ids: _Optional[_Iterable[_Union[KeyId, _Mapping]]] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class Kq1StatusRequest(_message.Message):
    __slots__ = ("slave_sae_id",)
    SLAVE_SAE_ID_FIELD_NUMBER: _ClassVar[int]
    slave_sae_id: str
    def __init__(self, slave_sae_id: _Optional[str] = ...) -> None: ...

class Kq1Status(_message.Message):
    __slots__ = ("source_kme_id", "target_kme_id", "master_sae_id", "slave_sae_id", "key_size", "stored_key_count", "max_key_count", "max_key_per_request", "max_key_size", "min_key_size", "max_sae_id_count", "status_extension")
    SOURCE_KME_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_KME_ID_FIELD_NUMBER: _ClassVar[int]
    MASTER_SAE_ID_FIELD_NUMBER: _ClassVar[int]
    SLAVE_SAE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_SIZE_FIELD_NUMBER: _ClassVar[int]
    STORED_KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_KEY_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SAE_ID_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    source_kme_id: str
    target_kme_id: str
    master_sae_id: str
    slave_sae_id: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_sae_id_count: int
    status_extension: str
    def __init__(self, source_kme_id: _Optional[str] = ..., target_kme_id: _Optional[str] = ..., master_sae_id: _Optional[str] = ..., slave_sae_id: _Optional[str] = ..., key_size: _Optional[int] = ..., stored_key_count: _Optional[int] = ..., max_key_count: _Optional[int] = ..., max_key_per_request: _Optional[int] = ..., max_key_size: _Optional[int] = ..., min_key_size: _Optional[int] = ..., max_sae_id_count: _Optional[int] = ..., status_extension: _Optional[str] = ...) -> None: ...

class KeyRelayNextHopRequest(_message.Message):
    __slots__ = ("source_kma_id", "destination_kma_id", "application_destination_id", "extension", "extension_present")
    SOURCE_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    source_kma_id: str
    destination_kma_id: str
    application_destination_id: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, source_kma_id: _Optional[str] = ..., destination_kma_id: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class ResponseToKeyRelayNextHopRequest(_message.Message):
    __slots__ = ("source_kma_id", "destination_kma_id", "next_kma_ids", "extension", "extension_present")
    SOURCE_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_KMA_IDS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    source_kma_id: str
    destination_kma_id: str
    next_kma_ids: _containers.RepeatedScalarFieldContainer[str]
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, source_kma_id: _Optional[str] = ..., destination_kma_id: _Optional[str] = ..., next_kma_ids: _Optional[_Iterable[str]] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyRelayRequestNotification(_message.Message):
    __slots__ = ("start_km", "end_km", "application_destination_id", "extension", "extension_present")
    START_KM_FIELD_NUMBER: _ClassVar[int]
    END_KM_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    start_km: str
    end_km: str
    application_destination_id: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, start_km: _Optional[str] = ..., end_km: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyRelayRequest(_message.Message):
    __slots__ = ("start_km", "end_km", "kma_id", "keyrelayrequest_id", "extension", "extension_present")
    START_KM_FIELD_NUMBER: _ClassVar[int]
    END_KM_FIELD_NUMBER: _ClassVar[int]
    KMA_ID_FIELD_NUMBER: _ClassVar[int]
    KEYRELAYREQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    start_km: str
    end_km: str
    kma_id: _containers.RepeatedScalarFieldContainer[str]
    keyrelayrequest_id: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, start_km: _Optional[str] = ..., end_km: _Optional[str] = ..., kma_id: _Optional[_Iterable[str]] = ..., keyrelayrequest_id: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyRelayResponse(_message.Message):
    __slots__ = ("result_code", "keyrelayrequest_id", "extension", "extension_present", "error_message")
    RESULT_CODE_FIELD_NUMBER: _ClassVar[int]
    KEYRELAYREQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    result_code: int
    keyrelayrequest_id: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    error_message: str
    def __init__(self, result_code: _Optional[int] = ..., keyrelayrequest_id: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ..., error_message: _Optional[str] = ...) -> None: ...

class CkSessionCreationRequest(_message.Message):
    __slots__ = ("application_source_id", "application_destination_id", "number_of_keys", "extension", "extension_present")
    APPLICATION_SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_KEYS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    application_source_id: str
    application_destination_id: str
    number_of_keys: int
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, application_source_id: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., number_of_keys: _Optional[int] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class CkResponseToSessionCreationRequest(_message.Message):
    __slots__ = ("session_id", "response", "destination_km_id", "extension", "extension_present")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_KM_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    response: str
    destination_km_id: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, session_id: _Optional[str] = ..., response: _Optional[str] = ..., destination_km_id: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class CkSessionCreationNotification(_message.Message):
    __slots__ = ("application_source_id", "application_destination_id", "session_id", "source_km_id", "number_of_keys", "extension", "extension_present")
    APPLICATION_SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KM_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_KEYS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    application_source_id: str
    application_destination_id: str
    session_id: str
    source_km_id: str
    number_of_keys: int
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, application_source_id: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., session_id: _Optional[str] = ..., source_km_id: _Optional[str] = ..., number_of_keys: _Optional[int] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class CkResponseToSessionCreationNotification(_message.Message):
    __slots__ = ("session_id", "response", "extension", "extension_present")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, session_id: _Optional[str] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyReservationRequest(_message.Message):
    __slots__ = ("start_km", "end_km", "application_destination_id", "extension", "extension_present")
    START_KM_FIELD_NUMBER: _ClassVar[int]
    END_KM_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    start_km: str
    end_km: str
    application_destination_id: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, start_km: _Optional[str] = ..., end_km: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyReservationResponse(_message.Message):
    __slots__ = ("start_km", "end_km", "application_destination_id", "key_id", "result_code", "extension", "extension_present", "key_id_extension", "error_message")
    START_KM_FIELD_NUMBER: _ClassVar[int]
    END_KM_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_CODE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    start_km: str
    end_km: str
    application_destination_id: str
    key_id: _containers.RepeatedScalarFieldContainer[str]
    result_code: int
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    key_id_extension: _containers.RepeatedScalarFieldContainer[str]
    error_message: str
    def __init__(self, start_km: _Optional[str] = ..., end_km: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., key_id: _Optional[_Iterable[str]] = ..., result_code: _Optional[int] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ..., key_id_extension: _Optional[_Iterable[str]] = ..., error_message: _Optional[str] = ...) -> None: ...

class KeyAllocationRequest(_message.Message):
    __slots__ = ("start_km", "end_km", "application_destination_id", "key_id", "extension", "extension_present", "key_id_extension")
    START_KM_FIELD_NUMBER: _ClassVar[int]
    END_KM_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    start_km: str
    end_km: str
    application_destination_id: str
    key_id: _containers.RepeatedScalarFieldContainer[str]
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    key_id_extension: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, start_km: _Optional[str] = ..., end_km: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., key_id: _Optional[_Iterable[str]] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ..., key_id_extension: _Optional[_Iterable[str]] = ...) -> None: ...

class KeyAllocationResponse(_message.Message):
    __slots__ = ("start_km", "end_km", "application_destination_id", "key_id", "result_code", "extension", "key_id_present", "extension_present", "key_id_extension", "error_message")
    START_KM_FIELD_NUMBER: _ClassVar[int]
    END_KM_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_CODE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_PRESENT_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    start_km: str
    end_km: str
    application_destination_id: str
    key_id: _containers.RepeatedScalarFieldContainer[str]
    result_code: int
    extension: _containers.RepeatedScalarFieldContainer[str]
    key_id_present: bool
    extension_present: bool
    key_id_extension: _containers.RepeatedScalarFieldContainer[str]
    error_message: str
    def __init__(self, start_km: _Optional[str] = ..., end_km: _Optional[str] = ..., application_destination_id: _Optional[str] = ..., key_id: _Optional[_Iterable[str]] = ..., result_code: _Optional[int] = ..., extension: _Optional[_Iterable[str]] = ..., key_id_present: _Optional[bool] = ..., extension_present: _Optional[bool] = ..., key_id_extension: _Optional[_Iterable[str]] = ..., error_message: _Optional[str] = ...) -> None: ...

class CkAuthenticationCommand(_message.Message):
    __slots__ = ("sender_id", "authentication_info")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_INFO_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    authentication_info: str
    def __init__(self, sender_id: _Optional[str] = ..., authentication_info: _Optional[str] = ...) -> None: ...

class CkAuthenticationResponse(_message.Message):
    __slots__ = ("sender_id", "response_code")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    response_code: int
    def __init__(self, sender_id: _Optional[str] = ..., response_code: _Optional[int] = ...) -> None: ...

class StatusInformationSupplyCommand(_message.Message):
    __slots__ = ("sender_id", "period", "status_table", "status_table_present")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    STATUS_TABLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_TABLE_PRESENT_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    period: int
    status_table: _containers.RepeatedScalarFieldContainer[str]
    status_table_present: bool
    def __init__(self, sender_id: _Optional[str] = ..., period: _Optional[int] = ..., status_table: _Optional[_Iterable[str]] = ..., status_table_present: _Optional[bool] = ...) -> None: ...

class StatusInformationSupplyResponse(_message.Message):
    __slots__ = ("sender_id", "status_table", "response_code")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_TABLE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    status_table: _containers.RepeatedScalarFieldContainer[str]
    response_code: int
    def __init__(self, sender_id: _Optional[str] = ..., status_table: _Optional[_Iterable[str]] = ..., response_code: _Optional[int] = ...) -> None: ...

class RouteInformationSupplyCommand(_message.Message):
    __slots__ = ("sender_id", "source_id", "destination_id", "key_amount")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    source_id: str
    destination_id: str
    key_amount: int
    def __init__(self, sender_id: _Optional[str] = ..., source_id: _Optional[str] = ..., destination_id: _Optional[str] = ..., key_amount: _Optional[int] = ...) -> None: ...

class RouteInformationSupplyResponse(_message.Message):
    __slots__ = ("sender_id", "route_table", "response_code")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_TABLE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    route_table: _containers.RepeatedScalarFieldContainer[str]
    response_code: int
    def __init__(self, sender_id: _Optional[str] = ..., route_table: _Optional[_Iterable[str]] = ..., response_code: _Optional[int] = ...) -> None: ...

class SessionEndNotification(_message.Message):
    __slots__ = ("km_id", "peer_km_id", "session_id", "reason")
    KM_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_KM_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    km_id: str
    peer_km_id: str
    session_id: str
    reason: str
    def __init__(self, km_id: _Optional[str] = ..., peer_km_id: _Optional[str] = ..., session_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SessionEndedNotification(_message.Message):
    __slots__ = ("km_id", "session_id", "reason")
    KM_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    km_id: str
    session_id: str
    reason: str
    def __init__(self, km_id: _Optional[str] = ..., session_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("sender_ip", "sender_id", "community_id", "authentication_info")
    SENDER_IP_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    COMMUNITY_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_INFO_FIELD_NUMBER: _ClassVar[int]
    sender_ip: str
    sender_id: str
    community_id: str
    authentication_info: str
    def __init__(self, sender_ip: _Optional[str] = ..., sender_id: _Optional[str] = ..., community_id: _Optional[str] = ..., authentication_info: _Optional[str] = ...) -> None: ...

class SessionMessage(_message.Message):
    __slots__ = ("session_id", "timer", "hash_value")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMER_FIELD_NUMBER: _ClassVar[int]
    HASH_VALUE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    timer: int
    hash_value: str
    def __init__(self, session_id: _Optional[str] = ..., timer: _Optional[int] = ..., hash_value: _Optional[str] = ...) -> None: ...

class Update(_message.Message):
    __slots__ = ("sender_ip", "receiver_ip", "kma_key_id", "qos")
    SENDER_IP_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_IP_FIELD_NUMBER: _ClassVar[int]
    KMA_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    sender_ip: str
    receiver_ip: str
    kma_key_id: str
    qos: str
    def __init__(self, sender_ip: _Optional[str] = ..., receiver_ip: _Optional[str] = ..., kma_key_id: _Optional[str] = ..., qos: _Optional[str] = ...) -> None: ...

class KeyRelay(_message.Message):
    __slots__ = ("key_relay_request_id", "sender_kma_id", "source_kma_id", "destination_kma_id", "transit_kma_ids", "link_key_ids", "encrypted_metadata", "encrypted_key", "integrity_value", "message_authentication_code", "extension", "transit_kma_ids_present", "extension_present")
    KEY_RELAY_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSIT_KMA_IDS_FIELD_NUMBER: _ClassVar[int]
    LINK_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_METADATA_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_KEY_FIELD_NUMBER: _ClassVar[int]
    INTEGRITY_VALUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_AUTHENTICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    TRANSIT_KMA_IDS_PRESENT_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    key_relay_request_id: str
    sender_kma_id: str
    source_kma_id: str
    destination_kma_id: str
    transit_kma_ids: _containers.RepeatedScalarFieldContainer[str]
    link_key_ids: _containers.RepeatedScalarFieldContainer[str]
    encrypted_metadata: bytes
    encrypted_key: bytes
    integrity_value: bytes
    message_authentication_code: bytes
    extension: _containers.RepeatedScalarFieldContainer[str]
    transit_kma_ids_present: bool
    extension_present: bool
    def __init__(self, key_relay_request_id: _Optional[str] = ..., sender_kma_id: _Optional[str] = ..., source_kma_id: _Optional[str] = ..., destination_kma_id: _Optional[str] = ..., transit_kma_ids: _Optional[_Iterable[str]] = ..., link_key_ids: _Optional[_Iterable[str]] = ..., encrypted_metadata: _Optional[bytes] = ..., encrypted_key: _Optional[bytes] = ..., integrity_value: _Optional[bytes] = ..., message_authentication_code: _Optional[bytes] = ..., extension: _Optional[_Iterable[str]] = ..., transit_kma_ids_present: _Optional[bool] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class ResponseToKeyRelay(_message.Message):
    __slots__ = ("key_relay_request_id", "response", "extension", "extension_present")
    KEY_RELAY_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    key_relay_request_id: str
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, key_relay_request_id: _Optional[str] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyIdSynchronizationRequest(_message.Message):
    __slots__ = ("source_kma_id", "destination_kma_id", "key_ids", "extension", "extension_present")
    SOURCE_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    source_kma_id: str
    destination_kma_id: str
    key_ids: _containers.RepeatedCompositeFieldContainer[KeyId]
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, source_kma_id: _Optional[str] = ..., destination_kma_id: _Optional[str] = ..., key_ids: _Optional[_Iterable[_Union[KeyId, _Mapping]]] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class ResponseToKeyIdSynchronizationRequest(_message.Message):
    __slots__ = ("key_ids", "response", "extension", "extension_present")
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    key_ids: _containers.RepeatedCompositeFieldContainer[KeyId]
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, key_ids: _Optional[_Iterable[_Union[KeyId, _Mapping]]] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class KeyRelayConfirmation(_message.Message):
    __slots__ = ("key_relay_request_id", "sender_kma_id", "source_kma_id", "destination_kma_id", "extension", "extension_present")
    KEY_RELAY_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_KMA_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    key_relay_request_id: str
    sender_kma_id: str
    source_kma_id: str
    destination_kma_id: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, key_relay_request_id: _Optional[str] = ..., sender_kma_id: _Optional[str] = ..., source_kma_id: _Optional[str] = ..., destination_kma_id: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class ResponseToKeyRelayConfirmation(_message.Message):
    __slots__ = ("key_relay_request_id", "response", "extension", "extension_present")
    KEY_RELAY_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_PRESENT_FIELD_NUMBER: _ClassVar[int]
    key_relay_request_id: str
    response: str
    extension: _containers.RepeatedScalarFieldContainer[str]
    extension_present: bool
    def __init__(self, key_relay_request_id: _Optional[str] = ..., response: _Optional[str] = ..., extension: _Optional[_Iterable[str]] = ..., extension_present: _Optional[bool] = ...) -> None: ...

class CqAuthenticationCommand(_message.Message):
    __slots__ = ("sender_id", "authentication_info")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_INFO_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    authentication_info: str
    def __init__(self, sender_id: _Optional[str] = ..., authentication_info: _Optional[str] = ...) -> None: ...

class CqAuthenticationResponse(_message.Message):
    __slots__ = ("sender_id", "response_code")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    response_code: int
    def __init__(self, sender_id: _Optional[str] = ..., response_code: _Optional[int] = ...) -> None: ...

class CqStatusInformationSupplyCommand(_message.Message):
    __slots__ = ("sender_id", "period", "status_table", "status_table_present")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    STATUS_TABLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_TABLE_PRESENT_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    period: int
    status_table: _containers.RepeatedScalarFieldContainer[str]
    status_table_present: bool
    def __init__(self, sender_id: _Optional[str] = ..., period: _Optional[int] = ..., status_table: _Optional[_Iterable[str]] = ..., status_table_present: _Optional[bool] = ...) -> None: ...

class CqStatusInformationSupplyResponse(_message.Message):
    __slots__ = ("sender_id", "status_table", "response_code")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_TABLE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    status_table: _containers.RepeatedScalarFieldContainer[str]
    response_code: int
    def __init__(self, sender_id: _Optional[str] = ..., status_table: _Optional[_Iterable[str]] = ..., response_code: _Optional[int] = ...) -> None: ...

class ErrorIndication(_message.Message):
    __slots__ = ("reason", "command_code", "closing")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COMMAND_CODE_FIELD_NUMBER: _ClassVar[int]
    CLOSING_FIELD_NUMBER: _ClassVar[int]
    reason: str
    command_code: int
    closing: bool
    def __init__(self, reason: _Optional[str] = ..., command_code: _Optional[int] = ..., closing: _Optional[bool] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("message_id", "ak_key_request", "key_request_with_id", "ak_response_to_key_request", "ak_session_creation_request", "ak_response_to_session_creation_request", "ak_session_creation_notification", "ak_response_to_session_creation_notification", "key_request_with_session_id", "response_to_key_request_with_session_id", "proactive_key_supply", "response_to_proactive_key_supply", "authentication_command", "authentication_response", "key_supply_command", "key_supply_response", "key_deletion_command", "key_deletion_response", "km_authentication_command", "km_authentication_response", "ak_status_request", "ak_status", "key_supply", "response_to_key_supply", "kq1_key_request", "kq1_response_to_key_request", "key_request_with_key_ids", "kq1_status_request", "kq1_status", "key_relay_next_hop_request", "response_to_key_relay_next_hop_request", "key_relay_request_notification", "key_relay_request", "key_relay_response", "ck_session_creation_request", "ck_response_to_session_creation_request", "ck_session_creation_notification", "ck_response_to_session_creation_notification", "key_reservation_request", "key_reservation_response", "key_allocation_request", "key_allocation_response", "ck_authentication_command", "ck_authentication_response", "status_information_supply_command", "status_information_supply_response", "route_information_supply_command", "route_information_supply_response", "session_end_notification", "session_ended_notification", "hello", "session_message", "update", "key_relay", "response_to_key_relay", "key_id_synchronization_request", "response_to_key_id_synchronization_request", "key_relay_confirmation", "response_to_key_relay_confirmation", "cq_authentication_command", "cq_authentication_response", "cq_status_information_supply_command", "cq_status_information_supply_response", "error_indication")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    AK_KEY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KEY_REQUEST_WITH_ID_FIELD_NUMBER: _ClassVar[int]
    AK_RESPONSE_TO_KEY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    AK_SESSION_CREATION_REQUEST_FIELD_NUMBER: _ClassVar[int]
    AK_RESPONSE_TO_SESSION_CREATION_REQUEST_FIELD_NUMBER: _ClassVar[int]
    AK_SESSION_CREATION_NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    AK_RESPONSE_TO_SESSION_CREATION_NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    KEY_REQUEST_WITH_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TO_KEY_REQUEST_WITH_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROACTIVE_KEY_SUPPLY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TO_PROACTIVE_KEY_SUPPLY_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_COMMAND_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    KEY_SUPPLY_COMMAND_FIELD_NUMBER: _ClassVar[int]
    KEY_SUPPLY_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    KEY_DELETION_COMMAND_FIELD_NUMBER: _ClassVar[int]
    KEY_DELETION_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    KM_AUTHENTICATION_COMMAND_FIELD_NUMBER: _ClassVar[int]
    KM_AUTHENTICATION_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    AK_STATUS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    AK_STATUS_FIELD_NUMBER: _ClassVar[int]
    KEY_SUPPLY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TO_KEY_SUPPLY_FIELD_NUMBER: _ClassVar[int]
    KQ1_KEY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KQ1_RESPONSE_TO_KEY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KEY_REQUEST_WITH_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    KQ1_STATUS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KQ1_STATUS_FIELD_NUMBER: _ClassVar[int]
    KEY_RELAY_NEXT_HOP_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TO_KEY_RELAY_NEXT_HOP_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KEY_RELAY_REQUEST_NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    KEY_RELAY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KEY_RELAY_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CK_SESSION_CREATION_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CK_RESPONSE_TO_SESSION_CREATION_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CK_SESSION_CREATION_NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    CK_RESPONSE_TO_SESSION_CREATION_NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    KEY_RESERVATION_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KEY_RESERVATION_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    KEY_ALLOCATION_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KEY_ALLOCATION_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CK_AUTHENTICATION_COMMAND_FIELD_NUMBER: _ClassVar[int]
    CK_AUTHENTICATION_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STATUS_INFORMATION_SUPPLY_COMMAND_FIELD_NUMBER: _ClassVar[int]
    STATUS_INFORMATION_SUPPLY_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_INFORMATION_SUPPLY_COMMAND_FIELD_NUMBER: _ClassVar[int]
    ROUTE_INFORMATION_SUPPLY_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SESSION_END_NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ENDED_NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SESSION_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    KEY_RELAY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TO_KEY_RELAY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_SYNCHRONIZATION_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TO_KEY_ID_SYNCHRONIZATION_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KEY_RELAY_CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TO_KEY_RELAY_CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    CQ_AUTHENTICATION_COMMAND_FIELD_NUMBER: _ClassVar[int]
    CQ_AUTHENTICATION_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CQ_STATUS_INFORMATION_SUPPLY_COMMAND_FIELD_NUMBER: _ClassVar[int]
    CQ_STATUS_INFORMATION_SUPPLY_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_INDICATION_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    ak_key_request: AkKeyRequest
    key_request_with_id: KeyRequestWithId
    ak_response_to_key_request: AkResponseToKeyRequest
    ak_session_creation_request: AkSessionCreationRequest
    ak_response_to_session_creation_request: AkResponseToSessionCreationRequest
    ak_session_creation_notification: AkSessionCreationNotification
    ak_response_to_session_creation_notification: AkResponseToSessionCreationNotification
    key_request_with_session_id: KeyRequestWithSessionId
    response_to_key_request_with_session_id: ResponseToKeyRequestWithSessionId
    proactive_key_supply: ProactiveKeySupply
    response_to_proactive_key_supply: ResponseToProactiveKeySupply
    authentication_command: AuthenticationCommand
    authentication_response: AuthenticationResponse
    key_supply_command: KeySupplyCommand
    key_supply_response: KeySupplyResponse
    key_deletion_command: KeyDeletionCommand
    key_deletion_response: KeyDeletionResponse
    km_authentication_command: KMAuthenticationCommand
    km_authentication_response: KMAuthenticationResponse
    ak_status_request: AkStatusRequest
    ak_status: AkStatus
    key_supply: KeySupply
    response_to_key_supply: ResponseToKeySupply
    kq1_key_request: Kq1KeyRequest
    kq1_response_to_key_request: Kq1ResponseToKeyRequest
    key_request_with_key_ids: KeyRequestWithKeyIds
    kq1_status_request: Kq1StatusRequest
    kq1_status: Kq1Status
    key_relay_next_hop_request: KeyRelayNextHopRequest
    response_to_key_relay_next_hop_request: ResponseToKeyRelayNextHopRequest
    key_relay_request_notification: KeyRelayRequestNotification
    key_relay_request: KeyRelayRequest
    key_relay_response: KeyRelayResponse
    ck_session_creation_request: CkSessionCreationRequest
    ck_response_to_session_creation_request: CkResponseToSessionCreationRequest
    ck_session_creation_notification: CkSessionCreationNotification
    ck_response_to_session_creation_notification: CkResponseToSessionCreationNotification
    key_reservation_request: KeyReservationRequest
    key_reservation_response: KeyReservationResponse
    key_allocation_request: KeyAllocationRequest
    key_allocation_response: KeyAllocationResponse
    ck_authentication_command: CkAuthenticationCommand
    ck_authentication_response: CkAuthenticationResponse
    status_information_supply_command: StatusInformationSupplyCommand
    status_information_supply_response: StatusInformationSupplyResponse
    route_information_supply_command: RouteInformationSupplyCommand
    route_information_supply_response: RouteInformationSupplyResponse
    session_end_notification: SessionEndNotification
    session_ended_notification: SessionEndedNotification
    hello: Hello
    session_message: SessionMessage
    update: Update
    key_relay: KeyRelay
    response_to_key_relay: ResponseToKeyRelay
    key_id_synchronization_request: KeyIdSynchronizationRequest
    response_to_key_id_synchronization_request: ResponseToKeyIdSynchronizationRequest
    key_relay_confirmation: KeyRelayConfirmation
    response_to_key_relay_confirmation: ResponseToKeyRelayConfirmation
    cq_authentication_command: CqAuthenticationCommand
    cq_authentication_response: CqAuthenticationResponse
    cq_status_information_supply_command: CqStatusInformationSupplyCommand
    cq_status_information_supply_response: CqStatusInformationSupplyResponse
    error_indication: ErrorIndication
    def __init__(self, message_id: _Optional[int] = ..., ak_key_request: _Optional[_Union[AkKeyRequest, _Mapping]] = ..., key_request_with_id: _Optional[_Union[KeyRequestWithId, _Mapping]] = ..., ak_response_to_key_request: _Optional[_Union[AkResponseToKeyRequest, _Mapping]] = ..., ak_session_creation_request: _Optional[_Union[AkSessionCreationRequest, _Mapping]] = ..., ak_response_to_session_creation_request: _Optional[_Union[AkResponseToSessionCreationRequest, _Mapping]] = ..., ak_session_creation_notification: _Optional[_Union[AkSessionCreationNotification, _Mapping]] = ..., ak_response_to_session_creation_notification: _Optional[_Union[AkResponseToSessionCreationNotification, _Mapping]] = ..., key_request_with_session_id: _Optional[_Union[KeyRequestWithSessionId, _Mapping]] = ..., response_to_key_request_with_session_id: _Optional[_Union[ResponseToKeyRequestWithSessionId, _Mapping]] = ..., proactive_key_supply: _Optional[_Union[ProactiveKeySupply, _Mapping]] = ..., response_to_proactive_key_supply: _Optional[_Union[ResponseToProactiveKeySupply, _Mapping]] = ..., authentication_command: _Optional[_Union[AuthenticationCommand, _Mapping]] = ..., authentication_response: _Optional[_Union[AuthenticationResponse, _Mapping]] = ..., key_supply_command: _Optional[_Union[KeySupplyCommand, _Mapping]] = ..., key_supply_response: _Optional[_Union[KeySupplyResponse, _Mapping]] = ..., key_deletion_command: _Optional[_Union[KeyDeletionCommand, _Mapping]] = ..., key_deletion_response: _Optional[_Union[KeyDeletionResponse, _Mapping]] = ..., km_authentication_command: _Optional[_Union[KMAuthenticationCommand, _Mapping]] = ..., km_authentication_response: _Optional[_Union[KMAuthenticationResponse, _Mapping]] = ..., ak_status_request: _Optional[_Union[AkStatusRequest, _Mapping]] = ..., ak_status: _Optional[_Union[AkStatus, _Mapping]] = ..., key_supply: _Optional[_Union[KeySupply, _Mapping]] = ..., response_to_key_supply: _Optional[_Union[ResponseToKeySupply, _Mapping]] = ..., kq1_key_request: _Optional[_Union[Kq1KeyRequest, _Mapping]] = ..., kq1_response_to_key_request: _Optional[_Union[Kq1ResponseToKeyRequest, _Mapping]] = ..., key_request_with_key_ids: _Optional[_Union[KeyRequestWithKeyIds, _Mapping]] = ..., kq1_status_request: _Optional[_Union[Kq1StatusRequest, _Mapping]] = ..., kq1_status: _Optional[_Union[Kq1Status, _Mapping]] = ..., key_relay_next_hop_request: _Optional[_Union[KeyRelayNextHopRequest, _Mapping]] = ..., response_to_key_relay_next_hop_request: _Optional[_Union[ResponseToKeyRelayNextHopRequest, _Mapping]] = ..., key_relay_request_notification: _Optional[_Union[KeyRelayRequestNotification, _Mapping]] = ..., key_relay_request: _Optional[_Union[KeyRelayRequest, _Mapping]] = ..., key_relay_response: _Optional[_Union[KeyRelayResponse, _Mapping]] = ..., ck_session_creation_request: _Optional[_Union[CkSessionCreationRequest, _Mapping]] = ..., ck_response_to_session_creation_request: _Optional[_Union[CkResponseToSessionCreationRequest, _Mapping]] = ..., ck_session_creation_notification: _Optional[_Union[CkSessionCreationNotification, _Mapping]] = ..., ck_response_to_session_creation_notification: _Optional[_Union[CkResponseToSessionCreationNotification, _Mapping]] = ..., key_reservation_request: _Optional[_Union[KeyReservationRequest, _Mapping]] = ..., key_reservation_response: _Optional[_Union[KeyReservationResponse, _Mapping]] = ..., key_allocation_request: _Optional[_Union[KeyAllocationRequest, _Mapping]] = ..., key_allocation_response: _Optional[_Union[KeyAllocationResponse, _Mapping]] = ..., ck_authentication_command: _Optional[_Union[CkAuthenticationCommand, _Mapping]] = ..., ck_authentication_response: _Optional[_Union[CkAuthenticationResponse, _Mapping]] = ..., status_information_supply_command: _Optional[_Union[StatusInformationSupplyCommand, _Mapping]] = ..., status_information_supply_response: _Optional[_Union[StatusInformationSupplyResponse, _Mapping]] = ..., route_information_supply_command: _Optional[_Union[RouteInformationSupplyCommand, _Mapping]] = ..., route_information_supply_response: _Optional[_Union[RouteInformationSupplyResponse, _Mapping]] = ..., session_end_notification: _Optional[_Union[SessionEndNotification, _Mapping]] = ..., session_ended_notification: _Optional[_Union[SessionEndedNotification, _Mapping]] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., session_message: _Optional[_Union[SessionMessage, _Mapping]] = ..., update: _Optional[_Union[Update, _Mapping]] = ..., key_relay: _Optional[_Union[KeyRelay, _Mapping]] = ..., response_to_key_relay: _Optional[_Union[ResponseToKeyRelay, _Mapping]] = ..., key_id_synchronization_request: _Optional[_Union[KeyIdSynchronizationRequest, _Mapping]] = ..., response_to_key_id_synchronization_request: _Optional[_Union[ResponseToKeyIdSynchronizationRequest, _Mapping]] = ..., key_relay_confirmation: _Optional[_Union[KeyRelayConfirmation, _Mapping]] = ..., response_to_key_relay_confirmation: _Optional[_Union[ResponseToKeyRelayConfirmation, _Mapping]] = ..., cq_authentication_command: _Optional[_Union[CqAuthenticationCommand, _Mapping]] = ..., cq_authentication_response: _Optional[_Union[CqAuthenticationResponse, _Mapping]] = ..., cq_status_information_supply_command: _Optional[_Union[CqStatusInformationSupplyCommand, _Mapping]] = ..., cq_status_information_supply_response: _Optional[_Union[CqStatusInformationSupplyResponse, _Mapping]] = ..., error_indication: _Optional[_Union[ErrorIndication, _Mapping]] = ...) -> None: ...
