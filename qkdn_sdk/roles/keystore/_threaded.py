"""What the key stores of a database server or file share: one connection, used in a worker
thread, and group commit.

Each operation is a function of the connection (made of the statements of
:mod:`~qkdn_sdk.roles.keystore._sql`), queued as an :class:`_Operation`; whoever takes the store's
lock next runs every queued operation in one transaction in a worker thread (each in its own
savepoint when there are several) and commits them at once: one fsync, one round trip, for all.
A subclass says how to connect, which exceptions are its database's, what may be tried again, and
what happens after a commit. The theory of operation is in :mod:`qkdn_sdk.roles.keystore`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import attrs
import trio

from qkdn_sdk.roles.keystore import _sql
from qkdn_sdk.roles.keystore._base import KeyStoreError
from qkdn_sdk.roles.keystore._seal import Sealer
from qkdn_sdk.roles.keystore._store import _SQLKeyStore

__all__: list[str] = []

_T = TypeVar("_T")

_ATTEMPTS = 10
"""Most times one transaction is run when its database says it may be tried again (a
PostgreSQL deadlock between stores taking from one pool: each try waits a random moment)."""
_PRUNE_SECONDS = 5.0
"""How often, at most, a transaction forgets the tombstones past
:data:`~qkdn_sdk.roles.keystore._sql.TOMBSTONES_KEPT` (a few seconds' more are harmless; every
statement costs the worker thread a wait for the GIL while the event loop runs Python)."""


class _Connection(_sql.Connection, Protocol):
    """A connection the store can close."""

    def close(self) -> None: ...


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
    """One operation waiting for, or in, a transaction."""

    work: Callable[[_sql.Connection], _T]
    committed: Callable[[_T], None] | None
    queued: bool = True
    result: _Result[_T] | None = None
    finished: trio.Event = attrs.Factory(trio.Event)


def _run_one(
    db: _sql.Connection,
    op: _Operation[_T],
    errors: tuple[type[Exception], ...],
    *,
    alone: bool,
) -> _Result[_T]:
    """Run ``op`` in the open transaction; what it raised (but an error of the database,
    ``errors``, which ends the whole transaction) is its result, and undoes what it did."""
    if alone:
        try:
            return _Done(op.work(db))
        except errors:
            raise
        except Exception as exc:
            return _Failed(exc)
    db.execute("SAVEPOINT operation")
    try:
        value = op.work(db)
    except errors:
        raise
    except Exception as exc:
        db.execute("ROLLBACK TO operation")
        db.execute("RELEASE operation")
        return _Failed(exc)
    db.execute("RELEASE operation")
    return _Done(value)


def _first_line(exc: BaseException) -> str:
    """A database's message in one line (libpq's go on with hints on further lines)."""
    return str(exc).strip().split("\n", 1)[0].strip() or type(exc).__name__


_C = TypeVar("_C", bound=_Connection)


def _open_sync(
    name: str,
    errors: tuple[type[Exception], ...],
    connect: Callable[[], _C],
    prepare: Callable[[_C], dict[str, int]],
) -> tuple[_C, dict[str, int]]:
    """Connect to the store ``name`` and ``prepare`` it (make or check its tables, and count
    each pool's keys), in a worker thread. An error of the database (``errors``) becomes one
    :class:`KeyStoreError` line naming the store; the connection is closed when one fails."""
    caught: tuple[type[Exception], ...] = (*errors, KeyStoreError)
    db: _C | None = None
    try:
        db = connect()
        return db, prepare(db)
    except caught as exc:
        if db is not None:
            with contextlib.suppress(*errors):
                db.close()
        if isinstance(exc, KeyStoreError):
            raise
        raise KeyStoreError(f"cannot open key store {name!r}: {_first_line(exc)}") from None


class _ThreadedKeyStore(_SQLKeyStore):
    """A store on one connection used in worker threads, with group commit; ``name`` (a file,
    a database) is what its errors name."""

    _errors: tuple[type[Exception], ...]
    """The exceptions of the database (they end a whole transaction)."""

    def __init__(self, name: str, db: _Connection, sealer: Sealer, counts: dict[str, int]) -> None:
        super().__init__(sealer, counts)
        self._name = name
        self._db: _Connection | None = db
        """None when closed, or (a subclass that reconnects) while its connection is broken."""
        self._is_closed = False
        self._lock = trio.Lock()
        self._queue: list[_Operation[Any]] = []
        self._pruned = time.monotonic()
        self.transaction_observer: Callable[[float], None] | None = None
        """Called with the seconds of each transaction that ran (the KM's metrics,
        :mod:`qkdn_sdk.roles.metrics`)."""

    def __repr__(self) -> str:
        state = "closed" if self._is_closed else f"{sum(self._counts.values())} keys"
        return f"<{type(self).__name__} {self._name!r} {state}>"

    # --- what a subclass says -------------------------------------------------------------

    def _connection_sync(self) -> _Connection:
        """The connection to run the next transaction on (in the worker thread). A subclass
        that reconnects makes one when :attr:`_db` is None, raising one of :attr:`_errors`."""
        assert self._db is not None
        return self._db

    def _may_retry_sync(self, exc: Exception, began: bool) -> bool:
        """Whether a transaction that failed with ``exc`` (one of :attr:`_errors`; ``began``:
        after its BEGIN) is run again; the subclass also forgets a broken connection here."""
        return False

    def _recount_sync(self, db: _sql.Connection) -> dict[str, int] | None:
        """Each pool's count, read at the end of every transaction, when the counters cannot be
        kept from the store's own changes alone; None when they can."""
        return None

    def _after_sync(self, db: _sql.Connection) -> None:
        """After each transaction that ended without an error of the database (in the worker
        thread)."""

    def _close_sync(self, db: _Connection) -> None:
        """Close the connection (in the worker thread)."""
        db.close()

    # --- operations -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._is_closed:
            raise self._closed()

    def _closed(self) -> KeyStoreError:
        return KeyStoreError(f"the key store {self._name!r} is closed")

    async def _transaction(
        self,
        work: Callable[[_sql.Connection], _T],
        committed: Callable[[_T], None] | None = None,
    ) -> _T:
        """Run ``work`` in a worker thread as one transaction, and ``committed`` with its result
        in the event loop once it is durable (to update the counters).

        Group commit: operations that arrive while a transaction is in the thread wait, and then
        run together in the next one, each in its own savepoint (one failing undoes only itself)
        and in the order they arrived, with one commit for all. Cancelled while it waits, an
        operation leaves the queue and does nothing; once its transaction started, it completes
        and hands back its result (the caller sees the cancellation at its next checkpoint), so
        no key is lost between the store and its caller.
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
        if self._is_closed:  # closed while they waited
            for op in batch:
                op.result = _Failed(self._closed())
                op.finished.set()
            return
        started = time.perf_counter()
        try:
            with trio.CancelScope(shield=True):  # the transaction of others, too, must end
                results, counts = await trio.to_thread.run_sync(self._transaction_sync, batch)
        except BaseException as exc:
            error = f"key store {self._name!r}: the transaction failed ({type(exc).__name__})"
            for op in batch:
                op.result = _Failed(KeyStoreError(error))
                op.finished.set()
            raise
        if self.transaction_observer is not None:
            self.transaction_observer(time.perf_counter() - started)
        # The counters change with the commit, before any other task runs.
        for op, result in zip(batch, results, strict=True):
            op.result = result
        for op, result in zip(batch, results, strict=True):
            if op.committed is not None and isinstance(result, _Done):
                op.committed(result.value)
            op.finished.set()
        if counts is not None:
            self._counts.clear()
            self._counts.update(counts)

    def _transaction_sync(
        self, batch: Sequence[_Operation[Any]]
    ) -> tuple[list[_Result[Any]], dict[str, int] | None]:
        """Run ``batch`` in one transaction (again, when the database says it may be); each
        operation's result, and the counters read at its end (:meth:`_recount_sync`)."""
        for attempt in range(1, _ATTEMPTS + 1):
            db: _Connection | None = None
            began = False
            try:
                db = self._connection_sync()
                db.execute(db.dialect.begin)
                began = True
                alone = len(batch) == 1
                results = [_run_one(db, op, self._errors, alone=alone) for op in batch]
                if any(isinstance(result, _Done) for result in results):
                    if time.monotonic() - self._pruned >= _PRUNE_SECONDS:
                        self._pruned = time.monotonic()
                        _sql.forget_old_tombstones(db, _sql.TOMBSTONES_KEPT)
                    # Before the commit: failing after it would fail what it committed.
                    counts = self._recount_sync(db)
                    db.execute("COMMIT")
                else:
                    db.execute("ROLLBACK")
                    counts = self._recount_sync(db)  # nothing to lose by failing now
            except self._errors as exc:
                if began and db is not None:
                    with contextlib.suppress(*self._errors):
                        db.execute("ROLLBACK")
                if attempt < _ATTEMPTS and self._may_retry_sync(exc, began):
                    continue
                error = KeyStoreError(f"key store {self._name!r}: {_first_line(exc)}")
                return [_Failed(error) for _ in batch], None
            except BaseException:
                if began and db is not None:
                    with contextlib.suppress(*self._errors):
                        db.execute("ROLLBACK")
                raise
            self._after_sync(db)
            return results, counts
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close the store, after the operation in progress (if any) ends. Closing twice is
        harmless; a cancelled close still closes."""
        if self._is_closed:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            async with self._lock:
                self._is_closed = True
                db, self._db = self._db, None
                if db is not None:
                    await trio.to_thread.run_sync(self._close_sync, db)
