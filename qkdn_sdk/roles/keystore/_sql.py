"""The SQL of the key stores: the schema, the upgrade of older files, and the statements their
operations run inside a transaction.

Rows are batches
----------------
A row holds the keys of one batch: keys put in one call, of one pool and one length, with the
same metadata, whose IDs share a *stem* and differ in an *index* (:func:`split_id`: an ID ending
in four lowercase hex digits is its stem and that index, as the SDK's own key IDs and link unit
IDs are made; any other ID is a stem alone). A row covers the indexes ``first`` to
``first + span - 1``; of those, the bitmap ``ever`` names the keys it was made with and ``held``
those it holds now. Its keys' bytes, in index order, are sealed as one value
(:mod:`~qkdn_sdk.roles.keystore._seal`). Spending part of a row rewrites its ``held`` and reseals
what is left; a row whose keys are all gone is deleted (SQLite's ``secure_delete`` zeroes its
bytes in the file) and leaves a *tombstone*, its stem, range and ``ever``, in ``gone``.

A key request's keys are one row, a QKD-key's link units two (one per direction), where they
were one row and one index entry per key: a key's ID finds its row through the index of stems.

Stored once, within a window
----------------------------
A key ID is refused (:class:`DuplicateKey`) while a row holds, or once held, it, and while a
tombstone names it. Tombstones are kept for the last :data:`TOMBSTONES_KEPT` rows deleted, not
for ever. That is enough because the only way a key ID can come back is a source delivering
the same key again: a QKD module or KME re-sending keys after a restart (at most its buffer,
within minutes), or a peer replaying a relay, which is refused anyway since the link units it
names are spent. Keys this SDK makes have fresh random IDs (74 random bits per batch).

One set of statements, two databases
------------------------------------
Each function here takes a :class:`Connection` (a ``sqlite3`` connection wrapped as
:class:`SQLite`, or a PostgreSQL one, :mod:`~qkdn_sdk.roles.keystore.postgres`), runs inside the
transaction the store began, and neither begins nor ends one. The statements are common SQL with
``?`` placeholders; what differs between the databases is data in one place, a
:class:`Dialect`: the column types of the schema, how a transaction begins, and the clauses that
lock the rows a statement reads to change them (PostgreSQL's ``FOR UPDATE``; SQLite's one writer
needs none).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import orjson

from qkdn_sdk.roles.keystore._base import (
    DuplicateKey,
    InsufficientKeys,
    KeyStoreError,
    StoredKey,
    UnknownKeys,
    _missing,
)
from qkdn_sdk.roles.keystore._seal import Sealer

__all__ = [
    "POSTGRES",
    "ROW_KEYS",
    "SCHEMA_VERSION",
    "SQLITE",
    "TOMBSTONES_KEPT",
    "Connection",
    "Dialect",
    "SQLite",
    "join_id",
    "split_id",
]

_I = TypeVar("_I")

SCHEMA_VERSION = 3
"""The schema version of a key store written by this module: SQLite's ``PRAGMA user_version``
(files of versions 1 and 2 are brought to it when opened), PostgreSQL's ``schema_version``."""

ROW_KEYS = 256
"""Most keys in one row: spending part of a row reseals the rest, so rows stay small."""
_MAX_SPAN = 2048
"""Most indexes one row covers (its bitmaps' bits)."""
TOMBSTONES_KEPT = 1 << 20
"""Deleted rows whose key IDs are still refused (see "Stored once, within a window")."""

_ROWS_AT_ONCE = (256, 64, 16, 4, 1)
"""How many rows (or values of an ``IN (...)``) one statement takes: a list goes as statements
of these sizes, largest first, so that a few texts, each prepared once and cached, serve every
list (256 rows of 11 values stay under SQLite's 32,766 parameters)."""

_PAGE_ROWS = 64
"""Most rows :func:`rows_of_pool` reads with one statement."""

