"""The conformance suite (qkdn_sdk.conformance) and its literal peers (qkdn_sdk.testing.literal)
against our own roles: it passes against them over tcp+tls and grpcs, and fails naming the
procedure against a role with one deviation put back; ``qkdn conformance`` says the same.

The controller is run alone (the suite plays every KM of its network, so no KM of ours competes
with the literal ones for its notifications); the KM runs in the line3 network of
tests/test_network.py, with carol added to km-a so that km-a serves two applications, and the
suite plays km-b (its neighbour) and km-a.km-b (its QKD module) too. The QKD module under test
is line3's km-b.km-c, which supplies keys upon request, and one of the test's own that pushes
keys to the suite.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from typer.testing import CliRunner

from qkdn_sdk.cli import app
from qkdn_sdk.conformance import (
    CONTROLLER_PROCEDURES,
    KM_PROCEDURES,
    QKD_MODULE_PROCEDURES,
    Arrow,
    ControllerTarget,
    Identity,
    KMTarget,
    QKDModuleTarget,
    Result,
    first_wrong,
    run_suite,
)
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.messages import Key, Message, Role, ak, ck, kx, mgmt
from qkdn_sdk.network import Network, parse_topology
from qkdn_sdk.pki import dev_tls_config, write_dev_pki
from qkdn_sdk.roles.controller import Controller, NoRoute
from qkdn_sdk.roles.km import KeyManagerError
from qkdn_sdk.roles.qkd_module import Kq1Mode, QKDModule
from qkdn_sdk.testing.literal import LiteralController, LiteralNeighbour, Step
from qkdn_sdk.transport import Connection
from tests.test_network import (
    CAROL_ON_KM_A,
    WAIT,
    client,
    ids,
    km,
    ready,
    relay_bits,
    running,
    same_keys,
    topology_text,
)

TRANSPORTS = ["tcp+tls", "grpcs"]
KMS = ("km-a", "km-b", "km-c")


def outcomes(results: list[Result]) -> dict[str, str]:
    return {result.name: result.outcome for result in results}


def failed(results: list[Result]) -> dict[str, str]:
    return {result.name: result.detail for result in results if result.outcome == "fail"}


# --- the controller -----------------------------------------------------------------------------


@asynccontextmanager
async def lone_controller(tmp_path: Path, transport: str) -> AsyncIterator[tuple[Controller, str]]:
    """line3's controller, alone, serving ``transport``; the PKI in ``tmp_path / "pki"``."""
    topology = parse_topology(topology_text(transport))
    await trio.to_thread.run_sync(
        write_dev_pki, tmp_path / "pki", "qkdn-dev-ca", topology.entities()
    )
    controller = Controller(
        topology.controller_config(), tls=dev_tls_config(tmp_path / "pki", "controller")
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(controller.run)
        yield controller, url
        nursery.cancel_scope.cancel()


def controller_target(tmp_path: Path, url: str, kms: tuple[str, ...] = KMS) -> ControllerTarget:
    identities = [Identity.of(dev_tls_config(tmp_path / "pki", km_id)) for km_id in kms]
    return ControllerTarget(url, identities, application="bob", timeout=WAIT)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_our_controller_conforms(tmp_path: Path, transport: str) -> None:
    async with lone_controller(tmp_path, transport) as (_, url):
        results = await run_suite(controller_target(tmp_path, url))
    assert failed(results) == {}
    assert outcomes(results) == {
        "next-hop": "pass",
        "next-hop-by-application": "pass",
        "centralized-relay": "pass",
        "centralized-relay-by-application": "pass",
        "session-creation": "pass",
        "d23-km-authentication": "pass",
        "d23-status-report": "pass",
        "d23-route-information": "pass",
        "key-reservation": "skip",
        "key-allocation": "skip",
    }
    assert [result.name for result in results] == [p.name for p in CONTROLLER_PROCEDURES]


async def test_a_route_through_a_km_without_certificate_is_skipped(tmp_path: Path) -> None:
    async with lone_controller(tmp_path, "tcp+tls") as (_, url):
        results = await run_suite(controller_target(tmp_path, url, ("km-a", "km-c")))
    skipped = {result.name: result.detail for result in results if result.outcome == "skip"}
    assert skipped["next-hop"] == "the route crosses km-b, whose certificate was not given"
    assert failed(results) == {}


async def test_a_controller_that_answers_a_transit_km_from_the_source_field_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deviation put back: the next hop computed from Source KMA ID (Table 1: the source of
    the whole route) rather than from the KM that asks."""
    async with lone_controller(tmp_path, "tcp+tls") as (controller, url):

        def from_source(
            request: ck.KeyRelayNextHopRequest, connection: Connection
        ) -> ck.ResponseToKeyRelayNextHopRequest:
            source, destination = controller._ends(request, connection)
            path = controller.route(source, destination)
            return ck.ResponseToKeyRelayNextHopRequest(
                source_kma_id=source, destination_kma_id=destination, next_kma_ids=[path[1]]
            )

        monkeypatch.setattr(controller, "_next_hop", from_source)
        results = await run_suite(controller_target(tmp_path, url))
    wrong = failed(results)
    assert list(wrong) == ["next-hop"]
    assert wrong["next-hop"].startswith("transit KM (km-b) is given itself as the next hop: ")
    assert (
        '0x4102 Response to key relay next hop request {"source_kma_id":"km-a"'
        in (wrong["next-hop"])
    )


# --- the KM -------------------------------------------------------------------------------------


def identity(network: Network, entity: str) -> Identity:
    tls = network.tls(entity)
    assert tls is not None
    return Identity.of(tls)


def km_target(network: Network, transport: str) -> KMTarget:
    urls = network.endpoints()["kms"]["km-a"]
    return KMTarget(
        urls["ak"][transport],
        [identity(network, app) for app in ("alice", "carol")],
        ck_url=urls["ck"][transport],
        controller=identity(network, "controller"),
        peer_km="km-b",
        kx_url=urls["kx"][transport],
        neighbour=identity(network, "km-b"),
        kq1_url=urls["kq1"][transport],
        module=identity(network, "km-a.km-b"),
        timeout=WAIT,
    )


@asynccontextmanager
async def km_a(tmp_path: Path, transport: str) -> AsyncIterator[Network]:
    """line3 with carol at km-a, once km-a holds enough link key towards km-b to reserve."""
    async with running(tmp_path, transport, extra=CAROL_ON_KM_A) as network:
        await ready(network, 8192, [("km-a", "km-b")])
        yield network


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_our_km_conforms(tmp_path: Path, transport: str) -> None:
    async with km_a(tmp_path, transport) as network:
        results = await run_suite(km_target(network, transport))
        assert km(network, "km-a").allocated_bits("km-b") > 0
        # the UPDATE of the link session the suite opened was recorded (Table 7-10 has no answer)
        assert km(network, "km-a").links.neighbour_qos == {"km-b": {}}
    assert failed(results) == {}
    assert outcomes(results) == {
        "key-supply-upon-request": "pass",
        "proactive-key-supply": "pass",
        "session-creation-notification": "pass",
        "key-reservation-and-allocation": "pass",
        "kq1-key-supply": "pass",
        "kq1-key-supply-with-a-wrong-hash-value": "pass",
        "km-link-hello": "pass",
        "km-link-session": "pass",
        "km-link-hello-of-another-community": "pass",
        "d23-authentication": "pass",
        "d23-key-supply": "pass",
        "d23-key-deletion": "pass",
        "d23-status-supply": "pass",
        "next-hop-request": "skip",
        "key-relay-request-notification": "skip",
        "session-creation-request": "skip",
    }
    assert [result.name for result in results] == [p.name for p in KM_PROCEDURES]


async def test_a_km_that_needs_the_sdks_reservation_extension_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deviation put back: a key reservation request as Table 10 writes it (no extension
    naming the next KM and the bits) refused."""
    async with km_a(tmp_path, "tcp+tls") as network:
        reservations = km(network, "km-a").reservations
        terms = reservations._terms

        async def extension_needed(request: ck.KeyReservationRequest) -> Any:
            if request.extension is None:
                raise KeyManagerError("extension next_kma_id and key_bits missing")
            return await terms(request)

        monkeypatch.setattr(reservations, "_terms", extension_needed)
        results = await run_suite(km_target(network, "tcp+tls"))
    wrong = failed(results)
    assert list(wrong) == ["key-reservation-and-allocation"]
    assert wrong["key-reservation-and-allocation"].startswith(
        "controller received a failure where the figure draws success: 0x140B Response to key "
        "reservation request {"
    )
    assert "extension next_kma_id and key_bits missing" in wrong["key-reservation-and-allocation"]


async def test_a_km_whose_hello_names_another_community_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deviation put back: the KM answers a neighbour's HELLO with a HELLO of another
    community than the one it checks (D2.3 Table 7-8)."""
    async with km_a(tmp_path, "grpcs") as network:
        links = km(network, "km-a").links
        on_hello = links.on_hello

        async def elsewhere(hello: kx.Hello, connection: Connection) -> kx.Hello:
            return attrs.evolve(await on_hello(hello, connection), community_id="elsewhere")

        monkeypatch.setattr(links, "on_hello", elsewhere)
        results = await run_suite(km_target(network, "grpcs"))
    wrong = failed(results)
    assert list(wrong) == ["km-link-hello"]
    assert wrong["km-link-hello"].startswith(
        'neighbour KM: Community ID is not qkdn: 0x1180 HELLO message {"sender_ip":"127.0.0.1",'
        '"sender_id":"km-a","community_id":"elsewhere"'
    )


async def test_a_km_that_takes_a_key_whose_hash_is_wrong_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deviation put back: the KM stores a QKD-key whatever its Hash value says."""
    async with km_a(tmp_path, "tcp+tls") as network:
        acquisition = km(network, "km-a").acquisition
        store = acquisition.store_qkd_keys

        async def unchecked(link: Any, keys: list[Any], **options: Any) -> None:
            await store(link, [(key_id, key, None) for key_id, key, _ in keys], **options)

        monkeypatch.setattr(acquisition, "store_qkd_keys", unchecked)
        results = await run_suite(km_target(network, "tcp+tls"))
    wrong = failed(results)
    assert list(wrong) == ["kq1-key-supply-with-a-wrong-hash-value"]
    assert wrong["kq1-key-supply-with-a-wrong-hash-value"].startswith(
        "QKD module sent a key whose Hash value is not the sha256 of its data, and it was "
        'accepted: 0x1302 Response to key supply {"key_id":"'
    )


async def test_a_km_whose_status_supply_gives_every_parameter_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deviation put back: the KM answers a status command with every parameter it knows,
    whatever the status table asked (D2.3 Tables 8-1, 8-2)."""
    async with km_a(tmp_path, "tcp+tls") as network:
        status = km(network, "km-a").status
        link_status = status.link_status

        def everything(parameters: Any = ()) -> list[dict[str, Any]]:
            return link_status()

        monkeypatch.setattr(status, "link_status", everything)
        results = await run_suite(km_target(network, "tcp+tls"))
    wrong = failed(results)
    assert list(wrong) == ["d23-status-supply"]
    assert wrong["d23-status-supply"].startswith(
        "controller asked for key_amount, status, and an entry carries key_consumption_rate, "
        "key_generation_rate too: 0x1483 Response message for status information supply {"
    )


async def test_a_controller_that_answers_a_status_report_fails_the_route_information(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deviation put back: the controller answers an unsolicited status supply (Figure 8-2
    draws none); the answer reaches the source KM within the next procedure, which fails."""
    async with lone_controller(tmp_path, "tcp+tls") as (controller, url):
        receive = controller._reports.receive

        def answered(supply: Any, connection: Connection, record: Any) -> None:
            receive(supply, connection, record)
            nursery = controller._nursery
            assert nursery is not None
            reply = ck.SessionEndedNotification(km_id="km-c", session_id=SESSION, reason="ended")
            nursery.start_soon(connection.send, reply)

        monkeypatch.setattr(controller._reports, "receive", answered)
        results = await run_suite(controller_target(tmp_path, url))
    wrong = failed(results)
    assert list(wrong) == ["d23-route-information"]
    assert wrong["d23-route-information"].startswith("source KM received 0x4187 ")


# --- the QKD module -----------------------------------------------------------------------------


def free_url(transport: str) -> str:
    """A URL on a port nothing listens on now, for a module that must know it before the suite
    serves it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"{transport}://127.0.0.1:{sock.getsockname()[1]}"


def module_target(network: Network, listen: str | None = None) -> QKDModuleTarget:
    """km-b's QKD module on its on-request link to km-c, played to as km-b."""
    [link] = [link for link in network.km_config("km-b").links if link.neighbour == "km-c"]
    return QKDModuleTarget(link.module_url, identity(network, "km-b"), listen=listen, timeout=WAIT)


@asynccontextmanager
async def pushing_module(network: Network, url: str) -> AsyncIterator[QKDModule]:
    """A module of km-b that pushes its keys to ``url`` (Q.4162 clause 7.1)."""
    config = attrs.evolve(
        network.topology.module_config("km-b", "km-c", bytes(32), 0.0, listen_url="unused"),
        mode=Kq1Mode.PROACTIVE,
        km_url=url,
        listen_url=None,
    )
    module = QKDModule(config, tls=network.tls(config.module_id))
    async with trio.open_nursery() as nursery:
        await nursery.start(module.run)
        yield module
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_our_qkd_module_conforms(tmp_path: Path, transport: str) -> None:
    async with running(tmp_path, transport) as network:
        listen = free_url(transport)
        async with pushing_module(network, listen) as pushing:
            results = await run_suite(module_target(network, listen))
        assert pushing.stats.delivered >= 2
    assert failed(results) == {}
    assert outcomes(results) == {"kq1-key-request": "pass", "kq1-proactive-key-supply": "pass"}
    assert [result.name for result in results] == [p.name for p in QKD_MODULE_PROCEDURES]


def wrong_hash(config: Any, key: Any) -> dict[str, Any]:
    """Our module's Table 4 Key extension with a Hash value that is not the key's."""
    return {"qkd_module_id": config.module_id, "hash_value": "00" * 32}


async def test_a_module_whose_key_extension_has_a_wrong_hash_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deviation put back: Table 4's keys with a Hash value (Table 1's, in the Key
    extension) that is not theirs. The module pushes nothing here: that procedure is skipped."""
    monkeypatch.setattr("qkdn_sdk.roles.qkd_module._module._key_extension", wrong_hash)
    async with running(tmp_path, "tcp+tls") as network:
        results = await run_suite(module_target(network))
    assert outcomes(results) == {"kq1-key-request": "fail", "kq1-proactive-key-supply": "skip"}
    assert failed(results)["kq1-key-request"].startswith("KM: the Hash value of QKD-key ")
    assert (
        " is not the sha256 of its key data: 0x3104 Response to key request {"
        in (failed(results)["kq1-key-request"])
    )


# --- our KMs with the literal controller in the controller's place -------------------------------


@asynccontextmanager
async def literal_controller(
    network: Network, *, ignore_sdk_members: bool
) -> AsyncIterator[LiteralController]:
    """The network's controller stopped, and a literal one serving its URL."""
    url = network.endpoints()["controller"]["ck"]["tcp+tls"]
    topology = network.topology
    literal = LiteralController(
        kms=KMS,
        links=[link.kms for link in topology.links],
        applications={app.id: app.km for app in topology.applications},
        ignore_sdk_members=ignore_sdk_members,
    )
    await network.stop_controller()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(literal.serve, url, tls=network.tls("controller"), identity="controller")
        )
        yield literal
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("routing", ["distributed", "centralized"])
async def test_our_kms_relay_with_the_literal_controller(tmp_path: Path, routing: str) -> None:
    """Q.4164 clauses 7.1, 7.2 from the KMs' side, with a controller that reads the table fields
    and ignores what the SDK's extensions say: alice and bob get the same keys."""
    async with running(tmp_path, "tcp+tls", routing=routing) as network:
        await ready(network, relay_bits(2, 256))
        async with literal_controller(network, ignore_sdk_members=True) as literal:
            async with client(network, "alice") as alice:
                keys = await alice.get_keys("bob", 2)
            async with client(network, "bob") as bob:
                assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
    assert literal.trace.violations == []
    codes = [step.message.code for step in literal.trace.steps]
    if routing == "distributed":
        assert codes == [0x1401, 0x4102, 0x1401, 0x4102]
    else:
        assert codes == [0x1403, 0x4104, 0x1405]
        assert [relay.response for relay in literal.relays] == ["success"]


