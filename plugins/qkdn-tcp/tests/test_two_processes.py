"""Two processes over tcp+tls with mutual authentication, through the installed plugin.

One side is the ``qkdn`` command in a process of its own (``qkdn listen --answer-examples`` or
``qkdn send``); it finds the tcp plugin by its entry point, like any user install. The other side
is this test process. Certificates come from ``qkdn certs``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
import trio

from qkdn_sdk.errors import FailureResponse
from qkdn_sdk.messages import Interface, Message, ak, all_messages, example, kq1
from qkdn_sdk.pki import dev_tls_config
from qkdn_sdk.transport import Connection, ServerInfo, connect, serve

# `qkdn listen --answer-examples` answers these with the keys they ask for.
_KEY_REQUESTS = {ak.KeyRequest, ak.KeyRequestWithId, ak.KeyRequestWithSessionId, kq1.KeyRequest}

_GUARD = 60
QKDN = str(Path(sys.executable).with_name("qkdn"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    subprocess.run(
        [QKDN, "certs", str(directory), "--ca", "test-ca", "-e", "km-a", "-e", "app-a"],
        check=True,
        capture_output=True,
    )
    return directory


@asynccontextmanager
async def _listener(pki: Path) -> AsyncIterator[tuple[str, trio.Process]]:
    tls_options = ["--ca", str(pki / "ca.pem"), "--cert", str(pki / "km-a.pem")]
    command = [QKDN, "listen", "tcp+tls://127.0.0.1:0", "--answer-examples", *tls_options]
    command += ["--key", str(pki / "km-a.key")]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        banner = b""
        while b"\n" not in banner:
            chunk = await process.stderr.receive_some(1024)
            assert chunk, f"qkdn listen ended early: {banner!r}"
            banner += chunk
        line = banner.decode().splitlines()[0]
        assert line.startswith("listening on tcp+tls://127.0.0.1:"), line
        yield line.split()[2], process
    finally:
        process.kill()
        await process.wait()


async def _read_lines(process: trio.Process, count: int) -> list[dict[str, object]]:
    assert process.stdout is not None
    data = b""
    while data.count(b"\n") < count:
        chunk = await process.stdout.receive_some(65536)
        assert chunk, "qkdn listen stopped printing"
        data += chunk
    return [orjson.loads(line) for line in data.splitlines()[:count]]


async def test_every_ak_kq1_and_ck_message_crosses_between_two_processes(pki: Path) -> None:
    itu = {Interface.AK, Interface.KQ1, Interface.CK}
    requests = [cls for cls in all_messages() if cls.interface in itu and cls.response_type()]
    one_way = [cls for cls in all_messages() if cls.interface in itu and not cls.response_type()]
    with trio.fail_after(_GUARD):
        async with (
            _listener(pki) as (url, process),
            connect(url, tls=dev_tls_config(pki, "app-a")) as client,
        ):
            assert client.peer_id == "km-a"
            for cls in requests:
                response = await client.request(example(cls, sender="app-a"))
                if cls in _KEY_REQUESTS:  # answered with the keys asked for, fresh each time
                    assert type(response) is cls.response_type()
                    assert response.response == "success"  # type: ignore[attr-defined]
                    assert response.keys  # type: ignore[attr-defined]
                else:
                    assert response == example(cls.response_type(), sender="km-a")  # type: ignore[arg-type]
            for cls in one_way:
                await client.send(example(cls, sender="app-a"))
            lines = await _read_lines(process, len(requests) + len(one_way))
    # the listener saw every message, from the authenticated peer, with key data redacted
    assert [line["code"] for line in lines] == [f"0x{cls.code:04X}" for cls in requests + one_way]
    assert {line["peer"] for line in lines} == {"app-a"}
    supply = next(line for line in lines if line["code"] == f"0x{kq1.KeySupply.code:04X}")
    assert supply["payload"]["key"] == "<redacted>"  # type: ignore[index]
    # every table's message crossed: all of Ak 0x2101-0x210B, Kq-1, Ck 0x1401-0x140D
    codes = {cls.code for cls in requests + one_way}
    ak_codes = {0x2101, 0x2102, 0x1203, 0x2104, 0x1205, 0x1206, 0x2107, 0x2108, 0x1209, 0x120A}
    ck_codes = {0x1401, 0x4102, 0x1403, 0x4104, 0x1405, 0x1406, 0x4107, 0x4108, 0x1409}
    assert ak_codes | {0x210B} <= codes
    assert {0x3101, 0x1302, 0x1303, 0x3104} <= codes
    assert ck_codes | {0x410A, 0x140B, 0x410C, 0x140D} <= codes


async def test_qkdn_send_talks_to_a_server_in_another_process(pki: Path) -> None:
    received: list[Message] = []

    async def handler(message: Message, connection: Connection) -> Message | None:
        received.append(message)
        assert connection.peer_id == "app-a"
        return example(kq1.ResponseToKeyRequest)

    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve(
                    "tcp+tls://127.0.0.1:0",
                    handler,
                    tls=dev_tls_config(pki, "km-a"),
                    task_status=task_status,
                )
            )
            tls_options = ["--ca", str(pki / "ca.pem"), "--cert", str(pki / "app-a.pem"),
                           "--key", str(pki / "app-a.key")]  # fmt: skip
            result = await trio.run_process(
                [
                    QKDN,
                    "send",
                    info.url,
                    "kq1.KeyRequest",
                    "-f",
                    "number_of_keys=2",
                    "-f",
                    "size_of_key=256",
                    *tls_options,
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            bad = await trio.run_process(
                [
                    QKDN,
                    "send",
                    info.url,
                    "kq1.KeyRequest",
                    "-f",
                    "number_of_keys=two",
                    *tls_options,
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    printed = orjson.loads(result.stdout)
    assert printed["message"] == "kq1.ResponseToKeyRequest"
    assert printed["payload"]["response"] == "success"
    assert received == [kq1.KeyRequest(number_of_keys=2, size_of_key=256)]
    assert bad.returncode == 1
    assert bad.stderr.decode().strip() == (
        "qkdn: invalid Key request: number_of_keys: expected an integer"
    )


async def test_qkdn_listen_answers_requests_with_a_failure(pki: Path) -> None:
    with trio.fail_after(_GUARD):
        async with _plain_listener() as (url, process), connect(url) as client:
            with pytest.raises(FailureResponse, match="qkdn listen is a listener"):
                await client.request(example(kq1.KeyRequest))
            await client.send(example(kq1.ResponseToKeyRequest))
            lines = await _read_lines(process, 2)
    assert [line["name"] for line in lines] == ["Key request", "Response to key request"]
    assert lines[1]["payload"]["keys"][0]["key"] == "<redacted>"  # type: ignore[index]


@asynccontextmanager
async def _plain_listener() -> AsyncIterator[tuple[str, trio.Process]]:
    process = await trio.lowlevel.open_process(
        [QKDN, "listen", "tcp://127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        banner = b""
        while b"\n" not in banner:
            chunk = await process.stderr.receive_some(1024)
            assert chunk, f"qkdn listen ended early: {banner!r}"
            banner += chunk
        yield banner.decode().split()[2], process
    finally:
        process.kill()
        await process.wait()


async def test_qkdn_send_reads_parameters_as_json_from_stdin(pki: Path) -> None:
    received: list[Message] = []

    async def handler(message: Message, _connection: Connection) -> Message | None:
        received.append(message)
        return example(kq1.ResponseToKeyRequest)

    with trio.fail_after(_GUARD):
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve("tcp://127.0.0.1:0", handler, task_status=task_status)
            )
            result = await trio.run_process(
                [QKDN, "send", info.url, "0x1303", "--json", "-", "-f", "size_of_key=512"],
                stdin=b'{"number_of_keys": 3, "size_of_key": 128}',
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert received == [kq1.KeyRequest(number_of_keys=3, size_of_key=512)]  # --field wins
