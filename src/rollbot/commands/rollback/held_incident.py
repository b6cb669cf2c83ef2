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
from typing import Any, NamedTuple

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.outbox import NewMessage
from rollbot.commands.killswitch.fast_hold import HOLD_WAIT_MS as HOLD_WAIT_MS
from rollbot.commands.killswitch.switch import HoldWanted
from rollbot.commands.killswitch.trading_state import TradingState, parse_scope
from rollbot.errors import BadInput
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident, NewIncident


class HeldRequest(NamedTuple):
    """A kill's incident and hold, checked (held_request) and ready to store."""

    actor: Actor
    incident: NewIncident
    hold_source: str
    hold_state: TradingState


def held_request(
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
    hold_state: TradingState = TradingState.HALTED,
) -> HeldRequest:
    """What store_held_incident stores, checked before anything is written: a reason, a held
    state, a scope it can name (BadInput naming what is wrong)."""
    if not reason or not reason.strip():
        raise BadInput("a reason is required")
    hold_state = TradingState(hold_state)
    if hold_state is TradingState.ACTIVE:
        raise BadInput("a kill holds HALTED or REDUCING")
    scope = parse_scope(scope_text, app.venue_names)
    incident = NewIncident(
        kind, reason.strip(), actor, scope, trigger, trigger_value, trigger_threshold, dedupe_key
    )
    return HeldRequest(actor, incident, hold_source, hold_state)


def store_held_incident(
    app: Rollbot, actor: Actor, *, also: Callable[[], None] | None = None, **kw: Any
) -> tuple[Incident, bool]:
    """Store the incident and its hold (HALTED, or REDUCING for `/kill reducing`: only orders
    that shrink a position pass) in one transaction, before any venue call (`also` writes in
    the same transaction: the terminal's BREAK_GLASS); the keywords are held_request's."""
    return store_held_incidents(app, [held_request(app, actor, **kw)], also=also)[0]


def store_held_incidents(
    app: Rollbot, requests: list[HeldRequest], *, also: Callable[[], None] | None = None
) -> list[tuple[Incident, bool]]:
    """store_held_incident for each, in one transaction of a fixed number of statements,
    whatever their number (a desk's kill storm, stored before the acks): the incidents, then
    the holds of the new ones, then their headlines."""
    with app.db.write():
        opened = app.incidents.open_many([r.incident for r in requests])
        fresh = [(r, inc) for r, (inc, new) in zip(requests, opened, strict=True) if new]
        app.killswitch.trigger_many(
            [
                HoldWanted(inc.scope, inc.reason, r.actor, r.hold_state, r.hold_source, inc.id)
                for r, inc in fresh
            ]
        )
        app.outbox.put_many([NewMessage("headline", incident_id=inc.id) for _, inc in fresh])
        if also is not None:
            also()
    return opened
