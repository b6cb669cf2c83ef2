"""The resume rule on a desk upgraded with history (issue 17): it counts incidents opened since
the last TRADING_RESUMED, and a desk whose incidents were settled before the rule existed has
none. Its database gains a baseline when it is migrated: settled incidents (closed, no hold,
live trading armed since) are not judged again, and one that was not settled still counts.

The history is written by the real commands into a database at the schema before the baseline
(a database from last year), then opened as today's rollbot opens it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from approvals.support import OPERATOR, RISK, make_settings, slack
from rollbot.clock import ManualClock
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging.escalation import close_incident
from rollbot.commands.rollback.drill import run_drill
from rollbot.commands.rollback.engine import Engine
from rollbot.commands.rollback.rca import record_rca
from rollbot.commands.rollback.resume import incidents_since_resume, resume_blockers
from rollbot.config import Settings
from rollbot.errors import Refused
from rollbot.storage.migrations import MIGRATIONS

RCA = {
    "timeline": ["09:30 spread widened", "09:31 kill"],
    "root_cause": "stale quotes after the venue's maintenance",
    "contributing_factors": "no staleness check",
    "lessons_learned": "check quote age",
    "recommended_actions": "reject quotes older than 2 s",
}
NOW = datetime.now(UTC)


@pytest.fixture
def backend() -> str:
    """SQLite only: these desks are built on last year's schema by today's commands, through the
    SQLite file's migration list; the same migration on PostgreSQL is tests/test_pg_backend.py's
    test_a_postgresql_desk_with_history_gets_its_re_arm_baseline_chained."""
    return "sqlite"


async def settle(rb: Rollbot, incident_id: str, *, arm: bool = True) -> None:
    """What the desk did before the resume rule existed: clear the holds, go live, close."""
    holds = [h.id for h in rb.killswitch.holds.active() if h.incident_id == incident_id]
    rb.killswitch.clear_ids(holds, "fixed", slack(RISK))
    if arm:
        rb.gates.arm(slack(RISK), "live again")
    close_incident(rb, incident_id, slack(RISK), "post-mortem done")


async def last_years_desk(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, last: str = "settled"
) -> list[str]:
    """Two incidents a year ago on the schema before the baseline: the first settled; the
    second `last`: settled, still open, still holding, or closed with the gates left off."""
    monkeypatch.setattr("rollbot.storage.db.MIGRATIONS", MIGRATIONS[:10])
    clock = ManualClock(NOW - timedelta(days=365))
    rb = Rollbot.open(settings, clock=clock)
    try:
        assert rb.db.schema_version == 10
        rb.gates.arm(slack(RISK), "live desk")
        first = (await Engine(rb, slack(OPERATOR)).rollback("PnL kill switch -5.2%")).incident
        clock.advance(days=3)
        await settle(rb, first.id)
        clock.advance(days=60)
        second = (await Engine(rb, slack(OPERATOR)).kill("runaway algo", "global")).incident
        clock.advance(days=1)
        if last == "settled":
            await settle(rb, second.id)
        elif last == "holding":  # gates live again, the kill's hold still on
            rb.gates.arm(slack(RISK), "live again")
            close_incident(rb, second.id, slack(RISK), "closed, hold kept")
        elif last == "gates left off":
            rb.gates.disable(slack(RISK), "shadow while we look", second.id)
            await settle(rb, second.id, arm=False)
        return [first.id, second.id]
    finally:
        await rb.aclose()
        monkeypatch.setattr("rollbot.storage.db.MIGRATIONS", MIGRATIONS)


async def test_settled_history_is_not_judged_again_after_the_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    old = await last_years_desk(settings, monkeypatch)
    clock = ManualClock(NOW)
    rb = Rollbot.open(settings, clock=clock)  # today's rollbot: the migration runs
    try:
        assert rb.db.schema_version == len(MIGRATIONS)
        [baseline] = rb.events.list(kinds=["REARM_BASELINE"])
        assert "settled before it existed" in (baseline.reason or "")
        assert incidents_since_resume(rb) == []
        assert rb.gates.read().live_allowed  # the desk trades live, as it did

        new = (await Engine(rb, slack(OPERATOR)).rollback("drawdown 8%")).incident.id
        assert new not in old and incidents_since_resume(rb) == [new]
        blockers = resume_blockers(rb, new)
        assert len(blockers) == 3 and not any(i in b for b in blockers for i in old), blockers

        clock.advance(hours=24)
        record_rca(rb, new, RCA, slack(RISK))
        await run_drill(rb.settings, slack(OPERATOR), clock=clock, workdir=tmp_path / "drill")
        assert resume_blockers(rb, new) == []
        asked = await Approvals(rb).request("resume", {"incident_id": new}, slack(OPERATOR), "ok")
        assert (await Approvals(rb).vote(asked.id, slack(RISK), "approve")).code == "EXECUTED"
        assert rb.gates.read().live_allowed
    finally:
        await rb.aclose()


@pytest.mark.parametrize("last", ["still open", "holding", "gates left off"])
async def test_an_incident_not_settled_at_the_upgrade_still_counts(
    last: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    first, second = await last_years_desk(settings, monkeypatch, last)
    rb = Rollbot.open(settings, clock=ManualClock(NOW))
    try:
        assert incidents_since_resume(rb) == [second]  # the settled one is not judged again
        assert not any(first in b for b in resume_blockers(rb, second))
        if last != "still open":  # re-arming (the gates, or the hold) is a resume's to do
            action = "enable_gates" if last == "gates left off" else "clear_hold"
            params = {} if action == "enable_gates" else {"scope": "global"}
            with pytest.raises(Refused) as refused:
                await Approvals(rb).request(action, params, slack(OPERATOR), "back to live")
            assert refused.value.code == "RESUME_REQUIRED"
            assert f"once its conditions hold for {second}:" in str(refused.value)
    finally:
        await rb.aclose()


async def test_a_database_without_incidents_gets_no_baseline(tmp_path: Path) -> None:
    rb = Rollbot.open(make_settings(tmp_path), clock=ManualClock(NOW))
    try:
        assert rb.events.list(kinds=["REARM_BASELINE"]) == []
        incident = (await Engine(rb, slack(OPERATOR)).kill("runaway algo", "global")).incident
        assert incidents_since_resume(rb) == [incident.id]
    finally:
        await rb.aclose()
