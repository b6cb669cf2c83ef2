"""IBKR closes: a reduce-only close (IB has none for most contracts, so it is capped at the
position read just before, less our closes already working, under one lock per instrument and
one per client order id), its IB order on the contract's tick, and the drill's sentinel. A
layer on the reads (wire.py says why layers)."""

from __future__ import annotations

import time
from decimal import Decimal

from rollbot.brokers.base import (
    CloseRequest,
    Order,
    OrderRejected,
    OrderType,
    Position,
    RateLimited,
    RejectedForGood,
    Side,
    UnsupportedOperation,
    VenueEventKind,
    VenueUnavailable,
)
from rollbot.brokers.ibkr import mapping
from rollbot.brokers.ibkr._ib import IbOrder, LimitOrder, MarketOrder, Trade
from rollbot.brokers.ibkr.contracts import _Listing
from rollbot.brokers.ibkr.reads import IbReads


class IbCloses(IbReads):
    async def submit_close(self, request: CloseRequest) -> Order:
        await self._first_use()
        self._require_writable()
        if self.client_id != self.cfg.client_id:
            # IB has no reduce-only for most contracts: closes sent from two client ids could
            # not see each other's working orders, and together flip the position
            raise UnsupportedOperation(
                self.name,
                f"closing orders go through client id {self.cfg.client_id} only, which another"
                f" API client holds (another rollbot process?); connected as {self.client_id},"
                " this process reads and cancels but does not close",
            )
        ref = request.client_order_id
        # one submit per client order id at a time, so a concurrent retry finds the first order
        async with self._lock(f"ref {ref}"):
            existing = self._trade_by_ref(ref)
            if existing is not None:
                return self._settled(existing, request)
            if self._link_down:
                raise VenueUnavailable(self.name, "TWS has lost its connection to IB (1100)")
            if request.type not in (OrderType.MARKET, OrderType.LIMIT):
                raise UnsupportedOperation(
                    self.name, f"a close is MARKET or LIMIT, not {request.type}"
                )
            sec_type = request.instrument.get("secType", "")
            if sec_type and sec_type not in mapping.CLOSABLE_TYPES:
                raise RejectedForGood(
                    self.name,
                    f"{request.symbol} is a {sec_type} contract: rollbot closes only "
                    f"{', '.join(mapping.CLOSABLE_TYPES)} at IBKR; nothing sent, close it by hand",
                )
            # read, cap and place under one lock per instrument: a second close of the same
            # position then sees the first as working (or filled) and cannot flip it
            instrument = request.instrument.get("conId") or request.symbol
            async with self._lock(f"instrument {instrument}"):
                position = await self._position_for(request)
                quantity = self._room_to_close(request, position)
                listing = await self._listing(position)
                trade = await self._place(request, position, quantity, listing)
            began = time.perf_counter()
            await self._wait_for(
                lambda: trade.orderStatus.status != "PendingSubmit",
                f"acknowledgement of close {ref}",
                "it may be live: read it back with order_by_client_id",
            )
            self._emit_latency("order acknowledgement", began)
            return self._settled(trade, request)

    async def _place(
        self, request: CloseRequest, position: Position, quantity: Decimal, listing: _Listing
    ) -> Trade:
        order = self._ib_order(request, position, quantity, listing)
        await self._pacer.acquire()
        self._require_connected()
        try:
            trade = self._ib.placeOrder(listing.contract, order)
        except ConnectionError as e:
            raise VenueUnavailable(
                self.name, f"could not send close {request.client_order_id}: {e}"
            ) from None
        self._close_refs.add(request.client_order_id)
        self._emit(
            VenueEventKind.ORDER_SENT,
            message=f"{request.side} {quantity} {position.symbol}",
            order=self._order(trade),
        )
        return trade

    async def place_sentinel(self, client_order_id: str) -> Order:
        """The venue drill's sentinel: BUY 1 (a share, a contract) limit at half the market
        price of the first held contract, on its tick: it rests far from the market. IB serves
        no quote without a market-data subscription; the held position's mark is the price
        rollbot reads."""
        await self._first_use()
        self._require_writable()
        held = [p for p in await self._closable() if p.market_price > 0]
        if not held:
            raise UnsupportedOperation(
                self.name,
                "the drill's sentinel needs a held stock, future or currency position to take its"
                " contract and market price from; none is held",
            )
        position = held[0]
        listing = await self._listing(position)
        price = listing.round(position.market_price / 2, Side.BUY)
        order = LimitOrder("BUY", 1.0, float(price))
        order.orderRef = client_order_id
        order.tif = "DAY"
        order.account = position.instrument.get("account", "")
        await self._pacer.acquire()
        self._require_connected()
        trade = self._ib.placeOrder(listing.contract, order)
        self._emit(
            VenueEventKind.ORDER_SENT, message=f"BUY 1 {position.symbol}", order=self._order(trade)
        )
        await self._wait_for(
            lambda: trade.orderStatus.status != "PendingSubmit",
            f"acknowledgement of sentinel {client_order_id}",
            "it may be live: read it back with order_by_client_id",
        )
        return self._order(trade)

    async def _position_for(self, request: CloseRequest) -> Position:
        con_id = request.instrument.get("conId")
        account = request.instrument.get("account")
        matches = [
            p
            for p in await self._held(con_id)
            if (p.instrument["conId"] == con_id if con_id else p.symbol == request.symbol)
            and (not account or p.instrument.get("account") == account)
        ]
        if not matches:
            raise OrderRejected(
                self.name,
                f"no open position in {request.symbol}: a {request.side} would open one",
            )
        if len(matches) > 1:
            accounts = ", ".join(p.instrument.get("account", "?") for p in matches)
            raise OrderRejected(
                self.name,
                f"{request.symbol} is held in several accounts ({accounts}): "
                "name the account in the close's instrument",
            )
        return matches[0]

    def _room_to_close(self, request: CloseRequest, position: Position) -> Decimal:
        """The request's quantity capped so this close, with our working closes, never flips."""
        if request.side != position.closing_side:
            held = "long" if position.quantity > 0 else "short"
            raise OrderRejected(
                self.name,
                f"{request.side} {request.symbol} would add to a {held} position of "
                f"{position.quantity}; only a {position.closing_side} closes it",
            )
        con_id = position.instrument["conId"]
        working = [
            t
            for t in self._ib.openTrades()
            if str(t.contract.conId) == con_id
            and t.order.action == request.side.value
            and t.order.clientId == self.client_id
        ]
        pending = sum(
            (mapping.decimal(t.order.totalQuantity) - mapping.filled_quantity(t) for t in working),
            Decimal(0),
        )
        room = abs(position.quantity) - pending
        if room <= 0:
            raise OrderRejected(
                self.name,
                f"closing orders for all {abs(position.quantity)} {request.symbol} are already "
                f"working ({len(working)} open): cancel them before sending another",
            )
        return min(request.quantity, room)

    def _ib_order(
        self, request: CloseRequest, position: Position, quantity: Decimal, listing: _Listing
    ) -> IbOrder:
        """Quantity in the contract's own units, as IB reports the position (contracts, shares,
        base currency); a limit price on the contract's tick at that price."""
        action = request.side.value
        if request.type == OrderType.MARKET:
            order: IbOrder = MarketOrder(action, float(quantity))
        else:
            price = request.limit_price or self._slipped_limit(position, request.side)
            order = LimitOrder(action, float(quantity), float(listing.round(price, request.side)))
        order.orderRef = request.client_order_id
        order.tif = "DAY"
        order.account = position.instrument.get("account", "")
        return order

    def _slipped_limit(self, position: Position, side: Side) -> Decimal:
        """An aggressive limit: the mark crossed by cfg.limit_slippage_bps (put on the tick by
        the caller, on the crossing side)."""
        mark = position.market_price
        if mark <= 0:
            raise OrderRejected(
                self.name,
                f"a LIMIT close of {position.symbol} needs a limit_price: IB gave no market price",
            )
        shift = mark * self.cfg.limit_slippage_bps / Decimal(10_000)
        return mark + shift if side == Side.BUY else mark - shift

    def _settled(self, trade: Trade, request: CloseRequest) -> Order:
        refused = mapping.refusal(trade)
        if refused is None:
            return self._order(trade)
        code, text = refused
        what = f"close {request.client_order_id} ({request.side} {request.symbol})"
        if code == mapping.PACING:
            raise RateLimited(
                self.name, f"{what} refused for pacing, nothing placed: {text}", "100"
            )
        if code in mapping.FINAL_REJECT_CODES:
            raise RejectedForGood(self.name, f"{what} rejected: error {code}: {text}", str(code))
        raise OrderRejected(self.name, f"{what} rejected: {text}", str(code))
