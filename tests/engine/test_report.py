"""Reports built from the event log: the JSON of the IBKR seed's Rollback Log Template (checked
against a pydantic model that the seed's own example satisfies), the Live -> Shadow seed's step-8
Markdown, and a PNG chart."""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from engine.support import START, as_text
from rollbot.bot.cli.app import app as cli
from rollbot.clock import ManualClock, iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine, Outcome
from rollbot.commands.rollback.report import (
    RollbackLog,
    build_log,
    build_markdown,
    render,
    write_reports,
)
from rollbot.config import PaperVenueConfig
from rollbot.storage.events import Actor

MakeApp = Callable[..., Rollbot]
SEED = Path("/work/shared/seeds/002_02bf98b5c10597bd.txt")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def seed_example() -> dict[str, Any]:
    text = SEED.read_text(encoding="utf-8")
    section = text.split("## Rollback Log Template", 1)[1]
    found = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert found, "the seed's Rollback Log Template has a JSON example"
    return json.loads(found.group(1))


async def rolled_back(make_app: MakeApp, operator: Actor, **faults: Any) -> tuple[Rollbot, Outcome]:
    app = make_app(**faults)
    outcome = await Engine(app, operator).rollback("PnL -5.2% breached the -5% kill switch")
    return app, outcome


# -- the JSON log --------------------------------------------------------------------------------
def test_the_model_accepts_the_seeds_own_example() -> None:
    example = seed_example()
    log = RollbackLog.model_validate(example)
    assert [s.step for s in log.steps] == [1, 2, 3, 4, 5]
    assert log.steps[2].positions and log.steps[2].positions["TSLA"].quantity == 500
    assert log.steps[2].flatten_strategy == "MARKET_ORDERS"
    assert log.steps[3].orders and log.steps[3].orders[0].direction == "SELL"
    assert log.steps[4].verification and log.steps[4].verification.logs_archived
    # every key the seed uses survives a round trip through the model
    again = json.loads(log.to_json())
    for key in set(example) - {"steps"}:
        assert again[key] == example[key]
    for ours, theirs in zip(again["steps"], example["steps"], strict=True):
        assert {k: ours[k] for k in theirs} == theirs


@pytest.mark.parametrize(
    "damage",
    [
        lambda log: log["steps"][0].pop("status"),  # a seed field missing
        lambda log: log["steps"][3]["orders"][0].update(direction="SIDEWAYS"),
        lambda log: log.update(final_status="FINE"),
        lambda log: log.update(rollback_id="rb-7"),
        lambda log: log["steps"][1].update(start_time="yesterday"),
        lambda log: log["steps"][4]["verification"].update(shiny=True),  # a key nobody defined
        lambda log: log.update(colour="red"),
    ],
    ids=["no-status", "direction", "final-status", "rollback-id", "time", "extra-step", "extra"],
)
def test_the_model_refuses_a_log_that_is_not_the_template(damage: Callable[..., Any]) -> None:
    log = copy.deepcopy(seed_example())
    damage(log)
    with pytest.raises(ValidationError):
        RollbackLog.model_validate(log)


async def test_json_report_validates_and_says_what_happened(
    make_app: MakeApp, operator: Actor, clock: ManualClock
) -> None:
    opened = clock.now()
    app, outcome = await rolled_back(make_app, operator)

    log = RollbackLog.model_validate_json(render(app, outcome.incident.id, "json"))

    assert log.rollback_id == "rollback_20260105_001"
    assert log.incident_id == outcome.incident.id
    assert log.timestamp == iso(opened) == "2026-01-05T12:00:00.000Z"
    assert (log.trigger, log.trigger_value, log.trigger_threshold) == (
        "Manual rollback",
        None,
        None,
    )
    assert log.reason == "PnL -5.2% breached the -5% kill switch"
    assert log.final_status == "SUCCESS"
    assert [(s.step, s.name, s.status) for s in log.steps] == [
        (1, "Immediate Halt", "SUCCESS"),
        (2, "Disconnect", "SUCCESS"),
        (3, "Assess Positions", "SUCCESS"),
        (4, "Flatten Positions", "SUCCESS"),
        (5, "Verify Recovery", "SUCCESS"),
    ]
    assess, flatten, verify = log.steps[2], log.steps[3], log.steps[4]
    assert assess.positions is not None
    assert {s: p.quantity for s, p in assess.positions.items()} == {
        s: float(q) for s, q in START.items()
    }
    assert {p.venue for p in assess.positions.values()} == {"paper"}
    assert assess.total_pnl == pytest.approx(
        sum(p.unrealized_pnl for p in assess.positions.values())
    )
    assert assess.flatten_strategy == "LIMIT_ORDERS_WITH_TIMEOUT"
    assert flatten.orders is not None
    assert sorted((o.symbol, o.direction, o.quantity, o.filled) for o in flatten.orders) == sorted(
        (s, "SELL" if q > 0 else "BUY", float(abs(q)), True) for s, q in START.items()
    )
    v = verify.verification
    assert v is not None and v.all_positions_flat and v.no_open_orders
    assert v.trading_state == "HALTED" and v.shadow_mode_active and v.live_trading_blocked
    assert v.logs_archived and outcome.incident.id in v.logs_archived
    assert log.final_pnl == v.final_pnl
    steps = outcome.steps
    assert log.total_duration_seconds == pytest.approx(
        (steps[-1].end_time - steps[0].start_time).total_seconds(), abs=0.001
    )
    # the seed's layout: a step carries only its own sections
    raw = json.loads(render(app, outcome.incident.id, "json"))
    assert "positions" not in raw["steps"][0] and "orders" not in raw["steps"][2]
    assert set(raw["steps"][4]) >= {"verification", "actions", "status", "duration_seconds"}