async def test_our_kms_route_requests_carry_the_sdks_hints(tmp_path: Path) -> None:
    """What a strict literal controller finds: the KM's next hop request carries the SDK's
    ``key_bits`` in its Extension (and ``avoid_kma_ids`` when a KM is to be avoided:
    refinements our controller reads); the request is refused, and the key request fails saying
    so."""
    async with running(tmp_path, "tcp+tls") as network:
        await ready(network, relay_bits(1, 256))
        async with (
            literal_controller(network, ignore_sdk_members=False) as literal,
            client(network, "alice") as alice,
        ):
            with pytest.raises(QkdnError) as refused:
                await alice.get_keys("bob", 1)
    [violation] = literal.trace.violations
    assert str(violation).startswith("controller received 0x1401 Key relay next hop request {")
    assert str(violation).endswith(
        "its extension carries the SDK's key_bits, which no table defines"
    )
    assert "the SDK's key_bits" in str(refused.value)


async def test_our_kms_say_hello_open_a_session_and_update_with_a_literal_neighbour(
    tmp_path: Path,
) -> None:
    """D2.3 clause 7.2.2 from the KMs' side: km-b stopped and a literal neighbour serving its
    KM link URL with its certificate. km-a and km-c say hello; km-a (whose ID sorts first) opens
    a link session and distributes its KMA-key ID. What the literal neighbour does not know
    (the SDK's key ID synchronisation) never reaches it: the transport refuses it."""
    # km-a saw the link to km-b up, then km-b go: it opens a new session when the link is back
    up, down = Said("km-a: link to km-b is up"), Said("km-a: link to km-b is down")
    with said(up, down):
        async with running(tmp_path, "tcp+tls") as network:
            url = network.endpoints()["kms"]["km-b"]["kx"]["tcp+tls"]
            with trio.fail_after(WAIT):
                await up.event.wait()
                await network.stop_km("km-b")
                await down.event.wait()
            literal = LiteralNeighbour("km-b")
            await _the_literal_neighbour_meets_the_kms(network, literal, url)
    received = {step.message.code for step in literal.trace.steps if not step.sent}
    assert received == {0x1180, 0x1181, 0x1182}
    assert _said_hello(literal) >= {"km-a", "km-c", "km-b"}


