"""The key store's rows of batches, its sealing at rest, its window of refused key IDs and
expiry (the behaviour every KeyStore shares is in test_keystore.py)."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import hypothesis
import pytest
import trio
from hypothesis import strategies as st

from qkdn_sdk.roles.keystore import (
    DuplicateKey,
    InsufficientKeys,
    KeyStore,
    KeyStoreError,
    MemoryKeyStore,
    SQLiteKeyStore,
    StoredKey,
    UnknownKeys,
    _sql,
    _threaded,
    load_kek,
)
from qkdn_sdk.roles.km.keys import fresh_keys, link_units
from tests.test_keystore import STORES, open_store

KEK = bytes(range(32))


def batch(pool: str, number: int, size: int = 256) -> list[StoredKey]:
    key_ids, keys = fresh_keys(number, size)
    metadata = {"n": number}
    return [
        StoredKey(key_id, pool, key, metadata) for key_id, key in zip(key_ids, keys, strict=True)
    ]


def rows(path: Path) -> list[tuple[str, int]]:
    """``(pool, keys held)`` of each row of a closed store file, in order."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT pool, n FROM batches ORDER BY seq").fetchall()
    finally:
        db.close()


def forms(key: bytes) -> list[bytes]:
    """The encodings a key's bytes could be found in."""
    return [
        key,
        key.hex().encode(),
        key.hex().upper().encode(),
        base64.b64encode(key),
        base64.urlsafe_b64encode(key),
    ]


def readable(keys: list[bytes], directory: Path) -> list[bytes]:
    """Those of ``keys`` found, in any of :func:`forms`, in any file under ``directory``."""
    content = b"".join(path.read_bytes() for path in directory.rglob("*") if path.is_file())
    return [key for key in keys if any(form in content for form in forms(key))]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    async with open_store(request, tmp_path, KEK) as opened:
        yield opened


# --- rows -------------------------------------------------------------------------------------


def test_a_key_id_splits_into_stem_and_index_and_back() -> None:
    assert _sql.split_id("0190c6a4-1f2e-7abc-8def-0123456789ab") == (
        "0190c6a4-1f2e-7abc-8def-01234567",
        0x89AB,
    )
    assert _sql.split_id("key-7") == ("key-7", -1)
    assert _sql.split_id("ABCD") == ("ABCD", -1)  # upper case: not an index, "abcd" is
    assert _sql.split_id("abcd") == ("", 0xABCD)


@hypothesis.given(st.text(max_size=40))
def test_split_id_round_trips_every_id(key_id: str) -> None:
    assert _sql.join_id(*_sql.split_id(key_id)) == key_id


