"""Injectable time. Production reads the system clock; tests move a ManualClock by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from rollbot.iso_time import iso as iso
from rollbot.iso_time import parse_iso as parse_iso


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        import asyncio  # here: a kill stores its hold before asyncio (and ssl) is imported

        await asyncio.sleep(seconds)


class ManualClock:
    """Time moves only when the test says so; sleep() yields, then advances time by itself."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        self._now += timedelta(seconds=seconds, **delta)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(0)
        self._now += timedelta(seconds=seconds)
