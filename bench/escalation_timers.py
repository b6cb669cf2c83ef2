"""Figure 5 — escalation timers.

Firing lag: the real bot (Server with its Clockwork, the courier delivering every page to the
loopback Slack) runs while escalations are started one after another over a few seconds; each
escalation pages tier 1, then its deadline pages tier 2, then the next one exhausts it. Every
firing writes TIMER_FIRED with `lag_s` = fire time minus deadline (commands/rollback/timers.py); the
target is p99 <= 1 s.

Restart: escalations whose deadlines passed while no bot was running (a database written with a
clock set ten minutes back); then `rollbot serve` is started as a real process and timed from
exec until every overdue deadline has been fired, read from its database. The same is measured
in-process from `Clockwork.start()`, without the interpreter start.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fakes.rollbot_harness import secrets_for
from fakes.slack import FakeSlack

from bench.common import Figure, Sizes, paper_venues, settings_for
from bench.serve_process import query_one, serve_process
from rollbot.bot.slack.server import Server
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import Contact, EscalationConfig, Settings
from rollbot.storage.events import Actor

ACTOR = Actor(id="bench", source="cli", name="bench")
CONTACTS = [
    Contact(name="Risk", role="risk_officer", slack_id="U0RISK"),
    Contact(name="Desk", role="trading_desk_manager", slack_id="U0DESK"),
    Contact(name="CTO", role="cto", slack_id="U0CTO"),
    Contact(name="Ops", role="devops", slack_id="U0DEVOPS"),
]


def _settings(root: Path, wait_s: float) -> Settings:
    return settings_for(
        root,
        paper_venues(root, 1, latency_ms=0),
        contacts=CONTACTS,
        escalation=EscalationConfig(wait_minutes=wait_s / 60, repeat=0),
    )


def _fired(app: Rollbot) -> list[dict[str, Any]]:
    return [
        e.data
        for e in app.events.list(kinds=["TIMER_FIRED"], limit=100_000)
        if e.data.get("kind") == "escalation"
    ]


def _fired_count(app: Rollbot) -> int:
    """Cheap enough to poll: parsing every event each time would itself delay the clock."""
    row = app.db.one(
        "SELECT COUNT(*) AS n FROM events WHERE kind = 'TIMER_FIRED'"
        " AND json_extract(data, '$.kind') = 'escalation'"
    )
    return int(row["n"]) if row else 0


async def firing_lag(sizes: Sizes, root: Path, slack: FakeSlack) -> dict[str, Any]:
    from rollbot.commands.paging.escalation import get_escalation, start_escalation

    wait_s = sizes.escalation_wait_s
    server = Server(
        _settings(root, wait_s), secrets_for(slack), http=True, port=0, start_clock=True
    )
    await server.start()
    try:
        if server.clockwork is None:
            raise RuntimeError("the bot has no clock: rollbot.bot.scheduler.Clockwork is missing")
        rb = server.rb
        assert rb is not None
        while server.clockwork.scheduler is None:  # started by a task of its own
            await asyncio.sleep(0.01)
        gap = sizes.timer_spread_s / sizes.timer_count
        incidents = []
        for i in range(sizes.timer_count):
            incident, _ = rb.incidents.open(kind="kill", reason=f"bench page {i}", actor=ACTOR)
            start_escalation(rb, incident.id, ACTOR)
            incidents.append(incident.id)
            await asyncio.sleep(gap)
        tiers = 2  # tier 1 -> tier 2 at the first deadline, exhausted at the second
        expected = tiers * sizes.timer_count
        deadline = time.monotonic() + 2 * wait_s + 30
        while _fired_count(rb) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{_fired_count(rb)} of {expected} escalation deadlines fired in time"
                )
            await asyncio.sleep(0.05)
        fired = _fired(rb)
        statuses = Counter(
            esc.status for i in incidents if (esc := get_escalation(rb, i)) is not None
        )
        if statuses != Counter({"EXHAUSTED": sizes.timer_count}):
            raise RuntimeError(f"escalations did not all run their chain: {dict(statuses)}")
        return {
            "lags": [float(f["lag_s"]) for f in fired],
            "via": dict(Counter(f["via"] for f in fired)),
            "wait_s": wait_s,
        }
    finally:
        await server.stop()


def write_overdue(root: Path, count: int) -> tuple[Settings, list[int]]:
    """Escalations started ten minutes ago with a five-minute wait, by a bot that then stopped."""
    from rollbot.commands.paging.escalation import start_escalation
    from rollbot.storage.timers import Timers

    settings = _settings(root, wait_s=300)
    clock = ManualClock(datetime.now(UTC) - timedelta(minutes=10))
    app = Rollbot.open(settings, clock=clock)
    try:
        for i in range(count):
            incident, _ = app.incidents.open(kind="kill", reason=f"overdue {i}", actor=ACTOR)
            start_escalation(app, incident.id, ACTOR)
        ids = [t.id for t in Timers(app.db, clock).pending(kind="escalation")]
    finally:
        app.db.close()
    assert len(ids) == count, ids
    return settings, ids


def _count_fired(db: Path, ids: list[int]) -> int:
    marks = ",".join("?" * len(ids))
    row = query_one(
        db, f"SELECT COUNT(*) FROM timers WHERE fired_at IS NOT NULL AND id IN ({marks})", (*ids,)
    )
    return int(row[0]) if row else 0  # type: ignore[call-overload]


async def restart_process(sizes: Sizes, root: Path, slack: FakeSlack) -> dict[str, float]:
    settings, ids = write_overdue(root, sizes.restart_overdue)
    db = settings.database.path
    async with serve_process(root, slack, settings.venues) as bot:  # type: ignore[arg-type]
        while _count_fired(db, ids) < len(ids):
            if time.perf_counter() - bot.started > 60:
                raise TimeoutError("overdue escalations not fired 60 s after the restart")
            await asyncio.sleep(0.005)
        done = time.perf_counter() - bot.started
    return {"restart": done, "ready": bot.ready_s}


async def restart_in_process(sizes: Sizes, root: Path) -> float:
    from rollbot.bot.scheduler import Clockwork

    settings, ids = write_overdue(root, sizes.restart_overdue)
    app = Rollbot.open(settings)
    clockwork = Clockwork(app)
    try:
        started = time.perf_counter()
        await clockwork.start()
        while _count_fired(settings.database.path, ids) < len(ids):
            if time.perf_counter() - started > 30:
                raise TimeoutError("overdue escalations not fired 30 s after Clockwork.start()")
            await asyncio.sleep(0.001)
        return time.perf_counter() - started
    finally:
        clockwork.shutdown()
        await app.aclose()


async def run(sizes: Sizes, root: Path) -> list[Figure]:
    async with FakeSlack() as slack:
        lag = await firing_lag(sizes, root / "lag", slack)
        restarts = [
            await restart_process(sizes, root / f"restart{i}", slack)
            for i in range(sizes.restart_runs)
        ]
    in_process = [
        await restart_in_process(sizes, root / f"inproc{i}") for i in range(sizes.restart_runs)
    ]
    vias = ", ".join(f"{k} {v}" for k, v in sorted(lag["via"].items()))
    return [
        Figure(
            key="timer_lag",
            title="Escalation deadline: fire time - deadline",
            unit="s",
            samples=lag["lags"],
            target=1.0,
            target_text="p99 <= 1 s",
            note=f"{sizes.timer_count} escalations started over {sizes.timer_spread_s:g} s in a"
            f" running bot (wait {lag['wait_s']:g} s, 2 tiers): {len(lag['lags'])} firings,"
            f" `lag_s` from TIMER_FIRED (fired by: {vias})",
        ),
        Figure(
            key="restart_overdue",
            title="Restart: exec of `rollbot serve` to overdue escalations fired",
            unit="s",
            samples=[r["restart"] for r in restarts],
            note=f"{sizes.restart_overdue} escalations overdue by 5 min; the process printed its"
            f" ready line after a median {statistics.median(r['ready'] for r in restarts):.3f} s",
        ),
        Figure(
            key="restart_overdue_clockwork",
            title="Restart: Clockwork.start() to overdue escalations fired",
            unit="s",
            samples=in_process,
            note="in-process, the same database: the clock's own share of the restart",
        ),
    ]