async def test_a_batch_of_keys_is_one_row_and_a_qkd_keys_units_two(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    async with await SQLiteKeyStore.open(path, kek=KEK) as store:
        await store.put(batch("app:alice:bob", 128))
        qkd_key = StoredKey("0190c6a4-1f2e-7abc-8def-012345670000", "qkd:km-b", os.urandom(512))
        await store.put([qkd_key])
        await store.take_present(
            "qkd:km-b", [qkd_key.key_id], split=lambda key: link_units("km-b", True, key)
        )
        assert store.counts("link:") == {"link:km-b:out": 8, "link:km-b:in": 8}
    assert sorted(rows(path)) == [("app:alice:bob", 128), ("link:km-b:in", 8), ("link:km-b:out", 8)]


async def test_spending_part_of_a_row_keeps_the_rest_under_its_ids(store: KeyStore) -> None:
    keys = batch("p", 10)
    await store.put(keys)
    assert await store.take("p", 3) == keys[:3]
    assert await store.take_ids("p", [keys[7].key_id, keys[4].key_id]) == [keys[7], keys[4]]
    assert await store.take_present("p", [keys[7].key_id, keys[5].key_id]) == [keys[5]]
    assert await store.key_ids("p", 10) == [keys[i].key_id for i in (3, 6, 8, 9)]
    assert await store.peek_ids("p", [keys[9].key_id]) == [keys[9]]
    assert store.count("p") == 4
    with pytest.raises(DuplicateKey, match="was stored before"):
        await store.put([keys[4]])  # spent from a row that is still there
    assert await store.take("p", 4) == [keys[i] for i in (3, 6, 8, 9)]
    with pytest.raises(DuplicateKey, match="was stored before"):
        await store.put([keys[9]])  # the row is gone: its tombstone refuses it
    assert await store.seen([keys[0].key_id, keys[9].key_id, "other"]) == {
        keys[0].key_id,
        keys[9].key_id,
    }


async def test_a_moved_part_of_a_row_goes_after_the_destinations_keys(store: KeyStore) -> None:
    keys = batch("src", 6)
    held = batch("dst", 2)
    await store.put(keys + held)
    assert await store.move("src", "dst", key_ids=[keys[4].key_id, keys[1].key_id]) == 2
    assert await store.key_ids("dst", 10) == [
        k.key_id for k in (held[0], held[1], keys[1], keys[4])
    ]
    assert await store.take("src", 4) == [attrs.evolve(keys[i]) for i in (0, 2, 3, 5)]
    taken = await store.take("dst", 4)
    assert [key.pool for key in taken] == ["dst"] * 4
    assert [key.key for key in taken] == [k.key for k in (held[0], held[1], keys[1], keys[4])]


async def test_deliver_moves_keys_once_and_hands_them_out_again(store: KeyStore) -> None:
    keys = batch("app:a:b", 6)
    await store.put(keys)
    first = await store.deliver("app:a:b", "delivered:a:b", [keys[3].key_id, keys[1].key_id])
    assert [(key.key_id, key.key, key.pool) for key in first] == [
        (keys[i].key_id, keys[i].key, "app:a:b") for i in (3, 1)
    ]
    assert store.counts() == {"app:a:b": 4, "delivered:a:b": 2}
    again = await store.deliver("app:a:b", "delivered:a:b", [keys[1].key_id, keys[0].key_id])
    assert [(key.key, key.pool) for key in again] == [
        (keys[1].key, "delivered:a:b"),
        (keys[0].key, "app:a:b"),
    ]
    for refused in ([keys[2].key_id, "unknown"], [keys[2].key_id, keys[2].key_id]):
        with pytest.raises(UnknownKeys) as info:
            await store.deliver("app:a:b", "delivered:a:b", refused)
        assert info.value.pool == "app:a:b"
    with pytest.raises(UnknownKeys):  # another pair's pools hold none of them
        await store.deliver("app:c:b", "delivered:c:b", [keys[3].key_id])
    assert store.counts() == {"app:a:b": 3, "delivered:a:b": 3}
    assert await store.take("app:a:b", 3) == [keys[i] for i in (2, 4, 5)]


# --- a model of the store, against both ------------------------------------------------------

_POOLS = ("a", "b")
_STEMS = ("0190c6a4-1f2e-7abc-8def-01234567", "0190c6a4-1f2e-7abc-8def-89abcdef", "plain-")

operation = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(_POOLS),
        st.sampled_from(_STEMS),
        st.lists(st.integers(0, 40), min_size=1, max_size=12, unique=True).map(sorted),
    ),
    st.tuples(st.just("take"), st.sampled_from(_POOLS), st.integers(0, 8)),
    st.tuples(
        st.just("take_ids"), st.sampled_from(_POOLS), st.lists(st.integers(0, 200), max_size=6)
    ),
    st.tuples(
        st.just("take_present"), st.sampled_from(_POOLS), st.lists(st.integers(0, 200), max_size=6)
    ),
    st.tuples(st.just("move"), st.sampled_from(_POOLS), st.lists(st.integers(0, 200), max_size=6)),
    st.tuples(st.just("move_all"), st.sampled_from(_POOLS)),
    st.tuples(st.just("discard"), st.sampled_from(_POOLS)),
)


