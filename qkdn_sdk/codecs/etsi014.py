"""ETSI GS QKD 014 <-> SDK messages: the mapping of Q.4161 Appendix II (Ak) and Q.4162 Appendix
II (Kq-1), sans-IO.

A client turns a request message into an :class:`HttpRequest` (:func:`encode_request`) and the
HTTP answer back into the response message (:func:`decode_response`); a server turns an HTTP
request into a message (:func:`decode_request`) and the handler's answer into a status and body
(:func:`encode_response`, :func:`encode_error`). No sockets, no HTTP library.

- Get status: :class:`ak.StatusRequest` -> :class:`ak.Status` (the application is the SAE),
  :class:`kq1.StatusRequest` -> :class:`kq1.Status` (the KM is the SAE); SDK extensions.
- Get key (``enc_keys``): :class:`ak.KeyRequest` (Q.4161 Table II.1) ->
  :class:`ak.ResponseToKeyRequest` (Table II.3); :class:`kq1.KeyRequest` (Q.4162 Table II.1) ->
  :class:`kq1.ResponseToKeyRequest` (Table II.2).
- Get key with key IDs (``dec_keys``): :class:`ak.KeyRequestWithId` (Q.4161 Table II.2) ->
  :class:`ak.ResponseToKeyRequest`; :class:`kq1.KeyRequestWithKeyIds` (SDK extension) ->
  :class:`kq1.ResponseToKeyRequest`.

What 014 carries and the SDK tables have no parameter for is kept, never dropped:

- ``extension_optional`` entries are the request's ``extension`` entries; ``extension_mandatory``
  and ``additional_slave_SAE_IDs`` are one entry each, ``{"extension_mandatory": [...]}`` and
  ``{"additional_slave_SAE_IDs": [...]}`` (SDK convention);
- the slave SAE of a Kq-1 Get key (Q.4162 Table II.1 maps no parameter to it) is the entry
  ``{"slave_SAE_ID": ...}`` of the key request's ``extension``;
- ``key_container_extension`` and ``key_IDs_extension`` (objects) are the message's
  ``extension`` (a list): one object is the list's only entry; several entries travel as
  ``{"extension": [...]}``;
- a key's ``key_ID_extension`` is its ``key_extension`` (Table II.3); the 014 ``key_extension``,
  which Table II.3 does not map, is that object's member ``"key_extension"``.

What the tables have and 014 cannot carry is named by :func:`as_carried`: the application name,
and the sender's ID, which 014 takes from the TLS client certificate.
"""

from __future__ import annotations

import base64
import binascii
import typing
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from qkdn_sdk.codecs.payload import MAX_DEPTH, deeper_than, duplicate_member
from qkdn_sdk.errors import LocalProtocolError, QkdnError, RemoteProtocolError, quoted, shorten
from qkdn_sdk.messages import Interface, JSONObject, Key, KeyId, Message, ak, failure_reason, kq1
from qkdn_sdk.messages._status import StatusFields

__all__ = [
    "ADDITIONAL_SLAVES",
    "API_PREFIX",
    "BAD_REQUEST",
    "KEYS_NOT_FOUND",
    "MANDATORY",
    "MANDATORY_EXTENSION_UNMET",
    "MANDATORY_EXTENSION_UNSUPPORTED",
    "MAX_BODY_SIZE",
    "OPTIONAL",
    "OPTIONAL_EXTENSION_UNHANDLED",
    "SERVER_ERROR",
    "SIZE_NOT_MULTIPLE_OF_8",
    "SLAVE",
    "UNAUTHORIZED",
    "Etsi014Error",
    "HttpRequest",
    "KeyRequestOptions",
    "as_carried",
    "decode_request",
    "decode_response",
    "encode_error",
    "encode_request",
    "encode_response",
    "extension_list",
    "extension_object",
    "key_request_options",
]

API_PREFIX = "/api/v1/keys/"

