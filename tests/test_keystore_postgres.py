"""The PostgreSQL key store on a real server (tests/_postgres.py): single delivery kept by the
database between two stores on one database, counts as of a store's last transaction, a server
restart or crash, and its error texts. (What every store does is in test_keystore.py and
test_keystore_rows.py, which run on PostgreSQL too.)"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
import trio

from qkdn_sdk.roles.keystore import (
    DuplicateKey,
    InsufficientKeys,
    KeyStoreError,
    PostgresKeyStore,
    StoredKey,
    UnknownKeys,
)
from qkdn_sdk.roles.km.keys import fresh_keys
from tests._postgres import PostgresServer

KEK = bytes(range(32))
POOL = "app:alice:bob"


def batch(number: int, pool: str = POOL) -> list[StoredKey]:
    """``number`` keys of one batch (one row of the store)."""
    key_ids, keys = fresh_keys(number, 256)
    return [StoredKey(key_id, pool, key) for key_id, key in zip(key_ids, keys, strict=True)]


def ids(keys: list[StoredKey]) -> list[str]:
    return [key.key_id for key in keys]


def name_of(url: str) -> str:
    """The database of a test URL as the store's errors name it."""
    return "postgresql://" + url.split("@", 1)[1]


def assert_one_line_naming(error: KeyStoreError, url: str) -> None:
    text = str(error)
    assert f"{name_of(url)!r}" in text
    assert "\n" not in text
    assert error.__cause__ is None  # no psycopg exception leaks, nor comes along
    assert error.__context__ is None or error.__suppress_context__
    assert "psycopg" not in type(error).__module__


@pytest.fixture
async def two_stores(postgres_url: str) -> AsyncIterator[tuple[PostgresKeyStore, ...]]:
    """Two stores on one database, as two KM processes would have."""
    async with (
        await PostgresKeyStore.open(postgres_url, kek=KEK) as first,
        await PostgresKeyStore.open(postgres_url, kek=KEK) as second,
    ):
        yield first, second


# --- single delivery, kept by the database ----------------------------------------------------


async def test_two_stores_taking_from_one_pool_hand_each_key_out_once(
    two_stores: tuple[PostgresKeyStore, ...],
) -> None:
    """Four takers on each store take 7 keys at a time from rows of 50 until the pool is short:
    every key stored comes out exactly once, with its bytes."""
    stored = [key for _ in range(12) for key in batch(50)]
    await two_stores[0].put(stored)
    taken: dict[PostgresKeyStore, list[StoredKey]] = {store: [] for store in two_stores}

    async def taker(store: PostgresKeyStore) -> None:
        with contextlib.suppress(InsufficientKeys):  # the pool holds fewer than 7 now
            while True:
                taken[store] += await store.take(POOL, 7)

    async with trio.open_nursery() as nursery:
        for store in two_stores * 4:
            nursery.start_soon(taker, store)
    left = await two_stores[1].take_present(POOL, ids(stored))
    assert len(left) < 7
    assert all(len(keys) > 100 for keys in taken.values())  # both took their share
    every = [*taken[two_stores[0]], *taken[two_stores[1]], *left]
    assert sorted(ids(every)) == sorted(ids(stored))  # none twice, none lost
    by_id = {key.key_id: key.key for key in stored}
    assert all(key.key == by_id[key.key_id] for key in every)
    for store in two_stores:
        await store.seen([])  # a transaction: its counters as of now
        assert store.counts() == {}


