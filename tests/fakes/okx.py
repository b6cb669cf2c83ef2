"""A loopback fake of OKX's v5 REST API (unified trading account), written from OKX's API
documentation (okx.com/docs-v5): spot and USDT-margined perpetual swaps, the plain order book
and the algo orders (conditional, oco, trigger, move_order_stop, iceberg, twap) that OKX keeps
in lists of their own.

What it holds to, from the documentation:

* Signing: ``OK-ACCESS-SIGN`` = base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath +
  body)), requestPath with its query string for GET; ``OK-ACCESS-KEY``, ``OK-ACCESS-TIMESTAMP``
  and ``OK-ACCESS-PASSPHRASE`` required. Answers 401 with 50113 (Invalid Sign), 50105
  (passphrase incorrect), 50103/50104/50111 (header missing / key invalid).
* ``GET /api/v5/trade/orders-pending`` lists plain orders only. Algo orders are listed by
  ``GET /api/v5/trade/orders-algo-pending``, where ``ordType`` is required and takes one type
  (``conditional,oco`` is the one combination allowed); they are cancelled with
  ``POST /api/v5/trade/cancel-algos`` (at most 10 a request), never with cancel-order.
* Plain cancels: ``cancel-order``, ``cancel-batch-orders`` (at most 20). No cancel-all.
* Balance ``details[].eq`` is cash balance plus unrealised PnL; ``totalEq`` in USD.
* Positions: net mode (``posSide = net``, signed ``pos``) or long/short mode (one row per
  side, ``posSide`` long/short). ``reduceOnly`` is refused in long/short mode (51000 style
  parameter error), where the order's ``posSide`` names the leg it closes.
* Demo trading (``demo=True``, OKX's testnet): a demo key is refused (50101, "APIKey does not
  match current environment") on any private call without ``x-simulated-trading: 1``.
* ``POST /api/v5/trade/cancel-all-after`` (the dead-man's switch): ``timeOut`` 0 (off) or
  10-120 seconds, else 51000 parameter error; answers ``triggerTime`` and ``ts`` (Unix ms,
  ``triggerTime`` "0" when turned off). Each call replaces the countdown; when it lapses
  unrefreshed every pending order-book order of the account is cancelled (algo orders not yet
  triggered are not in the book). ``countdown`` is a FakeCountdown: its ``scale`` shortens the
  fake's own wait (0.5: a 10 s countdown lapses after 5 s of wall time) so a test stays short;
  the answered ``triggerTime`` is the exchange's, unscaled.
* Errors: ``{"code": "1", "data": [{"sCode": "51400", ...}]}`` per order; 51603 order does
  not exist; 429 with 50011 when rate limited.
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

from fakes.exchange import (
    FakeCountdown,
    Num,
    _Answer,
    _Book,
    _d,
    _now_ms,
    _Refusal,
    _s,
)

ALGO_TYPES = ("conditional", "oco", "trigger", "move_order_stop", "iceberg", "twap")
DEFAULT_PASSPHRASE = "fake-passphrase"


@dataclass(frozen=True)
class OkxInstrument:
    inst_id: str  # BTC-USDT (spot) or BTC-USDT-SWAP
    base: str
    quote: str
    swap: bool
    ct_val: Decimal = Decimal(1)  # coins per contract (swap)
    lot: Decimal = Decimal("0.0001")
    tick: Decimal = Decimal("0.1")

    @property
    def inst_type(self) -> str:
        return "SWAP" if self.swap else "SPOT"


DEFAULT_OKX_INSTRUMENTS = (
    OkxInstrument("BTC-USDT", "BTC", "USDT", swap=False, lot=Decimal("0.00000001")),
    OkxInstrument("ETH-USDT", "ETH", "USDT", swap=False, lot=Decimal("0.000001")),
    OkxInstrument(
        "BTC-USDT-SWAP", "BTC", "USDT", swap=True, ct_val=Decimal("0.01"), lot=Decimal("0.01")
    ),
    OkxInstrument(
        "ETH-USDT-SWAP", "ETH", "USDT", swap=True, ct_val=Decimal("0.1"), lot=Decimal("0.01")
    ),
)
OKX_PRICES = {"BTC": "60000", "ETH": "3000"}


@dataclass
class OkxOrder:
    ord_id: str
    inst_id: str
    side: str  # buy | sell
    sz: Decimal  # contracts for swaps, coins for spot
    ord_type: str  # market | limit | an algo type
    px: Decimal | None = None
    trigger_px: Decimal | None = None
    pos_side: str = "net"
    reduce_only: bool = False
    cl_ord_id: str = ""
    state: str = "live"  # live | filled | canceled
    filled: Decimal = Decimal(0)
    avg_px: Decimal = Decimal(0)
    c_time: int = field(default_factory=_now_ms)

    @property
    def algo(self) -> bool:
        return self.ord_type in ALGO_TYPES


class OkxBook(_Book):
    kind = "okx"  # type: ignore[assignment]

    def __init__(
        self,
        *,
        positions: Mapping[str, Num] | None = None,
        balances: Mapping[str, Num] | None = None,
        passphrase: str = DEFAULT_PASSPHRASE,
        long_short_mode: bool = False,
        demo: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("prices", OKX_PRICES)
        super().__init__(**kwargs)
        self.passphrase = passphrase
        self.long_short_mode = long_short_mode
        self.demo = demo  # demo trading (OKX's testnet): every private call needs the header
        self.okx_instruments = {i.inst_id: i for i in DEFAULT_OKX_INSTRUMENTS}
        self.cash: dict[str, Decimal] = {
            k: _d(v) for k, v in (balances if balances is not None else {"USDT": "10000"}).items()
        }
        # (instId, posSide) -> (contracts signed in net mode / positive per side, entry)
        self.pos: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        self.okx_orders: list[OkxOrder] = []
        self.countdown = FakeCountdown(self.lock, self._lapse)
        self.refuse_countdown: _Refusal | None = None  # answer cancel-all-after with this
        for inst_id, size in (positions or {}).items():
            self.set_position(inst_id, size)

    # ---- book --------------------------------------------------------------------------
    def price(self, inst_id: str) -> Decimal:
        return self.prices[self.okx_instruments[inst_id].base]

    def set_position(
        self, inst_id: str, contracts: Num, entry: Num | None = None, pos_side: str = "net"
    ) -> None:
        with self.lock:
            px = _d(entry) if entry is not None else self.price(inst_id)
            self.pos[(inst_id, pos_side)] = (_d(contracts), px)

    def position(self, inst_id: str, pos_side: str = "net") -> Decimal:
        with self.lock:
            return self.pos.get((inst_id, pos_side), (Decimal(0), Decimal(0)))[0]

    def add(
        self,
        inst_id: str,
        side: str,
        sz: Num,
        ord_type: str = "limit",
        *,
        px: Num | None = None,
        trigger_px: Num | None = None,
        pos_side: str = "net",
        reduce_only: bool = False,
    ) -> OkxOrder:
        """A resting order: plain (limit) or an algo order of `ord_type`."""
        with self.lock:
            order = OkxOrder(
                ord_id=str(next(self._ids) + 600000000),
                inst_id=inst_id,
                side=side,
                sz=_d(sz),
                ord_type=ord_type,
                px=_d(px) if px is not None else None,
                trigger_px=_d(trigger_px) if trigger_px is not None else None,
                pos_side=pos_side,
                reduce_only=reduce_only,
            )
            self.okx_orders.append(order)
            return order

    def live(self, *, algo: bool | None = None) -> list[OkxOrder]:
        with self.lock:
            return [
                o for o in self.okx_orders if o.state == "live" and (algo is None or o.algo is algo)
            ]

    def upl(self, inst_id: str, pos_side: str) -> Decimal:
        size, entry = self.pos[(inst_id, pos_side)]
        inst = self.okx_instruments[inst_id]
        sign = -1 if pos_side == "short" else 1
        return (self.price(inst_id) - entry) * size * inst.ct_val * sign

    # ---- HTTP dialect --------------------------------------------------------------------
    def routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], Any]]:
        v5 = "/api/v5"
        return {
            ("GET", f"{v5}/public/time"): lambda _: [{"ts": str(_now_ms())}],
            ("GET", f"{v5}/public/instruments"): self._instruments,
            ("GET", f"{v5}/market/tickers"): self._tickers,
            ("GET", f"{v5}/market/ticker"): self._tickers,
            ("GET", f"{v5}/account/balance"): self._balance,
            ("GET", f"{v5}/account/positions"): self._positions,
            ("GET", f"{v5}/account/config"): self._config,
            ("GET", f"{v5}/trade/orders-pending"): self._pending,
            ("GET", f"{v5}/trade/orders-algo-pending"): self._algo_pending,
            ("GET", f"{v5}/trade/order"): self._get_order,
            ("GET", f"{v5}/trade/orders-history"): self._history,
            ("POST", f"{v5}/trade/order"): self._place,
            ("POST", f"{v5}/trade/batch-orders"): self._place_batch,
            ("POST", f"{v5}/trade/cancel-order"): self._cancel,
            ("POST", f"{v5}/trade/cancel-batch-orders"): self._cancel_batch,
            ("POST", f"{v5}/trade/cancel-algos"): self._cancel_algos,
            ("POST", f"{v5}/trade/cancel-all-after"): self._cancel_all_after,
        }

    def is_private(self, path: str) -> bool:
        return not path.startswith(("/api/v5/public/", "/api/v5/market/"))

    def ok(self, result: Any) -> _Answer:
        return _Answer(200, {"code": "0", "msg": "", "data": result})

    def refuse(self, refusal: _Refusal) -> _Answer:
        body = {
            "code": str(refusal.code),
            "msg": refusal.message,
            "data": getattr(refusal, "data", []),
        }
        return _Answer(refusal.http_status, body)

    def rate_limited_answer(self) -> _Answer:
        return self.refuse(_Refusal(50011, "Too Many Requests", 429))

    def authenticate(self, request: web.Request, payload: str) -> None:
        key = request.headers.get("OK-ACCESS-KEY")
        stamp = request.headers.get("OK-ACCESS-TIMESTAMP")
        sign = request.headers.get("OK-ACCESS-SIGN")
        passphrase = request.headers.get("OK-ACCESS-PASSPHRASE")
        if not key:
            raise _Refusal(50103, "Request header OK-ACCESS-KEY can not be empty.", 401)
        if not passphrase:
            raise _Refusal(50104, "Request header OK-ACCESS-PASSPHRASE can not be empty.", 401)
        if not stamp or not sign:
            raise _Refusal(50106, "Request header OK-ACCESS-SIGN can not be empty.", 401)
        if key != self.api_key:
            raise _Refusal(50111, "Invalid OK-ACCESS-KEY.", 401)
        if passphrase != self.passphrase:
            raise _Refusal(50105, "Invalid OK-ACCESS-PASSPHRASE.", 401)
        if self.demo and request.headers.get("x-simulated-trading") != "1":
            raise _Refusal(50101, "APIKey does not match current environment.", 401)
        body = payload if request.method == "POST" else ""
        prehash = stamp + request.method + request.raw_path + body
        digest = hmac.new(self.secret.encode(), prehash.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), sign):
            raise _Refusal(50113, "Invalid Sign", 401)

    # ---- public --------------------------------------------------------------------------
    def _instruments(self, params: dict[str, Any]) -> Any:
        kind = params.get("instType")
        if kind not in ("SPOT", "SWAP", "FUTURES", "OPTION", "MARGIN"):
            raise _Refusal(51000, "Parameter instType error")
        return [self._inst_row(i) for i in self.okx_instruments.values() if i.inst_type == kind]

    def _inst_row(self, i: OkxInstrument) -> dict[str, Any]:
        return {
            "instType": i.inst_type,
            "instId": i.inst_id,
            "uly": f"{i.base}-{i.quote}" if i.swap else "",
            "instFamily": f"{i.base}-{i.quote}" if i.swap else "",
            "baseCcy": "" if i.swap else i.base,
            "quoteCcy": "" if i.swap else i.quote,
            "settleCcy": i.quote if i.swap else "",
            "ctValCcy": i.base if i.swap else "",
            "ctVal": _s(i.ct_val) if i.swap else "",
            "ctMult": "1" if i.swap else "",
            "ctType": "linear" if i.swap else "",
            "lotSz": _s(i.lot),
            "minSz": _s(i.lot),
            "tickSz": _s(i.tick),
            "lever": "100" if i.swap else "10",
            "state": "live",
            "listTime": "1606468572000",
            "expTime": "",
            "alias": "",
            "maxLmtSz": "100000",
            "maxMktSz": "10000",
        }

    def _tickers(self, params: dict[str, Any]) -> Any:
        rows = []
        for i in self.okx_instruments.values():
            if params.get("instId") and params["instId"] != i.inst_id:
                continue
            if params.get("instType") and params["instType"] != i.inst_type:
                continue
            px = _s(self.price(i.inst_id))
            rows.append(
                {
                    "instType": i.inst_type,
                    "instId": i.inst_id,
                    "last": px,
                    "lastSz": "1",
                    "askPx": px,
                    "askSz": "1",
                    "bidPx": px,
                    "bidSz": "1",
                    "open24h": px,
                    "high24h": px,
                    "low24h": px,
                    "volCcy24h": "0",
                    "vol24h": "0",
                    "sodUtc0": px,
                    "sodUtc8": px,
                    "ts": str(_now_ms()),
                }
            )
        return rows

    # ---- account -------------------------------------------------------------------------
    def _balance(self, _: dict[str, Any]) -> Any:
        upl: dict[str, Decimal] = {}
        for inst_id, pos_side in self.pos:
            quote = self.okx_instruments[inst_id].quote
            upl[quote] = upl.get(quote, Decimal(0)) + self.upl(inst_id, pos_side)
        details = []
        total_usd = Decimal(0)
        for ccy in sorted(set(self.cash) | set(upl)):
            cash = self.cash.get(ccy, Decimal(0))
            frozen = sum(
                (
                    o.sz
                    for o in self.live(algo=False)
                    if o.side == "sell" and o.inst_id == f"{ccy}-USDT"
                ),
                Decimal(0),
            )
            eq = cash + upl.get(ccy, Decimal(0))
            usd = eq if ccy in ("USDT", "USDC") else eq * self.prices.get(ccy, Decimal(0))
            total_usd += usd
            details.append(
                {
                    "ccy": ccy,
                    "eq": _s(eq),
                    "cashBal": _s(cash),
                    "availBal": _s(cash - frozen),
                    "frozenBal": _s(frozen),
                    "ordFrozen": _s(frozen),
                    "availEq": _s(eq - frozen),
                    "upl": _s(upl.get(ccy, Decimal(0))),
                    "eqUsd": _s(usd),
                    "disEq": _s(usd),
                    "uTime": str(_now_ms()),
                }
            )
        return [
            {
                "totalEq": _s(total_usd),
                "adjEq": _s(total_usd),
                "uTime": str(_now_ms()),
                "details": details,
            }
        ]

    def _config(self, _: dict[str, Any]) -> Any:
        mode = "long_short_mode" if self.long_short_mode else "net_mode"
        return [{"uid": "44705892343619584", "acctLv": "2", "posMode": mode, "autoLoan": False}]

    def _positions(self, params: dict[str, Any]) -> Any:
        rows = []
        for (inst_id, pos_side), (size, entry) in self.pos.items():
            if size == 0 or (params.get("instId") and params["instId"] != inst_id):
                continue
            inst = self.okx_instruments[inst_id]
            if params.get("instType") and params["instType"] != inst.inst_type:
                continue
            px = self.price(inst_id)
            rows.append(
                {
                    "instType": inst.inst_type,
                    "instId": inst_id,
                    "mgnMode": "cross",
                    "posId": f"{inst_id}-{pos_side}",
                    "posSide": pos_side,
                    "pos": _s(size),
                    "ccy": inst.quote,
                    "posCcy": "",
                    "avgPx": _s(entry),
                    "markPx": _s(px),
                    "last": _s(px),
                    "upl": _s(self.upl(inst_id, pos_side)),
                    "lever": "10",
                    "notionalUsd": _s(abs(size) * inst.ct_val * px),
                    "imr": "0",
                    "margin": "",
                    "mgnRatio": "",
                    "liqPx": "",
                    "cTime": "1619507758793",
                    "uTime": str(_now_ms()),
                }
            )
        return rows

    # ---- orders --------------------------------------------------------------------------
    def _order_row(self, o: OkxOrder) -> dict[str, Any]:
        inst = self.okx_instruments[o.inst_id]
        return {
            "instType": inst.inst_type,
            "instId": o.inst_id,
            "ordId": o.ord_id,
            "clOrdId": o.cl_ord_id,
            "tag": "",
            "px": _s(o.px) if o.px is not None else "",
            "sz": _s(o.sz),
            "ordType": o.ord_type,
            "side": o.side,
            "posSide": o.pos_side,
            "tdMode": "cross" if inst.swap else "cash",
            "accFillSz": _s(o.filled),
            "fillSz": _s(o.filled),
            "avgPx": _s(o.avg_px) if o.filled else "",
            "state": o.state,
            "reduceOnly": "true" if o.reduce_only else "false",
            "lever": "10" if inst.swap else "",
            "fee": "0",
            "feeCcy": inst.quote,
            "cTime": str(o.c_time),
            "uTime": str(_now_ms()),
        }

    def _algo_row(self, o: OkxOrder) -> dict[str, Any]:
        inst = self.okx_instruments[o.inst_id]
        trig = _s(o.trigger_px) if o.trigger_px is not None else ""
        stop_loss = o.ord_type in ("conditional", "oco")
        return {
            "instType": inst.inst_type,
            "instId": o.inst_id,
            "algoId": o.ord_id,
            "algoClOrdId": o.cl_ord_id,
            "clOrdId": "",
            "ordId": "",
            "ordType": o.ord_type,
            "side": o.side,
            "posSide": o.pos_side,
            "tdMode": "cross" if inst.swap else "cash",
            "sz": _s(o.sz),
            "state": "live",
            "triggerPx": trig if o.ord_type == "trigger" else "",
            "orderPx": "-1" if o.ord_type == "trigger" else "",
            "slTriggerPx": trig if stop_loss else "",
            "slOrdPx": "-1" if stop_loss else "",
            "tpTriggerPx": "",
            "tpOrdPx": "",
            "callbackRatio": "0.01" if o.ord_type == "move_order_stop" else "",
            "callbackSpread": "",
            "activePx": "",
            "moveTriggerPx": trig if o.ord_type == "move_order_stop" else "",
            "reduceOnly": "true" if o.reduce_only else "false",
            "lever": "",
            "cTime": str(o.c_time),
            "uTime": str(_now_ms()),
        }

    def _wanted(self, o: OkxOrder, params: dict[str, Any]) -> bool:
        if params.get("instId") and params["instId"] != o.inst_id:
            return False
        kind = params.get("instType")
        return not kind or kind == self.okx_instruments[o.inst_id].inst_type

    def _pending(self, params: dict[str, Any]) -> Any:
        if params.get("ordType") in ALGO_TYPES:
            raise _Refusal(51000, "Parameter ordType error")
        rows = [self._order_row(o) for o in self.live(algo=False) if self._wanted(o, params)]
        return rows[::-1]

    def _algo_pending(self, params: dict[str, Any]) -> Any:
        asked = str(params.get("ordType") or "")
        types = asked.split(",")
        if not asked or any(t not in ALGO_TYPES for t in types):
            raise _Refusal(51000, "Parameter ordType error")
        if len(types) > 1 and set(types) != {"conditional", "oco"}:
            raise _Refusal(51000, "Parameter ordType error")
        rows = [
            self._algo_row(o)
            for o in self.live(algo=True)
            if o.ord_type in types and self._wanted(o, params)
        ]
        return rows[::-1]

    def _find(self, params: dict[str, Any]) -> OkxOrder:
        for o in self.okx_orders:
            if o.algo or o.inst_id != params.get("instId"):
                continue
            if (params.get("ordId") and o.ord_id == params["ordId"]) or (
                params.get("clOrdId") and o.cl_ord_id == params["clOrdId"]
            ):
                return o
        raise _Refusal(51603, "Order does not exist")

    def _get_order(self, params: dict[str, Any]) -> Any:
        return [self._order_row(self._find(params))]

    def _history(self, params: dict[str, Any]) -> Any:
        if params.get("instType") not in ("SPOT", "SWAP", "FUTURES", "MARGIN", "OPTION"):
            raise _Refusal(51000, "Parameter instType error")
        return [
            self._order_row(o)
            for o in self.okx_orders[::-1]
            if not o.algo and o.state != "live" and self._wanted(o, params)
        ]

    def _place(self, params: dict[str, Any]) -> Any:
        self.order_requests.append(dict(params))
        inst = self.okx_instruments.get(str(params.get("instId")))
        if inst is None:
            raise _Refusal(51001, "Instrument ID does not exist")
        side, ord_type = params.get("side"), params.get("ordType")
        if side not in ("buy", "sell") or ord_type not in ("market", "limit"):
            raise _Refusal(51000, "Parameter side or ordType error")
        if params.get("tdMode") != ("cross" if inst.swap else "cash") and not (
            inst.swap and params.get("tdMode") == "isolated"
        ):
            raise _Refusal(51000, "Parameter tdMode error")
        sz = _d(str(params.get("sz", "0")))
        if sz <= 0 or sz % inst.lot != 0:
            raise _Refusal(51121, "Order quantity must be a multiple of the lot size.")
        cl = str(params.get("clOrdId", ""))
        if cl and any(o.cl_ord_id == cl for o in self.okx_orders):
            raise _Refusal(51016, "Duplicated clOrdId")
        reduce_only = str(params.get("reduceOnly", "false")).lower() == "true"
        pos_side = str(params.get("posSide") or "net")
        if inst.swap:
            if self.long_short_mode:
                if pos_side not in ("long", "short"):
                    raise _Refusal(51000, "Parameter posSide error")
                if reduce_only:
                    raise _Refusal(51000, "Parameter reduceOnly error")
            elif pos_side != "net":
                raise _Refusal(51000, "Parameter posSide error")
            held = self.position(inst.inst_id, pos_side)
            if reduce_only and not (
                (held > 0 and side == "sell" and sz <= held)
                or (held < 0 and side == "buy" and sz <= -held)
            ):
                raise _Refusal(
                    51169,
                    "Order failed because you don't have any positions in this direction"
                    " for this contract to reduce or close.",
                )
        self._check_order_failure()
        order = OkxOrder(
            ord_id=str(next(self._ids) + 700000000),
            inst_id=inst.inst_id,
            side=str(side),
            sz=sz,
            ord_type=str(ord_type),
            px=_d(str(params["px"])) if params.get("px") else None,
            pos_side=pos_side,
            reduce_only=reduce_only,
            cl_ord_id=cl,
        )
        self.okx_orders.append(order)
        if ord_type == "market" and not self.no_fill:
            self._fill(order, inst)
        return [{"ordId": order.ord_id, "clOrdId": cl, "tag": "", "sCode": "0", "sMsg": ""}]

    def _place_batch(self, params: dict[str, Any]) -> Any:
        """Up to 20 orders; each answers for itself (sCode), the whole with code 1 if any
        failed (code 2 if all did)."""
        entries = params.get("_list") or []
        if not entries or len(entries) > 20:
            raise _Refusal(51000, "Parameter error: 1 to 20 orders")
        rows = []
        for entry in entries:
            try:
                rows += self._place(entry)
            except _Refusal as refusal:
                rows.append(
                    {
                        "ordId": "",
                        "clOrdId": entry.get("clOrdId", ""),
                        "tag": "",
                        "sCode": str(refusal.code),
                        "sMsg": refusal.message,
                    }
                )
        failed = [r for r in rows if r["sCode"] != "0"]
        if failed:
            refusal = _Refusal(2 if len(failed) == len(rows) else 1, "All operations failed")
            refusal.data = rows  # type: ignore[attr-defined]
            raise refusal
        return rows

    def _fill(self, o: OkxOrder, inst: OkxInstrument) -> None:
        px = self.price(o.inst_id)
        if inst.swap:
            size, entry = self.pos.get((o.inst_id, o.pos_side), (Decimal(0), px))
            if o.pos_side == "net":
                size += o.sz if o.side == "buy" else -o.sz
            else:
                opening = (o.pos_side == "long") == (o.side == "buy")
                size += o.sz if opening else -o.sz
            self.pos[(o.inst_id, o.pos_side)] = (size, entry)
        else:
            coins = o.sz if o.side == "buy" else -o.sz
            self.cash[inst.base] = self.cash.get(inst.base, Decimal(0)) + coins
            self.cash[inst.quote] = self.cash.get(inst.quote, Decimal(0)) - coins * px
        o.state, o.filled, o.avg_px = "filled", o.sz, px

    def _cancel_one(self, entry: dict[str, Any]) -> dict[str, Any]:
        for o in self.live(algo=False):
            if o.inst_id == entry.get("instId") and (
                o.ord_id == entry.get("ordId")
                or (entry.get("clOrdId") and o.cl_ord_id == entry.get("clOrdId"))
            ):
                o.state = "canceled"
                return {"ordId": o.ord_id, "clOrdId": o.cl_ord_id, "sCode": "0", "sMsg": ""}
        return {
            "ordId": entry.get("ordId", ""),
            "clOrdId": entry.get("clOrdId", ""),
            "sCode": "51400",
            "sMsg": "Order cancellation failed as the order has been filled, canceled or does"
            " not exist.",
        }

    def _cancel(self, params: dict[str, Any]) -> Any:
        row = self._cancel_one(params)
        if row["sCode"] != "0":
            refusal = _Refusal(1, "Operation failed.")
            refusal.data = [row]  # type: ignore[attr-defined]
            raise refusal
        return [row]

    def _cancel_batch(self, params: dict[str, Any]) -> Any:
        entries = params.get("_list") or []
        if len(entries) > 20:
            raise _Refusal(51000, "Parameter error: at most 20 orders")
        return [self._cancel_one(e) for e in entries]

    def _cancel_algos(self, params: dict[str, Any]) -> Any:
        entries = params.get("_list") or []
        if not entries or len(entries) > 10:
            raise _Refusal(51000, "Parameter error: 1 to 10 algo orders")
        rows = []
        for e in entries:
            hit = next(
                (
                    o
                    for o in self.live(algo=True)
                    if o.ord_id == e.get("algoId") and o.inst_id == e.get("instId")
                ),
                None,
            )
            if hit is not None:
                hit.state = "canceled"
            rows.append(
                {
                    "algoId": e.get("algoId", ""),
                    "sCode": "0" if hit else "51400",
                    "sMsg": "" if hit else "Cancellation failed as the order does not exist.",
                }
            )
        return rows

    # ---- the dead-man's switch -----------------------------------------------------------
    def _cancel_all_after(self, params: dict[str, Any]) -> Any:
        if self.refuse_countdown is not None:
            raise self.refuse_countdown
        try:
            seconds = int(str(params.get("timeOut", "")))
        except ValueError:
            raise _Refusal(51000, "Parameter timeOut error") from None
        if seconds != 0 and not 10 <= seconds <= 120:
            raise _Refusal(51000, "Parameter timeOut error")
        self.countdown.arm(seconds)
        now = _now_ms()
        trigger = str(now + seconds * 1000) if seconds else "0"
        return [{"triggerTime": trigger, "ts": str(now)}]

    def _lapse(self) -> None:  # every pending order-book order; algo orders are not in the book
        for o in self.okx_orders:
            if o.state == "live" and not o.algo:
                o.state = "canceled"