BAD_REQUEST = "Bad request format."
UNAUTHORIZED = "Unauthorized."
SERVER_ERROR = "Error on server side."
SIZE_NOT_MULTIPLE_OF_8 = "size shall be a multiple of 8"
MANDATORY_EXTENSION_UNSUPPORTED = "not all extension_mandatory parameters are supported"
MANDATORY_EXTENSION_UNMET = "not all extension_mandatory request options could be met"
OPTIONAL_EXTENSION_UNHANDLED = "not all extension_optional request options handled"
KEYS_NOT_FOUND = "one or more keys specified are not found on KME"
"""The messages ETSI GS QKD 014 gives its errors, quoted exactly: clients match on them."""

MAX_BODY_SIZE = 65_535
"""The largest request body a server reads (what a TCP frame carries); more gets 400."""

MANDATORY = "extension_mandatory"
OPTIONAL = "extension_optional"
ADDITIONAL_SLAVES = "additional_slave_SAE_IDs"
SLAVE = "slave_SAE_ID"
"""The 014 names an SDK ``extension`` entry of a key request stands for (module docstring)."""

_BODY_ONLY = (ADDITIONAL_SLAVES, MANDATORY, OPTIONAL)
_STATUS, _ENC_KEYS, _DEC_KEYS = "status", "enc_keys", "dec_keys"


def _status_fields() -> tuple[tuple[str, str, type, bool], ...]:
    """``(attribute, 014 name, JSON type, mandatory)`` of each Status parameter, read from the
    table (:class:`~qkdn_sdk.messages._status.StatusFields`: its spec names are the 014 names)."""
    fields = []
    for field in attrs.fields(attrs.resolve_types(StatusFields)):
        args = typing.get_args(field.type) or (field.type,)  # X | None: X
        (kind,) = [arg for arg in args if arg is not type(None)]
        kind = typing.get_origin(kind) or kind  # dict[str, Any]: dict
        fields.append(
            (field.name, field.metadata["spec"].name, kind, field.default is attrs.NOTHING)
        )
    return tuple(fields)


_STATUS_FIELDS = _status_fields()
_JSON_TYPES = {int: "an integer", str: "a string", dict: "an object"}


class Etsi014Error(QkdnError):
    """An ETSI GS QKD 014 error: the HTTP ``status`` (400, 401, 404, 405, 503...) with the 014
    error body ``{message, details}`` (401 has none).

    A server raises it for a request it cannot map (:func:`decode_request`); the client raises it
    for a KME's error answer (:func:`decode_response`), so callers can match on ``status`` and on
    the exact 014 ``message``.
    """

    def __init__(self, status: int, message: str, details: list[JSONObject] | None = None) -> None:
        shown = message + "".join(
            f"; {value}" for detail in details or () for value in detail.values()
        )
        super().__init__(f"{status} {shorten(shown)}")
        self.http_status = status
        self.message = message
        self.details = details or []


def _bad(reason: str) -> Etsi014Error:
    return Etsi014Error(400, BAD_REQUEST, [{"reason": shorten(reason)}])


@attrs.frozen
class HttpRequest:
    """What a 014 client sends: ``method`` and ``path`` (with the query string), and for POST
    the JSON ``body``."""

    method: str
    path: str
    body: JSONObject | None = None

    def content(self) -> bytes | None:
        return None if self.body is None else orjson.dumps(self.body)


# --- the extension mappings ---------------------------------------------------------------------


def _is_wrapper(value: JSONObject) -> bool:
    inner = value.get("extension") if len(value) == 1 else None
    return isinstance(inner, list) and all(isinstance(item, dict) for item in inner)


def extension_object(extension: list[JSONObject] | None) -> JSONObject | None:
    """A message's ``extension`` list as the 014 object (``key_container_extension``...): its
    only entry, or ``{"extension": [...]}`` for any other list."""
    if extension is None:
        return None
    if len(extension) == 1 and not _is_wrapper(extension[0]):
        return extension[0]
    return {"extension": list(extension)}


