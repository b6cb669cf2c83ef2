"""Risk alerts a person answers: the ops channel's "Acknowledge" and "Roll back now" buttons
(bot/slack renders the `risk_alert` view; the rollback goes through the two-person rule)."""

from __future__ import annotations

from typing import Any

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.checks import scope_of
from rollbot.errors import BadInput, NotFound, Refused
from rollbot.storage.events import Actor
from rollbot.storage.risk import DESK, Firing, Firings, parse_alert_id


def get_alert(app: Rollbot, alert_id: str) -> Firing:
    fid = parse_alert_id(alert_id)
    firing = Firings(app.db).get(fid) if fid is not None else None
    if firing is None:
        raise NotFound(f"unknown risk alert {alert_id!r}")
    return firing


def alert_data(firing: Firing, **extra: Any) -> dict[str, Any]:
    """The `risk_alert` view's data: what the ops channel shows and its buttons carry."""
    data = {
        "id": firing.alert_id,
        "alert_id": firing.alert_id,
        "trigger": firing.trigger,
        "action": firing.action,
        "value": firing.value,
        "threshold": firing.threshold,
        "status": firing.status,
        **firing.data,
        **extra,
    }
    if firing.venue != DESK:
        data["venue"] = firing.venue
    return data


def acknowledge_alert(app: Rollbot, alert_id: str, actor: Actor, note: str = "") -> Firing:
    """The "Acknowledge" button: the alert stops blocking its trigger from re-arming once the
    figure is back inside its threshold. Acknowledging twice changes nothing."""
    firing = get_alert(app, alert_id)
    if firing.action == "auto_rollback":
        raise BadInput(
            f"{firing.alert_id} started rollback {firing.incident_id}: close the incident instead"
        )
    if firing.acked_by:
        return firing
    now = app.clock.now()
    with app.db.write():
        Firings(app.db).update(firing.id, status="ACKNOWLEDGED", acked_by=actor.id, acked_at=now)
        app.events.append(
            "RISK_ALERT_ACKNOWLEDGED",
            actor,
            reason=note or None,
            scope=scope_of(firing.venue),
            data={"alert_id": firing.alert_id, "trigger": firing.trigger},
        )
        acked = get_alert(app, alert_id)
        app.outbox.put(
            "approval",  # refresh every posted copy of the alert
            text=f"Risk alert {firing.alert_id} acknowledged by {actor.label}",
            view="risk_alert",
            data=alert_data(acked, acknowledged_by=actor.id, note=f"Acknowledged by {actor.label}"),
        )
    return get_alert(app, alert_id)


def rollback_request(app: Rollbot, alert_id: str) -> dict[str, Any]:
    """The "Roll back now" button's Engine.rollback arguments, once the two-person rule passed;
    then call alert_rolled_back(app, alert_id, incident_id, actor)."""
    f = get_alert(app, alert_id)
    where = "the desk" if f.venue == DESK else f.venue
    return {
        "reason": f"Risk alert {f.alert_id}: {f.trigger} on {where} "
        f"(value {f.value}, threshold {f.threshold})",
        "trigger": f.trigger,
        "trigger_value": f.value,
        "trigger_threshold": f.threshold,
        "dedupe_key": f"risk-alert:{f.alert_id}",
    }


def alert_rolled_back(app: Rollbot, alert_id: str, incident_id: str, actor: Actor) -> Firing:
    firing = get_alert(app, alert_id)
    if firing.incident_id == incident_id:
        return firing
    if firing.incident_id:
        raise Refused(
            f"{firing.alert_id} is already linked to {firing.incident_id}", code="ALREADY_ROLLED"
        )
    with app.db.write():
        Firings(app.db).update(firing.id, status="ROLLED_BACK", incident_id=incident_id)
        app.events.append(
            "RISK_ALERT_ROLLED_BACK",
            actor,
            incident_id=incident_id,
            scope=scope_of(firing.venue),
            data={"alert_id": firing.alert_id, "trigger": firing.trigger},
        )
    return get_alert(app, alert_id)
