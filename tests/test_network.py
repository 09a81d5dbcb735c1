"""The line3 network end to end (qkdn_sdk.network, qkdn_sdk.roles.km, qkdn_sdk.client).

::

    alice -- km-a ==== km-b ==== km-c -- bob

Every test starts the whole network of ``examples/topologies/line3.toml`` (transport rewritten,
applications added where a test needs them) with fast KM intervals, waits on events (link keys
held at both ends of a link, a controller report that shows them) and talks to the KMs as
applications do, through :class:`~qkdn_sdk.client.KeyManagerClient`. Nothing sleeps to wait.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from qkdn_sdk.client import KeyManagerClient, KeysRefused, SuppliedKey
from qkdn_sdk.errors import FailureResponse, QkdnError
from qkdn_sdk.messages import KeyId, Message, Role, ak, ck, kx, mgmt, received_by
from qkdn_sdk.network import ENDPOINTS_FILE, Network, parse_topology
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.km import KeyManager, KeyManagerError
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, connect, serve
from tests._forged import forged_hop

LINE3 = (Path(__file__).parent.parent / "examples" / "topologies" / "line3.toml").read_text(
    encoding="utf-8"
)
TRANSPORTS = ["memory", "tcp+tls", "grpcs"]
AK_TRANSPORTS = [*TRANSPORTS, "https"]
"""For the tests of key supply upon request: ``https`` is tcp+tls with Ak served as ETSI GS QKD
014 too (``also = {ak = ["https"]}``), which the applications use."""
ROUTINGS = ["distributed", "centralized"]
"""Q.4164 clause 7.1 (every KM asks the controller for its next hop) and 7.2 (the source KM gets
the whole route)."""
FAST = {
    "report_interval": 0.05,
    "sync_interval": 0.05,
    "acquire_interval": 0.05,
    "hello_interval": 0.05,
}
WAIT = 10.0  # seconds a test may wait for an event before it fails (it never needs them)

FORWARD = (("km-a", "km-b"), ("km-b", "km-c"))
"""The link directions a relay from alice to bob spends."""
BOTH_WAYS = (*FORWARD, ("km-b", "km-a"), ("km-c", "km-b"))

CAROL_ON_KM_A = '\n[[application]]\nid = "carol"\nkm = "km-a"\n'
CAROL_ON_KM_C = '\n[[application]]\nid = "carol"\nkm = "km-c"\n'
SLOW_B_C = (
    'kms = ["km-b", "km-c"]\nsecret_key_rate = 256_000',
    'kms = ["km-b", "km-c"]\nsecret_key_rate = 1',
)


def topology_text(
    transport: str,
    *,
    base: str = LINE3,
    routing: str = "distributed",
    extra: str = "",
    replace: Iterable[tuple[str, str]] = (),
) -> str:
    text = re.sub(r"^(routing|also) = .*$", "", base, flags=re.MULTILINE)  # the test chooses
    scheme, also = (
        ("tcp+tls", '\nalso = {ak = ["https"]}') if transport == "https" else (transport, "")
    )
    text = text.replace(
        'transport = "tcp+tls"', f'transport = "{scheme}"\nrouting = "{routing}"{also}'
    )
    assert f'transport = "{scheme}"' in text
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    return text + extra


def unauthorized(reason: str, text: str) -> bool:
    """Whether a refusal says ``text``, or is ETSI 014's 401, which has no body to say it."""
    return text in reason or reason == "401 Unauthorized."


