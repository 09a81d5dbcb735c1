"""Both ends of a link spend, whatever the length of its QKD-keys (qkdn_sdk.roles.relay
``spent_by_first``): a link of 256-bit QKD-keys, one link unit each, serves relays both ways.

::

    alice -- km-a ==== km-b ==== km-c -- bob

line3 with every QKD-key 256 bits (250 a second): on the proactive link (km-a/km-b) and the
on-request one (km-b/km-c). Each QKD-key gives its one unit to one end, chosen by its ID, so
both ends get about half; with units split by index alone (even ones to the first KM),
km-b -> km-a and km-c -> km-b never got any and bob could not get keys to alice.
"""

from __future__ import annotations

from pathlib import Path

from qkdn_sdk.network import Network
from qkdn_sdk.roles import relay as otp
from tests.test_network import BOTH_WAYS, client, km, ready, relay_bits, running, same_keys

ONE_UNIT_KEYS = (
    (
        'kms = ["km-a", "km-b"]\nsecret_key_rate = 256_000',
        'kms = ["km-a", "km-b"]\nsecret_key_rate = 64_000\nkey_size = 256',
    ),
    (
        'kms = ["km-b", "km-c"]\nsecret_key_rate = 256_000',
        'kms = ["km-b", "km-c"]\nsecret_key_rate = 64_000\nkey_size = 256',
    ),
)


async def keys_both_ways(network: Network) -> None:
    """alice gets 2 keys of 256 bits for bob and bob 2 for alice; each peer gets the same."""
    async with client(network, "alice") as alice, client(network, "bob") as bob:
        for source, destination, peer, name in (
            (alice, bob, "bob", "alice"),
            (bob, alice, "alice", "bob"),
        ):
            keys = await source.get_keys(peer, number=2)
            assert same_keys(
                await destination.get_keys_with_ids(name, [key.key_id for key in keys]), keys
            )


async def test_a_link_of_256_bit_qkd_keys_serves_relays_both_ways(tmp_path: Path) -> None:
    bits = relay_bits(2, 256)
    async with running(tmp_path, "memory", replace=ONE_UNIT_KEYS) as network:
        assert {module.config.key_size for module in network.modules.values()} == {256}
        await ready(network, 2 * bits, BOTH_WAYS)
        await keys_both_ways(network)
        km_a, km_b, km_c = (km(network, km_id) for km_id in ("km-a", "km-b", "km-c"))
        assert km_a.spent_bits == {"km-b": bits}
        assert km_b.spent_bits == {"km-a": bits, "km-c": bits}
        assert km_c.spent_bits == {"km-b": bits}
        for here, there in BOTH_WAYS:  # each end got a share of the one-unit QKD-keys
            assert km(network, here).generated_bits[there] >= 2 * bits
            assert km(network, here).generated_bits[there] % otp.UNIT_BITS == 0
