"""Slash-command text parsers: pure functions, so every odd input has a clear answer."""

from __future__ import annotations

import re

from rollbot.commands.killswitch.trading_state import SCOPE_KINDS, TradingState, parse_scope
from rollbot.errors import BadInput

INCIDENT_ID = re.compile(r"^INC-\d{1,9}$", re.IGNORECASE)


def storable(text: str) -> str:
    """What a person typed, as every backend stores it: a NUL, which PostgreSQL text refuses
    (the hold of a /kill carrying one could not be stored), becomes U+FFFD."""
    return text.replace("\x00", "\ufffd")


def words(text: str) -> list[str]:
    return (text or "").split()


def is_help(text: str) -> bool:
    return (text or "").strip().lower() in ("help", "-h", "--help", "?")


def kill_state(text: str) -> tuple[TradingState, str]:
    """`reducing [scope] reason…` -> (REDUCING, the rest); anything else is a HALTED kill."""
    first, _, rest = (text or "").strip().partition(" ")
    if first.lower() == "reducing":
        if not rest.strip():
            raise BadInput(
                "/kill reducing needs a reason: `/kill reducing [scope] reason…`, e.g. "
                "`/kill reducing ibkr exits only until the feed is fixed`"
            )
        return TradingState.REDUCING, rest
    return TradingState.HALTED, text


def parse_kill(text: str, venues: list[str]) -> tuple[str, str]:
    """`[scope] reason…` -> (scope, reason). The scope is optional; the reason is not."""
    parts = words(text)
    scope_text = "global"
    if parts and (
        parts[0] in venues
        or parts[0] in ("global", "all")
        or (parts[0].partition(":")[0] in SCOPE_KINDS and ":" in parts[0])
    ):
        scope_text = parts.pop(0)
    if not parts:
        raise BadInput(
            "/kill needs a reason: `/kill [scope] reason…`, e.g. "
            "`/kill ibkr runaway orders on TSLA`"
        )
    return parse_scope(scope_text, venues), " ".join(parts)


def parse_positions(text: str, venues: list[str]) -> tuple[str | None, bool]:
    """`[venue] [public]` -> (venue or None for all, public)."""
    venue, public = None, False
    for word in words(text):
        if word.lower() == "public":
            public = True
        elif word in venues:
            venue = word
        elif word.lower() == "all":
            venue = None
        else:
            raise BadInput(
                f"unknown venue {word!r}: use one of {', '.join(venues)}, `all`, "
                "and optionally `public`"
            )
    return venue, public


def parse_flatten(text: str, venues: list[str]) -> str | None:
    parts = words(text)
    if not parts or parts == ["all"]:
        return None
    if len(parts) == 1 and parts[0] in venues:
        return parts[0]
    raise BadInput(
        f"/flatten takes one venue or `all` (configured: {', '.join(venues)}); got {text.strip()!r}"
    )


def parse_reason(text: str, command: str) -> str:
    reason = (text or "").strip()
    if not reason:
        raise BadInput(f"{command} needs a reason: `{command} reason…`")
    return reason


def parse_incident_id(word: str) -> str:
    if not INCIDENT_ID.match(word):
        raise BadInput(f"{word!r} is not an incident id (like INC-0007)")
    return word.upper()


def parse_incident(text: str) -> tuple[str, str | None, str]:
    """`list` | `status [ID]` | `ack [ID]` | `rca [ID]` | `close ID reason…` -> (verb, id, rest)."""
    parts = words(text)
    verb = parts.pop(0).lower() if parts else "list"
    if verb not in ("list", "status", "ack", "close", "rca"):
        raise BadInput(f"unknown /incident action {verb!r}: use list, status, ack, rca or close")
    incident = parse_incident_id(parts.pop(0)) if parts else None
    rest = " ".join(parts)
    if verb == "close" and (incident is None or not rest):
        raise BadInput("`/incident close INC-0007 reason…` needs the incident and a reason")
    return verb, incident, rest


def parse_gates(text: str) -> str:
    verb = (text or "").strip().lower() or "status"
    if verb not in ("status", "disable"):
        raise BadInput(
            f"unknown /gates action {verb!r}: use status or disable "
            "(re-enabling goes through /resume and a risk officer's approval)"
        )
    return verb
