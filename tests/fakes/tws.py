"""A loopback TWS / IB Gateway speaking the real TWS API wire protocol, so ib_async runs unmodified.

Wire format: the client opens with b"API\\0" and a framed "v<min>..<max>" version range; every
message after that is a 4-byte big-endian length followed by NUL-terminated text fields. We answer
with server version 157, the lowest that ib_async accepts (Client.MinClientVersion), because every
newer version only adds fields. Each encoder below mirrors the matching parser in ib_async's
decoder.py for version 157, and `_place_order` reads the layout of client.py's placeOrder; when
ib_async changes a layout, the test that exercises that message fails at the decoder, loudly.

The book is programmable (holdings, marks, resting orders from other clients, cash) and so are the
failures a kill switch must survive: a pacing error 100, a reject 201, no fills, a cancel the
venue refuses, and a dropped connection after N orders (with or without the replies).

A what-if order (Order.whatIf, TWS API "Checking Margin Changes": placeOrder with the flag set
undergoes the credit check and is answered with its OrderState, never sent to a destination) is
answered by openOrder messages with whatIf set and the margin impact, the first one with the
margin fields still unset (1.797e308, as TWS sends them: ib_insync issue 380), and never enters
the book. `read_only_api` plays TWS's "Read-Only API" setting (Global Configuration > API >
Settings): every order, cancel and order read is refused with error 321 "Error validating
request:-'bY' : cause - The API interface is currently in Read-Only mode." (the order's id, or
-1 for a request without one; ib_insync issues 1, 7 and 356, bankroll issue 65, IBC issue 10);
positions, account values and contract details are still served.

Contracts are of the five types in CONTRACT_TYPES (STK, FUT, OPT, CASH, CFD; FOP as one rollbot
does not close), each with its multiplier, valid exchanges and market rule, answered through
reqContractDetails and reqMarketRule as TWS documents them. As TWS does, it reports a stock
position on its listing exchange, refuses a limit price off the market rule's tick (110), an
unknown contract or exchange (200) and, with order precautions on (TWS's default), a stock order
not routed SMART (10311); it counts every message a client sends and can pace each client at
max_msgs_per_sec, answering error 100 and dropping what is over.

Stdlib only, so it also runs as a script for CLI tests:
    python tests/fakes/tws.py --position AAPL:100:190.5 --position MSFT:-50:410
prints "FAKE_TWS_PORT=<port>" and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

log = logging.getLogger("fake_tws")

SERVER_VERSION = 157
WORKING = ("PreSubmitted", "Submitted", "PendingCancel")
COMMISSION = Decimal("1")

# Message ids the client sends (ib_async client.py).
PLACE_ORDER = 3
CANCEL_ORDER = 4
REQ_OPEN_ORDERS = 5
REQ_ACCOUNT_UPDATES = 6
REQ_EXECUTIONS = 7
REQ_IDS = 8
REQ_CONTRACT_DATA = 9
REQ_AUTO_OPEN_ORDERS = 15
REQ_ALL_OPEN_ORDERS = 16
REQ_CURRENT_TIME = 49
CONTRACT_DATA_END = 52
REQ_GLOBAL_CANCEL = 58
REQ_POSITIONS = 61
REQ_ACCOUNT_SUMMARY = 62
CANCEL_ACCOUNT_SUMMARY = 63
CANCEL_POSITIONS = 64
START_API = 71
REQ_MARKET_RULE = 91
REQ_ACCOUNT_UPDATES_MULTI = 76
CANCEL_ACCOUNT_UPDATES_MULTI = 77
REQ_COMPLETED_ORDERS = 99

# Message ids the server sends (ib_async decoder.py).
ORDER_STATUS = 3
ERR_MSG = 4
OPEN_ORDER = 5
ACCT_VALUE = 6
PORTFOLIO_VALUE = 7
ACCT_UPDATE_TIME = 8
NEXT_VALID_ID = 9
CONTRACT_DATA = 10
EXECUTION_DATA = 11
MANAGED_ACCTS = 15
CURRENT_TIME = 49
CONTRACT_DATA_END = 52
OPEN_ORDER_END = 53
ACCT_DOWNLOAD_END = 54
EXECUTION_DATA_END = 55
COMMISSION_REPORT = 59
POSITION_DATA = 61
POSITION_END = 62
ACCOUNT_SUMMARY = 63
ACCOUNT_SUMMARY_END = 64
ACCOUNT_UPDATE_MULTI = 73
ACCOUNT_UPDATE_MULTI_END = 74
MARKET_RULE = 93
COMPLETED_ORDER = 101
COMPLETED_ORDERS_END = 102


# ---------------------------------------------------------------------------------------- book


# TWS API "Contract Details" and "Minimum Price Increment" (interactivebrokers.github.io/tws-api):
# minTick is the smallest increment on any exchange; marketRuleIds, aligned with validExchanges,
# name the price ladders reqMarketRule returns as (lowEdge, increment) rows. A position's contract
# names its listing exchange (NASDAQ for a stock), not SMART: routing is the order's business.
@dataclass(frozen=True)
class ContractType:
    exchange: str  # where an order for it goes: SMART, or the futures/FX venue
    valid_exchanges: tuple[str, ...]
    multiplier: Decimal
    min_tick: Decimal
    ladder: tuple[tuple[Decimal, Decimal], ...]  # market rule rows; the first increment = minTick
    market_rule_id: int


CONTRACT_TYPES: dict[str, ContractType] = {
    "STK": ContractType(
        "SMART", ("SMART", "NASDAQ", "ARCA", "BATS"), Decimal(1), Decimal("0.0001"),
        ((Decimal(0), Decimal("0.0001")), (Decimal(1), Decimal("0.01"))), 26,
    ),
    "FUT": ContractType(
        "CME", ("CME", "QBALGO"), Decimal(50), Decimal("0.25"), ((Decimal(0), Decimal("0.25")),), 67
    ),
    "OPT": ContractType(
        "SMART", ("SMART", "CBOE", "ISE"), Decimal(100), Decimal("0.01"),
        ((Decimal(0), Decimal("0.01")), (Decimal(3), Decimal("0.05"))), 32,
    ),
    "CASH": ContractType(
        "IDEALPRO", ("IDEALPRO",), Decimal(1), Decimal("0.00005"),
        ((Decimal(0), Decimal("0.00005")),), 239,
    ),
    "CFD": ContractType(
        "SMART", ("SMART",), Decimal(1), Decimal("0.01"), ((Decimal(0), Decimal("0.01")),), 61
    ),
    "FOP": ContractType(
        "CME", ("CME",), Decimal(50), Decimal("0.05"), ((Decimal(0), Decimal("0.05")),), 103
    ),
}  # fmt: skip
TICK_REJECT = "The price does not conform to the minimum price variation for this contract."
DIRECT_ROUTED = (
    "This order will be directly routed to {exchange}. Direct routed orders may result in higher"
    " trade fees. Restriction is specified in Precautionary Settings of Global Configuration/API."
)
NO_DEFINITION = "No security definition has been found for the request"
READ_ONLY_API = (
    "Error validating request:-'bY' : cause - The API interface is currently in Read-Only mode."
)
UNSET_DOUBLE = "1.7976931348623157E308"  # how TWS writes a double it has no value for


@dataclass
class Instrument:
    con_id: int
    symbol: str
    mark: Decimal
    sec_type: str = "STK"
    currency: str = "USD"
    exchange: str = "SMART"
    primary_exchange: str = "NASDAQ"
    local_symbol: str = ""  # ESZ6, EUR.USD, "AAPL  261218C00200000"; the symbol when blank
    last_trade: str = ""  # FUT and OPT: YYYYMMDD
    strike: Decimal | None = None
    right: str = ""  # OPT: C or P
    multiplier: Decimal = Decimal(1)
    min_tick: Decimal = Decimal("0.0001")
    ladder: tuple[tuple[Decimal, Decimal], ...] = ((Decimal(0), Decimal("0.0001")),)
    market_rule_id: int = 26
    valid_exchanges: tuple[str, ...] = ("SMART", "NASDAQ")
    delisted: bool = False  # still held, but IB has no security definition for it any more

    @property
    def listed_on(self) -> str:
        """The exchange a position's contract names: the primary listing for a stock."""
        return self.primary_exchange if self.sec_type in ("STK", "CFD") else self.exchange

    def tick_at(self, price: Decimal) -> Decimal:
        steps = [inc for edge, inc in self.ladder if edge <= abs(price)]
        return steps[-1] if steps else self.min_tick


