"""The crypto venue's closes: reduce-only, capped at the position (or the free spot holding)
read just before sending, one per symbol and per client order id at a time, sized and priced
to the market's precision, read back when the exchange acknowledges with an id alone; and the
venue drill's sentinel. A layer on the orders (session.py says why layers)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from rollbot.brokers.base import (
    CloseRequest,
    Order,
    OrderRejected,
    OrderStatus,
    OrderType,
    Side,
    VenueError,
    VenueEventKind,
)
from rollbot.brokers.crypto.convert import D0, dec, dec_or_none, order_from_ccxt, ticker_price
from rollbot.brokers.crypto.errors import OrderNotFound, map_ccxt_error
from rollbot.brokers.crypto.orders import CryptoOrders
from rollbot.brokers.crypto.profiles import PLAIN, hedge_close_params
from rollbot.brokers.crypto.session import Raw, contained, log


class CryptoCloses(CryptoOrders):
    @contained
    async def submit_close(self, request: CloseRequest) -> Order:
        self._check_writable()
        self._require("createOrder")
        await self._markets()
        market = self._market(request.symbol)
        self._require("fetchBalance" if market.get("spot") else "fetchPositions")  # to cap it
        symbol = str(market["symbol"])
        # flatten closes symbols concurrently: one close per symbol (and per client id) at a
        # time, so the cap reads a position no other close of ours is still changing and a
        # repeated id finds its twin instead of racing it to the venue
        async with self._lock(f"symbol:{symbol}"), self._lock(f"cid:{request.client_order_id}"):
            return await self._submit_close(request, market, symbol)

    async def _submit_close(self, request: CloseRequest, market: Raw, symbol: str) -> Order:
        existing = await self._find_client_order(request.client_order_id, symbol)
        if existing is not None:
            log.info(
                "%s: %s already at the venue; not sent again", self.name, request.client_order_id
            )
            self._client_symbol[request.client_order_id] = symbol
            return existing
        try:
            amount, params = await self._close_size(request, market)
        except OrderRejected:
            # nothing left to close: another process may have sent this very close since we
            # looked, and filled it; then that order is ours
            twin = await self._read_back(request.client_order_id, symbol, None)
            if twin is None:
                raise
            self._client_symbol[request.client_order_id] = symbol
            return twin
        kind, price = await self._close_price(request, market)
        params["clientOrderId"] = request.client_order_id
        contract_size = self._contract_size(market)
        sent: Raw = {
            "id": "",
            "clientOrderId": request.client_order_id,
            "symbol": symbol,
            "side": request.side.value.lower(),
            "type": kind,
            "amount": amount,
            "price": price,
            "reduceOnly": bool(params.get("reduceOnly")),
            "status": "open",
        }
        draft = order_from_ccxt(self.name, {}, fallback=sent, contract_size=contract_size)
        self.counts["orders_sent"] += 1
        self._link.emit(
            VenueEventKind.ORDER_SENT,
            message=f"{draft.side} {draft.quantity} {symbol} {draft.type}",
            order=draft,
        )
        try:
            raw = await self._create_order(
                symbol, kind, request.side.value.lower(), amount, price, params
            )
        except OrderRejected as exc:
            # refused as a duplicate client id? then a twin got there first: that is ours
            twin = await self._read_back(request.client_order_id, symbol, None)
            if twin is not None:
                self._client_symbol[request.client_order_id] = symbol
                return twin
            self.counts["rejects"] += 1
            refused = draft.model_copy(
                update={"status": OrderStatus.REJECTED, "reason": exc.detail}
            )
            self._link.emit(VenueEventKind.REJECT, code=exc.code, message=exc.detail, order=refused)
            raise
        self._client_symbol[request.client_order_id] = symbol
        raw = {**raw, "clientOrderId": self._client_id(raw)}
        order = order_from_ccxt(self.name, raw, fallback=sent, contract_size=contract_size)
        if order.order_id:
            self._where[order.order_id] = (symbol, PLAIN)
        if raw.get("status") is None:
            order = await self._read_back(request.client_order_id, symbol, order) or order
        self._link.emit(VenueEventKind.ORDER, message=f"{order.status}", order=order)
        return order

    async def _create_order(
        self, symbol: str, kind: str, side: str, amount: Decimal, price: Decimal | None, params: Raw
    ) -> Raw:
        """One order sent: amount and price as the floats ccxt takes."""
        return await self._link.call(
            "create_order",
            self.exchange.create_order,
            symbol,
            kind,
            side,
            float(amount),
            None if price is None else float(price),
            params,
        )

    # ---- close sizing ------------------------------------------------------------------
    async def _close_size(self, request: CloseRequest, market: Raw) -> tuple[Decimal, Raw]:
        """Exchange amount (contracts for derivatives) and params, capped at what is held."""
        symbol = str(market["symbol"])
        if market.get("spot"):
            cap = await self._spot_cap(request, symbol)
            params: Raw = {}
        else:
            held = [p for p in await self._derivative_positions() if p.symbol == symbol]
            target = next((p for p in held if p.closing_side is request.side), None)
            if target is None:
                if held:
                    raise OrderRejected(
                        self.name,
                        f"{symbol}: a {request.side} would add to the position, not reduce it",
                        "WOULD_INCREASE",
                    )
                raise OrderRejected(self.name, f"{symbol}: no open position", "NO_POSITION")
            cap = abs(target.quantity)
            params = {"reduceOnly": True}
            if target.instrument.get("hedged") == "true":
                # hedge mode: the order names the leg it closes (positionSide / posSide)
                params = hedge_close_params(self._profile, target.instrument.get("side", ""))
        if request.quantity > cap:
            log.info("%s: close of %s %s capped at %s", self.name, request.quantity, symbol, cap)
        qty = min(request.quantity, cap) / self._contract_size(market)
        return self._amount(symbol, qty), params

    async def _spot_cap(self, request: CloseRequest, symbol: str) -> Decimal:
        holding = next(
            (h for h in await self._holdings(None, priced=False) if h.symbol == symbol), None
        )
        qty = holding.quantity if holding else D0
        if request.side is Side.SELL:
            free = dec(holding.instrument.get("free")) if holding else D0
            if qty <= 0 or free <= 0:
                code = "WOULD_INCREASE" if qty < 0 else "NO_POSITION"
                raise OrderRejected(self.name, f"{symbol}: nothing free to sell", code)
            return min(qty, free)  # funds locked in resting orders cannot be sold
        if qty >= 0:
            code = "WOULD_INCREASE" if qty > 0 else "NO_POSITION"
            raise OrderRejected(self.name, f"{symbol}: no borrowed holding to buy back", code)
        return -qty

    async def _close_price(self, request: CloseRequest, market: Raw) -> tuple[str, Decimal | None]:
        symbol = str(market["symbol"])
        if request.type is OrderType.LIMIT:
            if request.limit_price is None:
                raise OrderRejected(self.name, "a LIMIT close needs a limit_price", "NO_PRICE")
            return "limit", self._price(symbol, request.limit_price)
        if request.type is not OrderType.MARKET:
            raise OrderRejected(self.name, f"{request.type} is not a close type", "BAD_TYPE")
        if self.exchange.has.get("createMarketOrder") is not False:
            return "market", None
        # no market orders on this venue: an aggressive limit that crosses the book
        reference = (await self._prices([symbol])).get(symbol, D0)
        if reference <= 0:
            raise OrderRejected(self.name, f"{symbol}: no price for a marketable limit", "NO_PRICE")
        slip = self.cfg.limit_slippage_bps / Decimal(10000)
        sign = -1 if request.side is Side.SELL else 1
        return "limit", self._price(symbol, reference * (1 + sign * slip))

    def _amount(self, symbol: str, qty: Decimal) -> Decimal:
        text = self._local(self.exchange.amount_to_precision, symbol, format(qty, "f"))
        amount = Decimal(text)
        if amount <= 0:
            raise OrderRejected(self.name, f"{symbol}: {qty} rounds to nothing", "BELOW_MIN_SIZE")
        return amount

    def _price(self, symbol: str, price: Decimal) -> Decimal:
        return Decimal(self._local(self.exchange.price_to_precision, symbol, format(price, "f")))

    def _local(self, fn: Callable[..., str], *args: Any) -> str:
        """ccxt helpers that never touch the network but may raise (below minimum size)."""
        import ccxt

        try:
            return fn(*args)
        except ccxt.BaseError as exc:
            mapped = map_ccxt_error(self.name, exc, self._secrets).error
            if isinstance(mapped, OrderRejected | OrderNotFound):
                raise OrderRejected(self.name, mapped.detail, "BELOW_MIN_SIZE") from None
            raise mapped from None

    # ---- the venue drill's sentinel ------------------------------------------------------
    @contained
    async def place_sentinel(self, client_order_id: str) -> Order:
        """One BUY limit at half the last price, the smallest size the market takes: an order
        that rests far from the market, for the venue drill to prove a kill cancels it."""
        self._check_writable()
        self._require("createOrder")
        await self._markets()
        market = self._sentinel_market()
        symbol = str(market["symbol"])
        fetch = self.exchange.fetch_ticker
        last = ticker_price(await self._link.call("fetch_ticker", fetch, symbol))
        price = dec(self.exchange.price_to_precision(symbol, float(last / 2)))
        limits = market.get("limits") or {}
        step = dec_or_none((market.get("precision") or {}).get("amount")) or D0
        amount = dec_or_none((limits.get("amount") or {}).get("min")) or step
        cost_min = dec_or_none((limits.get("cost") or {}).get("min"))
        if cost_min and price and amount * price * self._contract_size(market) < cost_min:
            amount = cost_min / (price * self._contract_size(market))
            if step:
                amount = (amount / step).to_integral_value(rounding="ROUND_CEILING") * step
        if amount <= 0:
            raise VenueError(self.name, f"{symbol}: no smallest size to read", "NO_MIN_SIZE")
        params: Raw = {"clientOrderId": client_order_id}
        raw = await self._create_order(symbol, "limit", "buy", amount, price, params)
        self._client_symbol[client_order_id] = symbol
        sent: Raw = {
            "id": raw.get("id") or "",
            "clientOrderId": client_order_id,
            "symbol": symbol,
            "side": "buy",
            "type": "limit",
            "amount": amount,
            "price": price,
            "status": "open",
        }
        order = order_from_ccxt(
            self.name, raw, fallback=sent, contract_size=self._contract_size(market)
        )
        if order.order_id:
            self._where[order.order_id] = (symbol, PLAIN)
        return order
