"""Buttons and checkboxes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollbot.bot.slack.ids import Action
from rollbot.bot.slack.listeners import requests
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


def register(bot: SlackBot) -> None:
    for action, handler in (
        (Action.FLATTEN_CONFIRM, flatten_confirm),
        (Action.FLATTEN_CANCEL, flatten_cancel),
        (Action.ESCALATION_ACK, escalation_ack),
    ):
        bot.bolt.action(action.value)(bot.listener(action.value, handler))
