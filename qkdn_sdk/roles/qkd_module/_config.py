"""What a simulated QKD module is made with: :class:`QKDModuleConfig` and :class:`Kq1Mode`
(Q.4162 clause 7), checked when built."""

from __future__ import annotations

import enum
import hashlib
import math
from typing import Any

import attrs

__all__ = [
    "BUFFER_KEYS",
    "HASH_ALGORITHMS",
    "KEY_SIZE_UNIT",
    "LINK_SECRET_SIZE",
    "REPORT_INTERVAL",
    "Kq1Mode",
    "QKDModuleConfig",
    "check_hash_algorithm",
    "hash_of",
]

LINK_SECRET_SIZE = 32
"""Bytes of a link secret: a ChaCha20 key."""

BUFFER_KEYS = 256
"""Ready keys a module holds for its KM unless configured otherwise."""

KEY_SIZE_UNIT = 256
"""QKD-key sizes are positive multiples of this many bits."""

REPORT_INTERVAL = 5.0
"""Seconds between two status supplies of a module to its QKDN controller unless configured
otherwise (a QKD link's status changes slowly; the KMs report key amounts far more often)."""


HASH_ALGORITHMS = (
    "sha256",
    "sha224",
    "sha384",
    "sha512",
    "sha512_224",
    "sha512_256",
    "sha3_224",
    "sha3_256",
    "sha3_384",
    "sha3_512",
    "blake2b",
    "blake2s",
)
"""The algorithms a module may make the "Hash value" of Q.4162 Table 1 with (the table does not
fix one): the SHA-2 and SHA-3 families and BLAKE2, by their :mod:`hashlib` names; the first,
SHA-256, unless a link's configuration names another."""


def check_hash_algorithm(name: str) -> str:
    """``name``, when it is one of :data:`HASH_ALGORITHMS`; else :class:`ValueError`."""
    if name not in HASH_ALGORITHMS:
        raise ValueError(
            f"unknown hash algorithm {name!r}: expected one of {', '.join(HASH_ALGORITHMS)}"
        )
    return name


def hash_of(algorithm: str, key: bytes) -> str:
    """The "Hash value" of Q.4162 Table 1: ``algorithm`` (one of :data:`HASH_ALGORITHMS`) of
    ``key``, in hex."""
    return hashlib.new(algorithm, key).hexdigest()


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

    Raises :class:`ValueError` when a value is out of range, the mode's URL is missing
    (:attr:`Kq1Mode.PROACTIVE` needs ``km_url``, :attr:`Kq1Mode.ON_REQUEST` needs ``listen_url``),
    or only one of ``controller_id`` and ``controller_url`` is given.
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
    hash_algorithm: str = attrs.field(default=HASH_ALGORITHMS[0], converter=check_hash_algorithm)
    """The algorithm of the "Hash value" of each key pushed (:data:`HASH_ALGORITHMS`); the KM's
    link names the same one."""
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
    controller_id: str | None = None
    """The QKDN controller the module authenticates to and supplies its QKD link status to (FG
    QIT4N D2.3 clause 8.1, over Cq): its certificate ID over TLS. ``None`` (with
    ``controller_url``): the module has no controller."""
    controller_url: str | None = None
    """The controller's URL (its Ck URL: the controller serves Cq there too)."""
    report_interval: float = attrs.field(default=REPORT_INTERVAL, validator=_positive)
    """Seconds between two unsolicited status supplies to the controller, and between two tries
    to reach it while it is unreachable or refuses."""

    def __attrs_post_init__(self) -> None:
        if self.module_id == self.matching_module_id:
            raise ValueError("module_id and matching_module_id must differ")
        if self.mode is Kq1Mode.PROACTIVE and not self.km_url:
            raise ValueError("a proactive QKD module needs km_url, the URL of its KM")
        if self.mode is Kq1Mode.ON_REQUEST and not self.listen_url:
            raise ValueError("an on-request QKD module needs listen_url, the URL it serves")
        if (self.controller_id is None) != (self.controller_url is None):
            raise ValueError("give controller_id and controller_url together, or neither")
        if self.controller_id == "" or self.controller_url == "":
            raise ValueError("controller_id and controller_url must not be empty")