async def test_two_stores_fetching_the_same_ids_hand_them_out_once(
    two_stores: tuple[PostgresKeyStore, ...],
) -> None:
    """Both stores ask for the same key IDs at once, group after group (all in one row, so
    every request waits for the row): for each group, one gets the keys and the other
    :class:`UnknownKeys`; with ``deliver``, both get them and exactly one as their first
    delivery."""
    stored = batch(120)
    await two_stores[0].put(stored)
    groups = [ids(stored[start : start + 3]) for start in range(0, 120, 6)]
    delivered = [ids(stored[start + 3 : start + 6]) for start in range(0, 120, 6)]
    outcomes: dict[tuple[str, int, int], Any] = {}

    async def keep(key: tuple[str, int, int], call: Callable[[], Awaitable[Any]]) -> None:
        try:
            outcomes[key] = await call()
        except UnknownKeys as error:
            outcomes[key] = error

    async with trio.open_nursery() as nursery:
        for n, (group, other) in enumerate(zip(groups, delivered, strict=True)):
            for s, store in enumerate(two_stores):
                nursery.start_soon(
                    keep, ("take", n, s), lambda st=store, g=group: st.take_ids(POOL, g)
                )
                nursery.start_soon(
                    keep, ("deliver", n, s), lambda st=store, g=other: st.deliver(POOL, "out", g)
                )
    for n, group in enumerate(groups):
        takes = [outcomes["take", n, s] for s in (0, 1)]
        assert sorted(type(outcome).__name__ for outcome in takes) == ["UnknownKeys", "list"]
        assert next(ids(got) for got in takes if isinstance(got, list)) == group
        pools = sorted(key.pool for s in (0, 1) for key in outcomes["deliver", n, s])
        assert pools == [POOL] * 3 + ["out"] * 3
    await two_stores[1].seen([])
    assert two_stores[1].counts() == {"out": 60}


async def test_counts_are_as_of_the_stores_last_transaction(
    two_stores: tuple[PostgresKeyStore, ...],
) -> None:
    first, second = two_stores
    await first.put(batch(5) + batch(3, "link:km-b:out"))
    assert first.counts() == {POOL: 5, "link:km-b:out": 3}
    assert second.counts() == {}  # it has not run a transaction since
    assert await second.key_ids(POOL, 0) == []
    assert second.counts() == {POOL: 5, "link:km-b:out": 3}
    await second.take(POOL, 2)
    assert second.count(POOL) == 3
    assert first.count(POOL) == 5
    await first.seen([])
    assert first.count(POOL) == 3


# --- a restart or a crash of the server -------------------------------------------------------


@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_operations_fail_during_an_outage_and_succeed_after_it(
    postgres_server: PostgresServer, postgres_url: str, outage: str
) -> None:
    stored = batch(10) + batch(10)
    async with await PostgresKeyStore.open(postgres_url, kek=KEK) as store:
        await store.put(stored)
        first = await store.take(POOL, 4)
        await trio.to_thread.run_sync(getattr(postgres_server, outage))
        for attempt in (lambda: store.take(POOL, 1), lambda: store.put(batch(1))):
            with pytest.raises(KeyStoreError) as info:
                await attempt()
            assert_one_line_naming(info.value, postgres_url)
        assert store.count(POOL) == 16  # the counters stay as they were
        await trio.to_thread.run_sync(postgres_server.start)
        second = await store.take(POOL, 4)
        await trio.to_thread.run_sync(postgres_server.restart)  # while the store is idle
        left = await store.take(POOL, 12)  # the broken connection is replaced at once
        assert ids(first + second + left) == ids(stored)
        assert store.counts() == {}
        with pytest.raises(DuplicateKey):
            await store.put(stored[:1])


@pytest.mark.parametrize("outage", ["restart", "kill"])
async def test_a_transaction_the_outage_breaks_changes_nothing(
    postgres_server: PostgresServer, postgres_url: str, outage: str
) -> None:
    """The server stops or dies while a transaction is open (its split function waits); the
    operation fails in one line, and the keys it would have taken are all there after."""
    qkd_key = StoredKey("0190c6a4-1f2e-7abc-8def-012345670000", "qkd:km-b", bytes(range(64)))
    entered, release = threading.Event(), threading.Event()

    def split(key: StoredKey) -> list[StoredKey]:
        entered.set()
        assert release.wait(30)  # a guard against a hang, never a wait
        return [StoredKey(key.key_id + "-0", "link:km-b:out", key.key[:32])]

    async with await PostgresKeyStore.open(postgres_url, kek=KEK) as store:
        await store.put([qkd_key])
        async with trio.open_nursery() as nursery:

            async def take_and_split() -> None:
                with pytest.raises(KeyStoreError) as info:
                    await store.take_present("qkd:km-b", [qkd_key.key_id], split=split)
                assert_one_line_naming(info.value, postgres_url)

            nursery.start_soon(take_and_split)
            await trio.to_thread.run_sync(entered.wait)
            if outage == "restart":
                await trio.to_thread.run_sync(postgres_server.restart)
            else:
                await trio.to_thread.run_sync(postgres_server.kill)
                await trio.to_thread.run_sync(postgres_server.start)
            release.set()
        assert await store.take_ids("qkd:km-b", [qkd_key.key_id]) == [qkd_key]
        assert store.counts() == {}
        assert await store.seen([qkd_key.key_id + "-0"]) == set()


