"""The cryptography of key relay (qkdn_sdk.roles.relay, FG QIT4N D2.3 clauses 7.1.2 to 7.1.5).

Both ends of a KM link compute these bytes on their own, so every one of them is wire format: the
known answers below were computed once with the code and pin it. Each is also checked
independently where a standard or a few lines here allow: Poly1305 against RFC 8439 clause
2.5.2, the one-time pad against a byte-wise XOR, the encrypted metadata against
``cryptography``'s ChaCha20-Poly1305 and its JSON written by hand,
:func:`~qkdn_sdk.roles.relay.hop_data` against its JSON written by hand, the unit IDs and
KMA-key IDs against the UUID layouts their docstrings state.

Then every field of a hop is changed in turn, those it carries encrypted too (a field added to
:class:`~qkdn_sdk.messages.kx.KeyRelay`, :class:`~qkdn_sdk.messages.kx.RelayedKeyMetadata`,
:class:`~qkdn_sdk.messages.kx.RelayMetadata` or :class:`~qkdn_sdk.messages.kx.KmaKeyMetadata`
fails here until it has a changed value), and hypothesis checks the pad and the unit counts for
any plaintext.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import assume, given
from hypothesis import strategies as st

from qkdn_sdk.codecs.payload import encode_payload
from qkdn_sdk.messages import KeyId, kx
from qkdn_sdk.roles import relay as otp


def _fixed(label: str, size: int = otp.UNIT_BYTES) -> bytes:
    """Fixed test bytes that look random: the first ``size`` bytes of SHA-256(``label``)."""
    return hashlib.sha256(label.encode()).digest()[:size]


E2E_MAC_KEY = _fixed("end-to-end MAC key")
KEY_IDS = [f"00000000-0000-4000-8000-00000000000{index}" for index in range(3)]
KEYS = [_fixed(f"key {index}", 16) for index in range(3)]
PLAINTEXT = E2E_MAC_KEY + b"".join(KEYS)
"""What a relay of three keys of 128 bits carries: 80 bytes, so the last pad unit is cut."""
UNITS = [_fixed(f"link unit {index}") for index in range(5)]
"""A MAC key, a metadata key and a pad of three units."""
RELAY_ID = "7d3f5c2e-1b4a-4c8e-9f60-2a7b8c9d0e1f"
SESSION_ID = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"
TIME_STAMP = "2024-05-01T12:00:00Z"


def _unit_ids(count: int) -> list[str]:
    return [f"00000000-0000-4000-8000-0000000001{index:02x}" for index in range(count)]


UNIT_IDS = _unit_ids(len(UNITS))
KMA_KEY_ID = "2e8559fd-ecc6-541d-90d5-d5cef34540d5"
"""The KMA-key of the hop from km-b to km-c that spends :data:`UNIT_IDS`."""


def _metadata(unit_count: int = len(UNITS)) -> kx.RelayedKeyMetadata:
    """What the hop from km-b to km-c spending ``unit_count`` units carries encrypted, every
    optional field set."""
    return kx.RelayedKeyMetadata(
        application_source_id="app-a",
        application_destination_id="app-d",
        session_id=SESSION_ID,
        key_ids=[KeyId(key_id=key_id) for key_id in KEY_IDS],
        size_of_key=128,
        relay_metadata=kx.RelayMetadata(
            source_kma_id="km-b",
            destination_kma_id="km-c",
            key_relay_time_stamp=TIME_STAMP,
            key_relay_encryption_method="otp+poly1305",
            kma_key_metadata=kx.KmaKeyMetadata(
                kma_key_id=otp.kma_key_id("km-b", "km-c", _unit_ids(unit_count)),
                key_length=unit_count * otp.UNIT_BITS,
                kma_id="km-b",
                matching_kma_id="km-c",
            ),
        ),
    )


def _hop(
    plaintext: bytes, units: list[bytes], metadata: kx.RelayedKeyMetadata | None = None
) -> kx.KeyRelay:
    """The hop from ``km-b`` to ``km-c`` of a relay from ``km-a`` to ``km-d`` with every optional
    field set, carrying ``plaintext`` and ``metadata`` (:func:`_metadata`) sealed with ``units``
    and MACed as a KM's ``HopSender.send`` does: link units and ciphertexts first, then the MAC
    over all of it."""
    relay = kx.KeyRelay(
        key_relay_request_id=RELAY_ID,
        sender_kma_id="km-a",
        source_kma_id="km-a",
        destination_kma_id="km-d",
        transit_kma_ids=["km-b", "km-c"],
        link_key_ids=["-"],
        encrypted_metadata=b"",
        encrypted_key=b"",
        integrity_value=otp.end_to_end_tag(E2E_MAC_KEY, KEY_IDS, KEYS),
        message_authentication_code=b"",
        extension=[{"avoid_kma_ids": ["km-e"]}],
    )
    metadata = metadata or _metadata(len(units))
    ciphertext, sealed, mac_key = otp.seal(plaintext, metadata, units)
    relay = attrs.evolve(
        relay,
        sender_kma_id="km-b",
        link_key_ids=_unit_ids(len(units)),
        encrypted_metadata=sealed,
        encrypted_key=ciphertext,
    )
    return attrs.evolve(relay, message_authentication_code=otp.mac(mac_key, otp.hop_data(relay)))


@pytest.fixture(name="hop")
def _fixed_hop() -> kx.KeyRelay:
    """The hop of :data:`PLAINTEXT` sealed with :data:`UNITS` (built in each test, so that a
    broken ``seal`` fails tests rather than the collection)."""
    return _hop(PLAINTEXT, UNITS)


CIPHERTEXT = bytes.fromhex(
    "d24b9e4610fb189090214a74f1f2f0f89afde2b26467941e4621b5a3815d6a7c"
    "159c25a20e7a1461f105dad6a30f03fced70a3f2291c39e805cd4dfb84d70b6b"
    "cb7178641a9d81733f3c7da1da7055a1"
)
METADATA_JSON = (
    b'{"application_source_id":"app-a","application_destination_id":"app-d",'
    b'"session_id":"5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",'
    b'"key_ids":[{"key_id":"00000000-0000-4000-8000-000000000000"},'
    b'{"key_id":"00000000-0000-4000-8000-000000000001"},'
    b'{"key_id":"00000000-0000-4000-8000-000000000002"}],"size_of_key":128,'
    b'"relay_metadata":{"source_kma_id":"km-b","destination_kma_id":"km-c",'
    b'"key_relay_time_stamp":"2024-05-01T12:00:00Z","key_relay_encryption_method":"otp+poly1305",'
    b'"kma_key_metadata":{"kma_key_id":"2e8559fd-ecc6-541d-90d5-d5cef34540d5","key_length":1280,'
    b'"kma_id":"km-b","matching_kma_id":"km-c"}}}'
)
"""What the hop carries encrypted: a JSON object under the payload conventions."""
ENCRYPTED_METADATA = bytes.fromhex(
    "74e83da7dc57b78ee2b9d737c8964be4d6299a44e2bda8e6890301bd4bec5748"
    "9d99bdbfa72d946cc04c73105fc23a50bb8d4556f62285b5a91cbd177bc12c72"
    "e2eb64df25eb170ca1fa5c92d0e529876439a6f065cf45a9b28488be7a6e1f97"
    "07301997c08ab9ce520e8a4b5427899975b11907388fdd74e39e9bcaf96b3d97"
    "e3dcd8830fb879cfc405ed142ed5ae38f7d72878a5bfd611c1fe74599c6d1b20"
    "1b4559c97f86a351665f49a6135ce0e21309197fbf59d3b1238aec2b2b0fc0af"
    "1c38ff4b5d050c9b0cf4d5b61ec06b15940c90fe8040238b391eeabffa1b23b1"
    "f0431de566b1de0f3d3c6faab9066b6cce2f9264c4d1fed4e68b112562de6f4e"
    "8d54b7d0338c74696f15f25ba8a6a4ee019a1b61217bcf952544e35ce4b59ae0"
    "ad6c37719120c542c13333fc2fcdeb80753d875043f58e4a7760ff2c99fd0e64"
    "80a9e0d5d9fade08ac7f94dec9b8979bcc66226ebf2fd46af9daf1ddce4bd970"
    "905df810a9bce904ee96dcd5222f417a28b9f1ba558f23be28d8d5b743a64865"
    "2d16f492a785746db150423b2cc222ffd5216361fc0b011009d608c84d710f1b"
    "9419bf20d42f81477b1b4434459842782230ce11c0662893836e681268006938"
    "2d9f86dcbd37d6f1a119f69d1fe348c0f743bf6082a263ea1123d23bba34eb88"
    "5ff30cb9866e8bfd9d0393952124b4c657a852b7731b80e7da5de991d80a1f5b"
    "d5da6ea4b38991adb28d77cdb7f31251dfa748ed4579386135d44ad2fd62d7c5"
    "942ed601d2b2c00ab480e4c21816c1a48330e8a8dee26290e5cf519d5efe09f0"
    "603b57e862b0c8f5d21c4c3159f642221b8cd7ea317227966998334aa2162a75"
    "4e3750"
)
E2E_TAG = bytes.fromhex("027e2ff808bc0510b57c9ea708e95eab")
HOP_DATA = (
    b'["7d3f5c2e-1b4a-4c8e-9f60-2a7b8c9d0e1f","km-b","km-a","km-d",["km-b","km-c"],'
    b'["00000000-0000-4000-8000-000000000100","00000000-0000-4000-8000-000000000101",'
    b'"00000000-0000-4000-8000-000000000102","00000000-0000-4000-8000-000000000103",'
    b'"00000000-0000-4000-8000-000000000104"],'
    b'"027e2ff808bc0510b57c9ea708e95eab",[{"avoid_kma_ids":["km-e"]}],611]'
    + ENCRYPTED_METADATA
    + CIPHERTEXT
)
"""What the hop's MAC covers: the clear header as a JSON array in a fixed order (the length of
the encrypted metadata last), then the encrypted metadata, then the encrypted key."""
HOP_MAC = bytes.fromhex("7ba5100425c98a25c886bdb81373a003")


def _xor(data: bytes, pad: bytes) -> bytes:
    """The one-time pad, byte by byte, apart from the code's: ``pad`` at least as long."""
    assert len(pad) >= len(data)
    return bytes(a ^ b for a, b in zip(data, pad, strict=False))


