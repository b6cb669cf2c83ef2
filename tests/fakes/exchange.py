"""Loopback fake crypto exchanges that ccxt talks to over real HTTP, with signing on.

Two dialects, each only as deep as ccxt actually goes for rollbot's calls:

* ``bybit``: v5 unified account, linear perpetuals (instruments, positions, wallet balance,
  order create / cancel / cancel-all, open orders incl. conditional orders, order history).
* ``binance``: spot (exchangeInfo, account, tickers, order, openOrders, allOrders).

The book is programmable (positions, balances, prices, resting and stop orders) and a few
knobs inject trouble: rate-limit answers, an exchange error after N accepted orders, and
no fills. Market orders fill at the mark at once. Every request is logged; a path the fake
does not know answers 404 and lands in ``unknown`` so a test sees what ccxt wanted.

The fake is strict where the real venues are lenient, so that rollbot cannot lean on
leniency: Bybit open-orders / cancel-all without ``orderFilter`` touch plain orders only
(conditional ones need ``orderFilter=StopOrder``, as for classic accounts), and reduce-only
orders larger than the position are refused rather than trimmed.

In-loop use (async tests)::

    async with FakeExchange("bybit", positions={"BTCUSDT": "0.5"}) as fake:
        fake.book.set_position("ETHUSDT", "-2", entry="3100")
        fake.book.add_order("BTCUSDT", "SELL", "0.5", trigger_price="50000")  # a stop
        venue = CryptoVenue(CryptoVenueConfig(**fake.venue_config("bybit")),
                            api_key=fake.api_key, secret=fake.secret)

From another thread (CLI tests, where the code under test runs its own event loop)::

    with start_fake_exchange("binance", balances={"BTC": "0.5", "USDT": "100"}) as fake:
        config.write_text(fake.venue_toml("spot"))  # a [[venues]] entry, urls = {"*" = ...}
        env.update(fake.env("spot"))                # the key/secret variables it names
        ...                                         # run the CLI; then inspect fake.book

Knobs on `book`: rate_limit(times, path) answers bybit retCode 10006 / binance HTTP 429;
fail_orders_after(n, code, message) errors every create-order after n accepted ones;
no_fill = True leaves orders resting; binance
trade_permission = False makes the key read-only. Records: requests, order_requests, unknown.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import web

Kind = Literal["bybit", "binance", "okx", "kraken", "gate", "bitget"]
Num = Decimal | str | int

DEFAULT_API_KEY = "fake-key"
DEFAULT_SECRET = "fake-secret"


def _d(value: Num) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _s(value: Decimal) -> str:
    """Plain decimal text, as the venues send it (no exponent, no trailing zeros)."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Instrument:
    symbol: str  # exchange id, e.g. BTCUSDT
    base: str
    quote: str
    qty_step: Decimal = Decimal("0.001")
    tick: Decimal = Decimal("0.1")
    min_qty: Decimal = Decimal("0.001")


@dataclass
class FakeOrder:
    order_id: str
    client_id: str
    symbol: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT
    qty: Decimal
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    reduce_only: bool = False
    status: str = "NEW"  # NEW | UNTRIGGERED | FILLED | CANCELLED
    filled: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    created_ms: int = field(default_factory=_now_ms)
    updated_ms: int = field(default_factory=_now_ms)
    category: str = "linear"  # bybit: linear or spot

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "UNTRIGGERED")

    @property
    def is_conditional(self) -> bool:
        return self.trigger_price is not None


@dataclass
class FakePosition:
    size: Decimal  # signed: long > 0
    entry: Decimal


@dataclass
class RequestRecord:
    method: str
    path: str
    params: dict[str, Any]
    status: int = 200


@dataclass
class _Answer:
    status: int
    body: Any


class _Refusal(Exception):
    """Raised by a handler to answer with the exchange's own error shape."""

    def __init__(self, code: int, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


DEFAULT_INSTRUMENTS = (
    Instrument("BTCUSDT", "BTC", "USDT", Decimal("0.001"), Decimal("0.1"), Decimal("0.001")),
    Instrument("ETHUSDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.01"), Decimal("0.01")),
    Instrument("SOLUSDT", "SOL", "USDT", Decimal("0.1"), Decimal("0.01"), Decimal("0.1")),
    Instrument("DOGEUSDT", "DOGE", "USDT", Decimal("1"), Decimal("0.00001"), Decimal("1")),
)


class FakeCountdown:
    """An exchange's dead-man's switch: each arm replaces the running countdown (0 stops it);
    when one runs out unrefreshed, `on_lapse` cancels what the exchange would, under the book's
    lock. `scale` shortens the fake's own wait (0.5: a 10 s countdown lapses after 5 s of wall
    time) so a test stays short; what the fake answers keeps the exchange's own times."""

    def __init__(self, lock: threading.RLock, on_lapse: Callable[[], None]) -> None:
        self.lock = lock
        self.on_lapse = on_lapse
        self.scale = 1.0
        self.calls: list[float] = []  # the seconds of every arm, 0 for a stop, in order
        self.lapsed = threading.Event()
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.stop()
        if seconds:
            self._timer = threading.Timer(seconds * self.scale, self._lapse)
            self._timer.daemon = True
            self._timer.start()

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _lapse(self) -> None:
        with self.lock:
            self.on_lapse()
            self._timer = None
        self.lapsed.set()


DEFAULT_PRICES = {"BTCUSDT": "60000", "ETHUSDT": "3000", "SOLUSDT": "150", "DOGEUSDT": "0.1"}