def extension_list(value: JSONObject | None) -> list[JSONObject] | None:
    """The 014 extension object as a message's ``extension`` list (the inverse of
    :func:`extension_object`)."""
    if value is None:
        return None
    if _is_wrapper(value):
        return list(value["extension"])
    return [value]


def _key_to_json(key: Key) -> JSONObject:
    item: JSONObject = {"key_ID": key.key_id, "key": base64.b64encode(key.key).decode("ascii")}
    if key.key_extension is None:
        return item
    extension = dict(key.key_extension)
    if "key_extension" in extension:
        item["key_extension"] = extension.pop("key_extension")
    if extension or "key_extension" not in item:
        item["key_ID_extension"] = extension
    return item


@attrs.frozen
class KeyRequestOptions:
    """What the ``extension`` of a key request asks, in ETSI 014 terms (the SDK convention of
    this module): the ``extension_mandatory`` and ``extension_optional`` entries, the
    ``additional_slave_SAE_IDs``, and (Kq-1) the slave SAE."""

    mandatory: list[Any] = attrs.Factory(list)
    optional: list[Any] = attrs.Factory(list)
    additional_slaves: list[Any] = attrs.Factory(list)
    slave: str | None = None


def key_request_options(message: ak.KeyRequest | kq1.KeyRequest) -> KeyRequestOptions:
    """Sort the entries of ``message.extension`` into a :class:`KeyRequestOptions`. The lists
    hold what the peer sent (check their members before use)."""
    options = KeyRequestOptions()
    lists = {
        MANDATORY: options.mandatory,
        OPTIONAL: options.optional,
        ADDITIONAL_SLAVES: options.additional_slaves,
    }
    for entry in message.extension or ():
        name = next(iter(entry)) if len(entry) == 1 else None
        if name == SLAVE and isinstance(message, kq1.KeyRequest):
            named = entry[name]
            options = attrs.evolve(
                options, slave=named if isinstance(named, str) and named else None
            )
        elif name in lists and isinstance(entry[name], list):
            lists[name].extend(entry[name])
        else:
            options.optional.append(entry)
    return options


def _request_entries(
    message: ak.KeyRequest | kq1.KeyRequest, body: JSONObject
) -> tuple[str | None, bool]:
    """Put a key request's extension entries into the 014 ``body``; return the slave SAE its
    entries name (Kq-1) and whether anything but ``number``/``size`` went in."""
    options = key_request_options(message)
    for name, values in (
        (MANDATORY, options.mandatory),
        (ADDITIONAL_SLAVES, options.additional_slaves),
        (OPTIONAL, options.optional),
    ):
        if values:
            body[name] = values
    return options.slave, bool(body.keys() - {"number", "size"})


# --- client side --------------------------------------------------------------------------------


