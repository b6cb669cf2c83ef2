"""What an approval binds to: each action's parameters checked, and its plan — exactly what will
run, shown to people and hashed. A flatten's plan is every closing order (venue, symbol, side,
quantity, type) and its hash is FlattenPlan.hash; other actions list each change they make.
At approval the plan is computed again and must hash the same, or nothing runs. Here too: the
check that an action would not re-arm live trading outside a resume (refuse_rearm)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.trading_state import TradingState, parse_scope, strictest
from rollbot.commands.risk.alerts import get_alert, rollback_request
from rollbot.commands.rollback.flatten import FlattenPlan, plan_venue
from rollbot.commands.rollback.positions import read_books
from rollbot.commands.rollback.rearm import check_rearm
from rollbot.commands.rollback.resume import gate_changes, resume_plan
from rollbot.errors import BadInput
from rollbot.storage.holds import Hold, Holds

ACTIONS = ("flatten", "rollback", "clear_hold", "enable_gates", "resume")
Action = Literal["flatten", "rollback", "clear_hold", "enable_gates", "resume"]
_PARAMS: dict[str, set[str]] = {
    "flatten": {"venue", "symbols"},
    "rollback": {"alert_id"},  # a risk alert's "Roll back now": its trigger rides along
    "clear_hold": {"scope", "source", "hold_ids"},
    "enable_gates": set(),
    "resume": {"incident_id"},
}


class Plan(BaseModel):
    """What an approval binds to. `lines` are shown to people: a dict per flatten order
    (venue, symbol, side, quantity, type, note), text for everything else."""

    lines: list[str | dict[str, str]]
    hash: str
    problem: str | None = None  # nothing to do: the request is refused


def plan_hash(payload: Any) -> str:
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


def check_params(
    app: Rollbot, action: str, params: dict[str, Any] | None, incident_id: str | None
) -> dict[str, Any]:
    if action not in ACTIONS:
        raise BadInput(f"unknown action {action!r}: choose from {', '.join(ACTIONS)}")
    params = dict(params or {})
    unknown = sorted(set(params) - _PARAMS[action])
    if unknown:
        raise BadInput(
            f"{action} takes no parameter {', '.join(unknown)}"
            + (f" (known: {', '.join(sorted(_PARAMS[action]))})" if _PARAMS[action] else "")
        )
    if action == "flatten":
        venue = params.get("venue") or None
        if venue in ("all",):
            venue = None
        if venue is not None:
            app.venue(venue)  # BadInput names the configured venues
        symbols = params.get("symbols") or None
        if symbols is not None:
            if isinstance(symbols, str):
                symbols = [symbols]
            symbols = sorted({str(s).strip() for s in symbols if str(s).strip()}) or None
        params = {"venue": venue, "symbols": symbols}
    elif action == "rollback":
        alert = params.get("alert_id")
        params = {"alert_id": get_alert(app, alert).alert_id} if alert else {}
    elif action == "clear_hold":
        scope = parse_scope(params.get("scope") or "global", app.venue_names)
        source = params.get("source") or None
        params = {
            "scope": scope,
            "source": source,
            "hold_ids": _hold_ids(app, scope, source, params.get("hold_ids")),
        }
    elif action == "resume":
        target = params.get("incident_id") or incident_id
        if not target:
            raise BadInput("resume needs the incident it recovers from (incident_id)")
        params = {"incident_id": app.incidents.get(str(target)).id}
    return params


def _hold_ids(app: Rollbot, scope: str, source: str | None, given: Any) -> list[int]:
    """The exact holds a clear request clears, fixed when it is filed: every active hold on the
    scope (from `source`), or the ones named, each of which must be such a hold."""
    active = {h.id for h in Holds(app.db).active([scope]) if not source or h.source == source}
    if given is None:
        return sorted(active)
    try:
        ids = sorted({int(i) for i in (given if isinstance(given, list) else [given])})
    except (TypeError, ValueError):
        raise BadInput(f"hold ids are numbers, got {given!r}") from None
    unknown = [i for i in ids if i not in active]
    if unknown:
        raise BadInput(
            f"no active hold {', '.join(f'#{i}' for i in unknown)} on {scope}"
            + (f" from {source}" if source else "")
            + f" (active: {', '.join(f'#{i}' for i in sorted(active)) or 'none'})"
        )
    return ids


def clear_targets(
    app: Rollbot, params: dict[str, Any], filed_at: datetime | None = None
) -> list[Hold]:
    """The holds a clear request named that are still active (never one set after it). A
    request filed before requests named their holds: the scope's holds set by `filed_at`."""
    if "hold_ids" in params:
        return [h for h in Holds(app.db).by_ids(list(params["hold_ids"])) if not h.cleared_at]
    source = params.get("source")
    return [
        h
        for h in Holds(app.db).active([params["scope"]])
        if (not source or h.source == source) and (filed_at is None or h.created_at <= filed_at)
    ]