async def test_json_report_of_a_partial_rollback_lists_the_residual(
    make_app: MakeApp, operator: Actor
) -> None:
    app, outcome = await rolled_back(make_app, operator, fill="none")

    log = RollbackLog.model_validate_json(render(app, outcome.incident.id, "json"))

    assert log.final_status == "PARTIAL"
    assert [s.status for s in log.steps] == ["SUCCESS", "SUCCESS", "SUCCESS", "FAILED", "PARTIAL"]
    v = log.steps[4].verification
    assert v is not None and not v.all_positions_flat
    assert v.residual == {"paper": {s: float(q) for s, q in START.items()}}
    assert log.steps[3].orders and not any(o.filled for o in log.steps[3].orders)


async def test_two_venues_holding_one_symbol_are_told_apart(
    make_app: MakeApp, operator: Actor, tmp_path: Path
) -> None:
    app = make_app(
        [
            PaperVenueConfig(name="alpha", book_path=tmp_path / "alpha.db"),
            PaperVenueConfig(name="beta", book_path=tmp_path / "beta.db"),
        ]
    )
    outcome = await Engine(app, operator).rollback("both books")

    log = build_log(app, app.incidents.get(outcome.incident.id))

    positions = log.steps[2].positions or {}
    assert set(positions) == {f"{v}:{s}" for v in ("alpha", "beta") for s in START}
    assert positions["beta:AAPL"].venue == "beta"
    assert log.steps[2].flatten_strategy_by_venue == {
        "alpha": "LIMIT_ORDERS_WITH_TIMEOUT",
        "beta": "LIMIT_ORDERS_WITH_TIMEOUT",
    }


# -- the Markdown --------------------------------------------------------------------------------
async def test_markdown_has_the_live_to_shadow_step_8_sections(
    make_app: MakeApp, operator: Actor, clock: ManualClock
) -> None:
    opened = clock.now()
    app, outcome = await rolled_back(make_app, operator)

    md = build_markdown(app, app.incidents.get(outcome.incident.id))

    headings = re.findall(r"^## (.+)$", md, re.MULTILINE)
    assert headings == [
        "Steps",
        "Open positions at rollback and how they were closed",
        "PnL at rollback",
        "Errors and issues encountered",
        "Verification",
        "Next steps",
        "Post-rollback checklist",
        "Before re-enabling live trading",
    ]
    assert f"- **Timestamp:** {iso(opened)}" in md
    assert "- **Reason:** PnL -5.2% breached the -5% kill switch" in md
    for symbol, qty in as_text(START).items():
        side = "SELL" if START[symbol] > 0 else "BUY"
        row = next(line for line in md.splitlines() if line.startswith(f"| paper | {symbol} |"))
        assert f"| {qty} |" in row
        assert f"{side} {qty.lstrip('-')} LIMIT → FILLED (LIMIT_ORDERS_WITH_TIMEOUT)" in row
    assert "- Unrealized PnL when assessed: " in md
    assert "- PnL before the halt (session start to the hold): " in md
    assert "- PnL during the rollback (the hold to verification): " in md
    assert "- Final PnL (NAV now less the session's first): " in md
    section = md.split("## Errors and issues encountered")[1].split("## ")[0]
    assert section.strip() == "None."
    assert "✅ Shadow mode: ENABLED" in md and "✅ Live trading: BLOCKED" in md
    assert "✅ All positions flat" in md and "✅ Kill switch: HALTED" in md
    assert "1. Investigate the root cause" in md
    assert (
        "- [ ] Notify stakeholders (Risk Owner, System Owner)"
        f" (within 1 hour, due {iso(opened + timedelta(hours=1))})"
    ) in md
    assert (
        f"- [ ] Plan remediation (within 24 hours, due {iso(opened + timedelta(hours=24))})" in md
    )
    assert "- [ ] New drill completed successfully" in md


