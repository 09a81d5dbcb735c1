"""qkdn_sdk.tls: contexts from PEM files, checked with real TLS handshakes on loopback (trustme)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qkdn_sdk.errors import LocalProtocolError
from qkdn_sdk.tls import TLSConfig, TLSConfigError, peer_identity, peer_identity_from_der
from tests._loopback_tls import ssl_cause, tls_exchange

# --- fixtures: trustme material written to files ---------------------------------------------


@attrs.frozen
class Files:
    ca: Path
    cert: Path
    key: Path


def write_ca(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path


def write_leaf(ca: trustme.CA, directory: Path, name: str, *identities: str) -> Files:
    leaf = ca.issue_cert(*identities, common_name=name)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    return Files(ca=directory / "ca.pem", cert=cert, key=key)


@pytest.fixture
def ca(tmp_path: Path) -> trustme.CA:
    authority = trustme.CA()
    write_ca(authority, tmp_path / "ca.pem")
    return authority


@pytest.fixture
def km(ca: trustme.CA, tmp_path: Path) -> Files:
    """A server: a KM reached as localhost or 127.0.0.1."""
    return write_leaf(ca, tmp_path, "km-a", "localhost", "127.0.0.1", "::1")


@pytest.fixture
def app(ca: trustme.CA, tmp_path: Path) -> Files:
    """A client: an application."""
    return write_leaf(ca, tmp_path, "app-1", "app-1")


def config(files: Files, *, require_client_cert: bool = True) -> TLSConfig:
    return TLSConfig(
        ca=files.ca, cert=files.cert, key=files.key, require_client_cert=require_client_cert
    )


# --- mutual TLS and identity -----------------------------------------------------------------


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
async def test_mutual_tls_each_side_reads_the_others_id(
    km: Files, app: Files, server_hostname: str
) -> None:
    server, client = await tls_exchange(
        config(km).server_context(), config(app).client_context(), server_hostname
    )
    assert server.accepted, server.error
    assert client.accepted, client.error
    assert peer_identity(server.peer_cert) == "app-1"
    assert peer_identity(client.peer_cert) == "km-a"
    assert server.peer_der is not None
    assert client.peer_der is not None
    assert peer_identity_from_der(server.peer_der) == "app-1"
    assert peer_identity_from_der(client.peer_der) == "km-a"
    assert server.version in ("TLSv1.2", "TLSv1.3")


async def test_tls_1_2_client_is_accepted(km: Files, app: Files) -> None:
    client_context = config(app).client_context()
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    server, client = await tls_exchange(config(km).server_context(), client_context)
    assert server.accepted, server.error
    assert client.accepted, client.error
    assert server.version == client.version == "TLSv1.2"
    assert peer_identity(server.peer_cert) == "app-1"


def _tls_1_1_only(context: ssl.SSLContext) -> ssl.SSLContext:
    # OpenSSL 3 at its default security level will not even offer TLS 1.1, so the client would
    # refuse itself; level 0 makes it really ask, and the server is what says no.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ssl.TLSVersion.TLSv1/TLSv1_1
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


async def test_tls_1_1_client_is_refused_by_the_server(km: Files, app: Files) -> None:
    server, client = await tls_exchange(
        config(km).server_context(), _tls_1_1_only(config(app).client_context())
    )
    assert not server.accepted
    assert not client.accepted
    cause = ssl_cause(server)
    assert isinstance(cause, ssl.SSLError)
    assert cause.reason == "UNSUPPORTED_PROTOCOL"


@pytest.mark.skipif(not ssl.HAS_TLSv1_1, reason="this OpenSSL has no TLS 1.1 at all")
async def test_tls_1_1_client_would_connect_without_our_minimum(km: Files, app: Files) -> None:
    """Control for the test above: the refusal comes from our minimum version, not OpenSSL."""
    server_context = _tls_1_1_only(config(km).server_context())
    server, client = await tls_exchange(server_context, _tls_1_1_only(config(app).client_context()))
    assert server.accepted, server.error
    assert client.version == "TLSv1.1"


async def test_client_with_certificate_from_another_ca_is_refused(
    km: Files, tmp_path: Path
) -> None:
    other = trustme.CA()
    write_ca(other, tmp_path / "other")  # not used: the client trusts our CA, has another's cert
    stranger = write_leaf(other, tmp_path, "app-x", "app-x")
    server, client = await tls_exchange(
        config(km).server_context(), config(attrs.evolve(stranger, ca=km.ca)).client_context()
    )
    assert not server.accepted
    assert not client.accepted  # TLS 1.3: its handshake "succeeds", its first read fails
    cause = ssl_cause(server)
    assert isinstance(cause, ssl.SSLCertVerificationError)


async def test_client_without_certificate_is_refused_when_required(km: Files) -> None:
    server, client = await tls_exchange(
        config(km).server_context(), TLSConfig(ca=km.ca).client_context()
    )
    assert not server.accepted
    assert not client.accepted
    cause = ssl_cause(server)
    assert isinstance(cause, ssl.SSLError)
    assert cause.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"


async def test_client_without_certificate_is_accepted_when_not_required(km: Files) -> None:
    server_context = config(km, require_client_cert=False).server_context()
    server, client = await tls_exchange(server_context, TLSConfig(ca=km.ca).client_context())
    assert server.accepted, server.error
    assert client.accepted, client.error
    assert server.peer_cert is None
    assert peer_identity(server.peer_cert) is None
    assert peer_identity(client.peer_cert) == "km-a"


async def test_server_from_another_ca_is_refused_by_the_client(app: Files, tmp_path: Path) -> None:
    other = trustme.CA()
    (tmp_path / "other").mkdir()
    impostor = write_leaf(other, tmp_path / "other", "km-a", "localhost")
    server_context = config(attrs.evolve(impostor, ca=app.ca)).server_context()
    server, client = await tls_exchange(server_context, config(app).client_context())
    assert not client.accepted
    assert not server.accepted
    assert isinstance(ssl_cause(client), ssl.SSLCertVerificationError)


async def test_server_not_valid_for_the_host_name_is_refused(km: Files, app: Files) -> None:
    _, client = await tls_exchange(
        config(km).server_context(), config(app).client_context(), "km-b.example"
    )
    assert not client.accepted
    cause = ssl_cause(client)
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert "km-b.example" in str(cause)


async def test_renewed_certificate_is_used_by_the_next_context(
    ca: trustme.CA, km: Files, app: Files, tmp_path: Path
) -> None:
    """Nothing is cached: a context made after the files change serves the new certificate."""
    tls = config(km)
    before = tls.server_context()
    (tmp_path / "new").mkdir()
    renewed = write_leaf(ca, tmp_path / "new", "km-renewed", "localhost")
    km.cert.write_bytes(renewed.cert.read_bytes())
    km.key.write_bytes(renewed.key.read_bytes())
    after = tls.server_context()
    assert after is not before
    _, client = await tls_exchange(after, config(app).client_context())
    assert peer_identity(client.peer_cert) == "km-renewed"


# --- context settings ------------------------------------------------------------------------


@pytest.mark.parametrize(("require", "mode"), [(True, ssl.CERT_REQUIRED), (False, ssl.CERT_NONE)])
def test_server_context_settings(km: Files, require: bool, mode: ssl.VerifyMode) -> None:
    context = config(km, require_client_cert=require).server_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == mode


def test_client_context_settings(app: Files, km: Files) -> None:
    for context in (config(app).client_context(), TLSConfig(ca=km.ca).client_context()):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname


def test_config_is_frozen_and_takes_str_paths(km: Files) -> None:
    tls = TLSConfig(ca=str(km.ca), cert=str(km.cert), key=str(km.key))
    assert tls == config(km)
    assert tls.require_client_cert
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        tls.ca = km.cert  # type: ignore[misc]


def test_key_inside_the_certificate_file(km: Files, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(km.cert.read_bytes() + km.key.read_bytes())
    assert TLSConfig(ca=km.ca, cert=combined).server_context().verify_mode == ssl.CERT_REQUIRED


# --- configuration errors --------------------------------------------------------------------


def _der_of(pem: Path) -> bytes:
    return x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(serialization.Encoding.DER)


def _encrypted_key(path: Path) -> Path:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    encrypted = path.with_suffix(".encrypted")
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return encrypted


BAD_FILES: dict[str, tuple[str, Callable[[Files, Path], Path], str]] = {
    # name: (which field, how to spoil it, expected problem)
    "missing ca": ("ca", lambda f, p: p / "nope.pem", "no such file"),
    "missing cert": ("cert", lambda f, p: p / "nope.pem", "no such file"),
    "missing key": ("key", lambda f, p: p / "km.key", "no such file"),
    "ca is a directory": ("ca", lambda f, p: p, "is a directory"),
    "empty ca": ("ca", lambda f, p: _write(p / "empty.pem", b""), "empty file"),
    "garbage ca": ("ca", lambda f, p: _write(p / "g.pem", b"garbage\n"), "not PEM"),
    "garbage cert": ("cert", lambda f, p: _write(p / "g.pem", b"\x00\xff"), "not PEM"),
    "garbage key": ("key", lambda f, p: _write(p / "g.key", b"garbage"), "not PEM"),
    "DER cert": ("cert", lambda f, p: _write(p / "c.der", _der_of(f.cert)), "looks like DER"),
    "key as ca": ("ca", lambda f, p: f.key, "no PEM certificate"),
    "cert as key": ("key", lambda f, p: f.cert, "no PEM private key"),
    "corrupt cert": (
        "cert",
        lambda f, p: _write(
            p / "bad.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ),
        "corrupt",
    ),
    "encrypted key": ("key", lambda f, p: _encrypted_key(f.key), "encrypted"),
    "key of another cert": (
        "key",
        lambda f, p: write_leaf(trustme.CA(), p, "other", "other").key,
        "does not match the certificate",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("side", ["server", "client"])
def test_bad_file_names_the_file_and_the_problem(
    km: Files, tmp_path: Path, case: str, side: str
) -> None:
    field, spoil, problem = BAD_FILES[case]
    bad_path = spoil(km, tmp_path)
    tls = TLSConfig(
        ca=bad_path if field == "ca" else km.ca,
        cert=bad_path if field == "cert" else km.cert,
        key=bad_path if field == "key" else km.key,
    )
    with pytest.raises(TLSConfigError) as caught:
        tls.server_context() if side == "server" else tls.client_context()
    error = caught.value
    assert isinstance(error, LocalProtocolError)
    text = str(error)
    assert "\n" not in text
    assert str(bad_path) in text
    assert problem in text
    kind = {"ca": "CA", "cert": "certificate", "key": "key"}[field]
    assert text.startswith(f"TLS {kind} file {bad_path}: ")
    assert error.path == bad_path


def test_missing_key_message_reads_well(tmp_path: Path, km: Files) -> None:
    tls = attrs.evolve(config(km), key=tmp_path / "x" / "km.key")
    with pytest.raises(TLSConfigError, match=r"^TLS key file .*/x/km\.key: no such file$"):
        tls.client_context()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(km: Files) -> None:
    km.key.chmod(0)
    with pytest.raises(TLSConfigError, match="permission denied"):
        config(km).server_context()


def test_server_needs_a_certificate(km: Files) -> None:
    with pytest.raises(TLSConfigError, match="server needs a certificate"):
        TLSConfig(ca=km.ca).server_context()


def test_key_without_certificate(km: Files) -> None:
    with pytest.raises(TLSConfigError, match="given without a certificate"):
        TLSConfig(ca=km.ca, key=km.key).client_context()


# --- peer_identity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cert", "identity"),
    [
        (None, None),
        ({}, None),
        ({"subject": ((("commonName", "km-a"),),)}, "km-a"),
        (
            {
                "subject": ((("organizationName", "QKDN"),), (("commonName", "km-a"),)),
                "subjectAltName": (("DNS", "localhost"),),
            },
            "km-a",
        ),
        ({"subject": ((("commonName", "a"),), (("commonName", "b"),))}, "b"),
        (
            {
                "subject": ((("organizationName", "QKDN"),),),
                "subjectAltName": (
                    ("IP Address", "127.0.0.1"),
                    ("URI", "qkdn:km-a"),
                    ("DNS", "km-a.example"),
                ),
            },
            "qkdn:km-a",
        ),
        (
            {"subject": (), "subjectAltName": (("email", "a@b"), ("DNS", "km-a.example"))},
            "km-a.example",
        ),
        ({"subject": (), "subjectAltName": (("IP Address", "127.0.0.1"),)}, None),
    ],
)
def test_peer_identity_rule(cert: dict[str, object] | None, identity: str | None) -> None:
    assert peer_identity(cert) == identity


def _issue_client_cert(
    ca: trustme.CA, tmp_path: Path, name: str, subject: x509.Name, sans: list[x509.GeneralName]
) -> Files:
    """A client certificate built with cryptography, signed by the trustme CA."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if sans:
        # RFC 5280: with an empty subject the subjectAltName must be critical.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans), critical=len(subject) == 0
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Files(ca=tmp_path / "ca.pem", cert=cert_path, key=key_path)


