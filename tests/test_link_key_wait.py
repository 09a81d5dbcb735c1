"""A key request with too little link key on its route waits for it (Q.4161 clause 7.1.1: the
KM "initiates key generation or key relay to share the necessary number, and supplies them ...
when their generation or relay is completed"), for at most ``link_key_wait`` seconds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from qkdn_sdk.client import KeyManagerClient, KeysRefused
from qkdn_sdk.network import Network
from tests.test_network import ROUTINGS, client, km, relay_bits, running

SLOW = ("secret_key_rate = 256_000", "secret_key_rate = 64_000")
"""Both links of line3 at 64 kbit/s: the largest key request (128 keys of 1,024 bits) spends
about two seconds of each."""
NUMBER, SIZE = 128, 1024


async def short_of_key(network: Network, alice: KeyManagerClient) -> None:
    """Spend key until km-a's link to km-b holds less than half of what a relay of NUMBER keys
    of SIZE bits needs: a second's worth is missing."""
    while km(network, "km-a").link_key_bits("km-b") >= relay_bits(NUMBER, SIZE) // 2:
        await alice.get_keys("bob", NUMBER, SIZE)


@pytest.mark.parametrize("routing", ROUTINGS)
async def test_a_key_request_waits_for_link_key(
    tmp_path: Path, routing: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        running(tmp_path, "memory", routing=routing, replace=[SLOW]) as network,
        client(network, "alice") as alice,
    ):
        await short_of_key(network, alice)
        caplog.clear()
        with caplog.at_level(logging.INFO, "qkdn_sdk.roles.km"):
            keys = await alice.get_keys("bob", NUMBER, SIZE)
    assert [key.size for key in keys] == [SIZE] * NUMBER
    waited = [r.getMessage() for r in caplog.records if "as key comes" in r.getMessage()]
    assert waited, "the request did not have to wait"


async def test_without_a_wait_it_fails_at_once_saying_why(tmp_path: Path) -> None:
    async with (
        running(tmp_path, "memory", replace=[SLOW], km_options={"link_key_wait": 0}) as network,
        client(network, "alice") as alice,
    ):
        reason = ""
        while not reason:  # spend until a request finds too little key
            try:
                await alice.get_keys("bob", NUMBER, SIZE)
            except KeysRefused as exc:
                reason = exc.reason
    assert "not enough key on link" in reason or "bits of key per link" in reason
