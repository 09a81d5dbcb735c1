"""The keys of a simulated QKD module's link and its buffer of ready keys: the key model the
:mod:`qkdn_sdk.roles.qkd_module` docstring describes (what key ``i`` is, when it is ready, how
the buffer fills and drops). No I/O here: the
:class:`~qkdn_sdk.roles.qkd_module.QKDModule` owns one :class:`KeyBuffer` and hands its keys out
over Kq-1.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import attrs
import trio
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import RequestRefused
from qkdn_sdk.roles.qkd_module._config import LINK_SECRET_SIZE, QKDModuleConfig

__all__ = ["KeyBuffer", "LinkKey", "QKDModuleStats", "link_key"]

logger = logging.getLogger("qkdn_sdk.roles.qkd_module")

_MAX_INDEX = 1 << 96
"""Key indices fill the 12 nonce bytes of ChaCha20."""

_DROP_WARNING_INTERVAL = 60.0
"""Seconds between two warnings of dropped keys of one module: the first drop is said at once,
the drops since then at most this often, summed (a link that outruns its KM drops keys all the
time; a line per key, or per second, would bury everything else in the log)."""
_MIN_WAIT = 0.001
"""Seconds to wait when the clock says a key's ready time has come but the rounding of the key
count does not yet agree (never a busy loop)."""
_WATCH_INTERVAL = 1.0
"""Longest time the buffer goes without catching up with the clock while
:meth:`KeyBuffer.watch` runs (a wall clock may step)."""


def link_key(link_secret: bytes, index: int, key_size: int) -> tuple[str, bytes]:
    """Key ``index`` of the link whose secret is ``link_secret``: ``(key_id, key)``.

    The ChaCha20 key stream of ``link_secret`` with the 16-byte nonce ``0`` (4-byte block counter)
    ``+ index`` (12 bytes little-endian): its first 16 bytes are the key ID, a UUID string with
    the version-4 and variant bits set; the next ``key_size / 8`` bytes are the key. Distinct
    indices never share key stream. Raises :class:`ValueError` for a secret that is not
    :data:`LINK_SECRET_SIZE` bytes, an index outside ``0 <= index < 2**96``, or a ``key_size``
    that is not a positive multiple of 8.
    """
    if len(link_secret) != LINK_SECRET_SIZE:
        raise ValueError(f"link_secret must be {LINK_SECRET_SIZE} bytes, got {len(link_secret)}")
    if not 0 <= index < _MAX_INDEX:
        raise ValueError(f"key index must be in [0, 2**96), got {index}")
    if key_size <= 0 or key_size % 8:
        raise ValueError(f"key_size must be a positive multiple of 8 bits, got {key_size}")
    nonce = bytes(4) + index.to_bytes(12, "little")
    encryptor = Cipher(algorithms.ChaCha20(link_secret, nonce), mode=None).encryptor()
    stream = encryptor.update(bytes(16 + key_size // 8))
    key_id = str(uuid.UUID(bytes=stream[:16], version=4))
    return key_id, stream[16:]


def _rfc3339(timestamp: float) -> str:
    """``timestamp`` (Unix time) as RFC 3339 UTC with microseconds: a fixed width."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@attrs.frozen(kw_only=True)
class LinkKey:
    """One QKD-key of a link with its Q.4162 Table 1 metadata. ``key`` is not in ``repr()``."""

    index: int
    key_id: str
    key: bytes = attrs.field(repr=False)
    ready_at: float
    """Unix time the key became ready at both ends."""

    @property
    def generation_time_stamp(self) -> str:
        """``ready_at`` in RFC 3339 UTC: the "Generation time stamp" of Table 1."""
        return _rfc3339(self.ready_at)


@attrs.frozen
class QKDModuleStats:
    """Key counts of a module since it started: ``produced == delivered + dropped + buffered``."""

    produced: int
    """Keys that became ready."""
    delivered: int
    """Keys the KM acknowledged (PROACTIVE) or was handed (ON_REQUEST)."""
    dropped: int
    """Keys dropped from a full buffer."""
    buffered: int
    """Keys ready and not yet delivered (a key being supplied included)."""


