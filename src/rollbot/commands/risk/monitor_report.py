"""What one tick of the risk monitor saw and did: the venues sampled or not, the figures, the
triggers fired, suppressed and re-armed, and anything that raised (monitors.py returns it)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from rollbot.commands.risk.checks import MetricStatus


class FiredTrigger(BaseModel):
    alert_id: str
    trigger: str
    venue: str | None
    action: str
    value: float | None
    threshold: float | None
    incident_id: str | None = None
    covered: bool = False  # recorded against a rollback that was already open


class MonitorReport(BaseModel):
    at: datetime
    samples: dict[str, str] = Field(default_factory=dict)  # venue -> NAV sampled this tick
    unreadable: dict[str, str] = Field(default_factory=dict)  # venue -> why
    metrics: list[MetricStatus] = Field(default_factory=list)
    fired: list[FiredTrigger] = Field(default_factory=list)
    suppressed: list[str] = Field(default_factory=list)  # breached, but already fired
    rearmed: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
