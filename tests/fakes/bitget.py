"""A loopback fake of Bitget's v2 REST API for USDT-margined perpetuals (productType
USDT-FUTURES), written from Bitget's documentation (bitget.com/api-doc): ``ACCESS-KEY``,
``ACCESS-SIGN`` = base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath[?query] + body)),
``ACCESS-TIMESTAMP`` and ``ACCESS-PASSPHRASE``; answers ``{"code": "00000", "msg": "success",
"data": ...}``, errors 40037 (key), 40012 (passphrase), 40009 (sign), 43001 (no such order).

Plan (trigger) orders live apart from the order book: ``orders-plan-pending`` takes one
``planType`` per request — ``normal_plan`` (trigger orders), ``profit_loss`` (take-profit and
stop-loss orders) and ``track_plan`` (trailing stops) — and ``cancel-plan-order`` cancels them.
``orders-pending`` and ``cancel-all-orders`` never see them. Spot symbols are served so that
markets load; spot trading is not in this fake.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from fakes.exchange import Num, _Answer, _Book, _d, _now_ms, _Refusal, _s

PLAN_TYPES = ("normal_plan", "profit_loss", "track_plan")
DEFAULT_BITGET_PASSPHRASE = "fake-bitget-passphrase"
PRODUCT = "USDT-FUTURES"


@dataclass
class BitgetOrder:
    order_id: str
    symbol: str
    side: str  # buy | sell
    size: Decimal
    order_type: str = "limit"  # limit | market
    price: Decimal = Decimal(0)
    plan_type: str | None = None  # a plan order when set
    trigger: Decimal = Decimal(0)
    reduce_only: bool = False
    client_oid: str = ""
    status: str = "live"  # live | filled | canceled
    filled: Decimal = Decimal(0)
    avg: Decimal = Decimal(0)
    created: int = field(default_factory=_now_ms)


class BitgetBook(_Book):
    kind = "bitget"  # type: ignore[assignment]

    def __init__(
        self,
        *,
        positions: Mapping[str, Num] | None = None,
        equity: Num = "10000",
        passphrase: str = DEFAULT_BITGET_PASSPHRASE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.passphrase = passphrase
        self.available = _d(equity)
        self.pos: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (signed size, entry)
        self.bitget_orders: list[BitgetOrder] = []
        for symbol, size in (positions or {}).items():
            self.set_position(symbol, size)

    def set_position(self, symbol: str, size: Num, entry: Num | None = None) -> None:
        with self.lock:
            px = _d(entry) if entry is not None else self.prices[symbol]
            self.pos[symbol] = (_d(size), px)

    def position(self, symbol: str) -> Decimal:
        with self.lock:
            return self.pos.get(symbol, (Decimal(0), Decimal(0)))[0]

    def add(
        self,
        symbol: str,
        side: str,
        size: Num,
        *,
        price: Num = 0,
        plan_type: str | None = None,
        trigger: Num = 0,
    ) -> BitgetOrder:
        with self.lock:
            order = BitgetOrder(
                order_id=str(next(self._ids) + 1100000000),
                symbol=symbol,
                side=side,
                size=_d(size),
                price=_d(price),
                plan_type=plan_type,
                trigger=_d(trigger),
            )
            self.bitget_orders.append(order)
            return order

    def live(self, *, plan: bool | None = None) -> list[BitgetOrder]:
        with self.lock:
            return [
                o
                for o in self.bitget_orders
                if o.status == "live" and (plan is None or (o.plan_type is not None) is plan)
            ]

    def _upl(self, symbol: str) -> Decimal:
        size, entry = self.pos[symbol]
        return (self.prices[symbol] - entry) * size

    # ---- HTTP dialect --------------------------------------------------------------------
    def routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], Any]]:
        mix = "/api/v2/mix"
        return {
            ("GET", "/api/v2/public/time"): lambda _: {"serverTime": str(_now_ms())},
            ("GET", "/api/v2/spot/public/symbols"): self._spot_symbols,
            ("GET", "/api/v2/margin/currencies"): lambda _: [],  # no margin pairs here
            ("GET", "/api/v3/account/settings"): self._uta_settings,
            ("GET", f"{mix}/market/contracts"): self._contracts,
            ("GET", f"{mix}/market/tickers"): self._tickers,
            ("GET", f"{mix}/account/accounts"): self._accounts,
            ("GET", f"{mix}/position/all-position"): self._positions,
            ("GET", f"{mix}/order/orders-pending"): self._pending,
            ("GET", f"{mix}/order/orders-plan-pending"): self._plan_pending,
            ("GET", f"{mix}/order/detail"): self._detail,
            ("GET", f"{mix}/order/orders-history"): self._history,
            ("POST", f"{mix}/order/place-order"): self._place,
            ("POST", f"{mix}/order/cancel-order"): self._cancel,
            ("POST", f"{mix}/order/cancel-all-orders"): self._cancel_all,
            ("POST", f"{mix}/order/batch-cancel-orders"): self._batch_cancel,
            ("POST", f"{mix}/order/cancel-plan-order"): self._cancel_plan,
        }

    def is_private(self, path: str) -> bool:
        return "/public/" not in path and "/market/" not in path and "/margin/" not in path

    def ok(self, result: Any) -> _Answer:
        return _Answer(
            200, {"code": "00000", "msg": "success", "requestTime": _now_ms(), "data": result}
        )

    def refuse(self, refusal: _Refusal) -> _Answer:
        status = refusal.http_status if refusal.http_status != 200 else 400
        body = {"code": str(refusal.code), "msg": refusal.message, "requestTime": _now_ms()}
        return _Answer(status, body | {"data": None})

    def rate_limited_answer(self) -> _Answer:
        return self.refuse(_Refusal(429, "Too Many Requests", 429))

    def authenticate(self, request: web.Request, payload: str) -> None:
        key = request.headers.get("ACCESS-KEY")
        sign = request.headers.get("ACCESS-SIGN")
        stamp = request.headers.get("ACCESS-TIMESTAMP")
        if not key or key != self.api_key:
            raise _Refusal(40037, "Apikey does not exist", 400)
        if request.headers.get("ACCESS-PASSPHRASE") != self.passphrase:
            raise _Refusal(40012, "apikey/password is incorrect", 400)
        body = payload if request.method == "POST" else ""
        prehash = (stamp or "") + request.method + request.raw_path + body
        mac = hmac.new(self.secret.encode(), prehash.encode(), hashlib.sha256).digest()
        if not sign or not stamp or not hmac.compare_digest(base64.b64encode(mac).decode(), sign):
            raise _Refusal(40009, "sign signature error", 400)

    def _uta_settings(self, _: dict[str, Any]) -> Any:
        """A classic (not unified) account: the unified-account endpoints refuse it."""
        raise _Refusal(40084, "This account is not a unified trading account", 400)

    def _product(self, params: dict[str, Any]) -> None:
        if params.get("productType", "").upper() != PRODUCT:
            raise _Refusal(40019, f"Parameter productType {params.get('productType')} error")

    # ---- public --------------------------------------------------------------------------
    def _spot_symbols(self, _: dict[str, Any]) -> Any:
        return [
            {
                "symbol": i.symbol,
                "baseCoin": i.base,
                "quoteCoin": i.quote,
                "minTradeAmount": "0",
                "maxTradeAmount": "10000000000",
                "takerFeeRate": "0.001",
                "makerFeeRate": "0.001",
                "pricePrecision": "2",
                "quantityPrecision": "4",
                "quotePrecision": "6",
                "status": "online",
                "minTradeUSDT": "5",
                "buyLimitPriceRatio": "0.05",
                "sellLimitPriceRatio": "0.05",
                "areaSymbol": "no",
            }
            for i in self.instruments.values()
        ]

    def _contracts(self, params: dict[str, Any]) -> Any:
        if params.get("productType", "").upper() != PRODUCT:
            return []  # USDC-FUTURES, COIN-FUTURES: nothing listed here
        return [
            {
                "symbol": i.symbol,
                "baseCoin": i.base,
                "quoteCoin": i.quote,
                "buyLimitPriceRatio": "0.9",
                "sellLimitPriceRatio": "0.9",
                "feeRateUpRatio": "0.1",
                "makerFeeRate": "0.0002",
                "takerFeeRate": "0.0006",
                "openCostUpRatio": "0.1",
                "supportMarginCoins": ["USDT"],
                "minTradeNum": _s(i.min_qty),
                "priceEndStep": "1",
                "volumePlace": str(max(0, -i.qty_step.as_tuple().exponent)),  # type: ignore[operator]
                "pricePlace": str(max(0, -i.tick.as_tuple().exponent)),  # type: ignore[operator]
                "sizeMultiplier": _s(i.qty_step),
                "symbolType": "perpetual",
                "minTradeUSDT": "5",
                "maxSymbolOrderNum": "200",
                "maxProductOrderNum": "400",
                "maxPositionNum": "150",
                "symbolStatus": "normal",
                "offTime": "-1",
                "limitOpenTime": "-1",
                "deliveryTime": "",
                "deliveryStartTime": "",
                "launchTime": "",
                "fundInterval": "8",
                "minLever": "1",
                "maxLever": "125",
                "posLimit": "0.05",
                "maintainTime": "",
            }
            for i in self.instruments.values()
        ]

    def _tickers(self, params: dict[str, Any]) -> Any:
        self._product(params)
        return [
            {
                "symbol": s,
                "lastPr": _s(p),
                "askPr": _s(p),
                "bidPr": _s(p),
                "bidSz": "1",
                "askSz": "1",
                "high24h": _s(p),
                "low24h": _s(p),
                "ts": str(_now_ms()),
                "change24h": "0",
                "baseVolume": "0",
                "quoteVolume": "0",
                "usdtVolume": "0",
                "openUtc": _s(p),
                "changeUtc24h": "0",
                "indexPrice": _s(p),
                "fundingRate": "0",
                "holdingAmount": "0",
                "deliveryStartTime": None,
                "deliveryTime": None,
                "deliveryStatus": "",
                "open24h": _s(p),
                "markPrice": _s(p),
            }
            for s, p in self.prices.items()
            if s in self.instruments
        ]

    # ---- account -------------------------------------------------------------------------
    def _accounts(self, params: dict[str, Any]) -> Any:
        self._product(params)
        upl = sum((self._upl(s) for s in self.pos), Decimal(0))
        return [
            {
                "marginCoin": "USDT",
                "locked": "0",
                "available": _s(self.available),
                "crossedMaxAvailable": _s(self.available),
                "isolatedMaxAvailable": _s(self.available),
                "maxTransferOut": _s(self.available),
                "accountEquity": _s(self.available + upl),
                "usdtEquity": _s(self.available + upl),
                "btcEquity": "0",
                "crossedRiskRate": "0",
                "unrealizedPL": _s(upl),
                "coupon": "0",
                "crossedUnrealizedPL": _s(upl),
                "isolatedUnrealizedPL": "0",
            }
        ]

    def _positions(self, params: dict[str, Any]) -> Any:
        self._product(params)
        rows = []
        for symbol, (size, entry) in self.pos.items():
            if size == 0:
                continue
            rows.append(
                {
                    "marginCoin": "USDT",
                    "symbol": symbol,
                    "holdSide": "long" if size > 0 else "short",
                    "openDelegateSize": "0",
                    "marginSize": "0",
                    "available": _s(abs(size)),
                    "locked": "0",
                    "total": _s(abs(size)),
                    "leverage": "10",
                    "achievedProfits": "0",
                    "openPriceAvg": _s(entry),
                    "marginMode": "crossed",
                    "posMode": "one_way_mode",
                    "unrealizedPL": _s(self._upl(symbol)),
                    "liquidationPrice": "0",
                    "keepMarginRate": "0.004",
                    "markPrice": _s(self.prices[symbol]),
                    "marginRatio": "0",
                    "breakEvenPrice": _s(entry),
                    "totalFee": "0",
                    "deductedFee": "0",
                    "cTime": str(_now_ms()),
                    "uTime": str(_now_ms()),
                }
            )
        return rows

    # ---- orders --------------------------------------------------------------------------
    def _row(self, o: BitgetOrder) -> dict[str, Any]:
        return {
            "symbol": o.symbol,
            "size": _s(o.size),
            "orderId": o.order_id,
            "clientOid": o.client_oid,
            "baseVolume": _s(o.filled),
            "fee": "0",
            "price": _s(o.price),
            "priceAvg": _s(o.avg) if o.filled else "",
            "status": o.status,
            "side": o.side,
            "force": "gtc",
            "totalProfits": "0",
            "posSide": "net",
            "marginCoin": "USDT",
            "quoteVolume": _s(o.filled * o.avg),
            "leverage": "10",
            "marginMode": "crossed",
            "reduceOnly": "YES" if o.reduce_only else "NO",
            "enterPointSource": "API",
            "tradeSide": "open",
            "posMode": "one_way_mode",
            "orderType": o.order_type,
            "orderSource": "normal",
            "cTime": str(o.created),
            "uTime": str(_now_ms()),
        }

    def _plan_row(self, o: BitgetOrder) -> dict[str, Any]:
        return {
            "planType": o.plan_type,
            "symbol": o.symbol,
            "size": _s(o.size),
            "orderId": o.order_id,
            "clientOid": o.client_oid,
            "price": _s(o.price),
            "callbackRatio": "0.01" if o.plan_type == "track_plan" else "",
            "triggerPrice": _s(o.trigger),
            "triggerType": "mark_price",
            "planStatus": "live",
            "side": o.side,
            "posSide": "net",
            "marginCoin": "USDT",
            "marginMode": "crossed",
            "enterPointSource": "API",
            "tradeSide": "close" if o.plan_type == "profit_loss" else "open",
            "posMode": "one_way_mode",
            "orderType": "market" if not o.price else "limit",
            "stopSurplusTriggerPrice": "",
            "stopLossTriggerPrice": "",
            "cTime": str(o.created),
            "uTime": str(_now_ms()),
        }

    def _pending(self, params: dict[str, Any]) -> Any:
        self._product(params)
        rows = [
            self._row(o)
            for o in self.live(plan=False)
            if not params.get("symbol") or params["symbol"] == o.symbol
        ]
        return {"entrustedList": rows or None, "endId": rows[-1]["orderId"] if rows else None}

    def _plan_pending(self, params: dict[str, Any]) -> Any:
        self._product(params)
        plan_type = params.get("planType")
        if plan_type not in PLAN_TYPES:
            raise _Refusal(40019, "Parameter planType error")
        rows = [
            self._plan_row(o)
            for o in self.live(plan=True)
            if o.plan_type == plan_type
            and (not params.get("symbol") or params["symbol"] == o.symbol)
        ]
        return {"entrustedList": rows or None, "endId": rows[-1]["orderId"] if rows else None}

    def _find(self, params: dict[str, Any]) -> BitgetOrder:
        for o in self.bitget_orders:
            if (
                o.plan_type is None
                and o.symbol == params.get("symbol")
                and (
                    o.order_id == params.get("orderId")
                    or (params.get("clientOid") and o.client_oid == params.get("clientOid"))
                )
            ):
                return o
        raise _Refusal(40768, "Order does not exist")

    def _detail(self, params: dict[str, Any]) -> Any:
        self._product(params)
        return self._row(self._find(params))

    def _history(self, params: dict[str, Any]) -> Any:
        self._product(params)
        rows = [
            self._row(o)
            for o in self.bitget_orders[::-1]
            if o.plan_type is None
            and o.status != "live"
            and (not params.get("symbol") or params["symbol"] == o.symbol)
            and (not params.get("clientOid") or params["clientOid"] == o.client_oid)
        ]
        return {"entrustedList": rows or None, "endId": rows[-1]["orderId"] if rows else None}

    def _place(self, params: dict[str, Any]) -> Any:
        self.order_requests.append(dict(params))
        self._product(params)
        symbol = str(params.get("symbol"))
        if symbol not in self.instruments:
            raise _Refusal(40034, "Parameter symbol does not exist")
        side, kind = params.get("side"), params.get("orderType")
        if side not in ("buy", "sell") or kind not in ("market", "limit"):
            raise _Refusal(40019, "Parameter side or orderType error")
        size = _d(str(params.get("size", "0")))
        if not self._round_ok(symbol, size):
            raise _Refusal(45111, "less than the minimum order quantity")
        reduce_only = str(params.get("reduceOnly", "NO")).upper() == "YES"
        held = self.position(symbol)
        if reduce_only and not (
            (held > 0 and side == "sell" and size <= held)
            or (held < 0 and side == "buy" and size <= -held)
        ):
            raise _Refusal(22002, "No position to close")
        cid = str(params.get("clientOid", ""))
        if cid and any(o.client_oid == cid for o in self.bitget_orders):
            raise _Refusal(40757, "Duplicate clientOid")
        self._check_order_failure()
        order = BitgetOrder(
            order_id=str(next(self._ids) + 1200000000),
            symbol=symbol,
            side=str(side),
            size=size,
            order_type=str(kind),
            price=_d(str(params.get("price") or "0")),
            reduce_only=reduce_only,
            client_oid=cid,
        )
        self.bitget_orders.append(order)
        if kind == "market" and not self.no_fill:
            size_held, entry = self.pos.get(symbol, (Decimal(0), self.prices[symbol]))
            self.pos[symbol] = (size_held + (size if side == "buy" else -size), entry)
            order.status, order.filled, order.avg = "filled", size, self.prices[symbol]
        return {"orderId": order.order_id, "clientOid": cid}

    def _cancel(self, params: dict[str, Any]) -> Any:
        self._product(params)
        o = self._find(params)
        if o.status != "live":
            raise _Refusal(40768, "Order does not exist")
        o.status = "canceled"
        return {"orderId": o.order_id, "clientOid": o.client_oid}

    def _cancel_all(self, params: dict[str, Any]) -> Any:
        self._product(params)
        done = []
        for o in self.live(plan=False):
            if not params.get("symbol") or params["symbol"] == o.symbol:
                o.status = "canceled"
                done.append({"orderId": o.order_id, "clientOid": o.client_oid})
        return {"successList": done, "failureList": []}

    def _batch_cancel(self, params: dict[str, Any]) -> Any:
        """By orderIdList, or every plain order of the symbol when the list is left out."""
        self._product(params)
        if not params.get("symbol"):
            raise _Refusal(40019, "Parameter symbol cannot be empty")
        ids = {str(e.get("orderId")) for e in params.get("orderIdList") or []}
        done = []
        for o in self.live(plan=False):
            if o.symbol == params["symbol"] and (not ids or o.order_id in ids):
                o.status = "canceled"
                done.append({"orderId": o.order_id, "clientOid": o.client_oid})
        return {"successList": done, "failureList": []}

    def _cancel_plan(self, params: dict[str, Any]) -> Any:
        self._product(params)
        ids = {str(e.get("orderId")) for e in params.get("orderIdList") or []}
        plan_type = params.get("planType")
        done = []
        for o in self.live(plan=True):
            if ids and o.order_id not in ids:
                continue
            # strict: without ids, one planType (normal_plan when none is named)
            if not ids and o.plan_type != (plan_type or "normal_plan"):
                continue
            if params.get("symbol") and params["symbol"] != o.symbol:
                continue
            o.status = "canceled"
            done.append({"orderId": o.order_id, "clientOid": o.client_oid})
        return {"successList": done, "failureList": []}
