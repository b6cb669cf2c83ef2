"""The five steps against the paper venue: what each step records, steps alone or whole, the
strategy-stop hook, and a finished incident that is run again."""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web
from fakes.loopback import serve_post
from typer.testing import CliRunner

from engine.support import START, book_positions, closing_orders, open_order_count, step_events
from rollbot.bot.cli.app import app as cli
from rollbot.brokers.base import Side, VenueUnavailable
from rollbot.clock import ManualClock, parse_iso
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import ROLLBACK_STEPS, STEPS, Engine, StepStatus
from rollbot.config import HookConfig, HooksConfig, Settings
from rollbot.storage.events import Actor

MakeApp = Callable[..., Rollbot]


async def test_rollback_runs_five_steps_and_records_each(
    make_app: MakeApp, operator: Actor, clock: ManualClock
) -> None:
    app = make_app()
    paper = app.venue("paper")

    outcome = await Engine(app, operator).rollback("PnL breach on the desk")

    assert outcome.final_status is StepStatus.SUCCESS
    assert [s.status for s in outcome.steps] == [StepStatus.SUCCESS] * 5
    assert outcome.residual == {} and outcome.open_orders == {} and outcome.unreachable == []
    # every step: STEP_STARTED then STEP_ENDED, in order, with start, end, duration, status
    events = step_events(app, outcome.incident.id)
    assert [(e.kind, e.data["step"]) for e in events] == [
        (kind, n) for n in ROLLBACK_STEPS for kind in ("STEP_STARTED", "STEP_ENDED")
    ]
    for started, ended in zip(events[::2], events[1::2], strict=True):
        data = ended.data
        assert data["name"] == STEPS[data["step"]].name == started.data["name"]
        assert data["status"] == "SUCCESS" and data["actions"]
        begin, end = parse_iso(data["start_time"]), parse_iso(data["end_time"])
        assert started.at <= begin <= end
        assert data["duration_seconds"] == pytest.approx((end - begin).total_seconds(), abs=0.002)
    actions = {s.step: " | ".join(s.actions) for s in outcome.steps}
    assert "paper: 24 of 24 orders cancelled, none left" in actions[1]
    assert "Guard refuses new orders (HALTED)" in actions[2]
    assert "paper: 9 positions" in actions[3] and "LIMIT_ORDERS_WITH_TIMEOUT" in actions[3]
    assert "paper: flat: 9 positions closed" in actions[4]
    assert "paper: flat, no open orders" in actions[5]
    # the venue: flat, nothing working, each position closed by exactly one filled order
    assert book_positions(paper) == {}
    assert open_order_count(paper) == 0
    closes = closing_orders(paper)
    assert set(closes) == set(START)
    for symbol, orders in closes.items():
        assert [(o["status"], Decimal(o["filled"])) for o in orders] == [
            ("FILLED", abs(START[symbol]))
        ]
        assert orders[0]["side"] == ("SELL" if START[symbol] > 0 else "BUY")
    # the state it leaves: HALTED, gates on shadow, the guard refusing, the incident done
    assert app.killswitch.state_of(["global"]).value == "HALTED"
    assert app.gates.read().shadow_active and not app.gates.read().live_allowed
    assert not app.killswitch.check_order("paper", "AAPL", Side.BUY, 1).allowed
    incident = app.incidents.get(outcome.incident.id)
    assert (incident.phase, incident.final_status) == ("DONE", "SUCCESS")


async def test_kill_is_steps_one_and_two_only(make_app: MakeApp, operator: Actor) -> None:
    app = make_app()
    paper = app.venue("paper")

    outcome = await Engine(app, operator).kill("runaway strategy")

    assert [s.step for s in outcome.steps] == [1, 2]
    assert outcome.final_status is StepStatus.SUCCESS
    ended = [
        e.data["step"] for e in step_events(app, outcome.incident.id) if e.kind == "STEP_ENDED"
    ]
    assert ended == [1, 2]
    assert book_positions(paper) == START  # a kill cancels, it does not close
    assert open_order_count(paper) == 0
    assert closing_orders(paper) == {}
    assert app.gates.read().shadow_active


