"""Duplicates: 1,000 randomized trials (seeded) mixing retried Slack deliveries (one trigger id
delivered again), double clicks, concurrent approvals and re-run or interrupted rollbacks, on a
fresh database and paper book each. Whatever the mix, the venue gets no duplicate order (at most
one closing order per incident, symbol and attempt; no symbol filled past its starting position;
no position flipped) and every request opens at most one incident.

Each trial runs in-process on a ManualClock (milliseconds each): the commands API, the Slack
face's listener wrapper (SlackDriver), the engine, and a "restart" at the end
(resume_unfinished) that finishes whatever an interrupted run left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliability.figures import record
from reliability.support import (
    OPERATORS,
    RISK,
    SMALL_START,
    SlackDriver,
    audit_book,
    log_gaps,
    new_trigger,
    settings_for,
    write_book,
)
from rollbot.bot.slack.ids import Action, Command
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import ROLLBACK_STEPS, Engine
from rollbot.storage.events import Actor

TRIALS = 1000
SEED = 20260111
SYSTEM = Actor(id="rollbot", source="system")


@dataclass
class Tally:
    trials: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    retried_deliveries: int = 0  # deliveries of a trigger id already delivered
    double_clicks: int = 0  # a second click by the same person (new trigger id)
    concurrent_votes: int = 0  # votes on one request in flight at once
    reruns: int = 0  # a rollback run again: finished, unfinished, or twice at once
    interrupted: int = 0  # runs cancelled mid-way, then finished by a restart
    orders: int = 0  # closing orders the venue took, all trials
    incidents: int = 0
    duplicate_orders: int = 0
    duplicate_incidents: int = 0
    duplicate_requests: int = 0  # approval requests from one (retried) delivery
    duplicate_executions: int = 0  # an approval run more than once
    lost: int = 0  # a request whose incident never appeared
    unfinished: int = 0  # incidents not DONE, approvals left EXECUTING, after the restart
    log_gaps: int = 0
    steps_twice: int = 0  # a step of one incident that ended more than once
    approvals: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def problem(self, trial: int, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(f"trial {trial} (seed {SEED + trial}): {text}")


@dataclass
class Trial:
    number: int
    rng: random.Random
    rb: Rollbot
    slack: SlackDriver
    tally: Tally
    requesters: list[str]
    expected: set[str] = field(default_factory=set)  # dedupe keys that must have an incident
    optional: set[str] = field(default_factory=set)  # keys that may (an interrupted start)
    requested_by: list[str] = field(default_factory=list)  # one approval request each, at most
    extra_orders: int = 0  # orders a re-run of a finished incident sent (must stay 0)

    def requester(self) -> str:
        return self.requesters.pop()

    async def deliver(self, times: int, send: Any) -> None:
        """One delivery `times` times: Slack's retries, at once or one after the other."""
        self.tally.retried_deliveries += times - 1
        if self.rng.random() < 0.5:
            await asyncio.gather(*(send() for _ in range(times)))
        else:
            for _ in range(times):
                await send()


def incident_for(rb: Rollbot, key: str) -> Any:
    row = rb.db.one("SELECT id FROM incidents WHERE dedupe_key = ?", (key,))
    return rb.incidents.get(row["id"]) if row else None


def sent_for(rb: Rollbot, incident_id: str) -> int:
    row = rb.db.one("SELECT COUNT(*) AS n FROM order_intents WHERE incident_id = ?", (incident_id,))
    return int(row["n"]) if row else 0


# -- operations ---------------------------------------------------------------------------------
async def slack_kill(t: Trial) -> None:
    trigger = new_trigger()
    user = t.requester()
    text = t.rng.choice(["runaway algo", "paper fat finger on AAPL", "venue:paper stuck quotes"])
    t.expected.add(f"slack:{trigger}")
    await t.deliver(
        t.rng.randint(2, 4),
        lambda: t.slack.command(Command.KILL, text, user, trigger_id=trigger),
    )