def _flip(data: bytes, bit: int = 0) -> bytes:
    """``data`` with bit ``bit`` (0 is the lowest bit of the first byte) inverted."""
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


# --- known answers --------------------------------------------------------------------------


def test_mac_is_the_poly1305_of_rfc_8439() -> None:
    """The test vector of RFC 8439 clause 2.5.2."""
    key = bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
    tag = otp.mac(key, b"Cryptographic Forum Research Group")
    assert tag.hex() == "a8061dc1305136c6c22b8baf0c0127a9"


@pytest.mark.parametrize(
    ("plaintext_bytes", "units"), [(0, 2), (1, 3), (32, 3), (33, 4), (64, 4), (65, 5)]
)
def test_units_for_is_a_mac_key_a_metadata_key_and_whole_pad_units(
    plaintext_bytes: int, units: int
) -> None:
    assert otp.units_for(plaintext_bytes) == units


def test_relay_plaintext_is_the_mac_key_then_the_keys() -> None:
    plaintext = otp.relay_plaintext(E2E_MAC_KEY, KEYS)
    assert plaintext == PLAINTEXT
    assert plaintext.hex() == (
        "d4bf1802a089ab541d1caa2b61e00414bf1fed71e5cfdfae6d15964dd667a0ca"
        "49ac5de219edae62f9fdeea0fc3f3af4227ba5f2c6c9109fe5c44a0696f39337"
        "08f225fe08e94a5b1da2da4079fcd1a7"
    )
    assert otp.split_relay_plaintext(PLAINTEXT, 3, 16) == (E2E_MAC_KEY, KEYS)


