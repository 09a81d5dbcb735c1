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
- :mod:`~qkdn_sdk.cli.network`: ``serve``, ``demo`` and the ``network`` group (``up``,
  ``configure``), with :mod:`~qkdn_sdk.cli.views`: ``network show`` and ``network status``;
- :mod:`~qkdn_sdk.cli.bench`: ``bench``;
- :mod:`~qkdn_sdk.cli.conformance`: the ``conformance`` group (``km``, ``controller``,
  ``qkd-module``).
"""

from __future__ import annotations

import sys

import typer

from qkdn_sdk.cli import bench, messages, network, peers, views
from qkdn_sdk.cli.conformance import conformance_app
from qkdn_sdk.cli.network import network_app  # importable from here, as it was

__all__ = ["app", "main"]

app = typer.Typer(
    name="qkdn",
    help="Messages, transports and roles of the ITU-T QKD network protocols (Ak, Kq-1, Ck).",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _show_help_without_command(context: typer.Context) -> None:
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())


# In the order of `qkdn --help` (which lists the groups after the commands).
app.command()(messages.messages)
app.command()(messages.decode)
app.command()(messages.transports)
app.command()(peers.send)
app.command()(peers.listen)
app.command()(peers.certs)
app.command("serve")(network.serve_role)
app.command()(network.demo)
app.command()(bench.bench)
network_app.command("show")(views.network_show)
network_app.command("status")(views.network_status_command)
app.add_typer(network_app, name="network")
app.add_typer(conformance_app, name="conformance")


def main() -> None:
    """Entry point of the ``qkdn`` script: usage errors, like domain errors, are one line (exit
    status 2 for usage, 1 for the rest); Ctrl-C ends quietly with exit status 130."""
    try:
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
    sys.exit(status if isinstance(status, int) else 0)
