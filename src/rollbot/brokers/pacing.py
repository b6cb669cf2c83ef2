"""Client-side message pacing, shared by every venue: IB disconnects a client that keeps sending
more than ~50 messages a second, and exchanges throttle the same way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """Lets `rate` acquisitions through per second on average and at most `capacity` at once.

    With capacity 1 the sends are spaced 1/rate apart, so no one-second window ever holds more
    than `rate` (+1 at the window's edge): a larger burst on top of the rate could briefly push a
    flatten over IB's limit, which is the pacing violation we are trying to avoid.
    Waiters are served in arrival order.
    """

    def __init__(
        self,
        rate: float,
        capacity: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.capacity = max(1.0, capacity)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> float:
        """Wait for a token; returns how long we waited, in seconds."""
        waited = 0.0
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                waited = (1 - self._tokens) / self.rate
                await self._sleep(waited)
                self._refill()
            # one exact wait, not a loop: float dust (or a timer firing a hair early) would
            # otherwise spin on ever smaller sleeps; the dust is carried as a debt instead
            self._tokens -= 1
        return waited
