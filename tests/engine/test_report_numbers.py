"""The report's money and the PnL it tells apart (issue 16, item 11).

The report printed `-3720.0` next to `-1495.80`, and "NAV change over the rollback" was the
NAV's drift since the session's first sample: a book that lost 5,000 before anyone pressed
/kill read as a rollback that cost 5,000. Here the session starts 5,000 USD above the NAV at
the halt, and the marks fall after the halt (step 2), so the rollback itself costs something
too: the Markdown, the JSON and the Slack card must each show the two apart, in one format."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.backends.backend_agg import FigureCanvasAgg

from rollbot.bot.slack import views
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.money import money
from rollbot.commands.rollback.engine import Engine, Outcome, StepReport, ended_steps
from rollbot.commands.rollback.report import build_log, build_markdown, chart
from rollbot.storage.events import Actor
from rollbot.storage.nav import NavSamples

MakeApp = Callable[..., Rollbot]
DRIFT = Decimal("-5000")  # the session's first NAV was 5,000 USD above the NAV at the halt
AMOUNT = re.compile(r"-?\d{1,3}(,\d{3})*\.\d\d USD")


async def rollback_after_drift(
    make_app: MakeApp, operator: Actor, clock: ManualClock
) -> tuple[Rollbot, Outcome, Decimal, Decimal]:
    """(app, outcome, NAV at the halt, NAV at the end) of a rollback after a losing session."""
    app = make_app()
    paper = app.venue("paper")
    assert isinstance(paper, PaperVenue)
    halt_nav = (await paper.account()).nav
    NavSamples(app.db).add("paper", clock.now() - timedelta(hours=3), halt_nav - DRIFT, "USD")
    clock.advance(1)

    async def marks_fall(report: StepReport) -> None:
        if report.step == 2:  # step 2 (disconnect) is over: the rollback's own cost
            with paper.book.db.write():
                paper.book.db.execute("UPDATE marks SET price = price * 0.99")

    outcome = await Engine(app, operator, on_step=marks_fall).rollback("drawdown")
    final_nav = (await paper.account()).nav
    return app, outcome, halt_nav, final_nav


async def test_pnl_before_the_halt_and_during_the_rollback_are_told_apart(
    make_app: MakeApp, operator: Actor, clock: ManualClock
) -> None:
    app, outcome, halt_nav, final_nav = await rollback_after_drift(make_app, operator, clock)
    incident = app.incidents.get(outcome.incident.id)
    during = final_nav - halt_nav
    assert during < 0 and during != DRIFT  # the test means something

    md = build_markdown(app, incident)
    log = json.loads(build_log(app, incident).to_json())
    text, blocks = views.report(
        {
            "id": incident.id,
            "reason": incident.reason,
            "opened_by_label": "ops",
            "source": "cli",
            "trading_state": "HALTED",
        },
        ended_steps(app, incident.id),
        build_log(app, incident),
    )

    section = md.split("## PnL at rollback")[1].split("## ")[0]
    assert f"- PnL before the halt (session start to the hold): {money(DRIFT, 'USD')}" in section
    assert (
        f"- PnL during the rollback (the hold to verification): {money(during, 'USD')}" in section
    )
    assert (
        f"- Final PnL (NAV now less the session's first): {money(DRIFT + during, 'USD')}" in section
    )
    assert "NAV change over the rollback" not in md
    v = log["steps"][-1]["verification"]
    assert v["pnl_before_halt"] == float(DRIFT)
    assert v["pnl_during_rollback"] == float(during)
    assert v["final_pnl"] == float(DRIFT + during)
    assert v["halt_nav"] == float(halt_nav) and v["currency"] == "USD"
    fields = next(b for b in blocks if b.get("fields"))["fields"]
    pnl = next(f["text"] for f in fields if f["text"].startswith("*PnL*"))
    assert pnl.splitlines()[1:] == [
        f"PnL before the halt: {money(DRIFT, 'USD')}",
        f"PnL during the rollback: {money(during, 'USD')}",
        f"Final PnL: {money(DRIFT + during, 'USD')}",
    ]
    assert len(fields) <= 10 and text.endswith("SUCCESS")


async def test_every_amount_in_the_report_is_written_one_way(
    make_app: MakeApp, operator: Actor, clock: ManualClock
) -> None:
    app, outcome, _, _ = await rollback_after_drift(make_app, operator, clock)
    md = build_markdown(app, app.incidents.get(outcome.incident.id))

    table = [line for line in md.splitlines() if line.startswith("| paper |")]
    pnl_cells = [line.split("|")[4].strip() for line in table]
    assert len(pnl_cells) == 9
    assert all(AMOUNT.fullmatch(cell) for cell in pnl_cells), pnl_cells  # never -3720.0
    assess = next(s for s in ended_steps(app, outcome.incident.id) if s.step == 3)
    assert assess.positions is not None
    read = [money(v["unrealized_pnl"], "USD") for v in assess.positions["paper"].values()]
    assert pnl_cells == read and any("," in cell for cell in pnl_cells)
    section = md.split("## PnL at rollback")[1].split("## ")[0]
    amounts = [line.split(": ", 1)[1] for line in section.strip().splitlines()]
    assert len(amounts) == 4 and all(AMOUNT.fullmatch(a) for a in amounts), amounts


def test_money_is_one_format() -> None:
    assert money(Decimal("-3720.0"), "USD") == "-3,720.00 USD"
    assert money("-1495.8", "USD") == "-1,495.80 USD"
    assert money(-0.001, "USDT") == "0.00 USDT"  # never a negative zero
    assert money(1234567.891) == "1,234,567.89"


async def test_the_chart_step_numbers_never_overlap_and_name_the_currency(
    make_app: MakeApp, operator: Actor, clock: ManualClock
) -> None:
    """A step of a few ms starts where the next one does: the drill's "2" and "3" were drawn on
    top of each other. Read back from the figure: every step number's box is clear of the
    others, the axes say when (date, UTC) and in what money."""
    app, outcome, _, _ = await rollback_after_drift(make_app, operator, clock)
    fig = chart(app, outcome.incident)
    try:
        FigureCanvasAgg(fig)
        fig.canvas.draw()
        renderer: Any = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        ax = fig.axes[0]
        labels = [t for t in ax.texts if t.get_text().isdigit()]
        assert [t.get_text() for t in labels] == ["1", "2", "3", "4", "5"]
        boxes = [t.get_window_extent(renderer) for t in labels]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b), (a, b)
        assert ax.get_ylabel() == "PnL (USD)"
        day = outcome.incident.opened_at.date().isoformat()
        assert ax.get_xlabel() == f"time (UTC) on {day}"
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        during = next(t for t in legend if "PnL during the rollback" in t)
        assert AMOUNT.search(during), during
    finally:
        plt.close(fig)
