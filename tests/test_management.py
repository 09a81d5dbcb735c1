"""D2.3 clause 8.1 on line3: status information supply on request and at the controller's
period (Tables 8-1, 8-2), route information supply (Tables 8-3, 8-4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from qkdn_sdk.roles.controller import Controller, KMRequestFailed
from qkdn_sdk.roles.km import STATUS_PARAMETERS, KeyManagerError
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