def _path(sae_id: str, method: str, query: Mapping[str, Any] | None = None) -> str:
    path = API_PREFIX + urllib.parse.quote(sae_id, safe="") + "/" + method
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def encode_request(message: Message) -> HttpRequest:
    """The 014 request for ``message`` (a status or key request of Ak or Kq-1). Get key is a GET
    with ``number`` and ``size`` in the query when the request has nothing else, a POST otherwise;
    Get key with key IDs is a GET for one key ID without extensions. Raises
    :class:`~qkdn_sdk.errors.LocalProtocolError` for a message 014 cannot carry."""
    if isinstance(message, (ak.StatusRequest, kq1.StatusRequest)):
        asked = (
            message.application_destination_id
            if isinstance(message, ak.StatusRequest)
            else message.slave_sae_id
        )
        return HttpRequest("GET", _path(asked, _STATUS))
    if isinstance(message, (ak.KeyRequest, kq1.KeyRequest)):
        body: JSONObject = {}
        if message.number_of_keys is not None:
            body["number"] = message.number_of_keys
        if message.size_of_key is not None:
            body["size"] = message.size_of_key
        named, needs_post = _request_entries(message, body)
        if isinstance(message, ak.KeyRequest):
            slave = message.application_destination_id
        elif named is not None:
            slave = named
        else:
            raise LocalProtocolError(
                "a Kq-1 key request over ETSI 014 names the slave SAE (the KM at the other end "
                f'of the link): extension [{{"{SLAVE}": ...}}]'
            )
        if needs_post:
            return HttpRequest("POST", _path(slave, _ENC_KEYS), body)
        return HttpRequest("GET", _path(slave, _ENC_KEYS, body))
    if isinstance(message, (ak.KeyRequestWithId, kq1.KeyRequestWithKeyIds)):
        master = (
            message.application_source_id
            if isinstance(message, ak.KeyRequestWithId)
            else message.master_sae_id
        )
        ids = message.key_ids
        if len(ids) == 1 and ids[0].key_id_extension is None and not message.extension:
            return HttpRequest("GET", _path(master, _DEC_KEYS, {"key_ID": ids[0].key_id}))
        key_ids: JSONObject = {"key_IDs": [_key_id_to_json(key_id) for key_id in ids]}
        extension = extension_object(message.extension)
        if extension is not None:
            key_ids["key_IDs_extension"] = extension
        return HttpRequest("POST", _path(master, _DEC_KEYS), key_ids)
    raise LocalProtocolError(f"ETSI 014 has no method for {type(message).__name__}")


def _key_id_to_json(key_id: KeyId) -> JSONObject:
    item: JSONObject = {"key_ID": key_id.key_id}
    if key_id.key_id_extension is not None:
        item["key_ID_extension"] = key_id.key_id_extension
    return item


def decode_response(request: Message, status: int, body: bytes) -> Message:
    """The response message to ``request`` from a 014 answer: the status on success, or the
    keys (``response="success"``). Raises :class:`Etsi014Error` for an error status, and
    :class:`~qkdn_sdk.errors.RemoteProtocolError` for a 200 whose body is not what 014 says."""
    if status != 200:
        raise _error_of(status, body)
    document = _json_object(body, "response")
    if isinstance(request, (ak.StatusRequest, kq1.StatusRequest)):
        status_type = ak.Status if isinstance(request, ak.StatusRequest) else kq1.Status
        return _status_from_json(status_type, document)
    keys_value = document.get("keys")
    if not isinstance(keys_value, list):
        raise RemoteProtocolError("the key container has no keys array")
    extension = document.get("key_container_extension")
    if extension is not None and not isinstance(extension, dict):
        raise RemoteProtocolError("key_container_extension: expected an object")
    keys = [_key_from_json(index, item) for index, item in enumerate(keys_value)]
    response_type = (
        ak.ResponseToKeyRequest
        if isinstance(request, (ak.KeyRequest, ak.KeyRequestWithId))
        else kq1.ResponseToKeyRequest
    )
    return response_type(keys=keys, response="success", extension=extension_list(extension))


def _error_of(status: int, body: bytes) -> Etsi014Error:
    """The error a 014 KME answered with (its ``message`` and ``details`` when it sent them)."""
    message, details = {401: UNAUTHORIZED, 400: BAD_REQUEST}.get(status, SERVER_ERROR), None
    try:
        document = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        if isinstance(document.get("message"), str):
            message = shorten(document["message"])
        if isinstance(document.get("details"), list):
            details = [item for item in document["details"][:8] if isinstance(item, dict)]
    return Etsi014Error(status, message, details)


def _json_object(body: bytes, what: str) -> JSONObject:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"the {what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RemoteProtocolError(f"the {what} is not a JSON object")
    if deeper_than(document, MAX_DEPTH):
        raise RemoteProtocolError(
            f"the {what} is nested deeper than {MAX_DEPTH} arrays and objects"
        )
    name = duplicate_member(body, document)
    if name is not None:
        raise RemoteProtocolError(f"the {what} has a duplicate member {quoted(name)}")
    return document


