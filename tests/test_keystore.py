"""The key store: one behaviour suite over both stores, SQLite restarts and a model check."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import stat
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdn_sdk.errors import QkdnError
from qkdn_sdk.roles.keystore import (
    DuplicateKey,
    InsufficientKeys,
    KeyStore,
    KeyStoreError,
    MemoryKeyStore,
    PostgresKeyStore,
    SQLiteKeyStore,
    StoredKey,
    UnknownKeys,
)
from tests._postgres import PostgresServer

SECRET = b"\x00TOPSECRET\xff"


def secret_of(key_id: str) -> bytes:
    return SECRET + key_id.encode()


def make(key_id: str, pool: str) -> StoredKey:
    return StoredKey(key_id, pool, secret_of(key_id), {"id": key_id, "bits": [1, 2]})


def make_many(pool: str, n: int, prefix: str = "k") -> list[StoredKey]:
    return [make(f"{prefix}{i}", pool) for i in range(n)]


def wal(path: Path) -> Path:
    """The write-ahead log of the store in ``path`` (its bytes, or none, once the store closed)."""
    log = path.with_name(f"{path.name}-wal")
    if not log.exists():
        log.write_bytes(b"")
    return log


def ids(keys: Sequence[StoredKey]) -> list[str]:
    return [key.key_id for key in keys]


def assert_no_secret(text: str) -> None:
    for form in (SECRET, SECRET.hex(), repr(SECRET), "TOPSECRET"):
        assert str(form) not in text


KEK = bytes(range(32))


STORES = ["memory", "sqlite", "postgres"]


@contextlib.asynccontextmanager
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, kek: bytes | None = None
) -> AsyncIterator[KeyStore]:
    """A new store of the kind ``request.param`` (one of :data:`STORES`): a PostgreSQL store in
    a database of its own, made for it; a SQLite store in ``tmp_path``, under ``kek`` (by
    default, the KEK file beside it)."""
    if request.param == "memory":
        async with MemoryKeyStore() as memory:
            yield memory
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        async with await PostgresKeyStore.open(url, kek=kek or KEK) as postgres:
            yield postgres
    else:
        # Parent directories that do not exist yet: open makes them.
        path = tmp_path / "state" / "km-a" / "keys.db"
        async with await SQLiteKeyStore.open(path, kek=kek) as sqlite:
            yield sqlite


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    async with open_store(request, tmp_path) as opened:
        yield opened


# --- put and take ---------------------------------------------------------------------------


async def test_take_returns_the_oldest_keys_in_insertion_order(store: KeyStore) -> None:
    await store.put(make_many("qkd:km-b", 3))
    await store.put([make("k3", "qkd:km-b"), make("other", "qkd:km-c")])
    first = await store.take("qkd:km-b", 2)
    assert first == [make("k0", "qkd:km-b"), make("k1", "qkd:km-b")]
    assert ids(await store.take("qkd:km-b", 2)) == ["k2", "k3"]
    assert await store.take("qkd:km-b", 0) == []
    assert store.counts() == {"qkd:km-c": 1}


async def test_metadata_round_trips_and_is_a_copy(store: KeyStore) -> None:
    metadata: dict[str, Any] = {"origin": "km-a", "n": [1, 2.5, None, True], "nested": {"x": "y"}}
    await store.put([StoredKey("k", "p", b"\x01\x02", metadata)])
    metadata["origin"] = "changed after put"
    [key] = await store.take("p", 1)
    assert key.metadata == {"origin": "km-a", "n": [1, 2.5, None, True], "nested": {"x": "y"}}
    assert key.key == b"\x01\x02"


async def test_metadata_that_is_not_json_is_refused(store: KeyStore) -> None:
    with pytest.raises(TypeError, match="metadata of key ID 'bad'"):
        await store.put([make("good", "p"), StoredKey("bad", "p", SECRET, {"x": object()})])
    assert store.count("p") == 0
    assert await store.seen(["good", "bad"]) == set()


async def test_take_more_than_available_removes_nothing(store: KeyStore) -> None:
    await store.put(make_many("link:km-b:out", 3))
    with pytest.raises(InsufficientKeys) as info:
        await store.take("link:km-b:out", 5)
    assert str(info.value) == "pool 'link:km-b:out' holds 3 keys, 5 requested"
    assert (info.value.pool, info.value.requested, info.value.available) == ("link:km-b:out", 5, 3)
    assert store.count("link:km-b:out") == 3
    assert await store.key_ids("link:km-b:out", 10) == ["k0", "k1", "k2"]
    with pytest.raises(InsufficientKeys, match="pool 'empty' holds 0 keys, 1 requested"):
        await store.take("empty", 1)


@pytest.mark.parametrize(
    ("call", "args", "text"),
    [
        ("take", ("p", -1), "count must be >= 0, got -1"),
        ("take_ids_and_oldest", ("p", ["k0"], "p", -2), "count must be >= 0, got -2"),
        ("key_ids", ("p", -1), "limit must be >= 0, got -1"),
        ("peek", ("p", -3), "limit must be >= 0, got -3"),
    ],
)
async def test_negative_counts_are_refused_naming_the_argument(
    store: KeyStore, call: str, args: tuple[Any, ...], text: str
) -> None:
    await store.put(make_many("p", 2))
    with pytest.raises(ValueError, match=f"^{re.escape(text)}$"):
        await getattr(store, call)(*args)
    assert await store.key_ids("p", 10) == ["k0", "k1"]


async def test_key_ids_lists_the_oldest_without_removing(store: KeyStore) -> None:
    await store.put(make_many("p", 4))
    assert await store.key_ids("p", 2) == ["k0", "k1"]
    assert await store.key_ids("p", 10) == ["k0", "k1", "k2", "k3"]
    assert await store.key_ids("p", 0) == []
    assert await store.key_ids("nothing", 3) == []
    assert store.count("p") == 4


async def test_pools_of_names_where_each_held_key_is(store: KeyStore) -> None:
    await store.put([make("a", "app:x:y"), make("b", "app:x:z"), make("c", "app:x:z")])
    await store.take_ids("app:x:z", ["c"])
    assert await store.pools_of(["a", "b", "c", "never"]) == {"a": "app:x:y", "b": "app:x:z"}
    assert await store.pools_of([]) == {}


async def test_move_some_keys_all_or_nothing(store: KeyStore) -> None:
    await store.put(make_many("p", 4))
    assert await store.move("p", "r", key_ids=["k2", "k0"]) == 2
    assert await store.key_ids("r", 10) == ["k0", "k2"]  # their insertion order
    assert await store.key_ids("p", 10) == ["k1", "k3"]
    with pytest.raises(UnknownKeys):
        await store.move("p", "r", key_ids=["k1", "k0"])  # k0 is no longer in p
    assert store.counts() == {"p": 2, "r": 2}
    assert await store.move("p", "r", key_ids=["k1", "k3"]) == 2
    assert store.counts() == {"r": 4}
    # keys moved by ID go after those the pool held, in their order in the source
    assert [key.key_id for key in await store.take("r", 4)] == ["k0", "k2", "k1", "k3"]


async def test_peek_shows_the_oldest_keys_and_leaves_them(store: KeyStore) -> None:
    await store.put(make_many("p", 3))
    peeked = await store.peek("p", 2)
    assert [key.key_id for key in peeked] == ["k0", "k1"]
    assert peeked == await store.take_ids("p", ["k0", "k1"])  # the same keys, bytes and all
    assert [key.key_id for key in await store.peek("p", 5)] == ["k2"]
    assert await store.peek("nothing", 5) == []
    assert await store.peek("p", 0) == []
    with pytest.raises(ValueError, match="must be >= 0"):
        await store.peek("p", -1)


async def test_key_ids_lists_the_newest_oldest_first(store: KeyStore) -> None:
    await store.put(make_many("p", 4))
    await store.take_ids("p", ["k2"])
    assert await store.key_ids("p", 2, newest=True) == ["k1", "k3"]
    assert await store.key_ids("p", 10, newest=True) == ["k0", "k1", "k3"]
    assert await store.key_ids("p", 0, newest=True) == []
    assert await store.key_ids("nothing", 3, newest=True) == []
    assert store.count("p") == 3


# --- take_ids -------------------------------------------------------------------------------


async def test_take_ids_returns_the_keys_in_the_order_asked(store: KeyStore) -> None:
    await store.put(make_many("app:alice:bob", 5))
    await store.put([make("elsewhere", "app:alice:carol")])
    taken = await store.take_ids("app:alice:bob", ["k3", "k0", "k4"])
    assert taken == [
        make("k3", "app:alice:bob"),
        make("k0", "app:alice:bob"),
        make("k4", "app:alice:bob"),
    ]
    assert await store.key_ids("app:alice:bob", 10) == ["k1", "k2"]
    assert await store.take_ids("app:alice:bob", []) == []
    assert store.counts() == {"app:alice:bob": 2, "app:alice:carol": 1}


@pytest.mark.parametrize(
    ("asked", "missing", "text"),
    [
        (["k1", "nope"], ["nope"], "pool 'p' does not hold 1 key ID asked for: 'nope'"),
        (["k1", "k1"], ["k1"], "pool 'p' does not hold 1 key ID asked for: 'k1'"),
        # A key of another pool is not in this one.
        (["elsewhere"], ["elsewhere"], "pool 'p' does not hold 1 key ID asked for: 'elsewhere'"),
        (
            ["a", "k0", "b", "c", "d", "e"],
            ["a", "b", "c", "d", "e"],
            "pool 'p' does not hold 5 key IDs asked for: 'a', 'b', 'c' and 2 more",
        ),
        (
            ["a", "b", "c"],
            ["a", "b", "c"],
            "pool 'p' does not hold 3 key IDs asked for: 'a', 'b', 'c'",
        ),
        (
            ["a", "b", "c", "d"],
            ["a", "b", "c", "d"],
            "pool 'p' does not hold 4 key IDs asked for: 'a', 'b', 'c' and 1 more",
        ),
    ],
)
async def test_take_ids_of_unknown_keys_changes_nothing(
    store: KeyStore, asked: list[str], missing: list[str], text: str
) -> None:
    await store.put([*make_many("p", 3), make("elsewhere", "q")])
    with pytest.raises(UnknownKeys) as info:
        await store.take_ids("p", asked, replace_with=[make("new", "p")])
    assert (info.value.pool, info.value.missing, str(info.value)) == ("p", missing, text)
    assert info.value.http_status == 400
    assert await store.key_ids("p", 10) == ["k0", "k1", "k2"]
    assert store.counts() == {"p": 3, "q": 1}
    assert await store.seen(["new"]) == set()


async def test_take_ids_with_replacement_splits_a_key_atomically(store: KeyStore) -> None:
    await store.put(make_many("p", 3))
    halves = [make("k1.a", "p"), make("k1.b", "p"), make("k1.c", "pending:x")]
    taken = await store.take_ids("p", ["k1"], replace_with=halves)
    assert taken == [make("k1", "p")]
    assert await store.key_ids("p", 10) == ["k0", "k2", "k1.a", "k1.b"]
    assert store.counts() == {"p": 4, "pending:x": 1}
    assert await store.seen(["k1", "k1.a", "k1.c"]) == {"k1", "k1.a", "k1.c"}


@pytest.mark.parametrize(
    ("replacement", "duplicate", "text"),
    [
        # The key being taken was stored before: it cannot come back as its own replacement.
        (["k1"], "k1", "key ID 'k1' was stored before"),
        (["fresh", "k2"], "k2", "key ID 'k2' was stored before"),
        (["gone"], "gone", "key ID 'gone' was stored before"),
        (["fresh", "fresh"], "fresh", "key ID 'fresh' is given twice"),
    ],
)
async def test_take_ids_with_a_duplicate_replacement_changes_nothing(
    store: KeyStore, replacement: list[str], duplicate: str, text: str
) -> None:
    await store.put([*make_many("p", 3), make("gone", "q")])
    await store.take("q", 1)
    before = store.counts()
    with pytest.raises(DuplicateKey) as info:
        await store.take_ids("p", ["k1", "k0"], replace_with=[make(i, "p") for i in replacement])
    assert (info.value.key_id, str(info.value)) == (duplicate, text)
    assert store.counts() == before == {"p": 3}
    assert await store.key_ids("p", 10) == ["k0", "k1", "k2"]
    assert await store.seen(["fresh"]) == set()


async def test_peek_ids_shows_named_keys_and_leaves_them(store: KeyStore) -> None:
    await store.put(make_many("p", 3))
    assert await store.peek_ids("p", ["k2", "k0"]) == [make("k2", "p"), make("k0", "p")]
    with pytest.raises(UnknownKeys) as info:
        await store.peek_ids("p", ["k1", "k1", "nope"])
    assert info.value.missing == ["k1", "nope"]
    assert await store.key_ids("p", 10) == ["k0", "k1", "k2"]
    assert store.counts() == {"p": 3}


async def test_take_ids_and_oldest_takes_both_in_one_transaction(store: KeyStore) -> None:
    await store.put([*make_many("in", 3), *make_many("out", 4, prefix="o")])
    received, onward = await store.take_ids_and_oldest("in", ["k2", "k0"], "out", 3)
    assert received == [make("k2", "in"), make("k0", "in")]
    assert onward == [make(f"o{i}", "out") for i in range(3)]
    assert store.counts() == {"in": 1, "out": 1}
    # one pool for both: the oldest are those left once the named keys are taken
    await store.put(make_many("both", 4, prefix="b"))
    received, onward = await store.take_ids_and_oldest("both", ["b0"], "both", 2)
    assert (ids(received), ids(onward)) == (["b0"], ["b1", "b2"])
    assert await store.key_ids("both", 10) == ["b3"]


async def test_take_ids_and_oldest_from_one_pool_counts_the_named_keys_as_taken(
    store: KeyStore,
) -> None:
    """The oldest are counted among the keys left once the named ones are gone: asking for more
    takes nothing, rather than fewer units than asked or the named keys alone."""
    await store.put(make_many("both", 4, prefix="b"))
    with pytest.raises(InsufficientKeys, match=r"^pool 'both' holds 2 keys, 3 requested$"):
        await store.take_ids_and_oldest("both", ["b3", "b0"], "both", 3)
    assert await store.key_ids("both", 10) == ["b0", "b1", "b2", "b3"]
    assert store.counts() == {"both": 4}


@pytest.mark.parametrize(
    ("named", "count", "error"),
    [
        (["k0", "nope"], 1, UnknownKeys),
        (["k0"], 3, InsufficientKeys),
        (["k0", "k0"], 9, UnknownKeys),
    ],
)
async def test_take_ids_and_oldest_takes_neither_when_one_fails(
    store: KeyStore, named: list[str], count: int, error: type[Exception]
) -> None:
    await store.put([*make_many("in", 2), *make_many("out", 2, prefix="o")])
    with pytest.raises(error):
        await store.take_ids_and_oldest("in", named, "out", count)
    assert store.counts() == {"in": 2, "out": 2}
    assert await store.key_ids("in", 10) == ["k0", "k1"]
    assert await store.key_ids("out", 10) == ["o0", "o1"]


async def test_take_present_skips_what_the_pool_does_not_hold(store: KeyStore) -> None:
    await store.put([*make_many("qkd:km-b", 4), make("elsewhere", "qkd:km-c")])
    taken = await store.take_present("qkd:km-b", ["k2", "nope", "elsewhere", "k0", "k2"])
    assert taken == [make("k2", "qkd:km-b"), make("k0", "qkd:km-b")]
    assert await store.key_ids("qkd:km-b", 10) == ["k1", "k3"]
    assert store.counts() == {"qkd:km-b": 2, "qkd:km-c": 1}
    assert await store.take_present("qkd:km-b", ["k2", "nope"]) == []
    assert await store.take_present("empty", ["k1"]) == []
    assert store.counts() == {"qkd:km-b": 2, "qkd:km-c": 1}


def halves(key: StoredKey) -> list[StoredKey]:
    """The two halves of a key, each to its own pool."""
    half = len(key.key) // 2
    return [
        StoredKey(f"{key.key_id}.{n}", f"half:{n}", part, {"of": key.key_id})
        for n, part in enumerate((key.key[:half], key.key[half:]))
    ]


async def test_take_present_can_split_what_it_takes_at_once(store: KeyStore) -> None:
    await store.put(make_many("qkd:km-b", 3))
    taken = await store.take_present("qkd:km-b", ["k2", "nope", "k0"], split=halves)
    assert ids(taken) == ["k2", "k0"]
    assert store.counts() == {"qkd:km-b": 1, "half:0": 2, "half:1": 2}
    assert await store.take("half:1", 2) == [halves(make(k, "qkd:km-b"))[1] for k in ("k2", "k0")]
    assert await store.take_present("qkd:km-b", ["k2"], split=halves) == []
    with pytest.raises(DuplicateKey, match=r"'k2\.0' was stored before"):  # nothing changes
        await store.take_present("qkd:km-b", ["k1"], split=lambda _: [make("k2.0", "half:0")])
    assert store.counts() == {"qkd:km-b": 1, "half:0": 2}
    assert ids(await store.take("qkd:km-b", 1)) == ["k1"]


# --- move, discard, counts ------------------------------------------------------------------


async def test_move_keeps_each_keys_place_in_the_order(store: KeyStore) -> None:
    await store.put([make("d0", "dst"), make("s0", "src"), make("d1", "dst"), make("s1", "src")])
    assert await store.move("src", "dst") == 2
    assert store.counts() == {"dst": 4}
    assert store.count("src") == 0
    assert await store.key_ids("dst", 10) == ["d0", "s0", "d1", "s1"]
    taken = await store.take("dst", 2)
    assert taken == [make("d0", "dst"), make("s0", "dst")]  # a moved key belongs to its new pool
    assert await store.move("nothing", "dst") == 0
    assert await store.move("dst", "dst") == 2
    assert store.counts() == {"dst": 2}


async def test_discard_and_discard_prefix(store: KeyStore) -> None:
    await store.put(
        [
            *make_many("pending:1", 2, "a"),
            *make_many("pending:2", 3, "b"),
            *make_many("pend", 1, "c"),
            *make_many("p%_", 1, "d"),
            *make_many("qkd:km-b", 2, "e"),
        ]
    )
    assert await store.discard("qkd:km-b") == 2
    assert await store.discard("qkd:km-b") == 0
    assert store.counts() == {"pending:1": 2, "pending:2": 3, "pend": 1, "p%_": 1}
    assert await store.discard_prefix("pending:") == 5
    assert store.counts() == {"pend": 1, "p%_": 1}
    assert await store.discard_prefix("p%") == 1  # not a LIKE pattern
    assert await store.discard_prefix("pending:") == 0
    assert store.counts() == {"pend": 1}
    # Discarded keys were stored: their IDs stay refused.
    with pytest.raises(DuplicateKey):
        await store.put([make("e0", "qkd:km-b")])
    assert await store.discard_prefix("") == 1
    assert store.counts() == {}


async def test_count_and_counts_follow_every_operation(store: KeyStore) -> None:
    assert (store.count("a:1"), store.counts()) == (0, {})
    await store.put([*make_many("a:1", 4, "x"), *make_many("a:2", 2, "y"), make("z", "b:1")])
    assert store.counts() == {"a:1": 4, "a:2": 2, "b:1": 1}
    assert store.counts("a:") == {"a:1": 4, "a:2": 2}
    assert store.counts("c") == {}
    await store.take("a:1", 1)
    assert store.count("a:1") == 3
    await store.take_ids("a:1", ["x1"], replace_with=[make("x1.0", "a:2"), make("x1.1", "a:2")])
    assert store.counts() == {"a:1": 2, "a:2": 4, "b:1": 1}
    await store.move("a:2", "b:1")
    assert store.counts() == {"a:1": 2, "b:1": 5}
    await store.take("a:1", 2)
    assert store.counts() == {"b:1": 5}  # an emptied pool is not listed
    await store.discard_prefix("b")
    assert store.counts() == {}


async def test_a_key_id_is_never_stored_twice(store: KeyStore) -> None:
    await store.put(make_many("p", 2))
    with pytest.raises(DuplicateKey, match=r"^key ID 'k1' was stored before$") as info:
        await store.put([make("new", "p"), make("k1", "other")])
    assert info.value.key_id == "k1"
    await store.take("p", 2)
    # Taken long ago: still refused, and nothing of the batch is added.
    with pytest.raises(DuplicateKey, match="'k0' was stored before"):
        await store.put([make("new", "p"), make("k0", "p")])
    with pytest.raises(DuplicateKey, match="'twice' is given twice"):
        await store.put([make("twice", "p"), make("twice", "q")])
    assert store.counts() == {}
    assert await store.seen(["new", "twice", "k0", "k1", "never"]) == {"k0", "k1"}
    await store.put([make("new", "p")])
    assert store.count("p") == 1


async def test_batches_larger_than_one_statement_keep_every_key_and_its_order(
    store: KeyStore,
) -> None:
    """A SQLite store writes a batch as statements of up to 512 rows; 1,211 keys (512 + 512 +
    128 + 32 + 8 + 8 + 8 + 2 + 1) go whole, in order, and a duplicate in the last statement
    undoes the statements before it."""
    keys = make_many("p", 1211)
    with pytest.raises(DuplicateKey, match="'k0' is given twice"):
        await store.put([*keys, make("k0", "q")])
    assert store.counts() == {}
    await store.put(keys)
    assert await store.key_ids("p", 1211) == ids(keys)
    named = ids(keys[::-2])  # 606 keys, last first
    assert ids(await store.peek_ids("p", named)) == named
    assert await store.move("p", "q", key_ids=named) == 606
    assert ids(await store.take_present("q", [*named, "absent"])) == named
    assert ids(await store.take_ids("p", ids(keys[1::2])[:600])) == ids(keys[1::2])[:600]
    assert ids(await store.take("p", 5)) == ids(keys[1201::2])
    assert store.counts() == {}
    assert len(await store.seen(ids(keys))) == 1211


async def test_concurrent_takers_get_disjoint_keys(store: KeyStore) -> None:
    await store.put(make_many("p", 100))
    results: list[list[StoredKey]] = []

    async def taker() -> None:
        results.append(await store.take("p", 5))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(taker)
    taken = [key_id for batch in results for key_id in ids(batch)]
    assert len(results) == 20
    assert sorted(taken) == sorted(f"k{i}" for i in range(100))
    assert store.counts() == {}
    for batch in results:  # each batch is a run of consecutive keys, oldest first
        numbers = [int(key_id[1:]) for key_id in ids(batch)]
        assert numbers == list(range(numbers[0], numbers[0] + 5))


async def test_a_take_cancelled_once_started_still_hands_its_keys_over(store: KeyStore) -> None:
    await store.put(make_many("p", 10))
    results: list[list[StoredKey]] = []

    async def taker() -> None:
        results.append(await store.take("p", 4))
        await trio.sleep_forever()  # the cancellation lands here, after the keys arrived

    async with trio.open_nursery() as nursery:
        nursery.start_soon(taker)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [ids(batch) for batch in results] == [["k0", "k1", "k2", "k3"]]
    assert store.count("p") == 6
    assert await store.key_ids("p", 10) == [f"k{i}" for i in range(4, 10)]


# --- closing, secrets -----------------------------------------------------------------------


async def test_a_closed_store_refuses_every_use(store: KeyStore) -> None:
    await store.put(make_many("p", 1))
    await store.aclose()
    await store.aclose()  # harmless
    calls: list[Callable[[], Any]] = [
        lambda: store.put([make("x", "p")]),
        lambda: store.take("p", 1),
        lambda: store.take_ids("p", ["k0"]),
        lambda: store.take_ids_and_oldest("p", ["k0"], "p", 0),
        lambda: store.peek_ids("p", ["k0"]),
        lambda: store.take_present("p", ["k0"]),
        lambda: store.move("p", "q"),
        lambda: store.discard("p"),
        lambda: store.discard_prefix(""),
        lambda: store.key_ids("p", 1),
        lambda: store.seen(["k0"]),
    ]
    for call in calls:
        with pytest.raises(KeyStoreError, match="closed"):
            await call()
    with pytest.raises(KeyStoreError, match="closed"):
        store.count("p")
    with pytest.raises(KeyStoreError, match="closed"):
        store.counts()


async def test_a_store_is_closed_at_the_end_of_a_cancelled_block(store: KeyStore) -> None:
    with trio.CancelScope() as scope:
        async with store:
            scope.cancel()
            await trio.lowlevel.checkpoint()  # the cancellation lands here, inside the block
    assert scope.cancelled_caught
    with pytest.raises(KeyStoreError, match="closed"):
        store.count("p")


async def test_a_cancelled_close_of_a_sqlite_store_still_closes_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = await SQLiteKeyStore.open(path)
    await store.put(make_many("p", 1))
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.aclose()
    with pytest.raises(KeyStoreError, match="closed"):
        store.count("p")
    async with await SQLiteKeyStore.open(path) as reopened:  # the file's lock was let go
        assert reopened.count("p") == 1


async def test_key_bytes_appear_in_no_repr_and_no_error(store: KeyStore) -> None:
    key = make("k0", "p")
    assert "TOPSECRET" not in repr(key)
    assert repr(key).startswith("StoredKey(key_id='k0', pool='p', metadata=")
    await store.put([key, make("k1", "p")])
    assert_no_secret(repr(store))
    failures: list[QkdnError] = []
    for attempt in (
        lambda: store.put([key]),
        lambda: store.take("p", 3),
        lambda: store.take_ids("p", ["k0", "nope"]),
        lambda: store.take_ids("p", ["k0"], replace_with=[key]),
    ):
        with pytest.raises(KeyStoreError) as info:
            await attempt()
        failures.append(info.value)
    await store.aclose()
    with pytest.raises(KeyStoreError) as closed:
        await store.take("p", 1)
    failures.append(closed.value)
    for error in failures:
        for text in (str(error), repr(error), error.response_text):
            assert_no_secret(text)


@pytest.mark.parametrize(
    ("key", "error"),
    [
        (StoredKey("k", "p", "not bytes"), "the key of a StoredKey must be bytes, not str"),  # type: ignore[arg-type]
        (StoredKey(1, "p", b"\x01"), "the key_id of a StoredKey must be str, not int"),  # type: ignore[arg-type]
        (StoredKey({}, "p", b"\x01"), "the key_id of a StoredKey must be str, not dict"),  # type: ignore[arg-type]
        (StoredKey("k", None, b"\x01"), "the pool of a StoredKey must be str, not NoneType"),  # type: ignore[arg-type]
        (StoredKey("k", "p", b"\x01", ["x"]), "the metadata of a StoredKey must be dict, not list"),  # type: ignore[arg-type]
        (("k", "p", b"\x01"), "expected a StoredKey, got tuple"),
    ],
)
async def test_a_key_of_the_wrong_types_is_refused_and_nothing_stored(
    store: KeyStore, key: Any, error: str
) -> None:
    with pytest.raises(TypeError, match=f"^{re.escape(error)}$"):
        await store.put([make("good", "p"), key])
    assert store.counts() == {}
    assert await store.seen(["good", "k"]) == set()


def test_unknown_keys_quotes_long_ids_shortened() -> None:
    error = UnknownKeys("p", ["x" * 100])
    assert "... (100 characters)" in str(error)
    assert len(str(error)) < 120


# --- SQLite: restarts and bad files ---------------------------------------------------------


async def test_a_restarted_store_sees_exactly_the_keys_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    async with await SQLiteKeyStore.open(path) as store:
        await store.put([*make_many("qkd:km-b", 5), *make_many("app:a:b", 2, "a")])
        await store.take("qkd:km-b", 2)
        await store.take_ids("app:a:b", ["a1"], replace_with=[make("a1.0", "app:a:b")])
        await store.move("app:a:b", "link:km-b:out")
        before = store.counts()
    assert repr(store).endswith("closed>")
    async with await SQLiteKeyStore.open(path) as store:
        assert store.path == path
        assert store.counts() == before == {"qkd:km-b": 3, "link:km-b:out": 2}
        assert await store.key_ids("link:km-b:out", 10) == ["a0", "a1.0"]
        with pytest.raises(DuplicateKey, match="'k0' was stored before"):
            await store.put([make("k0", "qkd:km-b")])
        assert await store.seen(["k0", "a1", "zz"]) == {"k0", "a1"}
        assert ids(await store.take("qkd:km-b", 3)) == ["k2", "k3", "k4"]
        await store.put([make("k5", "qkd:km-b")])
    async with await SQLiteKeyStore.open(path) as store:
        assert store.counts() == {"qkd:km-b": 1, "link:km-b:out": 2}
        assert ids(await store.take("qkd:km-b", 1)) == ["k5"]  # new keys come after old ones


@pytest.mark.parametrize(
    "garbage",
    [b"this is not a database, " * 200, b"SQLite format 3\x00" + b"\xff" * 4000],
)
async def test_a_corrupt_file_gives_one_clear_error(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "keys.db"
    path.write_bytes(garbage)
    path.chmod(0o600)
    with pytest.raises(KeyStoreError) as info:
        await SQLiteKeyStore.open(path)
    text = str(info.value)
    assert str(path) in text
    assert "\n" not in text
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


async def test_a_store_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys.db"
    umask = os.umask(0)
    try:
        async with await SQLiteKeyStore.open(path) as store:
            await store.put(make_many("p", 3))
            files = sorted(path.parent.iterdir())
            # (exclusive locking: the WAL index is in memory, there is no -shm file)
            assert [file.name for file in files] == ["keys.db", "keys.db-wal", "keys.db.kek"]
            for file in files:
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("name", ["keys.db", "keys.db-wal"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o602])
async def test_a_store_other_users_may_read_or_write_is_refused(
    tmp_path: Path, name: str, mode: int
) -> None:
    path = tmp_path / "keys.db"
    async with await SQLiteKeyStore.open(path) as store:
        await store.put(make_many("p", 3))
    (tmp_path / "keys.db-wal").touch(mode=0o600)
    (tmp_path / name).chmod(mode)
    with pytest.raises(KeyStoreError) as info:
        await SQLiteKeyStore.open(path)
    whose = "it" if name == "keys.db" else f"its {name}"
    assert str(info.value) == (
        f"cannot open key store {str(path)!r}: other users may read or write {whose} "
        f"(mode {mode:04o}); make it owner-only: chmod 600 {tmp_path / name}"
    )
    (tmp_path / name).chmod(0o600)
    async with await SQLiteKeyStore.open(path) as store:
        assert store.count("p") == 3


async def test_a_shared_memory_file_others_may_read_is_refused_without_a_wal(
    tmp_path: Path,
) -> None:
    """Each of the three files is checked, whichever of the others is missing."""
    path = tmp_path / "keys.db"
    async with await SQLiteKeyStore.open(path) as store:
        await store.put(make_many("p", 1))
    assert not (tmp_path / "keys.db-wal").exists()  # closing the store removed it
    (tmp_path / "keys.db-shm").touch(mode=0o644)
    (tmp_path / "keys.db-shm").chmod(0o644)
    with pytest.raises(KeyStoreError, match=r"may read or write its keys\.db-shm \(mode 0644\)"):
        await SQLiteKeyStore.open(path)


async def test_a_new_store_file_is_owner_only_from_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created 0600, not created with the umask's mode and narrowed after: a reader that
    opened it in between would keep its descriptor, and read the keys later. The mode is read
    from the descriptor just before the store sets it (the real ``os.fchmod`` still runs)."""
    seen: list[int] = []
    fchmod = os.fchmod

    def watched(fd: int, mode: int) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", watched)
    umask = os.umask(0)
    try:
        async with await SQLiteKeyStore.open(tmp_path / "keys.db"):
            pass
    finally:
        os.umask(umask)
    assert seen == [0o600, 0o600]  # the KEK file, then the database