ORG = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "QKDN test")

HANDSHAKE_IDENTITIES: dict[str, tuple[x509.Name, list[x509.GeneralName], str | None]] = {
    "no CN, URI first": (
        x509.Name([ORG]),
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.UniformResourceIdentifier("qkdn:app-7"),
            x509.DNSName("app-7.example"),
        ],
        "qkdn:app-7",
    ),
    "empty subject, DNS": (x509.Name([]), [x509.DNSName("app-8.example")], "app-8.example"),
    "no CN, no URI or DNS": (
        x509.Name([ORG]),
        [x509.RFC822Name("app@example.org")],
        None,
    ),
    "two CNs": (
        x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "first"),
                x509.NameAttribute(NameOID.COMMON_NAME, "app-9"),
            ]
        ),
        [x509.DNSName("ignored.example")],
        "app-9",
    ),
}


@pytest.mark.parametrize("case", HANDSHAKE_IDENTITIES)
async def test_peer_identity_of_verified_client_certificates(
    ca: trustme.CA, km: Files, tmp_path: Path, case: str
) -> None:
    """The SAN fallback, read from what a real handshake hands the server (dict and DER)."""
    subject, sans, expected = HANDSHAKE_IDENTITIES[case]
    client_files = _issue_client_cert(ca, tmp_path, "client", subject, sans)
    server, _ = await tls_exchange(
        config(km).server_context(), config(client_files).client_context()
    )
    assert server.accepted, server.error
    assert server.peer_cert
    assert server.peer_der is not None
    assert peer_identity(server.peer_cert) == expected
    assert peer_identity_from_der(server.peer_der) == expected


async def test_own_identity_is_what_the_peer_sees(
    ca: trustme.CA, km: Files, tmp_path: Path
) -> None:
    assert config(km).identity() == "km-a"
    assert TLSConfig(ca=km.ca).identity() is None
    no_cn = _issue_client_cert(
        ca, tmp_path, "no-cn", x509.Name([ORG]), [x509.UniformResourceIdentifier("qkdn:app-7")]
    )
    server, _ = await tls_exchange(config(km).server_context(), config(no_cn).client_context())
    assert peer_identity(server.peer_cert) == config(no_cn).identity() == "qkdn:app-7"


def test_own_identity_of_a_bad_certificate_file(km: Files, tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="no such file"):
        TLSConfig(ca=km.ca, cert=tmp_path / "gone.pem").identity()


def test_peer_identity_from_der_refuses_garbage() -> None:
    with pytest.raises(ValueError, match=r"."):
        peer_identity_from_der(b"not a certificate")
