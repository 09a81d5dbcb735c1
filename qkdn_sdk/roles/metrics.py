"""Prometheus metrics of the roles: what a KM, the QKDN controller and a simulated QKD module
expose, each in a registry of its own.

Theory of operation
-------------------
A role given a :class:`~prometheus_client.CollectorRegistry` (``KeyManager(...,
registry=...)``, :class:`~qkdn_sdk.roles.controller.Controller`,
:class:`~qkdn_sdk.roles.qkd_module.QKDModule`) puts its metrics there; without one it keeps
none, and nothing it does costs more. Most metrics are read from the state the role keeps anyway,
when the registry is scraped (one collector per role: nothing on the paths keys take). The few
that no state holds are counted as they happen, by objects the role is handed: the messages its
handler answered, by outcome (:class:`RequestCounter`), and the seconds of each relay hop and of
each key store transaction (histograms). A registry per role instance, never the global one:
``qkdn network up`` runs many roles in one process.

Every metric is one row of :data:`METRICS`: its name, type, labels and meaning. The collectors
and counters are made from those rows, and ``docs/metrics.md`` is the table they render
(:func:`metrics_table`; a test fails when it drifts). Names follow the Prometheus conventions
(``qkdn_`` prefix, base units, ``_total`` counters) and, where FG QIT4N D2.3 Table 8-2 names a
status parameter, its term: *key amount* of a KM link, *status* of a KM link; the *key
generation rate* and *key consumption rate* are the rates of the ``_total`` counters.

:func:`serve_metrics` serves a registry as ``http://HOST:PORT/metrics``: prometheus_client's
ASGI app under hypercorn's trio server, plain HTTP (metrics carry IDs and counts, never key
material; bind them to loopback, or to a network only the monitoring reaches).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from qkdn_sdk.errors import NotAuthorized, RequestRefused, TransportError
from qkdn_sdk.messages import Message, failure_reason
from qkdn_sdk.roles.keystore import KeyStore, PostgresKeyStore, SQLiteKeyStore

if TYPE_CHECKING:
    from qkdn_sdk.roles.controller import Controller
    from qkdn_sdk.roles.km import KeyManager
    from qkdn_sdk.roles.qkd_module import QKDModule

__all__ = [
    "METRICS",
    "OUTCOMES",
    "KMInstruments",
    "MetricSpec",
    "RequestCounter",
    "check_address",
    "controller_metrics",
    "km_metrics",
    "metrics_table",
    "module_metrics",
    "serve_metrics",
]

logger = logging.getLogger("qkdn_sdk.roles.metrics")

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram buckets of the latencies: a SQLite commit takes a millisecond or so, a relay hop
over TLS a few."""


@attrs.frozen
class MetricSpec:
    """One metric a role exposes."""

    name: str
    """As scraped: a counter's ends in ``_total``."""
    type: str
    """``counter``, ``gauge`` or ``histogram``."""
    role: str
    """The role that exposes it: ``km``, ``controller`` or ``qkd-module``."""
    labels: tuple[str, ...]
    help: str
    counted: bool = False
    """Counted as things happen; otherwise read from the role's state at each scrape."""


