"""Files written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place: a reader
    sees the old file or the new one, never a part. Raises :class:`OSError`.

    mkstemp creates the file with mode 0600, so a private file (a key, a link secret) is never
    readable by others, not even for a moment, and replacing an existing file does not inherit
    its looser mode; other files end with mode 0644.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o600 if private else 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
