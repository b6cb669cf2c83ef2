"""The one async interface every venue speaks, and the typed records that cross it.

Quantities and prices are Decimal end to end: a float rounding a 0.1 BTC residual to
0.09999999 is exactly the kind of "almost flat" a verification must never report as flat.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"


class OrderStatus(StrEnum):
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"

    @property
    def is_terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)


class _Record(BaseModel):
    # schemas built on first use: a terminal kill stores its hold before it needs any of them
    model_config = ConfigDict(frozen=True, defer_build=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Position(_Record):
    venue: str
    symbol: str
    quantity: Decimal  # signed: long > 0, short < 0
    avg_price: Decimal = Decimal(0)
    market_price: Decimal = Decimal(0)
    unrealized_pnl: Decimal = Decimal(0)
    currency: str = "USD"
    # venue-specific handle needed to trade it back (IB conId, ccxt market type...)
    instrument: dict[str, str] = Field(default_factory=dict)
    # units of the underlying per unit of quantity: 50 for an ES future, 100 for an option
    multiplier: Decimal = Decimal(1)

    @property
    def market_value(self) -> Decimal:
        return self.quantity * self.market_price * self.multiplier

    @property
    def exposure(self) -> Decimal:
        return abs(self.market_value)

    @property
    def closing_side(self) -> Side:
        return Side.SELL if self.quantity > 0 else Side.BUY


class Order(_Record):
    venue: str
    order_id: str
    client_order_id: str | None = None
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    filled_quantity: Decimal = Decimal(0)
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    status: OrderStatus = OrderStatus.OPEN
    reduce_only: bool = False
    reason: str | None = None  # why it was rejected, when it was
    # rejected for a reason that sending it again will not change (see RejectedForGood)
    rejected_for_good: bool = False
    account: str | None = None  # the account it trades for, where the venue says (IB does)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_quantity


class AccountSnapshot(_Record):
    venue: str
    nav: Decimal
    currency: str = "USD"
    at: datetime = Field(default_factory=utcnow)


class CloseRequest(_Record):
    """A reduce-only order that shrinks one position toward zero and never past it."""

    symbol: str
    side: Side
    quantity: Decimal = Field(gt=0)
    type: OrderType = OrderType.MARKET  # MARKET or LIMIT only
    limit_price: Decimal | None = None
    client_order_id: str
    instrument: dict[str, str] = Field(default_factory=dict)


class CancelAllResult(_Record):
    venue: str
    requested: int
    cancelled: list[str] = Field(default_factory=list)
    remaining: list[Order] = Field(default_factory=list)  # read back after cancelling

    @property
    def complete(self) -> bool:
        return not self.remaining


class VenueEventKind(StrEnum):
    DISCONNECT = "DISCONNECT"
    RECONNECT = "RECONNECT"
    ERROR = "ERROR"
    PACING = "PACING"  # IB error 100, ccxt RateLimitExceeded / DDoSProtection
    REJECT = "REJECT"  # an order the venue refused
    ORDER_SENT = "ORDER_SENT"  # denominator for the rejection rate
    LATENCY = "LATENCY"  # value = round trip in ms
    ORDER = "ORDER"  # order status changed; order set
    FILL = "FILL"  # a (partial) fill; order set, value = filled quantity


class VenueEvent(_Record):
    venue: str
    kind: VenueEventKind
    code: str | None = None
    message: str = ""
    value: float | None = None
    order: Order | None = None
    at: datetime = Field(default_factory=utcnow)


VenueListener = Callable[[VenueEvent], None]


class Coverage(_Record):
    """What a venue's last reads covered, so that a verify never calls "flat" what it did not
    read. `read` names each market and order kind that was listed; `not_checked` names each
    place that could hold risk and was not (an order kind the venue cannot list, a market not
    configured where the account shows holdings). A venue without `coverage()` says nothing."""

    read: list[str] = Field(default_factory=list)
    not_checked: list[str] = Field(default_factory=list)


def venue_coverage(venue: object) -> Coverage | None:
    """The venue's coverage when it reports one (an optional part of the protocol)."""
    report = getattr(venue, "coverage", None)
    return report() if callable(report) else None


class VenueError(Exception):
    """A venue refused or failed a request; `code` is the venue's own code when it gave one."""

    def __init__(self, venue: str, message: str, code: str | None = None) -> None:
        super().__init__(f"{venue}: {message}" + (f" (code {code})" if code else ""))
        self.venue = venue
        self.code = code
        self.detail = message


class VenueUnavailable(VenueError):
    """Not connected, timed out or disconnected mid-request: the outcome is unknown."""


class OrderRejected(VenueError):
    """The venue answered and refused the order: nothing was placed."""


class RejectedForGood(OrderRejected):
    """Refused for a reason that sending it again will not change (a price off the contract's
    tick, an unknown contract, a risk reject): re-sending only repeats the refusal."""


class RateLimited(VenueError):
    """The venue asked us to slow down; the request may be retried later."""


class UnsupportedOperation(VenueError):
    """The venue cannot do this at all (e.g. an exchange without stop orders in ccxt)."""


class TradingRefused(VenueError):
    """The venue answered that this session may not send or cancel orders at all (TWS's
    read-only API): no kill can cancel through it until a person changes a setting, `action`."""

    def __init__(self, venue: str, message: str, code: str | None = None, action: str = "") -> None:
        super().__init__(venue, message, code)
        self.action = action


@runtime_checkable
class Venue(Protocol):
    """What the commands need from a venue. Every method may raise VenueError subclasses."""

    name: str

    async def connect(self, read_only: bool = False) -> None: ...

    async def close(self) -> None: ...

    async def account(self) -> AccountSnapshot: ...

    async def positions(self) -> list[Position]: ...

    async def open_orders(self) -> list[Order]:
        """Every working order, resting limits and stop/trigger orders included."""
        ...

    async def cancel_all(self) -> CancelAllResult:
        """Cancel everything, then read the venue back and report what remains."""
        ...

    async def submit_close(self, request: CloseRequest) -> Order:
        """Send a reduce-only close. Idempotent per client_order_id where the venue allows."""
        ...

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        """Read back one of our orders (open or done), or None if the venue never saw it."""
        ...

    async def cancel_order(self, order_id: str) -> None: ...

    def set_reconnect(self, allowed: bool) -> None:
        """Allow or forbid reconnecting on its own (IBKR seed step 2: prevent reconnect)."""
        ...

    def subscribe(self, listener: VenueListener) -> None:
        """Receive order, fill, error, pacing, latency and disconnect events."""
        ...

    # Optional: `def coverage(self) -> Coverage`, what the last positions / open_orders reads
    # covered (see venue_coverage). Not part of the runtime check, so venues without it still
    # satisfy the protocol.
