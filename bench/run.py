"""`python -m bench.run` (make bench): every figure of issue 10, written to bench/results.json
and bench/RESULTS.md. Exits 1 when a target is missed or a benchmark fails, and says which.

    python -m bench.run                 # everything, full sizes (about two minutes)
    python -m bench.run --only kill     # one benchmark (repeatable)
    python -m bench.run --tiny          # smoke sizes (what tests/bench runs)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:  # the loopback fakes (FakeSlack) live with the tests
    sys.path.insert(0, str(ROOT / "tests"))

from bench import (  # noqa: E402
    ack_latency,
    crypto_kill,
    escalation_timers,
    flatten_pacing,
    footprint,
    full_rollback,
    guard_latency,
    kill_ibkr,
    kill_latency,
    kill_startup,
    postgres,
    scale,
    two_hosts,
)
from bench.common import Figure, Sizes, machine  # noqa: E402
from bench.report import markdown  # noqa: E402

Bench = Callable[[Sizes, Path], Awaitable[list[Figure]]]

# in this order: the escalation timers last (their module is the newest)
BENCHES: dict[str, tuple[str, Bench]] = {
    "ack": ("1. Ack latency", ack_latency.run),
    "kill": ("2. Kill latency", kill_latency.run),
    "kill_startup": ("2b. Kill start-up (break glass)", kill_startup.run),
    "flatten": ("3. Flatten under pacing", flatten_pacing.run),
    "rollback": ("4. Full rollback", full_rollback.run),
    "footprint": ("6. Footprint", footprint.run),
    "timers": ("5. Escalation timers", escalation_timers.run),
    "guard": ("7. The pre-trade guard", guard_latency.run),
    "kill_ibkr": ("8. Kill on IBKR under 50 msg/s pacing", kill_ibkr.run),
    "crypto_kill": ("9. Kill on a per-symbol exchange (Binance spot)", crypto_kill.run),
    "scale": ("7. Scale: empty and history database (issue 18)", scale.run),
    "two_hosts": ("10. Two hosts on one database (issue 19)", two_hosts.run),
    "postgresql": ("11. The kill on PostgreSQL (issue 19)", postgres.run),
}


async def run_all(
    sizes: Sizes, workdir: Path, only: list[str] | None = None, echo: bool = False
) -> dict[str, Any]:
    """Run the chosen benchmarks; a benchmark that raises is recorded as an error, not fatal."""
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine(),
        "sizes": asdict(sizes),
        "benchmarks": [],
    }
    for name, (title, bench) in BENCHES.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        if echo:
            print(f"{title} …", flush=True)
        entry: dict[str, Any] = {
            "name": name,
            "title": title,
            "figures": [],
            "error": None,
            "load_average_at_start": round(os.getloadavg()[0], 2),
        }
        try:
            figures = await bench(sizes, workdir / name)
            entry["figures"] = [f.model_dump(mode="json") for f in figures]
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        results["benchmarks"].append(entry)
        if echo:
            _echo(entry)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["misses"] = misses(results)
    return results


def figures_of(results: dict[str, Any]) -> list[Figure]:
    return [Figure.model_validate(f) for b in results["benchmarks"] for f in b["figures"]]


def misses(results: dict[str, Any]) -> list[str]:
    """Every missed target and every benchmark that could not run, one sentence each."""
    out = [m for f in figures_of(results) if (m := f.miss())]
    out += [f"{b['title']} did not run: {b['error']}" for b in results["benchmarks"] if b["error"]]
    return out


def _echo(entry: dict[str, Any]) -> None:
    if entry["error"]:
        print(f"   FAILED: {entry['error']}", flush=True)
    for raw in entry["figures"]:
        f = Figure.model_validate(raw)
        verdict = "" if f.target is None else ("  ok" if f.ok else "  MISSED")
        ratio = "" if f.ratio is None else f"  ({f.ratio:.2f} of {f.target_text})"
        print(
            f"   {f.title}: median {f.median:.4g} {f.unit}, p99 {f.p99:.4g} {f.unit}"
            f"{ratio}{verdict}",
            flush=True,
        )
    print(f"   ({entry['seconds']:.1f} s)", flush=True)


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    (out / "RESULTS.md").write_text(markdown(results), "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="rollbot's benchmarks (issue 10); exits 1 when a target is missed.",
    )
    parser.add_argument("--only", action="append", choices=list(BENCHES), help="run only this")
    parser.add_argument("--tiny", action="store_true", help="smoke sizes, not the real figures")
    parser.add_argument(
        "--out",
        type=Path,
        help="where results.json and RESULTS.md go (default: bench/ for a full run; a partial"
        " run --only/--tiny writes nothing unless told where)",
    )
    args = parser.parse_args(argv)
    sizes = Sizes.tiny() if args.tiny else Sizes.full()
    with tempfile.TemporaryDirectory(prefix="rollbot-bench-") as tmp:
        results = asyncio.run(run_all(sizes, Path(tmp), args.only, echo=True))
    out = args.out or (None if args.only or args.tiny else ROOT / "bench")
    if out is not None:  # a subset never overwrites the full results by accident
        write(results, out)
        print(f"\nwrote {out / 'results.json'} and {out / 'RESULTS.md'}")
    print(f"took {results['seconds']:.0f} s")
    if results["misses"]:
        print("\nTARGETS MISSED:", file=sys.stderr)
        for line in results["misses"]:
            print(f"  - {line}", file=sys.stderr)
        return 1
    print("every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