class _Book:
    """State and trouble knobs shared by both dialects. Guarded by `lock`: a test thread
    may edit the book while the server thread answers."""

    kind: Kind

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_SECRET,
        instruments: tuple[Instrument, ...] = DEFAULT_INSTRUMENTS,
        prices: Mapping[str, Num] | None = None,
    ) -> None:
        self.api_key = api_key
        self.secret = secret
        self.lock = threading.RLock()
        self.instruments = {i.symbol: i for i in instruments}
        self.prices: dict[str, Decimal] = {
            k: _d(v) for k, v in (prices if prices is not None else DEFAULT_PRICES).items()
        }
        self.orders: list[FakeOrder] = []
        self.requests: list[RequestRecord] = []
        self.unknown: list[str] = []  # "METHOD /path" ccxt asked for and the fake lacks
        self.order_requests: list[dict[str, Any]] = []  # every create-order's params
        self.malformed: dict[str, Any] = {}  # path -> a well-formed envelope around this data
        # knobs
        self.no_fill = False
        self._rate_limits: list[tuple[str | None, int]] = []  # (path substring, count)
        self.rate_limited = 0  # answers given
        self._fail_after: int | None = None
        self._fail_with: _Refusal | None = None
        self._ids = itertools.count(1)

    # ---- knobs -------------------------------------------------------------------------
    def rate_limit(self, times: int = 1, path: str | None = None) -> None:
        """Answer the next `times` requests (whose path contains `path`) with a rate limit."""
        with self.lock:
            self._rate_limits.append((path, times))

    def fail_orders_after(
        self, accepted: int, code: int | None = None, message: str | None = None
    ) -> None:
        """Accept `accepted` more orders, then answer every create-order with an error:
        by default the venue's internal error (bybit 10016, binance -1000 / HTTP 500);
        `code` and `message` pick another (bybit 110007 / binance -2010: no funds)."""
        with self.lock:
            self._fail_after = accepted
            self._fail_with = self._order_failure(code, message)

    def clear_failures(self) -> None:
        with self.lock:
            self._fail_after = None
            self._rate_limits.clear()

    # ---- book --------------------------------------------------------------------------
    def set_price(self, symbol: str, price: Num) -> None:
        with self.lock:
            self.prices[symbol] = _d(price)

    def add_order(
        self,
        symbol: str,
        side: str,
        qty: Num,
        price: Num | None = None,
        *,
        trigger_price: Num | None = None,
        client_id: str = "",
        reduce_only: bool = False,
    ) -> FakeOrder:
        """A resting order; with `trigger_price` a stop (conditional) order."""
        with self.lock:
            order = FakeOrder(
                order_id=self._new_id(),
                client_id=client_id,
                symbol=symbol,
                side=side.upper(),
                type="LIMIT" if price is not None else "MARKET",
                qty=_d(qty),
                price=_d(price) if price is not None else None,
                trigger_price=_d(trigger_price) if trigger_price is not None else None,
                reduce_only=reduce_only,
                status="UNTRIGGERED" if trigger_price is not None else "NEW",
            )
            self._lock_for(order)
            self.orders.append(order)
            return order

    def open_orders(self) -> list[FakeOrder]:
        with self.lock:
            return [o for o in self.orders if o.is_open]

    def requests_to(self, path: str) -> list[RequestRecord]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith(path)]

    # ---- helpers for dialects --------------------------------------------------------------
    def _new_id(self) -> str:
        return str(next(self._ids))

    def _lock_for(self, order: FakeOrder) -> None:
        """Spot venues reserve the funds a resting order needs; derivatives do not here."""

    def _unlock_for(self, order: FakeOrder) -> None:
        """Undo _lock_for when an order leaves the book."""

    def _take_rate_limit(self, path: str) -> bool:
        for i, (needle, count) in enumerate(self._rate_limits):
            if needle is None or needle in path:
                if count <= 1:
                    self._rate_limits.pop(i)
                else:
                    self._rate_limits[i] = (needle, count - 1)
                self.rate_limited += 1
                return True
        return False

    def _check_order_failure(self) -> None:
        if self._fail_after is None:
            return
        if self._fail_after > 0:
            self._fail_after -= 1
            return
        assert self._fail_with is not None
        raise self._fail_with

    def _order_failure(self, code: int | None, message: str | None) -> _Refusal:
        raise NotImplementedError

    def _round_ok(self, symbol: str, qty: Decimal) -> bool:
        inst = self.instruments[symbol]
        return qty >= inst.min_qty and (qty % inst.qty_step) == 0


# =========================================================================================
# Bybit v5 (unified account, linear)
# =========================================================================================


