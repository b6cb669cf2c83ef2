"""Adversarial: for every hold a kill can set (global, a venue, an account, a strategy; HALTED
and REDUCING), try every path that could clear, loosen, outrun or hide it — approvals filed
before it or aimed next to it, enabling the gates, resume, an approved flatten, a flatten it
lands in the middle of, a rollback by the clock, recover, the clock's sweeps and expiry, a
drill, a double kill, the status a person reads — and assert the hold still governs: still
active, in its state, shown, and the guard refuses an opening order under its scope.

The command paths run in-process on a real SQLite file and the paper venue per case; the Slack
face's commands and buttons run through the loopback Slack against the real server; the
terminal's through real `rollbot` processes. Each part prints "N paths tried, N held"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from approvals.support import OPERATOR, OPERATOR2, RISK, make_settings, slack, write_config
from approvals.test_cli import rollbot as cli_run
from fakes.rollbot_harness import OPERATOR as SLACK_OPERATOR
from fakes.rollbot_harness import OPS, approval_buttons, bot_settings, running
from fakes.slack import FakeSlack

from reliability.figures import record
from rollbot.bot.scheduler import Clockwork
from rollbot.clock import ManualClock, iso
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.rollback.drill import run_drill
from rollbot.commands.rollback.engine import Engine
from rollbot.commands.rollback.rca import record_rca
from rollbot.config import PaperVenueConfig
from rollbot.errors import RollbotError
from rollbot.storage.events import Actor

SCOPES = ("global", "venue:paper", "account:paper/DU1", "strategy:alpha")
STATES = (TradingState.HALTED, TradingState.REDUCING)
HALTED = TradingState.HALTED
KILLER = slack(OPERATOR2)
RCA = {
    "timeline": "t",
    "root_cause": "r",
    "contributing_factors": "c",
    "lessons_learned": "l",
    "recommended_actions": "a",
}


@dataclass
class Case:
    app: Rollbot
    clock: ManualClock
    root: Path
    scope: str
    state: TradingState
    hold_id: int = 0
    incident_id: str = ""
    notes: list[str] = field(default_factory=list)

    def kill(self, scope: str | None = None, state: TradingState | None = None) -> int:
        """A person's kill: the incident and its hold in one transaction, as /kill (or
        `/kill reducing`) stores it."""
        engine = Engine(self.app, KILLER)
        incident, _ = engine.open_held_incident(
            kind="kill",
            reason=f"kill {scope or self.scope}",
            scope_text=scope or self.scope,
            hold_state=state or self.state,
        )
        hold = next(h for h in self.app.killswitch.holds.active() if h.incident_id == incident.id)
        return hold.id

    def set_target(self) -> None:
        self.hold_id = self.kill()
        hold = next(h for h in self.app.killswitch.holds.active() if h.id == self.hold_id)
        self.incident_id = hold.incident_id or ""


def governs(case: Case) -> str | None:
    """What is wrong with the target hold now, or None when it still governs."""
    app = case.app
    hold = next((h for h in app.killswitch.holds.active() if h.id == case.hold_id), None)
    if hold is None:
        return "cleared"
    if TradingState(hold.state).strictness < case.state.strictness:  # tighter still governs
        return f"loosened to {hold.state}"
    shown = [r for r in app.killswitch.status(app.venue_names) if r.scope == case.scope]
    if not shown or case.hold_id not in {h.id for h in shown[0].holds}:
        return "not shown in the status"
    kind, _, name = case.scope.partition(":")
    decision = app.killswitch.check_order(
        "paper",
        "AAPL",
        "BUY",
        1,
        position=0,
        account=name.partition("/")[2] if kind == "account" else None,
        strategy=name if kind == "strategy" else None,
    )
    # refused, and from a state at least as strict as the hold's (under REDUCING the guard may
    # refuse for want of a venue read, POSITION_UNAVAILABLE: still the REDUCING state's answer)
    if decision.allowed or TradingState(decision.state).strictness < case.state.strictness:
        return f"the guard answered {decision.code} ({decision.state})"
    return None


async def quietly(action: Awaitable[object]) -> None:
    """A path may be refused: that is one way of holding. Say nothing more about it."""
    with contextlib.suppress(RollbotError):
        await action


# -- the paths ----------------------------------------------------------------------------------
async def older_clear_request(case: Case) -> None:
    """A clear request on the scope filed before the kill, approved after it."""
    case.kill()
    req = await Approvals(case.app).request("clear_hold", {"scope": case.scope}, KILLER, "ok")
    case.set_target()
    await quietly(Approvals(case.app).vote(req.id, slack(RISK), "approve"))
    fresh = Approvals(case.app).get(req.id).superseded_by
    if fresh:  # the fresh request shows the kill stays: approving it clears only the older one
        await quietly(Approvals(case.app).vote(fresh, slack(RISK), "approve"))


async def clear_next_door(case: Case) -> None:
    """A clear request of another scope's hold, or of every hold on the scope from a source."""
    other = "venue:paper" if case.scope == "global" else "global"
    case.kill(other, TradingState.HALTED)
    case.set_target()
    for params in ({"scope": other}, {"scope": case.scope, "source": "monitor:pnl"}):
        try:
            req = await Approvals(case.app).request("clear_hold", params, KILLER, "ok")
        except RollbotError:
            continue
        await quietly(Approvals(case.app).vote(req.id, slack(RISK), "approve"))