def relay_bits(number: int, size: int) -> int:
    """Link key bits one hop of a relay of ``number`` keys of ``size`` bits spends."""
    return otp.units_for(otp.MAC_KEY_BYTES + number * size // 8) * otp.UNIT_BITS


@asynccontextmanager
async def running(
    tmp_path: Path,
    transport: str,
    store: str = "memory",
    *,
    km_options: dict[str, Any] | None = None,
    **text: Any,
) -> AsyncIterator[Network]:
    """The line3 network (or ``base``), running until the block ends; ``km_options`` change
    :data:`FAST`."""
    network = Network(
        parse_topology(topology_text(transport, **text)),
        tmp_path / "state",
        store=store,
        km_options=FAST | (km_options or {}),
    )
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await nursery.start(network.run)
        yield network
        nursery.cancel_scope.cancel()


def km(network: Network, km_id: str) -> KeyManager:
    """The running KM ``km_id`` (a new object after a restart)."""
    return network.kms[km_id]


async def after_refetch_window(manager: KeyManager) -> None:
    """Have ``manager`` erase what it would have erased once the re-fetch window of the keys
    fetched until now has passed (no test waits for it)."""
    await manager.expire_keys(time.time() + manager.config.refetch_window + 1)


def ak_url(network: Network, app: str, km_id: str | None = None) -> str:
    """Where ``app`` (or any application of ``km_id``) reaches its KM: over ETSI 014 when the
    KMs serve it."""
    served_by = km_id or next(spec.km for spec in network.topology.applications if spec.id == app)
    urls: dict[str, str] = network.endpoints()["kms"][served_by]["ak"]
    return urls.get("https", urls[network.topology.transport])


@asynccontextmanager
async def client(
    network: Network, app: str, km_id: str | None = None
) -> AsyncIterator[KeyManagerClient]:
    """``app`` connected to its KM (or to ``km_id``), from the URLs of ``network.endpoints()``."""
    url = ak_url(network, app, km_id)
    async with KeyManagerClient.connect(url, tls=network.tls(app), identity=app) as connected:
        yield connected


async def ready(
    network: Network, bits: int, directions: Sequence[tuple[str, str]] = FORWARD
) -> None:
    """Return once each KM of ``directions`` can spend ``bits`` towards its neighbour, and the
    controller has a report made since saying so.

    A link's units are cut at both ends from the same QKD-keys, in the same order and in equal
    numbers per direction, but the KM that asks for the key ID synchronisation cuts them after
    its neighbour: waiting on the end that spends is enough when it asked (km-a to km-b, km-b to
    km-c); the other way, wait on both ends (:data:`BOTH_WAYS`)."""
    controller = network.controller
    assert controller is not None
    with trio.fail_after(WAIT):
        for km_id, neighbour in directions:
            await km(network, km_id).wait_link_key(neighbour, bits)
        for km_id, neighbour in directions:
            while True:  # a report made after the call: what the KM says now
                await controller.wait_for_report(km_id, controller.report_count(km_id) + 1)
                if (controller.key_amount(km_id, neighbour) or 0) >= bits:
                    break


def ids(keys: Sequence[SuppliedKey]) -> list[str]:
    return [key.key_id for key in keys]


def same_keys(got: Sequence[SuppliedKey], expected: Sequence[SuppliedKey]) -> bool:
    return [(key.key_id, key.key) for key in got] == [(key.key_id, key.key) for key in expected]


async def refused(request: Awaitable[object]) -> str:
    """The reason of the :class:`KeysRefused` that awaiting ``request`` raises."""
    with pytest.raises(KeysRefused) as caught:
        await request
    return caught.value.reason


# --- 1. the keys at both ends ------------------------------------------------------------------


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
@pytest.mark.parametrize("routing", ROUTINGS)
async def test_alice_and_bob_get_the_same_keys(
    tmp_path: Path, transport: str, network_store: str, routing: str
) -> None:
    async with running(tmp_path, transport, network_store, routing=routing) as network:
        await ready(network, relay_bits(3, 512) + relay_bits(1, 256))
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 3, 512)
            default = await alice.get_keys("bob")
        assert [key.size for key in keys] == [512, 512, 512]
        assert len(set(ids(keys))) == 3
        assert len({key.key for key in keys}) == 3
        assert [key.size for key in default] == [256]  # the KM's defaults: 1 key of 256 bits
        async with client(network, "bob") as bob:
            got = await bob.get_keys_with_ids("alice", ids(keys)[::-1])
            got_default = await bob.get_keys_with_ids("alice", ids(default))
        assert same_keys(got, keys[::-1])  # byte for byte, in the order asked
        assert same_keys(got_default, default)
        assert km(network, "km-c").store.counts("app:") == {}


