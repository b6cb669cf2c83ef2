"""Every venue call the engine makes answers in bounded time, and fails only as a VenueError
naming the venue. A venue that stops answering (a gateway that accepts the connection and never
replies) is then unreachable, as a refused connection is; a venue library that raises something
of its own (a KeyError, a ccxt type we do not map, a config error found at build time) is a
failure of that venue alone: the step reports it by name, the other venues carry on, the kill
still cancels everywhere else — instead of one call waiting for ever or one traceback ending
the run."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, cast

from rollbot.brokers.base import Venue, VenueError, VenueUnavailable


def contained(venue: str, exc: BaseException) -> VenueError:
    """Any exception from a venue call, as that venue's failure (VenueErrors pass as they are)."""
    if isinstance(exc, VenueError):
        return exc
    text = str(exc).strip()
    return VenueError(venue, f"unexpected {type(exc).__name__}" + (f": {text}" if text else ""))


class BoundedVenue:
    """The venue, with each coroutine method cut off after `timeout_s` (VenueUnavailable) and
    every exception it raises turned into a VenueError naming it."""

    def __init__(self, venue: Venue, timeout_s: float) -> None:
        self._venue = venue
        self._timeout_s = timeout_s
        self.name = venue.name

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._venue, name)
        if inspect.iscoroutinefunction(attr):
            return self._bounded(attr)
        if callable(attr):
            return self._contained(attr)
        return attr

    def _bounded(self, call: Callable[..., Any]) -> Callable[..., Any]:
        async def bounded(*args: Any, **kw: Any) -> Any:
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await call(*args, **kw)
            except TimeoutError:
                raise VenueUnavailable(
                    self.name, f"no answer within {self._timeout_s:g} s"
                ) from None
            except Exception as exc:  # a venue library's own error: this venue fails, alone
                raise contained(self.name, exc) from exc

        return bounded

    def _contained(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def plain(*args: Any, **kw: Any) -> Any:
            try:
                return call(*args, **kw)
            except Exception as exc:
                raise contained(self.name, exc) from exc

        return plain


class BrokenVenue:
    """A configured venue that could not even be built (a credential variable unset, a
    library that failed to load): every call fails as that venue's VenueUnavailable, so a kill
    reports it by name and still cancels on every other venue."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why

    def _fail(self) -> VenueUnavailable:
        return VenueUnavailable(self.name, f"venue could not be set up: {self.why}")

    async def connect(self, read_only: bool = False) -> None:
        raise self._fail()

    async def close(self) -> None:
        return None

    async def account(self) -> Any:
        raise self._fail()

    async def positions(self) -> Any:
        raise self._fail()

    async def open_orders(self) -> Any:
        raise self._fail()

    async def cancel_all(self) -> Any:
        raise self._fail()

    async def submit_close(self, request: Any) -> Any:
        raise self._fail()

    async def order_by_client_id(self, client_order_id: str) -> Any:
        raise self._fail()

    async def cancel_order(self, order_id: str) -> None:
        raise self._fail()

    def set_reconnect(self, allowed: bool) -> None:
        return None

    def subscribe(self, listener: Any) -> None:
        return None


def bounded(venue: Venue, timeout_s: float) -> Venue:
    return cast(Venue, BoundedVenue(venue, timeout_s))
