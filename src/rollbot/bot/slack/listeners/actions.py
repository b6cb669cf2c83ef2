"""Buttons, checkboxes and modal submissions."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rollbot.bot.slack.ids import Action, Callback
from rollbot.bot.slack.listeners import requests
from rollbot.bot.slack.parsing import storable
from rollbot.commands.risk import alerts as risk_alerts
from rollbot.commands.rollback import checklist
from rollbot.commands.rollback.rca import RCA_FIELDS, record_rca
from rollbot.config import ROLES
from rollbot.errors import BadInput, RollbotError

if TYPE_CHECKING:
    from rollbot.bot.slack.app import Req, SlackBot


def action_value(req: Req) -> str:
    actions = req.body.get("actions") or []
    if not actions:
        raise BadInput("this button carried no action")
    return str(actions[0].get("value") or "")


async def approve(bot: SlackBot, req: Req) -> None:
    await requests.vote(bot, req, action_value(req), "approve")


async def deny(bot: SlackBot, req: Req) -> None:
    await requests.vote(bot, req, action_value(req), "deny")


async def escalation_ack(bot: SlackBot, req: Req) -> None:
    await requests.acknowledge(bot, req, action_value(req))


async def risk_rollback(bot: SlackBot, req: Req) -> None:
    bot.require(req, list(bot.rb.settings.slack.flatten_roles), "Roll back now")
    await requests.rollback_from_alert(bot, req, action_value(req))


async def risk_ack(bot: SlackBot, req: Req) -> None:
    # an acknowledged alert lets its trigger re-arm: the people who may roll back decide it
    bot.require(req, list(bot.rb.settings.slack.flatten_roles), "Acknowledging a risk alert")
    firing = risk_alerts.acknowledge_alert(bot.rb, action_value(req), req.actor)
    await req.reply(f"You acknowledged {firing.alert_id} ({firing.trigger}).")


async def checklist_tick(bot: SlackBot, req: Req) -> None:
    """A checkbox group changed: tick what was selected, untick what was cleared."""
    bot.require(req, list(ROLES), "The post-rollback checklist")
    action = (req.body.get("actions") or [{}])[0]
    selected = {o["value"] for o in action.get("selected_options") or []}
    in_group = _group_values(req.body, action.get("action_id", "")) or selected
    if not in_group:
        raise BadInput("this checkbox carried no checklist item; nothing was ticked")
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


def rca_modal(incident_id: str) -> dict[str, Any]:
    """The seed's RCA fields (IBKR seed, step 6) as a modal."""
    blocks = [
        {
            "type": "input",
            "block_id": name,
            "label": {"type": "plain_text", "text": name.replace("_", " ").capitalize()},
            "element": {"type": "plain_text_input", "action_id": "value", "multiline": True},
        }
        for name in RCA_FIELDS
    ]
    return {
        "type": "modal",
        "callback_id": Callback.RCA.value,
        "private_metadata": incident_id,
        "title": {"type": "plain_text", "text": f"RCA {incident_id}"[:24]},
        "submit": {"type": "plain_text", "text": "Record"},
        "blocks": blocks,
    }


def register_rca(bot: SlackBot) -> None:
    @bot.bolt.view(Callback.RCA.value)
    async def rca_submitted(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view.get("state", {}).get("values", {})
        fields = {
            name: storable(values.get(name, {}).get("value", {}).get("value") or "").strip()
            for name in RCA_FIELDS
        }
        empty = {name: "required" for name, text in fields.items() if not text}
        if empty:
            await ack(response_action="errors", errors=empty)
            return
        user = body.get("user", {})
        from rollbot.storage.events import Actor

        actor = Actor(id=user.get("id", ""), source="slack", name=user.get("name", ""))
        if not bot.rb.settings.roles_of(actor.id):  # an RCA is one condition for resuming
            message = "recording an RCA needs a rollbot role; you have none"
            bot.rb.events.append(
                "SLACK_REFUSED",
                actor,
                reason=message,
                data={"code": "ROLE_REQUIRED", "request": Callback.RCA.value, "channel": ""},
            )
            await ack(response_action="errors", errors={RCA_FIELDS[0]: message})
            return
        try:
            record_rca(bot.rb, view.get("private_metadata", ""), fields, actor)
        except RollbotError as exc:
            await ack(response_action="errors", errors={RCA_FIELDS[0]: str(exc)[:150]})
            return
        await ack()
        bot.courier.kick()


def register(bot: SlackBot) -> None:
    for action, handler in (
        (Action.APPROVE, approve),
        (Action.DENY, deny),
        (Action.ESCALATION_ACK, escalation_ack),
        (Action.RISK_ROLLBACK, risk_rollback),
        (Action.RISK_ACK, risk_ack),
    ):
        bot.bolt.action(action.value)(bot.listener(action.value, handler))
    tick_ids = re.compile(rf"^{Action.CHECKLIST_TICK.value}(_\d+)?$")
    bot.bolt.action(tick_ids)(bot.listener(Action.CHECKLIST_TICK.value, checklist_tick))
    register_rca(bot)