async def test_centralized_routing_follows_figure_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Q.4164 Figure 2: km-a notifies the controller (0x1403), gets the whole route in the
    controller's key relay request (0x4104), relays along it (km-b asks nothing) and answers
    that request (0x1405) once the relay has completed; no next hop request (0x1401) is sent."""
    caplog.set_level(logging.DEBUG, "qkdn_sdk.roles.controller")
    async with running(tmp_path, "memory", routing="centralized") as network:
        await ready(network, relay_bits(2, 256))
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 2)
        await trio.testing.wait_all_tasks_blocked()  # the controller got km-a's 0x1405
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
    said = [record.getMessage() for record in caplog.records]
    assert not [line for line in said if line.startswith("next hop")]
    completed = [line for line in said if line.startswith("key relay ")]
    assert len(completed) == 1
    assert re.fullmatch(r"key relay [-0-9a-f]{36} of km-a along \['km-b'\] completed", completed[0])


DAVE_ON_KM_B = '\n[[application]]\nid = "dave"\nkm = "km-b"\n'


async def test_a_controller_written_from_table_4_alone_routes_centralized_relays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller that answers each key relay request notification (Q.4164 Table 3) with a key
    relay request as Table 4 writes it, and nothing more: its own request ID, no extension, the
    KMs between source and destination (none for a neighbour), the destination apart. km-a
    matches its answers to its notifications in order, relays along them and answers each
    (Table 5) with the controller's request ID."""
    answered: list[ck.ResponseToKeyRelayRequest] = []

    async def literal(notification: ck.KeyRelayRequestNotification, connection: Any) -> None:
        assert notification.application_destination_id is not None
        destination = controller.config.applications[notification.application_destination_id]
        path = controller.route(connection.peer_id, destination)
        request = ck.KeyRelayRequest(
            source_kma_id=connection.peer_id,
            destination_kma_id=destination,
            transit_kma_ids=path[1:-1],
            key_relay_request_id=f"table-4-{len(answered)}",
        )
        response = await connection.request(request, timeout=WAIT)
        assert isinstance(response, ck.ResponseToKeyRelayRequest)
        answered.append(response)

    async with running(tmp_path, "memory", routing="centralized", extra=DAVE_ON_KM_B) as network:
        controller = network.controller
        assert controller is not None
        monkeypatch.setattr(controller, "_key_relay_request", literal)
        await ready(network, 2 * relay_bits(2, 256))
        async with client(network, "alice") as alice:
            for_bob = await alice.get_keys("bob", 2)  # transit: km-b
            for_dave = await alice.get_keys("dave", 2)  # a neighbour: no transit KM
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(for_bob)), for_bob)
        async with client(network, "dave") as dave:
            assert same_keys(await dave.get_keys_with_ids("alice", ids(for_dave)), for_dave)
    assert [(r.response, r.key_relay_request_id) for r in answered] == [
        ("success", "table-4-0"),
        ("success", "table-4-1"),
    ]


# --- 2. a key is supplied once -----------------------------------------------------------------


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
async def test_no_key_is_supplied_twice(tmp_path: Path, transport: str, network_store: str) -> None:
    async with running(tmp_path, transport, network_store) as network:
        await ready(network, relay_bits(2, 256))
        km_c = km(network, "km-c")
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 2)
        assert km_c.store.counts("app:") == {"app:alice:bob": 2}
        async with client(network, "bob") as bob:
            # one unknown ID refuses them all and takes none
            reason = await refused(
                bob.get_keys_with_ids("alice", [keys[0].key_id, str(uuid.uuid4())])
            )
            assert "1 of the 2 keys are not held" in reason
            assert km_c.store.counts("app:") == {"app:alice:bob": 2}

            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
            assert km_c.store.counts("app:") == {}
            # asked again within the re-fetch window (a response lost): the same keys, to bob
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)[1:]), keys[1:])
            await after_refetch_window(km_c)
            reason = await refused(bob.get_keys_with_ids("alice", ids(keys)))
            assert "2 of the 2 keys are not held for 'bob' from 'alice'" in reason
            assert "already supplied" in reason
            await refused(bob.get_keys_with_ids("alice", ids(keys)[1:]))


