"""Storage: three processes writing one SQLite file at once (the Slack face, the terminal, the
clock); a database another process keeps locked past the busy timeout; a full disk. The answer
is a clear error naming the problem (exit 2 at the terminal), and nothing half-written: a write
transaction that fails leaves no row of itself behind (no incident without its hold, no hold
without its event)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from escalation.helpers import contacts

from reliability.figures import record
from reliability.processes import (
    STEP,
    Scenario,
    audit_restart,
    desk,
    env_for,
    run,
    start,
    wait_for_row,
    write_lock,
)
from reliability.support import (
    OPERATORS,
    SMALL_START,
    audit_book,
    log_gaps,
    settings_for,
    write_book,
)
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock, SystemClock
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine
from rollbot.config import EscalationConfig, KillSwitchesConfig
from rollbot.errors import HoldNotStored, StorageError
from rollbot.storage.audit import verify
from rollbot.storage.events import Actor

TESTS = Path(__file__).resolve().parents[1]
OPERATOR = Actor(id=OPERATORS[0], source="cli", name="alice", host="desk")
TABLES = ("incidents", "holds", "order_intents", "approvals", "votes", "outbox", "escalations")


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("events", *TABLES)
        }


# -- three writers at once ----------------------------------------------------------------------
def test_the_bot_the_terminal_and_the_clock_write_at_once_and_lose_nothing(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    book = write_book(tmp_path)
    settings = settings_for(
        tmp_path,
        book,
        rollback_needs_approval=False,
        escalation=EscalationConfig(wait_minutes=0.005, repeat=50, auditor_interval_s=0.2),
    )
    settings.contacts = contacts()
    settings.kill_switches = KillSwitchesConfig(interval_s=0.5)  # the risk monitor ticks too
    config = write_config(settings)
    count = 20

    env = {**env_for(), "PYTHONPATH": str(TESTS)}
    clock = start(config, "clock")
    assert clock.stdout is not None
    assert "rollbot clock ready" in clock.stdout.readline()
    started = time.perf_counter()
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "reliability.writers", role, str(config), str(count)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ("bot", "cli")
    ]
    results = {}
    for role, proc in zip(("bot", "cli"), workers, strict=True):
        out, errs = proc.communicate(timeout=120)
        assert proc.returncode == 0, errs[-2000:]
        results[role] = json.loads(out.strip().splitlines()[-1])
    time.sleep(0.5)  # the clock keeps firing the escalations the others started
    clock.terminate()
    _, clock_errs = clock.communicate(timeout=10)
    seconds = time.perf_counter() - started

    rb = Rollbot.open(settings, clock=SystemClock())
    try:
        fired = len(rb.events.list(kinds=["TIMER_FIRED"]))
        total = counts(settings.database.path)
        gaps = log_gaps(rb.db)
        integrity = rb.db.one("PRAGMA integrity_check")
        chain = verify(rb.db)  # three processes appending at once: still one unbroken chain
        record(
            "storage",
            f"concurrent writers (bot + terminal + clock, {seconds:.1f} s):"
            f" bot {results['bot']['done']}/{count}, terminal {results['cli']['done']}/{count},"
            f" clock fired {fired} deadlines; {total['events']} events, {total['incidents']}"
            f" incidents, {total['holds']} holds, {total['approvals']} approvals;"
            f" {len(results['bot']['errors']) + len(results['cli']['errors'])} errors,"
            f" {len(gaps)} event-log gaps, integrity {integrity}, hash chain"
            f" {'intact' if chain.intact else chain.broken}",
        )
        assert results["bot"] == {"done": count, "errors": []}
        assert results["cli"] == {"done": count, "errors": []}
        assert "locked" not in clock_errs and clock.returncode == 0, clock_errs[-2000:]
        assert fired > 0
        assert total["incidents"] == 2 * count
        assert total["approvals"] == 2 * count  # one clear-hold request per kill
        assert total["holds"] == 2 * count
        assert gaps == []
        assert integrity == {"integrity_check": "ok"}
        assert chain.intact and chain.events == total["events"], chain
        for i in range(count):  # the bot's holds were cleared through their approval
            assert rb.killswitch.state_of([f"strategy:bot{i}"]).value == "ACTIVE"
            assert rb.killswitch.state_of([f"strategy:cli{i}"]).value == "HALTED"
    finally:
        rb.db.close()


# -- a locked database --------------------------------------------------------------------------
def test_a_database_locked_past_the_busy_timeout_gives_a_clear_error_and_writes_nothing(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    book = write_book(tmp_path)
    settings = settings_for(tmp_path, book, rollback_needs_approval=False, busy_timeout_ms=300)
    config = write_config(settings)
    rb = Rollbot.open(settings, clock=SystemClock())
    try:
        asked = asyncio.run(
            Approvals(rb).request("flatten", {"venue": None}, OPERATOR, "flatten before the lock")
        )
        incident, _ = rb.incidents.open(kind="rollback", reason="earlier", actor=OPERATOR)
    finally:
        asyncio.run(rb.aclose())
        for v in (rb._venues or {}).values():
            v.book.db.close()  # type: ignore[attr-defined]
    rca = tmp_path / "rca.toml"
    rca.write_text(
        "\n".join(
            f'{k} = "{k}"'
            for k in (
                "timeline",
                "root_cause",
                "contributing_factors",
                "lessons_learned",
                "recommended_actions",
            )
        ),
        encoding="utf-8",
    )
    # a kill (and a rollback's step 1) never waits on the lock: it cancels at once and retries
    # its hold until stored (tests/test_kill_never_waits.py); every other write refuses cleanly
    commands = {
        "request flatten": (["request", "flatten", "--reason", "locked"], "alice"),
        "approve": (["approve", asked.id], "bob"),
        "kill clear": (["kill", "clear", "--reason", "locked"], "alice"),
        "rca": (["rca", incident.id, "--file", str(rca)], "rita"),
    }
    before = counts(settings.database.path)
    with write_lock(settings.database.path), ThreadPoolExecutor(len(commands)) as pool:
        futures = {
            name: pool.submit(run, config, *args, user=user)
            for name, (args, user) in commands.items()
        }
        results = {name: f.result() for name, f in futures.items()}
    after = counts(settings.database.path)

    answers = {name: (r.returncode, " ".join(r.stderr.split())) for name, r in results.items()}
    record(
        "storage",
        "locked database (held past a 300 ms busy timeout): "
        + ", ".join(f"{n} exit {code}" for n, (code, _) in answers.items())
        + f"; rows written while locked: {sum(after.values()) - sum(before.values())}",
    )
    for name, (code, text) in answers.items():
        assert code == 2, f"{name}: exit {code}: {text}"
        assert "is locked by another process" in text and "nothing was written" in text, text
        assert "Traceback" not in text, f"{name}: {text}"
    assert after == before


def test_a_lock_in_the_middle_of_a_rollback_stops_it_cleanly_and_recover_finishes_it(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    s = Scenario("lock mid-rollback")
    settings, slow, fast = desk(tmp_path, write_config, busy_timeout_ms=300)
    proc = start(slow, "rollback", "--reason", "a lock mid-run", "--confirm")
    wait_for_row(proc, settings.database.path, STEP.format(n=3))
    with write_lock(settings.database.path):
        out, errs = proc.communicate(timeout=30)
    text = " ".join(errs.split())
    done = run(fast, "recover")
    audit_restart(s, settings)
    record(
        "storage",
        f"lock mid-rollback: exit {proc.returncode} ({text[:90]}…); recover exit"
        f" {done.returncode}; " + ("consistent" if not s.problems else "; ".join(s.problems)),
    )
    assert proc.returncode == 2, out + errs
    assert "is locked by another process" in text and "Traceback" not in text, text
    assert done.returncode == 0 and "INC-0001 rollback: SUCCESS" in done.stdout, done.stdout
    assert s.problems == []


# -- a full disk --------------------------------------------------------------------------------
def fill(app: Rollbot, leave_pages: int) -> None:
    """The disk is full but for `leave_pages` pages: the file may not grow past its size, and
    the event log's last page is filled up (every state change writes an event, so the next
    write transaction needs one of the pages left)."""
    conn = app.db.conn
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    try:
        while True:
            conn.execute(
                "INSERT INTO events (at, kind, actor, source, data)"
                " VALUES ('2026-01-05T11:00:00.000Z', 'DISK_FILLER', 'test', 'system', ?)",
                ("x" * 200,),
            )
    except sqlite3.OperationalError as exc:
        assert "full" in str(exc), exc
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + leave_pages}")


def unlimited(app: Rollbot) -> None:
    app.db.conn.execute("PRAGMA max_page_count = 1073741823")


async def test_a_full_disk_gives_a_clear_error_and_leaves_nothing_half_written(
    scratch: Path,
) -> None:
    book = write_book(scratch)
    template = scratch / "template"
    seed = Rollbot.open(settings_for(template, book), clock=ManualClock())
    seed.gates.arm(OPERATOR, "a live desk")
    seed.venues()
    await seed.aclose()
    for v in (seed._venues or {}).values():
        v.book.db.close()  # type: ignore[attr-defined]

    outcomes: list[str] = []
    problems: list[str] = []
    for leave in range(14):
        root = scratch / f"full-{leave}"
        shutil.copytree(template, root)
        settings = settings_for(root, book, rollback_needs_approval=False)
        app = Rollbot.open(settings, clock=ManualClock())
        venue = app.venue("paper")
        assert isinstance(venue, PaperVenue)
        try:
            fill(app, leave)
            mark = app.db.one("SELECT COALESCE(MAX(id), 0) AS n FROM events")["n"]  # type: ignore[index]
            try:
                await Engine(app, OPERATOR).rollback(f"disk nearly full ({leave} pages)")
                where = "finished"
            except StorageError as exc:
                last = app.db.one(
                    "SELECT kind, data FROM events WHERE id > ? AND kind != 'RUN_INTERRUPTED'"
                    " ORDER BY id DESC LIMIT 1",
                    (mark,),
                )
                step = json.loads(last["data"]).get("step") if last else None
                where = (
                    f"stopped after {last['kind'] if last else 'nothing (the kill was not stored)'}"
                    + (f" {step}" if step else "")
                )
                if "the disk is full" not in str(exc) or "nothing was written" not in str(exc):
                    problems.append(f"{leave} pages: unclear error {exc}")
            except HoldNotStored as exc:  # the hold's own write failed: cancels go out all the same
                where = "stopped before the hold: cancels sent, hold not stored"
                said = str(exc)
                if "NOT stored" not in said or "the disk is full" not in said:
                    problems.append(f"{leave} pages: unclear error {exc}")
                if "Cancels sent: paper:" not in said:
                    problems.append(f"{leave} pages: the cancels are not named: {exc}")
                if venue.book.order_rows("WHERE status IN ('OPEN', 'PARTIALLY_FILLED')"):
                    problems.append(f"{leave} pages: orders still working after {exc}")
            except Exception as exc:  # anything but the clear error is a finding
                where = f"{type(exc).__name__}: {exc}"
                problems.append(f"{leave} pages: {where}")
            # nothing half-written, before the disk is freed
            for gap in log_gaps(app.db, app.gates):
                problems.append(f"{leave} pages, disk full: {gap}")
            orphans = app.db.query(
                "SELECT i.id FROM incidents i WHERE NOT EXISTS"
                " (SELECT 1 FROM holds h WHERE h.incident_id = i.id)"
            )
            if orphans:
                problems.append(f"{leave} pages: incident without its hold: {orphans}")
            unlimited(app)  # the disk is freed; the next start finishes the run
            app.clock.advance(61)  # type: ignore[attr-defined]
            await resume_unfinished(app, Actor(id="rollbot", source="system"))
            audit = audit_book(venue.book.db, app.db, SMALL_START)
            if app.incidents.latest() is None:  # the kill itself could not be stored
                if app.killswitch.holds.active() or audit.orders:
                    problems.append(f"{leave} pages: no incident, yet holds or orders exist")
            elif audit.positions or audit.duplicate_orders:
                problems.append(f"{leave} pages: after the restart {audit}")
            for gap in log_gaps(app.db, app.gates):
                problems.append(f"{leave} pages, after the restart: {gap}")
            outcomes.append(f"{leave}: {where}")
        finally:
            await app.aclose()
            venue.book.db.close()
    record(
        "storage", "full disk (pages left free: where the rollback stopped): " + "; ".join(outcomes)
    )
    record(
        "storage",
        f"full disk: {len(outcomes)} runs, {len(problems)} problems"
        + (
            f": {problems[:5]}"
            if problems
            else " (clear error, nothing half-written, restart finished each)"
        ),
    )
    assert problems == []
    assert any(o.endswith("finished") for o in outcomes) and any("stopped" in o for o in outcomes)


OPENER = """
import sys, time
from pathlib import Path
from rollbot.errors import StorageError
from rollbot.storage.db import Database
go = Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():  # spin: every process opens within microseconds of the others
    pass
try:
    db = Database(sys.argv[1])
    with db.write():
        db.execute("INSERT INTO deliveries (key, at) VALUES (?, '2026-01-05T12:00:00.000Z')",
                   (sys.argv[3],))
    print("ok", flush=True)
except StorageError as exc:
    print(f"refused: {exc}", flush=True)
"""


def test_processes_starting_at_once_on_a_new_database_all_get_in(tmp_path: Path) -> None:
    """The bot, the clock and a terminal started together on a desk's first day: the database
    is created, switched to WAL and migrated by whichever is first; the others wait for it."""
    rounds, per_round = 20, 6
    refused: list[str] = []
    for r in range(rounds):
        db, go = tmp_path / f"new-{r}.db", tmp_path / f"go-{r}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, str(db), str(go), f"p{i}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(per_round)
        ]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        for p in procs:
            out, errs = p.communicate(timeout=60)
            assert p.returncode == 0, errs
            if out.strip() != "ok":
                refused.append(out.strip())
    record(
        "storage",
        f"first start: {rounds} x {per_round} processes opening a new database at once,"
        f" {len(refused)} refused" + (f" ({refused[0][:80]}…)" if refused else ""),
    )
    assert refused == []