async def clicks(t: Trial, approval_id: str, requester: str) -> None:
    """Approve (and now and then deny) one request, the ways people and Slack repeat clicks."""
    eligible = [u for u in [*OPERATORS, RISK] if u != requester]
    voters = t.rng.sample(eligible, t.rng.randint(1, 3))
    sends = []
    if t.rng.random() < 0.3:  # the requester tries to approve their own request
        sends.append(lambda: t.slack.action(Action.APPROVE, approval_id, requester))
    for voter in voters:
        decision = Action.DENY if t.rng.random() < 0.1 else Action.APPROVE
        style = t.rng.choice(["once", "double_click", "retried", "terminal"])
        if style == "terminal":
            sends.append(
                lambda v=voter, d=decision: Approvals(t.rb).vote(
                    approval_id,
                    Actor(id=v, source="slack"),
                    "approve" if d is Action.APPROVE else "deny",
                    "from the terminal" if d is Action.DENY else None,
                )
            )
            continue
        trigger = new_trigger()
        times = 1
        if style == "double_click":
            t.tally.double_clicks += 1
            times = 2
        elif style == "retried":
            t.tally.retried_deliveries += 1
            times = 2
        for n in range(times):
            tid = trigger if style == "retried" or n == 0 else new_trigger()
            sends.append(
                lambda v=voter, d=decision, tid=tid: t.slack.action(
                    d, approval_id, v, trigger_id=tid
                )
            )
    t.rng.shuffle(sends)
    if len(sends) > 1 and t.rng.random() < 0.6:
        t.tally.concurrent_votes += len(sends)
        await asyncio.gather(*(s() for s in sends))
    else:
        for s in sends:
            await s()


async def approval_via_slack(t: Trial, command: Command, text: str) -> None:
    trigger = new_trigger()
    user = t.requester()
    t.requested_by.append(user)
    await t.deliver(
        t.rng.randint(1, 3), lambda: t.slack.command(command, text, user, trigger_id=trigger)
    )
    row = t.rb.db.one(
        "SELECT id FROM approvals WHERE requested_by = ? AND replaces IS NULL ORDER BY id",
        (user,),
    )
    if row is not None:  # else refused (nothing to flatten): nothing to click
        await clicks(t, row["id"], user)


async def flatten_approval(t: Trial) -> None:
    await approval_via_slack(t, Command.FLATTEN, t.rng.choice(["", "all", "paper"]))


async def rollback_request(t: Trial) -> None:
    if t.rb.settings.approvals.rollback_needs_approval:
        await approval_via_slack(t, Command.ROLLBACK, "PnL -6% today")
        return
    trigger = new_trigger()  # a person may start it alone: one incident per trigger id
    user = t.requester()
    t.expected.add(f"slack:{trigger}")
    await t.deliver(
        t.rng.randint(2, 4),
        lambda: t.slack.command(Command.ROLLBACK, "PnL -6% today", user, trigger_id=trigger),
    )


async def rerun_rollback(t: Trial) -> None:
    """The same rollback started again and again, then its finished incident run once more."""
    key = f"rerun:{t.number}:{t.rng.random()}"
    who = Actor(id=t.requester(), source="cli", name="ops", host="desk")
    t.expected.add(key)
    runs = t.rng.randint(2, 3)
    t.tally.reruns += runs - 1
    if t.rng.random() < 0.5:
        await asyncio.gather(
            *(Engine(t.rb, who).rollback("rerun", dedupe_key=key) for _ in range(runs))
        )
    else:
        for _ in range(runs):
            await Engine(t.rb, who).rollback("rerun", dedupe_key=key)
    incident = incident_for(t.rb, key)
    if incident is not None and incident.phase == "DONE":
        t.tally.reruns += 1
        before = sent_for(t.rb, incident.id)
        await Engine(t.rb, who).run(incident, ROLLBACK_STEPS, new=False)
        t.extra_orders += sent_for(t.rb, incident.id) - before


async def interrupted_rollback(t: Trial) -> None:
    """Cut off at a random point (as a crash would), then finished by a restart or a retry."""
    key = f"cut:{t.number}:{t.rng.random()}"
    who = Actor(id=t.requester(), source="cli", name="ops", host="desk")
    task = asyncio.create_task(Engine(t.rb, who).rollback("interrupted", dedupe_key=key))
    for _ in range(t.rng.randint(0, 60)):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    t.tally.interrupted += 1
    t.tally.reruns += 1
    how = t.rng.choice(["resume", "run", "retry"])
    incident = incident_for(t.rb, key)
    if incident is None and how != "retry":
        t.optional.add(key)  # cut off before the hold was stored: nothing had started
        return
    t.expected.add(key)
    if how == "retry":
        await Engine(t.rb, who).rollback("interrupted, tried again", dedupe_key=key)
    elif how == "run":
        engine = Engine(t.rb, who)
        await engine.run(incident, engine.steps_of(incident), new=False)
    else:  # the next start; younger OPENED ones are left alone for a minute, so move past it
        t.rb.clock.advance(61)  # type: ignore[attr-defined]
        await resume_unfinished(t.rb, SYSTEM)


OPERATIONS = {
    "slack_kill": slack_kill,
    "flatten_approval": flatten_approval,
    "rollback_request": rollback_request,
    "rerun_rollback": rerun_rollback,
    "interrupted_rollback": interrupted_rollback,
}


