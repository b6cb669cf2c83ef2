"""Buttons and checkboxes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rollbot.bot.slack.ids import Action
from rollbot.bot.slack.listeners import requests
from rollbot.commands import checklist, risk_alerts
from rollbot.errors import BadInput

if TYPE_CHECKING:
    from rollbot.bot.slack.app import Req, SlackBot


def action_value(req: Req) -> str:
    actions = req.body.get("actions") or []
    if not actions:
        raise BadInput("this button carried no action")
    return str(actions[0].get("value") or "")


async def flatten_confirm(bot: SlackBot, req: Req) -> None:
    bot.require(req, list(bot.rb.settings.slack.flatten_roles), "Flatten")
    venue, _, trigger = action_value(req).partition("|")
    incident_id = await requests.run_flatten(
        bot, req, None if venue == "all" else venue, f"slack-flatten:{trigger}"
    )
    await req.reply(f"Flatten {incident_id} started; follow its thread.")


async def flatten_cancel(bot: SlackBot, req: Req) -> None:
    await req.respond(text="Flatten cancelled; nothing was sent.", replace_original=True)


async def escalation_ack(bot: SlackBot, req: Req) -> None:
    await requests.acknowledge(bot, req, action_value(req))


async def risk_ack(bot: SlackBot, req: Req) -> None:
    firing = risk_alerts.acknowledge_alert(bot.rb, action_value(req), req.actor)
    await req.reply(f"You acknowledged {firing.alert_id} ({firing.trigger}).")


async def checklist_tick(bot: SlackBot, req: Req) -> None:
    """A checkbox group changed: tick what was selected, untick what was cleared."""
    action = (req.body.get("actions") or [{}])[0]
    selected = {o["value"] for o in action.get("selected_options") or []}
    in_group = _group_values(req.body, action.get("action_id", "")) or selected
    for value in sorted(in_group):
        incident_id, item = checklist.parse_value(value)
        done = {i.item for i in checklist.items(bot.rb, incident_id) if i.done}
        if value in selected and item not in done:
            checklist.tick(bot.rb, incident_id, item, req.actor)
        elif value not in selected and item in done:
            checklist.untick(bot.rb, incident_id, item, req.actor)


def _group_values(body: dict[str, Any], action_id: str) -> set[str]:
    """Every option of the clicked checkbox group, read from the message it sits in."""
    for block in (body.get("message") or {}).get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id:
                return {o["value"] for o in element.get("options") or []}
    return set()


def register(bot: SlackBot) -> None:
    for action, handler in (
        (Action.FLATTEN_CONFIRM, flatten_confirm),
        (Action.FLATTEN_CANCEL, flatten_cancel),
        (Action.ESCALATION_ACK, escalation_ack),
        (Action.RISK_ACK, risk_ack),
    ):
        bot.bolt.action(action.value)(bot.listener(action.value, handler))
    tick_ids = re.compile(rf"^{Action.CHECKLIST_TICK.value}(_\d+)?$")
    bot.bolt.action(tick_ids)(bot.listener(Action.CHECKLIST_TICK.value, checklist_tick))
