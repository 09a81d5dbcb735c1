"""``qkdn send`` and ``qkdn listen`` as a user runs them: the installed script in a subprocess.

Every mistake ends as one line (``qkdn: ...``; exit status 1, or 2 for a usage error) and Ctrl-C
ends quietly with status 130. Servers listen on 127.0.0.1 only; every wait is bounded by
:data:`WAIT` and waits on output (a line read from a pipe), never on time.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from qkdn_sdk.codecs.payload import MAX_DEPTH, message_to_dict
from qkdn_sdk.messages import ak, example
from tests.test_cli import QKDN, assert_one_line_error, qkdn

WAIT = 30.0
"""Seconds any one wait may take before the test fails (a bound, never a pause)."""


class Running:
    """A ``qkdn`` process whose stdout and stderr lines are read by threads, so that waiting for
    a line has a timeout."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
        self.process = subprocess.Popen(
            [QKDN, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: dict[str, queue.Queue[str | None]] = {
            "stdout": queue.Queue(),
            "stderr": queue.Queue(),
        }
        self.seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._threads = [
            threading.Thread(target=self._pump, args=(pipe, self.lines[name]), daemon=True)
            for name, pipe in (("stdout", self.process.stdout), ("stderr", self.process.stderr))
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(pipe: IO[str] | None, lines: queue.Queue[str | None]) -> None:
        assert pipe is not None
        for line in pipe:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def wait_for(self, stream: str, wanted: Callable[[str], bool]) -> str:
        """The next line of ``stream`` for which ``wanted`` is true (within :data:`WAIT`)."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.lines[stream].get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no such line on {stream} within {WAIT} s: {self.seen[stream]}")
            if line is None:
                self.lines[stream].put(None)  # later waits see the end too
                pytest.fail(f"{stream} ended first: {self.seen[stream]}")
            self.seen[stream].append(line)
            if wanted(line):
                return line

    def listening_url(self) -> str:
        banner = self.wait_for("stderr", lambda line: line.startswith("listening on "))
        return banner.split()[2]

    def stop(self, how: signal.Signals = signal.SIGINT) -> int:
        """Send ``how`` (to a process still running), then :meth:`finish`."""
        if self.process.poll() is None:
            self.process.send_signal(how)
        return self.finish()

    def finish(self) -> int:
        """Wait for the end (within :data:`WAIT`); the lines not read yet land in :attr:`seen`."""
        returncode = self.process.wait(timeout=WAIT)
        for thread in self._threads:
            thread.join(timeout=WAIT)
        for name, lines in self.lines.items():
            while (line := lines.get_nowait()) is not None:
                self.seen[name].append(line)
            lines.put(None)
        return returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=WAIT)
        for pipe in (self.process.stdout, self.process.stderr):
            assert pipe is not None
            pipe.close()


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    """Start ``qkdn ARGS`` in the background; whatever is still running at the end is killed."""
    started: list[Running] = []

    def run(*args: str) -> Running:
        started.append(Running(*args))
        return started[-1]

    yield run
    for running in started:
        running.kill()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    result = qkdn("certs", str(directory), "-e", "km-a", "-e", "app-a")
    assert result.returncode == 0, result.stderr
    return directory


def tls_options(pki: Path, entity: str) -> list[str]:
    """``--ca``, ``--cert``, ``--key`` with their files, in that order (tests replace one)."""
    ca, cert, key = pki / "ca.pem", pki / f"{entity}.pem", pki / f"{entity}.key"
    return ["--ca", str(ca), "--cert", str(cert), "--key", str(key)]


@pytest.fixture(scope="module")
def answering() -> Iterator[str]:
    """The URL of a ``qkdn listen --answer-examples`` on plain TCP, for the module's senders."""
    running = Running("listen", "tcp://127.0.0.1:0", "--answer-examples")
    try:
        yield running.listening_url()
    finally:
        running.kill()


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound, never listening, held by the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def sent(*args: str) -> dict[str, Any]:
    """``qkdn send ARGS`` that must succeed: its printed response."""
    result = qkdn("send", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    printed: dict[str, Any] = json.loads(result.stdout)
    return printed


def key_bytes(response: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(key["key"]) for key in response["payload"]["keys"]]


# --- listen: mistakes at startup -----------------------------------------------------------------


def test_listen_on_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = qkdn("listen", f"tcp://127.0.0.1:{port}")
    assert_one_line_error(result, f"cannot listen on tcp://127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("foo", ["'foo' is not a URL", "tcp://"]),
        ("localhost:5000", ["'localhost:5000' is not a URL"]),
        ("tcp://[::1", ["is not a URL"]),
        ("tcp://127.0.0.1", ["expected tcp://HOST:PORT"]),
        ("tcp://127.0.0.1:99999", ["expected tcp://HOST:PORT"]),
        ("zz://127.0.0.1:5000", ["no transport for zz://", "tcp://"]),
    ],
)
def test_listen_on_a_bad_url(url: str, words: list[str]) -> None:
    assert_one_line_error(qkdn("listen", url), *words)


def test_listen_tls_without_options() -> None:
    result = qkdn("listen", "tcp+tls://127.0.0.1:0")
    assert_one_line_error(result, "tcp+tls:// needs --ca, --cert and --key")


def test_listen_cert_without_key(pki: Path) -> None:
    result = qkdn(
        "listen",
        "tcp+tls://127.0.0.1:0",
        "--ca",
        str(pki / "ca.pem"),
        "--cert",
        str(pki / "km-a.pem"),
    )
    assert_one_line_error(result, "needs --ca, --cert and --key", "--key missing")


@pytest.mark.parametrize("option", ["--ca", "--cert", "--key"])
def test_listen_missing_tls_file(pki: Path, tmp_path: Path, option: str) -> None:
    options = tls_options(pki, "km-a")
    missing = tmp_path / "missing.pem"
    options[options.index(option) + 1] = str(missing)
    result = qkdn("listen", "tcp+tls://127.0.0.1:0", *options)
    assert_one_line_error(result, f"{option} {missing}: no such file")


def test_listen_key_of_another_certificate(pki: Path) -> None:
    options = tls_options(pki, "km-a")
    options[-1] = str(pki / "app-a.key")
    result = qkdn("listen", "tcp+tls://127.0.0.1:0", *options)
    assert_one_line_error(result, "--key", "does not match the certificate")


def test_listen_tls_options_on_plain_tcp(pki: Path) -> None:
    result = qkdn("listen", "tcp://127.0.0.1:0", "--ca", str(pki / "ca.pem"))
    assert_one_line_error(result, "tcp:// does not use TLS", "--ca", "tcp+tls://")


def test_listen_identity_over_tls(pki: Path) -> None:
    result = qkdn("listen", "tcp+tls://127.0.0.1:0", *tls_options(pki, "km-a"), "--identity", "x")
    assert_one_line_error(result, "--identity", "--cert")


# --- send: mistakes --------------------------------------------------------------------------


def test_send_connection_refused(refusing_port: int) -> None:
    result = qkdn("send", f"tcp://127.0.0.1:{refusing_port}", "kq1.KeyRequest")
    assert_one_line_error(result, f"cannot connect to tcp://127.0.0.1:{refusing_port}")


def test_send_wait_gives_up_with_the_last_error(refusing_port: int) -> None:
    started = time.monotonic()
    result = qkdn("send", f"tcp://127.0.0.1:{refusing_port}", "kq1.KeyRequest", "--wait", "0.5")
    assert_one_line_error(result, "cannot connect")
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("127.0.0.1:5000", ["is not a URL", "SCHEME://HOST:PORT"]),
        ("zz://127.0.0.1:5000", ["no transport for zz:// is installed", "tcp://"]),
        ("tcp://127.0.0.1", ["expected tcp://HOST:PORT"]),
        ("tcp+tls://127.0.0.1:5000", ["tcp+tls:// needs --ca, --cert and --key"]),
    ],
)
def test_send_to_a_bad_url(url: str, words: list[str]) -> None:
    assert_one_line_error(qkdn("send", url, "kq1.KeyRequest"), *words)


def test_send_tls_says_which_option_is_missing(pki: Path) -> None:
    result = qkdn("send", "tcp+tls://127.0.0.1:5000", "kq1.KeyRequest", "--ca", str(pki / "ca.pem"))
    assert_one_line_error(result, "--cert and --key missing")


def test_send_missing_tls_file(pki: Path, tmp_path: Path) -> None:
    options = tls_options(pki, "app-a")
    options[1] = str(tmp_path / "nope.pem")
    result = qkdn("send", "tcp+tls://127.0.0.1:5000", "kq1.KeyRequest", *options)
    assert_one_line_error(result, f"--ca {tmp_path / 'nope.pem'}: no such file")


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--timeout", "-1", ["--timeout", "more than 0 seconds"]),
        ("--timeout", "0", ["--timeout", "more than 0 seconds"]),
        ("--timeout", "nan", ["--timeout"]),
        ("--timeout", "soon", ["--timeout", "number"]),
        ("--wait", "-1", ["--wait", "0 seconds or more"]),
    ],
)
def test_send_bad_seconds_are_usage_errors(option: str, value: str, words: list[str]) -> None:
    result = qkdn("send", "tcp://127.0.0.1:5000", "kq1.KeyRequest", option, value)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("qkdn: ")
    assert "qkdn send --help" in line
    for word in words:
        assert word in line


