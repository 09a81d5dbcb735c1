"""A real PostgreSQL server for the tests: one per test session, a new empty database per test.

Theory of operation. :func:`find_bin_dir` finds ``initdb``, ``pg_ctl`` and ``postgres`` in one
directory: the directory of the ``pg_ctl`` on ``PATH`` (so prepending another installation's
``bin`` to ``PATH`` selects it), then Debian's ``/usr/lib/postgresql/<major>/bin``, newest first.
With none, every test that uses the fixtures is skipped with that reason.

The ``postgres_server`` fixture makes a cluster in a temporary directory with ``initdb`` and starts
it with ``pg_ctl``: listening on 127.0.0.1 only, at a free port, and on a unix socket in the same
temporary directory; ``fsync``, ``synchronous_commit`` and ``full_page_writes`` on, because the
key store's durability tests need a commit to be on disk. ``initdb``, ``pg_ctl`` and ``postgres``
refuse to run as root, and the tests and CI run as root: then the tools run as the ``postgres``
account (Debian's package makes it) or else ``nobody``, with root's groups dropped, and the
temporary directory belongs to that account. Client connections use trust authentication as the
superuser :data:`SUPERUSER`; nothing but this machine can reach the server.

A test may :meth:`PostgresServer.stop`, :meth:`~PostgresServer.start`,
:meth:`~PostgresServer.restart` or :meth:`~PostgresServer.kill` the server (a crash: SIGKILL to the
postmaster and every process it started); it restarts on the same data directory and port, so the
URLs stay valid. ``postgres_url`` starts it again, if a test left it stopped, before and after
each test; the session's end stops it, and removes its directory, however the tests ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "SUPERUSER",
    "PostgresServer",
    "find_bin_dir",
    "postgres_server",
    "postgres_url",
]

TIMEOUT = 60  # seconds; a guard against a hang of a server tool, never a wait
SUPERUSER = "qkdn"
_TOOLS = ("initdb", "pg_ctl", "postgres")
_SYSTEM_BIN_DIRS = "/usr/lib/postgresql/*/bin"
# Unprivileged accounts to run the server as when the tests run as root, in order of preference.
_ACCOUNTS = ("postgres", "nobody")
_PR_SET_CHILD_SUBREAPER = 36  # prctl(2), <linux/prctl.h>


def find_bin_dir(path: str | None = None, system_bin_dirs: str = _SYSTEM_BIN_DIRS) -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    Looks first beside the ``pg_ctl`` found on ``path`` (default: ``$PATH``; a symlink is
    followed to the installation it belongs to), then in the directories ``system_bin_dirs``
    matches, the highest major version first.
    """
    candidates: list[Path] = []
    pg_ctl = shutil.which("pg_ctl", path=path)
    if pg_ctl is not None:
        candidates.append(Path(pg_ctl).resolve().parent)
    candidates += sorted(
        (Path(found) for found in glob.glob(system_bin_dirs)),
        key=lambda found: _major_version(found.parent.name),
        reverse=True,
    )
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in _TOOLS):
            return directory
    return None


def _major_version(name: str) -> tuple[int, ...]:
    """``"15"`` -> (15,); a name that is not a version sorts first."""
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return ()


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (Linux's prctl(2)).

    ``pg_ctl`` exits once the postmaster runs, and a killed postmaster leaves its children
    behind: each becomes an orphan. Orphans go to the nearest subreaper, else to PID 1, which
    here reaps them only every second or so; until then the dead postmaster's process ID stays
    taken and a new postmaster refuses to start ("lock file already exists"). As their
    subreaper, the tests reap them at once.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(errno)}")


