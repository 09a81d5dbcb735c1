"""qkdn_sdk.pki: the development PKI, checked by real mutual TLS between its entities."""

from __future__ import annotations

import datetime
import functools
import ssl
import stat
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qkdn_sdk.errors import QkdnError
from qkdn_sdk.pki import PKIError, dev_tls_config, write_dev_pki
from qkdn_sdk.tls import TLSConfig, peer_identity, peer_identity_from_der
from tests._loopback_tls import TIMEOUT, ssl_cause, tls_exchange


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    write_dev_pki(directory, "qkdn-dev-ca", ["km-a", "app-1", "KM_B"])
    return directory


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [
        f"IP:{name.value}" if isinstance(name, x509.IPAddress) else f"DNS:{name.value}"
        for name in names
    ]


# --- files -----------------------------------------------------------------------------------


def test_writes_ca_and_entity_files(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "pki"  # made when missing
    written = write_dev_pki(directory, "qkdn-dev-ca", ["km-a", "app-1"])
    assert written == [
        directory / name
        for name in ("ca.pem", "ca.key", "km-a.pem", "km-a.key", "app-1.pem", "app-1.key")
    ]
    assert sorted(p.name for p in directory.iterdir()) == sorted(p.name for p in written)
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.suffix == ".key" else 0o644), path


def test_existing_ca_is_reused_and_new_entities_trust_old_ones(pki: Path) -> None:
    ca_before = (pki / "ca.pem").read_bytes(), (pki / "ca.key").read_bytes()
    written = write_dev_pki(pki, "qkdn-dev-ca", ["ctrl"])
    assert written == [pki / "ctrl.pem", pki / "ctrl.key"]
    assert ((pki / "ca.pem").read_bytes(), (pki / "ca.key").read_bytes()) == ca_before
    ca = load_cert(pki / "ca.pem")
    for name in ("km-a", "ctrl"):
        assert load_cert(pki / f"{name}.pem").issuer == ca.subject


def test_rewriting_an_entity_replaces_its_key_and_keeps_it_private(pki: Path) -> None:
    old_key = (pki / "km-a.key").read_bytes()
    (pki / "km-a.key").chmod(0o644)
    write_dev_pki(pki, "qkdn-dev-ca", ["km-a"])
    assert (pki / "km-a.key").read_bytes() != old_key
    assert stat.S_IMODE((pki / "km-a.key").stat().st_mode) == 0o600
    assert not [p for p in pki.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_dev_tls_config_names_the_entity_files(pki: Path) -> None:
    assert dev_tls_config(pki, "km-a", require_client_cert=False) == TLSConfig(
        ca=pki / "ca.pem",
        cert=pki / "km-a.pem",
        key=pki / "km-a.key",
        require_client_cert=False,
    )


# --- certificate contents --------------------------------------------------------------------


def test_ca_certificate(pki: Path) -> None:
    ca = load_cert(pki / "ca.pem")
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "qkdn-dev-ca"
    assert ca.issuer == ca.subject
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert key.public_key() == ca.public_key()


def test_entity_certificate(pki: Path) -> None:
    ca = load_cert(pki / "ca.pem")
    cert = load_cert(pki / "km-a.pem")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "km-a"
    assert cert.issuer == ca.subject
    assert sans(cert) == ["DNS:km-a", "DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    ca_key_id = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    authority = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert authority.key_identifier == ca_key_id.digest
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=364) < lifetime <= datetime.timedelta(days=365)
    key = serialization.load_pem_private_key((pki / "km-a.key").read_bytes(), password=None)
    assert key.public_key() == public_key


@pytest.mark.parametrize(
    ("entity_id", "expected"),
    [
        ("KM_B", ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]),  # '_' is not in DNS names
        ("app one", ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]),
        ("-km", ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]),
        ("km.site-1.example", ["DNS:km.site-1.example", "DNS:localhost", "IP:127.0.0.1", "IP:::1"]),
        ("localhost", ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]),
        ("10.0.0.7", ["IP:10.0.0.7", "DNS:localhost", "IP:127.0.0.1", "IP:::1"]),
        ("127.0.0.1", ["IP:127.0.0.1", "DNS:localhost", "IP:::1"]),
    ],
)
def test_subject_alt_names(tmp_path: Path, entity_id: str, expected: list[str]) -> None:
    write_dev_pki(tmp_path, "dev-ca", [entity_id])
    cert = load_cert(tmp_path / f"{entity_id}.pem")
    assert sans(cert) == expected
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == entity_id


