"""`rollbot drill`: the default drill as on a fresh machine, the rehearsed bad days, and the bad
input it refuses (unknown faults, scenario files that do not parse)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
from typer.testing import CliRunner

from engine.support import START
from rollbot.bot.cli.app import app as cli
from rollbot.commands.rollback.report import RollbackLog
from rollbot.config import Settings


def query(db: Path, sql: str) -> list[Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql).fetchall()


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps at the terminal width


class Drill:
    """`rollbot --config ... drill ARGS` in this process; the sandbox it leaves behind."""

    def __init__(self, config: Path, root: Path) -> None:
        self.config = config
        self.root = root  # the database's folder: the sandbox is root/drill

    def __call__(self, *args: str) -> Any:
        return CliRunner().invoke(cli, ["--config", str(self.config), "drill", *args])

    @property
    def sandbox(self) -> Path:
        return self.root / "drill"

    def closes(self) -> dict[str, list[sqlite3.Row]]:
        out: dict[str, list[sqlite3.Row]] = {}
        orders = "SELECT * FROM orders WHERE client_order_id LIKE 'rb%' ORDER BY order_id"
        for row in query(self.sandbox / "paper.db", orders):
            out.setdefault(row["symbol"], []).append(row)
        return out

    def positions(self) -> dict[str, Decimal]:
        rows = query(self.sandbox / "paper.db", "SELECT * FROM positions")
        return {r["symbol"]: Decimal(r["quantity"]) for r in rows}

    def steps(self) -> dict[int, dict[str, Any]]:
        rows = query(self.sandbox / "drill.db", "SELECT data FROM events WHERE kind = 'STEP_ENDED'")
        return {d["step"]: d for d in (json.loads(r["data"]) for r in rows)}

    def events(self, kind: str) -> list[sqlite3.Row]:
        return query(self.sandbox / "drill.db", f"SELECT * FROM events WHERE kind = '{kind}'")


@pytest.fixture
def drill(settings: Settings, write_config: Callable[..., Path]) -> Drill:
    local = settings.database.path if settings.database.url is None else settings.paths.reports_dir
    return Drill(write_config(settings), Path(local).parent)


def test_default_drill_on_a_fresh_machine_succeeds_and_writes_three_reports(
    tmp_path: Path,
) -> None:
    """What `make drill` runs: no config, an empty folder, the real entry point."""
    env = {k: v for k, v in os.environ.items() if k != "ROLLBOT_CONFIG"}
    env.update(COLUMNS="250", NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "rollbot.bot.cli", "drill"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "DRILL-0001 rollback: SUCCESS" in result.stdout
    assert "latency 25 ms (a venue's typical round trip)" in result.stdout
    assert "Again later: rollbot report DRILL-0001" in result.stdout
    for n, name in enumerate(
        ["Immediate Halt", "Disconnect", "Assess Positions", "Flatten Positions", "Verify Recovery"]
    ):
        assert f"■ Step {n + 1} {name}: SUCCESS" in result.stdout
    reports = dict(re.findall(r"Report \((md|json|png)\): (\S+)", result.stdout))
    assert set(reports) == {"md", "json", "png"}
    paths = {fmt: tmp_path / path for fmt, path in reports.items()}
    assert all(p.parent.parent == tmp_path / "var" / "reports" / "drills" for p in paths.values())
    assert "## Open positions at rollback and how they were closed" in paths["md"].read_text()
    log = RollbackLog.model_validate_json(paths["json"].read_bytes())
    assert log.final_status == "SUCCESS" and log.trigger == "Drill"
    assert paths["png"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert matplotlib.image.imread(paths["png"]).ndim == 3
    # the drill's outcome lands in the desk's own database; its rollback stayed in the sandbox
    main_db = tmp_path / "var" / "rollbot.db"
    assert [tuple(r) for r in query(main_db, "SELECT status FROM drills")] == [("SUCCESS",)]
    assert query(main_db, "SELECT * FROM incidents") == []
    assert len(query(main_db, "SELECT * FROM events WHERE kind = 'DRILL_COMPLETED'")) == 1


def test_drill_with_rejects_and_partial_fills_ends_flat(drill: Drill) -> None:
    result = drill("--faults", "rejects,partial")

    assert result.exit_code == 0, result.output
    assert "DRILL-0001 rollback: SUCCESS" in flat(result.stdout)
    assert drill.positions() == {}
    rejected = drill.events("ORDER_REJECTED")
    closes = drill.closes()
    assert set(closes) == set(START)
    refused = {
        o["client_order_id"] for os_ in closes.values() for o in os_ if o["status"] == "REJECTED"
    }
    assert (
        refused
        and {r["data"] and json.loads(r["data"])["client_order_id"] for r in rejected} == refused
    )
    for symbol, orders in closes.items():
        assert len(orders) >= 3  # half fills, refused attempts: several tries each
        assert sum(Decimal(o["filled"]) for o in orders) == abs(START[symbol])
        assert orders[-1]["status"] == "FILLED"
    assert drill.steps()[4]["status"] == "SUCCESS"


def test_drill_with_late_fills_ends_flat_with_one_order_per_position(drill: Drill) -> None:
    result = drill("--faults", "late-fill")

    assert result.exit_code == 0, result.output
    assert "DRILL-0001 rollback: SUCCESS" in flat(result.stdout)
    assert drill.positions() == {}
    cancelled = {
        json.loads(r["data"])["client_order_id"] for r in drill.events("ORDER_CANCEL_REQUESTED")
    }
    for symbol, orders in drill.closes().items():
        [order] = orders  # it filled after its cancel: nothing was sent again
        assert order["client_order_id"] in cancelled
        assert Decimal(order["filled"]) == abs(START[symbol])


def test_drill_with_latency_still_succeeds_and_the_latency_shows(drill: Drill) -> None:
    result = drill("--latency-ms", "20")

    assert result.exit_code == 0, result.output
    assert "latency 20 ms" in result.stdout
    assert "DRILL-0001 rollback: SUCCESS" in flat(result.stdout)
    steps = drill.steps()
    assert [steps[n]["status"] for n in range(1, 6)] == ["SUCCESS"] * 5
    # HALT is two round trips in a row (cancel-all, its read-back; the NAV read runs beside
    # them): at least 40 ms
    assert steps[1]["duration_seconds"] >= 0.04
    assert drill.positions() == {}


def test_drill_with_a_disconnect_in_flatten_reconnects_and_succeeds(drill: Drill) -> None:
    result = drill("--faults", "disconnect")

    assert result.exit_code == 0, result.output
    assert "DRILL-0001 rollback: SUCCESS" in flat(result.stdout)
    assert any("injected disconnect" in e for e in drill.steps()[4]["errors"])
    assert {s: len(o) for s, o in drill.closes().items()} == dict.fromkeys(START, 1)


def test_unknown_fault_exits_2_and_touches_nothing(drill: Drill) -> None:
    result = drill("--faults", "rejects,bogus")

    assert result.exit_code == 2
    assert "unknown fault(s) bogus: choose from rejects, partial, disconnect, late-fill" in flat(
        result.stderr
    )
    assert not drill.sandbox.exists()


SCENARIO = """\
name = "three positions"

