"""An approved flatten or rollback continues the open incident it was asked for in (issue 16
item 4), on a real SQLite file and the paper venue: its request lives in that thread only; a
closed incident is not continued; a crash mid-continuation is finished by recover as that same
run; a second flatten of the same incident runs its steps again; the kill's hold is untouched."""

from __future__ import annotations

import asyncio

from approvals.support import OPERATOR, RISK, slack
from rollbot.clock import ManualClock
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging.escalation import close_incident
from rollbot.commands.rollback.engine import Engine

KILLER = slack(OPERATOR)


def posted(app: Rollbot, approval_id: str) -> list[tuple[str, str | None]]:
    """(outbox kind, incident) of every first post of this request (its DMs aside)."""
    rows = app.db.query(
        "SELECT kind, incident_id FROM outbox WHERE dedupe_key LIKE ? AND kind != 'dm'",
        (f"approval:{approval_id}:posted%",),
    )
    return [(r["kind"], r["incident_id"]) for r in rows]


async def test_a_flatten_asked_during_a_kill_lives_in_its_thread_and_continues_it(
    app: Rollbot,
) -> None:
    kill = await Engine(app, KILLER).kill("runaway orders")
    [hold] = app.killswitch.holds.active()
    request = await Approvals(app).request("flatten", {"venue": None}, KILLER, "close all")
    assert request.incident_id == kill.incident.id
    assert posted(app, request.id) == [("thread", kill.incident.id)]  # no channel post

    result = await Approvals(app).vote(request.id, slack(RISK), "approve")
    assert result.code == "EXECUTED", result.message
    assert result.result["incident_id"] == kill.incident.id  # type: ignore[index]
    assert [i.id for i in app.incidents.list()] == [kill.incident.id]
    steps = [e.data["step"] for e in app.events.list(kinds=["STEP_ENDED"])]
    assert steps == [1, 2, 3, 4, 5]
    assert await app.venue("paper").positions() == []
    # the kill's own hold was never loosened while the flatten closed positions
    assert [h.id for h in app.killswitch.holds.active()] == [hold.id]
    assert not app.events.list(kinds=["HOLD_STATE"])
    assert app.incidents.get(kill.incident.id).final_status == "SUCCESS"


async def test_a_closed_incident_is_not_continued(app: Rollbot) -> None:
    kill = await Engine(app, KILLER).kill("runaway orders")
    request = await Approvals(app).request("flatten", {"venue": "paper"}, KILLER, "close")
    close_incident(app, kill.incident.id, slack(RISK), "handled")
    result = await Approvals(app).vote(request.id, slack(RISK), "approve")
    assert result.code == "EXECUTED", result.message
    opened = result.result["incident_id"]  # type: ignore[index]
    assert opened != kill.incident.id
    assert app.incidents.get(opened).kind == "flatten"


async def test_a_second_flatten_of_the_incident_runs_its_steps_again(app: Rollbot) -> None:
    await Engine(app, KILLER).kill("runaway orders")
    for symbols in (["AAPL"], None):
        request = await Approvals(app).request(
            "flatten", {"venue": "paper", "symbols": symbols}, KILLER, "close"
        )
        result = await Approvals(app).vote(request.id, slack(RISK), "approve")
        assert result.code == "EXECUTED", result.message
    steps = [e.data["step"] for e in app.events.list(kinds=["STEP_ENDED"])]
    assert steps == [1, 2, 3, 4, 5, 3, 4, 5]
    assert await app.venue("paper").positions() == []
    assert len(app.incidents.list()) == 1


async def test_a_continuation_cut_off_is_finished_by_recover_as_the_same_run(
    app: Rollbot, clock: ManualClock
) -> None:
    kill = await Engine(app, KILLER).kill("runaway orders")
    request = await Approvals(app).request("flatten", {"venue": None}, KILLER, "close all")
    voting = asyncio.create_task(Approvals(app).vote(request.id, slack(RISK), "approve"))
    while not app.events.list(kinds=["STEP_STARTED"])[2:]:  # the continuation's first step
        await asyncio.sleep(0)
    voting.cancel()  # the process running it stops here
    await asyncio.gather(voting, return_exceptions=True)
    assert app.incidents.get(kill.incident.id).phase == "RUNNING"
    clock.advance(minutes=2)
    await resume_unfinished(app, slack(RISK))
    assert app.incidents.get(kill.incident.id).phase == "DONE"
    assert await app.venue("paper").positions() == []
    assert len(app.incidents.list()) == 1
    assert Approvals(app).get(request.id).status.value == "EXECUTED"
