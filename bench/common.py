"""What every benchmark shares: the Figure record (samples -> median, p99, target, ratio),
the machine description, generated paper books, settings for the loopback bot, and RSS."""

from __future__ import annotations

import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, computed_field, field_validator

from rollbot.brokers.base import OrderType, Side
from rollbot.brokers.paper.book import PaperBook
from rollbot.brokers.paper.scenario import (
    Scenario,
    ScenarioAccount,
    ScenarioOrder,
    ScenarioPosition,
)
from rollbot.clock import SystemClock
from rollbot.config import (
    ApprovalsConfig,
    DatabaseConfig,
    PaperVenueConfig,
    PathsConfig,
    Settings,
    SlackConfig,
    VenueConfig,
)

OPS = "C0OPS"
OPERATOR = "U0OPERATOR"
RISK = "U0RISK"

Stat = Literal["p99", "median"]


def percentile(samples: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if not samples:
        raise ValueError("no samples")
    xs = sorted(samples)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class Figure(BaseModel):
    """One measured quantity over repeated runs, judged on `judged_on` against `target`."""

    key: str
    title: str
    unit: str
    samples: list[float]
    target: float | None = None  # None: reported for information, nothing to miss
    judged_on: Stat = "p99"
    target_text: str = ""
    bound: float | None = None  # a physical lower bound (pacing), when there is one
    note: str = ""

    @field_validator("samples")
    @classmethod
    def _six_digits(cls, samples: list[float]) -> list[float]:
        """More would be noise, and would bloat results.json."""
        return [float(f"{x:.6g}") for x in samples]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def runs(self) -> int:
        return len(self.samples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ratio(self) -> float | None:
        """The judged statistic over the target: <= 1 meets it."""
        if not self.target:
            return None
        value = self.p99 if self.judged_on == "p99" else self.median
        return value / self.target

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.ratio is None or self.ratio <= 1

    def miss(self) -> str | None:
        if self.ok:
            return None
        value = self.p99 if self.judged_on == "p99" else self.median
        return (
            f"{self.title}: {self.judged_on} {value:.3g} {self.unit} misses the target"
            f" {self.target_text or self.target} ({self.ratio:.2f} x)"
        )


# -- the machine ------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    mem_kib = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_at_start": [round(x, 2) for x in load],
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def rss_mib(pid: int | None = None) -> float:
    """Resident set size from /proc/<pid>/status (VmRSS)."""
    status = _read(f"/proc/{pid or 'self'}/status")
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid or 'self'} (is /proc mounted?)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/<pid>/stat), in clock-tick resolution."""
    fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- generated paper books --------------------------------------------------------------------
def book_scenario(
    *, positions: int, orders: int, seed: int, name: str = "bench", cash: int = 10_000_000
) -> Scenario:
    """A desk with `positions` open positions (long and short) and `orders` resting limit and
    stop orders far from the mark, so nothing fills until someone closes or cancels."""
    rng = random.Random(seed)
    symbols = [f"S{i:04d}" for i in range(max(positions, 1))]
    pos = []
    marks: dict[str, Decimal] = {}
    for i, symbol in enumerate(symbols):
        mark = Decimal(rng.randrange(1_000, 50_000)) / 100
        marks[symbol] = mark
        if i < positions:
            qty = Decimal(rng.randrange(1, 50) * 10) * (1 if rng.random() < 0.6 else -1)
            avg = (mark * Decimal(rng.uniform(0.97, 1.03))).quantize(Decimal("0.01"))
            pos.append(ScenarioPosition(symbol=symbol, quantity=qty, avg_price=avg, mark=mark))
    resting = []
    for _ in range(orders):
        symbol = rng.choice(symbols)
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        away = Decimal("0.9") if side is Side.BUY else Decimal("1.1")
        price = (marks[symbol] * away).quantize(Decimal("0.01"))
        kind = OrderType.LIMIT if rng.random() < 0.8 else OrderType.STOP
        # a stop sits on the other side of the mark from a limit
        stop = (marks[symbol] * (2 - away)).quantize(Decimal("0.01"))
        resting.append(
            ScenarioOrder(
                symbol=symbol,
                side=side,
                type=kind,
                quantity=Decimal(rng.randrange(1, 20) * 5),
                limit_price=price if kind is OrderType.LIMIT else None,
                stop_price=stop if kind is OrderType.STOP else None,
            )
        )
    return Scenario(
        name=name,
        account=ScenarioAccount(cash=Decimal(cash)),
        positions=pos,
        orders=resting,
        marks={s: marks[s] for s in symbols if s not in {p.symbol for p in pos}},
    )


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as integers allow (1000 over 3: 334, 333, 333)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def paper_venues(
    root: Path, count: int, *, latency_ms: float = 25, max_msgs_per_sec: float = 0
) -> list[PaperVenueConfig]:
    return [
        PaperVenueConfig(
            name=f"paper{i + 1}",
            book_path=root / f"paper{i + 1}.db",
            latency_ms=latency_ms,
            max_msgs_per_sec=max_msgs_per_sec,
        )
        for i in range(count)
    ]


def seed_books(
    venues: list[PaperVenueConfig], *, positions: int, orders: int, seed: int = 1
) -> None:
    """Write each venue's book before the bot opens it: positions and orders split evenly."""
    for i, (cfg, n_pos, n_ord) in enumerate(
        zip(venues, split(positions, len(venues)), split(orders, len(venues)), strict=True)
    ):
        book = PaperBook(cfg.book_path, SystemClock())
        try:
            book.seed(book_scenario(positions=n_pos, orders=n_ord, seed=seed * 100 + i))
        finally:
            book.db.close()