async def test_a_store_serves_from_a_worker_thread_other_than_the_one_that_opened_it(
    tmp_path: Path,
) -> None:
    """The file is opened in one of trio's worker threads; while that thread is busy with other
    work, the store's next transaction runs in another."""
    released = threading.Event()
    async with await SQLiteKeyStore.open(tmp_path / "keys.db") as store:
        async with trio.open_nursery() as nursery:
            # the idle thread that opened the store is the next one trio hands work to
            nursery.start_soon(trio.to_thread.run_sync, released.wait, 10)
            await trio.testing.wait_all_tasks_blocked()
            try:
                await store.put(make_many("p", 2))
            finally:
                released.set()
        assert ids(await store.take("p", 2)) == ["k0", "k1"]


async def test_a_path_that_is_a_directory_gives_a_key_store_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    path.mkdir(mode=0o700)
    with pytest.raises(KeyStoreError) as info:
        await SQLiteKeyStore.open(path)
    assert str(info.value) == f"cannot open key store {str(path)!r}: unable to open database file"


async def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    path.chmod(0o600)
    with pytest.raises(KeyStoreError, match="schema version 99 is newer") as info:
        await SQLiteKeyStore.open(path)
    assert str(path) in str(info.value)


async def test_a_directory_that_cannot_be_made_gives_a_key_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "keys.db"
    with pytest.raises(KeyStoreError, match="cannot open key store") as info:
        await SQLiteKeyStore.open(path)
    assert str(path) in str(info.value)


