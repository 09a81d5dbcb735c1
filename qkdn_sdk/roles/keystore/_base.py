"""What both key stores share: :class:`StoredKey`, the errors, the :class:`KeyStore` protocol,
the checks of what callers hand in, the pool counters and ``async with`` closing.

The theory of operation is in :mod:`qkdn_sdk.roles.keystore`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import attrs
import orjson
import trio

from qkdn_sdk.errors import QkdnError, quoted

__all__ = [
    "DuplicateKey",
    "InsufficientKeys",
    "KeyStore",
    "KeyStoreError",
    "Splitter",
    "StoredKey",
    "UnknownKeys",
]

Splitter = Callable[["StoredKey"], Sequence["StoredKey"]]
"""What :meth:`KeyStore.take_present` makes of each key it takes, when asked to split them."""


@attrs.frozen
class StoredKey:
    """One key of a pool.

    ``metadata`` must be JSON-serialisable by orjson; it is stored with the key and comes back as
    a fresh dict (so a tuple comes back as a list). ``key`` never appears in the repr.

    The types are checked where keys enter a store (:meth:`KeyStore.put` raises
    :class:`TypeError`), not on construction: a KM makes one of these for every key it holds,
    and validators would double what that costs.
    """

    key_id: str
    pool: str
    key: bytes = attrs.field(repr=False)
    metadata: dict[str, Any] = attrs.field(factory=dict)


# --- errors ---------------------------------------------------------------------------------


class KeyStoreError(QkdnError):
    """The key store cannot do what was asked: it is closed, its file is unreadable or corrupt,
    or (subclasses) the keys asked for are not there or were stored before."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class InsufficientKeys(KeyStoreError):
    """A pool holds fewer keys than requested; nothing was removed."""

    def __init__(self, pool: str, requested: int, available: int) -> None:
        super().__init__(
            f"pool {quoted(pool)} holds {_plural(available, 'key')}, {requested} requested"
        )
        self.pool = pool
        self.requested = requested
        self.available = available


