"""The typed message layer: one frozen attrs class per table of the QKDN specifications.

Import a module per interface and use its classes; names say what the spec says, so the same name
can appear in two modules (``ak.KeyRequest`` is Q.4161 Table 1, ``kq1.KeyRequest`` Q.4162 Table 3)::

    from qkdn_sdk.messages import ak
    request = ak.KeyRequest(application_destination_id="app-b", number_of_keys=2)

Modules: :mod:`~qkdn_sdk.messages.ak` (Q.4161), :mod:`~qkdn_sdk.messages.kq1` (Q.4162),
:mod:`~qkdn_sdk.messages.ck` (Q.4164), :mod:`~qkdn_sdk.messages.kx` (KM link, SDK extensions) and
:mod:`~qkdn_sdk.messages.mgmt` (FG QIT4N D2.3 key supply and routing control, error indication).
Importing this package registers every message by command code.
"""

from qkdn_sdk.messages import ak, ck, kq1, kx, mgmt
from qkdn_sdk.messages._base import (
    FIRST_EXTENSION_LOW_BYTE,
    EitherMandatory,
    FieldInfo,
    Interface,
    JSONObject,
    Key,
    KeyId,
    MandatoryIfRequestHad,
    Message,
    Role,
    all_messages,
    check_response,
    field_infos,
    message_class,
    received_by,
)
from qkdn_sdk.messages._examples import example
from qkdn_sdk.messages._failure import failure_reason, failure_response

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
    "ak",
    "all_messages",
    "check_response",
    "ck",
    "example",
    "failure_reason",
    "failure_response",
    "field_infos",
    "kq1",
    "kx",
    "message_class",
    "mgmt",
    "received_by",
]
