""":class:`PostgresKeyStore`: a :class:`~qkdn_sdk.roles.keystore.KeyStore` in a PostgreSQL
database, for a KM whose keys must outlive its machine's disk, or that a database's operators
back up, replicate and watch.

It runs the statements of :mod:`~qkdn_sdk.roles.keystore._sql`, the same as
:class:`~qkdn_sdk.roles.keystore.SQLiteKeyStore`'s, with their PostgreSQL
:data:`~qkdn_sdk.roles.keystore._sql.POSTGRES` dialect, on one psycopg connection used in a
worker thread with group commit (:mod:`~qkdn_sdk.roles.keystore._threaded`): psycopg's async
connection runs on asyncio only, not under trio. The theory of operation is in
:mod:`qkdn_sdk.roles.keystore`.

Taken once, by the database
---------------------------
Every statement that reads rows it will change locks them: a take reads its pool's oldest rows
``FOR UPDATE SKIP LOCKED`` (two stores taking from one pool get disjoint rows without waiting;
only when the rows left are too few does it wait for those another transaction holds, to see
what that one left), and a lookup by key ID ``FOR UPDATE`` (it waits, and then sees the keys
gone). The transactions are ``READ COMMITTED``; a transaction that meets a deadlock or a
serialization failure is run again (after a random wait of up to 20 ms, nine times at most).
So a key is handed out once even by several stores on one database, and a commit is on disk
before it returns (the connection's ``synchronous_commit`` is turned on if the server's is
off). Storing once is not kept by the database: two stores putting the same key ID at the same
moment could both store it. The processes of one KM never do (only its primary stores keys
whose IDs come from outside; a replica, :attr:`~qkdn_sdk.roles.km.KMConfig.replica`, names its
own).

Counts
------
:meth:`count` and :meth:`counts` are O(1), from counters in memory, read afresh from the database
at the end of each of this store's transactions: they are the counts as of this store's last
transaction (or :meth:`refresh`). With one store per database that is exact; another store's
changes show from this store's next transaction on.

A broken connection
-------------------
An operation whose connection breaks (the server restarts, crashes or is out of reach) raises
:class:`~qkdn_sdk.roles.keystore.KeyStoreError`, one line naming the database, and the next one
connects again; a connection found broken before its transaction began is replaced at once. A
transaction whose commit was under way when the connection broke may have committed: keys it
took are then taken (never handed out twice), keys it put are stored (putting them again raises
:class:`~qkdn_sdk.roles.keystore.DuplicateKey`).

At rest
-------
Key bytes reach the server sealed, as in a SQLite file; the KEK never does. Unlike SQLite's
``secure_delete``, PostgreSQL leaves a deleted or rewritten row's (sealed) bytes in the table's
pages and its write-ahead log until they are reused or recycled: readable only with the KEK.

psycopg is imported only when a store opens, so the SDK imports without it.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

import trio

from qkdn_sdk.roles.keystore import _sql
from qkdn_sdk.roles.keystore._base import KeyStoreError
from qkdn_sdk.roles.keystore._seal import Sealer
from qkdn_sdk.roles.keystore._threaded import _open_sync, _ThreadedKeyStore

if TYPE_CHECKING:
    import psycopg

__all__ = ["POSTGRES_SCHEMES", "PostgresKeyStore"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""How the URL of a PostgreSQL database begins (libpq's schemes): where a role file or
``qkdn network up --store`` names a store, one that begins so is a :class:`PostgresKeyStore`."""

_RETRY_WAIT = 0.02
"""Seconds, at most, a transaction waits before it runs again after a deadlock."""
_CONNECT_TIMEOUT = 10
"""Seconds a connection may take, unless the URL says otherwise."""
_SETUP_LOCK = 0x716B_646E_6B73  # "qkdnks"
"""The advisory lock stores take while they create the tables, one at a time."""
_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


