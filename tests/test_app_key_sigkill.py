"""Exactly once to the entitled application, under SIGKILL: the KMs of line3 run as ``qkdn
serve`` processes, and the destination KM is killed at random points of a key's way (alice's
request relaying, bob's fetch in flight, after bob got his keys) and started again from its
files. Every key alice got reaches bob with the same bytes, by retrying within the re-fetch
window; no other application ever gets one."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from qkdn_sdk.client import KeyManagerClient, SuppliedKey
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.network import parse_topology
from qkdn_sdk.network.deployment import load_role_config, write_role_configs
from qkdn_sdk.pki import dev_tls_config
from tests.test_serve import LINE3, WAIT, Role, first_port, start_roles, stop_roles

ROUNDS = 6
DAVE = '\n[[application]]\nid = "dave"\nkm = "km-c"\n'


class Line3:
    """line3's roles in their processes, and what it takes to kill and restart km-c."""

    def __init__(self, deployment: dict[str, Path], pki: Path, nursery: trio.Nursery) -> None:
        self.deployment = deployment
        self.pki = pki
        self.nursery = nursery
        self.roles: dict[str, Role] = {}

    def url(self, km: str) -> str:
        return load_role_config(self.deployment[km], "km").config.listen["ak"]  # type: ignore[union-attr]

    async def start(self) -> None:
        self.roles = await start_roles(self.deployment, self.nursery)
        with trio.fail_after(WAIT):
            for km_id, neighbour in (("km-a", "km-b"), ("km-c", "km-b")):
                await self.roles[km_id].wait_for(f"{km_id}: link to {neighbour} ready")
            for km_id, neighbour in (("km-a", "km-b"), ("km-b", "km-c")):
                await self.roles["controller"].wait_for(f"link {km_id}->{neighbour} has key")

    async def kill_km_c(self) -> None:
        role = self.roles["km-c"]
        role.process.send_signal(signal.SIGKILL)
        await role.process.wait()

    async def restart_km_c(self) -> None:
        path = self.deployment["km-c"]
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "qkdn_sdk", "serve", "km", "--config", str(path), "--verbose"],
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.roles["km-c"] = role = Role(process, "km-c")
        self.nursery.start_soon(role.read)
        with trio.fail_after(WAIT):
            await role.wait_for("km-c: link to km-b ready")

    async def get(self, number: int) -> list[SuppliedKey]:
        """alice's keys for bob, asked again until km-a gives them (km-c may be down)."""
        with trio.fail_after(WAIT):
            while True:
                try:
                    async with KeyManagerClient.connect(
                        self.url("km-a"), tls=dev_tls_config(self.pki, "alice")
                    ) as alice:
                        return await alice.get_keys("bob", number, 256)
                except QkdnError:
                    await self.roles["km-c"].wait_for("km-c: link to km-b ready")

    async def fetch(self, application: str, keys: list[SuppliedKey]) -> list[SuppliedKey]:
        async with KeyManagerClient.connect(
            self.url("km-c"), tls=dev_tls_config(self.pki, application)
        ) as client:
            return await client.get_keys_with_ids("alice", [key.key_id for key in keys])

    async def fetch_until_got(self, keys: list[SuppliedKey]) -> list[SuppliedKey]:
        """bob's fetch, retried (within the re-fetch window) until km-c answers it."""
        with trio.fail_after(WAIT):
            while True:
                try:
                    return await self.fetch("bob", keys)
                except QkdnError as exc:
                    if "not held" in str(exc):  # lost: the failure this test hunts
                        raise AssertionError(f"bob's keys were lost: {exc}") from exc
                    await self.roles["km-c"].wait_for("km-c: link to km-b ready")


async def after(seconds: float, call: object) -> None:
    await trio.sleep(seconds)  # fault injection: the moment of the kill, not a wait for a thing
    await call()  # type: ignore[operator]


async def test_killed_destination_km_loses_no_key_and_gives_none_twice(tmp_path: Path) -> None:
    topology = parse_topology(LINE3.read_text() + DAVE)
    deployment = write_role_configs(topology, tmp_path, first_port=first_port())
    rng = random.Random(2612)
    delivered: dict[str, bytes] = {}
    async with trio.open_nursery() as nursery:
        line = Line3(deployment, tmp_path / "pki", nursery)
        await line.start()
        try:
            for _ in range(ROUNDS):
                point = rng.choice(["relaying", "fetching", "fetched"])
                delay = rng.uniform(0, 0.03)
                if point == "relaying":  # alice's request in flight: she gets keys, or not
                    told: list[SuppliedKey] | None = None
                    async with trio.open_nursery() as race:
                        race.start_soon(after, delay, line.kill_km_c)
                        try:
                            async with KeyManagerClient.connect(
                                line.url("km-a"), tls=dev_tls_config(line.pki, "alice")
                            ) as alice:
                                told = await alice.get_keys("bob", 4, 256)
                        except QkdnError:
                            pass  # km-c died first: nothing was promised
                    await line.restart_km_c()
                    keys = told if told is not None else await line.get(4)
                    got = await line.fetch_until_got(keys)
                elif point == "fetching":  # bob's fetch in flight when km-c dies
                    keys = await line.get(4)
                    async with trio.open_nursery() as race:
                        race.start_soon(after, delay, line.kill_km_c)
                        with contextlib.suppress(QkdnError):  # bob's answer may be lost
                            await line.fetch("bob", keys)
                    await line.restart_km_c()
                    got = await line.fetch_until_got(keys)
                else:  # bob got them; his answer may have been lost: he asks again
                    keys = await line.get(4)
                    first = await line.fetch_until_got(keys)
                    await line.kill_km_c()
                    await line.restart_km_c()
                    got = await line.fetch_until_got(keys)
                    assert got == first
                assert got == keys  # the same IDs and bytes as alice's
                for key in got:
                    assert delivered.setdefault(key.key_id, key.key) == key.key
                with pytest.raises(QkdnError, match="not held for 'dave'"):
                    await line.fetch("dave", keys)
        finally:
            await stop_roles(line.roles)
    assert len(delivered) >= 4 * ROUNDS
