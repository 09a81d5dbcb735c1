"""The simulated QKD module's Kq-1 side: :class:`QKDModule` hands the keys of its
:class:`~qkdn_sdk.roles.qkd_module._keys.KeyBuffer` to its KM, pushing them (PROACTIVE) or
answering key requests (ON_REQUEST, and the ETSI GS QKD 014 KME requests of Q.4162
Appendix II), as the :mod:`qkdn_sdk.roles.qkd_module` docstring says.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import CollectorRegistry

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
from qkdn_sdk.messages import Interface, Key, Message, Role, failure_response, kq1, received_by
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.roles.metrics import module_metrics
from qkdn_sdk.roles.qkd_module._config import Kq1Mode, QKDModuleConfig, hash_of
from qkdn_sdk.roles.qkd_module._control import ControllerLink
from qkdn_sdk.roles.qkd_module._keys import KeyBuffer, LinkKey, QKDModuleStats
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, Limits, ServerInfo, connect, serve

__all__ = ["QKDModule", "max_keys_per_response"]

logger = logging.getLogger("qkdn_sdk.roles.qkd_module")

_PAYLOAD_BUDGET = 60_000
"""Bytes of a :class:`~qkdn_sdk.messages.kq1.ResponseToKeyRequest` payload the keys may fill:
under the 65,535 of the frame's Length, with room to spare."""

_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 2.0

_ACCEPTS = frozenset(
    cls for cls in received_by(Role.QKD_MODULE) if cls.interface is not Interface.CQ
)
"""What the KM may send its module: the Kq-1 messages (and the error indication)."""


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
        "hash_value": hash_of(config.hash_algorithm, key.key),
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
        hash_value=hash_of(config.hash_algorithm, key.key),
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
    ``config.module_id`` is said). ``limits`` bound what the KM's connections may cost. Given
    a ``registry``, the module puts its metrics there (:mod:`qkdn_sdk.roles.metrics`: its
    :attr:`stats`).

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
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._config = config
        self._tls = tls
        self._limits = limits
        self._max_keys = max_keys_per_response(config)
        sample = _sample_key(config)
        if self._max_keys < 1 or len(encode_payload(_key_supply(config, sample))) > _PAYLOAD_BUDGET:
            raise ValueError(
                f"a key of {config.key_size} bits with its metadata does not fit one Kq-1 frame"
            )
        self._keys = KeyBuffer(config, clock)
        self._running = False
        if registry is not None:
            module_metrics(registry, self)

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
        return self._keys.ready_time(index)

    def key(self, index: int) -> LinkKey:
        """Key ``index`` of this module's link, with its metadata (the same at both ends)."""
        return self._keys.key(index)

    @property
    def stats(self) -> QKDModuleStats:
        """The key counts now (the buffer first catches up with the clock)."""
        return self._keys.stats

    # --- running --------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Supply keys to the KM until cancelled, and, with ``controller_id``, authenticate to the
        controller and supply it the link's status (D2.3 clause 8.1; keys never wait for it).

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
            nursery.start_soon(self._keys.watch)
            if self._config.controller_id is not None:
                link = ControllerLink(
                    self._config,
                    lambda: self._keys.stats,
                    nursery,
                    tls=self._tls,
                    limits=self._limits,
                )
                nursery.start_soon(link.run)
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
            if self._keys.pending is None:
                self._keys.pending = await self._keys.wait_for_key()
            if connection.closed:  # e.g. idle, while we waited for a key: reconnect
                return acknowledged
            key = self.key(self._keys.pending)
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
            self._keys.pending = None
            self._keys.delivered += 1
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
        keys = [self.key(index) for index in self._keys.take(wanted)]
        if not keys:
            return kq1.ResponseToKeyRequest(
                keys=[], response="failure: insufficient keys (0 ready)"
            )
        self._keys.delivered += len(keys)
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
        keys = self._keys.take_ids([key_id.key_id for key_id in request.key_ids])
        self._keys.delivered += len(keys)
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
