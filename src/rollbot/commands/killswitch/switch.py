"""The kill switch: durable holds per scope, one per kill (scope, source, incident), and the
pre-trade guard.

Triggering writes one row and one event in a single transaction and touches nothing else:
no venue, no Slack, no approval stands between `/kill` and the stored hold.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from rollbot.brokers.base import Side
from rollbot.clock import Clock
from rollbot.commands.killswitch.gates import Gates
from rollbot.commands.killswitch.guard import Decision, Guard
from rollbot.commands.killswitch.trading_state import TradingState, strictest
from rollbot.errors import BadInput, Refused
from rollbot.storage.db import Database
from rollbot.storage.events import Actor, EventLog
from rollbot.storage.holds import Hold, Holds

PERSON = "person"


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
        if not reason or not reason.strip():
            raise BadInput("a reason is required to trigger the kill switch")
        if state is TradingState.ACTIVE:
            raise BadInput("a hold is HALTED or REDUCING; clear it to return to ACTIVE")
        now = self.clock.now()
        with self.db.write():
            existing = self.holds.find(scope, source, incident_id)
            if existing:
                if TradingState(existing.state).strictness < state.strictness:
                    self.holds.set_state(existing.id, state.value, now)
                    self.events.append(
                        "HOLD_TIGHTENED",
                        actor,
                        reason=reason,
                        scope=scope,
                        incident_id=incident_id or existing.incident_id,
                        data={"hold_id": existing.id, "source": source, "state": state.value},
                    )
                else:
                    self.events.append(
                        "HOLD_REPEATED",
                        actor,
                        reason=reason,
                        scope=scope,
                        incident_id=incident_id or existing.incident_id,
                        data={"hold_id": existing.id, "source": source, "state": existing.state},
                    )
                return self._get(existing.id), False
            hold = self.holds.insert(scope, source, state.value, reason, actor.id, incident_id, now)
            self.events.append(
                "HOLD_SET",
                actor,
                reason=reason,
                scope=scope,
                incident_id=incident_id,
                data={"hold_id": hold.id, "source": source, "state": state.value},
            )
        return hold, True

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
