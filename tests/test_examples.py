"""The programs of ``examples/``, each run as a user runs it, against a network that ``qkdn
network up`` runs in a process of its own (``nox -s examples`` runs these and the docs' examples).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli_keys import network_up

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
WAIT = 60.0


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with network_up(tmp_path_factory.mktemp("network") / "state") as path:
        yield path


def _run(example: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<example>`` with ``args``, as a user does."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / example), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def run(example: str, *args: str | Path) -> str:
    """Run ``examples/<example>`` with ``args``; its stdout (it must succeed, saying nothing on
    stderr)."""
    result = _run(example, *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_key_request_over_tls() -> None:
    result = _run("key_request_over_tls.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("app: connected to km-a at tcp+tls://127.0.0.1:")
    assert lines[1] == "KM: app-a asks 2 keys of 256 bits for app-b"
    assert [line.endswith("(256 bits)") for line in lines[2:4]] == [True, True]
    assert lines[4] == "app: refused: failure: at most 8 keys per request"


def test_alice_seals_a_file_with_a_qkd_key_and_bob_opens_it(
    endpoints: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "report.txt"
    plain.write_bytes(b"quarterly figures\n" * 1000)
    sealed, opened = tmp_path / "report.sealed", tmp_path / "report.out"
    said = run("encrypt_file.py", endpoints, "encrypt", plain, sealed)
    [key_id] = re.findall(r"^alice sealed .* with key ([0-9a-f-]{36})$", said, re.M)
    assert b"quarterly" not in sealed.read_bytes()
    assert sealed.read_bytes().startswith(key_id.encode())  # the ID travels, not the key
    assert run("encrypt_file.py", endpoints, "decrypt", sealed, opened) == (
        f"bob opened {sealed} with key {key_id}\n"
    )
    assert opened.read_bytes() == plain.read_bytes()


def test_a_sealed_file_altered_does_not_open(endpoints: Path, tmp_path: Path) -> None:
    plain, sealed = tmp_path / "note.txt", tmp_path / "note.sealed"
    plain.write_bytes(b"meet at noon")
    run("encrypt_file.py", endpoints, "encrypt", plain, sealed)
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 1
    sealed.write_bytes(bytes(data))
    result = _run("encrypt_file.py", endpoints, "decrypt", sealed, tmp_path / "out")
    assert result.returncode != 0
    assert "InvalidTag" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_plain_014_client_gets_the_same_keys_at_both_ends(endpoints: Path) -> None:
    said = run("etsi014_httpx.py", endpoints).splitlines()
    assert said[0] == "alice's KME km-a reaches bob's km-c"
    assert len(said) == 3
    for line in said[1:]:
        assert re.fullmatch(r"alice and bob share key [0-9a-f-]{36}", line), line


def test_bob_reads_alices_stream_with_the_keys_his_km_pushes(endpoints: Path) -> None:
    said = run("proactive_stream.py", endpoints, 10, 4).splitlines()
    assert said[-1] == "bob used 3 keys for 10 messages"
    read = [
        re.fullmatch(r"bob read 'message (\d+)' with key ([0-9a-f-]{36})", line)
        for line in said[:-1]
    ]
    assert all(read), said
    assert [int(match[1]) for match in read if match] == list(range(10))
    keys = [match[2] for match in read if match]
    assert keys == [keys[0]] * 4 + [keys[4]] * 4 + [keys[8]] * 2  # a new key every 4 messages
    assert len({keys[0], keys[4], keys[8]}) == 3


def test_a_network_started_and_stopped_from_python(tmp_path: Path) -> None:
    assert run("network_from_python.py", tmp_path / "state").splitlines() == [
        "line3 up: km-a, km-b, km-c with 4 QKD modules",
        "alice and bob share 3 keys, relayed by km-b",
        "line3 stopped",
    ]


def test_a_link_takes_its_keys_from_014_devices(tmp_path: Path) -> None:
    assert run("qkd_device_014.py", tmp_path / "state").splitlines() == [
        "km-b and km-c hold link key from dev-b and dev-c",
        "alice and bob share 2 keys, relayed over the devices' link",
    ]