async def test_a_file_in_use_cannot_be_opened_twice(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    async with await SQLiteKeyStore.open(path) as store:
        await store.put(make_many("p", 1))
        with pytest.raises(KeyStoreError, match="locked") as info:
            await SQLiteKeyStore.open(path)
        assert str(path) in str(info.value)
        assert store.count("p") == 1
    async with await SQLiteKeyStore.open(path) as store:
        assert store.count("p") == 1


async def test_a_file_of_schema_version_1_is_brought_to_version_3(tmp_path: Path) -> None:
    """A store written by version 1 (a UNIQUE index of key IDs in ``keys``, IDs alone in
    ``ever``) opens with its keys in their order, its counters and the IDs it stored before,
    its keys now sealed."""
    path = tmp_path / "keys.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE keys (seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT UNIQUE NOT NULL,"
        " pool TEXT NOT NULL, key BLOB NOT NULL, metadata TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX keys_pool_seq ON keys (pool, seq)")
    db.execute("CREATE TABLE ever (key_id TEXT PRIMARY KEY)")
    db.execute("PRAGMA user_version=1")
    for key in make_many("p", 6):
        db.execute("INSERT INTO ever (key_id) VALUES (?)", (key.key_id,))
        db.execute(
            "INSERT INTO keys (key_id, pool, key, metadata) VALUES (?, ?, ?, ?)",
            (key.key_id, key.pool, key.key, f'{{"id": "{key.key_id}", "bits": [1, 2]}}'),
        )
    db.execute("DELETE FROM keys WHERE key_id IN ('k0', 'k5')")  # taken: seqs 1 and 6
    db.close()
    path.chmod(0o600)
    async with await SQLiteKeyStore.open(path) as store:
        assert store.counts() == {"p": 4}
        for taken in ("k0", "k5", "k1"):
            with pytest.raises(DuplicateKey, match="was stored before"):
                await store.put([make(taken, "p")])
        assert await store.seen(["k0", "k3", "k9"]) == {"k0", "k3"}
        assert await store.pools_of(["k0", "k3"]) == {"k3": "p"}
        with pytest.raises(UnknownKeys):
            await store.take_ids("p", ["k5"])
        await store.put([make("k6", "p")])
        assert await store.take_ids("p", ["k3"]) == [make("k3", "p")]
        assert await store.take("p", 4) == [make(f"k{i}", "p") for i in (1, 2, 4, 6)]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (3,)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "keys" not in tables
    assert "ever" not in tables
    db.close()
    assert make("k2", "p").key not in path.read_bytes() + wal(path).read_bytes()


