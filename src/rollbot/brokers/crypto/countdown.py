"""The exchanges' own dead-man's switch: a countdown that cancels orders unless refreshed.

Each rule holds the exchange's allowed range (from its API documentation) and what its
countdown covers. ccxt's `cancelAllOrdersAfter` serves where `has` says so (OKX, Kraken);
Binance USDⓈ-M (`POST /fapi/v1/countdownCancelAll`, one symbol a request) and Gate spot
(`POST /api/v4/spot/countdown_cancel_all`) are called through ccxt's raw endpoints. Bybit's
"disconnected cancel all" (DCP) fires when its private websocket drops, not on a REST
heartbeat, so rollbot (REST only) cannot keep it armed; Bitget classic accounts have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rollbot.brokers.base import UnsupportedOperation, VenueError


@dataclass(frozen=True)
class CountdownRule:
    lo_s: int  # the smallest countdown the exchange takes (0 always disarms)
    hi_s: int | None  # the largest, None where the documentation names none
    covers: str  # which orders the exchange cancels when it lapses
    markets: tuple[str, ...] = ("spot", "derivatives")

    def allowed(self) -> str:
        top = f"{self.hi_s}" if self.hi_s is not None else "(no documented maximum)"
        return f"0 (off) or {self.lo_s} to {top} seconds"

    def admits(self, seconds: int) -> bool:
        return seconds >= self.lo_s and (self.hi_s is None or seconds <= self.hi_s)


RULES: dict[str, CountdownRule] = {
    # POST /api/v5/trade/cancel-all-after: timeOut 0 or 10-120 s
    "okx": CountdownRule(
        10,
        120,
        "every pending order-book order of the account or sub-account the API key belongs to"
        " (algo orders not yet triggered are not in the book)",
    ),
    # POST /0/private/CancelAllOrdersAfter: timeout in seconds, at most 86400
    "kraken": CountdownRule(1, 86400, "every open order of the account"),
    # POST /fapi/v1/countdownCancelAll: countdownTime in ms per symbol
    "binance": CountdownRule(
        1,
        None,
        "the open USDⓈ-M orders of each symbol named in the venue's `symbols`, for the account",
        ("derivatives",),
    ),
    # POST /api/v4/spot/countdown_cancel_all: timeout in seconds, at least 5
    "gate": CountdownRule(5, None, "every open spot order of the account", ("spot",)),
}
NONE_BECAUSE = {
    "bybit": "Bybit's countdown (DCP) fires when its private websocket drops, and rollbot"
    " speaks REST only",
    "bitget": "Bitget's classic (v2) accounts have no countdown cancel-all",
}


@dataclass(frozen=True)
class Countdown:
    trigger_at: datetime  # when the exchange cancels unless refreshed (as it answered)
    covers: str


def rule_for(exchange_id: str, markets: tuple[str, ...]) -> CountdownRule | None:
    rule = RULES.get(exchange_id)
    if rule is None or not set(markets) <= set(rule.markets):
        return None
    return rule


def why_none(exchange_id: str, markets: tuple[str, ...]) -> str:
    if exchange_id in NONE_BECAUSE:
        return NONE_BECAUSE[exchange_id]
    rule = RULES.get(exchange_id)
    if rule is not None:
        return f"{exchange_id}'s countdown covers {' and '.join(rule.markets)} only"
    return f"{exchange_id} has no countdown cancel-all rollbot can arm"


def _stamp(value: Any) -> datetime:
    """An exchange's trigger time: Unix ms or s (a number or string), or RFC 3339."""
    text = str(value)
    if text.lstrip("-").isdigit():
        n = int(text)
        return datetime.fromtimestamp(n / 1000 if n > 10**11 else n, UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def arm(
    venue_name: str,
    exchange_id: str,
    markets: tuple[str, ...],
    symbols: list[str],
    exchange: Any,
    call: Any,
    now: datetime,
    seconds: int,
) -> Countdown:
    """Arm (or refresh) the countdown at `seconds`; 0 disarms. `call` is Link.call."""
    rule = rule_for(exchange_id, markets)
    if rule is None:
        raise UnsupportedOperation(venue_name, why_none(exchange_id, markets), "NO_COUNTDOWN")
    if seconds and not rule.admits(seconds):
        raise VenueError(
            venue_name,
            f"dead_mans_switch_s = {seconds}: {exchange_id} takes {rule.allowed()}",
            "BAD_COUNTDOWN",
        )
    if exchange_id in ("okx", "kraken"):
        answer = await call(
            "cancel_all_orders_after", exchange.cancel_all_orders_after, seconds * 1000
        )
        data = (answer.get("data") or [{}]) if exchange_id == "okx" else [answer.get("result")]
        trigger = (data[0] or {}).get("triggerTime")
        if trigger is None:
            raise VenueError(venue_name, f"no triggerTime in the answer: {answer}", "BAD_ANSWER")
        return Countdown(_stamp(trigger), rule.covers)
    if exchange_id == "binance":
        wanted = [s for s in symbols if s in exchange.markets]
        if not wanted:
            raise UnsupportedOperation(
                venue_name,
                "Binance USDⓈ-M's countdown is per symbol: name them in the venue's `symbols`",
                "NO_COUNTDOWN",
            )
        for symbol in wanted:
            request = {"symbol": exchange.market_id(symbol), "countdownTime": seconds * 1000}
            await call("countdownCancelAll", exchange.fapiPrivatePostCountdownCancelAll, request)
        # Binance answers the symbol and the countdown, not a time: count from the request
        return Countdown(now + timedelta(seconds=seconds), rule.covers)
    # gate spot
    answer = await call(
        "countdown_cancel_all", exchange.privateSpotPostCountdownCancelAll, {"timeout": seconds}
    )
    trigger = answer.get("triggerTime") if isinstance(answer, dict) else None
    if trigger is None:
        raise VenueError(venue_name, f"no triggerTime in the answer: {answer}", "BAD_ANSWER")
    return Countdown(_stamp(trigger), rule.covers)
