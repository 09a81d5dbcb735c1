"""The cryptography of key relay (qkdn_sdk.roles.relay, FG QIT4N D2.3 clauses 7.1.2 to 7.1.5).

Both ends of a KM link compute these bytes on their own, so every one of them is wire format: the
known answers below were computed once with the code and pin it. Each is also checked
independently where a standard or a few lines here allow: Poly1305 against RFC 8439 clause
2.5.2, the one-time pad against a byte-wise XOR, :func:`~qkdn_sdk.roles.relay.hop_data` against
its JSON written by hand, the unit IDs against the UUID layout their docstring states.

Then every field of a hop is changed in turn (a field added to :class:`~qkdn_sdk.messages.kx.
KeyRelay` or :class:`~qkdn_sdk.messages.kx.RelayMetadata` fails here until it has a changed
value), and hypothesis checks the pad and the unit counts for any plaintext.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import assume, given
from hypothesis import strategies as st

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
UNITS = [_fixed(f"link unit {index}") for index in range(4)]
RELAY_ID = "7d3f5c2e-1b4a-4c8e-9f60-2a7b8c9d0e1f"
SESSION_ID = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"
TIME_STAMP = "2024-05-01T12:00:00Z"


def _unit_ids(count: int) -> list[str]:
    return [f"00000000-0000-4000-8000-0000000001{index:02x}" for index in range(count)]


UNIT_IDS = _unit_ids(len(UNITS))


def _hop(plaintext: bytes, units: list[bytes]) -> kx.KeyRelay:
    """The hop from ``km-b`` to ``km-c`` of a relay from ``km-a`` to ``km-d`` with every optional
    field set, carrying ``plaintext`` sealed with ``units`` and MACed as a KM's ``HopSender.send``
    does: link units, ciphertext and this hop's metadata first, then the MAC over all of it."""
    relay = kx.KeyRelay(
        key_relay_request_id=RELAY_ID,
        sender_kma_id="km-a",
        source_kma_id="km-a",
        destination_kma_id="km-d",
        application_source_id="app-a",
        application_destination_id="app-d",
        session_id=SESSION_ID,
        transit_kma_ids=["km-b", "km-c"],
        key_ids=[KeyId(key_id=key_id) for key_id in KEY_IDS],
        size_of_key=128,
        link_key_ids=["-"],
        encrypted_key=b"",
        relay_metadata=kx.RelayMetadata(kma_key_metadata={"key_length": 128}),
        integrity_value=otp.end_to_end_tag(E2E_MAC_KEY, KEY_IDS, KEYS),
        message_authentication_code=b"",
        extension=[{"avoid_kma_ids": ["km-e"]}],
    )
    ciphertext, mac_key = otp.seal(plaintext, units)
    relay = attrs.evolve(
        relay,
        sender_kma_id="km-b",
        link_key_ids=_unit_ids(len(units)),
        encrypted_key=ciphertext,
        relay_metadata=attrs.evolve(
            relay.relay_metadata,
            source_kma_id="km-b",
            destination_kma_id="km-c",
            key_relay_time_stamp=TIME_STAMP,
            key_relay_encryption_method="otp+poly1305",
        ),
    )
    return attrs.evolve(relay, message_authentication_code=otp.mac(mac_key, otp.hop_data(relay)))


@pytest.fixture(name="hop")
def _fixed_hop() -> kx.KeyRelay:
    """The hop of :data:`PLAINTEXT` sealed with :data:`UNITS` (built in each test, so that a
    broken ``seal`` fails tests rather than the collection)."""
    return _hop(PLAINTEXT, UNITS)