# --- 3. link keys spent hop by hop -------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("routing", ROUTINGS)
async def test_each_hop_spends_its_link_keys(tmp_path: Path, transport: str, routing: str) -> None:
    async with running(tmp_path, transport, routing=routing) as network:
        first, second = relay_bits(5, 1024), relay_bits(1, 256)
        await ready(network, first + second)
        km_a, km_b, km_c = (km(network, km_id) for km_id in ("km-a", "km-b", "km-c"))
        assert km_a.spent_bits == {"km-b": 0}
        assert km_b.spent_bits == {"km-a": 0, "km-c": 0}
        # A hop takes the oldest units of its out pool; the next KM takes the same units by ID.
        a_units = await km_a.store.key_ids("link:km-b:out", first // otp.UNIT_BITS)
        b_units = await km_b.store.key_ids("link:km-c:out", first // otp.UNIT_BITS)
        assert set(a_units) <= set(await km_b.store.key_ids("link:km-a:in", 10**6))
        assert set(b_units) <= set(await km_c.store.key_ids("link:km-b:in", 10**6))
        async with client(network, "alice") as alice:
            await alice.get_keys("bob", 5, 1024)
            assert km_a.spent_bits == {"km-b": first}
            assert km_b.spent_bits == {"km-a": 0, "km-c": first}
            assert km_c.spent_bits == {"km-b": 0}
            assert km_a.relays == {"started": 1, "forwarded": 0, "received": 0}
            assert km_b.relays == {"started": 0, "forwarded": 1, "received": 0}
            assert km_c.relays == {"started": 0, "forwarded": 0, "received": 1}
            for store, pool, units in (
                (km_a.store, "link:km-b:out", a_units),
                (km_b.store, "link:km-a:in", a_units),
                (km_b.store, "link:km-c:out", b_units),
                (km_c.store, "link:km-b:in", b_units),
            ):
                assert not set(units) & set(await store.key_ids(pool, 10**6)), pool

            await alice.get_keys("bob")
        assert km_a.spent_bits == {"km-b": first + second}
        assert km_b.spent_bits == {"km-a": 0, "km-c": first + second}
        assert km_b.relays["forwarded"] == 2
        assert km_c.relays["received"] == 2


# --- 4. two applications of one KM -------------------------------------------------------------


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
async def test_applications_of_one_km_need_no_relay(tmp_path: Path, transport: str) -> None:
    async with running(tmp_path, transport, extra=CAROL_ON_KM_A) as network:
        await network.stop_controller()  # not needed without a relay
        km_a = km(network, "km-a")
        async with client(network, "alice") as alice, client(network, "carol") as carol:
            keys = await alice.get_keys("carol", 2, 128)
            assert km_a.store.counts("app:") == {"app:alice:carol": 2}
            assert same_keys(await carol.get_keys_with_ids("alice", ids(keys)), keys)
            back = await carol.get_keys("alice")
            assert same_keys(await alice.get_keys_with_ids("carol", ids(back)), back)
            await after_refetch_window(km_a)
            await refused(carol.get_keys_with_ids("alice", ids(keys)))
        assert km_a.store.counts("app:") == {}
        assert [key.size for key in keys] == [128, 128]
        assert all(km(network, km_id).relays["started"] == 0 for km_id in ("km-a", "km-b"))
        assert km_a.spent_bits == {"km-b": 0}
        assert km(network, "km-b").spent_bits == {"km-a": 0, "km-c": 0}


# --- 5. failures name their cause --------------------------------------------------------------


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
@pytest.mark.parametrize("routing", ROUTINGS)
async def test_unknown_destination_application(
    tmp_path: Path, transport: str, routing: str
) -> None:
    async with running(tmp_path, transport, routing=routing) as network:
        await ready(network, relay_bits(1, 256))
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("mallory"))
        assert "unknown destination application 'mallory'" in reason
        assert km(network, "km-a").spent_bits == {"km-b": 0}


MAINTENANCE = "failure: no route: km-b is in maintenance"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            ck.ResponseToKeyRelayNextHopRequest(
                next_kma_ids=[], extension=[{"error_message": MAINTENANCE}]
            ),
            "no route: km-b is in maintenance",
        ),
        (
            ck.ResponseToKeyRelayNextHopRequest(next_kma_ids=[]),
            "no route: the controller names no KMA available as the next hop",
        ),
        (
            mgmt.ErrorIndication(reason=MAINTENANCE, command_code=ck.KeyRelayNextHopRequest.code),
            "no route: km-b is in maintenance",
        ),
    ],
    ids=["table-2-with-reason", "table-2-alone", "error-indication"],
)
async def test_a_controller_that_names_no_next_hop(
    tmp_path: Path, answer: Message, reason: str
) -> None:
    """A controller of another make answers the next hop request as Q.4164 Table 2 writes it:
    no Next KMA IDs (no KMA is available as the next hop) and no Destination KMA ID, with the
    reason in its Extension or without; or with an error indication. alice's key request fails
    saying there is no route, and why; no link key is spent."""

    async def foreign_controller(message: Message, connection: Connection) -> Message | None:
        return answer if isinstance(message, ck.KeyRelayNextHopRequest) else None

    async with running(tmp_path, "memory") as network:
        await ready(network, relay_bits(1, 256))
        url = network.endpoints()["controller"]["ck"]["memory"]
        await network.stop_controller()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    serve,
                    url,
                    foreign_controller,
                    identity=network.topology.controller_id,
                    accepts=received_by(Role.CONTROLLER),
                )
            )
            async with client(network, "alice") as alice:
                refusal = await refused(alice.get_keys("bob"))
            nursery.cancel_scope.cancel()
        assert reason in refusal
        assert km(network, "km-a").spent_bits == {"km-b": 0}


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
@pytest.mark.parametrize("routing", ROUTINGS)
async def test_a_link_without_key(tmp_path: Path, transport: str, routing: str) -> None:
    async with running(tmp_path, transport, replace=[SLOW_B_C], routing=routing) as network:
        await ready(network, relay_bits(1, 256), [("km-a", "km-b")])
        controller = network.controller
        assert controller is not None
        with trio.fail_after(WAIT):
            await controller.wait_for_report("km-b", controller.report_count("km-b") + 1)
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob"))
        assert re.search(r"km-b-(>)?km-c", reason), reason
        assert km(network, "km-a").spent_bits == {"km-b": 0}
        assert km(network, "km-c").store.counts() == {}


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
@pytest.mark.parametrize("routing", ROUTINGS)
async def test_controller_unreachable(tmp_path: Path, transport: str, routing: str) -> None:
    async with running(tmp_path, transport, routing=routing) as network:
        await ready(network, relay_bits(1, 256))
        await network.stop_controller()
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob"))
        assert "QKDN controller controller is unreachable" in reason
        assert km(network, "km-a").spent_bits == {"km-b": 0}


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
@pytest.mark.parametrize("routing", ROUTINGS)
async def test_neighbour_km_down(tmp_path: Path, transport: str, routing: str) -> None:
    async with running(tmp_path, transport, routing=routing) as network:
        await ready(network, relay_bits(1, 256))
        await network.stop_km("km-b")
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob"))
        # found by the relay, or already by km-a's HELLOs and reported to the controller
        assert "neighbour KM km-b is unreachable" in reason or "km-a->km-b is down" in reason
        km_c = km(network, "km-c")  # nothing reached it
        assert km_c.relays["received"] == 0
        assert km_c.store.counts("app:") == {}
        assert km_c.pending_key_ids == {}

        await network.start_km("km-b")  # back on its store and URLs: its neighbours reconnect
        await ready(network, relay_bits(1, 256))
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob")
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
async def test_requests_over_the_limits(tmp_path: Path, transport: str) -> None:
    async with running(tmp_path, transport) as network:
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob", 129))
            assert "number_of_keys 129 is over this KM's max_key_per_request (128)" in reason
            reason = await refused(alice.get_keys("bob", 1, 100))
            assert "size_of_key 100 is not a multiple of 8" in reason
            reason = await refused(alice.get_keys("bob", 1, 8200))
            assert "outside this KM's 8 to 8192 bits" in reason
            reason = await refused(alice.get_keys("bob", 64, 8192))
            assert "64 keys of 8192 bits are over the" in reason
            reason = await refused(alice.get_keys("alice"))
            assert "the destination application is the source application" in reason
            many = [str(uuid.uuid4()) for _ in range(129)]
            reason = await refused(alice.get_keys_with_ids("bob", many))
            assert "129 key IDs are over this KM's max_key_per_request" in reason
        assert km(network, "km-a").spent_bits == {"km-b": 0}
        assert km(network, "km-a").relays["started"] == 0


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
async def test_largest_requests(tmp_path: Path, transport: str) -> None:
    """A request the KM takes is relayed whole; a larger one is refused before any link key is
    spent (a key relay must fit one frame: 65,535 bytes of payload)."""
    fits = [(128, 1024)]  # the most bits, with the most key IDs
    too_large = [(64, 2056), (128, 2048), (32, 8192)]
    fast = ("secret_key_rate = 256_000", "secret_key_rate = 1_024_000")
    async with running(tmp_path, transport, replace=[fast]) as network:
        await ready(network, sum(relay_bits(*shape) for shape in fits))
        km_a = km(network, "km-a")
        async with client(network, "alice") as alice, client(network, "bob") as bob:
            for number, size in too_large:
                reason = await refused(alice.get_keys("bob", number, size))
                assert "bits one request may carry" in reason
                assert km_a.spent_bits == {"km-b": 0}
            for number, size in fits:
                keys = await alice.get_keys("bob", number, size)
                assert [key.size for key in keys] == [size] * number
                assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
        assert km_a.spent_bits == {"km-b": sum(relay_bits(*shape) for shape in fits)}