def _said_hello(literal: LiteralNeighbour) -> set[str]:
    hellos = [step.message for step in literal.trace.steps if step.message.code == 0x1180]
    return {hello.sender_id for hello in hellos if isinstance(hello, kx.Hello)}


async def _the_literal_neighbour_meets_the_kms(
    network: Network, literal: LiteralNeighbour, url: str
) -> None:

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(literal.serve, url, tls=network.tls("km-b"), identity="km-b"))
        with trio.fail_after(WAIT):  # km-a's update, and both neighbours' hellos
            while not literal.trace.violations and not (
                literal.updates and _said_hello(literal) >= {"km-a", "km-c"}
            ):
                await literal.trace.changed()
        nursery.cancel_scope.cancel()
    assert literal.trace.violations == []
    [update] = literal.updates
    assert list(literal.sessions) == [update.kma_key_id]
    assert km(network, "km-a").link_sessions["km-b"] == update.kma_key_id


@contextmanager
def said(*handlers: Said) -> Iterator[None]:
    """The KMs' log records reach ``handlers`` (INFO and up) within the block."""
    logger = logging.getLogger("qkdn_sdk.roles.km")
    level = logger.level
    logger.setLevel(logging.INFO)
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(level)


class Said(logging.Handler):
    """Sets :attr:`event` once a record says ``text`` (records are emitted in trio's thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


# --- the sequence each figure draws --------------------------------------------------------------

SESSION = "0f0f0f0f-0000-4000-8000-000000000000"
NOTIFIED = ak.SessionCreationNotification(
    application_source_id="carol", application_destination_id="alice", session_id=SESSION
)
ACCEPTED = ak.ResponseToSessionCreationNotification(session_id=SESSION, response="success")
PUSHED = ak.ProactiveKeySupply(session_id=SESSION, keys=[Key(key=b"k" * 32, key_id="k1")])
TAKEN = ak.ResponseToProactiveKeySupply(session_id=SESSION, key_id="k1", response="success")
FIGURE_4_AND_6 = (
    Arrow("app", 0x1206),
    Arrow("app", 0x2107),
    Arrow("app", 0x120A, repeated=True),
    Arrow("app", 0x210B, repeated=True),
)


def steps(*messages: Message) -> list[Step]:
    return [Step("app", message.sender is Role.APPLICATION, message) for message in messages]


@pytest.mark.parametrize("pushes", [0, 1, 3])
def test_a_repeated_group_comes_any_number_of_times(pushes: int) -> None:
    seen = steps(NOTIFIED, ACCEPTED, *[PUSHED, TAKEN] * pushes)
    assert first_wrong(FIGURE_4_AND_6, seen) is None


def test_the_first_wrong_message_is_quoted() -> None:
    wrong = first_wrong(FIGURE_4_AND_6, steps(NOTIFIED, PUSHED))
    assert wrong == (
        'app received 0x120A Proactive key supply {"session_id":"' + SESSION + '","keys":[{"key":'
        '"...","key_id":"k1"}]}; the figure has 0x2107 Response to session creation notification '
        "there"
    )


def test_a_message_missing_at_the_end_is_named() -> None:
    assert first_wrong(FIGURE_4_AND_6, steps(NOTIFIED, ACCEPTED, PUSHED)) == (
        "app never saw 0x210B Response to proactive key supply"
    )
    assert first_wrong(FIGURE_4_AND_6, []) == ("app never saw 0x1206 Session creation notification")


def test_an_arrow_may_allow_another_code() -> None:
    """A refusal the table's response cannot say may come as an error indication instead."""
    refused = (Arrow("app", 0x2182), Arrow("app", 0x1283, or_codes=(0x0080,)))
    command = mgmt.KeySupplyCommand(sender_id="carol", source_id="carol", target_id="alice")
    indication = mgmt.ErrorIndication(reason="session ended", command_code=0x2182)
    assert first_wrong(refused, steps(command, indication)) is None
    assert first_wrong(refused, steps(command)) == (
        "app never saw 0x1283 Response message for key supply or 0x0080 Error indication"
    )


