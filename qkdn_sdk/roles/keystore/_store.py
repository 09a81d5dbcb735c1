"""What the key stores of SQL share: every operation of the
:class:`~qkdn_sdk.roles.keystore.KeyStore` protocol, as a function of the connection (made of the
statements of :mod:`~qkdn_sdk.roles.keystore._sql`) run by the subclass's ``_transaction``, and
the pool counters. The theory of operation is in :mod:`qkdn_sdk.roles.keystore`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from qkdn_sdk.roles.keystore import _sql
from qkdn_sdk.roles.keystore._base import (
    Splitter,
    StoredKey,
    UnknownKeys,
    _add,
    _check_count,
    _check_keys,
    _ClosedOnExit,
    _counts,
    _missing,
)
from qkdn_sdk.roles.keystore._seal import Sealer

__all__: list[str] = []

_T = TypeVar("_T")


class _SQLKeyStore(_ClosedOnExit):
    """The operations; a subclass says how a transaction runs and when the store is open."""

    def __init__(self, sealer: Sealer, counts: dict[str, int]) -> None:
        self._sealer = sealer
        self._counts = counts

    @abc.abstractmethod
    async def _transaction(
        self,
        work: Callable[[_sql.Connection], _T],
        committed: Callable[[_T], None] | None = None,
    ) -> _T:
        """Run ``work`` as one transaction (or a savepoint of a shared one), and ``committed``
        with its result in the event loop once it is durable (to update the counters)."""

    @abc.abstractmethod
    def _check_open(self) -> object:
        """Raise :class:`KeyStoreError` when the store is closed."""

    async def put(self, keys: Sequence[StoredKey]) -> None:
        metadata = _check_keys(keys)
        keys = list(keys)
        await self._transaction(
            lambda db: _sql.insert(db, self._sealer, keys, metadata), self._added
        )

    async def take(self, pool: str, count: int) -> list[StoredKey]:
        _check_count("count", count)
        return await self._transaction(
            lambda db: _sql.take_oldest(db, self._sealer, pool, count),
            lambda taken: _add(self._counts, pool, -len(taken)),
        )

    async def take_ids(
        self, pool: str, key_ids: Sequence[str], *, replace_with: Sequence[StoredKey] = ()
    ) -> list[StoredKey]:
        metadata = _check_keys(replace_with)
        key_ids = list(key_ids)
        replace_with = list(replace_with)

        def work(db: _sql.Connection) -> tuple[list[StoredKey], dict[str, int]]:
            taken = self._remove(db, key_ids, _sql.find_all(db, pool, key_ids, lock=True))
            return taken, _sql.insert(db, self._sealer, replace_with, metadata)

        def committed(result: tuple[list[StoredKey], dict[str, int]]) -> None:
            _add(self._counts, pool, -len(result[0]))
            self._added(result[1])

        return (await self._transaction(work, committed))[0]

    async def take_ids_and_oldest(
        self, pool: str, key_ids: Sequence[str], oldest_pool: str, count: int
    ) -> tuple[list[StoredKey], list[StoredKey]]:
        _check_count("count", count)
        key_ids = list(key_ids)

        def work(db: _sql.Connection) -> tuple[list[StoredKey], list[StoredKey]]:
            taken = self._remove(db, key_ids, _sql.find_all(db, pool, key_ids, lock=True))
            return taken, _sql.take_oldest(db, self._sealer, oldest_pool, count)

        def committed(taken: tuple[list[StoredKey], list[StoredKey]]) -> None:
            _add(self._counts, pool, -len(taken[0]))
            _add(self._counts, oldest_pool, -len(taken[1]))

        return await self._transaction(work, committed)

    async def take_present(
        self, pool: str, key_ids: Sequence[str], *, split: Splitter | None = None
    ) -> list[StoredKey]:
        key_ids = list(dict.fromkeys(key_ids))

        def work(db: _sql.Connection) -> tuple[list[StoredKey], dict[str, int]]:
            found = _sql.find(db, pool, key_ids, lock=True)
            taken = self._remove(db, [key_id for key_id in key_ids if key_id in found], found)
            if split is None:
                return taken, {}
            pieces = [piece for key in taken for piece in split(key)]
            return taken, _sql.insert(db, self._sealer, pieces, _check_keys(pieces))

        def committed(result: tuple[list[StoredKey], dict[str, int]]) -> None:
            _add(self._counts, pool, -len(result[0]))
            self._added(result[1])

        return (await self._transaction(work, committed))[0]

    async def move(
        self, source_pool: str, destination_pool: str, *, key_ids: Sequence[str] | None = None
    ) -> int:
        wanted = None if key_ids is None else list(dict.fromkeys(key_ids))

        def work(db: _sql.Connection) -> int:
            if wanted is None:
                if source_pool == destination_pool:
                    return _sql.pool_count(db, source_pool)
                return _sql.move_pool(db, source_pool, destination_pool)
            found = _sql.find_all(db, source_pool, wanted, lock=True)
            if source_pool != destination_pool:
                _sql.move_rows(db, self._sealer, found, destination_pool)
            return len(wanted)

        def committed(moved: int) -> None:
            if source_pool != destination_pool:
                _add(self._counts, source_pool, -moved)
                _add(self._counts, destination_pool, moved)

        return await self._transaction(work, committed)

    async def deliver(
        self, pool: str, delivered_pool: str, key_ids: Sequence[str]
    ) -> list[StoredKey]:
        key_ids = list(key_ids)

        def work(db: _sql.Connection) -> tuple[list[StoredKey], int]:
            held = _sql.find(db, pool, key_ids, lock=True)
            others = [key_id for key_id in key_ids if key_id not in held]
            before = _sql.find(db, delivered_pool, others, lock=False)
            missing = _missing(key_ids, lambda key_id: key_id in held or key_id in before)
            if missing:
                raise UnknownKeys(pool, missing)
            keys = _sql.stored_in_order(key_ids, {**before, **held}, self._open)
            if held and pool != delivered_pool:
                _sql.move_rows(db, self._sealer, held, delivered_pool)
            return keys, len(held)

        def committed(result: tuple[list[StoredKey], int]) -> None:
            if pool != delivered_pool:
                _add(self._counts, pool, -result[1])
                _add(self._counts, delivered_pool, result[1])

        return (await self._transaction(work, committed))[0]

    async def discard(self, pool: str) -> int:
        return sum((await self._delete_where("pool = ?", (pool,))).values())

    async def discard_prefix(self, prefix: str) -> int:
        # substr, not LIKE: a prefix may hold "%" or "_".
        deleted = await self._delete_where("substr(pool, 1, ?) = ?", (len(prefix), prefix))
        return sum(deleted.values())

    async def expire(self, prefix: str, before: float) -> dict[str, int]:
        return await self._delete_where(
            "substr(pool, 1, ?) = ? AND since < ?", (len(prefix), prefix, before)
        )

    async def _delete_where(self, where: str, params: tuple[Any, ...]) -> dict[str, int]:
        def committed(deleted: dict[str, int]) -> None:
            for pool, n in deleted.items():
                _add(self._counts, pool, -n)

        return await self._transaction(lambda db: _sql.delete_where(db, where, params), committed)

    async def peek_ids(self, pool: str, key_ids: Sequence[str]) -> list[StoredKey]:
        key_ids = list(key_ids)

        def work(db: _sql.Connection) -> list[StoredKey]:
            return _sql.stored_in_order(
                key_ids, _sql.find_all(db, pool, key_ids, lock=False), self._open
            )

        return await self._transaction(work)

    async def key_ids(self, pool: str, limit: int, *, newest: bool = False) -> list[str]:
        _check_count("limit", limit)
        return await self._transaction(
            lambda db: cast(list[str], _sql.keys_in_order(db, None, pool, limit, newest=newest))
        )

    async def peek(self, pool: str, limit: int) -> list[StoredKey]:
        _check_count("limit", limit)
        return await self._transaction(
            lambda db: cast(list[StoredKey], _sql.keys_in_order(db, self._sealer, pool, limit))
        )

    async def seen(self, key_ids: Sequence[str]) -> set[str]:
        key_ids = list(key_ids)
        return await self._transaction(lambda db: _sql.ever_stored(db, key_ids))

    async def pools_of(self, key_ids: Sequence[str]) -> dict[str, str]:
        key_ids = list(key_ids)

        def work(db: _sql.Connection) -> dict[str, str]:
            found = _sql.find(db, None, key_ids, lock=False)
            return {key_id: row.pool for key_id, (row, _) in found.items()}

        return await self._transaction(work)

    async def refresh(self) -> None:
        await self._transaction(lambda db: None)  # the counters are read at its end

    def _remove(
        self,
        db: _sql.Connection,
        key_ids: Sequence[str],
        found: dict[str, tuple[_sql._Row, int]],
    ) -> list[StoredKey]:
        """Remove the keys ``key_ids`` (all in ``found``) and return them in that order."""
        before = _sql.remove(db, self._sealer, [found[key_id] for key_id in key_ids])
        return _sql.stored_in_order(key_ids, found, before.__getitem__)

    def _open(self, row: _sql._Row) -> dict[int, bytes]:
        return row.keys(self._sealer)

    def _added(self, added: dict[str, int]) -> None:
        for pool, n in added.items():
            _add(self._counts, pool, n)

    def count(self, pool: str) -> int:
        self._check_open()
        return self._counts.get(pool, 0)

    def counts(self, prefix: str = "") -> dict[str, int]:
        self._check_open()
        return _counts(self._counts, prefix)
