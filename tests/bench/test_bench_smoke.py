"""Keeps `make bench` working: every benchmark runs end to end at tiny sizes and returns
well-formed figures, and a missed target makes `python -m bench.run` exit non-zero and say which.
The real figures come from `make bench`, never from here."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ sits next to src/ and tests/, outside the package
    sys.path.insert(0, str(ROOT))

from bench import run as bench_run  # noqa: E402
from bench.common import Figure, Sizes, percentile  # noqa: E402
from bench.report import markdown  # noqa: E402

EXPECTED = {
    "ack": {"ack_latency", "ack_latency_positions", "ack_latency_kill", "ack_bot_cpu"},
    "kill": {"kill_latency", "kill_guard", "kill_step1", "kill_step2"},
    "kill_startup": {"kill_startup", "kill_startup_full_cli"},
    "flatten": {"flatten_paced", "flatten_paced_total"},
    "rollback": {"rollback_total", *(f"rollback_step{n}" for n in range(1, 6))},
    "footprint": {"start_to_ready", "rss_idle", "rss_after_rollback", "serve_rollback"},
    "timers": {"timer_lag", "restart_overdue", "restart_overdue_clockwork"},
    "kill_ibkr": {"kill_ibkr", "kill_ibkr_messages"},
    "guard": {
        "guard_inprocess",
        "guard_inprocess_cpu",
        "guard_inprocess_halted",
        "guard_after_change",
        "guard_service",
    },
    "crypto_kill": {"crypto_kill_cancel"},
    "two_hosts": {  # on SQLite, then on PostgreSQL
        f"two_hosts_{figure}{db}"
        for figure in ("trials", "ack", "dead_ack")
        for db in ("", "_postgresql")
    },
    "postgresql": {  # ack, kill and kill start-up again, the database on PostgreSQL
        f"{key}_postgresql"
        for key in (
            "ack_latency",
            "ack_latency_positions",
            "ack_latency_kill",
            "ack_bot_cpu",
            "kill_latency",
            "kill_guard",
            "kill_step1",
            "kill_step2",
            "kill_startup",
        )
    },
    "scale": {
        f"scale_{figure}_{db}"
        for db in ("empty", "history")
        for figure in (
            "ack_periodic",
            "ack_periodic_max",
            "loop_lag",
            "serve_start",
            "kill",
            "kill_loop_max",
            "rollback",
            "rollback_growth",
        )
    },
}


async def test_every_benchmark_runs_at_tiny_sizes_and_reports_well_formed_figures(
    tmp_path: Path,
) -> None:
    results = await bench_run.run_all(Sizes.tiny(), tmp_path / "work")

    by_name = {b["name"]: b for b in results["benchmarks"]}
    assert set(by_name) == set(EXPECTED)
    for name, bench in by_name.items():
        assert bench["error"] is None, bench.get("traceback")
        figures = [Figure.model_validate(f) for f in bench["figures"]]
        assert {f.key for f in figures} == EXPECTED[name]
        for f in figures:
            assert f.runs > 0 and all(math.isfinite(x) and x >= 0 for x in f.samples), f
            assert min(f.samples) <= f.median <= f.p99 <= max(f.samples), f
            if f.target is not None:
                assert f.ratio == pytest.approx(f.p99 / f.target)
    memory = {f["key"]: f for b in results["benchmarks"] for f in b["figures"]}
    assert 10 < memory["rss_idle"]["median"] < 2000  # MiB of a real Python process

    bench_run.write(results, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["python"]
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    for key in ("cpu", "date", "python"):
        assert str(saved["machine"][key]) in text
    assert all(b["title"] in text for b in results["benchmarks"])


def test_p99_and_ratio_are_computed_from_the_samples() -> None:
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    f = Figure(key="x", title="X", unit="ms", samples=[10, 20, 30, 200], target=100)
    assert f.median == 25 and f.p99 == pytest.approx(194.9)
    assert f.ratio == pytest.approx(1.949) and not f.ok
    assert "X" in (f.miss() or "") and "1.95 x" in (f.miss() or "")
    info = Figure(key="y", title="Y", unit="MiB", samples=[80.0])
    assert info.ok and info.ratio is None and info.miss() is None


def _fake(samples: list[float]) -> bench_run.Bench:
    async def bench(sizes: Sizes, root: Path) -> list[Figure]:
        return [Figure(key="fake", title="Fake figure", unit="s", samples=samples, target=1.0)]

    return bench


async def _broken(sizes: Sizes, root: Path) -> list[Figure]:
    raise RuntimeError("venue exploded")


def test_the_run_exits_non_zero_and_names_a_missed_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(bench_run.BENCHES, "fake", ("9. Fake", _fake([0.5, 2.5])))
    assert bench_run.main(["--only", "fake", "--tiny", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "TARGETS MISSED" in err and "Fake figure" in err
    assert "missed" in (tmp_path / "RESULTS.md").read_text()

    monkeypatch.setitem(bench_run.BENCHES, "fake", ("9. Fake", _fake([0.5, 0.6])))
    assert bench_run.main(["--only", "fake", "--tiny", "--out", str(tmp_path)]) == 0
    assert "every target met" in capsys.readouterr().out


def test_a_benchmark_that_fails_is_a_miss_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(bench_run.BENCHES, "broken", ("9. Broken", _broken))
    assert bench_run.main(["--only", "broken", "--tiny", "--out", str(tmp_path)]) == 1
    assert "9. Broken did not run: RuntimeError: venue exploded" in capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())
    assert "venue exploded" in markdown(results)
