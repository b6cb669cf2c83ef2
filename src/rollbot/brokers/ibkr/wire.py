"""The line to TWS / IB Gateway under every IBKR request: its state (connected, read-only,
reconnecting), the message pacing, one request at a time per kind, timeouts, the read-only API's
refusals, waiting on order news, and the venue's events.

IbkrVenue (venue.py) is built of layers, each a class on the one below and each in a module
named for what it holds: this wire, the session (session.py: connecting, client ids,
reconnecting), IB's trades as orders (trades.py), contracts (contracts.py), the reads
(reads.py), and on top of those the closes, the cancels and the permission check. Layers rather
than collaborators: every one of them works on the one ib_async connection and the same state
(connected, the order news, the locks), so each method moved as it was, wire calls and their
order unchanged, and what tests and commands read on the venue (`client_id`, `connected`) is
still on it. Each layer calls only down, so a layer reads whole with the ones below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rollbot.brokers.base import (
    TradingRefused,
    UnsupportedOperation,
    VenueEvent,
    VenueEventKind,
    VenueListener,
    VenueUnavailable,
)
from rollbot.brokers.ibkr import mapping
from rollbot.brokers.ibkr._ib import IB
from rollbot.brokers.listeners import deliver
from rollbot.brokers.pacing import TokenBucket
from rollbot.config import IbkrVenueConfig

# the venue's one logger, whichever of its modules speaks: log settings name it
log = logging.getLogger("rollbot.brokers.ibkr.venue")
T = TypeVar("T")


class IbWire:
    """Requests over the one ib_async connection, bounded by cfg.timeout_s."""

    def __init__(self, cfg: IbkrVenueConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._ib = IB()
        self._pacer = TokenBucket(cfg.max_msgs_per_sec)
        self._listeners: list[VenueListener] = []
        self._connected = False
        self._read_only = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._wakeups: set[asyncio.Event] = set()  # requests waiting on order news
        # TWS's "Read-Only API" setting refuses orders, cancels and order reads with 321: the
        # requests waiting on such a read learn it at once instead of timing out
        self._read_only_api: str | None = None
        self._refusal_waiters: set[asyncio.Event] = set()
        # ib_async keys some requests by name ("positions", "openOrders"): two at once would
        # share one result list, so each kind runs one at a time; closes lock by id and instrument
        self._locks: dict[str, asyncio.Lock] = {}

    def subscribe(self, listener: VenueListener) -> None:
        self._listeners.append(listener)

    @property
    def connected(self) -> bool:
        return self._connected and self._ib.isConnected()

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
        deliver(VenueEvent(venue=self.name, kind=kind, **fields), self._listeners, log)

    def _emit_latency(self, what: str, began: float) -> None:
        ms = (time.perf_counter() - began) * 1000
        self._emit(VenueEventKind.LATENCY, message=what, value=round(ms, 3))
