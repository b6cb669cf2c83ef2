"""Interactive Brokers as a rollbot venue: TWS or IB Gateway through ib_async.

Every request is bounded by cfg.timeout_s and every failure leaves as a VenueError subclass: a
kill switch must be able to tell "refused" (OrderRejected, nothing placed) from "unknown"
(VenueUnavailable, check again after reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, TypeVar

from rollbot.brokers.base import (
    AccountSnapshot,
    CancelAllResult,
    CloseRequest,
    Order,
    OrderRejected,
    OrderType,
    Position,
    RateLimited,
    RejectedForGood,
    Side,
    TradingRefused,
    UnsupportedOperation,
    VenueError,
    VenueEvent,
    VenueEventKind,
    VenueListener,
    VenueUnavailable,
)
from rollbot.brokers.ibkr import mapping
from rollbot.brokers.ibkr._ib import IB, Contract, Fill, IbOrder, LimitOrder, MarketOrder, Trade
from rollbot.brokers.pacing import TokenBucket
from rollbot.config import IbkrVenueConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


class _ClientIdInUse(Exception):
    pass


# a snapshot of positions serves the closes after it for this long, unless one of our orders in
# that contract moved since (then the close reads again): one read per flatten pass, not per close
BOOK_REUSE_S = 60.0


@dataclass(frozen=True)
class _Listing:
    """What a close needs to know about a contract: where to send it and its price ladder."""

    contract: Contract  # qualified: conId with SMART (and primaryExchange) or its own exchange
    ladder: tuple[tuple[Decimal, Decimal], ...]  # (low edge, increment), low edges ascending

    def tick_at(self, price: Decimal) -> Decimal:
        steps = [inc for edge, inc in self.ladder if edge <= abs(price)]
        return steps[-1] if steps else self.ladder[0][1]

    def round(self, price: Decimal, side: Side) -> Decimal:
        """To the tick on the crossing side: a sell down, a buy up (never less aggressive)."""
        tick = self.tick_at(price)
        steps = (price / tick).to_integral_value(
            ROUND_FLOOR if side == Side.SELL else ROUND_CEILING
        )
        return max(steps * tick, tick).normalize()  # a sell of a near-worthless option: 1 tick


class IbkrVenue:
    """One API client connection to one TWS / IB Gateway, as cfg.client_id or, when another
    process holds that id, the first free one of cfg.spare_client_ids (to read and cancel: a
    kill from the terminal while the bot is connected; closing orders need cfg.client_id)."""

    def __init__(self, cfg: IbkrVenueConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.client_id = cfg.client_id  # the id of the open connection
        self._id_refused: asyncio.Event | None = None
        self._ib = IB()
        self._ib.errorEvent += self._on_error
        self._ib.disconnectedEvent += self._on_disconnected
        self._ib.orderStatusEvent += self._on_order_status
        self._ib.execDetailsEvent += self._on_exec_details
        self._pacer = TokenBucket(cfg.max_msgs_per_sec)
        self._listeners: list[VenueListener] = []
        self._connected = False
        self._read_only = False
        self._wanted = False  # connect() was called and close() was not, since
        # neither connect() nor close() called yet: the first request connects, as the paper
        # and crypto venues do (commands never call connect() before reading or cancelling)
        self._untouched = True
        self._reconnect_allowed = cfg.reconnect
        self._reconnect_task: asyncio.Task[None] | None = None
        self._link_down = False  # TWS lost IB's servers (1100) though our socket is still up
        self._wakeups: set[asyncio.Event] = set()  # requests waiting on order news
        self._close_refs: set[str] = set()  # orderRefs sent by submit_close: reduce-only
        self._symbols: dict[int, str] = {}  # conId -> symbol, for orders sent by conId alone
        self._cancel_refusals: dict[str, str] = {}  # order_id -> why IB would not cancel it
        # TWS's "Read-Only API" setting refuses orders, cancels and order reads with 321: the
        # requests waiting on such a read learn it at once instead of timing out
        self._read_only_api: str | None = None
        self._refusal_waiters: set[asyncio.Event] = set()
        self._probe: Contract | None = None  # the what-if's contract while it is out
        self._listings: dict[int, _Listing] = {}  # conId -> qualified contract and ladder
        self._ladders: dict[int, tuple[tuple[Decimal, Decimal], ...]] = {}  # by market rule id
        # the last positions() read, when it started (in order news counted below) and ended
        self._book: list[Position] | None = None
        self._book_seq = 0
        self._book_at = 0.0
        self._news_seq = 0  # order status and fill news received, counted
        self._news_of: dict[int, int] = {}  # conId -> the count at its latest news
        # ib_async keys some requests by name ("positions", "openOrders"): two at once would
        # share one result list, so each kind runs one at a time; closes lock by id and instrument
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------------- connection

    async def connect(self, read_only: bool = False) -> None:
        self._untouched = False
        await self._halt_reconnecting()
        if self._connected and read_only == self._read_only:
            return
        if self._connected:
            self._drop()
        self._read_only = read_only
        self._wanted = True
        try:
            await self._open()
        except VenueError:
            self._wanted = False
            raise

    async def close(self) -> None:
        self._untouched = False
        self._wanted = False
        await self._halt_reconnecting()
        self._drop()

    def set_reconnect(self, allowed: bool) -> None:
        self._reconnect_allowed = allowed
        if not allowed:
            self._stop_reconnecting()
        elif self._wanted and not self._connected and self._reconnect_task is None:
            self._start_reconnecting()

    def subscribe(self, listener: VenueListener) -> None:
        self._listeners.append(listener)

    @property
    def connected(self) -> bool:
        return self._connected and self._ib.isConnected()

    async def _open(self) -> None:
        cfg = self.cfg
        where = f"TWS/Gateway at {cfg.host}:{cfg.port}"
        in_use: list[int] = []
        for client_id in dict.fromkeys([cfg.client_id, *cfg.spare_client_ids]):
            try:
                await self._open_as(client_id, where)
            except _ClientIdInUse:
                in_use.append(client_id)
                continue
            break
        else:
            raise VenueUnavailable(
                self.name,
                f"{where} refused client id(s) {', '.join(map(str, in_use))}: in use by another"
                " API client (another rollbot process, or a strategy); list free ids in"
                " spare_client_ids",
            )
        if in_use:
            log.warning(
                "%s: client id %s in use at %s; connected as %s",
                self.name,
                ", ".join(map(str, in_use)),
                where,
                client_id,
            )
        self.client_id = client_id

    async def _open_as(self, client_id: int, where: str) -> None:
        """Connect as `client_id`; _ClientIdInUse as soon as TWS says the id is taken (it then
        closes the socket, and ib_async would wait out the whole handshake timeout)."""
        cfg = self.cfg
        where = f"{where} (client id {client_id})"
        self._id_refused = refused = asyncio.Event()
        # a read-write connect reads this client's open orders, which a read-only API refuses:
        # said at once, not after the handshake timeout (a read-only connect reads none)
        self._read_only_api = None
        read_only_api = asyncio.Event()
        if not self._read_only:
            self._refusal_waiters.add(read_only_api)
        connecting = asyncio.ensure_future(
            self._ib.connectAsync(
                cfg.host,
                cfg.port,
                clientId=client_id,
                timeout=cfg.timeout_s,
                readonly=self._read_only,
                account=cfg.account,
                raiseSyncErrors=True,  # a half-synced session would weaken idempotency
            )
        )
        waiting = asyncio.ensure_future(refused.wait())
        api_refused = asyncio.ensure_future(read_only_api.wait())
        try:
            try:
                await asyncio.wait(
                    {connecting, waiting, api_refused}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:  # refused, or this call cancelled (kill switch stops a reconnect)
                if not connecting.done():
                    connecting.cancel()
                    await asyncio.gather(connecting, return_exceptions=True)  # ib_async tears down
            if read_only_api.is_set():
                raise self._read_only_refused(f"connecting to {where}")
            if refused.is_set():
                raise _ClientIdInUse(client_id)
            await connecting
        except TimeoutError:  # before OSError: TimeoutError is one
            raise VenueUnavailable(
                self.name,
                f"{where} did not finish the API handshake within {cfg.timeout_s:g}s "
                "(is the API enabled?)",
            ) from None
        except (OSError, ConnectionError) as e:
            raise VenueUnavailable(self.name, f"cannot connect to {where}: {e}") from None
        finally:
            waiting.cancel()
            api_refused.cancel()
            self._id_refused = None
            self._refusal_waiters.discard(read_only_api)
        managed = self._ib.managedAccounts()
        if cfg.account and cfg.account not in managed:
            self._ib.disconnect()
            raise VenueError(
                self.name,
                f"account {cfg.account!r} is not managed by this login "
                f"(it manages: {', '.join(managed) or 'none'})",
            )
        self._connected = True
        self._link_down = False

    def _drop(self) -> None:
        """Disconnect on purpose: no DISCONNECT event, no reconnect."""
        self._connected = False
        self._ib.disconnect()
        self._wake()

    def _start_reconnecting(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reconnect())
        self._reconnect_task = task
        # a done callback, not a finally: a task cancelled before its first step has none
        task.add_done_callback(self._reconnect_ended)

    def _reconnect_ended(self, task: asyncio.Task[None]) -> None:
        if self._reconnect_task is task:
            self._reconnect_task = None

    def _stop_reconnecting(self) -> None:
        # the task keeps its place until it has unwound, so connect() can wait for that
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()

    async def _halt_reconnecting(self) -> None:
        """Stop a reconnect attempt and wait until it has unwound: ib_async tears a cancelled
        connect down a loop tick later, which would otherwise cut the connection we open next."""
        task = self._reconnect_task
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            self._reconnect_ended(task)

    async def _reconnect(self) -> None:
        delays = self.cfg.reconnect_backoff_s or [1.0]
        for attempt in itertools.count(1):
            await asyncio.sleep(delays[min(attempt, len(delays)) - 1])
            if not (self._reconnect_allowed and self._wanted):
                return
            try:
                await self._open()
            except VenueError as e:
                self._emit(VenueEventKind.ERROR, message=f"reconnect attempt {attempt}: {e.detail}")
                continue
            self._emit(
                VenueEventKind.RECONNECT,
                message=f"reconnected to TWS/Gateway after {attempt} attempt(s)",
            )
            return

    async def _first_use(self) -> None:
        """Connect (read-write) on the first request of a venue nobody connected; once only: a
        failure is the request's answer, and later requests report "not connected"."""
        if self._untouched:
            async with self._lock("connect"):
                if self._untouched:
                    await self.connect()

    def _require_connected(self) -> None:
        if self.connected:
            return
        state = "reconnecting" if self._reconnect_task is not None else "not connected"
        raise VenueUnavailable(
            self.name, f"{state} to TWS/Gateway at {self.cfg.host}:{self.cfg.port}"
        )

    def _require_writable(self) -> None:
        self._require_connected()
        if self._read_only:
            raise UnsupportedOperation(
                self.name, "connected read-only: connect(read_only=False) to send or cancel orders"
            )

    # ----------------------------------------------------------------------------- reads

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

    # ---------------------------------------------------------------------------- writes

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
        held = [
            p
            for p in await self.positions()
            if p.market_price > 0
            and p.instrument.get("conId")
            and p.instrument.get("secType", "") in mapping.CLOSABLE_TYPES
        ]
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

    async def trading_permission(self) -> tuple[bool, str, str]:
        """(may trade and cancel, why, what to do), read without sending an order: a what-if
        order (Order.whatIf: TWS runs its credit check and answers with the margin impact; the
        order is never transmitted) for 1 of a held contract on its closing side, as a flatten
        would send, or of cfg.permission_probe when nothing is held. TWS's read-only API
        refuses it (321), as it refuses every order and cancel. Allowed on a read-only
        connection: it changes nothing at IB."""
        await self._first_use()
        self._require_connected()
        contract, action, label, account = await self._what_if_target()
        order = MarketOrder(action, 1.0)
        order.whatIf = True  # ib_async sets it again on its own copy; never sent without it
        order.account = account
        refusals: list[tuple[int, str]] = []
        refused = asyncio.Event()

        def on_error(req_id: int, code: int, text: str, about: object) -> None:
            # ib_async names the what-if's contract in its errors; notices are not answers
            if about is contract and code not in mapping.INFO_CODES and not 2100 <= code < 2200:
                refusals.append((code, text))
                refused.set()

        self._ib.errorEvent += on_error
        self._probe = contract
        try:
            state = await self._call(
                f"what-if order for {label}",
                lambda: self._what_if(contract, order, refused),
            )
        finally:
            self._ib.errorEvent -= on_error
            self._probe = None
        what = f"a what-if {action} 1 {label}"
        if refusals:
            code, text = refusals[0]
            if mapping.read_only_refusal(code, text):
                return (
                    False,
                    f"TWS refused {what}: its API is read-only (error {code}: {text})",
                    mapping.READ_ONLY_ACTION,
                )
            return (
                False,
                f"TWS refused {what} (error {code}: {text})",
                f"let account {account or 'of this login'} trade {label} at IBKR, or set"
                f" {self.name}'s permission_probe to a stock it trades",
            )
        margin = getattr(state, "initMarginChange", "")
        if not margin:
            raise VenueError(self.name, f"TWS ended {what} without an answer")
        return (
            True,
            f"TWS answered {what} with its margin impact (initial margin change {margin});"
            " nothing was transmitted",
            "",
        )

    async def _what_if(self, contract: Contract, order: IbOrder, refused: asyncio.Event) -> Any:
        """The what-if's OrderState, or None once TWS refused it (a 321 ends no request)."""
        answer = asyncio.ensure_future(self._ib.whatIfOrderAsync(contract, order))
        waiting = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({answer, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            if not answer.done():
                answer.cancel()
        return None if answer.cancelled() else answer.result()

    async def _what_if_target(self) -> tuple[Contract, str, str, str]:
        """(contract, action, label, account): a held contract's closing side, else BUY the
        probe stock. A what-if needs no price: a market order."""
        held = [
            p
            for p in await self.positions()
            if p.instrument.get("conId")
            and p.instrument.get("secType", "") in mapping.CLOSABLE_TYPES
        ]
        if held:
            position = held[0]
            listing = await self._listing(position)
            account = position.instrument.get("account", "") or self.cfg.account
            return listing.contract, position.closing_side.value, position.symbol, account
        probe = self.cfg.permission_probe
        details = await self._call(
            f"contract details {probe}",
            lambda: self._ib.reqContractDetailsAsync(
                Contract(symbol=probe, secType="STK", exchange="SMART", currency="USD")
            ),
        )
        if not details:
            raise VenueError(
                self.name,
                f"permission_probe {probe!r} is not a US stock IB knows: set the venue's"
                " permission_probe to one this account trades",
            )
        found = details[0].contract
        contract = Contract(
            conId=found.conId, exchange="SMART", primaryExchange=found.primaryExchange
        )
        return contract, "BUY", probe, self.cfg.account

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

    # --------------------------------------------------------------------- close helpers

    async def _listing(self, position: Position) -> _Listing:
        """The contract qualified by IB (once per conId): SMART routing where IB offers it, with
        the primary exchange for a stock (a direct-routed order trips TWS's order precautions),
        else the contract's own exchange (CME, IDEALPRO); and its price ladder, from the market
        rule of that exchange or, without one, the contract's minTick."""
        con_id = int(position.instrument["conId"])
        known = self._listings.get(con_id)
        if known is not None:
            return known
        details = await self._call(
            f"contract details {con_id}",
            lambda: self._ib.reqContractDetailsAsync(Contract(conId=con_id)),
        )
        if not details:
            raise RejectedForGood(
                self.name,
                f"contract {con_id} ({position.symbol}) is not known to IB: no security "
                "definition, nothing sent",
                str(mapping.NO_DEFINITION),
            )
        d = details[0]
        c = d.contract
        exchanges = [e for e in d.validExchanges.split(",") if e]
        exchange = (
            "SMART"
            if "SMART" in exchanges
            else (c.exchange or position.instrument.get("exchange", ""))
        )
        contract = Contract(
            conId=con_id,
            exchange=exchange,
            primaryExchange=c.primaryExchange if exchange == "SMART" else "",
        )
        # marketRuleIds line up with validExchanges: the rule of the exchange the order goes to
        rules = [r.strip() for r in d.marketRuleIds.split(",") if r.strip()]
        by_exchange = dict(zip(exchanges, rules, strict=False))
        rule = by_exchange.get(exchange) or (rules[0] if rules else "")
        ladder = await self._ladder(int(rule)) if rule.isdigit() else ()
        if not ladder:
            tick = mapping.decimal(d.minTick) or Decimal("0.01")
            ladder = ((Decimal(0), tick),)
        listing = _Listing(contract=contract, ladder=ladder)
        self._listings[con_id] = listing
        return listing

    async def _ladder(self, rule_id: int) -> tuple[tuple[Decimal, Decimal], ...]:
        known = self._ladders.get(rule_id)
        if known is not None:
            return known
        rows = await self._call(
            f"market rule {rule_id}", lambda: self._ib.reqMarketRuleAsync(rule_id)
        )
        ladder = tuple(
            sorted(
                (mapping.decimal(r.lowEdge), mapping.decimal(r.increment))
                for r in rows or []
                if r.increment > 0
            )
        )
        if ladder:
            self._ladders[rule_id] = ladder
        return ladder

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

    # ----------------------------------------------------------------------- lookups

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

    # ----------------------------------------------------------------- request plumbing

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _call(
        self, what: str, start: Callable[[], Awaitable[T]], refusable: bool = False
    ) -> T:
        """`refusable`: a request TWS refuses through a read-only API (321, with no request id
        to end it by): the refusal ends it, as TradingRefused."""
        self._require_connected()
        async with self._lock(what):
            self._require_connected()
            began = time.perf_counter()
            request = self._unless_read_only(what, start()) if refusable else start()
            try:
                result = await asyncio.wait_for(request, self.cfg.timeout_s)
            except TimeoutError:
                raise VenueUnavailable(
                    self.name, f"{what}: no answer from TWS within {self.cfg.timeout_s:g}s"
                ) from None
            except ConnectionError as e:
                raise VenueUnavailable(self.name, f"{what}: connection to TWS lost ({e})") from None
        self._emit_latency(what, began)
        return result

    async def _unless_read_only(self, what: str, request: Awaitable[T]) -> T:
        refused = asyncio.Event()
        self._refusal_waiters.add(refused)
        answer = asyncio.ensure_future(request)
        waiting = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({answer, waiting}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # timed out or cancelled: the request goes with it
            answer.cancel()
            raise
        finally:
            self._refusal_waiters.discard(refused)
            waiting.cancel()
        if answer.done():
            return answer.result()
        answer.cancel()
        raise self._read_only_refused(what)

    def _read_only_refused(self, what: str) -> TradingRefused:
        return TradingRefused(
            self.name,
            f"{what}: TWS answered that its API is read-only: {self._read_only_api}",
            str(mapping.VALIDATION),
            mapping.READ_ONLY_ACTION,
        )

    async def _wait_for(self, done: Callable[[], bool], what: str, unknown: str) -> None:
        """Wait until done() holds, woken by order news; outcome unknown on timeout or drop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.timeout_s
        while not done():
            if not self._connected:
                raise VenueUnavailable(self.name, f"connection lost waiting for {what}; {unknown}")
            left = deadline - loop.time()
            if left <= 0:
                raise VenueUnavailable(
                    self.name, f"no {what} within {self.cfg.timeout_s:g}s; {unknown}"
                )
            wake = asyncio.Event()
            self._wakeups.add(wake)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), left)
            finally:
                self._wakeups.discard(wake)

    def _wake(self) -> None:
        for wake in self._wakeups:
            wake.set()

    # --------------------------------------------------------------------------- events

    def _emit(self, kind: VenueEventKind, **fields: Any) -> None:
        event = VenueEvent(venue=self.name, kind=kind, **fields)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break order handling
                log.exception("venue %s: listener failed on %s", self.name, kind)

    def _emit_latency(self, what: str, began: float) -> None:
        ms = (time.perf_counter() - began) * 1000
        self._emit(VenueEventKind.LATENCY, message=what, value=round(ms, 3))

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

    def _on_disconnected(self) -> None:
        if not self._connected:
            return  # our own close(), or a failed connect attempt
        self._connected = False
        self._emit(VenueEventKind.DISCONNECT, message="connection to TWS/Gateway lost")
        self._wake()
        if self._reconnect_allowed and self._wanted and self._reconnect_task is None:
            self._start_reconnecting()

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