async def test_flatten_is_steps_three_to_five(make_app: MakeApp, operator: Actor) -> None:
    app = make_app()
    paper = app.venue("paper")
    engine = Engine(app, operator)
    await engine.kill("runaway strategy")

    outcome = await engine.flatten("close everything")

    assert [s.step for s in outcome.steps] == [3, 4, 5]
    assert outcome.final_status is StepStatus.SUCCESS
    ended = [
        e.data["step"] for e in step_events(app, outcome.incident.id) if e.kind == "STEP_ENDED"
    ]
    assert ended == [3, 4, 5]
    assert book_positions(paper) == {}
    assert {s: len(o) for s, o in closing_orders(paper).items()} == dict.fromkeys(START, 1)


async def test_flatten_alone_cancels_the_resting_orders_first(
    make_app: MakeApp, operator: Actor
) -> None:
    """Without a kill first, the strategy's 24 resting orders (stops among them) could re-open
    what the flatten closes: step 4 cancels them before closing, and says so."""
    app = make_app()
    paper = app.venue("paper")

    outcome = await Engine(app, operator).flatten("close everything")

    assert book_positions(paper) == {}
    assert open_order_count(paper) == 0
    assert [s.status for s in outcome.steps] == [StepStatus.SUCCESS] * 3
    assert outcome.final_status is StepStatus.SUCCESS
    assert outcome.residual == {} and outcome.open_orders == {}
    assert "24 working order(s) cancelled first" in outcome.steps[1].venues["paper"]


async def test_flatten_of_some_symbols_cancels_only_their_orders(
    make_app: MakeApp, operator: Actor
) -> None:
    app = make_app()
    paper = app.venue("paper")
    before = {o.symbol for o in await paper.open_orders()}
    assert {"AAPL", "MSFT"} <= before

    await Engine(app, operator).flatten("two symbols", symbols={"AAPL", "MSFT"})

    left = {o.symbol for o in await paper.open_orders()}
    assert left == before - {"AAPL", "MSFT"}
    assert set(book_positions(paper)) == set(START) - {"AAPL", "MSFT"}


async def test_a_finished_incident_run_again_sends_nothing(
    make_app: MakeApp, operator: Actor
) -> None:
    app = make_app()
    paper = app.venue("paper")
    first = await Engine(app, operator).rollback("PnL breach")
    calls, orders = paper.calls, paper.book.order_rows()

    again = await Engine(app, operator).run(first.incident, ROLLBACK_STEPS, new=False)

    assert again.final_status is StepStatus.SUCCESS
    assert paper.calls == calls  # not even a read
    assert paper.book.order_rows() == orders
    assert len(step_events(app, first.incident.id)) == 10
    assert await resume_unfinished(app, operator) == []


async def test_a_crash_after_the_last_step_is_closed_at_the_next_start(
    make_app: MakeApp, operator: Actor
) -> None:
    """The process died between the last STEP_ENDED and marking the incident done."""
    app = make_app()
    paper = app.venue("paper")
    first = await Engine(app, operator).rollback("PnL breach")
    app.incidents.set_phase(first.incident.id, "RUNNING", operator)
    calls = paper.calls

    [resumed] = await resume_unfinished(app, operator)

    assert resumed.final_status is StepStatus.SUCCESS
    assert app.incidents.get(first.incident.id).phase == "DONE"
    assert paper.calls == calls
    assert await resume_unfinished(app, operator) == []


def test_rollback_without_confirm_exits_2_and_sends_nothing(
    settings: Settings, write_config: Callable[..., Path], make_app: MakeApp
) -> None:
    app = make_app()
    paper = app.venue("paper")
    before = (book_positions(paper), paper.book.order_rows())
    config = write_config(app.settings)

    result = CliRunner().invoke(cli, ["--config", str(config), "rollback", "--reason", "bad day"])

    assert result.exit_code == 2
    assert "add --confirm (nothing was sent)" in " ".join(result.stderr.split())
    assert (book_positions(paper), paper.book.order_rows()) == before
    assert app.incidents.list() == []
    assert app.db.query("SELECT * FROM order_intents") == []