@pytest.mark.parametrize(
    ("plaintext", "number", "size_bytes"),
    [(PLAINTEXT, 2, 16), (PLAINTEXT, 4, 16), (PLAINTEXT, 3, 15), (PLAINTEXT[:-1], 3, 16)],
)
def test_split_relay_plaintext_refuses_another_length(
    plaintext: bytes, number: int, size_bytes: int
) -> None:
    with pytest.raises(otp.RelayIntegrityError, match=rf"^relayed data has {len(plaintext)} "):
        otp.split_relay_plaintext(plaintext, number, size_bytes)


def test_seal_known_answer() -> None:
    ciphertext, sealed, mac_key = otp.seal(PLAINTEXT, _metadata(), UNITS)
    assert ciphertext == CIPHERTEXT
    assert sealed == ENCRYPTED_METADATA
    assert mac_key == UNITS[0]
    assert ciphertext == _xor(PLAINTEXT, b"".join(UNITS[2:]))


def test_the_metadata_is_chacha20_poly1305_of_its_json_under_the_second_unit() -> None:
    """Opened with ``cryptography`` alone: the second unit is the key, the nonce is zeros (the
    key serves once)."""
    assert ChaCha20Poly1305(UNITS[1]).decrypt(bytes(12), ENCRYPTED_METADATA, None) == METADATA_JSON
    assert otp.seal_metadata(UNITS[1], _metadata()) == ENCRYPTED_METADATA
    assert otp.unseal_metadata(UNITS[1], ENCRYPTED_METADATA) == _metadata()


