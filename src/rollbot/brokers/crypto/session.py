"""The crypto venue's session on one exchange: the ccxt exchange and its Link, markets loaded
once (and checked against the configured quote), what the exchange can do, read-only, the
locks, what the last reads covered, and ccxt's rows as rollbot's orders.

CryptoVenue (venue.py) is built of layers, each a class on the one below and each in a module
named for what it holds: this session, the positions and NAV (positions.py), the resting-order
lists (orders.py), and on top of those the cancels (cancels.py) and the closes (closes.py).
Layers rather than collaborators: they all work on the one ccxt exchange and the same state
(the markets, where each order was listed, the locks), so each method moved as it was, the
requests and their order unchanged, and what tests and commands read or set on the venue
(`exchange`, `counts`, `coverage()`, `_clock`) is still on it. Each layer calls only down.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from rollbot.brokers.base import (
    Coverage,
    Order,
    OrderRejected,
    UnsupportedOperation,
    VenueError,
    VenueEventKind,
    VenueListener,
)
from rollbot.brokers.crypto.client import build_exchange
from rollbot.brokers.crypto.convert import dec, order_from_ccxt
from rollbot.brokers.crypto.errors import redact
from rollbot.brokers.crypto.link import Link
from rollbot.brokers.crypto.profiles import PROFILES, OrderKind, profile_for
from rollbot.clock import Clock, SystemClock
from rollbot.config import CryptoVenueConfig

# the venue's one logger, whichever of its modules speaks: log settings name it
log = logging.getLogger("rollbot.brokers.crypto.venue")


DEFAULT_BACKOFF_S: tuple[float, ...] = (0.5, 1.0, 2.0)  # one retry per entry
Raw = dict[str, Any]
P = ParamSpec("P")
R = TypeVar("R")


def contained(
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
            assert isinstance(venue, CryptoSession)
            raise venue.unexpected(method.__name__, exc) from None

    return wrapper


class CryptoSession:
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

    @contained
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

    def _market(self, symbol: str) -> Raw:
        import ccxt

        try:
            return self.exchange.market(symbol)
        except ccxt.BaseError:
            raise OrderRejected(
                self.name, f"{symbol} is not a market on {self.cfg.exchange}", "BAD_SYMBOL"
            ) from None

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
