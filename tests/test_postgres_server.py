"""The PostgreSQL test server of tests/_postgres.py: real, durable, on loopback only, with a new
empty database per test, and it keeps committed data across a restart and a SIGKILL. The
PostgreSQL key store's tests stand on it (issue 26).

psycopg's ``AsyncConnection`` runs on asyncio only: under trio it fails with "no running event
loop". A trio task uses psycopg's blocking connection in a worker thread instead, through
``trio.to_thread.run_sync``, as the trio tests here do.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import trio

from tests._postgres import PostgresServer, find_bin_dir

ROWS = 100
# A test whose row lock blocks fails after this long instead of hanging.
LOCK_TIMEOUT = "-c lock_timeout=10s"


def _ids(url: str) -> list[int]:
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM keys ORDER BY id")]


def _make_keys(url: str, count: int = ROWS) -> None:
    """Table ``keys`` with ids 1..count, committed."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE keys (id integer PRIMARY KEY)")
        connection.execute("INSERT INTO keys SELECT generate_series(1, %s)", (count,))


async def test_a_transaction_commits_or_rolls_back_whole(postgres_url: str) -> None:
    def transactions() -> list[int]:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute("CREATE TABLE keys (id integer PRIMARY KEY)")
            with connection.transaction():
                connection.execute("INSERT INTO keys VALUES (1), (2)")

            def insert_3_then_1_again() -> None:
                with connection.transaction():
                    connection.execute("INSERT INTO keys VALUES (3)")
                    connection.execute("INSERT INTO keys VALUES (1)")

            with pytest.raises(psycopg.errors.UniqueViolation):
                insert_3_then_1_again()
        return _ids(postgres_url)  # as another connection sees it

    assert await trio.to_thread.run_sync(transactions) == [1, 2]


def test_the_server_is_durable_on_loopback_and_not_root(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with psycopg.connect(postgres_url) as connection:
        settings = {
            name: connection.execute(f"SHOW {name}").fetchone()
            for name in ("fsync", "synchronous_commit", "full_page_writes", "listen_addresses")
        }
    assert settings == {
        "fsync": ("on",),
        "synchronous_commit": ("on",),
        "full_page_writes": ("on",),
        "listen_addresses": ("127.0.0.1",),
    }
    assert (postgres_server.root / f".s.PGSQL.{postgres_server.port}").is_socket()
    status = Path(f"/proc/{postgres_server.pid}/status").read_text().splitlines()
    uids = next(line.split()[1:] for line in status if line.startswith("Uid:"))
    assert "0" not in uids  # PostgreSQL refuses root: as root, the tests run it as another account


def test_each_database_is_new_and_empty(postgres_server: PostgresServer, postgres_url: str) -> None:
    other = postgres_server.create_database()
    try:
        assert other != postgres_url
        _make_keys(postgres_url, 3)
        for url, tables in ((postgres_url, [("keys",)]), (other, [])):
            with psycopg.connect(url) as connection:
                listed = connection.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                ).fetchall()
            assert listed == tables
    finally:
        postgres_server.drop_database(other)


def test_skip_locked_gives_two_connections_disjoint_rows(postgres_url: str) -> None:
    _make_keys(postgres_url, 10)
    claim = "SELECT id FROM keys ORDER BY id LIMIT 6 FOR UPDATE SKIP LOCKED"
    with (
        psycopg.connect(postgres_url, options=LOCK_TIMEOUT) as first,
        psycopg.connect(postgres_url, options=LOCK_TIMEOUT) as second,
    ):
        # Each SELECT opens a transaction that holds its row locks until rollback.
        taken_first = [row[0] for row in first.execute(claim)]
        taken_second = [row[0] for row in second.execute(claim)]
        assert taken_first == [1, 2, 3, 4, 5, 6]
        assert taken_second == [7, 8, 9, 10]
        first.rollback()
        assert [row[0] for row in first.execute(claim)] == [1, 2, 3, 4, 5, 6]


async def test_concurrent_claims_deliver_each_row_once(postgres_url: str) -> None:
    """Two connections in two threads delete rows in batches until none is left, as a store
    hands out keys: every row goes to exactly one of them."""
    _make_keys(postgres_url)
    delivered: list[list[int]] = [[], []]

    def take_all(taken: list[int]) -> None:
        with psycopg.connect(postgres_url, autocommit=True, options=LOCK_TIMEOUT) as connection:
            while batch := connection.execute(
                "DELETE FROM keys WHERE id IN"
                " (SELECT id FROM keys ORDER BY id LIMIT 5 FOR UPDATE SKIP LOCKED)"
                " RETURNING id"
            ).fetchall():
                taken += [row[0] for row in batch]

    async with trio.open_nursery() as nursery:
        for taken in delivered:
            nursery.start_soon(trio.to_thread.run_sync, take_all, taken)
    assert sorted(delivered[0] + delivered[1]) == list(range(1, ROWS + 1))
    assert _ids(postgres_url) == []


def test_a_restart_keeps_committed_data(postgres_server: PostgresServer, postgres_url: str) -> None:
    _make_keys(postgres_url)
    before = postgres_server.pid
    with psycopg.connect(postgres_url) as connection:
        postgres_server.restart()
        with pytest.raises(psycopg.OperationalError):
            connection.execute("SELECT 1")
    assert postgres_server.pid != before
    assert _ids(postgres_url) == list(range(1, ROWS + 1))


def test_a_sigkilled_server_restarts_with_committed_data(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    _make_keys(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("DELETE FROM keys WHERE id > 90")  # a committed delete, too
    killed = postgres_server.pid
    log_before = postgres_server.log_file.stat().st_size
    uncommitted = psycopg.connect(postgres_url)
    uncommitted.execute("INSERT INTO keys VALUES (1000)")
    postgres_server.kill()
    with pytest.raises(psycopg.OperationalError, match="server closed the connection"):
        uncommitted.commit()
    uncommitted.close()
    assert not Path(f"/proc/{killed}").exists()
    postgres_server.start()
    with postgres_server.log_file.open() as log:
        log.seek(log_before)
        assert "not properly shut down; automatic recovery in progress" in log.read()
    assert _ids(postgres_url) == list(range(1, 91))


def test_find_bin_dir_prefers_path_then_the_newest_system_version(tmp_path: Path) -> None:
    real = find_bin_dir()
    if real is None:
        pytest.skip("No PostgreSQL server binaries to lay out.")
    nowhere = tmp_path / "nowhere"
    assert find_bin_dir(path=str(nowhere), system_bin_dirs=str(tmp_path / "*" / "bin")) is None
    for directory in ("on-path", "9.6/bin", "16/bin"):
        (tmp_path / directory).mkdir(parents=True)
        for tool in ("initdb", "pg_ctl", "postgres"):
            (tmp_path / directory / tool).symlink_to(real / tool)
    system = str(tmp_path / "*" / "bin")
    assert find_bin_dir(path=str(nowhere), system_bin_dirs=system) == tmp_path / "16" / "bin"
    on_path = str(tmp_path / "on-path")
    assert find_bin_dir(path=on_path, system_bin_dirs=system) == real  # symlinks are followed
