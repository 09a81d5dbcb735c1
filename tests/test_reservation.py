"""Key reservation and allocation along a route (Q.4164 clauses 7.5, 7.6) on line3.

The controller reserves link key on every hop from km-a to km-c (a key reservation request to
km-a for km-a ==== km-b, to km-b for km-b ==== km-c), then allocates the key IDs the KMs
answered. Reserved key serves no other relay; allocated key serves the relays from km-a to km-c
first; reserved key never allocated goes back to its link.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import attrs
import pytest
import trio

from qkdn_sdk.codecs.frame import MAX_PAYLOAD_SIZE
from qkdn_sdk.codecs.payload import encode_payload
from qkdn_sdk.messages import KeyId, ck
from qkdn_sdk.network import Network
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.controller import Controller, KMRequestFailed
from qkdn_sdk.roles.km import KeyManager
from qkdn_sdk.roles.km.reservation import units_answerable
from qkdn_sdk.transport import connect
from tests.test_network import (
    WAIT,
    client,
    ids,
    km,
    ready,
    relay_bits,
    running,
    same_keys,
)

BITS = 4 * 256


def controller_of(network: Network) -> Controller:
    controller = network.controller
    assert controller is not None
    return controller


async def held(manager: KeyManager, pool_prefix: str) -> set[str]:
    """The IDs of every key ``manager`` holds in pools starting with ``pool_prefix``."""
    found: set[str] = set()
    for pool in manager.store.counts(pool_prefix):
        found.update(await manager.store.key_ids(pool, 10**6))
    return found


async def test_reserved_key_is_set_aside_then_allocated_and_spent(tmp_path: Path) -> None:
    async with running(tmp_path, "memory") as network:
        await ready(network, BITS + 2 * relay_bits(1, 256))
        controller = controller_of(network)
        km_a, km_b = km(network, "km-a"), km(network, "km-b")
        reservation = await controller.reserve("km-a", "km-c", BITS, application="bob")
        assert reservation.route == ("km-a", "km-b", "km-c")
        assert {km_id: len(key_ids) for km_id, key_ids in reservation.key_ids.items()} == {
            "km-a": 4,
            "km-b": 4,
        }
        a_units = set(reservation.key_ids["km-a"])
        assert km_a.reserved_bits("km-b") == km_b.reserved_bits("km-c") == BITS
        assert not a_units & set(await km_a.store.key_ids("link:km-b:out", 10**6))

        # a relay before the allocation spends other key
        async with client(network, "alice") as alice:
            first = await alice.get_keys("bob")
            assert await held(km_a, "reserved:") == a_units

            await controller.allocate(reservation)
            assert km_a.reserved_bits("km-b") == 0
            assert km_a.allocated_bits("km-b") == km_b.allocated_bits("km-c") == BITS
            # the next relay from km-a to km-c spends allocated key first: its 4 units (MAC
            # key, metadata key, two of pad), all there are
            second = await alice.get_keys("bob")
        assert km_a.allocated_bits("km-b") == km_b.allocated_bits("km-c") == 0
        assert a_units.isdisjoint(await held(km_a, "allocated:"))
        async with client(network, "bob") as bob:
            got = await bob.get_keys_with_ids("alice", ids(first + second))
        assert same_keys(got, first + second)


async def test_reserved_key_not_allocated_goes_back_to_its_link(tmp_path: Path) -> None:
    async with running(tmp_path, "memory") as network:
        await ready(network, BITS)
        controller = controller_of(network)
        km_a = km(network, "km-a")
        reservation = await controller.reserve("km-a", "km-c", BITS, lifetime=0.05)
        a_units = set(reservation.key_ids["km-a"])
        with trio.fail_after(WAIT):
            while km_a.reserved_bits("km-b"):
                await km_a.wait_link_change()
        assert a_units <= set(await km_a.store.key_ids("link:km-b:out", 10**6))
        with pytest.raises(KMRequestFailed) as caught:  # too late to allocate
            await controller.allocate(reservation)
        assert "km-a refused to allocate key" in str(caught.value)
        assert "is in no reservation of km-a for km-a -> km-c (released" in str(caught.value)


async def test_reservations_refused(tmp_path: Path) -> None:
    async with running(tmp_path, "memory") as network:
        await ready(network, relay_bits(1, 256))
        controller = controller_of(network)
        with pytest.raises(KMRequestFailed) as caught:
            await controller.reserve("km-a", "km-c", 256, lifetime=10**9)
        assert "lifetime must be a number of seconds" in str(caught.value)
        await network.stop_km("km-b")  # its connection to the controller is gone
        with pytest.raises(KMRequestFailed, match="cannot reserve key at km-b: "):
            await controller.reserve("km-a", "km-c", 256)


async def test_a_reservation_too_large_to_answer_reserves_nothing(tmp_path: Path) -> None:
    """The units a reservation would answer must fit one frame: checked before any is set aside
    (an answer the frame refused used to leave its key reserved for the reservation's lifetime)."""
    answer = ck.ResponseToKeyReservationRequest(
        source_kma_id="km-a", destination_kma_id="km-c", key_ids=[], response=0
    )
    most = units_answerable(answer)
    unit = KeyId(key_id=str(uuid.uuid4()))
    assert len(encode_payload(attrs.evolve(answer, key_ids=[unit] * most))) <= MAX_PAYLOAD_SIZE
    assert len(encode_payload(attrs.evolve(answer, key_ids=[unit] * (most + 1)))) > MAX_PAYLOAD_SIZE
    async with running(tmp_path, "memory") as network:
        await ready(network, (most + 1) * otp.UNIT_BITS)
        controller = controller_of(network)
        km_a = km(network, "km-a")
        with pytest.raises(KMRequestFailed) as caught:
            await controller.reserve("km-a", "km-c", (most + 1) * otp.UNIT_BITS)
        assert "more than one key reservation response can name" in str(caught.value)
        assert f"at most {most * otp.UNIT_BITS} bits" in str(caught.value)
        assert km_a.store.counts("reserved:") == {}
        assert km_a.reserved_bits("km-b") == 0
        reservation = await controller.reserve("km-a", "km-b", most * otp.UNIT_BITS)
        assert len(reservation.key_ids["km-a"]) == most


async def test_a_plain_table_10_reservation_and_table_12_allocation(tmp_path: Path) -> None:
    """A controller that sends only what Q.4164 Tables 10 and 12 hold (the route's ends, then
    the key IDs answered): each KM on the route reserves ``reservation_bits`` towards its next
    KM (the destination when it is a neighbour, else the controller's next hop) and allocates
    them."""
    async with running(tmp_path, "memory") as network:
        await ready(network, 8192 + relay_bits(1, 256))
        urls = network.endpoints()["kms"]
        for km_id, towards in (("km-a", "km-b"), ("km-b", "km-c")):
            manager = km(network, km_id)
            async with connect(urls[km_id]["ck"]["memory"], identity="controller") as ck_port:
                reserved = await ck_port.request(
                    ck.KeyReservationRequest(source_kma_id="km-a", destination_kma_id="km-c"),
                    timeout=WAIT,
                )
                assert isinstance(reserved, ck.ResponseToKeyReservationRequest)
                assert reserved.response == 0
                assert len(reserved.key_ids) == 8192 // otp.UNIT_BITS
                assert manager.reserved_bits(towards) == 8192
                allocated = await ck_port.request(
                    ck.KeyAllocationRequest(
                        source_kma_id="km-a", destination_kma_id="km-c", key_ids=reserved.key_ids
                    ),
                    timeout=WAIT,
                )
                assert isinstance(allocated, ck.ResponseToKeyAllocationRequest)
                assert allocated.response == 0
                assert manager.reserved_bits(towards) == 0
                assert manager.allocated_bits(towards) == 8192