def _key_from_json(index: int, item: Any) -> Key:
    where = f"keys[{index}]"
    if not isinstance(item, dict):
        raise RemoteProtocolError(f"{where}: expected an object")
    key_id, data = item.get("key_ID"), item.get("key")
    if not isinstance(key_id, str) or not key_id:
        raise RemoteProtocolError(f"{where}.key_ID: expected a non-empty string")
    if not isinstance(data, str):
        raise RemoteProtocolError(f"{where}.key: expected a base64 string")
    try:
        key = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RemoteProtocolError(f"{where}.key: not base64") from None
    if not key:
        raise RemoteProtocolError(f"{where}.key: empty")
    extension = item.get("key_ID_extension")
    key_extension = item.get("key_extension")
    if extension is not None and not isinstance(extension, dict):
        raise RemoteProtocolError(f"{where}.key_ID_extension: expected an object")
    if extension is None and key_extension is None:
        return Key(key=key, key_id=key_id)
    merged = dict(extension or {})
    if key_extension is not None:
        merged["key_extension"] = key_extension
    return Key(key=key, key_id=key_id, key_extension=merged)


def _status_from_json(status_type: type[ak.Status | kq1.Status], document: JSONObject) -> Message:
    """A KME's status, read liberally where 014's intent is clear: an ID sent as a number (a
    third-party KME's ``"target_KME_ID": 0``) is that number's text."""
    values: dict[str, Any] = {}
    for name, json_name, kind, mandatory in _STATUS_FIELDS:
        value = document.get(json_name)
        if value is None:
            if mandatory:
                raise RemoteProtocolError(f"the status has no {json_name}")
            continue
        if kind is str and type(value) is int and json_name.endswith("_ID"):
            value = str(value)
        if type(value) is not kind:  # a bool is not an integer
            raise RemoteProtocolError(
                f"{json_name}: expected {_JSON_TYPES[kind]}, got {quoted(str(value))}"
            )
        values[name] = value
    try:
        return status_type(**values)
    except QkdnError as exc:
        raise RemoteProtocolError(f"the status is not valid: {exc}") from None


# --- server side --------------------------------------------------------------------------------


def decode_request(
    method: str, path: str, query: bytes, body: bytes, *, interface: Interface
) -> Message:
    """The message of a 014 request to a KME of ``interface`` (``Interface.AK``: a KM serving
    applications; ``Interface.KQ1``: a QKD module serving its KM). ``path`` is as sent
    (percent-encoded: an SAE ID may hold ``/``), ``query`` the raw query string.

    Raises :class:`Etsi014Error`: 404 for a path that is no 014 method, 405 for a method the
    path does not take, 400 (``"Bad request format."``, with what was wrong in ``details``) for
    a query or body that is not what 014 says.
    """
    if not path.startswith(API_PREFIX):
        raise Etsi014Error(404, "Not found.", [{"reason": f"no ETSI 014 method at {path[:80]}"}])
    raw_id, _, name = path[len(API_PREFIX) :].rpartition("/")
    sae_id = urllib.parse.unquote(raw_id, errors="strict") if _readable(raw_id) else ""
    if not sae_id or "/" in raw_id or name not in (_STATUS, _ENC_KEYS, _DEC_KEYS):
        raise Etsi014Error(404, "Not found.", [{"reason": f"no ETSI 014 method at {path[:80]}"}])
    allowed = ("GET",) if name == _STATUS else ("GET", "POST")
    if method not in allowed:
        raise Etsi014Error(
            405, "Method not allowed.", [{"reason": f"{name} takes {' or '.join(allowed)}"}]
        )
    parameters = _query(query)
    if method == "POST":
        if parameters:
            raise _bad("a POST takes its parameters in the body, not the query")
        document = _body(body)
    else:
        if body:
            raise _bad("a GET has no body: use POST")
        document = parameters
    try:
        if name == _STATUS:
            if document:
                raise _bad("Get status takes no parameters")
            if interface is Interface.KQ1:
                return kq1.StatusRequest(slave_sae_id=sae_id)
            return ak.StatusRequest(application_destination_id=sae_id)
        if name == _ENC_KEYS:
            return _key_request(sae_id, document, interface, get=method == "GET")
        return _key_request_with_ids(sae_id, document, interface, get=method == "GET")
    except Etsi014Error:
        raise
    except QkdnError as exc:  # a message rule (InvalidMessage)
        raise _bad(str(exc)) from None


