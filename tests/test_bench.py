"""``qkdn bench``: its figures, and the bare stacks that are their baselines.

The figures themselves depend on the machine and are never asserted; what is tested is that
each is measured beside its baseline, and that every bare stack really exchanges the bytes of
the messages it stands for."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import trio

from qkdn_sdk.bench import FIGURE_NAMES, Figure
from qkdn_sdk.bench._codec import codec_figures, key_response
from qkdn_sdk.bench._km import key_store, keys_delivered, relay_latency_by_size
from qkdn_sdk.bench._measure import measure, time_per_call
from qkdn_sdk.bench._processes import network_process, running
from qkdn_sdk.bench._round_trips import (
    IN_FLIGHT,
    REQUEST,
    bare_exchange,
    round_trip_figures,
    tls_pair,
)
from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import transport_registry
from tests.test_cli import qkdn

BARE_SCHEMES = ["tcp", "tcp+tls", "https", "grpcs"]


def test_a_figure_in_the_report_names_its_baseline_and_ratio() -> None:
    figure = Figure(
        name="ak_round_trip",
        transport="tcp",
        value=2500.0,
        unit="round trips/s",
        baseline=10000.0,
        case="1 in flight",
        p50=0.4,
        p99=1.23456,
    )
    document = figure.to_json()
    assert list(document)[:6] == ["name", "transport", "value", "unit", "baseline", "ratio"]
    assert document["ratio"] == 0.25
    assert document["p99"] == 1.235
    assert "baseline_is" not in document
    assert Figure(name="key_store", value=1.0, unit="MiB", baseline=None).to_json()["ratio"] is None


def test_codec_figures_are_the_three_frames_beside_orjson() -> None:
    figures = codec_figures(0.01)
    assert [figure.name for figure in figures] == [
        "codec_1_key",
        "codec_100_keys",
        "codec_max_frame",
    ]
    for figure in figures:
        assert figure.unit == "µs"
        assert figure.baseline is not None
        assert 0 < figure.baseline < figure.value
    assert figures[1].case is not None
    assert figures[1].case.startswith("100 keys")
    largest = int(figures[2].case.split(" ")[0]) if figures[2].case else 0
    assert 600 < largest < 700


def test_time_per_call_counts_every_call() -> None:
    calls = []
    seconds = time_per_call(lambda: calls.append(1), 0.01)
    assert seconds > 0
    assert len(calls) > 100


async def test_measure_runs_each_task_at_least_the_minimum() -> None:
    done = []

    async def call() -> None:
        done.append(1)
        await trio.lowlevel.checkpoint()

    sample = await measure([call, call, call], 0.0, warm_up=0.0, minimum=7)
    assert sample.count == 21 == len(done)
    assert sample.rate > 0
    assert sample.p50 <= sample.p99


@pytest.mark.parametrize("scheme", BARE_SCHEMES)
async def test_bare_exchange_answers_every_request_in_flight(scheme: str, tmp_path: Path) -> None:
    """Each call returns once its answer arrived, with the requests of many tasks in flight
    together on one connection (and on several connections to one server)."""
    bare = transport_registry().lookup(scheme).bare_exchange(scheme)
    assert bare is not None
    assert bare.description
    server_tls, client_tls = tls_pair(tmp_path, scheme)
    with trio.fail_after(30):
        async with bare_exchange(
            bare, server_tls, client_tls, REQUEST, key_response(4), connections=2
        ) as calls:
            answered = []

            async def many(call: object) -> None:
                for _ in range(5):
                    await call()  # type: ignore[operator]
                    answered.append(1)

            async with trio.open_nursery() as nursery:
                for call in calls * IN_FLIGHT:
                    nursery.start_soon(many, call)
    assert len(answered) == 2 * IN_FLIGHT * 5


async def test_the_bare_tcp_server_answers_the_frame_of_the_answer(tmp_path: Path) -> None:
    """What the bare server sends is the answer's frame, one per request frame."""
    from qkdn_sdk.codecs.frame import FrameDecoder, decode_message, encode_message

    bare = transport_registry().lookup("tcp").bare_exchange("tcp")
    assert bare is not None
    answer = key_response(4)
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(bare.serve, REQUEST, answer, None)
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(encode_message(REQUEST, 1) * 3)
        decoder, frames = FrameDecoder(), []
        while len(frames) < 3:
            decoder.receive_data(await stream.receive_some(65536))
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert [decode_message(frame) for frame in frames] == [answer] * 3


async def test_round_trip_figures_are_beside_the_bare_transport(tmp_path: Path) -> None:
    figures = await round_trip_figures("tcp", tmp_path, 0.05)
    assert [figure.name for figure in figures] == ["ak_round_trip", "ak_round_trip_pipelined"]
    for figure in figures:
        assert figure.transport == "tcp"
        assert figure.baseline is not None
        assert figure.baseline > 0
        assert figure.ratio is not None
        assert math.isfinite(figure.ratio)
        assert figure.p50 is not None
        assert figure.p99 is not None
        assert figure.p50 <= figure.p99


