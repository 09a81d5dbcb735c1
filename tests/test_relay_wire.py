"""What a KM puts on the wire when it relays keys, checked from outside the KM: the hops between
km-a, km-b and km-c of line3 (qkdn_sdk.roles.km.relays), recorded as each receiving KM got them,
opened with the link units the receiver held before the relay and with cryptography written
here, not the SDK's. It pins the relay's wire format and cryptography (one-time pad, one-time
Poly1305 MAC over every parameter, ChaCha20-Poly1305 of the metadata, the end-to-end tag, which
end spends which units), that no key ID, application or session travels in clear, and that
every KM on the route keeps a record of the relay."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.poly1305 import Poly1305

from qkdn_sdk.codecs.frame import encode_message
from qkdn_sdk.messages import KeyId, kx
from qkdn_sdk.network import Network
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.km.relay_hops import RelayRole
from qkdn_sdk.transport import Connection
from tests.test_network import (
    client,
    hop_refused,
    ids,
    km,
    ready,
    refused,
    relay_bits,
    running,
    same_keys,
)

UNIT_BYTES = 32


async def units_held(network: Network, receiver: str, sender: str) -> dict[str, bytes]:
    """The link units ``receiver`` holds for hops from ``sender``, by ID."""
    store = km(network, receiver).store
    return {unit.key_id: unit.key for unit in await store.peek(f"link:{sender}:in", 10**6)}


def record_hops(
    network: Network, receiver: str, monkeypatch: pytest.MonkeyPatch, hops: list[kx.KeyRelay]
) -> None:
    """Keep every hop ``receiver`` gets in ``hops`` before its KM handles it."""
    part = km(network, receiver).relay_receiver
    handle = part.on_key_relay

    async def recording(relay: kx.KeyRelay, connection: Connection) -> kx.ResponseToKeyRelay:
        hops.append(relay)
        return await handle(relay, connection)

    monkeypatch.setattr(part, "on_key_relay", recording)


def hop_data(hop: kx.KeyRelay) -> bytes:
    """Every parameter of the hop but its MAC, as the MAC covers them: the clear ones as JSON
    (the length of the encrypted metadata last), the encrypted metadata, the encrypted key."""
    header = orjson.dumps(
        [
            hop.key_relay_request_id,
            hop.sender_kma_id,
            hop.source_kma_id,
            hop.destination_kma_id,
            hop.transit_kma_ids,
            hop.link_key_ids,
            hop.integrity_value.hex(),
            hop.extension,
            len(hop.encrypted_metadata),
        ]
    )
    return header + hop.encrypted_metadata + hop.encrypted_key


def opened(hop: kx.KeyRelay, units: dict[str, bytes]) -> tuple[bytes, dict[str, Any]]:
    """The hop's plaintext and metadata: its MAC checked with its first unit, the metadata
    decrypted with its second (ChaCha20-Poly1305, a nonce of zeros), the rest XORed byte by
    byte."""
    [mac_key, metadata_key, *pad_units] = [units[unit_id] for unit_id in hop.link_key_ids]
    assert len(pad_units) == -(-len(hop.encrypted_key) // UNIT_BYTES)  # a pad of whole units
    Poly1305.verify_tag(mac_key, hop_data(hop), hop.message_authentication_code)
    metadata = orjson.loads(
        ChaCha20Poly1305(metadata_key).decrypt(bytes(12), hop.encrypted_metadata, None)
    )
    pad = b"".join(pad_units)
    return bytes(byte ^ pad[index] for index, byte in enumerate(hop.encrypted_key)), metadata


@pytest.mark.parametrize("routing", ["distributed", "centralized"])
async def test_each_hop_is_padded_and_macd_with_the_units_it_names(
    tmp_path: Path, routing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, "memory", routing=routing) as network:
        await ready(network, relay_bits(2, 256))
        held_b = await units_held(network, "km-b", "km-a")
        held_c = await units_held(network, "km-c", "km-b")
        to_b: list[kx.KeyRelay] = []
        to_c: list[kx.KeyRelay] = []
        record_hops(network, "km-b", monkeypatch, to_b)
        record_hops(network, "km-c", monkeypatch, to_c)
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 2, 256)
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)

    [first], [second] = to_b, to_c
    relayed = b"".join(key.key for key in keys)
    plaintexts = []
    for hop, sender, receiver, held in (
        (first, "km-a", "km-b", held_b),
        (second, "km-b", "km-c", held_c),
    ):
        assert (hop.sender_kma_id, hop.source_kma_id, hop.destination_kma_id) == (
            sender,
            "km-a",
            "km-c",
        )
        # the units of a hop are those the sender spends: those the receiver holds to receive
        # with (relay.spent_by_first splits each QKD-key's units between the ends)
        assert all(unit_id in held for unit_id in hop.link_key_ids)
        assert len(hop.link_key_ids) == 2 + 3  # MAC and metadata keys, a pad of 32 + 2 x 32 bytes
        plaintext, metadata = opened(hop, held)
        assert metadata == {
            "application_source_id": "alice",
            "application_destination_id": "bob",
            "key_ids": [{"key_id": key_id} for key_id in ids(keys)],
            "size_of_key": 256,
            "relay_metadata": {
                "source_kma_id": sender,
                "destination_kma_id": receiver,
                "key_relay_time_stamp": metadata["relay_metadata"]["key_relay_time_stamp"],
                "key_relay_encryption_method": "otp+poly1305",
                "kma_key_metadata": {
                    "kma_key_id": kma_key_id(sender, receiver, hop.link_key_ids),
                    "key_length": 5 * 256,
                    "kma_id": sender,
                    "matching_kma_id": receiver,
                },
            },
        }
        assert plaintext[32:] == relayed  # the end-to-end MAC key, then the keys
        assert hop.encrypted_key != plaintext
        plaintexts.append(plaintext)
        # in clear: only what a transit KM routes by
        frame = encode_message(hop, 1)
        for hidden in [
            *ids(keys),
            "alice",
            "bob",
            metadata["relay_metadata"]["kma_key_metadata"]["kma_key_id"],
        ]:
            assert hidden.encode() not in frame
        # the end-to-end tag: the key IDs as JSON and the keys, under the relay's MAC key
        Poly1305.verify_tag(plaintext[:32], orjson.dumps(ids(keys)) + relayed, hop.integrity_value)
    assert plaintexts[0] == plaintexts[1]  # the same keys, under two pads
    assert first.encrypted_key != second.encrypted_key
    assert set(first.link_key_ids).isdisjoint(second.link_key_ids)
    if routing == "centralized":
        assert first.transit_kma_ids == second.transit_kma_ids == ["km-b", "km-c"]
    else:
        assert first.transit_kma_ids is None


KMA_KEY_NAMESPACE = uuid.UUID("53587cc6-efe7-49a5-89ec-a9b5355caf0f")


def kma_key_id(sender: str, receiver: str, unit_ids: list[str]) -> str:
    """The KMA-key ID of a hop's units: a version 5 UUID of the pair and the unit IDs."""
    return str(
        uuid.uuid5(KMA_KEY_NAMESPACE, orjson.dumps([sorted((sender, receiver)), unit_ids]).decode())
    )


