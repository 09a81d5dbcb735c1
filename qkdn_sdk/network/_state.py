"""A network's state directory: who uses it, how it is stopped, and what is kept in it.

Theory of operation
-------------------
A state directory (``qkdn network up --state-dir``, ``qkdn network configure --state-dir``)
holds private keys, link secrets and key stores, so:

- :func:`make_state_dir` makes it owner-only and, when it made it, writes a ``.gitignore`` of
  ``*`` into it: a state directory inside a work tree is never committed by accident;
- :func:`locked` holds ``network.lock`` in it (``flock``, exclusive) while a network runs or
  its files are written. The OS releases the lock when the process ends, even by SIGKILL, so a
  held lock means a live process; a second network on the directory is refused before it
  changes a file (:class:`StateDirInUse`);
- :func:`pidfile` writes ``network.pid`` (mode 0600) while a network runs and removes it when
  it stops; :func:`stop_network` (``qkdn network down``) reads it, checks that the process
  still holds the lock (a pidfile left by a network that was killed names a process that does
  not: it is reported and removed, and no process is signalled), sends SIGTERM and waits for
  the lock to be released;
- :func:`reuse_dev_pki` keeps the certificates and keys of the PKI that are still valid and
  issues only the missing ones, so restarting a network (or updating a deployment) does not
  replace the keys the running roles or applications hold.

The lock is a file of its own, never removed: removing a locked file lets a second process
lock a new file of the same name while the first still holds the old one.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from qkdn_sdk._files import write_atomically
from qkdn_sdk.errors import QkdnError
from qkdn_sdk.pki import CA_CERT_FILE, CA_KEY_FILE, write_dev_pki

__all__ = [
    "CA_NAME",
    "LOCK_FILE",
    "PID_FILE",
    "PKI_DIR",
    "NetworkStateError",
    "StateDirInUse",
    "locked",
    "make_state_dir",
    "pidfile",
    "reuse_dev_pki",
    "stop_network",
]

LOCK_FILE = "network.lock"
PID_FILE = "network.pid"
PKI_DIR = "pki"
CA_NAME = "qkdn-dev-ca"
_GITIGNORE = b"# written by qkdn: keys, link secrets and key stores are never committed\n*\n"
_POLL = 0.05  # seconds between looks at another process's lock: it gives no event to wait on


class NetworkStateError(QkdnError):
    """A state directory cannot be used, or the network in it cannot be stopped; the text says
    which directory and why, in one line."""


class StateDirInUse(NetworkStateError):
    """Another process holds the state directory's lock."""