@attrs.define
class HeldTransactions:
    """Holds each transaction of a SQLite store in its worker thread until :meth:`release`
    lets it go on; ``batches`` lists how many operations each transaction ran, ``outcomes`` what
    the operations run by :meth:`keep` returned or raised."""

    permits: threading.Semaphore = attrs.Factory(lambda: threading.Semaphore(0))
    batches: list[int] = attrs.Factory(list)
    changed: trio.Event = attrs.Factory(trio.Event)
    outcomes: dict[str, Any] = attrs.Factory(dict)

    def entered(self, operations: int) -> None:
        self.batches.append(operations)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, transactions: int) -> None:
        """Return once ``transactions`` transactions started (each is held)."""
        with trio.fail_after(10):  # a guard against a hang, never a wait
            while len(self.batches) < transactions:
                await self.changed.wait()

    def release(self) -> None:
        self.permits.release()

    async def keep(self, name: str, call: Callable[[], Awaitable[Any]]) -> None:
        """Await ``call`` and keep in :attr:`outcomes`, under ``name``, what it returned or the
        :class:`KeyStoreError` it raised."""
        try:
            self.outcomes[name] = await call()
        except KeyStoreError as error:
            self.outcomes[name] = error


@pytest.fixture
async def held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SQLiteKeyStore, HeldTransactions]]:
    hold = HeldTransactions()
    run = SQLiteKeyStore._transaction_sync

    def held_transaction(self: SQLiteKeyStore, batch: Any) -> Any:
        trio.from_thread.run_sync(hold.entered, len(batch))
        assert hold.permits.acquire(timeout=10)  # a guard against a hang, never a wait
        return run(self, batch)

    async with await SQLiteKeyStore.open(tmp_path / "keys.db") as store:
        await store.put(make_many("p", 6))
        monkeypatch.setattr(SQLiteKeyStore, "_transaction_sync", held_transaction)
        yield store, hold
        monkeypatch.undo()


