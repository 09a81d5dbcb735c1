"""The state of a running network, read from its roles' metrics: what ``qkdn network status``
shows, ``qkdn network up`` keeps on screen, and ``qkdn network show STATE_DIR`` draws.

:func:`scrape` reads every role's Prometheus metrics (the URLs ``endpoints.json`` lists under
``metrics``; :mod:`qkdn_sdk.roles.metrics` names them) and :func:`network_status` turns them into
a :class:`NetworkStatus`: each link end's key level (D2.3 Table 8-2 key amount, both directions),
its generation and consumption rates (from two readings of the counters), whether it is up; each
KM's applications, relays, keys held and failed requests; each QKD module's dropped keys. A role
whose metrics cannot be read is named with the reason, and the rest is shown.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families
from rich.bar import Bar
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = [
    "SUMMARY_INTERVAL",
    "KMStatus",
    "LinkEnd",
    "ModuleStatus",
    "NetworkStatus",
    "Reading",
    "network_status",
    "render_status",
    "scrape",
    "status_now",
    "summary_line",
    "watch",
]

_TIMEOUT = 5.0
"""Seconds one role's metrics may take to read."""
REFRESH = 1.0
"""Seconds between two readings of :func:`watch` on a terminal and of :func:`status_now`:
the window of their rates."""
SUMMARY_INTERVAL = 60.0
"""Seconds between two summary lines of :func:`watch` elsewhere."""

Sample = tuple[str, Mapping[str, str], float]
"""A metric sample: its name (a counter's ends in ``_total``), labels and value."""


@attrs.frozen
class Reading:
    """Every role's metric samples at one moment (``errors``: the roles that did not answer)."""

    at: float
    """``time.monotonic()`` when they were read."""
    samples: Mapping[str, list[Sample]]
    errors: Mapping[str, str] = attrs.Factory(dict)


def _read(url: str) -> list[Sample]:
    if not url.startswith(("http://", "https://")):
        raise ValueError("not an http:// URL")
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
        text = response.read().decode()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


