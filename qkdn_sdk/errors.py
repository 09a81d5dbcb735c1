"""The errors of qkdn-sdk.

Every error is a :class:`QkdnError`. Like h11, we tell apart who got it wrong:

- :class:`LocalProtocolError`: *we* were about to build or send something the protocol does not
  allow (a message that breaks its table's rules, a payload over 65,535 bytes). Fix the caller.
- :class:`RemoteProtocolError`: the *peer* sent something wrong (an undecodable frame, an unknown
  command code, a payload that breaks its table). Answer with a failure response or an error
  indication and keep serving.

Like h2, each error knows what it becomes on the wire: :attr:`QkdnError.response_text` is the
``response`` failure text of the spec tables (``"failure: ..."``, DESIGN wire conventions), and
:attr:`QkdnError.http_status` the ETSI GS QKD 014 status code (400, 401 or 503).
"""

from __future__ import annotations

__all__ = [
    "MAX_REASON_LENGTH",
    "ConnectionBroken",
    "FailureResponse",
    "FrameError",
    "IdentityMismatch",
    "InvalidMessage",
    "LocalProtocolError",
    "NotAuthorized",
    "NotCarried",
    "PayloadError",
    "PayloadTooLarge",
    "PeerClosed",
    "QkdnError",
    "RemoteProtocolError",
    "RequestRefused",
    "RequestTimeout",
    "TransportError",
    "UnknownApplication",
    "UnknownCommandCode",
    "UnsupportedVersion",
    "quoted",
    "shorten",
]

MAX_REASON_LENGTH = 512
"""The longest failure text the SDK sends to a peer (a ``response`` reason, an error indication):
whatever a peer sends, what it gets back stays small."""