# --- 6. a failed relay leaves nothing usable ---------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unconfirmed_relay_is_never_supplied(
    tmp_path: Path, transport: str, network_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lose(confirmation: object, connection: object) -> None:
        raise KeyManagerError("km-b lost the confirmation")

    async with running(tmp_path, transport, network_store) as network:
        await ready(network, relay_bits(2, 256))
        monkeypatch.setattr(km(network, "km-b").relay_receiver, "on_confirmation", lose)
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob", 2))
        assert "km-b lost the confirmation" in reason
        km_c = km(network, "km-c")
        assert km_c.relays["received"] == 1
        assert km_c.store.counts("app:") == {}
        [relayed] = km_c.pending_key_ids.values()
        assert len(relayed) == 2
        assert await km_c.store.seen(relayed) == set()  # held in memory, never stored
        async with client(network, "bob") as bob:
            await refused(bob.get_keys_with_ids("alice", relayed))

        await network.stop_km("km-c")
        await network.start_km("km-c")
        km_c = km(network, "km-c")
        assert km_c.pending_key_ids == {}  # gone with the KM that held them
        assert km_c.store.counts("app:") == {}
        async with client(network, "bob") as bob:
            await refused(bob.get_keys_with_ids("alice", relayed))


async def hop_refused(network: Network, receiver: str, hop: kx.KeyRelay) -> str:
    """The reason ``receiver`` gives for refusing ``hop`` (sent as its sender, ``memory://``)."""
    url = network.endpoints()["kms"][receiver]["kx"]["memory"]
    async with connect(url, identity=hop.sender_kma_id) as connection:
        with pytest.raises(FailureResponse) as caught:
            await connection.request(hop, timeout=WAIT)
    return caught.value.reason