def key_id_of(stem: str, index: int) -> str:
    return f"{stem}{index:04x}" if stem != "plain-" else f"plain-{index}"


def secret(key_id: str) -> bytes:
    return key_id.encode().ljust(48, b"\x01")


@attrs.define
class Model:
    """What the store must hold: each pool's keys by ID, oldest first, and the IDs ever stored."""

    pools: dict[str, dict[str, int]] = attrs.Factory(dict)  # pool -> ID -> place in the order
    ever: set[str] = attrs.Factory(set)
    place: int = 0

    def add(self, pool: str, key_ids: list[str]) -> None:
        for key_id in key_ids:
            self.place += 1
            self.pools.setdefault(pool, {})[key_id] = self.place

    def ids(self, pool: str) -> list[str]:
        held = self.pools.get(pool, {})
        return sorted(held, key=held.__getitem__)

    def remove(self, pool: str, key_ids: list[str]) -> None:
        for key_id in key_ids:
            del self.pools[pool][key_id]

    def counts(self) -> dict[str, int]:
        return {pool: len(ids) for pool, ids in self.pools.items() if ids}


async def run_model(store: KeyStore, operations: list[tuple]) -> None:  # type: ignore[type-arg]
    model = Model()
    every_id = [key_id_of(stem, i) for stem in _STEMS for i in range(41)]
    for op in operations:
        kind, pool = op[0], op[1]
        other = "b" if pool == "a" else "a"
        if kind == "put":
            ids = [key_id_of(op[2], index) for index in op[3]]
            keys = [StoredKey(key_id, pool, secret(key_id), {"m": 1}) for key_id in ids]
            if model.ever & set(ids):
                with pytest.raises(DuplicateKey):
                    await store.put(keys)
            else:
                await store.put(keys)
                model.add(pool, ids)
                model.ever |= set(ids)
        elif kind == "take":
            held = model.ids(pool)
            if op[2] > len(held):
                with pytest.raises(InsufficientKeys):
                    await store.take(pool, op[2])
            else:
                taken = await store.take(pool, op[2])
                assert [key.key_id for key in taken] == held[: op[2]]
                assert all(key.key == secret(key.key_id) and key.pool == pool for key in taken)
                model.remove(pool, held[: op[2]])
        elif kind in ("take_ids", "take_present", "move"):
            ids = [every_id[i % len(every_id)] for i in op[2]]
            held = set(model.ids(pool))
            if kind == "take_present":
                present = [key_id for key_id in dict.fromkeys(ids) if key_id in held]
                taken = await store.take_present(pool, ids)
                assert [key.key_id for key in taken] == present
                model.remove(pool, present)
            elif len(set(ids)) != len(ids) or not set(ids) <= held:
                refused = (
                    store.move(pool, other, key_ids=ids)
                    if kind == "move"
                    else store.take_ids(pool, ids)
                )
                with pytest.raises(UnknownKeys):
                    await refused
            elif kind == "move":
                assert await store.move(pool, other, key_ids=ids) == len(ids)
                moving = [key_id for key_id in model.ids(pool) if key_id in set(ids)]
                model.remove(pool, moving)
                model.add(other, moving)
            else:
                taken = await store.take_ids(pool, ids)
                assert [key.key_id for key in taken] == ids
                assert all(key.key == secret(key.key_id) for key in taken)
                model.remove(pool, ids)
        elif kind == "move_all":
            moving = model.pools.pop(pool, {})
            assert await store.move(pool, other) == len(moving)
            model.pools.setdefault(other, {}).update(moving)
        else:
            assert await store.discard(pool) == len(model.pools.pop(pool, {}))
        assert store.counts() == model.counts()
        for name in _POOLS:
            assert await store.key_ids(name, 100) == model.ids(name)
    assert await store.seen(every_id) == model.ever


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(st.lists(operation, max_size=25))
def test_the_store_behaves_as_its_model(operations: list[tuple]) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        async with MemoryKeyStore() as store:
            await run_model(store, operations)

    trio.run(main)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(operations=st.lists(operation, max_size=25))
