"""Issue 18's before/after in RESULTS.md: the scale figures (bench/scale.py) measured on the
code before the fix (results_before_issue18.json, kept as run) beside this run's, by key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import Figure

BEFORE = Path(__file__).with_name("results_before_issue18.json")


def _figures(results: dict[str, Any]) -> dict[str, Figure]:
    return {f["key"]: Figure.model_validate(f) for b in results["benchmarks"] for f in b["figures"]}


def _value(f: Figure) -> str:
    worst = max(f.samples)
    unit = f" {f.unit}" if f.unit else ""
    return f"{f.median:.4g}{unit} / {f.p99:.4g}{unit} / {worst:.4g}{unit}"


def section(results: dict[str, Any], before_path: Path = BEFORE) -> list[str]:
    """Markdown lines; none when there is no "before" file or no figure in common."""
    if not before_path.exists():
        return []
    before_results = json.loads(before_path.read_text("utf-8"))
    before, after = _figures(before_results), _figures(results)
    common = [k for k in before if k in after]
    if not common:
        return []
    m = before_results["machine"]
    load = ", ".join(str(x) for x in m["load_average_at_start"])
    lines = [
        "## Before and after issue 18 (scale)",
        "",
        f"Before: commit {m['commit']} (the code before the fix, with these benchmark modules),"
        f" {m['date']}, load average at start {load}. After: this run. Each cell: median /"
        " p99 / max over the runs. The machine is the shared two-core one: the load average"
        " (other helpers' test suites) moves every wall-clock figure. The before run's kill"
        " watcher was heavier (a new connection and a scan of the history's step reports every"
        " 2 ms, on the bot's loop): that weighs on its kill figures by a few tenths of a"
        " second, not by the order of magnitude.",
        "",
        "| Figure | Before | After | Target |",
        "|---|---:|---:|---|",
    ]
    for key in common:
        b, a = before[key], after[key]
        lines.append(f"| {a.title} | {_value(b)} | {_value(a)} | {a.target_text or 'info'} |")
    return [*lines, ""]