KMA_KEY_NAMESPACE = uuid.UUID("53587cc6-efe7-49a5-89ec-a9b5355caf0f")
"""Both ends of every hop derive KMA-key IDs from it."""


def test_kma_key_id_is_the_same_at_both_ends_of_the_hop_and_names_the_pair() -> None:
    assert otp.kma_key_id("km-b", "km-c", UNIT_IDS) == KMA_KEY_ID
    assert otp.kma_key_id("km-c", "km-b", UNIT_IDS) == KMA_KEY_ID
    name = '[["km-b","km-c"],[' + ",".join(f'"{unit_id}"' for unit_id in UNIT_IDS) + "]]"
    assert str(uuid.uuid5(KMA_KEY_NAMESPACE, name)) == KMA_KEY_ID
    # another pair of KMs spending units of the same IDs spends another KMA-key
    assert otp.kma_key_id("km-b", "km-x", UNIT_IDS) != KMA_KEY_ID
    assert otp.kma_key_id("km-b", "km-c", UNIT_IDS[::-1]) != KMA_KEY_ID


def test_hop_data_known_answer(hop: kx.KeyRelay) -> None:
    assert otp.hop_data(hop) == HOP_DATA


def test_no_key_id_application_or_session_travels_in_clear(hop: kx.KeyRelay) -> None:
    payload = encode_payload(hop)
    for secret in [*KEY_IDS, "app-a", "app-d", SESSION_ID, KMA_KEY_ID, TIME_STAMP]:
        assert secret.encode() not in payload
        assert secret.encode() not in otp.hop_data(hop)
    for routed in [RELAY_ID, "km-a", "km-b", "km-c", "km-d", *UNIT_IDS]:
        assert routed.encode() in payload


def test_hop_mac_known_answer(hop: kx.KeyRelay) -> None:
    assert hop.encrypted_key == CIPHERTEXT
    assert otp.mac(UNITS[0], otp.hop_data(hop)) == HOP_MAC
    assert Poly1305.generate_tag(UNITS[0], HOP_DATA) == HOP_MAC
    assert hop.message_authentication_code == HOP_MAC


def test_unseal_known_answer(hop: kx.KeyRelay) -> None:
    assert otp.unseal(hop, UNITS) == (PLAINTEXT, _metadata())


def test_end_to_end_tag_known_answer() -> None:
    assert otp.end_to_end_tag(E2E_MAC_KEY, KEY_IDS, KEYS) == E2E_TAG
    data = (
        b'["00000000-0000-4000-8000-000000000000","00000000-0000-4000-8000-000000000001",'
        b'"00000000-0000-4000-8000-000000000002"]' + b"".join(KEYS)
    )
    assert Poly1305.generate_tag(E2E_MAC_KEY, data) == E2E_TAG
    otp.check_end_to_end(E2E_MAC_KEY, KEY_IDS, KEYS, E2E_TAG)


UNIT_NAMESPACE = uuid.UUID("5d0b7f52-8a0e-4c55-9f39-3b1f6f0b2a61")
"""Both ends of every link derive unit IDs from it: changing it splits the network."""


def test_split_qkd_key_known_answer() -> None:
    key = bytes(range(2 * otp.UNIT_BYTES + 5))  # two whole units; the 5 bytes left are dropped
    assert otp.split_qkd_key("qkd-key-1", key) == [
        (0, "7bb2a52a-223b-8679-984b-4f28c2a40000", bytes(range(32))),
        (1, "7bb2a52a-223b-8679-984b-4f28c2a40001", bytes(range(32, 64))),
    ]


def test_unit_ids_are_version_8_uuids_of_the_qkd_key_id_and_index() -> None:
    digest = hashlib.sha1(UNIT_NAMESPACE.bytes + b"qkd-key-1", usedforsecurity=False).digest()
    # All but the 4 version bits (byte 6) and the 2 variant bits (byte 8).
    mask = bytes.fromhex("ffffffffffff0fff3fffffffffffffff")
    key = bytes(5 * otp.UNIT_BYTES)
    for index, unit_id, _ in otp.split_qkd_key("qkd-key-1", key):
        parsed = uuid.UUID(unit_id)
        assert str(parsed) == unit_id
        assert (parsed.version, parsed.variant) == (8, uuid.RFC_4122)
        expected = digest[:14] + index.to_bytes(2, "big")
        assert bytes(a & m for a, m in zip(parsed.bytes, mask, strict=True)) == bytes(
            a & m for a, m in zip(expected, mask, strict=True)
        )