# -- one trial ----------------------------------------------------------------------------------
def open_trial(template: Path, root: Path, book: Path, rng: random.Random) -> Rollbot:
    shutil.copytree(template, root)
    settings = settings_for(root, book, rollback_needs_approval=rng.random() < 0.6)
    rb = Rollbot.open(settings, clock=ManualClock())
    rb.venues()
    return rb


async def close(rb: Rollbot) -> None:
    venues = dict(rb._venues or {})
    await rb.aclose()
    for v in venues.values():
        if isinstance(v, PaperVenue):
            v.book.db.close()


async def run_trial(number: int, template: Path, root: Path, book: Path, tally: Tally) -> None:
    rng = random.Random(SEED + number)
    rb = open_trial(template, root, book, rng)
    try:
        trial = Trial(number, rng, rb, SlackDriver(rb), tally, rng.sample(OPERATORS, 6))
        names = [rng.choice(list(OPERATIONS)) for _ in range(rng.randint(1, 3))]
        tally.operations.update(names)
        ops = [OPERATIONS[n](trial) for n in names]
        if rng.random() < 0.5:
            await asyncio.gather(*ops)
        else:
            for op in ops:
                await op
        await trial.slack.settle()
        # the restart: whatever was cut off is finished now
        rb.clock.advance(61)  # type: ignore[attr-defined]
        await resume_unfinished(rb, SYSTEM)
        check(trial)
    finally:
        await close(rb)


def check(t: Trial) -> None:
    rb, tally, n = t.rb, t.tally, t.number
    tally.trials += 1
    venue = rb.venue("paper")
    assert isinstance(venue, PaperVenue)
    book = audit_book(venue.book.db, rb.db, SMALL_START)
    tally.orders += book.orders
    dups = book.duplicate_orders + t.extra_orders
    tally.duplicate_orders += dups
    if dups:
        tally.problem(n, f"orders: {book.duplicates + book.overfilled + book.flipped}")
        if t.extra_orders:
            tally.problem(n, f"a finished incident re-run sent {t.extra_orders} order(s)")

    incidents = rb.db.query("SELECT id, dedupe_key, phase FROM incidents")
    tally.incidents += len(incidents)
    approved = {
        f"approval:{r['id']}"
        for r in rb.db.query(
            "SELECT id FROM approvals WHERE status IN ('EXECUTING', 'EXECUTED', 'FAILED')"
            " AND action IN ('flatten', 'rollback')"
        )
    }
    expected = t.expected | approved
    keys = Counter(r["dedupe_key"] for r in incidents)
    # a flatten or rollback (approved, or one a person may start alone) asked while an incident
    # covered it continues that incident (one INCIDENT_CONTINUED under its key) instead of
    # opening its own
    continued = Counter(
        json.loads(e["data"]).get("key")
        for e in rb.db.query("SELECT data FROM events WHERE kind = 'INCIDENT_CONTINUED'")
    )
    extra = (
        sum(c - 1 for c in keys.values() if c > 1)
        + sum(c for k, c in keys.items() if k not in expected | t.optional)
        + sum(c - 1 for c in continued.values() if c > 1)
        + len([k for k in continued if keys[k]])  # both continued and opened its own
        + sum(c for k, c in continued.items() if k not in expected | t.optional)
    )
    lost = len([k for k in expected if not keys[k] and not continued[k]])
    tally.duplicate_incidents += extra
    tally.lost += lost
    if extra or lost:
        tally.problem(n, f"incidents {dict(keys)}; expected {sorted(expected)}")

    for user in t.requested_by:
        row = rb.db.one(
            "SELECT COUNT(*) AS n FROM approvals WHERE requested_by = ? AND replaces IS NULL",
            (user,),
        )
        if row and row["n"] > 1:
            tally.duplicate_requests += row["n"] - 1
            tally.problem(n, f"{row['n']} approval requests from one /command by {user}")
    runs = Counter(
        e.data["approval_id"]
        for e in rb.events.list(kinds=["APPROVAL_EXECUTED", "APPROVAL_FAILED"])
    )
    twice = sum(c - 1 for c in runs.values() if c > 1)
    tally.duplicate_executions += twice
    if twice:
        tally.problem(n, f"approvals run more than once: {dict(runs)}")

    left = [r["id"] for r in incidents if r["phase"] != "DONE"]
    left += [r["id"] for r in rb.db.query("SELECT id FROM approvals WHERE status = 'EXECUTING'")]
    tally.unfinished += len(left)
    if left:
        tally.problem(n, f"unfinished after the restart: {left}")
    # per run of an incident: a continued incident (a flatten or rollback after its kill) runs
    # its steps again after each INCIDENT_CONTINUED, once
    twice_run = rb.db.query(
        "SELECT e.incident_id, json_extract(e.data, '$.step') AS step, (SELECT COUNT(*)"
        " FROM events c WHERE c.incident_id = e.incident_id AND c.kind = 'INCIDENT_CONTINUED'"
        " AND c.id < e.id) AS run, COUNT(*) AS n FROM events e WHERE e.kind = 'STEP_ENDED'"
        " GROUP BY e.incident_id, step, run HAVING n > 1"
    )
    tally.steps_twice += len(twice_run)
    for r in rb.db.query("SELECT status FROM approvals"):
        tally.approvals[r["status"]] += 1
    gaps = log_gaps(rb.db, rb.gates)
    tally.log_gaps += len(gaps)
    if gaps:
        tally.problem(n, f"event log: {gaps[:3]}")