def test_a_sqlite_store_behaves_as_its_model(
    operations: list[tuple],
    tmp_path_factory: pytest.TempPathFactory,  # type: ignore[type-arg]
) -> None:
    async def main() -> None:
        path = tmp_path_factory.mktemp("model") / "keys.db"
        async with await SQLiteKeyStore.open(path, kek=KEK) as store:
            await run_model(store, operations)

    trio.run(main)


# --- the window of refused IDs ------------------------------------------------------------


async def test_ids_of_rows_gone_are_refused_for_the_last_rows_deleted_only(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sql, "TOMBSTONES_KEPT", 2)
    monkeypatch.setattr(_threaded, "_PRUNE_SECONDS", 0.0)  # a threaded store forgets every 5 s
    batches = [batch("p", 3) for _ in range(4)]
    for keys in batches:
        await store.put(keys)
    assert len(await store.take("p", 12)) == 12  # four rows deleted, two tombstones kept
    for keys in batches[2:]:
        with pytest.raises(DuplicateKey, match="was stored before"):
            await store.put(keys)
    await store.put(batches[0])  # forgotten: only a source delivering it again could
    assert store.count("p") == 3


# --- expiry -----------------------------------------------------------------------------------


async def test_expire_erases_what_entered_its_pool_before_a_time(store: KeyStore) -> None:
    old = batch("app:alice:bob", 4)
    await store.put(old + batch("app:alice:carol", 2))
    middle = time.time()
    while time.time() == middle:  # the clock's resolution: the next puts are after it
        await trio.lowlevel.checkpoint()
    young = batch("app:alice:bob", 3)
    await store.put(young + batch("link:km-b:out", 5))
    await store.move("app:alice:carol", "app:alice:dave")  # a move starts its time again
    assert await store.expire("app:", middle) == {"app:alice:bob": 4}
    assert store.counts() == {"app:alice:bob": 3, "app:alice:dave": 2, "link:km-b:out": 5}
    assert await store.key_ids("app:alice:bob", 10) == [key.key_id for key in young]
    with pytest.raises(DuplicateKey):
        await store.put(old[:1])  # expired, not forgotten
    assert await store.expire("app:", time.time() + 1) == {"app:alice:bob": 3, "app:alice:dave": 2}
    assert store.counts() == {"link:km-b:out": 5}


# --- sealed at rest ---------------------------------------------------------------------------


async def test_no_key_is_readable_in_any_file_of_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    keys = batch("app:alice:bob", 300) + batch("link:km-b:out", 100, size=4096)
    async with await SQLiteKeyStore.open(state / "keys.db") as store:
        await store.put(keys)
        await store.take("app:alice:bob", 100)
        await store.take_ids("app:alice:bob", [key.key_id for key in keys[150:170]])
        await store.move("link:km-b:out", "reserved:km-b:r1", key_ids=[keys[310].key_id])
        await store.expire("link:", time.time() + 1)
        assert readable([key.key for key in keys], state) == []  # while it runs
    assert readable([key.key for key in keys], state) == []


