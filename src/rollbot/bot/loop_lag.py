"""The event loop's lag: how late a sleeper on the loop wakes. Every ack, cancel and page waits
behind whatever holds the loop, so anything that holds it longer than a few milliseconds
(a sweep over the whole history, a burst of CPU in the kill path) shows here first.

A task sleeps `interval_s` again and again; what it oversleeps is the lag. /metrics exposes
it as a histogram (rollbot_event_loop_lag_seconds) and as the median, p99 and max of the last
`window` samples (rollbot_event_loop_lag_recent_seconds{quantile=...}), the figure a bench or
a dashboard reads without bucket rounding.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
QUANTILES = (0.5, 0.99, 1.0)


def quantile(samples: list[float], q: float) -> float:
    """Nearest rank: an observed sample, never an interpolation between two."""
    if not samples:
        return 0.0
    xs = sorted(samples)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


class LoopLagProbe(Collector):
    def __init__(self, interval_s: float = 0.01, window: int = 3000) -> None:
        self.interval_s = interval_s
        self.recent: deque[float] = deque(maxlen=window)  # the last 30 s at 10 ms
        self.histogram: Histogram | None = None

    def register(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "rollbot_event_loop_lag_seconds",
            "How late the event loop woke a sleeper (what holds acks and cancels back)",
            buckets=BUCKETS,
            registry=registry,
        )
        registry.register(self)

    def record(self, lag_s: float) -> None:
        self.recent.append(lag_s)
        if self.histogram is not None:
            self.histogram.observe(lag_s)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.record(max(0.0, time.perf_counter() - before - self.interval_s))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        samples = list(self.recent)
        recent = GaugeMetricFamily(
            "rollbot_event_loop_lag_recent_seconds",
            f"Event loop lag over the last {len(samples)} samples, by quantile (1 = max)",
            labels=["quantile"],
        )
        for q in QUANTILES:
            recent.add_metric([f"{q:g}"], quantile(samples, q))
        yield recent
