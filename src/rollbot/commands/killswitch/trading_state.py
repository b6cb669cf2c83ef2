"""Trading states and scopes: the vocabulary every rule and face shares."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from rollbot.brokers.base import Side
from rollbot.commands.killswitch.scope_names import NAME as NAME
from rollbot.commands.killswitch.scope_names import SCOPE_KINDS as SCOPE_KINDS
from rollbot.commands.killswitch.scope_names import parse_scope as parse_scope


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # only orders that shrink a position, never past zero; cancels pass
    HALTED = "HALTED"  # no new orders; cancels pass

    @property
    def strictness(self) -> int:
        return {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}[self.value]


def strictest(states: list[TradingState]) -> TradingState:
    return max(states, key=lambda s: s.strictness, default=TradingState.ACTIVE)


def scopes_over(venue: str, account: str | None = None, strategy: str | None = None) -> list[str]:
    """Every scope whose hold governs an order at this venue/account/strategy."""
    scopes = ["global", f"venue:{venue}"]
    if account:
        scopes.append(f"account:{venue}/{account}")
    if strategy:
        scopes.append(f"strategy:{strategy}")
    return scopes


def is_reducing(position: Decimal, side: Side, quantity: Decimal) -> tuple[bool, str]:
    """(ok, code): does this order shrink the position without crossing zero?"""
    if position == 0:
        return False, "REDUCING_NO_POSITION"
    if (position > 0 and side is Side.BUY) or (position < 0 and side is Side.SELL):
        return False, "REDUCING_INCREASES"
    if quantity > abs(position):
        return False, "REDUCING_FLIPS"
    return True, "OK_REDUCES"
