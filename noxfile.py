"""Sessions: ``nox`` runs what CI runs (``tests``, ``lint``, ``typecheck``); ``nox -s tests``
only the tests, ``nox -s docs`` builds the documentation site, ``nox -s examples`` runs the
examples, ``nox -s conformance`` the conformance kit against the reference roles over every
transport. ``nox --list`` lists them all.

Every session installs qkdn-sdk with the transport plugins under ``plugins/`` from this checkout,
so the plugins are found through their entry points exactly as a user's install finds them.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
_PLUGIN_PATHS = sorted(
    str(path) for path in (ROOT / "plugins").iterdir() if (path / "pyproject.toml").exists()
)


def install(session: nox.Session, *extra: str) -> None:
    """qkdn-sdk with ``extra``, then the plugins: they require it by name, so it goes first."""
    session.install("-e", ".[test]", *extra)
    for plugin in _PLUGIN_PATHS:
        session.install("-e", plugin)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, every transport included."""
    install(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: its checks, and the code formatted as ``ruff format`` writes it."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the plugins (pyproject.toml ``[tool.mypy]``)."""
    install(session, "mypy>=1.11", "types-grpcio")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml, docs/), built with ``--strict``: a broken link, a
    page left out of the navigation or a missing snippet fails it; the site is in ``site/``.
    ``nox -s docs -- serve`` serves it with live reload instead."""
    session.install("-e", ".[docs]")
    env = {"NO_MKDOCS_2_WARNING": "1"}
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:], env=env)
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs, env=env)


@nox.session
def examples(session: nox.Session) -> None:
    """Every program of ``examples/`` and every example of the README and the docs, run as a
    user runs it, against a network it starts (they run in ``tests`` too); and the transport
    plugin of ``examples/transport-unix``, installed, through the conformance kit."""
    install(session)
    session.install("-e", "examples/transport-unix")  # the plugin example, as a user installs it
    session.run(
        "pytest",
        "tests/test_examples.py",
        "tests/test_docs_examples.py",
        "examples/transport-unix/tests",
        *session.posargs,
    )


@nox.session
def conformance(session: nox.Session) -> None:
    """The conformance kit (``qkdn conformance``, docs/conformance.md) against the reference KM,
    controller and QKD module, over every transport."""
    install(session)
    session.run(
        "pytest",
        "tests/test_conformance_suite.py",
        "plugins/qkdn-tcp/tests/test_conformance.py",
        "plugins/qkdn-https/tests/test_conformance.py",
        "plugins/qkdn-grpc/tests/test_conformance.py",
        *session.posargs,
    )


@nox.session
def fuzz(session: nox.Session) -> None:
    """The fuzz tests at length, 2,000,000 inputs (not run by default; docs/fuzzing.md).

    ``nox -s fuzz -- 10000000`` runs that many; further arguments go to pytest.
    ``QKDN_FUZZ_SEED`` replays the inputs of a failed live-connection run.
    """
    install(session)
    args = list(session.posargs)
    env = {"QKDN_FUZZ_PROFILE": "long"}
    if args and args[0].isdigit():
        env["QKDN_FUZZ_EXAMPLES"] = args.pop(0)
    session.run(
        "pytest", "tests/test_fuzz_codecs.py", "tests/test_fuzz_connection.py", *args, env=env
    )


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the relay's cryptography and of the key store, against
    their tests (``[tool.mutmut]`` in pyproject.toml; not run by default): prints each mutant
    that survived. A survivor that weakens confidentiality or integrity is a missing test."""
    install(session, "mutmut>=3.3")
    session.run("mutmut", "run")
    session.run("mutmut", "results")


@nox.session
def bench(session: nox.Session) -> None:
    """``qkdn bench`` (every figure beside its bare baseline; ``nox -s bench -- --quick --json
    bench.json`` passes options on), then a good client beside hostile peers and the server's
    memory, relays on line3 in both routings, and ETSI 014 key pairs through the KMs beside a
    bare hypercorn handler (not run by default)."""
    install(session)
    session.run("qkdn", "bench", *session.posargs)
    session.run("python", "benchmarks/bench_hostile.py")
    session.run("python", "benchmarks/bench_relay.py")
    session.run("python", "benchmarks/bench_etsi014.py")