# --- the command --------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    """``qkdn ARGS`` in this process (CliRunner), from a worker thread: its trio run beside the
    test's."""
    invoked = partial(CliRunner().invoke, app, list(args), env={"COLUMNS": "250"})
    return trio.to_thread.run_sync(invoked)


def controller_args(tmp_path: Path, url: str, kms: tuple[str, ...] = KMS) -> list[str]:
    pki = tmp_path / "pki"
    args = ["conformance", "controller", url, "--ca", str(pki / "ca.pem")]
    for km_id in kms:
        args += ["--cert", str(pki / f"{km_id}.pem"), "--key", str(pki / f"{km_id}.key")]
    return [*args, "--application", "bob", "--timeout", str(WAIT)]


async def test_the_command_prints_a_row_per_procedure(tmp_path: Path) -> None:
    async with lone_controller(tmp_path, "tcp+tls") as (_, url):
        result = await invoke(*controller_args(tmp_path, url))
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    for procedure in CONTROLLER_PROCEDURES:
        assert any(procedure.name in row for row in rows), procedure.name
    assert sum(" pass " in row for row in rows) == 8
    assert sum(" skip " in row for row in rows) == 2


async def test_the_command_fails_naming_the_procedure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with lone_controller(tmp_path, "grpcs") as (controller, url):

        def no_next_hop(request: ck.KeyRelayNextHopRequest, connection: Connection) -> Any:
            raise NoRoute("no route: maintenance")

        monkeypatch.setattr(controller, "_next_hop", no_next_hop)
        result = await invoke(*controller_args(tmp_path, url), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["passed"] is False
    assert report["target"] == "controller"
    by_name = {entry["name"]: entry for entry in report["results"]}
    assert by_name["next-hop"]["outcome"] == "fail"
    assert by_name["next-hop"]["clause"] == "Q.4164 7.1, 8.1-8.2"
    assert by_name["next-hop"]["detail"].startswith(
        "source KM received a failure where the figure draws success: 0x4102 Response to key "
        'relay next hop request {"source_kma_id":"km-a"'
    )
    assert by_name["session-creation"]["outcome"] == "pass"


async def test_the_command_passes_as_json(tmp_path: Path) -> None:
    async with lone_controller(tmp_path, "tcp+tls") as (_, url):
        result = await invoke(*controller_args(tmp_path, url), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True
    assert [entry["name"] for entry in report["results"]] == [p.name for p in CONTROLLER_PROCEDURES]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cert", "x.pem"], "every --cert needs its --key: 1 --cert, 0 --key"),
        ([], "tcp+tls:// needs --ca, --cert and --key"),
    ],
)
async def test_the_command_refuses_options_that_do_not_fit(args: list[str], says: str) -> None:
    result = await invoke("conformance", "controller", "tcp+tls://127.0.0.1:1", *args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"qkdn: {says}")
    assert len(result.stderr.splitlines()) == 1


