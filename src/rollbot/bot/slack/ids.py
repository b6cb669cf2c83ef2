"""Slash commands, action ids and callback ids in one place (never strings scattered in code)."""

from __future__ import annotations

from enum import StrEnum


class Command(StrEnum):
    KILL = "/kill"
    POSITIONS = "/positions"
    FLATTEN = "/flatten"
    ROLLBACK = "/rollback"
    REPORT = "/rollback-report"
    INCIDENT = "/incident"
    GATES = "/gates"
    RESUME = "/resume"


class Action(StrEnum):
    APPROVE = "approval_approve"
    DENY = "approval_deny"
    ESCALATION_ACK = "escalation_ack"
    CHECKLIST_TICK = "checklist_tick"
    RISK_ROLLBACK = "risk_rollback"
    RISK_ACK = "risk_ack"


class Callback(StrEnum):
    RCA = "rca_modal"