Tampered = tuple[kx.KeyRelay, bytes, kx.RelayedKeyMetadata]


def flip_a_key_bit(
    relay: kx.KeyRelay, plaintext: bytes, metadata: kx.RelayedKeyMetadata
) -> Tampered:
    key_start = 32  # after the end-to-end MAC key
    flipped = plaintext[:key_start] + bytes([plaintext[key_start] ^ 1]) + plaintext[33:]
    return relay, flipped, metadata


def swap_key_ids(relay: kx.KeyRelay, plaintext: bytes, metadata: kx.RelayedKeyMetadata) -> Tampered:
    return relay, plaintext, attrs.evolve(metadata, key_ids=metadata.key_ids[::-1])


@pytest.mark.parametrize("tamper", [flip_a_key_bit, swap_key_ids])
async def test_a_trusted_node_that_alters_the_keys_is_caught_at_the_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tamper: Any
) -> None:
    """km-b, a trusted node, changes what it passes on (a key bit, or the order of the key
    IDs) and seals and MACs its hop correctly: only the end-to-end check of km-c can see it,
    and does. Nothing is supplied to anyone."""
    async with running(tmp_path, "memory") as network:
        await ready(network, relay_bits(2, 256))
        hops_b = km(network, "km-b").relay_receiver._hops
        send_hop = hops_b.send

        async def altered(
            relay: kx.KeyRelay,
            plaintext: bytes,
            metadata: kx.RelayedKeyMetadata,
            next_km: str,
            units: list[Any],
        ) -> None:
            await send_hop(*tamper(relay, plaintext, metadata), next_km, units)

        monkeypatch.setattr(hops_b, "send", altered)
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob", 2, 256))
        assert "the relayed keys failed the end-to-end integrity check" in reason
        km_c = km(network, "km-c")
        assert km_c.pending_key_ids == {}
        assert km_c.store.counts("app:") == {}
        assert km(network, "km-a").relays["started"] == 0


