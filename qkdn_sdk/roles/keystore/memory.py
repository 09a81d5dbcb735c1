""":class:`MemoryKeyStore`: a :class:`~qkdn_sdk.roles.keystore.KeyStore` in an in-memory SQLite
database, for tests and single-process networks.

It is :class:`~qkdn_sdk.roles.keystore.SQLiteKeyStore`'s code without the file: the same
statements, so the same semantics, run in the event loop's thread (a database in memory never
waits on a disk); its keys are sealed under a KEK of its own, made when it is. The theory of
operation is in :mod:`qkdn_sdk.roles.keystore`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable

import trio

from qkdn_sdk.roles.keystore import _sql
from qkdn_sdk.roles.keystore._base import KeyStoreError
from qkdn_sdk.roles.keystore._seal import KEK_BYTES, Sealer
from qkdn_sdk.roles.keystore._store import _T, _SQLKeyStore

__all__ = ["MemoryKeyStore"]


class MemoryKeyStore(_SQLKeyStore):
    """A :class:`KeyStore` in memory, with the semantics of :class:`SQLiteKeyStore` but for
    durability. Each async method checkpoints once, then runs its transaction without yielding."""

    def __init__(self) -> None:
        db = _sql.SQLite(sqlite3.connect(":memory:", isolation_level=None))
        sealer = Sealer(os.urandom(KEK_BYTES))
        db.execute("BEGIN")
        for statement in _sql.SQLITE.schema:
            db.execute(statement)
        _sql.check_kek(db, sealer, ":memory:")
        db.execute("COMMIT")
        self._db: _sql.SQLite | None = db
        super().__init__(sealer, {})

    def __repr__(self) -> str:
        state = "closed" if self._db is None else f"{sum(self._counts.values())} keys"
        return f"<MemoryKeyStore {state}>"

    def _check_open(self) -> _sql.SQLite:
        if self._db is None:
            raise KeyStoreError("the key store is closed")
        return self._db

    async def _transaction(
        self,
        work: Callable[[_sql.Connection], _T],
        committed: Callable[[_T], None] | None = None,
    ) -> _T:
        await trio.lowlevel.checkpoint()
        db = self._check_open()
        db.execute("BEGIN")
        try:
            result = work(db)
            _sql.forget_old_tombstones(db, _sql.TOMBSTONES_KEPT)
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise KeyStoreError(f"the key store in memory failed: {exc}") from None
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if committed is not None:
            committed(result)
        return result

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
