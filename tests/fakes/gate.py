"""A loopback fake of Gate's spot API v4, written from Gate's documentation
(gate.com/docs/developers/apiv4): ``KEY``, ``Timestamp`` and ``SIGN`` = hex(HMAC-SHA512(secret,
METHOD\\n/api/v4/path\\nquery\\nhex(SHA512(body))\\ntimestamp)); errors as ``{"label",
"message"}`` (INVALID_SIGNATURE 401, ORDER_NOT_FOUND 404, BALANCE_NOT_ENOUGH 400,
TOO_MANY_REQUESTS 429).

Gate keeps price-triggered orders apart from the order book: ``/spot/price_orders`` lists
(``status=open``) and cancels them (``DELETE /spot/price_orders``); ``/spot/open_orders`` and
``DELETE /spot/orders`` never see them. A client order id travels in ``text`` and must start
with ``t-``.

The dead-man's switch, ``POST /spot/countdown_cancel_all``: ``timeout`` in seconds (0 turns it
off, else at least 5: INVALID_PARAM_VALUE), ``currency_pair`` optional (one pair, else every
pair); answers ``{"triggerTime": ms}``. When it lapses unrefreshed the open (book) orders it
covers are cancelled (``countdown``: a FakeCountdown, whose ``scale`` shortens the wait).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from fakes.exchange import FakeCountdown, Num, _Answer, _Book, _d, _now_ms, _Refusal, _s

GATE_PAIRS = {"BTC_USDT": ("BTC", "USDT"), "ETH_USDT": ("ETH", "USDT")}


@dataclass
class GateOrder:
    id: int
    pair: str
    side: str
    amount: Decimal
    type: str = "limit"
    price: Decimal = Decimal(0)
    trigger: Decimal | None = None  # a price order (apart) when set
    text: str = ""
    status: str = "open"  # open | closed | cancelled
    filled: Decimal = Decimal(0)
    fill_price: Decimal = Decimal(0)
    created: int = field(default_factory=_now_ms)


class GateBook(_Book):
    kind = "gate"  # type: ignore[assignment]

    def __init__(self, *, balances: Mapping[str, Num] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("prices", {"BTC_USDT": "60000", "ETH_USDT": "3000"})
        super().__init__(**kwargs)
        self.accounts = {
            k: _d(v) for k, v in (balances if balances is not None else {"USDT": "1000"}).items()
        }
        self.gate_orders: list[GateOrder] = []
        self.countdown = FakeCountdown(self.lock, lambda: self._lapse(None))

    def add(
        self,
        pair: str,
        side: str,
        amount: Num,
        price: Num,
        *,
        trigger: Num | None = None,
    ) -> GateOrder:
        with self.lock:
            order = GateOrder(
                id=next(self._ids) + 300000,
                pair=pair,
                side=side,
                amount=_d(amount),
                price=_d(price),
                trigger=_d(trigger) if trigger is not None else None,
            )
            self.gate_orders.append(order)
            return order

    def live(self, *, triggered: bool | None = None) -> list[GateOrder]:
        with self.lock:
            return [
                o
                for o in self.gate_orders
                if o.status == "open"
                and (triggered is None or (o.trigger is not None) is triggered)
            ]

    # ---- HTTP dialect --------------------------------------------------------------------
    def routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], Any]]:
        v4 = "/api/v4/spot"
        return {
            ("GET", f"{v4}/currency_pairs"): self._pairs,
            ("GET", "/api/v4/margin/currency_pairs"): self._margin_pairs,
            ("GET", "/api/v4/account/detail"): lambda _: {
                "user_id": 1,
                "ip_whitelist": [],
                "currency_pairs": [],
                "key": {"mode": 1},  # classic spot account (2 would be unified)
                "tier": 0,
            },
            ("GET", f"{v4}/tickers"): self._tickers,
            ("GET", f"{v4}/accounts"): self._accounts,
            ("GET", f"{v4}/open_orders"): self._open_orders,
            ("GET", f"{v4}/orders"): self._orders,
            ("POST", f"{v4}/orders"): self._create,
            ("DELETE", f"{v4}/orders"): self._cancel_all,
            ("GET", f"{v4}/price_orders"): self._price_orders,
            ("DELETE", f"{v4}/price_orders"): self._cancel_price_orders,
            ("POST", f"{v4}/countdown_cancel_all"): self._countdown,
        }

    def dynamic(self, method: str, path: str) -> Callable[[dict[str, Any]], Any] | None:
        """/spot/orders/{id} and /spot/price_orders/{id}."""
        for prefix, apart in (
            ("/api/v4/spot/orders/", False),
            ("/api/v4/spot/price_orders/", True),
        ):
            if path.startswith(prefix):
                ident = path[len(prefix) :]
                if method == "GET":
                    return lambda params: self._one(ident, params, apart)
                if method == "DELETE":
                    return lambda params: self._cancel_one(ident, params, apart)
        return None

    def is_private(self, path: str) -> bool:
        return not path.endswith(("/currency_pairs", "/tickers"))  # spot and margin pairs

    def ok(self, result: Any) -> _Answer:
        return _Answer(200, result)

    def refuse(self, refusal: _Refusal) -> _Answer:
        status = refusal.http_status if refusal.http_status != 200 else 400
        label, _, message = refusal.message.partition(": ")
        return _Answer(status, {"label": label, "message": message})

    def rate_limited_answer(self) -> _Answer:
        return self.refuse(_Refusal(0, "TOO_MANY_REQUESTS: Request Rate limit Exceeded", 429))

    def authenticate(self, request: web.Request, payload: str) -> None:
        key, stamp, sign = (request.headers.get(h) for h in ("KEY", "Timestamp", "SIGN"))
        if not key or key != self.api_key:
            raise _Refusal(0, "INVALID_KEY: Invalid key provided", 401)
        if not stamp or abs(int(stamp) - time.time()) > 60:
            raise _Refusal(0, "REQUEST_EXPIRED: Request timestamp is far from the server time", 401)
        body = payload if request.method in ("POST", "PUT", "PATCH") else ""
        query = request.rel_url.raw_query_string
        text = "\n".join(
            [request.method, request.path, query, hashlib.sha512(body.encode()).hexdigest(), stamp]
        )
        want = hmac.new(self.secret.encode(), text.encode(), hashlib.sha512).hexdigest()
        if not sign or not hmac.compare_digest(want, sign):
            raise _Refusal(0, "INVALID_SIGNATURE: Signature mismatch", 401)

    # ---- public --------------------------------------------------------------------------
    def _pairs(self, _: dict[str, Any]) -> Any:
        return [
            {
                "id": pair,
                "base": base,
                "quote": quote,
                "fee": "0.2",
                "min_base_amount": "0.0001",
                "min_quote_amount": "1",
                "max_quote_amount": "5000000",
                "amount_precision": 4,
                "precision": 1,
                "trade_status": "tradable",
                "sell_start": 0,
                "buy_start": 0,
                "type": "normal",
            }
            for pair, (base, quote) in GATE_PAIRS.items()
        ]

    def _tickers(self, params: dict[str, Any]) -> Any:
        rows = []
        for pair in GATE_PAIRS:
            if params.get("currency_pair") and params["currency_pair"] != pair:
                continue
            px = _s(self.prices[pair])
            rows.append(
                {
                    "currency_pair": pair,
                    "last": px,
                    "lowest_ask": px,
                    "highest_bid": px,
                    "change_percentage": "0",
                    "base_volume": "0",
                    "quote_volume": "0",
                    "high_24h": px,
                    "low_24h": px,
                }
            )
        return rows

    def _margin_pairs(self, _: dict[str, Any]) -> Any:
        return [
            {
                "id": pair,
                "base": base,
                "quote": quote,
                "leverage": 3,
                "min_base_amount": "0.0001",
                "min_quote_amount": "1",
                "max_quote_amount": "1000000",
                "status": 1,
            }
            for pair, (base, quote) in GATE_PAIRS.items()
        ]

    # ---- private -------------------------------------------------------------------------
    def _locked(self, currency: str) -> Decimal:
        return sum(
            (
                o.amount - o.filled
                for o in self.live(triggered=False)
                if o.side == "sell" and GATE_PAIRS[o.pair][0] == currency
            ),
            Decimal(0),
        )

    def _accounts(self, _: dict[str, Any]) -> Any:
        return [
            {
                "currency": c,
                "available": _s(amount - self._locked(c)),
                "locked": _s(self._locked(c)),
                "update_id": 1,
            }
            for c, amount in self.accounts.items()
        ]

    def _row(self, o: GateOrder) -> dict[str, Any]:
        return {
            "id": str(o.id),
            "text": o.text or "apiv4",
            "amend_text": "-",
            "create_time": str(o.created // 1000),
            "update_time": str(_now_ms() // 1000),
            "create_time_ms": o.created,
            "update_time_ms": _now_ms(),
            "status": o.status,
            "currency_pair": o.pair,
            "type": o.type,
            "account": "spot",
            "side": o.side,
            "amount": _s(o.amount),
            "price": _s(o.price),
            "time_in_force": "ioc" if o.type == "market" else "gtc",
            "iceberg": "0",
            "left": _s(o.amount - o.filled),
            "filled_amount": _s(o.filled),
            "fill_price": _s(o.filled * o.fill_price),
            "filled_total": _s(o.filled * o.fill_price),
            "avg_deal_price": _s(o.fill_price),
            "fee": "0",
            "fee_currency": "USDT",
            "point_fee": "0",
            "gt_fee": "0",
            "gt_discount": False,
            "rebated_fee": "0",
            "rebated_fee_currency": "USDT",
            "finish_as": {"open": "open", "closed": "filled", "cancelled": "cancelled"}[o.status],
        }

    def _price_row(self, o: GateOrder) -> dict[str, Any]:
        return {
            "id": o.id,
            "user": 1,
            "market": o.pair,
            "trigger": {
                "price": _s(o.trigger or 0),
                "rule": "<=" if o.side == "sell" else ">=",
                "expiration": 86400,
            },
            "put": {
                "type": "limit",
                "side": o.side,
                "price": _s(o.price),
                "amount": _s(o.amount),
                "account": "normal",
                "time_in_force": "gtc",
                "text": "",
            },
            "status": "open" if o.status == "open" else "cancelled",
            "ctime": o.created // 1000,
            "ftime": 0,
            "fired_order_id": 0,
            "reason": "",
        }

    def _open_orders(self, _: dict[str, Any]) -> Any:
        out = []
        for pair in GATE_PAIRS:
            rows = [self._row(o) for o in self.live(triggered=False) if o.pair == pair]
            if rows:
                out.append({"currency_pair": pair, "total": len(rows), "orders": rows})
        return out

    def _orders(self, params: dict[str, Any]) -> Any:
        pair, status = params.get("currency_pair"), params.get("status")
        if not pair or status not in ("open", "finished"):
            raise _Refusal(0, "MISSING_REQUIRED_PARAM: currency_pair and status are required")
        return [
            self._row(o)
            for o in self.gate_orders[::-1]
            if o.trigger is None and o.pair == pair and (o.status == "open") is (status == "open")
        ]

    def _find(self, ident: str, apart: bool) -> GateOrder:
        for o in self.gate_orders:
            if (o.trigger is not None) is apart and ident in (str(o.id), o.text):
                return o
        raise _Refusal(0, "ORDER_NOT_FOUND: Order not found", 404)

    def _one(self, ident: str, _: dict[str, Any], apart: bool) -> Any:
        o = self._find(ident, apart)
        return self._price_row(o) if apart else self._row(o)

    def _cancel_one(self, ident: str, _: dict[str, Any], apart: bool) -> Any:
        o = self._find(ident, apart)
        if o.status != "open":
            raise _Refusal(0, "ORDER_NOT_FOUND: Order not found", 404)
        o.status = "cancelled"
        return self._price_row(o) if apart else self._row(o)

    def _cancel_all(self, params: dict[str, Any]) -> Any:
        pair = params.get("currency_pair")
        done = []
        for o in self.live(triggered=False):
            if not pair or o.pair == pair:
                o.status = "cancelled"
                done.append(self._row(o) | {"succeeded": True})
        return done

    def _price_orders(self, params: dict[str, Any]) -> Any:
        if params.get("status") not in ("open", "finished"):
            raise _Refusal(0, "MISSING_REQUIRED_PARAM: status is required")
        want_open = params["status"] == "open"
        return [
            self._price_row(o)
            for o in self.gate_orders
            if o.trigger is not None
            and (o.status == "open") is want_open
            and (not params.get("market") or params["market"] == o.pair)
        ]

    def _cancel_price_orders(self, params: dict[str, Any]) -> Any:
        done = []
        for o in self.live(triggered=True):
            if not params.get("market") or params["market"] == o.pair:
                o.status = "cancelled"
                done.append(self._price_row(o))
        return done

    def _create(self, params: dict[str, Any]) -> Any:
        self.order_requests.append(dict(params))
        pair = str(params.get("currency_pair"))
        if pair not in GATE_PAIRS:
            raise _Refusal(0, "INVALID_CURRENCY_PAIR: Invalid currency pair")
        side, kind = params.get("side"), params.get("type", "limit")
        text = str(params.get("text", ""))
        if text and not text.startswith("t-"):
            raise _Refusal(0, "INVALID_PARAM_VALUE: text must start with 't-'")
        amount = _d(str(params.get("amount", "0")))
        base = GATE_PAIRS[pair][0]
        if side == "sell" and amount > self.accounts.get(base, Decimal(0)) - self._locked(base):
            raise _Refusal(0, "BALANCE_NOT_ENOUGH: Not enough balance")
        if kind == "market" and params.get("time_in_force") not in (None, "ioc", "fok"):
            raise _Refusal(0, "INVALID_PARAM_VALUE: market orders are ioc or fok")
        self._check_order_failure()
        order = GateOrder(
            id=next(self._ids) + 400000,
            pair=pair,
            side=str(side),
            amount=amount,
            type=str(kind),
            price=_d(str(params.get("price") or "0")),
            text=text,
        )
        self.gate_orders.append(order)
        if kind == "market" and not self.no_fill:
            px = self.prices[pair]
            signed = amount if side == "buy" else -amount
            self.accounts[base] = self.accounts.get(base, Decimal(0)) + signed
            self.accounts["USDT"] = self.accounts.get("USDT", Decimal(0)) - signed * px
            order.status, order.filled, order.fill_price = "closed", amount, px
        return self._row(order)

    def _countdown(self, params: dict[str, Any]) -> Any:
        try:
            seconds = int(str(params.get("timeout", "")))
        except ValueError:
            raise _Refusal(0, "INVALID_PARAM_VALUE: timeout") from None
        if seconds != 0 and seconds < 5:
            raise _Refusal(0, "INVALID_PARAM_VALUE: timeout must be at least 5 seconds")
        pair = params.get("currency_pair") or None
        self.countdown.on_lapse = lambda: self._lapse(pair)
        self.countdown.arm(seconds)
        return {"triggerTime": _now_ms() + seconds * 1000 if seconds else 0}

    def _lapse(self, pair: str | None) -> None:  # the open book orders of one pair, or all
        for o in self.live(triggered=False):
            if pair is None or o.pair == pair:
                o.status = "cancelled"
