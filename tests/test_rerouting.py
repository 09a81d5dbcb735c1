"""Relays routed around a link without key and around a KM that went down, on ring4
(``examples/topologies/ring4.toml``), in both routings (Q.4164 clauses 7.1 and 7.2).

::

             km-b
           //    \\\\
    alice -- km-a    km-c -- bob
           \\\\    //
             km-d

The links by km-d make key 16 times slower, so while km-b serves, relays go through it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.test_network import (
    ROUTINGS,
    WAIT,
    client,
    ids,
    km,
    ready,
    refused,
    relay_bits,
    running,
    same_keys,
)

RING4 = (Path(__file__).parent.parent / "examples" / "topologies" / "ring4.toml").read_text(
    encoding="utf-8"
)
SLOW_BY_D = (
    (
        'kms = ["km-d", "km-a"]\nsecret_key_rate = 256_000',
        'kms = ["km-d", "km-a"]\nsecret_key_rate = 16_000',
    ),
    (
        'kms = ["km-c", "km-d"]\nsecret_key_rate = 256_000',
        'kms = ["km-c", "km-d"]\nsecret_key_rate = 16_000',
    ),
)
"""The way by km-d makes key 16 times slower: the controller prefers km-b while it serves."""
NO_KEY_A_B = (
    'kms = ["km-a", "km-b"]\nsecret_key_rate = 256_000',
    'kms = ["km-a", "km-b"]\nsecret_key_rate = 1',
)
BY_B = (("km-a", "km-b"), ("km-b", "km-c"))
BY_D = (("km-a", "km-d"), ("km-d", "km-c"))


@pytest.mark.parametrize("routing", ROUTINGS)
async def test_a_link_without_key_is_routed_around(tmp_path: Path, routing: str) -> None:
    async with running(
        tmp_path, "memory", base=RING4, routing=routing, replace=[NO_KEY_A_B]
    ) as network:
        await ready(network, relay_bits(2, 256), BY_D)
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob", 2)
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
        assert km(network, "km-d").relays["forwarded"] == 1
        assert km(network, "km-b").relays["forwarded"] == 0


@pytest.mark.parametrize("transport", ["memory", "tcp+tls"])
@pytest.mark.parametrize("routing", ROUTINGS)
async def test_a_km_found_down_by_its_hellos_is_routed_around(
    tmp_path: Path, routing: str, transport: str
) -> None:
    async with running(
        tmp_path, transport, base=RING4, routing=routing, replace=SLOW_BY_D
    ) as network:
        bits = relay_bits(1, 256)
        await ready(network, 2 * bits, BY_B + BY_D)
        async with client(network, "alice") as alice:
            first = await alice.get_keys("bob")  # the way with more key: by km-b
            assert km(network, "km-b").relays["forwarded"] == 1
            await network.stop_km("km-b")
            controller = network.controller
            assert controller is not None
            with trio.fail_after(WAIT):  # km-a's HELLOs go unanswered; it tells the controller
                while controller.link_state("km-a", "km-b") != "down":
                    await controller.wait_for_report("km-a", controller.report_count("km-a") + 1)
            second = await alice.get_keys("bob")
        km_a = km(network, "km-a")
        assert km(network, "km-d").relays["forwarded"] == 1
        assert km_a.spent_bits["km-b"] == bits  # no attempt went to km-b
        async with client(network, "bob") as bob:
            got = await bob.get_keys_with_ids("alice", ids(first + second))
        assert same_keys(got, first + second)


@pytest.mark.parametrize("transport", ["memory", "tcp+tls"])
@pytest.mark.parametrize("routing", ROUTINGS)
async def test_a_relay_that_finds_a_km_down_is_tried_again_around_it(
    tmp_path: Path, routing: str, transport: str
) -> None:
    """Before km-a noticed: HELLOs an hour apart, and the transit KM is ``hub-b``, which sorts
    before km-a and so asks for their key ID synchronisations. The relay through hub-b fails,
    and is tried again at once on a route avoiding it."""
    async with running(
        tmp_path,
        transport,
        base=RING4.replace('"km-b"', '"hub-b"'),
        routing=routing,
        replace=SLOW_BY_D,
        km_options={"hello_interval": 3600},
    ) as network:
        bits = relay_bits(1, 256)
        await ready(network, 2 * bits, (("km-a", "hub-b"), ("hub-b", "km-c"), *BY_D))
        await network.stop_km("hub-b")
        async with client(network, "alice") as alice:
            keys = await alice.get_keys("bob")
        km_a, km_d = km(network, "km-a"), km(network, "km-d")
        assert km_d.relays["forwarded"] == 1
        assert km_a.relays["started"] == 1  # the attempt through hub-b was never confirmed
        assert km_a.spent_bits["hub-b"] == bits  # its hop's link key is spent
        async with client(network, "bob") as bob:
            assert same_keys(await bob.get_keys_with_ids("alice", ids(keys)), keys)
        assert km(network, "km-c").pending_key_ids == {}


@pytest.mark.parametrize("routing", ROUTINGS)
async def test_no_way_around_says_so(tmp_path: Path, routing: str) -> None:
    """Both ways down: the failure names both KMs, whoever noticed first."""
    async with running(
        tmp_path, "memory", base=RING4, routing=routing, replace=SLOW_BY_D
    ) as network:
        await ready(network, relay_bits(1, 256), BY_B + BY_D)
        await network.stop_km("km-b")
        await network.stop_km("km-d")
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob"))
        assert "km-b" in reason
        assert "km-d" in reason
