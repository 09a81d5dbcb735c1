"""The simulated QKD module: one end of a QKD link, supplying QKD-keys to its KM over Kq-1
(ITU-T Q.4162).

Theory of operation
-------------------
The two modules of a link never talk to each other: they agree because they compute the same
thing. Key number ``i`` of a link is the ChaCha20 key stream of the link secret with nonce
``i`` (:func:`link_key`): its first 16 bytes make the key ID (a version-4 UUID), the next
``key_size / 8`` bytes the key. Key ``i`` becomes *ready* at ``epoch + (i + 1) * key_size /
secret_key_rate`` (:meth:`QKDModule.ready_time`), so both ends produce the same keys, with the
same IDs and generation time stamps, at the configured secret key rate.

A module started at wall-clock time ``t`` begins with the first key ready *after* ``t``: it never
produces a key of the past, so a module that crashed and restarted never issues a key twice.

The buffer holds the ready keys not yet delivered. Since a key is a function of its index, the
buffer is only a range of indices ``[oldest, next)``; key bytes exist only while a key is being
sent. When more than ``buffer_keys`` keys are ready the oldest are dropped (counted in
:attr:`QKDModule.stats`, and a warning at most every 10 s). The buffer catches up with the clock
whenever it is looked at (:meth:`QKDModule.run`'s tasks, a key request, :attr:`QKDModule.stats`),
so no task has to wake for every key.

Two Kq-1 modes (Q.4162 clause 7):

- :attr:`Kq1Mode.PROACTIVE` (clause 7.1, Tables 1-2): the module connects to its KM and supplies
  each ready key, oldest first, with :class:`~qkdn_sdk.messages.kq1.KeySupply` (0x3101),
  awaiting :class:`~qkdn_sdk.messages.kq1.ResponseToKeySupply` (0x1302) before the next. A key
  leaves the buffer when the KM acknowledges it, or says it had it before (the answer to a
  supply whose acknowledgement was lost); any other failure keeps it, to send again after a
  back-off. An unreachable KM is retried with a back-off from 0.1 s doubling to 2 s, logged once
  per outage.
- :attr:`Kq1Mode.ON_REQUEST` (clause 7.2, Tables 3-4): the module serves its URL; the KM sends
  :class:`~qkdn_sdk.messages.kq1.KeyRequest` (0x1303) and gets the oldest buffered keys in a
  :class:`~qkdn_sdk.messages.kq1.ResponseToKeyRequest` (0x3104). Keys handed out leave the buffer
  at once: no key is supplied twice, even if the response is then lost.

With ``km_id`` configured, keys go to that KM only (the identity the transport authenticated).
Key bytes never appear in logs, errors or ``repr()``.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import trio
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.codecs.payload import encode_payload
from qkdn_sdk.errors import (
    FailureResponse,
    NotAuthorized,
    RemoteProtocolError,
    RequestRefused,
    TransportError,
    quoted,
    shorten,
)
from qkdn_sdk.messages import Key, Message, Role, failure_response, kq1, received_by
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, connect, serve

__all__ = [
    "BUFFER_KEYS",
    "KEY_SIZE_UNIT",
    "LINK_SECRET_SIZE",
    "Kq1Mode",
    "LinkKey",
    "QKDModule",
    "QKDModuleConfig",
    "QKDModuleStats",
    "link_key",
    "max_keys_per_response",
]

logger = logging.getLogger("qkdn_sdk.roles.qkd_module")

LINK_SECRET_SIZE = 32
"""Bytes of a link secret: a ChaCha20 key."""

BUFFER_KEYS = 256
"""Ready keys a module holds for its KM unless configured otherwise."""

KEY_SIZE_UNIT = 256
"""QKD-key sizes are positive multiples of this many bits."""

_MAX_INDEX = 1 << 96
"""Key indices fill the 12 nonce bytes of ChaCha20."""

_PAYLOAD_BUDGET = 60_000
"""Bytes of a :class:`~qkdn_sdk.messages.kq1.ResponseToKeyRequest` payload the keys may fill:
under the 65,535 of the frame's Length, with room to spare."""