def test_send_parameters_from_a_missing_file(tmp_path: Path) -> None:
    result = qkdn("send", "tcp://127.0.0.1:5000", "kq1.KeyRequest", "--json", str(tmp_path / "p"))
    assert_one_line_error(result, f"cannot read {tmp_path / 'p'}")


def test_send_a_bad_parameter() -> None:
    result = qkdn("send", "tcp://127.0.0.1:5000", "kq1.KeyRequest", "-f", "number_of_keys=0")
    assert_one_line_error(result, "number_of_keys")


@pytest.mark.parametrize(
    ("command", "argument"),
    [("send", "URL"), ("listen", "URL"), ("decode", "HEX"), ("certs", "DIRECTORY")],
)
def test_a_missing_argument_is_one_line(command: str, argument: str) -> None:
    result = qkdn(command)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"qkdn: Missing argument '{argument}'. (see 'qkdn {command} --help')"
    ]


@pytest.mark.parametrize("command", ["messages", "decode", "transports", "send", "listen", "certs"])
def test_an_unknown_option_is_one_line(command: str) -> None:
    result = qkdn(command, "--bogus")
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"qkdn: No such option: --bogus (see 'qkdn {command} --help')"
    ]


def test_certs_days_below_one() -> None:
    result = qkdn("certs", "pki", "--days", "0")
    assert result.returncode == 2, result
    assert len(result.stderr.splitlines()) == 1
    assert "--days" in result.stderr