async def test_operations_that_wait_share_one_transaction(
    held: tuple[SQLiteKeyStore, HeldTransactions], tmp_path: Path
) -> None:
    """Group commit: what arrives while a transaction runs goes, in the order it arrived, into
    the next one; an operation that fails there undoes only itself."""
    store, hold = held
    outcomes, run = hold.outcomes, hold.keep

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "first", lambda: store.take("p", 1))
        await hold.wait_for(1)
        for name, call in [
            ("put", lambda: store.put([make("n0", "q")])),
            ("twice", lambda: store.put([make("n1", "q"), make("k0", "q")])),
            ("take", lambda: store.take("p", 2)),
            ("short", lambda: store.take("p", 9)),
            ("move", lambda: store.move("q", "r")),
        ]:
            nursery.start_soon(run, name, call)
            await trio.testing.wait_all_tasks_blocked()
        hold.release()
        hold.release()
    assert hold.batches == [1, 5]
    assert ids(outcomes["first"]) == ["k0"]
    assert outcomes["put"] is None
    assert isinstance(outcomes["twice"], DuplicateKey)
    assert ids(outcomes["take"]) == ["k1", "k2"]
    assert isinstance(outcomes["short"], InsufficientKeys)
    assert outcomes["move"] == 1
    assert store.counts() == {"p": 3, "r": 1}
    hold.release()
    assert await store.seen(["n0", "n1"]) == {"n0"}
    await store.aclose()
    async with await SQLiteKeyStore.open(tmp_path / "keys.db") as reopened:
        assert reopened.counts() == {"p": 3, "r": 1}


