"""Step 3, Assess Positions: every venue's book read at once (a venue that will not answer is
reconnected read-only, as the IBKR seed says, and read again), and the flatten strategy each
venue's exposure calls for. Step 5 reads the venues back the same way (read_back).
"""

from __future__ import annotations

import asyncio
from typing import Any

from rollbot.brokers.base import Venue, VenueError
from rollbot.commands.rollback.flatten import choose_strategy
from rollbot.commands.rollback.positions import VenueBook, read_book
from rollbot.commands.rollback.run_context import RunContext
from rollbot.commands.rollback.run_model import D0, StepStatus, qty, step_status


async def read_back(run: RunContext, venue: Venue) -> VenueBook:
    book = await read_book(venue, run.venue_timeout_s)
    if book.error:  # IBKR seed step 3: reconnect read-only to assess
        try:
            await venue.connect(read_only=True)
            run.read_only.add(venue.name)
            book = await read_book(venue, run.venue_timeout_s)
        except VenueError as exc:
            book = VenueBook(venue=venue.name, error=f"{book.error}; read-only reconnect: {exc}")
    return book


async def assess(run: RunContext) -> dict[str, Any]:
    books = list(await asyncio.gather(*(read_back(run, v) for v in run.venues.values())))
    run.books = books
    cfg = run.app.settings.flatten
    positions: dict[str, dict[str, dict[str, str]]] = {}
    strategies: dict[str, str] = {}
    actions, per = [], {}
    total = D0
    for b in books:
        if b.error:
            per[b.venue] = f"FAILED: {b.error}"
            actions.append(f"{b.venue}: positions could not be read: {b.error}")
            continue
        positions[b.venue] = {
            p.symbol: {
                "quantity": qty(p.quantity),
                "unrealized_pnl": str(p.unrealized_pnl),
                "market_value": str(p.market_value),
            }
            for p in b.positions
        }
        total += b.unrealized_pnl
        strategies[b.venue] = choose_strategy(b.exposure, cfg)
        per[b.venue] = (
            f"{len(b.positions)} positions, exposure {b.exposure:,.2f},"
            f" unrealized PnL {b.unrealized_pnl:,.2f}, {len(b.orders)} open orders"
            f" -> {strategies[b.venue]}"
        )
        actions.append(f"{b.venue}: {per[b.venue]}")
    ok = sum(1 for b in books if not b.error)
    return {
        "status": step_status(ok, len(books)) if books else StepStatus.SKIPPED,
        "actions": actions or ["No venue in scope"],
        "venues": per,
        "positions": positions,
        "total_pnl": str(total),
        "flatten_strategy": strategies,
    }
