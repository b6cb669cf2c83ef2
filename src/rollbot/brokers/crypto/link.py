"""The link to one venue: every ccxt request goes through `Link.call`.

A call is timed (LATENCY), rate-limit answers are retried with backoff (one PACING event
each, counted), ccxt exceptions become VenueError subclasses, and transport failures mark
the link down (DISCONNECT) until a request answers again (RECONNECT). With reconnecting
forbidden, a down or closed link refuses requests locally instead of trying the venue.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rollbot.brokers.base import (
    Order,
    VenueEvent,
    VenueEventKind,
    VenueListener,
    VenueUnavailable,
)
from rollbot.brokers.crypto.errors import map_ccxt_error
from rollbot.brokers.listeners import deliver
from rollbot.clock import Clock

log = logging.getLogger(__name__)


class Link:
    def __init__(
        self,
        venue: str,
        exchange: Any,
        clock: Clock,
        backoff_s: Sequence[float],
        secrets: Sequence[str],
    ) -> None:
        self.venue = venue
        self.exchange = exchange
        self.clock = clock
        self.backoff = tuple(backoff_s)
        self.secrets = tuple(s for s in secrets if s)  # for redaction only
        self.listeners: list[VenueListener] = []
        self.counts: Counter[str] = Counter()  # requests, pacing, disconnect, error...
        self.reconnect_allowed = True
        self.down = False  # the last request failed at the transport level
        self.closed = False
        self.on_reopen: list[Callable[[], None]] = []

    async def close(self) -> None:
        self.closed = True
        await self.exchange.close()

    def reopen(self) -> None:
        """ccxt refuses to reopen by itself after close(): give it a session on the running
        loop, which may be a new one (a CLI command per asyncio.run)."""
        self.exchange.asyncio_loop = None
        self.exchange.open()
        self.closed = False
        for hook in self.on_reopen:
            hook()

    def connected_by_request(self) -> None:
        """An explicit connect: always allowed, even with reconnecting forbidden."""
        if self.closed:
            self.reopen()
        if self.down:
            self.down = False
            self.emit(VenueEventKind.RECONNECT, message="connect requested")

    async def call(self, label: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        import ccxt

        if (self.down or self.closed) and not self.reconnect_allowed:
            state = "closed" if self.closed else "disconnected"
            raise VenueUnavailable(self.venue, f"{state} and reconnecting is not allowed")
        if self.closed:
            self.reopen()
        attempt = 0
        while True:
            self.counts["requests"] += 1
            started = time.perf_counter()
            try:
                result = await fn(*args)
            except ccxt.BaseError as exc:
                mapped = map_ccxt_error(self.venue, exc, self.secrets)
                error, kind = mapped.error, mapped.event
                if kind is VenueEventKind.PACING:
                    self.counts["pacing"] += 1
                    retry = attempt < len(self.backoff)
                    note = f"; retry {attempt + 1} of {len(self.backoff)}" if retry else ""
                    message = f"{label}: {error.detail}{note}"
                    self.emit(kind, code=error.code, message=message, value=attempt + 1)
                    if retry:
                        await self.clock.sleep(self.backoff[attempt])
                        attempt += 1
                        continue
                elif kind is not None and kind is not VenueEventKind.REJECT:
                    # a REJECT needs the order: the caller that sent one emits it
                    if kind is VenueEventKind.DISCONNECT:
                        self.down = True
                    self.counts[kind.value.lower()] += 1
                    self.emit(kind, code=error.code, message=f"{label}: {error.detail}")
                raise error from None
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.emit(VenueEventKind.LATENCY, message=label, value=round(elapsed_ms, 3))
            if self.down:
                self.down = False
                self.emit(VenueEventKind.RECONNECT, message=f"{label} answered")
            return result

    def emit(
        self,
        kind: VenueEventKind,
        *,
        code: str | None = None,
        message: str = "",
        value: float | None = None,
        order: Order | None = None,
    ) -> None:
        event = VenueEvent(
            venue=self.venue,
            kind=kind,
            code=code,
            message=message,
            value=value,
            order=order,
            at=self.clock.now(),
        )
        deliver(event, self.listeners, log)