async def enable_gates(case: Case) -> None:
    case.set_target()
    await quietly(_request_and_approve(case, "enable_gates", {}))


async def resume_own(case: Case) -> None:
    case.set_target()
    await quietly(_request_and_approve(case, "resume", {"incident_id": case.incident_id}))


async def resume_older_ready(case: Case) -> None:
    """An older incident meets every condition; the kill came after it."""
    old = await Engine(case.app, KILLER).kill("older incident", "venue:paper")
    record_rca(case.app, old.incident.id, RCA, slack(RISK))
    case.clock.advance(hours=25)
    case.app.db.execute(  # a passed drill, recorded as run_drill records it
        "INSERT INTO drills (at, status, report_path) VALUES (?, 'SUCCESS', '')",
        (iso(case.clock.now()),),
    )
    case.clock.advance(minutes=1)
    case.set_target()
    await quietly(_request_and_approve(case, "resume", {"incident_id": old.incident.id}))


async def approved_flatten(case: Case) -> None:
    case.set_target()
    await quietly(_request_and_approve(case, "flatten", {"venue": "paper"}))


async def kill_during_flatten(case: Case) -> None:
    """The kill lands while a flatten of the venue (whose closes never fill) runs."""
    app = case.app
    sent_after: list[str] = []

    async def kill_meanwhile() -> None:
        while len(app.db.query("SELECT 1 FROM order_intents")) < 2:
            await asyncio.sleep(0)
        case.set_target()
        mark = len(app.db.query("SELECT 1 FROM order_intents"))
        while app.incidents.get("INC-0001").phase != "DONE":
            await asyncio.sleep(0)
        sent_after.extend(
            r["client_order_id"]
            for r in app.db.query("SELECT client_order_id FROM order_intents")[mark:]
        )

    watcher = asyncio.create_task(kill_meanwhile())
    await Engine(app, slack(RISK)).flatten("close paper", venue="paper")
    await watcher
    stops = case.scope != "strategy:alpha" and case.state is TradingState.HALTED
    if stops and sent_after:
        case.notes.append(f"{len(sent_after)} closing orders after the kill")


async def rollback_by_the_clock(case: Case) -> None:
    case.set_target()
    await Engine(case.app, Actor.clock("pnl")).rollback("PnL -5%", trigger="PnL")


async def recover(case: Case) -> None:
    """A rollback cut off before it ran (its process died) is finished by `recover`."""
    Engine(case.app, KILLER).open_held_incident(kind="rollback", reason="cut off")
    case.set_target()
    case.clock.advance(minutes=2)
    await resume_unfinished(case.app, slack(OPERATOR))


async def the_clock(case: Case) -> None:
    """The clock's start, its sweeps and the expiry of a pending clear request."""
    case.set_target()
    await quietly(Approvals(case.app).request("clear_hold", {"scope": case.scope}, KILLER, "x"))
    case.clock.advance(hours=2)
    clockwork = Clockwork(case.app)
    try:
        await clockwork.sweep()
        await clockwork.halt_abandoned_flattens()
        Approvals(case.app).expire_due()
    finally:
        clockwork.shutdown()


async def drill(cases: list[Case]) -> None:
    """A drill runs in its own sandbox (database, book, gates) and only records its result
    here: one drill with every scope held at once (one per state) covers each of them."""
    for case in cases:
        case.set_target()
    first = cases[0]
    await run_drill(
        first.app.settings, slack(OPERATOR), clock=first.clock, workdir=first.root / "drill"
    )
    if not first.app.db.query("SELECT 1 FROM drills"):
        first.notes.append("the drill left no result")