def _readable(raw: str) -> bool:
    """Whether a percent-encoded path segment decodes to UTF-8 text."""
    try:
        urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def _query(query: bytes) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = urllib.parse.parse_qsl(
            query.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=16
        )
    except (UnicodeDecodeError, ValueError):
        raise _bad("the query string cannot be read") from None
    parameters: dict[str, str] = {}
    for name, value in pairs:
        if name in parameters:
            raise _bad(f"{quoted(name)} is given twice")
        parameters[name] = value
    return parameters


def _body(body: bytes) -> JSONObject:
    if len(body) > MAX_BODY_SIZE:
        raise _bad(f"the body is over {MAX_BODY_SIZE} bytes")
    try:
        document = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _bad("the body is not a JSON object")
    if deeper_than(document, MAX_DEPTH):
        raise _bad(f"the body is nested deeper than {MAX_DEPTH} arrays and objects")
    name = duplicate_member(body, document)
    if name is not None:
        raise _bad(f"the body has a duplicate member {quoted(name)}")
    return {name: value for name, value in document.items() if value is not None}


def _unknown(document: JSONObject, known: set[str]) -> None:
    unknown = sorted(set(document) - known)
    if unknown:
        raise _bad(f"unknown parameters: {', '.join(quoted(name) for name in unknown[:4])}")


def _integer(document: JSONObject, name: str, *, from_query: bool) -> int | None:
    value = document.get(name)
    if value is None:
        return None
    if from_query:
        if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19):
            raise _bad(f"{name}: expected a positive integer, got {quoted(str(value))}")
        value = int(value)
    if type(value) is not int or not 1 <= value < 2**63:
        raise _bad(f"{name}: expected a positive integer, got {quoted(str(value))}")
    return value


def _objects(document: JSONObject, name: str) -> list[JSONObject] | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _bad(f"{name}: expected an array of objects")
    return value


def _key_request(
    slave: str, document: JSONObject, interface: Interface, *, get: bool
) -> ak.KeyRequest | kq1.KeyRequest:
    _unknown(document, {"number", "size"} if get else {"number", "size", *_BODY_ONLY})
    number = _integer(document, "number", from_query=get)
    size = _integer(document, "size", from_query=get)
    extension: list[JSONObject] = []
    mandatory = _objects(document, MANDATORY)
    if mandatory:
        extension.append({MANDATORY: mandatory})
    additional = document.get(ADDITIONAL_SLAVES)
    if additional is not None:
        if not isinstance(additional, list) or not all(
            isinstance(item, str) and item for item in additional
        ):
            raise _bad(f"{ADDITIONAL_SLAVES}: expected an array of SAE IDs")
        if additional:
            extension.append({ADDITIONAL_SLAVES: additional})
    extension.extend(_objects(document, OPTIONAL) or ())
    if interface is Interface.KQ1:
        return kq1.KeyRequest(
            number_of_keys=number, size_of_key=size, extension=[{SLAVE: slave}, *extension]
        )
    return ak.KeyRequest(
        application_destination_id=slave,
        number_of_keys=number,
        size_of_key=size,
        extension=extension or None,
    )


