"""The key store of a key manager (KM): keys in named pools, each taken at most once.

Theory of operation
-------------------
A KM holds its keys in *pools*, plain strings it chooses (``"qkd:km-b"``, ``"link:km-b:out"``,
``"app:alice:bob"``, ``"pending:<uuid>"``). A pool is a queue: :meth:`KeyStore.put` appends,
:meth:`KeyStore.take` removes the oldest, :meth:`KeyStore.take_ids` removes named keys. Every
operation that changes keys is one transaction: it happens whole or not at all.

Two rules make a key usable as a one-time pad:

- **Taken once.** Concurrent takers always get disjoint keys, and a taken key is never returned
  again, even after a crash and a restart (:class:`SQLiteKeyStore` commits with
  ``synchronous=FULL`` before it hands a key out).
- **Stored once.** Every key ID ever stored is remembered (the ``ever`` table), so a key ID taken
  or discarded long ago cannot come back: :meth:`KeyStore.put` raises :class:`DuplicateKey`.

The number of keys of each pool is kept in memory (:meth:`KeyStore.count` is O(1), cheap enough
for every status request): the store is the only writer of its file (it holds SQLite's exclusive
lock while open), loads the counters when it opens and updates them after each commit.

:class:`SQLiteKeyStore` keeps one file per KM: one sqlite3 connection, WAL journal, every
operation run in a worker thread (``trio.to_thread.run_sync``) under a :class:`trio.Lock`, so the
event loop never waits on the disk and operations never interleave. Operations that arrive while
a transaction runs wait and then share the next one (group commit: one fsync for all of them),
each in its own savepoint, so each still happens whole or not at all. A key's ID is indexed
once, in ``ever``, beside the key's row number: an index of random IDs costs a page write per
key, the largest cost of storing a key. :class:`MemoryKeyStore` has the same semantics in dicts,
for tests.

Key bytes never appear in a ``repr``, an exception text or a log line. Errors of the database
(a corrupt file, a full disk) are turned into :class:`KeyStoreError` with one line naming the
file; no ``sqlite3`` exception leaks to callers.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, Self, TypeVar

import attrs
import orjson
import trio

from qkdn_sdk.errors import QkdnError, quoted

__all__ = [
    "DuplicateKey",
    "InsufficientKeys",
    "KeyStore",
    "KeyStoreError",
    "MemoryKeyStore",
    "SQLiteKeyStore",
    "Splitter",
    "StoredKey",
    "UnknownKeys",
]

_T = TypeVar("_T")
_I = TypeVar("_I")

Splitter = Callable[["StoredKey"], Sequence["StoredKey"]]
"""What :meth:`KeyStore.take_present` makes of each key it takes, when asked to split them."""

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of a key store file written by this module (a file of version 1 is
brought to it when opened)."""

_ROWS_AT_ONCE = (512, 128, 32, 8, 2, 1)
"""How many rows (or key IDs of an ``IN (...)``) one SQL statement takes at once: a batch goes
as statements of these sizes, largest first, so that a few texts, each prepared once and cached,
serve every batch (512 rows of 5 values stay far under SQLite's limit of parameters).

Not ``executemany``: sqlite3 lets go of the GIL around each step of a statement and takes it back
after, and ``executemany`` steps once per row. While the event loop runs Python, each taking back
waits for it to let go, up to the switch interval (5 ms): 1,152 keys inserted a row a step took
8 s beside a busy thread, and 99 ms as statements of many rows (6 ms either way alone)."""

_SCHEMA = (
    # A key's row; its ID is found through ``ever``, so no second index of random IDs is kept.
    "CREATE TABLE IF NOT EXISTS keys (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " key_id TEXT NOT NULL, pool TEXT NOT NULL, key BLOB NOT NULL, metadata TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS keys_pool_seq ON keys (pool, seq)",
    # Every key ID ever stored, with the seq its row had: AUTOINCREMENT never gives a seq twice,
    # so once the row is gone (the key taken) the ID finds no key again.
    "CREATE TABLE IF NOT EXISTS ever (key_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
)

_FROM_VERSION_1 = (
    # Version 1 kept a UNIQUE index of key IDs in ``keys`` and the IDs alone in ``ever``.
    "CREATE TABLE ever_2 (key_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO ever_2 (key_id, seq) SELECT ever.key_id, coalesce(keys.seq, 0)"
    " FROM ever LEFT JOIN keys ON keys.key_id = ever.key_id",
    "INSERT OR IGNORE INTO ever_2 (key_id, seq) SELECT key_id, seq FROM keys",
    "DROP TABLE ever",
    "ALTER TABLE ever_2 RENAME TO ever",
    "CREATE TABLE keys_2 (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " key_id TEXT NOT NULL, pool TEXT NOT NULL, key BLOB NOT NULL, metadata TEXT NOT NULL)",
    "INSERT INTO keys_2 (seq, key_id, pool, key, metadata)"
    " SELECT seq, key_id, pool, key, metadata FROM keys ORDER BY seq",
    # every seq version 1 gave, so that none is given again
    "DELETE FROM sqlite_sequence WHERE name = 'keys_2'",
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'keys_2', max("
    "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'keys'), 0),"
    " coalesce((SELECT max(seq) FROM keys_2), 0))",
    "DROP TABLE keys",
    "ALTER TABLE keys_2 RENAME TO keys",
)