@pytest.mark.parametrize("others", [1, 3])
async def test_an_operation_failing_in_a_shared_transaction_undoes_its_own_changes(
    held: tuple[SQLiteKeyStore, HeldTransactions], tmp_path: Path, others: int
) -> None:
    """``take_ids_and_oldest`` deletes the named keys before it finds the other pool short: in a
    transaction shared with operations that succeed (which commit it), those keys come back."""
    store, hold = held
    outcomes, run = hold.outcomes, hold.keep

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "first", lambda: store.take("p", 1))
        await hold.wait_for(1)
        nursery.start_soon(run, "short", lambda: store.take_ids_and_oldest("p", ["k5"], "q", 1))
        await trio.testing.wait_all_tasks_blocked()
        for n in range(others):
            nursery.start_soon(run, f"put{n}", lambda n=n: store.put([make(f"n{n}", "r")]))
            await trio.testing.wait_all_tasks_blocked()
        hold.release()
        hold.release()
    assert hold.batches == [1, 1 + others]
    assert isinstance(outcomes["short"], InsufficientKeys)
    assert store.counts() == {"p": 5, "r": others}
    hold.release()
    assert await store.key_ids("p", 10) == ["k1", "k2", "k3", "k4", "k5"]
    await store.aclose()
    async with await SQLiteKeyStore.open(tmp_path / "keys.db") as reopened:
        assert reopened.counts() == {"p": 5, "r": others}


