"""Resuming live trading: refused until time in shadow, an RCA and a passed drill, then a risk
officer's approval re-arms the gates and clears the incident's holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from approvals.support import OPERATOR, OPERATOR2, RISK, events, make_settings, slack
from rollbot.clock import ManualClock, iso
from rollbot.commands.approvals.two_person import Approvals, Status
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.drill import run_drill
from rollbot.commands.rollback.engine import Engine
from rollbot.commands.rollback.rca import RCA_FIELDS, parse_rca_text, record_rca
from rollbot.commands.rollback.resume import resume_blockers
from rollbot.errors import BadInput, NotFound, Refused

RCA = {
    "timeline": ["11:45 large TSLA position", "12:03 PnL kill switch at -5.2%"],
    "root_cause": "Position sizing too aggressive (40% of NAV in one stock)",
    "contributing_factors": "VIX spike to 35; earnings miss",
    "lessons_learned": "Single-stock exposure below 25%",
    "recommended_actions": "BOX_LIM 0.20 -> 0.15; pre-trade volatility check",
}


async def _refusal(approvals: Approvals, incident_id: str) -> str:
    with pytest.raises(Refused) as refused:
        await approvals.request("resume", {"incident_id": incident_id}, slack(OPERATOR), "fixed")
    assert refused.value.code == "RESUME_BLOCKED"
    return str(refused.value)


async def test_resume_refused_for_each_missing_condition_then_allowed(
    app: Rollbot, approvals: Approvals, clock: ManualClock, tmp_path: Path
):
    # a drill that passed BEFORE the incident does not count
    early = await run_drill(app.settings, slack(OPERATOR), clock=clock, workdir=tmp_path / "d1")
    assert early.outcome.final_status.value == "SUCCESS"
    clock.advance(minutes=5)
    outcome = await Engine(app, slack(OPERATOR)).rollback("PnL kill switch -5.2%")
    incident = outcome.incident.id
    assert not app.gates.read().live_allowed
    assert app.killswitch.state_of(["global"]).value == "HALTED"

    message = await _refusal(approvals, incident)
    assert "minimum time in shadow: 24 h required, 0.0 h so far" in message
    assert f"root-cause analysis: none recorded for {incident}" in message
    assert f"drill: none has passed since {incident}" in message
    assert len(resume_blockers(app, incident)) == 3

    clock.advance(hours=23, minutes=59)
    assert "minimum time in shadow: 24 h required, 24.0 h so far" in await _refusal(
        approvals, incident
    )
    clock.advance(minutes=1)
    message = await _refusal(approvals, incident)
    assert "minimum time in shadow" not in message
    assert "root-cause analysis" in message and "drill" in message

    record_rca(app, incident, RCA, slack(RISK))
    assert [b.split(":")[0] for b in resume_blockers(app, incident)] == ["drill"]

    # a drill that failed after the incident does not count either (recorded as run_drill does)
    app.db.execute(
        "INSERT INTO drills (at, status, report_path) VALUES (?, 'FAILED', '')",
        (iso(clock.now()),),
    )
    assert "ended FAILED" in await _refusal(approvals, incident)

    clock.advance(minutes=10)
    passed = await run_drill(app.settings, slack(OPERATOR), clock=clock, workdir=tmp_path / "d2")
    assert passed.outcome.final_status.value == "SUCCESS"
    assert resume_blockers(app, incident) == []

    refusals = events(app, "APPROVAL_REQUEST_REFUSED")
    assert [e.data["code"] for e in refusals] == ["RESUME_BLOCKED"] * 4
    assert not app.gates.read().live_allowed  # nothing changed while refused

    req = await approvals.request("resume", {"incident_id": incident}, slack(OPERATOR), "fixed")
    assert req.incident_id == incident
    assert "gate enable_live_trading: false -> true" in req.plan
    assert any(line.startswith("clear HALTED hold #") for line in req.plan)
    thread = app.db.query(
        "SELECT * FROM outbox WHERE kind = 'thread' AND payload LIKE '%\"view\":\"approval\"%'"
    )
    assert len(thread) == 1 and thread[0]["incident_id"] == incident

    operator = await approvals.vote(req.id, slack(OPERATOR2), "approve")
    assert operator.code == "ROLE_NOT_ALLOWED"  # resume needs a risk officer
    done = await approvals.vote(req.id, slack(RISK), "approve")

    assert done.code == "EXECUTED", done.message
    assert app.gates.read().live_allowed
    assert app.killswitch.state_of(["global"]).value == "ACTIVE"
    assert [h for h in app.killswitch.holds.active() if h.incident_id == incident] == []
    assert app.incidents.get(incident).phase == "RESUMED"
    assert events(app, "TRADING_RESUMED")[0].actor == RISK


async def test_resume_is_checked_again_at_approval_time(
    app: Rollbot, approvals: Approvals, clock: ManualClock, tmp_path: Path
):
    outcome = await Engine(app, slack(OPERATOR)).rollback("drawdown 15%")
    incident = outcome.incident.id
    record_rca(app, incident, RCA, slack(RISK))
    clock.advance(hours=25)
    await run_drill(app.settings, slack(OPERATOR), clock=clock, workdir=tmp_path / "d")
    req = await approvals.request("resume", {"incident_id": incident}, slack(OPERATOR), "ok")

    # meanwhile the desk raised its minimum to 48 h: the approving process reads the new rule
    stricter = make_settings(tmp_path)
    stricter.resume.min_shadow_hours = 48
    other = Rollbot.open(stricter, clock=clock)
    try:
        blocked = await Approvals(other).vote(req.id, slack(RISK), "approve")
    finally:
        await other.aclose()

    assert blocked.code == "RESUME_BLOCKED"
    assert "48 h required, 25.0 h so far" in blocked.message
    assert approvals.get(req.id).status is Status.PENDING
    assert not app.gates.read().live_allowed
    assert app.killswitch.state_of(["global"]).value == "HALTED"
    assert events(app, "APPROVAL_REFUSED")[-1].data["code"] == "RESUME_BLOCKED"


async def test_unknown_incident_and_unfinished_incident(app: Rollbot, approvals: Approvals):
    with pytest.raises(NotFound, match="INC-0042"):
        await approvals.request("resume", {"incident_id": "INC-0042"}, slack(OPERATOR), "x")
    with pytest.raises(BadInput, match="incident"):
        await approvals.request("resume", {}, slack(OPERATOR), "x")
    engine = Engine(app, slack(OPERATOR))
    incident, _ = engine.open_held_incident(kind="rollback", reason="cut off before it ran")
    blockers = resume_blockers(app, incident.id)
    assert "has not put trading in shadow mode yet" in blockers[0]


def test_rca_fields_are_checked_and_named(app: Rollbot):
    incident, _ = Engine(app, slack(OPERATOR)).open_held_incident(kind="kill", reason="x")
    missing = {k: v for k, v in RCA.items() if k != "root_cause"}
    with pytest.raises(BadInput, match="root_cause: missing"):
        record_rca(app, incident.id, missing, slack(RISK))
    with pytest.raises(BadInput, match="lessons_learned: must not be empty"):
        record_rca(app, incident.id, {**RCA, "lessons_learned": "  "}, slack(RISK))
    with pytest.raises(BadInput, match="mood: unknown field"):
        record_rca(app, incident.id, {**RCA, "mood": "bad"}, slack(RISK))
    with pytest.raises(NotFound, match="INC-0099"):
        record_rca(app, "INC-0099", RCA, slack(RISK))
    assert app.db.query("SELECT * FROM rca") == []

    saved = record_rca(app, incident.id, RCA, slack(RISK))
    assert saved.timeline == "- 11:45 large TSLA position\n- 12:03 PnL kill switch at -5.2%"
    again = record_rca(app, incident.id, {**RCA, "root_cause": "sizing"}, slack(RISK))
    assert again.root_cause == "sizing"
    kinds = [e.kind for e in app.events.list(incident_id=incident.id)]
    assert kinds.count("RCA_RECORDED") == 1 and kinds.count("RCA_UPDATED") == 1


def test_rca_file_formats():
    toml = "\n".join(f'{k} = "{k} text"' for k in RCA_FIELDS)
    yaml_text = "\n".join(f"{k}: {k} text" for k in RCA_FIELDS)
    json_text = "{" + ", ".join(f'"{k}": "{k} text"' for k in RCA_FIELDS) + "}"
    wrapped = "[rca]\n" + toml
    for text, name in ((toml, "r.toml"), (yaml_text, "r.yaml"), (json_text, "r.json")):
        assert parse_rca_text(text, name) == {k: f"{k} text" for k in RCA_FIELDS}
    assert parse_rca_text(wrapped, "r.toml")["root_cause"] == "root_cause text"
    assert parse_rca_text(yaml_text, "notes")["timeline"] == "timeline text"
    with pytest.raises(BadInput, match=r"r\.json does not parse"):
        parse_rca_text("{nope", "r.json")
    with pytest.raises(BadInput, match="must hold a table"):
        parse_rca_text("- a\n- b\n", "r.yaml")
