"""CryptoVenue: rollbot's Venue protocol over ccxt.async_support, for any ccxt exchange id.

Derivatives (market = "derivatives") are the positions ccxt's fetch_positions returns for
linear contracts settled in the configured quote; closes are reduce-only and capped at the
position read from the venue just before sending, so a close can shrink a position but
never flip it. Spot (market = "spot") treats every non-quote balance that trades against
the quote as a position worth its ticker price; holdings worth less than `dust` are left.
One venue may read both (market = ["spot", "derivatives"] or "all").

Every resting-order list the exchange keeps is read (plain, trigger, and the algo lists of
profiles.py), and `coverage()` names what was read and what could not be: a verify never
says "flat" about a list or a market it did not read.

Every ccxt request goes through `Link.call` (link.py): latency, pacing retries, error
mapping and link-state events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from rollbot.brokers.base import (
    AccountSnapshot,
    CancelAllResult,
    CloseRequest,
    Coverage,
    Order,
    OrderRejected,
    OrderStatus,
    OrderType,
    Position,
    RateLimited,
    Side,
    UnsupportedOperation,
    VenueError,
    VenueEventKind,
    VenueListener,
    VenueUnavailable,
)
from rollbot.brokers.crypto import countdown
from rollbot.brokers.crypto.client import build_exchange, feature, market_params
from rollbot.brokers.crypto.convert import (
    D0,
    dec,
    dec_or_none,
    order_from_ccxt,
    position_from_ccxt,
    ticker_price,
)
from rollbot.brokers.crypto.countdown import Countdown
from rollbot.brokers.crypto.errors import (
    ArgumentsMissing,
    KeyRefused,
    OrderNotFound,
    map_ccxt_error,
    redact,
)
from rollbot.brokers.crypto.link import Link
from rollbot.brokers.crypto.profiles import (
    PLAIN,
    PROFILES,
    TRIGGER,
    OrderKind,
    hedge_close_params,
    profile_for,
)
from rollbot.clock import Clock, SystemClock
from rollbot.config import CryptoVenueConfig

log = logging.getLogger(__name__)

DEFAULT_BACKOFF_S: tuple[float, ...] = (0.5, 1.0, 2.0)  # one retry per entry
Raw = dict[str, Any]
Listing = tuple[str, Raw, OrderKind]  # (label, market params, kind listed)
PROBE_ORDER_ID = "999999999999999999"  # numeric (Binance, OKX want digits), never issued
BINANCE_KEY_REFUSED = "-2015"  # "Invalid API-key, IP, or permissions for action."
_CANCEL_BATCH = 10  # OKX: cancel-algos takes 10 ids a request, cancel-batch-orders 20
P = ParamSpec("P")
R = TypeVar("R")


def _contained(
    method: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Any exception from the exchange library or its answers that is not a VenueError
    becomes one naming the venue: a kill reports it per venue and carries on elsewhere."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except VenueError:
            raise
        except Exception as exc:
            venue = args[0]
            assert isinstance(venue, CryptoVenue)
            raise venue.unexpected(method.__name__, exc) from None

    return wrapper


class CryptoVenue:
    def __init__(
        self,
        cfg: CryptoVenueConfig,
        api_key: str | None = None,
        secret: str | None = None,
        *,
        password: str | None = None,
        uid: str | None = None,
        clock: Clock | None = None,
        backoff_s: Sequence[float] = DEFAULT_BACKOFF_S,
        rate_limit_ms: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.markets = cfg.markets
        self.exchange: Any = build_exchange(cfg, api_key, secret, rate_limit_ms, password, uid)
        # for redaction only
        self._secrets = tuple(s for s in (api_key, secret, password, uid) if s)
        self._clock = clock or SystemClock()
        self._link = Link(self.name, self.exchange, self._clock, backoff_s, self._secrets)
        self._link.on_reopen.append(self._fresh_locks)
        self._profile = profile_for(cfg.exchange)
        self._markets_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self._read_only = False
        self._where: dict[str, tuple[str, OrderKind]] = {}  # order id -> (symbol, kind)
        self._client_symbol: dict[str, str] = {}  # client order id -> symbol, ours only
        self._label_of: dict[str, str] = {}  # order id -> the listing it was read in
        # what the last reads covered: "positions" and "orders" -> (read, not checked)
        self._covered: dict[str, tuple[list[str], list[str]]] = {}
        for unverified in self.unverified():
            log.warning("%s: %s", self.name, unverified)

    def unverified(self) -> list[str]:
        """What rollbot has not verified for this exchange (outside the support matrix)."""
        if self.cfg.exchange in PROFILES:  # the support matrix: each tested against a fake
            return []
        return [
            f"{self.cfg.exchange} is not in rollbot's tested support matrix: order kinds beyond"
            " ccxt's plain and trigger lists, the NAV field (taken as ccxt's balance total plus"
            " unrealised PnL) and hedge-mode closes are unverified"
        ]

    def coverage(self) -> Coverage:
        read: list[str] = []
        missing: list[str] = []
        for part in ("positions", "orders"):
            got, lacking = self._covered.get(part, ([], []))
            read += got
            missing += lacking
        return Coverage(read=read, not_checked=missing)

    def unexpected(self, what: str, exc: BaseException) -> VenueError:
        detail = redact(str(exc), self._secrets)
        log.warning(
            "%s: %s failed unexpectedly: %s: %s", self.name, what, type(exc).__name__, detail
        )
        self._link.emit(VenueEventKind.ERROR, code="UNEXPECTED", message=f"{what}: {detail}")
        return VenueError(
            self.name,
            f"{what}: unexpected {type(exc).__name__} from {self.cfg.exchange}: {detail}",
            "UNEXPECTED",
        )

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def counts(self) -> Counter[str]:
        """requests, pacing, disconnect, error, orders_sent, rejects: for metrics and tests."""
        return self._link.counts

    @_contained
    async def connect(self, read_only: bool = False) -> None:
        self._read_only = read_only
        self._link.connected_by_request()
        await self._markets()

    async def close(self) -> None:
        await self._link.close()

    def set_reconnect(self, allowed: bool) -> None:
        self._link.reconnect_allowed = allowed

    def subscribe(self, listener: VenueListener) -> None:
        self._link.listeners.append(listener)

    def _fresh_locks(self) -> None:
        # asyncio locks belong to the loop they first waited on; a reopen may be on another
        self._markets_lock = asyncio.Lock()
        self._locks.clear()

    # ---- reads -------------------------------------------------------------------------
    @_contained
    async def account(self) -> AccountSnapshot:
        """NAV: account equity in the quote with unrealised PnL counted once (ccxt's total
        already holds it on some exchanges: profiles.py), plus spot holdings at market."""
        self._require("fetchBalance")
        await self._markets()
        nav = D0
        for market, balance in (await self._balances()).items():
            nav += dec((balance.get("total") or {}).get(self.cfg.quote))
            if market == "spot":
                holdings = await self._holdings(balance, priced=True)
                nav += sum((h.market_value for h in holdings), D0)
            elif not self._profile.total_includes_upl and self.exchange.has.get("fetchPositions"):
                positions = await self._derivative_positions()
                nav += sum(
                    (p.unrealized_pnl for p in positions if p.currency == self.cfg.quote), D0
                )
        return AccountSnapshot(
            venue=self.name, nav=nav, currency=self.cfg.quote, at=self._clock.now()
        )

    @_contained
    async def positions(self) -> list[Position]:
        for market in self.markets:
            self._require("fetchBalance" if market == "spot" else "fetchPositions")
        await self._markets()
        found: list[Position] = []
        read: list[str] = []
        missing: list[str] = []
        if "derivatives" in self.markets:
            found += await self._derivative_positions()
            read.append(f"{self.cfg.quote}-settled derivatives positions")
        balance: Raw | None = None
        if "spot" in self.markets:
            holdings = await self._holdings(None, priced=True)
            # an unpriced holding is not known to be dust: show it rather than hide it
            found += [h for h in holdings if h.market_price == 0 or h.exposure >= self.cfg.dust]
            read.append("spot balances")
        elif self.exchange.has.get("fetchBalance"):
            # spot is not configured: the balance still shows coins an account holds there
            balance = (await self._balances()).get("derivatives")
            held = [
                f"{h.symbol} {h.quantity}"
                for h in await self._holdings(balance, priced=True)
                if h.market_price == 0 or h.exposure >= self.cfg.dust
            ]
            if held:
                missing.append(
                    'spot holdings (market "spot" not configured; the balance shows '
                    + ", ".join(held)
                    + ")"
                )
        self._covered["positions"] = (read, missing)
        return found

    @_contained
    async def open_orders(self) -> list[Order]:
        self._require("fetchOpenOrders")
        await self._markets()
        return [self._order(raw, kind) for raw, kind in await self._open_raw()]

    @_contained
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

    # ---- writes ------------------------------------------------------------------------
    @_contained
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

    @_contained
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

    @_contained
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
            raw = await self._link.call(
                "create_order",
                self.exchange.create_order,
                symbol,
                kind,
                request.side.value.lower(),
                float(amount),
                None if price is None else float(price),
                params,
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

    async def _read_back(self, client_id: str, symbol: str, fallback: Order | None) -> Order | None:
        """Some venues acknowledge with ids only; the order itself says what happened."""
        try:
            found = await self._find_client_order(client_id, symbol)
        except VenueError as exc:
            log.info("%s: read-back of %s failed: %s", self.name, client_id, exc)
            return fallback
        return found or fallback

    # ---- positions and holdings ----------------------------------------------------------
    async def _balances(self) -> dict[str, Raw]:
        """The balance each configured market reads, by market: one request where spot and
        derivatives share a wallet (or only one market is configured), else one each."""
        fetch = self.exchange.fetch_balance
        if len(self.markets) == 1 or self._profile.one_wallet:
            balance = await self._link.call("fetch_balance", fetch)
            first = self.markets[0] if len(self.markets) == 1 else "derivatives"
            # one wallet: the quote is counted once, under derivatives; spot adds its coins
            out = {first: balance}
            if len(self.markets) > 1:
                out["spot"] = {
                    **balance,
                    "total": {
                        k: v for k, v in (balance.get("total") or {}).items() if k != self.cfg.quote
                    },
                }
            return out
        return {
            m: await self._link.call("fetch_balance", fetch, market_params(m)) for m in self.markets
        }

    async def _derivative_positions(self) -> list[Position]:
        self._require("fetchPositions")
        fetch = self.exchange.fetch_positions
        if len(self.markets) > 1 and not self._profile.lists_all_markets:
            rows = await self._link.call(
                "fetch_positions", fetch, None, market_params("derivatives")
            )
        else:
            rows = await self._link.call("fetch_positions", fetch)
        out = []
        for raw in rows:
            market = self.exchange.markets.get(raw.get("symbol")) or {}
            if not market.get("contract"):
                continue  # OKX lists spot margin here too: spot is read from the balance
            position = position_from_ccxt(self.name, raw, market, self.cfg.quote)
            if position is not None:
                out.append(position)
        return out

    async def _holdings(self, balance: Raw | None, *, priced: bool) -> list[Position]:
        """Every non-quote balance (net of debt) that trades against the quote."""
        if balance is None:
            self._require("fetchBalance")
            balances = await self._balances()
            balance = balances.get("spot") or balances[self.markets[0]]
        totals = balance.get("total") or {}
        free = balance.get("free") or {}
        debt = balance.get("debt") or {}
        found: list[tuple[str, Raw, Decimal, Decimal]] = []
        for code, total in totals.items():
            qty = dec(total) - dec(debt.get(code))
            if code == self.cfg.quote or qty == 0:
                continue
            symbol = f"{code}/{self.cfg.quote}"
            market = self.exchange.markets.get(symbol)
            if not market or not market.get("spot"):
                log.warning("%s: %s %s has no %s market; ignored", self.name, qty, code, symbol)
                continue
            found.append((symbol, market, qty, dec(free.get(code))))
        prices = await self._prices([f[0] for f in found]) if priced else {}
        return [
            Position(
                venue=self.name,
                symbol=symbol,
                quantity=qty,
                market_price=prices.get(symbol, D0),
                currency=self.cfg.quote,
                instrument={"market_id": str(market["id"]), "type": "spot", "free": str(free_qty)},
            )
            for symbol, market, qty, free_qty in found
        ]

    async def _prices(self, symbols: list[str]) -> dict[str, Decimal]:
        if not symbols:
            return {}
        has = self.exchange.has
        if has.get("fetchTickers"):
            out: dict[str, Decimal] = {}
            spot = [s for s in symbols if (self.exchange.markets.get(s) or {}).get("spot")]
            if spot and self.exchange.options.get("defaultType") != "spot":
                # ccxt's fetch_tickers turns BTC/USDT into BTC/USDT:USDT on a venue whose
                # default type is swap (market_symbols): spot is priced one ticker at a time
                fetch_one = self.exchange.fetch_ticker
                for s in spot:
                    out[s] = ticker_price(await self._link.call("fetch_ticker", fetch_one, s))
            for group in (([] if out else spot), [s for s in symbols if s not in spot]):
                if not group:
                    continue
                params = market_params("spot" if group is spot else "derivatives")
                fetch = self.exchange.fetch_tickers
                tickers = await self._link.call("fetch_tickers", fetch, group, params)
                out |= {s: ticker_price(tickers.get(s)) for s in group}
            return out
        if has.get("fetchTicker"):
            fetch = self.exchange.fetch_ticker
            return {
                s: ticker_price(await self._link.call("fetch_ticker", fetch, s)) for s in symbols
            }
        raise self._unsupported("fetchTickers")

    async def _scope_symbols(self) -> list[str]:
        """Symbols to walk when the exchange wants one per request: the configured ones plus
        whatever we hold."""
        symbols = {s for s in self.cfg.symbols if s in self.exchange.markets}
        for unknown in sorted(set(self.cfg.symbols) - symbols):
            log.warning("%s: configured symbol %s is not a market here", self.name, unknown)
        if "spot" in self.markets:
            symbols |= {h.symbol for h in await self._holdings(None, priced=False)}
        if "derivatives" in self.markets:
            symbols |= {p.symbol for p in await self._derivative_positions()}
        return sorted(symbols)

    # ---- orders ------------------------------------------------------------------------
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

    def _client_id(self, raw: Raw) -> str | None:
        """Our client order id as we sent it: gate hands it back with the "t-" it requires."""
        cid = raw.get("clientOrderId")
        prefix = self._profile.client_id_prefix
        if isinstance(cid, str) and prefix and cid.startswith(prefix):
            return cid[len(prefix) :]
        return cid

    def _order(self, raw: Raw, kind: OrderKind) -> Order:
        raw = {**raw, "clientOrderId": self._client_id(raw)}
        market = self.exchange.markets.get(raw.get("symbol")) or {}
        return order_from_ccxt(
            self.name, raw, contract_size=self._contract_size(market), trigger=kind.conditional
        )

    def _contract_size(self, market: Raw) -> Decimal:
        if not market.get("contract"):
            return Decimal(1)
        return dec(market.get("contractSize"), Decimal(1))

    def _market(self, symbol: str) -> Raw:
        import ccxt

        try:
            return self.exchange.market(symbol)
        except ccxt.BaseError:
            raise OrderRejected(
                self.name, f"{symbol} is not a market on {self.cfg.exchange}", "BAD_SYMBOL"
            ) from None

    # ---- the venue drill's sentinel ------------------------------------------------------
    @_contained
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
        raw = await self._link.call(
            "create_order",
            self.exchange.create_order,
            symbol,
            "limit",
            "buy",
            float(amount),
            float(price),
            params,
        )
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

    def _sentinel_market(self) -> Raw:
        for symbol in self.cfg.symbols:
            if symbol in self.exchange.markets:
                return self._market(symbol)
        for wanted in self.markets:
            spot = wanted == "spot"
            for symbol in sorted(self.exchange.markets):
                m = self.exchange.markets[symbol]
                if (
                    bool(m.get("spot")) is spot
                    and m.get("active", True) is not False
                    and (
                        (spot and m.get("quote") == self.cfg.quote)
                        or (not spot and m.get("linear") and m.get("settle") == self.cfg.quote)
                    )
                ):
                    return m
        raise VenueError(self.name, "no market to place a sentinel in", "BAD_MARKET")

    @_contained
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
    @_contained
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

    # ---- plumbing ----------------------------------------------------------------------
    async def _markets(self) -> None:
        if self.exchange.markets:
            return
        async with self._markets_lock:
            if not self.exchange.markets:
                await self._link.call("load_markets", self.exchange.load_markets)
                self._check_loaded_markets()

    def _check_loaded_markets(self) -> None:
        """A configured market with nothing to trade in the quote is a configuration error:
        refuse rather than read an empty list as "flat"."""
        loaded = list(self.exchange.markets.values())
        for wanted in self.markets:
            spot = wanted == "spot"
            if not any(
                bool(m.get("spot")) is spot
                and (m.get("quote") == self.cfg.quote or m.get("settle") == self.cfg.quote)
                and (spot or m.get("linear"))
                for m in loaded
            ):
                raise VenueError(
                    self.name,
                    f"market {wanted!r}: {self.cfg.exchange} lists no {wanted} market in"
                    f" {self.cfg.quote}; check the venue's market and quote",
                    "BAD_MARKET",
                )

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _require(self, capability: str) -> None:
        if not self.exchange.has.get(capability):
            raise self._unsupported(capability)

    def _unsupported(self, capability: str) -> UnsupportedOperation:
        return UnsupportedOperation(
            self.name, f"{self.cfg.exchange} does not support {capability} in ccxt", "NOT_SUPPORTED"
        )

    def _check_writable(self) -> None:
        if self._read_only:
            raise VenueError(self.name, "connected read-only: no orders, no cancels", "READ_ONLY")
