"""The ``qkdn`` command line. Commands are thin: they parse, delegate, and print.

Every mistake a user can make ends as one line on stderr, never a traceback:

- usage errors (an unknown option, a missing argument, ``--timeout -1``): ``qkdn: ...`` and exit
  status 2, as every click program;
- everything else (a bad frame, a busy port, a missing TLS file, a refused connection, a failure
  response): ``qkdn: ...`` and exit status 1;
- Ctrl-C: nothing (a newline on a terminal) and exit status 130.

trio wraps the errors of a nursery in exception groups; :func:`~qkdn_sdk.cli._common._run` takes
the one error out, so the commands catch :class:`~qkdn_sdk.errors.QkdnError` as if there were no
groups. Options are checked (:mod:`qkdn_sdk.cli._common`) before anything is started, so errors
speak of ``--ca``, ``--cert`` and ``--key`` rather than of Python objects.

One module per command group; this one builds :data:`app` from them, in the order
``qkdn --help`` lists the commands:

- :mod:`~qkdn_sdk.cli.messages`: ``messages``, ``decode``, ``transports``;
- :mod:`~qkdn_sdk.cli.peers`: ``send``, ``listen``, ``certs``;
- :mod:`~qkdn_sdk.cli.network`: the ``serve`` group (``km``, ``controller``, ``qkd-module``),
  ``demo`` and the ``network`` group (``up``, ``configure``), with
  :mod:`~qkdn_sdk.cli.views`: ``network show`` and ``network status``;
- :mod:`~qkdn_sdk.cli.keys`: the ``keys`` group (``get``, ``fetch``): keys as an application of
  a running network;
- :mod:`~qkdn_sdk.cli.bench`: ``bench``;
- :mod:`~qkdn_sdk.cli.conformance`: the ``conformance`` group (``km``, ``controller``,
  ``qkd-module``).
"""

from __future__ import annotations

import importlib.metadata
import signal
import sys
from typing import Annotated

import typer

from qkdn_sdk.cli import bench, messages, network, peers, views
from qkdn_sdk.cli.conformance import conformance_app
from qkdn_sdk.cli.keys import keys_app
from qkdn_sdk.cli.network import network_app, serve_app  # importable from here, as they were

__all__ = ["app", "main"]

app = typer.Typer(
    name="qkdn",
    help="Messages, transports and roles of the ITU-T QKD network protocols (Ak, Kq-1, Ck).",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"qkdn {importlib.metadata.version('qkdn-sdk')}")
        raise typer.Exit()


@app.callback()
def _show_help_without_command(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed version of qkdn-sdk and exit.",
        ),
    ] = False,
) -> None:
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())


# In the order of `qkdn --help` (which lists the groups after the commands).
app.command()(messages.messages)
app.command()(messages.decode)
app.command()(messages.transports)
app.command()(peers.send)
app.command()(peers.listen)
app.command()(peers.certs)
app.command()(network.demo)
app.command()(bench.bench)
app.add_typer(serve_app, name="serve")
network_app.command("show")(views.network_show)
network_app.command("status")(views.network_status_command)
app.add_typer(network_app, name="network")
app.add_typer(keys_app, name="keys")
app.add_typer(conformance_app, name="conformance")


def main() -> None:
    """Run the command line: usage errors, like domain errors, are one line (exit status 2 for
    usage, 1 for the rest); Ctrl-C ends quietly with exit status 130.

    The command runs under Python's own SIGINT handler (a :class:`KeyboardInterrupt`, which trio
    turns into a cancellation); the handler the caller had (:mod:`qkdn_sdk.__main__`'s, for
    Ctrl-C while the CLI was imported) is back once the command is over."""
    before = signal.getsignal(signal.SIGINT)
    try:
        if before is not signal.SIG_IGN:  # ignored stays ignored, as Python itself does
            signal.signal(signal.SIGINT, signal.default_int_handler)
        status = app(standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument...
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "qkdn"
        typer.echo(f"qkdn: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("qkdn: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:  # typer turns one inside a command into status 130; not before it
        sys.exit(130)
    finally:
        if before is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, before)
    sys.exit(status if isinstance(status, int) else 0)