def test_certs_into_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    result = qkdn("certs", str(tmp_path / "taken"), "-e", "km-a")
    assert_one_line_error(result, "taken")


# --- send: naming the message ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ak.KeyRequest", "AK.keyrequest", "0x2101", "0X2101", "2101"])
def test_send_names_a_message_by_class_or_code(answering: str, name: str) -> None:
    response = sent(answering, name, "-f", "application_destination_id=app-b")
    assert response["message"] == "ak.ResponseToKeyRequest"


@pytest.mark.parametrize(
    "name", ["Key request with ID", "key  REQUEST with id", "KeyRequestWithId"]
)
def test_send_names_a_message_by_spec_name(answering: str, name: str) -> None:
    response = sent(
        answering, name, "-f", "application_source_id=app-a", "-f", 'key_ids=[{"key_id":"k-1"}]'
    )
    assert response["message"] == "ak.ResponseToKeyRequest"


@pytest.mark.parametrize("name", ["Key request", "key request", "KeyRequest", "keyrequest"])
def test_send_an_ambiguous_name_says_which_to_choose(name: str) -> None:
    result = qkdn("send", "tcp://127.0.0.1:5000", name)
    line = assert_one_line_error(result, "is ambiguous", "ak.KeyRequest", "kq1.KeyRequest")
    assert "0x2101" in line
    assert "0x1303" in line


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("ak.KeyRequst", "ak.KeyRequest"), ("Key reqest with ID", "ak.KeyRequestWithId")],
)
def test_send_an_unknown_name_suggests_the_closest(name: str, suggestion: str) -> None:
    result = qkdn("send", "tcp://127.0.0.1:5000", name)
    line = assert_one_line_error(result, f"no message is called '{name}'", "did you mean")
    assert suggestion in line


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("0x7777", ["no message has command code 0x7777"]),
        ("7777", ["no message has command code 0x7777"]),
        ("zzzzzzzz", ["no message is called 'zzzzzzzz'"]),
    ],
)
def test_send_nothing_by_that_name(name: str, words: list[str]) -> None:
    result = qkdn("send", "tcp://127.0.0.1:5000", name)
    assert_one_line_error(result, *words, "(see 'qkdn messages')")