async def spend(network: Network, sender: str, receiver: str, count: int) -> list[str]:
    """Take ``count`` link units ``sender`` could spend towards ``receiver``, as it would."""
    store = km(network, sender).store
    return [key.key_id for key in await store.take(f"link:{receiver}:out", count)]


async def test_a_hop_that_fails_spends_its_units_and_no_more(
    tmp_path: Path, network_store: str
) -> None:
    """The units a hop came with are used once, whatever becomes of it; a trusted node spends
    units of its next hop only on a hop it can unseal with the right number of units."""
    async with running(tmp_path, "memory", network_store) as network:
        await ready(network, 4 * relay_bits(1, 256))
        km_b, km_c = km(network, "km-b"), km(network, "km-c")
        units = await spend(network, "km-b", "km-c", 4)
        reason = await hop_refused(network, "km-c", forged_hop("km-b", "km-c", units))
        assert reason == "failure: the key relay failed its message authentication code"
        assert await km_c.store.pools_of(units) == {}

        units = await spend(network, "km-a", "km-b", 3)
        reason = await hop_refused(network, "km-b", forged_hop("km-a", "km-c", units))
        assert reason == "failure: 64 bytes need 4 link key units, got 3"
        units += await spend(network, "km-a", "km-b", 4)
        reason = await hop_refused(network, "km-b", forged_hop("km-a", "km-x", units[3:]))
        assert "km-x" in reason
        assert await km_b.store.pools_of(units) == {}
        assert km_b.spent_bits["km-c"] == 0  # of the hops it would have sent on


async def unconfirmed_relay(network: Network, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Relay a key from alice to bob whose confirmation km-b loses; the link units of its last
    hop (km-b to km-c)."""

    async def lose(confirmation: object, connection: object) -> None:
        raise KeyManagerError("km-b lost the confirmation")

    await ready(network, relay_bits(1, 256))
    km_b = km(network, "km-b")
    before = set(await km_b.store.key_ids("link:km-c:out", 10**6))
    monkeypatch.setattr(km_b.relay_receiver, "on_confirmation", lose)
    async with client(network, "alice") as alice:
        await refused(alice.get_keys("bob", 1))
    units = sorted(before - set(await km_b.store.key_ids("link:km-c:out", 10**6)))
    assert len(units) == 4
    return units


async def test_a_pending_relays_units_serve_no_other_hop(
    tmp_path: Path, network_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The destination holds a relay's hop units with its keys until the confirmation takes
    both, in one transaction: meanwhile no other hop may name them."""
    async with running(tmp_path, "memory", network_store) as network:
        units = await unconfirmed_relay(network, monkeypatch)
        km_c = km(network, "km-c")
        assert await km_c.store.pools_of(units) == dict.fromkeys(units, "link:km-b:in")
        reason = await hop_refused(network, "km-c", forged_hop("km-b", "km-c", units))
        assert reason.endswith("are those of a relay pending here")
        assert await km_c.store.pools_of(units) == dict.fromkeys(units, "link:km-b:in")


async def test_a_relay_never_confirmed_spends_its_units_when_its_keys_are_dropped(
    tmp_path: Path, network_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(
        tmp_path, "memory", network_store, km_options={"pending_timeout": 0.2}
    ) as network:
        units = await unconfirmed_relay(network, monkeypatch)
        km_c = km(network, "km-c")
        with trio.fail_after(WAIT):
            while await km_c.store.pools_of(units):
                await km_c.wait_link_change()
        assert km_c.pending_key_ids == {}
        assert await km_c.store.seen(units) == set(units)


async def test_a_state_directory_is_owner_only(tmp_path: Path) -> None:
    """Key stores, their WAL, private keys: nothing in a network's state directory is open to
    other users, whatever the umask."""
    umask = os.umask(0)
    try:
        async with running(tmp_path, "tcp+tls", "sqlite") as network:
            await ready(network, relay_bits(1, 256))
            state = network.state_dir
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            assert stat.S_IMODE((state / "pki").stat().st_mode) == 0o700
            stores = sorted(state.glob("*.sqlite3*"))
            assert {path.name for path in stores} >= {"km-a.sqlite3", "km-a.sqlite3-wal"}
            for path in [*stores, *(state / "pki").glob("*.key")]:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        os.umask(umask)


@pytest.mark.parametrize("algorithm", ["sha3_256", "blake2b"])
async def test_a_proactive_link_of_another_hash_algorithm(tmp_path: Path, algorithm: str) -> None:
    """The modules of km-a ==== km-b hash their keys with the link's algorithm, the KMs check
    them with it: the link gets key and relays."""
    proactive = 'mode = "proactive"'
    replace = [(proactive, f'{proactive}\nhash_algorithm = "{algorithm}"')]
    async with running(tmp_path, "memory", replace=replace) as network:
        await ready(network, relay_bits(2, 256))
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 2)
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)