METRICS: tuple[MetricSpec, ...] = (
    # --- a KM ---------------------------------------------------------------------------------
    MetricSpec(
        "qkdn_km_link_key_amount_bits",
        "gauge",
        "km",
        ("km", "neighbour", "direction"),
        "Link key the KM holds with a neighbour, free to use (D2.3 Table 8-2 key amount): "
        "direction send, to spend sending to it (the key amount the KM reports); receive, what "
        "the neighbour spends sending here. Reserved and allocated key is not in it.",
    ),
    MetricSpec(
        "qkdn_km_link_key_reserved_bits",
        "gauge",
        "km",
        ("km", "neighbour"),
        "Link key towards a neighbour reserved and not yet allocated (Q.4164 clause 7.5).",
    ),
    MetricSpec(
        "qkdn_km_link_key_allocated_bits",
        "gauge",
        "km",
        ("km", "neighbour"),
        "Link key towards a neighbour allocated to relays (Q.4164 clause 7.6).",
    ),
    MetricSpec(
        "qkdn_km_link_key_generated_bits_total",
        "counter",
        "km",
        ("km", "neighbour"),
        "Link key to send with cut from QKD-keys since the KM started; its rate is the D2.3 "
        "key generation rate.",
    ),
    MetricSpec(
        "qkdn_km_link_key_consumed_bits_total",
        "counter",
        "km",
        ("km", "neighbour"),
        "Link key spent sending to a neighbour (relay hops and their MACs) since the KM "
        "started; its rate is the D2.3 key consumption rate.",
    ),
    MetricSpec(
        "qkdn_km_link_up",
        "gauge",
        "km",
        ("km", "neighbour"),
        "1 while the KM link is up, 0 while the last request to the neighbour failed to reach "
        "it (D2.3 Table 8-2 status).",
    ),
    MetricSpec(
        "qkdn_km_link_refused_qkd_keys_total",
        "counter",
        "km",
        ("km", "neighbour"),
        "QKD-keys of a link refused, or left at their source, because the link end held its "
        "cap (max_link_key_bits).",
    ),
    MetricSpec(
        "qkdn_km_relays_total",
        "counter",
        "km",
        ("km", "role"),
        "Relays by the KM's part in them: source, started and confirmed; transit, passed on; "
        "destination, received.",
    ),
    MetricSpec(
        "qkdn_km_relay_records",
        "gauge",
        "km",
        ("km", "role", "outcome"),
        "The relay records the KM keeps (the last 1000 per part), by its part and outcome: "
        "pending, confirmed or failure.",
    ),
    MetricSpec(
        "qkdn_km_pushed_keys_total",
        "counter",
        "km",
        ("km", "application"),
        "Session keys an application acknowledged (Q.4161 clause 7.2.4).",
    ),
    MetricSpec(
        "qkdn_km_expired_keys_total",
        "counter",
        "km",
        ("km", "kind"),
        "Keys erased because their lifetime ended, by kind: unfetched, unpushed, delivered.",
    ),
    MetricSpec(
        "qkdn_km_stored_keys",
        "gauge",
        "km",
        ("km", "kind"),
        "Keys in the key store by pool kind: qkd (QKD-keys waiting for key ID "
        "synchronisation), link (256-bit link units, both directions), app (waiting to be "
        "fetched), delivered (kept for a re-fetch), session (waiting to be pushed), reserved, "
        "allocated, pending (relayed, not confirmed).",
    ),
    MetricSpec(
        "qkdn_km_supplied_keys_total",
        "counter",
        "km",
        ("km", "source", "destination"),
        "Keys the KM made at a source application's key request (Q.4161 clause 7.1.1, ETSI 014 "
        "Get key), by application pair: its rate is the pair's key consumption.",
    ),
    MetricSpec(
        "qkdn_km_sessions",
        "gauge",
        "km",
        ("km", "source", "destination"),
        "Proactive key supply sessions open at the KM (Q.4161 clause 7.2), by application pair.",
    ),
    MetricSpec(
        "qkdn_km_requests_total",
        "counter",
        "km",
        ("km", "interface", "message", "outcome"),
        "Messages the KM's handler answered (requests, and one-way messages), by interface, "
        "message class and outcome (OUTCOMES).",
        counted=True,
    ),
    MetricSpec(
        "qkdn_km_relay_hop_seconds",
        "histogram",
        "km",
        ("km", "neighbour"),
        "Seconds from sealing a relay hop to the neighbour's acceptance of it, for hops "
        "accepted. A transit neighbour accepts once it passed the relay on: the figure of the "
        "source includes the hops after it.",
        counted=True,
    ),
    MetricSpec(
        "qkdn_km_store_transaction_seconds",
        "histogram",
        "km",
        ("km",),
        "Seconds of each key store transaction in its worker thread (one group commit; SQLite "
        "and PostgreSQL stores).",
        counted=True,
    ),
    # --- the QKDN controller ------------------------------------------------------------------
    MetricSpec(
        "qkdn_controller_requests_total",
        "counter",
        "controller",
        ("controller", "interface", "message", "outcome"),
        "Messages the controller's handler answered, by interface, message class and outcome "
        "(OUTCOMES).",
        counted=True,
    ),
    MetricSpec(
        "qkdn_controller_km_link_key_amount_bits",
        "gauge",
        "controller",
        ("controller", "km", "neighbour"),
        "The key amount a KM last reported of its link to a neighbour (D2.3 Table 8-2).",
    ),
    MetricSpec(
        "qkdn_controller_km_link_up",
        "gauge",
        "controller",
        ("controller", "km", "neighbour"),
        "1 when a KM last reported its link to a neighbour up, 0 down (D2.3 Table 8-2 status); "
        "absent until it said.",
    ),
    MetricSpec(
        "qkdn_controller_status_reports_total",
        "counter",
        "controller",
        ("controller", "km"),
        "Status information supplies handled from each KM (D2.3 clause 8.1 b)).",
    ),
    # --- a simulated QKD module ---------------------------------------------------------------
    MetricSpec(
        "qkdn_qkd_module_produced_keys_total",
        "counter",
        "qkd-module",
        ("module", "km"),
        "QKD-keys that became ready since the module started (produced = delivered + dropped "
        "+ buffered).",
    ),
    MetricSpec(
        "qkdn_qkd_module_delivered_keys_total",
        "counter",
        "qkd-module",
        ("module", "km"),
        "QKD-keys the KM acknowledged (proactive) or was handed (on request).",
    ),
    MetricSpec(
        "qkdn_qkd_module_dropped_keys_total",
        "counter",
        "qkd-module",
        ("module", "km"),
        "QKD-keys dropped from a full buffer.",
    ),
    MetricSpec(
        "qkdn_qkd_module_buffered_keys",
        "gauge",
        "qkd-module",
        ("module", "km"),
        "QKD-keys ready and not yet delivered.",
    ),
)
"""Every metric of every role: the one place they are named."""

