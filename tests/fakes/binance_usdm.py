"""A loopback fake of Binance USDⓈ-M futures (fapi) beside the spot fake, written from Binance's
derivatives documentation (developers.binance.com/docs/derivatives/usds-margined-futures):

* Signing as on spot: HMAC-SHA256 of the query string (and body) in ``signature``, the key in
  ``X-MBX-APIKEY``; -2015 / -1022 otherwise.
* Plain orders: ``/fapi/v1/order`` (POST, GET, DELETE), ``/fapi/v1/openOrders``,
  ``DELETE /fapi/v1/allOpenOrders`` (symbol required).
* Conditional orders (STOP, STOP_MARKET, TAKE_PROFIT, TAKE_PROFIT_MARKET,
  TRAILING_STOP_MARKET) live in the algo service since the 2025 migration: ``POST/DELETE
  /fapi/v1/algoOrder`` (``algoId``), ``GET /fapi/v1/openAlgoOrders``, ``DELETE
  /fapi/v1/algoOpenOrders`` (symbol required). ``openOrders`` and ``allOpenOrders`` do not
  see or touch them.
* Positions ``/fapi/v3/positionRisk`` (``positionSide`` BOTH, or LONG/SHORT in hedge mode);
  account ``/fapi/v3/account`` whose ``assets[].marginBalance`` = walletBalance +
  unrealizedProfit. In hedge mode ``reduceOnly`` is refused (-1106) and ``positionSide`` is
  required (-4061).
* ``POST /fapi/v1/countdownCancelAll`` (symbol and countdownTime in ms required, 0 stops it):
  one countdown per symbol, answered ``{"symbol", "countdownTime"}``; each call replaces that
  symbol's countdown, and when it lapses unrefreshed the symbol's open orders are cancelled.
  ``countdown_scale`` is handed to each symbol's FakeCountdown (0.01: a 30 s countdown lapses
  after 0.3 s of wall time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fakes.exchange import BinanceBook, FakeCountdown, Num, _d, _now_ms, _Refusal, _s

ALGO_TYPES = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")


@dataclass
class FuturesOrder:
    order_id: int
    symbol: str
    side: str
    type: str
    qty: Decimal
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    position_side: str = "BOTH"
    reduce_only: bool = False
    client_id: str = ""
    status: str = "NEW"
    filled: Decimal = Decimal(0)
    avg: Decimal = Decimal(0)
    created: int = field(default_factory=_now_ms)

    @property
    def algo(self) -> bool:
        return self.type in ALGO_TYPES


class BinanceUsdmBook(BinanceBook):
    """Spot (inherited) plus the USDⓈ-M futures account."""

    def __init__(
        self,
        *,
        futures_wallet: Mapping[str, Num] | None = None,
        hedge_mode: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.futures_wallet = {k: _d(v) for k, v in (futures_wallet or {"USDT": "10000"}).items()}
        self.hedge_mode = hedge_mode
        self.fpos: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}  # (sym, side) -> amt, entry
        self.futures_orders: list[FuturesOrder] = []
        self.countdown_scale = 1.0  # for each symbol's countdown (FakeCountdown.scale)
        self.countdowns: dict[str, FakeCountdown] = {}  # one per symbol
        self.countdown_calls: list[tuple[str, int]] = []  # (symbol, countdownTime ms)

    # ---- book --------------------------------------------------------------------------
    def set_futures_position(
        self, symbol: str, amount: Num, entry: Num | None = None, side: str = "BOTH"
    ) -> None:
        with self.lock:
            px = _d(entry) if entry is not None else self.prices[symbol]
            self.fpos[(symbol, side)] = (_d(amount), px)

    def futures_position(self, symbol: str, side: str = "BOTH") -> Decimal:
        with self.lock:
            return self.fpos.get((symbol, side), (Decimal(0), Decimal(0)))[0]

    def add_futures_order(
        self,
        symbol: str,
        side: str,
        qty: Num,
        type_: str = "LIMIT",
        *,
        price: Num | None = None,
        trigger_price: Num | None = None,
        position_side: str = "BOTH",
        reduce_only: bool = False,
    ) -> FuturesOrder:
        with self.lock:
            order = FuturesOrder(
                order_id=next(self._ids) + 8000000,
                symbol=symbol,
                side=side,
                type=type_,
                qty=_d(qty),
                price=_d(price) if price is not None else None,
                trigger_price=_d(trigger_price) if trigger_price is not None else None,
                position_side=position_side,
                reduce_only=reduce_only,
            )
            self.futures_orders.append(order)
            return order

    def live_futures(self, *, algo: bool | None = None) -> list[FuturesOrder]:
        with self.lock:
            return [
                o
                for o in self.futures_orders
                if o.status == "NEW" and (algo is None or o.algo is algo)
            ]

    def _upl(self, symbol: str, side: str) -> Decimal:
        amount, entry = self.fpos[(symbol, side)]
        return (self.prices[symbol] - entry) * amount

    # ---- routes ------------------------------------------------------------------------
    def routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], Any]]:
        f = "/fapi"
        return {
            **super().routes(),
            ("GET", f"{f}/v1/ping"): lambda _: {},
            ("GET", f"{f}/v1/time"): lambda _: {"serverTime": _now_ms()},
            ("GET", f"{f}/v1/exchangeInfo"): self._f_exchange_info,
            ("GET", f"{f}/v1/ticker/24hr"): self._f_ticker_24hr,
            ("GET", f"{f}/v1/ticker/price"): self._f_ticker_price,
            ("GET", f"{f}/v3/positionRisk"): self._f_position_risk,
            ("GET", f"{f}/v3/account"): self._f_account,
            ("GET", f"{f}/v1/leverageBracket"): self._f_brackets,
            ("GET", f"{f}/v1/positionSide/dual"): lambda _: {"dualSidePosition": self.hedge_mode},
            ("GET", f"{f}/v1/openOrders"): self._f_open_orders,
            ("GET", f"{f}/v1/openAlgoOrders"): self._f_open_algo,
            ("DELETE", f"{f}/v1/allOpenOrders"): self._f_cancel_all,
            ("DELETE", f"{f}/v1/algoOpenOrders"): self._f_cancel_all_algo,
            ("POST", f"{f}/v1/order"): self._f_create,
            ("GET", f"{f}/v1/order"): self._f_get_order,
            ("DELETE", f"{f}/v1/order"): self._f_cancel,
            ("DELETE", f"{f}/v1/algoOrder"): self._f_cancel_algo,
            ("GET", f"{f}/v1/allOrders"): self._f_all_orders,
            ("POST", f"{f}/v1/countdownCancelAll"): self._f_countdown,
        }

    def is_private(self, path: str) -> bool:
        if path.startswith("/fapi/"):
            public = ("/ping", "/time", "/exchangeInfo", "/ticker/")
            return not any(p in path for p in public)
        return super().is_private(path)

    # ---- public --------------------------------------------------------------------------
    def _f_exchange_info(self, _: dict[str, Any]) -> Any:
        symbols = []
        for inst in self.instruments.values():
            symbols.append(
                {
                    "symbol": inst.symbol,
                    "pair": inst.symbol,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "baseAsset": inst.base,
                    "quoteAsset": inst.quote,
                    "marginAsset": inst.quote,
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "triggerProtect": "0.0500",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _s(inst.tick),
                            "maxPrice": "1000000",
                            "tickSize": _s(inst.tick),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "stepSize": _s(inst.qty_step),
                            "maxQty": "1000",
                            "minQty": _s(inst.min_qty),
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "stepSize": _s(inst.qty_step),
                            "maxQty": "120",
                            "minQty": _s(inst.min_qty),
                        },
                        {"filterType": "MIN_NOTIONAL", "notional": "5"},
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": _now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True}],
            "symbols": symbols,
        }

    def _f_rows(self, params: dict[str, Any]) -> list[str]:
        want = params.get("symbol")
        return [s for s in self.instruments if s in self.prices and (want is None or s == want)]

    def _f_ticker_24hr(self, params: dict[str, Any]) -> Any:
        rows = [
            {
                "symbol": s,
                "lastPrice": _s(self.prices[s]),
                "openPrice": _s(self.prices[s]),
                "highPrice": _s(self.prices[s]),
                "lowPrice": _s(self.prices[s]),
                "volume": "0",
                "quoteVolume": "0",
                "closeTime": _now_ms(),
            }
            for s in self._f_rows(params)
        ]
        return rows[0] if params.get("symbol") else rows

    def _f_ticker_price(self, params: dict[str, Any]) -> Any:
        rows = [
            {"symbol": s, "price": _s(self.prices[s]), "time": _now_ms()}
            for s in self._f_rows(params)
        ]
        return rows[0] if params.get("symbol") else rows

    # ---- account -------------------------------------------------------------------------
    def _f_brackets(self, params: dict[str, Any]) -> Any:
        bracket = {
            "bracket": 1,
            "initialLeverage": 125,
            "notionalCap": 50000,
            "notionalFloor": 0,
            "maintMarginRatio": 0.004,
            "cum": 0.0,
        }
        return [
            {"symbol": s, "notionalCoef": 1.0, "brackets": [bracket]}
            for s in self.instruments
            if not params.get("symbol") or params["symbol"] == s
        ]

    def _f_position_risk(self, params: dict[str, Any]) -> Any:
        rows = []
        for (symbol, side), (amount, entry) in self.fpos.items():
            if amount == 0 or (params.get("symbol") and params["symbol"] != symbol):
                continue
            mark = self.prices[symbol]
            rows.append(
                {
                    "symbol": symbol,
                    "positionSide": side,
                    "positionAmt": _s(amount),
                    "entryPrice": _s(entry),
                    "breakEvenPrice": _s(entry),
                    "markPrice": _s(mark),
                    "unRealizedProfit": _s(self._upl(symbol, side)),
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": _s(amount * mark),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": "0",
                    "maintMargin": "0",
                    "positionInitialMargin": "0",
                    "openOrderInitialMargin": "0",
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": _now_ms(),
                }
            )
        return rows

    def _f_account(self, _: dict[str, Any]) -> Any:
        upl = sum((self._upl(s, side) for s, side in self.fpos), Decimal(0))
        assets = []
        for asset, wallet in self.futures_wallet.items():
            pnl = upl if asset == "USDT" else Decimal(0)
            assets.append(
                {
                    "asset": asset,
                    "walletBalance": _s(wallet),
                    "unrealizedProfit": _s(pnl),
                    "marginBalance": _s(wallet + pnl),
                    "maintMargin": "0",
                    "initialMargin": "0",
                    "positionInitialMargin": "0",
                    "openOrderInitialMargin": "0",
                    "crossWalletBalance": _s(wallet),
                    "crossUnPnl": _s(pnl),
                    "availableBalance": _s(wallet + pnl),
                    "maxWithdrawAmount": _s(wallet),
                    "updateTime": _now_ms(),
                }
            )
        total = sum(self.futures_wallet.values(), Decimal(0))
        return {
            "totalInitialMargin": "0",
            "totalMaintMargin": "0",
            "totalWalletBalance": _s(total),
            "totalUnrealizedProfit": _s(upl),
            "totalMarginBalance": _s(total + upl),
            "availableBalance": _s(total + upl),
            "maxWithdrawAmount": _s(total),
            "assets": assets,
            "positions": [],
        }

    # ---- orders --------------------------------------------------------------------------
    def _f_row(self, o: FuturesOrder) -> dict[str, Any]:
        return {
            "orderId": o.order_id,
            "symbol": o.symbol,
            "status": o.status,
            "clientOrderId": o.client_id,
            "price": _s(o.price) if o.price is not None else "0",
            "avgPrice": _s(o.avg),
            "origQty": _s(o.qty),
            "executedQty": _s(o.filled),
            "cumQuote": _s(o.filled * o.avg),
            "timeInForce": "GTC",
            "type": o.type,
            "origType": o.type,
            "reduceOnly": o.reduce_only,
            "closePosition": False,
            "side": o.side,
            "positionSide": o.position_side,
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "time": o.created,
            "updateTime": _now_ms(),
        }

    def _f_algo_row(self, o: FuturesOrder) -> dict[str, Any]:
        return {
            "algoId": o.order_id,
            "clientAlgoId": o.client_id,
            "algoType": "CONDITIONAL",
            "orderType": o.type,
            "symbol": o.symbol,
            "side": o.side,
            "positionSide": o.position_side,
            "timeInForce": "GTC",
            "quantity": _s(o.qty),
            "algoStatus": o.status,
            "triggerPrice": _s(o.trigger_price) if o.trigger_price is not None else "0",
            "price": _s(o.price) if o.price is not None else "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE",
            "closePosition": False,
            "priceProtect": False,
            "reduceOnly": o.reduce_only,
            "createTime": o.created,
            "updateTime": _now_ms(),
            "triggerTime": 0,
            "goodTillDate": 0,
        }

    def _mine(self, o: FuturesOrder, params: dict[str, Any]) -> bool:
        return not params.get("symbol") or params["symbol"] == o.symbol

    def _f_open_orders(self, params: dict[str, Any]) -> Any:
        return [self._f_row(o) for o in self.live_futures(algo=False) if self._mine(o, params)]

    def _f_open_algo(self, params: dict[str, Any]) -> Any:
        return [self._f_algo_row(o) for o in self.live_futures(algo=True) if self._mine(o, params)]

    def _need(self, params: dict[str, Any]) -> str:
        symbol = params.get("symbol")
        if not symbol:
            raise _Refusal(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        return str(symbol)

    def _f_cancel_all(self, params: dict[str, Any]) -> Any:
        symbol = self._need(params)
        for o in self.live_futures(algo=False):
            if o.symbol == symbol:
                o.status = "CANCELED"
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _f_cancel_all_algo(self, params: dict[str, Any]) -> Any:
        symbol = self._need(params)
        for o in self.live_futures(algo=True):
            if o.symbol == symbol:
                o.status = "CANCELED"
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _f_find(self, params: dict[str, Any], *, algo: bool) -> FuturesOrder:
        key = "algoId" if algo else "orderId"
        cid = params.get("clientAlgoId" if algo else "origClientOrderId")
        for o in self.futures_orders:
            if o.algo is not algo:
                continue
            if (params.get(key) and str(o.order_id) == str(params[key])) or (
                cid and o.client_id == cid
            ):
                return o
        raise _Refusal(
            -2011 if not algo else -2013,
            "Unknown order sent." if not algo else "Order does not exist.",
        )

    def _f_cancel(self, params: dict[str, Any]) -> Any:
        o = self._f_find(params, algo=False)
        if o.status != "NEW":
            raise _Refusal(-2011, "Unknown order sent.")
        o.status = "CANCELED"
        return self._f_row(o)

    def _f_cancel_algo(self, params: dict[str, Any]) -> Any:
        o = self._f_find(params, algo=True)
        if o.status != "NEW":
            raise _Refusal(-2011, "Unknown order sent.")
        o.status = "CANCELED"
        return {"algoId": o.order_id, "clientAlgoId": o.client_id, "code": "200", "msg": "success"}

    def _f_get_order(self, params: dict[str, Any]) -> Any:
        self._need(params)
        return self._f_row(self._f_find(params, algo=False))

    def _f_all_orders(self, params: dict[str, Any]) -> Any:
        self._need(params)
        return [self._f_row(o) for o in self.futures_orders if not o.algo and self._mine(o, params)]

    def _f_create(self, params: dict[str, Any]) -> Any:
        self.order_requests.append(dict(params))
        symbol = self._need(params)
        if symbol not in self.instruments:
            raise _Refusal(-1121, "Invalid symbol.")
        side, type_ = params.get("side"), params.get("type")
        if type_ in ALGO_TYPES:
            raise _Refusal(
                -4120,
                "Order type not supported for this endpoint."
                " Please use the Algo Order API endpoints instead.",
            )
        if side not in ("BUY", "SELL") or type_ not in ("MARKET", "LIMIT"):
            raise _Refusal(-1116, "Invalid orderType.")
        qty = _d(str(params.get("quantity", "0")))
        if not self._round_ok(symbol, qty):
            raise _Refusal(-1111, "Precision is over the maximum defined for this asset.")
        reduce_only = str(params.get("reduceOnly", "false")).lower() == "true"
        position_side = str(params.get("positionSide") or "BOTH")
        if self.hedge_mode:
            if position_side not in ("LONG", "SHORT"):
                raise _Refusal(-4061, "Order's position side does not match user's setting.")
            if "reduceOnly" in params:
                raise _Refusal(-1106, "Parameter 'reduceOnly' sent when not required.")
        elif position_side != "BOTH":
            raise _Refusal(-4061, "Order's position side does not match user's setting.")
        held = self.futures_position(symbol, position_side)
        if reduce_only and not (
            (held > 0 and side == "SELL" and qty <= held)
            or (held < 0 and side == "BUY" and qty <= -held)
        ):
            raise _Refusal(-2022, "ReduceOnly Order is rejected.")
        cid = str(params.get("newClientOrderId", ""))
        if cid and any(o.client_id == cid for o in self.futures_orders):
            raise _Refusal(-4116, "ClientOrderId is duplicated.")
        self._check_order_failure()
        order = FuturesOrder(
            order_id=next(self._ids) + 9000000,
            symbol=symbol,
            side=str(side),
            type=str(type_),
            qty=qty,
            price=_d(str(params["price"])) if params.get("price") else None,
            position_side=position_side,
            reduce_only=reduce_only,
            client_id=cid,
        )
        self.futures_orders.append(order)
        if type_ == "MARKET" and not self.no_fill:
            mark = self.prices[symbol]
            amount, entry = self.fpos.get((symbol, position_side), (Decimal(0), mark))
            # hedge mode: a LONG leg's amount is positive, a SHORT leg's negative
            amount += qty if side == "BUY" else -qty
            self.fpos[(symbol, position_side)] = (amount, entry)
            order.status, order.filled, order.avg = "FILLED", qty, mark
        return self._f_row(order)

    # ---- the dead-man's switch -----------------------------------------------------------
    def _f_countdown(self, params: dict[str, Any]) -> Any:
        symbol = self._need(params)
        raw = params.get("countdownTime")
        if raw in (None, ""):
            raise _Refusal(
                -1102,
                "Mandatory parameter 'countdownTime' was not sent, was empty/null, or malformed.",
            )
        try:
            ms = int(str(raw))
        except ValueError:
            raise _Refusal(
                -1100, "Illegal characters found in parameter 'countdownTime'."
            ) from None
        if ms < 0:
            raise _Refusal(-1100, "Illegal characters found in parameter 'countdownTime'.")
        self.countdown_calls.append((symbol, ms))
        countdown = self.countdowns.get(symbol)
        if countdown is None:
            countdown = FakeCountdown(self.lock, lambda: self._lapse(symbol))
            self.countdowns[symbol] = countdown
        countdown.scale = self.countdown_scale
        countdown.arm(ms / 1000)
        return {"symbol": symbol, "countdownTime": str(ms)}

    def _lapse(self, symbol: str) -> None:  # the symbol's open (non-algo) orders
        for o in self.futures_orders:
            if o.symbol == symbol and o.status == "NEW" and not o.algo:
                o.status = "CANCELED"

    def stop_countdowns(self) -> None:
        for countdown in self.countdowns.values():
            countdown.stop()