@attrs.frozen
class StoredKey:
    """One key of a pool.

    ``metadata`` must be JSON-serialisable by orjson; it is stored with the key and comes back as
    a fresh dict (so a tuple comes back as a list). ``key`` never appears in the repr.

    The types are checked where keys enter a store (:meth:`KeyStore.put` raises
    :class:`TypeError`), not on construction: a KM makes one of these for every key it holds,
    and validators would double what that costs.
    """

    key_id: str
    pool: str
    key: bytes = attrs.field(repr=False)
    metadata: dict[str, Any] = attrs.field(factory=dict)


# --- errors ---------------------------------------------------------------------------------


class KeyStoreError(QkdnError):
    """The key store cannot do what was asked: it is closed, its file is unreadable or corrupt,
    or (subclasses) the keys asked for are not there or were stored before."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class InsufficientKeys(KeyStoreError):
    """A pool holds fewer keys than requested; nothing was removed."""

    def __init__(self, pool: str, requested: int, available: int) -> None:
        super().__init__(
            f"pool {quoted(pool)} holds {_plural(available, 'key')}, {requested} requested"
        )
        self.pool = pool
        self.requested = requested
        self.available = available


class UnknownKeys(KeyStoreError):
    """Key IDs asked for are not in the pool (or were asked twice); nothing changed.

    ``missing`` lists them in the order asked; the text names at most three. ETSI GS QKD 014
    answers an unknown key ID with 400.
    """

    http_status = 400

    def __init__(self, pool: str, missing: list[str]) -> None:
        named = ", ".join(quoted(key_id) for key_id in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        super().__init__(
            f"pool {quoted(pool)} does not hold {_plural(len(missing), 'key ID')} asked for: "
            f"{named}{more}"
        )
        self.pool = pool
        self.missing = missing


class DuplicateKey(KeyStoreError):
    """A key ID was stored before (even if since taken or discarded), or given twice in one
    call; nothing was added. Storing a key twice could reuse a one-time pad."""

    def __init__(self, key_id: str, *, twice: bool = False) -> None:
        if twice:
            super().__init__(f"key ID {quoted(key_id)} is given twice")
        else:
            super().__init__(f"key ID {quoted(key_id)} was stored before")
        self.key_id = key_id


# --- the interface --------------------------------------------------------------------------


class KeyStore(Protocol):
    """What a KM needs from its key store. Every async method raises :class:`KeyStoreError` when
    the store is closed or its storage fails; every change is one transaction.

    Cancelled before its transaction starts, an operation does nothing; cancelled after, it still
    completes and returns its result (trio raises the cancellation at the caller's next
    checkpoint), so taken keys are never lost between the store and its caller.
    """

    async def put(self, keys: Sequence[StoredKey]) -> None:
        """Add ``keys`` (each to its own ``pool``, in order), in one transaction.

        Raises :class:`DuplicateKey`, adding nothing, when a key ID was *ever* stored before
        (even if since taken or discarded) or is given twice in ``keys``. Raises
        :class:`TypeError` when a key's metadata is not JSON-serialisable.
        """
        ...

    async def take(self, pool: str, count: int) -> list[StoredKey]:
        """Remove and return the ``count`` oldest keys of ``pool``, oldest first, in one
        transaction. Concurrent takers always get disjoint keys.

        Raises :class:`InsufficientKeys`, removing nothing, when the pool holds fewer;
        :class:`ValueError` when ``count`` is negative.
        """
        ...

    async def take_ids(
        self, pool: str, key_ids: Sequence[str], *, replace_with: Sequence[StoredKey] = ()
    ) -> list[StoredKey]:
        """Remove and return exactly the keys ``key_ids`` of ``pool``, in the order asked, and
        add ``replace_with`` in the same transaction (to split a key into smaller keys).

        Raises :class:`UnknownKeys` when an ID is not in the pool or is asked twice, and
        :class:`DuplicateKey` when ``replace_with`` breaks :meth:`put`'s rule (the IDs being
        taken count as stored before); either way nothing changes.
        """
        ...

    async def take_ids_and_oldest(
        self, pool: str, key_ids: Sequence[str], oldest_pool: str, count: int
    ) -> tuple[list[StoredKey], list[StoredKey]]:
        """:meth:`take_ids` of ``key_ids`` from ``pool`` and :meth:`take` of the ``count`` oldest
        keys of ``oldest_pool``, in one transaction: both, or (raising what the first to fail
        raises) neither. A trusted node spends the link units a hop came with and those of the
        next hop at once."""
        ...

    async def take_present(
        self, pool: str, key_ids: Sequence[str], *, split: Splitter | None = None
    ) -> list[StoredKey]:
        """Remove and return those of ``key_ids`` that ``pool`` holds, in the order asked (an ID
        asked twice once), in one transaction; the others are skipped, never an error.

        With ``split``, each key taken is replaced, in the same transaction, by the keys
        ``split`` makes of it (to cut QKD-keys into link units): :class:`DuplicateKey` as
        :meth:`put` raises it, and nothing changes, when one of those breaks its rule.
        ``split`` must be a pure function: :class:`SQLiteKeyStore` calls it in its worker
        thread.
        """
        ...

    async def move(
        self, source_pool: str, destination_pool: str, *, key_ids: Sequence[str] | None = None
    ) -> int:
        """Move every key of ``source_pool`` (or exactly the keys ``key_ids`` of it) into
        ``destination_pool``, each keeping its place in the insertion order, in one
        transaction. Returns how many moved. Raises :class:`UnknownKeys` and moves nothing when
        ``source_pool`` lacks one of ``key_ids``."""
        ...

    async def discard(self, pool: str) -> int:
        """Delete every key of ``pool`` (it was never supplied). Returns how many."""
        ...

    async def discard_prefix(self, prefix: str) -> int:
        """Delete every key of every pool whose name starts with ``prefix`` (``"pending:"``
        when a KM starts). Returns how many."""
        ...

    async def peek_ids(self, pool: str, key_ids: Sequence[str]) -> list[StoredKey]:
        """The keys ``key_ids`` of ``pool``, in the order asked, left in the store. Raises
        :class:`UnknownKeys` as :meth:`take_ids` does."""
        ...

    async def key_ids(self, pool: str, limit: int, *, newest: bool = False) -> list[str]:
        """The IDs of the ``limit`` oldest keys of ``pool`` (the ``limit`` newest with
        ``newest``), oldest first; nothing is removed. Raises :class:`ValueError` when ``limit``
        is negative."""
        ...

    async def peek(self, pool: str, limit: int) -> list[StoredKey]:
        """The ``limit`` oldest keys of ``pool``, oldest first, left in the store (to hand a key
        out and take it only once its receipt is acknowledged). Raises :class:`ValueError` when
        ``limit`` is negative."""
        ...

    async def seen(self, key_ids: Sequence[str]) -> set[str]:
        """Which of ``key_ids`` were ever stored (present now or not)."""
        ...

    async def pools_of(self, key_ids: Sequence[str]) -> dict[str, str]:
        """The pool of each of ``key_ids`` the store holds now (the others are left out)."""
        ...

    def count(self, pool: str) -> int:
        """How many keys ``pool`` holds now, in O(1), without I/O."""
        ...

    def counts(self, prefix: str = "") -> dict[str, int]:
        """Every non-empty pool whose name starts with ``prefix``, mapped to its count, without
        I/O."""
        ...

    async def aclose(self) -> None:
        """Close the store. Closing twice is harmless; any other use afterwards raises
        :class:`KeyStoreError`."""
        ...


# --- rules both stores share ----------------------------------------------------------------


def _check_keys(keys: Sequence[StoredKey]) -> list[bytes]:
    """The metadata of each key as JSON; raises TypeError when one is not a StoredKey of the
    field types it declares or its metadata is not JSON-serialisable."""
    encoded = []
    last: tuple[dict[str, Any], bytes] | None = None  # keys of a batch often share their metadata
    for key in keys:
        if (
            type(key) is not StoredKey
            or type(key.key_id) is not str
            or type(key.pool) is not str
            or type(key.key) is not bytes
        ):
            raise TypeError(_not_a_stored_key(key))
        if last is None or last[0] is not key.metadata:
            if not isinstance(key.metadata, dict):
                raise TypeError(_not_a_stored_key(key))
            try:
                last = (key.metadata, orjson.dumps(key.metadata))
            except orjson.JSONEncodeError as exc:
                raise TypeError(
                    f"metadata of key ID {quoted(key.key_id)} is not JSON-serialisable: {exc}"
                ) from None
        encoded.append(last[1])
    return encoded


def _not_a_stored_key(key: object) -> str:
    """Why :func:`_check_keys` refused ``key``."""
    if type(key) is not StoredKey:
        return f"expected a StoredKey, got {type(key).__name__}"
    for name, expected in (("key_id", str), ("pool", str), ("key", bytes), ("metadata", dict)):
        value = getattr(key, name)
        if type(value) is not expected and not (expected is dict and isinstance(value, dict)):
            return (
                f"the {name} of a StoredKey must be {expected.__name__}, not {type(value).__name__}"
            )
    raise AssertionError(f"{key!r} can be stored")


def _check_duplicates(key_ids: Iterable[str], stored_before: Callable[[str], bool]) -> None:
    """Raise DuplicateKey for the first ID (in order) stored before or given twice."""
    given: set[str] = set()
    for key_id in key_ids:
        if key_id in given:
            raise DuplicateKey(key_id, twice=True)
        if stored_before(key_id):
            raise DuplicateKey(key_id)
        given.add(key_id)


def _missing(key_ids: Sequence[str], present: Callable[[str], bool]) -> list[str]:
    """The IDs (in the order asked, each once) not present or asked twice."""
    asked: set[str] = set()
    missing: dict[str, None] = {}
    for key_id in key_ids:
        if key_id in asked or not present(key_id):
            missing[key_id] = None
        asked.add(key_id)
    return list(missing)


def _check_count(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _add(counts: dict[str, int], pool: str, delta: int) -> None:
    """Apply ``delta`` to a pool's counter; empty pools are not kept."""
    value = counts.get(pool, 0) + delta
    if value:
        counts[pool] = value
    else:
        counts.pop(pool, None)