class _Postgres:
    """A psycopg connection as a :class:`~qkdn_sdk.roles.keystore._sql.Connection`: ``?``
    placeholders become ``%s``. In autocommit mode: the store says BEGIN and COMMIT."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    @property
    def dialect(self) -> _sql.Dialect:
        return _sql.POSTGRES

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _sql.Cursor:
        return self.connection.execute(_placeholders(sql), params)

    def close(self) -> None:
        self.connection.close()


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    # No statement has a "?" or a "%" in a literal.
    return sql.replace("%", "%%").replace("?", "%s")


def _database_name(url: str) -> str:
    """The database of ``url`` as errors name it: host, port and database name, never the user
    or password. Raises :class:`KeyStoreError` when ``url`` does not parse, or psycopg is
    missing."""
    try:
        import psycopg
    except ImportError:
        raise KeyStoreError(
            "cannot open a PostgreSQL key store: psycopg is not installed"
            " (pip install 'qkdn-sdk[postgres]')"
        ) from None
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        # libpq's reason may quote the password: it is left out.
        raise KeyStoreError(
            "cannot open key store: the database URL is not a PostgreSQL URL or connection string"
        ) from None
    host = urllib.parse.quote(str(params.get("host", "")), safe="")
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{host}{port}/{params.get('dbname', '')}"


def _connect(url: str, schema: str | None) -> _Postgres:
    import psycopg

    if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(url):
        url = psycopg.conninfo.make_conninfo(url, connect_timeout=_CONNECT_TIMEOUT)
    connection = psycopg.connect(url, autocommit=True)
    try:
        if schema is not None:  # made by the first store to open it
            connection.execute(
                psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema))
            )
        # A commit must be on disk before a key it took is handed out.
        setting = connection.execute("SELECT current_setting('synchronous_commit')").fetchone()
        if setting is not None and setting[0] == "off":
            connection.execute("SET synchronous_commit TO on")
    except BaseException:
        connection.close()
        raise
    return _Postgres(connection)


class PostgresKeyStore(_ThreadedKeyStore):
    """A :class:`KeyStore` in a PostgreSQL database; open it with :meth:`open`.

    A key taken stays taken after a crash of the KM or of the server; a store opened on the
    database again sees exactly the keys not yet taken, and still refuses the key IDs it
    refused. Keys are sealed as in :class:`SQLiteKeyStore`; the database never sees the KEK.
    """

    def __init__(
        self,
        url: str,
        schema: str | None,
        name: str,
        db: _Postgres,
        sealer: Sealer,
        counts: dict[str, int],
    ) -> None:
        """Use :meth:`open`."""
        import psycopg

        self._errors = (psycopg.Error,)
        self._retryable = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
        super().__init__(name, db, sealer, counts)
        self._url = url
        self._schema = schema

    @property
    def database(self) -> str:
        """The database, as errors name it (``postgresql://host:port/dbname``)."""
        return self._name

    @classmethod
    async def open(cls, url: str, *, kek: bytes, schema: str | None = None) -> Self:
        """Open the key store in the database of ``url`` (a libpq URL or connection string;
        the database must exist), creating its tables when missing, and load the pool counters.
        With a ``schema``, its tables are in that schema (made when missing): several KMs may
        then keep their stores in one database, a schema each (``qkdn network up --store``).

        Key bytes are sealed under ``kek``, the key-encryption key (:func:`load_kek` reads one
        from a file, the environment or a command). It is required: unlike a SQLite file, a
        database has no place beside it to keep one, and keeping it in the database would seal
        the keys under a key stored with them.

        Raises :class:`KeyStoreError`, one line naming the database (never the password), when
        it cannot be opened: the URL does not parse, the server cannot be reached or refuses
        the connection, the tables are of a newer schema version, or ``kek`` is not the KEK
        the store was written with.
        """
        sealer = Sealer(kek)
        name = _database_name(url) + (f" schema {schema}" if schema is not None else "")
        db, counts = await trio.to_thread.run_sync(cls._open_sync, url, schema, name, sealer)
        return cls(url, schema, name, db, sealer, counts)

    @staticmethod
    def _open_sync(
        url: str, schema: str | None, name: str, sealer: Sealer
    ) -> tuple[_Postgres, dict[str, int]]:
        import psycopg

        def prepare(db: _Postgres) -> dict[str, int]:
            db.execute(_sql.POSTGRES.begin)
            db.execute("SELECT pg_advisory_xact_lock(?)", (_SETUP_LOCK,))
            if schema is not None:
                db.connection.execute(
                    psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        psycopg.sql.Identifier(schema)
                    )
                )
            db.execute(_VERSION_TABLE)
            (version,) = db.execute("SELECT max(version) FROM schema_version").fetchone()
            if version is None:
                db.execute(
                    "INSERT INTO schema_version (version) VALUES (?)", (_sql.SCHEMA_VERSION,)
                )
            _sql.check_version(version or 0, name)
            for statement in _sql.POSTGRES.schema:
                db.execute(statement)
            _sql.check_kek(db, sealer, name)
            counts = _sql.pool_counts(db)
            db.execute("COMMIT")
            return counts

        return _open_sync(name, (psycopg.Error,), lambda: _connect(url, schema), prepare)

    def _connection_sync(self) -> _Postgres:
        if self._db is None:
            self._db = _connect(self._url, self._schema)
        assert isinstance(self._db, _Postgres)
        return self._db

    def _may_retry_sync(self, exc: Exception, began: bool) -> bool:
        db = self._db
        if isinstance(db, _Postgres) and (db.connection.broken or db.connection.closed):
            self._db = None  # the next transaction connects again
            with contextlib.suppress(*self._errors):
                db.close()
            # Broken before its transaction began, nothing ran: the connection broke while idle
            # (a restart), and a new one may do. After, the commit may have happened.
            return not began
        if not isinstance(exc, self._retryable):
            return False
        # Two stores' transactions that deadlocked (one took rows SKIP LOCKED, then waits for
        # those the other holds) would meet again at once: wait a random moment first, in
        # this worker thread.
        time.sleep(random.uniform(0.0, _RETRY_WAIT))
        return True

    def _recount_sync(self, db: _sql.Connection) -> dict[str, int]:
        return _sql.pool_counts(db)