def _account() -> pwd.struct_passwd | None:
    """The account to run the server tools as: None when not root (they run as we do)."""
    if os.geteuid() != 0:
        return None
    for name in _ACCOUNTS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.skip(
        "PostgreSQL refuses to run as root and neither the 'postgres' nor the 'nobody' account "
        "exists to run it as."
    )


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, driven with its own ``pg_ctl``.

    Create it with :meth:`create`; :meth:`close` stops it and removes the directory.
    """

    def __init__(self, bin_dir: Path, root: Path, port: int, account: pwd.struct_passwd | None):
        self.bin_dir = bin_dir
        self.root = root
        self.port = port
        self.account = account
        self.running = False
        self._databases = itertools.count(1)

    @classmethod
    def create(cls, bin_dir: Path) -> PostgresServer:
        """initdb a new cluster and start it. Raises :class:`RuntimeError` if a tool fails."""
        account = _account()
        _become_subreaper()
        root = Path(tempfile.mkdtemp(prefix="qkdn-postgres-"))
        server = cls(bin_dir, root, _free_port(), account)
        try:
            if account is not None:
                os.chown(root, account.pw_uid, account.pw_gid)
            server._run(
                "initdb",
                "--pgdata",
                str(server.data_dir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
            )
            with (server.data_dir / "postgresql.conf").open("a") as conf:
                conf.write(server._settings())
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    def _settings(self) -> str:
        """The lines added to postgresql.conf: they hold across restarts."""
        return (
            "\n# qkdn-sdk tests\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.root}'\n"
            # Durability as in production: the durability tests are worthless without it.
            "fsync = on\n"
            "synchronous_commit = on\n"
            "full_page_writes = on\n"
        )

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server's log (``pg_ctl -l``); kept across restarts."""
        return self.root / "server.log"

    @property
    def pid(self) -> int:
        """The postmaster's process ID, from ``postmaster.pid``."""
        return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL of database ``dbname`` over TCP on loopback."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Start the server unless it runs; returns once it accepts connections (after crash
        recovery, if any). Raises :class:`RuntimeError` with the server's log if it does not
        start."""
        if not self.running:
            self._pg_ctl("start", "--log", str(self.log_file))
            self.running = True

    def stop(self) -> None:
        """Stop the server cleanly (``fast``: open transactions are rolled back, clients
        disconnected); returns once every server process has exited."""
        postmaster = self.pid
        self._pg_ctl("stop", "--mode", "fast")
        os.waitpid(postmaster, 0)
        self.running = False

    def restart(self) -> None:
        """Stop, then start again on the same data directory and port."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """Crash the server: SIGKILL to the postmaster and every process it started. Returns once
        all have exited, so :meth:`start` can follow at once (it refuses to start while the old
        postmaster's process ID is taken, or a process of the old server is still attached to
        its shared memory)."""
        postmaster = self.pid
        # Stopped, the postmaster can start no process between the listing and the kill, nor
        # reap one, so each process ID listed stays its process's until we reap it.
        os.kill(postmaster, signal.SIGSTOP)
        children = _children(postmaster)
        # Children first: killed first, the postmaster would make them notice its death and
        # answer their clients "terminating connection due to unexpected postmaster exit".
        for pid in [*children, postmaster]:
            os.kill(pid, signal.SIGKILL)
        # Once the postmaster is reaped, its children are ours (we are their subreaper).
        for pid in [postmaster, *children]:
            os.waitpid(pid, 0)
        self.running = False

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"test_{next(self._databases)}"
        self._execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (made by :meth:`create_database`), disconnecting any
        client still connected to it."""
        name = url.rsplit("/", 1)[1]
        self._execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    def close(self) -> None:
        """Stop the server (kill it if it does not stop) and remove its directory."""
        try:
            if self.running:
                try:
                    self.stop()
                except RuntimeError:
                    self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _execute(self, statement: str) -> None:
        import psycopg  # imported here, so that loading the fixtures does not cost its import

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(statement.encode())

    def _pg_ctl(self, *args: str) -> None:
        self._run(
            "pg_ctl", *args, "--pgdata", str(self.data_dir), "--wait", "--timeout", str(TIMEOUT)
        )

    def _run(self, tool: str, *args: str) -> None:
        """Run one server tool as the server's account; RuntimeError if it fails."""
        identity: Mapping[str, Any] = {}
        if self.account is not None:
            identity = {
                "user": self.account.pw_uid,
                "group": self.account.pw_gid,
                "extra_groups": [],
            }
        # The PG* variables of whoever runs the tests must not redirect the tools.
        env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
        env["LC_ALL"] = "C"
        result = subprocess.run(
            [str(self.bin_dir / tool), *args],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT + 10,
            check=False,
            **identity,
        )
        if result.returncode != 0:
            log = self.log_file.read_text()[-4000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed with exit status {result.returncode}: "
                f"{result.stdout}{result.stderr}{log}"
            )


def _children(pid: int) -> list[int]:
    """The process IDs whose parent is ``pid``, from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The fields after the command name, which is in parentheses and may hold anything.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(stat.parent.name))
    return children


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, started on first use and stopped at the session's end.

    Skips the test when no PostgreSQL server binaries are installed.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "No PostgreSQL server binaries: initdb, pg_ctl and postgres are neither beside a "
            f"pg_ctl on PATH nor in {_SYSTEM_BIN_DIRS}."
        )
    server = PostgresServer.create(bin_dir)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The libpq URL of a new empty database on the session's server, dropped after the test.

    A test may stop, restart or kill the server: it is running again before the next test.
    """
    postgres_server.start()  # if the last test left it stopped
    url = postgres_server.create_database()
    yield url
    postgres_server.start()
    postgres_server.drop_database(url)
