"""The cap of keys held per application pair, what status reports of it, and where a KM's
quotas and lifetimes are set: the topology's ``[[km]] options``, a KM's role file.

::

    alice, carol, erin -- km-a ==== km-b ==== km-c -- bob
"""

from __future__ import annotations

import random
import re
import tomllib
from pathlib import Path

import pytest

from qkdn_sdk.network import load_topology, parse_topology
from qkdn_sdk.network.deployment import load_role_config, write_role_configs
from qkdn_sdk.network.topology import TopologyError
from qkdn_sdk.roles.km import KMConfig
from tests.test_network import (
    after_refetch_window,
    client,
    ids,
    ready,
    refused,
    relay_bits,
    running,
)
from tests.test_quotas import status

ROOT = Path(__file__).parent.parent
LINE3 = ROOT / "examples" / "topologies" / "line3.toml"
ON_KM_A = "".join(f'\n[[application]]\nid = "{app}"\nkm = "km-a"\n' for app in ("carol", "erin"))


async def test_a_pair_at_its_cap_is_refused_until_its_keys_are_fetched(tmp_path: Path) -> None:
    options = {"max_keys_held_per_pair": 6}
    async with running(tmp_path, "memory", extra=ON_KM_A, km_options=options) as network:
        km_a = network.kms["km-a"]
        async with client(network, "alice") as alice:
            first = await alice.get_keys("erin", 4, 256)
            for_erin = await status(network, "alice", "erin")
            assert (for_erin.stored_key_count, for_erin.max_key_count) == (2, 6)
            reason = await refused(alice.get_keys("erin", 4, 256))
            assert reason == (
                "failure: 'alice' is over its quota of 6 keys held for 'erin' "
                "(max_keys_held_per_pair): 4 keys wait at km-a for 'erin' to fetch them, 4 more "
                "asked"
            )
            assert km_a.store.counts("app:") == {"app:alice:erin": 4}  # none made
            # the cap is the pair's: alice's keys for carol, carol's for erin are not counted
            await alice.get_keys("carol", 6, 256)
            async with client(network, "carol") as carol:
                await carol.get_keys("erin", 6, 256)
            reason = await refused(alice.get_keys("erin", 3, 256))
            assert "(max_keys_held_per_pair): 4 keys wait at km-a for 'erin'" in reason
            second = await alice.get_keys("erin", 2, 256)
            assert (await status(network, "alice", "erin")).stored_key_count == 0
            async with client(network, "erin") as erin:
                await erin.get_keys_with_ids("alice", ids(first + second))
            # fetched keys kept for a re-fetch are held no more
            assert (await status(network, "alice", "erin")).stored_key_count == 6
            await alice.get_keys("erin", 6, 256)
        assert km_a.store.counts("app:alice:erin") == {"app:alice:erin": 6}


async def test_status_reports_the_real_cap_of_a_remote_pair(tmp_path: Path) -> None:
    """For a slave of another KM the keys are held there: the count is what the link pays for,
    never above the cap both report."""
    async with running(tmp_path, "memory", km_options={"max_keys_held_per_pair": 3}) as network:
        await ready(network, relay_bits(8, 256))
        for_bob = await status(network, "alice", "bob")
        assert (for_bob.stored_key_count, for_bob.max_key_count) == (3, 3)


async def test_the_destination_km_refuses_a_relay_past_the_pairs_cap(tmp_path: Path) -> None:
    """Keys relayed for bob wait at km-c: km-c holds the pair to its cap, whatever km-a let
    alice ask."""
    async with running(tmp_path, "memory", km_options={"max_keys_held_per_pair": 5}) as network:
        await ready(network, 2 * relay_bits(4, 256))
        km_c = network.kms["km-c"]
        async with client(network, "alice") as alice:
            first = await alice.get_keys("bob", 4, 256)
            reason = await refused(alice.get_keys("bob", 2, 256))
            assert (
                "'bob' holds its quota of keys from 'alice' at km-c (max_keys_held_per_pair 5): "
                "it can take 1 more, 2 were relayed"
            ) in reason
            assert km_c.store.counts("app:") == {"app:alice:bob": 4}
            async with client(network, "bob") as bob:
                await bob.get_keys_with_ids("alice", ids(first))
            await ready(network, relay_bits(4, 256))
            await alice.get_keys("bob", 4, 256)
        assert km_c.store.counts("app:") == {"app:alice:bob": 4}


async def test_delivered_keys_count_in_no_quota(tmp_path: Path) -> None:
    options = {"max_keys_held": 4, "max_keys_held_per_pair": 4}
    async with running(tmp_path, "memory", extra=ON_KM_A, km_options=options) as network:
        km_a = network.kms["km-a"]
        async with client(network, "alice") as alice, client(network, "erin") as erin:
            keys = await alice.get_keys("erin", 4, 256)
            await erin.get_keys_with_ids("alice", ids(keys))
            await alice.get_keys("erin", 4, 256)  # the first 4 wait for a re-fetch, not counted
            assert km_a.store.counts("delivered:") == {"delivered:alice:erin": 4}
            await after_refetch_window(km_a)
            assert km_a.store.counts("delivered:") == {}


# --- where they are set --------------------------------------------------------------------------


def test_the_topology_sets_a_kms_options() -> None:
    text = LINE3.read_text().replace(
        'id = "km-a"',
        'id = "km-a"\noptions = {max_keys_held_per_pair = 10, key_lifetime = 600, '
        "max_keys_per_second = 50}",
    )
    topology = parse_topology(text)
    config = topology.km_config("km-a", {})
    assert (config.max_keys_held_per_pair, config.key_lifetime) == (10, 600.0)
    assert config.max_keys_per_second == 50.0
    assert topology.km("km-b").options == {}  # the defaults
    # a network's own options come over the file's
    assert topology.km_config("km-a", {}, key_lifetime=5.0).key_lifetime == 5.0


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ("{max_keys_held_per_pair = -1}", "km-a: max_keys_held_per_pair must be at least 0"),
        ("{refetch_window = 0}", "km-a: refetch_window must be > 0, not 0.0"),
        ("{max_key_held = 5}", "km km-a options: unknown keys ['max_key_held']"),
        ("{key_lifetime = 'long'}", "km km-a options: key_lifetime must be a number"),
        ("{listen = 1}", "km km-a options: unknown keys ['listen']"),
    ],
)
def test_options_a_km_would_refuse_are_refused_with_the_topology(
    options: str, problem: str
) -> None:
    text = LINE3.read_text().replace('id = "km-a"', f'id = "km-a"\noptions = {options}')
    with pytest.raises(TopologyError, match=re.escape(problem)):
        parse_topology(text)


def test_the_topologys_options_reach_the_role_files(tmp_path: Path) -> None:
    text = LINE3.read_text().replace(
        'id = "km-b"', 'id = "km-b"\noptions = {max_keys_held_per_pair = 7, refetch_window = 9.5}'
    )
    port = random.randrange(20_000, 60_000, 100)
    files = write_role_configs(parse_topology(text), tmp_path, first_port=port)
    written = tomllib.loads(files["km-b"].read_text())
    assert written["options"] == {"max_keys_held_per_pair": 7, "refetch_window": 9.5}
    assert "options" not in tomllib.loads(files["km-a"].read_text())
    config = load_role_config(files["km-b"], "km").config
    assert isinstance(config, KMConfig)
    assert (config.max_keys_held_per_pair, config.refetch_window) == (7, 9.5)
    assert load_topology(LINE3).km("km-b").options == {}
