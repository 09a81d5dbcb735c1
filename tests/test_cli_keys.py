"""``qkdn keys get`` and ``qkdn keys fetch`` against a network that ``qkdn network up`` runs in
a process of its own, and the reader of ``endpoints.json`` they act on."""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from qkdn_sdk.cli.keys import ApplicationEndpoint, application_endpoint
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.tls import TLSConfig
from tests.test_cli import QKDN, assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent
LINE3 = ROOT / "examples" / "topologies" / "line3.toml"
READY = b"every QKD link has key"
WAIT = 60.0


@contextmanager
def network_up(state_dir: Path) -> Iterator[Path]:
    """``qkdn network up`` of line3 with its state in ``state_dir``, once every QKD link has key;
    yields its ``endpoints.json``, and stops it with SIGTERM afterwards."""
    command = [sys.executable, "-m", "qkdn_sdk", "network", "up", str(LINE3)]
    process = subprocess.Popen(
        [*command, "--state-dir", str(state_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    try:
        said = b""
        while READY not in said:  # select waits for the process to say something, or WAIT
            readable, _, _ = select.select([process.stderr], [], [], WAIT)
            assert readable, f"qkdn network up said nothing for {WAIT} s: {said.decode()}"
            chunk = os.read(process.stderr.fileno(), 65536)
            assert chunk, f"qkdn network up ended: {said.decode()}"
            said += chunk
        yield state_dir / "endpoints.json"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=WAIT)
    assert process.returncode == 0


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with network_up(tmp_path_factory.mktemp("network") / "state") as path:
        yield path


def keys(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QKDN, "keys", *args], capture_output=True, text=True, timeout=WAIT, cwd=cwd, check=False
    )


def pairs(result: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [(line.split(" ")[0], line.split(" ")[1]) for line in result.stdout.splitlines()]


def test_get_then_fetch_gives_both_applications_the_same_keys(endpoints: Path) -> None:
    state = str(endpoints.parent)
    got = pairs(keys("get", "alice", "--to", "bob", "-n", "3", "--state-dir", state))
    assert len(got) == 3
    assert [len(bytes.fromhex(key)) for _, key in got] == [32, 32, 32]  # the KM's default size
    ids = [key_id for key_id, _ in got]
    fetched = pairs(keys("fetch", "bob", "--from", "alice", *ids, "--state-dir", state))
    assert fetched == got  # the same IDs and bytes, in order


def test_formats_and_size(endpoints: Path) -> None:
    file = str(endpoints)
    got = keys(
        "get", "alice", "--to", "bob", "--size", "128", "--endpoints", file, "--format", "base64"
    )
    [(key_id, key)] = pairs(got)
    assert len(base64.b64decode(key, validate=True)) == 16
    fetched = keys(
        "fetch", "bob", "--from", "alice", key_id, "--endpoints", file, "--format", "json"
    )
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout) == [{"key_id": key_id, "key": key}]  # Q.4161 Table 3 form


def test_paths_in_endpoints_json_are_relative_to_it(endpoints: Path, tmp_path: Path) -> None:
    """From any working directory: the CA, certificate and key are found beside the file."""
    relative = os.path.relpath(endpoints, tmp_path)
    [(key_id, _)] = pairs(
        keys("get", "bob", "--to", "alice", "--endpoints", relative, cwd=tmp_path)
    )
    assert len(key_id) == 36


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["get", "carol", "--to", "bob"], ["no application 'carol' in", "alice and bob"]),
        (["get", "alice", "--to", "nobody"], ["km-a at tcp+tls://", "'nobody'"]),
        (["get", "alice", "--to", "bob", "-n", "100000"], ["km-a at", "max_key_per_request"]),
        (
            ["fetch", "bob", "--from", "alice", "01a25298-3b3a-7069-9a35-bd4af43b0000"],
            ["km-c at", "not held for 'bob' from 'alice'"],
        ),
    ],
)
def test_refusals_are_one_line(endpoints: Path, args: list[str], words: list[str]) -> None:
    assert_one_line_error(keys(*args, "--state-dir", str(endpoints.parent)), *words)


def test_a_missing_endpoints_file_is_one_line(tmp_path: Path) -> None:
    result = keys("get", "alice", "--to", "bob", "--state-dir", str(tmp_path))
    assert_one_line_error(result, f"no endpoints file {tmp_path / 'endpoints.json'}", "network up")


@pytest.mark.parametrize(
    "where", [[], ["--state-dir", "state", "--endpoints", "state/endpoints.json"]]
)
def test_one_of_state_dir_and_endpoints_is_needed(where: list[str]) -> None:
    result = keys("get", "alice", "--to", "bob", *where)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "--state-dir" in line
    assert "--endpoints" in line


# --- the reader of endpoints.json ----------------------------------------------------------------


def write_endpoints(directory: Path, ak: dict[str, str], *, tls: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "endpoints.json"
    app = {"km": "km-a", "cert": "pki/alice.pem", "key": "pki/alice.key"}
    data = {
        "ca": "pki/ca.pem" if tls else None,
        "controller": {"id": "controller", "ck": {}},
        "kms": {"km-a": {"ak": ak}},
        "apps": {"alice": app if tls else {"km": "km-a", "cert": None, "key": None}},
    }
    path.write_text(json.dumps(data))
    return path


def test_the_reader_prefers_tcp_tls_and_resolves_paths_beside_the_file(tmp_path: Path) -> None:
    ak = {"https": "https://127.0.0.1:2", "tcp+tls": "tcp+tls://127.0.0.1:1"}
    path = write_endpoints(tmp_path / "state", ak)
    pki = tmp_path / "state" / "pki"
    assert application_endpoint(path, "alice") == ApplicationEndpoint(
        app_id="alice",
        km_id="km-a",
        url="tcp+tls://127.0.0.1:1",
        tls=TLSConfig(ca=pki / "ca.pem", cert=pki / "alice.pem", key=pki / "alice.key"),
    )


def test_the_reader_takes_what_is_there_without_tcp_tls(tmp_path: Path) -> None:
    ak = {"carrier-pigeon": "carrier-pigeon://loft", "https": "https://127.0.0.1:2"}
    assert application_endpoint(write_endpoints(tmp_path, ak), "alice").url == ak["https"]
    plain = write_endpoints(tmp_path, {"tcp": "tcp://127.0.0.1:3"}, tls=False)
    assert application_endpoint(plain, "alice").tls is None


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{", "is not an endpoints file: not JSON"),
        ("{}", "is not an endpoints file: no 'apps' where expected"),
        ('{"apps": {}, "kms": {}}', "no application 'alice' in"),
        ('{"apps": {"alice": []}, "kms": {}}', "not laid out as 'qkdn network up' writes it"),
    ],
)
def test_the_reader_names_what_is_wrong(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(content)
    with pytest.raises(QkdnError, match=error):
        application_endpoint(path, "alice")


def test_the_reader_refuses_a_km_with_no_scheme_installed(tmp_path: Path) -> None:
    path = write_endpoints(tmp_path, {"carrier-pigeon": "carrier-pigeon://loft"})
    with pytest.raises(QkdnError, match=r"km-a serves Ak over carrier-pigeon .* no installed"):
        application_endpoint(path, "alice")
