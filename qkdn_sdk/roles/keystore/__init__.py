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
  ``synchronous=FULL``, :class:`PostgresKeyStore` with ``synchronous_commit`` on, before either
  hands a key out).
- **Stored once.** A key ID held now, or taken, discarded or expired within a window (the last
  :data:`~qkdn_sdk.roles.keystore._sql.TOMBSTONES_KEPT` rows deleted), cannot be stored again:
  :meth:`KeyStore.put` raises :class:`DuplicateKey`. Why a window is enough is said in
  :mod:`~qkdn_sdk.roles.keystore._sql`.

A row of the store holds a *batch*: the keys of one call to one pool whose IDs share all but
their last four hex digits (a key request's keys, a QKD-key's link units), sealed together;
spending part of a row rewrites it (:mod:`~qkdn_sdk.roles.keystore._sql`). Key bytes rest only
sealed under a key-encryption key kept outside the database (:mod:`~qkdn_sdk.roles.keystore._seal`);
a deleted row's bytes are zeroed in the file (``secure_delete``), and the write-ahead log is
copied back and truncated every few seconds. :meth:`KeyStore.expire` erases what waited too long.

The number of keys of each pool is kept in memory (:meth:`KeyStore.count` is O(1), cheap enough
for every status request): a SQLite store is the only writer of its file (it holds SQLite's
exclusive lock while open), loads the counters when it opens and updates them after each commit;
a PostgreSQL store reads them afresh at the end of each of its transactions, so they are the
counts as of its last transaction.

:class:`SQLiteKeyStore`, the embedded default, keeps one file per KM: one sqlite3 connection, WAL
journal. :class:`PostgresKeyStore` keeps the same tables in a PostgreSQL database, where the
database itself keeps single delivery (the rows a transaction will change are locked). Both run
every operation in a worker thread (``trio.to_thread.run_sync``) under a :class:`trio.Lock`, so
the event loop never waits on the disk or the network and operations never interleave.
Operations that arrive while a transaction runs wait and then share the next one (group commit:
one commit for all of them), each in its own savepoint, so each still happens whole or not at
all. :class:`MemoryKeyStore` runs the same statements on a database in memory, in the event
loop's thread.

Key bytes never appear in a ``repr``, an exception text or a log line. Errors of the database
(a corrupt file, a full disk, a broken connection) are turned into :class:`KeyStoreError` with
one line naming the file or database; no ``sqlite3`` or ``psycopg`` exception leaks to callers.

Modules: :mod:`~qkdn_sdk.roles.keystore._base` (:class:`StoredKey`, the errors, the
:class:`KeyStore` protocol and the checks of what callers hand in),
:mod:`~qkdn_sdk.roles.keystore._store` (the operations, as SQL run in a transaction),
:mod:`~qkdn_sdk.roles.keystore._threaded` (the worker thread and group commit),
:mod:`~qkdn_sdk.roles.keystore.sqlite` (:class:`SQLiteKeyStore`: its file),
:mod:`~qkdn_sdk.roles.keystore.postgres` (:class:`PostgresKeyStore`: its connection),
:mod:`~qkdn_sdk.roles.keystore.memory` (:class:`MemoryKeyStore`),
:mod:`~qkdn_sdk.roles.keystore._sql` (the schema, the statements and the two databases'
dialects) and :mod:`~qkdn_sdk.roles.keystore._seal` (the KEK and sealing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qkdn_sdk.roles.keystore._base import (
    DuplicateKey,
    InsufficientKeys,
    KeyStore,
    KeyStoreError,
    Splitter,
    StoredKey,
    UnknownKeys,
)
from qkdn_sdk.roles.keystore._seal import load_kek
from qkdn_sdk.roles.keystore.memory import MemoryKeyStore
from qkdn_sdk.roles.keystore.postgres import POSTGRES_SCHEMES, PostgresKeyStore
from qkdn_sdk.roles.keystore.sqlite import SQLiteKeyStore

__all__ = [
    "POSTGRES_SCHEMES",
    "DuplicateKey",
    "InsufficientKeys",
    "KeyStore",
    "KeyStoreError",
    "MemoryKeyStore",
    "PostgresKeyStore",
    "SQLiteKeyStore",
    "Splitter",
    "StoredKey",
    "UnknownKeys",
    "load_kek",
]

if TYPE_CHECKING:
    # mypy checks that every class implements the protocol.
    def _implements(
        memory: MemoryKeyStore, sqlite: SQLiteKeyStore, postgres: PostgresKeyStore
    ) -> list[KeyStore]:
        return [memory, sqlite, postgres]
