"""One role per process: ``qkdn network configure``, ``qkdn serve`` (qkdn_sdk.network.deployment).

The end-to-end test starts every role of line3 as its own ``qkdn serve`` process, from the
files ``qkdn network configure`` wrote, and gets keys relayed from alice to bob across them.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import stat
import subprocess
import sys
import tomllib
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path

import attrs
import pytest
import tomli_w
import trio
from typer.testing import CliRunner

from qkdn_sdk.cli import app
from qkdn_sdk.client import KeyManagerClient, SuppliedKey
from qkdn_sdk.network import load_topology, parse_topology
from qkdn_sdk.network.deployment import (
    Existing,
    RoleConfig,
    RoleConfigError,
    load_role_config,
    write_role_configs,
)
from qkdn_sdk.pki import dev_tls_config
from qkdn_sdk.roles.controller import ControllerConfig
from qkdn_sdk.roles.keystore import SQLiteKeyStore
from qkdn_sdk.roles.km import KMConfig
from qkdn_sdk.roles.qkd_module import Kq1Mode, QKDModuleConfig
from qkdn_sdk.testing.literal import LiteralController
from qkdn_sdk.tls import TLSConfig

ROOT = Path(__file__).parent.parent
LINE3 = ROOT / "examples" / "topologies" / "line3.toml"
WAIT = 60.0


def first_port() -> int:
    """Somewhere in the unprivileged range, so parallel runs rarely meet (the ports themselves
    are checked free when the files are written)."""
    return random.randrange(20_000, 60_000, 100)


@pytest.fixture
def deployment(tmp_path: Path) -> dict[str, Path]:
    return write_role_configs(load_topology(LINE3), tmp_path, first_port=first_port())


def role_of(path: Path) -> str:
    role = tomllib.loads(path.read_text())["role"]
    assert isinstance(role, str)
    return role


# --- the files ----------------------------------------------------------------------------


def test_a_file_per_role_in_start_order(deployment: dict[str, Path]) -> None:
    assert list(deployment) == [
        "controller",
        "km-a",
        "km-b",
        "km-c",
        "km-a.km-b",
        "km-b.km-a",
        "km-b.km-c",
        "km-c.km-b",
    ]
    assert [role_of(path) for path in deployment.values()] == [
        "controller",
        *["km"] * 3,
        *["qkd-module"] * 4,
    ]


def test_files_read_back_into_the_roles_of_the_topology(deployment: dict[str, Path]) -> None:
    topology = load_topology(LINE3)
    roles = {role_id: load_role_config(path, role_of(path)) for role_id, path in deployment.items()}
    controller = roles["controller"].config
    assert isinstance(controller, ControllerConfig)
    assert attrs.evolve(controller, listen_url="x", also_listen=()) == attrs.evolve(
        topology.controller_config(), listen_url="x", also_listen=()
    )
    assert [url.split(":")[0] for url in controller.also_listen] == ["grpcs"]  # Ck on gRPC
    km_b = roles["km-b"]
    assert isinstance(km_b.config, KMConfig)
    # a KM reaches its controller and neighbours at the URLs where they listen
    assert km_b.directory == {
        "controller": controller.listen_url,
        "km-a": roles["km-a"].config.listen["kx"],  # type: ignore[union-attr]
        "km-c": roles["km-c"].config.listen["kx"],  # type: ignore[union-attr]
    }
    assert km_b.store == deployment["km-b"].parent.parent / "km-b.sqlite3"
    assert km_b.tls is not None
    assert km_b.tls.identity() == "km-b"
    # every port is fixed and none is used twice
    urls = [
        *(
            url
            for role in roles.values()
            if isinstance(role.config, KMConfig)
            for url in role.config.listen.values()
        ),
        controller.listen_url,
        *controller.also_listen,
        *(
            role.config.listen_url
            for role in roles.values()
            if isinstance(role.config, QKDModuleConfig) and role.config.listen_url
        ),
    ]
    ports = [int(url.rsplit(":", 1)[1]) for url in urls]
    assert 0 not in ports
    # KMs: 4 interfaces, Ak on https and grpcs, Ck on grpcs; the controller's Ck twice
    assert len(set(ports)) == len(ports) == 3 * 7 + 2 + 2
    # both modules of a link share its secret and start time; each serves its own KM
    a_b, b_a = roles["km-a.km-b"].config, roles["km-b.km-a"].config
    assert isinstance(a_b, QKDModuleConfig)
    assert isinstance(b_a, QKDModuleConfig)
    assert (a_b.link_secret, a_b.epoch) == (b_a.link_secret, b_a.epoch)
    assert (a_b.km_id, a_b.km_url) == ("km-a", roles["km-a"].config.listen["kq1"])  # type: ignore[union-attr]
    b_c = roles["km-b.km-c"].config
    assert isinstance(b_c, QKDModuleConfig)
    assert b_c.mode is Kq1Mode.ON_REQUEST
    assert km_b.config.links[1].module_url == b_c.listen_url
    assert a_b.link_secret != b_c.link_secret


def test_a_links_buffer_reaches_its_module_files(tmp_path: Path) -> None:
    text = LINE3.read_text().replace(
        'mode = "on-request"', 'mode = "on-request"\nbuffer_keys = 100000'
    )
    topology = parse_topology(text)
    files = write_role_configs(topology, tmp_path, first_port=first_port())
    buffers = {}
    for role_id, path in files.items():
        if role_of(path) == "qkd-module":
            config = load_role_config(path, "qkd-module").config
            assert isinstance(config, QKDModuleConfig)
            buffers[role_id] = config.buffer_keys
    assert buffers == {"km-a.km-b": 256, "km-b.km-a": 256, "km-b.km-c": 100000, "km-c.km-b": 100000}


def test_a_links_hash_algorithm_reaches_its_km_and_module_files(tmp_path: Path) -> None:
    text = LINE3.read_text().replace(
        'mode = "on-request"', 'mode = "on-request"\nhash_algorithm = "blake2b"'
    )
    files = write_role_configs(parse_topology(text), tmp_path, first_port=first_port())
    algorithms = {}
    for role_id, path in files.items():
        config = load_role_config(path, role_of(path)).config
        if isinstance(config, QKDModuleConfig):
            algorithms[role_id] = config.hash_algorithm
        elif isinstance(config, KMConfig):
            for link in config.links:
                algorithms[f"{role_id} -> {link.neighbour}"] = link.hash_algorithm
    assert algorithms == {
        "km-a -> km-b": "sha256",
        "km-b -> km-a": "sha256",
        "km-b -> km-c": "blake2b",
        "km-c -> km-b": "blake2b",
        "km-a.km-b": "sha256",
        "km-b.km-a": "sha256",
        "km-b.km-c": "blake2b",
        "km-c.km-b": "blake2b",
    }
    km_file = files["km-b"].read_text()
    assert km_file.count("hash_algorithm") == 1  # the default is left out


def test_module_files_hold_a_secret_and_are_private(deployment: dict[str, Path]) -> None:
    for role_id, path in deployment.items():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if role_of(path) == "qkd-module" else 0o644), role_id
        # the directories are owner-only: no other user reads a key, a secret or a store there
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((path.parent.parent / "pki").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda text: text.replace('role = "km"', 'role = "controller"'),
            "this is the config of a controller, not of a km",
        ),
        (lambda text: "extra = 1\n" + text, "top level: unknown keys ['extra']"),
        (lambda text: text.replace('id = "km-a"\n', ""), "top level: id is missing"),
        (
            lambda text: text.replace('mode = "proactive"', 'mode = "push"'),
            "link 1: mode must be one of",
        ),
        (
            lambda text: text.replace("[listen]", "[listen]\nqkd = 'x'"),
            "listen: unknown interface 'qkd'",
        ),
        (lambda text: text.replace("[controller]", "[nope]"), "top level: unknown keys ['nope']"),
        (lambda text: text + "\n[options]\nrelay_timeout = 'soon'\n", "relay_timeout"),
        (lambda text: text + "\n[options]\nmin_share = 2\n", "km-a: min_share must be 0 to 1"),
        (lambda text: "role = ", "not valid TOML"),
        (
            lambda text: text.replace(
                'mode = "proactive"', 'mode = "proactive"\nhash_algorithm = "md5"'
            ),
            "link 1: unknown hash algorithm 'md5': expected one of sha256",
        ),
    ],
)
def test_bad_km_files_get_one_line(deployment: dict[str, Path], edit: object, problem: str) -> None:
    path = deployment["km-a"]
    path.write_text(edit(path.read_text()))  # type: ignore[operator]
    with pytest.raises(RoleConfigError) as caught:
        load_role_config(path, "km")
    assert str(caught.value).startswith(f"{path}: ")
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_km_file_sets_the_quotas_of_its_applications(deployment: dict[str, Path]) -> None:
    path = deployment["km-a"]
    path.write_text(
        path.read_text()
        + "\n[options]\nmax_keys_per_second = 100\nmax_keys_held = 5000\nmin_share = 0.25\n"
    )
    config = load_role_config(path, "km").config
    assert isinstance(config, KMConfig)
    assert (config.max_keys_per_second, config.max_keys_held) == (100.0, 5000)
    assert (config.min_share, config.fair_share_reserve_bits) == (0.25, 524_288)  # the default
    path.write_text(path.read_text().replace("= 100\n", "= inf\n"))  # TOML's infinity
    config = load_role_config(path, "km").config
    assert isinstance(config, KMConfig)
    assert config.max_keys_per_second == math.inf


def test_bad_module_secret(deployment: dict[str, Path]) -> None:
    path = deployment["km-a.km-b"]
    text = re.sub(r'link_secret = "[0-9a-f]+"', 'link_secret = "zz"', path.read_text())
    path.write_text(text)
    with pytest.raises(RoleConfigError, match="link_secret must be hexadecimal"):
        load_role_config(path, "qkd-module")
    path.write_text(re.sub(r'link_secret = "zz"', 'link_secret = "abcd"', text))
    with pytest.raises(RoleConfigError, match="link_secret"):
        load_role_config(path, "qkd-module")


def test_cli_configure_prints_the_command_of_each_role(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "network",
            "configure",
            str(LINE3),
            "--state-dir",
            str(tmp_path),
            "--first-port",
            str(first_port()),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"qkdn serve controller --config {tmp_path / 'config' / 'controller.toml'}"
    assert lines[1] == f"qkdn serve km --config {tmp_path / 'config' / 'km-a.toml'}"
    assert lines[-1] == f"qkdn serve qkd-module --config {tmp_path / 'config' / 'km-c.km-b.toml'}"
    assert len(lines) == 8


def test_a_km_file_names_where_its_stores_kek_comes_from(deployment: dict[str, Path]) -> None:
    path = deployment["km-a"]
    text = path.read_text()
    assert load_role_config(path, "km").key_encryption_key is None  # the store's path + .kek
    path.write_text('key_encryption_key = "file:keys/km-a.kek"\n' + text)
    assert load_role_config(path, "km").key_encryption_key == f"file:{path.parent}/keys/km-a.kek"
    path.write_text('key_encryption_key = "command:vault read km-a"\n' + text)
    assert load_role_config(path, "km").key_encryption_key == "command:vault read km-a"
    path.write_text('key_encryption_key = "km-a.kek"\n' + text)
    with pytest.raises(RoleConfigError, match="key_encryption_key must be file:<path>, env:"):
        load_role_config(path, "km")


def test_a_km_file_may_keep_its_store_in_postgresql_and_run_replicas(
    deployment: dict[str, Path],
) -> None:
    path = deployment["km-a"]
    data = tomllib.loads(path.read_text())
    url = "postgresql://km@db.example/km_a"

    def loaded(**changes: object) -> RoleConfig:
        path.write_text(tomli_w.dumps({**data, **changes}))
        return load_role_config(path, "km")

    with pytest.raises(RoleConfigError, match="a PostgreSQL store needs a key_encryption_key"):
        loaded(store=url)
    primary = loaded(store=url, key_encryption_key="env:KM_A_KEK")
    assert primary.store == url
    assert not primary.config.replica  # type: ignore[union-attr]
    ak = {"ak": data["listen"]["ak"]}
    replica = loaded(store=url, key_encryption_key="env:KM_A_KEK", replica=True, listen=ak)
    assert replica.config.replica  # type: ignore[union-attr]
    with pytest.raises(RoleConfigError, match="a replica listens on Ak interfaces only"):
        loaded(store=url, key_encryption_key="env:KM_A_KEK", replica=True)
    with pytest.raises(RoleConfigError, match="a replica shares its primary's PostgreSQL store"):
        loaded(replica=True, listen=ak)


def test_cli_serve_refuses_a_kek_that_does_not_open_the_store(
    deployment: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = deployment["km-a"]
    path.write_text('key_encryption_key = "env:QKDN_TEST_KEK"\n' + path.read_text())
    store = load_role_config(path, "km").store
    assert store is not None

    async def written_with(kek: bytes) -> None:
        async with await SQLiteKeyStore.open(store, kek=kek):
            pass

    trio.run(written_with, bytes(32))
    monkeypatch.setenv("QKDN_TEST_KEK", "11" * 32)
    result = CliRunner().invoke(app, ["serve", "km", "--config", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("its key-encryption key is not the one given")
    assert "11" * 32 not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_serve_refuses_a_file_of_another_role(deployment: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["serve", "km", "--config", str(deployment["controller"])])
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("this is the config of a controller, not of a km")
    result = CliRunner().invoke(app, ["serve", "router", "--config", str(deployment["km-a"])])
    assert result.exit_code == 2
    assert "No such command 'router'" in result.stderr


# --- every role its own process -----------------------------------------------------------


class Role:
    """A ``qkdn serve`` process and what it said on stderr so far."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.said = ""
        self._changed = trio.Event()

    async def read(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.said += chunk.decode()
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait_for(self, text: str) -> None:
        while text not in self.said:
            assert self.process.returncode is None, f"{self.name} ended: {self.said}"
            await self._changed.wait()


async def start_roles(deployment: dict[str, Path], nursery: trio.Nursery) -> dict[str, Role]:
    """A ``qkdn serve`` process for each role file of ``deployment``, its stderr read."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    roles: dict[str, Role] = {}
    for role_id, path in deployment.items():
        command = [sys.executable, "-m", "qkdn_sdk", "serve", role_of(path)]
        process = await trio.lowlevel.open_process(
            [*command, "--config", str(path), "--verbose"], stderr=subprocess.PIPE, env=env
        )
        roles[role_id] = Role(process, role_id)
        nursery.start_soon(roles[role_id].read)
    return roles


async def serving(deployment: dict[str, Path], roles: dict[str, Role]) -> None:
    """Return once every role of ``deployment`` said it serves."""
    for role_id in deployment:
        await roles[role_id].wait_for(f"{said_name(deployment, role_id)} serves: ")


async def stop_roles(roles: dict[str, Role]) -> None:
    """SIGTERM to every role still running, and wait for each to end."""
    for role in roles.values():
        if role.process.returncode is None:
            role.process.send_signal(signal.SIGTERM)
    with trio.fail_after(WAIT):
        for role in roles.values():
            await role.process.wait()


async def alice_to_bob(
    deployment: dict[str, Path], pki: Path
) -> tuple[list[SuppliedKey], list[SuppliedKey]]:
    """4 keys alice gets from km-a for bob, and the keys bob fetches by their IDs from km-c."""
    async with KeyManagerClient.connect(
        load_role_config(deployment["km-a"], "km").config.listen["ak"],  # type: ignore[union-attr]
        tls=dev_tls_config(pki, "alice"),
    ) as alice:
        keys = await alice.get_keys("bob", 4, 256)
    async with KeyManagerClient.connect(
        load_role_config(deployment["km-c"], "km").config.listen["ak"],  # type: ignore[union-attr]
        tls=dev_tls_config(pki, "bob"),
    ) as bob:
        fetched = await bob.get_keys_with_ids("alice", [key.key_id for key in keys])
    return keys, fetched


def said_name(deployment: dict[str, Path], role_id: str) -> str:
    """How ``qkdn serve`` names a role: ``km km-a``, but ``controller``, not ``controller
    controller``."""
    role = role_of(deployment[role_id])
    return role if role == role_id else f"{role} {role_id}"


async def test_every_role_in_its_own_process(deployment: dict[str, Path], tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        roles = await start_roles(deployment, nursery)
        try:
            with trio.fail_after(WAIT):
                await serving(deployment, roles)
                # both ends of both links cut link keys (the modules started at different times)
                for km_id, neighbour in (
                    ("km-a", "km-b"),
                    ("km-b", "km-a"),
                    ("km-b", "km-c"),
                    ("km-c", "km-b"),
                ):
                    await roles[km_id].wait_for(f"{km_id}: link to {neighbour} ready")
                # and the controller knows it, for the route alice -> bob
                for km_id, neighbour in (("km-a", "km-b"), ("km-b", "km-c")):
                    await roles["controller"].wait_for(f"link {km_id}->{neighbour} has key")

            with trio.fail_after(WAIT):
                keys, fetched = await alice_to_bob(deployment, tmp_path / "pki")
            assert fetched == keys  # the same IDs and bytes, relayed across km-b's process
            assert len({key.key for key in keys}) == 4
            await roles["km-b"].wait_for("km-b:")  # km-b logged at least a line of its own
        finally:
            await stop_roles(roles)
    for role_id, role in roles.items():
        assert role.process.returncode == 0, role.said
        name = said_name(deployment, role_id)
        lines = role.said.rstrip().splitlines()
        assert any(line.startswith(f"{name} serves: ") for line in lines), role.said
        assert lines[-1] == f"{name} stopped", role.said
        assert "Traceback" not in role.said


def test_the_km_file_the_docs_show_is_one(tmp_path: Path) -> None:
    roles_md = (ROOT / "docs" / "roles.md").read_text(encoding="utf-8")
    section = roles_md[roles_md.index("## One role per process") :]
    text = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "config" / "km-b.toml"
    path.parent.mkdir()
    path.write_text(text)
    role = load_role_config(path, "km")
    assert isinstance(role.config, KMConfig)
    assert role.config.links[0].module_url == "tcp+tls://127.0.0.1:7013"
    assert role.store == tmp_path / "km-b.sqlite3"
    assert role.directory == {
        "controller": "tcp+tls://127.0.0.1:7000",
        "km-c": "tcp+tls://127.0.0.1:7012",
    }


async def test_our_kms_and_modules_in_their_processes_with_a_controller_from_q4164_alone(
    tmp_path: Path,
) -> None:
    """line3 in centralized routing (Q.4164 clause 7.2), every KM and QKD module its own
    ``qkdn serve`` process, and in the controller's place one written from Tables 1-5 alone
    (:class:`~qkdn_sdk.testing.literal.LiteralController`: its own key relay request IDs, the
    KMs between source and destination as transit KMs, nothing of D2.3): alice's keys reach bob
    byte-identical."""
    text = LINE3.read_text().replace(
        'transport = "tcp+tls"', 'transport = "tcp+tls"\nrouting = "centralized"'
    )
    topology = parse_topology(text)
    deployment = write_role_configs(topology, tmp_path, first_port=first_port())
    controller_file = load_role_config(deployment.pop("controller"), "controller").config
    assert isinstance(controller_file, ControllerConfig)
    pki = tmp_path / "pki"
    literal = LiteralController(
        kms=controller_file.kms,
        links=controller_file.links,
        applications=controller_file.applications,
        ignore_sdk_members=True,  # our KMs' hints (key_bits, their relay IDs) it does not read
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                literal.serve,
                controller_file.listen_url,
                tls=dev_tls_config(pki, "controller"),
                identity="controller",
            )
        )
        roles = await start_roles(deployment, nursery)
        try:
            with trio.fail_after(WAIT):
                for km_id, neighbour in (("km-a", "km-b"), ("km-b", "km-c")):
                    await roles[km_id].wait_for(f"{km_id}: link to {neighbour} ready")
                keys, fetched = await alice_to_bob(deployment, pki)
        finally:
            await stop_roles(roles)
            nursery.cancel_scope.cancel()
    assert fetched == keys
    assert [response.response for response in literal.relays] == ["success"]  # Table 5


def test_a_controller_file_may_require_authentication(deployment: dict[str, Path]) -> None:
    path = deployment["controller"]
    assert not load_role_config(path, "controller").config.require_authentication  # type: ignore[union-attr]
    path.write_text(
        path.read_text().replace(
            'role = "controller"', 'role = "controller"\nrequire_authentication = true'
        )
    )
    assert load_role_config(path, "controller").config.require_authentication  # type: ignore[union-attr]


# --- configuring a directory again --------------------------------------------------------


def configure(
    directory: Path, *options: str, topology: Path = LINE3
) -> subprocess.CompletedProcess[str]:
    """``qkdn network configure`` as its own process."""
    command = [sys.executable, "-m", "qkdn_sdk", "network", "configure", str(topology)]
    return subprocess.run(
        [*command, "--state-dir", str(directory), "--first-port", str(first_port()), *options],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def contents(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_configure_refuses_a_directory_that_holds_a_deployment(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    assert configure(deploy).returncode == 0
    before = contents(deploy)
    done = configure(deploy)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"qkdn: {deploy} already holds a deployment ({deploy}/config/ and {deploy}/pki/): "
        "update it with --update (keeps its PKI, link secrets and ports) or replace it with "
        "--force"
    ]
    assert contents(deploy) == before  # not a byte changed


def test_configure_force_replaces_the_deployment(tmp_path: Path) -> None:
    files = write_role_configs(load_topology(LINE3), tmp_path, first_port=first_port())
    secret = load_role_config(files["km-a.km-b"], "qkd-module").config.link_secret  # type: ignore[union-attr]
    key = (tmp_path / "pki" / "alice.key").read_bytes()
    ca = (tmp_path / "pki" / "ca.pem").read_bytes()
    assert configure(tmp_path, "--force").returncode == 0
    assert load_role_config(files["km-a.km-b"], "qkd-module").config.link_secret != secret  # type: ignore[union-attr]
    assert (tmp_path / "pki" / "alice.key").read_bytes() != key
    assert (tmp_path / "pki" / "ca.pem").read_bytes() == ca  # the CA stays (write_dev_pki)


def test_configure_makes_its_directory_ignored_by_git(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    write_role_configs(load_topology(LINE3), deploy, first_port=first_port())
    assert "*" in (deploy / ".gitignore").read_text().splitlines()
    assert stat.S_IMODE(deploy.stat().st_mode) == 0o700
    # a directory it did not make is not its to ignore
    write_role_configs(load_topology(LINE3), tmp_path / "mine", first_port=first_port())
    (tmp_path / "other").mkdir()
    write_role_configs(load_topology(LINE3), tmp_path / "other", first_port=first_port())
    assert not (tmp_path / "other" / ".gitignore").exists()


def test_the_repository_ignores_the_readmes_deploy_directory() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--state-dir deploy " in readme
    assert "deploy/" in (ROOT / ".gitignore").read_text().splitlines()


def test_configure_writes_the_endpoints_of_its_roles(deployment: dict[str, Path]) -> None:
    directory = deployment["controller"].parent.parent
    endpoints = json.loads((directory / "endpoints.json").read_text())
    controller = load_role_config(deployment["controller"], "controller").config
    assert isinstance(controller, ControllerConfig)
    assert endpoints["controller"] == {
        "id": "controller",
        "ck": {url.split(":")[0]: url for url in (controller.listen_url, *controller.also_listen)},
    }
    km_a = load_role_config(deployment["km-a"], "km").config
    assert isinstance(km_a, KMConfig)
    assert endpoints["kms"]["km-a"]["ak"] == {
        "tcp+tls": km_a.listen["ak"],
        "https": km_a.listen["ak@https"],
        "grpcs": km_a.listen["ak@grpcs"],
    }
    assert endpoints["kms"]["km-a"]["kx"] == {"tcp+tls": km_a.listen["kx"]}
    assert endpoints["ca"] == "pki/ca.pem"
    assert endpoints["apps"] == {
        "alice": {"km": "km-a", "cert": "pki/alice.pem", "key": "pki/alice.key"},
        "bob": {"km": "km-c", "cert": "pki/bob.pem", "key": "pki/bob.key"},
    }
    for entry in endpoints["apps"].values():  # relative to the file, and there
        assert (directory / entry["cert"]).is_file()


LINE2 = """
transport = "tcp+tls"
[controller]
id = "controller"
[[km]]
id = "km-a"
[[km]]
id = "km-b"
[[link]]
kms = ["km-a", "km-b"]
secret_key_rate = 256_000
mode = "proactive"
[[application]]
id = "alice"
km = "km-a"
[[application]]
id = "dave"
km = "km-b"
"""


def test_configure_update_drops_what_is_gone_and_keeps_what_stays(tmp_path: Path) -> None:
    files = write_role_configs(load_topology(LINE3), tmp_path, first_port=first_port())
    config_dir = files["km-a"].parent
    # what an operator did to the deployment: km-a on PostgreSQL, a replica's file of its own
    km_a = tomllib.loads(files["km-a"].read_text())
    files["km-a"].write_text(
        tomli_w.dumps(km_a | {"store": "postgresql://km@db/qkd", "key_encryption_key": "env:K"})
    )
    (config_dir / "km-a-replica.toml").write_text(
        tomli_w.dumps(km_a | {"replica": True, "listen": {"ak": km_a["listen"]["ak"]}})
    )
    before = {role_id: load_role_config(path, role_of(path)) for role_id, path in files.items()}
    pki = {name: (tmp_path / "pki" / name).read_bytes() for name in ("ca.key", "km-a.key")}

    updated = write_role_configs(
        parse_topology(LINE2), tmp_path, first_port=first_port(), existing=Existing.UPDATE
    )

    assert list(updated) == ["controller", "km-a", "km-b", "km-a.km-b", "km-b.km-a"]
    assert sorted(path.name for path in config_dir.iterdir()) == sorted(
        [*(f"{role_id}.toml" for role_id in updated), "km-a-replica.toml"]
    )
    after = {role_id: load_role_config(path, role_of(path)) for role_id, path in updated.items()}
    assert after["controller"].config.listen_url == before["controller"].config.listen_url  # type: ignore[union-attr]
    kept = after["km-a"].config.listen.items()  # type: ignore[union-attr]
    assert kept <= before["km-a"].config.listen.items()  # type: ignore[union-attr]
    assert sorted(dict(kept)) == ["ak", "ck", "kq1", "kx"]  # LINE2 has no `also`
    assert (after["km-a"].store, after["km-a"].key_encryption_key) == (
        "postgresql://km@db/qkd",
        "env:K",
    )
    assert after["km-b"].store == tmp_path / "km-b.sqlite3"
    for module in ("km-a.km-b", "km-b.km-a"):
        old, new = before[module].config, after[module].config
        assert isinstance(old, QKDModuleConfig)
        assert isinstance(new, QKDModuleConfig)
        assert (new.link_secret, new.epoch) == (old.link_secret, old.epoch)
    assert [link.neighbour for link in after["km-b"].config.links] == ["km-a"]  # type: ignore[union-attr]
    assert after["km-b"].config.applications == {"dave"}  # type: ignore[union-attr]
    # the PKI kept its keys, issued dave's and dropped those of km-c, its modules and bob
    assert pki == {name: (tmp_path / "pki" / name).read_bytes() for name in pki}
    names = sorted(path.stem for path in (tmp_path / "pki").glob("*.pem"))
    assert names == sorted(["ca", *parse_topology(LINE2).entities()])
    assert json.loads((tmp_path / "endpoints.json").read_text())["apps"]["dave"]["km"] == "km-b"


def test_configure_update_refuses_a_role_file_it_cannot_read(
    deployment: dict[str, Path],
) -> None:
    directory = deployment["controller"].parent.parent
    deployment["km-b"].write_text("role = ")
    before = contents(directory)
    with pytest.raises(RoleConfigError, match=r"km-b\.toml: not valid TOML"):
        write_role_configs(
            load_topology(LINE3), directory, first_port=first_port(), existing=Existing.UPDATE
        )
    assert contents(directory) == before


async def test_configure_update_keeps_a_running_deployment_working(tmp_path: Path) -> None:
    """Every role of line3 runs from its file; an application (carol, on km-a) is added with
    ``configure --update``; km-a, the controller and km-a's QKD module restart from the new
    files while the others go on with the old ones, and carol gets keys relayed to bob, reaching
    km-a with what endpoints.json says."""
    deploy = tmp_path / "deploy"
    deployment = write_role_configs(load_topology(LINE3), deploy, first_port=first_port())
    before = {path.name: tomllib.loads(path.read_text()) for path in deployment.values()}
    with_carol = tmp_path / "line3-carol.toml"
    with_carol.write_text(LINE3.read_text() + '\n[[application]]\nid = "carol"\nkm = "km-a"\n')
    async with trio.open_nursery() as nursery:
        roles = await start_roles(deployment, nursery)
        try:
            with trio.fail_after(WAIT):
                await serving(deployment, roles)
            # the roles hold their ports now: without --update they would all move
            done = await trio.to_thread.run_sync(
                partial(configure, deploy, "--update", topology=with_carol)
            )
            assert done.returncode == 0, done.stderr
            after = {path.name: tomllib.loads(path.read_text()) for path in deployment.values()}
            for name, old in before.items():
                new = after[name]
                assert new.get("listen") == old.get("listen"), name
                assert new.get("link_secret") == old.get("link_secret"), name
                assert new.get("epoch") == old.get("epoch"), name
            assert after["km-a.toml"]["applications"] == ["alice", "carol"]
            assert after["controller.toml"]["applications"]["carol"] == "km-a"

            restarted = {
                role_id: deployment[role_id] for role_id in ("controller", "km-a", "km-a.km-b")
            }
            await stop_roles({role_id: roles[role_id] for role_id in restarted})
            roles |= await start_roles(restarted, nursery)
            with trio.fail_after(WAIT):
                await roles["km-a"].wait_for("km-a: link to km-b ready")
                for km_id, neighbour in (("km-a", "km-b"), ("km-b", "km-c")):
                    await roles["controller"].wait_for(f"link {km_id}->{neighbour} has key")
                keys, fetched = await carol_to_bob(deploy / "endpoints.json")
            assert fetched == keys  # relayed by the old km-b on a key the new module matches
        finally:
            await stop_roles(roles)
    for role in roles.values():
        assert role.process.returncode == 0, role.said


async def carol_to_bob(endpoints_file: Path) -> tuple[list[SuppliedKey], list[SuppliedKey]]:
    """2 keys carol gets for bob and bob fetches by ID, each reaching its KM's Ak with the
    URL, CA, certificate and key ``endpoints_file`` gives it."""
    endpoints = json.loads(endpoints_file.read_text())
    here = endpoints_file.parent

    def client(app: str) -> AbstractAsyncContextManager[KeyManagerClient]:
        entry = endpoints["apps"][app]
        tls = TLSConfig(
            ca=here / endpoints["ca"], cert=here / entry["cert"], key=here / entry["key"]
        )
        return KeyManagerClient.connect(endpoints["kms"][entry["km"]]["ak"]["tcp+tls"], tls=tls)

    async with client("carol") as carol:
        keys = await carol.get_keys("bob", 2, 256)
    async with client("bob") as bob:
        fetched = await bob.get_keys_with_ids("carol", [key.key_id for key in keys])
    return keys, fetched
