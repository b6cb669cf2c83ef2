"""Root-cause analysis (IBKR seed, step 6): the five fields of the seed's template, recorded per
incident. A recorded RCA is one of the conditions for resuming live trading.

Faces collect the fields (the Slack modal, `rollbot rca INCIDENT --file F`) and call
`record_rca`; `parse_rca_text` reads the file formats the terminal accepts (TOML, YAML, JSON).
"""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rollbot.clock import iso, parse_iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.mrkdwn import escape
from rollbot.config import ROLES
from rollbot.errors import BadInput, Refused
from rollbot.storage.events import Actor

RCA_FIELDS = (
    "timeline",
    "root_cause",
    "contributing_factors",
    "lessons_learned",
    "recommended_actions",
)
RCA_LABELS = {
    "timeline": "Timeline",
    "root_cause": "Root Cause",
    "contributing_factors": "Contributing Factors",
    "lessons_learned": "Lessons Learned",
    "recommended_actions": "Recommended Actions",
}


class RcaFields(BaseModel):
    """Each field is text; a list (YAML/TOML/JSON arrays) becomes one line per item."""

    model_config = ConfigDict(extra="forbid")

    timeline: str
    root_cause: str
    contributing_factors: str
    lessons_learned: str
    recommended_actions: str

    @field_validator(*RCA_FIELDS, mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        if isinstance(value, list | tuple):
            value = "\n".join(f"- {str(v).strip()}" for v in value if str(v).strip())
        if not isinstance(value, str):
            raise ValueError("must be text or a list of lines")
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()


class Rca(RcaFields):
    incident_id: str
    recorded_by: str
    recorded_at: datetime


def validate_rca(fields: dict[str, Any]) -> RcaFields:
    """The five fields, each non-empty; a missing or unknown field is named."""
    if not isinstance(fields, dict):
        raise BadInput("an RCA is a table/mapping with the fields " + ", ".join(RCA_FIELDS))
    try:
        return RcaFields.model_validate(fields)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            name = ".".join(str(p) for p in e["loc"]) or "(top level)"
            if e["type"] == "missing":
                problems.append(f"{name}: missing")
            elif e["type"] == "extra_forbidden":
                problems.append(f"{name}: unknown field (expected {', '.join(RCA_FIELDS)})")
            else:
                problems.append(f"{name}: {e['msg'].removeprefix('Value error, ')}")
        raise BadInput("RCA is incomplete or invalid: " + "; ".join(problems)) from None


def parse_rca_text(text: str, origin: str) -> dict[str, Any]:
    """TOML, JSON or YAML by the file's suffix (TOML, then YAML, when the suffix says nothing).
    A top-level [rca] table is accepted as well as the fields at the top level."""
    suffix = origin.lower().rsplit(".", 1)[-1] if "." in origin else ""
    try:
        if suffix == "json":
            data = json.loads(text)
        elif suffix in ("yaml", "yml"):
            data = yaml.safe_load(text)
        elif suffix == "toml":
            data = tomllib.loads(text)
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                data = yaml.safe_load(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise BadInput(f"RCA file {origin} does not parse: {exc}") from None
    if isinstance(data, dict) and set(data) == {"rca"} and isinstance(data["rca"], dict):
        data = data["rca"]
    if not isinstance(data, dict):
        raise BadInput(
            f"RCA file {origin} must hold a table/mapping with the fields {', '.join(RCA_FIELDS)}"
        )
    return data


def get_rca(app: Rollbot, incident_id: str) -> Rca | None:
    row = app.db.one("SELECT * FROM rca WHERE incident_id = ?", (incident_id,))
    if not row:
        return None
    return Rca(**{**row, "recorded_at": parse_iso(row["recorded_at"])})


def record_rca(app: Rollbot, incident_id: str, fields: dict[str, Any], actor: Actor) -> Rca:
    """Store (or replace) the incident's RCA; an event and a message in the incident's thread.

    An RCA is one condition for resuming live trading, so only someone holding a rollbot role
    may record it, from either face; a refusal names the roles and is on record."""
    incident = app.incidents.get(incident_id)  # NotFound names the id
    if not app.settings.roles_of(actor.id):
        message = (
            f"recording an RCA needs a rollbot role ({', '.join(ROLES)}); {actor.id} holds none"
            + (
                f" (OS user {actor.name}: map it to your Slack ID under [identities])"
                if actor.source == "cli"
                else ""
            )
        )
        app.events.append(
            "RCA_REFUSED",
            actor,
            reason=message,
            incident_id=incident.id,
            data={"code": "ROLE_REQUIRED"},
        )
        raise Refused(message, code="ROLE_REQUIRED")
    rca = validate_rca(fields)
    now = app.clock.now()
    with app.db.write():
        existed = app.db.one("SELECT 1 AS x FROM rca WHERE incident_id = ?", (incident.id,))
        app.db.execute(
            "INSERT INTO rca (incident_id, timeline, root_cause, contributing_factors,"
            " lessons_learned, recommended_actions, recorded_by, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (incident_id) DO UPDATE SET"
            " timeline = excluded.timeline, root_cause = excluded.root_cause,"
            " contributing_factors = excluded.contributing_factors,"
            " lessons_learned = excluded.lessons_learned,"
            " recommended_actions = excluded.recommended_actions,"
            " recorded_by = excluded.recorded_by, recorded_at = excluded.recorded_at",
            (
                incident.id,
                rca.timeline,
                rca.root_cause,
                rca.contributing_factors,
                rca.lessons_learned,
                rca.recommended_actions,
                actor.id,
                iso(now),
            ),
        )
        app.events.append(
            "RCA_UPDATED" if existed else "RCA_RECORDED",
            actor,
            incident_id=incident.id,
            data=rca.model_dump(),
        )
        app.outbox.put(
            "thread",
            incident_id=incident.id,
            text=(
                f"Root-cause analysis {'updated' if existed else 'recorded'} for {incident.id}"
                f" by {actor.label}.\n*Root cause:* {escape(rca.root_cause)}"
            ),
        )
    found = get_rca(app, incident.id)
    assert found is not None
    return found