def test_entity_never_outlives_its_ca(tmp_path: Path) -> None:
    write_dev_pki(tmp_path, "dev-ca", ["km-a"], days=10)
    write_dev_pki(tmp_path, "dev-ca", ["km-b"], days=365)
    assert load_cert(tmp_path / "km-b.pem").not_valid_after_utc == (
        load_cert(tmp_path / "ca.pem").not_valid_after_utc
    )
    assert load_cert(tmp_path / "km-a.pem").not_valid_after_utc <= (
        load_cert(tmp_path / "ca.pem").not_valid_after_utc
    )


# --- real mutual TLS between entities --------------------------------------------------------


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1", "km-a"])
async def test_mutual_tls_between_entities(pki: Path, server_hostname: str) -> None:
    server, client = await tls_exchange(
        dev_tls_config(pki, "km-a").server_context(),
        dev_tls_config(pki, "app-1").client_context(),
        server_hostname,
    )
    assert server.accepted, server.error
    assert client.accepted, client.error
    assert peer_identity(server.peer_cert) == "app-1"
    assert peer_identity(client.peer_cert) == "km-a"
    assert server.peer_der is not None
    assert peer_identity_from_der(server.peer_der) == "app-1"


async def test_entity_id_that_is_not_a_dns_name_is_still_its_identity(pki: Path) -> None:
    """KM_B has no DNS SAN of its own: it is reached as localhost, identified by its CN."""
    server, client = await tls_exchange(
        dev_tls_config(pki, "KM_B").server_context(),
        dev_tls_config(pki, "km-a").client_context(),
    )
    assert server.accepted, server.error
    assert peer_identity(client.peer_cert) == "KM_B"
    assert peer_identity(server.peer_cert) == "km-a"