# --- send and listen: what crosses, and how it prints ------------------------------------------


def test_send_prints_the_response_with_a_hex_code(answering: str) -> None:
    response = sent(answering, "kq1.KeyRequest")
    assert response["code"] == "0x3104"
    assert response["message"] == "kq1.ResponseToKeyRequest"
    assert response["name"] == "Response to key request"


def test_listen_prints_what_it_receives(start: Callable[..., Running]) -> None:
    listener = start("listen", "tcp://127.0.0.1:0", "--answer-examples")
    url = listener.listening_url()
    sent(url, "ak.KeyRequest", "-f", "application_destination_id=app-b")
    line = json.loads(listener.wait_for("stdout", lambda line: True))
    assert line == {
        "message": "ak.KeyRequest",
        "code": "0x2101",
        "name": "Key request",
        "payload": {"application_destination_id": "app-b"},
        "peer": None,
    }


def _deepest_payload() -> dict[str, Any]:
    """A valid key request nested as deep as a payload may be (MAX_DEPTH levels): the payload
    object, the extension list, its object, then lists."""
    inner: Any = []
    for _ in range(MAX_DEPTH - 4):
        inner = [inner]
    return {"application_destination_id": "app-b", "extension": [{"deep": inner}]}


def test_listen_prints_the_deepest_valid_payload(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    """The finding: the printer wrapped the payload one level past what orjson writes, and
    failed with "internal error" and a traceback."""
    payload = _deepest_payload()
    listener = start("listen", "tcp://127.0.0.1:0", "--answer-examples")
    url = listener.listening_url()
    parameters = tmp_path / "deep.json"
    parameters.write_text(json.dumps(payload))
    sent(url, "ak.KeyRequest", "--json", str(parameters))
    line = json.loads(listener.wait_for("stdout", lambda line: True))
    assert line["payload"] == payload
    assert line["peer"] is None


def test_decode_prints_the_deepest_valid_payload() -> None:
    payload = json.dumps(_deepest_payload(), separators=(",", ":")).encode()
    frame = (1).to_bytes(2, "big") + (7).to_bytes(4, "big") + bytes.fromhex("2101")
    result = qkdn("decode", (frame + len(payload).to_bytes(2, "big") + payload).hex())
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.split("\n", 1)[1])
    assert printed["payload"] == _deepest_payload()


def test_a_listener_answers_requests_with_a_failure(start: Callable[..., Running]) -> None:
    listener = start("listen", "tcp://127.0.0.1:0")
    url = listener.listening_url()
    result = qkdn("send", url, "kq1.KeyRequest")
    assert_one_line_error(result, "qkdn listen is a listener", "--answer-examples")
    printed = json.loads(result.stdout)  # the failure response, as received
    assert printed["code"] == "0x3104"
    assert printed["payload"]["response"].startswith("failure")


def test_send_waits_for_a_listener_that_starts_later(start: Callable[..., Running]) -> None:
    with socket.socket() as reserved:  # refuses connections until the listener takes the port
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        sender = start("send", f"tcp://127.0.0.1:{port}", "kq1.KeyRequest", "--wait", str(WAIT))
    listener = start("listen", f"tcp://127.0.0.1:{port}", "--answer-examples")
    listener.listening_url()
    assert sender.finish() == 0, sender.seen
    assert json.loads("\n".join(sender.seen["stdout"]))["code"] == "0x3104"


