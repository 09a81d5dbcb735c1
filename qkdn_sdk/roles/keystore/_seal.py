"""Key material at rest: the key-encryption key (KEK) of a key store and the sealing of its rows.

A store never writes a key's bytes as they are: each row's keys are sealed with
ChaCha20-Poly1305 (RFC 8439) under a key derived (keyed BLAKE2b) from the KEK and 16 bytes of
that sealing's own, and the row's identity (its key IDs' stem, first index and which keys it
holds) is the associated data, so a row's bytes cannot be moved to other key IDs or read back
after a change without the tag failing. The 16 bytes are 8 random bytes drawn when the store
opens, then a counter: unique for every sealing, which is all the derivation needs (two opens
share the random bytes with probability 2^-64). A key per sealing leaves the nonce fixed and
removes the bound a random 96-bit nonce puts on how often one key may seal (about 2^32
sealings): a KM reseals a row each time it spends part of it.

The KEK is never in the database. It comes from (:func:`load_kek`):

``file:<path>``
    a file holding 32 random bytes, made (mode 0600) when missing, and refused when other users
    may read it;
``env:<name>``
    an environment variable holding 64 hex digits;
``command:<command line>``
    a command (run without a shell) that prints 64 hex digits: the hook for an HSM or a secrets
    manager.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import shlex
import stat
import subprocess
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from qkdn_sdk.roles.keystore._base import KeyStoreError

__all__ = ["KEK_BYTES", "Sealer", "load_kek"]

KEK_BYTES = 32
_SALT_BYTES = 16
_NONCE = bytes(12)
"""Fixed: every sealing has a key of its own (see the module docstring)."""
_COMMAND_TIMEOUT = 30.0


class Sealer:
    """Seals and opens the key bytes of rows under one KEK."""

    def __init__(self, kek: bytes) -> None:
        if type(kek) is not bytes or len(kek) != KEK_BYTES:
            raise ValueError(f"a key-encryption key is {KEK_BYTES} bytes")
        self._kek = kek
        self._salts = itertools.count()
        self._salt_prefix = os.urandom(_SALT_BYTES - 8)

    def __repr__(self) -> str:
        return "<Sealer>"

    def _aead(self, salt: bytes) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(
            hashlib.blake2b(salt, key=self._kek, digest_size=32, person=b"qkdn-keystore").digest()
        )

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """The random salt, then the ciphertext and its tag."""
        # Unique, not secret: random bytes drawn once, then a counter. os.urandom for each
        # sealing would let go of the GIL each time, and a store's worker thread would wait
        # to take it back while the event loop runs Python.
        salt = self._salt_prefix + next(self._salts).to_bytes(8, "big")
        return salt + self._aead(salt).encrypt(_NONCE, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        """The plaintext of :meth:`seal`; raises :class:`KeyStoreError` when the bytes or the
        associated data were changed, or the KEK is not the one that sealed them."""
        salt, ciphertext = sealed[:_SALT_BYTES], sealed[_SALT_BYTES:]
        try:
            return self._aead(salt).decrypt(_NONCE, ciphertext, associated)
        except InvalidTag:
            raise KeyStoreError(
                "a sealed row of the key store does not open: the file was changed, or the "
                "key-encryption key is not the one it was written with"
            ) from None


def load_kek(source: str) -> bytes:
    """The KEK that ``source`` names (``file:``, ``env:`` or ``command:``, see the module
    docstring). Raises :class:`KeyStoreError`, one line saying what is wrong, never the key."""
    kind, _, rest = source.partition(":")
    if not rest:
        raise KeyStoreError(
            f"a key-encryption key source is file:<path>, env:<name> or command:<command>, "
            f"not {source!r}"
        )
    if kind == "file":
        return _kek_file(Path(rest))
    if kind == "env":
        value = os.environ.get(rest)
        if value is None:
            raise KeyStoreError(f"the environment variable {rest!r} holding the KEK is not set")
        return _from_hex(value, f"the environment variable {rest!r}")
    if kind == "command":
        return _from_hex(_run(rest), f"the output of the KEK command {rest!r}")
    raise KeyStoreError(
        f"a key-encryption key source is file:<path>, env:<name> or command:<command>, "
        f"not {kind + ':'!r}"
    )


def _from_hex(text: str, where: str) -> bytes:
    try:
        kek = bytes.fromhex(text.strip())
    except ValueError:
        kek = b""
    if len(kek) != KEK_BYTES:
        raise KeyStoreError(f"{where} is not {2 * KEK_BYTES} hex digits")
    return kek


def _run(command: str) -> str:
    try:
        done = subprocess.run(
            shlex.split(command),
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise KeyStoreError(f"the KEK command {command!r} could not run: {exc}") from None
    if done.returncode != 0:
        raise KeyStoreError(f"the KEK command {command!r} exited with {done.returncode}")
    return done.stdout


def _kek_file(path: Path) -> bytes:
    """Read the KEK file, or make it (0600, 32 random bytes) when missing."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise KeyStoreError(
                    f"other users may read or write the KEK file {str(path)!r} (mode "
                    f"{mode:04o}); make it owner-only: chmod 600 {shlex.quote(str(path))}"
                ) from None
            kek = path.read_bytes()
            if len(kek) != KEK_BYTES:
                raise KeyStoreError(
                    f"the KEK file {str(path)!r} holds {len(kek)} bytes, not {KEK_BYTES}"
                ) from None
            return kek
        kek = secrets.token_bytes(KEK_BYTES)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, kek)
            os.fsync(fd)
        finally:
            os.close(fd)
        return kek
    except OSError as exc:
        raise KeyStoreError(f"cannot read or make the KEK file {str(path)!r}: {exc}") from None