async def test_every_km_on_the_route_records_the_relay(tmp_path: Path) -> None:
    """Source, transit and destination each keep a record of the relay (D2.3 clause 7.1.6),
    naming its neighbours on the route, the keys' count and the KMA-key of each hop alike at
    both ends of it; a failed relay is recorded with its reason."""
    async with running(tmp_path, "memory") as network:
        # key for both relays on every link, so the second can only fail for km-c being gone
        await ready(network, 2 * relay_bits(2, 256))
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 2, 256)
        stored = await km(network, "km-c").store.peek("app:alice:bob", 2)
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
        [at_a], [at_b], [at_c] = (
            km(network, name).relay_records for name in ("km-a", "km-b", "km-c")
        )
        assert km(network, "km-a").relay.records == [at_a]
        assert km(network, "km-b").relay_receiver.records == [at_b]
        relay_id = at_a.relay_id
        assert [
            (record.relay_id, record.role, record.previous_kma_id, record.next_kma_id)
            for record in (at_a, at_b, at_c)
        ] == [
            (relay_id, RelayRole.SOURCE, None, "km-b"),
            (relay_id, RelayRole.TRANSIT, "km-a", "km-c"),
            (relay_id, RelayRole.DESTINATION, "km-b", None),
        ]
        assert {record.number_of_keys for record in (at_a, at_b, at_c)} == {2}
        assert {record.outcome for record in (at_a, at_b, at_c)} == {"confirmed"}
        a_to_b, b_to_c = at_b.kma_key_ids
        assert at_a.kma_key_ids == (a_to_b,)
        assert at_c.kma_key_ids == (b_to_c,)
        assert a_to_b != b_to_c
        # the destination stored the last hop's relay metadata with the keys
        assert [key.metadata["relay"]["kma_key_metadata"]["kma_key_id"] for key in stored] == [
            b_to_c,
            b_to_c,
        ]

        await network.stop_km("km-c")
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob", 2, 256))
        unreachable = "failure: neighbour KM km-c is unreachable while relaying keys"
        failed = km(network, "km-b").relay_records[-1]
        assert failed.role == RelayRole.TRANSIT
        if failed.next_kma_id is None:  # km-b learnt that km-c was gone before the relay came
            assert "km-c" in failed.outcome
        else:
            assert failed.next_kma_id == "km-c"
            assert failed.outcome.startswith(unreachable)
        # the source: the relay, then the attempt through km-b and the one around km-c
        first, second = km(network, "km-a").relay.records[1:]
        assert first.outcome == failed.outcome
        assert second.outcome == "failure: the destination KM km-c is unreachable"
        assert (
            reason
            == f"{first.outcome}; then, around it: {second.outcome.removeprefix('failure: ')}"
        )


async def test_a_hop_whose_metadata_ciphertext_was_changed_is_refused_and_spends_its_units(
    tmp_path: Path,
) -> None:
    """A bit of the encrypted metadata changed on the way: the MAC refuses the hop; the same
    change by a sender that MACs it afterwards: the metadata's own authentication refuses it.
    Either way the hop's units are spent, and the refusal is recorded."""
    async with running(tmp_path, "memory") as network:
        await ready(network, 3 * relay_bits(1, 256))
        km_b = km(network, "km-b")
        for remac, reason in (
            (False, "failure: the key relay failed its message authentication code"),
            (True, "failure: the key relay's encrypted metadata failed its authentication"),
        ):
            units = await km_b.store.take("link:km-c:out", 4)
            unit_keys = [unit.key for unit in units]
            metadata = kx.RelayedKeyMetadata(
                application_source_id="alice",
                application_destination_id="bob",
                key_ids=[KeyId(key_id=str(uuid.uuid4()))],
                size_of_key=256,
                relay_metadata=km_b.relay_receiver._hops.hop_metadata("km-c", units),
            )
            ciphertext, sealed, mac_key = otp.seal(bytes(64), metadata, unit_keys)
            hop = kx.KeyRelay(
                key_relay_request_id=str(uuid.uuid4()),
                sender_kma_id="km-b",
                source_kma_id="km-b",
                destination_kma_id="km-c",
                link_key_ids=[unit.key_id for unit in units],
                encrypted_metadata=sealed,
                encrypted_key=ciphertext,
                integrity_value=bytes(16),
                message_authentication_code=b"",
            )
            hop = attrs.evolve(hop, message_authentication_code=otp.mac(mac_key, otp.hop_data(hop)))
            hop = attrs.evolve(hop, encrypted_metadata=bytes([sealed[0] ^ 1]) + sealed[1:])
            if remac:
                hop = attrs.evolve(
                    hop, message_authentication_code=otp.mac(mac_key, otp.hop_data(hop))
                )
            assert await hop_refused(network, "km-c", hop) == reason
            km_c = km(network, "km-c")
            assert await km_c.store.pools_of(hop.link_key_ids) == {}
            record = km_c.relay_records[-1]
            assert (record.relay_id, record.role, record.outcome) == (
                hop.key_relay_request_id,
                RelayRole.DESTINATION,
                reason,
            )
