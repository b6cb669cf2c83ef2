"""Slash commands: parse, authorise, call commands/, render. Nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from rollbot.bot.slack import parsing, views
from rollbot.bot.slack.courier import fix_for
from rollbot.bot.slack.ids import Command
from rollbot.bot.slack.listeners import requests
from rollbot.commands.desk.mrkdwn import escape
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.paging.escalation import close_incident
from rollbot.commands.rollback.engine import KILL_STEPS, Engine, ended_steps
from rollbot.commands.rollback.held_incident import held_request
from rollbot.commands.rollback.positions import read_books
from rollbot.commands.rollback.report import build_log, build_markdown, render
from rollbot.errors import BadInput, DatabaseBusy, Refused, StorageError
from rollbot.storage.incidents import Incident

if TYPE_CHECKING:
    from rollbot.bot.slack.app import Req, SlackBot


def help_for(name: str) -> str:
    return views.HELP[name]


async def kill(bot: SlackBot, req: Req) -> None:
    """Stores the hold before the ack; cancels after it. Nothing waits on anyone."""
    if parsing.is_help(req.text):
        await req.ack_now(text=help_for("kill"), response_type="ephemeral")
        return
    bot.require(req, list(bot.rb.settings.slack.kill_roles), "/kill")
    state, text = parsing.kill_state(req.text)
    scope, reason = parsing.parse_kill(text, bot.rb.venue_names)
    engine = Engine(bot.rb, req.actor)
    kw: dict[str, Any] = {"kind": "kill", "reason": reason, "scope_text": scope}
    kw["dedupe_key"] = f"slack:{req.trigger_id}"
    kw["hold_state"] = state
    mark = "🟡" if state is TradingState.REDUCING else "🔴"
    held = held_request(bot.rb, req.actor, **kw)  # what is wrong is said before any write
    try:
        # with the other kills of this pass of the loop: one transaction (SlackBot._store_held)
        incident, new = await bot.held.submit(held)
    except StorageError as failed:  # locked elsewhere, or failed for good: cancel all the same
        if isinstance(failed, DatabaseBusy):
            why = "the database is locked by another process"
            then = f"the {state.value} hold is retried until stored. Follow the ops channel."
        else:
            why = f"the {state.value} hold could not be stored ({escape(str(failed))})"
            then = "the hold is tried once more, and you are told here what was done."
        await req.ack_now(
            text=f"{mark} {scope}: {why}. Cancelling every open order now; {then}",
            response_type="ephemeral",
        )
        bot.spawn(_kill_once_stored(bot, engine, req, kw), req=req)
        return
    only = " (only orders that shrink a position pass)" if state is TradingState.REDUCING else ""
    await req.ack_now(
        text=f"{mark} {scope} {state.value}{only} ({incident.id}). Cancelling every open order;"
        " follow the thread.",
        response_type="ephemeral",
    )
    if new:  # the run pages the chain once step 1's cancels are out (RunContext.escalate)
        bot.run_incident(engine, incident, KILL_STEPS, req)


async def _kill_once_stored(bot: SlackBot, engine: Engine, req: Req, kw: dict[str, Any]) -> None:
    """The cancels go out at once (Engine.open_held), then the hold, escalation and steps."""
    incident, new = await engine.open_held(**kw)
    if new:
        await engine.run(incident, KILL_STEPS, new=new)


async def positions(bot: SlackBot, req: Req) -> None:
    if parsing.is_help(req.text):
        await req.reply(help_for("positions"))
        return
    bot.require_view(req, "/positions")
    venue, public = parsing.parse_positions(req.text, bot.rb.venue_names)
    books = await read_books(bot.rb.select(venue))
    # a response_url takes 5 posts: 4 messages of the book at most, then where the rest is
    for text, blocks in views.positions_pages(books, max_pages=4):
        await req.reply(text, blocks, public=public)


async def flatten(bot: SlackBot, req: Req) -> None:
    if parsing.is_help(req.text):
        await req.reply(help_for("flatten"))
        return
    bot.require(req, list(bot.rb.settings.slack.flatten_roles), "/flatten")
    venue = parsing.parse_flatten(req.text, bot.rb.venue_names)
    await requests.flatten(bot, req, venue)


async def rollback(bot: SlackBot, req: Req) -> None:
    if parsing.is_help(req.text):
        await req.reply(help_for("rollback"))
        return
    bot.require(req, list(bot.rb.settings.slack.flatten_roles), "/rollback")
    reason = parsing.parse_reason(req.text, "/rollback")
    await requests.rollback(bot, req, reason)


async def report(bot: SlackBot, req: Req) -> None:
    if parsing.is_help(req.text):
        await req.reply(help_for("rollback-report"))
        return
    bot.require_view(req, "/rollback-report")
    word = req.text.strip()
    if word:
        incident = bot.rb.incidents.get(parsing.parse_incident_id(word))
    else:
        latest = bot.rb.incidents.latest()
        if latest is None:
            raise BadInput("there is no incident yet")
        incident = latest
    channel = incident.slack_channel or bot.rb.settings.slack.ops_channel
    try:
        await _post_report(bot, incident, channel)
    except SlackApiError as exc:  # said to the asker with the fix, and counted, never lost
        error = str(exc.response.get("error", "")) if exc.response else str(exc)
        bot.metrics.undeliverable.labels(error).inc()
        raise Refused(
            f"Slack refused the report for {incident.id} ({error}): {fix_for(error, channel)}",
            code="SLACK_REFUSED",
        ) from None
    await req.reply(f"Report for {incident.id} posted in its thread.")


async def _post_report(bot: SlackBot, incident: Incident, channel: str) -> None:
    text, blocks = views.report(
        bot.courier.headline_data(incident),
        ended_steps(bot.rb, incident.id),
        build_log(bot.rb, incident),
    )
    await bot.client.chat_postMessage(
        channel=channel, thread_ts=incident.slack_ts, text=text, blocks=blocks
    )
    # the full report as files: Slack's two-step upload (files.getUploadURLExternal, then
    # files.completeUploadExternal), which files_upload_v2 makes
    await bot.client.files_upload_v2(
        channel=channel,
        thread_ts=incident.slack_ts,
        file_uploads=[
            {
                "content": build_markdown(bot.rb, incident),
                "filename": f"{incident.id}.md",
                "title": f"{incident.id} rollback report (Markdown)",
            },
            {
                "content": render(bot.rb, incident.id, "json"),
                "filename": f"{incident.id}.json",
                "title": f"{incident.id} rollback log (JSON)",
            },
            {
                "content": render(bot.rb, incident.id, "png"),
                "filename": f"{incident.id}.png",
                "title": f"{incident.id} NAV around the incident",
            },
        ],
    )


async def incident(bot: SlackBot, req: Req) -> None:
    if parsing.is_help(req.text):
        await req.reply(help_for("incident"))
        return
    verb, incident_id, rest = parsing.parse_incident(req.text)
    rb = bot.rb
    if verb in ("list", "status"):
        bot.require_view(req, f"/incident {verb}")
    if verb == "list":
        rows = rb.incidents.list(open_only=True)
        text = (
            "\n".join(
                f"• *{i.id}* {i.kind} — {i.phase} {i.final_status or ''} — {escape(i.reason)}"
                for i in rows
            )
            or "No open incidents."
        )
        await req.reply(text)
        return
    target = rb.incidents.get(incident_id) if incident_id else rb.incidents.latest()
    if target is None:
        raise BadInput("there is no incident yet")
    if verb == "status":
        steps = bot.courier.steps_data(target.id)
        text, blocks = views.headline(bot.courier.headline_data(target), steps, [])
        await req.reply(text, blocks)
    elif verb == "ack":
        await requests.acknowledge(bot, req, target.id)
    elif verb == "rca":
        from rollbot.bot.slack.listeners.actions import rca_modal

        await bot.client.views_open(trigger_id=req.trigger_id, view=rca_modal(target.id))
    else:
        bot.require(
            req, ["operator", "risk_officer", "trading_desk_manager", "cto"], "/incident close"
        )
        close_incident(rb, target.id, req.actor, rest)
        rb.outbox.put(
            "thread",
            incident_id=target.id,
            text=f"Incident closed by <@{req.user_id}>: {escape(rest)}",
        )
        rb.outbox.put("headline", incident_id=target.id)
        await req.reply(f"{target.id} closed.")


async def gates(bot: SlackBot, req: Req) -> None:
    if parsing.is_help(req.text):
        await req.reply(help_for("gates"))
        return
    verb = parsing.parse_gates(req.text)
    from rollbot.commands.killswitch.gates import gate_lines

    if verb != "disable":
        bot.require_view(req, "/gates status")

    if verb == "disable":
        bot.require(req, ["operator", "risk_officer"], "/gates disable")
        values = bot.rb.gates.disable(req.actor, f"/gates disable by {req.user_id}")
        values = await bot.rb.gates.settle(values)
        bot.rb.outbox.put(
            "channel", text=f"Live gates disabled by <@{req.user_id}>: shadow mode on."
        )
    else:
        values = bot.rb.gates.read()
    lines = "\n".join(("✅ " if ok else "❌ ") + line for ok, line in gate_lines(values))
    await req.reply(lines)


async def resume(bot: SlackBot, req: Req) -> None:
    if parsing.is_help(req.text) or not req.text.strip():
        await req.reply(help_for("resume"))
        return
    # asking to go live again is for the desk (a risk officer still approves it)
    bot.require(req, ["operator", "risk_officer", "trading_desk_manager", "cto"], "/resume")
    await requests.resume(bot, req)


def register(bot: SlackBot) -> None:
    table = {
        Command.KILL: (kill, False),  # acks itself, after the hold is stored
        Command.POSITIONS: (positions, True),
        Command.FLATTEN: (flatten, True),
        Command.ROLLBACK: (rollback, True),
        Command.REPORT: (report, True),
        Command.INCIDENT: (incident, True),
        Command.GATES: (gates, True),
        Command.RESUME: (resume, True),
    }
    for command, (handler, ack_first) in table.items():
        bot.bolt.command(command.value)(bot.listener(command.value, handler, ack_first=ack_first))
