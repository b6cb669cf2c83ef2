"""The storage guarantees on both backends, and what is PostgreSQL's own: the same schema from
both migration lists, writers serialized (one winner per read-then-write), a writer past its
patience refused with nothing written, readers that never create, the URL without a password."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pg_server import BOTH, PgServer

from rollbot.clock import ManualClock
from rollbot.config import DatabaseConfig
from rollbot.errors import DatabaseBusy, StateUnavailable, StorageError
from rollbot.storage.audit import verify
from rollbot.storage.backends import open_database
from rollbot.storage.events import Actor, EventLog
from rollbot.storage.migrations import MIGRATIONS
from rollbot.storage.pg_migrations import PG_MIGRATIONS
from rollbot.storage.postgres import PostgresDatabase, server_text, translate
from rollbot.storage.rows_sql import rows_sql
from rollbot.storage.schema import describe


@pytest.fixture(params=BOTH)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def config(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> DatabaseConfig:
    """A database nobody has opened yet: a file path, or an empty PostgreSQL database."""
    if kind == "sqlite":
        return DatabaseConfig(path=tmp_path / "r.db")
    server: PgServer = request.getfixturevalue("pg_server")
    return DatabaseConfig(url=server.new_database(migrated=False))


@pytest.fixture
def connect(config: DatabaseConfig) -> Iterator[Callable[..., Any]]:
    """Open a connection to the test's database (each call is another connection)."""
    opened: list[Any] = []

    def open_one(**kw: Any) -> Any:
        db = open_database(config.model_copy(update=kw))
        opened.append(db)
        return db

    yield open_one
    for db in opened:
        db.close()


WHO = Actor(id="u", source="cli")


# -- both backends ------------------------------------------------------------------------------
def test_a_new_database_is_migrated_and_reopening_keeps_its_rows(connect: Any) -> None:
    db = connect()
    assert db.schema_version == len(MIGRATIONS)
    EventLog(db, ManualClock()).append("ONE", WHO)
    db.close()
    again = connect()
    assert again.schema_version == len(MIGRATIONS)
    assert [e.kind for e in EventLog(again, ManualClock()).list()] == ["ONE"]


def test_events_are_append_only(connect: Any) -> None:
    db = connect()
    log = EventLog(db, ManualClock())
    log.append("HOLD_SET", WHO, reason="why")
    with pytest.raises(StorageError, match="append-only"):
        db.execute("UPDATE events SET reason = 'rewritten'")
    with pytest.raises(StorageError, match="append-only"):
        db.execute("DELETE FROM events")
    assert [(e.kind, e.reason) for e in log.list()] == [("HOLD_SET", "why")]


def test_a_failed_transaction_writes_nothing_and_nested_writes_join_it(connect: Any) -> None:
    db = connect()
    log = EventLog(db, ManualClock())
    with pytest.raises(RuntimeError), db.write():
        log.append("FIRST", WHO)
        with db.write():
            log.append("SECOND", WHO)
        raise RuntimeError("crash before commit")
    assert log.list() == []
    assert not db.in_transaction
    with db.write():
        log.append("FIRST", WHO)
        with db.write():
            log.append("SECOND", WHO)
    assert [e.kind for e in log.list()] == ["FIRST", "SECOND"]


def test_events_in_one_transaction_chain_on_and_a_rolled_back_one_leaves_no_link(
    connect: Any,
) -> None:
    """A second event in a transaction links on from the first without reading it back; a
    transaction rolled back takes its links with it, so the next event links to the last
    stored one (audit verify finds every link)."""
    db = connect()
    log = EventLog(db, ManualClock())
    with db.write():
        for kind in ("A", "B", "C"):
            log.append(kind, WHO)
    with pytest.raises(RuntimeError), db.write():
        log.append("GONE", WHO)
        log.append("GONE TOO", WHO)
        raise RuntimeError("crash before commit")
    log.append("D", WHO)
    with db.write():
        log.append("E", WHO)
    other = connect()  # another connection appends between this one's transactions
    EventLog(other, ManualClock()).append("F", WHO)
    with db.write():
        log.append("G", WHO)
        log.append("H", WHO)
    verdict = verify(db)
    assert verdict.intact, verdict.broken
    assert [e.kind for e in log.list()] == list("ABCDEFGH")
    assert verdict.head_seq == 8