class UnknownKeys(KeyStoreError):
    """Key IDs asked for are not in the pool (or were asked twice); nothing changed.

    ``missing`` lists them in the order asked; the text names at most three. ETSI GS QKD 014
    answers an unknown key ID with 400.
    """

    http_status = 400

    def __init__(self, pool: str, missing: list[str]) -> None:
        named = ", ".join(quoted(key_id) for key_id in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        super().__init__(
            f"pool {quoted(pool)} does not hold {_plural(len(missing), 'key ID')} asked for: "
            f"{named}{more}"
        )
        self.pool = pool
        self.missing = missing


class DuplicateKey(KeyStoreError):
    """A key ID was stored before (even if since taken, discarded or expired, within the store's
    window of refused IDs), or given twice in one call; nothing was added. Storing a key twice
    could reuse a one-time pad."""

    def __init__(self, key_id: str, *, twice: bool = False) -> None:
        if twice:
            super().__init__(f"key ID {quoted(key_id)} is given twice")
        else:
            super().__init__(f"key ID {quoted(key_id)} was stored before")
        self.key_id = key_id


# --- the interface --------------------------------------------------------------------------


class KeyStore(Protocol):
    """What a KM needs from its key store. Every async method raises :class:`KeyStoreError` when
    the store is closed or its storage fails; every change is one transaction.

    Cancelled before its transaction starts, an operation does nothing; cancelled after, it still
    completes and returns its result (trio raises the cancellation at the caller's next
    checkpoint), so taken keys are never lost between the store and its caller.
    """

    async def put(self, keys: Sequence[StoredKey]) -> None:
        """Add ``keys`` (each to its own ``pool``, in order), in one transaction.

        Raises :class:`DuplicateKey`, adding nothing, when a key ID was stored before (held now,
        or taken, discarded or expired within the store's window of refused IDs) or is given
        twice in ``keys``. Raises
        :class:`TypeError` when a key's metadata is not JSON-serialisable.
        """
        ...

    async def take(self, pool: str, count: int) -> list[StoredKey]:
        """Remove and return the ``count`` oldest keys of ``pool``, oldest first, in one
        transaction. Concurrent takers always get disjoint keys.

        Raises :class:`InsufficientKeys`, removing nothing, when the pool holds fewer;
        :class:`ValueError` when ``count`` is negative.
        """
        ...

    async def take_ids(
        self, pool: str, key_ids: Sequence[str], *, replace_with: Sequence[StoredKey] = ()
    ) -> list[StoredKey]:
        """Remove and return exactly the keys ``key_ids`` of ``pool``, in the order asked, and
        add ``replace_with`` in the same transaction (to split a key into smaller keys).

        Raises :class:`UnknownKeys` when an ID is not in the pool or is asked twice, and
        :class:`DuplicateKey` when ``replace_with`` breaks :meth:`put`'s rule (the IDs being
        taken count as stored before); either way nothing changes.
        """
        ...

    async def take_ids_and_oldest(
        self, pool: str, key_ids: Sequence[str], oldest_pool: str, count: int
    ) -> tuple[list[StoredKey], list[StoredKey]]:
        """:meth:`take_ids` of ``key_ids`` from ``pool`` and :meth:`take` of the ``count`` oldest
        keys of ``oldest_pool``, in one transaction: both, or (raising what the first to fail
        raises) neither. A trusted node spends the link units a hop came with and those of the
        next hop at once."""
        ...

    async def take_present(
        self, pool: str, key_ids: Sequence[str], *, split: Splitter | None = None
    ) -> list[StoredKey]:
        """Remove and return those of ``key_ids`` that ``pool`` holds, in the order asked (an ID
        asked twice once), in one transaction; the others are skipped, never an error.

        With ``split``, each key taken is replaced, in the same transaction, by the keys
        ``split`` makes of it (to cut QKD-keys into link units): :class:`DuplicateKey` as
        :meth:`put` raises it, and nothing changes, when one of those breaks its rule.
        ``split`` must be a pure function: :class:`SQLiteKeyStore` and
        :class:`PostgresKeyStore` call it in their worker thread, and the latter again when it
        runs a transaction again (after a deadlock).
        """
        ...

    async def move(
        self, source_pool: str, destination_pool: str, *, key_ids: Sequence[str] | None = None
    ) -> int:
        """Move every key of ``source_pool`` into ``destination_pool``, each keeping its place
        in the order of every key stored (or exactly the keys ``key_ids`` of it, which go after
        the keys ``destination_pool`` holds, in their order in the source), in one transaction.
        Returns how many moved. Raises :class:`UnknownKeys` and moves nothing when
        ``source_pool`` lacks one of ``key_ids``."""
        ...

    async def deliver(
        self, pool: str, delivered_pool: str, key_ids: Sequence[str]
    ) -> list[StoredKey]:
        """The keys ``key_ids``, in the order asked, each held in ``pool`` or already in
        ``delivered_pool``; those of ``pool`` move to ``delivered_pool``, in one transaction.
        Each key comes back with the pool it was in before the call (``delivered_pool``: it was
        delivered before). Raises :class:`UnknownKeys` naming ``pool``, and changes nothing,
        when an ID is in neither or is asked twice. (A KM hands keys out this way and keeps
        them for a re-fetch of the same IDs.)"""
        ...

    async def discard(self, pool: str) -> int:
        """Delete every key of ``pool`` (it was never supplied). Returns how many."""
        ...

    async def discard_prefix(self, prefix: str) -> int:
        """Delete every key of every pool whose name starts with ``prefix`` (``"pending:"``
        when a KM starts). Returns how many."""
        ...

    async def expire(self, prefix: str, before: float) -> dict[str, int]:
        """Erase every key of every pool whose name starts with ``prefix`` that entered its
        pool (:meth:`put`, or :meth:`move` into it) before ``before`` (Unix time, seconds), in
        one transaction. Returns how many left each pool (pools that lost none are left out)."""
        ...

    async def peek_ids(self, pool: str, key_ids: Sequence[str]) -> list[StoredKey]:
        """The keys ``key_ids`` of ``pool``, in the order asked, left in the store. Raises
        :class:`UnknownKeys` as :meth:`take_ids` does."""
        ...

    async def key_ids(self, pool: str, limit: int, *, newest: bool = False) -> list[str]:
        """The IDs of the ``limit`` oldest keys of ``pool`` (the ``limit`` newest with
        ``newest``), oldest first; nothing is removed. Raises :class:`ValueError` when ``limit``
        is negative."""
        ...

    async def peek(self, pool: str, limit: int) -> list[StoredKey]:
        """The ``limit`` oldest keys of ``pool``, oldest first, left in the store (to hand a key
        out and take it only once its receipt is acknowledged). Raises :class:`ValueError` when
        ``limit`` is negative."""
        ...

    async def seen(self, key_ids: Sequence[str]) -> set[str]:
        """Which of ``key_ids`` were stored before, as :meth:`put` sees it (held now, or gone
        within the window of refused IDs)."""
        ...

    async def pools_of(self, key_ids: Sequence[str]) -> dict[str, str]:
        """The pool of each of ``key_ids`` the store holds now (the others are left out)."""
        ...

    async def refresh(self) -> None:
        """Read the counts of :meth:`count` afresh: another store on the same database (a
        replica of the KM, :attr:`~qkdn_sdk.roles.km.KMConfig.replica`) changed them."""
        ...

    def count(self, pool: str) -> int:
        """How many keys ``pool`` holds now, in O(1), without I/O."""
        ...

    def counts(self, prefix: str = "") -> dict[str, int]:
        """Every non-empty pool whose name starts with ``prefix``, mapped to its count, without
        I/O."""
        ...

    async def aclose(self) -> None:
        """Close the store. Closing twice is harmless; any other use afterwards raises
        :class:`KeyStoreError`."""
        ...


# --- rules both stores share ----------------------------------------------------------------


def _check_keys(keys: Sequence[StoredKey]) -> list[bytes]:
    """The metadata of each key as JSON; raises TypeError when one is not a StoredKey of the
    field types it declares or its metadata is not JSON-serialisable."""
    encoded = []
    last: tuple[dict[str, Any], bytes] | None = None  # keys of a batch often share their metadata
    for key in keys:
        if (
            type(key) is not StoredKey
            or type(key.key_id) is not str
            or type(key.pool) is not str
            or type(key.key) is not bytes
        ):
            raise TypeError(_not_a_stored_key(key))
        if last is None or last[0] is not key.metadata:
            if not isinstance(key.metadata, dict):
                raise TypeError(_not_a_stored_key(key))
            try:
                last = (key.metadata, orjson.dumps(key.metadata))
            except orjson.JSONEncodeError as exc:
                raise TypeError(
                    f"metadata of key ID {quoted(key.key_id)} is not JSON-serialisable: {exc}"
                ) from None
        encoded.append(last[1])
    return encoded


def _not_a_stored_key(key: object) -> str:
    """Why :func:`_check_keys` refused ``key``."""
    if type(key) is not StoredKey:
        return f"expected a StoredKey, got {type(key).__name__}"
    for name, expected in (("key_id", str), ("pool", str), ("key", bytes), ("metadata", dict)):
        value = getattr(key, name)
        if type(value) is not expected and not (expected is dict and isinstance(value, dict)):
            return (
                f"the {name} of a StoredKey must be {expected.__name__}, not {type(value).__name__}"
            )
    raise AssertionError(f"{key!r} can be stored")


def _missing(key_ids: Sequence[str], present: Callable[[str], bool]) -> list[str]:
    """The IDs (in the order asked, each once) not present or asked twice."""
    asked: set[str] = set()
    missing: dict[str, None] = {}
    for key_id in key_ids:
        if key_id in asked or not present(key_id):
            missing[key_id] = None
        asked.add(key_id)
    return list(missing)


def _check_count(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _add(counts: dict[str, int], pool: str, delta: int) -> None:
    """Apply ``delta`` to a pool's counter; empty pools are not kept."""
    value = counts.get(pool, 0) + delta
    if value:
        counts[pool] = value
    else:
        counts.pop(pool, None)


def _counts(counts: dict[str, int], prefix: str) -> dict[str, int]:
    return {pool: n for pool, n in counts.items() if pool.startswith(prefix)}


class _ClosedOnExit(abc.ABC):
    """``async with store:`` closes the store at the end of the block, even when the block
    was cancelled (the close is shielded: a store is never left half open)."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()
