"""A KM taking QKD-keys from a module that supplies upon request (Q.4162 clause 7.2), and the
keys it makes for applications (qkdn_sdk.roles.km).

The test plays the QKD module over ``memory://``: it answers the KM's key requests with the
batches it is given, then says no key is ready. Nothing sleeps to wait: the test waits on the
store seeing the keys.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import pytest
import trio

from qkdn_sdk.messages import Key, Message, Role, kq1, received_by
from qkdn_sdk.roles.keystore import MemoryKeyStore, StoredKey
from qkdn_sdk.roles.km import KeyManager, KMConfig, KMLink
from qkdn_sdk.roles.km.keys import fresh_key_ids, fresh_keys
from qkdn_sdk.roles.qkd_module import Kq1Mode
from qkdn_sdk.transport import Connection, serve

WAIT = 10.0  # seconds a test may wait for an event before it fails (it never needs them)
MODULE_URL = "memory://acquire/module"


class RecordingStore(MemoryKeyStore):
    """A memory store that records every put that stored keys, and wakes waiters after it."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: list[list[str]] = []
        self.changed = trio.Event()

    async def put(self, keys: Sequence[StoredKey]) -> None:
        await super().put(keys)
        self.puts.append([key.key_id for key in keys])
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, pool: str, count: int) -> None:
        with trio.fail_after(WAIT):
            while self.count(pool) < count:
                await self.changed.wait()


def qkd_key(key_id: str) -> Key:
    return Key(key=secrets.token_bytes(512), key_id=key_id)


async def acquire_until(
    module: Callable[[Message, Connection], Awaitable[Message]], store: RecordingStore, count: int
) -> None:
    """Run a KM whose link to km-b has ``module`` as its on-request QKD module until ``store``
    holds ``count`` QKD-keys of the link."""
    config = KMConfig(
        km_id="km-a",
        listen={},
        controller_id="controller",
        links=(
            KMLink(
                neighbour="km-b",
                module_id="module",
                mode=Kq1Mode.ON_REQUEST,
                module_url=MODULE_URL,
            ),
        ),
        acquire_interval=0.01,
        report_interval=60,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                serve, MODULE_URL, module, identity="module", accepts=received_by(Role.QKD_MODULE)
            )
        )
        await nursery.start(KeyManager(config, store).run)
        await store.wait_for("qkd:km-b", count)
        nursery.cancel_scope.cancel()


async def test_a_batch_of_qkd_keys_is_stored_at_once_without_its_duplicates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each response is stored in one transaction (or with the responses that arrived while the
    store was busy); a key ID supplied before, or twice in the batch, is logged and left out, and
    the other keys of the batch are kept."""
    ids = [str(uuid.uuid4()) for _ in range(5)]
    batches = [
        [qkd_key(ids[0]), qkd_key(ids[1]), qkd_key(ids[0]), qkd_key(ids[2])],
        [qkd_key(ids[1]), qkd_key(ids[3]), qkd_key(ids[4])],
    ]

    async def module(message: Message, _connection: Connection) -> Message:
        assert isinstance(message, kq1.KeyRequest)
        if batches:
            return kq1.ResponseToKeyRequest(keys=batches.pop(0), response="success")
        return kq1.ResponseToKeyRequest(keys=[], response="failure: insufficient keys (0 ready)")

    store = RecordingStore()
    caplog.set_level(logging.WARNING, logger="qkdn_sdk.roles.km")
    await acquire_until(module, store, 5)
    assert [key_id for put in store.puts for key_id in put] == ids
    assert all(put in ([ids[0], ids[1], ids[2]], [ids[3], ids[4]], ids) for put in store.puts)
    assert await store.key_ids("qkd:km-b", 10) == ids
    logged = [record.getMessage() for record in caplog.records]
    supplied_before = [line for line in logged if "supplied before" in line]
    assert supplied_before == [
        f"km-a: key ID '{ids[0]}' was supplied before",
        f"km-a: key ID '{ids[1]}' was supplied before",
    ]


class BlockingStore(RecordingStore):
    """A store whose first put waits until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()

    async def put(self, keys: Sequence[StoredKey]) -> None:
        if not self.puts:
            with trio.fail_after(WAIT):
                await self.release.wait()
        await super().put(keys)


async def test_the_next_key_request_goes_while_the_keys_of_the_last_are_stored() -> None:
    """The KM asks its module for more keys before the last response's keys are stored, and
    stores what arrived meanwhile, in the order the module gave it: the first put waits until
    the module has been asked for a third batch."""
    batches = [[qkd_key(str(uuid.uuid4())) for _ in range(3)] for _ in range(3)]
    ids = [key.key_id for batch in batches for key in batch]
    store = BlockingStore()
    requests = 0

    async def module(message: Message, _connection: Connection) -> Message:
        nonlocal requests
        assert isinstance(message, kq1.KeyRequest)
        requests += 1
        if requests == 3:  # the first put has not finished: the KM asked twice meanwhile
            store.release.set()
        if batches:
            return kq1.ResponseToKeyRequest(keys=batches.pop(0), response="success")
        return kq1.ResponseToKeyRequest(keys=[], response="failure: insufficient keys (0 ready)")

    await acquire_until(module, store, len(ids))
    assert [key_id for put in store.puts for key_id in put] == ids
    assert store.puts[0] == ids[:3]
    assert requests >= 3  # asked twice while the first put waited (else it fails after WAIT)


def test_fresh_key_ids_are_distinct_version_7_uuids_of_now() -> None:
    before = time.time_ns() // 1_000_000
    key_ids, keys = fresh_keys(1000, 256)
    after = time.time_ns() // 1_000_000
    assert len(set(key_ids)) == len(key_ids) == 1000
    for key_id in key_ids:
        parsed = uuid.UUID(key_id)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == key_id
        assert before <= parsed.int >> 80 <= after  # unix_ts_ms, the first 48 bits
    assert len({key_id[:32] for key_id in key_ids}) == 1  # one batch: one stem
    assert [int(key_id[32:], 16) for key_id in key_ids] == list(range(1000))
    assert fresh_key_ids(1)[0][:32] != fresh_key_ids(1)[0][:32]
    many = fresh_key_ids(65_537)
    assert len(set(many)) == 65_537
    assert many[-1][:32] != many[0][:32]
    assert len(set(keys)) == 1000
    assert {len(key) for key in keys} == {32}
    assert fresh_keys(0, 256) == ([], [])


async def test_keys_an_earlier_version_left_pending_in_the_store_are_discarded_at_start() -> None:
    """Relayed keys wait for their confirmation in memory; a store of an earlier version, which
    kept them in ``pending:`` pools, has them discarded when the KM starts (they could never be
    confirmed), and nothing else."""
    store = MemoryKeyStore()
    await store.put(
        [
            StoredKey("left-pending", "pending:relay-1", b"\x01"),
            StoredKey("waiting", "app:alice:bob", b"\x02"),
        ]
    )
    config = KMConfig(km_id="km-a", listen={}, controller_id="controller", report_interval=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(KeyManager(config, store).run)
        nursery.cancel_scope.cancel()
    assert store.counts() == {"app:alice:bob": 1}
    assert await store.seen(["left-pending"]) == {"left-pending"}  # taken, never again
