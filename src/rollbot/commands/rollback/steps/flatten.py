"""Step 4, Flatten Positions: the run's own holds loosened to REDUCING while it closes (HALTED
again after), working orders on what it closes cancelled first, then every venue closed to zero
at once by rollback/flatten.py's VenueCloser; a kill that lands meanwhile stops each closer
before its next order (kill_since). One line per venue says how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from rollbot.brokers.base import Venue, VenueError
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.rollback.continuation import symbols_of
from rollbot.commands.rollback.flatten import VenueCloser, VenueFlatten, choose_strategy
from rollbot.commands.rollback.run_context import RunContext
from rollbot.commands.rollback.run_model import D0, StepStatus, qty, step_status
from rollbot.commands.rollback.steps.assess import assess
from rollbot.config import FlattenConfig
from rollbot.storage.incidents import Incident


def kill_since(app: Rollbot, incident: Incident, venues: set[str]) -> Callable[[], str | None]:
    """What stops a flatten before its next order: a HALTED hold over its scope (global, one of
    its venues or an account there, its own scope) set by another kill after the flatten's own
    hold was stored. Holds that were there before (the kill the flatten follows) do not."""
    row = app.db.one("SELECT MIN(id) AS id FROM holds WHERE incident_id = ?", (incident.id,))
    since = int(row["id"]) if row and row["id"] is not None else 0

    def covers(scope: str) -> bool:
        kind, _, name = scope.partition(":")
        return (
            scope in ("global", incident.scope)
            or (kind == "venue" and name in venues)
            or (kind == "account" and name.partition("/")[0] in venues)
        )

    def check() -> str | None:
        for hold in app.killswitch.holds.active():
            if (
                hold.id > since
                and hold.state == TradingState.HALTED.value
                and hold.incident_id != incident.id
                and covers(hold.scope)
            ):
                who = hold.incident_id or hold.source
                return f"kill {who} (hold #{hold.id} on {hold.scope}: {hold.reason})"
        return None

    return check


async def cancel_working(venue: Venue, symbols: set[str] | None) -> str:
    """Working orders could re-open what the flatten closes (a resting stop): cancel them
    first, only those on the chosen symbols when a subset is flattened. Our own closes
    (client ids "rb…") are left to the closer."""
    try:
        working = [
            o
            for o in await venue.open_orders()
            if not (o.client_order_id or "").startswith("rb")
            and (not symbols or o.symbol in symbols)
        ]
        if not working:
            return ""
        if symbols:
            for order in working:
                await venue.cancel_order(order.order_id)
            left = [
                o for o in await venue.open_orders() if o.order_id in {w.order_id for w in working}
            ]
        else:
            left = (await venue.cancel_all()).remaining
    except VenueError as exc:
        return f"cancelling working orders failed: {exc}"
    done = len(working) - len(left)
    return f"{done} working order(s) cancelled first" + (
        f", {len(left)} still open" if left else ""
    )


async def flatten(run: RunContext) -> dict[str, Any]:
    app, incident, venues = run.app, run.incident, run.venues
    if run.books is None:  # resumed after a crash past step 3: assess again
        await assess(run)
    assert run.books is not None
    by_name = {b.venue: b for b in run.books}
    symbols = symbols_of(app, incident.id)
    cfg = app.settings.flatten
    # only this flatten's own holds are loosened: another kill's hold, global or not, stays;
    # a flatten continuing a kill's incident loosens nothing (those holds are the kill's)
    own = not run.continuing
    if own:
        app.killswitch.set_incident_state(
            incident.id, TradingState.REDUCING, run.actor, "flattening: only reducing orders pass"
        )
    halted = kill_since(app, incident, set(venues))
    try:
        for name in run.read_only & set(venues):  # assessing left it read-only
            with contextlib.suppress(VenueError):  # step 4 reports the venue if still down
                await venues[name].connect(read_only=False)

        cancelled: dict[str, str] = {}

        async def close(v: Venue) -> VenueFlatten:
            book = by_name.get(v.name)
            if book is not None and book.error:
                book = None
            cancelled[v.name] = await cancel_working(v, symbols)
            strategy = choose_strategy(book.exposure if book else D0, cfg)
            assessed = book.positions if book else None  # known until it reads for itself
            return await VenueCloser(
                app, v, incident.id, strategy, run.actor, symbols, assessed, halted
            ).run()

        results = await asyncio.gather(*(close(v) for v in venues.values()))
    finally:
        if own:
            app.killswitch.set_incident_state(
                incident.id, TradingState.HALTED, run.actor, "flatten finished: halted again"
            )
    run.flattens = results
    _announce_stopped(run, results)
    actions, per, orders, errors = [], {}, [], []
    for r in results:
        per[r.venue] = _venue_line(r, cfg)
        errors += [f"{r.venue}: {e}" for e in r.errors]
        if cancelled.get(r.venue):
            per[r.venue] = f"{per[r.venue]}; {cancelled[r.venue]}"
        actions.append(f"{r.venue}: {per[r.venue]}")
        for o in r.outcomes:
            for order in o.orders:
                orders.append({"venue": r.venue, "symbol": o.symbol, **order})
    ok = sum(1 for r in results if r.flat)
    status = step_status(ok, len(results)) if results else StepStatus.SKIPPED
    return {"status": status, "actions": actions, "errors": errors, "venues": per, "orders": orders}


def _announce_stopped(run: RunContext, results: list[VenueFlatten]) -> None:
    """The closers a kill stopped: the event first, then what people see."""
    stopped = sorted({r.stopped_by for r in results if r.stopped_by})
    if not stopped:
        return
    with run.app.db.write():
        run.app.events.append(
            "FLATTEN_STOPPED",
            run.actor,
            incident_id=run.incident.id,
            reason="; ".join(stopped),
            data={"venues": [r.venue for r in results if r.stopped_by]},
        )
        run.app.outbox.put(
            "thread",
            incident_id=run.incident.id,
            text=f"⛔ Flatten stopped before its next order: {'; '.join(stopped)}."
            " Closes still working were cancelled; no order is sent after a kill.",
        )


def _venue_line(r: VenueFlatten, cfg: FlattenConfig) -> str:
    """How one venue's flatten ended, as a person reads it (its errors, the first five)."""
    closed = [o for o in r.outcomes if o.remaining == 0]
    left = ", ".join(f"{p.symbol} {qty(p.quantity)}" for p in r.residual) or "none"
    if r.stopped_by:
        line = (
            f"STOPPED by {r.stopped_by}; no order sent after it; remaining: {left}"
            " (closes still working were cancelled)"
        )
    elif r.flat:
        line = f"flat: {len(closed)} positions closed ({r.strategy})"
    elif r.refused and not r.timed_out:
        refused = "; ".join(f"{sym}: {why}" for sym, why in r.refused.items())
        line = (
            f"NOT flat: the venue refused the close for good ({refused}); not re-sent,"
            f" escalated; remaining: {left}"
        )
    elif r.verified:
        line = (
            f"NOT flat: gave up after {cfg.timeout_s:g} s; remaining: {left}"
            " (closes still working were cancelled)"
        )
    elif r.known:
        line = f"NOT verified: venue unreachable; last known remaining: {left}"
    else:
        line = "NOT verified: venue unreachable; its positions were never read"
    if r.errors:
        line += f"; errors: {' | '.join(r.errors[:5])}"
    return line
