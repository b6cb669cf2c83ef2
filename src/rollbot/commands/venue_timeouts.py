"""Every venue call the engine makes answers in bounded time. A venue that stops answering (a
gateway that accepts the connection and never replies) is then unreachable, as a refused
connection is: the step reports it, the flatten gives up at its deadline, the rollback ends and
escalates — instead of waiting on one call for ever."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, cast

from rollbot.brokers.base import Venue, VenueUnavailable


class BoundedVenue:
    """The venue, with each coroutine method cut off after `timeout_s` (VenueUnavailable)."""

    def __init__(self, venue: Venue, timeout_s: float) -> None:
        self._venue = venue
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._venue, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        return self._bounded(attr)

    def _bounded(self, call: Callable[..., Any]) -> Callable[..., Any]:
        async def bounded(*args: Any, **kw: Any) -> Any:
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await call(*args, **kw)
            except TimeoutError:
                raise VenueUnavailable(
                    self._venue.name, f"no answer within {self._timeout_s:g} s"
                ) from None

        return bounded


def bounded(venue: Venue, timeout_s: float) -> Venue:
    return cast(Venue, BoundedVenue(venue, timeout_s))