async def test_an_operation_queued_behind_a_close_is_refused(
    held: tuple[SQLiteKeyStore, HeldTransactions],
) -> None:
    store, hold = held
    outcomes, run = hold.outcomes, hold.keep

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "first", lambda: store.take("p", 1))
        await hold.wait_for(1)
        nursery.start_soon(store.aclose)  # waits for the transaction in progress
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run, "late", lambda: store.take("p", 1))  # queued after the close
        await trio.testing.wait_all_tasks_blocked()
        hold.release()
    assert ids(outcomes["first"]) == ["k0"]
    assert isinstance(outcomes["late"], KeyStoreError)
    assert str(outcomes["late"]) == f"the key store {str(store.path)!r} is closed"
    assert hold.batches == [1]


async def test_cancelled_while_it_waits_an_operation_does_nothing(
    held: tuple[SQLiteKeyStore, HeldTransactions],
) -> None:
    store, hold = held
    taken: list[list[StoredKey]] = []

    async def take(count: int, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            taken.append(await store.take("p", count))
            await trio.sleep_forever()  # a cancellation lands here, after the keys arrived

    async with trio.open_nursery() as nursery:
        running = await nursery.start(take, 1)
        await hold.wait_for(1)
        waiting = await nursery.start(take, 2)
        await trio.testing.wait_all_tasks_blocked()
        waiting.cancel()  # still queued: it leaves the queue
        await trio.testing.wait_all_tasks_blocked()
        running.cancel()  # in its transaction: it ends and hands its keys over
        hold.release()
    assert hold.batches == [1]
    assert [ids(batch) for batch in taken] == [["k0"]]
    assert store.count("p") == 5


async def test_cancelled_in_a_shared_transaction_an_operation_still_gets_its_keys(
    held: tuple[SQLiteKeyStore, HeldTransactions],
) -> None:
    store, hold = held
    taken: list[list[str]] = []

    async def take(count: int, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            taken.append(ids(await store.take("p", count)))
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(take, 1)
        await hold.wait_for(1)
        second = await nursery.start(take, 2)
        third = await nursery.start(take, 1)
        await trio.testing.wait_all_tasks_blocked()
        hold.release()  # the first transaction ends; the next, of both others, is held
        await hold.wait_for(2)
        second.cancel()
        third.cancel()
        hold.release()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert hold.batches == [1, 2]
    assert sorted(taken) == [["k0"], ["k1", "k2"], ["k3"]]
    assert store.count("p") == 2


# --- both stores against a model ------------------------------------------------------------

POOLS = ["a:x", "a:y", "b:x"]
PREFIXES = ["", "a:", "a:x", "b", "c"]
_pools = st.sampled_from(POOLS)
_ids = st.sampled_from([f"k{i}" for i in range(24)])
_new_keys = st.lists(st.tuples(_ids, _pools), max_size=4)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _new_keys),
        st.tuples(st.just("take"), _pools, st.integers(0, 4)),
        st.tuples(st.just("take_ids"), _pools, st.lists(_ids, max_size=3), _new_keys),
        st.tuples(st.just("take_present"), _pools, st.lists(_ids, max_size=4)),
        st.tuples(
            st.just("take_ids_and_oldest"),
            _pools,
            st.lists(_ids, max_size=3),
            _pools,
            st.integers(0, 4),
        ),
        st.tuples(st.just("peek_ids"), _pools, st.lists(_ids, max_size=3)),
        st.tuples(st.just("move"), _pools, _pools),
        st.tuples(st.just("discard"), _pools),
        st.tuples(st.just("discard_prefix"), st.sampled_from(PREFIXES)),
        st.tuples(st.just("key_ids"), _pools, st.integers(0, 4)),
        st.tuples(st.just("seen"), st.lists(_ids, max_size=4)),
        st.tuples(st.just("reopen")),
    ),
    max_size=25,
)


