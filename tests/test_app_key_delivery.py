"""Keys delivered exactly once to the entitled application (qkdn_sdk.roles.km.applications), on
running KMs over real transports.

::

    alice -- km-a ==== km-b ==== km-c -- bob, carol

A fetch by ID moves the keys to the pair's ``delivered:`` pool before the response leaves; a
response lost on the way (the application gave up and closed its connection before reading it,
the KM stopped) is made good by asking again, within ``refetch_window``, for the same keys;
nobody else ever gets them, and after the window nobody does. Keys never fetched or pushed
expire after ``key_lifetime``. Nothing waits for a clock: the tests
call :meth:`KeyManager.expire_keys` with the time they mean.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import trio
import trio.testing

from qkdn_sdk.client import SuppliedKey
from qkdn_sdk.messages import KeyId, Message, Role, ak, received_by
from qkdn_sdk.roles.keystore import MemoryKeyStore, StoredKey
from qkdn_sdk.roles.km import KeyManager, KMConfig
from qkdn_sdk.roles.km.expiry import LIFETIMES
from qkdn_sdk.roles.km.keys import app_pool, delivered_pool
from qkdn_sdk.roles.sessions import session_pool
from qkdn_sdk.transport import Connection, connect
from tests.test_network import (
    CAROL_ON_KM_C,
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

WIRES = ["tcp+tls", "grpcs", "https"]
"""Transports whose connections can be lost with a response on them."""


def fetch(source: str, key_ids: list[str]) -> ak.KeyRequestWithId:
    return ak.KeyRequestWithId(
        application_source_id=source, key_ids=[KeyId(key_id=key_id) for key_id in key_ids]
    )


def hold_the_response(
    monkeypatch: pytest.MonkeyPatch, manager: KeyManager
) -> tuple[trio.Event, trio.Event]:
    """``(handled, release)``: ``manager`` sets ``handled`` once it has handled the next fetch
    by ID, and writes its response only once ``release`` is set (later fetches are not held)."""
    handled, release = trio.Event(), trio.Event()
    supply = manager.key_supply
    original = supply.key_request_with_id

    async def held(request: ak.KeyRequestWithId, on: Connection) -> ak.ResponseToKeyRequest:
        monkeypatch.setattr(supply, "key_request_with_id", original)
        response = await original(request, on)
        handled.set()
        await release.wait()
        return response

    monkeypatch.setattr(supply, "key_request_with_id", held)
    return handled, release


@pytest.mark.parametrize("transport", WIRES)
async def test_a_fetch_whose_response_is_lost_is_made_good_for_its_application_only(
    tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, transport, extra=CAROL_ON_KM_C) as network:
        await ready(network, relay_bits(3, 256))
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 3)
        km_c = km(network, "km-c")
        url, accepts = ak_url(network, "bob"), received_by(Role.APPLICATION)
        handled, release = hold_the_response(monkeypatch, km_c)
        async with connect(url, tls=network.tls("bob"), accepts=accepts) as lost:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lost.request, fetch("alice", ids(keys)))
                with trio.fail_after(WAIT):
                    await handled.wait()
                nursery.cancel_scope.cancel()  # bob gives up: the response is never read
            release.set()
        # and bob's connection closed with it
        assert km_c.store.counts("app:") == {}  # out of the pool of keys to fetch: delivered
        assert km_c.store.counts("delivered:") == {"delivered:alice:bob": 3}

        async with client(network, "carol") as carol:  # never anyone else, nor a hint of them
            reason = await refused(carol.get_keys_with_ids("alice", ids(keys)))
            assert "3 of the 3 keys are not held for 'carol' from 'alice'" in reason
            assert reason == await refused(
                carol.get_keys_with_ids("alice", [str(uuid.uuid4()) for _ in keys])
            )
        async with client(network, "bob") as bob:  # bob asks again, on a new connection
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)[:1]), keys[:1])
            await after_refetch_window(km_c)
            reason = await refused(bob.get_keys_with_ids("alice", ids(keys)))
        assert "3 of the 3 keys are not held for 'bob' from 'alice'" in reason
        assert km_c.store.counts("delivered:") == {}
        assert km_c.expired["delivered"] == 3


async def test_a_fetch_may_name_delivered_and_held_keys_and_refused_ones_move_nothing(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "memory") as network:
        await ready(network, relay_bits(4, 256))
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 4)
        km_c = km(network, "km-c")
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)[:2]), keys[:2])
            # a delivered key, a held one and an unknown one: refused whole, nothing moves
            unknown = str(uuid.uuid4())
            reason = await refused(bob.get_keys_with_ids("alice", [*ids(keys)[1:3], unknown]))
            assert "1 of the 3 keys are not held for 'bob' from 'alice'" in reason
            reason = await refused(bob.get_keys_with_ids("alice", [ids(keys)[2], ids(keys)[2]]))
            assert "1 of the 2 keys are not held" in reason  # an ID asked twice
            assert km_c.store.counts("app:") == {"app:alice:bob": 2}
            # delivered and held keys in one fetch, in the order asked
            mixed = [keys[3], keys[0], keys[2]]
            assert same_keys(await bob.get_keys_with_ids("alice", ids(mixed)), mixed)
            assert km_c.store.counts("app:") == {}
            assert km_c.store.counts("delivered:") == {"delivered:alice:bob": 4}
            # two fetches of the same keys at once: both are bob's, both get them
            got: list[list[SuppliedKey]] = []

            async def fetch_all() -> None:
                got.append(await bob.get_keys_with_ids("alice", ids(keys)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch_all)
                nursery.start_soon(fetch_all)
            assert len(got) == 2
            assert all(same_keys(each, keys) for each in got)
            # bob may end the window himself: the keys are then erased (D2.3 key deletion)
            await bob.delete_keys("alice", ids(keys)[:1])
            assert km_c.store.counts("delivered:") == {"delivered:alice:bob": 3}
            await refused(bob.get_keys_with_ids("alice", ids(keys)[:1]))


@pytest.mark.parametrize("transport", ["tcp+tls"])
async def test_a_km_stopped_after_the_fetch_serves_the_retry(
    tmp_path: Path, transport: str, network_store: str
) -> None:
    """The keys left the ``app:`` pool with the fetch, in the store: a KM restarted (its store
    kept) serves the same keys to the same application's retry within the window."""
    async with running(tmp_path, transport, network_store) as network:
        await ready(network, relay_bits(2, 256))
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 2)
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
        await network.stop_km("km-c")
        await network.start_km("km-c")
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)


