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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, NoReturn, Self, TypeVar

import attrs
import trio

from qkdn_sdk.roles.keystore import _sql
from qkdn_sdk.roles.keystore._base import KeyStoreError
from qkdn_sdk.roles.keystore._seal import Sealer, load_kek
from qkdn_sdk.roles.keystore._store import _SQLKeyStore

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


_CHECKPOINT_SECONDS = 5.0
"""How often, at most, the store copies its write-ahead log into the file and truncates it (the
log keeps the pages of rows since rewritten or deleted: sealed, but not kept beyond need), and
forgets tombstones past :data:`~qkdn_sdk.roles.keystore._sql.TOMBSTONES_KEPT` (a few seconds'
more are harmless; each statement costs the worker thread a wait for the GIL)."""


class SQLiteKeyStore(_SQLKeyStore):
    """A :class:`KeyStore` in one SQLite file per KM; open it with :meth:`open`.

    A key taken stays taken after a crash (``synchronous=FULL``); reopening the file sees exactly
    the keys not yet taken, and still refuses the key IDs it refused. While open, the store
    holds the file's exclusive lock, so a second store (or process) cannot open it.
    """

    def __init__(
        self, path: Path, db: sqlite3.Connection, sealer: Sealer, counts: dict[str, int]
    ) -> None:
        """Use :meth:`open`."""
        super().__init__(sealer, counts)
        self._path = path
        self._db: sqlite3.Connection | None = db
        self._checkpointed = self._pruned = time.monotonic()
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
    async def open(cls, path: str | Path, *, kek: bytes | None = None) -> Self:
        """Open the key store in ``path``, creating the file (and its parent directory) when
        missing, and load the pool counters. Key bytes are sealed under ``kek``, the
        key-encryption key (:func:`load_kek` reads one from a file, the environment or a
        command); by default the KEK file ``<path>.kek`` beside it, made when missing.

        Raises :class:`KeyStoreError`, one line naming the file, when it cannot be opened: not a
        database, corrupt, written by a newer version, in use by another store, its directory
        cannot be made, or ``kek`` is not the KEK it was written with.
        """
        path = Path(path)
        if kek is None:
            try:
                kek = await trio.to_thread.run_sync(load_kek, f"file:{path}.kek")
            except KeyStoreError as exc:
                raise KeyStoreError(f"cannot open key store {str(path)!r}: {exc}") from None
        sealer = Sealer(kek)
        db, counts = await trio.to_thread.run_sync(cls._open_sync, path, sealer)
        return cls(path, db, sealer, counts)

    @staticmethod
    def _open_sync(path: Path, sealer: Sealer) -> tuple[sqlite3.Connection, dict[str, int]]:
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
            db.execute("PRAGMA secure_delete=ON")  # a deleted row's bytes are zeroed in the file
            db.execute("BEGIN IMMEDIATE")
            counts = _prepare(db, sealer, str(path))
            db.execute("COMMIT")
        except (sqlite3.Error, KeyStoreError) as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            if isinstance(exc, KeyStoreError):
                raise
            raise KeyStoreError(f"cannot open key store {str(path)!r}: {exc}") from None
        return db, counts

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
                    if time.monotonic() - self._pruned >= _CHECKPOINT_SECONDS:
                        self._pruned = time.monotonic()
                        _sql.forget_old_tombstones(db, _sql.TOMBSTONES_KEPT)
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
        if time.monotonic() - self._checkpointed >= _CHECKPOINT_SECONDS:
            self._checkpoint(db)
        return results

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        """Copy the write-ahead log into the file and truncate it (its failure is harmless: the
        log stays, and the next commit tries again)."""
        self._checkpointed = time.monotonic()
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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
                    await trio.to_thread.run_sync(self._close_sync, db)

    def _close_sync(self, db: sqlite3.Connection) -> None:
        self._checkpoint(db)
        db.close()


def _prepare(db: sqlite3.Connection, sealer: Sealer, path: str) -> dict[str, int]:
    """Create the tables of a new file, or bring an older file's to this version, check the KEK,
    and count each pool's keys."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > _sql.SCHEMA_VERSION:
        raise KeyStoreError(
            f"cannot open key store {path!r}: schema version {version} is newer "
            f"than this SDK's ({_sql.SCHEMA_VERSION})"
        )
    if version == 1:
        for statement in _sql.FROM_VERSION_1:
            db.execute(statement)
    for statement in _sql.SCHEMA:
        db.execute(statement)
    _sql.check_kek(db, sealer, path)
    if version in (1, 2):
        _sql.upgrade_from_version_2(db, sealer)
    db.execute(f"PRAGMA user_version={_sql.SCHEMA_VERSION}")
    return _sql.pool_counts(db)


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