class BybitBook(_Book):
    kind: Kind = "bybit"

    def __init__(
        self,
        *,
        positions: Mapping[str, Num] | None = None,
        wallet: Mapping[str, Num] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.positions: dict[str, FakePosition] = {}
        self.wallet: dict[str, Decimal] = {
            k: _d(v) for k, v in (wallet if wallet is not None else {"USDT": "100000"}).items()
        }
        for symbol, size in (positions or {}).items():
            self.set_position(symbol, size)
        # hedge mode: (symbol, positionIdx 1 = buy side / 2 = sell side) -> size >= 0
        self.hedge: dict[tuple[str, int], FakePosition] = {}

    def set_hedge_position(self, symbol: str, idx: int, size: Num) -> None:
        """Switches the symbol to hedge mode (Bybit: positionIdx 1 long leg, 2 short leg)."""
        with self.lock:
            self.hedge[(symbol, idx)] = FakePosition(_d(size), self.prices[symbol])

    def set_position(self, symbol: str, size: Num, entry: Num | None = None) -> None:
        with self.lock:
            price = _d(entry) if entry is not None else self.prices[symbol]
            self.positions[symbol] = FakePosition(_d(size), price)

    def position(self, symbol: str) -> Decimal:
        with self.lock:
            pos = self.positions.get(symbol)
            return pos.size if pos else Decimal(0)

    def _new_id(self) -> str:
        return str(uuid.uuid4())

    def _order_failure(self, code: int | None, message: str | None) -> _Refusal:
        if code is None:
            return _Refusal(10016, message or "Internal server error.")
        return _Refusal(code, message or "order refused by the fake")

    # ---- routes ----------------------------------------------------------------------------
    def routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], Any]]:
        return {
            ("GET", "/v5/market/time"): self._time,
            ("GET", "/v5/market/instruments-info"): self._instruments,
            ("GET", "/v5/market/tickers"): self._tickers,
            ("GET", "/v5/user/query-api"): self._query_api,
            ("GET", "/v5/account/info"): self._account_info,
            ("GET", "/v5/account/wallet-balance"): self._wallet_balance,
            ("GET", "/v5/position/list"): self._position_list,
            ("POST", "/v5/order/create"): self._create,
            ("POST", "/v5/order/cancel"): self._cancel,
            ("POST", "/v5/order/cancel-all"): self._cancel_all,
            ("GET", "/v5/order/realtime"): self._realtime,
            ("GET", "/v5/order/history"): self._history,
        }

    def is_private(self, path: str) -> bool:
        return not path.startswith("/v5/market/")

    def ok(self, result: Any) -> _Answer:
        return _Answer(
            200,
            {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": _now_ms()},
        )

    def refuse(self, refusal: _Refusal) -> _Answer:
        body = {
            "retCode": refusal.code,
            "retMsg": refusal.message,
            "result": {},
            "retExtInfo": {},
            "time": _now_ms(),
        }
        return _Answer(refusal.http_status, body)

    def rate_limited_answer(self) -> _Answer:
        return self.refuse(_Refusal(10006, "Too many visits. Exceeded the API Rate Limit."))

    def authenticate(self, request: web.Request, payload: str) -> None:
        key = request.headers.get("X-BAPI-API-KEY")
        stamp = request.headers.get("X-BAPI-TIMESTAMP")
        sign = request.headers.get("X-BAPI-SIGN")
        window = request.headers.get("X-BAPI-RECV-WINDOW", "")
        if not key or key != self.api_key:
            raise _Refusal(10003, "API key is invalid.")
        if not stamp or not sign:
            raise _Refusal(10004, "error sign! missing X-BAPI-SIGN or X-BAPI-TIMESTAMP")
        origin = stamp + key + window + payload
        want = hmac.new(self.secret.encode(), origin.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sign):
            raise _Refusal(10004, f"error sign! origin_string[{origin}]")

    # ---- public ------------------------------------------------------------------------
    def _time(self, _: dict[str, Any]) -> Any:
        now = _now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def _instruments(self, params: dict[str, Any]) -> Any:
        category = params.get("category")
        rows = []
        if category == "linear" and params.get("status") != "PreLaunch":
            rows = [self._instrument_row(i) for i in self.instruments.values()]
        if category == "spot":  # the same pairs trade spot in the unified account
            rows = [self._spot_row(i) for i in self.instruments.values()]
        return {"category": category, "list": rows, "nextPageCursor": ""}

    def _spot_row(self, inst: Instrument) -> dict[str, Any]:
        return {
            "symbol": inst.symbol,
            "baseCoin": inst.base,
            "quoteCoin": inst.quote,
            "innovation": "0",
            "status": "Trading",
            "marginTrading": "both",
            "lotSizeFilter": {
                "basePrecision": _s(inst.qty_step),
                "quotePrecision": "0.00000001",
                "minOrderQty": _s(inst.min_qty),
                "maxOrderQty": "1000000",
                "minOrderAmt": "1",
                "maxOrderAmt": "2000000",
            },
            "priceFilter": {"tickSize": _s(inst.tick)},
        }

    def _instrument_row(self, inst: Instrument) -> dict[str, Any]:
        return {
            "symbol": inst.symbol,
            "contractType": "LinearPerpetual",
            "status": "Trading",
            "baseCoin": inst.base,
            "quoteCoin": inst.quote,
            "settleCoin": inst.quote,
            "launchTime": "1585526400000",
            "deliveryTime": "0",
            "priceScale": "2",
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100", "leverageStep": "0.01"},
            "priceFilter": {
                "minPrice": _s(inst.tick),
                "maxPrice": "1999999",
                "tickSize": _s(inst.tick),
            },
            "lotSizeFilter": {
                "maxOrderQty": "1000000",
                "maxMktOrderQty": "1000000",
                "minOrderQty": _s(inst.min_qty),
                "qtyStep": _s(inst.qty_step),
                "minNotionalValue": "5",
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "copyTrading": "both",
        }

    def _tickers(self, params: dict[str, Any]) -> Any:
        symbol = params.get("symbol")
        rows = []
        for sym, price in self.prices.items():
            if sym in self.instruments and (symbol is None or symbol == sym):
                rows.append(
                    {
                        "symbol": sym,
                        "lastPrice": _s(price),
                        "markPrice": _s(price),
                        "indexPrice": _s(price),
                        "bid1Price": _s(price),
                        "ask1Price": _s(price),
                        "bid1Size": "1",
                        "ask1Size": "1",
                        "prevPrice24h": _s(price),
                        "highPrice24h": _s(price),
                        "lowPrice24h": _s(price),
                        "volume24h": "0",
                        "turnover24h": "0",
                    }
                )
        return {"category": params.get("category", "linear"), "list": rows}

    # ---- account -----------------------------------------------------------------------
    def _query_api(self, _: dict[str, Any]) -> Any:
        return {
            "id": "1",
            "note": "rollbot-fake",
            "apiKey": self.api_key,
            "readOnly": 0,
            "secret": "",
            "permissions": {"ContractTrade": ["Order", "Position"], "Wallet": ["AccountTransfer"]},
            "ips": ["*"],
            "type": 1,
            "unified": 0,
            "uta": 1,
            "userID": 1,
        }

    def _account_info(self, _: dict[str, Any]) -> Any:
        return {
            "unifiedMarginStatus": 6,
            "marginMode": "REGULAR_MARGIN",
            "isMasterTrader": False,
            "spotHedgingStatus": "OFF",
            "updatedTime": str(_now_ms()),
            "dcpStatus": "OFF",
            "timeWindow": 10,
            "smpGroup": 0,
        }

    def _upl(self, symbol: str, pos: FakePosition) -> Decimal:
        return (self.prices[symbol] - pos.entry) * pos.size

    def _wallet_balance(self, params: dict[str, Any]) -> Any:
        if params.get("accountType") != "UNIFIED":
            raise _Refusal(10001, "accountType only support UNIFIED.")
        upl = {"USDT": sum((self._upl(s, p) for s, p in self.positions.items()), Decimal(0))}
        coins = []
        for coin, balance in self.wallet.items():
            pnl = upl.get(coin, Decimal(0))
            coins.append(
                {
                    "coin": coin,
                    "equity": _s(balance + pnl),
                    "usdValue": _s(balance + pnl),
                    "walletBalance": _s(balance),
                    "unrealisedPnl": _s(pnl),
                    "borrowAmount": "0",
                    "accruedInterest": "0",
                    "availableToWithdraw": "",
                    "locked": "0",
                    "totalOrderIM": "0",
                    "totalPositionIM": "0",
                    "totalPositionMM": "0",
                    "cumRealisedPnl": "0",
                    "bonus": "0",
                }
            )
        total = sum(self.wallet.values(), Decimal(0)) + sum(upl.values(), Decimal(0))
        return {
            "list": [
                {
                    "accountType": "UNIFIED",
                    "totalEquity": _s(total),
                    "totalWalletBalance": _s(sum(self.wallet.values(), Decimal(0))),
                    "totalMarginBalance": _s(total),
                    "totalAvailableBalance": _s(total),
                    "totalPerpUPL": _s(sum(upl.values(), Decimal(0))),
                    "totalInitialMargin": "0",
                    "totalMaintenanceMargin": "0",
                    "accountIMRate": "0",
                    "accountMMRate": "0",
                    "accountLTV": "0",
                    "coin": coins,
                }
            ]
        }

    def _position_list(self, params: dict[str, Any]) -> Any:
        if params.get("category") != "linear":
            raise _Refusal(10001, "category only support linear in this fake")
        symbol = params.get("symbol")
        if symbol is None and params.get("settleCoin") is None and params.get("baseCoin") is None:
            raise _Refusal(10001, "symbol or settleCoin is required")
        rows = []
        legs = [(sym, 0, pos) for sym, pos in self.positions.items()]
        legs += [(sym, idx, pos) for (sym, idx), pos in self.hedge.items()]
        for sym, idx, pos in legs:
            if pos.size == 0 or (symbol is not None and sym != symbol):
                continue
            mark = self.prices[sym]
            sell_side = pos.size < 0 if idx == 0 else idx == 2
            rows.append(
                {
                    "positionIdx": idx,
                    "riskId": 1,
                    "riskLimitValue": "2000000",
                    "symbol": sym,
                    "side": "Sell" if sell_side else "Buy",
                    "size": _s(abs(pos.size)),
                    "avgPrice": _s(pos.entry),
                    "positionValue": _s(abs(pos.size) * pos.entry),
                    "tradeMode": 0,
                    "positionStatus": "Normal",
                    "autoAddMargin": 0,
                    "adlRankIndicator": 2,
                    "leverage": "10",
                    "positionBalance": "0",
                    "markPrice": _s(mark),
                    "liqPrice": "",
                    "bustPrice": "",
                    "positionMM": "0",
                    "positionIM": "0",
                    "tpslMode": "Full",
                    "takeProfit": "0",
                    "stopLoss": "0",
                    "trailingStop": "0",
                    "unrealisedPnl": _s(self._upl(sym, pos)),
                    "curRealisedPnl": "0",
                    "cumRealisedPnl": "0",
                    "seq": 1,
                    "isReduceOnly": False,
                    "createdTime": str(_now_ms()),
                    "updatedTime": str(_now_ms()),
                }
            )
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    # ---- orders ------------------------------------------------------------------------
    def _row(self, o: FakeOrder) -> dict[str, Any]:
        status = {
            "NEW": "New",
            "UNTRIGGERED": "Untriggered",
            "FILLED": "Filled",
            "CANCELLED": "Cancelled",
        }[o.status]
        return {
            "orderId": o.order_id,
            "orderLinkId": o.client_id,
            "blockTradeId": "",
            "symbol": o.symbol,
            "price": _s(o.price) if o.price is not None else "0",
            "qty": _s(o.qty),
            "side": "Buy" if o.side == "BUY" else "Sell",
            "isLeverage": "",
            "positionIdx": 0,
            "orderStatus": status,
            "cancelType": "UNKNOWN",
            "rejectReason": "EC_NoError",
            "avgPrice": _s(o.avg_price) if o.filled else "",
            "leavesQty": _s(o.qty - o.filled) if o.is_open else "0",
            "leavesValue": "0",
            "cumExecQty": _s(o.filled),
            "cumExecValue": _s(o.filled * o.avg_price),
            "cumExecFee": "0",
            "timeInForce": "IOC" if o.type == "MARKET" else "GTC",
            "orderType": "Market" if o.type == "MARKET" else "Limit",
            "stopOrderType": "Stop" if o.is_conditional else "",
            "orderIv": "",
            "triggerPrice": _s(o.trigger_price) if o.trigger_price is not None else "0",
            "takeProfit": "0",
            "stopLoss": "0",
            "tpTriggerBy": "",
            "slTriggerBy": "",
            "triggerDirection": 2 if o.is_conditional else 0,
            "triggerBy": "LastPrice" if o.is_conditional else "",
            "lastPriceOnCreated": "",
            "reduceOnly": o.reduce_only,
            "closeOnTrigger": False,
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "tpslMode": "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "placeType": "",
            "createdTime": str(o.created_ms),
            "updatedTime": str(o.updated_ms),
        }

    def _matches(self, o: FakeOrder, params: dict[str, Any]) -> bool:
        if params.get("symbol") and o.symbol != params["symbol"]:
            return False
        if params.get("orderId") and o.order_id != params["orderId"]:
            return False
        if params.get("orderLinkId") and o.client_id != params["orderLinkId"]:
            return False
        settle = params.get("settleCoin")
        if settle and self.instruments[o.symbol].quote != settle:
            return False
        if params.get("category", "linear") != o.category:
            return False
        # strict: conditional orders only when asked for (see module docstring)
        wants_conditional = params.get("orderFilter") == "StopOrder"
        return o.is_conditional == wants_conditional

    def _linear_only(self, params: dict[str, Any]) -> None:
        """Orders: linear and spot (the unified account trades both); no inverse, no option."""
        if params.get("category") not in ("linear", "spot"):
            raise _Refusal(10001, f"category {params.get('category')!r} not supported by fake")

    def add_spot_order(
        self, symbol: str, side: str, qty: Num, price: Num | None = None, **kwargs: Any
    ) -> FakeOrder:
        """A resting spot order (category spot); with trigger_price a spot conditional order."""
        order = self.add_order(symbol, side, qty, price, **kwargs)
        order.category = "spot"
        return order

    def _realtime(self, params: dict[str, Any]) -> Any:
        self._linear_only(params)
        narrowed = params.get("symbol") or params.get("settleCoin") or params.get("baseCoin")
        if not narrowed and params["category"] != "spot":  # spot lists without one
            raise _Refusal(10001, "symbol, settleCoin or baseCoin is required")
        rows = [self._row(o) for o in self.orders if o.is_open and self._matches(o, params)]
        return {"category": params["category"], "list": rows[::-1], "nextPageCursor": ""}

    def _history(self, params: dict[str, Any]) -> Any:
        self._linear_only(params)
        wanted = {"Filled": "FILLED", "Cancelled": "CANCELLED"}.get(params.get("orderStatus", ""))
        rows = [
            self._row(o)
            for o in self.orders
            if not o.is_open and self._matches(o, params) and (wanted is None or o.status == wanted)
        ]
        limit = int(params.get("limit", 20))
        return {"category": params["category"], "list": rows[::-1][:limit], "nextPageCursor": ""}

    def _create(self, params: dict[str, Any]) -> Any:
        self.order_requests.append(dict(params))
        self._linear_only(params)
        symbol = params.get("symbol", "")
        if symbol not in self.instruments:
            raise _Refusal(10001, f"params error: symbol invalid {symbol}")
        side = str(params.get("side", "")).upper()
        order_type = str(params.get("orderType", "")).upper()
        if side not in ("BUY", "SELL") or order_type not in ("MARKET", "LIMIT"):
            raise _Refusal(10001, "params error: side or orderType invalid")
        qty = _d(params.get("qty", "0"))
        if not self._round_ok(symbol, qty):
            raise _Refusal(10001, "params error: Qty invalid")
        link = str(params.get("orderLinkId", ""))
        if link and any(o.client_id == link for o in self.orders):
            raise _Refusal(110072, "OrderLinkedID is duplicate")
        reduce_only = params.get("reduceOnly") in (True, "true")
        spot = params["category"] == "spot"
        if spot:
            if reduce_only:
                raise _Refusal(10001, "params error: reduceOnly is for derivatives")
            if order_type == "MARKET" and side == "BUY" and params.get("marketUnit") != "baseCoin":
                raise _Refusal(10001, "params error: market buy qty is in the quote coin")
            base = self.instruments[symbol].base
            if side == "SELL" and qty > self.wallet.get(base, Decimal(0)):
                raise _Refusal(170131, "Insufficient balance.")
        idx = int(params.get("positionIdx", 0))
        hedged = any(key[0] == symbol for key in self.hedge) and not spot
        if hedged != (idx in (1, 2)):
            raise _Refusal(10001, "position idx not match position mode")
        if hedged:
            leg = self.hedge.get((symbol, idx)) or FakePosition(Decimal(0), self.prices[symbol])
            closing = (idx == 1) == (side == "SELL")
            if closing and qty > leg.size:
                raise _Refusal(110017, "Reduce-only rule not satisfied")
            self._check_order_failure()
            if not self.no_fill and order_type == "MARKET":
                leg.size += -qty if closing else qty
                self.hedge[(symbol, idx)] = leg
            order = FakeOrder(
                order_id=self._new_id(), client_id=link, symbol=symbol, side=side,
                type=order_type, qty=qty, status="FILLED" if order_type == "MARKET" else "NEW",
                filled=qty if order_type == "MARKET" else Decimal(0),
                avg_price=self.prices[symbol],
            )  # fmt: skip
            self.orders.append(order)
            return {"orderId": order.order_id, "orderLinkId": order.client_id}
        held = self.position(symbol)
        if reduce_only:
            reduces = (held > 0 and side == "SELL") or (held < 0 and side == "BUY")
            if not reduces or qty > abs(held):
                raise _Refusal(110017, "Reduce-only rule not satisfied")
        self._check_order_failure()
        trigger = params.get("triggerPrice")
        order = FakeOrder(
            order_id=self._new_id(),
            client_id=link,
            symbol=symbol,
            side=side,
            type=order_type,
            qty=qty,
            price=_d(params["price"]) if params.get("price") else None,
            trigger_price=_d(trigger) if trigger else None,
            reduce_only=reduce_only,
            status="UNTRIGGERED" if trigger else "NEW",
            category=params["category"],
        )
        self.orders.append(order)
        self._maybe_fill(order)
        return {"orderId": order.order_id, "orderLinkId": order.client_id}

    def _maybe_fill(self, o: FakeOrder) -> None:
        if self.no_fill or o.is_conditional:
            return
        mark = self.prices[o.symbol]
        if o.type == "LIMIT" and o.price is not None:
            crosses = o.price >= mark if o.side == "BUY" else o.price <= mark
            if not crosses:
                return
        signed = o.qty if o.side == "BUY" else -o.qty
        if o.category == "spot":  # coins change hands in the unified wallet
            inst = self.instruments[o.symbol]
            self.wallet[inst.base] = self.wallet.get(inst.base, Decimal(0)) + signed
            self.wallet[inst.quote] = self.wallet.get(inst.quote, Decimal(0)) - signed * mark
            o.filled, o.avg_price, o.status, o.updated_ms = o.qty, mark, "FILLED", _now_ms()
            return
        pos = self.positions.get(o.symbol) or FakePosition(Decimal(0), mark)
        if pos.size == 0 or (pos.size > 0) == (signed > 0):
            # opening or adding: the entry becomes the size-weighted average
            new = pos.size + signed
            pos.entry = (pos.entry * abs(pos.size) + mark * abs(signed)) / abs(new)
            pos.size = new
        else:
            closed = min(abs(signed), abs(pos.size))
            pnl = (mark - pos.entry) * closed * (1 if pos.size > 0 else -1)
            settle = self.instruments[o.symbol].quote
            self.wallet[settle] = self.wallet.get(settle, Decimal(0)) + pnl
            pos.size += signed
            if pos.size != 0 and abs(signed) > closed:
                pos.entry = mark  # flipped through zero
        self.positions[o.symbol] = pos
        o.filled, o.avg_price, o.status, o.updated_ms = o.qty, mark, "FILLED", _now_ms()

    def _cancel(self, params: dict[str, Any]) -> Any:
        self._linear_only(params)
        for o in self.orders:
            if o.is_open and o.symbol == params.get("symbol") and o.category == params["category"]:
                hit = (params.get("orderId") and o.order_id == params["orderId"]) or (
                    params.get("orderLinkId") and o.client_id == params["orderLinkId"]
                )
                if hit:
                    o.status, o.updated_ms = "CANCELLED", _now_ms()
                    return {"orderId": o.order_id, "orderLinkId": o.client_id}
        raise _Refusal(110001, "Order does not exist.")

    def _cancel_all(self, params: dict[str, Any]) -> Any:
        self._linear_only(params)
        narrowed = params.get("symbol") or params.get("settleCoin") or params.get("baseCoin")
        if not narrowed and params["category"] != "spot":
            raise _Refusal(10001, "symbol, settleCoin or baseCoin is required")
        done = []
        for o in self.orders:
            if o.is_open and self._matches(o, params):
                o.status, o.updated_ms = "CANCELLED", _now_ms()
                done.append({"orderId": o.order_id, "orderLinkId": o.client_id})
        return {"list": done, "success": "1"}


# =========================================================================================
# Binance spot
# =========================================================================================


class BinanceBook(_Book):
    kind: Kind = "binance"

    def __init__(self, *, balances: Mapping[str, Num] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.free: dict[str, Decimal] = {}
        self.locked: dict[str, Decimal] = {}
        for asset, amount in (balances if balances is not None else {"USDT": "1000"}).items():
            self.free[asset] = _d(amount)
        # False: a read-only key ("Enable Reading" without "Enable Spot & Margin / Futures
        # Trading"): it reads (USER_DATA), and every TRADE endpoint (order, cancel,
        # countdown: the writes) answers -2015 with HTTP 401, as Binance does
        self.trade_permission = True

    def set_balance(self, asset: str, free: Num, locked: Num = 0) -> None:
        with self.lock:
            self.free[asset], self.locked[asset] = _d(free), _d(locked)

    def balance(self, asset: str) -> Decimal:
        with self.lock:
            return self.free.get(asset, Decimal(0)) + self.locked.get(asset, Decimal(0))

    def _order_failure(self, code: int | None, message: str | None) -> _Refusal:
        if code is None:
            text = message or "An unknown error occured while processing the request."
            return _Refusal(-1000, text, 500)
        return _Refusal(code, message or "order refused by the fake", 400)

    def _reserve(self, o: FakeOrder) -> tuple[str, Decimal]:
        inst = self.instruments[o.symbol]
        if o.side == "SELL":
            return inst.base, o.qty - o.filled
        price = o.price if o.price is not None else self.prices[o.symbol]
        return inst.quote, (o.qty - o.filled) * price

    def _lock_for(self, order: FakeOrder) -> None:
        asset, amount = self._reserve(order)
        self.free[asset] = self.free.get(asset, Decimal(0)) - amount
        self.locked[asset] = self.locked.get(asset, Decimal(0)) + amount

    def _unlock_for(self, order: FakeOrder) -> None:
        asset, amount = self._reserve(order)
        self.free[asset] = self.free.get(asset, Decimal(0)) + amount
        self.locked[asset] = self.locked.get(asset, Decimal(0)) - amount

    # ---- routes ----------------------------------------------------------------------------
    def routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], Any]]:
        return {
            ("GET", "/api/v3/ping"): lambda _: {},
            ("GET", "/api/v3/time"): lambda _: {"serverTime": _now_ms()},
            ("GET", "/api/v3/exchangeInfo"): self._exchange_info,
            ("GET", "/api/v3/ticker/24hr"): self._ticker_24hr,
            ("GET", "/api/v3/ticker/price"): self._ticker_price,
            ("GET", "/api/v3/account"): self._account,
            ("POST", "/api/v3/order"): self._create,
            ("GET", "/api/v3/order"): self._get_order,
            ("DELETE", "/api/v3/order"): self._cancel,
            ("GET", "/api/v3/openOrders"): self._open_orders,
            ("DELETE", "/api/v3/openOrders"): self._cancel_all,
            ("GET", "/api/v3/allOrders"): self._all_orders,
        }

    _PRIVATE = ("/api/v3/account", "/api/v3/order", "/api/v3/openOrders", "/api/v3/allOrders")

    def is_private(self, path: str) -> bool:
        return path in self._PRIVATE

    def ok(self, result: Any) -> _Answer:
        return _Answer(200, result)

    def refuse(self, refusal: _Refusal) -> _Answer:
        status = refusal.http_status if refusal.http_status != 200 else 400
        return _Answer(status, {"code": refusal.code, "msg": refusal.message})

    def rate_limited_answer(self) -> _Answer:
        msg = "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute."
        return self.refuse(_Refusal(-1003, msg, 429))

    def authenticate(self, request: web.Request, payload: str) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key or key != self.api_key:
            raise _Refusal(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        unsigned, sep, signature = payload.rpartition("&signature=")
        if not sep or not signature:
            raise _Refusal(-1102, "Mandatory parameter 'signature' was not sent.", 400)
        if "timestamp=" not in unsigned:
            raise _Refusal(-1102, "Mandatory parameter 'timestamp' was not sent.", 400)
        want = hmac.new(self.secret.encode(), unsigned.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, signature):
            raise _Refusal(-1022, "Signature for this request is not valid.", 400)
        if request.method != "GET" and not self.trade_permission:
            raise _Refusal(-2015, "Invalid API-key, IP, or permissions for action.", 401)

    # ---- public ------------------------------------------------------------------------
    def _exchange_info(self, _: dict[str, Any]) -> Any:
        symbols = []
        for inst in self.instruments.values():
            symbols.append(
                {
                    "symbol": inst.symbol,
                    "status": "TRADING",
                    "baseAsset": inst.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": inst.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": True,
                    "cancelReplaceAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _s(inst.tick),
                            "maxPrice": "1000000",
                            "tickSize": _s(inst.tick),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": _s(inst.min_qty),
                            "maxQty": "9000000",
                            "stepSize": _s(inst.qty_step),
                        },
                        {"filterType": "NOTIONAL", "minNotional": "1", "maxNotional": "9000000"},
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": _now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _wanted_symbols(self, params: dict[str, Any]) -> list[str]:
        if "symbols" in params:
            return list(json.loads(params["symbols"]))
        if "symbol" in params:
            return [params["symbol"]]
        return list(self.prices)

    def _ticker_24hr(self, params: dict[str, Any]) -> Any:
        now = _now_ms()
        rows = []
        for sym in self._wanted_symbols(params):
            if sym not in self.prices:
                raise _Refusal(-1121, "Invalid symbol.")
            p = _s(self.prices[sym])
            rows.append(
                {
                    "symbol": sym,
                    "priceChange": "0",
                    "priceChangePercent": "0",
                    "weightedAvgPrice": p,
                    "prevClosePrice": p,
                    "lastPrice": p,
                    "lastQty": "1",
                    "bidPrice": p,
                    "bidQty": "1",
                    "askPrice": p,
                    "askQty": "1",
                    "openPrice": p,
                    "highPrice": p,
                    "lowPrice": p,
                    "volume": "0",
                    "quoteVolume": "0",
                    "openTime": now - 86_400_000,
                    "closeTime": now,
                    "firstId": 1,
                    "lastId": 1,
                    "count": 1,
                }
            )
        return rows[0] if "symbol" in params else rows

    def _ticker_price(self, params: dict[str, Any]) -> Any:
        rows = [{"symbol": s, "price": _s(self.prices[s])} for s in self._wanted_symbols(params)]
        return rows[0] if "symbol" in params else rows

    # ---- account -----------------------------------------------------------------------
    def _account(self, params: dict[str, Any]) -> Any:
        assets = sorted(set(self.free) | set(self.locked))
        balances = [
            {
                "asset": a,
                "free": _s(self.free.get(a, Decimal(0))),
                "locked": _s(self.locked.get(a, Decimal(0))),
            }
            for a in assets
        ]
        if params.get("omitZeroBalances") == "true":
            balances = [b for b in balances if b["free"] != "0" or b["locked"] != "0"]
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": _now_ms(),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 1,
        }

    # ---- orders ------------------------------------------------------------------------
    def _row(self, o: FakeOrder, *, full: bool = False) -> dict[str, Any]:
        binance_type = o.type
        if o.is_conditional:
            binance_type = "STOP_LOSS_LIMIT" if o.price is not None else "STOP_LOSS"
        row: dict[str, Any] = {
            "symbol": o.symbol,
            "orderId": int(o.order_id),
            "orderListId": -1,
            "clientOrderId": o.client_id,
            "price": _s(o.price) if o.price is not None else "0.00000000",
            "origQty": _s(o.qty),
            "executedQty": _s(o.filled),
            "cummulativeQuoteQty": _s(o.filled * o.avg_price),
            "status": "CANCELED"
            if o.status == "CANCELLED"
            else o.status.replace("UNTRIGGERED", "NEW"),
            "timeInForce": "GTC",
            "type": binance_type,
            "side": o.side,
            "stopPrice": _s(o.trigger_price) if o.trigger_price is not None else "0.00000000",
            "icebergQty": "0.00000000",
            "time": o.created_ms,
            "updateTime": o.updated_ms,
            "isWorking": not o.is_conditional,
            "workingTime": o.created_ms,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if full:
            row["transactTime"] = o.updated_ms
            fills = []
            if o.filled:
                fills = [
                    {
                        "price": _s(o.avg_price),
                        "qty": _s(o.filled),
                        "commission": "0",
                        "commissionAsset": self.instruments[o.symbol].quote,
                        "tradeId": 1,
                    }
                ]
            row["fills"] = fills
        return row

    def _find(self, params: dict[str, Any]) -> FakeOrder:
        for o in self.orders:
            if o.symbol != params.get("symbol"):
                continue
            if "orderId" in params and o.order_id == str(params["orderId"]):
                return o
            if params.get("origClientOrderId") and o.client_id == params["origClientOrderId"]:
                return o
        raise _Refusal(-2013, "Order does not exist.")

    def _need_symbol(self, params: dict[str, Any]) -> str:
        symbol = params.get("symbol")
        if not symbol:
            raise _Refusal(-1102, "Mandatory parameter 'symbol' was not sent.")
        if symbol not in self.instruments:
            raise _Refusal(-1121, "Invalid symbol.")
        return symbol

    def _create(self, params: dict[str, Any]) -> Any:
        self.order_requests.append(dict(params))
        symbol = self._need_symbol(params)
        side, order_type = params.get("side"), params.get("type")
        if side not in ("BUY", "SELL") or order_type not in ("MARKET", "LIMIT"):
            raise _Refusal(-1116, "Invalid orderType.")
        qty = _d(params.get("quantity", "0"))
        if not self._round_ok(symbol, qty):
            raise _Refusal(-1013, "Filter failure: LOT_SIZE")
        client_id = params.get("newClientOrderId") or f"fake-{uuid.uuid4().hex[:16]}"
        if any(o.client_id == client_id and o.is_open for o in self.orders):
            raise _Refusal(-2010, "Duplicate order sent.")
        price = _d(params["price"]) if order_type == "LIMIT" else None
        order = FakeOrder(
            order_id=self._new_id(),
            client_id=client_id,
            symbol=symbol,
            side=side,
            type=order_type,
            qty=qty,
            price=price,
        )
        asset, need = self._reserve(order)
        if self.free.get(asset, Decimal(0)) < need:
            raise _Refusal(-2010, "Account has insufficient balance for requested action.")
        self._check_order_failure()
        self._lock_for(order)
        self.orders.append(order)
        self._maybe_fill(order)
        return self._row(order, full=True)

    def _maybe_fill(self, o: FakeOrder) -> None:
        if self.no_fill:
            return
        mark = self.prices[o.symbol]
        crosses = o.price is None or (o.price >= mark if o.side == "BUY" else o.price <= mark)
        if o.type == "LIMIT" and not crosses:
            return
        self._unlock_for(o)
        inst = self.instruments[o.symbol]
        sign = 1 if o.side == "BUY" else -1
        self.free[inst.base] = self.free.get(inst.base, Decimal(0)) + sign * o.qty
        self.free[inst.quote] = self.free.get(inst.quote, Decimal(0)) - sign * o.qty * mark
        o.filled, o.avg_price, o.status, o.updated_ms = o.qty, mark, "FILLED", _now_ms()

    def _get_order(self, params: dict[str, Any]) -> Any:
        self._need_symbol(params)
        return self._row(self._find(params))

    def _cancelled_row(self, o: FakeOrder) -> dict[str, Any]:
        self._unlock_for(o)
        o.status, o.updated_ms = "CANCELLED", _now_ms()
        row = self._row(o)
        row["origClientOrderId"] = row["clientOrderId"]
        row["clientOrderId"] = f"cancel-{uuid.uuid4().hex[:12]}"
        row["transactTime"] = o.updated_ms
        return row

    def _cancel(self, params: dict[str, Any]) -> Any:
        self._need_symbol(params)
        try:
            order = self._find(params)
        except _Refusal:
            raise _Refusal(-2011, "Unknown order sent.") from None
        if not order.is_open:
            raise _Refusal(-2011, "Unknown order sent.")
        return self._cancelled_row(order)

    def _open_orders(self, params: dict[str, Any]) -> Any:
        symbol = params.get("symbol")
        return [self._row(o) for o in self.orders if o.is_open and symbol in (None, o.symbol)]

    def _cancel_all(self, params: dict[str, Any]) -> Any:
        symbol = self._need_symbol(params)
        rows = [self._cancelled_row(o) for o in self.orders if o.is_open and o.symbol == symbol]
        if not rows:
            # the real venue answers this, not an empty list, when nothing was open
            raise _Refusal(-2011, "Unknown order sent.")
        return rows

    def _all_orders(self, params: dict[str, Any]) -> Any:
        symbol = self._need_symbol(params)
        rows = [self._row(o) for o in self.orders if o.symbol == symbol]
        return rows[-int(params.get("limit", 500)) :]


# =========================================================================================
# HTTP plumbing
# =========================================================================================

Book = Any  # BybitBook | BinanceBook | OkxBook (tests/fakes/okx.py)


def make_book(kind: Kind, **kwargs: Any) -> Book:
    if kind == "bybit":
        return BybitBook(**kwargs)
    if kind == "binance":  # spot, and USDⓈ-M futures (fapi) beside it
        from fakes.binance_usdm import BinanceUsdmBook

        return BinanceUsdmBook(**kwargs)
    if kind == "okx":
        from fakes.okx import OkxBook

        return OkxBook(**kwargs)
    if kind == "kraken":
        from fakes.kraken import KrakenBook

        return KrakenBook(**kwargs)
    if kind == "gate":
        from fakes.gate import GateBook

        return GateBook(**kwargs)
    if kind == "bitget":
        from fakes.bitget import BitgetBook

        return BitgetBook(**kwargs)
    raise ValueError(f"unknown fake exchange kind {kind!r} (bybit or binance)")


class FakeExchange:
    """One fake venue on 127.0.0.1, port chosen by the OS. Use as an async context manager
    inside a test's event loop; `book` is the programmable state."""

    def __init__(self, kind: Kind = "bybit", **book_kwargs: Any) -> None:
        self.kind = kind
        self.book: Book = make_book(kind, **book_kwargs)
        self._routes = self.book.routes()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self, port: int = 0) -> FakeExchange:
        """Listen on 127.0.0.1:`port` (0: the OS picks); a stopped fake restarts on its old port
        with `start(fake.port)`, as a venue back from an outage."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeExchange:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # ---- what a rollbot config needs -------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def urls(self) -> dict[str, str]:
        """For CryptoVenueConfig.urls: "*" moves every ccxt api url onto this host."""
        return {"*": self.url}

    @property
    def api_key(self) -> str:
        return self.book.api_key

    @property
    def secret(self) -> str:
        return self.book.secret

    def venue_config(self, name: str | None = None, **overrides: Any) -> dict[str, Any]:
        """A [[venues]] entry (as a dict) pointing at this fake; merge `overrides`."""
        cfg: dict[str, Any] = {
            "kind": "crypto",
            "name": name or f"fake-{self.kind}",
            "exchange": self.kind,
            "market": "derivatives" if self.kind == "bybit" else "spot",
            "sandbox": True,
            "quote": "USDT",
            "api_key_env": f"ROLLBOT_FAKE_{self.kind.upper()}_KEY",
            "secret_env": f"ROLLBOT_FAKE_{self.kind.upper()}_SECRET",
            "urls": self.urls,
            "timeout_s": 5,
        }
        if self.kind == "binance":
            cfg["symbols"] = [f"{i.base}/{i.quote}" for i in self.book.instruments.values()]
        if self.kind == "bitget":  # ccxt's bitget sandbox is demo trading: other products
            cfg["password_env"], cfg["sandbox"] = "ROLLBOT_FAKE_BITGET_PASSPHRASE", False
            cfg["market"] = "derivatives"
        if self.kind == "okx":
            cfg["password_env"] = "ROLLBOT_FAKE_OKX_PASSPHRASE"
            cfg["market"] = "all"
        if self.kind in ("kraken", "gate"):  # spot here; kraken has no testnet in ccxt
            cfg["market"], cfg["sandbox"] = "spot", self.kind == "gate"
        cfg.update(overrides)
        return cfg

    def env(self, name: str | None = None, **overrides: Any) -> dict[str, str]:
        """Environment variables holding the credentials named by venue_config()."""
        cfg = self.venue_config(name, **overrides)
        env = {cfg["api_key_env"]: self.api_key, cfg["secret_env"]: self.secret}
        if cfg.get("password_env"):
            env[cfg["password_env"]] = self.book.passphrase
        return env

    def venue_toml(self, name: str | None = None, **overrides: Any) -> str:
        """The same entry as TOML text, to append to a rollbot.toml."""
        cfg = self.venue_config(name, **overrides)
        lines = ["[[venues]]"]
        for key, value in cfg.items():
            if key == "urls":
                inner = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"urls = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"

    # ---- request handling ------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        raw_query = request.rel_url.raw_query_string
        body = await request.text() if request.can_read_body else ""
        params = self._params(request, raw_query, body)
        key = (request.method, request.path)
        book = self.book
        with book.lock:
            record = RequestRecord(request.method, request.path, params)
            book.requests.append(record)
            handler = self._routes.get(key)
            dynamic = getattr(book, "dynamic", None)  # paths with an id in them (gate)
            if handler is None and dynamic is not None:
                handler = dynamic(request.method, request.path)
            if handler is None:
                book.unknown.append(f"{request.method} {request.path}")
                answer = _Answer(404, {"error": "no such route in the fake", "path": request.path})
            else:
                answer = self._answer(request, handler, params, raw_query, body)
            record.status = answer.status
        return web.json_response(answer.body, status=answer.status)

    def _answer(
        self,
        request: web.Request,
        handler: Callable[[dict[str, Any]], Any],
        params: dict[str, Any],
        raw_query: str,
        body: str,
    ) -> _Answer:
        book = self.book
        if book._take_rate_limit(request.path):
            return book.rate_limited_answer()
        if request.path in book.malformed:  # a venue bug: success, with data nobody expects
            return book.ok(book.malformed[request.path])
        try:
            if book.is_private(request.path):
                payload = body if request.method == "POST" else raw_query
                book.authenticate(request, payload)
            return book.ok(handler(params))
        except _Refusal as refusal:
            return book.refuse(refusal)

    def _params(self, request: web.Request, raw_query: str, body: str) -> dict[str, Any]:
        params: dict[str, Any] = dict(parse_qsl(raw_query, keep_blank_values=True))
        if body:
            if body.lstrip().startswith("["):  # a batch (OKX cancel-algos, batch orders)
                params["_list"] = json.loads(body)
            elif request.content_type == "application/json" or body.lstrip().startswith("{"):
                params.update(json.loads(body))
            else:
                params.update(parse_qsl(body, keep_blank_values=True))
        params.pop("signature", None)
        params.pop("timestamp", None)
        params.pop("recvWindow", None)
        return params


class RunningFakeExchange:
    """A FakeExchange serving from its own thread and event loop (see start_fake_exchange)."""

    def __init__(
        self, fake: FakeExchange, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ):
        self.fake = fake
        self._loop = loop
        self._thread = thread

    @property
    def book(self) -> Book:
        return self.fake.book

    @property
    def url(self) -> str:
        return self.fake.url

    @property
    def urls(self) -> dict[str, str]:
        return self.fake.urls

    @property
    def api_key(self) -> str:
        return self.fake.api_key

    @property
    def secret(self) -> str:
        return self.fake.secret

    def venue_config(self, name: str | None = None, **overrides: Any) -> dict[str, Any]:
        return self.fake.venue_config(name, **overrides)

    def venue_toml(self, name: str | None = None, **overrides: Any) -> str:
        return self.fake.venue_toml(name, **overrides)

    def env(self, name: str | None = None, **overrides: Any) -> dict[str, str]:
        return self.fake.env(name, **overrides)

    def stop(self, timeout: float = 5) -> None:
        if not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> RunningFakeExchange:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_fake_exchange(kind: Kind = "bybit", **book_kwargs: Any) -> RunningFakeExchange:
    """Start a fake venue in a daemon thread and return once it accepts connections.

    `book_kwargs` seed the book: bybit takes positions={"BTCUSDT": "0.5"},
    wallet={"USDT": "100000"}; binance takes balances={"BTC": "0.5"}; both take prices,
    instruments, api_key, secret. Edit `.book` afterwards for orders and knobs."""
    fake = FakeExchange(kind, **book_kwargs)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(fake.start())
        except BaseException as exc:  # handed to the starting thread
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=serve, name=f"fake-{kind}", daemon=True)
    thread.start()
    ready.wait(10)
    if failure:
        raise failure[0]
    return RunningFakeExchange(fake, loop, thread)


FAST_BACKOFF = (0.01, 0.01, 0.01)


def fast_venue(
    fake: FakeExchange | RunningFakeExchange,
    exchange: str,
    pacing_ms: float,
    secret: str | None = None,
    **overrides: Any,
) -> Any:
    """A real CryptoVenue on this fake, fast: ccxt's limiter on at `pacing_ms` (1/100 of the
    venue's real spacing), millisecond backoff, and no 250 ms drain on close (ccxt waits for TLS
    transports; the fake is plain HTTP)."""
    from rollbot.brokers.crypto.venue import CryptoVenue
    from rollbot.config import CryptoVenueConfig

    cfg = CryptoVenueConfig(**fake.venue_config(exchange, **overrides))
    venue = CryptoVenue(
        cfg,
        api_key=fake.api_key,
        secret=secret or fake.secret,
        password=getattr(fake.book, "passphrase", None),
        backoff_s=FAST_BACKOFF,
        rate_limit_ms=pacing_ms,
    )
    venue.exchange.timeout_on_exit = 0
    return venue