@attrs.define
class Model:
    """The obvious key store: one list in insertion order and a set of every ID stored."""

    keys: list[StoredKey] = attrs.Factory(list)
    ever: set[str] = attrs.Factory(set)

    def of(self, pool: str) -> list[StoredKey]:
        return [key for key in self.keys if key.pool == pool]

    def put(self, keys: list[StoredKey]) -> None:
        given: list[str] = []
        for key in keys:
            if key.key_id in given:
                raise DuplicateKey(key.key_id, twice=True)
            if key.key_id in self.ever:
                raise DuplicateKey(key.key_id)
            given.append(key.key_id)
        self.keys += keys
        self.ever |= set(given)

    def take(self, pool: str, count: int) -> list[StoredKey]:
        if len(self.of(pool)) < count:
            raise InsufficientKeys(pool, count, len(self.of(pool)))
        taken = self.of(pool)[:count]
        self.keys = [key for key in self.keys if key not in taken]
        return taken

    def take_ids(self, pool: str, key_ids: list[str], replace: list[StoredKey]) -> list[StoredKey]:
        held = {key.key_id: key for key in self.of(pool)}
        missing: list[str] = []
        for n, key_id in enumerate(key_ids):
            if (key_id not in held or key_id in key_ids[:n]) and key_id not in missing:
                missing.append(key_id)
        if missing:
            raise UnknownKeys(pool, missing)
        kept = [key for key in self.keys if key.key_id not in key_ids]
        Model(list(kept), set(self.ever)).put(replace)  # raises before anything changes
        self.keys = kept
        self.put(replace)
        return [held[key_id] for key_id in key_ids]

    def take_ids_and_oldest(
        self, pool: str, key_ids: list[str], oldest_pool: str, count: int
    ) -> tuple[list[StoredKey], list[StoredKey]]:
        before = list(self.keys)
        received = self.take_ids(pool, key_ids, [])
        try:
            return received, self.take(oldest_pool, count)
        except InsufficientKeys:
            self.keys = before
            raise

    def peek_ids(self, pool: str, key_ids: list[str]) -> list[StoredKey]:
        before = list(self.keys)
        try:
            return self.take_ids(pool, key_ids, [])
        finally:
            self.keys = before

    def take_present(self, pool: str, key_ids: list[str]) -> list[StoredKey]:
        held = {key.key_id: key for key in self.of(pool)}
        taken = [held[key_id] for key_id in dict.fromkeys(key_ids) if key_id in held]
        self.keys = [key for key in self.keys if key not in taken]
        return taken

    def move(self, source: str, destination: str) -> int:
        moved = len(self.of(source))
        self.keys = [
            attrs.evolve(key, pool=destination) if key.pool == source else key for key in self.keys
        ]
        return moved

    def discard(self, pool: str) -> int:
        discarded = len(self.of(pool))
        self.keys = [key for key in self.keys if key.pool != pool]
        return discarded

    def discard_prefix(self, prefix: str) -> int:
        kept = [key for key in self.keys if not key.pool.startswith(prefix)]
        discarded = len(self.keys) - len(kept)
        self.keys = kept
        return discarded

    def counts(self) -> dict[str, int]:
        return {pool: n for pool in POOLS if (n := len(self.of(pool)))}


def steps(
    op: tuple[Any, ...], store: KeyStore, model: Model
) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Any]]:
    """The store's call and the model's call for one operation."""
    match op:
        case ("put", new):
            keys = [make(key_id, pool) for key_id, pool in new]
            return (lambda: store.put(keys)), (lambda: model.put(keys))
        case ("take", pool, count):
            return (lambda: store.take(pool, count)), (lambda: model.take(pool, count))
        case ("take_ids", pool, key_ids, new):
            replace = [make(key_id, into) for key_id, into in new]
            return (
                lambda: store.take_ids(pool, key_ids, replace_with=replace),
                lambda: model.take_ids(pool, key_ids, replace),
            )
        case ("take_ids_and_oldest", pool, key_ids, oldest_pool, count):
            return (
                lambda: store.take_ids_and_oldest(pool, key_ids, oldest_pool, count),
                lambda: model.take_ids_and_oldest(pool, key_ids, oldest_pool, count),
            )
        case ("peek_ids", pool, key_ids):
            return (
                lambda: store.peek_ids(pool, key_ids),
                lambda: model.peek_ids(pool, key_ids),
            )
        case ("take_present", pool, key_ids):
            return (
                lambda: store.take_present(pool, key_ids),
                lambda: model.take_present(pool, key_ids),
            )
        case ("move", source, destination):
            return (
                lambda: store.move(source, destination),
                lambda: model.move(source, destination),
            )
        case ("discard", pool):
            return (lambda: store.discard(pool)), (lambda: model.discard(pool))
        case ("discard_prefix", prefix):
            return (lambda: store.discard_prefix(prefix)), (lambda: model.discard_prefix(prefix))
        case ("key_ids", pool, limit):
            return (lambda: store.key_ids(pool, limit)), (lambda: ids(model.of(pool)[:limit]))
        case ("seen", key_ids):
            return (lambda: store.seen(key_ids)), (lambda: model.ever & set(key_ids))
    raise AssertionError(op)


async def check_against_model(kind: str, ops: list[tuple[Any, ...]], where: str) -> None:
    async def open_store() -> KeyStore:
        if kind == "memory":
            return MemoryKeyStore()
        if kind == "postgres":
            return await PostgresKeyStore.open(where, kek=KEK)
        return await SQLiteKeyStore.open(Path(where) / "keys.db")

    store, model = await open_store(), Model()
    for op in ops:
        if op == ("reopen",):  # a restarted KM: the store must hold exactly the model's state
            if kind != "memory":
                await store.aclose()
                store = await open_store()
            continue
        on_store, on_model = steps(op, store, model)
        failure: KeyStoreError | None = None
        try:
            expected = on_model()
        except KeyStoreError as error:
            failure = error
        if failure is None:
            assert await on_store() == expected, op
        else:
            with pytest.raises(type(failure), match=f"^{re.escape(str(failure))}$"):
                await on_store()
        assert store.counts() == model.counts(), op
        assert [store.count(pool) for pool in POOLS] == [len(model.of(pool)) for pool in POOLS]
    for pool in POOLS:
        assert await store.key_ids(pool, 100) == ids(model.of(pool))
    await store.aclose()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@settings(max_examples=100, deadline=None)
@given(ops=operations)
def test_stores_behave_like_the_model(kind: str, ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        trio.run(check_against_model, kind, ops, directory)


@pytest.fixture(scope="module")
def model_database(postgres_server: PostgresServer) -> Iterator[str]:
    """One database for every example (making one each takes longer than the example)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.start()
    postgres_server.drop_database(url)


@settings(max_examples=100, deadline=None)
@given(ops=operations)
def test_a_postgres_store_behaves_like_the_model(
    model_database: str, ops: list[tuple[Any, ...]]
) -> None:
    with psycopg.connect(model_database, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS batches, gone, kek_check, schema_version")
    trio.run(check_against_model, "postgres", ops, model_database)
