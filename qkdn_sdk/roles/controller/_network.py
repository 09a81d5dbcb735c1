"""The network as the QKDN controller sees it, and the routes over it (Q.4164 clauses 7.1, 7.2).

:class:`ControllerConfig` is what the controller knows before any KM reports; :class:`KeyNetwork`
adds what the KMs report of each directed KM link (its key amount and state) and computes the
key-weighted shortest routes the :mod:`qkdn_sdk.roles.controller` docstring describes. Nothing
here does I/O or speaks Ck: the :class:`~qkdn_sdk.roles.controller.Controller` owns one
:class:`KeyNetwork` and feeds it what the KMs report.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from qkdn_sdk.errors import QkdnError, quoted

__all__ = ["MAX_KEY_BITS", "SCALE", "ControllerConfig", "KeyNetwork", "NoRoute", "link_cost"]

logger = logging.getLogger("qkdn_sdk.roles.controller")

SCALE = 2**16
"""Weight of the key shortage penalty in :func:`link_cost`. A link with no key costs
``1 + SCALE`` (as much as 65,537 hops with key to spare); a link with ``SCALE`` bits costs about
2; with many times ``SCALE`` bits, about 1. So the hop count decides between routes whose links
all hold far more than 64 Kibit, and the scarcest links decide otherwise."""

MAX_KEY_BITS = 2**63 - 1
"""The largest key amount or ``key_bits`` the controller takes from a peer; larger is malformed."""

_MAX_LINKS_NAMED = 8  # short links named in a no-route reason; the rest are counted


class NoRoute(QkdnError):
    """No route answers the question; the text says why (an unknown KM, the same KM at both
    ends, KMs not connected, or the links that lack key)."""


# --- configuration ----------------------------------------------------------------------------


def _frozen_kms(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):  # frozenset("km-a") would be its letters
        raise TypeError(f"kms: expected a collection of KM IDs, got the string {value!r}")
    return frozenset(value)


def _frozen_links(value: Iterable[Iterable[str]]) -> frozenset[frozenset[str]]:
    links = []
    for link in value:
        if isinstance(link, str):
            raise TypeError(f"links: expected pairs of KM IDs, got the string {link!r}")
        links.append(frozenset(link))
    return frozenset(links)


def _frozen_applications(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


def _frozen_modules(value: Mapping[str, Iterable[str]]) -> Mapping[str, frozenset[str]]:
    modules = {}
    for module, link in value.items():
        if isinstance(link, str):
            raise TypeError(f"modules: {module!r} must name the two KMs of its link, not {link!r}")
        modules[module] = frozenset(link)
    return MappingProxyType(modules)


def _check_kms(_instance: Any, _attribute: attrs.Attribute[Any], value: frozenset[str]) -> None:
    for km in value:
        if not isinstance(km, str) or not km:
            raise ValueError(f"kms: a KM ID must be a non-empty string, got {km!r}")


def _check_links(
    instance: ControllerConfig, _attribute: attrs.Attribute[Any], value: frozenset[frozenset[str]]
) -> None:
    for link in value:
        ends = sorted(link, key=repr)  # an end may be no string: say so, do not fail on <
        if len(ends) == 1:
            raise ValueError(f"links: {ends[0]!r} is linked to itself")
        if len(ends) != 2:
            raise ValueError(f"links: a link joins two KMs, got {ends!r}")
        for km in ends:
            if km not in instance.kms:
                raise ValueError(f"links: {ends[0]!r}-{ends[1]!r} names {km!r}, not one of kms")


def _check_applications(
    instance: ControllerConfig, _attribute: attrs.Attribute[Any], value: Mapping[str, str]
) -> None:
    for application, km in value.items():
        if not isinstance(application, str) or not application:
            raise ValueError(f"applications: an ID must be a non-empty string, got {application!r}")
        if km not in instance.kms:
            raise ValueError(f"applications: {application!r} is served by {km!r}, not one of kms")


def _check_modules(
    instance: ControllerConfig,
    _attribute: attrs.Attribute[Any],
    value: Mapping[str, frozenset[str]],
) -> None:
    for module, link in value.items():
        if not isinstance(module, str) or not module:
            raise ValueError(f"modules: an ID must be a non-empty string, got {module!r}")
        if module in instance.kms or module == instance.controller_id:
            raise ValueError(f"modules: {module!r} is the ID of a KM or of the controller")
        if link not in instance.links:
            ends = sorted(link, key=repr)
            raise ValueError(f"modules: {module!r} is on {ends!r}, not one of links")


@attrs.frozen
class ControllerConfig:
    """What the controller knows of the network before any KM reports.

    ``kms``: the KM IDs; ``links``: the KM links, each a pair of distinct KMs of ``kms`` with a
    QKD link between them (any iterable of pairs is taken); ``applications``: application ID ->
    the KM that serves it (default: none); ``modules``: QKD module ID -> the two KMs of the link
    it is an end of (default: none). Building one raises :class:`ValueError` naming the bad
    entry, or :class:`TypeError` for a string where a collection belongs.
    """

    controller_id: str = attrs.field(validator=attrs.validators.min_len(1))
    """Our ID (what a KM sees as its peer on ``memory://``; our certificate's ID over TLS)."""
    listen_url: str
    """The Ck URL served: ``tcp+tls://0.0.0.0:5200``, ``memory://controller``..."""
    kms: frozenset[str] = attrs.field(converter=_frozen_kms, validator=_check_kms)
    links: frozenset[frozenset[str]] = attrs.field(converter=_frozen_links, validator=_check_links)
    applications: Mapping[str, str] = attrs.field(
        factory=dict, converter=_frozen_applications, validator=_check_applications, hash=False
    )
    also_listen: tuple[str, ...] = ()
    """Further Ck URLs served, by other transports (``grpcs://...``)."""
    modules: Mapping[str, frozenset[str]] = attrs.field(
        factory=dict, converter=_frozen_modules, validator=_check_modules, hash=False
    )
    """The QKD modules that authenticate and supply their QKD link's status to the controller
    (D2.3 clause 8.1, over Cq), each with the two KMs of its link; they reach the controller at
    its Ck URLs."""
    require_authentication: bool = False
    """Answer a KM or a QKD module only once it authenticated (D2.3 clause 8.1.1 a): 0x1480,
    0x3480). Off: the TLS handshake is the authentication, and a KM written from Q.4164 alone,
    which knows no 0x1480, is served."""


def link_cost(bits: int) -> float:
    """The cost of crossing a directed link that holds ``bits`` of key: ``1 + SCALE / (1 +
    bits)``, between 1 (plenty of key) and ``1 + SCALE`` (none)."""
    return 1 + SCALE / (1 + bits)


# --- the network as the KMs report it ---------------------------------------------------------


class KeyNetwork:
    """The KM links of ``config`` and what their KMs last reported of each direction: the bits
    of key it holds and its state; the routes over them. The
    :class:`~qkdn_sdk.roles.controller.Controller` methods of the same names state the
    contracts."""

    def __init__(self, config: ControllerConfig) -> None:
        self._neighbours: dict[str, list[str]] = {km: [] for km in config.kms}
        for link in config.links:
            first, second = sorted(link)
            self._neighbours[first].append(second)
            self._neighbours[second].append(first)
        for neighbours in self._neighbours.values():
            neighbours.sort()
        self._amounts: dict[tuple[str, str], int] = {}
        self._states: dict[tuple[str, str], str] = {}

    def key_amount(self, source_km: str, destination_km: str) -> int | None:
        """See :meth:`Controller.key_amount <qkdn_sdk.roles.controller.Controller.key_amount>`."""
        return self._amounts.get((source_km, destination_km))

    def link_state(self, source_km: str, destination_km: str) -> str | None:
        """See :meth:`Controller.link_state <qkdn_sdk.roles.controller.Controller.link_state>`."""
        return self._states.get((source_km, destination_km))

    def route(
        self,
        source_km: str,
        destination_km: str,
        key_bits: int = 0,
        avoid: Collection[str] = (),
    ) -> list[str]:
        """See :meth:`Controller.route <qkdn_sdk.roles.controller.Controller.route>`."""
        if key_bits < 0:
            raise ValueError(f"key_bits must be >= 0, got {key_bits}")
        for end, km in (("source", source_km), ("destination", destination_km)):
            if km not in self._neighbours:
                raise NoRoute(f"unknown {end} KM {quoted(km)}")
        if source_km == destination_km:
            raise NoRoute("source and destination are the same KM")
        if destination_km in avoid:
            raise NoRoute(f"the destination KM {destination_km} is unreachable")
        # (cost, path) in lexicographic order: equal costs are settled by the KM IDs. Costs are
        # positive, so the first time a KM is popped it is with its best (cost, path).
        start: tuple[float, tuple[str, ...]] = (0.0, (source_km,))
        best = {source_km: start}
        heap = [start]
        settled: set[str] = set()
        short: dict[tuple[str, str], int] = {}
        while heap:
            cost, path = heapq.heappop(heap)
            here = path[-1]
            if here in settled:
                continue
            settled.add(here)
            if here == destination_km:
                return list(path)
            for there in self._neighbours[here]:
                if there in settled or there in avoid:
                    continue
                bits = self._amounts.get((here, there), 0)
                if bits < key_bits:
                    short[here, there] = bits
                    continue
                candidate = (cost + link_cost(bits), (*path, there))
                if there not in best or candidate < best[there]:
                    best[there] = candidate
                    heapq.heappush(heap, candidate)
        if not self._connected(source_km, destination_km):
            raise NoRoute(f"{source_km} and {destination_km} are not connected")
        if avoid and not short:
            raise NoRoute(
                f"no route from {source_km} to {destination_km} around the unreachable "
                f"{', '.join(sorted(avoid))}"
            )
        # The links that matter leave what the relay could reach for what it could not.
        blocking = sorted((link, bits) for link, bits in short.items() if link[1] not in settled)
        named = [
            f"{u}->{v} is down"
            if self._states.get((u, v)) == "down"
            else f"{u}->{v} has {_bits(bits, (u, v) in self._amounts)}"
            for (u, v), bits in blocking
        ]
        if len(named) > _MAX_LINKS_NAMED:
            named[_MAX_LINKS_NAMED:] = [f"and {len(named) - _MAX_LINKS_NAMED} more short links"]
        raise NoRoute(
            f"no route from {source_km} to {destination_km} with {key_bits} bits of key per "
            f"link: {', '.join(named)}"
        )

    def _connected(self, source_km: str, destination_km: str) -> bool:
        """Whether the topology (key aside) joins the two KMs."""
        seen = {source_km}
        frontier = [source_km]
        while frontier:
            for there in self._neighbours[frontier.pop()]:
                if there not in seen:
                    seen.add(there)
                    frontier.append(there)
        return destination_km in seen

    def record(self, sender: str, entry: object) -> str | None:
        """Record one entry ``{"km_link": <neighbour>, "key_amount": <bits>, "status": ...}`` of
        ``sender``'s status table (D2.3 Table 8-2) as the amount and state of ``sender ->
        neighbour``; return why it was ignored, or ``None``."""
        if not isinstance(entry, dict):
            return "not an object"
        neighbour = entry.get("km_link")
        amount = entry.get("key_amount")
        if not isinstance(neighbour, str):
            return "km_link is not a KM ID"
        if "key_amount" not in entry:  # a status table without amounts (Table 8-1 chose)
            return None
        if isinstance(amount, bool) or not isinstance(amount, int):
            return "key_amount is not an integer"
        if not 0 <= amount <= MAX_KEY_BITS:
            return f"key_amount is not between 0 and {MAX_KEY_BITS}"
        if neighbour not in self._neighbours.get(sender, ()):
            return f"km_link {quoted(neighbour)} is not a neighbour of {sender} in the topology"
        status = entry.get("status")
        if status in ("up", "down") and self._states.get((sender, neighbour)) != status:
            if (sender, neighbour) in self._states or status == "down":
                logger.info("KM link %s->%s is %s", sender, neighbour, status)
            self._states[sender, neighbour] = status
        before = self._amounts.get((sender, neighbour), 0)
        self._amounts[sender, neighbour] = amount
        if (before == 0) != (amount == 0):  # the link can relay again, or no more
            if amount:
                logger.info("link %s->%s has key: %d bits", sender, neighbour, amount)
            else:
                logger.info("link %s->%s has no key left", sender, neighbour)
        return None


def _bits(bits: int, reported: bool) -> str:
    return f"{bits} bits" if reported else "no key reported"