def _key_request_with_ids(
    master: str, document: JSONObject, interface: Interface, *, get: bool
) -> ak.KeyRequestWithId | kq1.KeyRequestWithKeyIds:
    if get:
        _unknown(document, {"key_ID"})
        if not document.get("key_ID"):
            raise _bad("a GET of dec_keys names one key: ?key_ID=...")
        key_ids = [KeyId(key_id=document["key_ID"])]
        extension = None
    else:
        _unknown(document, {"key_IDs", "key_IDs_extension"})
        items = document.get("key_IDs")
        if not isinstance(items, list) or not items:
            raise _bad("key_IDs: expected a non-empty array")
        key_ids = [_key_id_from_json(index, item) for index, item in enumerate(items)]
        ids_extension = document.get("key_IDs_extension")
        if ids_extension is not None and not isinstance(ids_extension, dict):
            raise _bad("key_IDs_extension: expected an object")
        extension = extension_list(ids_extension)
    if interface is Interface.KQ1:
        return kq1.KeyRequestWithKeyIds(master_sae_id=master, key_ids=key_ids, extension=extension)
    return ak.KeyRequestWithId(application_source_id=master, key_ids=key_ids, extension=extension)


def _key_id_from_json(index: int, item: Any) -> KeyId:
    where = f"key_IDs[{index}]"
    if not isinstance(item, dict):
        raise _bad(f"{where}: expected an object")
    _unknown(item, {"key_ID", "key_ID_extension"})
    key_id, extension = item.get("key_ID"), item.get("key_ID_extension")
    if not isinstance(key_id, str) or not key_id:
        raise _bad(f"{where}.key_ID: expected a non-empty string")
    if extension is not None and not isinstance(extension, dict):
        raise _bad(f"{where}.key_ID_extension: expected an object")
    return KeyId(key_id=key_id, key_id_extension=extension)


def encode_response(response: Message) -> tuple[int, JSONObject]:
    """Status and body of a handler's answer: 200 with the key container or the status; a
    failure response (``response`` says failure) is 503 with its reason."""
    reason = failure_reason(response)
    if reason is not None:
        return 503, {"message": shorten(reason)}
    if isinstance(response, (ak.Status, kq1.Status)):
        body = {}
        for name, json_name, _kind, _mandatory in _STATUS_FIELDS:
            value = getattr(response, name)
            if value is not None:
                body[json_name] = value
        return 200, body
    if isinstance(response, (ak.ResponseToKeyRequest, kq1.ResponseToKeyRequest)):
        container: JSONObject = {"keys": [_key_to_json(key) for key in response.keys]}
        extension = extension_object(response.extension)
        if extension is not None:
            container["key_container_extension"] = extension
        return 200, container
    return 503, {"message": f"the KME answered with {type(response).__name__}"}


def encode_error(error: BaseException) -> tuple[int, JSONObject | None]:
    """Status and body of a handler's error: its ``http_status`` (503 unless it says), 401
    without a body, else ``{message, details}`` with the exact 014 message where the error has
    one (``etsi014_message``) and what went wrong in ``details``."""
    if isinstance(error, Etsi014Error):
        body: JSONObject = {"message": error.message}
        if error.details:
            body["details"] = error.details
        return error.http_status, None if error.http_status == 401 else body
    if not isinstance(error, QkdnError):
        return 503, {"message": SERVER_ERROR, "details": [{"reason": "internal error"}]}
    status = error.http_status
    if status == 401:
        return 401, None
    message = getattr(error, "etsi014_message", None)
    text = shorten(str(error))
    if message is None or message == text:
        return status, {"message": text}
    return status, {"message": message, "details": [{"reason": text}]}


def as_carried(message: Message) -> Message:
    """``message`` as a 014 peer receives it: what Appendix II maps to nothing (the application
    name, the application IDs 014 takes from the certificate) is gone, and the extension
    entries are in their 014 order (``extension_mandatory``, ``additional_slave_SAE_IDs``, then
    the optional ones)."""
    request = encode_request(message)
    interface = Interface.KQ1 if message.interface is Interface.KQ1 else Interface.AK
    path, _, query = request.path.partition("?")
    return decode_request(
        request.method, path, query.encode("ascii"), request.content() or b"", interface=interface
    )