def _pool_sizes(keys: Iterable[StoredKey]) -> dict[str, int]:
    """How many of ``keys`` go to each pool."""
    sizes: dict[str, int] = {}
    for key in keys:
        sizes[key.pool] = sizes.get(key.pool, 0) + 1
    return sizes


def _counts(counts: dict[str, int], prefix: str) -> dict[str, int]:
    return {pool: n for pool, n in counts.items() if pool.startswith(prefix)}


# --- in memory ------------------------------------------------------------------------------


@attrs.define
class _Entry:
    seq: int
    pool: str
    key: bytes = attrs.field(repr=False)
    metadata: bytes  # JSON, so a stored key cannot change when the caller's dict does

    def stored_key(self, key_id: str) -> StoredKey:
        return StoredKey(key_id, self.pool, self.key, orjson.loads(self.metadata))


class _ClosedOnExit(abc.ABC):
    """``async with store:`` closes the store at the end of the block, even when the block
    was cancelled (the close is shielded: a store is never left half open)."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()


class MemoryKeyStore(_ClosedOnExit):
    """A :class:`KeyStore` in dicts, with the same semantics as :class:`SQLiteKeyStore` (for
    tests). Each async method checkpoints once, then does its work without yielding, so it is
    one atomic step like a transaction."""

    def __init__(self) -> None:
        # pool -> key ID -> entry, each pool's dict in insertion (seq) order.
        self._pools: dict[str, dict[str, _Entry]] = {}
        self._ever: set[str] = set()
        self._next_seq = 1
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{sum(map(len, self._pools.values()))} keys"
        return f"<MemoryKeyStore {state}>"

    async def _enter(self) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise KeyStoreError("the key store is closed")

    def _add_keys(self, keys: Sequence[StoredKey], metadata: list[bytes]) -> None:
        for key, encoded in zip(keys, metadata, strict=True):
            pool = self._pools.setdefault(key.pool, {})
            pool[key.key_id] = _Entry(self._next_seq, key.pool, key.key, encoded)
            self._next_seq += 1
            self._ever.add(key.key_id)

    def _holding(self, pool: str, key_ids: Sequence[str]) -> dict[str, _Entry]:
        """The entries of ``pool``, raising :class:`UnknownKeys` when it lacks one of ``key_ids``
        (or one is asked twice), as :func:`_held_all` does in SQLite."""
        entries = self._pools.get(pool, {})
        missing = _missing(key_ids, entries.__contains__)
        if missing:
            raise UnknownKeys(pool, missing)
        return entries

    def _pop(self, pool: str, key_ids: Iterable[str]) -> list[StoredKey]:
        entries = self._pools[pool]
        taken = [entries.pop(key_id).stored_key(key_id) for key_id in key_ids]
        if not entries:
            del self._pools[pool]
        return taken

    async def put(self, keys: Sequence[StoredKey]) -> None:
        metadata = _check_keys(keys)
        await self._enter()
        _check_duplicates((key.key_id for key in keys), self._ever.__contains__)
        self._add_keys(keys, metadata)

    async def take(self, pool: str, count: int) -> list[StoredKey]:
        _check_count("count", count)
        await self._enter()
        available = self.count(pool)
        if available < count:
            raise InsufficientKeys(pool, count, available)
        if count == 0:
            return []
        return self._pop(pool, list(itertools.islice(self._pools[pool], count)))

    async def take_ids(
        self, pool: str, key_ids: Sequence[str], *, replace_with: Sequence[StoredKey] = ()
    ) -> list[StoredKey]:
        metadata = _check_keys(replace_with)
        await self._enter()
        self._holding(pool, key_ids)
        _check_duplicates((key.key_id for key in replace_with), self._ever.__contains__)
        taken = self._pop(pool, key_ids) if key_ids else []
        self._add_keys(replace_with, metadata)
        return taken

    async def take_ids_and_oldest(
        self, pool: str, key_ids: Sequence[str], oldest_pool: str, count: int
    ) -> tuple[list[StoredKey], list[StoredKey]]:
        _check_count("count", count)
        await self._enter()
        self._holding(pool, key_ids)
        available = self.count(oldest_pool) - (len(key_ids) if oldest_pool == pool else 0)
        if available < count:
            raise InsufficientKeys(oldest_pool, count, available)
        taken = self._pop(pool, key_ids) if key_ids else []
        oldest = list(itertools.islice(self._pools.get(oldest_pool, {}), count))
        return taken, self._pop(oldest_pool, oldest) if oldest else []

    async def take_present(
        self, pool: str, key_ids: Sequence[str], *, split: Splitter | None = None
    ) -> list[StoredKey]:
        await self._enter()
        entries = self._pools.get(pool, {})
        present = [key_id for key_id in dict.fromkeys(key_ids) if key_id in entries]
        if split is None:
            return self._pop(pool, present) if present else []
        held = [entries[key_id].stored_key(key_id) for key_id in present]
        pieces = [piece for key in held for piece in split(key)]
        metadata = _check_keys(pieces)
        _check_duplicates((piece.key_id for piece in pieces), self._ever.__contains__)
        taken = self._pop(pool, present) if present else []
        self._add_keys(pieces, metadata)
        return taken

    async def move(
        self, source_pool: str, destination_pool: str, *, key_ids: Sequence[str] | None = None
    ) -> int:
        await self._enter()
        if key_ids is None:
            entries = self._pools.get(source_pool, {})
            source = dict(entries)
        else:
            entries = self._holding(source_pool, key_ids)
            source = {key_id: entries[key_id] for key_id in dict.fromkeys(key_ids)}
        if source_pool == destination_pool or not source:
            return len(source)
        for key_id in source:
            del entries[key_id]
        if not entries:
            self._pools.pop(source_pool, None)
        merged = list(self._pools.get(destination_pool, {}).items())
        merged += [(key_id, attrs.evolve(e, pool=destination_pool)) for key_id, e in source.items()]
        merged.sort(key=lambda item: item[1].seq)
        self._pools[destination_pool] = dict(merged)
        return len(source)

    async def discard(self, pool: str) -> int:
        await self._enter()
        return len(self._pools.pop(pool, {}))

    async def discard_prefix(self, prefix: str) -> int:
        await self._enter()
        pools = [pool for pool in self._pools if pool.startswith(prefix)]
        return sum(len(self._pools.pop(pool)) for pool in pools)

    async def peek_ids(self, pool: str, key_ids: Sequence[str]) -> list[StoredKey]:
        await self._enter()
        entries = self._holding(pool, key_ids)
        return [entries[key_id].stored_key(key_id) for key_id in key_ids]

    async def key_ids(self, pool: str, limit: int, *, newest: bool = False) -> list[str]:
        _check_count("limit", limit)
        await self._enter()
        keys = self._pools.get(pool, {})
        if newest:
            return list(keys)[len(keys) - limit :] if limit else []
        return list(itertools.islice(keys, limit))

    async def peek(self, pool: str, limit: int) -> list[StoredKey]:
        _check_count("limit", limit)
        await self._enter()
        entries = self._pools.get(pool, {})
        return [entries[key_id].stored_key(key_id) for key_id in itertools.islice(entries, limit)]

    async def seen(self, key_ids: Sequence[str]) -> set[str]:
        await self._enter()
        return {key_id for key_id in key_ids if key_id in self._ever}

    async def pools_of(self, key_ids: Sequence[str]) -> dict[str, str]:
        await self._enter()
        wanted = set(key_ids)
        return {
            key_id: pool
            for pool, keys in self._pools.items()
            for key_id in keys
            if key_id in wanted
        }

    def count(self, pool: str) -> int:
        self._check_open()
        return len(self._pools.get(pool, ()))

    def counts(self, prefix: str = "") -> dict[str, int]:
        self._check_open()
        return {pool: len(e) for pool, e in self._pools.items() if pool.startswith(prefix)}

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self._closed = True


# --- in SQLite ------------------------------------------------------------------------------


def _chunks(items: Sequence[_I]) -> Iterator[Sequence[_I]]:
    """``items`` cut in slices of the sizes of :data:`_ROWS_AT_ONCE`."""
    start = 0
    for size in _ROWS_AT_ONCE:
        while len(items) - start >= size:
            yield items[start : start + size]
            start += size


def _placeholders(items: Sequence[Any], group: str = "?") -> str:
    """``group`` once per item, comma-separated: ``?,?`` or ``(?,?),(?,?)``."""
    return ",".join([group] * len(items))


def _execute_rows(
    db: sqlite3.Connection, statement: str, group: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Run ``statement`` (its ``{}`` replaced by ``group`` once per row) on ``rows``, as a few
    statements of many rows each (:data:`_ROWS_AT_ONCE`)."""
    for chunk in _chunks(rows):
        db.execute(
            statement.format(_placeholders(chunk, group)), [value for row in chunk for value in row]
        )