_SPECS = {spec.name: spec for spec in METRICS}

OUTCOMES = ("success", "failure", "refused", "refused-not-authorized", "refused-over-quota")
"""The ``outcome`` of a request: answered; answered with a failure (a failure response, or an
error of the handler); refused as asked (over a limit of the role, keys it does not hold:
:class:`~qkdn_sdk.errors.RequestRefused`); refused because the sender may not ask it
(:class:`~qkdn_sdk.errors.NotAuthorized`, a one-way message dropped so too); refused because it
is over a quota of its application. Refusals a handler answers in a response of its own (a
session creation's Table 5) count as failures."""


def metrics_table() -> str:
    """:data:`METRICS` as the Markdown table of ``docs/metrics.md``."""
    rows = ["| name | type | labels | role | meaning |", "|---|---|---|---|---|"]
    for spec in METRICS:
        labels = ", ".join(f"`{label}`" for label in spec.labels)
        rows.append(f"| `{spec.name}` | {spec.type} | {labels} | {spec.role} | {spec.help} |")
    return "\n".join(rows) + "\n"


_Family = CounterMetricFamily | GaugeMetricFamily


def _family(name: str) -> _Family:
    spec = _SPECS[name]
    kind = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
    return kind(spec.name, spec.help, labels=spec.labels)


class _Collector:
    """Reads the metrics of one role from its state at each scrape: ``read`` fills the
    families of the role's uncounted metrics, by name."""

    def __init__(self, role: str, read: Callable[[dict[str, _Family]], None]) -> None:
        self._names = [spec.name for spec in METRICS if spec.role == role and not spec.counted]
        self._read = read

    def describe(self) -> list[_Family]:
        return [_family(name) for name in self._names]

    def collect(self) -> list[_Family]:
        families = {name: _family(name) for name in self._names}
        self._read(families)
        return list(families.values())


def _counted(registry: CollectorRegistry, name: str) -> Any:
    """The counter or histogram of the row ``name`` of :data:`METRICS`, in ``registry``."""
    spec = _SPECS[name]
    if spec.type == "histogram":
        return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=_SECONDS)
    return Counter(spec.name, spec.help, spec.labels, registry=registry)


