"""The PostgreSQL backend: the same `Database` API as storage/db.py, for several hosts.

Writers are serialized as SQLite serializes them: every write transaction first takes one
transaction-scoped advisory lock (WRITE_LOCK), so the code above storage/ keeps the guarantee it
was written for — inside `write()`, what it read is what it writes over, with no other writer in
between (a vote counted, an intent claimed, a lease taken, an outbox row numbered). Row locks or
SERIALIZABLE would let unrelated writes run side by side, but every one of those read-then-write
sequences would then need its own proof; a kill's write is a few rows, and one lock keeps them
all correct. Reads take no lock (MVCC): a reader never waits for a writer, as with SQLite's WAL.

SQL is written once, in SQLite's dialect where both agree, and passed through `server_text`:
`?` placeholders become PostgreSQL's own `$1, $2, ...` (sent through psycopg's RawCursor, which
does not parse the text again), `:name` becomes psycopg's `%(name)s`, and SQLite's `INDEXED BY`
hint (a plan choice, never a result) is dropped. `json_extract` and `IFNULL` exist on
PostgreSQL as functions the migrations create (pg_migrations.py). Nothing here imports
pydantic: the break-glass kill uses this too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rollbot.errors import DatabaseBusy, StateUnavailable, StorageError
from rollbot.storage.chain import HEAD_SQL, next_link
from rollbot.storage.pg_common import (
    INDEXED_BY,
    RETURNING,
    TOKENS,
    Result,
    begin_write,
    connect_options,
    positional,
    with_returning_id,
)
from rollbot.storage.pg_migrations import PG_MIGRATIONS


@lru_cache(maxsize=2048)
def translate(sql: str, named: bool = False) -> str:
    """SQLite's `?` (or `:name`) placeholders to psycopg's, outside quotes and comments; a
    literal `%` doubled (psycopg reads it as a placeholder); `INDEXED BY x` dropped."""

    def token(m: re.Match[str]) -> str:
        text = m.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if text.startswith(":"):
            return f"%({text[1:]})s" if named else text
        return text.replace("%", "%%")  # psycopg reads % inside quotes too

    return TOKENS.sub(token, INDEXED_BY.sub("", sql))


@lru_cache(maxsize=2048)
def server_text(sql: str, named: bool = False) -> str:
    """What the server is sent: `?` as PostgreSQL's own `$n`, passed through psycopg's
    RawCursor unparsed (psycopg's own parsing of `%s`, a regex pass, is cached only for
    statements of at most 50 parameters: a burst's many-row INSERT paid ~0.8 ms a time);
    named parameters through psycopg's `%(name)s`. `INDEXED BY` dropped either way."""
    return translate(sql, True) if named else positional(INDEXED_BY.sub("", sql))


@lru_cache(maxsize=2048)
def _statement(sql: str, named: bool, identity: frozenset[str]) -> tuple[str, str | None, bool]:
    """(PostgreSQL's text, the table whose new id it returns for lastrowid, whether the caller's
    SQL has RETURNING itself): worked out once per statement, not per execution."""
    text, table = with_returning_id(sql, identity)
    return server_text(text, named), table, table is None and bool(RETURNING.search(sql))


def redact(url: str) -> str:
    """The URL as messages may show it: never a password (config.py refuses one anyway)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _explain(where: str, exc: Exception) -> StorageError:
    import psycopg.errors as e

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, e.LockNotAvailable | e.QueryCanceled | e.DeadlockDetected):
        return DatabaseBusy(
            f"database {where} is locked by another process (waited for the busy timeout);"
            " nothing was written"
        )
    if isinstance(exc, e.SerializationFailure):
        return DatabaseBusy(f"database {where}: a concurrent write conflicted; nothing was written")
    if isinstance(exc, e.DiskFull):
        return StorageError(f"database {where}: the disk is full; nothing was written")
    if isinstance(exc, e.InsufficientPrivilege | e.ReadOnlySqlTransaction):
        return StorageError(f"database {where} cannot be written: {text}")
    if isinstance(exc, e.OperationalError) and getattr(exc, "sqlstate", None) is None:
        return StorageError(f"database {where} cannot be reached: {text}; nothing was written")
    return StorageError(f"database {where}: {text}")


class PostgresDatabase:
    """One connection plus the transaction discipline of storage/db.py's Database."""

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        busy_timeout_ms: int = 5000,
        migrations: list[str] | None = None,
        *,
        create: bool = True,
    ) -> None:
        self.url = url
        self.path = redact(url)  # what messages name (SQLite's is the file)
        self.inode: int | None = None  # no file to be moved away
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._migrations = PG_MIGRATIONS if migrations is None else migrations
        self._create = create
        self._lock = threading.RLock()
        self._depth = 0
        # the chain's next (seq, prev_hash) once this transaction appended an event
        self.next_link: tuple[int, str] | None = None
        self._identity: frozenset[str] = frozenset()
        self._closed = False
        self.conn = self._connect()
        if not create:
            self._require_schema()
        self._chained = False  # the head is read with each BEGIN once the schema has the chain
        self._migrate()
        self._identity = frozenset(self._identity_tables())
        self._chained = len(self._migrations) >= len(PG_MIGRATIONS)

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,  # BEGIN and COMMIT are ours, as with SQLite
                row_factory=dict_row,
                **connect_options(),
            )
        except psycopg.Error as exc:
            message = f"database {self.path} cannot be reached: {_first_line(exc)}"
            if not self._create:
                raise StateUnavailable(message) from None
            raise StorageError(message) from None
        _bools_as_integers(conn)
        return conn

    def _ensure_connected(self) -> None:
        """A connection the server or the network dropped is opened again between transactions
        (a failover, a restart): never inside one, where the writes so far are gone."""
        if self._closed:  # closed by its owner: never quietly opened again (the guard refuses)
            raise StorageError(f"database {self.path}: this connection was closed")
        if self.conn.closed or self.conn.broken:
            if self._depth:
                raise StorageError(f"database {self.path}: the connection was lost mid-write")
            self.conn = self._connect()

    def _require_schema(self) -> None:
        row = self.conn.execute(
            "SELECT to_regclass('schema_version') AS v, to_regclass('holds') AS h"
        ).fetchone()
        version = 0
        if row["v"] is not None:
            got = self.conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
            version = got["v"] or 0
        if not version or row["h"] is None:
            self.conn.close()
            raise StateUnavailable(f"database {self.path} has no rollbot schema")

    def _identity_tables(self) -> set[str]:
        rows = self.conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema ="
            " current_schema() AND column_name = 'id' AND is_identity = 'YES'"
        ).fetchall()
        return {r["table_name"] for r in rows}

    # -- migrations ------------------------------------------------------------------------------
    def _current_version(self) -> int:
        row = self.conn.execute("SELECT to_regclass('schema_version') AS v").fetchone()
        if row["v"] is None:
            return 0
        got = self.conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        return int(got["v"] or 0)

    def _migrate(self) -> None:
        import psycopg

        try:
            if self._current_version() >= len(self._migrations):
                return  # up to date: no write lock, a reader never waits for a writer
            with self.write():
                self.conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                    " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                current = self._current_version()
                for version, script in enumerate(self._migrations, start=1):
                    if version <= current:
                        continue
                    if callable(script):  # a function over the Database (storage/migrations.py)
                        script(self)  # type: ignore[arg-type]
                    else:  # no parameters: one simple-protocol round trip
                        self.conn.execute(script)
                    self.conn.execute(
                        "INSERT INTO schema_version (version) VALUES (%s)", (version,)
                    )
        except StorageError:
            raise
        except psycopg.Error as exc:
            raise _explain(self.path, exc) from None

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._current_version()

    @property
    def utils(self) -> Any:
        raise StorageError("sqlite-utils works on the SQLite backend only")

    # -- transactions ----------------------------------------------------------------------------
    @contextmanager
    def patience(self, busy_timeout_ms: int) -> Iterator[None]:
        """Wait at most this long for another writer inside the block: SET LOCAL lock_timeout in
        each write transaction begun inside it (the advisory lock's wait obeys lock_timeout)."""
        with self._lock:
            before = self.busy_timeout_ms
            self.busy_timeout_ms = int(busy_timeout_ms)
            try:
                yield
            finally:
                self.busy_timeout_ms = before

    @contextmanager
    def write(self) -> Iterator[_Connection]:
        """BEGIN; the writers' lock; ... COMMIT. Nested calls join the outer transaction."""
        import psycopg

        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield _Connection(self)
                finally:
                    self._depth -= 1
                return
            self._ensure_connected()
            try:
                link = self._begin()
            except psycopg.Error as exc:
                self._rollback()
                raise _explain(self.path, exc) from None
            self._depth = 1
            self.next_link = link  # storage/events.py links the transaction's events on from it
            try:
                yield _Connection(self)
            except BaseException as exc:
                self._depth = 0
                self.next_link = None
                self._rollback()
                if isinstance(exc, psycopg.Error):
                    raise _explain(self.path, exc) from None
                raise
            self._depth = 0
            self.next_link = None
            try:
                self.conn.execute("COMMIT")
            except psycopg.Error as exc:
                if self.conn.broken:  # the server may have committed before the line dropped
                    raise StorageError(
                        f"database {self.path}: the connection was lost while committing;"
                        f" whether this write was stored is unknown ({_first_line(exc)})"
                    ) from None
                self._rollback()
                raise _explain(self.path, exc) from None

    def _begin(self) -> tuple[int, str] | None:
        """BEGIN and the writers' lock; once migrated, the chain's head too, in the same round
        trip: nearly every write appends an event, and read apart it was one more round trip
        per write (a burst of kills waits for each)."""
        if not self._chained:  # migrating, or an older schema: no chain to read yet
            self.conn.execute(begin_write(self.busy_timeout_ms))
            return None
        cur = self.conn.execute(f"{begin_write(self.busy_timeout_ms)}; {HEAD_SQL}")
        while cur.nextset():  # to the last statement's rows: the head
            pass
        head = cur.fetchone()
        return next_link(None if head is None else (head["seq"], head["hash"]))

    def _rollback(self) -> None:
        import psycopg

        try:
            if not self.conn.closed and self.conn.info.transaction_status != 0:  # not IDLE
                self.conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # a lost connection rolled it back on the server

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    # -- statements ------------------------------------------------------------------------------
    def _run(self, sql: str, params: tuple[Any, ...] | dict[str, Any] | list[Any]) -> Result:
        named = isinstance(params, dict)
        text, table, returning = _statement(sql, named, self._identity)
        cur = self._cursor(named).execute(text, params if named else tuple(params))
        rows = cur.fetchall() if cur.rownumber is not None else []
        lastrowid = None
        if rows and "id" in rows[-1] and (table or returning):
            lastrowid = rows[-1]["id"]
        if table:
            rows = []  # the caller asked for no rows: the id is its lastrowid only
        return Result(cur.rowcount, rows, lastrowid)

    def _cursor(self, named: bool) -> Any:
        import psycopg

        return psycopg.Cursor(self.conn) if named else psycopg.RawCursor(self.conn)

    def query(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        import psycopg

        try:
            with self._lock:
                if not self._depth:
                    self._ensure_connected()
                named = isinstance(params, dict)
                cur = self._cursor(named).execute(server_text(sql, named), params)
                return cur.fetchall() if cur.rownumber is not None else []
        except psycopg.Error as exc:
            raise _explain(self.path, exc) from None

    def one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Result:
        """A statement inside the caller's write transaction (or its own, if none)."""
        import psycopg

        try:
            with self._lock:
                if self._depth:
                    return self._run(sql, params)
                with self.write():
                    return self._run(sql, params)
        except psycopg.Error as exc:
            raise _explain(self.path, exc) from None

    def execute_alone(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """One statement atomic by itself (an INSERT ... ON CONFLICT DO NOTHING RETURNING, which
        the unique key makes one winner of), its rows: outside a write, its own implicit
        transaction without the writers' lock, one round trip where a write takes three, and no
        wait behind another writer's transaction (a burst's delivery records, before each ack).
        Inside a write, part of it."""
        import psycopg

        try:
            with self._lock:
                if not self._depth:
                    self._ensure_connected()
                return self._run(sql, params).fetchall()
        except psycopg.Error as exc:
            raise _explain(self.path, exc) from None

    def change_marker(self) -> None:
        """SQLite's guard re-reads the holds only when PRAGMA data_version moved; PostgreSQL has
        no such counter for other connections' commits: None, read them again."""
        return None

    def close(self) -> None:
        self._closed = True
        self.conn.close()


class _Connection:
    """What `write()` yields: `execute` as on a sqlite3 connection, inside the transaction."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Result:
        return self._db._run(sql, params)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bools_as_integers(conn: Any) -> None:
    """The schema stores flags as INTEGER 0/1 (SQLite's way): a Python bool goes as 0/1."""
    from psycopg.types.numeric import IntDumper

    class BoolAsInt(IntDumper):
        def dump(self, obj: Any) -> bytes:
            return b"1" if obj else b"0"

    conn.adapters.register_dumper(bool, BoolAsInt)