async def test_over_ipv6_loopback(pki: Path) -> None:
    try:
        listeners = await trio.open_tcp_listeners(0, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    for listener in listeners:
        await listener.aclose()
    server, client = await tls_exchange(
        dev_tls_config(pki, "km-a").server_context(),
        dev_tls_config(pki, "app-1").client_context(),
        "::1",
        host="::1",
    )
    assert server.accepted, server.error
    assert client.accepted, client.error


async def test_passes_strict_x509_verification(pki: Path) -> None:
    """Python 3.13's default context verifies with VERIFY_X509_STRICT: the dev PKI passes it."""
    server_context = dev_tls_config(pki, "km-a").server_context()
    client_context = dev_tls_config(pki, "app-1").client_context()
    for context in (server_context, client_context):
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    server, client = await tls_exchange(server_context, client_context)
    assert server.accepted, server.error
    assert client.accepted, client.error


async def test_one_server_tells_its_clients_apart(pki: Path) -> None:
    """trio.serve_tcp with the server context: each connection sees its own client's ID."""
    write_dev_pki(pki, "qkdn-dev-ca", ["ctrl"])
    seen: dict[str, bytes] = {}
    server_context = dev_tls_config(pki, "km-a").server_context()

    async def handler(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, server_context, server_side=True)
        try:
            await stream.do_handshake()
            identity = peer_identity(stream.getpeercert())
            assert identity is not None
            seen[identity] = bytes(await stream.receive_some())
            await stream.send_all(identity.encode())
            # Close after the client does (close_notify, then b""), so the answer is read first.
            assert await stream.receive_some() == b""
        finally:
            await trio.aclose_forcefully(stream)

    async def client(entity_id: str, port: int) -> bytes:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        context = dev_tls_config(pki, entity_id).client_context()
        stream = trio.SSLStream(tcp, context, server_hostname="localhost")
        try:
            await stream.do_handshake()
            await stream.send_all(f"hello from {entity_id}".encode())
            answer = bytes(await stream.receive_some())
            await stream.aclose()
            return answer
        finally:
            await trio.aclose_forcefully(stream)

    answers: dict[str, bytes] = {}

    async def run_client(entity_id: str, port: int) -> None:
        answers[entity_id] = await client(entity_id, port)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as clients:
                for entity_id in ("app-1", "ctrl", "KM_B"):
                    clients.start_soon(run_client, entity_id, port)
            nursery.cancel_scope.cancel()
    assert seen == {name: f"hello from {name}".encode() for name in ("app-1", "ctrl", "KM_B")}
    assert answers == {name: name.encode() for name in ("app-1", "ctrl", "KM_B")}


async def test_client_of_another_dev_pki_is_refused(pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_dev_pki(other, "qkdn-dev-ca", ["app-1"])  # same names, another CA key
    stranger = TLSConfig(ca=pki / "ca.pem", cert=other / "app-1.pem", key=other / "app-1.key")
    server, client = await tls_exchange(
        dev_tls_config(pki, "km-a").server_context(), stranger.client_context()
    )
    assert not server.accepted
    assert not client.accepted
    assert isinstance(ssl_cause(server), ssl.SSLCertVerificationError)


async def test_server_of_another_dev_pki_is_refused(pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_dev_pki(other, "qkdn-dev-ca", ["km-a"])
    impostor = TLSConfig(ca=pki / "ca.pem", cert=other / "km-a.pem", key=other / "km-a.key")
    server, client = await tls_exchange(
        impostor.server_context(), dev_tls_config(pki, "app-1").client_context()
    )
    assert not client.accepted
    assert not server.accepted
    assert isinstance(ssl_cause(client), ssl.SSLCertVerificationError)


async def test_client_without_certificate(pki: Path) -> None:
    anonymous = TLSConfig(ca=pki / "ca.pem")
    server, _ = await tls_exchange(
        dev_tls_config(pki, "km-a").server_context(), anonymous.client_context()
    )
    assert not server.accepted
    server, client = await tls_exchange(
        dev_tls_config(pki, "km-a", require_client_cert=False).server_context(),
        anonymous.client_context(),
    )
    assert server.accepted, server.error
    assert peer_identity(server.peer_cert) is None
    assert peer_identity(client.peer_cert) == "km-a"


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entities", "message"),
    [
        ([""], "must not be empty"),
        (["a/b"], "must not contain '/'"),
        (["..\\x"], "must not contain '/' or '\\\\'"),
        (["a\0b"], "must be printable"),
        (["a\nb"], "must be printable"),
        (["ca"], "reserved"),
        (["CA"], "reserved"),
        (["x" * 65], "at most 64"),
        (["km-a", "app-1", "km-a"], "given twice"),
        ("km-a", "must be a list of IDs"),
    ],
)
def test_bad_entity_ids_are_refused_before_writing(
    tmp_path: Path, entities: list[str], message: str
) -> None:
    directory = tmp_path / "pki"
    with pytest.raises(PKIError, match=message.replace("(", r"\(")) as caught:
        write_dev_pki(directory, "dev-ca", entities)
    assert isinstance(caught.value, QkdnError)
    assert "\n" not in str(caught.value)
    assert not directory.exists()


@pytest.mark.parametrize(
    ("ca_name", "days", "message"),
    [("", 365, "CA name must not be empty"), ("y" * 65, 365, "at most 64"), ("ca", 0, "days")],
)
def test_bad_ca_name_or_days(tmp_path: Path, ca_name: str, days: int, message: str) -> None:
    with pytest.raises(PKIError, match=message):
        write_dev_pki(tmp_path / "pki", ca_name, ["km-a"], days=days)
    assert not (tmp_path / "pki").exists()


def test_half_a_ca_is_refused(pki: Path) -> None:
    (pki / "ca.key").unlink()
    with pytest.raises(PKIError, match=r"ca\.pem exists but .*ca\.key does not"):
        write_dev_pki(pki, "qkdn-dev-ca", ["ctrl"])
    assert not (pki / "ctrl.pem").exists()


def test_ca_of_another_name_is_refused(pki: Path) -> None:
    with pytest.raises(PKIError, match="is the CA 'qkdn-dev-ca', not 'other-ca'"):
        write_dev_pki(pki, "other-ca", ["ctrl"])


def test_ca_key_not_matching_is_refused(pki: Path, tmp_path: Path) -> None:
    write_dev_pki(tmp_path / "other", "qkdn-dev-ca", [])
    (pki / "ca.key").write_bytes((tmp_path / "other" / "ca.key").read_bytes())
    with pytest.raises(PKIError, match="does not match"):
        write_dev_pki(pki, "qkdn-dev-ca", ["ctrl"])


def test_garbage_ca_is_refused(pki: Path) -> None:
    (pki / "ca.pem").write_text("garbage")
    with pytest.raises(PKIError, match="not a PEM certificate"):
        write_dev_pki(pki, "qkdn-dev-ca", ["ctrl"])


def test_expired_ca_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(PKIError, match="expired on"):
        write_dev_pki(tmp_path, "old-ca", ["km-a"])
