"""IB's trades as rollbot's orders: the one conversion (which are our reduce-only closes, which
symbol an order by conId alone trades), finding a trade by our client order id or by order id,
and the order news TWS pushes (status, fills, errors) that wakes the requests waiting on it. A
layer on the session (wire.py says why layers)."""

from __future__ import annotations

from rollbot.brokers.base import Order, VenueEventKind
from rollbot.brokers.ibkr import mapping
from rollbot.brokers.ibkr._ib import Contract, Fill, Trade
from rollbot.brokers.ibkr.session import IbSession
from rollbot.config import IbkrVenueConfig


class IbTrades(IbSession):
    def __init__(self, cfg: IbkrVenueConfig) -> None:
        super().__init__(cfg)
        self._ib.errorEvent += self._on_error
        self._ib.orderStatusEvent += self._on_order_status
        self._ib.execDetailsEvent += self._on_exec_details
        self._close_refs: set[str] = set()  # orderRefs sent by submit_close: reduce-only
        self._symbols: dict[int, str] = {}  # conId -> symbol, for orders sent by conId alone
        self._cancel_refusals: dict[str, str] = {}  # order_id -> why IB would not cancel it
        self._probe: Contract | None = None  # the what-if's contract while it is out
        self._news_seq = 0  # order status and fill news received, counted
        self._news_of: dict[int, int] = {}  # conId -> the count at its latest news

    def _trade_by_ref(self, client_order_id: str) -> Trade | None:
        # an order refused for pacing never existed at IB: sending it again is not a duplicate
        found = [
            t
            for t in self._ib.trades()
            if t.order.orderRef == client_order_id
            and (mapping.refusal(t) or (0, ""))[0] != mapping.PACING
        ]
        return found[-1] if found else None

    def _find_trade(self, order_id: str) -> Trade | None:
        for t in self._ib.trades():
            if order_id in (mapping.order_id_of(t), mapping.local_id_of(t)):
                return t
        return None

    def _order(self, trade: Trade) -> Order:
        return mapping.to_order(
            self.name,
            trade,
            reduce_only=trade.order.orderRef in self._close_refs,
            symbol=self._symbols.get(trade.contract.conId, ""),
        )

    def _on_error(self, req_id: int, code: int, text: str, contract: object) -> None:
        if code == mapping.CLIENT_ID_IN_USE and self._id_refused is not None:
            self._id_refused.set()  # handled: _open tries the next id
            return
        if mapping.read_only_refusal(code, text):
            self._read_only_api = text
            for refused in list(self._refusal_waiters):
                refused.set()
        if contract is not None and contract is self._probe:
            return  # the what-if's answer (trading_permission reads it): no order was refused
        trade = self._ib.wrapper.trades.get((self.client_id, req_id)) if req_id > 0 else None
        if trade is not None and code in mapping.CANCEL_REFUSED_CODES:
            self._cancel_refusals[mapping.order_id_of(trade)] = f"{code}: {text}"
        if code == mapping.LOST:
            self._link_down = True
        elif code in mapping.RESTORED:
            self._link_down = False
        kind = mapping.event_kind_for(code)
        if kind is not None:
            order = self._order(trade) if trade is not None else None
            self._emit(kind, code=str(code), message=text, order=order)
        self._wake()

    def _news(self, trade: Trade) -> None:
        """An order in this contract moved: the positions read before it may be out of date."""
        self._news_seq += 1
        self._news_of[trade.contract.conId] = self._news_seq

    def _on_order_status(self, trade: Trade) -> None:
        self._news(trade)
        self._emit(VenueEventKind.ORDER, order=self._order(trade))
        self._wake()

    def _on_exec_details(self, trade: Trade, fill: Fill) -> None:
        self._news(trade)
        self._emit(
            VenueEventKind.FILL,
            order=self._order(trade),
            value=float(fill.execution.shares),
            message=f"{fill.execution.side} {fill.execution.shares} @ {fill.execution.price}",
        )
        self._wake()
