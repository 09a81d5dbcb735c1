"""Key ID synchronisation between two KMs when their QKD modules did not deliver the same keys
(qkdn_sdk.roles.km).

Two KMs, ``km-a`` (which asks, its ID sorting first) and ``km-b``, over ``memory://``; the test
plays both QKD modules of their link and pushes QKD-keys (Q.4162 Table 1) to each KM as a
module does. A module drops keys its KM does not take in time, so one end may lack keys the
other holds: those keys must never stall the link.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from qkdn_sdk.errors import FailureResponse
from qkdn_sdk.messages import kq1
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import MemoryKeyStore, Splitter, StoredKey
from qkdn_sdk.roles.km import KeyManager, KeyManagerError, KMConfig, KMLink
from qkdn_sdk.transport import connect
from tests._forged import forged_hop

WAIT = 10.0
KEY_BITS = 4096
UNITS_PER_KEY = KEY_BITS // otp.UNIT_BITS


def qkd_keys(count: int) -> list[tuple[str, bytes]]:
    return [(str(uuid.uuid4()), secrets.token_bytes(KEY_BITS // 8)) for _ in range(count)]


class GatedStore(MemoryKeyStore):
    """A memory store that stores link units only while ``gate`` is open: the KM that stores
    them is slow to finish a key ID synchronisation."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.gate.set()

    async def put(self, keys: Sequence[StoredKey]) -> None:
        if keys and keys[0].pool.startswith("link:"):
            await self.gate.wait()
        await super().put(keys)

    async def take_present(
        self, pool: str, key_ids: Sequence[str], *, split: Splitter | None = None
    ) -> list[StoredKey]:
        if split is not None:  # QKD-keys cut into link units
            await self.gate.wait()
        return await super().take_present(pool, key_ids, split=split)


@asynccontextmanager
async def two_kms(tag: str, **options: Any) -> AsyncIterator[tuple[KeyManager, KeyManager]]:
    """km-a and km-b linked, their KMConfig ``options`` added."""
    directory = {"km-a": f"memory://{tag}/km-a/kx", "km-b": f"memory://{tag}/km-b/kx"}
    kms = []
    async with trio.open_nursery() as nursery:
        for km_id, neighbour in (("km-a", "km-b"), ("km-b", "km-a")):
            config = KMConfig(
                km_id=km_id,
                listen={
                    "kx": f"memory://{tag}/{km_id}/kx",
                    "kq1": f"memory://{tag}/{km_id}/kq1",
                },
                controller_id="controller",
                links=(KMLink(neighbour=neighbour, module_id=f"{km_id}.{neighbour}"),),
                sync_interval=0.05,
                report_interval=60,
                **options,
            )
            km = KeyManager(config, GatedStore(), directory=directory)
            await nursery.start(km.run)
            kms.append(km)
        yield kms[0], kms[1]
        nursery.cancel_scope.cancel()


async def supply(km: KeyManager, neighbour: str, keys: Sequence[tuple[str, bytes]]) -> None:
    """Push ``keys`` to ``km`` as its QKD module on the link to ``neighbour`` does."""
    module = f"{km.km_id}.{neighbour}"
    async with connect(km.config.listen["kq1"], identity=module) as connection:
        for key_id, key in keys:
            response = await connection.request(
                kq1.KeySupply(key=key, key_id=key_id, qkd_module_id=module)
            )
            assert isinstance(response, kq1.ResponseToKeySupply)
            assert response.response == "success"