def make_state_dir(directory: Path) -> None:
    """Make ``directory`` (and its parents) owner-only when missing, with a ``.gitignore`` of
    ``*`` in it; an existing directory is left as it is. Raises :class:`NetworkStateError`."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    except FileExistsError:
        return
    except OSError as exc:
        raise NetworkStateError(f"cannot make {directory}: {exc.strerror or exc}") from None
    try:
        write_atomically(directory / ".gitignore", _GITIGNORE)
    except OSError as exc:
        raise NetworkStateError(f"cannot write {directory}/.gitignore: {exc.strerror}") from None


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the exclusive lock of the state directory ``directory`` (which exists) for the
    block. Raises :class:`StateDirInUse` at once when another process holds it, naming that
    process when its pidfile does, and :class:`NetworkStateError` when the lock file cannot be
    opened."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise NetworkStateError(
            f"cannot open {directory / LOCK_FILE}: {exc.strerror or exc}"
        ) from None
    try:
        if not _try_lock(fd):
            pid = _read_pid(directory)
            holder = f" (pid {pid})" if pid is not None else ""
            raise StateDirInUse(
                f"{directory} is in use by another network{holder}: stop it with "
                f"'qkdn network down {directory}'"
            )
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def pidfile(directory: Path) -> Iterator[None]:
    """Write this process's ID to ``directory/network.pid`` (mode 0600) for the block, and
    remove it after. Call it holding :func:`locked`. Raises :class:`NetworkStateError`."""
    path = directory / PID_FILE
    try:
        write_atomically(path, f"{os.getpid()}\n".encode(), private=True)
    except OSError as exc:
        raise NetworkStateError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def stop_network(directory: Path, *, timeout: float = 30.0) -> int:
    """Stop the network running in the state directory ``directory`` (``qkdn network down``):
    SIGTERM to the process its pidfile names, then wait until that process released the
    directory's lock (it has stopped every role) and ended, at most ``timeout`` seconds.
    Returns the process ID.

    Raises :class:`NetworkStateError` when no network runs there (no pidfile; or a pidfile
    whose process does not hold the lock: that stale pidfile is removed and nothing is
    signalled), when the process cannot be signalled, or when it has not stopped in time.
    """
    lock_path = directory / LOCK_FILE
    pid = _read_pid(directory)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:  # no such directory
        raise NetworkStateError(f"no network runs in {directory}: it has no {PID_FILE}") from None
    except OSError as exc:
        raise NetworkStateError(f"cannot open {lock_path}: {exc.strerror or exc}") from None
    try:
        if _try_lock(fd):  # nobody holds it: no network runs here
            if pid is None:
                raise NetworkStateError(f"no network runs in {directory}: it has no {PID_FILE}")
            (directory / PID_FILE).unlink(missing_ok=True)  # under the lock: no network starts
            raise NetworkStateError(
                f"no network runs in {directory}: its {PID_FILE} (pid {pid}) was left by a "
                "network that did not stop cleanly; removed it"
            )
        if pid is None:
            raise NetworkStateError(
                f"a process holds the lock of {directory} but names itself in no {PID_FILE} "
                "(a network starting, or configure writing): try again in a moment"
            )
        if not _has_open(pid, lock_path):
            raise NetworkStateError(
                f"pid {pid} of {directory / PID_FILE} does not hold {lock_path}: not stopping it"
            )
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            raise NetworkStateError(f"no network runs in {directory}: pid {pid} ended") from None
        except PermissionError:
            raise NetworkStateError(
                f"not allowed to stop pid {pid}, the network in {directory}"
            ) from None
        deadline = time.monotonic() + timeout
        while not _try_lock(fd) or _alive(pid):  # roles stopped, then the process ended
            if time.monotonic() > deadline:
                raise NetworkStateError(
                    f"the network in {directory} (pid {pid}) has not stopped within "
                    f"{timeout:g} s of SIGTERM"
                )
            time.sleep(_POLL)
        return pid
    finally:
        os.close(fd)


def reuse_dev_pki(directory: Path, entities: Sequence[str]) -> list[str]:
    """The development PKI of ``entities`` in ``directory``, keeping what is there and valid:
    each entity whose certificate and key exist, match, name it, are signed by the directory's
    CA and have not expired keeps them; the others get new ones (all of them when there is no
    CA yet). Returns the entities issued. Raises :class:`~qkdn_sdk.pki.PKIError` as
    :func:`~qkdn_sdk.pki.write_dev_pki` does (an unusable CA among them)."""
    ca_path = directory / CA_CERT_FILE
    try:
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    except (OSError, ValueError):
        ca = None  # no CA: write_dev_pki makes one (or says what is wrong with the one there)
    missing = [
        entity
        for entity in entities
        if ca is None
        or not (directory / CA_KEY_FILE).exists()
        or not _valid_entity(directory, entity, ca)
    ]
    write_dev_pki(directory, CA_NAME, missing)
    return missing


def _valid_entity(directory: Path, entity: str, ca: x509.Certificate) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((directory / f"{entity}.pem").read_bytes())
        key = serialization.load_pem_private_key(
            (directory / f"{entity}.key").read_bytes(), password=None
        )
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    now = datetime.datetime.now(datetime.UTC)
    return (
        names == [entity]
        and cert.not_valid_before_utc <= now < cert.not_valid_after_utc
        and key.public_key() == cert.public_key()
    )


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(directory: Path) -> int | None:
    try:
        return int((directory / PID_FILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet waited for, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state after the command name, "Z" for a zombie
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open; True when this system cannot tell (no
    ``/proc/<pid>/fd``, or not ours to read)."""
    fds = Path(f"/proc/{pid}/fd")
    wanted = path.stat()
    try:
        entries = list(fds.iterdir())
    except FileNotFoundError:
        return not Path("/proc/self/fd").exists()  # Linux: pid is gone; elsewhere: cannot tell
    except PermissionError:
        return True
    for entry in entries:
        try:
            found = entry.stat()
        except OSError:
            continue  # closed meanwhile
        if (found.st_dev, found.st_ino) == (wanted.st_dev, wanted.st_ino):
            return True
    return False