# --- lifetimes -----------------------------------------------------------------------------------


async def test_keys_never_fetched_expire_after_their_lifetime(
    tmp_path: Path, network_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, "memory", network_store) as network:
        await ready(network, 2 * relay_bits(2, 256))
        async with client(network, "alice") as alice:
            fetched = await alice.get_keys("bob", 2)
            never = await alice.get_keys("bob", 2)
        km_c = km(network, "km-c")
        config = km_c.config
        async with client(network, "bob") as bob:
            await bob.get_keys_with_ids("alice", ids(fetched))
        now = time.time()
        assert await km_c.expire_keys(now + config.refetch_window - 1) == {}
        assert await km_c.expire_keys(now + config.refetch_window + 1) == {"delivered": 2}
        assert km_c.store.counts("app:") == {"app:alice:bob": 2}  # their lifetime is longer
        assert await km_c.expire_keys(now + config.key_lifetime - 1) == {}
        with caplog.at_level("INFO", logger="qkdn_sdk.roles.km"):
            assert await km_c.expire_keys(now + config.key_lifetime + 1) == {"unfetched": 2}
        assert km_c.store.counts("app:") == {}
        assert km_c.expired == {"unfetched": 2, "unpushed": 0, "delivered": 2}
        lines = [r.getMessage() for r in caplog.records if "expired" in r.getMessage()]
        assert lines == ["km-c: erased expired keys: 2 unfetched"]
        assert not any(key.key.hex() in caplog.text for key in never)
        async with client(network, "bob") as bob:
            reason = await refused(bob.get_keys_with_ids("alice", ids(never)))
        assert "2 of the 2 keys are not held for 'bob' from 'alice'" in reason


async def test_session_keys_never_acknowledged_expire(tmp_path: Path) -> None:
    """bob refuses the keys pushed to him: they stay in his session pool, then expire."""
    refused_push = trio.Event()

    async def bob_refuses_keys(message: Message, _connection: Connection) -> Message:
        if isinstance(message, ak.SessionCreationNotification):
            return ak.ResponseToSessionCreationNotification(
                session_id=message.session_id, response="success"
            )
        assert isinstance(message, ak.ProactiveKeySupply), message.spec_name
        refused_push.set()
        return ak.ResponseToProactiveKeySupply(
            session_id=message.session_id, key_id=message.keys[0].key_id, response="failure: later"
        )

    async with running(tmp_path, "memory") as network:
        await ready(network, relay_bits(2, 256))
        km_c = km(network, "km-c")
        async with (
            connect(ak_url(network, "bob"), identity="bob", handler=bob_refuses_keys),
            client(network, "alice") as alice,
        ):
            with trio.fail_after(WAIT):
                await km_c.proactive.wait_connected("bob")
            session = await alice.create_session("bob", 2)
            await session.get_keys(2)
            with trio.fail_after(WAIT):
                await refused_push.wait()
            assert sum(km_c.store.counts("session:").values()) == 2
            now = time.time()
            assert await km_c.expire_keys(now + km_c.config.key_lifetime - 1) == {}
            assert await km_c.expire_keys(now + km_c.config.key_lifetime + 1) == {"unpushed": 2}
        assert km_c.store.counts("session:") == {}


async def test_the_km_sweeps_every_expiry_interval(autojump_clock: trio.testing.MockClock) -> None:
    """``KeyManager.run`` starts the sweep: keys whose lifetime is over by then are erased
    ``expiry_interval`` after the start, not before (trio's clock, jumped; no test waits)."""
    config = KMConfig(
        km_id="km-a",
        listen={"ak": "memory://expiry-km-a/ak"},
        controller_id="controller",
        applications=frozenset({"alice", "carol"}),
        key_lifetime=1e-9,  # over as soon as the key is stored
        expiry_interval=30.0,
    )
    store = MemoryKeyStore()
    await store.put([StoredKey(str(uuid.uuid4()), app_pool("alice", "carol"), b"\x01" * 32)])
    manager = KeyManager(config, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(29)
        assert manager.expired["unfetched"] == 0
        await trio.sleep(2)
        assert manager.expired["unfetched"] == 1
        nursery.cancel_scope.cancel()
    assert store.counts() == {}


def test_the_lifetimes_cover_the_pools_they_name() -> None:
    """Each rule of LIFETIMES is a prefix of the pools :mod:`qkdn_sdk.roles.km.keys` names, and
    a field of KMConfig."""
    pools = {
        "unfetched": app_pool("alice", "bob"),
        "unpushed": session_pool("bob", "s"),
        "delivered": delivered_pool("alice", "bob"),
    }
    config = KMConfig(km_id="km-a", listen={}, controller_id="controller")
    assert LIFETIMES.keys() == pools.keys()
    for kind, (prefix, lifetime) in LIFETIMES.items():
        assert pools[kind].startswith(prefix)
        assert getattr(config, lifetime) > 0
