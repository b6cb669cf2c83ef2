"""The crypto venue's cancels: everything (each list's bulk cancel where the exchange has one,
then one by one whatever is left, then a read-back), one order, whether this key may cancel at
all (asked with a cancel that cannot succeed), and the exchange's own countdown cancel-all. A
layer on the orders (session.py says why layers)."""

from __future__ import annotations

import contextlib

from rollbot.brokers.base import (
    CancelAllResult,
    OrderRejected,
    RateLimited,
    UnsupportedOperation,
    VenueError,
    VenueUnavailable,
)
from rollbot.brokers.crypto import countdown
from rollbot.brokers.crypto.countdown import Countdown
from rollbot.brokers.crypto.errors import ArgumentsMissing, KeyRefused, OrderNotFound
from rollbot.brokers.crypto.orders import CryptoOrders
from rollbot.brokers.crypto.profiles import OrderKind
from rollbot.brokers.crypto.session import Raw, contained, log

PROBE_ORDER_ID = "999999999999999999"  # numeric (Binance, OKX want digits), never issued
BINANCE_KEY_REFUSED = "-2015"  # "Invalid API-key, IP, or permissions for action."
_CANCEL_BATCH = 10  # OKX: cancel-algos takes 10 ids a request, cancel-batch-orders 20


class CryptoCancels(CryptoOrders):
    @contained
    async def cancel_all(self) -> CancelAllResult:
        self._check_writable()
        self._require("fetchOpenOrders")
        await self._markets()
        before = await self._open_raw()
        if self.exchange.has.get("cancelAllOrders") or self.exchange.has.get("cancelOrders"):
            for label, params, kind in self._listings():
                # only the books that hold something: a cancel-all costs a second of bybit's
                # pacing, and whatever appears meanwhile is caught by the read-back below
                mine = [raw for raw, listed in before if self._listing_of(raw) == label]
                if not mine:
                    continue
                try:
                    await self._bulk_cancel(params, kind, mine)
                except (OrderNotFound, ArgumentsMissing, UnsupportedOperation) as exc:
                    log.info("%s: bulk cancel skipped: %s", self.name, exc)
                except VenueUnavailable:
                    raise
                except VenueError as exc:  # the read-back below reports what is left
                    log.warning("%s: bulk cancel failed: %s", self.name, exc)
        after = await self._open_raw()
        if after:
            # whatever the bulk cancel missed (or an exchange without one): one by one
            for raw, kind in after:
                await self._cancel_quietly(str(raw["id"]), str(raw["symbol"]), kind)
            after = await self._open_raw()
        left = {str(raw["id"]) for raw, _ in after}
        return CancelAllResult(
            venue=self.name,
            requested=len(before),
            cancelled=[str(raw["id"]) for raw, _ in before if str(raw["id"]) not in left],
            remaining=[self._order(raw, kind) for raw, kind in after],
        )

    @contained
    async def cancel_order(self, order_id: str) -> None:
        self._check_writable()
        self._require("cancelOrder")
        await self._markets()
        where = self._where.get(order_id)
        if where is None:
            for raw, kind in await self._open_raw():
                if str(raw["id"]) == order_id:
                    where = (str(raw["symbol"]), kind)
        if where is None:
            raise OrderNotFound(self.name, f"order {order_id} is not open", "ORDER_NOT_FOUND")
        symbol, kind = where
        cancel = self.exchange.cancel_order
        await self._link.call("cancel_order", cancel, order_id, symbol, dict(kind.cancel_params))

    async def _bulk_cancel(self, scope: Raw, kind: OrderKind, rows: list[Raw]) -> None:
        params = {**scope, **kind.cancel_params}
        symbols = {str(raw["symbol"]) for raw in rows}
        if self.exchange.has.get("cancelAllOrders"):
            cancel = self.exchange.cancel_all_orders
            try:
                await self._link.call("cancel_all_orders", cancel, None, params)
                return
            except ArgumentsMissing:
                pass  # per symbol on this exchange
            for symbol in sorted(symbols):
                # binance answers "unknown order" when nothing was open there
                with contextlib.suppress(OrderNotFound):
                    await self._link.call("cancel_all_orders", cancel, symbol, params)
            return
        # no cancel-all (OKX): the listed ids in batches, per symbol
        batch = _CANCEL_BATCH
        for symbol in sorted(symbols):
            ids = [str(raw["id"]) for raw in rows if str(raw["symbol"]) == symbol]
            for start in range(0, len(ids), batch):
                chunk = ids[start : start + batch]
                cancel_many = self.exchange.cancel_orders
                await self._link.call("cancel_orders", cancel_many, chunk, symbol, dict(params))

    async def _cancel_quietly(self, order_id: str, symbol: str, kind: OrderKind) -> None:
        try:
            await self._link.call(
                "cancel_order",
                self.exchange.cancel_order,
                order_id,
                symbol,
                dict(kind.cancel_params),
            )
        except OrderNotFound:
            pass  # filled or cancelled meanwhile: the read-back tells
        except VenueUnavailable:
            raise
        except VenueError as exc:
            log.warning("%s: cancel of %s failed: %s", self.name, order_id, exc)

    @contained
    async def trading_permission(self) -> tuple[bool, str]:
        """(may trade and cancel, why), read without sending an order: cancel an order id that
        cannot exist and read the answer. "No such order" means the exchange looked it up for
        this key, so the key may cancel; a refusal of the key means it may not. Anything else
        raises (the preflight fails closed). Allowed on a read-only connection: it changes
        nothing at the exchange."""
        await self._markets()
        symbol = str(self._sentinel_market()["symbol"])
        cancel = self.exchange.cancel_order
        try:
            await self._link.call("cancel_order", cancel, PROBE_ORDER_ID, symbol, {})
        except KeyRefused as exc:
            return False, f"{self.cfg.exchange} refused this key a cancel: {exc.detail}"
        except RateLimited as exc:
            # ccxt's binance turns -2015 (key, IP or permission) into DDoSProtection once
            # the key has read something, taking it for a temporary ban: no trading either way
            if exc.code != BINANCE_KEY_REFUSED:
                raise
            return False, f"{self.cfg.exchange} refused this key a cancel: {exc.detail}"
        except (OrderNotFound, OrderRejected):
            return True, f"{self.cfg.exchange} looked up a cancel on {symbol} for this key"
        raise VenueError(
            self.name, f"a cancel of order {PROBE_ORDER_ID}, which cannot exist, succeeded"
        )

    # ---- the exchange's dead-man's switch -------------------------------------------------
    @contained
    async def arm_countdown(self, seconds: int) -> Countdown:
        """Arm or refresh the exchange's countdown cancel-all (0 disarms): countdown.py.
        Allowed on a read-only connection too: it sends no order and cancels nothing now, and
        the preflight's read-only connect shares this venue with the clock's refresh."""
        await self._markets()
        return await countdown.arm(
            self.name,
            self.cfg.exchange,
            self.markets,
            self.cfg.symbols,
            self.exchange,
            self._link.call,
            self._clock.now(),
            seconds,
        )
