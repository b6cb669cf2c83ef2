"""Step 5, Verify Recovery: every venue read back (never "flat" about what was not read; an
unreachable venue keeps step 4's last knowledge), the NAV change since the session's first
sample against the threshold (split, where the halt's NAV was read, into drift before the halt
and what the rollback cost), and the trading state and gates as they are now.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.rollback.positions import VenueBook, coverage_line
from rollbot.commands.rollback.run_context import RunContext
from rollbot.commands.rollback.run_model import D0, StepStatus, qty
from rollbot.commands.rollback.steps.assess import read_back
from rollbot.storage.db import loads


def halt_navs(run: RunContext) -> dict[str, str]:
    """The NAV per venue read in step 1, when the hold was stored."""
    return dict(loads(run.app.incidents.get(run.incident.id).start_nav) or {})


def session_start_navs(run: RunContext) -> dict[str, str]:
    """The day's first NAV sample per venue (IBKR seed: nav - initial_nav); the NAV read at
    HALT where no sample exists."""
    navs = halt_navs(run)
    since = run.incident.opened_at - timedelta(hours=24)
    for venue in list(navs) or run.app.venue_names:
        first = run.navs.list(venue=venue, since=since)
        if first:
            navs[venue] = str(first[0].nav)
    return navs


@dataclass
class ReadBack:
    """What the venues said when read back, venue by venue, and the NAV they add up to."""

    residual: dict[str, dict[str, str]] = field(default_factory=dict)
    last_known: dict[str, dict[str, str]] = field(default_factory=dict)  # step 4's, unreachable
    open_orders: dict[str, int] = field(default_factory=dict)
    not_checked: dict[str, list[str]] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    per: dict[str, str] = field(default_factory=dict)
    nav_start: Decimal = D0
    nav_end: Decimal = D0
    # the seed's final PnL (NAV now less the session's first) is drift before the halt
    # plus what the rollback itself cost: each told apart where the halt's NAV was read
    nav_halt: Decimal | None = D0
    currencies: set[str] = field(default_factory=set)


async def verify(run: RunContext) -> dict[str, Any]:
    books = list(await asyncio.gather(*(read_back(run, v) for v in run.venues.values())))
    run.books = books
    seen = _read_back(run, books)
    change = (seen.nav_end - seen.nav_start) / seen.nav_start if seen.nav_start else D0
    threshold = Decimal(str(run.app.settings.nav_change_threshold))
    breached = change < -threshold
    state = run.app.killswitch.state_of(["global", run.incident.scope])
    gates = run.app.gates.read()
    # the gates are step 2's work: a flatten alone (steps 3-5) never touches them
    gates_ok = (
        gates.shadow_active
        if run.incident.scope == "global" and run.incident.kind != "flatten"
        else True
    )
    actions = seen.actions
    actions.append(
        f"NAV change {change:+.2%} vs -{threshold:.0%} threshold"
        + (" — EXCEEDS THRESHOLD" if breached else "")
    )
    actions.append(
        f"Trading state {state.value}; shadow/dry-run "
        + ("active" if gates.shadow_active else "NOT active")
    )
    nav_start, nav_end, nav_halt = seen.nav_start, seen.nav_end, seen.nav_halt
    verification = {
        "all_positions_flat": not seen.residual and not seen.unreachable and not seen.not_checked,
        "no_open_orders": not seen.open_orders and not seen.unreachable and not seen.not_checked,
        "not_checked": seen.not_checked,
        "residual": seen.residual,
        "last_known_residual": seen.last_known,
        "open_orders": seen.open_orders,
        "unreachable": seen.unreachable,
        "start_nav": str(nav_start),
        "final_nav": str(nav_end),
        "final_pnl": str(nav_end - nav_start),
        "halt_nav": str(nav_halt) if nav_halt is not None and nav_start else None,
        "pnl_before_halt": str(nav_halt - nav_start)
        if nav_halt is not None and nav_start
        else None,
        "pnl_during_rollback": str(nav_end - nav_halt)
        if nav_halt is not None and nav_start
        else None,
        "currency": "/".join(sorted(seen.currencies)) or None,
        "nav_change": float(change),
        "nav_loss_exceeds_threshold": breached,
        "trading_state": state.value,
        "shadow_mode_active": gates.shadow_active,
        "live_trading_blocked": not gates.live_allowed,
    }
    checks = [
        verification["all_positions_flat"],
        verification["no_open_orders"],
        state is TradingState.HALTED,
        gates_ok,
    ]
    if all(checks):
        status = StepStatus.SUCCESS
    elif run.venues and len(seen.unreachable) == len(run.venues):
        status = StepStatus.FAILED  # nothing could be read back
    else:
        status = StepStatus.PARTIAL
    return {"status": status, "actions": actions, "venues": seen.per, "verification": verification}


def _read_back(run: RunContext, books: list[VenueBook]) -> ReadBack:
    """Each venue's book as step 5 reports it, and the NAV samples it adds."""
    start_navs = session_start_navs(run)
    halt = halt_navs(run)
    flattened = {f.venue: f for f in run.flattens}
    seen = ReadBack()
    per, actions = seen.per, seen.actions
    for b in books:
        if b.error:
            seen.unreachable.append(b.venue)
            per[b.venue] = f"UNVERIFIED: {b.error}"
            known = flattened.get(b.venue)
            if known is not None and known.residual:
                seen.last_known[b.venue] = {p.symbol: qty(p.quantity) for p in known.residual}
                per[b.venue] += "; last known remaining: " + ", ".join(
                    f"{sym} {q}" for sym, q in seen.last_known[b.venue].items()
                )
            actions.append(f"{b.venue}: could not read back: {per[b.venue]}")
            continue
        if b.positions:
            seen.residual[b.venue] = {p.symbol: qty(p.quantity) for p in b.positions}
        if b.orders:
            seen.open_orders[b.venue] = len(b.orders)
        if b.account:
            run.navs.add(b.venue, b.account.at, b.account.nav, b.account.currency)
        if b.account and b.venue in start_navs:
            seen.nav_start += Decimal(start_navs[b.venue])
            seen.nav_end += b.account.nav
            seen.currencies.add(b.account.currency)
            seen.nav_halt = (
                seen.nav_halt + Decimal(halt[b.venue])
                if seen.nav_halt is not None and b.venue in halt
                else None
            )
        per[b.venue] = (
            "flat, no open orders"
            if not b.positions and not b.orders
            else f"{len(b.positions)} positions and {len(b.orders)} orders remain"
        )
        if b.not_checked:  # never "flat" about what was not read
            seen.not_checked[b.venue] = b.not_checked
            per[b.venue] = per[b.venue].replace("flat, no open orders", "nothing seen")
        if coverage_line(b):
            per[b.venue] += f" ({coverage_line(b)})"
        actions.append(f"{b.venue}: {per[b.venue]}")
    return seen
