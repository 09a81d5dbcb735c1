""":class:`SQLiteKeyStore`: a :class:`~qkdn_sdk.roles.keystore.KeyStore` in one SQLite file per
KM, run in a worker thread with group commit (:mod:`~qkdn_sdk.roles.keystore._threaded`). The
theory of operation is in :mod:`qkdn_sdk.roles.keystore`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import stat
import time
from pathlib import Path
from typing import Self

import trio

from qkdn_sdk.roles.keystore import _sql
from qkdn_sdk.roles.keystore._base import KeyStoreError
from qkdn_sdk.roles.keystore._seal import Sealer, load_kek
from qkdn_sdk.roles.keystore._threaded import _Connection, _open_sync, _ThreadedKeyStore

__all__ = ["SQLiteKeyStore"]

_CHECKPOINT_SECONDS = 5.0
"""How often, at most, the store copies its write-ahead log into the file and truncates it: the
log keeps the pages of rows since rewritten or deleted (sealed, but not kept beyond need)."""


class SQLiteKeyStore(_ThreadedKeyStore):
    """A :class:`KeyStore` in one SQLite file per KM; open it with :meth:`open`.

    A key taken stays taken after a crash (``synchronous=FULL``); reopening the file sees exactly
    the keys not yet taken, and still refuses the key IDs it refused. While open, the store
    holds the file's exclusive lock, so a second store (or process) cannot open it.
    """

    _errors = (sqlite3.Error,)

    def __init__(self, path: Path, db: _sql.SQLite, sealer: Sealer, counts: dict[str, int]) -> None:
        """Use :meth:`open`."""
        super().__init__(str(path), db, sealer, counts)
        self._path = path
        self._checkpointed = time.monotonic()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

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
    def _open_sync(path: Path, sealer: Sealer) -> tuple[_sql.SQLite, dict[str, int]]:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _owner_only(path)
        except OSError as exc:
            raise KeyStoreError(f"cannot open key store {str(path)!r}: {exc}") from None

        def connect() -> _sql.SQLite:
            # timeout=0: the only lock to wait for is another store's, held until it closes.
            return _sql.SQLite(
                sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
            )

        def prepare(db: _sql.SQLite) -> dict[str, int]:
            # Exclusive before WAL: the store must be the only writer, or its counters lie.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA secure_delete=ON")  # a deleted row's bytes are zeroed in the file
            db.execute("BEGIN IMMEDIATE")
            counts = _prepare(db, sealer, str(path))
            db.execute("COMMIT")
            return counts

        return _open_sync(str(path), (sqlite3.Error,), connect, prepare)

    def _after_sync(self, db: _sql.Connection) -> None:
        """Every few seconds, copy the write-ahead log into the file and truncate it (its
        failure is harmless: the log stays, and a later transaction tries again)."""
        if time.monotonic() - self._checkpointed >= _CHECKPOINT_SECONDS:
            self._checkpoint(db)

    def _checkpoint(self, db: _sql.Connection) -> None:
        self._checkpointed = time.monotonic()
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _close_sync(self, db: _Connection) -> None:
        self._checkpoint(db)
        db.close()


def _prepare(db: _sql.Connection, sealer: Sealer, path: str) -> dict[str, int]:
    """Create the tables of a new file, or bring an older file's to this version, check the KEK,
    and count each pool's keys."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    _sql.check_version(version, path)
    if version == 1:
        for statement in _sql.FROM_VERSION_1:
            db.execute(statement)
    for statement in _sql.SQLITE.schema:
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
