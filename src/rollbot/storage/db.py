"""One SQLite file, many writers (bot, CLI, clock): WAL, a busy timeout, foreign keys, and every
write in a BEGIN IMMEDIATE transaction so the database, not the process, decides who goes first."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollbot.errors import DatabaseBusy, StateUnavailable, StorageError
from rollbot.storage.json_text import dumps as dumps
from rollbot.storage.json_text import loads as loads
from rollbot.storage.migrations import MIGRATIONS

if TYPE_CHECKING:
    from rollbot.storage.migrations import Migration


def _explain(path: Path, exc: sqlite3.Error) -> StorageError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return DatabaseBusy(
            f"database {path} is locked by another process (waited for the busy timeout); "
            "nothing was written"
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return StorageError(f"database {path} is corrupt or not a rollbot database: {text}")
    if "disk" in text and ("full" in text or "I/O" in text):
        return StorageError(f"database {path}: the disk is full; nothing was written")
    if "readonly" in text or "unable to open" in text:
        return StorageError(f"database {path} cannot be opened for writing: {text}")
    return StorageError(f"database {path}: {text}")


class Database:
    """A connection plus the transaction discipline. Shared across threads under its lock.

    `create=False` is for readers of state (the guard, `kill status`, the monitors): a missing,
    empty or schema-less file is StateUnavailable, never a fresh empty database whose answer
    would be "ACTIVE"."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        busy_timeout_ms: int = 5000,
        migrations: list[Migration] | None = None,
        *,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._migrations = MIGRATIONS if migrations is None else migrations
        self.inode: int | None = None
        if not create:
            self.inode = _existing_inode(self.path)
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                target: str | Path = self.path
            else:  # mode=rw: SQLite itself must not create the file if it vanished meanwhile
                target = self.path.resolve().as_uri() + "?mode=rw"
            conn = sqlite3.connect(
                target,
                isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
                timeout=busy_timeout_ms / 1000,
                check_same_thread=False,
                uri=not create,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not create:
                _require_schema(conn, self.path)
            _enable_wal(conn, busy_timeout_ms)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            if not create:
                raise StateUnavailable(str(_explain(self.path, exc))) from None
            raise _explain(self.path, exc) from None
        except OSError as exc:
            raise StorageError(f"database {self.path} cannot be created: {exc}") from None
        self.conn = conn
        if self.inode is None:  # a reader (the guard) refuses once the file is moved away
            self.inode = _inode(self.path)
        self._depth = 0
        # the chain's next (seq, prev_hash) once this transaction appended an event
        self.next_link: tuple[int, str] | None = None
        self._lock = threading.RLock()
        self._migrate()

    def _migrate(self) -> None:
        try:
            # Up to date: no write lock, so a read (status, the guard) never waits for a writer.
            if self.conn.execute("PRAGMA user_version").fetchone()[0] >= len(self._migrations):
                return
            with self.write():
                current = self.conn.execute("PRAGMA user_version").fetchone()[0]
                for version, script in enumerate(self._migrations, start=1):
                    if version <= current:
                        continue
                    if callable(script):
                        script(self)
                    else:
                        for statement in _split(script):
                            self.conn.execute(statement)
                    self.conn.execute(f"PRAGMA user_version = {version}")
        except StorageError:
            raise
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None

    @property
    def utils(self) -> Any:
        """sqlite-utils over this connection, for inspection and ad-hoc tooling. Imported on
        first use: it pulls in numpy (13 MiB, 0.1 s), which the kill path must not pay for."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def patience(self, busy_timeout_ms: int) -> Iterator[None]:
        """Wait at most this long for another writer inside the block (a kill must not wait
        out the configured busy timeout before it cancels)."""
        with self._lock:
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            try:
                yield
            finally:
                self.conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; nested calls join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _explain(self.path, exc) from None
            self._depth = 1
            self.next_link = None  # read afresh in each transaction (storage/events.py)
            try:
                yield self.conn
            except BaseException as exc:
                self._depth = 0
                self.next_link = None
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise _explain(self.path, exc) from None
                raise
            self._depth = 0
            self.next_link = None
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise _explain(self.path, exc) from None

    def _rollback(self) -> None:
        # SQLite rolls a transaction back by itself on some errors (a full disk, I/O): a second
        # ROLLBACK would fail and hide the first error behind "no transaction is active"
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def query(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        # one connection, shared with a thread that may be inside a write (the kill's hold,
        # retried while another process holds the lock): a statement waits for that write to
        # end instead of running inside it
        try:
            with self._lock:
                return [dict(r) for r in self.conn.execute(sql, params).fetchall()]
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None

    def one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        """A statement inside the caller's write transaction (or its own, if none)."""
        try:
            with self._lock:  # _depth is the lock holder's: inside its own write, or none
                if self._depth:
                    return self.conn.execute(sql, params)
                with self.write():
                    return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None

    def execute_alone(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """One statement atomic by itself (an INSERT ... ON CONFLICT DO NOTHING RETURNING), its
        rows: on SQLite a write of its own as any (PostgreSQL spares it the writers' lock). The
        rows are read inside the transaction, before COMMIT."""
        try:
            with self._lock:
                if self._depth:
                    return self.conn.execute(sql, params).fetchall()
                with self.write():
                    return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None

    def close(self) -> None:
        self.conn.close()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _existing_inode(path: Path) -> int:
    try:
        st = path.stat()
    except OSError as exc:
        raise StateUnavailable(
            f"database {path.resolve()} does not exist or cannot be read ({exc.strerror});"
            " a reader never creates one"
        ) from None
    if st.st_size == 0:
        raise StateUnavailable(f"database {path.resolve()} is empty (0 bytes)")
    return st.st_ino


def _require_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Before WAL is switched on (that would write to the file): a rollbot schema, or refuse."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    has_holds = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'holds'"
    ).fetchone()
    if not version or not has_holds:
        conn.close()
        raise StateUnavailable(f"database {path.resolve()} has no rollbot schema")


def _enable_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Switching a new file to WAL needs it alone for a moment, and SQLite answers "locked" at
    once, without the busy handler, when another process is opening it too (the bot, the clock
    and a terminal started together): wait for it as a write would."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _split(script: str) -> list[str]:
    """Split a migration into statements, keeping CREATE TRIGGER ... END bodies whole."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
