"""What is open at every venue, read concurrently; a venue that fails is named, not hidden."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from pydantic import BaseModel

from rollbot.brokers.base import (
    AccountSnapshot,
    Coverage,
    Order,
    Position,
    Venue,
    VenueError,
    venue_coverage,
)


class VenueBook(BaseModel):
    venue: str
    positions: list[Position] = []
    orders: list[Order] = []
    account: AccountSnapshot | None = None
    coverage: Coverage | None = None  # what was read, when the venue says
    error: str | None = None

    @property
    def not_checked(self) -> list[str]:
        return list(self.coverage.not_checked) if self.coverage else []

    @property
    def exposure(self) -> Decimal:
        return sum((p.exposure for p in self.positions), Decimal(0))

    @property
    def unrealized_pnl(self) -> Decimal:
        return sum((p.unrealized_pnl for p in self.positions), Decimal(0))


async def read_book(venue: Venue, timeout_s: float = 15) -> VenueBook:
    try:
        async with asyncio.timeout(timeout_s):
            positions = await venue.positions()
            orders = await venue.open_orders()
            account = await venue.account()
        return VenueBook(
            venue=venue.name,
            positions=positions,
            orders=orders,
            account=account,
            coverage=venue_coverage(venue),
        )
    except TimeoutError:
        return VenueBook(venue=venue.name, error=f"no answer within {timeout_s:g} s")
    except VenueError as exc:
        return VenueBook(venue=venue.name, error=str(exc))


async def read_books(venues: dict[str, Venue], timeout_s: float = 15) -> list[VenueBook]:
    return list(await asyncio.gather(*(read_book(v, timeout_s) for v in venues.values())))


def coverage_line(book: VenueBook) -> str:
    """One line naming what was read and what was not checked ("" when the venue says
    nothing): `positions` and the verify step print it under each venue."""
    if book.coverage is None:
        return ""
    line = "read: " + (", ".join(book.coverage.read) or "nothing")
    if book.coverage.not_checked:
        line += "; NOT CHECKED: " + ", ".join(book.coverage.not_checked)
    return line