async def test_markdown_of_a_bad_day_lists_the_errors_and_what_remains(
    make_app: MakeApp, operator: Actor
) -> None:
    app, outcome = await rolled_back(make_app, operator, fill="none")

    md = build_markdown(app, app.incidents.get(outcome.incident.id))

    assert "- **Final status:** PARTIAL" in md
    errors = md.split("## Errors and issues encountered")[1].split("## ")[0]
    assert "Step 4 Flatten Positions: FAILED — paper: NOT flat: gave up after 90 s" in errors
    left = dict(sorted(as_text(START).items()))
    assert f"❌ All positions flat: remaining {json.dumps({'paper': left})}" in md
    assert "SELL 400 LIMIT → CANCELLED" in md


# -- the chart and where it all goes ---------------------------------------------------------------
async def test_png_is_a_real_png(make_app: MakeApp, operator: Actor) -> None:
    app, outcome = await rolled_back(make_app, operator)

    png = render(app, outcome.incident.id, "png")

    assert png.startswith(PNG_MAGIC)
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    height, width, channels = image.shape
    assert height > 200 and width > 500 and channels in (3, 4)
    assert image.std() > 0  # something is drawn


async def test_the_chart_says_when_in_what_money_and_which_pnl(
    make_app: MakeApp, operator: Actor
) -> None:
    """The x-axis was '37:27.100000' (no date, no time zone), the y-axis had no currency, the
    step labels overlapped, and PnL before the halt was drawn as the rollback's."""
    import matplotlib.pyplot as plt

    from rollbot.commands.rollback.report import chart

    app, outcome = await rolled_back(make_app, operator)
    fig = chart(app, outcome.incident)
    try:
        ax = fig.axes[0]
        fig.canvas.draw()
        day = outcome.incident.opened_at.date().isoformat()
        assert ax.get_xlabel() == f"time (UTC) on {day}"
        assert ax.get_ylabel() == "PnL (USD)"
        ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert ticks and all(re.fullmatch(r"\d\d:\d\d:\d\d(\.\d{3})?", t) for t in ticks), ticks
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(t.startswith("paper: PnL during the rollback (") for t in legend), legend
        steps = [t for t in legend if t[0].isdigit()]
        assert [t.split(":")[0] for t in steps] == [
            "1 Immediate Halt",
            "2 Disconnect",
            "3 Assess Positions",
            "4 Flatten Positions",
            "5 Verify Recovery",
        ]
    finally:
        plt.close(fig)


async def test_reports_are_stored_in_sqlite_and_written_to_the_reports_dir(
    make_app: MakeApp, operator: Actor
) -> None:
    app, outcome = await rolled_back(make_app, operator)
    incident = outcome.incident.id

    paths = write_reports(app, incident)

    reports_dir = Path(app.settings.paths.reports_dir)
    assert paths == {fmt: reports_dir / f"{incident}.{fmt}" for fmt in ("md", "json", "png")}
    stored = app.db.query(
        "SELECT format, path, content FROM reports WHERE incident_id = ?", (incident,)
    )
    assert {r["format"]: (Path(r["path"]), bytes(r["content"])) for r in stored} == {
        fmt: (path, path.read_bytes()) for fmt, path in paths.items()
    }
    RollbackLog.model_validate_json(paths["json"].read_bytes())
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)


async def test_report_cli_writes_one_format_and_refuses_unknown_ids(
    make_app: MakeApp, operator: Actor, write_config: Callable[..., Path]
) -> None:
    app, outcome = await rolled_back(make_app, operator)
    config = str(write_config(app.settings))
    runner = CliRunner()

    shown = runner.invoke(cli, ["--config", config, "report", outcome.incident.id, "-f", "json"])
    assert shown.exit_code == 0, shown.output
    assert RollbackLog.model_validate_json(shown.stdout).incident_id == outcome.incident.id

    unknown = runner.invoke(cli, ["--config", config, "report", "INC-9999"])
    assert unknown.exit_code == 2
    assert "unknown incident 'INC-9999'" in unknown.stderr
    bad_format = runner.invoke(
        cli, ["--config", config, "report", outcome.incident.id, "-f", "pdf"]
    )
    assert bad_format.exit_code == 2 and "unknown --format 'pdf'" in bad_format.stderr
    stored = app.db.query("SELECT format FROM reports")
    assert [r["format"] for r in stored] == ["json"]  # the refused ones wrote nothing
