"""Storing a kill's incident and its HALTED hold: the one write a kill makes before it touches
a venue. Apart from the engine so a kill stores its hold with no more imported than this needs:
not asyncio, not the engine, not the venue protocol's records beyond what the hold itself uses.

The terminal's kill writes these same rows with the standard library alone
(commands/killswitch/fast_hold.py); tests/test_fast_hold.py compares both field by field, so a
change here (or in Incidents.open, KillSwitch.trigger, Outbox.put, EventLog.append) fails there
until fast_hold.py writes it too.
"""

from __future__ import annotations

from collections.abc import Callable

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.fast_hold import HOLD_WAIT_MS as HOLD_WAIT_MS
from rollbot.commands.killswitch.trading_state import TradingState, parse_scope
from rollbot.errors import BadInput
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident


def store_held_incident(
    app: Rollbot,
    actor: Actor,
    *,
    kind: str,
    reason: str,
    scope_text: str | None = None,
    trigger: str | None = None,
    trigger_value: float | None = None,
    trigger_threshold: float | None = None,
    dedupe_key: str | None = None,
    hold_source: str = "person",
    also: Callable[[], None] | None = None,
    hold_state: TradingState = TradingState.HALTED,
) -> tuple[Incident, bool]:
    """Store the incident and its hold (HALTED, or REDUCING for `/kill reducing`: only orders
    that shrink a position pass) in one transaction, before any venue call (`also` writes in
    the same transaction: the terminal's BREAK_GLASS)."""
    if not reason or not reason.strip():
        raise BadInput("a reason is required")
    hold_state = TradingState(hold_state)
    if hold_state is TradingState.ACTIVE:
        raise BadInput("a kill holds HALTED or REDUCING")
    scope = parse_scope(scope_text, app.venue_names)
    with app.db.write():
        incident, new = app.incidents.open(
            kind=kind,
            reason=reason.strip(),
            actor=actor,
            scope=scope,
            trigger=trigger,
            trigger_value=trigger_value,
            trigger_threshold=trigger_threshold,
            dedupe_key=dedupe_key,
        )
        if new:
            app.killswitch.trigger(
                scope,
                reason.strip(),
                actor,
                state=hold_state,
                source=hold_source,
                incident_id=incident.id,
            )
            app.outbox.put("headline", incident_id=incident.id)
        if also is not None:
            also()
    return incident, new
