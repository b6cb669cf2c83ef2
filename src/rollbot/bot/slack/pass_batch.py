"""Work that reaches one point in one pass of the event loop, done together.

A burst (a desk's kill storm) brings many requests at once, and each used to make its own
round trips to the database before its ack: the event loop stopped for each in turn, and the
last ack waited for them all (on PostgreSQL, most of a burst's time). Items submitted while the
loop runs one pass are written by one call at the start of the next (loop.call_soon): the
requests of that pass then make one transaction, one statement per table, between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class PassBatch(Generic[T, R]):
    """`submit(item)` resolves to the item's result from `write(items) -> results` (one result
    per item, in order). When `write` raises, every item of that call gets the exception and
    its request decides what to do (DatabaseBusy: try again, or cancel first)."""

    def __init__(self, write: Callable[[list[T]], list[R]], max_batch: int) -> None:
        self._write = write
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushing = False

    def submit(self, item: T) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._flushing:  # the requests already on their way here join this call
            self._flushing = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flushing = False
        batch = [p for p in self._pending if not p[1].done()]  # a cancelled request: dropped
        self._pending = []
        while batch:
            part, batch = batch[: self._max], batch[self._max :]
            try:
                results = self._write([item for item, _ in part])
            except Exception as exc:
                for _, future in part:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(part, results, strict=True):
                if not future.done():
                    future.set_result(result)