async def test_the_key_store_figures_measure_a_store_of_a_million_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qkdn_sdk.bench._km.STORED_KEYS", 20_000)
    reported: list[Figure] = []
    await key_store(tmp_path, 0.05, reported.extend)
    taken, on_disk, per_byte, resident = reported
    assert taken.unit == "keys/s"
    assert taken.baseline
    assert taken.value > 0
    assert on_disk.unit == "MiB on disk"
    assert on_disk.value > 0
    assert on_disk.baseline
    assert per_byte.unit == "bytes on disk per key byte"
    assert per_byte.value == pytest.approx(on_disk.value * 2**20 / (20_000 * 32))
    assert per_byte.value < per_byte.baseline  # type: ignore[operator]
    assert resident.unit == "MiB resident"
    assert resident.baseline is None


async def test_keys_delivered_measures_a_km_in_a_process_of_its_own(tmp_path: Path) -> None:
    reported: list[Figure] = []
    await keys_delivered(tmp_path, 0.1, reported.extend)
    assert [figure.name for figure in reported] == ["ak_keys_delivered"] * 2
    for figure, applications in zip(reported, ("1 application,", "16 applications,"), strict=True):
        assert figure.case.startswith(applications)
        assert "the KM in a process of its own; KM resident memory" in figure.case
        assert figure.value > 0
        assert figure.baseline
        assert "server in a process of its own" in figure.baseline_is


async def test_relay_latency_by_size_relays_along_each_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qkdn_sdk.bench._km.LINE_SIZES", (3, 4))
    reported: list[Figure] = []
    await relay_latency_by_size(tmp_path, 2, reported.extend)
    assert [figure.case.split(",")[:2] for figure in reported] == [
        ["a line of 3 KMs in one process", " 2 hops"],
        ["a line of 4 KMs in one process", " 3 hops"],
    ]
    for figure in reported:
        assert figure.name == "relay_latency_by_size"
        assert figure.unit == "ms per hop (p50)"
        assert figure.value > 0
        assert figure.baseline


async def test_a_network_process_serves_until_the_block_ends(tmp_path: Path) -> None:
    topology = "\n".join(
        [
            'transport = "tcp+tls"',
            'host = "127.0.0.1"',
            "[controller]",
            'id = "controller"',
            "[[km]]",
            'id = "km-a"',
            "[[application]]",
            'id = "alice"',
            'km = "km-a"',
            "[[application]]",
            'id = "bob"',
            'km = "km-a"',
        ]
    )
    async with network_process(tmp_path, topology + "\n") as (pid, endpoints):
        alice = endpoints["apps"]["alice"]
        tls = TLSConfig(ca=endpoints["ca"], cert=alice["cert"], key=alice["key"])
        async with KeyManagerClient.connect(
            endpoints["kms"]["km-a"]["ak"]["tcp+tls"], tls=tls
        ) as client:
            [key] = await client.get_keys("bob", 1, 256)
        assert key.size == 256
        os.kill(pid, 0)  # alive
    with pytest.raises(ProcessLookupError):  # terminated and reaped
        os.kill(pid, 0)


async def test_a_program_that_ends_before_it_serves_says_what_it_wrote(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    arguments = ["qkdn_sdk", "network", "up", str(missing), "--state-dir", str(tmp_path)]
    with pytest.raises(RuntimeError) as raised:
        async with running(arguments, "network up:"):
            raise AssertionError("never served")
    assert str(raised.value).startswith("qkdn_sdk network up ended before it served: ")
    assert "missing.toml" in str(raised.value)


def test_every_figure_is_named_in_the_help_of_the_package() -> None:
    import qkdn_sdk.bench

    for name in FIGURE_NAMES:
        assert f"``{name}``" in (qkdn_sdk.bench.__doc__ or "")


def test_bench_refuses_a_transport_that_is_not_installed() -> None:
    result = qkdn("bench", "--transport", "carrier-pigeon", "--quick")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        "qkdn: --transport: 'carrier-pigeon' is not an installed transport: choose "
    )
    assert "tcp+tls" in line.split(": choose ")[1].split(", ")
    assert "Traceback" not in result.stderr


def test_bench_refuses_a_json_path_it_cannot_write_before_it_measures(tmp_path: Path) -> None:
    for path, problem in (
        (tmp_path / "missing" / "x.json", f"no directory {tmp_path / 'missing'}"),
        (tmp_path, "it is a directory"),
    ):
        result = qkdn("bench", "--json", str(path), "--quick")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [f"qkdn: --json {path}: {problem}"]
        assert result.stdout == ""  # not even the table's header: nothing was measured
