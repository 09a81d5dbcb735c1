"""The ``qkdn`` console script, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qkdn_sdk.codecs.frame import MAX_PAYLOAD_SIZE, encode_message
from qkdn_sdk.codecs.payload import encode_payload, message_to_dict
from qkdn_sdk.messages import Interface, Key, ak, all_messages, field_infos, kx


def _script() -> str:
    beside = Path(sys.executable).with_name("qkdn")
    if beside.exists():
        return str(beside)
    found = shutil.which("qkdn")
    if found is None:
        pytest.fail("the qkdn console script is not installed (pip install -e .)")
    return found


QKDN = _script()


def qkdn(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    return subprocess.run(
        [QKDN, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qkdn: ")
    for word in words:
        assert word in lines[0]
    return lines[0]


# --- qkdn messages -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue_json() -> list[dict[str, Any]]:
    result = qkdn("messages", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert isinstance(entries, list)
    return entries


def hex_code(code: int) -> str:
    """How the CLI prints a command code, written out here so a change of form fails a test."""
    return f"0x{code:04X}"


def test_messages_json_lists_every_registered_code(catalogue_json: list[dict[str, Any]]) -> None:
    codes = [entry["code"] for entry in catalogue_json]
    assert sorted(codes) == sorted(hex_code(cls.code) for cls in all_messages())
    assert len(codes) == len(set(codes))


def test_messages_json_entries(catalogue_json: list[dict[str, Any]]) -> None:
    by_code = {cls.code: cls for cls in all_messages()}
    for entry in catalogue_json:
        assert {
            "interface",
            "code",
            "name",
            "sender",
            "receiver",
            "response_code",
            "fields",
        } <= set(entry)
        assert re.fullmatch(r"0x[0-9A-F]{4}", entry["code"]), entry["code"]
        cls = by_code[int(entry["code"], 16)]
        assert entry["interface"] == cls.interface.value
        assert entry["name"] == cls.spec_name
        assert entry["sender"] == cls.sender.value
        assert entry["receiver"] == cls.receiver.value
        response = cls.response_type()
        assert entry["response_code"] == (None if response is None else hex_code(response.code))
        assert [
            (field["name"], field["json_name"], field["mandatory"]) for field in entry["fields"]
        ] == [(info.name, info.json_name, info.mandatory) for info in field_infos(cls)]
        for field in entry["fields"]:
            assert type(field["mandatory"]) is bool


def test_messages_json_spot_check(catalogue_json: list[dict[str, Any]]) -> None:
    (entry,) = [entry for entry in catalogue_json if entry["code"] == "0x2101"]
    assert entry["interface"] == "ak"
    assert entry["name"] == "Key request"
    assert (entry["sender"], entry["receiver"]) == ("application", "km")
    assert entry["response_code"] == "0x1203"
    fields = {field["json_name"]: field for field in entry["fields"]}
    assert fields["application_destination_id"] == {
        "name": "Application destination ID",
        "json_name": "application_destination_id",
        "mandatory": True,
    }
    assert fields["application_source_id"]["mandatory"] is False


@pytest.mark.parametrize("selection", ["ak", "kq1", "ck", "kx", "cq"])
def test_messages_interface_filter(selection: str) -> None:
    result = qkdn("messages", "--interface", selection, "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    expected = {
        hex_code(cls.code) for cls in all_messages() if cls.interface is Interface(selection)
    }
    assert {entry["code"] for entry in entries} == expected
    assert {entry["interface"] for entry in entries} == {selection}


def test_messages_ext_filter() -> None:
    result = qkdn("messages", "--interface", "ext", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert {entry["code"] for entry in entries} == {
        hex_code(cls.code) for cls in all_messages() if cls.is_extension
    }
    assert all(int(entry["code"], 16) & 0xFF >= 0x80 for entry in entries)


def test_messages_text_lists_each_code_once() -> None:
    result = qkdn("messages", "-i", "kq1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "0x3101",
        "0x1302",
        "0x1303",
        "0x3104",
        "0x1380",
        "0x1381",
        "0x3182",
    ]
    assert "Key supply [Q.4162 Table 1]" in lines[0]


def test_messages_unknown_interface() -> None:
    result = qkdn("messages", "--interface", "zz")
    line = assert_one_line_error(result, "zz")
    assert "ak" in line
    assert result.stdout == ""


def test_unknown_option_is_one_line() -> None:
    result = qkdn("messages", "--bogus")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("qkdn: ")


# --- qkdn decode ---------------------------------------------------------------------------------


def test_decode_valid_frame() -> None:
    payload = b'{"application_destination_id":"app-b","number_of_keys":2}'
    frame_hex = "0001 0000002a 2101 0039 " + payload.hex()
    result = qkdn("decode", *frame_hex.split())
    assert result.returncode == 0, result.stderr
    header, _, body = result.stdout.partition("\n")
    assert header == (
        "frame 1: version 1, message ID 42, command code 0x2101 (Key request), length 57"
    )
    assert json.loads(body) == {
        "message": "KeyRequest",
        "interface": "ak",
        "sender": "application",
        "receiver": "km",
        "payload": {"application_destination_id": "app-b", "number_of_keys": 2},
    }
    assert result.stderr == ""


def test_decode_accepts_colons_and_0x_prefix() -> None:
    payload = b"{}"
    result = qkdn("decode", "0x0001:00000001:1303:0002:" + payload.hex())
    assert result.returncode == 0, result.stderr
    assert "command code 0x1303 (Key request)" in result.stdout


def test_decode_several_frames() -> None:
    first = encode_message(ak.KeyRequest(application_destination_id="app-b"), 1)
    second = encode_message(kx.Update(kma_key_id="kk-1"), 2)
    result = qkdn("decode", first.hex(), second.hex())
    assert result.returncode == 0, result.stderr
    headers = [line for line in result.stdout.splitlines() if line.startswith("frame ")]
    assert [header.split(":")[0] for header in headers] == ["frame 1", "frame 2"]
    assert "command code 0x1182 (UPDATE message)" in headers[1]


def test_decode_frames_larger_than_the_decoder_buffer() -> None:
    # Three frames of the largest payload: more than the decoder holds at once.
    name_size = MAX_PAYLOAD_SIZE - len(
        encode_payload(ak.KeyRequest(application_destination_id="b", application_name=""))
    )
    message = ak.KeyRequest(application_destination_id="b", application_name="x" * name_size)
    frames = [encode_message(message, message_id).hex() for message_id in (1, 2, 3)]
    # One argument may not exceed 128 KiB (Linux MAX_ARG_STRLEN): two arguments per frame.
    result = qkdn("decode", *(part for hex_ in frames for part in (hex_[:20], hex_[20:])))
    assert result.returncode == 0, result.stderr
    headers = [line for line in result.stdout.splitlines() if line.startswith("frame ")]
    assert len(headers) == 3
    assert headers[2].endswith("length 65535")


def test_decode_unknown_code() -> None:
    result = qkdn("decode", "0001 00000005 7777 0002 7b7d")
    assert_one_line_error(result, "unknown command code 0x7777")
    assert "message ID 5" in result.stdout


def test_decode_truncated_payload() -> None:
    result = qkdn("decode", "0001 00000005 2101 0010 7b7d")
    assert_one_line_error(result, "announces 16 payload bytes, 2 arrived")


def test_decode_truncated_header() -> None:
    result = qkdn("decode", "0001 0000")
    assert_one_line_error(result, "frame header (4 of 10 bytes)")


def test_decode_bad_hex() -> None:
    result = qkdn("decode", "0001 00000005 21zz")
    assert_one_line_error(result, "not hexadecimal")


def test_decode_bad_payload() -> None:
    payload = b'{"number_of_keys":"5"}'
    result = qkdn("decode", "0001 00000007 2101 0016 " + payload.hex())
    line = assert_one_line_error(result, "number_of_keys: expected an integer")
    assert "application_destination_id: missing" in line


def test_decode_deeply_nested_payload() -> None:
    # orjson reads JSON nested 1,024 deep; printing it back must not end in a traceback.
    depth = 300
    payload = (
        b'{"application_destination_id":"b","extension":[{"a":'
        + b"[" * depth
        + b"]" * depth
        + b"}]}"
    )
    frame = bytes.fromhex("0001 00000001 2101") + len(payload).to_bytes(2, "big") + payload
    result = qkdn("decode", frame.hex())
    assert_one_line_error(result, "nested deeper than")


def test_decode_bad_version() -> None:
    result = qkdn("decode", "0002 00000007 2101 0002 7b7d")
    assert_one_line_error(result, "unsupported frame version 2")


def test_decode_round_trips_a_message_with_keys() -> None:
    message = ak.ResponseToKeyRequest(keys=[Key(key=b"\x01\x02", key_id="k-1")], response="success")
    result = qkdn("decode", encode_message(message, 3).hex())
    assert result.returncode == 0, result.stderr
    body = result.stdout.partition("\n")[2]
    assert json.loads(body)["payload"] == message_to_dict(message)


# --- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("--help",), ("messages", "--help"), ("decode", "--help"), ("serve", "--help")],
    ids=" ".join,
)
def test_help(args: tuple[str, ...]) -> None:
    result = qkdn(*args)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert result.stderr == ""


def test_help_lists_the_commands() -> None:
    result = qkdn("--help")
    assert "messages" in result.stdout
    assert "decode" in result.stdout


# --- qkdn demo -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--size", "12"), "size_of_key 12 is not a multiple of 8"),
        (("--number", "129"), "max_key_per_request (128)"),
        (("--number", "100", "--size", "8192"), "over the 131072 bits one request may carry"),
    ],
)
def test_demo_refuses_what_no_km_would_supply_before_starting(
    args: tuple[str, ...], problem: str
) -> None:
    result = qkdn("demo", *args)
    assert_one_line_error(result, problem)
    assert result.stdout == ""  # nothing started, nothing shown


@pytest.mark.parametrize("routing", ["distributed", "centralized"])
@pytest.mark.parametrize("mode", ["request", "proactive"])
def test_demo_in_every_mode_and_routing(mode: str, routing: str) -> None:
    """Q.4161 clause 7.1 or 7.2 at the applications, Q.4164 clause 7.1 or 7.2 between KMs and
    controller: alice and bob end with the same keys in all four."""
    result = qkdn("demo", "--mode", mode, "--routing", routing)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"relay route from the controller ({routing}): km-a -> km-b -> km-c" in result.stdout
    assert ("km-c pushed them to bob" in result.stdout) == (mode == "proactive")
    words = " ".join(result.stdout.split())  # as wide as the terminal: the lines wrap
    for hop in (
        "km-a spent 1792 bits of link key on km-a-km-b",
        "km-b spent 1792 bits of link key on km-b-km-c",
    ):
        assert f"{hop}: 1024 for the keys, 512 for authenticating the relay" in words
    assert result.stdout.rstrip().endswith("alice and bob hold the same keys")


def test_demo_over_etsi_014() -> None:
    """alice and bob speak ETSI GS QKD 014 to their KMs (Q.4161 Appendix II)."""
    result = qkdn("demo", "--transport", "https")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alice and bob reach their KMs over ETSI GS QKD 014: https://127.0.0.1:" in result.stdout
    assert result.stdout.rstrip().endswith("alice and bob hold the same keys")


def test_demo_over_etsi_014_has_no_sessions() -> None:
    result = qkdn("demo", "--transport", "https", "--mode", "proactive")
    assert_one_line_error(result, "--mode proactive needs --transport tcp+tls or grpcs")
    assert result.stdout == ""


@pytest.mark.parametrize("mode", ["request", "proactive"])
def test_demo_over_grpc(mode: str) -> None:
    result = qkdn("demo", "--transport", "grpcs", "--mode", mode)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alice and bob reach their KMs over gRPC: grpcs://127.0.0.1:" in result.stdout
    assert result.stdout.rstrip().endswith("alice and bob hold the same keys")
