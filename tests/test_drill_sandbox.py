"""`rollbot drill` on a desk: it deletes only the files it made in its sandbox, and a scenario
with nothing to close is refused instead of counting as the passed drill /resume needs (issue
14, item 12). The real CLI in a subprocess, real SQLite, the paper venue."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from rollbot.config import Settings

Run = Callable[..., CompletedProcess[str]]
SMALL_BOOK = """
name = "small"
[account]
cash = 100000
[[positions]]
symbol = "AAPL"
quantity = 10
avg_price = 190
mark = 189
"""


def drills(settings: Settings) -> list[tuple[str, ...]]:
    if not settings.database.path.exists():
        return []
    with sqlite3.connect(settings.database.path) as conn:
        return conn.execute("SELECT status FROM drills").fetchall()


def test_a_drill_deletes_only_the_files_it_made(
    settings: Settings, rollbot: Run, tmp_path: Path
) -> None:
    sandbox = settings.database.path.parent / "drill"
    (sandbox / "archive").mkdir(parents=True)
    (sandbox / "notes.md").write_text("drill notes of the desk\n", "utf-8")
    (sandbox / "archive" / "fills.csv").write_text("a,b\n", "utf-8")
    (sandbox / "drill.db").write_bytes(b"the last drill's database, now garbage " * 100)
    book = tmp_path / "small.toml"
    book.write_text(SMALL_BOOK, "utf-8")

    result = rollbot("drill", "--scenario", str(book), timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (sandbox / "notes.md").read_text("utf-8") == "drill notes of the desk\n"
    assert (sandbox / "archive" / "fills.csv").read_text("utf-8") == "a,b\n"
    with sqlite3.connect(sandbox / "drill.db") as conn:  # its own file: replaced by this drill
        assert conn.execute("SELECT COUNT(*) FROM incidents").fetchone() == (1,)
    assert drills(settings) == [("SUCCESS",)]


def test_a_drill_over_an_empty_scenario_is_refused_and_never_counts(
    settings: Settings, rollbot: Run, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text('name = "empty"\n[account]\ncash = 100000\n', "utf-8")
    with_orders_only = tmp_path / "orders.toml"
    with_orders_only.write_text(
        'name = "orders"\nmarks = { AAPL = 190 }\n[account]\ncash = 100000\n'
        '[[orders]]\nsymbol = "AAPL"\nside = "BUY"\ntype = "LIMIT"\nquantity = 5\n'
        "limit_price = 180\n",
        "utf-8",
    )
    for scenario in (empty, with_orders_only):
        result = rollbot("drill", "--scenario", str(scenario), timeout=120)
        text = " ".join(result.stderr.split())
        assert result.returncode == 2, result.stdout + result.stderr
        assert "holds no positions" in text and "nothing was run" in text, text
    assert drills(settings) == []  # so resume still names the drill as missing
    assert not (settings.database.path.parent / "drill").exists()
