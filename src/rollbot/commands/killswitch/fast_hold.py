"""The terminal's kill stores its incident and HALTED (or REDUCING) hold with the standard
library alone.

Break-glass start-up (issue 18 item 4) is exec to hold stored; pydantic and the models built on
it cost a kill ~0.2 s before it could write. This reads from rollbot.toml only what the hold
needs and writes, in one transaction, the rows commands/rollback/held_incident.store_held_incident
plus the BREAK_GLASS event write for the same kill (tests/test_fast_hold.py compares them field by
field). Whatever it does not plainly understand — a config it cannot read or that is unusual,
a database that is missing or not at the current schema version — it leaves to that full path
(None); a write lock held by another process is HELD_ELSEWHERE, so the caller cancels first.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tomllib
from datetime import UTC, datetime

from rollbot.commands.killswitch.scope_names import parse_scope
from rollbot.config_source import config_path
from rollbot.iso_time import iso
from rollbot.storage.chain import HEAD_SQL, INSERT_SQL, event_hash, next_link
from rollbot.storage.json_text import dumps
from rollbot.storage.migrations import MIGRATIONS
from rollbot.storage.os_identity import hostname, os_login, terminal_id

# a kill waits this long for another process's write transaction, then cancels without it
HOLD_WAIT_MS = 100
HELD_ELSEWHERE = "held elsewhere"  # another process holds the write lock: nothing written

# config.py's defaults for what the hold reads; a venue kind with no default name is left to it
DEFAULT_DB = "var/rollbot.db"
DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_VENUE_NAMES = {"paper": "paper", "ibkr": "ibkr"}
VENUE_KINDS = ("paper", "ibkr", "crypto")


class KillConfig:
    """What the hold reads from rollbot.toml (a plain class: dataclasses costs ~10 ms)."""

    def __init__(
        self,
        database: str = DEFAULT_DB,
        venue_names: list[str] | None = None,
        identities: dict[str, str] | None = None,
        url: str | None = None,
    ) -> None:
        self.database = database
        self.url = url  # PostgreSQL ([database] url): the hold goes there instead
        self.venue_names = venue_names if venue_names is not None else ["paper"]
        self.identities = identities or {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KillConfig) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"KillConfig({vars(self)})"


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def read_kill_config(explicit: str | None) -> KillConfig | None:
    """What the hold needs from the config the full CLI would read; None when anything in it
    is not plainly valid (config.py then says what is wrong)."""
    path = config_path(explicit)
    if path is None:
        return KillConfig()
    try:
        with open(path, encoding="utf-8") as file:
            raw = tomllib.loads(file.read())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    db = raw.get("database", {})
    if not isinstance(db, dict) or set(db) - {"path", "busy_timeout_ms", "url"}:
        return None
    url = db.get("url")
    if url is not None:  # only a plain postgresql:// URL; anything else config.py explains
        if "path" in db or not _text(url) or not url.startswith("postgresql://"):
            return None
        userinfo = url[len("postgresql://") :].split("/", 1)[0].rpartition("@")[0]
        if ":" in userinfo or "password" in url:
            return None  # config.py refuses it with the reason
    db_path = db.get("path", DEFAULT_DB)
    busy = db.get("busy_timeout_ms", DEFAULT_BUSY_TIMEOUT_MS)
    if not _text(db_path) or type(busy) is not int or not 0 < busy <= 600_000:
        return None
    venues = raw.get("venues", [{"kind": "paper"}])
    if not isinstance(venues, list) or not venues:
        return None
    names: list[str] = []
    for venue in venues:
        if not isinstance(venue, dict) or venue.get("kind") not in VENUE_KINDS:
            return None
        name = venue.get("name", DEFAULT_VENUE_NAMES.get(venue["kind"]))
        if not _text(name) or name in names:
            return None
        names.append(name)
    identities = raw.get("identities", {})
    if not isinstance(identities, dict) or not all(
        _text(k) and _text(v) for k, v in identities.items()
    ):
        return None
    return KillConfig(database=db_path, venue_names=names, identities=identities, url=url)


HOLD_STATES = ("HALTED", "REDUCING")


def store_kill_hold(
    config: KillConfig, reason: str, scope_text: str | None, state: str = "HALTED"
) -> str | None:
    """The new incident's id once its hold (HALTED, or REDUCING for `--reducing`) is stored;
    HELD_ELSEWHERE when another process holds the write lock; None to leave the kill to the
    full path. A bad scope is BadInput before anything is opened."""
    scope = parse_scope(scope_text, config.venue_names)
    if state not in HOLD_STATES:
        return None  # the full path says what is wrong
    if config.url is not None:
        return _store_on_postgresql(config, reason, scope, state)
    if not os.path.isfile(config.database):
        return None  # no database yet: the full path creates and migrates it
    try:
        conn = sqlite3.connect(config.database, isolation_level=None, timeout=HOLD_WAIT_MS / 1000)
    except sqlite3.Error:
        return None
    try:
        conn.execute(f"PRAGMA busy_timeout = {HOLD_WAIT_MS}")
        if conn.execute("PRAGMA user_version").fetchone()[0] != len(MIGRATIONS):
            return None  # the full path migrates first
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            return None
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            return HELD_ELSEWHERE if _locked(exc) else None
        try:
            incident_id = _write(conn, config, reason, scope, state)
            if incident_id is None:
                conn.execute("ROLLBACK")
                return None
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return HELD_ELSEWHERE if _locked(exc) else None
        return incident_id
    except sqlite3.Error:
        return None
    finally:
        conn.close()


class _LeaveIt(Exception):
    """_write found something for the full path's rules: roll back, write nothing."""