# --- what it keeps in the database, and its errors ---------------------------------------------


async def test_no_key_is_readable_in_any_file_of_the_server(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """Key bytes reach the server sealed: none is in its tables, its write-ahead log or its
    log, in clear or in hex."""
    stored = batch(40)
    async with await PostgresKeyStore.open(postgres_url, kek=KEK) as store:
        await store.put(stored)
        await store.take(POOL, 10)
        await store.take_ids(POOL, ids(stored[20:25]))
    files = [path for path in postgres_server.root.rglob("*") if path.is_file()]
    content = b"".join(path.read_bytes() for path in files)
    assert len(content) > 1_000_000
    assert [key for key in stored if key.key in content or key.key.hex().encode() in content] == []


async def test_a_store_opens_only_with_the_kek_it_was_written_with(postgres_url: str) -> None:
    async with await PostgresKeyStore.open(postgres_url, kek=KEK) as store:
        await store.put(batch(2))
    with pytest.raises(KeyStoreError) as info:
        await PostgresKeyStore.open(postgres_url, kek=bytes(32))
    assert str(info.value) == (
        f"cannot open key store {name_of(postgres_url)!r}: "
        "its key-encryption key is not the one given"
    )
    async with await PostgresKeyStore.open(postgres_url, kek=KEK) as store:
        assert store.count(POOL) == 2
        assert store.database == name_of(postgres_url)
        assert repr(store) == f"<PostgresKeyStore {name_of(postgres_url)!r} 2 keys>"


async def test_a_database_of_a_newer_schema_is_refused(postgres_url: str) -> None:
    async with await PostgresKeyStore.open(postgres_url, kek=KEK):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(KeyStoreError) as info:
        await PostgresKeyStore.open(postgres_url, kek=KEK)
    assert str(info.value) == (
        f"cannot open key store {name_of(postgres_url)!r}: schema version 99 is newer than "
        "this SDK's (3)"
    )


async def test_a_database_that_cannot_be_reached_is_one_line_without_the_password(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with_password = postgres_url.replace("@", ":hunter2@")  # trust authentication ignores it
    async with await PostgresKeyStore.open(with_password, kek=KEK) as store:
        await store.put(batch(1))
    missing = with_password.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(KeyStoreError) as info:
        await PostgresKeyStore.open(missing, kek=KEK)
    assert_one_line_naming(info.value, missing)
    assert 'database "no_such_database" does not exist' in str(info.value)
    await trio.to_thread.run_sync(postgres_server.stop)
    with pytest.raises(KeyStoreError) as info:
        await PostgresKeyStore.open(with_password, kek=KEK)
    assert_one_line_naming(info.value, with_password)
    assert "hunter2" not in str(info.value)
    with pytest.raises(KeyStoreError, match="not a PostgreSQL URL") as info:
        await PostgresKeyStore.open("postgresql://qkdn:hunter2%zz@127.0.0.1/keys", kek=KEK)
    assert "hunter2" not in str(info.value)


def test_the_sdk_imports_without_psycopg() -> None:
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import trio\n"
        "from qkdn_sdk.roles.keystore import KeyStoreError, PostgresKeyStore\n"
        "try:\n"
        "    trio.run(lambda: PostgresKeyStore.open('postgresql:///keys', kek=bytes(32)))\n"
        "except KeyStoreError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout == (
        "cannot open a PostgreSQL key store: psycopg is not installed"
        " (pip install 'qkdn-sdk[postgres]')\n"
    )
