"""The figures of a running KM: ``ak_keys_delivered``, ``relay_latency``,
``relay_latency_by_size``, ``kq1_ingest`` and ``key_store``. Each runs the roles of a small
network over ``tcp+tls`` with SQLite key stores and the KMs' default settings (a KM's background
work, such as asking its modules for keys and synchronising key IDs, as often as it would in a
deployment), beside the bare ``tcp+tls`` stack exchanging frames of the same sizes.
``ak_keys_delivered`` runs the network in a process of its own, as deployed (its figure is the
KM's, not that of a KM sharing an event loop with the applications measuring it); the others
run it in this process, where they read its roles' counters and wait on their events."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from qkdn_sdk.bench._codec import key_response
from qkdn_sdk.bench._figure import Figure
from qkdn_sdk.bench._measure import Sample, measure, resident_bytes, resident_bytes_of
from qkdn_sdk.bench._processes import bare_key_requests, key_request, network_process
from qkdn_sdk.bench._round_trips import bare_exchange, tls_pair
from qkdn_sdk.client import KeyManagerClient, KeysRefused
from qkdn_sdk.messages import Key, Message, ak, kq1
from qkdn_sdk.network import Network, parse_topology
from qkdn_sdk.network.topology import module_id
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import SQLiteKeyStore, StoredKey
from qkdn_sdk.roles.km import KMConfig
from qkdn_sdk.roles.qkd_module import BUFFER_KEYS
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import transport_registry

__all__ = ["km_figures"]

Report = Callable[[list[Figure]], None]

SCHEME = "tcp+tls"
KEY_SIZE = 256
APPLICATIONS = 16
MAX_HOPS = 8
LINE_SIZES = (6, 12, 24)
"""The lines of ``relay_latency_by_size``: ``qkdn demo`` on these took 38, 132 and 219 ms a
hop with a row per key in the store."""
STORED_KEYS = 10**6
INGEST_RATE = 200_000_000
"""Bits/s each module of ``kq1_ingest`` makes: more than a KM takes."""
INGEST_BUFFER_KEYS = 10**7
"""Ready keys each module of ``kq1_ingest`` holds: more than it makes in a run (the buffer is a
range of key indices, its size costs nothing)."""


def _topology(
    kms: int,
    applications: dict[str, int],
    *,
    rate: int = 256_000,
    buffer_keys: int = BUFFER_KEYS,
    options: str = "",
) -> str:
    """A line of ``kms`` KMs (``km-0`` ...) with QKD links between neighbours (on request,
    ``rate`` bits/s, each module holding ``buffer_keys`` ready keys), and ``applications``
    (ID -> index of its KM); ``options``, a TOML inline table, sets further KMConfig fields."""
    lines = [f'transport = "{SCHEME}"', 'host = "127.0.0.1"', "[controller]", 'id = "controller"']
    for index in range(kms):
        lines += ["[[km]]", f'id = "km-{index}"'] + ([f"options = {options}"] if options else [])
    for index in range(kms - 1):
        lines += [
            "[[link]]",
            f'kms = ["km-{index}", "km-{index + 1}"]',
            f"secret_key_rate = {rate}",
            'mode = "on-request"',
            f"buffer_keys = {buffer_keys}",
        ]
    for application, km in applications.items():
        lines += ["[[application]]", f'id = "{application}"', f'km = "km-{km}"']
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def _network(directory: Path, text: str) -> AsyncIterator[Network]:
    network = Network(parse_topology(text), directory, store="sqlite")
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        yield network
        nursery.cancel_scope.cancel()


async def _bare(
    request: Message,
    answer: Message,
    pki: Path,
    connections: int,
    seconds: float,
    *,
    warm_up: float = 0.1,
    minimum: int = 5,
) -> Sample:
    """The bare ``tcp+tls`` stack exchanging ``request`` and ``answer`` on ``connections``
    connections, one request at a time on each."""
    bare = transport_registry().lookup(SCHEME).bare_exchange(SCHEME)
    assert bare is not None
    server_tls, client_tls = tls_pair(pki, SCHEME)
    async with bare_exchange(
        bare, server_tls, client_tls, request, answer, connections=connections
    ) as calls:
        return await measure(calls, seconds, warm_up=warm_up, minimum=minimum)


async def keys_delivered(directory: Path, seconds: float, report: Report) -> None:
    """``ak_keys_delivered``: applications of one KM asking it for as many keys as it gives
    at once, for another of its applications (no relay: the KM's own work). The KM runs as it is
    deployed, in a process of its own (``qkdn network up``), the applications in this one; the
    bare server too runs in a process of its own."""
    sources = [f"app-{index}" for index in range(1, APPLICATIONS + 1)]
    # the sink never fetches: the caps on keys held would end the run, not the KM's speed
    unbounded = "{max_keys_held = 1_000_000_000, max_keys_held_per_pair = 1_000_000_000}"
    text = _topology(1, {"sink": 0, **dict.fromkeys(sources, 0)}, options=unbounded)
    number = KMConfig(km_id="km-0", listen={}, controller_id="controller").max_key_per_request
    async with network_process(directory / "keys", text) as (pid, endpoints):
        km_url = endpoints["kms"]["km-0"]["ak"][SCHEME]
        for count in (1, APPLICATIONS):
            async with AsyncExitStack() as stack:
                calls = []
                for source in sources[:count]:
                    tls = TLSConfig(
                        ca=endpoints["ca"],
                        cert=endpoints["apps"][source]["cert"],
                        key=endpoints["apps"][source]["key"],
                    )
                    client = await stack.enter_async_context(
                        KeyManagerClient.connect(km_url, tls=tls)
                    )
                    calls.append(partial(client.get_keys, "sink", number, KEY_SIZE))
                rss_before = resident_bytes_of(pid)
                sdk = await measure(calls, seconds)
                rss_after = resident_bytes_of(pid)
            request = key_request("sink", number, KEY_SIZE)
            bare = await bare_key_requests(SCHEME, directory / "pki", request, count, seconds)
            memory = ""
            if rss_before is not None and rss_after is not None:
                memory = (
                    f"; KM resident memory {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB"
                )
            report(
                [
                    Figure(
                        name="ak_keys_delivered",
                        transport=SCHEME,
                        value=sdk.rate * number,
                        unit="keys/s",
                        baseline=bare.rate * number,
                        case=f"{count} application{'s' if count > 1 else ''}, {number} keys of "
                        f"{KEY_SIZE} bits per request, the KM in a process of its own{memory}",
                        baseline_is="trio exchanging frames of the same sizes, same TLS, the "
                        "server in a process of its own",
                        p50=sdk.p50 * 1e3,
                        p99=sdk.p99 * 1e3,
                    )
                ]
            )


async def relay_latency(directory: Path, requests: int, report: Report) -> None:
    """``relay_latency``: a key of 256 bits for an application ``h`` hops away, relayed by
    ``h - 1`` trusted nodes, one request at a time, for ``h`` = 1 .. :data:`MAX_HOPS`."""
    applications = {f"app-{index}": index for index in range(MAX_HOPS + 1)}
    # a low rate: 16 modules making keys at line3's rate would keep the event loop busy
    text = _topology(MAX_HOPS + 1, applications, rate=32_000)
    request = ak.KeyRequest(
        application_destination_id="app-1", number_of_keys=1, size_of_key=KEY_SIZE
    )
    bare = await _bare(
        request, key_response(1), directory / "pki", 1, 0.0, warm_up=0.0, minimum=requests
    )
    async with _network(directory / "relay", text) as network:
        await network.wait_for_keys()
        # a hop's MAC key, then the units that pad the end-to-end MAC key and the key
        spent = otp.units_for(otp.MAC_KEY_BYTES + KEY_SIZE // 8) * otp.UNIT_BITS
        for index in range(MAX_HOPS):
            km = network.kms[f"km-{index}"]
            await km.wait_link_key(f"km-{index + 1}", (MAX_HOPS - index) * (requests + 2) * spent)
        url = network.endpoints()["kms"]["km-0"]["ak"][SCHEME]
        async with KeyManagerClient.connect(url, tls=network.tls("app-0")) as client:
            for hops in range(1, MAX_HOPS + 1):
                call = partial(client.get_keys, f"app-{hops}", 1, KEY_SIZE)
                for _ in range(2):
                    await call()
                sample = await measure([call], 0.0, warm_up=0.0, minimum=requests)
                case = f"{hops} hop{'s' if hops > 1 else ''}, {requests} requests"
                report([_per_hop("relay_latency", sample, bare, hops, case)])


async def relay_latency_by_size(directory: Path, requests: int, report: Report) -> None:
    """``relay_latency_by_size``: a key of 256 bits relayed end to end along a line of
    :data:`LINE_SIZES` KMs in one process, as ``qkdn demo`` runs one (every link at line3's
    256 kbit/s, each link end cutting its QKD-keys into link key meanwhile), one request at a
    time: how the relay scales with the network."""
    request = ak.KeyRequest(application_destination_id="bob", number_of_keys=1, size_of_key=256)
    bare = await _bare(
        request, key_response(1), directory / "pki", 1, 0.0, warm_up=0.0, minimum=requests
    )
    spent = otp.units_for(otp.MAC_KEY_BYTES + KEY_SIZE // 8) * otp.UNIT_BITS
    for kms in LINE_SIZES:
        text = _topology(kms, {"alice": 0, "bob": kms - 1})
        async with _network(directory / f"line{kms}", text) as network:
            await network.wait_for_keys()
            for index in range(kms - 1):
                await network.kms[f"km-{index}"].wait_link_key(
                    f"km-{index + 1}", (requests + 2) * spent
                )
            url = network.endpoints()["kms"]["km-0"]["ak"][SCHEME]
            refused: list[str] = []
            async with KeyManagerClient.connect(url, tls=network.tls("alice")) as client:
                relayed = partial(_relay_or_note, client, refused)
                await relayed()
                sample = await measure([relayed], 0.0, warm_up=0.0, minimum=requests)
        hops = kms - 1
        failed = f"; {len(refused)} refused, the first: {refused[0]}" if refused else ""
        case = (
            f"a line of {kms} KMs in one process, {hops} hops, 256 kbit/s links, "
            f"{requests} requests{failed}"
        )
        report([_per_hop("relay_latency_by_size", sample, bare, hops, case)])


def _per_hop(name: str, sample: Sample, bare: Sample, hops: int, case: str) -> Figure:
    """The figure ``name`` of relays over ``hops`` hops timed by ``sample``: milliseconds per
    hop, beside one round trip of the bare stack."""
    return Figure(
        name=name,
        transport=SCHEME,
        value=sample.p50 * 1e3 / hops,
        unit="ms per hop (p50)",
        baseline=bare.p50 * 1e3,
        case=case,
        baseline_is="one round trip of the bare stack (trio exchanging frames)",
        p50=sample.p50 * 1e3 / hops,
        p99=sample.p99 * 1e3 / hops,
    )


async def _relay_or_note(client: KeyManagerClient, refused: list[str]) -> None:
    """A key for bob; its refusal (a line too long for the load of one process) is noted."""
    try:
        await client.get_keys("bob", 1, KEY_SIZE)
    except KeysRefused as exc:
        refused.append(str(exc))


async def kq1_ingest(directory: Path, seconds: float, report: Report) -> None:
    """``kq1_ingest``: QKD-key bits a KM takes from its QKD module per second over Kq-1, asking
    for batches of keys (Q.4162 clause 7.2) as fast as it can, the module making them faster
    than the KM takes them. The modules keep every key ready until their KM takes it (a buffer
    of :data:`INGEST_BUFFER_KEYS`, more than the run makes), so both ends take the same keys
    and synchronise them into link key as they would on a real link (a module dropping keys on
    its own would leave the ends few keys in common, and the KMs little to do): the case says
    how much became link key."""
    # nothing spends the link key: the cap on it would end the run, not the KM's speed
    uncapped = "{max_link_key_bits = 1_000_000_000_000}"
    text = _topology(2, {}, rate=INGEST_RATE, buffer_keys=INGEST_BUFFER_KEYS, options=uncapped)
    async with _network(directory / "ingest", text) as network:
        km, module = network.kms["km-0"], network.modules[module_id("km-0", "km-1")]
        await km.wait_link_key("km-1", 1)
        # from the end of one synchronisation round to the end of another, at least `seconds`
        # apart: the link key of whole rounds over the time they took
        await km.wait_link_change()
        delivered, adopted = module.stats.delivered, km.generated_bits["km-1"]
        started = time.perf_counter()
        await trio.sleep(seconds)
        await km.wait_link_change()
        elapsed = time.perf_counter() - started
        delivered = module.stats.delivered - delivered
        adopted = 2 * (km.generated_bits["km-1"] - adopted)  # half of each key is for each way
        key_size = module.config.key_size
    number = 64
    answer = kq1.ResponseToKeyRequest(
        keys=[
            Key(key=bytes(key_size // 8), key_id=str(uuid.UUID(int=index)))
            for index in range(number)
        ],
        response="success",
    )
    bare = await _bare(kq1.KeyRequest(number_of_keys=number), answer, directory / "pki", 1, seconds)
    report(
        [
            Figure(
                name="kq1_ingest",
                transport=SCHEME,
                value=delivered * key_size / elapsed / 1e6,
                unit="Mb/s",
                baseline=bare.rate * number * key_size / 1e6,
                case=f"key requests of {number} QKD-keys of {key_size} bits; "
                f"{adopted / elapsed / 1e6:.3g} Mb/s became link key",
                baseline_is="trio exchanging frames of the same sizes, same TLS",
            )
        ]
    )


def _bare_store(path: Path, count: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE keys (seq INTEGER PRIMARY KEY, key_id TEXT UNIQUE, key BLOB)")
    for start in range(0, count, 10_000):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO keys (key_id, key) VALUES (?, ?)",
            (
                (str(uuid.UUID(int=index)), os.urandom(32))
                for index in range(start, min(count, start + 10_000))
            ),
        )
        db.execute("COMMIT")
    return db


def _bare_take(db: sqlite3.Connection, number: int) -> None:
    db.execute("BEGIN IMMEDIATE")
    rows = db.execute(
        "SELECT seq, key_id, key FROM keys ORDER BY seq LIMIT ?", (number,)
    ).fetchall()
    db.execute("DELETE FROM keys WHERE seq <= ?", (rows[-1][0],))
    db.execute("COMMIT")


async def key_store(directory: Path, seconds: float, report: Report) -> None:
    """``key_store``: keys taken (and deleted) per second, 128 at a time, from a SQLite key
    store holding 10^6 keys of 256 bits; its resident memory and file size."""
    directory.mkdir(parents=True, exist_ok=True)
    number = 128
    rss_before = resident_bytes()
    async with await SQLiteKeyStore.open(directory / "store.sqlite3") as store:
        for start in range(0, STORED_KEYS, 10_000):
            await store.put(
                [
                    StoredKey(key_id=str(uuid.UUID(int=index)), pool="bench", key=os.urandom(32))
                    for index in range(start, start + 10_000)
                ]
            )
        rss = resident_bytes() - rss_before
        size = sum(path.stat().st_size for path in directory.glob("store.sqlite3*"))
        most = STORED_KEYS // number // 2  # leave keys to take, however fast the store
        take_from_store = partial(store.take, "bench", number)
        sdk = await measure([take_from_store], seconds, warm_up=0.0, maximum=most)
    db = await trio.to_thread.run_sync(_bare_store, directory / "bare.sqlite3", STORED_KEYS)
    bare_size = sum(path.stat().st_size for path in directory.glob("bare.sqlite3*"))

    async def take() -> None:
        _bare_take(db, number)

    bare = await measure([take], seconds, warm_up=0.0, maximum=most)
    db.close()
    report(
        [
            Figure(
                name="key_store",
                value=sdk.rate * number,
                unit="keys/s",
                baseline=bare.rate * number,
                case=f"take and delete {number} keys at a time, {STORED_KEYS:,} stored",
                baseline_is="sqlite3 alone, one table, the same durability",
                p50=sdk.p50 * 1e3,
                p99=sdk.p99 * 1e3,
            ),
            Figure(
                name="key_store",
                value=size / 2**20,
                unit="MiB on disk",
                baseline=bare_size / 2**20,
                case=f"{STORED_KEYS:,} keys of 256 bits",
                baseline_is="sqlite3 alone, one table",
            ),
            Figure(
                name="key_store",
                value=size / (STORED_KEYS * 32),
                unit="bytes on disk per key byte",
                baseline=bare_size / (STORED_KEYS * 32),
                case=f"{STORED_KEYS:,} keys of 256 bits, sealed, 256 to a row",
                baseline_is="sqlite3 alone, one row per key, in clear",
            ),
            Figure(
                name="key_store",
                value=rss / 2**20,
                unit="MiB resident",
                baseline=None,
                case=f"growth while storing {STORED_KEYS:,} keys of 256 bits",
            ),
        ]
    )


async def km_figures(
    directory: Path, *, quick: bool, seconds: float, report: Report, progress: Callable[[str], None]
) -> None:
    """Every figure of this module, in ``directory``."""
    logging.getLogger("qkdn_sdk").setLevel(logging.ERROR)
    progress("keys delivered by a KM")
    await keys_delivered(directory, seconds, report)
    progress("relay latency, 1 to 8 hops")
    await relay_latency(directory, 20 if quick else 50, report)
    progress("relay latency, lines of 6 to 24 KMs")
    await relay_latency_by_size(directory, 10 if quick else 20, report)
    progress("QKD-key ingest")
    await kq1_ingest(directory, seconds, report)
    progress("key store")
    await key_store(directory / "store", seconds, report)
