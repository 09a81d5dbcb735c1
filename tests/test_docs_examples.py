"""The shell examples of the docs run as written and succeed, and so does the README's Python
program.

Every ```sh block of README.md and docs/ runs in bash, in a temporary directory, with the
installed ``qkdn`` first on PATH, and must exit 0. Two kinds of command are not run, each for a
stated reason (:data:`NOT_RUN`): the README's test-command block, and the lines that make a
virtual environment and install into it. Background jobs (``qkdn listen ... &``) are killed when
the block ends, whatever happened.

The README's ```python block of a running network is examples/get_keys.py, verbatim; it runs as
written, against ``qkdn network up`` with its state in ``state`` beside it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.test_cli import QKDN
from tests.test_cli_keys import network_up

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_PROGRAM = ROOT / "examples" / "get_keys.py"
"""The README's Python program of a running network."""
BLOCK_TIMEOUT = 120
"""Seconds a block may run before it is killed and the test fails."""

NOT_RUN = {
    "pip install": "installs from the network (minutes); the test runs where qkdn is installed",
    "-m venv": "makes the environment the install fills; the test runs where qkdn is installed",
}
"""Commands not run, by a word in them, with the reason."""
TEST_COMMAND_REASON = "the README's test-command block is what CI runs (.ci/run): the whole suite"


class Example(NamedTuple):
    where: str
    """``README.md:71``: the file and the line of the opening fence."""
    commands: list[str]
    """The block's commands, continuation lines joined, as written."""
    not_run: list[str]
    """Why commands of the block are not run (empty: all run)."""


def _commands(block: str) -> list[str]:
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if line.endswith("\\"):
            pending += line + "\n"
            continue
        commands.append(pending + line)
        pending = ""
    return [command for command in commands if command.strip()]


def _examples(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    test_command = re.search(r"<!-- test-command -->.*?<!-- /test-command -->", text, re.S)
    examples = []
    for match in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
        where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"
        commands = _commands(match.group(1))
        if test_command and test_command.start() < match.start() < test_command.end():
            examples.append(Example(where, [], [TEST_COMMAND_REASON]))
            continue
        run, not_run = [], []
        for command in commands:
            reasons = [reason for word, reason in NOT_RUN.items() if word in command]
            if reasons:
                not_run.append(f"`{command}` is not run: {reasons[0]}")
            else:
                run.append(command)
        examples.append(Example(where, run, not_run))
    return examples


EXAMPLES = [example for path in DOCS for example in _examples(path)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_docs_have_examples_that_run() -> None:
    readme = [example for example in EXAMPLES if example.where.startswith("README.md")]
    assert any("qkdn demo" in example.commands for example in readme)
    assert any(TEST_COMMAND_REASON in example.not_run for example in readme)
    assert any("qkdn send" in " ".join(example.commands) for example in EXAMPLES)
    assert any("qkdn messages" in example.commands for example in EXAMPLES)


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(
            example,
            id=example.where,
            marks=[pytest.mark.skip(reason="; ".join(example.not_run))]
            if not example.commands
            else [],
        )
        for example in EXAMPLES
    ],
)
def test_shell_example_runs(example: Example, tmp_path: Path) -> None:
    script = "\n".join(example.commands)
    # The docs listen on port 5000; the test takes a free port instead, so that a port in use
    # on this machine (or another test run) cannot fail it. Nothing else is changed.
    script = re.sub(r"(?<=:)5000\b", str(_free_port()), script)
    prelude = (
        "set -eo pipefail\n"
        # Kill what the block left in the background (the examples' `qkdn listen ... &`), and
        # keep the block's own exit status.
        "trap 'status=$?; kill $(jobs -p) 2>/dev/null || true; exit $status' EXIT\n"
    )
    env = {**os.environ, "PATH": f"{Path(QKDN).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update(NO_COLOR="1", COLUMNS="100")
    process = subprocess.Popen(
        ["bash", "-c", prelude + script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so that a timeout can kill the block and its jobs together
    )
    try:
        stdout, stderr = process.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{example.where} ran for more than {BLOCK_TIMEOUT} s:\n{stdout}\n{stderr}")
    report = f"{example.where} exited {process.returncode}:\n{script}\n--- stdout\n{stdout}\n"
    assert process.returncode == 0, report + f"--- stderr\n{stderr}"
    assert "Traceback" not in stderr, stderr


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)


def test_the_readme_python_program_is_the_example_file() -> None:
    assert README_PROGRAM.read_text(encoding="utf-8") in _python_blocks(ROOT / "README.md")


def test_the_readme_python_program_runs_against_a_running_network(tmp_path: Path) -> None:
    program = tmp_path / "get_keys.py"
    [block] = [b for b in _python_blocks(ROOT / "README.md") if "trio.run(main)" in b]
    program.write_text(block, encoding="utf-8")
    with network_up(tmp_path / "state"):  # where the program looks when given no path
        result = subprocess.run(
            [sys.executable, str(program)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    for line in lines:
        assert re.fullmatch(r"alice and bob share key [0-9a-f-]{36} \(256 bits\)", line), line