class KeyBuffer:
    """The keys of ``config``'s link, timed by ``clock`` (Unix time), and the buffer of those
    ready and not yet delivered, as the :mod:`qkdn_sdk.roles.qkd_module` docstring says. It
    starts with the first key ready after ``clock()`` at construction."""

    def __init__(self, config: QKDModuleConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        # The buffer is the index range [_oldest, _next) less the indices in _taken (keys
        # handed out by ID, ON_REQUEST).
        self._next = self._ready_count(clock())
        self._oldest = self._next
        self._taken: set[int] = set()
        self.pending: int | None = None
        """A key taken out of the buffer and being supplied (PROACTIVE), until the KM
        acknowledges it: still counted as buffered in :attr:`stats`. The supplier sets and
        clears it."""
        self.delivered = 0
        """Keys the KM acknowledged or was handed; counted by the supplier."""
        self._dropped = 0
        self._start = self._next
        self._unreported_drops = 0
        self._last_drop_warning: float | None = None

    def ready_time(self, index: int) -> float:
        """Unix time key ``index`` is ready: ``epoch + (index + 1) * key_size / rate``."""
        config = self._config
        return config.epoch + (index + 1) * config.key_size / config.secret_key_rate

    def key(self, index: int) -> LinkKey:
        """Key ``index`` of this module's link, with its metadata (the same at both ends)."""
        config = self._config
        key_id, key = link_key(config.link_secret, index, config.key_size)
        return LinkKey(index=index, key_id=key_id, key=key, ready_at=self.ready_time(index))

    @property
    def stats(self) -> QKDModuleStats:
        """The key counts now (the buffer first catches up with the clock)."""
        self._catch_up()
        buffered = self._next - self._oldest - len(self._taken) + int(self.pending is not None)
        return QKDModuleStats(
            produced=self._next - self._start,
            delivered=self.delivered,
            dropped=self._dropped,
            buffered=buffered,
        )

    def _ready_count(self, now: float) -> int:
        """How many keys are ready at ``now``: key ``i`` is once ``(i + 1)`` key times passed."""
        config = self._config
        elapsed = now - config.epoch
        if elapsed <= 0:
            return 0
        return min(_MAX_INDEX, math.floor(elapsed * config.secret_key_rate / config.key_size))

    def _catch_up(self) -> None:
        """Add the keys ready by now to the buffer, dropping the oldest beyond its size."""
        now = self._clock()
        ready = self._ready_count(now)
        if ready > self._next:  # a clock that steps back makes no key unready
            self._next = ready
            excess = self._next - self._oldest - self._config.buffer_keys
            if excess > 0:
                dropped = self._advance_oldest(self._oldest + excess)
                self._dropped += dropped
                self._unreported_drops += dropped
        if self._unreported_drops and (
            self._last_drop_warning is None
            or now - self._last_drop_warning >= _DROP_WARNING_INTERVAL
        ):
            logger.warning(
                "QKD module %s dropped %d keys (%d dropped in all): its buffer of %d keys was "
                "full, as its KM takes keys slower than the link makes them, or holds all the "
                "link key it may; harmless unless the KM runs short of link key (said at most "
                "once a minute)",
                self._config.module_id,
                self._unreported_drops,
                self._dropped,
                self._config.buffer_keys,
            )
            self._unreported_drops = 0
            self._last_drop_warning = now

    def _advance_oldest(self, index: int) -> int:
        """Move the start of the buffer to ``index``; return how many buffered keys that
        removed (indices already taken by ID are no longer buffered)."""
        passed = range(self._oldest, index)
        holes = {taken for taken in self._taken if taken in passed}
        self._taken -= holes
        self._oldest = index
        return len(passed) - len(holes)

    def take(self, count: int) -> list[int]:
        """Remove up to ``count`` of the oldest buffered keys and return their indices."""
        self._catch_up()
        indices: list[int] = []
        index = self._oldest
        while len(indices) < count and index < self._next:
            if index not in self._taken:
                indices.append(index)
            index += 1
        self._advance_oldest(index)
        return indices

    def take_ids(self, key_ids: list[str]) -> list[LinkKey]:
        """Remove exactly the buffered keys ``key_ids`` and return them, in the order asked;
        :class:`~qkdn_sdk.errors.RequestRefused` (ETSI 014: keys not found) and nothing
        removed when one is not buffered (or is asked twice)."""
        self._catch_up()
        wanted = set(key_ids)
        found: dict[str, LinkKey] = {}
        for index in range(self._oldest, self._next):
            if index not in self._taken:
                key = self.key(index)
                if key.key_id in wanted:
                    found[key.key_id] = key
        missing = [key_id for key_id in key_ids if key_id not in found]
        if missing or len(wanted) != len(key_ids):
            raise RequestRefused(
                f"{len(missing) or 'some'} of the {len(key_ids)} key IDs are not buffered by "
                f"QKD module {self._config.module_id} (unknown, delivered, dropped, or asked "
                "twice)",
                etsi014_message=etsi014.KEYS_NOT_FOUND,
            )
        self._taken.update(key.index for key in found.values())
        if self._oldest in self._taken:
            start = self._oldest
            while start in self._taken:
                start += 1
            self._advance_oldest(start)
        return [found[key_id] for key_id in key_ids]

    async def wait_for_key(self) -> int:
        """Take the oldest buffered key's index, waiting until one is ready."""
        while True:
            taken = self.take(1)
            if taken:
                return taken[0]
            delay = self.ready_time(self._next) - self._clock()
            await trio.sleep(min(max(delay, _MIN_WAIT), _WATCH_INTERVAL))

    async def watch(self) -> None:
        """Keep the drop count and its warning up to date while nothing else looks at the
        buffer. It wakes when the buffer would overflow, or when a warning is due, not for every
        key: at high key rates a task per key would cost more than the keys."""
        while True:
            self._catch_up()
            if self._unreported_drops and self._last_drop_warning is not None:
                wake = self._last_drop_warning + _DROP_WARNING_INTERVAL
            else:
                wake = self.ready_time(self._oldest + self._config.buffer_keys)
            await trio.sleep(min(max(wake - self._clock(), _MIN_WAIT), _WATCH_INTERVAL))