def _ever_stored(db: sqlite3.Connection, key_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(key_ids):
        rows = db.execute(
            f"SELECT key_id FROM ever WHERE key_id IN ({_placeholders(chunk)})", chunk
        )
        found.update(row[0] for row in rows)
    return found


def _pools_of(db: sqlite3.Connection, key_ids: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in _chunks(key_ids):
        rows = db.execute(
            "SELECT ever.key_id, keys.pool FROM ever JOIN keys ON keys.seq = ever.seq "
            f"WHERE ever.key_id IN ({_placeholders(chunk)})",
            chunk,
        )
        found.update((row[0], row[1]) for row in rows)
    return found


def _insert(db: sqlite3.Connection, keys: Sequence[StoredKey], metadata: list[bytes]) -> None:
    """Insert keys with the seqs after every seq ever given (AUTOINCREMENT's
    ``sqlite_sequence``, which these inserts advance); a key ID in ``ever`` already, or twice
    among ``keys``, raises :class:`sqlite3.IntegrityError`."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'keys'").fetchone()
    first = (row[0] if row else 0) + 1
    _execute_rows(
        db,
        "INSERT INTO ever (key_id, seq) VALUES {}",
        "(?,?)",
        [(key.key_id, seq) for seq, key in enumerate(keys, first)],
    )
    _execute_rows(
        db,
        "INSERT INTO keys (seq, key_id, pool, key, metadata) VALUES {}",
        "(?,?,?,?,?)",
        [
            (seq, key.key_id, key.pool, key.key, encoded.decode())
            for seq, (key, encoded) in enumerate(zip(keys, metadata, strict=True), first)
        ],
    )


def _put(db: sqlite3.Connection, keys: Sequence[StoredKey], metadata: list[bytes]) -> None:
    """Insert ``keys``, refusing a key ID stored before or given twice (:class:`DuplicateKey`,
    nothing inserted). ``ever``'s primary key refuses it: the keys are inserted at once, and
    only when the insert fails are their IDs looked up, to name the first duplicate."""
    if not keys:
        return
    db.execute("SAVEPOINT put")
    try:
        _insert(db, keys, metadata)
    except sqlite3.IntegrityError:
        db.execute("ROLLBACK TO put")
        db.execute("RELEASE put")
        stored = _ever_stored(db, [key.key_id for key in keys])
        _check_duplicates((key.key_id for key in keys), stored.__contains__)
        raise  # not a duplicate key ID: an error of the database
    db.execute("RELEASE put")


def _held(
    db: sqlite3.Connection, pool: str, key_ids: Sequence[str]
) -> dict[str, tuple[int, StoredKey]]:
    """Those of ``key_ids`` that ``pool`` holds, by ID: their seq and key."""
    found: dict[str, tuple[int, StoredKey]] = {}
    for chunk in _chunks(key_ids):
        rows = db.execute(
            "SELECT keys.seq, keys.key_id, keys.pool, keys.key, keys.metadata "
            "FROM ever JOIN keys ON keys.seq = ever.seq "
            f"WHERE ever.key_id IN ({_placeholders(chunk)}) AND keys.pool = ?",
            (*chunk, pool),
        )
        found.update((row[1], (row[0], _row_key(row[1:]))) for row in rows)
    return found


def _held_all(
    db: sqlite3.Connection, pool: str, key_ids: Sequence[str]
) -> dict[str, tuple[int, StoredKey]]:
    """:func:`_held`, raising :class:`UnknownKeys` when ``pool`` lacks one of ``key_ids`` (or
    one is asked twice)."""
    found = _held(db, pool, key_ids)
    missing = _missing(key_ids, found.__contains__)
    if missing:
        raise UnknownKeys(pool, missing)
    return found


def _take_oldest(db: sqlite3.Connection, pool: str, count: int) -> list[StoredKey]:
    """Delete and return the ``count`` oldest keys of ``pool`` (:class:`InsufficientKeys` when
    it holds fewer)."""
    rows = db.execute(
        "SELECT seq, key_id, pool, key, metadata FROM keys WHERE pool = ? ORDER BY seq LIMIT ?",
        (pool, count),
    ).fetchall()
    if len(rows) < count:
        raise InsufficientKeys(pool, count, len(rows))
    if rows:
        # The rows are the pool's oldest: every key of the pool up to the last one.
        db.execute("DELETE FROM keys WHERE pool = ? AND seq <= ?", (pool, rows[-1][0]))
    return [_row_key(row[1:]) for row in rows]


def _delete(db: sqlite3.Connection, found: Iterable[tuple[int, StoredKey]]) -> None:
    for chunk in _chunks([seq for seq, _ in found]):
        db.execute(f"DELETE FROM keys WHERE seq IN ({_placeholders(chunk)})", chunk)


def _row_key(row: tuple[Any, ...]) -> StoredKey:
    key_id, pool, key, metadata = row
    return StoredKey(key_id, pool, bytes(key), orjson.loads(metadata))


@attrs.frozen
class _Done(Generic[_T]):
    value: _T

    def unwrap(self) -> _T:
        return self.value


@attrs.frozen
class _Failed:
    error: BaseException

    def unwrap(self) -> NoReturn:
        raise self.error


_Result = _Done[_T] | _Failed


@attrs.define(eq=False)
class _Operation(Generic[_T]):
    """One operation of :class:`SQLiteKeyStore` waiting for, or in, a transaction."""

    work: Callable[[sqlite3.Connection], _T]
    committed: Callable[[_T], None] | None
    queued: bool = True
    result: _Result[_T] | None = None
    finished: trio.Event = attrs.Factory(trio.Event)


def _run_one(db: sqlite3.Connection, op: _Operation[_T], *, alone: bool) -> _Result[_T]:
    """Run ``op`` in the open transaction; what it raised (but an error of the database, which
    ends the whole transaction) is its result, and undoes what it did."""
    if alone:
        try:
            return _Done(op.work(db))
        except sqlite3.Error:
            raise
        except Exception as exc:
            return _Failed(exc)
    db.execute("SAVEPOINT operation")
    try:
        value = op.work(db)
    except sqlite3.Error:
        raise
    except Exception as exc:
        db.execute("ROLLBACK TO operation")
        db.execute("RELEASE operation")
        return _Failed(exc)
    db.execute("RELEASE operation")
    return _Done(value)


def _batch_error(path: Path, exc: BaseException) -> KeyStoreError:
    """What the other operations of a transaction that ended with ``exc`` raise."""
    return KeyStoreError(f"key store {str(path)!r}: the transaction failed ({type(exc).__name__})")


class SQLiteKeyStore(_ClosedOnExit):
    """A :class:`KeyStore` in one SQLite file per KM; open it with :meth:`open`.

    A key taken stays taken after a crash (``synchronous=FULL``); reopening the file sees exactly
    the keys not yet taken, and still refuses every key ID ever stored. While open, the store
    holds the file's exclusive lock, so a second store (or process) cannot open it.
    """

    def __init__(self, path: Path, db: sqlite3.Connection, counts: dict[str, int]) -> None:
        """Use :meth:`open`."""
        self._path = path
        self._db: sqlite3.Connection | None = db
        self._counts = counts
        self._lock = trio.Lock()
        self._queue: list[_Operation[Any]] = []

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def __repr__(self) -> str:
        state = "closed" if self._db is None else f"{sum(self._counts.values())} keys"
        return f"<SQLiteKeyStore {str(self._path)!r} {state}>"

    @classmethod
    async def open(cls, path: str | Path) -> Self:
        """Open the key store in ``path``, creating the file (and its parent directory) when
        missing, and load the pool counters.

        Raises :class:`KeyStoreError`, one line naming the file, when it cannot be opened: not a
        database, corrupt, written by a newer version, in use by another store, or its directory
        cannot be made.
        """
        path = Path(path)
        db, counts = await trio.to_thread.run_sync(cls._open_sync, path)
        return cls(path, db, counts)

    @staticmethod
    def _open_sync(path: Path) -> tuple[sqlite3.Connection, dict[str, int]]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyStoreError(f"cannot open key store {str(path)!r}: {exc}") from None
        db: sqlite3.Connection | None = None
        try:
            # timeout=0: the only lock to wait for is another store's, held until it closes.
            db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
            # Exclusive before WAL: the store must be the only writer, or its counters lie.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.execute("ROLLBACK")
                raise KeyStoreError(
                    f"cannot open key store {str(path)!r}: schema version {version} is newer "
                    f"than this SDK's ({SCHEMA_VERSION})"
                )
            if version == 1:
                for statement in _FROM_VERSION_1:
                    db.execute(statement)
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            rows = db.execute("SELECT pool, COUNT(*) FROM keys GROUP BY pool").fetchall()
            db.execute("COMMIT")
        except (sqlite3.Error, KeyStoreError) as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            if isinstance(exc, KeyStoreError):
                raise
            raise KeyStoreError(f"cannot open key store {str(path)!r}: {exc}") from None
        return db, {pool: n for pool, n in rows}

    def _check_open(self) -> sqlite3.Connection:
        if self._db is None:
            raise self._closed()
        return self._db

    def _closed(self) -> KeyStoreError:
        return KeyStoreError(f"the key store {str(self._path)!r} is closed")

    async def _transaction(
        self,
        work: Callable[[sqlite3.Connection], _T],
        committed: Callable[[_T], None] | None = None,
    ) -> _T:
        """Run ``work`` in a worker thread as one transaction, and ``committed`` with its result
        in the event loop once it is durable (to update the counters).

        Group commit: operations that arrive while a transaction is in the thread wait, and then
        run together in the next one, each in its own savepoint (one failing undoes only itself)
        and in the order they arrived, with one commit and one fsync for all. Cancelled while it
        waits, an operation leaves the queue and does nothing; once its transaction started, it
        completes and hands back its result (the caller sees the cancellation at its next
        checkpoint), so no key is lost between the store and its caller.
        """
        self._check_open()
        op: _Operation[_T] = _Operation(work, committed)
        self._queue.append(op)
        try:
            async with self._lock:
                if op.result is None:  # not run by the transaction of an operation before it
                    await self._run_queued()
        except trio.Cancelled:
            if op.result is None and op.queued:
                self._queue.remove(op)
                raise
            if op.result is None:  # in the transaction now: wait for it, whatever happens
                with trio.CancelScope(shield=True):
                    await op.finished.wait()
        assert op.result is not None
        return op.result.unwrap()

    async def _run_queued(self) -> None:
        """Run every queued operation in one transaction (the caller holds the lock)."""
        batch, self._queue = self._queue, []
        for op in batch:
            op.queued = False
        if self._db is None:  # closed while they waited
            for op in batch:
                op.result = _Failed(self._closed())
                op.finished.set()
            return
        try:
            with trio.CancelScope(shield=True):  # the transaction of others, too, must end
                results = await trio.to_thread.run_sync(self._transaction_sync, self._db, batch)
        except BaseException as exc:
            for op in batch:
                op.result = _Failed(_batch_error(self._path, exc))
                op.finished.set()
            raise
        # The counters change with the commit, before any other task runs.
        for op, result in zip(batch, results, strict=True):
            op.result = result
        for op, result in zip(batch, results, strict=True):
            if op.committed is not None and isinstance(result, _Done):
                op.committed(result.value)
            op.finished.set()

    def _transaction_sync(
        self, db: sqlite3.Connection, batch: Sequence[_Operation[Any]]
    ) -> list[_Result[Any]]:
        results: list[_Result[Any]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for op in batch:
                    results.append(_run_one(db, op, alone=len(batch) == 1))
                if any(isinstance(result, _Done) for result in results):
                    db.execute("COMMIT")
                else:
                    db.execute("ROLLBACK")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = f"key store {str(self._path)!r}: {exc}"
            return [_Failed(KeyStoreError(error)) for _ in batch]
        return results

    async def put(self, keys: Sequence[StoredKey]) -> None:
        metadata = _check_keys(keys)
        keys = list(keys)
        added = _pool_sizes(keys)

        def committed(_: None) -> None:
            for pool, n in added.items():
                _add(self._counts, pool, n)

        await self._transaction(lambda db: _put(db, keys, metadata), committed)

    async def take(self, pool: str, count: int) -> list[StoredKey]:
        _check_count("count", count)

        return await self._transaction(
            lambda db: _take_oldest(db, pool, count),
            lambda taken: _add(self._counts, pool, -len(taken)),
        )

    async def take_ids(
        self, pool: str, key_ids: Sequence[str], *, replace_with: Sequence[StoredKey] = ()
    ) -> list[StoredKey]:
        metadata = _check_keys(replace_with)
        key_ids = list(key_ids)
        replace_with = list(replace_with)

        def work(db: sqlite3.Connection) -> list[StoredKey]:
            found = _held_all(db, pool, key_ids)
            _delete(db, found.values())
            _put(db, replace_with, metadata)
            return [found[key_id][1] for key_id in key_ids]

        added = _pool_sizes(replace_with)

        def committed(taken: list[StoredKey]) -> None:
            _add(self._counts, pool, -len(taken))
            for into, n in added.items():
                _add(self._counts, into, n)

        return await self._transaction(work, committed)

    async def take_ids_and_oldest(
        self, pool: str, key_ids: Sequence[str], oldest_pool: str, count: int
    ) -> tuple[list[StoredKey], list[StoredKey]]:
        _check_count("count", count)
        key_ids = list(key_ids)

        def work(db: sqlite3.Connection) -> tuple[list[StoredKey], list[StoredKey]]:
            found = _held_all(db, pool, key_ids)
            _delete(db, found.values())
            return [found[key_id][1] for key_id in key_ids], _take_oldest(db, oldest_pool, count)

        def committed(taken: tuple[list[StoredKey], list[StoredKey]]) -> None:
            _add(self._counts, pool, -len(taken[0]))
            _add(self._counts, oldest_pool, -len(taken[1]))

        return await self._transaction(work, committed)

    async def take_present(
        self, pool: str, key_ids: Sequence[str], *, split: Splitter | None = None
    ) -> list[StoredKey]:
        key_ids = list(dict.fromkeys(key_ids))
        added: dict[str, int] = {}

        def work(db: sqlite3.Connection) -> list[StoredKey]:
            found = _held(db, pool, key_ids)
            taken = [found[key_id][1] for key_id in key_ids if key_id in found]
            _delete(db, found.values())
            if split is not None:
                pieces = [piece for key in taken for piece in split(key)]
                _put(db, pieces, _check_keys(pieces))
                added.update(_pool_sizes(pieces))
            return taken

        def committed(taken: list[StoredKey]) -> None:
            _add(self._counts, pool, -len(taken))
            for into, n in added.items():
                _add(self._counts, into, n)

        return await self._transaction(work, committed)

    async def move(
        self, source_pool: str, destination_pool: str, *, key_ids: Sequence[str] | None = None
    ) -> int:
        wanted = None if key_ids is None else list(dict.fromkeys(key_ids))

        def work(db: sqlite3.Connection) -> int:
            if wanted is None:
                cursor = db.execute(
                    "UPDATE keys SET pool = ? WHERE pool = ?", (destination_pool, source_pool)
                )
                return cursor.rowcount
            found = _held_all(db, source_pool, wanted)
            for chunk in _chunks([found[key_id][0] for key_id in wanted]):
                db.execute(
                    f"UPDATE keys SET pool = ? WHERE seq IN ({_placeholders(chunk)})",
                    (destination_pool, *chunk),
                )
            return len(wanted)

        def committed(moved: int) -> None:
            _add(self._counts, source_pool, -moved)
            _add(self._counts, destination_pool, moved)

        return await self._transaction(work, committed)

    async def discard(self, pool: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM keys WHERE pool = ?", (pool,)).rowcount

        return await self._transaction(work, lambda discarded: _add(self._counts, pool, -discarded))

    async def discard_prefix(self, prefix: str) -> int:
        # substr, not LIKE: a prefix may hold "%" or "_".
        where = "substr(pool, 1, ?) = ?"
        params = (len(prefix), prefix)

        def work(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute(
                f"SELECT pool, COUNT(*) FROM keys WHERE {where} GROUP BY pool", params
            ).fetchall()
            db.execute(f"DELETE FROM keys WHERE {where}", params)
            return {pool: n for pool, n in rows}

        def committed(discarded: dict[str, int]) -> None:
            for pool, n in discarded.items():
                _add(self._counts, pool, -n)

        return sum((await self._transaction(work, committed)).values())

    async def peek_ids(self, pool: str, key_ids: Sequence[str]) -> list[StoredKey]:
        key_ids = list(key_ids)

        def work(db: sqlite3.Connection) -> list[StoredKey]:
            found = _held_all(db, pool, key_ids)
            return [found[key_id][1] for key_id in key_ids]

        return await self._transaction(work)

    async def key_ids(self, pool: str, limit: int, *, newest: bool = False) -> list[str]:
        _check_count("limit", limit)
        order = "DESC" if newest else "ASC"

        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                f"SELECT key_id FROM keys WHERE pool = ? ORDER BY seq {order} LIMIT ?",
                (pool, limit),
            )
            ids = [row[0] for row in rows]
            return ids[::-1] if newest else ids

        return await self._transaction(work)

    async def peek(self, pool: str, limit: int) -> list[StoredKey]:
        _check_count("limit", limit)

        def work(db: sqlite3.Connection) -> list[StoredKey]:
            rows = db.execute(
                "SELECT key_id, pool, key, metadata FROM keys WHERE pool = ? ORDER BY seq LIMIT ?",
                (pool, limit),
            )
            return [_row_key(row) for row in rows]

        return await self._transaction(work)

    async def seen(self, key_ids: Sequence[str]) -> set[str]:
        key_ids = list(key_ids)
        return await self._transaction(lambda db: _ever_stored(db, key_ids))

    async def pools_of(self, key_ids: Sequence[str]) -> dict[str, str]:
        key_ids = list(key_ids)
        return await self._transaction(lambda db: _pools_of(db, key_ids))

    def count(self, pool: str) -> int:
        self._check_open()
        return self._counts.get(pool, 0)

    def counts(self, prefix: str = "") -> dict[str, int]:
        self._check_open()
        return _counts(self._counts, prefix)

    async def aclose(self) -> None:
        """Close the store, after the operation in progress (if any) ends. Closing twice is
        harmless; a cancelled close still closes."""
        if self._db is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            async with self._lock:
                db, self._db = self._db, None
                if db is not None:
                    await trio.to_thread.run_sync(db.close)


if TYPE_CHECKING:
    # mypy checks that both classes implement the protocol.
    def _implements(memory: MemoryKeyStore, sqlite: SQLiteKeyStore) -> list[KeyStore]:
        return [memory, sqlite]