def test_a_sigkill_after_delivery_leaves_no_key_readable(tmp_path: Path) -> None:
    """A process stores keys, hands some out, and is killed; nothing it held, delivered or not,
    is readable in the files it leaves (the WAL keeps every page it wrote since its last
    checkpoint)."""
    state = tmp_path / "state"
    script = f"""
import sys, trio
from qkdn_sdk.roles.keystore import SQLiteKeyStore, StoredKey
from qkdn_sdk.roles.km.keys import fresh_keys

async def main():
    store = await SQLiteKeyStore.open({str(state / "keys.db")!r})
    ids, keys = fresh_keys(128, 256)
    await store.put([StoredKey(i, "app:alice:bob", k) for i, k in zip(ids, keys)])
    delivered = await store.take_ids("app:alice:bob", ids[:64])
    sys.stdout.write("".join(k.hex() for k in keys) + "\\n")
    sys.stdout.flush()
    await trio.sleep_forever()

trio.run(main)
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    keys = [bytes.fromhex(line[i : i + 64].decode()) for i in range(0, len(line), 64)]
    assert len(keys) == 128
    assert (state / "keys.db-wal").stat().st_size > 0  # the log was left, unchecked
    assert readable(keys, state) == []


# --- the key-encryption key -------------------------------------------------------------------


async def test_a_store_opens_only_with_the_kek_it_was_written_with(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    async with await SQLiteKeyStore.open(path, kek=KEK) as store:
        await store.put(batch("p", 2))
    with pytest.raises(KeyStoreError) as info:
        await SQLiteKeyStore.open(path, kek=bytes(32))
    assert str(info.value) == (
        f"cannot open key store {str(path)!r}: its key-encryption key is not the one given"
    )
    async with await SQLiteKeyStore.open(path, kek=KEK) as store:
        assert store.count("p") == 2


async def test_a_changed_row_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    keys = batch("p", 2)
    async with await SQLiteKeyStore.open(path, kek=KEK) as store:
        await store.put(keys)
    db = sqlite3.connect(path)
    db.execute("UPDATE batches SET first = first + 1")  # the bytes, under other IDs
    db.commit()
    db.close()
    async with await SQLiteKeyStore.open(path, kek=KEK) as store:
        with pytest.raises(KeyStoreError, match="does not open"):
            await store.take("p", 1)


def test_a_kek_comes_from_a_file_the_environment_or_a_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = load_kek(f"file:{tmp_path / 'dir' / 'kek'}")
    assert len(made) == 32
    assert stat.S_IMODE((tmp_path / "dir" / "kek").stat().st_mode) == 0o600
    assert load_kek(f"file:{tmp_path / 'dir' / 'kek'}") == made
    monkeypatch.setenv("QKDN_TEST_KEK", KEK.hex())
    assert load_kek("env:QKDN_TEST_KEK") == KEK
    command = f"{sys.executable} -c 'print(\"{KEK.hex()}\")'"
    assert load_kek(f"command:{command}") == KEK


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("kek", "a key-encryption key source is file:<path>, env:<name> or command:<command>"),
        ("vault:x", "a key-encryption key source is file:<path>, env:<name> or command:<command>"),
        ("env:QKDN_TEST_UNSET", "the environment variable 'QKDN_TEST_UNSET' holding the KEK"),
        ("env:QKDN_TEST_SHORT", "the environment variable 'QKDN_TEST_SHORT' is not 64 hex digits"),
        ("command:false", "the KEK command 'false' exited with 1"),
        ("command:/nonexistent/kek", "the KEK command '/nonexistent/kek' could not run"),
    ],
)
def test_a_kek_source_that_gives_no_kek_is_one_clear_error(
    source: str, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QKDN_TEST_UNSET", raising=False)
    monkeypatch.setenv("QKDN_TEST_SHORT", "abcd")
    with pytest.raises(KeyStoreError) as info:
        load_kek(source)
    assert str(info.value).startswith(error)
    assert "abcd" not in str(info.value)


def test_a_kek_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_bytes(KEK)
    path.chmod(0o640)
    with pytest.raises(
        KeyStoreError, match=r"other users may read or write the KEK file .* chmod 600"
    ):
        load_kek(f"file:{path}")
    path.chmod(0o600)
    path.write_bytes(KEK[:5])
    with pytest.raises(KeyStoreError, match="holds 5 bytes, not 32"):
        load_kek(f"file:{path}")
