"""Post-rollback checklists: the seed's items due 1 h and 24 h after the incident, ticks that
record who, and reminders that list only the items still open."""

from __future__ import annotations

from pathlib import Path

import pytest

from escalation.helpers import RISK, events, make_settings, open_incident, outbox, thread_texts
from rollbot.clock import ManualClock, iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback import checklist
from rollbot.commands.rollback.report import CHECKLIST, build_markdown
from rollbot.commands.rollback.timers import fire_due
from rollbot.errors import BadInput, NotFound
from rollbot.storage.events import Actor

HOUR_ITEMS = [k for k, _, w in CHECKLIST if w.total_seconds() == 3600]
DAY_ITEMS = [k for k, _, w in CHECKLIST if w.total_seconds() == 86400]


def risk() -> Actor:
    return Actor(id=RISK, source="slack")


def reminders(app: Rollbot) -> list[dict]:  # type: ignore[type-arg]
    return [r["payload"] for r in outbox(app, kind="thread", view="checklist_reminder")]


def test_open_posts_the_seed_items_with_their_deadlines(app: Rollbot, clock: ManualClock) -> None:
    inc = open_incident(app)
    opened_at = app.incidents.get(inc).opened_at
    clock.advance(minutes=4)  # the rollback took a few minutes
    rows = checklist.open_checklist(app, inc)
    assert [r.item for r in rows] == [k for k, _, _ in CHECKLIST]
    due = {r.item: r.due_at for r in rows}
    assert {(due[k] - opened_at).total_seconds() for k in HOUR_ITEMS} == {3600}
    assert {(due[k] - opened_at).total_seconds() for k in DAY_ITEMS} == {86400}
    [posted] = outbox(app, kind="thread", view="checklist")
    data = posted["payload"]["data"]
    assert data["incident_id"] == inc and len(data["items"]) == 8
    assert data["items"][0]["label"] == "Notify stakeholders (Risk Owner, System Owner)"
    assert data["items"][0]["ticked_by"] is None
    # opening again changes nothing and posts nothing
    checklist.open_checklist(app, inc)
    assert len(outbox(app, kind="thread", view="checklist")) == 1
    assert len(events(app, "CHECKLIST_OPENED")) == 1


async def test_reminders_fire_for_unticked_items_only(app: Rollbot, clock: ManualClock) -> None:
    inc = open_incident(app)
    checklist.open_checklist(app, inc)
    clock.advance(minutes=20)
    checklist.tick(app, inc, "notify_stakeholders", risk())
    checklist.tick(app, inc, "incident_ticket", risk())
    checklist.tick(app, inc, "root_cause", risk())  # a 24 h item done early

    clock.advance(minutes=40)  # one hour after the incident opened
    await fire_due(app)
    [first] = reminders(app)
    assert [i["item"] for i in first["data"]["items"]] == ["schedule_postmortem", "monitor_shadow"]
    assert "Schedule post-mortem review" in first["text"]
    assert "Notify stakeholders" not in first["text"]
    assert "Investigate root cause" not in first["text"]

    checklist.tick(app, inc, "schedule_postmortem", risk())
    checklist.tick(app, inc, "monitor_shadow", risk())
    for item in ("logs_metrics", "code_config"):
        checklist.tick(app, inc, item, risk())
    clock.advance(hours=23)
    await fire_due(app)
    second = reminders(app)[1]
    assert [i["item"] for i in second["data"]["items"]] == ["remediation"]
    assert second["data"]["window"] == "24 hours"
    assert [e.data["items"] for e in events(app, "CHECKLIST_REMINDER")] == [
        ["schedule_postmortem", "monitor_shadow"],
        ["remediation"],
    ]


async def test_no_reminder_when_everything_is_ticked(app: Rollbot, clock: ManualClock) -> None:
    inc = open_incident(app)
    checklist.open_checklist(app, inc)
    for key, _, _ in CHECKLIST:
        checklist.tick(app, inc, key, risk())
    clock.advance(hours=25)
    fired = await fire_due(app)
    assert len(fired) == 2  # both deadlines fired ...
    assert reminders(app) == []  # ... and had nothing to say
    assert events(app, "CHECKLIST_REMINDER") == []


async def test_a_tick_records_who_and_when_and_refreshes_the_posted_checklist(
    app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    checklist.open_checklist(app, inc)
    clock.advance(minutes=7)
    rows = checklist.tick(app, inc, "incident_ticket", risk())
    row = next(r for r in rows if r.item == "incident_ticket")
    assert row.ticked_by == RISK and row.ticked_at == clock.now()
    [refresh] = outbox(app, kind="approval", view="checklist")
    item = next(i for i in refresh["payload"]["data"]["items"] if i["item"] == "incident_ticket")
    assert item["ticked_by"] == RISK and item["ticked_by_label"] == f"<@{RISK}>"
    assert item["ticked_at"] == iso(clock.now())
    [ev] = events(app, "CHECKLIST_TICKED")
    assert ev.actor == RISK and ev.data["item"] == "incident_ticket"
    # the same tick twice: nothing new
    checklist.tick(app, inc, "incident_ticket", Actor(id="U0OTHER", source="slack"))
    assert len(events(app, "CHECKLIST_TICKED")) == 1
    # the report reads who ticked from the same rows
    assert RISK in build_markdown(app, app.incidents.get(inc))
    # unticked again: the reminder lists it
    checklist.untick(app, inc, "incident_ticket", risk())
    clock.advance(hours=1)
    await fire_due(app)
    assert "incident_ticket" in [i["item"] for i in reminders(app)[0]["data"]["items"]]


def test_bad_ticks_are_refused_with_a_clear_message(app: Rollbot) -> None:
    inc = open_incident(app)
    with pytest.raises(NotFound, match="no post-rollback checklist"):
        checklist.tick(app, inc, "incident_ticket", risk())
    checklist.open_checklist(app, inc)
    with pytest.raises(BadInput, match="unknown checklist item 'coffee'"):
        checklist.tick(app, inc, "coffee", risk())
    assert events(app, "CHECKLIST_TICKED") == []
    assert checklist.parse_value(f"{inc}|monitor_shadow") == (inc, "monitor_shadow")
    with pytest.raises(BadInput):
        checklist.parse_value("garbage")


async def test_reminders_survive_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    settings = make_settings(tmp_path)
    first = Rollbot.open(settings, clock=clock)
    inc = open_incident(first)
    checklist.open_checklist(first, inc)
    first.db.close()
    clock.advance(hours=2)
    again = Rollbot.open(settings, clock=clock)
    try:
        await fire_due(again)
        assert len(reminders(again)) == 1
        assert any("1 hour post-rollback deadline" in t for t in thread_texts(again, inc))
    finally:
        again.db.close()
