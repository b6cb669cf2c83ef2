"""Helpers for escalation, the durable clock, webhooks and checklists: the four contacts of the
IBKR seed's escalation table, settings on a SQLite file under tmp_path, outbox readers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pg_server import database_config

from rollbot.commands.desk.context import Rollbot
from rollbot.config import (
    Contact,
    EscalationConfig,
    PaperVenueConfig,
    PathsConfig,
    Settings,
)
from rollbot.storage.db import loads
from rollbot.storage.events import Actor

RISK, DESK, CTO, DEVOPS = "U0RISK", "U0DESK", "U0CTO", "U0DEVOPS"
OPERATOR, OUTSIDER = "U0OPERATOR", "U0NOBODY"
TIER1, TIER2 = {RISK, DESK}, {CTO, DEVOPS}


def contacts() -> list[Contact]:
    return [
        Contact(
            name="Rita Risk",
            role="risk_officer",
            slack_id=RISK,
            phone="+1-555-0101",
            email="risk@desk.example",
        ),
        Contact(
            name="Dan Desk",
            role="trading_desk_manager",
            slack_id=DESK,
            phone="+1-555-0102",
            email="desk@desk.example",
        ),
        Contact(
            name="Cara CTO", role="cto", slack_id=CTO, phone="+1-555-0103", email="cto@desk.example"
        ),
        Contact(
            name="Dev Ops",
            role="devops",
            slack_id=DEVOPS,
            phone="+1-555-0104",
            email="devops@desk.example",
        ),
    ]


def make_settings(tmp_path: Path, **escalation: Any) -> Settings:
    return Settings(
        database=database_config(tmp_path),
        paths=PathsConfig(
            reports_dir=tmp_path / "reports",
            live_environment=tmp_path / "config" / "live_environment.toml",
            shadow_config=tmp_path / "config" / "shadow_config.toml",
        ),
        venues=[PaperVenueConfig(book_path=tmp_path / "paper.db")],
        roles={"operator": [OPERATOR], "risk_officer": [RISK, "U0RISK2"]},
        contacts=contacts(),
        escalation=EscalationConfig(**escalation),
    )


def operator() -> Actor:
    return Actor(id=OPERATOR, source="slack")


def open_incident(app: Rollbot, kind: str = "rollback", reason: str = "PnL -6% today") -> str:
    incident, _ = app.incidents.open(kind=kind, reason=reason, actor=operator())
    return incident.id


def outbox(app: Rollbot, **where: Any) -> list[dict[str, Any]]:
    """Outbox rows (payload decoded), oldest first; filter on kind/target/incident_id and on
    payload view with view=..."""
    view = where.pop("view", None)
    rows = []
    for r in app.db.query("SELECT * FROM outbox ORDER BY id"):
        r["payload"] = loads(r["payload"]) or {}
        if any(r.get(k) != v for k, v in where.items()):
            continue
        if view is not None and r["payload"].get("view") != view:
            continue
        rows.append(r)
    return rows


def dm_targets(app: Rollbot) -> list[str]:
    return [r["target"] for r in outbox(app, kind="dm", view="escalation_ping")]


def thread_pings(app: Rollbot) -> list[dict[str, Any]]:
    return [r["payload"]["data"] for r in outbox(app, kind="thread", view="escalation_ping")]


def thread_texts(app: Rollbot, incident_id: str) -> list[str]:
    return [r["payload"]["text"] for r in outbox(app, kind="thread", incident_id=incident_id)]


def events(app: Rollbot, kind: str) -> list[Any]:
    return app.events.list(kinds=[kind])