[account]
cash = 100000

[[positions]]
symbol = "AAPL"
quantity = 10
avg_price = 190

[[positions]]
symbol = "MSFT"
quantity = -5
avg_price = 410

[[positions]]
symbol = "NVDA"
quantity = 0
avg_price = 120
"""


def test_scenario_with_a_bad_field_names_its_line_and_field(drill: Drill, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SCENARIO)
    line = SCENARIO.splitlines().index("quantity = 0") + 1  # 19

    result = drill("--scenario", str(bad))

    assert result.exit_code == 2
    message = flat(result.stderr)
    assert f"scenario {bad} is invalid" in message
    assert (
        f"line {line}, positions[2].quantity (the 3rd [[positions]]):"
        " Value error, quantity must not be zero"
    ) in message
    assert not drill.sandbox.exists()


def test_scenario_that_is_not_toml_names_its_line_and_field(drill: Drill, tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text(SCENARIO.replace("avg_price = 410", "avg_price = = 410"))

    result = drill("--scenario", str(bad))

    assert result.exit_code == 2
    assert (
        f"scenario {bad} does not parse: line 14, positions.avg_price: Invalid value:"
        " 'avg_price = = 410'"
    ) in flat(result.stderr)
    assert not drill.sandbox.exists()


def test_a_good_scenario_file_is_the_book_the_drill_closes(drill: Drill, tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(SCENARIO.replace("quantity = 0", "quantity = 7"))

    result = drill("--scenario", str(good))

    assert result.exit_code == 0, result.output
    assert "paper: 3 positions" in flat(result.stdout)
    assert {s: [o["quantity"] for o in os_] for s, os_ in drill.closes().items()} == {
        "AAPL": ["10"],
        "MSFT": ["5"],
        "NVDA": ["7"],
    }


def test_drills_have_their_own_ids_and_rollbot_report_finds_them(
    drill: Drill, rollbot: Any
) -> None:
    """Every drill was INC-0001, the id of the desk's own first incident, and `rollbot report`
    could not find it. Drills are DRILL-N now, and their reports are found by that id."""
    killed = rollbot("kill", "trigger", "--reason", "a real incident first")
    assert killed.returncode in (0, 1), killed.stderr
    for n in (1, 2):
        result = drill("--latency-ms", "0")
        assert result.exit_code == 0, result.output
        assert f"DRILL-000{n} rollback: SUCCESS" in result.stdout
    md = rollbot("report", "DRILL-0002")
    assert md.returncode == 0, md.stderr
    assert md.stdout.startswith("# DRILL-0002") or "DRILL-0002" in md.stdout.splitlines()[0]
    assert "Follow the desk's live-mode transition runbook" in md.stdout
    png = rollbot("report", "DRILL-0001", "--format", "png")
    assert png.returncode == 0 and png.stdout.strip().endswith("DRILL-0001.png")
    real = rollbot("report", "INC-0001")  # the desk's own incident is still its own
    assert real.returncode == 0 and "a real incident first" in real.stdout
    missing = rollbot("report", "DRILL-0009")
    assert missing.returncode == 2 and "unknown drill 'DRILL-0009'" in missing.stderr


def test_the_drill_report_names_the_runbook_the_config_names(
    settings: Settings, write_config: Callable[..., Path], rollbot: Any
) -> None:
    """The runbook line is `[paths] runbook`: the drill's sandbox kept every other path of its
    own and dropped this one, so a desk's drill report never named the desk's runbook."""
    runbook = "https://wiki.example/desk/live-mode-transition"
    paths = settings.paths.model_copy(update={"runbook": runbook})
    config = write_config(settings.model_copy(update={"paths": paths}))

    result = Drill(config, Path(settings.database.path).parent)("--latency-ms", "0")
    md = rollbot("report", "DRILL-0001", env={"ROLLBOT_CONFIG": str(config)})

    assert result.exit_code == 0, result.output
    assert md.returncode == 0, md.stderr
    assert md.stdout.rstrip().splitlines()[-1] == f"- [ ] Follow {runbook} to re-enable"