async def scrape(urls: Mapping[str, str]) -> Reading:
    """Read the metrics of every role of ``urls`` (role ID -> its ``/metrics`` URL) at once."""
    samples: dict[str, list[Sample]] = {}
    errors: dict[str, str] = {}

    async def read(role: str, url: str) -> None:
        try:
            samples[role] = await trio.to_thread.run_sync(_read, url)
        except (OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            errors[role] = f"cannot read its metrics at {url}: {reason}"

    async with trio.open_nursery() as nursery:
        for role, url in urls.items():
            nursery.start_soon(read, role, url)
    return Reading(at=time.monotonic(), samples=samples, errors=errors)


@attrs.frozen
class LinkEnd:
    """One end of a KM link: what ``km`` holds with ``neighbour``."""

    km: str
    neighbour: str
    send_bits: int
    """Link key to spend sending to the neighbour (D2.3 key amount)."""
    receive_bits: int
    """Link key the neighbour spends sending here."""
    up: bool
    generation_rate: float | None
    """Bits/s of link key cut to send with (D2.3 key generation rate), between two readings."""
    consumption_rate: float | None
    """Bits/s spent sending (D2.3 key consumption rate), between two readings."""


@attrs.frozen
class KMStatus:
    """What one KM's metrics say: its applications, the keys it holds, its relays and its
    failed requests."""

    km: str
    applications: tuple[str, ...]
    keys_held: Mapping[str, int]
    """Keys in the store by kind (``app``, ``session``, ``delivered``, ``link``...)."""
    relays: Mapping[str, int]
    """Relays since the KM started, by its role in them (source, transit, destination)."""
    failed_requests: int
    """Requests answered with a failure or refused, since the KM started."""
    sessions: int
    """Proactive key supply sessions open (Q.4161 clause 7.2)."""
    pushes_pending: int
    """Keys of sessions waiting to be pushed to their destination application."""


@attrs.frozen
class ModuleStatus:
    """What one QKD module's metrics say: its KM, the keys it buffers and those it dropped."""

    module: str
    km: str
    dropped_keys: int
    """Keys dropped from its full buffer since it started (its KM took them too slowly, or
    was at its cap)."""
    buffered_keys: int


@attrs.frozen
class NetworkStatus:
    """A network's status read from its roles' metrics (:func:`network_status`): each link
    end, KM and QKD module, and the roles that could not be read."""

    links: tuple[LinkEnd, ...]
    kms: tuple[KMStatus, ...]
    modules: tuple[ModuleStatus, ...]
    unreachable: Mapping[str, str]
    """Roles whose metrics could not be read, with the reason."""

    def as_json(self) -> dict[str, Any]:
        """The status as JSON-ready data."""
        return attrs.asdict(self, recurse=True)


def _values(samples: Iterable[Sample], name: str) -> list[tuple[Mapping[str, str], float]]:
    return [(labels, value) for sample, labels, value in samples if sample == name]


def _by_link(samples: Iterable[Sample], name: str, **match: str) -> dict[tuple[str, str], float]:
    return {
        (labels["km"], labels["neighbour"]): value
        for labels, value in _values(samples, name)
        if all(labels.get(key) == wanted for key, wanted in match.items())
    }


def _rate(now: float, before: float | None, seconds: float) -> float | None:
    if before is None or seconds <= 0 or now < before:  # a restarted role counts from 0
        return None
    return (now - before) / seconds


def network_status(
    reading: Reading,
    applications: Mapping[str, str],
    previous: Reading | None = None,
) -> NetworkStatus:
    """The status the samples of ``reading`` tell (``applications``: application -> its KM);
    rates need the ``previous`` reading."""
    samples = [sample for role in sorted(reading.samples) for sample in reading.samples[role]]
    earlier = (
        [sample for role_samples in previous.samples.values() for sample in role_samples]
        if previous is not None
        else []
    )
    seconds = reading.at - previous.at if previous is not None else 0.0
    send = _by_link(samples, "qkdn_km_link_key_amount_bits", direction="send")
    receive = _by_link(samples, "qkdn_km_link_key_amount_bits", direction="receive")
    up = _by_link(samples, "qkdn_km_link_up")
    generated = _by_link(samples, "qkdn_km_link_key_generated_bits_total")
    consumed = _by_link(samples, "qkdn_km_link_key_consumed_bits_total")
    generated_before = _by_link(earlier, "qkdn_km_link_key_generated_bits_total")
    consumed_before = _by_link(earlier, "qkdn_km_link_key_consumed_bits_total")
    links = tuple(
        LinkEnd(
            km=km,
            neighbour=neighbour,
            send_bits=int(send[km, neighbour]),
            receive_bits=int(receive.get((km, neighbour), 0)),
            up=bool(up.get((km, neighbour), 0)),
            generation_rate=_rate(
                generated.get((km, neighbour), 0),
                generated_before.get((km, neighbour)),
                seconds,
            ),
            consumption_rate=_rate(
                consumed.get((km, neighbour), 0), consumed_before.get((km, neighbour)), seconds
            ),
        )
        for km, neighbour in sorted(send)
    )
    kms = []
    for km in sorted({labels["km"] for name, labels, _ in samples if name.startswith("qkdn_km_")}):
        mine = [(name, labels, value) for name, labels, value in samples if labels.get("km") == km]
        kms.append(
            KMStatus(
                km=km,
                applications=tuple(sorted(app for app, at in applications.items() if at == km)),
                keys_held={
                    labels["kind"]: int(value)
                    for labels, value in _values(mine, "qkdn_km_stored_keys")
                },
                relays={
                    labels["role"]: int(value)
                    for labels, value in _values(mine, "qkdn_km_relays_total")
                },
                failed_requests=int(
                    sum(
                        value
                        for labels, value in _values(mine, "qkdn_km_requests_total")
                        if labels.get("outcome") != "success"
                    )
                ),
                sessions=int(sum(value for _, value in _values(mine, "qkdn_km_sessions"))),
                pushes_pending=int(
                    sum(
                        value
                        for labels, value in _values(mine, "qkdn_km_stored_keys")
                        if labels.get("kind") == "session"
                    )
                ),
            )
        )
    dropped = {
        labels["module"]: (labels.get("km", ""), value)
        for labels, value in _values(samples, "qkdn_qkd_module_dropped_keys_total")
    }
    buffered = {
        labels["module"]: value
        for labels, value in _values(samples, "qkdn_qkd_module_buffered_keys")
    }
    modules = tuple(
        ModuleStatus(
            module=module,
            km=km,
            dropped_keys=int(value),
            buffered_keys=int(buffered.get(module, 0)),
        )
        for module, (km, value) in sorted(dropped.items())
    )
    return NetworkStatus(
        links=links, kms=tuple(kms), modules=modules, unreachable=dict(reading.errors)
    )


def _bits(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("Mbit", 1e6), ("kbit", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} bit"


def render_status(status: NetworkStatus, *, cap_bits: int | None = None) -> RenderableType:
    """A rich view of ``status``: a table of link ends with a bar of their key level (against
    ``cap_bits``, else the fullest end), a table of KMs, the modules that dropped keys, and the
    roles that did not answer."""
    links = Table(title="KM links", title_justify="left")
    for column in ("link", "up", "key to send", "", "to receive", "generated", "consumed"):
        links.add_column(
            column, justify="right" if column not in ("link", "") else "left", no_wrap=True
        )
    top = cap_bits or max((end.send_bits for end in status.links), default=0) or 1
    for end in status.links:
        links.add_row(
            f"{end.km} -> {end.neighbour}",
            Text("up", style="green") if end.up else Text("DOWN", style="bold red"),
            _bits(end.send_bits),
            Bar(size=top, begin=0, end=min(end.send_bits, top), width=20),
            _bits(end.receive_bits),
            _bits(end.generation_rate) + "/s" if end.generation_rate is not None else "-",
            _bits(end.consumption_rate) + "/s" if end.consumption_rate is not None else "-",
        )
    kms = Table(title="KMs", title_justify="left")
    for column in ("KM", "applications", "keys held", "relays", "sessions", "failed requests"):
        kms.add_column(column, no_wrap=column == "KM")
    for km in status.kms:
        kms.add_row(
            km.km,
            ", ".join(km.applications) or "-",
            ", ".join(f"{kind} {count:,}" for kind, count in sorted(km.keys_held.items())) or "0",
            ", ".join(f"{role} {count:,}" for role, count in sorted(km.relays.items())) or "0",
            f"{km.sessions:,} ({km.pushes_pending:,} keys to push)",
            Text(f"{km.failed_requests:,}", style="red" if km.failed_requests else ""),
        )
    parts: list[RenderableType] = [links, kms]
    dropping = [module for module in status.modules if module.dropped_keys]
    if dropping:
        parts.append(
            Text(
                "QKD modules that dropped keys (their KM took them slower than the link made "
                "them, or held its cap): "
                + ", ".join(f"{module.module} {module.dropped_keys:,}" for module in dropping),
                style="yellow",
            )
        )
    for role, reason in sorted(status.unreachable.items()):
        parts.append(Text(f"{role}: {reason}", style="bold red"))
    return Group(*parts)


def summary_line(status: NetworkStatus) -> str:
    """One line: links up, the lowest key level, relays and failed requests."""
    up = sum(end.up for end in status.links)
    lowest = min(status.links, key=lambda end: end.send_bits, default=None)
    relays = sum(km.relays.get("source", 0) for km in status.kms)
    failed = sum(km.failed_requests for km in status.kms)
    parts = [f"{up} of {len(status.links)} link ends up"]
    if lowest is not None:
        parts.append(
            f"lowest key level {lowest.km} -> {lowest.neighbour} {_bits(lowest.send_bits)}"
        )
    parts.append(f"{relays:,} relays")
    parts.append(f"{failed:,} failed requests")
    if status.unreachable:
        parts.append(f"not answering: {', '.join(sorted(status.unreachable))}")
    return "; ".join(parts)


async def status_now(urls: Mapping[str, str], applications: Mapping[str, str]) -> NetworkStatus:
    """The status of the roles of ``urls`` now, its rates measured over :data:`REFRESH`
    seconds (two readings)."""
    before = await scrape(urls)
    await trio.sleep(REFRESH)  # the window the rates are measured over
    return network_status(await scrape(urls), applications, before)


async def watch(urls: Mapping[str, str], applications: Mapping[str, str], console: Console) -> None:
    """Until cancelled: on a terminal, the view of :func:`render_status`, read again every
    :data:`REFRESH` seconds; elsewhere (a log, a pipe), one :func:`summary_line` every
    :data:`SUMMARY_INTERVAL` seconds."""
    previous = await scrape(urls)
    if not console.is_terminal:
        while True:
            await trio.sleep(SUMMARY_INTERVAL)  # the summary's period
            reading = await scrape(urls)
            console.print(summary_line(network_status(reading, applications, previous)))
            previous = reading
    with Live(console=console, auto_refresh=False) as view:
        while True:
            await trio.sleep(REFRESH)  # the screen's refresh
            reading = await scrape(urls)
            view.update(render_status(network_status(reading, applications, previous)))
            view.refresh()
            previous = reading