def test_split_qkd_key_refuses_more_than_max_units() -> None:
    assert len(otp.split_qkd_key("big", bytes(otp.MAX_UNITS * otp.UNIT_BYTES))) == otp.MAX_UNITS
    with pytest.raises(ValueError, match="link units is over"):
        otp.split_qkd_key("big", bytes((otp.MAX_UNITS + 1) * otp.UNIT_BYTES))


@pytest.mark.parametrize(
    ("qkd_key_id", "index", "first"),
    [
        # SHA-1(namespace + "qkd-key-1") ends in 0x3e: its low bit 0, unit 0 to the first KM
        ("qkd-key-1", 0, True),
        ("qkd-key-1", 1, False),
        ("qkd-key-1", 2, True),
        ("qkd-key-1", otp.MAX_UNITS - 1, False),
        # ... and that of "qkd-key-6" in 0xb5: its low bit 1, unit 0 to the other KM
        ("qkd-key-6", 0, False),
        ("qkd-key-6", 1, True),
        ("qkd-key-6", otp.MAX_UNITS - 1, True),
    ],
)
def test_spent_by_first_known_answer(qkd_key_id: str, index: int, first: bool) -> None:
    """Both ends of every link split alike by this rule: changing it splits the network."""
    digest = hashlib.sha1(UNIT_NAMESPACE.bytes + qkd_key_id.encode()).digest()
    assert (digest[-1] & 1) == (0 if qkd_key_id == "qkd-key-1" else 1)
    assert otp.spent_by_first(qkd_key_id, index) is first


