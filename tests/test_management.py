"""D2.3 clause 8.1 on line3: status information supply on request and at the controller's
period (Tables 8-1, 8-2), route information supply (Tables 8-3, 8-4)."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from qkdn_sdk.errors import FailureResponse
from qkdn_sdk.messages import Message, kx, mgmt
from qkdn_sdk.roles.controller import Controller, KMRequestFailed
from qkdn_sdk.roles.keystore import MemoryKeyStore
from qkdn_sdk.roles.km import STATUS_PARAMETERS, KeyManager, KeyManagerError, KMConfig, KMLink
from qkdn_sdk.transport import Connection, connect, serve
from tests.test_network import WAIT, client, km, ready, relay_bits, running


async def test_status_on_request_and_at_a_period(tmp_path: Path) -> None:
    async with running(tmp_path, "memory") as network:
        await ready(network, 2 * relay_bits(1, 256))
        controller = network.controller
        assert isinstance(controller, Controller)
        table = await controller.request_status("km-b")
        assert [entry["km_link"] for entry in table] == ["km-a", "km-c"]
        for entry in table:
            assert set(entry) == {"km_link", *STATUS_PARAMETERS}
            assert entry["status"] == "up"
            assert entry["key_amount"] > 0
        assert controller.key_amount("km-b", "km-c") == table[1]["key_amount"]  # applied

        # every hour from now: after the supply this starts, none comes by itself
        count = controller.report_count("km-a")
        await controller.request_status("km-a", period=3600, parameters=["key_amount"])
        assert km(network, "km-a").report_period == 3600
        with trio.fail_after(WAIT):
            await controller.wait_for_report("km-a", count + 1)
        async with client(network, "alice") as alice:
            await alice.get_keys("bob")
        rates = await controller.request_status("km-a", parameters=["key_consumption_rate"])
        assert set(rates[0]) == {"km_link", "key_consumption_rate"}
        assert rates[0]["key_consumption_rate"] > 0  # the relay's link key, per second

        with pytest.raises(KMRequestFailed, match=r"unknown status parameters \['colour'\]"):
            await controller.request_status("km-a", parameters=["colour"])


async def test_route_information(tmp_path: Path) -> None:
    async with running(tmp_path, "memory") as network:
        await ready(network, relay_bits(1, 256))
        km_a = km(network, "km-a")
        assert await km_a.route_information("km-c", 256) == ["km-a", "km-b", "km-c"]
        with pytest.raises(KeyManagerError, match="failure"):
            await km_a.route_information("km-c", 10**9)  # no link holds that much


async def wait_for_link_state(
    controller: Controller, km_id: str, neighbour: str, state: str
) -> None:
    with trio.fail_after(WAIT):
        while controller.link_state(km_id, neighbour) != state:
            await controller.wait_for_report(km_id, controller.report_count(km_id) + 1)


async def link_session(manager: KeyManager, neighbour: str) -> str:
    """The link session of ``manager`` with ``neighbour``, once it has one."""
    with trio.fail_after(WAIT):  # link keys keep coming: each change is a moment to look
        while neighbour not in manager.link_sessions:
            await manager.wait_link_change()
    return manager.link_sessions[neighbour]


async def test_the_controller_learns_when_a_km_link_goes_down(tmp_path: Path) -> None:
    """HELLOs keep each KM link's session alive (D2.3 Tables 7-8, 7-9): when km-c stops
    answering, km-b reports its link down, with no key; when km-c is back, up, in a new link
    session."""
    async with running(tmp_path, "memory") as network:
        controller = network.controller
        assert isinstance(controller, Controller)
        await wait_for_link_state(controller, "km-b", "km-c", "up")
        km_b = km(network, "km-b")
        session = await link_session(km_b, "km-c")
        assert km(network, "km-c").link_sessions["km-b"] == session  # both ends agree

        await network.stop_km("km-c")
        await wait_for_link_state(controller, "km-b", "km-c", "down")
        assert controller.key_amount("km-b", "km-c") == 0
        assert controller.link_state("km-b", "km-a") == "up"
        with trio.fail_after(WAIT):  # the HELLOs to km-c go unanswered: its session ends
            while "km-c" in km_b.link_sessions:
                await km_b.wait_link_change()

        await network.start_km("km-c")
        await wait_for_link_state(controller, "km-b", "km-c", "up")
        assert await link_session(km_b, "km-c") != session


async def test_every_km_authenticates_to_the_controller(tmp_path: Path) -> None:
    async with running(tmp_path, "tcp+tls") as network:
        controller = network.controller
        assert isinstance(controller, Controller)
        with trio.fail_after(WAIT):  # a KM authenticates before its first status supply
            for km_id in ("km-a", "km-b", "km-c"):
                await controller.wait_for_report(km_id, 1)
        assert controller.authenticated == {"km-a", "km-b", "km-c"}


async def test_periodic_supplies_carry_the_table_the_controller_asked_for() -> None:
    """D2.3 clause 8.1 b): after a status command with a period and a status table, the KM's
    unsolicited supplies come at that period with those parameters only."""
    reports: list[list[dict[str, object]]] = []
    more = trio.Event()

    async def controller(message: Message, connection: Connection) -> Message | None:
        nonlocal more
        if isinstance(message, mgmt.CkAuthenticationCommand):
            return mgmt.CkAuthenticationResponse(
                sender_id="controller", response_code=mgmt.ResultCode.SUCCESS
            )
        if isinstance(message, mgmt.StatusInformationSupplyResponse):
            reports.append(list(message.status_table))
            more.set()
            more = trio.Event()
        return None

    config = KMConfig(
        km_id="km-a",
        listen={"ck": "memory://status-table/km-a/ck"},
        controller_id="controller",
        links=(KMLink(neighbour="km-b", module_id="km-a.km-b"),),
        report_interval=0.05,
        hello_interval=60,
    )
    directory = {"controller": "memory://status-table/controller"}
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(serve, directory["controller"], controller, identity="controller")
        )
        await nursery.start(KeyManager(config, MemoryKeyStore(), directory=directory).run)
        with trio.fail_after(WAIT):
            while not reports:
                await more.wait()
        assert set(reports[-1][0]) == {"km_link", *STATUS_PARAMETERS}
        async with connect(config.listen["ck"], identity="controller") as connection:
            answer = await connection.request(
                mgmt.StatusInformationSupplyCommand(
                    sender_id="controller", period=1, status_table=["key_amount", "status"]
                ),
                timeout=WAIT,
            )
        assert isinstance(answer, mgmt.StatusInformationSupplyResponse)
        asked = [{"km_link", "key_amount", "status"}]  # one link
        assert [set(entry) for entry in answer.status_table] == asked
        count = len(reports)
        with trio.fail_after(WAIT):
            while len(reports) < count + 2:  # the one the command started, then the next
                await more.wait()
        for table in reports[count:]:
            assert [set(entry) for entry in table] == asked
        nursery.cancel_scope.cancel()


async def test_hello_and_session_carry_and_check_their_fields() -> None:
    """D2.3 Tables 7-8 and 7-9 between our km-a and a neighbour written from the tables: km-a's
    HELLO names its ID, community and (its KM link being on 127.0.0.1) Sender IP; a HELLO of
    another community, or with a Sender IP that is no address, is refused; km-a opens link
    sessions with the Hash value of their ID, refuses one whose Hash value is wrong, agrees to
    a shorter Timer, and opens the next session when it runs out. Each session it opened is
    distributed by an UPDATE (Table 7-10) with its KMA-key ID; an UPDATE from the neighbour is
    recorded when it names the link session agreed, and ignored otherwise."""
    hellos: list[kx.Hello] = []
    sessions: list[kx.SessionMessage] = []
    updates: list[kx.Update] = []
    more = trio.Event()

    async def neighbour(message: Message, _connection: Connection) -> Message | None:
        nonlocal more
        if isinstance(message, kx.Hello):
            hellos.append(message)
            answer: Message = kx.Hello(sender_id="km-b", community_id="qkdn")
        elif isinstance(message, kx.SessionMessage):
            sessions.append(message)
            answer = kx.SessionMessage(
                session_id=message.session_id, timer=1, hash_value=message.hash_value
            )
        else:
            assert isinstance(message, kx.Update)
            updates.append(message)
            more.set()
            more = trio.Event()
            return None
        more.set()
        more = trio.Event()
        return answer

    config = KMConfig(
        km_id="km-a",
        # on memory:// too, where a peer's ID is known without certificates
        listen={"kx": "tcp://127.0.0.1:0", "kx@memory": "memory://hello-session/km-a"},
        controller_id="controller",
        links=(KMLink(neighbour="km-b", module_id="km-a.km-b"),),
        hello_interval=0.05,
    )
    directory = {"km-b": "memory://hello-session/km-b"}
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, directory["km-b"], neighbour, identity="km-b"))
        manager = KeyManager(config, MemoryKeyStore(), directory=directory)
        urls = await nursery.start(manager.run)
        with trio.fail_after(WAIT):
            while len(sessions) < 2 or len(updates) < 2:  # the first session's timer (1 s)
                await more.wait()  # runs out: the next
        assert (hellos[0].sender_id, hellos[0].community_id) == ("km-a", "qkdn")
        assert hellos[0].sender_ip == "127.0.0.1"
        first, second = sessions[:2]
        assert first.session_id != second.session_id
        for session in (first, second):
            assert session.hash_value == hashlib.sha256(session.session_id.encode()).hexdigest()
        assert [update.kma_key_id for update in updates[:2]] == [s.session_id for s in sessions[:2]]
        assert updates[0].sender_ip == "127.0.0.1"
        assert isinstance(updates[0].qos, dict)
        assert "key_amount" in updates[0].qos

        async with connect(urls["kx@memory"], identity="km-b") as connection:
            good = await connection.request(kx.Hello(sender_id="km-b", community_id="qkdn"))
            assert isinstance(good, kx.Hello)
            assert good.sender_id == "km-a"
            with pytest.raises(FailureResponse, match="community 'other'"):
                await connection.request(kx.Hello(sender_id="km-b", community_id="other"))
            with pytest.raises(FailureResponse, match=r"'km-b\.example' of km-b is not an IP"):
                await connection.request(kx.Hello(sender_id="km-b", sender_ip="km-b.example"))
            agreed = await connection.request(kx.SessionMessage(session_id="s-1", timer=86400))
            assert isinstance(agreed, kx.SessionMessage)
            assert (agreed.session_id, agreed.timer) == ("s-1", 3600)  # at most ours
            with pytest.raises(FailureResponse, match="not the SHA-256 of its Session ID"):
                await connection.request(kx.SessionMessage(session_id="s-2", hash_value="00"))
            links = manager.links
            await connection.send(kx.Update(kma_key_id="s-1", qos={"key_amount": 2}))
            await connection.send(kx.Update(kma_key_id="s-9", qos={"key_amount": 1}))
            await trio.testing.wait_all_tasks_blocked()  # both handled, in order
            assert links.neighbour_qos["km-b"] == {"key_amount": 2}
        nursery.cancel_scope.cancel()