# --- listen --answer-examples: the keys asked for --------------------------------------------


def test_answers_an_ak_key_request_with_the_keys_asked_for(answering: str) -> None:
    response = sent(
        answering,
        "ak.KeyRequest",
        "-f",
        "application_destination_id=app-b",
        "-f",
        "number_of_keys=3",
        "-f",
        "size_of_key=512",
    )
    assert response["message"] == "ak.ResponseToKeyRequest"
    assert response["payload"]["response"] == "success"
    keys = key_bytes(response)
    assert [len(key) for key in keys] == [64, 64, 64]
    assert len(set(keys)) == 3  # random, not an example's fixed bytes
    key_ids = [key["key_id"] for key in response["payload"]["keys"]]
    assert len(set(key_ids)) == 3
    for key_id in key_ids:
        assert str(uuid.UUID(key_id)) == key_id


def test_answers_with_the_defaults_where_the_request_leaves_them_out(answering: str) -> None:
    response = sent(answering, "ak.KeyRequest", "-f", "application_destination_id=app-b")
    assert [len(key) for key in key_bytes(response)] == [32]  # 1 key of 256 bits


def test_answers_a_key_request_with_id_with_exactly_those_ids(answering: str) -> None:
    key_ids = [{"key_id": "k-7"}, {"key_id": "k-3"}, {"key_id": "k-9"}]
    response = sent(
        answering,
        "ak.KeyRequestWithId",
        "-f",
        "application_source_id=app-a",
        "-f",
        f"key_ids={json.dumps(key_ids)}",
    )
    assert [key["key_id"] for key in response["payload"]["keys"]] == ["k-7", "k-3", "k-9"]
    assert [len(key) for key in key_bytes(response)] == [32, 32, 32]


def test_answers_a_kq1_key_request(answering: str) -> None:
    response = sent(answering, "kq1.KeyRequest", "-f", "number_of_keys=2", "-f", "size_of_key=128")
    assert response["message"] == "kq1.ResponseToKeyRequest"
    assert [len(key) for key in key_bytes(response)] == [16, 16]


def test_answers_a_key_request_with_session_id(answering: str) -> None:
    response = sent(
        answering, "ak.KeyRequestWithSessionId", "-f", "session_id=s-1", "-f", "number_of_keys=4"
    )
    assert response["payload"]["session_id"] == "s-1"
    assert [len(key) for key in key_bytes(response)] == [32] * 4


@pytest.mark.parametrize(
    ("number", "bits"), [(1000, 256), (2000, 256), (10**15, 256), (1, 8 * 65_536)], ids=str
)
def test_a_too_large_ask_gets_a_failure_naming_the_limit(
    answering: str, number: int, bits: int
) -> None:
    result = qkdn(
        "send", answering, "kq1.KeyRequest", "-f", f"number_of_keys={number}",
        "-f", f"size_of_key={bits}",
    )  # fmt: skip
    assert_one_line_error(result, "65,535 bytes", "fewer or smaller keys")
    assert json.loads(result.stdout)["payload"]["keys"] == []


def test_a_key_size_of_part_of_a_byte_gets_a_failure(answering: str) -> None:
    result = qkdn("send", answering, "kq1.KeyRequest", "-f", "size_of_key=100")
    assert_one_line_error(result, "size_of_key 100", "multiple of 8")


def test_answers_other_requests_with_an_example(answering: str) -> None:
    response = sent(
        answering,
        "ak.SessionCreationRequest",
        "-f",
        "application_source_id=app-a",
        "-f",
        "application_destination_id=app-b",
    )
    assert response["message"] == "ak.ResponseToSessionCreationRequest"
    assert response["payload"] == message_to_dict(example(ak.ResponseToSessionCreationRequest))


# --- listen: what the transport refuses, one line each on stderr --------------------------------


def _frame(message_id: int, code: int, payload: bytes) -> bytes:
    return struct.pack(">HIHH", 1, message_id, code, len(payload)) + payload


