"""The crypto venue's resting orders: every list the exchange keeps (plain, trigger and the
algo lists of profiles.py), read per market or all at once, per symbol where the exchange
wants one; what each list covered; and one of our orders by client order id, open or done. A
layer on the positions (session.py says why layers)."""

from __future__ import annotations

from rollbot.brokers.base import Order, UnsupportedOperation, VenueError
from rollbot.brokers.crypto.client import feature, market_params
from rollbot.brokers.crypto.convert import dec_or_none
from rollbot.brokers.crypto.errors import ArgumentsMissing, OrderNotFound
from rollbot.brokers.crypto.positions import CryptoPositions
from rollbot.brokers.crypto.profiles import PLAIN, TRIGGER, OrderKind
from rollbot.brokers.crypto.session import Raw, contained, log

Listing = tuple[str, Raw, OrderKind]  # (label, market params, kind listed)


class CryptoOrders(CryptoPositions):
    @contained
    async def open_orders(self) -> list[Order]:
        self._require("fetchOpenOrders")
        await self._markets()
        return [self._order(raw, kind) for raw, kind in await self._open_raw()]

    @contained
    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        await self._markets()
        known = self._client_symbol.get(client_order_id)
        if known:
            return await self._find_client_order(client_order_id, known)
        try:
            return await self._find_client_order(client_order_id, None)
        except ArgumentsMissing:
            pass  # this exchange looks orders up per symbol
        for symbol in await self._scope_symbols():
            found = await self._find_client_order(client_order_id, symbol)
            if found is not None:
                return found
        return None

    def _kinds(self, market: str) -> tuple[OrderKind, ...]:
        """The resting-order lists of one market: the profile's, else ccxt's plain list plus
        its trigger list where ccxt's features say trigger orders are listed apart."""
        if self._profile.order_kinds is not None:
            return self._profile.order_kinds
        if market == "derivatives" and self._profile.derivative_kinds is not None:
            return self._profile.derivative_kinds
        separate = feature(self.exchange, market == "spot", "fetchOpenOrders", "trigger")
        return (PLAIN, TRIGGER) if separate else (PLAIN,)

    def _listings(self) -> list[Listing]:
        """(label, market params, kind) for every list to read: one per order kind, per
        market unless one request covers every market."""
        if len(self.markets) == 1 or self._profile.lists_all_markets:
            where = " & ".join(self.markets)
            kinds: dict[str, OrderKind] = {}
            for market in self.markets:
                kinds |= {k.label: k for k in self._kinds(market)}
            return [(f"{where} {k.label} orders", {}, k) for k in kinds.values()]
        return [
            (f"{m} {k.label} orders", market_params(m), k)
            for m in self.markets
            for k in self._kinds(m)
        ]

    async def _open_raw(
        self, symbol: str | None = None, extra: Raw | None = None, *, triggers: bool = True
    ) -> list[tuple[Raw, OrderKind]]:
        """Open orders of every kind, deduplicated by id, each with the kind it was listed
        as (it is cancelled that way). A list the exchange cannot give is "not checked"."""
        result: dict[str, tuple[Raw, OrderKind]] = {}
        read: list[str] = []
        missing: list[str] = []
        for label, scope, kind in self._listings():
            if kind.conditional and not triggers:
                continue
            params = {**scope, **kind.list_params, **(extra or {})}
            try:
                rows = await self._list_open(params, symbol)
            except UnsupportedOperation as exc:
                missing.append(f"{label} ({exc.detail})")
                continue
            read.append(label)
            for raw in rows:
                self._in_market(raw, scope)
                oid = str(raw["id"])
                if oid not in result:
                    result[oid] = (raw, kind)
                    self._where[oid] = (str(raw["symbol"]), kind)
                    self._label_of[oid] = label
        if symbol is None and extra is None and triggers:
            self._covered["orders"] = (read, missing)
        return list(result.values())

    def _in_market(self, raw: Raw, scope: Raw) -> None:
        """ccxt names an order from a market-scoped list by the default type's market when the
        row does not say its category (bybit: ETHUSDT from the spot list came back as
        ETH/USDT:USDT): put it back in the market that was listed."""
        wanted = scope.get("type")
        market = self.exchange.markets.get(raw.get("symbol")) or {}
        if not wanted or not market or bool(market.get("spot")) is (wanted == "spot"):
            return
        base, quote = market.get("base"), market.get("quote")
        twin = f"{base}/{quote}" if wanted == "spot" else f"{base}/{quote}:{quote}"
        if twin in self.exchange.markets:
            raw["symbol"] = twin

    def _listing_of(self, raw: Raw) -> str | None:
        return self._label_of.get(str(raw["id"]))

    async def _list_open(self, params: Raw, symbol: str | None) -> list[Raw]:
        fetch = self.exchange.fetch_open_orders
        if symbol is not None:
            return await self._link.call("fetch_open_orders", fetch, symbol, None, None, params)
        spot_only = self.markets == ("spot",)
        if not feature(self.exchange, spot_only, "fetchOpenOrders", "symbolRequired"):
            try:
                return await self._link.call("fetch_open_orders", fetch, None, None, None, params)
            except ArgumentsMissing:
                pass
        rows: list[Raw] = []
        for each in await self._scope_symbols():
            rows += await self._link.call("fetch_open_orders", fetch, each, None, None, params)
        return rows

    async def _find_client_order(self, client_id: str, symbol: str | None) -> Order | None:
        """Our order by client id, open or done, or None if the venue never saw it."""
        if self._profile.fetch_order_by_client_id and self.exchange.has.get("fetchOrder"):
            fetch = self.exchange.fetch_order
            try:
                raw = await self._link.call(
                    "fetch_order", fetch, "", symbol, {"clientOrderId": client_id}
                )
            except OrderNotFound:
                return None
            trigger = dec_or_none(raw.get("triggerPrice")) is not None
            return self._order(raw, TRIGGER if trigger else PLAIN)
        param = self._profile.client_id_param
        extra = {param: client_id} if param else {}
        # closes are never trigger orders: the plain book and the history are enough
        for raw, kind in await self._open_raw(symbol, extra, triggers=False):
            if self._client_id(raw) == client_id:
                return self._order(raw, kind)
        for raw in await self._history(symbol, extra):
            if self._client_id(raw) == client_id:
                return self._order(raw, PLAIN)
        return None

    async def _history(self, symbol: str | None, extra: Raw) -> list[Raw]:
        has, ex = self.exchange.has, self.exchange
        if has.get("fetchCanceledAndClosedOrders"):
            fetch = ex.fetch_canceled_and_closed_orders
            return await self._link.call("fetch_closed_orders", fetch, symbol, None, None, extra)
        rows: list[Raw] = []
        for capability, fetch in (
            ("fetchClosedOrders", ex.fetch_closed_orders),
            ("fetchCanceledOrders", ex.fetch_canceled_orders),
        ):
            if has.get(capability):
                rows += await self._link.call(capability, fetch, symbol, None, None, extra)
        if not rows and has.get("fetchOrders"):
            rows += await self._link.call(
                "fetch_orders", ex.fetch_orders, symbol, None, None, extra
            )
        return rows

    async def _read_back(self, client_id: str, symbol: str, fallback: Order | None) -> Order | None:
        """Some venues acknowledge with ids only; the order itself says what happened."""
        try:
            found = await self._find_client_order(client_id, symbol)
        except VenueError as exc:
            log.info("%s: read-back of %s failed: %s", self.name, client_id, exc)
            return fallback
        return found or fallback