CIPHERTEXT = bytes.fromhex(
    "ecf369f2ca5f02f6f6f9924e0cbd7ae7eb3bac77f63e4774f1b69057da74016a"
    "4f58dba6a99f1da674c00eff6c2dce180799aa3147615b2fcef069e8c1c95981"
    "54c25dbe1f7ef058155aee3626cce8af"
)
E2E_TAG = bytes.fromhex("027e2ff808bc0510b57c9ea708e95eab")
HOP_DATA = (
    b'["7d3f5c2e-1b4a-4c8e-9f60-2a7b8c9d0e1f","km-b","km-a","km-d","app-a","app-d",'
    b'"5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",["km-b","km-c"],'
    b'["00000000-0000-4000-8000-000000000000","00000000-0000-4000-8000-000000000001",'
    b'"00000000-0000-4000-8000-000000000002"],128,'
    b'["00000000-0000-4000-8000-000000000100","00000000-0000-4000-8000-000000000101",'
    b'"00000000-0000-4000-8000-000000000102","00000000-0000-4000-8000-000000000103"],'
    b'"km-b","km-c","2024-05-01T12:00:00Z","otp+poly1305",{"key_length":128},'
    b'"027e2ff808bc0510b57c9ea708e95eab",[{"avoid_kma_ids":["km-e"]}]]' + CIPHERTEXT
)
"""What the hop's MAC covers: the header as a JSON array in a fixed order, then the ciphertext."""
HOP_MAC = bytes.fromhex("70e8bb8de67dadec50b54eeb48d59468")


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
    ("plaintext_bytes", "units"), [(0, 1), (1, 2), (32, 2), (33, 3), (64, 3), (65, 4)]
)
def test_units_for_is_a_mac_key_and_whole_pad_units(plaintext_bytes: int, units: int) -> None:
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
    ciphertext, mac_key = otp.seal(PLAINTEXT, UNITS)
    assert ciphertext == CIPHERTEXT
    assert mac_key == UNITS[0]
    assert ciphertext == _xor(PLAINTEXT, b"".join(UNITS[1:]))


def test_hop_data_known_answer(hop: kx.KeyRelay) -> None:
    assert otp.hop_data(hop) == HOP_DATA


def test_hop_mac_known_answer(hop: kx.KeyRelay) -> None:
    assert hop.encrypted_key == CIPHERTEXT
    assert otp.mac(UNITS[0], otp.hop_data(hop)) == HOP_MAC
    assert Poly1305.generate_tag(UNITS[0], HOP_DATA) == HOP_MAC
    assert hop.message_authentication_code == HOP_MAC


def test_unseal_known_answer(hop: kx.KeyRelay) -> None:
    assert otp.unseal(hop, UNITS) == PLAINTEXT


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
    ("index", "first"), [(0, True), (1, False), (2, True), (3, False), (otp.MAX_UNITS - 1, False)]
)
def test_spent_by_first_takes_the_even_units(index: int, first: bool) -> None:
    assert otp.spent_by_first(index) is first


# --- a changed hop fails its MAC ------------------------------------------------------------

HOP_TAMPERINGS: dict[str, list[Any]] = {
    "key_relay_request_id": ["7d3f5c2e-1b4a-4c8e-9f60-2a7b8c9d0e10"],
    "sender_kma_id": ["km-a", "km-x"],
    "source_kma_id": ["km-b", "km-x"],
    "destination_kma_id": ["km-c", "km-x"],
    "application_source_id": ["app-x", None],
    "application_destination_id": ["app-x", None],
    "session_id": ["5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c80", None],
    "transit_kma_ids": [["km-c", "km-b"], ["km-b"], None],
    "key_ids": [
        [KeyId(key_id=KEY_IDS[1]), KeyId(key_id=KEY_IDS[0]), KeyId(key_id=KEY_IDS[2])],
        [KeyId(key_id=KEY_IDS[0]), KeyId(key_id=KEY_IDS[1]), KeyId(key_id="other")],
        [  # a Key ID extension is covered too
            KeyId(key_id=KEY_IDS[0], key_id_extension="x"),
            KeyId(key_id=KEY_IDS[1]),
            KeyId(key_id=KEY_IDS[2]),
        ],
    ],
    "size_of_key": [64, 129],
    "link_key_ids": [[*UNIT_IDS[:3], "other"], [UNIT_IDS[1], UNIT_IDS[0], *UNIT_IDS[2:]]],
    "encrypted_key": [_flip(CIPHERTEXT), _flip(CIPHERTEXT, len(CIPHERTEXT) * 8 - 1)],
    "relay_metadata": [kx.RelayMetadata(kma_key_metadata={"key_length": 128})],
    "integrity_value": [_flip(E2E_TAG), E2E_TAG[:-1]],
    "message_authentication_code": [_flip(HOP_MAC), bytes(16)],
    "extension": [[{"avoid_kma_ids": ["km-f"]}], None],
}
"""Other values of each field of the hop: the MAC must refuse every one."""

METADATA_TAMPERINGS: dict[str, list[Any]] = {
    "source_kma_id": ["km-a", None],
    "destination_kma_id": ["km-d", None],
    "key_relay_time_stamp": ["2024-05-01T12:00:01Z", None],
    "key_relay_encryption_method": ["otp", None],
    "kma_key_metadata": [{"key_length": 256}, {}],
}