async def double_kill(case: Case) -> None:
    """The same person kills twice; the second kill's hold is cleared: the first still holds."""
    case.set_target()
    second = case.kill()
    params = {"scope": case.scope, "hold_ids": [second]}
    await quietly(_request_and_approve(case, "clear_hold", params))


async def the_other_kind_on_top(case: Case) -> None:
    """A person's kill of the other state on the same scope (HALTED over a REDUCING hold, or
    REDUCING over a HALTED one), then that kill's hold cleared through an approved request:
    the stricter state governed meanwhile, and the target hold is untouched by either."""
    case.set_target()
    other = TradingState.HALTED if case.state is TradingState.REDUCING else TradingState.REDUCING
    second = case.kill(state=other)
    if governs(case) is not None or (
        case.app.killswitch.state_of([case.scope]) is not TradingState.HALTED
    ):
        case.notes.append(f"with a {other.value} kill on top: {governs(case) or 'not HALTED'}")
    params = {"scope": case.scope, "hold_ids": [second]}
    await quietly(_request_and_approve(case, "clear_hold", params))


async def _request_and_approve(case: Case, action: str, params: dict[str, object]) -> None:
    req = await Approvals(case.app).request(action, params, KILLER, "adversary")
    await Approvals(case.app).vote(req.id, slack(RISK), "approve")


EVIDENCE = {
    "APPROVAL_EXECUTED",
    "APPROVAL_REFUSED",
    "APPROVAL_REQUEST_REFUSED",
    "APPROVAL_SUPERSEDED",
    "APPROVAL_EXPIRED",
    "FLATTEN_STOPPED",
    "ORDER_SENT",
    "GATES_WRITTEN",
    "HOLD_CLEARED",
    "STEP_ENDED",
    "INCIDENT_RESUMED",
    "DRILL",
}

PATHS: dict[str, Callable[[Case], Awaitable[None]]] = {
    "clear request filed before the kill": older_clear_request,
    "clear request next door": clear_next_door,
    "enable gates": enable_gates,
    "resume its own incident": resume_own,
    "resume an older ready incident": resume_older_ready,
    "approved flatten": approved_flatten,
    "kill during a flatten": kill_during_flatten,
    "rollback by the clock": rollback_by_the_clock,
    "recover": recover,
    "the clock": the_clock,
    "double kill, one cleared": double_kill,
    "the other kind of kill on top, then cleared": the_other_kind_on_top,
}


async def test_every_hold_a_kill_sets_survives_every_path(tmp_path: Path) -> None:
    tried, held, broken = 0, 0, []
    did: dict[str, set[str]] = {}
    spent: dict[str, float] = {}
    for path_name, path in PATHS.items():
        for scope in SCOPES:
            for state in STATES:
                root = tmp_path / f"{len(PATHS)}-{tried}"
                settings = make_settings(root)
                if path is kill_during_flatten:
                    settings.venues = [
                        PaperVenueConfig(book_path=root / "paper.db", fill="none"),
                    ]
                    settings.flatten.timeout_s = 1
                clock = ManualClock()
                started = time.perf_counter()
                app = Rollbot.open(settings, clock=clock)
                case = Case(app=app, clock=clock, root=root, scope=scope, state=state)
                try:
                    await path(case)
                    problem = governs(case) or "; ".join(case.notes) or None
                    kinds = {r["kind"] for r in app.db.query("SELECT DISTINCT kind FROM events")}
                    did.setdefault(path_name, set()).update(kinds & EVIDENCE)
                finally:
                    await app.aclose()
                    spent[path_name] = spent.get(path_name, 0) + time.perf_counter() - started
                tried += 1
                if problem is None:
                    held += 1
                else:
                    broken.append(f"{path_name} vs {state.value} {scope}: {problem}")
    for state in STATES:  # paths run once with every scope held
        root = tmp_path / f"drill-{state.value}"
        clock = ManualClock()
        app = Rollbot.open(make_settings(root), clock=clock)
        cases = [Case(app=app, clock=clock, root=root, scope=s, state=state) for s in SCOPES]
        try:
            await drill(cases)
            for case in cases:
                tried += 1
                problem = governs(case) or "; ".join(cases[0].notes) or None
                if problem is None:
                    held += 1
                else:
                    broken.append(f"drill vs {state.value} {case.scope}: {problem}")
            did.setdefault("drill", set()).add("DRILL")
        finally:
            await app.aclose()
    line = f"{tried} paths tried, {held} held"
    print(line)
    record("adversarial holds", line + (f"; broken: {broken}" if broken else ""))
    assert broken == [], broken
    # each path really ran (its own events are there), not only failed to start
    for path_name, kinds in did.items():
        took = f" ({spent[path_name]:.1f} s)" if path_name in spent else ""
        print(f"  {path_name}{took}: {', '.join(sorted(kinds)) or '-'}")
    assert all(did.values()), did
    assert tried == (len(PATHS) + 1) * len(SCOPES) * len(STATES)