@dataclass
class FakeOrder:
    perm_id: int
    order_id: int
    client_id: int
    account: str
    instrument: Instrument
    action: str  # BUY / SELL
    quantity: Decimal
    order_type: str  # MKT, LMT, STP, STP LMT
    lmt_price: Decimal | None = None
    aux_price: Decimal | None = None
    tif: str = "DAY"
    order_ref: str = ""
    status: str = "Submitted"
    filled: Decimal = Decimal(0)
    avg_fill_price: Decimal = Decimal(0)
    completed_time: str = ""

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def working(self) -> bool:
        return self.status in WORKING


@dataclass
class FakeFill:
    exec_id: str
    order: FakeOrder
    shares: Decimal
    price: Decimal
    time: str


@dataclass(frozen=True)
class ReceivedOrder:
    """What a client sent in a placeOrder message, as the gateway read it off the wire."""

    order_id: int
    client_id: int
    con_id: int
    exchange: str
    primary_exchange: str
    action: str
    quantity: Decimal
    order_type: str
    lmt_price: Decimal | None
    order_ref: str
    account: str
    at: float  # time.monotonic() on arrival
    what_if: bool = False  # Order.whatIf: a margin check, never an order
    transmit: bool = True


# ------------------------------------------------------------------------------------ encoding


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _ib_time() -> str:
    return time.strftime("%Y%m%d  %H:%M:%S")  # the two spaces are how TWS writes it


