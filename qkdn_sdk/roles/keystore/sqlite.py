""":class:`SQLiteKeyStore`: a :class:`~qkdn_sdk.roles.keystore.KeyStore` in one SQLite file per
KM, with its worker thread and group commit.

Each operation is a function of the connection (made of the statements of
:mod:`~qkdn_sdk.roles.keystore._sql`), queued as an :class:`_Operation`; whoever takes the store's
lock next runs every queued operation in one transaction in a worker thread (each in its own
savepoint when there are several) and commits them with one fsync. The theory of operation is in
:mod:`qkdn_sdk.roles.keystore`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, NoReturn, Self, TypeVar

import attrs
import trio

from qkdn_sdk.roles.keystore._base import (
    KeyStoreError,
    Splitter,
    StoredKey,
    _add,
    _check_count,
    _check_keys,
    _ClosedOnExit,
    _counts,
    _pool_sizes,
)
from qkdn_sdk.roles.keystore._sql import (
    _FROM_VERSION_1,
    _SCHEMA,
    SCHEMA_VERSION,
    _chunks,
    _delete,
    _ever_stored,
    _held,
    _held_all,
    _placeholders,
    _pools_of,
    _put,
    _row_key,
    _take_oldest,
)

__all__ = ["SQLiteKeyStore"]

_T = TypeVar("_T")


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
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _owner_only(path)
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


def _owner_only(path: Path) -> None:
    """Make a new store's file owner-only (0600, whatever the umask: SQLite gives its ``-wal``
    and ``-shm`` files the same mode), or check an existing one is: raise
    :class:`KeyStoreError` saying how to fix a file other users may read or write."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
            try:
                mode = stat.S_IMODE(file.stat().st_mode)
            except FileNotFoundError:
                continue
            if mode & 0o077:
                whose = "it" if file == path else f"its {file.name}"
                raise KeyStoreError(
                    f"cannot open key store {str(path)!r}: other users may read or write {whose} "
                    f"(mode {mode:04o}); make it owner-only: chmod 600 {shlex.quote(str(file))}"
                ) from None
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
