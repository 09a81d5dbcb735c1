"""Relays routed around a link without key and around a KM that went down, on ring4
(``examples/topologies/ring4.toml``), in both routings (Q.4164 clauses 7.1 and 7.2).

::

             km-b
           //    \\\\
    alice -- km-a    km-c -- bob
           \\\\    //
             km-d

The km-a ==== km-d link is the slower one, so while km-b serves, relays go through it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_network import (
    ROUTINGS,
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
SLOW_D_A = (
    'kms = ["km-d", "km-a"]\nsecret_key_rate = 256_000',
    'kms = ["km-d", "km-a"]\nsecret_key_rate = 128_000',
)
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
async def test_a_km_that_went_down_is_routed_around(
    tmp_path: Path, routing: str, transport: str
) -> None:
    async with running(
        tmp_path, transport, base=RING4, routing=routing, replace=[SLOW_D_A]
    ) as network:
        bits = relay_bits(1, 256)
        await ready(network, 2 * bits, BY_B + BY_D)
        async with client(network, "alice") as alice:
            first = await alice.get_keys("bob")  # the way with more key: by km-b
            assert km(network, "km-b").relays["forwarded"] == 1

            await network.stop_km("km-b")
            second = await alice.get_keys("bob")  # km-b unreachable: by km-d
        km_a, km_d = km(network, "km-a"), km(network, "km-d")
        assert km_d.relays["forwarded"] == 1
        assert km_a.relays["started"] == 2  # the attempt through km-b was never confirmed
        assert km_a.spent_bits["km-b"] == 2 * bits  # its hop's link key is spent
        async with client(network, "bob") as bob:
            assert same_keys(
                await bob.get_keys_with_ids("alice", ids(first + second)), first + second
            )
        assert km(network, "km-c").store.counts("pending:") == {}


@pytest.mark.parametrize("routing", ROUTINGS)
async def test_no_way_around_says_so(tmp_path: Path, routing: str) -> None:
    async with running(
        tmp_path, "memory", base=RING4, routing=routing, replace=[SLOW_D_A]
    ) as network:
        await ready(network, relay_bits(1, 256), BY_B + BY_D)
        await network.stop_km("km-b")
        await network.stop_km("km-d")
        async with client(network, "alice") as alice:
            reason = await refused(alice.get_keys("bob"))
        assert "neighbour KM km-b is unreachable" in reason
        assert "then, around it" in reason
        assert "km-d" in reason