def shorten(text: str, limit: int = MAX_REASON_LENGTH) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "..." when it was cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(text: str, limit: int = 40) -> str:
    """``repr(text)`` of a name or ID a peer chose, shortened to about ``limit`` characters (and
    its length said) when longer, to quote it in an error text."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


class QkdnError(Exception):
    """Base class of every error raised by qkdn-sdk.

    ``http_status`` is the ETSI GS QKD 014 status this error is answered with over HTTPS;
    503 ("Error on server side.") unless a subclass says otherwise.
    """

    http_status: int = 503
    etsi014_message: str | None = None
    """The exact ETSI GS QKD 014 error message this error is answered with over HTTPS (``"size
    shall be a multiple of 8"``), its text going in ``details``; ``None``: the text is the
    message."""

    @property
    def response_text(self) -> str:
        """The failure reason for a ``response`` parameter: ``"failure: <what went wrong>"``,
        at most :data:`MAX_REASON_LENGTH` characters."""
        return shorten(f"failure: {self}")


class RequestRefused(QkdnError):
    """A well-formed request the peer will not serve as asked: a size or number of keys over
    its limits, an extension it does not support, keys it does not hold. ETSI 014 answers 400,
    with ``etsi014_message`` when 014 words that case."""

    http_status = 400

    def __init__(self, reason: str, *, etsi014_message: str | None = None) -> None:
        super().__init__(reason)
        self.etsi014_message = etsi014_message


class UnknownApplication(RequestRefused):
    """A request names an application (in ETSI 014, the slave SAE ID of the path) that no KM of
    the network serves: the QKDN controller knows no such application. ETSI 014 answers 400
    saying the SAE ID is not known to this KME: the caller's mistake, which 014 clients act on
    (a 503 would read as a fault of the KME, to try again later)."""

    def __init__(self, application: str) -> None:
        super().__init__(
            f"unknown destination application {quoted(application)}",
            etsi014_message=f"the SAE ID {quoted(application)} is not known to this KME",
        )
        self.application = application


class NotAuthorized(QkdnError):
    """The caller may not have what it asked for: keys made for another application, or a
    service of a KM that does not serve it. ETSI 014 answers 401 (no body)."""

    http_status = 401


class LocalProtocolError(QkdnError):
    """We were about to build or send something the protocol does not allow."""


class InvalidMessage(LocalProtocolError, ValueError):
    """A message breaks a rule of its table (a bad value, a conditional parameter missing).

    The text names the field and the rule: ``number_of_keys: must be >= 1``. When the message came
    from a peer, the payload codec turns this into a :class:`PayloadError`.
    """

    http_status = 400

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class PayloadTooLarge(LocalProtocolError):
    """An encoded payload does not fit the 2-byte Length of the TCP frame (Q.416x Appendix I).

    Never truncated or split: the caller must send less (for keys, at most the number the peer
    advertises as ``max_key_per_request``).
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload of {size} bytes exceeds the frame limit of {limit} bytes")
        self.size = size
        self.limit = limit


class RemoteProtocolError(QkdnError):
    """The peer sent something the protocol does not allow. ETSI 014 answers it with 400."""

    http_status = 400


class FrameError(RemoteProtocolError):
    """A received TCP frame could not be turned into a message.

    ``framing_intact`` says whether the byte stream can still be read: when True only this frame
    was bad (answer with an error indication and go on); when False the frame boundaries are lost
    and the connection has to be closed. ``message_id`` is the MessageID of the bad frame when its
    header could be read, so an error indication can echo it.
    """

    def __init__(self, reason: str, *, framing_intact: bool, message_id: int | None = None) -> None:
        super().__init__(reason)
        self.framing_intact = framing_intact
        self.message_id = message_id


class UnsupportedVersion(FrameError):
    """The frame's Version is not one this SDK speaks; the rest of the stream cannot be trusted."""

    def __init__(self, version: int, *, message_id: int | None = None) -> None:
        super().__init__(
            f"unsupported frame version {version} (this SDK speaks version 1)",
            framing_intact=False,
            message_id=message_id,
        )
        self.version = version


class UnknownCommandCode(FrameError):
    """The CommandCode is not in the catalogue. The frame length was read: framing holds."""

    def __init__(self, code: int, *, message_id: int | None = None) -> None:
        super().__init__(
            f"unknown command code 0x{code:04X}", framing_intact=True, message_id=message_id
        )
        self.code = code


class PayloadError(FrameError):
    """A payload is not valid JSON or breaks its message table.

    The text names the field and the rule (``number_of_keys: expected an integer``,
    ``key_ids[2].key_id: missing``); ``errors`` lists every problem found, ``command_code`` is the
    code of the message whose payload it was (``None`` when decoded outside a frame).
    """

    def __init__(
        self,
        errors: list[str],
        *,
        message_name: str,
        command_code: int | None = None,
        message_id: int | None = None,
    ) -> None:
        super().__init__(
            f"invalid {message_name}: " + "; ".join(errors),
            framing_intact=True,
            message_id=message_id,
        )
        self.errors = errors
        self.command_code = command_code


# --- transports -----------------------------------------------------------------------------


class FailureResponse(QkdnError):
    """The peer answered a request with a failure: a response whose ``response`` says
    ``"failure..."`` (or a non-zero integer, or a failure response code), or an error indication.

    ``response`` is the message received, ``reason`` the failure text it carried.
    """

    http_status = 503

    def __init__(self, reason: str, response: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response

    @property
    def response_text(self) -> str:
        return shorten(
            self.reason if self.reason.startswith("failure") else f"failure: {self.reason}"
        )


class TransportError(QkdnError):
    """A connection could not carry a message (no such scheme, unreachable, timed out, closed)."""


class RequestTimeout(TransportError):
    """No response arrived within the request's timeout. The connection stays usable."""


class PeerClosed(TransportError):
    """The peer closed the connection (cleanly) before answering."""


class ConnectionBroken(TransportError):
    """The connection failed: a network error, a TLS error, or the frame boundaries were lost."""


class IdentityMismatch(RemoteProtocolError):
    """A message claims an ID (``application_source_id``, ``sender_id``...) that is not the
    identity the peer authenticated with (its TLS certificate). ETSI 014 answers 401."""

    http_status = 401


class NotCarried(LocalProtocolError):
    """This transport cannot carry this message in this direction (HTTPS cannot push to its
    client); the text names the transports that can."""