_COLUMNS = "seq, pool, stem, first, span, ever, held, length, since, metadata, sealed"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS batches (seq {seq},"
    " pool TEXT NOT NULL, stem TEXT NOT NULL, first INTEGER NOT NULL, span INTEGER NOT NULL,"
    " ever {blob} NOT NULL, held {blob} NOT NULL, n INTEGER NOT NULL, length INTEGER NOT NULL,"
    " since {real} NOT NULL, metadata TEXT NOT NULL, sealed {blob} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS batches_pool ON batches (pool, seq)",
    "CREATE INDEX IF NOT EXISTS batches_stem ON batches (stem, first)",
    "CREATE TABLE IF NOT EXISTS gone (seq {seq},"
    " stem TEXT NOT NULL, first INTEGER NOT NULL, span INTEGER NOT NULL, ever {blob} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS gone_stem ON gone (stem, first)",
    "CREATE TABLE IF NOT EXISTS kek_check (sealed {blob} NOT NULL)",
)


@attrs.frozen
class Dialect:
    """What differs between the databases the statements run on; everything else is common SQL
    (savepoints, ``substr``, ``COALESCE(SUM(n), 0)``, ``INSERT ... SELECT``, ``RETURNING``)."""

    name: str
    types: Mapping[str, str]
    """The column types of the schema's ``{seq}`` (an increasing row number), ``{blob}`` and
    ``{real}``."""
    begin: str
    """Begins a transaction that changes rows."""
    lock: str
    """Appended to a lookup of rows by key ID that will change them: waits for, and then sees,
    what another transaction holding them did."""
    take_locks: tuple[str, ...]
    """Appended, in turn, to the reading of a pool's oldest rows to take them: PostgreSQL's
    first skips the rows another transaction holds (two takers get disjoint rows without
    waiting), and only when what is left is too few, the second waits for them."""

    @property
    def schema(self) -> tuple[str, ...]:
        return tuple(statement.format(**self.types) for statement in _SCHEMA)


SQLITE = Dialect(
    "SQLite",
    {"seq": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "real": "REAL"},
    # The write lock at once: a transaction that reads and then writes cannot fail to upgrade.
    begin="BEGIN IMMEDIATE",
    lock="",  # one writer at a time: the write lock serialises transactions
    take_locks=("",),
)
POSTGRES = Dialect(
    "PostgreSQL",
    {
        "seq": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "blob": "BYTEA",
        "real": "DOUBLE PRECISION",
    },
    # Each statement sees what committed before it, and a row lock it waited for shows the row
    # as its holder left it: the reasoning about locks here assumes this level.
    begin="BEGIN ISOLATION LEVEL READ COMMITTED",
    lock=" FOR UPDATE",
    take_locks=(" FOR UPDATE SKIP LOCKED", " FOR UPDATE"),
)


class Cursor(Protocol):
    """What the statements read of a cursor."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the statements need of a database connection: ``execute`` with ``?`` placeholders,
    and the database's :class:`Dialect`."""

    @property
    def dialect(self) -> Dialect: ...

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor: ...


@attrs.frozen
class SQLite:
    """A ``sqlite3`` connection (``isolation_level=None``) as a :class:`Connection`."""

    db: sqlite3.Connection

    @property
    def dialect(self) -> Dialect:
        return SQLITE

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def close(self) -> None:
        self.db.close()


FROM_VERSION_1 = (
    # Version 1 kept a UNIQUE index of key IDs in ``keys`` and the IDs alone in ``ever``.
    "CREATE TABLE ever_2 (key_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO ever_2 (key_id, seq) SELECT ever.key_id, coalesce(keys.seq, 0)"
    " FROM ever LEFT JOIN keys ON keys.key_id = ever.key_id",
    "INSERT OR IGNORE INTO ever_2 (key_id, seq) SELECT key_id, seq FROM keys",
    "DROP TABLE ever",
    "ALTER TABLE ever_2 RENAME TO ever",
)


def split_id(key_id: str) -> tuple[str, int]:
    """``(stem, index)`` of a key ID: an ID ending in four lowercase hex digits is the rest and
    their value; any other is itself with index -1. :func:`join_id` undoes it."""
    tail = key_id[-4:]
    if len(tail) == 4 and not tail.strip("0123456789abcdef"):  # str.strip: in C, per key
        return key_id[:-4], int(tail, 16)
    return key_id, -1


def join_id(stem: str, index: int) -> str:
    return stem if index < 0 else f"{stem}{index:04x}"


def _chunks(items: Sequence[_I]) -> Iterator[Sequence[_I]]:
    start = 0
    for size in _ROWS_AT_ONCE:
        while len(items) - start >= size:
            yield items[start : start + size]
            start += size


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def _bits(bitmap: int) -> list[int]:
    """The positions of the set bits, lowest first."""
    positions = []
    while bitmap:
        low = bitmap & -bitmap
        positions.append(low.bit_length() - 1)
        bitmap ^= low
    return positions


