"""``qkdn network up`` as a separate process, driven only with frames written from the spec.

The test is a third-party application: it knows Q.4161 (Tables 1-3), the TCP frame of Appendix I
(Version 2 bytes, MessageID 4, CommandCode 2, Length 2, then the JSON payload, big-endian) and
``endpoints.json``; it imports nothing of the SDK.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import struct
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).parent.parent
LINE3 = ROOT / "examples" / "topologies" / "line3.toml"


class RawApplication:
    """An application that speaks the frames of Q.4161 Appendix I over mutual TLS."""

    def __init__(self, endpoints_file: Path, app_id: str) -> None:
        endpoints = json.loads(endpoints_file.read_text())
        here = endpoints_file.parent
        app = endpoints["apps"][app_id]
        self.context = ssl.create_default_context(cafile=str(here / endpoints["ca"]))
        self.context.load_cert_chain(here / app["cert"], here / app["key"])
        url = urllib.parse.urlsplit(endpoints["kms"][app["km"]]["ak"]["tcp+tls"])
        self.host, self.port = url.hostname or "", url.port or 0
        self.next_id = 1

    async def request(self, code: int, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps(payload).encode()
        message_id = self.next_id
        self.next_id += 2
        stream = await trio.open_ssl_over_tcp_stream(
            self.host, self.port, ssl_context=self.context, https_compatible=False
        )
        async with stream:
            await stream.send_all(struct.pack(">HIHH", 1, message_id, code, len(body)) + body)
            header = await _receive_exactly(stream, 10)
            version, answered_id, response_code, length = struct.unpack(">HIHH", header)
            assert (version, answered_id) == (1, message_id)
            return response_code, json.loads(await _receive_exactly(stream, length))


async def _receive_exactly(stream: trio.SSLStream[trio.SocketStream], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, "the KM closed the connection"
        data += chunk
    return data


async def _wait_for_line(stream: trio.abc.ReceiveStream, text: str) -> str:
    seen = b""
    while text.encode() not in seen:
        chunk = await stream.receive_some()
        assert chunk, f"qkdn network up ended before saying {text!r}: {seen.decode()}"
        seen += chunk
    return seen.decode()


async def test_network_up_serves_applications_that_know_only_the_standards(
    tmp_path: Path, network_store: str
) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "qkdn_sdk", "network", "up", str(LINE3)]
    process = await trio.lowlevel.open_process(
        [*command, "--state-dir", str(state), "--store", network_store],
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stderr is not None
        with trio.fail_after(60):
            await _wait_for_line(process.stderr, "every QKD link has key")
        alice = RawApplication(state / "endpoints.json", "alice")
        bob = RawApplication(state / "endpoints.json", "bob")

        # Q.4161 Table 1 key request, code 0x2101
        request = {"application_destination_id": "bob", "number_of_keys": 2, "size_of_key": 256}
        code, response = await alice.request(0x2101, request)
        assert (code, response["response"]) == (0x1203, "success")  # Table 3
        keys = response["keys"]
        assert [len(base64.b64decode(key["key"])) for key in keys] == [32, 32]

        # Q.4161 Table 2 key request with ID, code 0x2102, at bob's KM (km-c)
        with_ids = {
            "application_source_id": "alice",
            "key_ids": [{"key_id": key["key_id"]} for key in keys],
        }
        code, response = await bob.request(0x2102, with_ids)
        assert (code, response["response"]) == (0x1203, "success")
        assert response["keys"] == [
            {"key": key["key"], "key_id": key["key_id"]} for key in keys
        ]  # byte-identical keys, same IDs, in order

        # asked again within refetch_window (his answer may have been lost): the same keys
        code, again = await bob.request(0x2102, with_ids)
        assert (code, again["response"]) == (0x1203, "success")
        assert again["keys"] == response["keys"]
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            status = await process.wait()
    assert status == 0


def test_network_up_refuses_a_store_it_does_not_know_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "qkdn_sdk", "network", "up", str(LINE3)]
    done = subprocess.run(
        [*command, "--state-dir", str(tmp_path), "--store", "mysql://db"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "qkdn: --store: store must be 'sqlite', 'memory' or a postgresql:// URL, not 'mysql://db'"
    ]


# --- one network per state directory, and `qkdn network down` -------------------------------


def qkdn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qkdn_sdk", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def files_in(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*")}


def shape(value: Any) -> Any:
    """``value`` with every URL as its scheme only: what stays when the ports differ."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, str) and "://" in value:
        return value.split("://", 1)[0]
    return value


async def start_network_up(state: Path) -> tuple[trio.Process, str]:
    """``qkdn network up`` on line3 in ``state``, once it says its roles serve."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "qkdn_sdk", "network", "up", str(LINE3), "--state-dir", str(state)],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    with trio.fail_after(60):
        said = await _wait_for_line(process.stderr, "network up: ")
    return process, said


async def test_network_down_stops_the_one_network_of_a_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process, _ = await start_network_up(state)
    try:
        pidfile = state / "network.pid"
        assert pidfile.read_text() == f"{process.pid}\n"
        assert pidfile.stat().st_mode & 0o777 == 0o600
        assert (state / ".gitignore").read_text().splitlines()[-1] == "*"
        pki = files_in(state / "pki")

        # a second network on the directory: refused before it changes a file
        second = await trio.to_thread.run_sync(
            qkdn, "network", "up", str(LINE3), "--state-dir", str(state)
        )
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"qkdn: {state} is in use by another network (pid {process.pid}): stop it with "
            f"'qkdn network down {state}'"
        ]
        assert files_in(state / "pki") == pki

        # configure writes the endpoints of its roles as network up writes those it runs
        configured = tmp_path / "deploy"
        done = await trio.to_thread.run_sync(
            qkdn, "network", "configure", str(LINE3), "--state-dir", str(configured), "--metrics"
        )
        assert done.returncode == 0, done.stderr
        up_endpoints = json.loads((state / "endpoints.json").read_text())
        assert shape(json.loads((configured / "endpoints.json").read_text())) == shape(up_endpoints)

        down = await trio.to_thread.run_sync(qkdn, "network", "down", str(state))
        assert (down.returncode, down.stderr) == (0, f"network in {state} stopped\n")
        assert process.poll() is not None  # down returns once the network has ended
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            status = await process.wait()
    assert status == 0
    assert not (state / "network.pid").exists()
    again = await trio.to_thread.run_sync(qkdn, "network", "down", str(state))
    assert (again.returncode, again.stderr) == (
        1,
        f"qkdn: no network runs in {state}: it has no network.pid\n",
    )

    # started again, the network keeps the certificates and keys its applications hold
    process, _ = await start_network_up(state)
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await process.wait() == 0
    assert files_in(state / "pki") == pki


def test_network_down_signals_no_process_that_does_not_hold_the_directory(
    tmp_path: Path,
) -> None:
    """A pidfile left by a network that was killed (SIGKILL: no clean stop) names a process
    that may since be another one: here this test's own, which must not get SIGTERM."""
    (tmp_path / "network.pid").write_text(f"{os.getpid()}\n")
    down = qkdn("network", "down", str(tmp_path))
    assert down.returncode == 1
    assert down.stderr.splitlines() == [
        f"qkdn: no network runs in {tmp_path}: its network.pid (pid {os.getpid()}) was left by "
        "a network that did not stop cleanly; removed it"
    ]
    assert not (tmp_path / "network.pid").exists()
