"""The kill switch: durable holds per scope, one per kill (scope, source, incident), and the
pre-trade guard.

Triggering writes one row and one event in a single transaction and touches nothing else:
no venue, no Slack, no approval stands between `/kill` and the stored hold.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from pydantic import BaseModel

from rollbot.brokers.base import Side
from rollbot.clock import Clock
from rollbot.commands.killswitch.gates import Gates
from rollbot.commands.killswitch.guard import Decision, Guard
from rollbot.commands.killswitch.trading_state import TradingState, strictest
from rollbot.errors import BadInput, Refused
from rollbot.storage.db import Database
from rollbot.storage.events import Actor, EventLog, NewEvent
from rollbot.storage.holds import Hold, HoldKey, Holds, NewHold

PERSON = "person"


class HoldWanted(NamedTuple):
    """A hold to set (KillSwitch.trigger's arguments, for trigger_many)."""

    scope: str
    reason: str
    actor: Actor
    state: TradingState = TradingState.HALTED
    source: str = PERSON
    incident_id: str | None = None

    @property
    def key(self) -> HoldKey:
        return (self.scope, self.source, self.incident_id or None)


class ScopeStatus(BaseModel):
    scope: str
    state: TradingState
    holds: list[Hold]


class KillSwitch:
    def __init__(
        self,
        db: Database,
        events: EventLog,
        clock: Clock,
        gates: Gates | None = None,
        guard: Guard | None = None,
    ):
        self.db = db
        self.events = events
        self.clock = clock
        self.holds = Holds(db)
        self.gates = gates
        self.guard = guard or Guard(db, clock, gates)

    def trigger(
        self,
        scope: str,
        reason: str,
        actor: Actor,
        *,
        state: TradingState = TradingState.HALTED,
        source: str = PERSON,
        incident_id: str | None = None,
    ) -> tuple[Hold, bool]:
        """Hold `scope`. Idempotent per (scope, source, incident): returns (hold, created). Each
        kill is its own incident, so a second person's kill is a second hold, never absorbed."""
        return self.trigger_many([HoldWanted(scope, reason, actor, state, source, incident_id)])[0]

    def trigger_many(self, wanted: list[HoldWanted]) -> list[tuple[Hold, bool]]:
        """trigger for each, in one transaction and a fixed number of round trips (a burst of
        kills): the holds already there are read in one query, the new ones written in one."""
        for w in wanted:
            if not w.reason or not w.reason.strip():
                raise BadInput("a reason is required to trigger the kill switch")
            if w.state is TradingState.ACTIVE:
                raise BadInput("a hold is HALTED or REDUCING; clear it to return to ACTIVE")
        now = self.clock.now()
        with self.db.write():
            existing = self.holds.find_many([w.key for w in wanted])
            events: list[NewEvent] = []
            first: dict[HoldKey, HoldWanted] = {}  # a key twice: the second finds the first
            for w in wanted:
                if w.key not in existing:
                    first.setdefault(w.key, w)
            stored = self.holds.insert_many(
                [NewHold(w.scope, w.source, w.state.value, w.reason, w.actor.id, w.incident_id)
                 for w in first.values()],
                now,
            )  # fmt: skip
            created = {id(w) for w in first.values()}
            out: list[tuple[Hold, bool]] = []
            for w in wanted:
                hold = existing.get(w.key) or stored[w.key]
                incident = w.incident_id or hold.incident_id
                if id(w) in created:
                    kind, data_state = "HOLD_SET", w.state.value
                elif TradingState(hold.state).strictness < w.state.strictness:
                    self.holds.set_state(hold.id, w.state.value, now)
                    hold = existing[w.key] = self._get(hold.id)
                    kind, data_state = "HOLD_TIGHTENED", w.state.value
                else:
                    kind, data_state = "HOLD_REPEATED", hold.state
                data = {"hold_id": hold.id, "source": w.source, "state": data_state}
                events.append(NewEvent(kind, w.actor, w.reason, w.scope, incident, data))
                out.append((hold, id(w) in created))
            self.events.append_many(events)
        return out

    def _get(self, hold_id: int) -> Hold:
        [hold] = self.holds.by_ids([hold_id])  # one row: each kill adds a hold to the scope
        return hold

    def set_incident_state(
        self, incident_id: str, state: TradingState, actor: Actor, reason: str
    ) -> list[Hold]:
        """Move this incident's own active holds to `state` (a flatten: HALTED -> REDUCING while
        closing, back to HALTED after). Another kill's hold, global or not, is never touched:
        a flatten only ever changes holds it created itself. Nothing is cleared."""
        now = self.clock.now()
        changed: list[Hold] = []
        with self.db.write():
            for hold in self.holds.active():
                if hold.incident_id == incident_id and hold.state != state.value:
                    self.holds.set_state(hold.id, state.value, now)
                    self.events.append(
                        "HOLD_STATE",
                        actor,
                        reason=reason,
                        scope=hold.scope,
                        incident_id=incident_id,
                        data={
                            "hold_id": hold.id,
                            "source": hold.source,
                            "from": hold.state,
                            "to": state.value,
                        },
                    )
                    changed.append(hold)
        return changed

    def clear(
        self, scope: str, reason: str, actor: Actor, *, source: str | None = None
    ) -> list[Hold]:
        """Clear the holds on exactly this scope (one source, or all). Explicit, with a reason."""
        if not reason or not reason.strip():
            raise BadInput("a reason is required to clear a hold")
        holds = [h for h in self.holds.active([scope]) if source is None or h.source == source]
        if not holds:
            raise Refused(
                f"no active hold on {scope}" + (f" from {source}" if source else ""),
                code="NO_HOLD",
            )
        return self.clear_ids([h.id for h in holds], reason, actor)

    def clear_ids(self, hold_ids: list[int], reason: str, actor: Actor) -> list[Hold]:
        """Clear exactly these holds, those still active; never another one. A clear request
        names its holds when it is filed, so a kill set after it is never cleared by it."""
        if not reason or not reason.strip():
            raise BadInput("a reason is required to clear a hold")
        now = self.clock.now()
        with self.db.write():
            holds = [h for h in self.holds.by_ids(hold_ids) if h.cleared_at is None]
            if not holds:
                named = ", ".join(f"#{i}" for i in hold_ids) or "none"
                raise Refused(f"no hold left to clear (named: {named})", code="NO_HOLD")
            for hold in holds:
                self.holds.clear(hold.id, actor.id, reason, now)
                self.events.append(
                    "HOLD_CLEARED",
                    actor,
                    reason=reason,
                    scope=hold.scope,
                    incident_id=hold.incident_id,
                    data={"hold_id": hold.id, "source": hold.source, "state": hold.state},
                )
        return holds

    def state_of(self, scopes: list[str]) -> TradingState:
        return strictest([TradingState(s) for s in self.holds.active_states(scopes)])

    def status(self, venues: list[str]) -> list[ScopeStatus]:
        """Each scope with its effective state: global, every venue, and any other held scope."""
        active = self.holds.active()
        scopes = ["global", *[f"venue:{v}" for v in venues]]
        scopes += sorted({h.scope for h in active} - set(scopes))
        out = []
        for scope in scopes:
            governing = ["global", scope] if scope != "global" else ["global"]
            holds = [h for h in active if h.scope == scope]
            state = strictest([TradingState(h.state) for h in active if h.scope in governing])
            out.append(ScopeStatus(scope=scope, state=state, holds=holds))
        return out

    def check_order(
        self,
        venue: str,
        symbol: str,
        side: Side | str,
        quantity: Decimal | int | str,
        *,
        position: Decimal | int | str = 0,
        account: str | None = None,
        strategy: str | None = None,
        cancel: bool = False,
        order_id: str | None = None,
    ) -> Decision:
        """The pre-trade guard a trading system calls before sending (commands/killswitch/guard.py).
        Fails closed. `position` is not trusted: under REDUCING the venue's read counts."""
        return self.guard.check(
            venue, symbol, side, quantity, position, account, strategy, cancel, order_id
        )