def _blob(bitmap: int) -> bytes:
    return bitmap.to_bytes((bitmap.bit_length() + 7) // 8, "little")


def _int(blob: bytes) -> int:
    return int.from_bytes(blob, "little")


@attrs.define(eq=False)
class _Row:
    """A row of ``batches`` (``seq`` 0 before it is inserted)."""

    seq: int
    pool: str
    stem: str
    first: int
    span: int
    ever: int
    held: int
    length: int
    since: float
    metadata: str
    sealed: bytes = attrs.field(repr=False)
    opened: dict[int, bytes] | None = attrs.field(default=None, repr=False)
    """The keys of ``sealed``, once opened (:meth:`keys`)."""

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> _Row:
        seq, pool, stem, first, span, ever, held, length, since, metadata, sealed = row
        return cls(
            seq, pool, stem, first, span, _int(ever), _int(held), length, since, metadata, sealed
        )

    def associated(self) -> bytes:
        """What the sealing binds the bytes to: the IDs and which of them the row holds."""
        return orjson.dumps([self.stem, self.first]) + _blob(self.held)

    def indexes(self) -> list[int]:
        """The indexes of the keys held, in order."""
        return [self.first + bit for bit in _bits(self.held)]

    def keys(self, sealer: Sealer) -> dict[int, bytes]:
        """The keys held, by index, in order (opened once)."""
        if self.opened is None:
            data = sealer.open(self.sealed, self.associated())
            self.opened = {
                index: data[position * self.length : (position + 1) * self.length]
                for position, index in enumerate(self.indexes())
            }
        return self.opened

    def stored_keys(
        self, sealer: Sealer, only: Iterable[int] | None = None
    ) -> dict[int, StoredKey]:
        metadata = orjson.loads(self.metadata)
        keys = self.keys(sealer)
        wanted = keys if only is None else only
        return {
            index: StoredKey(join_id(self.stem, index), self.pool, keys[index], dict(metadata))
            for index in wanted
        }

    def holds(self, index: int) -> bool:
        return 0 <= index - self.first < self.span and bool(self.held >> (index - self.first) & 1)


# --- making rows ------------------------------------------------------------------------------


@attrs.define
class _NewRow:
    pool: str
    stem: str
    metadata: bytes
    length: int
    indexes: list[int] = attrs.Factory(list)
    keys: list[bytes] = attrs.Factory(list)

    def accepts(self, stem: str, index: int, metadata: bytes, length: int) -> bool:
        return (
            stem == self.stem
            and length == self.length
            and metadata == self.metadata
            and self.indexes[-1] >= 0
            and self.indexes[-1] < index < self.indexes[0] + _MAX_SPAN
            and len(self.indexes) < ROW_KEYS
        )

    def row(self, sealer: Sealer, since: float) -> _Row:
        first = self.indexes[0]
        bitmap = 0
        for index in self.indexes:
            bitmap |= 1 << (index - first)
        row = _Row(
            0,
            self.pool,
            self.stem,
            first,
            self.indexes[-1] - first + 1,
            bitmap,
            bitmap,
            self.length,
            since,
            self.metadata.decode(),
            b"",
        )
        row.sealed = sealer.seal(b"".join(self.keys), row.associated())
        return row


def _group(keys: Sequence[StoredKey], metadata: list[bytes]) -> list[_NewRow]:
    """The rows of ``keys``: a key joins the open row of its pool when it has the row's stem,
    length and metadata and a higher index; keys of other pools never break it, so each pool
    keeps the order given."""
    rows: list[_NewRow] = []
    open_rows: dict[str, _NewRow] = {}
    for key, encoded in zip(keys, metadata, strict=True):
        stem, index = split_id(key.key_id)
        current = open_rows.get(key.pool)
        if current is None or not current.accepts(stem, index, encoded, len(key.key)):
            current = open_rows[key.pool] = _NewRow(key.pool, stem, encoded, len(key.key))
            rows.append(current)
        current.indexes.append(index)
        current.keys.append(key.key)
    return rows


def _covering(db: Connection, stems: Sequence[str]) -> list[tuple[str, int, int, int]]:
    """``(stem, first, span, ever)`` of every row and tombstone of ``stems``."""
    found = []
    for chunk in _chunks(stems):
        marks = _marks(chunk)
        found += [
            (stem, first, span, _int(ever))
            for stem, first, span, ever in db.execute(
                f"SELECT stem, first, span, ever FROM batches WHERE stem IN ({marks}) UNION ALL "
                f"SELECT stem, first, span, ever FROM gone WHERE stem IN ({marks})",
                (*chunk, *chunk),
            )
        ]
    return found


def _once(ranges: Iterable[tuple[str, int, int, int]]) -> dict[str, list[tuple[int, int]]]:
    """By stem, ``(first, ever)`` of each range."""
    by_stem: dict[str, list[tuple[int, int]]] = {}
    for stem, first, _, ever in ranges:
        by_stem.setdefault(stem, []).append((first, ever))
    return by_stem


def _was_stored(ranges: dict[str, list[tuple[int, int]]], stem: str, index: int) -> bool:
    return any(
        index - first >= 0 and ever >> (index - first) & 1 for first, ever in ranges.get(stem, ())
    )


def insert(
    db: Connection, sealer: Sealer, keys: Sequence[StoredKey], metadata: list[bytes]
) -> dict[str, int]:
    """Insert ``keys`` as rows; raises :class:`DuplicateKey` (nothing inserted) for the first
    key ID stored before (see the module docstring) or given twice. Returns how many keys went
    to each pool."""
    if not keys:
        return {}
    rows = _group(keys, metadata)
    stems = [row.stem for row in rows]
    before = _once(_covering(db, list(set(stems))))
    # A row's indexes rise, so a duplicate needs a stem stored before or in two rows: else the
    # IDs are not looked at one by one (a key request's 128 keys are one fresh stem).
    if before or len(set(stems)) < len(stems):
        given: set[str] = set()
        for key in keys:
            if key.key_id in given:
                raise DuplicateKey(key.key_id, twice=True)
            if _was_stored(before, *split_id(key.key_id)):
                raise DuplicateKey(key.key_id)
            given.add(key.key_id)
    since = time.time()
    _insert_rows(db, [new.row(sealer, since) for new in rows])
    added: dict[str, int] = {}
    for new in rows:
        added[new.pool] = added.get(new.pool, 0) + len(new.indexes)
    return added


def _insert_rows(db: Connection, rows: Sequence[_Row]) -> None:
    """Insert ``rows`` in their order, a few statements of many rows each: every statement a
    worker thread runs lets go of the GIL and takes it back, which costs up to the switch
    interval (5 ms) while the event loop runs Python, so a transaction runs few of them."""
    values = [
        (row.pool, row.stem, row.first, row.span, _blob(row.ever), _blob(row.held),
         row.held.bit_count(), row.length, row.since, row.metadata, row.sealed)
        for row in rows
    ]  # fmt: skip
    for chunk in _chunks(values):
        db.execute(
            "INSERT INTO batches (pool, stem, first, span, ever, held, n, length, since,"
            " metadata, sealed) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk)),
            [value for row in chunk for value in row],
        )


# --- finding and removing keys ----------------------------------------------------------------


def rows_of_pool(
    db: Connection, pool: str, keys: int, *, newest: bool = False, lock: str = ""
) -> Iterator[_Row]:
    """The rows of ``pool``, oldest first (newest first with ``newest``), for a reader that
    wants at most ``keys`` of their keys, with ``lock`` appended to each statement. Read a page
    at a time, as the reader goes on: pages grow from one row, and never hold more rows than
    keys still wanted (a row holds one at least), so a reader reads, and locks, few rows it does
    not use."""
    after, compare, order = ((1 << 63) - 1, "<", "DESC") if newest else (-1, ">", "ASC")
    page = 1
    while keys > 0:
        limit = min(page, keys)
        rows = [
            _Row.of(values)
            for values in db.execute(
                f"SELECT {_COLUMNS} FROM batches WHERE pool = ? AND seq {compare} ?"
                f" ORDER BY seq {order} LIMIT ?{lock}",
                (pool, after, limit),
            ).fetchall()
        ]
        for row in rows:
            yield row
            keys -= row.held.bit_count()
        if len(rows) < limit:  # the pool's last row (a row another holds is not counted)
            return
        after, page = rows[-1].seq, min(page * 4, _PAGE_ROWS)


def find(
    db: Connection, pool: str | None, key_ids: Sequence[str], *, lock: bool
) -> dict[str, tuple[_Row, int]]:
    """Those of ``key_ids`` held (in ``pool``, or any pool when None): their row and index.
    Rows are shared: one object per row. With ``lock``, the rows are locked until the
    transaction ends (``Dialect.lock``: waiting for, then seeing, what a transaction holding
    one did with it), in the order of ``seq``, so that lookups never lock in opposite orders."""
    wanted: dict[str, list[tuple[str, int]]] = {}
    for key_id in key_ids:
        stem, index = split_id(key_id)
        wanted.setdefault(stem, []).append((key_id, index))
    stems = list(wanted)
    found: dict[str, tuple[_Row, int]] = {}
    where = "" if pool is None else " AND pool = ?"
    clause = db.dialect.lock if lock else ""
    for chunk in _chunks(stems):
        params = (*chunk, pool) if pool is not None else tuple(chunk)
        for values in db.execute(
            f"SELECT {_COLUMNS} FROM batches WHERE stem IN ({_marks(chunk)}){where}"
            f" ORDER BY seq{clause}",
            params,
        ).fetchall():
            row = _Row.of(values)
            for key_id, index in wanted[row.stem]:
                if row.holds(index):
                    found[key_id] = (row, index)
    return found


def stored_in_order(
    key_ids: Sequence[str],
    found: dict[str, tuple[_Row, int]],
    keys_of: Callable[[_Row], dict[int, bytes]],
) -> list[StoredKey]:
    """The keys ``key_ids`` (each in ``found``: its row and index) in that order, their bytes
    from ``keys_of(row)`` (:meth:`_Row.keys`, or the keys a row held before a change); each
    row's metadata is parsed once, not once per key."""
    metadata: dict[_Row, dict[str, Any]] = {}
    stored = []
    for key_id in key_ids:
        row, index = found[key_id]
        if row not in metadata:
            metadata[row] = orjson.loads(row.metadata)
        stored.append(StoredKey(key_id, row.pool, keys_of(row)[index], dict(metadata[row])))
    return stored


def find_all(
    db: Connection, pool: str, key_ids: Sequence[str], *, lock: bool
) -> dict[str, tuple[_Row, int]]:
    """:func:`find`, raising :class:`UnknownKeys` when ``pool`` lacks one of ``key_ids`` (or
    one is asked twice)."""
    found = find(db, pool, key_ids, lock=lock)
    missing = _missing(key_ids, found.__contains__)
    if missing:
        raise UnknownKeys(pool, missing)
    return found


def remove(
    db: Connection, sealer: Sealer, found: Iterable[tuple[_Row, int]]
) -> dict[_Row, dict[int, bytes]]:
    """Remove the keys ``found`` from their rows (deleting emptied rows, leaving tombstones);
    returns each row's keys as they were, by index."""
    by_row: dict[_Row, list[int]] = {}
    for row, index in found:
        by_row.setdefault(row, []).append(index)
    before = {}
    emptied = []
    for row, indexes in by_row.items():
        keys = row.keys(sealer)
        before[row] = keys
        taken = 0
        for index in indexes:
            taken |= 1 << (index - row.first)
        if row.held & ~taken:
            _keep(db, sealer, row, keys, row.held & ~taken)
        else:
            emptied.append(row)
    delete_rows(db, emptied)  # in a few statements (see _insert_rows)
    return before


def _keep(db: Connection, sealer: Sealer, row: _Row, keys: dict[int, bytes], held: int) -> None:
    """Leave ``row`` holding the keys of bitmap ``held`` of ``keys`` (its keys): rewrite and
    reseal it, or delete it when that is none."""
    if not held:
        delete_rows(db, [row])
        return
    row.held = held
    row.opened = {index: keys[index] for index in row.indexes()}
    row.sealed = sealer.seal(b"".join(row.opened.values()), row.associated())
    db.execute(
        "UPDATE batches SET held = ?, n = ?, sealed = ? WHERE seq = ?",
        (_blob(held), held.bit_count(), row.sealed, row.seq),
    )


def _bury(db: Connection, tombstones: Sequence[tuple[str, int, int, bytes]]) -> None:
    """Insert ``(stem, first, span, ever)`` tombstones, in order."""
    for chunk in _chunks(tombstones):
        rows = ",".join(["(?,?,?,?)"] * len(chunk))
        db.execute(
            f"INSERT INTO gone (stem, first, span, ever) VALUES {rows}",
            [value for tombstone in chunk for value in tombstone],
        )


def delete_rows(db: Connection, rows: Sequence[_Row]) -> None:
    """Delete ``rows``, leaving their tombstones."""
    _bury(db, [(row.stem, row.first, row.span, _blob(row.ever)) for row in rows])
    for chunk in _chunks([row.seq for row in rows]):
        db.execute(f"DELETE FROM batches WHERE seq IN ({_marks(chunk)})", chunk)


def delete_where(db: Connection, where: str, params: Sequence[Any]) -> dict[str, int]:
    """Delete every row matching ``where``, leaving tombstones; how many keys left each pool.
    (One statement deletes and reads what it deleted: a row another transaction adds or
    changes meanwhile is either deleted and buried, or left.)"""
    deleted = sorted(
        db.execute(
            f"DELETE FROM batches WHERE {where} RETURNING seq, pool, n, stem, first, span, ever",
            params,
        ).fetchall()
    )
    _bury(db, [(stem, first, span, ever) for _, _, _, stem, first, span, ever in deleted])
    counts: dict[str, int] = {}
    for _, pool, n, *_ in deleted:
        counts[pool] = counts.get(pool, 0) + n
    return counts


def take_oldest(db: Connection, sealer: Sealer, pool: str, count: int) -> list[StoredKey]:
    """Remove and return the ``count`` oldest keys of ``pool`` (:class:`InsufficientKeys`, and
    nothing removed, when it holds fewer), reading and locking its rows with each of
    ``Dialect.take_locks`` in turn until they hold enough."""
    if count == 0:
        return []
    for lock in db.dialect.take_locks:
        rows: list[_Row] = []
        held = 0
        for row in rows_of_pool(db, pool, count, lock=lock):
            rows.append(row)
            held += row.held.bit_count()
            if held >= count:
                break
        if held >= count:
            break
    else:
        raise InsufficientKeys(pool, count, held)
    *emptied, last = rows
    taken = [key for row in emptied for key in row.stored_keys(sealer).values()]
    stored = last.stored_keys(sealer)
    indexes = list(stored)
    wanted = count - len(taken)
    taken += [stored[index] for index in indexes[:wanted]]
    if wanted == len(indexes):
        delete_rows(db, rows)
    else:
        delete_rows(db, emptied)
        left = 0
        for index in indexes[wanted:]:
            left |= 1 << (index - last.first)
        _keep(db, sealer, last, {i: k.key for i, k in stored.items()}, left)
    return taken


def keys_in_order(
    db: Connection, sealer: Sealer | None, pool: str, limit: int, *, newest: bool = False
) -> list[StoredKey] | list[str]:
    """The ``limit`` oldest (or newest) keys of ``pool``, oldest first: as StoredKeys, or their
    IDs alone when ``sealer`` is None (nothing is opened then)."""
    found: list[Any] = []
    for row in rows_of_pool(db, pool, limit, newest=newest):
        indexes = row.indexes()
        if newest:
            indexes = indexes[::-1]
        indexes = indexes[: limit - len(found)]
        if sealer is None:
            found += [join_id(row.stem, index) for index in indexes]
        else:
            stored = row.stored_keys(sealer, indexes)
            found += [stored[index] for index in indexes]
        if len(found) >= limit:
            break
    return found[::-1] if newest else found


def ever_stored(db: Connection, key_ids: Sequence[str]) -> set[str]:
    """Which of ``key_ids`` a row holds, or once held, or a tombstone names."""
    ids = {key_id: split_id(key_id) for key_id in key_ids}
    ranges = _once(_covering(db, list({stem for stem, _ in ids.values()})))
    return {key_id for key_id, (stem, index) in ids.items() if _was_stored(ranges, stem, index)}


def move_pool(db: Connection, source: str, destination: str) -> int:
    """Move every row of pool ``source`` into ``destination``, each keeping its place in the
    order of rows (its seq); how many keys moved."""
    moved = db.execute(
        "UPDATE batches SET pool = ?, since = ? WHERE pool = ? RETURNING n",
        (destination, time.time(), source),
    ).fetchall()
    return sum(n for (n,) in moved)


def move_rows(
    db: Connection,
    sealer: Sealer,
    found: dict[str, tuple[_Row, int]],
    destination: str,
) -> None:
    """Move the keys ``found`` into ``destination``, after the keys it holds, in their order in
    the source: each row they leave gives a row of the keys it loses (the whole row, when it
    loses all)."""
    by_row: dict[_Row, int] = {}
    for row, index in found.values():
        by_row[row] = by_row.get(row, 0) | 1 << (index - row.first)
    since = time.time()
    leaving: list[_Row] = []
    arriving: list[_Row] = []
    for row in sorted(by_row, key=lambda row: row.seq):
        moving = by_row[row]
        keys = row.keys(sealer)
        if moving == row.held:
            leaving.append(row)  # no tombstone: its keys move
        else:
            _keep(db, sealer, row, keys, row.held & ~moving)
        moved = _Row(0, destination, row.stem, row.first, row.span, row.ever, moving,
                     row.length, since, row.metadata, b"")  # fmt: skip
        moved.sealed = sealer.seal(
            b"".join(keys[index] for index in moved.indexes()), moved.associated()
        )
        arriving.append(moved)
    for chunk in _chunks([row.seq for row in leaving]):
        db.execute(f"DELETE FROM batches WHERE seq IN ({_marks(chunk)})", chunk)
    _insert_rows(db, arriving)


def forget_old_tombstones(db: Connection, kept: int) -> None:
    """Keep only the ``kept`` newest tombstones."""
    newest = db.execute("SELECT max(seq) FROM gone").fetchone()[0]
    if newest is not None and newest > kept:
        db.execute("DELETE FROM gone WHERE seq <= ?", (newest - kept,))


def pool_count(db: Connection, pool: str) -> int:
    row = db.execute("SELECT COALESCE(SUM(n), 0) FROM batches WHERE pool = ?", (pool,)).fetchone()
    return int(row[0])


def pool_counts(db: Connection) -> dict[str, int]:
    return {pool: n for pool, n in db.execute("SELECT pool, SUM(n) FROM batches GROUP BY pool")}


def check_version(version: int, name: str) -> None:
    """Refuse the store ``name`` when schema ``version`` is newer than this module's."""
    if version > SCHEMA_VERSION:
        raise KeyStoreError(
            f"cannot open key store {name!r}: schema version {version} is newer "
            f"than this SDK's ({SCHEMA_VERSION})"
        )


def check_kek(db: Connection, sealer: Sealer, name: str) -> None:
    """Make sure ``sealer``'s KEK is the one the store ``name`` was written with (a new store:
    record it)."""
    row = db.execute("SELECT sealed FROM kek_check").fetchone()
    if row is None:
        db.execute("INSERT INTO kek_check (sealed) VALUES (?)", (sealer.seal(b"", b"kek"),))
        return
    try:
        sealer.open(row[0], b"kek")
    except KeyStoreError:
        raise KeyStoreError(
            f"cannot open key store {name!r}: its key-encryption key is not the one given"
        ) from None


def upgrade_from_version_2(db: Connection, sealer: Sealer) -> None:
    """Bring the tables of version 2 (one row per key in ``keys``, every ID ever stored in
    ``ever``) to batches: each pool's keys in their order, and tombstones for the newest
    :data:`TOMBSTONES_KEPT` IDs no longer held."""
    keys = [
        StoredKey(key_id, pool, bytes(key), orjson.loads(metadata))
        for key_id, pool, key, metadata in db.execute(
            "SELECT key_id, pool, key, metadata FROM keys ORDER BY seq"
        )
    ]
    gone = db.execute(
        "SELECT key_id FROM ever WHERE key_id NOT IN (SELECT key_id FROM keys)"
        " ORDER BY seq DESC LIMIT ?",
        (TOMBSTONES_KEPT,),
    ).fetchall()
    db.execute("DROP TABLE keys")
    db.execute("DROP TABLE ever")
    for statement in SQLITE.schema:
        db.execute(statement)
    for (key_id,) in reversed(gone):
        stem, index = split_id(key_id)
        db.execute(
            "INSERT INTO gone (stem, first, span, ever) VALUES (?,?,1,?)", (stem, index, b"\x01")
        )
    insert(db, sealer, keys, [orjson.dumps(key.metadata) for key in keys])