async def test_the_command_says_when_the_target_is_unreachable(tmp_path: Path) -> None:
    async with lone_controller(tmp_path, "tcp+tls") as (_, url):
        pass  # stopped: nothing listens there any more
    result = await invoke(*controller_args(tmp_path, url))
    assert result.exit_code == 1
    assert result.stderr.startswith("qkdn: ")
    assert len(result.stderr.splitlines()) == 1


def module_args(network: Network) -> list[str]:
    """``qkdn conformance qkd-module`` at km-b's module towards km-c, as km-b."""
    pki = network.state_dir / "pki"
    url = module_target(network).url
    assert url is not None
    return [
        *("conformance", "qkd-module", url, "--ca", str(pki / "ca.pem")),
        *("--cert", str(pki / "km-b.pem"), "--key", str(pki / "km-b.key")),
        *("--timeout", str(WAIT)),
    ]


async def test_the_qkd_module_command_passes_as_json(tmp_path: Path) -> None:
    async with running(tmp_path, "grpcs") as network:
        result = await invoke(*module_args(network), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["target"], report["passed"]) == ("QKD module", True)
    assert [(entry["name"], entry["outcome"]) for entry in report["results"]] == [
        ("kq1-key-request", "pass"),
        ("kq1-proactive-key-supply", "skip"),
    ]
    assert report["results"][1]["detail"].startswith("needs a URL to serve (--listen)")


