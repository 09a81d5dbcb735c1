"""What more than one ``qkdn`` command uses: how a command ends, and the options it checks
before it starts anything.

- :func:`fail` ends a command with one line on stderr and exit status 1; :func:`_interrupted`
  ends it quietly with exit status 130 after Ctrl-C;
- :func:`_run` runs trio and takes the one error out of trio's exception groups, so the
  commands catch :class:`~qkdn_sdk.errors.QkdnError` as if there were no groups;
- the TLS options (``--ca``, ``--cert``, ``--key``, ``--identity``) and :func:`_tls_settings`,
  which checks them against the URL's transport (:func:`_transport_of`), and the validators of
  the options in seconds: errors speak of ``--ca``, ``--cert`` and ``--key`` rather than of
  Python objects;
- :func:`_choice`, the parser of an option with a fixed set of values, whose error says what
  the value should have been (``'nope' is not a transport: choose tcp+tls, https, grpcs``);
- JSON on stdout (:func:`_print_json`) and log records on stderr, one line each
  (:func:`_logging_to_stderr`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import trio
import typer

from qkdn_sdk.errors import QkdnError, TransportError
from qkdn_sdk.tls import TLSConfig, TLSConfigError
from qkdn_sdk.transport import Transport, transport_registry


def fail(message: str) -> NoReturn:
    """End the command with one line on stderr and exit status 1."""
    typer.echo(f"qkdn: {message}", err=True)
    raise typer.Exit(1)


def _print_json(value: object) -> None:
    sys.stdout.write(_json(value, indent=True) + "\n")


def _json(value: object, *, indent: bool = False) -> str:
    """``value`` as JSON text."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode()


def _interrupted() -> NoReturn:
    """End the command after Ctrl-C: quietly, with the status a shell gives SIGINT (128 + 2)."""
    if sys.stderr.isatty():
        sys.stderr.write("\n")  # the shell prompt starts on a line of its own, not after ^C
    raise typer.Exit(130)


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.Enum)


def _run(function: Callable[[], Awaitable[_T]]) -> _T:
    """``trio.run(function)``, with the error that ended it taken out of trio's exception groups.

    Ctrl-C (a :class:`KeyboardInterrupt`, alone or anywhere in a group) ends the command through
    :func:`_interrupted`. A group holding only :class:`~qkdn_sdk.errors.QkdnError` is raised as
    its first one, so callers catch ``QkdnError`` (or a subclass) as usual. Any other exception
    is a bug and is raised as it is: its traceback is for whoever fixes it.
    """
    try:
        return trio.run(function)
    except KeyboardInterrupt:
        _interrupted()
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            _interrupted()
        if all(isinstance(leaf, QkdnError) for leaf in leaves):
            raise leaves[0] from None
        raise


def _not_one_of(value: str, what: str, choices: Iterable[str]) -> str:
    """The error of a value outside its choices: ``'nope' is not a transport: choose tcp,
    https``."""
    return f"{value!r} is not {what}: choose {', '.join(choices)}"


def _choice(choices: type[_E], what: str) -> Callable[[Any], _E]:
    """The ``parser=`` of an option whose values are those of the enum ``choices``; ``what``
    names one, with its article (``"a transport"``). The option keeps its enum annotation, so
    ``--help`` and shell completion still list the values."""

    def parse(value: Any) -> _E:
        if isinstance(value, choices):  # the default
            return value
        for choice in choices:
            if choice.value == value:
                return choice
        raise typer.BadParameter(_not_one_of(str(value), what, (c.value for c in choices)))

    return parse


def _positive_seconds(value: float) -> float:
    if not value > 0:  # not "value <= 0": nan must be refused too
        raise typer.BadParameter(f"must be more than 0 seconds, not {value:g}")
    return value


def _seconds(value: float) -> float:
    if not value >= 0:
        raise typer.BadParameter(f"must be 0 seconds or more, not {value:g}")
    return value


# --- TLS options shared by send and listen ---------------------------------------------------

