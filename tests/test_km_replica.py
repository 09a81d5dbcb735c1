"""Several ``qkdn serve km`` processes of one KM ID on one PostgreSQL database: line3's km-a
and km-c each run a primary and a replica (``replica = true``, Ak only) on their own database.
Keys relayed by either process of km-a reach bob through either process of km-c, the same
bytes at both ends; bob fetching the same IDs from both processes at once gets the same keys
each time, dave none; and every process goes on serving after the database restarts."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
import trio

from qkdn_sdk.client import KeyManagerClient, SuppliedKey
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.network import parse_topology
from qkdn_sdk.network.deployment import write_role_configs
from qkdn_sdk.pki import dev_tls_config
from tests._postgres import PostgresServer
from tests.test_serve import LINE3, WAIT, Role, first_port, start_roles, stop_roles

DAVE = '\n[[application]]\nid = "dave"\nkm = "km-c"\n'
REPLICATED = ("km-a", "km-c")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_postgres(path: Path, url: str) -> dict[str, Any]:
    """Make the KM file at ``path`` use the database ``url``; the file's content, as TOML."""
    data = tomllib.loads(path.read_text())
    data["store"] = url
    data["key_encryption_key"] = f"file:{path.parent.parent / (data['id'] + '.kek')}"
    path.write_text(tomli_w.dumps(data))
    return data


def replica_of(path: Path, data: dict[str, Any]) -> tuple[Path, str]:
    """A replica's file beside the primary's at ``path``, and its Ak URL."""
    url = f"tcp+tls://127.0.0.1:{free_port()}"
    replica = {**data, "replica": True, "listen": {"ak": url}}
    replica_path = path.with_name(f"{data['id']}-replica.toml")
    replica_path.write_text(tomli_w.dumps(replica))
    return replica_path, url


async def get(url: str, pki: Path, number: int) -> list[SuppliedKey]:
    async with KeyManagerClient.connect(url, tls=dev_tls_config(pki, "alice")) as alice:
        return await alice.get_keys("bob", number, 256)


async def fetch(
    url: str, pki: Path, application: str, keys: list[SuppliedKey]
) -> list[SuppliedKey]:
    async with KeyManagerClient.connect(url, tls=dev_tls_config(pki, application)) as client:
        return await client.get_keys_with_ids("alice", [key.key_id for key in keys])


async def test_replicas_on_one_database_serve_ak_and_keep_single_delivery(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    postgres_server.start()
    databases = [postgres_server.create_database() for _ in REPLICATED]
    topology = parse_topology(LINE3.read_text() + DAVE)
    deployment = write_role_configs(topology, tmp_path, first_port=first_port())
    pki = tmp_path / "pki"
    urls: dict[str, list[str]] = {}  # the Ak URLs of each KM's processes
    processes = dict(deployment)
    for km_id, database in zip(REPLICATED, databases, strict=True):
        data = on_postgres(deployment[km_id], database)
        replica, url = replica_of(deployment[km_id], data)
        processes[f"{km_id}-replica"] = replica
        urls[km_id] = [data["listen"]["ak"], url]
    try:
        async with trio.open_nursery() as nursery:
            roles = await start_roles(processes, nursery)
            try:
                await until_ready(roles)
                await relayed_by_both(urls, pki)
                await fetched_at_once_from_both(urls, pki)
                postgres_server.restart()
                await served_after_restart(urls, pki, roles)
                for name, role in roles.items():
                    assert role.process.returncode is None, f"{name} ended: {role.said}"
            finally:
                await stop_roles(roles)
    finally:
        postgres_server.start()
        for database in databases:
            postgres_server.drop_database(database)


async def until_ready(roles: dict[str, Role]) -> None:
    with trio.fail_after(WAIT):
        for km_id, neighbour in (("km-a", "km-b"), ("km-c", "km-b")):
            await roles[km_id].wait_for(f"{km_id}: link to {neighbour} ready")
        for km_id, neighbour in (("km-a", "km-b"), ("km-b", "km-c")):
            await roles["controller"].wait_for(f"link {km_id}->{neighbour} has key")
        for km_id in REPLICATED:
            await roles[f"{km_id}-replica"].wait_for(f"km {km_id} serves:")


async def relayed_by_both(urls: dict[str, list[str]], pki: Path) -> None:
    """Each process of km-a relays alice's keys (the replica with link key its primary
    acquired); bob fetches them from each process of km-c."""
    for source in urls["km-a"]:
        for destination in urls["km-c"]:
            keys = await get(source, pki, 4)
            assert await fetch(destination, pki, "bob", keys) == keys


async def fetched_at_once_from_both(urls: dict[str, list[str]], pki: Path) -> None:
    """Bob asks for the same keys ten times at once, from both processes of km-c: every answer
    is alice's keys (a re-fetch within the window); dave, asking among them, gets none."""
    keys = await get(urls["km-a"][1], pki, 8)
    answers: list[list[SuppliedKey]] = []
    refused: list[str] = []

    async def bob(url: str) -> None:
        answers.append(await fetch(url, pki, "bob", keys))

    async def dave(url: str) -> None:
        try:
            got = await fetch(url, pki, "dave", keys)
        except QkdnError as exc:
            refused.append(str(exc))
        else:
            raise AssertionError(f"dave got {len(got)} of bob's keys")

    async with trio.open_nursery() as nursery:
        for index in range(10):
            nursery.start_soon(bob, urls["km-c"][index % 2])
            nursery.start_soon(dave, urls["km-c"][index % 2])
    assert answers == [keys] * 10
    assert len(refused) == 10
    assert all("not held for 'dave'" in reason for reason in refused), refused


async def served_after_restart(
    urls: dict[str, list[str]], pki: Path, roles: dict[str, Role]
) -> None:
    """After the database restarted, a request may fail (in one line) while a process
    reconnects, and a later one is served; no process ended."""
    failures: list[str] = []

    async def served(source: str, destination: str) -> bool:
        try:
            keys = await get(source, pki, 2)
            got = await fetch(destination, pki, "bob", keys)
        except QkdnError as exc:
            failures.append(str(exc))
            for name, role in roles.items():
                assert role.process.returncode is None, f"{name} ended: {role.said}"
            return False
        assert got == keys
        return True

    for source in urls["km-a"]:
        for destination in urls["km-c"]:
            with trio.fail_after(WAIT):
                while not await served(source, destination):
                    pass
    assert all("\n" not in failure for failure in failures), failures
