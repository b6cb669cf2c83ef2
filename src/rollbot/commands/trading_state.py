"""Trading states and scopes: the vocabulary every rule and face shares."""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum

from rollbot.brokers.base import Side
from rollbot.errors import BadInput


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # only orders that shrink a position, never past zero; cancels pass
    HALTED = "HALTED"  # no new orders; cancels pass

    @property
    def strictness(self) -> int:
        return {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}[self.value]


def strictest(states: list[TradingState]) -> TradingState:
    return max(states, key=lambda s: s.strictness, default=TradingState.ACTIVE)


SCOPE_KINDS = ("venue", "account", "strategy")
# account ids and strategy names, in scopes and at the guard alike: what a hold can name, the
# guard can be asked about, character for character
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def parse_scope(text: str | None, venues: list[str]) -> str:
    """`global`, `venue:NAME` (or a bare venue name), `account:VENUE/ID`, `strategy:NAME`."""
    if not text or text == "global" or text == "all":
        return "global"
    if text in venues:
        return f"venue:{text}"
    kind, sep, name = text.partition(":")
    if not sep or kind not in SCOPE_KINDS or not name:
        raise BadInput(
            f"unknown scope {text!r}: use global, a venue name ({', '.join(venues)}), "
            "venue:NAME, account:VENUE/ID or strategy:NAME"
        )
    if kind == "venue" and name not in venues:
        raise BadInput(f"unknown venue {name!r} in scope (configured: {', '.join(venues)})")
    if kind == "account":
        venue, slash, account = name.partition("/")
        if venue not in venues:
            raise BadInput(
                f"unknown venue in account scope {text!r} (configured: {', '.join(venues)})"
            )
        if not slash or not NAME.match(account):
            raise BadInput(
                f"account scope {text!r} needs an account id: account:{venue}/ID "
                "(letters, digits and ._@- only)"
            )
    if kind == "strategy" and not NAME.match(name):
        raise BadInput(f"strategy scope {text!r}: the name may hold letters, digits and ._@- only")
    return f"{kind}:{name}"


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
