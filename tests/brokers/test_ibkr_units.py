"""The IBKR venue's pure parts: the pacing bucket and the translation of IB's vocabulary."""

from __future__ import annotations

from decimal import Decimal

from rollbot.brokers.base import OrderType, Side, VenueEventKind
from rollbot.brokers.ibkr import mapping
from rollbot.brokers.ibkr._ib import Contract
from rollbot.brokers.ibkr.contracts import _Listing
from rollbot.brokers.pacing import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_the_bucket_spaces_sends_at_the_rate_after_its_capacity() -> None:
    t = FakeTime()
    bucket = TokenBucket(45, capacity=1, clock=t.clock, sleep=t.sleep)

    for _ in range(46):
        await bucket.acquire()

    # the first goes at once; 45 more need 45/45 s: never more than 45 a second after a burst of 1
    assert abs(t.now - 1.0) < 1e-9


async def test_the_bucket_refills_while_idle_but_not_past_its_capacity() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, capacity=3, clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        await bucket.acquire()
    t.now += 60  # a long quiet spell

    waited = [await bucket.acquire() for _ in range(4)]

    assert waited[:3] == [0.0, 0.0, 0.0] and abs(waited[3] - 0.1) < 1e-9


def test_ib_order_types_map_to_ours() -> None:
    assert mapping.order_type_of("MKT") is OrderType.MARKET
    assert mapping.order_type_of("LMT") is OrderType.LIMIT
    assert mapping.order_type_of("STP") is OrderType.STOP
    assert mapping.order_type_of("STP LMT") is OrderType.STOP_LIMIT
    assert mapping.order_type_of("TRAIL") is OrderType.STOP
    assert mapping.order_type_of("MOC") is OrderType.MARKET


def test_ib_error_codes_map_to_event_kinds() -> None:
    assert mapping.event_kind_for(100) is VenueEventKind.PACING
    assert mapping.event_kind_for(201) is VenueEventKind.REJECT
    assert mapping.event_kind_for(1100) is VenueEventKind.DISCONNECT
    assert mapping.event_kind_for(1101) is VenueEventKind.RECONNECT
    assert mapping.event_kind_for(1102) is VenueEventKind.RECONNECT
    assert mapping.event_kind_for(2110) is VenueEventKind.ERROR
    assert mapping.event_kind_for(2104) is None  # "market data farm connection is OK"
    assert mapping.event_kind_for(202) is None  # the cancel we asked for


def test_ib_floats_become_exact_decimals() -> None:
    assert mapping.decimal(0.1) == Decimal("0.1")
    assert str(mapping.decimal(100.0)) == "100"
    assert str(mapping.decimal(-0.0)) == "0"
    assert mapping.decimal(1.7976931348623157e308) == 0  # IB's "unset"
    assert mapping.decimal(float("nan")) == 0


def test_a_limit_goes_on_the_ladder_step_of_its_price_toward_crossing() -> None:
    # an options market rule: 0.01 below 3, 0.05 from 3
    ladder = ((Decimal(0), Decimal("0.01")), (Decimal(3), Decimal("0.05")))
    listing = _Listing(contract=Contract(conId=1), ladder=ladder)

    assert listing.round(Decimal("4.12"), Side.SELL) == Decimal("4.1")
    assert listing.round(Decimal("4.12"), Side.BUY) == Decimal("4.15")
    assert listing.round(Decimal("2.123"), Side.SELL) == Decimal("2.12")
    assert listing.round(Decimal("4.15"), Side.BUY) == Decimal("4.15")  # on the tick: as is
    assert listing.round(Decimal("0.004"), Side.SELL) == Decimal("0.01")  # never 0