def _decimal(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def _multiplier(inst: Instrument) -> object:
    return inst.multiplier if inst.sec_type in ("FUT", "OPT", "FOP") else ""  # blank for STK


def _contract_fields(inst: Instrument, exchange: str | None = None) -> list[object]:
    # conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency,
    # localSymbol, tradingClass; updatePortfolio has primaryExchange in the exchange slot
    return [
        inst.con_id, inst.symbol, inst.sec_type, inst.last_trade, inst.strike, inst.right,
        _multiplier(inst), inst.exchange if exchange is None else exchange, inst.currency,
        inst.local_symbol or inst.symbol, inst.symbol,
    ]  # fmt: skip


def contract_details_msg(req_id: int, inst: Instrument) -> list[object]:
    """decoder.contractDetails for server version 157 (mdSizeMultiplier still sent, no minSize)."""
    return [
        CONTRACT_DATA, 8, req_id, inst.symbol, inst.sec_type, inst.last_trade, inst.strike,
        inst.right, inst.exchange, inst.currency, inst.local_symbol or inst.symbol,
        inst.symbol,  # marketName
        inst.symbol, inst.con_id, inst.min_tick, "",  # tradingClass, conId, minTick, mdSize
        _multiplier(inst), "LMT,MKT,STP,STP LMT", ",".join(inst.valid_exchanges), 1, 0,
        inst.symbol,  # longName
        inst.primary_exchange if inst.sec_type in ("STK", "CFD") else "",
        inst.last_trade[:6], *_blank(8),  # contractMonth, industry .. evMultiplier
        0,  # secIdList
        "", "", "",  # aggGroup, underSymbol, underSecType
        ",".join(str(inst.market_rule_id) for _ in inst.valid_exchanges), inst.last_trade, "",
    ]  # fmt: skip


def _blank(n: int) -> list[object]:
    # "" decodes to the field's default in ib_async (Decoder.parse), as an unset value should
    return [""] * n


@dataclass(frozen=True)
class WhatIf:
    """The OrderState fields of a what-if answer (initMarginBefore .. warningText)."""

    init_margin_before: str = UNSET_DOUBLE
    maint_margin_before: str = UNSET_DOUBLE
    equity_with_loan_before: str = UNSET_DOUBLE
    init_margin_change: str = UNSET_DOUBLE
    maint_margin_change: str = UNSET_DOUBLE
    equity_with_loan_change: str = UNSET_DOUBLE
    init_margin_after: str = UNSET_DOUBLE
    maint_margin_after: str = UNSET_DOUBLE
    equity_with_loan_after: str = UNSET_DOUBLE
    commission: str = UNSET_DOUBLE
    min_commission: str = UNSET_DOUBLE
    max_commission: str = UNSET_DOUBLE
    commission_currency: str = ""
    warning_text: str = ""

    def fields(self) -> list[object]:
        return [
            self.init_margin_before, self.maint_margin_before, self.equity_with_loan_before,
            self.init_margin_change, self.maint_margin_change, self.equity_with_loan_change,
            self.init_margin_after, self.maint_margin_after, self.equity_with_loan_after,
            self.commission, self.min_commission, self.max_commission,
            self.commission_currency, self.warning_text,
        ]  # fmt: skip


def open_order_msg(o: FakeOrder, what_if: WhatIf | None = None) -> list[object]:
    """decoder.openOrder for server version 157; counts must be numbers, the rest may be blank.
    With `what_if`, the answer to a what-if order: whatIf set and the margin impact."""
    state = [1, o.status, *what_if.fields(), "", ""] if what_if else ["", o.status, *_blank(16)]
    return [
        OPEN_ORDER, o.order_id, *_contract_fields(o.instrument),
        o.action, o.quantity, o.order_type, o.lmt_price, o.aux_price, o.tif,
        "", o.account, "O", 0, o.order_ref, o.client_id, o.perm_id,  # ocaGroup .. permId
        *_blank(9),  # outsideRth .. faPercentage, and faProfile (present below version 177)
        *_blank(29),  # modelCode .. deltaNeutralAuxPrice (no delta-neutral block follows)
        *_blank(7),  # continuousUpdate .. comboLegsDescrip
        0, 0, 0,  # combo legs, order combo legs, smart combo routing params
        *_blank(4),  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement, hedgeType
        *_blank(4), 0,  # optOutSmartRouting .. notHeld; no delta-neutral contract
        "",  # algoStrategy
        "", *state,  # solicited, whatIf, status, margins .. warningText, randomize size, price
        0,  # conditions
        *_blank(16),  # adjustedOrderType .. usePriceMgmtAlgo
    ]  # fmt: skip


def completed_order_msg(o: FakeOrder) -> list[object]:
    """decoder.completedOrder for server version 157 (it carries no orderId or clientId)."""
    return [
        COMPLETED_ORDER, *_contract_fields(o.instrument),
        o.action, o.quantity, o.order_type, o.lmt_price, o.aux_price, o.tif,
        "", o.account, "O", 0, o.order_ref, o.perm_id,  # ocaGroup .. permId
        *_blank(8),  # outsideRth .. faPercentage, and faProfile
        *_blank(23),  # modelCode .. deltaNeutralAuxPrice
        *_blank(5),  # continuousUpdate .. comboLegsDescrip
        0, 0, 0,  # combo legs, order combo legs, smart combo routing params
        *_blank(4),  # scale sizes and increment, hedgeType
        *_blank(3), 0,  # clearingAccount, clearingIntent, notHeld; no delta-neutral contract
        "",  # algoStrategy
        "", o.status, "", "",  # solicited, status, randomizeSize, randomizePrice
        0,  # conditions
        *_blank(6), o.filled, *_blank(6),  # trailStopPrice .. filledQuantity .. parentPermId
        o.completed_time, o.status,
    ]  # fmt: skip


def order_status_msg(o: FakeOrder) -> list[object]:
    last = o.avg_fill_price if o.filled else 0
    return [
        ORDER_STATUS, o.order_id, o.status, o.filled, o.remaining, o.avg_fill_price,
        o.perm_id, 0, last, o.client_id, "", 0,
    ]  # fmt: skip


def exec_details_msg(req_id: int, f: FakeFill) -> list[object]:
    o = f.order
    side = "BOT" if o.action == "BUY" else "SLD"
    return [
        EXECUTION_DATA, req_id, o.order_id, *_contract_fields(o.instrument),
        f.exec_id, f.time, o.account, "ISLAND", side, f.shares, f.price, o.perm_id,
        o.client_id, 0, o.filled, o.avg_fill_price, o.order_ref, "", "", "", 1,
    ]  # fmt: skip


def commission_msg(f: FakeFill) -> list[object]:
    return [COMMISSION_REPORT, 1, f.exec_id, COMMISSION, "USD", "", "", ""]


def error_msg(req_id: int, code: int, text: str) -> list[object]:
    return [ERR_MSG, 2, req_id, code, text]  # no advancedOrderRejectJson below version 166


def _set(text: str) -> bool:
    return text not in ("", "0", UNSET_DOUBLE) and float(text) < float(UNSET_DOUBLE)


def place_order_flags(f: list[str]) -> tuple[bool, bool]:
    """(transmit, whatIf) of a placeOrder message, walking its layout for server version 157 (the
    TWS API's EClient.placeOrder): the blocks that are present only when a field before them is
    set (combo legs, a delta-neutral order type, scale prices, a hedge, a delta-neutral
    contract, algo parameters) move whatIf along, so each is skipped as it is sent."""
    transmit = f[27] == "1"
    i = 35  # after hidden: fields 0..34 are fixed (contract, action .. outsideRth, hidden)
    if f[4] == "BAG":
        legs = int(f[i])
        i += 1 + 8 * legs
        i += 1 + int(f[i])  # order combo leg prices
        i += 1 + 2 * int(f[i])  # smart combo routing params
    i += 8  # "", discretionaryAmt .. faPercentage, faProfile (below version 177)
    delta_neutral_type = f[i + 22]  # modelCode .. deltaNeutralOrderType
    i += 24
    if delta_neutral_type:
        i += 8
    scale_increment = f[i + 6]  # continuousUpdate .. scalePriceIncrement
    i += 7
    if _set(scale_increment):
        i += 7
    hedge_type = f[i + 3]  # scaleTable, activeStartTime, activeStopTime, hedgeType
    i += 4
    if hedge_type:
        i += 1
    i += 4  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    i += 4 if f[i] == "1" else 1  # a delta-neutral contract: conId, delta, price
    algo = f[i]
    i += 1
    if algo:
        i += 1 + 2 * int(f[i])
    # algoId, whatIf
    return transmit, f[i + 1] == "1"


# -------------------------------------------------------------------------------------- session


class Session:
    """One API client connection: what it subscribed to and how to write to it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.client_id: int | None = None
        self.wants_positions = False
        self.wants_account = False
        self.summary_req_ids: set[int] = set()
        self.sent_at: deque[float] = deque()  # arrival times of its messages in the last second
        self.closed = False

    def send(self, fields: Iterable[object]) -> None:
        if self.closed:
            return
        payload = "".join(_text(f) + "\0" for f in fields).encode()
        self.writer.write(_frame(payload))

    def error(self, req_id: int, code: int, text: str) -> None:
        self.send(error_msg(req_id, code, text))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


Handler = Callable[[Session, list[str]], None]


# ----------------------------------------------------------------------------------------- fake


class FakeTws:
    """The gateway: a book, the knobs, and one handler per incoming message id."""

    def __init__(self, account: str = "DU1234567", cash: Decimal | int | str = 1_000_000) -> None:
        self.account = account
        self.cash = Decimal(cash)
        self.instruments: dict[int, Instrument] = {}
        self.holdings: dict[int, Decimal] = {}
        self.avg_costs: dict[int, Decimal] = {}
        self.orders: dict[int, FakeOrder] = {}  # by permId
        self.fills: list[FakeFill] = []
        self.received: list[ReceivedOrder] = []  # every placeOrder, even refused ones
        self.cancel_requests: list[int] = []  # orderIds of cancelOrder messages
        self.global_cancels = 0
        self.connections = 0  # API sessions started (a reconnect makes it 2)

        # knobs a test turns
        self.pacing_errors = 0  # answer the next N orders with error 100 and drop them
        self.reject_next = 0  # answer the next N orders with error reject_code (201)
        self.reject_code = 201
        self.reject_after_ack = 0  # accept the next N orders (Submitted), then reject them: 201
        self.reject_reason = "Order would exceed the max order size"
        self.fill_orders = True  # False: marketable orders rest instead of filling
        self.refuse_cancel: set[int] = set()  # permIds the gateway will not cancel
        self.disconnect_after_orders: int | None = None  # close sockets after the Nth order
        self.drop_before_reply = False  # ...applying that order but never answering it
        # TWS's "Bypass Order Precautions for API Orders" unchecked (its default): a stock order
        # routed directly to an exchange instead of SMART is refused with 10311
        self.precautions = True
        # TWS's "Read-Only API" checked: orders, cancels and order reads are refused with 321
        self.read_only_api = False
        # a what-if refused by IB's checks (no permission for the contract, say): 201 with this
        self.what_if_reject: str | None = None
        self.what_ifs = 0  # what-if orders answered with their margin impact
        # TWS paces each client at 50 messages a second, every message counted; None: no limit
        self.max_msgs_per_sec: int | None = None
        self.messages: Counter[int] = Counter()  # by message id, every one a client sent
        self.pacing_violations = 0

        self._sessions: set[Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._perm_ids = itertools.count(1_000_001)
        self._exec_ids = itertools.count(1)
        self._con_ids = itertools.count(265_598)
        self._accepted = 0
        self.handlers: dict[int, Handler] = {
            START_API: self._start_api,
            REQ_IDS: self._req_ids,
            REQ_CURRENT_TIME: self._req_current_time,
            REQ_POSITIONS: self._req_positions,
            CANCEL_POSITIONS: self._cancel_positions,
            REQ_ACCOUNT_UPDATES: self._req_account_updates,
            REQ_ACCOUNT_UPDATES_MULTI: self._req_account_updates_multi,
            CANCEL_ACCOUNT_UPDATES_MULTI: self._ignore,
            REQ_ACCOUNT_SUMMARY: self._req_account_summary,
            CANCEL_ACCOUNT_SUMMARY: self._cancel_account_summary,
            REQ_OPEN_ORDERS: self._req_open_orders,
            REQ_ALL_OPEN_ORDERS: self._req_all_open_orders,
            REQ_AUTO_OPEN_ORDERS: self._req_auto_open_orders,
            REQ_COMPLETED_ORDERS: self._req_completed_orders,
            REQ_EXECUTIONS: self._req_executions,
            PLACE_ORDER: self._place_order,
            CANCEL_ORDER: self._cancel_order,
            REQ_GLOBAL_CANCEL: self._req_global_cancel,
            REQ_CONTRACT_DATA: self._req_contract_data,
            REQ_MARKET_RULE: self._req_market_rule,
        }

    # ------------------------------------------------------------------ book set-up and reads

    def add_position(
        self,
        symbol: str,
        quantity: Decimal | int | str,
        avg_cost: Decimal | int | str,
        mark: Decimal | int | str | None = None,
        *,
        sec_type: str = "STK",
        currency: str = "USD",
        **contract: Any,
    ) -> Instrument:
        """avg_cost and mark are per unit (IB's avgCost, which includes the multiplier, is
        derived); `contract` overrides Instrument fields (local_symbol, multiplier, ladder...)."""
        mark = mark if mark is not None else avg_cost
        inst = self.instrument(symbol, mark, sec_type, currency, **contract)
        self.holdings[inst.con_id] = Decimal(quantity)
        self.avg_costs[inst.con_id] = Decimal(avg_cost)
        return inst

    def instrument(
        self,
        symbol: str,
        mark: Decimal | int | str = 100,
        sec_type: str = "STK",
        currency: str = "USD",
        **contract: Any,
    ) -> Instrument:
        for inst in self.instruments.values():
            if symbol in (inst.symbol, inst.local_symbol):
                return inst
        kind = CONTRACT_TYPES[sec_type]
        fields: dict[str, Any] = {
            "exchange": kind.exchange,
            "valid_exchanges": kind.valid_exchanges,
            "multiplier": kind.multiplier,
            "min_tick": kind.min_tick,
            "ladder": kind.ladder,
            "market_rule_id": kind.market_rule_id,
            **contract,
        }
        inst = Instrument(next(self._con_ids), symbol, Decimal(mark), sec_type, currency, **fields)
        self.instruments[inst.con_id] = inst
        return inst

    def add_order(
        self,
        symbol: str,
        action: str,
        quantity: Decimal | int | str,
        order_type: str = "LMT",
        *,
        lmt_price: Decimal | int | str | None = None,
        aux_price: Decimal | int | str | None = None,
        client_id: int = 1,
        order_id: int | None = None,
        order_ref: str = "",
    ) -> FakeOrder:
        """A resting order placed by someone else (the strategy's client id, by default)."""
        order = FakeOrder(
            perm_id=next(self._perm_ids),
            order_id=order_id if order_id is not None else len(self.orders) + 1,
            client_id=client_id,
            account=self.account,
            instrument=self.instrument(symbol),
            action=action,
            quantity=Decimal(quantity),
            order_type=order_type,
            lmt_price=None if lmt_price is None else Decimal(lmt_price),
            aux_price=None if aux_price is None else Decimal(aux_price),
            order_ref=order_ref,
        )
        self.orders[order.perm_id] = order
        return order

    def position(self, symbol: str) -> Decimal:
        return next(
            (
                self.holdings.get(i.con_id, Decimal(0))
                for i in self.instruments.values()
                if symbol in (i.symbol, i.local_symbol)
            ),
            Decimal(0),
        )

    def working_orders(self) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.working]

    def order_by_ref(self, order_ref: str) -> FakeOrder | None:
        return next((o for o in self.orders.values() if o.order_ref == order_ref), None)

    def market_value(self, con_id: int) -> Decimal:
        inst = self.instruments[con_id]
        return self.holdings[con_id] * inst.mark * inst.multiplier

    def net_liquidation(self) -> Decimal:
        """Cash plus every holding at its mark (paid for in full: a simple book, one currency)."""
        return self.cash + sum((self.market_value(c) for c in self.holdings), Decimal(0))

    # ---------------------------------------------------------------------- failure injection

    def inject_error(self, code: int, text: str = "", req_id: int = -1) -> None:
        """Send an error/notice message (100 pacing, 1100 lost, 2110...) to every client."""
        for s in list(self._sessions):
            s.error(req_id, code, text or f"injected error {code}")

    def drop_connections(self) -> None:
        """Close every client socket, as a gateway restart or a network cut would."""
        for s in list(self._sessions):
            s.close()

    # ---------------------------------------------------------------------------- networking

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeTws:
        self._server = await asyncio.start_server(self._serve, host, port)
        return self

    async def stop(self) -> None:
        self.drop_connections()
        if self._tasks:  # let each connection's handler see its socket close and return
            await asyncio.wait(self._tasks, timeout=1)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeTws:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            if await reader.readexactly(4) != b"API\0":
                return
            low, high = (await self._read_frame(reader)).decode()[1:].split(" ")[0].split("..")
            if not int(low) <= SERVER_VERSION <= int(high):
                return
            session.send([SERVER_VERSION, time.strftime("%Y%m%d %H:%M:%S UTC")])
            self._sessions.add(session)
            while not session.closed:
                fields = (await self._read_frame(reader)).decode().split("\0")[:-1]
                self.messages[int(fields[0])] += 1
                if not self._within_pace(session):
                    continue
                handler = self.handlers.get(int(fields[0]))
                if handler is None:
                    log.warning("fake TWS: no handler for message %s", fields)
                    continue
                handler(session, fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._sessions.discard(session)
            session.close()

    def _within_pace(self, session: Session) -> bool:
        """Over 50 messages in the last second: error 100 and the message is dropped."""
        if self.max_msgs_per_sec is None:
            return True
        now = time.monotonic()
        while session.sent_at and now - session.sent_at[0] >= 1:
            session.sent_at.popleft()
        if len(session.sent_at) >= self.max_msgs_per_sec:
            self.pacing_violations += 1
            session.error(
                -1,
                100,
                f"Max rate of messages per second has been exceeded:max={self.max_msgs_per_sec}",
            )
            return False
        session.sent_at.append(now)
        return True

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> bytes:
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        return await reader.readexactly(size)

    def _session_of(self, client_id: int) -> Session | None:
        return next((s for s in self._sessions if s.client_id == client_id), None)

    # ------------------------------------------------------------------ handlers: connection

    def _ignore(self, session: Session, fields: list[str]) -> None:
        pass

    def _start_api(self, session: Session, fields: list[str]) -> None:
        client_id = int(fields[2])
        if self._session_of(client_id) is not None:
            session.error(-1, 326, "Unable to connect as the client id is already in use.")
            session.close()
            return
        session.client_id = client_id
        self.connections += 1
        session.send([MANAGED_ACCTS, 1, self.account])
        session.send([NEXT_VALID_ID, 1, self._next_order_id(client_id)])

    def _next_order_id(self, client_id: int) -> int:
        used = [o.order_id for o in self.orders.values() if o.client_id == client_id]
        return max(used, default=0) + 1

    def _req_ids(self, session: Session, fields: list[str]) -> None:
        session.send([NEXT_VALID_ID, 1, self._next_order_id(session.client_id or 0)])

    def _req_current_time(self, session: Session, fields: list[str]) -> None:
        session.send([CURRENT_TIME, 1, int(time.time())])

    # ------------------------------------------------------------- handlers: positions, account

    def _position_msg(self, con_id: int) -> list[object]:
        # IB's avgCost is per contract: the price times the multiplier (futures, options)
        inst = self.instruments[con_id]
        return [
            POSITION_DATA, 3, self.account, *_contract_fields(inst, exchange=inst.listed_on),
            self.holdings[con_id], self.avg_costs.get(con_id, Decimal(0)) * inst.multiplier,
        ]  # fmt: skip

    def _portfolio_msg(self, con_id: int) -> list[object]:
        inst = self.instruments[con_id]
        qty, avg = self.holdings[con_id], self.avg_costs.get(con_id, Decimal(0))
        pnl = qty * (inst.mark - avg) * inst.multiplier
        return [
            PORTFOLIO_VALUE, 8, *_contract_fields(inst, exchange=inst.primary_exchange),
            qty, inst.mark, self.market_value(con_id), avg * inst.multiplier, pnl, 0,
            self.account,
        ]  # fmt: skip

    def _account_values(self) -> list[tuple[str, Decimal | str, str]]:
        gross = sum((abs(self.market_value(c)) for c in self.holdings), Decimal(0))
        return [
            ("AccountType", "INDIVIDUAL", ""),
            ("NetLiquidation", self.net_liquidation(), "USD"),
            ("TotalCashValue", self.cash, "USD"),
            ("GrossPositionValue", gross, "USD"),
        ]

    def _req_positions(self, session: Session, fields: list[str]) -> None:
        session.wants_positions = True  # TWS keeps streaming changes until cancelPositions
        for con_id in self.holdings:
            session.send(self._position_msg(con_id))
        session.send([POSITION_END, 1])

    def _cancel_positions(self, session: Session, fields: list[str]) -> None:
        session.wants_positions = False

    def _req_account_updates(self, session: Session, fields: list[str]) -> None:
        session.wants_account = fields[2] == "1"
        if not session.wants_account:
            return
        for tag, value, currency in self._account_values():
            session.send([ACCT_VALUE, 2, tag, value, currency, self.account])
        for con_id in self.holdings:
            session.send(self._portfolio_msg(con_id))
        session.send([ACCT_UPDATE_TIME, 1, time.strftime("%H:%M")])
        session.send([ACCT_DOWNLOAD_END, 1, self.account])

    def _req_account_updates_multi(self, session: Session, fields: list[str]) -> None:
        req_id = int(fields[2])
        for tag, value, currency in self._account_values():
            session.send([ACCOUNT_UPDATE_MULTI, 1, req_id, self.account, "", tag, value, currency])
        session.send([ACCOUNT_UPDATE_MULTI_END, 1, req_id])

    def _req_account_summary(self, session: Session, fields: list[str]) -> None:
        req_id, tags = int(fields[2]), set(fields[4].split(","))
        session.summary_req_ids.add(req_id)
        for tag, value, currency in self._account_values():
            if tag in tags:
                session.send([ACCOUNT_SUMMARY, 1, req_id, self.account, tag, value, currency])
        session.send([ACCOUNT_SUMMARY_END, 1, req_id])

    def _cancel_account_summary(self, session: Session, fields: list[str]) -> None:
        session.summary_req_ids.discard(int(fields[2]))

    def _publish_book(self, con_id: int) -> None:
        """Stream a changed holding and the new account values, as TWS does to subscribers."""
        for s in list(self._sessions):
            if s.wants_positions:
                s.send(self._position_msg(con_id))
            if s.wants_account:
                s.send(self._portfolio_msg(con_id))
                for tag, value, currency in self._account_values():
                    s.send([ACCT_VALUE, 2, tag, value, currency, self.account])
            for req_id in s.summary_req_ids:
                s.send(
                    [
                        ACCOUNT_SUMMARY,
                        1,
                        req_id,
                        self.account,
                        "NetLiquidation",
                        self.net_liquidation(),
                        "USD",
                    ]
                )

    # ------------------------------------------------------------- handlers: contract details

    def _req_contract_data(self, session: Session, f: list[str]) -> None:
        # client.reqContractDetails: [9, 8, reqId, conId, symbol, secType, lastTradeDate, strike,
        # right, multiplier, exchange, primaryExchange, currency, localSymbol, tradingClass, ...]
        req_id, con_id, symbol, sec_type = int(f[2]), int(f[3] or 0), f[4], f[5]
        exchange, local_symbol = f[10], f[13]
        found = [
            i
            for i in self.instruments.values()
            if not i.delisted
            and (i.con_id == con_id if con_id else i.symbol == symbol and i.sec_type == sec_type)
            and (not local_symbol or local_symbol == (i.local_symbol or i.symbol))
            and (not exchange or exchange in i.valid_exchanges)
        ]
        if not found:
            session.error(req_id, 200, NO_DEFINITION)
            return
        for inst in found:
            session.send(contract_details_msg(req_id, inst))
        session.send([CONTRACT_DATA_END, 1, req_id])

    def _req_market_rule(self, session: Session, f: list[str]) -> None:
        rule_id = int(f[1])
        inst = next((i for i in self.instruments.values() if i.market_rule_id == rule_id), None)
        if inst is None:
            return  # TWS does not answer an unknown rule id
        rows = [x for edge, inc in inst.ladder for x in (edge, inc)]
        session.send([MARKET_RULE, rule_id, len(inst.ladder), *rows])

    # -------------------------------------------------------------------- handlers: order reads

    def _send_open_orders(self, session: Session, orders: Iterable[FakeOrder]) -> None:
        for o in orders:
            session.send(open_order_msg(o))
            session.send(order_status_msg(o))
        session.send([OPEN_ORDER_END, 1])

    def _refused_read_only(self, session: Session, req_id: int = -1) -> bool:
        if self.read_only_api:
            session.error(req_id, 321, READ_ONLY_API)
        return self.read_only_api

    def _req_open_orders(self, session: Session, fields: list[str]) -> None:
        if self._refused_read_only(session):
            return
        mine = [o for o in self.working_orders() if o.client_id == session.client_id]
        self._send_open_orders(session, mine)

    def _req_all_open_orders(self, session: Session, fields: list[str]) -> None:
        if self._refused_read_only(session):
            return
        self._send_open_orders(session, self.working_orders())

    def _req_auto_open_orders(self, session: Session, fields: list[str]) -> None:
        self._refused_read_only(session)

    def _req_completed_orders(self, session: Session, fields: list[str]) -> None:
        if self._refused_read_only(session):
            return
        for o in self.orders.values():
            if not o.working:
                session.send(completed_order_msg(o))
        session.send([COMPLETED_ORDERS_END])

    def _req_executions(self, session: Session, fields: list[str]) -> None:
        req_id, client_filter = int(fields[2]), int(fields[3] or 0)
        for f in self.fills:
            if client_filter in (0, f.order.client_id):
                session.send(exec_details_msg(req_id, f))
                session.send(commission_msg(f))
        session.send([EXECUTION_DATA_END, 1, req_id])

    # ------------------------------------------------------------------- handlers: order writes

    def _place_order(self, session: Session, f: list[str]) -> None:
        # client.placeOrder: [3, orderId, conId, symbol, secType, lastTradeDate, strike, right,
        # multiplier, exchange, primaryExchange, currency, localSymbol, tradingClass, secIdType,
        # secId, action, totalQuantity, orderType, lmtPrice, auxPrice, tif, ocaGroup, account,
        # openClose, origin, orderRef, transmit, ...]
        order_id, con_id, client_id = int(f[1]), int(f[2] or 0), session.client_id or 0
        transmit, what_if = place_order_flags(f)
        sent = ReceivedOrder(
            order_id=order_id,
            client_id=client_id,
            con_id=con_id,
            exchange=f[9],
            primary_exchange=f[10],
            action=f[16],
            quantity=Decimal(f[17]),
            order_type=f[18],
            lmt_price=_decimal(f[19]),
            order_ref=f[26],
            account=f[23],
            at=time.monotonic(),
            what_if=what_if,
            transmit=transmit,
        )
        self.received.append(sent)
        if self._refused_read_only(session, order_id):
            return
        if self.pacing_errors > 0:
            self.pacing_errors -= 1
            session.error(order_id, 100, "Max rate of messages per second has been exceeded:max=50")
            return
        if any(o.client_id == client_id and o.order_id == order_id for o in self.orders.values()):
            session.error(order_id, 103, "Duplicate order id")
            return
        inst = self.instruments.get(con_id)
        if inst is None or inst.delisted or sent.exchange not in inst.valid_exchanges:
            session.error(order_id, 200, NO_DEFINITION)
            return
        if self.precautions and inst.sec_type == "STK" and sent.exchange != "SMART":
            session.error(order_id, 10311, DIRECT_ROUTED.format(exchange=sent.exchange))
            return
        if sent.lmt_price is not None and sent.lmt_price % inst.tick_at(sent.lmt_price):
            session.error(order_id, 110, TICK_REJECT)
            return
        if what_if:
            self._answer_what_if(session, sent, inst)
            return
        if self.reject_next > 0:
            self.reject_next -= 1
            text = self.reject_reason
            if self.reject_code == 201:
                text = f"Order rejected - reason:{text}"
            session.error(order_id, self.reject_code, text)
            return
        order = FakeOrder(
            perm_id=next(self._perm_ids),
            order_id=order_id,
            client_id=client_id,
            account=sent.account or self.account,
            instrument=inst,
            action=sent.action,
            quantity=sent.quantity,
            order_type=sent.order_type,
            lmt_price=sent.lmt_price,
            aux_price=_decimal(f[20]),
            tif=f[21] or "DAY",
            order_ref=sent.order_ref,
        )
        self.orders[order.perm_id] = order
        if self.reject_after_ack > 0:  # accepted, then refused by a later check at IB
            self.reject_after_ack -= 1
            self._notify(order)
            order.status, order.completed_time = "Cancelled", _ib_time()
            session.error(order_id, 201, f"Order rejected - reason:{self.reject_reason}")
            return
        self._accepted += 1
        drop = self._accepted == self.disconnect_after_orders
        if drop and self.drop_before_reply:
            self._match(order, notify=False)  # the order lands; its answer never leaves
        else:
            self._notify(order)
            self._match(order)
        if drop:
            self.disconnect_after_orders = None
            self.drop_connections()

    def _answer_what_if(self, session: Session, sent: ReceivedOrder, inst: Instrument) -> None:
        """The credit check's answer, and nothing else: no order in the book, no status, no fill."""
        if self.what_if_reject is not None:
            session.error(sent.order_id, 201, f"Order rejected - reason:{self.what_if_reject}")
            return
        self.what_ifs += 1
        probe = FakeOrder(
            perm_id=0,
            order_id=sent.order_id,
            client_id=sent.client_id,
            account=sent.account or self.account,
            instrument=inst,
            action=sent.action,
            quantity=sent.quantity,
            order_type=sent.order_type,
            lmt_price=sent.lmt_price,
            order_ref=sent.order_ref,
            status="PreSubmitted",
        )
        session.send(open_order_msg(probe, WhatIf()))  # the margin fields not computed yet
        value = sent.quantity * (sent.lmt_price or inst.mark) * inst.multiplier
        margin = format((value / 4).quantize(Decimal("0.01")), "f")
        equity = format(self.net_liquidation().quantize(Decimal("0.01")), "f")
        session.send(
            open_order_msg(
                probe,
                WhatIf(
                    init_margin_before="0", maint_margin_before="0",
                    equity_with_loan_before=equity, init_margin_change=margin,
                    maint_margin_change=margin, equity_with_loan_change="-1",
                    init_margin_after=margin, maint_margin_after=margin,
                    equity_with_loan_after=equity, commission=str(COMMISSION),
                    min_commission=str(COMMISSION), max_commission=str(COMMISSION),
                    commission_currency="USD",
                ),
            )
        )  # fmt: skip

    def _match(self, order: FakeOrder, notify: bool = True) -> None:
        """Fill marketable orders at the mark; everything else rests (stops never trigger)."""
        mark = order.instrument.mark
        buy = order.action == "BUY"
        marketable = order.order_type == "MKT" or (
            order.order_type == "LMT"
            and order.lmt_price is not None
            and (order.lmt_price >= mark if buy else order.lmt_price <= mark)
        )
        if marketable and self.fill_orders:
            self._execute(order, mark, notify)

    def _execute(self, order: FakeOrder, price: Decimal, notify: bool) -> None:
        shares = order.remaining
        con_id = order.instrument.con_id
        signed = shares if order.action == "BUY" else -shares
        old = self.holdings.get(con_id, Decimal(0))
        new = old + signed
        if old == 0 or ((old > 0) != (new > 0) and new != 0):
            self.avg_costs[con_id] = price
        elif abs(new) > abs(old):
            self.avg_costs[con_id] = (old * self.avg_costs[con_id] + signed * price) / new
        self.holdings[con_id] = new
        self.cash -= signed * price * order.instrument.multiplier + COMMISSION
        order.avg_fill_price = price
        order.filled += shares
        order.status = "Filled"
        order.completed_time = _ib_time()
        fill = FakeFill(
            f"0000e0d5.6553c2a1.{next(self._exec_ids):02d}.01", order, shares, price, _ib_time()
        )
        self.fills.append(fill)
        owner = self._session_of(order.client_id)
        if notify and owner is not None:
            owner.send(exec_details_msg(-1, fill))
            self._notify(order)
            owner.send(commission_msg(fill))
        if notify:
            self._publish_book(con_id)

    def _notify(self, order: FakeOrder) -> None:
        owner = self._session_of(order.client_id)
        if owner is not None:
            owner.send(open_order_msg(order))
            owner.send(order_status_msg(order))

    def _cancel(self, order: FakeOrder) -> None:
        order.status = "Cancelled"
        order.completed_time = _ib_time()
        self._notify(order)
        owner = self._session_of(order.client_id)
        if owner is not None:
            owner.error(order.order_id, 202, "Order Canceled - reason:")

    def _refuse_cancel(self, order: FakeOrder) -> None:
        owner = self._session_of(order.client_id)
        if owner is not None:
            owner.error(
                order.order_id,
                161,
                f"Cancel attempted when order is not in a cancellable state. "
                f"Order permId ={order.perm_id}",
            )

    def _cancel_order(self, session: Session, fields: list[str]) -> None:
        order_id = int(fields[2])
        self.cancel_requests.append(order_id)
        if self._refused_read_only(session, order_id):
            return
        order = next(
            (
                o
                for o in self.orders.values()
                if o.client_id == session.client_id and o.order_id == order_id
            ),
            None,
        )
        if order is None:
            session.error(
                order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found."
            )
        elif not order.working or order.perm_id in self.refuse_cancel:
            self._refuse_cancel(order)
        else:
            self._cancel(order)

    def _req_global_cancel(self, session: Session, fields: list[str]) -> None:
        if self._refused_read_only(session):
            return
        self.global_cancels += 1
        for order in self.working_orders():
            if order.perm_id in self.refuse_cancel:
                self._refuse_cancel(order)
            else:
                self._cancel(order)


# ------------------------------------------------------------------- running it for CLI tests

T = TypeVar("T")


class FakeTwsThread:
    """A FakeTws serving from its own thread and event loop, for tests that block (a CLI)."""

    def __init__(self, tws: FakeTws, host: str, port: int) -> None:
        self.tws = tws
        self.host = host
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(host, port), name="fake-tws", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("fake TWS did not start within 5 s")

    @property
    def port(self) -> int:
        return self.tws.port

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.tws.start(host, port))
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.tws.stop())
        self._loop.close()

    def call(self, fn: Callable[[FakeTws], T]) -> T:
        """Run fn(tws) on the fake's loop (the book is not thread-safe) and return its result."""

        async def run() -> T:
            return fn(self.tws)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> FakeTwsThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_fake_tws(
    positions: Iterable[tuple[str, Any, Any]] = (),
    *,
    account: str = "DU1234567",
    cash: Decimal | int | str = 1_000_000,
    host: str = "127.0.0.1",
    port: int = 0,
    setup: Callable[[FakeTws], None] | None = None,
) -> FakeTwsThread:
    """Start a fake gateway in a background thread; returns once it listens.

    positions: (symbol, signed quantity, price) triples; the price is both avg cost and mark.
    setup: called with the FakeTws before it listens, to add orders or turn knobs.
    Point IbkrVenueConfig(host=handle.host, port=handle.port) at it; handle.stop() when done.
    """
    tws = FakeTws(account=account, cash=cash)
    for symbol, qty, price in positions:
        tws.add_position(symbol, Decimal(str(qty)), Decimal(str(price)))
    if setup is not None:
        setup(tws)
    return FakeTwsThread(tws, host, port)


def _parse_position(text: str) -> tuple[str, Decimal, Decimal]:
    symbol, qty, price = text.split(":")
    return symbol, Decimal(qty), Decimal(price)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake TWS / IB Gateway on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account", default="DU1234567")
    parser.add_argument(
        "--position",
        action="append",
        default=[],
        type=_parse_position,
        metavar="SYMBOL:QTY:PRICE",
        help="a holding (negative QTY for a short); repeatable",
    )
    parser.add_argument(
        "--order",
        action="append",
        default=[],
        metavar="SYMBOL:ACTION:QTY:TYPE:PRICE",
        help="a resting order from client 1, e.g. AAPL:SELL:100:STP:180; repeatable",
    )
    args = parser.parse_args(argv)

    async def serve() -> None:
        tws = FakeTws(account=args.account)
        for symbol, qty, price in args.position:
            tws.add_position(symbol, qty, price)
        for spec in args.order:
            symbol, action, qty, kind, price = spec.split(":")
            stop = kind.startswith("STP")
            tws.add_order(
                symbol,
                action,
                qty,
                kind,
                lmt_price=None if stop else price,
                aux_price=price if stop else None,
            )
        await tws.start(args.host, args.port)
        print(f"FAKE_TWS_PORT={tws.port}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
