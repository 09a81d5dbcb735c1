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

Modules: :mod:`~qkdn_sdk.roles.keystore._base` (:class:`StoredKey`, the errors, the
:class:`KeyStore` protocol and the rules both stores share),
:mod:`~qkdn_sdk.roles.keystore.memory` (:class:`MemoryKeyStore`),
:mod:`~qkdn_sdk.roles.keystore.sqlite` (:class:`SQLiteKeyStore`: its file, worker thread
and group commit) and :mod:`~qkdn_sdk.roles.keystore._sql` (its schema and the statements
it runs in its transactions).
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
from qkdn_sdk.roles.keystore.memory import MemoryKeyStore
from qkdn_sdk.roles.keystore.sqlite import SQLiteKeyStore

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

if TYPE_CHECKING:
    # mypy checks that both classes implement the protocol.
    def _implements(memory: MemoryKeyStore, sqlite: SQLiteKeyStore) -> list[KeyStore]:
        return [memory, sqlite]
