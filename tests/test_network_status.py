"""``qkdn network status`` and ``qkdn network show STATE_DIR``: a running line3 read from its
roles' metrics by the installed command, as a third party would (qkdn_sdk.network.status)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from rich.console import Console

from qkdn_sdk.network import ENDPOINTS_FILE
from qkdn_sdk.network import status as status_module
from qkdn_sdk.network.status import NetworkStatus, Reading, network_status, summary_line, watch
from tests.test_metrics import metered
from tests.test_network import WAIT, client, ready, relay_bits

ENDS = [("km-a", "km-b"), ("km-b", "km-a"), ("km-b", "km-c"), ("km-c", "km-b")]


async def qkdn(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The installed command, in a process of its own (the network runs in this one)."""
    return await trio.run_process(
        [sys.executable, "-m", "qkdn_sdk", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_status_shows_each_link_end_and_what_the_kms_did(tmp_path: Path) -> None:
    async with metered(tmp_path) as network:
        state = str(network.state_dir)
        await ready(network, relay_bits(4, 256))
        with trio.fail_after(WAIT):
            async with client(network, "alice") as alice:
                await alice.get_keys("bob", 4, 256)
            done = await qkdn("network", "status", state, "--json")
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert [(end["km"], end["neighbour"]) for end in status["links"]] == ENDS
        assert all(end["up"] for end in status["links"])
        assert all(end["send_bits"] > 0 for end in status["links"])
        assert all(end["generation_rate"] is not None for end in status["links"])
        kms = {km["km"]: km for km in status["kms"]}
        assert kms["km-a"]["applications"] == ["alice"]
        assert kms["km-a"]["relays"]["source"] == 1
        assert kms["km-b"]["relays"]["transit"] == 1
        assert kms["km-c"]["keys_held"]["app"] == 4
        assert status["unreachable"] == {}

        with trio.fail_after(WAIT):
            done = await qkdn("network", "status", state)
        assert done.returncode == 0, done.stderr
        text = done.stdout.decode()
        for km, neighbour in ENDS:
            assert f"{km} -> {neighbour}" in text
        assert "alice" in text

        with trio.fail_after(WAIT):
            done = await qkdn("network", "show", state)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.decode().splitlines()
        assert lines[0] == "controller controller: routes for km-a, km-b, km-c"
        assert lines[1].startswith("km-a ==== km-b  (km-a: ")
        assert lines[-2:] == ["alice -- km-a", "bob -- km-c"]


async def test_a_role_that_does_not_answer_is_named_and_the_rest_shown(tmp_path: Path) -> None:
    async with metered(tmp_path) as network:
        with trio.fail_after(WAIT):
            await network.stop_km("km-b")
            done = await qkdn("network", "status", str(network.state_dir), "--json")
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert list(status["unreachable"]) == ["km-b"]
        assert "cannot read its metrics at http://127.0.0.1:" in status["unreachable"]["km-b"]
        assert {end["km"] for end in status["links"]} == {"km-a", "km-c"}


async def test_a_state_dir_without_a_network_or_metrics_is_one_line(tmp_path: Path) -> None:
    done = await qkdn("network", "status", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        f"qkdn: {tmp_path / ENDPOINTS_FILE} does not exist: is a network running there "
        "('qkdn network up')?"
    ]
    (tmp_path / ENDPOINTS_FILE).write_text(json.dumps({"kms": {}, "apps": {}}))
    done = await qkdn("network", "show", str(tmp_path))
    assert done.returncode == 1
    assert len(done.stderr.decode().splitlines()) == 1
    assert "serves no metrics" in done.stderr.decode()


def test_rates_come_from_two_readings_and_a_restart_has_none() -> None:
    def reading(at: float, generated: float) -> Reading:
        labels = {"km": "km-a", "neighbour": "km-b"}
        return Reading(
            at=at,
            samples={
                "km-a": [
                    ("qkdn_km_link_key_amount_bits", {**labels, "direction": "send"}, 1024.0),
                    ("qkdn_km_link_key_amount_bits", {**labels, "direction": "receive"}, 512.0),
                    ("qkdn_km_link_up", labels, 1.0),
                    ("qkdn_km_link_key_generated_bits_total", labels, generated),
                ]
            },
        )

    first = network_status(reading(10.0, 1000.0), {"alice": "km-a"})
    assert first.links[0].generation_rate is None  # one reading: no rate yet
    later = network_status(reading(12.0, 5000.0), {"alice": "km-a"}, reading(10.0, 1000.0))
    assert later.links[0].generation_rate == 2000.0
    assert (later.links[0].send_bits, later.links[0].receive_bits) == (1024, 512)
    restarted = network_status(reading(12.0, 10.0), {}, reading(10.0, 1000.0))
    assert restarted.links[0].generation_rate is None
    assert isinstance(later, NetworkStatus)
    assert summary_line(later) == (
        "1 of 1 link ends up; lowest key level km-a -> km-b 1.02 kbit; 0 relays; 0 failed requests"
    )


class Screen(io.StringIO):
    """What a console wrote, and an event for each write (the console writes from trio)."""

    def __init__(self) -> None:
        super().__init__()
        self._written = trio.Event()

    def write(self, text: str) -> int:
        self._written.set()
        self._written = trio.Event()
        return super().write(text)

    async def until(self, text: str) -> None:
        while text not in self.getvalue():
            await self._written.wait()


async def test_watch_keeps_the_view_on_a_terminal_and_a_line_a_minute_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    applications = {"alice": "km-a", "bob": "km-c"}
    async with metered(tmp_path) as network:

        async def watched(terminal: bool, text: str) -> str:
            """What :func:`watch` wrote until it wrote ``text``."""
            screen = Screen()
            console = Console(file=screen, force_terminal=terminal, width=200)
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch, network.metrics_urls, applications, console)
                    await screen.until(text)
                    nursery.cancel_scope.cancel()
            return screen.getvalue()

        assert "KM links" in await watched(True, "km-c -> km-b")
        monkeypatch.setattr(status_module, "SUMMARY_INTERVAL", 0.05)
        log = await watched(False, "\n")
        line = log.splitlines()[0]
        assert line.startswith("4 of 4 link ends up; lowest key level km-")
        assert "KM links" not in log
