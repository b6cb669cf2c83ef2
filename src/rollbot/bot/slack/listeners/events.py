"""Events API: the App Home tab."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollbot.bot.slack import views
from rollbot.commands.killswitch.gates import gate_lines
from rollbot.commands.risk import preflight
from rollbot.commands.risk.checks import risk_status, status_lines

if TYPE_CHECKING:
    from rollbot.bot.slack.app import SlackBot


def home_view(bot: SlackBot, user_id: str) -> dict[str, Any]:
    rb = bot.rb
    if not bot.may_view(user_id):
        return views.app_home_closed(rb.settings.slack.view_roles)
    states = [s.model_dump(mode="json") for s in rb.killswitch.status(rb.venue_names)]
    incidents = [i.model_dump(mode="json") for i in rb.incidents.list(open_only=True)]
    approvals = rb.db.query(
        "SELECT id, action, requested_by, expires_at FROM approvals WHERE status = 'PENDING'"
        " ORDER BY created_at"
    )
    try:
        risk = status_lines(risk_status(rb))
    except Exception as exc:  # the home tab still shows the rest; the failure is visible
        risk = [f"❌ risk monitors cannot be read: {exc.__class__.__name__}"]
    view = views.app_home(states, incidents, approvals, gate_lines(rb.gates.read()), risk)
    failing = [(c.name, c.reason, c.action) for c in preflight.latest(rb) if not c.ok]
    view["blocks"][1:1] = views.armed_banner(failing)  # under the header, above everything
    return view


def register(bot: SlackBot) -> None:
    @bot.bolt.event("app_home_opened")
    async def app_home_opened(event: dict[str, Any], client: Any) -> None:
        if event.get("tab", "home") != "home":
            return

        async def publish() -> None:
            await client.views_publish(user_id=event["user"], view=home_view(bot, event["user"]))

        bot.spawn(publish())  # after the ack: bolt awaits this listener before answering Slack
