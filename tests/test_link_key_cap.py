"""The cap on the key one end of a link holds (KMConfig.max_link_key_bits,
qkdn_sdk.roles.km.link_table): at the cap a KM stops acquiring, a pushing module is refused and
keeps its key, a module asked for keys is asked for none, and spending link key resumes it.

Real stores (SQLite in the network test), real modules, small caps; the tests wait on events
(status reports reaching the controller, which the KMs send every 50 ms), never sleep.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from qkdn_sdk.errors import FailureResponse
from qkdn_sdk.messages import kq1
from qkdn_sdk.network import Network
from qkdn_sdk.roles.keystore import MemoryKeyStore
from qkdn_sdk.roles.km import KeyManager, KMConfig, KMLink
from qkdn_sdk.roles.km.link_table import RESUME_AT
from qkdn_sdk.transport import connect
from tests.test_key_sync import KEY_BITS, qkd_keys
from tests.test_network import BOTH_WAYS, WAIT, client, km, running, same_keys

CAP = 16 * KEY_BITS
"""16 QKD-keys of 4096 bits at each link end."""


async def test_a_full_link_end_refuses_pushed_qkd_keys() -> None:
    """A KM whose link holds its cap answers a key supply with a failure that says so (the
    module keeps the key and offers it again later), stores nothing of it, and counts each
    key refused once however often it is offered."""
    config = KMConfig(
        km_id="km-a",
        listen={"kq1": "memory://cap/km-a/kq1"},
        controller_id="controller",
        links=(KMLink(neighbour="km-b", module_id="km-a.km-b"),),
        max_link_key_bits=3 * KEY_BITS,
        report_interval=60,
        hello_interval=60,
    )
    manager = KeyManager(config, MemoryKeyStore())
    keys = qkd_keys(5)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        async with connect(config.listen["kq1"], identity="km-a.km-b") as module:

            async def supply(offered: Sequence[tuple[str, bytes]]) -> list[str]:
                reasons = []
                for key_id, key in offered:
                    try:
                        await module.request(kq1.KeySupply(key=key, key_id=key_id))
                    except FailureResponse as exc:
                        reasons.append(exc.reason)
                return reasons

            assert await supply(keys[:3]) == []
            refused = await supply([keys[3], keys[3], keys[4]])
        assert refused == 3 * [
            "failure: the key store of km-a for the link to km-b is full (max_link_key_bits "
            "12288): supply the key again once link key is spent"
        ]
        assert manager.store.count("qkd:km-b") == 3
        assert await manager.store.seen([key_id for key_id, _ in keys[3:]]) == set()
        assert manager.link_table.refused_keys == {"km-b": 2}
        assert manager.status.link_key_held() == {
            "km-b": {"held_bits": CAP * 3 // 16, "max_bits": 3 * KEY_BITS, "room_bits": 0}
            | {"refused_keys": 2}
        }
        nursery.cancel_scope.cancel()


def held(network: Network) -> dict[tuple[str, str], int]:
    return {
        (here, there): km(network, here).link_table.held_bits(there) for here, there in BOTH_WAYS
    }


async def reports(network: Network, count: int = 1) -> None:
    """Return once every KM sent ``count`` more status reports to the controller."""
    controller = network.controller
    assert controller is not None
    with trio.fail_after(WAIT):
        for km_id in network.kms:
            await controller.wait_for_report(km_id, controller.report_count(km_id) + count)


async def until_full(network: Network) -> None:
    """Return once every link end of line3 holds its cap (checked at each status report)."""
    with trio.fail_after(WAIT):
        while any(km(network, here).link_table.room_bits(there) for here, there in BOTH_WAYS):
            await reports(network)


@pytest.mark.parametrize("store", ["sqlite"])
async def test_acquisition_stops_at_the_cap_and_resumes_when_link_key_is_spent(
    tmp_path: Path, store: str
) -> None:
    """line3 with a cap of 16 QKD-keys per link end: km-a/km-b's modules push keys, km-b and
    km-c ask theirs. Every link end fills up to its cap (one QKD-key over at most) and stays
    there while the modules keep offering (the pushed keys refused, the asked ones left in the
    module); a relay spending more than a quarter of the cap on each hop has every end of its
    route acquire again, and fill up to the cap again."""
    async with running(tmp_path, "memory", store, km_options={"max_link_key_bits": CAP}) as network:
        await until_full(network)
        full = held(network)
        assert all(CAP <= bits <= CAP + KEY_BITS for bits in full.values()), full
        await reports(network, 4)  # the modules go on making and offering keys meanwhile
        assert held(network) == full
        assert network.modules["km-b.km-c"].stats.buffered > 0  # asked for none
        with trio.fail_after(WAIT):
            while not km(network, "km-b").link_table.refused_keys["km-a"]:
                await reports(network)  # km-a.km-b offered its next key, and was refused
        generated = {
            (here, there): km(network, here).generated_bits[there] for here, there in BOTH_WAYS
        }

        async with client(network, "alice") as alice, client(network, "bob") as bob:
            keys = await alice.get_keys("bob", number=4, size=KEY_BITS)
            assert same_keys(
                await bob.get_keys_with_ids("alice", [key.key_id for key in keys]), keys
            )
        # each hop spent 67 link units at both its ends: more than takes them under RESUME_AT
        assert km(network, "km-a").spent_bits["km-b"] == 67 * 256 > CAP * (1 - RESUME_AT)

        with trio.fail_after(WAIT):  # acquisition resumed at every end: new link key cut
            while any(
                km(network, here).generated_bits[there] <= generated[here, there]
                for here, there in BOTH_WAYS
            ):
                await reports(network)
        await until_full(network)
        refilled = held(network)
        assert all(CAP <= bits <= CAP + KEY_BITS for bits in refilled.values()), refilled
        # the keys km-c's module held for it while it was full, counted when it asked again
        assert km(network, "km-c").link_table.refused_keys["km-b"] > 0
