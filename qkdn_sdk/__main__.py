"""``python -m qkdn_sdk`` and the ``qkdn`` script: the ``qkdn`` command line.

This module is small on purpose. Importing the command line (typer, trio, rich, the transports)
takes about a second; Ctrl-C in that second must end ``qkdn`` quietly with exit status 130, as it
does while a command runs, so :func:`main` installs that handling before it imports anything
heavy. While a command runs, :func:`qkdn_sdk.cli.main` puts Python's own handler back (trio
handles Ctrl-C only under it) and, once the command is over, this one again.
"""

import os
import signal
import sys
from types import FrameType

__all__ = ["main"]


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C while no command runs (the CLI being imported, or its command over): exit at once
    with the status a shell gives SIGINT (128 + 2). Nothing is half done that needs cleaning
    up, and raising :class:`KeyboardInterrupt` instead would print a traceback from wherever
    the import was."""
    try:
        sys.stdout.flush()  # what a finished command printed is not lost
        sys.stderr.flush()
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # the shell prompt starts on a line of its own, not after ^C
            sys.stderr.flush()
    except (OSError, ValueError, RuntimeError):  # a closed stream, or one being written: let it be
        pass
    os._exit(130)


def main() -> None:
    """Entry point of the ``qkdn`` script and of ``python -m qkdn_sdk``."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not ignored (nohup, &)
        signal.signal(signal.SIGINT, _exit_interrupted)
    from qkdn_sdk.cli import main as run_command  # the heavy imports

    run_command()


if __name__ == "__main__":
    main()
