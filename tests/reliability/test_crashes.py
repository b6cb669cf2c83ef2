"""Crashes: a real process SIGKILLed at each rollback step, in the middle of an approved flatten,
and while the clock waits on an escalation deadline; then restarted. After the restart the state
is consistent, the work finishes exactly once and the event log has no gap.

Where a kill lands is not left to chance: once the process has written what the kill point waits
for, the test takes the database's write lock, gives the process a moment to block on its next
write, and kills it there — between a state change it made and the record it was about to make.
The scenarios run side by side (threads driving subprocesses) to keep the suite short.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reliability.figures import record
from reliability.processes import (
    STEP,
    Scenario,
    audit_restart,
    desk,
    kill_at,
    run,
    start,
)
from reliability.support import OPERATORS, SMALL_START, log_gaps, settings_for, write_book
from rollbot.brokers.paper.book import PaperBook
from rollbot.clock import SystemClock, parse_iso
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.config import EscalationConfig, KillSwitchesConfig
from rollbot.storage.db import Database
from rollbot.storage.events import Actor


# -- the scenarios ------------------------------------------------------------------------------
def rollback_killed(
    name: str, sql: str, root: Path, write_config: Callable[..., Path], sent: bool = False
) -> Scenario:
    s = Scenario(name)
    # sent: a slower venue, so the closing orders' round trip outlasts the test noticing that
    # every intent is written
    settings, slow, fast = desk(root, write_config, **({"latency_ms": 250} if sent else {}))
    db = settings.database.path
    proc = start(slow, "rollback", "--reason", f"crash: {name}", "--confirm")
    book_path = settings.venues[0].book_path  # type: ignore[union-attr]
    taken = (book_path, "SELECT 1 FROM orders WHERE client_order_id LIKE 'rb%'")
    kill_at(proc, db, sql, locked=taken if sent else None)
    if sent:  # the kill point: an order the venue holds whose intent still reads PENDING
        book = PaperBook(book_path, SystemClock()).db  # the book's own schema, not rollbot's
        ledger = Database(db)
        try:
            at_venue = {r["client_order_id"] for r in book.query("SELECT * FROM orders")}
            pending = {
                r["client_order_id"]
                for r in ledger.query("SELECT * FROM order_intents WHERE status = 'PENDING'")
            }
            s.check(bool(at_venue & pending), "killed before the venue took an order")
        finally:
            book.close()
            ledger.close()
    done = run(fast, "recover")
    s.check(done.returncode == 0, f"recover exited {done.returncode}: {done.stdout}{done.stderr}")
    s.check("INC-0001 rollback: SUCCESS" in done.stdout, f"recover said: {done.stdout}")
    audit_restart(s, settings)
    return s


def approval_killed(root: Path, write_config: Callable[..., Path]) -> Scenario:
    """`rollbot approve` of a flatten, killed once the venue took the first closing order."""
    s = Scenario("approved flatten, mid-execution")
    settings, slow, fast = desk(root, write_config)
    rb = Rollbot.open(settings, clock=SystemClock())
    try:
        asked = asyncio.run(
            Approvals(rb).request(
                "flatten",
                {"venue": None, "symbols": None},
                Actor(id=OPERATORS[0], source="cli", name="alice", host="desk"),
                "flatten the small book",
            )
        )
    finally:
        asyncio.run(rb.aclose())
        for v in (rb._venues or {}).values():
            v.book.db.close()  # type: ignore[attr-defined]
    proc = start(slow, "approve", asked.id, user="bob")
    kill_at(
        proc,
        settings.database.path,
        "SELECT 1 FROM orders WHERE client_order_id LIKE 'rb%'",
        settings.venues[0].book_path,  # type: ignore[union-attr]
    )
    db = Database(settings.database.path)
    try:
        row = db.one("SELECT status FROM approvals WHERE id = ?", (asked.id,))
        s.check(row == {"status": "EXECUTING"}, f"killed while {row}: not mid-execution")
    finally:
        db.close()
    done = run(fast, "recover", user="rita")
    s.check(done.returncode == 0, f"recover exited {done.returncode}: {done.stdout}{done.stderr}")
    audit_restart(s, settings)
    db = Database(settings.database.path)
    try:
        row = db.one("SELECT status, result FROM approvals WHERE id = ?", (asked.id,))
        s.check(
            row is not None and row["status"] == "EXECUTED",
            f"{asked.id} is {row and row['status']} after the restart, not EXECUTED",
        )
        s.check(
            row is not None and '"final_status":"SUCCESS"' in (row["result"] or ""),
            f"{asked.id} result: {row and row['result']}",
        )
        ran = db.query(
            "SELECT id FROM events WHERE kind IN ('APPROVAL_EXECUTED', 'APPROVAL_FAILED')"
        )
        s.check(len(ran) == 1, f"{len(ran)} APPROVAL_EXECUTED/FAILED events, not 1")
        votes = db.query("SELECT voter, vote FROM votes")
        s.check(votes == [{"voter": OPERATORS[1], "vote": "approve"}], f"votes: {votes}")
    finally:
        db.close()
    return s


def clock_killed(root: Path, write_config: Callable[..., Path]) -> Scenario:
    """`rollbot clock` killed while tier 1 waits for an acknowledgement; the deadline passes
    while no clock runs; the restarted clock pages tier 2 once, then says it is exhausted once."""
    from escalation.helpers import contacts, operator

    s = Scenario("escalation wait (rollbot clock)")
    book = write_book(root)
    settings = settings_for(
        root,
        book,
        escalation=EscalationConfig(wait_minutes=0.02, repeat=0, auditor_interval_s=0.5),
    )
    settings.contacts = contacts()
    settings.kill_switches = KillSwitchesConfig(interval_s=3600)  # no risk tick in these seconds
    config = write_config(settings, f"{root.name}.toml")
    rb = Rollbot.open(settings, clock=SystemClock())
    try:
        from rollbot.commands.paging.escalation import start_escalation

        first = start(config, "clock")
        _ready(first)
        incident, _ = rb.incidents.open(kind="rollback", reason="PnL -6%", actor=operator())
        start_escalation(rb, incident.id, operator())
        [deadline] = rb.db.query("SELECT * FROM timers WHERE kind = 'escalation'")
        time.sleep(0.3)  # the clock has read the deadline and set its alarm
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        while datetime.now(UTC) <= parse_iso(deadline["due_at"]):
            time.sleep(0.05)
        time.sleep(0.3)
        pings = rb.events.list(kinds=["ESCALATION_PINGED"])
        s.check(len(pings) == 1, f"{len(pings)} pages while no clock ran, not 1")

        second = start(config, "clock")
        _ready(second)
        end = time.monotonic() + 20
        while not rb.events.list(kinds=["ESCALATION_EXHAUSTED"]) and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.8)  # room for a duplicate to show up, were there one
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=10)
        s.check(second.returncode == 0, f"the clock exited {second.returncode} on SIGTERM")
        pinged = [
            (e.data["tier"], e.data["round"]) for e in rb.events.list(kinds=["ESCALATION_PINGED"])
        ]
        s.check(pinged == [(1, 1), (2, 1)], f"pages {pinged}: tier 1 then tier 2, once each")
        exhausted = rb.events.list(kinds=["ESCALATION_EXHAUSTED"])
        s.check(len(exhausted) == 1, f"{len(exhausted)} ESCALATION_EXHAUSTED events, not 1")
        fired = rb.events.list(kinds=["TIMER_FIRED"])
        ids = [e.data["timer_id"] for e in fired]
        s.check(len(ids) == len(set(ids)) == 2, f"deadlines fired {ids}: two, once each")
        dms = rb.db.query("SELECT target FROM outbox WHERE kind = 'dm' ORDER BY id")
        s.check(len(dms) == 4, f"{len(dms)} pages by DM, not 4 (two per tier)")
        s.problems += [f"event log: {g}" for g in log_gaps(rb.db)]
    finally:
        rb.db.close()
    return s


class HangingReceiver:
    """A webhook endpoint whose first request never gets an answer; later ones get 202."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.keys: list[str] = []
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.keys.append(self.headers.get("Idempotency-Key") or "")
                if len(receiver.keys) == 1:
                    receiver.release.wait(30)  # the sender is killed while it waits here
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def webhook_killed(root: Path, write_config: Callable[..., Path]) -> Scenario:
    """`rollbot clock` killed while its webhook page is in flight (the receiver has the POST and
    has not answered): the restarted clock sends the page again, under the same idempotency key,
    and records it once."""
    from escalation.helpers import contacts, operator

    from rollbot.config import Contact

    s = Scenario("webhook page in flight (rollbot clock)")
    receiver = HangingReceiver()
    settings = settings_for(root, write_book(root), escalation=EscalationConfig(wait_minutes=60))
    people = contacts()
    people[0] = Contact(**{**people[0].model_dump(), "webhook_url": receiver.url})
    settings.contacts = people
    settings.kill_switches = KillSwitchesConfig(interval_s=3600)
    config = write_config(settings, f"{root.name}.toml")
    rb = Rollbot.open(settings, clock=SystemClock())
    try:
        from rollbot.commands.paging.escalation import start_escalation

        first = start(config, "clock")
        _ready(first)
        incident, _ = rb.incidents.open(kind="rollback", reason="PnL -6%", actor=operator())
        start_escalation(rb, incident.id, operator())
        end = time.monotonic() + 20
        while not receiver.keys and time.monotonic() < end:
            time.sleep(0.02)
        s.check(len(receiver.keys) == 1, f"{len(receiver.keys)} POSTs before the kill, not 1")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)

        second = start(config, "clock")
        _ready(second)
        end = time.monotonic() + 10
        while not rb.events.list(kinds=["WEBHOOK_SENT"]) and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.5)  # room for a duplicate to show up, were there one
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=10)
        sent = rb.events.list(kinds=["WEBHOOK_SENT", "WEBHOOK_FAILED"])
        s.check(
            [e.kind for e in sent] == ["WEBHOOK_SENT"],
            f"after the restart: {[e.kind for e in sent]} (the page in flight was lost)",
        )
        s.check(
            len(receiver.keys) == 2 and len(set(receiver.keys)) == 1,
            f"POSTs {receiver.keys}: sent again once, under the same idempotency key",
        )
        s.problems += [f"event log: {g}" for g in log_gaps(rb.db)]
    finally:
        receiver.close()
        rb.db.close()
    return s


