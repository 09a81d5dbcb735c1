"""TLS configuration for the transports: ssl contexts from PEM files, and the peer's identity.

Theory of operation
-------------------
A :class:`TLSConfig` names files: the CA bundle that verifies the peer, and our own certificate
chain and private key. It holds paths, not loaded material, and caches nothing: every call to
:meth:`~TLSConfig.server_context` or :meth:`~TLSConfig.client_context` reads the files again and
returns a fresh :class:`ssl.SSLContext`, so certificates renewed on disk are picked up by the next
context. Nothing here opens a socket; transports wrap their streams with the contexts
(``trio.SSLStream(stream, config.server_context(), server_side=True)``).

The files are checked before :mod:`ssl` sees them, because :mod:`ssl` reports a bad file as
``[SSL] PEM lib`` or a ``FileNotFoundError`` without a file name. Every problem is a
:class:`TLSConfigError` whose one-line text names the file and what is wrong with it::

    TLS key file /etc/qkdn/km.key: no such file

The rules (DESIGN wire conventions, Identity): TLS 1.2 or later on every interface, and mutual
authentication by default. After the handshake the peer's ID is read from its verified
certificate: the subject CN, or else the first URI or DNS subjectAltName
(:func:`peer_identity`, :func:`peer_identity_from_der`).
"""

from __future__ import annotations

import contextlib
import errno
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from qkdn_sdk.errors import LocalProtocolError

__all__ = [
    "MINIMUM_TLS_VERSION",
    "TLSConfig",
    "TLSConfigError",
    "explain_tls_failure",
    "peer_identity",
    "peer_identity_from_der",
]

MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2
"""The oldest TLS version either side accepts (DESIGN wire conventions: TLS 1.2 or later)."""

_FileKind = Literal["CA", "certificate", "key"]


class TLSConfigError(LocalProtocolError):
    """A TLS file is missing, unreadable or not what it should be, or the configuration lacks one.

    The text is one line naming the file and the problem:
    ``TLS key file /x/km.key: no such file``. ``path`` is the file (``None`` when no file is
    to blame, e.g. a server configured without a certificate) and ``problem`` the part after the
    colon.
    """

    def __init__(self, kind: _FileKind | None, path: Path | None, problem: str) -> None:
        super().__init__(f"TLS {kind} file {path}: {problem}" if path is not None else problem)
        self.kind = kind
        self.path = path
        self.problem = problem


