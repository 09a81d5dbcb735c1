"""What a KM puts on the wire when it relays keys, checked from outside the KM: the hops between
km-a, km-b and km-c of line3 (qkdn_sdk.roles.km.relays), recorded as each receiving KM got them,
opened with the link units the receiver held before the relay and with cryptography written
here, not the SDK's. It pins the relay's wire format and cryptography (one-time pad, one-time
Poly1305 MAC over every parameter, the end-to-end tag, which end spends which units)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from cryptography.hazmat.primitives.poly1305 import Poly1305

from qkdn_sdk.messages import kx
from qkdn_sdk.network import Network
from qkdn_sdk.transport import Connection
from tests.test_network import (
    client,
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


def hop_header(hop: kx.KeyRelay) -> bytes:
    """Every parameter of the hop but its MAC, as the MAC covers them (JSON, then the pad)."""
    metadata = hop.relay_metadata
    return orjson.dumps(
        [
            hop.key_relay_request_id,
            hop.sender_kma_id,
            hop.source_kma_id,
            hop.destination_kma_id,
            hop.application_source_id,
            hop.application_destination_id,
            hop.session_id,
            hop.transit_kma_ids,
            [key_id.key_id for key_id in hop.key_ids],  # (no extension: IDs alone)
            hop.size_of_key,
            hop.link_key_ids,
            metadata.source_kma_id,
            metadata.destination_kma_id,
            metadata.key_relay_time_stamp,
            metadata.key_relay_encryption_method,
            metadata.kma_key_metadata,
            hop.integrity_value.hex(),
            hop.extension,
        ]
    )


def opened(hop: kx.KeyRelay, units: dict[str, bytes]) -> bytes:
    """The hop's plaintext: its MAC checked with its first unit, the rest XORed byte by byte."""
    [mac_key, *pad_units] = [units[unit_id] for unit_id in hop.link_key_ids]
    assert len(pad_units) == -(-len(hop.encrypted_key) // UNIT_BYTES)  # a pad of whole units
    Poly1305.verify_tag(
        mac_key, hop_header(hop) + hop.encrypted_key, hop.message_authentication_code
    )
    pad = b"".join(pad_units)
    return bytes(byte ^ pad[index] for index, byte in enumerate(hop.encrypted_key))


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
        assert (hop.application_source_id, hop.application_destination_id) == ("alice", "bob")
        assert [key_id.key_id for key_id in hop.key_ids] == ids(keys)
        assert hop.size_of_key == 256
        metadata = hop.relay_metadata
        assert (metadata.source_kma_id, metadata.destination_kma_id) == (sender, receiver)
        assert metadata.key_relay_encryption_method == "otp+poly1305"
        assert metadata.kma_key_metadata == {"key_length": 256}
        # the units of a hop are those the sender spends: the even ones of each QKD-key, its ID
        # sorting first on both links (a unit's index is the last 16 bits of its ID)
        assert all(int(unit_id[-4:], 16) % 2 == 0 for unit_id in hop.link_key_ids)
        assert len(hop.link_key_ids) == 1 + 3  # a MAC key, and a pad of 32 + 2 x 32 bytes
        plaintext = opened(hop, held)
        assert plaintext[32:] == relayed  # the end-to-end MAC key, then the keys
        assert hop.encrypted_key != plaintext
        plaintexts.append(plaintext)
        # the end-to-end tag: the key IDs as JSON and the keys, under the relay's MAC key
        Poly1305.verify_tag(plaintext[:32], orjson.dumps(ids(keys)) + relayed, hop.integrity_value)
    assert plaintexts[0] == plaintexts[1]  # the same keys, under two pads
    assert first.encrypted_key != second.encrypted_key
    assert set(first.link_key_ids).isdisjoint(second.link_key_ids)
    if routing == "centralized":
        assert first.transit_kma_ids == second.transit_kma_ids == ["km-b", "km-c"]
    else:
        assert first.transit_kma_ids is None


def flip_a_key_bit(relay: kx.KeyRelay, plaintext: bytes) -> tuple[kx.KeyRelay, bytes]:
    key_start = 32  # after the end-to-end MAC key
    return relay, plaintext[:key_start] + bytes([plaintext[key_start] ^ 1]) + plaintext[33:]


def swap_key_ids(relay: kx.KeyRelay, plaintext: bytes) -> tuple[kx.KeyRelay, bytes]:
    return attrs.evolve(relay, key_ids=relay.key_ids[::-1]), plaintext


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
            relay: kx.KeyRelay, plaintext: bytes, next_km: str, units: list[Any]
        ) -> None:
            await send_hop(*tamper(relay, plaintext), next_km, units)

        monkeypatch.setattr(hops_b, "send", altered)
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob", 2, 256))
        assert "the relayed keys failed the end-to-end integrity check" in reason
        km_c = km(network, "km-c")
        assert km_c.pending_key_ids == {}
        assert km_c.store.counts("app:") == {}
        assert km(network, "km-a").relays["started"] == 0
