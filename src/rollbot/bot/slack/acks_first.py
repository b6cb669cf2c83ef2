"""Acks before the work that can wait.

One event loop acks every request and runs what the requests started. In a burst (several
people typing /kill at once, a desk refreshing /positions) the work started by the first
requests — reading venues, posting to Slack, a kill's later steps — used to run between the
acks of the later ones, and pushed them past 100 ms. Requests waiting for their ack are
counted here; the work after an ack, and the courier's posts, wait until none is waiting, for
at most a bound: a kill's run at most KILL_WAIT_S, anything else at most OTHER_WAIT_S. A kill's
hold is stored before its ack, so nothing a kill needs before the hold waits here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

KILL_WAIT_S = 0.1
OTHER_WAIT_S = 0.5


class AcksFirst:
    def __init__(self) -> None:
        self.waiting = 0
        self._none_waiting = asyncio.Event()
        self._none_waiting.set()

    @contextmanager
    def acking(self) -> Iterator[None]:
        """Around one request, from its arrival to its ack."""
        self.waiting += 1
        self._none_waiting.clear()
        try:
            yield
        finally:
            self.waiting -= 1
            if self.waiting <= 0:
                self.waiting = 0
                self._none_waiting.set()

    async def after_acks(self, at_most: float = OTHER_WAIT_S) -> None:
        """Until no request waits for its ack, or `at_most` seconds."""
        if not self.waiting:
            return
        try:
            async with asyncio.timeout(at_most):
                await self._none_waiting.wait()
        except TimeoutError:
            pass