@attrs.frozen
class TLSConfig:
    """Where the TLS material of one endpoint lives (PEM files).

    ``ca`` is the CA bundle that verifies the peer; ``cert`` our certificate chain (leaf first)
    and ``key`` its private key. ``key`` may be left out when ``cert`` holds the key as well.
    Private keys must not be encrypted: a server cannot stop to ask for a passphrase.
    ``require_client_cert`` turns mutual authentication on (the default) for servers; clients
    always verify the server.
    """

    ca: Path = attrs.field(converter=Path)
    cert: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    key: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    require_client_cert: bool = True

    def server_context(self) -> ssl.SSLContext:
        """A fresh server context: TLS >= 1.2, our certificate and key, peer verified by ``ca``.

        With ``require_client_cert`` a client must present a certificate that ``ca`` verifies
        (``CERT_REQUIRED``); without it no client certificate is asked for (``CERT_NONE``), never
        an optional one.

        Raises :class:`TLSConfigError` when ``cert`` is not set, or when a file is missing,
        unreadable, not PEM, an encrypted key, or a key that does not match the certificate.
        """
        if self.cert is None:
            raise TLSConfigError(
                None, None, "a TLS server needs a certificate and key (TLSConfig.cert and .key)"
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._configure(context)
        context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_NONE
        return context

    def client_context(self) -> ssl.SSLContext:
        """A fresh client-side context: TLS >= 1.2, server verified by ``ca`` with its host name.

        Our certificate and key are loaded when ``cert`` is set (servers require them by default).

        Raises :class:`TLSConfigError` when a file is missing, unreadable, not PEM, an encrypted
        key, or a key that does not match the certificate, or when ``key`` is set without ``cert``.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname on
        self._configure(context)
        return context

    def identity(self) -> str | None:
        """Our own ID, read from our certificate (the first in ``cert``) by the rule of
        :func:`peer_identity`: what a peer will see. ``None`` without ``cert``.

        Raises :class:`TLSConfigError` when the certificate file is missing, unreadable or not a
        PEM certificate.
        """
        if self.cert is None:
            return None
        return _identity_of(_check_certificates("certificate", self.cert)[0])

    def _configure(self, context: ssl.SSLContext) -> None:
        context.minimum_version = MINIMUM_TLS_VERSION
        # Let a CA bundle hold an intermediate as its trust anchor, as Python 3.13's default
        # context does: the operator trusts exactly what the file holds.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        _check_certificates("CA", self.ca)
        with _ssl_errors("CA", self.ca):
            context.load_verify_locations(cafile=self.ca)
        if self.cert is None:
            if self.key is not None:
                raise TLSConfigError("key", self.key, "given without a certificate file")
            return
        _check_certificates("certificate", self.cert)
        key = self.key if self.key is not None else self.cert
        _check_private_key(key)

        def no_password() -> NoReturn:
            # Without a callback OpenSSL would prompt on the terminal and block the server.
            raise TLSConfigError("key", key, "encrypted private keys are not supported")

        try:
            context.load_cert_chain(self.cert, self.key, password=no_password)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise TLSConfigError(
                    "key", key, f"does not match the certificate in {self.cert}"
                ) from None
            raise TLSConfigError("key", key, _ssl_reason(exc)) from None
        except OSError as exc:  # the file changed under us since it was checked
            raise TLSConfigError("certificate", self.cert, _os_problem(exc)) from None


def peer_identity(cert: Mapping[str, Any] | None) -> str | None:
    """The peer's ID from ``ssl.SSLObject.getpeercert()`` of a verified connection.

    The subject CN (when there are several, the last, most specific one); else the first URI or
    DNS subjectAltName; ``None`` when the certificate has none of these, or when there is no
    verified certificate (``None`` or ``{}``, e.g. a server that did not ask for one).
    Does not raise for anything ``getpeercert()`` returns.
    """
    if not cert:
        return None
    common_names = [
        str(value) for rdn in cert.get("subject", ()) for name, value in rdn if name == "commonName"
    ]
    alt_names = [str(value) for kind, value in cert.get("subjectAltName", ()) if kind in _ID_SANS]
    return _identity(common_names, alt_names)


# OpenSSL's reason codes, and what they most probably mean to someone setting up mutual TLS.
_TLS_FAILURES: dict[str, str] = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate, and none "
    "was sent",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate, and one is required",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA that signed our certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate (not signed by a CA it "
    "trusts?)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer refused our certificate: it has expired",
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (a plain tcp:// endpoint?)",
    "HTTP_REQUEST": "the peer sent plain HTTP, not TLS",
    "RECORD_LAYER_FAILURE": "the peer does not speak TLS (a plain tcp:// endpoint?)",
    "PACKET_LENGTH_TOO_LONG": "the peer does not speak TLS (a plain tcp:// endpoint?)",
    "UNSUPPORTED_PROTOCOL": "the peer offers only TLS versions older than 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the peer accepts no TLS version we speak (1.2 or later)",
    "NO_SHARED_CIPHER": "the peer and we share no cipher",
}


_CLOSED_WITHOUT_ALERT = (
    "the peer closed the connection without a TLS alert: it stopped, or it refused us without "
    "saying why (it was full, or did not take our certificate)"
)
"""A close, an end of file or a reset with no alert before it. A peer that refuses our
certificate may well say nothing (a trio server never sends the alert of a failed handshake; a
server over its connection cap closes before any handshake), so the certificate stays among the
reasons, but only as one of them: a peer that stopped (a killed KM) ends a connection alike."""


def explain_tls_failure(exc: BaseException) -> str:
    """What a failed TLS handshake or TLS read most probably means, in one line.

    ``exc`` is the :class:`ssl.SSLError` or :class:`OSError` (or trio's
    :class:`~trio.BrokenResourceError` whose ``__cause__`` it is). A certificate that did not
    verify says why ("the peer's certificate did not verify: unable to get local issuer
    certificate (is it signed by our CA?)"); a TLS alert from the peer becomes what it says
    ("the peer does not trust the CA that signed our certificate"); a close or a reset without
    an alert says so (:data:`_CLOSED_WITHOUT_ALERT`); other known OpenSSL reasons become what
    probably happened; anything else is OpenSSL's own reason.
    """
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = cause.verify_message or cause.reason or "no reason given"
        hint = " (is it signed by our CA?)" if "issuer" in str(why) else ""
        return f"the peer's certificate did not verify: {why}{hint}"
    if isinstance(cause, (ssl.SSLEOFError, ConnectionResetError)):
        return _CLOSED_WITHOUT_ALERT
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or ""
        return _TLS_FAILURES.get(reason, f"TLS failed: {reason or cause}")
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause) or _CLOSED_WITHOUT_ALERT


def peer_identity_from_der(der: bytes) -> str | None:
    """The peer's ID from its DER certificate, by the rule of :func:`peer_identity`.

    For transports that only get the binary certificate (``getpeercert(binary_form=True)``,
    gRPC auth context). The certificate must already be verified: this only reads it.

    Raises :class:`ValueError` when ``der`` is not a parseable X.509 certificate.
    """
    return _identity_of(x509.load_der_x509_certificate(der))


def _identity_of(certificate: x509.Certificate) -> str | None:
    common_names = [
        value
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if isinstance(value := attribute.value, str)
    ]
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    alt_names = [
        name.value
        for name in sans
        if isinstance(name, x509.UniformResourceIdentifier | x509.DNSName)
    ]
    return _identity(common_names, alt_names)


_ID_SANS = ("URI", "DNS")


def _identity(common_names: list[str], alt_names: list[str]) -> str | None:
    """The identity rule, whatever form the certificate came in: the last (most specific)
    non-empty CN, else the first non-empty URI or DNS subjectAltName, else ``None``."""
    for name in reversed(common_names):
        if name:
            return name
    return next((name for name in alt_names if name), None)


def _read(kind: _FileKind, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(kind, path, _os_problem(exc)) from None
    if not data.strip():
        raise TLSConfigError(kind, path, "empty file")
    if b"-----BEGIN " not in data:
        hint = " (it looks like DER)" if data[:1] == b"\x30" else ""
        raise TLSConfigError(kind, path, f"not PEM{hint}")
    return data


def _check_certificates(kind: _FileKind, path: Path) -> list[x509.Certificate]:
    data = _read(kind, path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TLSConfigError(kind, path, "no PEM certificate in it")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(kind, path, "a PEM certificate in it is corrupt") from None


def _check_private_key(path: Path) -> None:
    data = _read("key", path)
    if b"PRIVATE KEY-----" not in data:
        raise TLSConfigError("key", path, "no PEM private key in it")
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's "Password was not given but private key is encrypted"
        raise TLSConfigError("key", path, "encrypted private keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSConfigError("key", path, "the PEM private key is corrupt or unsupported") from None


@contextlib.contextmanager
def _ssl_errors(kind: _FileKind, path: Path) -> Iterator[None]:
    """Turn an :class:`ssl.SSLError` or :class:`OSError` from loading a file into TLSConfigError."""
    try:
        yield
    except ssl.SSLError as exc:
        raise TLSConfigError(kind, path, _ssl_reason(exc)) from None
    except OSError as exc:  # the file changed under us since it was checked
        raise TLSConfigError(kind, path, _os_problem(exc)) from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or str(exc)
    return f"rejected by OpenSSL ({reason.lower().replace('_', ' ')})"


_OS_PROBLEMS = {
    errno.ENOENT: "no such file",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a parent is not a directory",
}


def _os_problem(exc: OSError) -> str:
    if exc.errno in _OS_PROBLEMS:
        return _OS_PROBLEMS[exc.errno]
    return f"cannot be read ({exc.strerror or exc})"