def test_an_insert_gives_its_id_and_a_conflict_gives_none(connect: Any) -> None:
    db = connect()
    sql = (
        "INSERT INTO outbox (at, kind, payload, dedupe_key) VALUES (?, 'x', '{}', ?)"
        " ON CONFLICT DO NOTHING"
    )
    first = db.execute(sql, ("t", "k1"))
    second = db.execute(sql, ("t", "k2"))
    again = db.execute(sql, ("t", "k1"))
    assert (first.rowcount, second.rowcount, again.rowcount) == (1, 1, 0)
    assert second.lastrowid == first.lastrowid + 1
    assert [r["id"] for r in db.query("SELECT id FROM outbox ORDER BY id")] == [
        first.lastrowid,
        second.lastrowid,
    ]
    # flags go in as 0/1 and json_extract reads numbers and flags as SQLite does
    db.execute("UPDATE outbox SET attempts = ?, result = ? WHERE id = ?", (True, '{"n": 2}', 1))
    db.execute("UPDATE outbox SET result = ? WHERE id = ?", ('{"set_aside": true}', 2))
    assert db.query(
        "SELECT id FROM outbox WHERE attempts = 1 AND json_extract(result, '$.n') = 2"
    ) == [{"id": 1}]
    assert db.query(
        "SELECT id FROM outbox INDEXED BY outbox_set_aside WHERE delivered_at IS NULL"
        " AND json_extract(result, '$.set_aside') = 1 AND payload LIKE '%{%'"
    ) == [{"id": 2}]


