"""Fixtures shared by the test modules: the PostgreSQL server (``postgres_server``,
``postgres_url``) of tests/_postgres.py, and the key stores a whole network runs on
(``network_store``)."""

import pytest

pytest_plugins = ["tests._postgres"]

NETWORK_STORES = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=NETWORK_STORES)
def network_store(request: pytest.FixtureRequest) -> str:
    """The ``store`` of a :class:`~qkdn_sdk.network.Network`, each in turn: ``"memory"``,
    ``"sqlite"``, and the URL of a new PostgreSQL database (a schema per KM)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.param)