_CA = Annotated[
    Path | None, typer.Option("--ca", help="CA certificate (PEM) that verifies the peer.")
]
_CERT = Annotated[Path | None, typer.Option("--cert", help="Our certificate (PEM).")]
_KEY = Annotated[Path | None, typer.Option("--key", help="Our private key (PEM).")]
_IDENTITY = Annotated[
    str | None,
    typer.Option("--identity", help="Our ID where no certificate gives it (memory://)."),
]


_TLS_OPTIONS = ("--ca", "--cert", "--key")
_TLS_FILE_OPTIONS = {"CA": "--ca", "certificate": "--cert", "key": "--key"}


def _and(items: Iterable[str], word: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    listed = list(items)
    return ", ".join(listed[:-1]) + f" {word} " + listed[-1] if len(listed) > 1 else listed[0]


def _transport_of(url: str) -> tuple[str, Transport]:
    """The scheme of ``url`` and the installed transport that serves it; ends the command when
    ``url`` is not a URL or no transport serves its scheme (the error names those installed)."""
    example_url = "e.g. tcp://127.0.0.1:5000"
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError as exc:  # an unclosed [IPv6 address, for one
        fail(f"{url!r} is not a URL ({exc}): expected SCHEME://HOST:PORT, {example_url}")
    # "localhost:5000" parses as scheme "localhost": the "://" is what says a scheme was meant.
    if not scheme or f"{scheme}://" not in url:
        fail(f"{url!r} is not a URL: expected SCHEME://HOST:PORT, {example_url}")
    try:
        return scheme, transport_registry().lookup(scheme)
    except TransportError as exc:
        fail(str(exc))


def _tls_settings(
    url: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    identity: str | None,
    *,
    server: bool,
) -> TLSConfig | None:
    """The TLS settings ``url`` needs, checked before anything starts: a TLS scheme needs
    ``--ca``, ``--cert`` and ``--key`` (mutual authentication: a ``qkdn listen`` server asks the
    client for its certificate), readable and matching; any other scheme takes none of them.
    Ends the command with one line that names the options when they do not fit."""
    scheme, transport = _transport_of(url)
    values = dict(zip(_TLS_OPTIONS, (ca, cert, key), strict=True))
    given = [option for option, value in values.items() if value is not None]
    if scheme not in transport.secure_schemes:
        if given:
            secure = [f"{name}://" for name in transport.secure_schemes]
            instead = f", or use {_and(secure, 'or')} for TLS" if secure else ""
            fail(f"{scheme}:// does not use TLS: leave out {_and(given)}{instead}")
        return None
    missing = [option for option, value in values.items() if value is None]
    if missing:
        fail(f"{scheme}:// needs {_and(_TLS_OPTIONS)} ({_and(missing)} missing)")
    if identity is not None:
        fail(f"--identity is for schemes without certificates: {scheme}:// uses the ID in --cert")
    assert ca is not None  # for mypy: checked just above
    config = TLSConfig(ca=ca, cert=cert, key=key)
    try:  # read the files now, so a bad one is named before a port is bound or a peer called
        config.server_context() if server else config.client_context()
    except TLSConfigError as exc:
        if exc.kind is None or exc.path is None:
            fail(str(exc))
        fail(f"{_TLS_FILE_OPTIONS[exc.kind]} {exc.path}: {exc.problem}")
    return config


class _OneLineFormatter(logging.Formatter):
    """``PREFIX: message`` on one line (``PREFIX: warning: ...`` from WARNING up). Only an ERROR
    record that carries an exception adds its traceback: that is a bug (a handler that raised
    something other than a QkdnError), and the traceback is for whoever fixes it."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        line = f"{self._prefix}: {level}" + " ".join(record.getMessage().splitlines())
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)
        return line


@contextlib.contextmanager
def _logging_to_stderr(prefix: str, names: Iterable[str], level: int) -> Iterator[None]:
    """Within the block, records of the loggers ``names`` at ``level`` and above go to stderr,
    one line each (:class:`_OneLineFormatter`); the loggers are as they were afterwards."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter(prefix))
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old_level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(old_level)
