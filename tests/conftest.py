"""Fixtures shared by the test modules: the PostgreSQL server (``postgres_server``,
``postgres_url``) of tests/_postgres.py."""

pytest_plugins = ["tests._postgres"]