# -- the Slack face: its commands and buttons, through the loopback Slack -----------------------
async def _slash(fake: FakeSlack, command: str, text: str, user: str) -> None:
    delivered = await fake.deliver_slash_command(command, text, user_id=user, channel_id=OPS)
    await fake.wait_for_ack(delivered.envelope_id)


async def _settled(fake: FakeSlack, app: Rollbot) -> None:
    await fake.wait_until(
        lambda: (
            app.outbox.pending() == []
            and all(i.phase in ("DONE", "RESUMED") for i in app.incidents.list(open_only=False))
            and not app.db.query("SELECT 1 FROM approvals WHERE status = 'EXECUTING'")
        ),
        timeout=20,
    )


async def test_no_slack_command_or_button_clears_loosens_or_hides_a_later_kill(
    tmp_path: Path,
) -> None:
    """Per scope, a /kill lands after a clear request was filed; then the Approve buttons of
    that request (and of its fresh copy), /resume, /flatten and /rollback approved by buttons,
    and /incident close are tried in turn: after each, the /kill's hold still governs."""
    tried, held, broken, seen = 0, 0, [], set()
    for state in STATES:  # `/kill` and `/kill reducing`
        for scope in SCOPES:
            for name, problem, kinds in await _slack_paths(tmp_path, scope, state):
                tried += 1
                seen |= kinds
                if problem is None:
                    held += 1
                else:
                    broken.append(f"{name} vs {state.value} {scope}: {problem}")
    line = f"Slack: {tried} paths tried, {held} held"
    print(line)
    record("adversarial holds", line + (f"; broken: {broken}" if broken else ""))
    assert broken == [], broken
    assert tried == 6 * len(SCOPES) * len(STATES)
    # each path ran: the old request superseded, the fresh one cleared kill A only, the flatten
    # and the rollback executed, /resume refused, the incident closed
    assert {
        "APPROVAL_SUPERSEDED",
        "HOLD_CLEARED",
        "APPROVAL_EXECUTED",
        "FLATTEN",
        "ROLLBACK",
        "RESUME_REFUSED",
        "INCIDENT_CLOSED",
    } <= seen, seen


async def _slack_paths(
    tmp_path: Path, scope: str, state: TradingState = HALTED
) -> list[tuple[str, str | None, set[str]]]:
    root = tmp_path / f"{state.value}-{scope.replace(':', '-').replace('/', '-')}"
    how = "reducing " if state is TradingState.REDUCING else ""
    out: list[tuple[str, str | None, set[str]]] = []
    async with FakeSlack() as fake, running(fake, bot_settings(root)) as server:
        app = server.rb
        await _slash(fake, "/kill", f"{how}{scope} kill A", SLACK_OPERATOR)
        await _settled(fake, app)
        older = await Approvals(app).request(
            "clear_hold", {"scope": scope}, slack(SLACK_OPERATOR), "A is fixed"
        )
        await _slash(fake, "/kill", f"{how}{scope} kill B", SLACK_OPERATOR)
        await _settled(fake, app)
        target = Case(app=app, clock=ManualClock(), root=root, scope=scope, state=state)
        target.hold_id = max(h.id for h in app.killswitch.holds.active())
        target.incident_id = app.incidents.latest().id  # type: ignore[union-attr]
        attempts: list[tuple[str, Awaitable[None]]] = [
            ("Approve on the older clear request", _approve(fake, app, older.id)),
            ("Approve on its fresh copy", _approve_newest(fake, app)),
            ("/resume", _slash(fake, "/resume", f"{target.incident_id} ok", RISK)),
            ("/flatten + Approve", _asked_then_approved(fake, app, "/flatten", "")),
            ("/rollback + Approve", _asked_then_approved(fake, app, "/rollback", "x")),
            ("/incident close", _slash(fake, "/incident", f"close {target.incident_id} ok", RISK)),
        ]
        for name, attempt in attempts:
            await attempt
            await _settled(fake, app)
            out.append((name, governs(target), set()))
        kinds = {r["kind"] for r in app.db.query("SELECT DISTINCT kind FROM events")}
        done = {a.action for a in Approvals(app).list() if a.status.value == "EXECUTED"}
        kinds |= {action.upper() for action in done}
        if any("refused" in e.text for e in fake.ephemeral_to(RISK)):
            kinds.add("RESUME_REFUSED")
        out[-1] = (out[-1][0], out[-1][1], kinds)
    return out


