"""A loopback fake of Kraken's spot REST API, written from Kraken's documentation
(docs.kraken.com/api/docs/rest-api): public GET /0/public/*, private POST /0/private/* with
``API-Key`` and ``API-Sign`` = base64(HMAC-SHA512(base64decode(secret), URI path +
SHA256(nonce + POST data))), a nonce that must increase (EAPI:Invalid nonce). Answers are
``{"error": [...], "result": ...}``.

Kraken keeps every resting order in one list (OpenOrders): limit orders and the conditional
kinds (stop-loss, take-profit, trailing-stop and their -limit variants) alike; CancelAll
cancels them all. Assets carry Kraken's names (XXBT, XETH; USDT as is).

The dead-man's switch, ``POST /0/private/CancelAllOrdersAfter``: ``timeout`` in seconds, 0
turns it off, at most 86400 (EGeneral:Invalid arguments beyond); answers ``currentTime`` and
``triggerTime`` (RFC 3339). Each call resets the timer; when it expires every open order of the
account is cancelled and the feature is off until the next call (``countdown``: a
FakeCountdown, whose ``scale`` shortens the wait).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web

from fakes.exchange import FakeCountdown, Num, _Answer, _Book, _d, _Refusal, _s

DEFAULT_KRAKEN_SECRET = base64.b64encode(b"fake-kraken-secret-bytes").decode()
PAIRS = {"XBTUSDT": ("XXBT", "BTC"), "ETHUSDT": ("XETH", "ETH")}  # pair -> (asset, coin)
CONDITIONAL = ("stop-loss", "take-profit", "trailing-stop", "stop-loss-limit", "take-profit-limit")


@dataclass
class KrakenOrder:
    txid: str
    pair: str
    type: str  # buy | sell
    ordertype: str  # market | limit | a conditional kind
    vol: Decimal
    price: Decimal = Decimal(0)
    cl_ord_id: str = ""
    status: str = "open"  # open | closed | canceled
    vol_exec: Decimal = Decimal(0)
    avg: Decimal = Decimal(0)
    opentm: float = field(default_factory=time.time)


class KrakenBook(_Book):
    kind = "kraken"  # type: ignore[assignment]

    def __init__(self, *, balances: Mapping[str, Num] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("secret", DEFAULT_KRAKEN_SECRET)
        kwargs.setdefault("prices", {"XBTUSDT": "60000", "ETHUSDT": "3000"})
        super().__init__(**kwargs)
        # Kraken asset names: XXBT, XETH, USDT
        self.assets: dict[str, Decimal] = {
            k: _d(v) for k, v in (balances if balances is not None else {"USDT": "1000"}).items()
        }
        self.kraken_orders: list[KrakenOrder] = []
        self.last_nonce = 0
        self.countdown = FakeCountdown(self.lock, self._lapse)

    def add(
        self, pair: str, side: str, vol: Num, ordertype: str = "limit", price: Num = 0
    ) -> KrakenOrder:
        with self.lock:
            order = KrakenOrder(
                txid=f"O{next(self._ids):05d}-FAKE-KRKN",
                pair=pair,
                type=side,
                ordertype=ordertype,
                vol=_d(vol),
                price=_d(price),
            )
            self.kraken_orders.append(order)
            return order

    def live(self) -> list[KrakenOrder]:
        with self.lock:
            return [o for o in self.kraken_orders if o.status == "open"]

    # ---- HTTP dialect --------------------------------------------------------------------
    def routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], Any]]:
        return {
            ("GET", "/0/public/Time"): lambda _: {"unixtime": int(time.time())},
            ("GET", "/0/public/AssetPairs"): self._pairs,
            ("GET", "/0/public/Ticker"): self._ticker,
            ("POST", "/0/private/Balance"): self._balance,
            ("POST", "/0/private/BalanceEx"): self._balance_ex,
            ("POST", "/0/private/OpenOrders"): self._open,
            ("POST", "/0/private/ClosedOrders"): self._closed,
            ("POST", "/0/private/QueryOrders"): self._query,
            ("POST", "/0/private/AddOrder"): self._add,
            ("POST", "/0/private/CancelOrder"): self._cancel,
            ("POST", "/0/private/CancelAll"): self._cancel_all,
            ("POST", "/0/private/CancelAllOrdersAfter"): self._cancel_after,
        }

    def is_private(self, path: str) -> bool:
        return path.startswith("/0/private/")

    def ok(self, result: Any) -> _Answer:
        return _Answer(200, {"error": [], "result": result})

    def refuse(self, refusal: _Refusal) -> _Answer:
        return _Answer(refusal.http_status, {"error": [refusal.message]})

    def rate_limited_answer(self) -> _Answer:
        return self.refuse(_Refusal(0, "EAPI:Rate limit exceeded"))

    def authenticate(self, request: web.Request, payload: str) -> None:
        key, sign = request.headers.get("API-Key"), request.headers.get("API-Sign")
        if not key or key != self.api_key:
            raise _Refusal(0, "EAPI:Invalid key")
        fields = dict(p.split("=", 1) for p in payload.split("&") if "=" in p)
        nonce = fields.get("nonce", "")
        if not nonce.isdigit() or int(nonce) <= self.last_nonce:
            raise _Refusal(0, "EAPI:Invalid nonce")
        digest = hashlib.sha256((nonce + payload).encode()).digest()
        mac = hmac.new(
            base64.b64decode(self.secret), request.path.encode() + digest, hashlib.sha512
        )
        if not sign or not hmac.compare_digest(base64.b64encode(mac.digest()).decode(), sign):
            raise _Refusal(0, "EAPI:Invalid signature")
        self.last_nonce = int(nonce)

    # ---- public --------------------------------------------------------------------------
    def _pairs(self, _: dict[str, Any]) -> Any:
        return {
            pair: {
                "altname": pair,
                "wsname": f"{coin if coin != 'BTC' else 'XBT'}/USDT",
                "aclass_base": "currency",
                "base": asset,
                "aclass_quote": "currency",
                "quote": "USDT",
                "lot": "unit",
                "cost_decimals": 5,
                "pair_decimals": 1,
                "lot_decimals": 8,
                "lot_multiplier": 1,
                "leverage_buy": [],
                "leverage_sell": [],
                "fees": [[0, 0.26]],
                "fees_maker": [[0, 0.16]],
                "fee_volume_currency": "ZUSD",
                "margin_call": 80,
                "margin_stop": 40,
                "ordermin": "0.0001",
                "costmin": "0.5",
                "tick_size": "0.1",
                "status": "online",
            }
            for pair, (asset, coin) in PAIRS.items()
        }

    def _ticker(self, params: dict[str, Any]) -> Any:
        wanted = str(params.get("pair") or ",".join(PAIRS)).split(",")
        out = {}
        for pair in wanted:
            if pair not in PAIRS:
                raise _Refusal(0, "EQuery:Unknown asset pair")
            px = _s(self.prices[pair])
            out[pair] = {
                "a": [px, "1", "1.000"],
                "b": [px, "1", "1.000"],
                "c": [px, "0.1"],
                "v": ["0", "0"],
                "p": [px, px],
                "t": [0, 0],
                "l": [px, px],
                "h": [px, px],
                "o": px,
            }
        return out

    # ---- private -------------------------------------------------------------------------
    def _held(self, asset: str) -> Decimal:
        return sum(
            (
                o.vol - o.vol_exec
                for o in self.live()
                if o.type == "sell" and PAIRS[o.pair][0] == asset
            ),
            Decimal(0),
        )

    def _balance(self, _: dict[str, Any]) -> Any:
        return {asset: _s(amount) for asset, amount in self.assets.items()}

    def _balance_ex(self, _: dict[str, Any]) -> Any:
        return {
            asset: {"balance": _s(amount), "hold_trade": _s(self._held(asset))}
            for asset, amount in self.assets.items()
        }

    def _row(self, o: KrakenOrder) -> dict[str, Any]:
        conditional = o.ordertype in CONDITIONAL
        return {
            "refid": None,
            "userref": 0,
            "cl_ord_id": o.cl_ord_id or None,
            "status": o.status,
            "opentm": o.opentm,
            "starttm": 0,
            "expiretm": 0,
            "descr": {
                "pair": o.pair,
                "type": o.type,
                "ordertype": o.ordertype,
                "price": _s(o.price),
                "price2": "0",
                "leverage": "none",
                "order": f"{o.type} {_s(o.vol)} {o.pair} @ {o.ordertype} {_s(o.price)}",
                "close": "",
            },
            "vol": _s(o.vol),
            "vol_exec": _s(o.vol_exec),
            "cost": _s(o.vol_exec * o.avg),
            "fee": "0",
            "price": _s(o.avg),
            "stopprice": _s(o.price) if conditional else "0",
            "limitprice": "0",
            "misc": "",
            "oflags": "fciq",
        }

    def _open(self, params: dict[str, Any]) -> Any:
        cl = params.get("cl_ord_id")
        return {"open": {o.txid: self._row(o) for o in self.live() if not cl or o.cl_ord_id == cl}}

    def _closed(self, params: dict[str, Any]) -> Any:
        cl = params.get("cl_ord_id")
        done = [
            o for o in self.kraken_orders if o.status != "open" and (not cl or o.cl_ord_id == cl)
        ]
        return {"closed": {o.txid: self._row(o) for o in done[::-1]}, "count": len(done)}

    def _query(self, params: dict[str, Any]) -> Any:
        ids = str(params.get("txid", "")).split(",")
        found = {o.txid: self._row(o) for o in self.kraken_orders if o.txid in ids}
        if not found:
            raise _Refusal(0, "EOrder:Invalid order")
        return found

    def _add(self, params: dict[str, Any]) -> Any:
        self.order_requests.append(dict(params))
        pair = str(params.get("pair"))
        if pair not in PAIRS:
            raise _Refusal(0, "EQuery:Unknown asset pair")
        side, kind = params.get("type"), params.get("ordertype")
        if side not in ("buy", "sell") or kind not in ("market", "limit"):
            raise _Refusal(0, "EGeneral:Invalid arguments:ordertype")
        vol = _d(str(params.get("volume", "0")))
        if vol < Decimal("0.0001"):
            raise _Refusal(0, "EOrder:Order minimum not met")
        asset = PAIRS[pair][0]
        if side == "sell" and vol > self.assets.get(asset, Decimal(0)) - self._held(asset):
            raise _Refusal(0, "EOrder:Insufficient funds")
        cl = str(params.get("cl_ord_id", ""))
        if cl and any(o.cl_ord_id == cl and o.status == "open" for o in self.kraken_orders):
            raise _Refusal(0, "EOrder:Duplicate order")
        self._check_order_failure()
        order = KrakenOrder(
            txid=f"O{next(self._ids):05d}-FAKE-KRKN",
            pair=pair,
            type=str(side),
            ordertype=str(kind),
            vol=vol,
            price=_d(str(params.get("price", "0"))),
            cl_ord_id=cl,
        )
        self.kraken_orders.append(order)
        if kind == "market" and not self.no_fill:
            px = self.prices[pair]
            signed = vol if side == "buy" else -vol
            self.assets[asset] = self.assets.get(asset, Decimal(0)) + signed
            self.assets["USDT"] = self.assets.get("USDT", Decimal(0)) - signed * px
            order.status, order.vol_exec, order.avg = "closed", vol, px
        return {"descr": {"order": f"{side} {_s(vol)} {pair} @ {kind}"}, "txid": [order.txid]}

    def _cancel(self, params: dict[str, Any]) -> Any:
        txid = params.get("txid") or params.get("cl_ord_id")
        for o in self.live():
            if txid in (o.txid, o.cl_ord_id):
                o.status = "canceled"
                return {"count": 1}
        raise _Refusal(0, "EOrder:Unknown order")

    def _cancel_all(self, _: dict[str, Any]) -> Any:
        live = self.live()
        for o in live:
            o.status = "canceled"
        return {"count": len(live)}

    def _cancel_after(self, params: dict[str, Any]) -> Any:
        try:
            seconds = int(str(params.get("timeout", "")))
        except ValueError:
            raise _Refusal(0, "EGeneral:Invalid arguments") from None
        if not 0 <= seconds <= 86400:
            raise _Refusal(0, "EGeneral:Invalid arguments")
        self.countdown.arm(seconds)
        now = datetime.now(UTC).replace(microsecond=0)
        stamp = now.isoformat().replace("+00:00", "Z")
        if not seconds:
            return {"currentTime": stamp, "triggerTime": "0"}
        trigger = (now + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        return {"currentTime": stamp, "triggerTime": trigger}

    def _lapse(self) -> None:  # every open order of the account
        for o in self.live():
            o.status = "canceled"