class BookWatcher:
    """Reads the venues' book files through its own SQLite connections, as an auditor would:
    what is true at the venue, not what the bot believes."""

    def __init__(self, venues: list[PaperVenueConfig]) -> None:
        self.conns = [sqlite3.connect(v.book_path, timeout=5) for v in venues]

    def open_orders(self) -> int:
        return sum(
            int(
                c.execute(
                    "SELECT COUNT(*) FROM orders WHERE status IN ('OPEN', 'PARTIALLY_FILLED')"
                ).fetchone()[0]
            )
            for c in self.conns
        )

    def positions(self) -> int:
        return sum(
            int(c.execute("SELECT COUNT(*) FROM positions").fetchone()[0]) for c in self.conns
        )

    def close(self) -> None:
        for c in self.conns:
            c.close()


def settings_for(root: Path, venues: list[VenueConfig], **overrides: Any) -> Settings:
    """Production defaults everywhere except the paths (under `root`), the venues and the roles
    the loopback Slack's users need."""
    base = Settings(
        database=(
            DatabaseConfig(url=url)
            if (url := pg_url_for(root))
            else DatabaseConfig(path=root / "rollbot.db")
        ),
        paths=PathsConfig(
            reports_dir=root / "reports",
            live_environment=root / "config" / "live_environment.toml",
            shadow_config=root / "config" / "shadow_config.toml",
        ),
        venues=venues,
        roles={"operator": [OPERATOR], "risk_officer": [RISK]},
        slack=SlackConfig(ops_channel=OPS),
        approvals=ApprovalsConfig(),
    )
    return base.model_copy(update=overrides)


# -- PostgreSQL (bench/postgres.py): while a server is set here, every desk a benchmark builds
# under a root gets its own database on it instead of root/rollbot.db ---------------------------
PG: dict[str, Any] = {"server": None, "urls": {}, "conns": {}}


def pg_url_for(root: Path, *, create: bool = True) -> str | None:
    server = PG["server"]
    if server is None:
        return None
    key = Path(root).resolve()
    if key not in PG["urls"] and create:
        PG["urls"][key] = server.new_database(migrated=False)  # the bot migrates, as on SQLite
    return PG["urls"].get(key)


def pg_query_one(
    root: Path, sql: str, params: tuple[object, ...] = ()
) -> tuple[object, ...] | None:
    import psycopg

    url = pg_url_for(root, create=False)
    conn = PG["conns"].get(url)
    if conn is None:
        conn = PG["conns"][url] = psycopg.connect(url, autocommit=True)
    try:
        row = conn.execute(sql.replace("?", "%s"), params).fetchone()
    except psycopg.errors.UndefinedTable:
        return None  # not migrated yet
    return tuple(row) if row else None


def pg_forget() -> None:
    for conn in PG["conns"].values():
        conn.close()
    PG.update(server=None, urls={}, conns={})


@dataclass
class Sizes:
    """How big each benchmark is. `full()` is `make bench`; `tiny()` keeps the smoke test fast."""

    ack_bursts: int
    ack_burst_size: int
    kill_runs: int
    kill_orders: int
    flatten_runs: int
    flatten_positions: int
    flatten_rate: float
    rollback_runs: int
    rollback_positions: int
    rollback_orders: int
    timer_count: int
    timer_spread_s: float
    escalation_wait_s: float  # > the clock's 1 s re-read, or deadlines are found late
    restart_overdue: int
    restart_runs: int
    start_runs: int
    latency_ms: float = 25
    idle_s: float = 1.0  # how long the bot sits idle before its RSS is read
    host_trials: int = 1000  # two hosts: randomized retried deliveries, clicks, votes

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            ack_bursts=10,
            ack_burst_size=50,
            kill_runs=20,
            kill_orders=1000,
            flatten_runs=5,
            flatten_positions=200,
            flatten_rate=50,
            rollback_runs=10,
            rollback_positions=200,
            rollback_orders=150,
            timer_count=200,
            timer_spread_s=10,
            escalation_wait_s=3.0,
            restart_overdue=50,
            restart_runs=3,
            start_runs=5,
        )

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(
            ack_bursts=1,
            ack_burst_size=2,
            kill_runs=1,
            kill_orders=5,
            flatten_runs=1,
            flatten_positions=5,
            flatten_rate=50,
            rollback_runs=1,
            rollback_positions=5,
            rollback_orders=3,
            timer_count=3,
            timer_spread_s=0.3,
            escalation_wait_s=0.6,
            restart_overdue=2,
            restart_runs=1,
            start_runs=1,
            latency_ms=5,
            idle_s=0.1,
            host_trials=12,
        )


def python() -> str:
    return sys.executable