# --- 7. restarts -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_restarted_kms_never_reissue(
    tmp_path: Path, transport: str, network_store: str
) -> None:
    async with running(tmp_path, transport, network_store) as network:
        bits = relay_bits(2, 256)
        await ready(network, 2 * bits)
        a_units = await km(network, "km-a").store.key_ids("link:km-b:out", bits // otp.UNIT_BITS)
        c_units = await km(network, "km-b").store.key_ids("link:km-c:out", bits // otp.UNIT_BITS)
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 2)
        endpoints = network.endpoints()
        for km_id in ("km-a", "km-c"):
            old = km(network, km_id)
            await network.stop_km(km_id)
            await network.start_km(km_id)
            assert km(network, km_id) is not old
        assert network.endpoints() == endpoints  # same URLs
        km_a, km_c = km(network, "km-a"), km(network, "km-c")
        # link units spent before the restart are not back, and are known as stored before
        assert not set(a_units) & set(await km_a.store.key_ids("link:km-b:out", 10**6))
        assert not set(c_units) & set(await km_c.store.key_ids("link:km-b:in", 10**6))
        assert await km_a.store.seen(a_units) == set(a_units)
        assert await km_c.store.seen(c_units) == set(c_units)
        assert km_c.store.counts("app:") == {"app:alice:bob": 2}

        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
        await network.stop_km("km-c")
        await network.start_km("km-c")
        async with client(network, "bob") as bob:  # within the re-fetch window: bob's again
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)

        # the restarted KMs relay again
        await ready(network, bits)
        async with client(network, "alice") as alice:
            more = await alice.get_keys("bob", 2)
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(more)), more)
        assert not set(ids(more)) & set(ids(keys))


# --- 8. keys for one application only ----------------------------------------------------------


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
async def test_keys_meant_for_another_application(tmp_path: Path, transport: str) -> None:
    async with running(tmp_path, transport, extra=CAROL_ON_KM_C) as network:
        await ready(network, 2 * relay_bits(2, 256))
        async with client(network, "alice") as alice:
            for_bob = await alice.get_keys("bob", 2)
            for_carol = await alice.get_keys("carol", 2)
        async with client(network, "carol") as carol:
            # bob's keys are "not held" for carol, as keys that do not exist are: no answer
            # tells carol which key IDs exist
            reason = await refused(carol.get_keys_with_ids("alice", ids(for_bob)))
            assert "2 of the 2 keys are not held for 'carol' from 'alice'" in reason
            assert reason == await refused(
                carol.get_keys_with_ids("alice", [str(uuid.uuid4()), str(uuid.uuid4())])
            )
        async with client(network, "bob", km_id="km-a") as bob_at_km_a:
            reason = await refused(bob_at_km_a.get_keys_with_ids("alice", ids(for_bob)))
            assert unauthorized(reason, "application 'bob' is not served by km-a")
        if network.uses_tls:  # carol's certificate, bob's name: the KM goes by the certificate
            request = ak.KeyRequestWithId(
                application_source_id="alice",
                application_destination_id="bob",
                key_ids=[KeyId(key_id=key_id) for key_id in ids(for_bob)],
            )
            async with connect(
                ak_url(network, "carol"),
                tls=network.tls("carol"),
                accepts=received_by(Role.APPLICATION),
            ) as as_carol:
                # refused by the KM, or over ETSI 014 (which has no place for the claim) before
                # it is sent
                with pytest.raises(QkdnError, match="is not the authenticated peer 'carol'"):
                    await as_carol.request(request, timeout=WAIT)
        async with client(network, "bob") as bob:
            reason = await refused(bob.get_keys_with_ids("alice", ids(for_carol)))
            assert "2 of the 2 keys are not held for 'bob' from 'alice'" in reason
            assert same_keys(await bob.get_keys_with_ids("alice", ids(for_bob)), for_bob)
        async with client(network, "carol") as carol:
            assert same_keys(await carol.get_keys_with_ids("alice", ids(for_carol)), for_carol)