def test_concurrent_read_then_write_has_one_winner_each_time(connect: Any) -> None:
    """Eight connections each read a counter and write it plus one, 25 times: every increment
    counts. The guarantee behind one winner among votes, an intent claimed once, a lease taken
    by one process (PostgreSQL's READ COMMITTED alone would lose updates here)."""
    db = connect()
    db.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
    db.execute("INSERT INTO counter (n) VALUES (0)")
    workers = [connect() for _ in range(8)]
    errors: list[BaseException] = []

    def bump(mine: Any) -> None:
        try:
            for _ in range(25):
                with mine.write():
                    (n,) = mine.one("SELECT n FROM counter").values()
                    time.sleep(0.0005)  # widen the window another writer would use
                    mine.execute("UPDATE counter SET n = ?", (n + 1,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.one("SELECT n FROM counter") == {"n": 200}


@contextmanager
def _writing(db: Any, key: str) -> Iterator[None]:
    """Another writer inside its transaction (a delivery `key` written, not committed) for the
    block: the writers' lock held, as another host's write holds it."""
    inside, release = threading.Event(), threading.Event()

    def write() -> None:
        with db.write():
            db.execute("INSERT INTO deliveries (key, at) VALUES (?, 'now')", (key,))
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=write)
    thread.start()
    assert inside.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()


def test_a_delivery_record_never_waits_behind_another_writers_transaction(
    connect: Any, kind: str
) -> None:
    """A request's delivery record (is it a retry?) is one INSERT ... ON CONFLICT DO NOTHING:
    on PostgreSQL it takes no writers' lock, so a click is recorded while another host's write
    is in progress, and a second record of the same delivery is still refused."""
    writer, clicks = connect(), connect()
    sql = "INSERT INTO deliveries (key, at) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING key"
    with _writing(writer, "other"), clicks.patience(20):
        if kind == "postgresql":
            assert [r["key"] for r in clicks.execute_alone(sql, ("click:1", "t"))] == ["click:1"]
            assert clicks.execute_alone(sql, ("click:1", "t")) == []
        else:  # one write at a time on SQLite: the lock is waited for as by any write
            with pytest.raises(DatabaseBusy):
                clicks.execute_alone(sql, ("click:1", "t"))
    again = clicks.execute_alone(sql, ("click:1", "t"))
    assert len(again) == (1 if kind == "sqlite" else 0)
    keys = [r["key"] for r in clicks.query("SELECT key FROM deliveries ORDER BY key")]
    assert keys == ["click:1", "other"]


def test_a_writer_past_its_patience_is_busy_and_writes_nothing(connect: Any) -> None:
    holder, waiter = connect(), connect()
    with _writing(holder, "held"):
        started = time.monotonic()
        with pytest.raises(DatabaseBusy, match="locked") as err, waiter.patience(100):
            waiter.execute("INSERT INTO deliveries (key, at) VALUES ('waiter', 'now')")
        assert time.monotonic() - started < 3
        assert "nothing was written" in str(err.value)
    assert [r["key"] for r in waiter.query("SELECT key FROM deliveries")] == ["held"]
    waiter.execute("INSERT INTO deliveries (key, at) VALUES ('later', 'now')")  # usable again
    assert len(waiter.query("SELECT key FROM deliveries")) == 2


def test_a_statement_from_another_thread_waits_for_a_threads_write(connect: Any) -> None:
    db = connect()
    db.execute("CREATE TABLE t (v TEXT)")
    inside = threading.Event()

    def writer() -> None:
        try:
            with db.write():
                db.execute("INSERT INTO t VALUES ('thread')")
                inside.set()
                time.sleep(0.2)
                raise RuntimeError("the thread's write fails and rolls back")
        except RuntimeError:
            pass

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(5)
    db.execute("INSERT INTO t VALUES ('loop')")
    thread.join()
    assert [r["v"] for r in db.query("SELECT v FROM t")] == ["loop"]


def test_a_reader_never_creates_a_database(config: DatabaseConfig) -> None:
    with pytest.raises(StateUnavailable):
        open_database(config, create=False)
    writer = open_database(config)
    writer.close()
    reader = open_database(config, create=False)  # now there is one
    assert reader.schema_version == len(MIGRATIONS)
    reader.close()


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rollbot.clock import SystemClock
    from rollbot.config import DatabaseConfig
    from rollbot.storage.audit import verify
    from rollbot.storage.backends import open_database
    from rollbot.storage.events import Actor, EventLog

    config = DatabaseConfig.model_validate_json(sys.argv[1])
    name, count, go = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    log = EventLog(open_database(config), SystemClock())
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    who = Actor(id=name, source="cli")
    for i in range(count):
        log.append("TEST_WRITE", who, data={"writer": name, "i": i})
    print("done", flush=True)
    """
)


def test_two_processes_writing_at_once_lose_nothing(config: DatabaseConfig, tmp_path: Path) -> None:
    open_database(config).close()  # migrated once; the writers' opens then race only to write
    go = tmp_path / "go"
    writers = {
        name: subprocess.Popen(
            [sys.executable, "-c", WRITER, config.model_dump_json(), name, "300", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("bot", "cli")
    }
    for proc in writers.values():
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr and proc.stderr.read()
    go.touch()
    for name, proc in writers.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{name}: {err}"
    db = open_database(config)
    events = EventLog(db, ManualClock()).list(kinds=["TEST_WRITE"])
    db.close()
    assert len({e.id for e in events}) == 600
    for name in ("bot", "cli"):
        mine = [e.data["i"] for e in events if e.data["writer"] == name]
        assert mine == list(range(300))  # all of them, in the order each wrote them


# -- PostgreSQL's own ---------------------------------------------------------------------------
def test_both_migration_lists_build_the_same_schema(tmp_path: Path, pg_server: PgServer) -> None:
    """A new version is appended to both lists: this fails while they differ."""
    assert len(PG_MIGRATIONS) == len(MIGRATIONS)
    sqlite = open_database(DatabaseConfig(path=tmp_path / "r.db"))
    pg = open_database(DatabaseConfig(url=pg_server.new_database(migrated=False)))
    try:
        assert describe(pg) == describe(sqlite)
        assert pg.schema_version == sqlite.schema_version == len(MIGRATIONS)
    finally:
        sqlite.close()
        pg.close()


def test_an_old_postgresql_database_is_migrated_with_its_rows(pg_server: PgServer) -> None:
    url = pg_server.new_database(migrated=False)
    old = PostgresDatabase(url, migrations=PG_MIGRATIONS[:2])  # a database from last year
    old.execute(  # as last year's code wrote it: no chain columns yet
        "INSERT INTO events (at, kind, actor, source, data)"
        " VALUES ('2025-12-01T00:00:00.000Z', 'BEFORE', ?, ?, '{}')",
        (WHO.id, WHO.source),
    )
    assert old.schema_version == 2
    old.close()
    db = PostgresDatabase(url)
    assert db.schema_version == len(PG_MIGRATIONS)
    assert [e.kind for e in EventLog(db, ManualClock()).list()] == ["BEFORE"]
    assert db.one("SELECT seq, prev_hash FROM events") == {"seq": 1, "prev_hash": "0" * 64}
    assert db.one("SELECT COUNT(*) AS n FROM dead_mans_switches") == {"n": 0}  # V9 is there
    db.close()


def test_a_reader_refuses_a_database_that_is_not_rollbots(pg_server: PgServer) -> None:
    url = pg_server.new_database(migrated=False)
    with pytest.raises(StateUnavailable, match="no rollbot schema"):
        PostgresDatabase(url, create=False)
    gone = url.replace(f"host={pg_server.socket_dir}", "host=/nonexistent")
    with pytest.raises(StateUnavailable, match="cannot be reached"):
        PostgresDatabase(gone, create=False)
    with pytest.raises(StorageError, match="cannot be reached"):
        PostgresDatabase(gone)


def test_a_connection_lost_between_transactions_is_opened_again(pg_server: PgServer) -> None:
    db = PostgresDatabase(pg_server.new_database())
    EventLog(db, ManualClock()).append("BEFORE", WHO)
    pid = db.one("SELECT pg_backend_pid() AS pid")["pid"]  # type: ignore[index]
    pg_server.admin(f"SELECT pg_terminate_backend({pid})")  # a failover, a server restart
    with pytest.raises(StorageError):
        db.query("SELECT 1")  # the statement that finds it lost
    EventLog(db, ManualClock()).append("AFTER", WHO)  # the next one reconnects
    assert [e.kind for e in EventLog(db, ManualClock()).list()] == ["BEFORE", "AFTER"]
    db.close()


def test_placeholders_are_translated_outside_quotes_only() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b = '?' AND c LIKE '%x'") == (
        "SELECT * FROM t WHERE a = %s AND b = '?' AND c LIKE '%%x'"
    )
    assert translate("SELECT 1 FROM t INDEXED BY t_ix WHERE x = ?  -- why?") == (
        "SELECT 1 FROM t WHERE x = %s  -- why?"
    )
    assert translate("SELECT :a, ':b'", named=True) == "SELECT %(a)s, ':b'"


def test_what_the_server_reads_is_the_statement_as_written_on_both_backends(
    connect: Callable[..., Any],
) -> None:
    """Positional statements go to PostgreSQL as `$n`, unparsed by psycopg (server_text): a
    `%`, a `?` or a `:word` inside quotes is text, a `?` outside is a value, and a statement of
    many rows (past psycopg's 50-parameter parse cache) stores every value in its place."""
    db = connect()
    row = db.one(
        "SELECT 'a%b' AS pct, ? AS v, '?' AS mark, ':x' AS colon, ? || '%' AS joined",
        (7, "50"),
    )
    assert row == {"pct": "a%b", "v": 7, "mark": "?", "colon": ":x", "joined": "50%"}
    assert db.one("SELECT :a AS a, ':b' AS b", {"a": "named"}) == {"a": "named", "b": ":b"}
    keys = [(f"k{i}%?'", f"at {i}") for i in range(40)]  # 80 parameters, quotes in values
    stored = db.execute_alone(
        rows_sql("INSERT INTO deliveries (key, at) VALUES (?, ?) RETURNING key", len(keys)),
        tuple(v for pair in keys for v in pair),
    )
    assert sorted(r["key"] for r in stored) == sorted(k for k, _ in keys)
    back = db.query("SELECT key, at FROM deliveries ORDER BY at")
    assert sorted((r["key"], r["at"]) for r in back) == sorted(keys)
    if db.dialect == "postgresql":
        assert server_text("SELECT ? FROM t INDEXED BY t_ix WHERE a = '?' AND b LIKE '%x'") == (
            "SELECT $1 FROM t WHERE a = '?' AND b LIKE '%x'"
        )


# -- the [database] setting ---------------------------------------------------------------------
def test_a_password_in_the_url_is_refused_and_never_repeated(tmp_path: Path) -> None:
    cfg = tmp_path / "rollbot.toml"
    cfg.write_text('[database]\nurl = "postgresql://ops:hunter2@db.desk:5432/rollbot"\n')
    run = subprocess.run(
        [sys.executable, "-m", "rollbot.bot.cli", "--config", str(cfg), "kill", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    said = " ".join(run.stderr.split())
    assert run.returncode == 2
    assert "database: url must not contain a password" in said
    assert "set ROLLBOT_DATABASE_PASSWORD (or PGPASSWORD, or ~/.pgpass)" in said
    assert "hunter2" not in run.stderr + run.stdout
    assert "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == [cfg]  # nothing created


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"url": "postgresql://ops@db/rollbot?password=x"}, "must not contain a password"),
        ({"url": "mysql://ops@db/rollbot"}, "must start with postgresql://"),
        ({"url": "postgresql://ops@db"}, "names no database"),
        ({"url": "postgresql://ops@db/r", "path": "x.db"}, "either path or url"),
    ],
)
def test_a_bad_database_setting_names_what_is_wrong(fields: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        DatabaseConfig(**fields)  # type: ignore[arg-type]


def test_a_sqlite_url_is_the_sqlite_file_and_a_postgresql_url_round_trips() -> None:
    assert DatabaseConfig(url="sqlite:///var/x.db").path == Path("var/x.db")
    assert DatabaseConfig(url="sqlite:////srv/x.db").backend == "sqlite"
    pg = DatabaseConfig(url="postgresql://ops@db:5432/rollbot")
    assert pg.backend == "postgresql"
    assert DatabaseConfig.model_validate(pg.model_dump()) == pg  # written back, read again


async def test_the_armed_check_takes_the_writers_lock_on_postgresql(
    settings: Any, pg_server: PgServer
) -> None:
    from rollbot.commands.desk.context import Rollbot
    from rollbot.commands.risk import preflight

    url = pg_server.new_database()
    rb = Rollbot.open(settings.model_copy(update={"database": DatabaseConfig(url=url)}))
    try:
        assert preflight.check_database(rb).ok
        with rb.db.write():  # another writer holds the lock for the whole check
            locked = preflight.check_database(rb)
        assert not locked.ok and "cannot take the write lock" in locked.reason
        assert preflight.check_database(rb).ok
        disk = preflight.check_disk(rb)  # the server's disk is not ours: the reports' folder
        assert str(settings.paths.reports_dir.resolve().parent) in disk.reason
    finally:
        await rb.aclose()


def test_a_postgresql_desk_with_history_gets_its_re_arm_baseline_chained(
    pg_server: PgServer,
) -> None:
    """V10 chains last year's events and V11 writes the resume rule's baseline after them, on
    PostgreSQL as on SQLite (tests/approvals/test_resume_baseline.py judges the rule itself)."""
    url = pg_server.new_database(migrated=False)
    old = PostgresDatabase(url, migrations=PG_MIGRATIONS[:9])
    old.execute(
        "INSERT INTO incidents (id, seq, opened_at, opened_by, source, kind, status, reason)"
        " VALUES ('INC-0001', 1, '2025-06-01T00:00:00.000Z', 'U1', 'slack', 'kill', 'CLOSED',"
        " 'old')"
    )
    for kind in ("INCIDENT_OPENED", "INCIDENT_CLOSED"):
        old.execute(
            "INSERT INTO events (at, kind, actor, source, incident_id, data)"
            " VALUES ('2025-06-01T00:00:00.000Z', ?, 'U1', 'slack', 'INC-0001', '{}')",
            (kind,),
        )
    old.close()
    db = PostgresDatabase(url)
    try:
        rows = db.query("SELECT seq, kind, data, prev_hash, hash FROM events ORDER BY seq")
        assert [r["kind"] for r in rows] == ["INCIDENT_OPENED", "INCIDENT_CLOSED", "REARM_BASELINE"]
        assert [r["prev_hash"] for r in rows[1:]] == [r["hash"] for r in rows[:-1]]
        assert '"after_event": 2' in rows[-1]["data"]  # the settled incident is not judged again
    finally:
        db.close()
