"""Risky actions asked for in Slack: flatten, rollback, resume, and acknowledging a page.

Until the two-person rule is wired (commands/approvals.py), a flatten is confirmed with a
button by the person who asked; a rollback starts at once; a resume explains its rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollbot.bot.slack import views
from rollbot.commands import escalation
from rollbot.commands.flatten import plan_venue
from rollbot.commands.positions import read_books
from rollbot.commands.rollback import FLATTEN_STEPS, ROLLBACK_STEPS, Engine
from rollbot.errors import Refused

if TYPE_CHECKING:
    from rollbot.bot.slack.app import Req, SlackBot


async def flatten(bot: SlackBot, req: Req, venue: str | None) -> None:
    books = await read_books(bot.rb.select(venue))
    orders = [
        o.model_dump(mode="json")
        for b in books
        for o in plan_venue(b, bot.rb.settings.flatten).orders
    ]
    token = f"{venue or 'all'}|{req.trigger_id}"
    text, blocks = views.flatten_confirm(orders, venue or "all venues", token)
    await req.reply(text, blocks)


async def run_flatten(bot: SlackBot, req: Req, venue: str | None, dedupe_key: str) -> str:
    engine = Engine(bot.rb, req.actor)
    incident, new = engine.open_held_incident(
        kind="flatten", reason=f"/flatten by {req.user_id}", scope_text=venue, dedupe_key=dedupe_key
    )
    if new:
        bot.incident_opened(incident.id, req.actor)
        bot.run_incident(engine, incident, FLATTEN_STEPS, req)
    return incident.id


async def rollback(bot: SlackBot, req: Req, reason: str) -> None:
    incident_id = await start_rollback(bot, req, reason, f"slack:{req.trigger_id}")
    await req.reply(f"Rollback {incident_id} started; each step is posted in its thread.")


async def start_rollback(
    bot: SlackBot, req: Req, reason: str, dedupe_key: str, trigger: str = "Manual rollback"
) -> str:
    engine = Engine(bot.rb, req.actor)
    incident, new = engine.open_held_incident(
        kind="rollback", reason=reason, trigger=trigger, dedupe_key=dedupe_key
    )
    if new:
        bot.incident_opened(incident.id, req.actor)
        bot.run_incident(engine, incident, ROLLBACK_STEPS, req)
    return incident.id


async def resume(bot: SlackBot, req: Req) -> None:
    raise Refused(views.HELP["resume"] + " Resuming is not enabled yet.", code="RESUME_DISABLED")


async def acknowledge(bot: SlackBot, req: Req, incident_id: str) -> None:
    """Stops the escalation; the thread and headline say who and when (commands/escalation)."""
    esc = escalation.acknowledge(bot.rb, incident_id, req.actor)
    by = f" by <@{esc.acked_by}>" if esc.acked_by else ""
    await req.reply(f"{incident_id}: escalation {esc.status.lower()}{by}.")
