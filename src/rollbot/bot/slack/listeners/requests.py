"""Risky actions asked for in Slack go through the two-person rule
(commands/approvals/two_person.py): the request shows exactly what will run, a second person
approves it with a button, and what was approved is what runs. A rollback the config lets a person
start alone runs at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollbot.bot.slack import parsing, views
from rollbot.commands.approvals.records import APPROVED_STATES, label
from rollbot.commands.approvals.two_person import ApprovalRequest, Approvals
from rollbot.commands.desk.mrkdwn import escape
from rollbot.commands.paging import escalation
from rollbot.commands.rollback.engine import ROLLBACK_STEPS, Engine, covering_incident
from rollbot.commands.rollback.resume import resume_blockers
from rollbot.errors import BadInput, Refused

if TYPE_CHECKING:
    from rollbot.bot.slack.app import Req, SlackBot


def _posted(request: ApprovalRequest) -> str:
    where = f"{request.incident_id}'s thread" if request.incident_id else "the ops channel"
    return (
        f"Request `{request.id}` ({request.action}) posted in {where}: it runs when "
        "a second person with the right role approves it. It expires"
        f" {views.when(request.expires_at)} unless approved."
    )


def _too_late(request: ApprovalRequest, user_id: str) -> str:
    """A losing click: who decided it, when, and what it is doing now."""
    decided = "approved" if request.status in APPROVED_STATES else request.status.value.lower()
    deciders = request.approvers if request.status in APPROVED_STATES else []
    deciders = deciders or [request.decided_by or ""]
    at = f" {views.when(request.decided_at)}" if request.decided_at else ""
    state = f"; it is {request.status.value} now" if request.status in APPROVED_STATES else ""
    if user_id in deciders:
        return f"Not counted: you already {decided} `{request.id}`{at}{state}."
    who = ", ".join(label(d) for d in deciders if d) or "someone else"
    return f"Not counted: {who} {decided} `{request.id}` first{at}{state}."


async def flatten(bot: SlackBot, req: Req, venue: str | None) -> None:
    request = await Approvals(bot.rb).request(
        "flatten",
        {"venue": venue, "symbols": None},
        req.actor,
        f"/flatten {venue or 'all'} by {req.actor.label}",
    )
    bot.courier.kick()
    await req.reply(_posted(request))


async def rollback(bot: SlackBot, req: Req, reason: str) -> None:
    approvals = Approvals(bot.rb)
    if approvals.needs_approval("rollback", req.actor):
        request = await approvals.request("rollback", {}, req.actor, reason)
        bot.courier.kick()
        await req.reply(_posted(request))
        return
    incident_id = await start_rollback(bot, req, reason, f"slack:{req.trigger_id}")
    await req.reply(f"Rollback of {incident_id} started; each step is posted in its thread.")


async def start_rollback(bot: SlackBot, req: Req, reason: str, dedupe_key: str) -> str:
    engine = Engine(bot.rb, req.actor)
    going_on = covering_incident(bot.rb, "rollback", None)
    if going_on is not None:  # the open incident goes on: its thread, its pages, its report
        run = engine.continue_incident(
            going_on.id, kind="rollback", reason=reason, dedupe_key=dedupe_key
        )
        bot.spawn(run, req=req)
        return going_on.id
    # never waits on another process's write lock: the cancels go first (Engine.open_held)
    incident, new = await engine.open_held(
        kind="rollback", reason=reason, trigger="Manual rollback", dedupe_key=dedupe_key
    )
    if new:
        bot.run_incident(engine, incident, ROLLBACK_STEPS, req)
    return incident.id


async def resume(bot: SlackBot, req: Req) -> None:
    """`/resume INCIDENT reason…`: refused, naming each missing condition, until all hold."""
    words = parsing.words(req.text)
    incident_id = parsing.parse_incident_id(words[0])
    reason = " ".join(words[1:])
    if not reason:
        raise BadInput("`/resume INCIDENT reason…` needs a reason")
    blockers = resume_blockers(bot.rb, incident_id)
    if blockers:
        await req.reply(
            f"Resume from {incident_id} refused:\n" + "\n".join(f"• {escape(b)}" for b in blockers)
        )
        return
    request = await Approvals(bot.rb).request(
        "resume", {"incident_id": incident_id}, req.actor, reason
    )
    bot.courier.kick()
    await req.reply(_posted(request))


async def vote(bot: SlackBot, req: Req, approval_id: str, decision: str) -> None:
    """The winning vote waits for the action; the click is acked before this runs."""
    result = await Approvals(bot.rb).vote(approval_id, req.actor, decision)  # type: ignore[arg-type]
    bot.courier.kick()
    if result.refused and result.code == "ALREADY_DECIDED":
        await req.reply(_too_late(result.approval, req.user_id))
    elif result.refused:
        await req.reply(f"Not counted: {escape(result.message)}")
    elif result.superseded_by:
        await req.reply(
            f"The plan changed since it was requested; nothing ran. A fresh request "
            f"`{result.superseded_by}` was posted."
        )
    else:
        await req.reply(result.message)


async def rollback_from_alert(bot: SlackBot, req: Req, alert_id: str) -> None:
    if not alert_id.strip():  # else it would ask for a plain rollback, not this alert's
        raise BadInput("this Roll back now button carried no risk alert; nothing was requested")
    request = await Approvals(bot.rb).request(
        "rollback", {"alert_id": alert_id}, req.actor, f"Roll back now, from risk alert {alert_id}"
    )
    bot.courier.kick()
    await req.reply(_posted(request))


async def acknowledge(bot: SlackBot, req: Req, incident_id: str) -> None:
    """Stops the escalation; the thread and headline say who and when
    (commands/paging/escalation)."""
    settings = bot.rb.settings
    if not settings.roles_of(req.user_id) and req.user_id not in {
        c.slack_id for c in settings.contacts if c.slack_id
    }:
        bot.refuse(req, "NOT_ON_CHAIN", "only people on the escalation chain may acknowledge")
    try:
        esc = escalation.acknowledge(bot.rb, incident_id, req.actor)
    except Refused as exc:  # not on this incident's chain: refused, and recorded as such
        bot.refuse(req, exc.code, str(exc))
    by = f" by <@{esc.acked_by}>" if esc.acked_by else ""
    await req.reply(f"{incident_id}: escalation {esc.status.lower()}{by}.")
