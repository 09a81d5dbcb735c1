"""The ``qkdn`` command line's edges: Ctrl-C at any moment, choice errors, per-role help of
``qkdn serve``, ``--version`` and shell completion."""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import subprocess
import sys

import pytest
import trio

from qkdn_sdk.cli.network import _relay_cost
from qkdn_sdk.roles import relay
from tests.test_cli import QKDN, qkdn

# --- Ctrl-C ---------------------------------------------------------------------------------------


def _imported(module: str) -> re.Pattern[str]:
    """The line ``python -X importtime`` writes once ``module`` is imported."""
    return re.compile(rf"^import time:.*\|\s+{re.escape(module)}$", re.M)


# Moments to press Ctrl-C, each a line ``qkdn listen`` writes on stderr: with
# PYTHONPROFILEIMPORTTIME Python says on stderr when each module is imported, so the test waits
# for one of them and interrupts the import that follows, without guessing at times.
MOMENTS = {
    "after importing typer": _imported("typer"),
    "after importing trio": _imported("trio"),
    "after importing the messages": _imported("qkdn_sdk.messages"),
    "after importing the CLI's network module": _imported("qkdn_sdk.cli.network"),
    "while the command runs": re.compile(r"^listening on tcp://", re.M),
}


@pytest.mark.parametrize("moment", MOMENTS, ids=list(MOMENTS))
async def test_ctrl_c_at_any_moment_ends_quietly_with_status_130(moment: str) -> None:
    """``python -m qkdn_sdk listen`` interrupted while Python imports the CLI or once the
    command runs. (Before qkdn's first line runs, in the interpreter's own start of some
    20 ms, Python's behaviour applies: no code of qkdn can change it.)"""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    command = [sys.executable, "-m", "qkdn_sdk", "listen", "tcp://127.0.0.1:0"]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE, env=env)
    assert process.stderr is not None
    said = ""
    try:
        with trio.fail_after(60):
            while not MOMENTS[moment].search(said):
                chunk = await process.stderr.receive_some()
                assert chunk, f"qkdn ended before {moment}: {said}"
                said += chunk.decode()
            process.send_signal(signal.SIGINT)
            async for chunk in process.stderr:
                said += chunk.decode()
            status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert status == 130, said
    assert "Traceback" not in said
    assert "KeyboardInterrupt" not in said
    # nothing but what Python and qkdn said before: not even "aborted"
    known = ("import time:", "listening on")
    assert [line for line in said.splitlines() if not line.startswith(known)] == []


# --- errors of options with choices ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["demo", "--transport", "nope"],
            "'nope' is not a transport: choose tcp+tls, https, grpcs",
        ),
        (["demo", "--mode", "push"], "'push' is not a mode: choose request, proactive"),
        (["demo", "--routing", "x"], "'x' is not a routing: choose distributed, centralized"),
        (
            ["keys", "get", "alice", "--to", "bob", "--state-dir", ".", "--format", "raw"],
            "'raw' is not a key format: choose hex, base64, json",
        ),
    ],
)
def test_a_value_outside_the_choices_is_named_with_the_choices(args: list[str], error: str) -> None:
    result = qkdn(*args)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert error in line
    assert "Value error" not in line
    assert "not one of" not in line


# --- qkdn serve ROLE ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "words"),
    [
        ("km", ['role = "km"', "[[link]]", "store =", "applications ="]),
        ("controller", ['role = "controller"', "kms =", "links ="]),
        ("qkd-module", ['role = "qkd-module"', "matching_id =", "link_secret =", "km_url ="]),
    ],
)
def test_serve_role_help_shows_what_the_role_file_holds(role: str, words: list[str]) -> None:
    result = qkdn("serve", role, "--help")
    assert result.returncode == 0, result.stderr
    assert f"serve {role} [OPTIONS]" in result.stdout
    for word in words:
        assert word in result.stdout
    assert "--config" in result.stdout
    assert "--verbose" in result.stdout


def test_serve_without_a_role_lists_the_roles() -> None:
    result = qkdn("serve", "--help")
    assert result.returncode == 0
    assert re.findall(r"^  (km|controller|qkd-module) ", result.stdout, re.M) == [
        "km",
        "controller",
        "qkd-module",
    ]


def test_serve_refuses_an_unknown_role() -> None:
    result = qkdn("serve", "router", "--config", "x.toml")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "qkdn: No such command 'router'. (see 'qkdn serve --help')"
    ]


# --- --version, completion ------------------------------------------------------------------------


def test_version_is_the_installed_one() -> None:
    result = qkdn("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"qkdn {importlib.metadata.version('qkdn-sdk')}\n"


def test_show_completion_prints_a_script_for_the_shell() -> None:
    result = qkdn("--show-completion", "bash")
    assert result.returncode == 0, result.stderr
    assert "_QKDN_COMPLETE" in result.stdout
    assert "complete " in result.stdout


def test_completion_completes_commands_and_choices() -> None:
    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_QKDN_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        }
        result = subprocess.run(
            [QKDN], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert {"km", "controller", "qkd-module"} <= set(complete("qkdn serve "))
    assert set(complete("qkdn demo --transport ")) == {"tcp+tls", "https", "grpcs"}


# --- qkdn demo: what the link key paid for --------------------------------------------------------


@pytest.mark.parametrize(("number", "size"), [(4, 256), (3, 80), (1, 8)])
def test_relay_cost_adds_up_to_what_a_hop_spends(number: int, size: int) -> None:
    """The parts the demo names add up to what a hop spends (relay.units_for)."""
    text = _relay_cost(number, size)
    parts = [int(bits) for bits in re.findall(r"(?:^|, )(\d+) ", text)]
    spent = relay.units_for(relay.MAC_KEY_BYTES + number * size // 8) * relay.UNIT_BITS
    assert sum(parts) == spent
    assert text.startswith(f"{number * size} for the keys, ")


def test_relay_cost_of_the_demo() -> None:
    assert _relay_cost(4, 256) == (
        "1024 for the keys, 512 for authenticating the relay (one-time MAC keys: this hop's "
        "and the end-to-end one), 256 for encrypting its metadata"
    )
