"""What the IBKR venue reads: the account's NAV, positions (and the last read of them, which the
closes right after it reuse), the open orders of every client, one of our orders by client
order id. A layer on the contracts (wire.py says why layers)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from rollbot.brokers.base import AccountSnapshot, Order, Position, VenueError
from rollbot.brokers.ibkr import mapping
from rollbot.brokers.ibkr.contracts import IbContracts
from rollbot.config import IbkrVenueConfig

# a snapshot of positions serves the closes after it for this long, unless one of our orders in
# that contract moved since (then the close reads again): one read per flatten pass, not per close
BOOK_REUSE_S = 60.0


class IbReads(IbContracts):
    def __init__(self, cfg: IbkrVenueConfig) -> None:
        super().__init__(cfg)
        # the last positions() read, when it started (in order news counted) and ended
        self._book: list[Position] | None = None
        self._book_seq = 0
        self._book_at = 0.0

    async def account(self) -> AccountSnapshot:
        await self._first_use()
        self._require_connected()

        def net_liq(values: list[Any]) -> list[Any]:
            return [
                v
                for v in values
                if v.tag == "NetLiquidation" and v.currency not in ("", "BASE")
                and (not self.cfg.account or v.account == self.cfg.account)
            ]  # fmt: skip

        # kept current by the account-updates subscription ib_async opens on connect
        values = net_liq(self._ib.accountValues(self.cfg.account))
        if not values:
            summary = await self._call(
                "account summary", lambda: self._ib.accountSummaryAsync(self.cfg.account)
            )
            values = net_liq(summary)
        if not values:
            raise VenueError(self.name, "TWS reported no NetLiquidation for the account")
        currencies = {v.currency for v in values}
        if len(currencies) > 1:
            accounts = ", ".join(sorted({v.account for v in values}))
            raise VenueError(
                self.name,
                f"accounts {accounts} report NAV in {', '.join(sorted(currencies))}: "
                "set `account` in the venue config",
            )
        try:
            nav = sum((Decimal(v.value) for v in values), Decimal(0))
        except ArithmeticError:
            raise VenueError(self.name, f"unreadable NetLiquidation: {values!r}") from None
        return AccountSnapshot(venue=self.name, nav=nav, currency=currencies.pop())

    async def positions(self) -> list[Position]:
        await self._first_use()
        started = self._news_seq
        raw = await self._call("positions", self._ib.reqPositionsAsync)
        prices = {(i.account, i.contract.conId): i for i in self._ib.portfolio()}
        held = [
            mapping.to_position(self.name, p, prices.get((p.account, p.contract.conId)))
            for p in raw
            if p.position != 0 and (not self.cfg.account or p.account == self.cfg.account)
        ]
        self._symbols.update((int(p.instrument["conId"]), p.symbol) for p in held)
        self._book, self._book_seq, self._book_at = held, started, time.monotonic()
        return held

    async def open_orders(self) -> list[Order]:
        await self._first_use()
        # every client's orders, and manual TWS ones: the strategy runs under another client id
        trades = await self._call("open orders", self._ib.reqAllOpenOrdersAsync, refusable=True)
        unique = {id(t): t for t in trades if t.orderStatus.status not in mapping.DONE}
        return [self._order(t) for t in unique.values()]

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        await self._first_use()
        self._require_connected()
        trade = self._trade_by_ref(client_order_id)
        if trade is None:
            # not in this session's view: it may be another client's, or done before we connected
            await self.open_orders()
            await self._call(
                "completed orders",
                lambda: self._ib.reqCompletedOrdersAsync(apiOnly=False),
                refusable=True,
            )
            trade = self._trade_by_ref(client_order_id)
        return self._order(trade) if trade is not None else None

    async def _closable(self) -> list[Position]:
        """The positions, read afresh, that rollbot can trade at IBKR: a contract (conId) of a
        type it closes (the drill's sentinel and the what-if take theirs from these)."""
        return [
            p
            for p in await self.positions()
            if p.instrument.get("conId")
            and p.instrument.get("secType", "") in mapping.CLOSABLE_TYPES
        ]

    async def _held(self, con_id: str | None) -> list[Position]:
        """The last read of positions while it still holds for this contract: nothing we sent
        in it moved since that read began, and it is recent; else a fresh read."""
        book = self._book
        fresh = (
            book is not None
            and con_id is not None
            and self._news_of.get(int(con_id), 0) <= self._book_seq
            and time.monotonic() - self._book_at < BOOK_REUSE_S
            and any(p.instrument["conId"] == con_id for p in book)
        )
        return book if fresh and book is not None else await self.positions()