async def test_keys_the_neighbour_never_got_do_not_stall_the_link() -> None:
    """km-a holds 300 old keys that km-b's module dropped (more than one synchronisation
    request asks for), then keys both hold: the link gets the keys both hold."""
    dropped, shared = qkd_keys(300), qkd_keys(4)
    async with two_kms("stall") as (km_a, km_b):
        await supply(km_a, "km-b", [*dropped, *shared])
        await supply(km_b, "km-a", shared)
        with trio.fail_after(WAIT):
            await km_a.wait_link_key("km-b", len(shared) * KEY_BITS // 2)
            await km_b.wait_link_key("km-a", len(shared) * KEY_BITS // 2)
        # the units both ends cut are the same ones, each direction spent by one end only
        assert km_a.link_key_bits("km-b") == km_b.link_key_bits("km-a") == 2 * KEY_BITS
        # keys older than those both hold are discarded; 44 were in no request that matched
        assert km_a.store.count("qkd:km-b") < len(dropped)
        assert km_b.store.count("qkd:km-a") == 0

        # the next key both hold clears what is left of the keys km-b never got
        more = qkd_keys(1)
        await supply(km_a, "km-b", more)
        await supply(km_b, "km-a", more)
        with trio.fail_after(WAIT):
            await km_a.wait_link_key("km-b", (len(shared) + 1) * KEY_BITS // 2)
        assert km_a.store.count("qkd:km-b") == 0


async def test_keys_only_the_answering_km_holds_are_discarded_there() -> None:
    """km-b holds keys km-a never got: km-a asks only for what it holds, and names newer keys
    than those, which it will never get: km-b discards them (they would fill its cap on link
    key), and the keys both hold are cut at both ends alike."""
    only_b, shared = qkd_keys(3), qkd_keys(2)
    async with two_kms("only-b") as (km_a, km_b):
        await supply(km_b, "km-a", [*only_b, *shared])
        await supply(km_a, "km-b", shared)
        with trio.fail_after(WAIT):
            await km_a.wait_link_key("km-b", KEY_BITS)
            await km_b.wait_link_key("km-a", KEY_BITS)
        assert km_a.store.count("link:km-b:in") == km_b.store.count("link:km-a:out")
        assert km_a.store.count("link:km-b:out") == km_b.store.count("link:km-a:in")
        assert km_a.store.count("link:km-b:out") == len(shared) * UNITS_PER_KEY // 2
        assert km_a.store.count("qkd:km-b") == 0
        assert km_b.store.count("qkd:km-a") == 0
        assert await km_b.store.seen([key_id for key_id, _ in only_b]) == {
            key_id for key_id, _ in only_b
        }  # taken out, not cut: neither end has units of them
        assert km_b.store.count("link:km-a:out") + km_b.store.count("link:km-a:in") == (
            len(shared) * UNITS_PER_KEY
        )


async def test_a_long_run_of_keys_only_the_answering_km_holds_is_discarded_too() -> None:
    """km-b holds 300 old keys km-a never got, more than it reads at once: the first answer
    discards the 256 oldest (all older than the keys named), the next the rest."""
    only_b, shared, more = qkd_keys(300), qkd_keys(2), qkd_keys(1)
    async with two_kms("only-b-many") as (km_a, km_b):
        await supply(km_b, "km-a", [*only_b, *shared])
        await supply(km_a, "km-b", shared)
        with trio.fail_after(WAIT):
            await km_b.wait_link_key("km-a", len(shared) * KEY_BITS // 2)
        assert km_b.store.count("qkd:km-a") <= len(only_b) - 256
        await supply(km_b, "km-a", more)
        await supply(km_a, "km-b", more)
        with trio.fail_after(WAIT):
            await km_b.wait_link_key("km-a", (len(shared) + 1) * KEY_BITS // 2)
            await km_a.wait_link_key("km-b", (len(shared) + 1) * KEY_BITS // 2)
        assert km_b.store.count("qkd:km-a") == 0
        assert km_a.link_key_bits("km-b") == km_b.link_key_bits("km-a") == 3 * KEY_BITS // 2


async def test_a_full_end_keeps_a_key_its_neighbour_has_not_asked_for_yet() -> None:
    """km-a's link end is full with a QKD-key km-b's module has not delivered yet: km-a's first
    synchronisation finds nothing matched, and keeps the key (km-b may yet get it, and then
    held a key km-a had thrown away); km-b gets it, and both cut it."""
    (key,) = qkd_keys(1)
    async with two_kms("full-keeps", max_link_key_bits=KEY_BITS) as (km_a, km_b):
        await supply(km_a, "km-b", [key])
        assert km_a.link_table.room_bits("km-b") == 0
        await trio.testing.wait_all_tasks_blocked()  # km-a asked km-b, which held nothing
        assert km_a.store.count("qkd:km-b") == 1
        await supply(km_b, "km-a", [key])
        with trio.fail_after(WAIT):
            await km_a.wait_link_key("km-b", KEY_BITS // 2)
            await km_b.wait_link_key("km-a", KEY_BITS // 2)


async def test_full_ends_holding_different_keys_discard_them() -> None:
    """Both ends full, each with a QKD-key the other never gets: neither would ever take another,
    so each discards its own (km-a once a second round matched nothing either), and the link
    takes keys again."""
    only_a, only_b, shared = qkd_keys(1), qkd_keys(1), qkd_keys(1)
    async with two_kms("full-discard", max_link_key_bits=KEY_BITS) as (km_a, km_b):
        await supply(km_a, "km-b", only_a)
        await supply(km_b, "km-a", only_b)
        with trio.fail_after(WAIT):
            for km, neighbour in ((km_a, "km-b"), (km_b, "km-a")):
                while km.store.count(f"qkd:{neighbour}"):
                    await km.link_table.wait_change()
        await supply(km_a, "km-b", shared)
        await supply(km_b, "km-a", shared)
        with trio.fail_after(WAIT):
            await km_a.wait_link_key("km-b", KEY_BITS // 2)
            await km_b.wait_link_key("km-a", KEY_BITS // 2)


@pytest.mark.parametrize("gated", ["km-a", "km-b"])
async def test_a_hop_on_units_not_cut_yet_waits_for_them(gated: str) -> None:
    """Both ends cut a synchronisation's units at once: km-b (answering) while it answers,
    km-a (asking) once the answer came. Either may spend them before the other has cut them
    (here the other's store is slow to): the hop then waits for the cutting to end instead of
    failing 'not synchronised yet'."""
    shared = qkd_keys(1)
    async with two_kms(f"in-flight-{gated}") as (km_a, km_b):
        slow, spender = (km_a, km_b) if gated == "km-a" else (km_b, km_a)
        store = slow.store
        assert isinstance(store, GatedStore)
        store.gate = trio.Event()  # the slow KM will not finish cutting until the gate opens
        await supply(km_a, "km-b", shared)
        await supply(km_b, "km-a", shared)
        with trio.fail_after(WAIT):
            await spender.wait_link_key(slow.km_id, KEY_BITS // 2)
        assert slow.link_key_bits(spender.km_id) == 0
        units = await spender.store.key_ids(f"link:{slow.km_id}:out", 4)
        reasons: list[str] = []

        async def send() -> None:
            async with connect(slow.config.listen["kx"], identity=spender.km_id) as connection:
                with pytest.raises(FailureResponse) as caught:
                    await connection.request(forged_hop(spender.km_id, slow.km_id, units))
                reasons.append(caught.value.reason)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()  # the hop waits at the slow KM
            assert reasons == []
            store.gate.set()
        # the units were there once the cutting ended: the (forged) hop then fails its MAC, not
        # for want of units
        assert reasons == ["failure: the key relay failed its message authentication code"]
        assert slow.link_key_bits(spender.km_id) == KEY_BITS // 2


@given(qkd_key_id=st.text(min_size=1, max_size=80), units=st.integers(min_value=0, max_value=40))
def test_both_ends_name_the_units_of_a_qkd_key_alike(qkd_key_id: str, units: int) -> None:
    """The link unit IDs are the wire's (a hop names the units it spent): version 8 UUIDs of
    a hash of the QKD-key ID and the unit's index, however they are computed; a remainder
    shorter than a unit is no unit."""
    key = secrets.token_bytes(units * otp.UNIT_BYTES + units % otp.UNIT_BYTES)
    digest = hashlib.sha1(otp._UNIT_NAMESPACE.bytes + qkd_key_id.encode()).digest()
    expected = []
    for index in range(units):
        data = bytearray(digest[:14] + index.to_bytes(2, "big"))
        data[6] = (data[6] & 0x0F) | 0x80
        data[8] = (data[8] & 0x3F) | 0x80
        unit_id = uuid.UUID(bytes=bytes(data))
        assert (unit_id.version, unit_id.variant) == (8, uuid.RFC_4122)
        expected.append(
            (index, str(unit_id), key[index * otp.UNIT_BYTES : (index + 1) * otp.UNIT_BYTES])
        )
    assert otp.split_qkd_key(qkd_key_id, key) == expected


def test_a_qkd_key_of_more_units_than_an_id_can_number_is_not_cut() -> None:
    with pytest.raises(ValueError, match="a QKD-key of 65537 link units is over 65536"):
        otp.split_qkd_key("big", bytes((otp.MAX_UNITS + 1) * otp.UNIT_BYTES))


async def test_a_km_refuses_a_qkd_key_too_long_to_cut() -> None:
    """No frame carries such a key; an ETSI 014 KME's answer could: the KM refuses it before it
    is stored (its synchronisation could never cut it)."""
    key = bytes((otp.MAX_UNITS + 1) * otp.UNIT_BYTES)
    async with two_kms("too-long") as (km_a, _km_b):
        [link] = km_a.config.links
        with pytest.raises(KeyManagerError) as caught:
            await km_a.acquisition.store_qkd_keys(link, [("big", key, None)])
        assert str(caught.value) == (
            "QKD-key 'big': 16777472 bits, over the 16777216 this KM cuts into link units"
        )
        assert await km_a.store.seen(["big"]) == set()


async def test_a_link_checks_hash_values_with_its_own_algorithm() -> None:
    """Q.4162 Table 1 does not fix the hash algorithm: the link names it, and a key whose hash
    value is not that algorithm's is refused (and not stored)."""
    config = KMConfig(
        km_id="km-a",
        listen={"kq1": "memory://hash/km-a/kq1"},
        controller_id="controller",
        links=(KMLink(neighbour="km-b", module_id="km-a.km-b", hash_algorithm="sha3_256"),),
        report_interval=60,
        hello_interval=60,
    )
    manager = KeyManager(config, MemoryKeyStore())
    (key_id, key), (other_id, other) = qkd_keys(2)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        async with connect(config.listen["kq1"], identity="km-a.km-b") as module:
            response = await module.request(
                kq1.KeySupply(key=key, key_id=key_id, hash_value=hashlib.sha3_256(key).hexdigest())
            )
            assert isinstance(response, kq1.ResponseToKeySupply)
            with pytest.raises(FailureResponse) as caught:
                await module.request(
                    kq1.KeySupply(
                        key=other, key_id=other_id, hash_value=hashlib.sha256(other).hexdigest()
                    )
                )
        assert caught.value.reason == (
            f"failure: QKD-key '{other_id}': the hash value does not match (the sha3_256 of the "
            "key)"
        )
        assert await manager.store.seen([key_id, other_id]) == {key_id}
        nursery.cancel_scope.cancel()
