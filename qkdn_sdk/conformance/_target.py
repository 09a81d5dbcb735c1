"""What the suite is pointed at: the URL of a running role and the identities the suite may
present to it (:class:`Identity`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import attrs

from qkdn_sdk.errors import QkdnError
from qkdn_sdk.tls import TLSConfig

__all__ = [
    "DEFAULT_COMMUNITY",
    "DEFAULT_HASH_ALGORITHM",
    "DEFAULT_TIMEOUT",
    "ControllerTarget",
    "Identity",
    "KMTarget",
    "QKDModuleTarget",
]

DEFAULT_TIMEOUT = 30.0
"""Seconds one procedure may take."""
DEFAULT_HASH_ALGORITHM = "sha256"
"""The algorithm of Q.4162 Table 1's Hash value, which the Recommendation does not fix."""
DEFAULT_COMMUNITY = "qkdn"
"""The community a literal neighbour names in its HELLO (D2.3 Table 7-8)."""


def _hash_algorithm(_instance: object, _attribute: object, value: str) -> None:
    if value not in hashlib.algorithms_available:
        raise ValueError(f"unknown hash algorithm {value!r}")


@attrs.frozen
class Identity:
    """An identity the suite presents: its ID, and the TLS settings that prove it (``None``
    where the transport authenticates nobody: the ID is then only claimed)."""

    id: str
    tls: TLSConfig | None = None

    @classmethod
    def of(cls, tls: TLSConfig) -> Identity:
        """The identity of ``tls``'s certificate. Raises :class:`~qkdn_sdk.errors.QkdnError`
        when it has none, and :class:`~qkdn_sdk.tls.TLSConfigError` for a bad file."""
        identity = tls.identity()
        if identity is None:
            raise QkdnError("an identity needs a certificate")
        return cls(identity, tls)


def _tuple(value: Iterable[Identity]) -> tuple[Identity, ...]:
    return tuple(value)


def _at_least_two(_instance: object, _attribute: object, value: tuple[Identity, ...]) -> None:
    if len(value) < 2:
        raise ValueError("a controller is tested with the identities of two KMs at least")


@attrs.frozen
class ControllerTarget:
    """A QKDN controller at ``url``; ``kms``: identities of KMs of its network in route order,
    the source KM first and the destination KM last (those between are played when a route
    crosses them); ``application``: an application the destination KM serves (the procedures
    that name one are skipped without it)."""

    url: str
    kms: tuple[Identity, ...] = attrs.field(converter=_tuple, validator=_at_least_two)
    application: str | None = None
    timeout: float = DEFAULT_TIMEOUT


def _two(_instance: object, _attribute: object, value: tuple[Identity, ...]) -> None:
    if len(value) != 2:
        raise ValueError("a KM is tested with the identities of two of its applications")


@attrs.frozen
class KMTarget:
    """A KM: its Ak URL, where the suite plays ``applications`` (two it serves: the source and
    the destination); its Ck URL, where the suite plays its QKDN ``controller`` (the Ck
    procedures are skipped without both); ``peer_km``: a neighbouring KM, towards which key is
    reserved (the reservation is skipped without it); its KM link URL, where the suite plays a
    ``neighbour`` of ``community``, and its Kq-1 URL, where it plays a QKD ``module`` of it,
    whose Hash values are ``hash_algorithm`` (those procedures are skipped without both)."""

    ak_url: str
    applications: tuple[Identity, ...] = attrs.field(converter=_tuple, validator=_two)
    ck_url: str | None = None
    controller: Identity | None = None
    peer_km: str | None = None
    kx_url: str | None = None
    neighbour: Identity | None = None
    kq1_url: str | None = None
    module: Identity | None = None
    community: str = DEFAULT_COMMUNITY
    hash_algorithm: str = attrs.field(default=DEFAULT_HASH_ALGORITHM, validator=_hash_algorithm)
    timeout: float = DEFAULT_TIMEOUT


def _somewhere(instance: QKDModuleTarget, _attribute: object, value: str | None) -> None:
    if value is None and instance.url is None:
        raise ValueError("a QKD module is tested at its URL, or where it connects to (listen)")


@attrs.frozen
class QKDModuleTarget:
    """A QKD module, to which the suite plays its ``km``: at ``url``, where an on-request
    module serves (Q.4162 clause 7.2), and at ``listen``, a URL the suite serves, which a
    proactive module is configured to push its keys to (clause 7.1); the procedure of the
    other mode is skipped. ``hash_algorithm``: the one of the module's Hash values."""

    url: str | None
    km: Identity
    listen: str | None = attrs.field(default=None, validator=_somewhere)
    hash_algorithm: str = attrs.field(default=DEFAULT_HASH_ALGORITHM, validator=_hash_algorithm)
    timeout: float = DEFAULT_TIMEOUT
