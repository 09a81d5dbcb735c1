"""A development PKI: a CA and one certificate per entity, so mutual TLS runs without openssl.

Theory of operation
-------------------
:func:`write_dev_pki` fills a directory with PEM files::

    ca.pem  ca.key            the CA (made on first use, reused afterwards)
    km-a.pem  km-a.key        one certificate and private key per entity ID
    app-1.pem  app-1.key

A directory that already holds ``ca.pem`` and ``ca.key`` keeps its CA, so entities can be added
later and still trust each other; an entity written again gets a new key and certificate.

Every entity is both a TLS server and a TLS client (a KM serves applications and calls its
controller), so each certificate says so (ExtendedKeyUsage serverAuth and clientAuth). The entity
ID is the subject CN, which is what :func:`qkdn_sdk.tls.peer_identity` reads on the other side.
The subjectAltName makes the certificate valid for the names a test network is reached by:
the ID itself when it is a DNS name (or an IP address), ``localhost``, ``127.0.0.1`` and ``::1``.
Keys are ECDSA P-256, signatures SHA-256; the extensions are the ones Python 3.13's strict
verification (``VERIFY_X509_STRICT``) asks for.

This is for development and test networks: the CA key sits unencrypted next to the certificates.
Private keys are written with mode 0600; every file is written to a temporary name and renamed,
so a crash never leaves a half-written key.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qkdn_sdk._files import write_atomically
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.tls import TLSConfig

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "PKIError",
    "dev_tls_config",
    "write_dev_pki",
]

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"

_MAX_NAME = 64  # X.509 upper bound of a common name (RFC 5280 ub-common-name)
_CLOCK_SKEW = datetime.timedelta(minutes=5)  # certificates start a little in the past
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_LOCAL_NAMES: list[x509.GeneralName] = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
]

_IssuerKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
_ISSUER_KEY_TYPES = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


class PKIError(QkdnError):
    """The development PKI cannot be written: a bad entity ID or CA name, an unusable existing CA
    in the directory, or a file that cannot be written. The text is one line saying which."""


def write_dev_pki(
    directory: Path, ca_name: str, entities: Sequence[str], *, days: int = 365
) -> list[Path]:
    """Write a CA and a certificate and key for each entity ID into ``directory``.

    ``directory`` is made when missing. When it holds ``ca.pem`` and ``ca.key``, that CA signs
    the new certificates (its CN must be ``ca_name``); otherwise a new CA named ``ca_name`` is
    made, valid for ``days``. Each entity gets ``<id>.pem`` and ``<id>.key`` (mode 0600), valid
    for ``days`` but never beyond the CA. Existing entity files are replaced.

    Returns the paths written, in order: ``ca.pem`` and ``ca.key`` when the CA was made, then
    ``<id>.pem`` and ``<id>.key`` per entity.

    Raises :class:`PKIError`, before anything is written, when an entity ID is empty, not
    printable, contains ``/`` or ``\\``, is longer than 64 characters, is ``ca`` (whose files
    are the CA's) or is given twice; when ``ca_name`` is empty or too long; when ``days`` < 1;
    or when only one of ``ca.pem`` / ``ca.key`` exists, or they are not a usable CA (unreadable,
    encrypted key, key not matching, not a CA, another name, expired). Raises :class:`PKIError`
    when a file cannot be written; files written before then stay.
    """
    directory = Path(directory)
    if isinstance(entities, str):  # a str is a Sequence[str] of its letters
        raise PKIError(f"entities must be a list of IDs, not the string {entities!r}")
    ids = _check_entity_ids(entities)
    _check_name("CA name", ca_name)
    if days < 1:
        raise PKIError(f"days must be at least 1, not {days}")

    now = datetime.datetime.now(datetime.UTC)
    ca_cert_path = directory / CA_CERT_FILE
    ca_key_path = directory / CA_KEY_FILE
    written: list[Path] = []
    if ca_cert_path.exists() or ca_key_path.exists():
        ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path, ca_name, now)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _make_ca_cert(ca_name, ca_key, now, days)
        _make_directory(directory)
        _write(ca_key_path, _key_pem(ca_key), private=True)
        _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
        written += [ca_cert_path, ca_key_path]

    for entity_id in ids:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _make_entity_cert(entity_id, key, ca_cert, ca_key, now, days)
        cert_path = directory / f"{entity_id}.pem"
        key_path = directory / f"{entity_id}.key"
        _write(key_path, _key_pem(key), private=True)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
        written += [cert_path, key_path]
    return written


def dev_tls_config(
    directory: Path, entity_id: str, *, require_client_cert: bool = True
) -> TLSConfig:
    """The :class:`~qkdn_sdk.tls.TLSConfig` of ``entity_id`` in a directory made by
    :func:`write_dev_pki`: its certificate and key, and the directory's CA. Reads no file (the
    contexts it makes do, and raise :class:`~qkdn_sdk.tls.TLSConfigError` for missing files).
    """
    directory = Path(directory)
    return TLSConfig(
        ca=directory / CA_CERT_FILE,
        cert=directory / f"{entity_id}.pem",
        key=directory / f"{entity_id}.key",
        require_client_cert=require_client_cert,
    )


# --- checks ----------------------------------------------------------------------------------


def _check_name(what: str, name: str) -> None:
    if not name:
        raise PKIError(f"{what} must not be empty")
    if not name.isprintable():
        raise PKIError(f"{what} {name!r} must be printable (no control characters or NUL)")
    if len(name) > _MAX_NAME:
        raise PKIError(
            f"{what} {name!r} is {len(name)} characters long; "
            f"a certificate common name holds at most {_MAX_NAME}"
        )


def _check_entity_ids(entities: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    ids: list[str] = []
    for entity_id in entities:
        _check_name("entity ID", entity_id)
        if "/" in entity_id or "\\" in entity_id:
            raise PKIError(f"entity ID {entity_id!r} must not contain '/' or '\\' (it names files)")
        folded = entity_id.casefold()
        if folded == "ca":  # casefold: on case-insensitive file systems CA.pem is ca.pem
            raise PKIError(
                f"entity ID {entity_id!r} is reserved: {CA_CERT_FILE} and {CA_KEY_FILE} "
                "are the CA's files"
            )
        if folded in seen:
            raise PKIError(f"entity ID {entity_id!r} is given twice")
        seen.add(folded)
        ids.append(entity_id)
    return ids


def _is_dns_name(name: str) -> bool:
    return len(name) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in name.split("."))


def _ip_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


# --- certificates ----------------------------------------------------------------------------


def _make_ca_cert(
    name: str, key: ec.EllipticCurvePrivateKey, now: datetime.datetime, days: int
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _make_entity_cert(
    entity_id: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: _IssuerKey,
    now: datetime.datetime,
    days: int,
) -> x509.Certificate:
    names: list[x509.GeneralName] = []
    if (address := _ip_address(entity_id)) is not None:
        names.append(x509.IPAddress(address))
    elif _is_dns_name(entity_id):
        names.append(x509.DNSName(entity_id))
    names += [name for name in _LOCAL_NAMES if name not in names]
    try:
        ca_key_id = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id)
    except x509.ExtensionNotFound:
        authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, entity_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(authority_key_id, critical=False)
        .sign(ca_key, _signature_hash(ca_key))
    )


def _signature_hash(key: _IssuerKey) -> hashes.SHA256 | None:
    # Ed25519 and Ed448 sign without a separate hash; cryptography wants None for them.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _load_ca(
    cert_path: Path, key_path: Path, ca_name: str, now: datetime.datetime
) -> tuple[x509.Certificate, _IssuerKey]:
    for present, missing in ((cert_path, key_path), (key_path, cert_path)):
        if not missing.exists():
            raise PKIError(
                f"{present} exists but {missing} does not: restore it, "
                "or remove both to make a new CA"
            )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise PKIError(f"CA certificate {cert_path}: cannot be read ({exc.strerror})") from None
    except ValueError:
        raise PKIError(f"CA certificate {cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise PKIError(f"CA key {key_path}: cannot be read ({exc.strerror})") from None
    except TypeError:
        raise PKIError(f"CA key {key_path}: encrypted keys are not supported") from None
    except ValueError:
        raise PKIError(f"CA key {key_path}: not a PEM private key") from None
    if not isinstance(key, _ISSUER_KEY_TYPES):
        raise PKIError(f"CA key {key_path}: must be an ECDSA, RSA, Ed25519 or Ed448 key")
    if key.public_key() != cert.public_key():
        raise PKIError(f"CA key {key_path} does not match the CA certificate {cert_path}")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise PKIError(f"CA certificate {cert_path} is not a CA certificate (basicConstraints)")
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [ca_name]:
        existing = names[0] if len(names) == 1 else cert.subject.rfc4514_string()
        raise PKIError(
            f"{cert_path} is the CA {existing!r}, not {ca_name!r}: "
            "use that name, or another directory for a new CA"
        )
    if cert.not_valid_after_utc <= now:
        raise PKIError(
            f"CA certificate {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: "
            "remove ca.pem and ca.key to make a new CA (and reissue every entity)"
        )
    return cert, key


# --- files -----------------------------------------------------------------------------------


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # private keys: owner-only
    except OSError as exc:
        raise PKIError(f"cannot make directory {directory}: {exc.strerror or exc}") from None


def _write(path: Path, data: bytes, *, private: bool) -> None:
    try:
        write_atomically(path, data, private=private)
    except OSError as exc:
        raise PKIError(f"cannot write {path}: {exc.strerror or exc}") from None
