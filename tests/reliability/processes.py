"""Real rollbot processes for the crash and storage tests: start, wait for a row, hold the
database's write lock while a process runs into it, SIGKILL it there; a desk to run them on, and
the audit of the state a restart leaves."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terminal_users import as_person

from reliability.support import (
    OPERATORS,
    SMALL_START,
    audit_book,
    log_gaps,
    settings_for,
    write_book,
)
from rollbot.brokers.paper.book import PaperBook
from rollbot.clock import SystemClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import Gates
from rollbot.config import FlattenConfig, Settings
from rollbot.storage.db import Database
from rollbot.storage.events import Actor

ROLLBOT = str(Path(sys.executable).with_name("rollbot"))
LATENCY_MS = 80  # every paper venue call takes this long in the process that is killed
HOLD_S = 0.3  # how long the lock is held before the kill: the process blocks on its next write
STEP = "SELECT 1 FROM events WHERE kind = 'STEP_STARTED' AND json_extract(data, '$.step') = {n}"


def cli(config: Path, *args: str) -> list[str]:
    return [ROLLBOT, "--config", str(config), *args]


def env_for() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ROLLBOT_CONFIG"}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


def start(config: Path, *args: str, user: str = "alice") -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli(config, *args),
        cwd=config.parent,
        env=env_for(),
        preexec_fn=as_person(user),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(config: Path, *args: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(config, *args),
        cwd=config.parent,
        env=env_for(),
        preexec_fn=as_person(user),
        capture_output=True,
        text=True,
        timeout=90,
    )


def found(path: Path, sql: str) -> bool:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute(sql).fetchone() is not None
    except sqlite3.OperationalError:
        return False  # not created yet, or busy for a moment


def kill_at(
    proc: subprocess.Popen[str],
    db: Path,
    sql: str,
    watch: Path | None = None,
    locked: tuple[Path, str] | None = None,
) -> None:
    """Wait until `sql` finds a row in `watch` (default: the rollbot database); then hold the
    database's write lock while the process runs into its next write, and SIGKILL it there.
    `locked` (a file and a query) is waited for while the lock is held: what the process does
    outside the rollbot database before it blocks (a venue taking an order)."""
    wait_for_row(proc, watch or db, sql)
    with write_lock(db):
        if locked is not None:
            wait_for_row(proc, *locked, timeout=4)  # inside the process's 5 s busy timeout
        time.sleep(HOLD_S)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL


def wait_for_row(proc: subprocess.Popen[str], path: Path, sql: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not found(path, sql):
        if proc.poll() is not None:
            out, errs = proc.communicate()
            raise AssertionError(f"the process ended before {sql}: {out}{errs}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {sql}")
        time.sleep(0.003)


@contextmanager
def write_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock (BEGIN IMMEDIATE) as another process would."""
    lock = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        yield lock
    finally:
        lock.execute("ROLLBACK")
        lock.close()


@dataclass
class Scenario:
    name: str
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, text: str) -> None:
        if not ok:
            self.problems.append(text)


def desk(
    root: Path, write_config: Callable[..., Path], latency_ms: int = LATENCY_MS, **over: Any
) -> tuple[Settings, Path, Path]:
    """A desk under `root` with a slow paper venue (the one that is killed) and the same desk
    without the latency (the restart need not be slow to prove anything)."""
    book = write_book(root)
    slow = settings_for(
        root,
        book,
        rollback_needs_approval=False,
        flatten=FlattenConfig(recheck_interval_s=0.2),
        latency_ms=latency_ms,
        **over,
    )
    fast = slow.model_copy(update={"venues": [slow.venues[0].model_copy(update={"latency_ms": 0})]})
    rb = Rollbot.open(slow, clock=SystemClock())
    rb.gates.arm(Actor(id=OPERATORS[0], source="cli"), "a live desk before the crash")
    rb.venues()  # seeded before the process starts
    asyncio.run(rb.aclose())
    for v in (rb._venues or {}).values():
        v.book.db.close()  # type: ignore[attr-defined]
    return (
        slow,
        write_config(slow, f"{root.name}-slow.toml"),
        write_config(fast, f"{root.name}-fast.toml"),
    )


def audit_restart(s: Scenario, settings: Settings, incident: str = "INC-0001") -> None:
    """The state after the restart: flat, each closing order once, each step ended once, no gap
    in the event log."""
    db = Database(settings.database.path)
    book = PaperBook(settings.venues[0].book_path, SystemClock()).db  # type: ignore[union-attr]
    try:
        audit = audit_book(book, db, SMALL_START)
        s.check(audit.positions == {}, f"not flat after the restart: {audit.positions}")
        s.check(audit.duplicate_orders == 0, f"duplicates: {audit.duplicates} {audit.overfilled}")
        s.check(audit.orders == len(SMALL_START), f"{audit.orders} closing orders, not 3")
        intents = db.query("SELECT * FROM order_intents")
        attempts = {r["attempt"] for r in intents}
        stale = [f"{r['symbol']} {r['status']}" for r in intents if r["status"] != "FILLED"]
        s.check(not stale, f"the ledger still says {stale} of orders the venue filled")
        s.check(attempts == {1}, f"closing attempts {sorted(attempts)}: one each was enough")
        left = book.query("SELECT * FROM orders WHERE status IN ('OPEN', 'PARTIALLY_FILLED')")
        s.check(left == [], f"{len(left)} orders still open at the venue")
        inc = db.one("SELECT phase, final_status FROM incidents WHERE id = ?", (incident,))
        s.check(inc == {"phase": "DONE", "final_status": "SUCCESS"}, f"{incident} ended as {inc}")
        ended = Counter(
            r["step"]
            for r in db.query(
                "SELECT json_extract(data, '$.step') AS step FROM events"
                " WHERE kind = 'STEP_ENDED' AND incident_id = ?",
                (incident,),
            )
        )
        s.check(
            ended == dict.fromkeys(steps_of(db, incident), 1),
            f"steps ended {dict(ended)}: each must end exactly once",
        )
        holds = db.query("SELECT * FROM holds WHERE cleared_at IS NULL AND scope = 'global'")
        s.check(bool(holds), "the global hold is gone")
        gates = Gates(settings.paths.live_environment, settings.paths.shadow_config)
        s.check(gates.read().shadow_active or kind_of(db, incident) == "flatten", "not in shadow")
        s.problems += [f"event log: {g}" for g in log_gaps(db, gates)]
    finally:
        db.close()
        book.close()


def kind_of(db: Database, incident: str) -> str:
    row = db.one("SELECT kind FROM incidents WHERE id = ?", (incident,))
    return row["kind"] if row else ""


def steps_of(db: Database, incident: str) -> tuple[int, ...]:
    return {"kill": (1, 2), "flatten": (3, 4, 5)}.get(kind_of(db, incident), (1, 2, 3, 4, 5))