# --- 9. relays crossing --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", AK_TRANSPORTS)
@pytest.mark.parametrize("routing", ROUTINGS)
async def test_relays_crossing_both_ways(tmp_path: Path, transport: str, routing: str) -> None:
    count = 10
    bits = relay_bits(1, 256)
    async with running(tmp_path, transport, routing=routing) as network:
        await ready(network, count * bits, BOTH_WAYS)
        got: dict[str, list[SuppliedKey]] = {"alice": [], "bob": []}
        async with client(network, "alice") as alice, client(network, "bob") as bob:

            async def get(source: KeyManagerClient, name: str, peer: str) -> None:
                got[name] += await source.get_keys(peer)

            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    for _ in range(count):
                        nursery.start_soon(get, alice, "alice", "bob")
                        nursery.start_soon(get, bob, "bob", "alice")
            assert len(got["alice"]) == len(got["bob"]) == count
            assert same_keys(await bob.get_keys_with_ids("alice", ids(got["alice"])), got["alice"])
            assert same_keys(await alice.get_keys_with_ids("bob", ids(got["bob"])), got["bob"])
        km_a, km_b, km_c = (km(network, km_id) for km_id in ("km-a", "km-b", "km-c"))
        assert km_a.relays["started"] == km_c.relays["started"] == count
        assert km_b.relays["forwarded"] == 2 * count
        assert km_a.spent_bits == {"km-b": count * bits}
        assert km_b.spent_bits == {"km-a": count * bits, "km-c": count * bits}
        assert km_c.spent_bits == {"km-b": count * bits}


# --- 10. endpoints.json --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_endpoints_file(tmp_path: Path, transport: str) -> None:
    async with running(tmp_path, transport) as network:
        written = network.state_dir / ENDPOINTS_FILE
        endpoints = json.loads(written.read_text(encoding="utf-8"))
        assert endpoints == network.endpoints()
        assert set(endpoints) == {"ca", "controller", "kms", "apps"}
        url = re.compile(rf"{re.escape(transport)}://\S+")
        controller_ck = endpoints["controller"].pop("ck")
        assert endpoints["controller"] == {"id": "controller"}
        assert list(controller_ck) == [transport]
        assert url.fullmatch(controller_ck[transport])
        assert set(endpoints["kms"]) == {"km-a", "km-b", "km-c"}
        for interfaces in endpoints["kms"].values():
            assert set(interfaces) == {"ak", "ck", "kq1", "kx"}
            for by_scheme in interfaces.values():
                assert list(by_scheme) == [transport]
                assert url.fullmatch(by_scheme[transport])
        apps = endpoints["apps"]
        assert {app: entry["km"] for app, entry in apps.items()} == {"alice": "km-a", "bob": "km-c"}
        for entry in apps.values():
            assert set(entry) == {"km", "cert", "key"}
        paths = [endpoints["ca"], *(entry[k] for entry in apps.values() for k in ("cert", "key"))]
        if network.uses_tls:
            assert not any(Path(path).is_absolute() for path in paths)
        else:
            assert paths == [None] * 5
            paths = []

        # The file alone (copied elsewhere with the files it names) reaches the KMs.
        elsewhere = tmp_path / "elsewhere"
        for path in [ENDPOINTS_FILE, *paths]:
            (elsewhere / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(network.state_dir / path, elsewhere / path)

        def from_file(app: str) -> AbstractAsyncContextManager[KeyManagerClient]:
            found = json.loads((elsewhere / ENDPOINTS_FILE).read_text(encoding="utf-8"))
            entry = found["apps"][app]
            url = found["kms"][entry["km"]]["ak"][transport]
            if found["ca"] is None:  # memory://: no certificate says who we are
                return KeyManagerClient.connect(url, identity=app)
            tls = TLSConfig(
                ca=elsewhere / found["ca"],
                cert=elsewhere / entry["cert"],
                key=elsewhere / entry["key"],
            )
            return KeyManagerClient.connect(url, tls=tls)

        await ready(network, relay_bits(1, 256))
        async with from_file("alice") as alice:
            keys = await alice.get_keys("bob")
        async with from_file("bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