def refuse_rearm(
    app: Rollbot, action: str, params: dict[str, Any], filed_at: datetime | None = None
) -> None:
    """Refused when this action would re-arm live trading outside a resume (rearm.py): asked
    when a request is filed, again at the vote that completes it, and again as it runs."""
    if action == "clear_hold":
        named = [h.id for h in clear_targets(app, params, filed_at)]
        check_rearm(app, "clear_hold", clear_ids=named)
    elif action == "enable_gates":
        check_rearm(app, "enable_gates", arm_gates=True)


async def compute_plan(app: Rollbot, action: str, params: dict[str, Any]) -> Plan:
    if action == "flatten":
        return await flatten_plan(app, params)
    return plan_sync(app, action, params)


async def flatten_plan(app: Rollbot, params: dict[str, Any]) -> Plan:
    books = await read_books(app.select(params.get("venue")))
    wanted = set(params.get("symbols") or [])
    held = {p.symbol for b in books for p in b.positions if p.quantity != 0}
    missing = sorted(wanted - held)
    if missing:
        raise BadInput(
            f"unknown symbol(s) {', '.join(missing)}: no position held "
            f"(held: {', '.join(sorted(held)) or 'none'})"
        )
    plan = FlattenPlan(venues=[plan_venue(b, app.settings.flatten, wanted or None) for b in books])
    lines: list[str | dict[str, str]] = [
        {
            "venue": o.venue,
            "symbol": o.symbol,
            "side": o.side.value,
            "quantity": format(o.quantity.normalize(), "f"),
            "type": o.type.value,
            "limit_now": "" if o.limit_now is None else str(o.limit_now),
            "note": o.limit_note,
        }
        for o in plan.orders
    ]
    lines += [f"{v.venue}: unreachable — {v.error}" for v in plan.venues if v.error]
    problem = None
    if not plan.orders and not any(v.error for v in plan.venues):
        where = params.get("venue") or "any venue"
        problem = f"nothing to flatten: no open position at {where}"
    return Plan(lines=lines, hash=plan.hash, problem=problem)


def plan_sync(app: Rollbot, action: str, params: dict[str, Any]) -> Plan:
    lines: list[str | dict[str, str]]
    problem = None
    if action == "rollback":
        venues = ", ".join(app.venue_names) or "no venue"
        cfg = app.settings.flatten
        lines = [
            "Step 1 Immediate Halt: hold global HALTED (stored first), stop the strategy,"
            f" cancel every open order at {venues}",
            "Step 2 Disconnect: live gates disabled (enable_live_trading=false,"
            " live_mode_armed=false, live_dry_run_mode=true), shadow mode on;"
            " venue reconnects off",
            f"Step 3 Assess Positions at {venues}",
            "Step 4 Flatten Positions: close every position held when it runs (market"
            f" orders below {cfg.market_exposure_threshold} exposure per venue, aggressive"
            f" limits ± {cfg.limit_offset_bps} bps above)",
            "Step 5 Verify Recovery: read back positions, open orders, NAV and the gates",
        ]
        if params.get("alert_id"):
            trig = rollback_request(app, params["alert_id"])
            lines.insert(0, f"Trigger: {trig['reason']}")
    elif action == "clear_hold":
        scope, source = params["scope"], params.get("source")
        holds = clear_targets(app, params)
        lines = [
            f"clear {h.state} hold #{h.id} on {h.scope} from {h.source}"
            f" (set by {h.actor}: {h.reason})"
            for h in holds
        ]
        if holds:
            governing = ["global", scope] if scope != "global" else ["global"]
            named = {h.id for h in holds}
            stay = [h for h in Holds(app.db).active(governing) if h.id not in named]
            lines += [
                f"hold #{h.id} on {h.scope} stays {h.state} (not named by this request;"
                f" set by {h.actor}: {h.reason})"
                for h in stay
            ]
            left = strictest([TradingState(h.state) for h in stay])
            lines.append(f"{scope} will then be {left.value}")
        else:
            problem = f"no active hold on {scope}" + (f" from {source}" if source else "")
    elif action == "enable_gates":
        gates = app.gates.read()
        lines = list(gate_changes(app))
        if gates.live_allowed:
            problem = "the live gates are already enabled"
    else:  # resume
        lines = list(resume_plan(app, params["incident_id"]))
    return Plan(
        lines=lines,
        hash=plan_hash({"action": action, "params": params, "lines": lines}),
        problem=problem,
    )