async def test_a_thousand_trials_send_no_duplicate_order_and_open_no_duplicate_incident(
    scratch: Path,
) -> None:
    book = write_book(scratch)
    template = scratch / "template"
    seed_rb = Rollbot.open(settings_for(template, book), clock=ManualClock())
    seed_rb.gates.arm(Actor(id="U0OP1", source="cli"), "a live desk before the trials")
    seed_rb.venues()  # seeds the small book once; every trial starts from a copy
    await close(seed_rb)

    tally = Tally()
    started = time.perf_counter()
    for number in range(TRIALS):
        root = scratch / f"trial-{number}"
        await run_trial(number, template, root, book, tally)
        shutil.rmtree(root, ignore_errors=True)
    seconds = time.perf_counter() - started

    record(
        "duplicates",
        f"{tally.trials} trials in {seconds:.1f} s, {tally.duplicate_orders} duplicate orders, "
        f"{tally.duplicate_incidents} duplicate incidents",
    )
    record(
        "duplicates",
        f"mix: {dict(sorted(tally.operations.items()))}; {tally.retried_deliveries} retried"
        f" deliveries, {tally.double_clicks} double clicks, {tally.concurrent_votes} concurrent"
        f" votes, {tally.reruns} re-runs, {tally.interrupted} interrupted runs",
    )
    record(
        "duplicates",
        f"{tally.orders} closing orders and {tally.incidents} incidents in all;"
        f" {tally.duplicate_requests} duplicate approval requests,"
        f" {tally.duplicate_executions} approvals run twice, {tally.lost} requests lost,"
        f" {tally.unfinished} left unfinished, {tally.log_gaps} event-log gaps",
    )
    record(
        "duplicates",
        f"approval requests ended {dict(sorted(tally.approvals.items()))};"
        f" {tally.steps_twice} steps ran twice (concurrent runs of one incident)",
    )
    assert tally.trials == TRIALS
    assert tally.problems == []
    assert tally.duplicate_orders == 0 and tally.duplicate_incidents == 0
    assert tally.steps_twice == 0  # a second run of one incident waits for the first
    assert tally.orders > 0 and tally.retried_deliveries > 0 and tally.interrupted > 0


def test_a_restart_while_the_first_process_still_runs_the_rollback_runs_it_once(
    tmp_path: Path, write_config: Any
) -> None:
    """`rollbot recover` (or `rollbot rollback`, or the bot starting) while another process is
    in the middle of the incident: that process finishes it; the second runs no step again."""
    from reliability.processes import STEP, desk, run, start, wait_for_row

    settings, slow, fast = desk(tmp_path, write_config)
    first = start(slow, "rollback", "--reason", "the first run", "--confirm")
    wait_for_row(first, settings.database.path, STEP.format(n=3))
    second = run(fast, "recover")
    out, errs = first.communicate(timeout=60)
    db = Rollbot.open(settings, clock=ManualClock())
    try:
        ended = Counter(
            e.data["step"] for e in db.events.list(incident_id="INC-0001", kinds=["STEP_ENDED"])
        )
        venue = db.venue("paper")
        assert isinstance(venue, PaperVenue)
        book = audit_book(venue.book.db, db.db, SMALL_START)
        record(
            "duplicates",
            f"recover while another process runs INC-0001: steps ended"
            f" {dict(sorted(ended.items()))},"
            f" {book.orders} closing orders, {book.duplicate_orders} duplicates",
        )
        assert first.returncode == 0, out + errs
        assert second.returncode == 0, second.stdout + second.stderr
        assert ended == dict.fromkeys(range(1, 6), 1)
        assert book.duplicate_orders == 0 and book.positions == {}
        venue.book.db.close()
    finally:
        db.db.close()