def test_listen_logs_refused_frames_one_line_each(start: Callable[..., Running]) -> None:
    listener = start("listen", "tcp://127.0.0.1:0")
    host, port = listener.listening_url().removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT) as peer:
        peer.sendall(_frame(7, 0x7777, b"{}"))
        unknown = listener.wait_for("stderr", lambda line: "message ID 7" in line)
        peer.sendall(_frame(8, 0x2101, b'{"number_of_keys":"5"}'))
        invalid = listener.wait_for("stderr", lambda line: "message ID 8" in line)
    assert unknown.startswith("qkdn listen: refusing message ID 7 (0x7777): ")
    assert "unknown command code 0x7777" in unknown
    assert invalid.startswith("qkdn listen: refusing message ID 8 (0x2101): ")
    assert "number_of_keys" in invalid
    assert listener.stop() == 130
    assert listener.seen["stdout"] == []  # refused frames are not messages received
    assert not any("Traceback" in line for line in listener.seen["stderr"])


def test_listen_logs_a_refused_tls_handshake(pki: Path, start: Callable[..., Running]) -> None:
    listener = start("listen", "tcp+tls://127.0.0.1:0", *tls_options(pki, "km-a"))
    host, port = listener.listening_url().removeprefix("tcp+tls://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT) as peer:
        peer.sendall(_frame(1, 0x1303, b"{}"))  # plain TCP to a TLS port
        line = listener.wait_for("stderr", lambda line: line.startswith("qkdn listen: "))
    assert len(line) > len("qkdn listen: ")
    assert listener.stop() == 130
    assert not any("Traceback" in line for line in listener.seen["stderr"])


def test_send_to_a_tls_listener_with_a_foreign_ca(pki: Path, start: Callable[..., Running]) -> None:
    listener = start("listen", "tcp+tls://127.0.0.1:0", *tls_options(pki, "km-a"))
    url = listener.listening_url()
    options = tls_options(pki, "app-a")
    options[1] = str(pki / "app-a.pem")  # a CA that did not sign the listener's certificate
    assert_one_line_error(qkdn("send", url, "kq1.KeyRequest", *options))


def test_send_plain_tcp_to_a_tls_listener(pki: Path, start: Callable[..., Running]) -> None:
    listener = start("listen", "tcp+tls://127.0.0.1:0", *tls_options(pki, "km-a"))
    url = listener.listening_url().replace("tcp+tls://", "tcp://")
    assert_one_line_error(qkdn("send", url, "kq1.KeyRequest", "--timeout", "10"))


def test_send_over_mutual_tls(pki: Path, start: Callable[..., Running]) -> None:
    listener = start(
        "listen", "tcp+tls://127.0.0.1:0", "--answer-examples", *tls_options(pki, "km-a")
    )
    url = listener.listening_url()
    response = sent(url, "kq1.KeyRequest", *tls_options(pki, "app-a"))
    assert response["code"] == "0x3104"
    assert json.loads(listener.wait_for("stdout", lambda line: True))["peer"] == "app-a"


# --- Ctrl-C ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tcp+tls"])
def test_ctrl_c_stops_listen_quietly(pki: Path, start: Callable[..., Running], tls: bool) -> None:
    options = ["tcp+tls://127.0.0.1:0", *tls_options(pki, "km-a")] if tls else ["tcp://127.0.0.1:0"]
    listener = start("listen", *options)
    listener.listening_url()
    assert listener.stop(signal.SIGINT) == 130
    assert listener.seen["stderr"][1:] == []  # nothing after the banner
    assert listener.seen["stdout"] == []


def test_ctrl_c_stops_send_quietly(start: Callable[..., Running]) -> None:
    with socket.socket() as server:  # a peer that reads the request and never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(WAIT)
        sender = start("send", f"tcp://127.0.0.1:{server.getsockname()[1]}", "kq1.KeyRequest")
        connection, _ = server.accept()
        with connection:
            connection.settimeout(WAIT)
            assert connection.recv(10)  # the request's header: send now awaits the response
            assert sender.stop(signal.SIGINT) == 130
    assert sender.seen == {"stdout": [], "stderr": []}
