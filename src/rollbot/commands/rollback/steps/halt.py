"""Step 1, Immediate Halt: the hold (idempotent, never loosened), the strategy-stop hook, the
scope's cancels on every venue at once with the NAV read beside them, and the chain paged once
the cancels are on their way. The cancels alone, with no database at all, are cancel_now:
what a kill sends while another process holds SQLite's write lock.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rollbot.brokers.base import CancelAllResult, Venue
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.kill_scope import AccountCancel, cancel_account
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.rollback.hooks import run_strategy_stop
from rollbot.commands.rollback.run_context import RunContext, held_state, per_venue, venues_in
from rollbot.commands.rollback.run_model import StepStatus, qty, step_status
from rollbot.storage.db import dumps


async def cancel_in_scope(venue: Venue, scope: str) -> CancelAllResult | AccountCancel:
    """What a kill of `scope` cancels at this venue: one account's orders, or all of them."""
    if scope.startswith("account:"):
        return await cancel_account(venue, scope.partition("/")[2])
    return await venue.cancel_all()


def describe_cancel(cancel: CancelAllResult | AccountCancel | Exception) -> tuple[bool, str]:
    """(complete, what a person reads) for one venue's cancel."""
    if isinstance(cancel, Exception):
        return False, f"FAILED: {cancel}"
    if isinstance(cancel, AccountCancel):
        return cancel.complete, cancel.describe()
    if cancel.complete:
        return True, f"{len(cancel.cancelled)} of {cancel.requested} orders cancelled, none left"
    left = ", ".join(
        f"{o.symbol} {o.side.value} {qty(o.remaining)} ({o.order_id})" for o in cancel.remaining
    )
    return False, f"{len(cancel.cancelled)} cancelled; still open: {left}"


async def cancel_now(app: Rollbot, scope: str, timeout_s: float) -> dict[str, str]:
    """The scope's cancels on every venue at once, touching no database: what a kill does
    while it cannot store its hold. Venue -> what happened there."""
    venues = venues_in(app, scope, timeout_s)
    cancels = await per_venue(venues, lambda v: cancel_in_scope(v, scope), timeout_s)
    return {name: describe_cancel(c)[1] for name, c in cancels.items()}


async def halt(run: RunContext) -> dict[str, Any]:
    app, incident, venues = run.app, run.incident, run.venues
    state = held_state(app, incident)
    actions = [f"Kill switch held {state.value} on {incident.scope}"]
    if state is TradingState.REDUCING:
        actions[0] += " (only orders that shrink a position pass; cancels pass)"
    app.killswitch.trigger(
        incident.scope, incident.reason, run.actor, state=state, incident_id=incident.id
    )  # idempotent, never loosens; restores after a crash
    hook_task = asyncio.create_task(
        run_strategy_stop(app.settings.hooks.strategy_stop, incident.id, incident.reason)
    )

    # the cancels go first and never wait on the NAV read beside them: a venue whose
    # account summary fails must still have its orders cancelled
    both = asyncio.gather(
        per_venue(venues, lambda v: cancel_in_scope(v, incident.scope), run.venue_timeout_s),
        per_venue(venues, lambda v: v.account(), run.venue_timeout_s),
    )
    await asyncio.sleep(0)  # the cancels are on their way before anyone is paged
    run.escalate()
    cancels, accounts = await both
    hook = await hook_task
    if hook:
        actions.insert(1, hook)
    actions += _cancelled_before_hold(app, incident.id)
    ok, per = 0, {}
    navs = {}
    for name, cancel in cancels.items():
        nav = accounts[name]
        done, per[name] = describe_cancel(cancel)
        ok += done
        actions.append(f"{name}: {per[name]}")
        if isinstance(nav, Exception):
            actions.append(f"{name}: NAV not read: {nav}")
        else:
            navs[name] = str(nav.nav)
            run.navs.add(name, nav.at, nav.nav, nav.currency)
    if navs and not incident.start_nav:
        app.incidents.update(incident.id, start_nav=dumps(navs))
    status = step_status(ok, len(venues)) if venues else StepStatus.SUCCESS
    if not venues:
        actions.append("No venue in this scope to cancel at (hold only)")
    return {"status": status, "actions": actions, "venues": per}


def _cancelled_before_hold(app: Rollbot, incident_id: str) -> list[str]:
    """What a kill cancelled while the database kept its hold waiting (Engine.open_held)."""
    actions = []
    for before in app.events.list(incident_id=incident_id, kinds=["CANCELLED_BEFORE_HOLD"]):
        waited = before.data["waited_s"]
        actions.append(
            f"Before the hold was stored (the database was locked for {waited:.2f} s),"
            " cancels went out at once:"
        )
        actions += [f"    {name}: {text}" for name, text in before.data["venues"].items()]
    return actions