def _ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "rollbot clock ready" in line, line + (proc.stderr.read() if proc.stderr else "")


def test_sigkill_at_every_kill_point_then_the_restart_finishes_exactly_once(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    points: list[tuple[str, Callable[[], Scenario]]] = []
    for n, where in (
        (1, "step 1 Immediate Halt: at its first write"),
        (2, "step 2 Disconnect: gates files written, their event not"),
        (3, "step 3 Assess: positions read, the step not recorded"),
        (4, "step 4 Flatten: holds about to go REDUCING, nothing sent"),
        (5, "step 5 Verify: read back, NAV sample not stored"),
    ):
        root = tmp_path / f"step{n}"
        points.append(
            (
                where,
                lambda n=n, where=where, root=root: rollback_killed(
                    where, STEP.format(n=n), root, write_config
                ),
            )
        )
    taken = "step 4 Flatten: the venue took an order, the ledger not told"
    points.append(
        (
            taken,
            lambda: rollback_killed(
                taken,
                # every closing intent written: a write still to come would block the process
                # before any order reaches the venue
                f"SELECT 1 WHERE (SELECT count(*) FROM order_intents) >= {len(SMALL_START)}",
                tmp_path / "step4b",
                write_config,
                sent=True,
            ),
        )
    )
    points.append(("approval", lambda: approval_killed(tmp_path / "approval", write_config)))
    points.append(("clock", lambda: clock_killed(tmp_path / "clock", write_config)))
    points.append(("webhook", lambda: webhook_killed(tmp_path / "webhook", write_config)))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(fn) for _, fn in points]
        results = []
        for (name, _), fut in zip(points, futures, strict=True):
            try:
                results.append(fut.result())
            except Exception as exc:  # a scenario that could not run is a finding too
                results.append(Scenario(name, [f"{type(exc).__name__}: {exc}"]))
    seconds = time.perf_counter() - started

    bad = [r for r in results if r.problems]
    record(
        "crashes",
        f"{len(results)} kill points in {seconds:.1f} s, "
        + ("all consistent" if not bad else f"{len(bad)} inconsistent"),
    )
    for r in results:
        record(
            "crashes", f"  {r.name}: " + ("consistent" if not r.problems else "; ".join(r.problems))
        )
    assert not bad, "\n".join(f"{r.name}: {r.problems}" for r in bad)
