"""A desk run by two hosts: per host its own working directory, config and host id; one
database, one paper venue (the exchange both reach) and the gates files of the trading host."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reliability.support import OPERATORS, SMALL_START, audit_book, settings_for, write_book
from terminal_users import as_person

from rollbot.brokers.paper.book import PaperBook
from rollbot.clock import SystemClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import DatabaseConfig, FlattenConfig, HostConfig, Settings
from rollbot.storage.backends import open_database
from rollbot.storage.db import Database
from rollbot.storage.events import Actor
from rollbot.storage.postgres import PostgresDatabase

ROLLBOT = str(Path(sys.executable).with_name("rollbot"))
FIGURES: list[str] = []  # what the host tests measured, printed at the end of the run
LEASE_S = 0.5  # [host] lease_interval_s of both hosts: heartbeats run out after 1.5 s
Db = Database | PostgresDatabase


def backend_of(database: DatabaseConfig) -> str:
    return "postgresql" if database.url else "sqlite"


@dataclass
class Host:
    name: str
    root: Path
    settings: Settings
    config: Path

    def start(self, *args: str, user: str = "alice") -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != "ROLLBOT_CONFIG"}
        env.update(COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
        return subprocess.Popen(
            [ROLLBOT, "--config", str(self.config), *args],
            cwd=self.root,
            env=env,
            preexec_fn=as_person(user),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def two_hosts(
    root: Path,
    shared_db: DatabaseConfig,
    write_config: Callable[..., Path],
    *,
    latency_ms: int = 80,
    **over: Any,
) -> tuple[Host, Host]:
    """Hosts a and b; the venue (a paper book) seeded and the gates armed before they start."""
    book = write_book(root)
    base = settings_for(
        root,
        book,
        rollback_needs_approval=False,
        flatten=FlattenConfig(recheck_interval_s=0.2),
        latency_ms=latency_ms,
    )
    base.database = shared_db
    hosts = []
    for name in ("host-a", "host-b"):
        home = root / name
        home.mkdir(parents=True, exist_ok=True)
        settings = base.model_copy(
            update={
                "host": HostConfig(id=name, lease_interval_s=LEASE_S),
                "paths": base.paths.model_copy(update={"reports_dir": home / "reports"}),
                **over,
            }
        )
        hosts.append(Host(name, home, settings, write_config(settings, f"{root.name}-{name}.toml")))
    rb = Rollbot.open(hosts[0].settings, clock=SystemClock())
    rb.gates.arm(Actor(id=OPERATORS[0], source="cli"), "a live desk before the host is lost")
    rb.venues()  # the book seeded before any host starts
    asyncio.run(rb.aclose())
    for v in (rb._venues or {}).values():
        v.book.db.close()  # type: ignore[attr-defined]
    return hosts[0], hosts[1]


def events(db: Db, kind: str, incident: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM events WHERE kind = ?" + (" AND incident_id = ?" if incident else "")
    rows = db.query(sql + " ORDER BY id", (kind, incident) if incident else (kind,))
    for r in rows:
        r["data"] = json.loads(r["data"]) if r["data"] else {}
    return rows


def wait_until(
    what: str,
    found: Callable[[], Any],
    timeout: float,
    procs: tuple[subprocess.Popen[str], ...] = (),
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = found()
        if got:
            return got
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"a host ended before {what}: {out}{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def ready(proc: subprocess.Popen[str], text: str = "rollbot clock ready") -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert text in line, line + (proc.stderr.read() if proc.stderr else "")


def audit_once(settings: Settings, incident: str = "INC-0001") -> list[str]:
    """After the other host finished it: flat, each closing order once, each step ended once,
    the incident DONE, the hold kept."""
    problems: list[str] = []
    db = open_database(settings.database)
    book = PaperBook(settings.venues[0].book_path, SystemClock()).db  # type: ignore[union-attr]
    try:
        audit = audit_book(book, db, SMALL_START)
        if audit.positions:
            problems.append(f"not flat: {audit.positions}")
        if audit.duplicate_orders:
            problems.append(f"duplicate orders: {audit.duplicates} {audit.overfilled}")
        if audit.orders != len(SMALL_START):
            problems.append(f"{audit.orders} closing orders, not {len(SMALL_START)}")
        attempts = {r["attempt"] for r in db.query("SELECT attempt FROM order_intents")}
        if attempts != {1}:
            problems.append(f"closing attempts {sorted(attempts)}: one each was enough")
        inc = db.one("SELECT phase, final_status FROM incidents WHERE id = ?", (incident,))
        if inc != {"phase": "DONE", "final_status": "SUCCESS"}:
            problems.append(f"{incident} ended as {inc}")
        ended = Counter(e["data"]["step"] for e in events(db, "STEP_ENDED", incident))
        if ended != dict.fromkeys((1, 2, 3, 4, 5), 1):
            problems.append(f"steps ended {dict(ended)}: each must end exactly once")
        if not db.query("SELECT id FROM holds WHERE cleared_at IS NULL AND scope = 'global'"):
            problems.append("the global hold is gone")
    finally:
        db.close()
        book.close()
    return problems