_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 2.0
_DROP_WARNING_INTERVAL = 10.0
_MIN_WAIT = 0.001
"""Seconds to wait when the clock says a key's ready time has come but the rounding of the key
count does not yet agree (never a busy loop)."""
_WATCH_INTERVAL = 1.0
"""Longest time the buffer goes without catching up with the clock while :meth:`run` runs (a
wall clock may step)."""

_ACCEPTS = received_by(Role.QKD_MODULE)


class Kq1Mode(enum.Enum):
    """How the module supplies keys to its KM (Q.4162 clause 7)."""

    PROACTIVE = "proactive"
    """Clause 7.1: the module pushes each key, KeySupply 0x3101 -> ResponseToKeySupply 0x1302."""
    ON_REQUEST = "on-request"
    """Clause 7.2: the KM asks, KeyRequest 0x1303 -> ResponseToKeyRequest 0x3104."""


def _non_empty(_instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")


def _secret(_instance: object, _attribute: attrs.Attribute[Any], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != LINK_SECRET_SIZE:
        size = len(value) if isinstance(value, bytes) else type(value).__name__
        raise ValueError(f"link_secret must be {LINK_SECRET_SIZE} bytes, got {size}")


def _finite(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value}")


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _key_size(_instance: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    if value <= 0 or value % KEY_SIZE_UNIT:
        raise ValueError(
            f"key_size must be a positive multiple of {KEY_SIZE_UNIT} bits, got {value}"
        )


@attrs.frozen(kw_only=True)
class QKDModuleConfig:
    """What one QKD module of a link needs. Both modules of a link share ``link_secret``,
    ``epoch``, ``secret_key_rate`` and ``key_size``; each names itself in ``module_id`` and the
    other in ``matching_module_id``.

    Raises :class:`ValueError` when a value is out of range, or the mode's URL is missing
    (:attr:`Kq1Mode.PROACTIVE` needs ``km_url``, :attr:`Kq1Mode.ON_REQUEST` needs ``listen_url``).
    ``link_secret`` never appears in ``repr()``.
    """

    module_id: str = attrs.field(validator=_non_empty)
    """This module's ID (its certificate ID over TLS): ``qkd_module_id`` of Q.4162 Table 1."""
    matching_module_id: str = attrs.field(validator=_non_empty)
    """The module at the other end of the link: ``matching_qkd_module_id``."""
    link_secret: bytes = attrs.field(repr=False, validator=_secret)
    """:data:`LINK_SECRET_SIZE` random bytes drawn when the network was set up, the same at
    both ends."""
    epoch: float = attrs.field(validator=_finite)
    """Unix time the link started: key ``i`` is ready ``(i + 1) * key_size / secret_key_rate``
    seconds later."""
    secret_key_rate: float = attrs.field(validator=_positive)
    """Bits of QKD-key the link makes per second."""
    mode: Kq1Mode = attrs.field(validator=attrs.validators.instance_of(Kq1Mode))
    key_size: int = attrs.field(default=4096, validator=_key_size)
    """Bits per QKD-key, a positive multiple of :data:`KEY_SIZE_UNIT`."""
    buffer_keys: int = attrs.field(default=BUFFER_KEYS, validator=_positive)
    """Ready keys held for the KM; beyond it the oldest are dropped."""
    km_url: str | None = None
    """PROACTIVE: the KM's Kq-1 URL, which the module connects to."""
    listen_url: str | None = None
    """ON_REQUEST: the URL the module serves; its KM connects there and sends key requests."""
    km_id: str | None = None
    """The ID of the KM this module serves (its certificate ID over TLS). When set, keys go to no
    other peer: a PROACTIVE module supplies nothing to a server of another identity, and an
    ON_REQUEST module refuses key requests of any other peer (or of an unauthenticated one).
    ``None``: any peer the transport admits."""
    peer_km_id: str | None = None
    """The KM at the other end of the link: over ETSI GS QKD 014 (Q.4162 Appendix II: the KMs
    are the SAEs) the only slave SAE a Get key may name, and the master of the keys a Get key
    with key IDs fetches. ``None``: any."""

    def __attrs_post_init__(self) -> None:
        if self.module_id == self.matching_module_id:
            raise ValueError("module_id and matching_module_id must differ")
        if self.mode is Kq1Mode.PROACTIVE and not self.km_url:
            raise ValueError("a proactive QKD module needs km_url, the URL of its KM")
        if self.mode is Kq1Mode.ON_REQUEST and not self.listen_url:
            raise ValueError("an on-request QKD module needs listen_url, the URL it serves")


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

    @property
    def hash_value(self) -> str:
        """SHA-256 of the key, in hex: the "Hash value" of Table 1."""
        return hashlib.sha256(self.key).hexdigest()


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


class _Backoff:
    """Seconds to wait before the next try: 0.1, 0.2, 0.4... up to 2 s, until reset."""

    def __init__(self) -> None:
        self._next = _FIRST_BACKOFF

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, _MAX_BACKOFF)
        return delay

    def reset(self) -> None:
        self._next = _FIRST_BACKOFF


def _key_extension(config: QKDModuleConfig, key: LinkKey) -> dict[str, Any]:
    """The Table 1 metadata of ``key`` as a Table 4 "Key extension"."""
    return {
        "qkd_module_id": config.module_id,
        "matching_qkd_module_id": config.matching_module_id,
        "generation_time_stamp": key.generation_time_stamp,
        "hash_value": key.hash_value,
    }


def _sample_key(config: QKDModuleConfig) -> LinkKey:
    """A key of the size and metadata lengths of ``config``'s keys (for payload sizes)."""
    return LinkKey(
        index=0,
        key_id=str(uuid.UUID(int=0, version=4)),
        key=bytes(config.key_size // 8),
        ready_at=config.epoch,
    )


def _key_supply(config: QKDModuleConfig, key: LinkKey) -> kq1.KeySupply:
    """The Q.4162 Table 1 key supply message of ``key``."""
    return kq1.KeySupply(
        key=key.key,
        key_id=key.key_id,
        qkd_module_id=config.module_id,
        matching_qkd_module_id=config.matching_module_id,
        key_length=config.key_size,
        generation_time_stamp=key.generation_time_stamp,
        hash_value=key.hash_value,
    )


def max_keys_per_response(config: QKDModuleConfig) -> int:
    """The most keys of ``config``'s module one
    :class:`~qkdn_sdk.messages.kq1.ResponseToKeyRequest` (Q.4162 Table 4) carries.

    Every key of a module encodes to the same number of bytes (fixed-size key, UUID and time
    stamp), so this is exact: as many keys as fit 60,000 bytes of payload, leaving room under the
    frame's 65,535. It falls with the key size (and a little with the length of the module IDs):
    with IDs of 5 characters, 192 keys of 256 bits, 62 of 4,096 bits, 5 of 65,536 bits. 0 when
    not even one key fits.
    """
    sample = _sample_key(config)
    empty = encode_payload(kq1.ResponseToKeyRequest(keys=[], response="success"))
    one = encode_payload(
        kq1.ResponseToKeyRequest(
            keys=[
                Key(
                    key=sample.key,
                    key_id=sample.key_id,
                    key_extension=_key_extension(config, sample),
                )
            ],
            response="success",
        )
    )
    per_key = len(one) - len(empty) + 1  # and a comma between keys
    return max(0, (_PAYLOAD_BUDGET - len(empty)) // per_key)


class QKDModule:
    """One simulated QKD module: produces the keys of its link and supplies them to its KM over
    Kq-1 in the configured :class:`Kq1Mode`, while :meth:`run` runs.

    ``clock`` is the wall clock (Unix time) the keys are timed by; tests pass a controlled one.
    The module starts with the first key ready after ``clock()`` at construction. ``tls`` is
    given to the transport (over TLS the module's identity is its certificate's ID; otherwise
    ``config.module_id`` is said). ``limits`` bound what the KM's connections may cost.

    Raises :class:`ValueError` when one key of ``config.key_size`` bits with its metadata cannot
    fit a frame (a :class:`~qkdn_sdk.messages.kq1.KeySupply` or a
    :class:`~qkdn_sdk.messages.kq1.ResponseToKeyRequest` over 60,000 bytes).
    """

    def __init__(
        self,
        config: QKDModuleConfig,
        *,
        tls: TLSConfig | None = None,
        clock: Callable[[], float] = time.time,
        limits: Limits | None = None,
    ) -> None:
        self._config = config
        self._tls = tls
        self._clock = clock
        self._limits = limits
        self._max_keys = max_keys_per_response(config)
        sample = _sample_key(config)
        if self._max_keys < 1 or len(encode_payload(_key_supply(config, sample))) > _PAYLOAD_BUDGET:
            raise ValueError(
                f"a key of {config.key_size} bits with its metadata does not fit one Kq-1 frame"
            )
        # The buffer is the index range [_oldest, _next) less the indices in _taken (keys
        # handed out by ID, ON_REQUEST); _pending is a key taken out of it and being supplied
        # (PROACTIVE), until the KM acknowledges it.
        self._next = self._ready_count(clock())
        self._oldest = self._next
        self._taken: set[int] = set()
        self._pending: int | None = None
        self._delivered = 0
        self._dropped = 0
        self._start = self._next
        self._unreported_drops = 0
        self._last_drop_warning: float | None = None
        self._running = False

    # --- keys -----------------------------------------------------------------------------

    @property
    def config(self) -> QKDModuleConfig:
        """The configuration the module was made with."""
        return self._config

    @property
    def max_keys_per_response(self) -> int:
        """The most keys one key request gets (:func:`max_keys_per_response`)."""
        return self._max_keys

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
        buffered = self._next - self._oldest - len(self._taken) + int(self._pending is not None)
        return QKDModuleStats(
            produced=self._next - self._start,
            delivered=self._delivered,
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
                "QKD module %s dropped %d keys: its buffer of %d keys was full (%d dropped in all)",
                self._config.module_id,
                self._unreported_drops,
                self._config.buffer_keys,
                self._dropped,
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

    def _take(self, count: int) -> list[int]:
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

    def _take_ids(self, key_ids: list[str]) -> list[LinkKey]:
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

    async def _wait_for_key(self) -> int:
        """Take the oldest buffered key's index, waiting until one is ready."""
        while True:
            taken = self._take(1)
            if taken:
                return taken[0]
            delay = self.ready_time(self._next) - self._clock()
            await trio.sleep(min(max(delay, _MIN_WAIT), _WATCH_INTERVAL))

    async def _watch(self) -> None:
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

    # --- running --------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Supply keys to the KM until cancelled.

        ON_REQUEST: serve ``listen_url`` and report the URL that reaches it (with the real port
        when it was 0) with ``task_status.started``. PROACTIVE: report ``None`` at once, then
        connect to ``km_url`` (retrying while the KM is unreachable) and supply every ready key.
        Raises :class:`~qkdn_sdk.errors.TransportError` when ``listen_url`` cannot be served, and
        :class:`RuntimeError` when the module already runs.
        """
        if self._running:
            raise RuntimeError(f"QKD module {self._config.module_id} is already running")
        self._running = True
        try:
            await self._run(task_status)
        except BaseExceptionGroup as group:
            # Our tasks raise nothing of their own: one error (serve's) comes out as itself.
            if len(group.exceptions) != 1:
                raise
            error = group.exceptions[0]
            raise error from error.__cause__
        finally:
            self._running = False

    async def _run(self, task_status: trio.TaskStatus[str | None]) -> None:
        """:meth:`run`, whose errors come out of its nursery in an exception group."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)
            if self._config.mode is Kq1Mode.ON_REQUEST:
                assert self._config.listen_url is not None
                info: ServerInfo = await nursery.start(
                    functools.partial(
                        serve,
                        self._config.listen_url,
                        self._handle,
                        tls=self._tls,
                        identity=self._config.module_id,
                        limits=self._limits,
                        accepts=_ACCEPTS,
                    )
                )
                logger.info(
                    "QKD module %s serves key requests at %s",
                    self._config.module_id,
                    info.url,
                )
                task_status.started(info.url)
            else:
                task_status.started(None)
                nursery.start_soon(self._supply_forever)

    # --- PROACTIVE ------------------------------------------------------------------------

    async def _supply_forever(self) -> None:
        """Connect to the KM and supply keys; reconnect after every break."""
        config = self._config
        assert config.km_url is not None
        backoff = _Backoff()
        outage: str | None = None  # what broke the KM connection, once logged

        def lost(reason: str) -> None:
            nonlocal outage
            if outage is None:
                logger.warning(
                    "QKD module %s cannot supply keys to its KM at %s: %s; retrying",
                    config.module_id,
                    config.km_url,
                    reason,
                )
            outage = reason

        while True:
            try:
                async with connect(
                    config.km_url,
                    tls=self._tls,
                    identity=config.module_id,
                    handler=self._handle,
                    limits=self._limits,
                    accepts=_ACCEPTS,
                ) as connection:
                    if config.km_id is not None and connection.peer_id != config.km_id:
                        lost(f"the server is {connection.peer_id!r}, not the KM {config.km_id!r}")
                    else:
                        if outage is not None:
                            logger.info(
                                "QKD module %s reached its KM at %s again",
                                config.module_id,
                                config.km_url,
                            )
                            outage = None
                        if not await self._supply_over(connection, backoff):
                            lost("the KM closed the connection")
            except TransportError as exc:
                lost(str(exc))
            await trio.sleep(backoff.next())

    async def _supply_over(self, connection: Connection, backoff: _Backoff) -> bool:
        """Supply keys over ``connection`` until it closes; return whether any key was
        acknowledged on it. Raises :class:`~qkdn_sdk.errors.TransportError` when it breaks."""
        config = self._config
        acknowledged = False
        refused: str | None = None  # the KM's failure reason, once logged
        while True:
            if self._pending is None:
                self._pending = await self._wait_for_key()
            if connection.closed:  # e.g. idle, while we waited for a key: reconnect
                return acknowledged
            key = self.key(self._pending)
            try:
                response = await connection.request(_key_supply(config, key))
            except FailureResponse as exc:
                if "before" not in exc.reason.lower():
                    if refused is None:
                        logger.warning(
                            "the KM refused key %s of QKD module %s: %s; retrying",
                            key.key_id,
                            config.module_id,
                            quoted(exc.reason, 200),
                        )
                    refused = exc.reason
                    await trio.sleep(backoff.next())
                    continue
                # The KM had it: our earlier supply arrived, its acknowledgement did not.
            except RemoteProtocolError as exc:
                if refused is None:
                    logger.warning(
                        "the KM answered key %s of QKD module %s wrongly: %s; retrying",
                        key.key_id,
                        config.module_id,
                        shorten(str(exc), 200),
                    )
                refused = str(exc)
                await trio.sleep(backoff.next())
                continue
            else:
                assert isinstance(response, kq1.ResponseToKeySupply)
                if response.key_id != key.key_id:
                    if refused is None:
                        logger.warning(
                            "the KM acknowledged key %s instead of %s of QKD module %s; retrying",
                            quoted(response.key_id),
                            key.key_id,
                            config.module_id,
                        )
                    refused = "wrong key ID"
                    await trio.sleep(backoff.next())
                    continue
            if refused is not None:
                logger.info("the KM accepts the keys of QKD module %s again", config.module_id)
                refused = None
            self._pending = None
            self._delivered += 1
            acknowledged = True
            backoff.reset()

    # --- both modes: what the KM sends ------------------------------------------------------

    async def _handle(self, message: Message, connection: Connection) -> Message | None:
        """Answer what the KM sends: key requests (ON_REQUEST); anything else is refused."""
        config = self._config
        if isinstance(message, (kq1.KeyRequest, kq1.KeyRequestWithKeyIds, kq1.StatusRequest)):
            if config.mode is not Kq1Mode.ON_REQUEST:
                return _refusal(
                    message,
                    "this QKD module supplies keys proactively (Q.4162 clause 7.1); "
                    "key requests are not supported",
                )
            if config.km_id is not None and connection.peer_id != config.km_id:
                raise NotAuthorized(f"only the KM {config.km_id!r} may request keys")
            if isinstance(message, kq1.KeyRequest):
                return self._answer_key_request(message)
            if isinstance(message, kq1.KeyRequestWithKeyIds):
                return self._answer_key_ids(message)
            return self._status(message, connection)
        response_type = type(message).response_type()
        if response_type is None:
            if isinstance(message, ErrorIndication):
                logger.warning(
                    "QKD module %s got an error indication from its KM: %s",
                    config.module_id,
                    quoted(message.reason, 200),
                )
            return None
        return _refusal(message, f"{message.spec_name} is not supported by a QKD module")

    def _answer_key_request(self, request: kq1.KeyRequest) -> kq1.ResponseToKeyRequest:
        """Q.4162 Table 4: up to ``number_of_keys`` (default 1, at most
        :attr:`max_keys_per_response`) of the oldest buffered keys, removed from the buffer."""
        config = self._config
        if request.size_of_key is not None and request.size_of_key != config.key_size:
            raise RequestRefused(f"this module makes keys of {config.key_size} bits")
        options = etsi014.key_request_options(request)
        if options.mandatory:
            raise RequestRefused(
                "a QKD module supports no extension_mandatory parameter",
                etsi014_message=etsi014.MANDATORY_EXTENSION_UNSUPPORTED,
            )
        if options.additional_slaves:
            raise RequestRefused("a QKD module supplies one KM: its max_SAE_ID_count is 0")
        self._check_peer("slave", options.slave)
        wanted = min(request.number_of_keys or 1, self._max_keys)
        keys = [self.key(index) for index in self._take(wanted)]
        if not keys:
            return kq1.ResponseToKeyRequest(
                keys=[], response="failure: insufficient keys (0 ready)"
            )
        self._delivered += len(keys)
        return kq1.ResponseToKeyRequest(
            keys=[
                Key(key=key.key, key_id=key.key_id, key_extension=_key_extension(config, key))
                for key in keys
            ],
            response="success",
        )

    def _answer_key_ids(self, request: kq1.KeyRequestWithKeyIds) -> kq1.ResponseToKeyRequest:
        """ETSI 014 Get key with key IDs (Q.4162 Appendix II, SDK extension): the KM at this
        end takes the keys whose IDs the KM at the other end got from the matching module."""
        self._check_peer("master", request.master_sae_id)
        if len(request.key_ids) > self._max_keys:
            raise RequestRefused(
                f"{len(request.key_ids)} key IDs are over this module's max_key_per_request "
                f"({self._max_keys})"
            )
        keys = self._take_ids([key_id.key_id for key_id in request.key_ids])
        self._delivered += len(keys)
        return kq1.ResponseToKeyRequest(
            keys=[
                Key(key=key.key, key_id=key.key_id, key_extension=_key_extension(self._config, key))
                for key in keys
            ],
            response="success",
        )

    def _status(self, request: kq1.StatusRequest, connection: Connection) -> kq1.Status:
        """ETSI 014 Get status (SDK extension): the keys buffered for the KM."""
        config = self._config
        self._check_peer("slave", request.slave_sae_id)
        return kq1.Status(
            source_kme_id=config.module_id,
            target_kme_id=config.matching_module_id,
            master_sae_id=connection.peer_id or config.km_id or "km",
            slave_sae_id=request.slave_sae_id,
            key_size=config.key_size,
            stored_key_count=min(self.stats.buffered, config.buffer_keys),
            max_key_count=config.buffer_keys,
            max_key_per_request=self._max_keys,
            max_key_size=config.key_size,
            min_key_size=config.key_size,
            max_sae_id_count=0,
        )

    def _check_peer(self, role: str, sae_id: str | None) -> None:
        """Refuse an ETSI 014 request naming as ``role`` SAE another KM than the one at the
        other end of the link."""
        peer = self._config.peer_km_id
        if sae_id is not None and peer is not None and sae_id != peer:
            raise RequestRefused(
                f"{role} SAE {quoted(sae_id)} is not the KM at the other end of this link ({peer})"
            )


def _refusal(request: Message, reason: str) -> Message:
    """The failure response to ``request`` (or an error indication) saying ``reason``."""
    response_type = type(request).response_type()
    assert response_type is not None
    return failure_response(response_type, reason, command_code=request.code)
