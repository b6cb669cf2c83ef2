"""A database from last year: V9, thousands of events, no chain. Opening it with this version
chains its history in order (V10), keeps the log append-only, and new events link on."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakes.history import build_history

from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.fast_hold import read_kill_config, store_kill_hold
from rollbot.config import DatabaseConfig, Settings
from rollbot.storage.chain import GENESIS, event_hash
from rollbot.storage.db import Database
from rollbot.storage.events import Actor
from rollbot.storage.migrations import MIGRATIONS


def old_database(path: Path) -> list[tuple[Any, ...]]:
    """Last year's file: V9, 4,000 events over 100 incidents, plus terminal events that kept
    their host only in the payload. Returns its events as they were."""
    build_history(path, incidents=100, events=4000, now=datetime(2025, 6, 1, tzinfo=UTC),
                  migrations=MIGRATIONS[:9])  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO events (at, kind, actor, source, scope, reason, data) VALUES"
            " ('2025-05-31T09:00:00.000Z', 'HOLD_SET', 'U0RISK', 'cli', 'global', 'manual',"
            ' \'{"host":"desk-1","os_user":"risk","uid":1001}\')'
        )
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 9
        return conn.execute(
            "SELECT id, at, kind, actor, source, scope, incident_id, reason, data FROM events"
            " ORDER BY id"
        ).fetchall()


def test_a_v9_database_is_chained_in_order_on_upgrade(
    tmp_path: Path, settings: Settings, write_config: Any, rollbot: Any
) -> None:
    path = tmp_path / "last-year.db"
    before = old_database(path)
    assert len(before) == 4001

    db = Database(path)  # this version: V10 runs
    try:
        assert db.schema_version == len(MIGRATIONS)
        rows = db.query("SELECT * FROM events ORDER BY id")
        # the same events, untouched, each hashed over its content and the one before; the
        # re-arm baseline (V11, chained after the history) is the one event the upgrade adds
        [baseline] = [r for r in rows if r["kind"] == "REARM_BASELINE"]
        assert baseline["id"] == rows[-1]["id"]
        assert [tuple(r[k] for k in ("id", "at", "kind", "actor", "source", "scope",
                "incident_id", "reason", "data")) for r in rows[:-1]] == before  # fmt: skip
        prev = GENESIS
        for seq, r in enumerate(rows, 1):
            assert (r["seq"], r["prev_hash"]) == (seq, prev)
            assert r["hash"] == event_hash(
                seq, r["at"], r["kind"], r["actor"], r["source"], r["host"], r["scope"],
                r["incident_id"], r["reason"], r["data"], prev,
            )  # fmt: skip
            prev = r["hash"]
        # a terminal event's host comes from its payload; no other event's is invented
        assert rows[-2]["host"] == "desk-1"
        assert {r["host"] for r in rows[:-2] + rows[-1:]} == {None}
        with pytest.raises(Exception, match="append-only"):  # the guard is back
            db.execute("UPDATE events SET reason = 'x' WHERE id = 1")
    finally:
        db.close()

    # the real CLI on the upgraded file, and both writers linking on: the full path and the
    # terminal's fast hold
    moved = settings.model_copy(update={"database": DatabaseConfig(path=path)})
    config = write_config(moved, "last-year.toml")
    rb = Rollbot.open(moved, clock=ManualClock())
    try:
        rb.events.append("NOTE", Actor(id="U0RISK", source="slack"), reason="after upgrade")
    finally:
        rb.db.close()
    kill = read_kill_config(str(config))
    assert kill is not None and store_kill_hold(kill, "after upgrade", None) == "INC-0101"
    done = rollbot("audit", "verify", env={"ROLLBOT_CONFIG": str(config)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact - 4006 event(s), seq 1..4006" in " ".join(done.stdout.split())
