"""IBKR cancels: one of this client's orders, and IB's global cancel with the read of what was
working sent right before it and the book read back until it settles. A layer on the reads
(wire.py says why layers)."""

from __future__ import annotations

import asyncio
import contextlib

from rollbot.brokers.base import (
    CancelAllResult,
    OrderRejected,
    UnsupportedOperation,
    VenueError,
    VenueUnavailable,
)
from rollbot.brokers.ibkr import mapping
from rollbot.brokers.ibkr.reads import IbReads


class IbCancels(IbReads):
    async def cancel_order(self, order_id: str) -> None:
        """Cancel one of this client's orders; an order already done is left as it is."""
        await self._first_use()
        self._require_writable()
        trade = self._find_trade(order_id)
        if trade is None:
            await self.open_orders()
            trade = self._find_trade(order_id)
        if trade is None:
            raise OrderRejected(self.name, f"order {order_id} is not known to IBKR")
        if self._order(trade).status.is_terminal:
            return
        if trade.order.clientId != self.client_id or trade.order.orderId <= 0:
            raise UnsupportedOperation(
                self.name,
                f"order {order_id} belongs to API client {trade.order.clientId}; IB lets only "
                "that client cancel it one by one (cancel_all's global cancel reaches it)",
            )
        self._cancel_refusals.pop(order_id, None)
        await self._pacer.acquire()
        self._require_connected()
        try:
            self._ib.cancelOrder(trade.order)
        except ConnectionError as e:
            raise VenueUnavailable(self.name, f"could not send cancel of {order_id}: {e}") from None
        await self._wait_for(
            lambda: order_id in self._cancel_refusals or trade.orderStatus.status in mapping.DONE,
            f"confirmation of cancel {order_id}",
            "read the order back before assuming it is gone",
        )
        refused = self._cancel_refusals.get(order_id)
        if refused is not None:
            with contextlib.suppress(VenueError):
                await self.open_orders()  # ib_async marked it Cancelled; learn its real state
            raise OrderRejected(self.name, f"IB would not cancel order {order_id}: {refused}")

    async def cancel_all(self) -> CancelAllResult:
        """IB's global cancel, sent right behind the read of what was working: TWS answers a
        client's messages in order, so the read shows the book before the cancel while the
        cancel does not wait for hundreds of orders to be decoded."""
        await self._first_use()
        self._require_writable()
        self._cancel_refusals.clear()
        reading = asyncio.ensure_future(
            self._call("open orders", self._ib.reqAllOpenOrdersAsync, refusable=True)
        )
        if self._lock("open orders").locked():  # another read first: ours would follow the cancel
            await asyncio.wait([reading])
        await asyncio.sleep(0)  # the read's request leaves first
        try:
            await self._pacer.acquire()
            self._require_connected()
            self._ib.reqGlobalCancel()  # every client's orders and manual ones, in one message
        except (ConnectionError, VenueError) as e:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            if isinstance(e, VenueError):
                raise
            raise VenueUnavailable(self.name, f"could not send the global cancel: {e}") from None
        # working when TWS read them; the cancel's confirmations may have marked them since
        before = [self._order(t) for t in {id(t): t for t in await reading}.values()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.timeout_s
        pause = 0.05
        while True:
            remaining = await self.open_orders()
            settled = all(o.order_id in self._cancel_refusals for o in remaining)
            if settled or loop.time() >= deadline:
                break  # nothing left, or only what IB said it will not cancel, or out of time
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.5)
        remaining = [
            o.model_copy(update={"reason": self._cancel_refusals[o.order_id]})
            if o.order_id in self._cancel_refusals
            else o
            for o in remaining
        ]
        left = {o.order_id for o in remaining}
        return CancelAllResult(
            venue=self.name,
            requested=len(before),
            cancelled=[o.order_id for o in before if o.order_id not in left],
            remaining=remaining,
        )