async def test_the_qkd_module_command_fails_naming_the_procedure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qkdn_sdk.roles.qkd_module._module._key_extension", wrong_hash)
    async with running(tmp_path, "tcp+tls") as network:
        result = await invoke(*module_args(network))
    assert result.exit_code == 1
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    [row] = [row for row in rows if "kq1-key-request" in row]
    assert " fail " in row
    assert "Q.4162 7.2, 8.2.1-8.2.2" in row


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give the module's URL, or --listen for a module that connects to its KM"),
        (
            ["tcp://127.0.0.1:1", "--identity", "km-a", "--identity", "km-b"],
            "a QKD module is tested as its KM: give 1 identity, not 2",
        ),
        (
            ["tcp://127.0.0.1:1", "--identity", "km-a", "--hash-algorithm", "crc"],
            "",
        ),
    ],
)
async def test_the_qkd_module_command_refuses_options_that_do_not_fit(
    args: list[str], says: str
) -> None:
    result = await invoke("conformance", "qkd-module", *args)
    if says:
        assert result.exit_code == 1
        assert result.stderr == f"qkdn: {says}\n"
    else:  # typer's usage error names the option
        assert result.exit_code == 2
        assert "crc is no hash algorithm of this Python (hashlib)" in result.stderr


async def test_the_km_command_counts_an_identity_per_interface() -> None:
    result = await invoke(
        *("conformance", "km", "tcp://127.0.0.1:1", "--kx", "tcp://127.0.0.1:2"),
        *("--identity", "alice", "--identity", "carol"),
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "qkdn: a KM is tested as two of its applications and one peer for each of --ck, --kx, "
        "--kq1 given: give 3 identities, not 2\n"
    )


def test_the_literal_peers_need_no_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import qkdn_sdk.testing.literal, qkdn_sdk.conformance\n"
        "from qkdn_sdk.testing import example\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_transport_kit_is_still_importable_from_the_package() -> None:
    from qkdn_sdk.testing import TransportConformance
    from qkdn_sdk.testing._conformance import TransportConformance as defined

    assert TransportConformance is defined