def test_the_units_of_a_qkd_key_alternate_between_the_ends() -> None:
    """Whatever its length, a QKD-key gives each end half its units (the odd one out to
    either); one-unit QKD-keys go to each end about half the time."""
    for units in range(1, 9):
        for qkd_key_id in ("qkd-key-1", "qkd-key-6"):
            first = sum(otp.spent_by_first(qkd_key_id, index) for index in range(units))
            assert first in (units // 2, units - units // 2)
    ids = [str(uuid.UUID(int=number, version=4)) for number in range(4000)]
    to_first = sum(otp.spent_by_first(qkd_key_id, 0) for qkd_key_id in ids)
    assert 1800 < to_first < 2200  # binomial(4000, 1/2): 6 standard deviations either way


# --- a changed hop fails its MAC ------------------------------------------------------------

HOP_TAMPERINGS: dict[str, list[Any]] = {
    "key_relay_request_id": ["7d3f5c2e-1b4a-4c8e-9f60-2a7b8c9d0e10"],
    "sender_kma_id": ["km-a", "km-x"],
    "source_kma_id": ["km-b", "km-x"],
    "destination_kma_id": ["km-c", "km-x"],
    "transit_kma_ids": [["km-c", "km-b"], ["km-b"], None],
    "link_key_ids": [[*UNIT_IDS[:4], "other"], [UNIT_IDS[1], UNIT_IDS[0], *UNIT_IDS[2:]]],
    "encrypted_metadata": [
        _flip(ENCRYPTED_METADATA),
        _flip(ENCRYPTED_METADATA, len(ENCRYPTED_METADATA) * 8 - 1),
        ENCRYPTED_METADATA[:-1],
        ENCRYPTED_METADATA + CIPHERTEXT[:1],  # a byte moved from one ciphertext to the other
    ],
    "encrypted_key": [
        _flip(CIPHERTEXT),
        _flip(CIPHERTEXT, len(CIPHERTEXT) * 8 - 1),
        CIPHERTEXT[1:],
    ],
    "integrity_value": [_flip(E2E_TAG), E2E_TAG[:-1]],
    "message_authentication_code": [_flip(HOP_MAC), bytes(16)],
    "extension": [[{"avoid_kma_ids": ["km-f"]}], None],
}
"""Other values of each field of the hop: the MAC must refuse every one."""

ENCRYPTED_TAMPERINGS: dict[type[Any], dict[str, list[Any]]] = {
    kx.RelayedKeyMetadata: {
        "application_source_id": ["app-x", None],
        "application_destination_id": ["app-x", None],
        "session_id": ["5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c80", None],
        "key_ids": [
            [KeyId(key_id=KEY_IDS[1]), KeyId(key_id=KEY_IDS[0]), KeyId(key_id=KEY_IDS[2])],
            [KeyId(key_id=KEY_IDS[0]), KeyId(key_id=KEY_IDS[1]), KeyId(key_id="other")],
            [  # a Key ID extension is covered too
                KeyId(key_id=KEY_IDS[0], key_id_extension={"x": 1}),
                KeyId(key_id=KEY_IDS[1]),
                KeyId(key_id=KEY_IDS[2]),
            ],
        ],
        "size_of_key": [64, 129],
    },
    kx.RelayMetadata: {
        "source_kma_id": ["km-a", None],
        "destination_kma_id": ["km-d", None],
        "key_relay_time_stamp": ["2024-05-01T12:00:01Z", None],
        "key_relay_encryption_method": ["otp", None],
    },
    kx.KmaKeyMetadata: {
        "kma_key_id": ["2e8559fd-ecc6-541d-90d5-d5cef34540d6"],
        "key_length": [1024, None],
        "kma_id": ["km-c", None],
        "matching_kma_id": ["km-b"],
    },
}
"""Other values of each field a hop carries encrypted (but those that are objects of their own,
changed field by field): sealed again under the same metadata key, the MAC must refuse each."""


MAC_FAILED = "the key relay failed its message authentication code"
E2E_FAILED = "the relayed keys failed the end-to-end integrity check"
"""What a KM answers (the texts are part of the wire: a KM passes them back along the route)."""


def _refused(hop: kx.KeyRelay) -> None:
    with pytest.raises(otp.RelayIntegrityError, match=f"^{re.escape(MAC_FAILED)}$"):
        otp.unseal(hop, UNITS)


def _with(metadata: kx.RelayedKeyMetadata, cls: type[Any], name: str, value: Any) -> Any:
    """``metadata`` with the field ``name`` of its part of class ``cls`` set to ``value``."""
    relay_metadata = metadata.relay_metadata
    if cls is kx.RelayedKeyMetadata:
        return attrs.evolve(metadata, **{name: value})
    if cls is kx.RelayMetadata:
        return attrs.evolve(metadata, relay_metadata=attrs.evolve(relay_metadata, **{name: value}))
    kma_key = attrs.evolve(relay_metadata.kma_key_metadata, **{name: value})
    return attrs.evolve(
        metadata, relay_metadata=attrs.evolve(relay_metadata, kma_key_metadata=kma_key)
    )


def _part(metadata: kx.RelayedKeyMetadata, cls: type[Any]) -> Any:
    if cls is kx.RelayedKeyMetadata:
        return metadata
    if cls is kx.RelayMetadata:
        return metadata.relay_metadata
    return metadata.relay_metadata.kma_key_metadata


def test_the_hop_sets_every_field(hop: kx.KeyRelay) -> None:
    """So a field added later has a value here to change (set it in :func:`_hop` or
    :func:`_metadata`)."""
    unset = [field.name for field in attrs.fields(kx.KeyRelay) if getattr(hop, field.name) is None]
    metadata = _metadata()
    for cls in ENCRYPTED_TAMPERINGS:
        unset += [
            f"{cls.__name__}.{field.name}"
            for field in attrs.fields(cls)
            if getattr(_part(metadata, cls), field.name) is None
        ]
    assert not unset
    assert not set(HOP_TAMPERINGS) - {field.name for field in attrs.fields(kx.KeyRelay)}
    for cls, tamperings in ENCRYPTED_TAMPERINGS.items():
        assert not set(tamperings) - {field.name for field in attrs.fields(cls)}


@pytest.mark.parametrize("name", [field.name for field in attrs.fields(kx.KeyRelay)])
def test_a_changed_hop_field_fails_the_mac(hop: kx.KeyRelay, name: str) -> None:
    if not HOP_TAMPERINGS.get(name):
        pytest.fail(f"KeyRelay.{name} has no changed value: add one to HOP_TAMPERINGS")
    for value in HOP_TAMPERINGS[name]:
        assert value != getattr(hop, name)
        _refused(attrs.evolve(hop, **{name: value}))


@pytest.mark.parametrize(
    ("cls", "name"),
    [(cls, field.name) for cls in ENCRYPTED_TAMPERINGS for field in attrs.fields(cls)],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_a_changed_encrypted_field_fails_the_mac(
    hop: kx.KeyRelay, cls: type[Any], name: str
) -> None:
    """A field that is an object of its own is changed field by field, in its class's row."""
    if attrs.has(attrs.fields_dict(cls)[name].type):
        return
    values = ENCRYPTED_TAMPERINGS[cls].get(name)
    if not values:
        pytest.fail(f"{cls.__name__}.{name} has no changed value: add one to ENCRYPTED_TAMPERINGS")
    for value in values:
        metadata = _with(_metadata(), cls, name, value)
        assert metadata != _metadata()
        sealed = otp.seal_metadata(UNITS[1], metadata)
        assert sealed != ENCRYPTED_METADATA
        _refused(attrs.evolve(hop, encrypted_metadata=sealed))


def _remaced(hop: kx.KeyRelay, **changes: Any) -> kx.KeyRelay:
    """``hop`` changed, then MACed again with its MAC key: as its sender would have sent it."""
    changed = attrs.evolve(hop, **changes)
    return attrs.evolve(
        changed, message_authentication_code=otp.mac(UNITS[0], otp.hop_data(changed))
    )


def test_metadata_sealed_under_another_key_is_refused_after_the_mac(hop: kx.KeyRelay) -> None:
    """The sender's error (the MAC passes): the text says which check failed."""
    for sealed in (
        otp.seal_metadata(UNITS[2], _metadata()),
        _flip(ENCRYPTED_METADATA, 100),
        ENCRYPTED_METADATA[:15],  # shorter than a Poly1305 tag
        b"",
    ):
        with pytest.raises(otp.RelayIntegrityError) as caught:
            otp.unseal(_remaced(hop, encrypted_metadata=sealed), UNITS)
        assert str(caught.value) == "the key relay's encrypted metadata failed its authentication"


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"", "key_ids: missing; size_of_key: missing; relay_metadata: missing"),
        (b"\xff\xfe", "payload: not valid JSON"),
        (b"[1, 2]", "payload: expected a JSON object"),
        (METADATA_JSON[:-1], "payload: not valid JSON"),
        (METADATA_JSON[:-1] + b',"size_of_key":64}', "payload: duplicate member 'size_of_key'"),
        (b"{}", "key_ids: missing; size_of_key: missing; relay_metadata: missing"),
        (
            METADATA_JSON.replace(b'"size_of_key":128', b'"size_of_key":"128"'),
            "size_of_key: expected an integer",
        ),
        (
            METADATA_JSON.replace(b'"size_of_key":128', b'"size_of_key":0'),
            "size_of_key: must be >= 1",
        ),
        (
            METADATA_JSON.replace(b',"kma_id":"km-b"', b',"kma_id":"km-b","x":1'),
            "relay_metadata.kma_key_metadata: unexpected field 'x'",
        ),
        (
            METADATA_JSON.replace(b'"kma_key_id":', b'"other_id":'),
            "relay_metadata.kma_key_metadata.kma_key_id: missing",
        ),
        (
            METADATA_JSON.replace(b'"key_ids":[', b'"key_ids":[[[[]]],'),
            "key_ids[0]: expected a JSON object",
        ),
    ],
)
def test_metadata_that_decrypts_to_garbage_is_refused_naming_it(
    hop: kx.KeyRelay, plaintext: bytes, reason: str
) -> None:
    sealed = ChaCha20Poly1305(UNITS[1]).encrypt(bytes(12), plaintext, None)
    with pytest.raises(otp.RelayIntegrityError) as caught:
        otp.unseal(_remaced(hop, encrypted_metadata=sealed), UNITS)
    assert str(caught.value).startswith("invalid Key relay metadata: ")
    assert reason in str(caught.value)


