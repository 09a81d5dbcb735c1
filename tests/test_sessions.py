"""Proactive key supply sessions on line3 end to end (Q.4161 clause 7.2, Q.4164 clauses
7.3-7.4) and key deletion (FG QIT4N D2.3 Table 7-6).

alice (on km-a) opens a session with bob (on km-c) through km-a and the controller; km-c
notifies bob, which authenticated to it; alice asks for keys by session ID and km-c pushes the
same keys to bob. Applications are :class:`~qkdn_sdk.client.KeyManagerClient`s.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from qkdn_sdk.client import KeyManagerClient, SuppliedKey
from qkdn_sdk.errors import FailureResponse, QkdnError
from qkdn_sdk.messages import Message, ak, mgmt
from qkdn_sdk.network import Network
from qkdn_sdk.transport import Connection, connect, serve
from tests.test_network import (
    CAROL_ON_KM_A,
    ROUTINGS,
    SLOW_B_C,
    TRANSPORTS,
    WAIT,
    after_refetch_window,
    ak_url,
    client,
    ids,
    km,
    ready,
    refused,
    relay_bits,
    running,
    same_keys,
)


@asynccontextmanager
async def listening(network: Network, app: str) -> AsyncIterator[KeyManagerClient]:
    """``app`` connected to its KM and authenticated: sessions and keys come to it."""
    async with client(network, app) as connected:
        await connected.authenticate()
        yield connected


async def pushed(application: KeyManagerClient, count: int) -> list[SuppliedKey]:
    """The next ``count`` keys pushed to ``application``."""
    with trio.fail_after(WAIT):
        return [await application.proactive_keys.receive() for _ in range(count)]


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bob_gets_pushed_the_keys_alice_gets(
    tmp_path: Path, transport: str, routing: str
) -> None:
    async with running(tmp_path, transport, routing=routing) as network:
        await ready(network, 2 * relay_bits(3, 512))
        async with listening(network, "bob") as bob, client(network, "alice") as alice:
            assert bob.km_id == "km-c"  # the KM authenticated to bob in turn
            session = await alice.create_session("bob", 10)
            assert bob.sessions == {session.session_id: "alice"}  # notified before the answer
            first = await session.get_keys(3, 512)
            second = await session.get_keys(3, 512)
            got = await pushed(bob, 6)
            with trio.fail_after(WAIT):  # bob answered the last one: the KM takes it next
                await km(network, "km-c").wait_pushed("bob", 6)
        assert same_keys(got, first + second)  # the same IDs and bytes, in order
        assert {key.session_id for key in got + first + second} == {session.session_id}
        assert [key.size for key in got] == [512] * 6
        assert km(network, "km-c").store.counts("session:") == {}  # acknowledged: deleted
        assert km(network, "km-a").relays["started"] == 2


async def test_a_session_between_applications_of_one_km(tmp_path: Path) -> None:
    async with running(tmp_path, "memory", extra=CAROL_ON_KM_A) as network:
        await network.stop_controller()  # not needed
        async with listening(network, "carol") as carol, client(network, "alice") as alice:
            session = await alice.create_session("carol")
            keys = await session.get_keys(2)
            assert same_keys(await pushed(carol, 2), keys)
        assert km(network, "km-a").relays["started"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_session_refusals_say_why(tmp_path: Path, transport: str) -> None:
    async with running(tmp_path, transport) as network:
        await ready(network, 3 * relay_bits(2, 256))
        async with client(network, "alice") as alice:
            # bob never authenticated to km-c: nothing can reach it
            reason = await refused(alice.create_session("bob"))
            assert "application 'bob' is not connected to km-c" in reason
            reason = await refused(alice.create_session("mallory"))
            assert "unknown destination application 'mallory'" in reason

            async with listening(network, "bob") as bob:
                session = await alice.create_session("bob", 3)
                await session.get_keys(2)
                reason = await refused(session.get_keys(2))
                assert "has 1 of its 3 keys left, not 2" in reason
                await pushed(bob, 2)

                await session.end()
                reason = await refused(session.get_keys(1))
                assert "ended: ended by alice" in reason

                # ended by bob at km-c: km-c refuses the next relay, alice's KM says why
                other = await alice.create_session("bob")
                await bob.end_session(other.session_id, "alice")
                reason = await refused(other.get_keys(1))
                assert f"session '{other.session_id}' ended: ended by bob" in reason

            session.session_id = "no-such-session"
            reason = await refused(session.get_keys(1))
            assert "session 'no-such-session' is unknown here" in reason


async def test_keys_not_acknowledged_come_again_acknowledged_never(tmp_path: Path) -> None:
    """km-c takes each key bob acknowledged, and pushes the others to his next connection."""
    async with running(tmp_path, "memory") as network:
        await ready(network, 3 * relay_bits(2, 256))
        km_c = km(network, "km-c")
        async with client(network, "alice") as alice:
            async with listening(network, "bob") as bob:
                session = await alice.create_session("bob")
                first = await session.get_keys(2)
                assert same_keys(await pushed(bob, 2), first)
                with trio.fail_after(WAIT):
                    await km_c.wait_pushed("bob", 2)
                assert km_c.store.counts("session:") == {}  # acknowledged: deleted
            # bob is gone: km-c keeps what it cannot push
            second = await session.get_keys(2)
            assert sum(km_c.store.counts("session:").values()) == 2
            async with listening(network, "bob") as bob:
                again = await pushed(bob, 2)
                assert same_keys(again, second)  # the keys it missed, not the first ones
                third = await session.get_keys(1)
                assert same_keys(await pushed(bob, 1), third)
                with trio.fail_after(WAIT):
                    await km_c.wait_pushed("bob", 5)
        assert km_c.store.counts("session:") == {}


async def test_an_application_deletes_only_its_own_keys(tmp_path: Path) -> None:
    async with running(
        tmp_path, "memory", extra='\n[[application]]\nid = "carol"\nkm = "km-c"\n'
    ) as network:
        await ready(network, 2 * relay_bits(2, 256))
        async with client(network, "alice") as alice:
            for_bob = await alice.get_keys("bob", 2)
            for_carol = await alice.get_keys("carol", 2)
        km_c = network.kms["km-c"]
        async with client(network, "carol") as carol, client(network, "bob") as bob:
            # not carol's: nothing is deleted, and she is answered as for keys that do not
            # exist (Table 7-7 has no text: the failure code alone)
            reason = await refused(carol.delete_keys("alice", ids(for_bob)))
            assert reason == "failure: response code 0x02 (failure)"
            assert reason == await refused(carol.delete_keys("alice", [str(uuid.uuid4())]))
            # one of hers and one of bob's: nothing is deleted either
            mixed = [ids(for_carol)[0], ids(for_bob)[0]]
            assert reason == await refused(carol.delete_keys("alice", mixed))
            assert km_c.store.counts("app:") == {"app:alice:bob": 2, "app:alice:carol": 2}
            await bob.delete_keys("alice", ids(for_bob)[:1])
            reason = await refused(bob.get_keys_with_ids("alice", ids(for_bob)))
            assert "1 of the 2 keys are not held" in reason
            assert same_keys(await bob.get_keys_with_ids("alice", ids(for_bob)[1:]), for_bob[1:])
            assert same_keys(await carol.get_keys_with_ids("alice", ids(for_carol)), for_carol)


async def test_an_application_refuses_a_km_it_cannot_tell(tmp_path: Path) -> None:
    """Over ``tcp://`` nothing proves who the KM is: the application refuses the KM's
    authentication (D2.3 mutual authentication), and so gets no sessions there."""
    async with running(tmp_path, "tcp") as network, client(network, "bob") as bob:
        reason = await refused(bob.authenticate())
        assert reason == "failure: response code 0x02 (failure)"  # Table 7-3 has no text
        assert bob.km_id is None


async def test_d23_key_supply_commands(tmp_path: Path) -> None:
    """FG QIT4N D2.3 Tables 7-4, 7-5: alice asks for keys for encryption, bob for the same key
    for decryption, by its ID; on the same keys as Q.4161."""
    async with running(tmp_path, "memory") as network:
        await ready(network, relay_bits(2, 256))
        async with connect(ak_url(network, "alice"), identity="alice") as alice:
            response = await alice.request(
                mgmt.KeySupplyCommand(
                    sender_id="alice",
                    source_id="alice",
                    target_id="bob",
                    application_code=mgmt.ApplicationCode.ENCRYPTION,
                    key_amount=2,
                    key_size=256,
                )
            )
        assert isinstance(response, mgmt.KeySupplyResponse)
        assert response.response_code is mgmt.KeySupplyResponseCode.SUCCESS
        assert response.key_data is not None
        assert (response.key_amount, response.key_size) == (2, 256)
        first = response.key_data[0]
        assert response.key_id is None  # Table 7-5: the command's (it named none)
        decryption = mgmt.KeySupplyCommand(
            sender_id="bob",
            source_id="bob",
            target_id="alice",
            application_code=mgmt.ApplicationCode.DECRYPTION,
            key_id=first.key_id,
        )
        async with connect(ak_url(network, "bob"), identity="bob") as bob:
            response = await bob.request(decryption)
            assert isinstance(response, mgmt.KeySupplyResponse)
            assert response.key_data == [first]
            assert response.key_id == first.key_id
            # asked again within the re-fetch window (a response lost): the same key
            again = await bob.request(decryption)
            assert isinstance(again, mgmt.KeySupplyResponse)
            assert again.key_data == [first]
            # after it, the key is not held for bob: no shortage, so no 0x03 (Table 7-5 has
            # no other failure): an error indication that says so
            await after_refetch_window(km(network, "km-c"))
            with pytest.raises(FailureResponse) as caught:
                await bob.request(decryption)
            assert isinstance(caught.value.response, mgmt.ErrorIndication)
            assert "1 of the 1 keys are not held for 'bob'" in caught.value.reason


@pytest.mark.parametrize("peer", ["carol", "bob"])
async def test_the_session_cap_is_checked_before_the_destination_is_told(
    tmp_path: Path, peer: str
) -> None:
    """At its cap, alice's next session is refused before the destination application hears
    of it: at alice's KM (carol, on km-a) and at the destination KM (bob, on km-c, whose cap on
    sessions from alice is the same)."""
    options = {"max_sessions_per_application": 2}
    async with running(tmp_path, "memory", extra=CAROL_ON_KM_A, km_options=options) as network:
        await ready(network, relay_bits(1, 256))
        async with listening(network, peer) as destination, client(network, "alice") as alice:
            for _ in range(2):
                await alice.create_session(peer)
            assert len(destination.sessions) == 2
            reason = await refused(alice.create_session(peer))
            assert "'alice' has 2 open sessions, the most this KM allows" in reason
            assert len(destination.sessions) == 2  # never told of the third


@pytest.mark.parametrize("reading", ["rows", "clause"])
async def test_the_client_reads_a_session_notification_either_way(reading: str) -> None:
    """Q.4161 Table 6 reads two ways (the receiver's ID in ``application_source_id``, or the
    opener's): the client takes the ID that is not its own as the peer, and refuses a
    notification that names it in neither field."""
    ours, theirs = ("bob", "alice") if reading == "rows" else ("alice", "bob")

    async def km(message: Message, connection: Connection) -> Message | None:
        return None

    async with trio.open_nursery() as nursery:
        url = f"memory://reading-{reading}"
        info = await nursery.start(partial(serve, url, km, identity="km-c"))
        async with KeyManagerClient.connect(info.url, identity="bob") as bob:
            notification = ak.SessionCreationNotification(
                application_source_id=ours, application_destination_id=theirs, session_id="s-1"
            )
            answer = await bob._handle(notification, bob._km)
            assert isinstance(answer, ak.ResponseToSessionCreationNotification)
            assert bob.sessions == {"s-1": "alice"}
            with pytest.raises(QkdnError, match="this is bob, not carol or alice"):
                await bob._handle(
                    attrs.evolve(
                        notification,
                        application_source_id="carol",
                        application_destination_id="alice",
                        session_id="s-2",
                    ),
                    bob._km,
                )
            assert bob.sessions == {"s-1": "alice"}
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_application_written_from_q4161_alone_gets_sessions_and_keys(
    tmp_path: Path, transport: str
) -> None:
    """bob only connects, with its certificate (Q.4161 clause 8: the TLS handshake is the
    mutual authentication) and sends nothing, not even the D2.3 authentication: it is told of
    alice's session (Table 6) and pushed her keys (Table 12), each of which it acknowledges. A
    second connection of bob, opened later and left open, is sent none of it."""
    notified: list[ak.SessionCreationNotification] = []
    supplied: list[ak.ProactiveKeySupply] = []
    all_pushed = trio.Event()

    async def bob_answers(message: Message, _connection: Connection) -> Message:
        if isinstance(message, ak.SessionCreationNotification):
            notified.append(message)
            return ak.ResponseToSessionCreationNotification(
                session_id=message.session_id, response="success"
            )
        assert isinstance(message, ak.ProactiveKeySupply), message.spec_name
        supplied.append(message)
        if len(supplied) == 3:
            all_pushed.set()
        return ak.ResponseToProactiveKeySupply(
            session_id=message.session_id, key_id=message.keys[0].key_id, response="success"
        )

    async with running(tmp_path, transport) as network:
        await ready(network, relay_bits(3, 256))
        async with connect(
            ak_url(network, "bob"), tls=network.tls("bob"), identity="bob", handler=bob_answers
        ):
            with trio.fail_after(WAIT):
                await km(network, "km-c").proactive.wait_connected("bob")
            async with client(network, "bob") as second, client(network, "alice") as alice:
                await refused(second.get_keys_with_ids("alice", [str(uuid.uuid4())]))  # it is up
                session = await alice.create_session("bob", 3)
                keys = await session.get_keys(3)
                with trio.fail_after(WAIT):
                    await all_pushed.wait()
                assert second.sessions == {}
    [notification] = notified
    assert notification.session_id == session.session_id
    assert {notification.application_source_id, notification.application_destination_id} == {
        "alice",
        "bob",
    }
    assert [(k.key_id, k.key) for m in supplied for k in m.keys] == [
        (k.key_id, k.key) for k in keys
    ]


async def test_a_km_that_requires_d23_authentication_serves_only_after_it(
    tmp_path: Path,
) -> None:
    """With ``require_authentication``, a connection is not the application's until it sent
    the D2.3 authentication command: sessions cannot reach it, and its requests get a failure
    that says what to send first."""
    required = {"require_authentication": True}
    async with running(tmp_path, "memory", km_options=required) as network:
        await ready(network, relay_bits(3, 256))
        async with client(network, "bob") as bob, client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob", 1))
            assert "km-a requires D2.3 authentication" in reason
            await alice.authenticate()
            reason = await refused(alice.create_session("bob"))
            assert "application 'bob' is not authenticated to km-c" in reason
            await bob.authenticate()
            session = await alice.create_session("bob", 1)
            keys = await session.get_keys(1)
            assert same_keys(await pushed(bob, 1), keys)


async def test_a_session_ended_at_one_km_ends_at_the_other(tmp_path: Path) -> None:
    """Ending a session (D2.3 Table 7-6) at either KM ends it at the other too, through the
    controller (SDK extension 0x1486 -> 0x4187): after alice ends hers at km-a, bob finds no
    such session at km-c; after bob ends his at km-c, km-a refuses alice's next request in it
    without relaying anything."""
    async with running(tmp_path, "memory") as network:
        await ready(network, 2 * relay_bits(2, 256))
        async with listening(network, "bob") as bob, client(network, "alice") as alice:
            first = await alice.create_session("bob", 10)
            await pushed(bob, len(await first.get_keys(2)))
            await first.end()
            await trio.testing.wait_all_tasks_blocked()  # memory://: the notices are through
            await refused(bob.end_session(first.session_id, "alice"))  # Table 7-7: 0x02

            second = await alice.create_session("bob", 10)
            await bob.end_session(second.session_id, "alice")
            await trio.testing.wait_all_tasks_blocked()
            started = km(network, "km-a").relays["started"]
            spent = dict(km(network, "km-a").spent_bits)
            reason = await refused(second.get_keys(1))
            assert f"session '{second.session_id}' ended: ended by bob" in reason
            assert km(network, "km-a").relays["started"] == started
            assert km(network, "km-a").spent_bits == spent


async def test_a_d23_key_supply_that_finds_too_little_key_is_insufficient(tmp_path: Path) -> None:
    """Table 7-5's one failure code, 0x03 insufficient, answers what keeps the KM from supplying
    keys now: here km-b's link to km-c makes a bit a second."""
    options = {"link_key_wait": 0}
    command = mgmt.KeySupplyCommand(
        sender_id="alice", source_id="alice", target_id="bob", key_amount=4
    )
    async with (
        running(tmp_path, "memory", replace=[SLOW_B_C], km_options=options) as network,
        connect(ak_url(network, "alice"), identity="alice") as alice,
    ):
        with pytest.raises(FailureResponse) as caught:
            await alice.request(command)
    response = caught.value.response
    assert isinstance(response, mgmt.KeySupplyResponse)
    assert response.response_code is mgmt.KeySupplyResponseCode.INSUFFICIENT
