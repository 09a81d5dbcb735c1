"""Failure responses: reading them (:func:`failure_reason`) and building them
(:func:`failure_response`).

The tables say failure four ways, and the SDK reads all four:

- a ``response`` string: ``"success"``, or a reason beginning ``"failure"`` (DESIGN conventions);
- a ``response`` integer (Q.4164 Tables 11, 13): 0 success, anything else failure;
- a ``response_code`` (FG QIT4N D2.3): ``ResultCode.FAILURE`` or
  ``KeySupplyResponseCode.INSUFFICIENT`` (with the reason, by SDK convention, as the status
  table entry ``{"error_message": ...}`` of a failed D2.3 Table 8-2);
- no Next KMA IDs in Q.4164 Table 2, which has no Response parameter: no KMA is available as the
  next hop (with the reason, by SDK convention, as the Extension object
  ``{"error_message": ...}``);

and an :class:`~qkdn_sdk.messages.mgmt.ErrorIndication` is always a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from qkdn_sdk.errors import InvalidMessage, shorten
from qkdn_sdk.messages._base import Message
from qkdn_sdk.messages.ck import ResponseToKeyRelayNextHopRequest
from qkdn_sdk.messages.mgmt import ErrorIndication, KeySupplyResponseCode, ResultCode

__all__ = ["failure_reason", "failure_response"]

_STRING_TYPES = (str, str | None)

_FAILURE_CODES = {
    ResultCode: ResultCode.FAILURE,
    KeySupplyResponseCode: KeySupplyResponseCode.INSUFFICIENT,
}

_NONE_AVAILABLE: dict[type[Message], tuple[str, str]] = {
    ResponseToKeyRelayNextHopRequest: (
        "next_kma_ids",
        "no route: the controller names no KMA available as the next hop",
    ),
}
"""Responses without a Response parameter that fail by listing nothing: the list, and the
reason when the Extension gives none (Q.4164 Table 2: "IDs of KMAs available as a next relay
hop")."""


def failure_reason(message: Message) -> str | None:
    """The failure ``message`` reports, or ``None`` when it reports none."""
    if isinstance(message, ErrorIndication):
        return message.reason
    response = getattr(message, "response", None)
    if isinstance(response, str):
        return response if response.lower().startswith("failure") else None
    if isinstance(response, int) and response != 0:
        given = _error_message(getattr(message, "extension", None))
        return given or f"failure: result code {response}"
    code = getattr(message, "response_code", None)
    if code is not None and code in _FAILURE_CODES.values():
        given = _error_message(getattr(message, "status_table", None))  # D2.3 Table 8-2 (SDK)
        return given or f"failure: response code 0x{int(code):02X} ({code.name.lower()})"
    none_available = _NONE_AVAILABLE.get(type(message))
    if none_available is not None and not getattr(message, none_available[0]):
        given = _error_message(getattr(message, "extension", None))
        return given or f"failure: {none_available[1]}"
    return None


def _error_message(items: list[Any] | None) -> str | None:
    """The text of the first ``{"error_message": <text>}`` object among ``items``."""
    for item in items or ():
        if isinstance(item, dict) and isinstance(item.get("error_message"), str):
            return str(item["error_message"])
    return None


def failure_response(
    response_type: type[Message],
    reason: str,
    *,
    echo: Mapping[str, Any] | None = None,
    sender_id: str | None = None,
    command_code: int | None = None,
) -> Message:
    """A ``response_type`` that reports ``reason``, or an :class:`ErrorIndication` when that
    table cannot carry it.

    The response is built from what the table has: ``response`` = ``"failure: <reason>"`` (or
    1 where it is an integer), ``response_code`` = the failure code, lists empty (Q.4164 Table
    2's Next KMA IDs so, with the reason as the Extension ``{"error_message": ...}``),
    ``sender_id``, and string parameters of the same name taken from ``echo`` (the request's
    IDs, such as ``session_id`` or ``key_id``: only a non-empty string goes into a string
    parameter, whatever the peer put in ``echo``; ``key_id`` is the first key's of a request
    that carries ``keys``, as Q.4161 Table 11 answers Table 10). A mandatory ``session_id`` the
    request does not hold (Q.4161 Table 5, Q.4164 Table 7 answer a session creation request) is
    a new UUID: the failed session's. Any other mandatory string it does not hold is empty,
    where the table allows that in a failure (Q.4164 Table 7's Destination KM ID). When a
    mandatory parameter cannot be filled that way, or the table has no way to say failure, the
    answer is an error indication with the reason.
    The reason is cut to :data:`~qkdn_sdk.errors.MAX_REASON_LENGTH` characters.
    """
    text = shorten(reason if reason.startswith("failure") else f"failure: {reason}")
    echo = dict(echo or {})
    keys = echo.get("keys")
    if "key_id" not in echo and isinstance(keys, list) and keys:  # Table 11 answers Table 10
        echo["key_id"] = getattr(keys[0], "key_id", None)
    values: dict[str, Any] = {}
    reported = response_type in _NONE_AVAILABLE  # its empty list (below) says it
    if reported:
        values["extension"] = [{"error_message": text}]
    for attribute in attrs.fields(attrs.resolve_types(response_type)):
        name = attribute.name
        if name == "response":
            values[name] = text if attribute.type is str else 1
            if attribute.type is not str:  # gRPC Tables II.4-2, II.5-2 map Extension to this
                values["extension"] = [{"error_message": text}]
            reported = True
        elif name == "response_code":
            values[name] = _FAILURE_CODES[attribute.type]
            reported = True
            if any(field.name == "status_table" for field in attrs.fields(response_type)):
                values["status_table"] = [{"error_message": text}]  # Table 8-2 has no text
        elif name == "sender_id" and sender_id:
            values[name] = sender_id
        elif name == "extension":
            continue
        elif attribute.type in _STRING_TYPES and isinstance(echo.get(name), str) and echo[name]:
            values[name] = shorten(echo[name])
        elif name == "session_id" and attribute.default is attrs.NOTHING:
            values[name] = str(uuid.uuid4())  # a session that failed to be: its own ID
        elif attribute.default is attrs.NOTHING and "list[" in str(attribute.type):
            values[name] = []
        elif attribute.default is attrs.NOTHING and attribute.type is str:
            values[name] = ""  # the table's validator refuses it unless a failure may be empty
    if reported:
        try:
            return response_type(**values)
        except (InvalidMessage, TypeError, ValueError):
            pass
    return ErrorIndication(reason=text, command_code=command_code)
