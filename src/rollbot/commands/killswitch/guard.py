"""The pre-trade guard a trading system calls before every order, in-process (`check_order`) or
over the guard service. Fails closed; fast enough for every order.

Speed without staleness: the holds are re-read only when a commit happened (the wal-index
header's bytes moved, storage/wal_index.py; SQLite's `PRAGMA data_version` where that header
cannot be read) or this connection's own change count moved, and the gates files
are re-parsed only when their stat (inode, size, mtime, ctime) changed; rollbot writes them by
rename, so every write it makes is a new inode. The database file is stat-ed on every call too:
moved away or replaced, the answer is STATE_UNAVAILABLE, never the old file's.

Under REDUCING (or with the live gates off) an order passes only if it shrinks the position as
rollbot last read it from the venue (re-read when older than POSITION_MAX_AGE), counting what the
guard already allowed and has not yet seen filled or cancelled (storage/reservations.py)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rollbot.brokers.base import Order, Position, Side, Venue
from rollbot.clock import Clock, iso
from rollbot.commands.killswitch.gates import Gates
from rollbot.commands.killswitch.trading_state import (
    NAME,
    TradingState,
    is_reducing,
    scopes_over,
    strictest,
)
from rollbot.errors import StateUnavailable
from rollbot.file_watch import FileWatch
from rollbot.storage.db import Database
from rollbot.storage.reservations import Reservations
from rollbot.storage.wal_index import WalIndexHead

if TYPE_CHECKING:
    import asyncio  # imported where used: a kill stores its hold before asyncio loads

log = logging.getLogger(__name__)
POSITION_MAX_AGE = timedelta(seconds=2)  # a venue read older than this is read again first
SEND_GRACE_S = 60.0  # a read this soon after a check may not show the order yet: keep it
VENUE_READ_TIMEOUT_S = 5.0
MAX_VERDICTS = 4096


class Decision(BaseModel):
    allowed: bool
    code: str
    state: TradingState
    reason: str = ""
    position: str | None = None  # under REDUCING: the venue's position the order was held to
    reserved: str | None = None  # ... and what was already allowed against it, this one included
    reservation_id: int | None = None


def refuse(code: str, reason: str, state: TradingState = TradingState.HALTED) -> Decision:
    return Decision(allowed=False, code=code, state=state, reason=reason)


CANCEL = Decision(allowed=True, code="CANCEL_ALWAYS_ALLOWED", state=TradingState.ACTIVE)
ALLOWED = Decision(allowed=True, code="OK", state=TradingState.ACTIVE)
HALTED = refuse("HALTED", "trading is halted; only cancels pass")
_ZERO = Decimal(0)
_SIDES: dict[Any, Side] = {s: s for s in Side} | {s.value: s for s in Side}


def _number(value: Any) -> Any:
    """int and Decimal go to Decimal as they are; anything else as its text (a float's too)."""
    return value if type(value) is int else str(value)


HELD_SCOPES_SQL = (
    "SELECT scope, MAX(CASE WHEN state = 'HALTED' THEN 1 ELSE 0 END) AS halted FROM holds"
    " WHERE cleared_at IS NULL GROUP BY scope"
)


class StateCache:
    """The strictest state per held scope, re-read only when the database changed."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._path = os.fspath(db.path)
        # moved away or replaced? asked of the kernel, stat()ed only when it says so
        sqlite = db.dialect == "sqlite" and db.inode is not None
        self.moves = FileWatch([db.path] if sqlite else [])
        # "committed since?" from the wal-index header's bytes (storage/wal_index.py)
        self.head = WalIndexHead(db.path) if sqlite else None
        self.moves_seen = -1
        self._version: Any = None
        self._changes = -1
        self.states: dict[str, TradingState] = {}
        self.folded: dict[str, str] = {}  # casefolded scope -> the held scope
        # what the holds decide per (venue, account, strategy), valid until they are re-read:
        # the hot path then looks one key up instead of building and comparing scope names
        self.verdicts: dict[tuple[str, str | None, str | None], Any] = {}

    def current(self) -> dict[str, TradingState]:
        db = self.db
        moves = self.moves.generation()
        if moves != self.moves_seen:
            try:
                if db.inode is not None and os.stat(self._path).st_ino != db.inode:
                    raise StateUnavailable(f"database {db.path} was moved away or replaced")
            except FileNotFoundError:
                raise StateUnavailable(f"database {db.path} no longer exists") from None
            self.moves_seen = moves
        if self.head is None:  # no cheap "did anyone commit" counter: read them again
            return self._reread(db.query(HELD_SCOPES_SQL), None, -1)
        conn = db.conn
        # read before the holds are: a commit after this read moves it for the next check
        version = self.head.read() or conn.execute("PRAGMA data_version").fetchone()[0]
        changes = conn.total_changes
        if version != self._version or changes != self._changes:
            self._reread(conn.execute(HELD_SCOPES_SQL).fetchall(), version, changes)
        return self.states

    def _reread(self, rows: Any, version: Any, changes: int) -> dict[str, TradingState]:
        # one row per held scope, however many kills hold it (each kill is its own hold)
        states = {}
        for row in rows:
            scope, halted = (row["scope"], row["halted"]) if isinstance(row, dict) else row
            states[scope] = TradingState.HALTED if halted else TradingState.REDUCING
        if version is not None or states != self.states:  # verdicts follow from the states
            self.verdicts = {}
        self.states = states
        self.folded = {s.casefold(): s for s in self.states}
        self._version, self._changes = version, changes
        return self.states


class GateCache:
    """`Gates.read()` again only when its cache key moved (either file's stat; with the gates
    agent, a few times a second)."""

    def __init__(self, gates: Gates | None) -> None:
        self.gates = gates
        self._key: Any = None
        self._open = False
        # edited in place or renamed over (the gates agent's are rows: read a few times a second)
        files = [gates.live_path, gates.shadow_path] if isinstance(gates, Gates) else []
        self.edits = FileWatch(files, content=True)
        self.edits_seen = -1

    def live_allowed(self) -> bool:
        if self.gates is None:
            return True
        edits = self.edits.generation()
        if edits != self.edits_seen:
            key = self.gates.cache_key()
            if key != self._key:
                self._open = self.gates.read().live_allowed
                self._key = key
            self.edits_seen = edits
        return self._open


VenueRead = tuple[list[Order], list[Position]]


class Guard:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        gates: Gates | None,
        venue_names: list[str] | None = None,
        *,
        fresh_venue: Callable[[str], Venue] | None = None,
        live_venue: Callable[[str], Venue] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.venue_names = venue_names
        self.state_cache = StateCache(db)
        self.gate_cache = GateCache(gates)
        self.reservations = Reservations(db)
        self.fresh_venue = fresh_venue  # built for one sync read (its own event loop)
        self.live_venue = live_venue  # the process's venue, read on the running loop
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    # -- the decision -----------------------------------------------------------------------
    @property
    def watched(self) -> bool:
        """Whether the kernel tells this guard of file changes (else it stats per check)."""
        return self.state_cache.moves.watching and self.gate_cache.edits.watching

    def check(
        self,
        venue: str,
        symbol: str,
        side: Any,
        quantity: Any,
        position: Any = 0,  # checked, never trusted: the venue's read is what counts
        account: str | None = None,
        strategy: str | None = None,
        cancel: bool = False,
        order_id: str | None = None,
    ) -> Decision:
        # the parameters are spelled out, not **kw: a dict built and unpacked twice per check
        # was a quarter of the in-process check's time (bench/guard_latency.py)
        first = self._fast(
            venue, symbol, side, quantity, position, account, strategy, cancel, order_id
        )
        if not isinstance(first, _NeedsPosition):
            return first
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:  # never block the caller's event loop on a venue
            self._refresh_soon(loop, venue)
            return _unreadable(first, TimeoutError("being read again now; ask again"))
        try:
            self._store(venue, *asyncio.run(self._read_fresh(venue)))
        except Exception as exc:
            return _unreadable(first, exc)
        return self._reserve(first)

    def check_now(
        self,
        venue: str,
        symbol: str,
        side: Any,
        quantity: Any,
        position: Any = 0,
        account: str | None = None,
        strategy: str | None = None,
        cancel: bool = False,
        order_id: str | None = None,
    ) -> Decision | None:
        """The decision without awaiting anything, or None when the venue must be read first
        (then `check_async`): the guard service's fast path."""
        first = self._fast(
            venue, symbol, side, quantity, position, account, strategy, cancel, order_id
        )
        return None if isinstance(first, _NeedsPosition) else first

    async def check_async(
        self,
        venue: str,
        symbol: str,
        side: Any,
        quantity: Any,
        position: Any = 0,
        account: str | None = None,
        strategy: str | None = None,
        cancel: bool = False,
        order_id: str | None = None,
    ) -> Decision:
        first = self._fast(
            venue, symbol, side, quantity, position, account, strategy, cancel, order_id
        )
        if not isinstance(first, _NeedsPosition):
            return first
        try:
            self._store(venue, *await self._read(self._venue(venue, fresh=False)))
        except Exception as exc:
            return _unreadable(first, exc)
        return self._reserve(first)

    def _fast(
        self,
        venue: str,
        symbol: str,
        side: Any,
        quantity: Any,
        position: Any,
        account: str | None,
        strategy: str | None,
        cancel: bool,
        order_id: str | None,
    ) -> Decision | _NeedsPosition:
        """The decision from what is known now; _NeedsPosition only when the order can pass as
        a reduction and the venue's position must be read first (each entry reads it its way)."""
        first = self._decide(
            venue, symbol, side, quantity, position, account, strategy, cancel, order_id
        )
        if isinstance(first, _NeedsPosition) and not self._stale(venue):
            return self._reserve(first)
        return first

    def _decide(
        self,
        venue: str,
        symbol: str,
        side: Any,
        quantity: Any,
        position: Any,
        account: str | None,
        strategy: str | None,
        cancel: bool,
        order_id: str | None,
    ) -> Decision | _NeedsPosition:
        # the hot path: every order of a trading system passes here (bench/guard_latency.py)
        if cancel:
            return CANCEL
        try:
            side = _SIDES.get(side) or Side(str(side).upper())
            qty = quantity if type(quantity) is Decimal else Decimal(_number(quantity))
            if type(position) is int and not position:  # the default: no Decimal to build
                pos = _ZERO
            else:
                pos = position if type(position) is Decimal else Decimal(_number(position))
        except (ValueError, ArithmeticError, TypeError):
            return refuse("BAD_ORDER", "side must be BUY or SELL and quantities numeric")
        if not (qty.is_finite() and pos.is_finite()):  # NaN/Infinity: compare would raise
            return refuse("BAD_ORDER", "quantity and position must be finite numbers")
        if qty <= 0:
            return refuse("BAD_ORDER", "quantity must be positive")
        if self.venue_names is not None and venue not in self.venue_names:
            return refuse(
                "UNKNOWN_VENUE",
                f"unknown venue {venue!r} (configured: {', '.join(self.venue_names)})",
            )
        if type(symbol) is not str or not symbol or symbol != symbol.strip():
            return refuse("BAD_ORDER", f"symbol {symbol!r} must be a name without spaces")
        if account is not None and not NAME.match(account):
            return refuse("BAD_NAME", f"account {account!r}: letters, digits and ._@- only")
        if strategy is not None and not NAME.match(strategy):
            return refuse("BAD_NAME", f"strategy {strategy!r}: letters, digits and ._@- only")
        if order_id is not None and (not order_id or order_id != order_id.strip()):
            return refuse("BAD_ORDER", f"order_id {order_id!r} must be a non-empty id")
        cache = self.state_cache
        try:
            cache.current()
            gates_open = self.gate_cache.live_allowed()
        except Exception as exc:  # any failure to read state must refuse
            return refuse("STATE_UNAVAILABLE", f"trading state cannot be read: {exc}")
        key = (venue, account, strategy)
        state = cache.verdicts.get(key)
        if state is None:
            if len(cache.verdicts) >= MAX_VERDICTS:  # callers name accounts and strategies
                cache.verdicts.clear()
            state = cache.verdicts[key] = _held(cache, venue, account, strategy)
        if type(state) is Decision:  # a name that differs from a held one only in case
            return state
        if state is TradingState.HALTED:
            return HALTED
        if state is TradingState.ACTIVE and gates_open:
            return ALLOWED
        return _NeedsPosition(venue, symbol, side, qty, order_id, state, gates_open)

    def _reserve(self, ask: _NeedsPosition) -> Decision:
        """Under the write lock, so two processes cannot both spend the same position."""
        try:
            with self.db.write():
                pos = self.reservations.position(ask.venue, ask.symbol)
                reserved = self.reservations.reserved(ask.venue, ask.symbol)
                reduces, code = is_reducing(pos, ask.side, ask.qty)
                if reduces and ask.qty + reserved > abs(pos):
                    reduces, code = False, "REDUCING_RESERVED"
                if not reduces:
                    return self._not_reducing(ask, code, pos, reserved)
                rid = self.reservations.reserve(
                    ask.venue, ask.symbol, ask.side.value, ask.qty, ask.order_id, self.clock.now()
                )
        except Exception as exc:
            return _unreadable(ask, exc)
        return Decision(
            allowed=True,
            code="OK_REDUCES",
            state=ask.state,
            position=str(pos),
            reserved=str(reserved + ask.qty),
            reservation_id=rid,
        )

    def _not_reducing(
        self, ask: _NeedsPosition, code: str, pos: Decimal, reserved: Decimal
    ) -> Decision:
        read = self.reservations.read_at(ask.venue)
        where = f"{ask.venue} read at {iso(read) if read else 'never'}"
        if code == "REDUCING_RESERVED":
            reason = (
                f"position {pos} ({where}) less {reserved} already allowed and not yet seen"
                f" filled or cancelled leaves {abs(pos) - reserved}: {ask.qty} more would flip it"
            )
        else:
            reason = f"position {pos} ({where}): only orders that shrink it (never flip it) pass"
        if ask.state is TradingState.ACTIVE and not ask.gates_open:
            code = "LIVE_GATES_DISABLED"
            reason = "live trading gates are disabled (shadow/dry-run mode); " + reason
        return Decision(
            allowed=False,
            code=code,
            state=ask.state,
            reason=reason,
            position=str(pos),
            reserved=str(reserved),
        )

    # -- the venue's position ---------------------------------------------------------------
    def _stale(self, venue: str) -> bool:
        """True also when the last read cannot be looked up: then reading again decides."""
        try:
            read = self.reservations.read_at(venue)
        except Exception:  # the venue read that follows fails closed if need be
            return True
        return read is None or self.clock.now() - read > POSITION_MAX_AGE

    def _venue(self, name: str, *, fresh: bool) -> Venue:
        source = self.fresh_venue if fresh else self.live_venue
        if source is None:
            raise StateUnavailable(f"no way to read venue {name!r} here")
        return source(name)

    async def _read(self, venue: Venue) -> tuple[Any, ...]:
        """Orders before positions: an order gone from the first read filled (or was cancelled)
        before the second, so its fill is in the position read."""
        import asyncio

        started = self.clock.now()
        async with asyncio.timeout(VENUE_READ_TIMEOUT_S):
            orders = await venue.open_orders()
            positions = await venue.positions()
        return started, orders, positions

    async def _read_fresh(self, name: str) -> tuple[Any, ...]:
        venue = self._venue(name, fresh=True)
        try:
            return await self._read(venue)
        finally:
            with contextlib.suppress(Exception):  # a read-only venue built for this read
                await venue.close()

    def _store(self, venue: str, started: Any, orders: list[Order], positions: Any) -> None:
        self.reservations.store_read(
            venue,
            started,
            {p.symbol: p.quantity for p in positions},
            [(o.order_id, o.client_order_id, o.symbol, o.side.value, o.remaining) for o in orders],
            SEND_GRACE_S,
        )

    def _refresh_soon(self, loop: asyncio.AbstractEventLoop, venue: str) -> None:
        if venue in self._refreshing:
            return
        task = loop.create_task(self.refresh(venue))
        self._refreshing[venue] = task
        task.add_done_callback(lambda t: self._done_refreshing(venue, t))

    def _done_refreshing(self, venue: str, task: asyncio.Task[None]) -> None:
        self._refreshing.pop(venue, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("guard: reading %s failed: %s", venue, task.exception())

    async def refresh(self, venue: str) -> None:
        """Read the venue now (the service does this for a venue under REDUCING)."""
        self._store(venue, *await self._read(self._venue(venue, fresh=False)))

    def release(self, order_id: str, reason: str, venue: str | None = None) -> int:
        """The trading system says this order is done (filled, cancelled, rejected, not sent)."""
        if not order_id or order_id != order_id.strip():
            raise ValueError(f"order_id {order_id!r} must be a non-empty id")
        return self.reservations.release(order_id, reason, self.clock.now(), venue)


def _held(
    cache: StateCache, venue: str, account: str | None, strategy: str | None
) -> TradingState | Decision:
    """The strictest hold over these scopes, or the refusal of a name held in another case."""
    states = cache.states
    if not states:
        return TradingState.ACTIVE
    scopes = scopes_over(venue, account, strategy)
    for s in scopes:  # "MA" when "strategy:ma" is held is not a different strategy
        twin = cache.folded.get(s.casefold())
        if twin is not None and twin != s:
            return refuse("UNKNOWN_NAME", f"{s!r} is not held but {twin!r} is: names are exact")
    return strictest([states[s] for s in scopes if s in states])


class _NeedsPosition:
    """The holds allow this order only if it reduces: measure it against the venue's read."""

    __slots__ = ("gates_open", "order_id", "qty", "side", "state", "symbol", "venue")

    def __init__(
        self,
        venue: str,
        symbol: str,
        side: Side,
        qty: Decimal,
        order_id: str | None,
        state: TradingState,
        gates_open: bool,
    ) -> None:
        self.venue, self.symbol, self.side, self.qty = venue, symbol, side, qty
        self.order_id, self.state, self.gates_open = order_id, state, gates_open


def _unreadable(ask: _NeedsPosition, exc: Exception) -> Decision:
    """The order could pass only as a reduction, and that cannot be measured: refuse."""
    why = (
        f"the position at {ask.venue} and what the guard already allowed there cannot be read"
        f" ({exc}); a reducing order is measured against the venue's position, never the"
        " caller's"
    )
    if ask.state is TradingState.ACTIVE and not ask.gates_open:
        return refuse(
            "LIVE_GATES_DISABLED",
            f"live trading gates are disabled (shadow/dry-run mode), and {why}",
            ask.state,
        )
    return refuse("POSITION_UNAVAILABLE", why, ask.state)