def test_any_bit_flipped_in_the_ciphertext_or_the_mac_fails_the_mac(hop: kx.KeyRelay) -> None:
    for bit in range(len(CIPHERTEXT) * 8):
        _refused(attrs.evolve(hop, encrypted_key=_flip(CIPHERTEXT, bit)))
    for bit in range(len(HOP_MAC) * 8):
        _refused(attrs.evolve(hop, message_authentication_code=_flip(HOP_MAC, bit)))


def test_a_hop_fails_the_mac_under_another_mac_key(hop: kx.KeyRelay) -> None:
    with pytest.raises(otp.RelayIntegrityError, match="failed its message authentication code"):
        otp.unseal(hop, [UNITS[1], *UNITS[1:]])
    for bit in range(len(ENCRYPTED_METADATA) * 8):
        _refused(attrs.evolve(hop, encrypted_metadata=_flip(ENCRYPTED_METADATA, bit)))


# --- the end-to-end check refuses changed keys ----------------------------------------------


@pytest.mark.parametrize(
    ("key_ids", "keys", "tag"),
    [
        pytest.param([KEY_IDS[0], KEY_IDS[1], "other"], KEYS, E2E_TAG, id="key ID"),
        pytest.param(KEY_IDS, [KEYS[0], _flip(KEYS[1], 77), KEYS[2]], E2E_TAG, id="key byte"),
        pytest.param(KEY_IDS, [KEYS[1], KEYS[0], KEYS[2]], E2E_TAG, id="key order"),
        pytest.param([KEY_IDS[1], KEY_IDS[0], KEY_IDS[2]], KEYS, E2E_TAG, id="key ID order"),
        pytest.param(
            [KEY_IDS[1], KEY_IDS[0], KEY_IDS[2]],
            [KEYS[1], KEYS[0], KEYS[2]],
            E2E_TAG,
            id="pair order",
        ),
        pytest.param(KEY_IDS[:2], KEYS[:2], E2E_TAG, id="a key left out"),
        pytest.param(KEY_IDS, KEYS, _flip(E2E_TAG, 100), id="tag"),
    ],
)
def test_check_end_to_end_refuses_a_change(
    key_ids: list[str], keys: list[bytes], tag: bytes
) -> None:
    with pytest.raises(otp.RelayIntegrityError, match=f"^{re.escape(E2E_FAILED)}$"):
        otp.check_end_to_end(E2E_MAC_KEY, key_ids, keys, tag)


