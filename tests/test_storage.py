"""SQLite storage: WAL, busy timeout, migrations, an append-only event log, many writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rollbot.clock import ManualClock
from rollbot.errors import StorageError
from rollbot.storage.db import Database
from rollbot.storage.events import Actor, EventLog
from rollbot.storage.migrations import MIGRATIONS

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rollbot.clock import SystemClock
    from rollbot.storage.db import Database
    from rollbot.storage.events import Actor, EventLog

    db_path, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    db = Database(db_path)  # the default busy timeout
    log = EventLog(db, SystemClock())
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    who = Actor(id=name, source="cli")
    for i in range(count):
        log.append("TEST_WRITE", who, data={"writer": name, "i": i})
    print("done", flush=True)
    """
)


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    db_path = tmp_path / "shared.db"  # created by the writers themselves, concurrently
    go = tmp_path / "go"
    writers = {
        name: subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db_path), name, "500", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("bot", "cli")
    }
    for proc in writers.values():  # both connected, then released together
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr and proc.stderr.read()
    go.touch()
    for name, proc in writers.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{name}: {err}"
        assert out.strip() == "done"

    db = Database(db_path)
    events = EventLog(db, ManualClock()).list(kinds=["TEST_WRITE"])
    assert len(events) == 1000
    assert len({e.id for e in events}) == 1000
    for name in ("bot", "cli"):
        mine = [e.data["i"] for e in events if e.data["writer"] == name]
        assert sorted(mine) == list(range(500))
        assert mine == sorted(mine)  # each writer's events in the order it wrote them
        assert {e.actor for e in events if e.data["writer"] == name} == {name}


def test_a_new_database_is_migrated_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    db = Database(tmp_path / "sub" / "r.db", busy_timeout_ms=1234)
    assert db.schema_version == len(MIGRATIONS)
    assert db.one("PRAGMA journal_mode")["journal_mode"] == "wal"  # type: ignore[index]
    assert db.one("PRAGMA foreign_keys")["foreign_keys"] == 1  # type: ignore[index]
    assert db.one("PRAGMA busy_timeout")["timeout"] == 1234  # type: ignore[index]
    tables = {r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type='table'")}
    for needed in ("events", "incidents", "holds", "approvals", "votes", "escalations"):
        assert needed in tables
    for needed in ("reports", "nav_samples", "outbox"):
        assert needed in tables
    with pytest.raises(StorageError, match="FOREIGN KEY"):
        db.execute(
            "INSERT INTO holds (scope, source, state, reason, actor, incident_id, created_at,"
            " updated_at) VALUES ('global', 'person', 'HALTED', 'x', 'u', 'INC-9999', 'now', 'now')"
        )


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    first = Database(path)
    EventLog(first, ManualClock()).append("ONE", Actor(id="u", source="cli"))
    first.close()
    again = Database(path)
    assert again.schema_version == len(MIGRATIONS)
    assert [e.kind for e in EventLog(again, ManualClock()).list()] == ["ONE"]


def test_events_are_append_only(tmp_path: Path) -> None:
    db = Database(tmp_path / "r.db")
    log = EventLog(db, ManualClock())
    log.append("HOLD_SET", Actor(id="u", source="slack"), reason="why")
    with pytest.raises(StorageError, match="append-only"):
        db.execute("UPDATE events SET reason = 'rewritten'")
    with pytest.raises(StorageError, match="append-only"):
        db.execute("DELETE FROM events")
    assert [(e.kind, e.reason) for e in log.list()] == [("HOLD_SET", "why")]


def test_a_failed_transaction_writes_nothing_and_nested_writes_join_it(tmp_path: Path) -> None:
    db = Database(tmp_path / "r.db")
    log = EventLog(db, ManualClock())
    who = Actor(id="u", source="cli")
    with pytest.raises(RuntimeError), db.write():
        log.append("FIRST", who)
        with db.write():  # joins the outer transaction
            log.append("SECOND", who)
        raise RuntimeError("crash before commit")
    assert log.list() == []
    assert not db.in_transaction
    with db.write():
        log.append("FIRST", who)
        with db.write():
            log.append("SECOND", who)
    assert [e.kind for e in log.list()] == ["FIRST", "SECOND"]


def test_a_terminal_actor_records_os_user_and_host(tmp_path: Path) -> None:
    import os
    import pwd
    import socket

    me = pwd.getpwuid(os.getuid()).pw_name
    log = EventLog(Database(tmp_path / "r.db"), ManualClock())
    who = Actor.terminal(None, {me: "U0MAPPED"})
    log.append("BREAK_GLASS", who, data={"command": "kill trigger"})
    event = log.list()[0]
    assert (event.actor, event.source) == ("U0MAPPED", "cli")
    assert event.data == {
        "command": "kill trigger",
        "os_user": me,
        "host": socket.gethostname(),
        "uid": os.getuid(),
    }
    assert event.at == ManualClock().now()


def test_a_locked_database_is_a_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    Database(path).close()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        db = Database(path, busy_timeout_ms=50)  # opening an up-to-date file needs no lock
        log = EventLog(db, ManualClock())
        assert log.list() == []  # reads go on (WAL)
        with pytest.raises(StorageError, match=r"locked by another process.*nothing was written"):
            log.append("BLOCKED", Actor(id="u", source="cli"))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert log.list() == []
    log.append("AFTER", Actor(id="u", source="cli"))  # the lock is gone: writes go through
    assert [e.kind for e in log.list()] == ["AFTER"]


def test_a_corrupt_database_file_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    garbage = b"this is not sqlite " * 500
    path.write_bytes(garbage)
    with pytest.raises(StorageError, match=rf"database {path} is corrupt"):
        Database(path)
    assert path.read_bytes() == garbage


def test_a_terminal_user_without_a_name_is_recorded_by_uid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import pwd

    def nameless(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", nameless)  # as in a container with a random uid
    who = Actor.terminal(None)
    assert (who.id, who.name, who.source) == (f"uid{os.getuid()}", f"uid{os.getuid()}", "cli")


def test_a_statement_from_another_thread_never_runs_inside_a_threads_write(tmp_path: Path):
    """The kill retries its hold in a thread on the shared connection: a statement the event
    loop runs meanwhile must wait for that write, not join it (and be rolled back with it, or
    end it: 'cannot commit - no transaction is active' lost a stored hold's run)."""
    import threading
    import time

    db = Database(tmp_path / "t.db")
    db.conn.execute("CREATE TABLE t (v TEXT)")
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
    db.execute("INSERT INTO t VALUES ('loop')")  # waits for the thread's write to end
    thread.join()
    assert [r["v"] for r in db.query("SELECT v FROM t")] == ["loop"]
    db.close()
