""":class:`MemoryKeyStore`: a :class:`~qkdn_sdk.roles.keystore.KeyStore` in dicts, for tests.

It keeps the semantics of :class:`~qkdn_sdk.roles.keystore.SQLiteKeyStore` (taken once, stored
once, each change atomic); the theory of operation is in :mod:`qkdn_sdk.roles.keystore`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import attrs
import orjson
import trio

from qkdn_sdk.roles.keystore._base import (
    InsufficientKeys,
    KeyStoreError,
    Splitter,
    StoredKey,
    UnknownKeys,
    _check_count,
    _check_duplicates,
    _check_keys,
    _ClosedOnExit,
    _missing,
)

__all__ = ["MemoryKeyStore"]


@attrs.define
class _Entry:
    seq: int
    pool: str
    key: bytes = attrs.field(repr=False)
    metadata: bytes  # JSON, so a stored key cannot change when the caller's dict does

    def stored_key(self, key_id: str) -> StoredKey:
        return StoredKey(key_id, self.pool, self.key, orjson.loads(self.metadata))


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