def test_check_end_to_end_refuses_another_mac_key() -> None:
    with pytest.raises(otp.RelayIntegrityError, match=f"^{re.escape(E2E_FAILED)}$"):
        otp.check_end_to_end(_flip(E2E_MAC_KEY), KEY_IDS, KEYS, E2E_TAG)


# --- properties -----------------------------------------------------------------------------


def _unit_count(plaintext: bytes) -> int:
    """The units a hop of ``plaintext`` spends, counted here: a MAC key, a metadata key and
    whole pad units."""
    return 2 + -(-len(plaintext) // otp.UNIT_BYTES)


_unit = st.binary(min_size=otp.UNIT_BYTES, max_size=otp.UNIT_BYTES)


@st.composite
def _sealings(draw: st.DrawFn, min_size: int = 0) -> tuple[bytes, list[bytes]]:
    """A plaintext of up to four units and a byte, and the units to seal it."""
    plaintext = draw(st.binary(min_size=min_size, max_size=4 * otp.UNIT_BYTES + 1))
    count = _unit_count(plaintext)
    return plaintext, draw(st.lists(_unit, min_size=count, max_size=count))


@given(_sealings())
def test_unseal_undoes_seal(sealing: tuple[bytes, list[bytes]]) -> None:
    plaintext, units = sealing
    assert otp.unseal(_hop(plaintext, units), units) == (plaintext, _metadata(len(units)))


@given(_sealings())
def test_the_ciphertext_is_the_plaintext_xor_the_pad(sealing: tuple[bytes, list[bytes]]) -> None:
    plaintext, units = sealing
    ciphertext, sealed, mac_key = otp.seal(plaintext, _metadata(), units)
    assert mac_key == units[0]
    assert ciphertext == _xor(plaintext, b"".join(units[2:]))
    assert ChaCha20Poly1305(units[1]).decrypt(bytes(12), sealed, None) == METADATA_JSON


@given(_sealings(min_size=1))
def test_a_pad_changes_the_plaintext(sealing: tuple[bytes, list[bytes]]) -> None:
    plaintext, units = sealing
    assume(any(b"".join(units[2:])[: len(plaintext)]))  # only a pad of zeros leaves it as it is
    assert otp.seal(plaintext, _metadata(), units)[0] != plaintext


@given(_sealings(), _unit)
def test_one_unit_fewer_or_more_is_refused(
    sealing: tuple[bytes, list[bytes]], extra: bytes
) -> None:
    plaintext, units = sealing
    hop = _hop(plaintext, units)
    for wrong in units[:-1], [*units, extra]:
        with pytest.raises(otp.RelayIntegrityError, match="link key units, got"):
            otp.seal(plaintext, _metadata(), wrong)
        with pytest.raises(otp.RelayIntegrityError, match="link key units, got"):
            otp.unseal(hop, wrong)


def test_a_hop_naming_the_wrong_number_of_units_is_refused_before_any_is_taken(
    hop: kx.KeyRelay,
) -> None:
    otp.check_hop_units(hop)
    for unit_ids in (hop.link_key_ids[:-1], [*hop.link_key_ids, "one more"]):
        with pytest.raises(otp.RelayIntegrityError) as caught:
            otp.check_hop_units(attrs.evolve(hop, link_key_ids=unit_ids))
        assert str(caught.value) == (
            f"{len(hop.encrypted_key)} bytes need {len(hop.link_key_ids)} link key units, "
            f"got {len(unit_ids)}"
        )


@given(st.text(max_size=20), st.integers(0, 40), st.booleans())
def test_units_spent_by_counts_what_spent_by_first_gives(
    qkd_key_id: str, units: int, first: bool
) -> None:
    expected = sum(otp.spent_by_first(qkd_key_id, index) == first for index in range(units))
    assert otp.units_spent_by(qkd_key_id, units, first=first) == expected