async def _approve(fake: FakeSlack, app: Rollbot, approval_id: str) -> None:
    ts, _ = next(
        b
        for b in approval_buttons(fake, OPS)
        if b[1]["action_id"] == "approval_approve" and b[1]["value"] == approval_id
    )
    await fake.deliver_block_action(
        fake.block_action_payload(
            "approval_approve", approval_id, user_id=RISK, channel_id=OPS, message_ts=ts
        )
    )
    await fake.wait_until(
        lambda: (
            Approvals(app).get(approval_id).status.value != "PENDING"
            or app.events.list(kinds=["APPROVAL_REFUSED"])
        ),
        timeout=10,
    )


async def _approve_newest(fake: FakeSlack, app: Rollbot) -> None:
    pending = Approvals(app).list(pending_only=True)
    if pending:
        await _approve(fake, app, pending[0].id)


async def _asked_then_approved(fake: FakeSlack, app: Rollbot, command: str, text: str) -> None:
    before = {a.id for a in Approvals(app).list()}
    await _slash(fake, command, text, SLACK_OPERATOR)
    await fake.wait_until(lambda: {a.id for a in Approvals(app).list()} - before, timeout=10)
    (new,) = {a.id for a in Approvals(app).list()} - before
    await fake.wait_until(lambda: any(b[1]["value"] == new for b in approval_buttons(fake, OPS)))
    await _approve(fake, app, new)


# -- the terminal: the commands a person could try, as real processes ---------------------------
async def test_no_terminal_command_clears_loosens_or_hides_a_hold(tmp_path: Path) -> None:
    """Every hold at once on one desk (8: each scope HALTED and REDUCING); then `recover`, `kill
    clear` of another scope approved, `request enable-gates` approved and `gates disable` at the
    terminal: after each, every hold stays, as strict; at the end `kill status` lists each."""
    cfg = write_config(tmp_path)
    app = Rollbot.open(make_settings(tmp_path))
    try:
        cases = []
        for scope in SCOPES:
            for state in STATES:
                case = Case(app=app, clock=ManualClock(), root=tmp_path, scope=scope, state=state)
                case.set_target()
                cases.append(case)
        Engine(app, KILLER).open_held_incident(
            kind="kill", reason="to clear", scope_text="account:paper/DU9"
        )
    finally:
        await app.aclose()
    commands = [
        ("alice", "recover"),
        ("alice", "kill", "clear", "-r", "other scope fixed", "--scope", "account:paper/DU9"),
        ("rita", "approve", "APR-0001"),
        ("alice", "request", "enable-gates", "-r", "go live"),
        ("rita", "approve", "APR-0002"),
        ("alice", "gates", "disable", "--confirm"),
    ]
    tried, held, broken = 0, 0, []
    for who, *args in commands:
        done = cli_run(cfg, who, *args)
        assert "Traceback" not in done.stderr, done.stderr
        app = Rollbot.open(make_settings(tmp_path))
        try:
            active = {h.id: h.state for h in app.killswitch.holds.active()}
        finally:
            await app.aclose()
        for case in cases:
            tried += 1
            state = active.get(case.hold_id)
            if state is None:
                broken.append(f"{' '.join(args)} vs {case.state.value} {case.scope}: gone")
            elif TradingState(state).strictness < case.state.strictness:
                broken.append(f"{' '.join(args)} vs {case.state.value} {case.scope}: {state}")
            else:
                held += 1
    app = Rollbot.open(make_settings(tmp_path))
    try:  # the commands did act: the other scope's hold cleared, the gates armed then disabled
        statuses = [a.status.value for a in Approvals(app).list()]
        assert statuses == ["EXECUTED", "EXECUTED"], statuses
        assert not app.gates.read().live_allowed
    finally:
        await app.aclose()
    shown = json.loads(cli_run(cfg, "alice", "kill", "status", "--json").stdout)
    listed = {h["id"] for row in shown for h in row["holds"]}
    for case in cases:  # nothing hides a hold from the person reading the status
        tried += 1
        if case.hold_id in listed:
            held += 1
        else:
            broken.append(f"kill status vs {case.state.value} {case.scope}: not listed")
    line = f"terminal: {tried} paths tried, {held} held"
    print(line)
    record("adversarial holds", line + (f"; broken: {broken}" if broken else ""))
    assert broken == [], broken
    assert tried == (len(commands) + 1) * len(SCOPES) * len(STATES)