# -- the strategy-stop hook (IBKR seed step 1: strategy.stop()) -----------------------------------
class StopEndpoint:
    """A loopback HTTP endpoint standing in for the strategy's stop URL."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.hang = False
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        if self.hang:
            await self.release.wait()
        return web.json_response({"stopped": True})


@pytest.fixture
async def stop_endpoint() -> AsyncIterator[StopEndpoint]:
    endpoint = StopEndpoint()
    async with serve_post("/strategy/stop", endpoint.handle) as base:
        endpoint.url = f"{base}/strategy/stop"
        try:
            yield endpoint
        finally:
            endpoint.release.set()


async def test_strategy_stop_hook_runs_in_step_one(
    make_app: MakeApp, operator: Actor, tmp_path: Path, stop_endpoint: StopEndpoint
) -> None:
    marker = tmp_path / "stopped.txt"
    command = f'printf "%s|%s" "$ROLLBOT_INCIDENT" "$ROLLBOT_REASON" > {shlex.quote(str(marker))}'
    hook = HookConfig(command=command, url=stop_endpoint.url, timeout_s=5)
    app = make_app(hooks=HooksConfig(strategy_stop=hook))

    outcome = await Engine(app, operator).kill("strategy looping")

    incident = outcome.incident.id
    assert marker.read_text() == f"{incident}|strategy looping"
    assert stop_endpoint.received == [
        {"action": "stop", "incident": incident, "reason": "strategy looping"}
    ]
    halt = outcome.steps[0]
    assert halt.status is StepStatus.SUCCESS
    assert halt.actions[1] == "strategy-stop command succeeded; strategy-stop POST answered 200"
    assert "paper: 24 of 24 orders cancelled, none left" in halt.actions


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


async def test_a_hung_hook_is_cut_at_its_timeout_and_the_halt_succeeds(
    make_app: MakeApp, operator: Actor, tmp_path: Path, stop_endpoint: StopEndpoint
) -> None:
    stop_endpoint.hang = True
    pidfile = tmp_path / "child.pid"
    command = f"sleep 30 & echo $! > {shlex.quote(str(pidfile))}; wait"
    hook = HookConfig(command=command, url=stop_endpoint.url, timeout_s=0.5)
    app = make_app(hooks=HooksConfig(strategy_stop=hook))

    began = time.perf_counter()
    outcome = await Engine(app, operator).kill("strategy hung")
    took = time.perf_counter() - began

    halt = outcome.steps[0]
    assert halt.status is StepStatus.SUCCESS
    assert halt.actions[1] == (
        "strategy-stop command timed out after 0.5 s (killed); "
        "strategy-stop POST failed: TimeoutError "
    )
    assert "paper: 24 of 24 orders cancelled, none left" in halt.actions
    assert took < 3  # both hooks ran at once, each cut at 0.5 s
    assert stop_endpoint.received  # the POST did reach the strategy
    assert not _running(int(pidfile.read_text()))  # what the command started is gone too
    assert outcome.final_status is StepStatus.SUCCESS


async def test_step_records_survive_as_json_for_the_report(
    make_app: MakeApp, operator: Actor
) -> None:
    """STEP_ENDED data is the report's only source: it holds every section of the seed log."""
    app = make_app()
    outcome = await Engine(app, operator).rollback("PnL breach")
    ended = {
        e.data["step"]: e.data
        for e in step_events(app, outcome.incident.id)
        if e.kind == "STEP_ENDED"
    }
    assert set(ended[3]["positions"]["paper"]) == set(START)
    assert ended[3]["flatten_strategy"] == {"paper": "LIMIT_ORDERS_WITH_TIMEOUT"}
    assert {o["symbol"] for o in ended[4]["orders"]} == set(START)
    assert ended[5]["verification"]["all_positions_flat"] is True
    json.dumps(ended)  # plain JSON all the way down


async def test_a_failing_nav_read_never_stops_the_cancels(
    make_app: MakeApp, operator: Actor
) -> None:
    """Step 1 exists to cancel: the NAV it reads beside the cancels must not stand in front."""
    app = make_app()
    paper = app.venue("paper")

    async def no_account_summary() -> None:
        raise VenueUnavailable("paper", "account summary unavailable")

    paper.account = no_account_summary  # type: ignore[method-assign]

    outcome = await Engine(app, operator).kill("NAV endpoint down")

    assert open_order_count(paper) == 0
    assert outcome.steps[0].status is StepStatus.SUCCESS
    assert outcome.steps[0].venues["paper"] == "24 of 24 orders cancelled, none left"