class RequestCounter:
    """Counts the messages a role's handler answers, by outcome (:data:`OUTCOMES`).
    ``refusals``: the errors that are refusals, and the outcome of each (the first that matches
    counts)."""

    def __init__(
        self,
        counter: Counter,
        role_id: str,
        refusals: Mapping[type[Exception], str],
    ) -> None:
        self._counter = counter
        self._role_id = role_id
        self._refusals = refusals

    async def count(self, message: Message, answer: Awaitable[Message | None]) -> Message | None:
        """What ``answer`` (the handler's answer to ``message``) returns or raises, counted."""
        try:
            response = await answer
        except Exception as exc:
            self._add(
                message,
                next(
                    (outcome for kind, outcome in self._refusals.items() if isinstance(exc, kind)),
                    "failure",
                ),
            )
            raise
        failed = response is not None and failure_reason(response) is not None
        self._add(message, "failure" if failed else "success")
        return response

    def _add(self, message: Message, outcome: str) -> None:
        cls = type(message)
        self._counter.labels(self._role_id, cls.interface.value, cls.__name__, outcome).inc()


_REFUSALS: Mapping[type[Exception], str] = {
    NotAuthorized: "refused-not-authorized",
    RequestRefused: "refused",
}


# --- a KM --------------------------------------------------------------------------------------


_RELAY_ROLES = {"started": "source", "forwarded": "transit", "received": "destination"}
"""The parts of :attr:`KeyManager.relays`, as the ``role`` of a relay record names them."""


@attrs.frozen
class KMInstruments:
    """What a KM counts as it happens (:func:`km_metrics`)."""

    requests: RequestCounter
    hop_seconds: Callable[[str, float], None]
    """``(neighbour, seconds)`` of a relay hop it accepted."""
    watch_store: Callable[[KeyStore], None]
    """Have the key store time its transactions (a store without a worker thread has none)."""


def km_metrics(
    registry: CollectorRegistry,
    km: KeyManager,
    refusals: Mapping[type[Exception], str],
) -> KMInstruments:
    """Put the metrics of ``km`` in ``registry``; the instruments it counts with. ``refusals``:
    errors of the KM's own that are refusals, beside those of every role
    (:class:`RequestCounter`)."""
    km_id = km.config.km_id

    def read(families: dict[str, _Family]) -> None:
        table = km.link_table
        for link in km.config.links:
            neighbour = link.neighbour
            amount = families["qkdn_km_link_key_amount_bits"]
            amount.add_metric([km_id, neighbour, "send"], km.link_key_bits(neighbour))
            amount.add_metric([km_id, neighbour, "receive"], km.receive_key_bits(neighbour))
            for name, value in (
                ("key_reserved_bits", km.reserved_bits(neighbour)),
                ("key_allocated_bits", km.allocated_bits(neighbour)),
                ("key_generated_bits_total", table.generated_bits[neighbour]),
                ("key_consumed_bits_total", table.spent_bits[neighbour]),
                ("refused_qkd_keys_total", table.refused_keys[neighbour]),
                ("up", int(neighbour not in table.unreachable)),
            ):
                families[f"qkdn_km_link_{name}"].add_metric([km_id, neighbour], value)
        for part, count in km.relays.items():
            families["qkdn_km_relays_total"].add_metric([km_id, _RELAY_ROLES[part]], count)
        records: dict[tuple[str, str], int] = {}
        for record in km.relay_records:
            key = (record.role.value, record.outcome.split(":", 1)[0])
            records[key] = records.get(key, 0) + 1
        for (role, outcome), count in sorted(records.items()):
            families["qkdn_km_relay_records"].add_metric([km_id, role, outcome], count)
        for application, count in km.pushed.items():
            families["qkdn_km_pushed_keys_total"].add_metric([km_id, application], count)
        for kind, count in km.expired.items():
            families["qkdn_km_expired_keys_total"].add_metric([km_id, kind], count)
        for (source, destination), count in sorted(km.supplied.items()):
            families["qkdn_km_supplied_keys_total"].add_metric([km_id, source, destination], count)
        for (source, destination), count in sorted(km.sessions.open_by_pair().items()):
            families["qkdn_km_sessions"].add_metric([km_id, source, destination], count)
        kinds: dict[str, int] = {}
        for pool, count in km.store.counts().items():
            kind = pool.split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + count
        for kind, count in sorted(kinds.items()):
            families["qkdn_km_stored_keys"].add_metric([km_id, kind], count)

    registry.register(_Collector("km", read))
    hops = _counted(registry, "qkdn_km_relay_hop_seconds")
    transactions = _counted(registry, "qkdn_km_store_transaction_seconds").labels(km_id)

    def watch_store(store: KeyStore) -> None:
        if isinstance(store, SQLiteKeyStore | PostgresKeyStore):
            store.transaction_observer = transactions.observe

    return KMInstruments(
        requests=RequestCounter(
            _counted(registry, "qkdn_km_requests_total"), km_id, {**refusals, **_REFUSALS}
        ),
        hop_seconds=lambda neighbour, seconds: hops.labels(km_id, neighbour).observe(seconds),
        watch_store=watch_store,
    )


