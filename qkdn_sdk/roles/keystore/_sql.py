"""The SQL of :class:`~qkdn_sdk.roles.keystore.SQLiteKeyStore`: its schema, the upgrade of a
file of version 1, and the statements its operations run inside a transaction.

Each function here takes the open ``sqlite3`` connection, runs in the store's worker thread
inside the transaction the store began, and neither begins nor ends one (:func:`_put` uses a
savepoint of its own). Batches of rows or key IDs go as a few statements of many rows each
(:data:`_ROWS_AT_ONCE`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import orjson

from qkdn_sdk.roles.keystore._base import (
    InsufficientKeys,
    StoredKey,
    UnknownKeys,
    _check_duplicates,
    _missing,
)

__all__ = ["SCHEMA_VERSION"]

_I = TypeVar("_I")

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
