"""`rollbot risk`: the automatic kill switches — each figure, its threshold and its state, and
acknowledging a risk alert from the terminal. Reads SQLite only: it never calls a venue, so it
answers while the bot (which samples the venues) is running elsewhere."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from rollbot.bot.cli.glass import break_glass
from rollbot.bot.cli.shared import actor, folding_table, guarded, out, settings
from rollbot.commands.risk.monitors import MetricStatus

risk_app = typer.Typer(no_args_is_help=True, help="Automatic kill switches (risk monitors).")

STATE_STYLE = {
    "OK": "green",
    "BREACHED": "bold red",
    "NO_DATA": "dim",
    "DISABLED": "yellow",
    "ERROR": "bold red",
}


def _firing_text(m: MetricStatus) -> str:
    if not m.firing:
        return "-"
    f = m.firing
    text = f"{f.alert_id} {f.status}"
    if f.incident_id:
        text += f" {f.incident_id}"
    if f.acked_by:
        text += f" by {f.acked_by}"
    return text


@risk_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Each metric per venue (and desk-wide), its threshold, action and state."""
    from rollbot.commands.desk.context import Rollbot
    from rollbot.commands.risk.monitors import risk_status

    def go() -> None:
        rb = Rollbot.open(settings(), create=False)  # a reader never creates the database
        try:
            rows = risk_status(rb)
        finally:
            rb.db.close()
        if as_json:
            out.print_json(
                json.dumps(
                    [
                        {
                            **r.model_dump(mode="json"),
                            "value_text": r.value_text,
                            "threshold_text": r.threshold_text,
                        }
                        for r in rows
                    ]
                )
            )
            return
        table = folding_table(
            "Venue", "Metric", "Value", "Trigger", "Action", "State", "Fired", "Detail"
        )
        for r in rows:
            style = STATE_STYLE[r.state]
            table.add_row(
                r.venue or "desk",
                r.trigger,
                r.value_text,
                r.threshold_text,
                r.action,
                f"[{style}]{r.state}[/]",
                _firing_text(r),
                r.detail,
            )
        out.print(table)

    guarded(go)


@risk_app.command("ack")
def ack(
    alert_id: Annotated[str, typer.Argument(help="The alert, e.g. risk-3.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded).")] = "",
    by: Annotated[
        str | None, typer.Option("--by", help="Only your own identity (your OS user, mapped).")
    ] = None,
) -> None:
    """Acknowledge a risk alert (the Slack button's twin): it may re-arm once its figure is
    back inside its threshold."""
    from rollbot.commands.desk.context import Rollbot
    from rollbot.commands.risk.alerts import acknowledge_alert

    def go() -> None:
        rb = Rollbot.open(settings())
        try:
            who = actor(rb, by)
            firing = acknowledge_alert(rb, alert_id, who, reason)
            break_glass(rb, who, "risk ack", reason or None)
            out.print(f"{firing.alert_id} ({firing.trigger}) acknowledged by {firing.acked_by}")
        finally:
            rb.db.close()

    guarded(go)