# --- the QKDN controller and a QKD module -------------------------------------------------------


def controller_metrics(registry: CollectorRegistry, controller: Controller) -> RequestCounter:
    """Put the metrics of ``controller`` in ``registry``; the counter of its requests."""
    config = controller.config
    controller_id = config.controller_id

    def read(families: dict[str, _Family]) -> None:
        for link in sorted(sorted(link) for link in config.links):
            for km, neighbour in (link, link[::-1]):
                labels = [controller_id, km, neighbour]
                amount = controller.key_amount(km, neighbour)
                if amount is not None:
                    families["qkdn_controller_km_link_key_amount_bits"].add_metric(labels, amount)
                state = controller.link_state(km, neighbour)
                if state is not None:
                    families["qkdn_controller_km_link_up"].add_metric(labels, int(state == "up"))
        for km in sorted(config.kms):
            families["qkdn_controller_status_reports_total"].add_metric(
                [controller_id, km], controller.report_count(km)
            )

    registry.register(_Collector("controller", read))
    counter = _counted(registry, "qkdn_controller_requests_total")
    return RequestCounter(counter, controller_id, _REFUSALS)


def module_metrics(registry: CollectorRegistry, module: QKDModule) -> None:
    """Put the metrics of ``module`` in ``registry`` (all read from its key counts)."""
    labels = [module.config.module_id, module.config.km_id or ""]

    def read(families: dict[str, _Family]) -> None:
        stats = module.stats
        for name, value in (
            ("produced_keys_total", stats.produced),
            ("delivered_keys_total", stats.delivered),
            ("dropped_keys_total", stats.dropped),
            ("buffered_keys", stats.buffered),
        ):
            families[f"qkdn_qkd_module_{name}"].add_metric(labels, value)

    registry.register(_Collector("qkd-module", read))


# --- serving -----------------------------------------------------------------------------------


def check_address(address: str) -> str:
    """``address`` when it is ``HOST:PORT`` (port 0: any free port; an IPv6 host in
    brackets); else :class:`ValueError` saying so."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics must be HOST:PORT (port 0: any free one), not {address!r}")
    return address


async def serve_metrics(
    registry: CollectorRegistry,
    address: str,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``registry`` over plain HTTP at ``address`` (``HOST:PORT``, :func:`check_address`)
    until cancelled; report its URL, ``http://HOST:PORT/metrics`` with the real port.
    Raises :class:`~qkdn_sdk.errors.TransportError` when the address cannot be served."""
    # Imported here: only a process that serves metrics pays for loading hypercorn.
    from hypercorn.config import Config
    from hypercorn.trio import serve

    metrics = make_asgi_app(registry)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop
            for stage in ("startup", "shutdown"):
                await receive()
                await send({"type": f"lifespan.{stage}.complete"})
            return
        await metrics(scope, receive, send)

    config = Config()
    # The socket is bound here and handed over (hypercorn leaves one it failed to bind open).
    config.bind = [f"fd://{await _bound(address)}"]
    config.accesslog = None
    config.errorlog = logger
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, mode="asgi"))  # type: ignore[arg-type]
        task_status.started(f"{binds[0]}/metrics")


async def _bound(address: str) -> int:
    """The file descriptor of a TCP socket bound to ``address``, for the caller to own."""
    host, _, port = check_address(address).rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        await sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot serve metrics at {address}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock.detach()
