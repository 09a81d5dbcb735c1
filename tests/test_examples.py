"""The examples run, and say what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_key_request_over_tls() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "key_request_over_tls.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("app: connected to km-a at tcp+tls://127.0.0.1:")
    assert lines[1] == "KM: app-a asks 2 keys of 256 bits for app-b"
    assert [line.endswith("(256 bits)") for line in lines[2:4]] == [True, True]
    assert lines[4] == "app: refused: failure: at most 8 keys per request"