def _store_on_postgresql(config: KillConfig, reason: str, scope: str, state: str) -> str | None:
    """The same rows, through libpq itself (storage/libpq.py: psycopg's import alone was most
    of the 150 ms), or storage/postgres.py where libpq cannot be loaded; the writers' lock is
    waited for HOLD_WAIT_MS at most."""
    from rollbot.storage import libpq
    from rollbot.storage.pg_common import begin_write
    from rollbot.storage.pg_migrations import PG_MIGRATIONS

    assert config.url is not None
    try:
        conn = libpq.connect(config.url)
    except libpq.LibpqError:
        return None  # unreachable, refused: the full path says what is wrong
    if conn is None:
        return _store_through_psycopg(config, reason, scope, state)
    try:
        try:
            (version,) = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        except libpq.LibpqError:
            return None  # no schema: the full path says so
        if version != len(PG_MIGRATIONS):
            return None  # the full path migrates first
        conn.identity_tables = {"holds"}  # the hold's id goes into its event
        try:
            conn.script(begin_write(HOLD_WAIT_MS))
            incident_id = _write(conn, config, reason, scope, state)  # type: ignore[arg-type]
            conn.script("COMMIT" if incident_id is not None else "ROLLBACK")
        except libpq.LibpqError as exc:
            with contextlib.suppress(libpq.LibpqError):
                conn.script("ROLLBACK")
            return HELD_ELSEWHERE if exc.sqlstate in libpq.BUSY_SQLSTATES else None
        return incident_id
    finally:
        conn.close()


def _store_through_psycopg(config: KillConfig, reason: str, scope: str, state: str) -> str | None:
    """storage/postgres.py (pydantic-free as this module): a reader's open (never creating or
    migrating)."""
    from rollbot.errors import DatabaseBusy, StorageError
    from rollbot.storage.pg_migrations import PG_MIGRATIONS
    from rollbot.storage.postgres import PostgresDatabase

    assert config.url is not None
    try:
        db = PostgresDatabase(config.url, HOLD_WAIT_MS, create=False)
    except Exception:
        return None  # unreachable, no schema: the full path says what is wrong
    try:
        if db.schema_version != len(PG_MIGRATIONS):
            return None  # the full path migrates first
        with db.write() as conn:
            incident_id = _write(conn, config, reason, scope, state)  # type: ignore[arg-type]
            if incident_id is None:
                raise _LeaveIt
        return incident_id
    except DatabaseBusy:
        return HELD_ELSEWHERE
    except (_LeaveIt, StorageError):
        return None
    finally:
        db.close()


def _locked(exc: sqlite3.Error) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _write(
    conn: sqlite3.Connection, config: KillConfig, reason: str, scope: str, state: str
) -> str | None:
    """Incidents.open + KillSwitch.trigger + Outbox.put('headline') + the BREAK_GLASS event, as
    store_held_incident writes them for a terminal kill (source cli, hold source person)."""
    os_user, uid = os_login()
    actor = terminal_id(os_user, config.identities)
    host = hostname()
    now = iso(datetime.now(UTC))
    held = reason.strip()
    # the chain's head, read inside this BEGIN IMMEDIATE: the three events link on from it
    link = list(next_link(conn.execute(HEAD_SQL).fetchone()))

    def event(kind: str, why: str, scope: str | None, incident: str | None, data: dict) -> None:
        if host:  # EventLog.append: a terminal actor's OS user, host and uid
            data = {**data, "os_user": os_user, "host": host, "uid": uid}
        text = dumps(data)
        seq, prev = link
        digest = event_hash(seq, now, kind, actor, "cli", host, scope, incident, why, text, prev)
        conn.execute(
            INSERT_SQL,
            (now, kind, actor, "cli", host, scope, incident, why, text, seq, prev, digest),
        )
        link[:] = [seq + 1, digest]

    (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM incidents").fetchone()
    incident_id = f"INC-{max(int(seq), 1):04d}"
    conn.execute(
        "INSERT INTO incidents (id, seq, opened_at, opened_by, source, kind, reason, scope,"
        " trigger, trigger_value, trigger_threshold, dedupe_key)"
        " VALUES (?, ?, ?, ?, 'cli', 'kill', ?, ?, NULL, NULL, NULL, NULL)",
        (incident_id, max(int(seq), 1), now, actor, held, scope),
    )
    event(
        "INCIDENT_OPENED",
        held,
        scope,
        incident_id,
        {"kind": "kill", "trigger": None, "trigger_value": None, "trigger_threshold": None},
    )
    if conn.execute(
        "SELECT 1 FROM holds WHERE scope = ? AND source = 'person' AND incident_id = ?"
        " AND cleared_at IS NULL",
        (scope, incident_id),
    ).fetchone():
        return None  # a hold already names this new incident: the full path's rules decide
    cur = conn.execute(
        "INSERT INTO holds (scope, source, state, reason, actor, incident_id, created_at,"
        " updated_at) VALUES (?, 'person', ?, ?, ?, ?, ?, ?)",
        (scope, state, held, actor, incident_id, now, now),
    )
    event(
        "HOLD_SET",
        held,
        scope,
        incident_id,
        {"hold_id": cur.lastrowid, "source": "person", "state": state},
    )
    conn.execute(
        "INSERT INTO outbox (at, kind, incident_id, target, payload, dedupe_key)"
        " VALUES (?, 'headline', ?, NULL, ?, NULL) ON CONFLICT DO NOTHING",
        (now, incident_id, dumps({"text": ""})),
    )
    event("BREAK_GLASS", reason, None, None, {"command": "kill trigger"})
    return incident_id
