"""Reading the paper venue's book the way an auditor would: straight from its SQLite file,
without going through the venue (so no injected fault or call counter is touched)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from rollbot.brokers.paper.scenario import load_scenario
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.commands.desk.context import Rollbot
from rollbot.storage.events import Event

DEFAULT_BOOK = load_scenario(None)
# the default drill book: 9 positions long and short, 24 resting limit and stop orders
START: dict[str, Decimal] = {p.symbol: p.quantity for p in DEFAULT_BOOK.positions}


def book_positions(venue: PaperVenue) -> dict[str, Decimal]:
    rows = venue.book.db.query("SELECT symbol, quantity FROM positions ORDER BY symbol")
    return {r["symbol"]: Decimal(r["quantity"]) for r in rows}


def open_order_count(venue: PaperVenue) -> int:
    return len(venue.book.order_rows("WHERE status IN ('OPEN', 'PARTIALLY_FILLED')"))


def closing_orders(venue: PaperVenue) -> dict[str, list[dict[str, str]]]:
    """rollbot's closing orders per symbol (client ids start "rb"), oldest first."""
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in venue.book.order_rows("WHERE client_order_id LIKE 'rb%'"):
        out[r["symbol"]].append(r)
    return dict(out)


def fills_by_symbol(venue: PaperVenue) -> dict[str, Decimal]:
    """Closing fills per symbol, signed as the position moved (a SELL closes a long)."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for f in venue.fills():
        qty = Decimal(f["quantity"])
        out[f["symbol"]] += qty if f["side"] == "BUY" else -qty
    return dict(out)


def never_flipped(venue: PaperVenue, start: dict[str, Decimal]) -> bool:
    """Walk every fill in order: no position ever crosses zero to the other side."""
    held = dict(start)
    for f in venue.fills():
        qty = Decimal(f["quantity"])
        before = held[f["symbol"]]
        after = before + (qty if f["side"] == "BUY" else -qty)
        if before > 0 > after or before < 0 < after:
            return False
        held[f["symbol"]] = after
    return True


def step_events(app: Rollbot, incident_id: str) -> list[Event]:
    return app.events.list(incident_id=incident_id, kinds=["STEP_STARTED", "STEP_ENDED"])


def as_text(quantities: dict[str, Decimal]) -> dict[str, str]:
    return {s: format(q.normalize(), "f") for s, q in quantities.items()}