MAC_FAILED = "the key relay failed its message authentication code"
E2E_FAILED = "the relayed keys failed the end-to-end integrity check"
"""What a KM answers (the texts are part of the wire: a KM passes them back along the route)."""


def _refused(hop: kx.KeyRelay) -> None:
    with pytest.raises(otp.RelayIntegrityError, match=f"^{re.escape(MAC_FAILED)}$"):
        otp.unseal(hop, UNITS)


def test_the_hop_sets_every_field(hop: kx.KeyRelay) -> None:
    """So a field added later has a value here to change (set it in :func:`_hop`)."""
    unset = [field.name for field in attrs.fields(kx.KeyRelay) if getattr(hop, field.name) is None]
    unset += [
        f"relay_metadata.{field.name}"
        for field in attrs.fields(kx.RelayMetadata)
        if getattr(hop.relay_metadata, field.name) is None
    ]
    assert not unset
    assert not set(HOP_TAMPERINGS) - {field.name for field in attrs.fields(kx.KeyRelay)}
    assert not set(METADATA_TAMPERINGS) - {field.name for field in attrs.fields(kx.RelayMetadata)}


@pytest.mark.parametrize("name", [field.name for field in attrs.fields(kx.KeyRelay)])
def test_a_changed_hop_field_fails_the_mac(hop: kx.KeyRelay, name: str) -> None:
    if not HOP_TAMPERINGS.get(name):
        pytest.fail(f"KeyRelay.{name} has no changed value: add one to HOP_TAMPERINGS")
    for value in HOP_TAMPERINGS[name]:
        assert value != getattr(hop, name)
        _refused(attrs.evolve(hop, **{name: value}))


@pytest.mark.parametrize("name", [field.name for field in attrs.fields(kx.RelayMetadata)])
def test_a_changed_relay_metadata_field_fails_the_mac(hop: kx.KeyRelay, name: str) -> None:
    if not METADATA_TAMPERINGS.get(name):
        pytest.fail(f"RelayMetadata.{name} has no changed value: add one to METADATA_TAMPERINGS")
    for value in METADATA_TAMPERINGS[name]:
        assert value != getattr(hop.relay_metadata, name)
        metadata = attrs.evolve(hop.relay_metadata, **{name: value})
        _refused(attrs.evolve(hop, relay_metadata=metadata))


def test_any_bit_flipped_in_the_ciphertext_or_the_mac_fails_the_mac(hop: kx.KeyRelay) -> None:
    for bit in range(len(CIPHERTEXT) * 8):
        _refused(attrs.evolve(hop, encrypted_key=_flip(CIPHERTEXT, bit)))
    for bit in range(len(HOP_MAC) * 8):
        _refused(attrs.evolve(hop, message_authentication_code=_flip(HOP_MAC, bit)))


def test_a_hop_fails_the_mac_under_another_mac_key(hop: kx.KeyRelay) -> None:
    with pytest.raises(otp.RelayIntegrityError, match="failed its message authentication code"):
        otp.unseal(hop, [UNITS[1], *UNITS[1:]])


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
    """The units a hop of ``plaintext`` spends, counted here: a MAC key and whole pad units."""
    return 1 + -(-len(plaintext) // otp.UNIT_BYTES)


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
    assert otp.unseal(_hop(plaintext, units), units) == plaintext


@given(_sealings())
def test_the_ciphertext_is_the_plaintext_xor_the_pad(sealing: tuple[bytes, list[bytes]]) -> None:
    plaintext, units = sealing
    ciphertext, mac_key = otp.seal(plaintext, units)
    assert mac_key == units[0]
    assert ciphertext == _xor(plaintext, b"".join(units[1:]))


@given(_sealings(min_size=1))
def test_a_pad_changes_the_plaintext(sealing: tuple[bytes, list[bytes]]) -> None:
    plaintext, units = sealing
    assume(any(b"".join(units[1:])[: len(plaintext)]))  # only a pad of zeros leaves it as it is
    assert otp.seal(plaintext, units)[0] != plaintext


@given(_sealings(), _unit)
def test_one_unit_fewer_or_more_is_refused(
    sealing: tuple[bytes, list[bytes]], extra: bytes
) -> None:
    plaintext, units = sealing
    hop = _hop(plaintext, units)
    for wrong in units[:-1], [*units, extra]:
        with pytest.raises(otp.RelayIntegrityError, match="link key units, got"):
            otp.seal(plaintext, wrong)
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
