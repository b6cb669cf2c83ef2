"""Adversarial suite (issue 14): for every hold a kill can set, every path that could clear,
loosen, outrun or hide it.

Each trial is a fresh desk (SQLite file, paper book, gates files) on a ManualClock. A person
kills a scope from Slack (the real listener wrapper, SlackDriver) or the terminal; then one path
tries to get past the hold: a clear request filed before the kill, a self-approval, a clear of
another scope, a denied or expired request, re-arming the gates, resuming an older incident, a
flatten of another venue or of the same scope, a rollback, a drill, a recover, the clock's
sweeps, /gates, /incident close, the risk-alert and checklist buttons, a kill during a
flatten, names the guard does not know, a database moved away, a spoofed terminal identity.
After each path the hold must still govern: the guard answers HALTED for an order in its scope
(not REDUCING, not ACTIVE), and live trading is not re-armed. Every path runs again with the
person's kill a REDUCING one (`/kill reducing`, issue 16 item 7): then the guard must refuse an
order that adds to the position, from a state at least as strict, and the hold must never be
cleared or loosened by anything but its own approved clear.

A positive control per scope (a clear request filed after the kill, approved by a risk officer)
shows the probe can see a hold go.

The figures ("N paths tried, N held") are printed under "rollbot reliability figures".
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from approvals.support import write_config

from reliability.figures import record
from reliability.support import (
    DEVOPS,
    OPERATORS,
    OPS,
    OUTSIDER,
    RISK,
    SMALL_BOOK,
    SlackDriver,
    settings_for,
    write_book,
)
from rollbot.bot.slack.ids import Action, Command
from rollbot.clock import ManualClock
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.rollback.drill import run_drill
from rollbot.commands.rollback.engine import Engine
from rollbot.commands.rollback.rca import record_rca
from rollbot.config import PaperVenueConfig, Settings
from rollbot.errors import RollbotError
from rollbot.storage.events import Actor

ROLLBOT = str(Path(sys.executable).with_name("rollbot"))
KILLER, ASKER, OTHER, EARLIER = OPERATORS[0], OPERATORS[1], OPERATORS[2], OPERATORS[3]
SYSTEM = Actor(id="rollbot", source="system")
RCA = {
    "timeline": ["09:00 runaway orders"],
    "root_cause": "a bad deploy",
    "contributing_factors": "no canary",
    "lessons_learned": "canary first",
    "recommended_actions": "add a canary",
}


@dataclass(frozen=True)
class Scope:
    """A scope a kill can hold, and the order the guard is asked about inside it."""

    text: str
    account: str | None = None
    strategy: str | None = None


SCOPES = [
    Scope("global"),
    Scope("venue:paper"),
    Scope("account:paper/DU1", account="DU1"),
    Scope("strategy:momo", strategy="momo"),
]


@dataclass
class Desk:
    root: Path
    settings: Settings
    rb: Rollbot
    clock: ManualClock
    slack: SlackDriver
    scope: Scope
    state: TradingState = TradingState.HALTED  # what the person's /kill asks for
    notes: list[str] = field(default_factory=list)

    def check(self, venue: str = "paper", **kw: Any) -> Any:
        return self.rb.killswitch.check_order(
            venue,
            kw.pop("symbol", "AAPL"),
            kw.pop("side", "SELL"),
            kw.pop("quantity", 1),
            account=self.scope.account,
            strategy=self.scope.strategy,
            **kw,
        )

    def governs(self) -> str | None:
        """None when the hold still governs its scope; else what the guard said instead."""
        if self.state is TradingState.REDUCING:
            # a BUY of AAPL adds to the long position: refused, from REDUCING or stricter
            # (POSITION_UNAVAILABLE while the venue is read again is the REDUCING state's answer)
            decision = self.check(side="BUY")
            if decision.allowed or decision.state.strictness < self.state.strictness:
                return f"guard answered {decision.code} ({decision.state}) for an opening order"
            return None
        decision = self.check()
        if decision.allowed or decision.code != "HALTED":
            return f"guard answered {decision.code} ({decision.state}) for an order in scope"
        return None

    async def kill(self, user: str = KILLER, reason: str = "runaway orders") -> None:
        text = reason if self.scope.text == "global" else f"{self.scope.text} {reason}"
        if self.state is TradingState.REDUCING:
            text = f"reducing {text}"
        seen = await self.slack.command(Command.KILL, text, user)
        await self.slack.settle()
        assert any(self.state.value in t for t in seen.texts), seen.texts

    async def request(self, action: str, params: dict[str, Any], who: str, why: str) -> Any:
        """The stored request, or None when it was refused (a refusal is not a way past)."""
        filed = await quietly(
            Approvals(self.rb).request(action, params, Actor(id=who, source="slack"), why)
        )
        return None if isinstance(filed, RollbotError) else filed

    async def click(self, action: Action, value: str, user: str) -> list[str]:
        seen = await self.slack.action(action, value, user)
        await self.slack.settle()
        return seen.texts

    async def approve(self, request: Any, user: str = RISK) -> list[str]:
        return [] if request is None else await self.click(Action.APPROVE, request.id, user)


async def open_desk(
    root: Path, scope: Scope, state: TradingState = TradingState.HALTED, **paper: Any
) -> Desk:
    book = write_book(root, SMALL_BOOK)
    settings = settings_for(root, book, rollback_needs_approval=True, **paper)
    settings.venues.append(
        PaperVenueConfig(name="paper2", book_path=root / "paper2.db", scenario=book)
    )
    clock = ManualClock()
    rb = Rollbot.open(settings, clock=clock)
    rb.gates.arm(SYSTEM, "the desk trades live before the incident")
    return Desk(root, settings, rb, clock, SlackDriver(rb), scope, state)


async def quietly(work: Awaitable[Any]) -> Any:
    """A path may be refused; a refusal is a sentence, not a way past the hold."""
    try:
        return await work
    except RollbotError as exc:
        return exc


# -- the paths ------------------------------------------------------------------------------------
async def older_clear_request(d: Desk) -> None:
    """Kill A, a clear request filed for A, kill B, then the request is approved."""
    await d.kill(EARLIER, "first kill")
    req = await d.request("clear_hold", {"scope": _scope(d)}, ASKER, "A was a mistake")
    d.clock.advance(seconds=30)
    await d.kill(KILLER, "second kill: something else is wrong")
    await d.approve(req)


async def self_approved_clear(d: Desk) -> None:
    await d.kill()
    req = await d.request("clear_hold", {"scope": _scope(d)}, RISK, "my own clear")
    await d.approve(req, RISK)


async def clear_by_outsider(d: Desk) -> None:
    await d.kill()
    req = await d.request("clear_hold", {"scope": _scope(d)}, ASKER, "clear it")
    for user in (OUTSIDER, DEVOPS, OTHER):  # no approver role among them
        await d.approve(req, user)


async def denied_then_approved(d: Desk) -> None:
    await d.kill()
    req = await d.request("clear_hold", {"scope": _scope(d)}, ASKER, "clear it")
    if req is not None:
        await d.click(Action.DENY, req.id, RISK)
    await d.approve(req, RISK)


async def expired_then_approved(d: Desk) -> None:
    await d.kill()
    req = await d.request("clear_hold", {"scope": _scope(d)}, ASKER, "clear it")
    d.clock.advance(hours=2)
    await Approvals(d.rb).sweep()
    await d.approve(req, RISK)


async def clear_of_another_scope(d: Desk) -> None:
    await d.kill()
    other = "strategy:other" if d.scope.text != "strategy:other" else "venue:paper2"
    await Engine(d.rb, Actor(id=OTHER, source="slack")).kill("other scope", other)
    req = await d.request("clear_hold", {"scope": other}, ASKER, "other scope is fine")
    await d.approve(req)


async def second_kill_then_clear_first(d: Desk) -> None:
    """A clear request for the scope filed and approved after a second kill on it must not clear
    the second kill unseen: the request names the holds it clears (the approver saw them)."""
    await d.kill(EARLIER, "first")
    req = await d.request("clear_hold", {"scope": _scope(d)}, ASKER, "first was fine")
    await d.kill(OTHER, "second, after the request")
    await d.approve(req)


async def enable_gates_then_clear(d: Desk) -> None:
    """Re-arming by the back door: enable-gates and clear-hold, each approved."""
    await d.kill()
    for action, params in (("enable_gates", {}), ("clear_hold", {"scope": _scope(d)})):
        await d.approve(await d.request(action, params, ASKER, "back to live"))


async def resume_an_older_incident(d: Desk) -> None:
    """INC-1 resumed properly; then a new kill; then /resume INC-1 again."""
    asker = Actor(id=ASKER, source="slack")
    first = await Engine(d.rb, asker).rollback("an earlier bad day")
    d.clock.advance(hours=25)
    record_rca(d.rb, first.incident.id, RCA, Actor(id=RISK, source="slack"))
    drill = await run_drill(d.settings, asker, clock=d.clock, workdir=d.root / "drill1")
    assert drill.outcome.final_status.value == "SUCCESS"
    req = await d.request("resume", {"incident_id": first.incident.id}, ASKER, "fixed")
    await d.approve(req)
    d.clock.advance(minutes=5)
    await d.kill()
    await d.approve(await d.request("resume", {"incident_id": first.incident.id}, ASKER, "again"))
    await d.slack.command(Command.RESUME, f"{first.incident.id} fixed again", ASKER)
    await d.slack.settle()


async def flatten_other_venue(d: Desk) -> None:
    await d.kill()
    req = await d.request("flatten", {"venue": "paper2"}, ASKER, "close paper2")
    await d.approve(req)


async def flatten_every_venue(d: Desk) -> None:
    await d.kill()
    req = await d.request("flatten", {"venue": None}, ASKER, "close everything")
    await d.approve(req)


async def rollback_approved(d: Desk) -> None:
    await d.kill()
    await d.slack.command(Command.ROLLBACK, "roll it all back", ASKER)
    pending = Approvals(d.rb).list(pending_only=True)
    for req in pending:
        await d.approve(req)


async def kill_during_flatten(d: Desk) -> None:
    """A flatten whose orders do not fill is running when the kill lands: no closing order may
    be sent after the kill's hold is stored."""
    req = await d.request("flatten", {"venue": None}, ASKER, "close everything")
    approving = asyncio.create_task(d.approve(req))
    for _ in range(10_000):  # until the flatten has sent its first closes
        await asyncio.sleep(0)
        if d.rb.db.one("SELECT 1 AS x FROM order_intents LIMIT 1"):
            break
    await d.kill()
    await approving


async def drill_on_the_desk(d: Desk) -> None:
    await d.kill()
    await run_drill(
        d.settings, Actor(id=ASKER, source="slack"), clock=d.clock, workdir=d.root / "drill"
    )


async def recover_after(d: Desk) -> None:
    await d.kill()
    await resume_unfinished(d.rb, SYSTEM)


async def clock_sweeps(d: Desk) -> None:
    await d.kill()
    for _ in range(3):
        d.clock.advance(hours=9)
        await Approvals(d.rb).sweep()
        await resume_unfinished(d.rb, SYSTEM)


async def gates_and_incident_commands(d: Desk) -> None:
    await d.kill()
    for command, text, user in (
        (Command.GATES, "disable", ASKER),
        (Command.GATES, "status", ASKER),
        (Command.INCIDENT, "close INC-0001 all good now", ASKER),
        (Command.INCIDENT, "ack", ASKER),
        (Command.RESUME, "INC-0001 all good", ASKER),
    ):
        await d.slack.command(command, text, user)
        await d.slack.settle()


async def buttons(d: Desk) -> None:
    await d.kill()
    for action, value in (
        (Action.RISK_ACK, "1"),
        (Action.RISK_ROLLBACK, "1"),
        (Action.ESCALATION_ACK, "INC-0001"),
        (Action.APPROVE, "APR-9999"),
    ):
        for user in (ASKER, RISK, OUTSIDER):
            await d.click(action, value, user)


async def names_the_guard_does_not_know(d: Desk) -> None:
    await d.kill()
    for name in ("PAPER", "paper ", "nosuchvenue", ""):
        decision = d.check(venue=name)
        if decision.allowed:
            d.notes.append(f"venue {name!r} allowed while {d.scope.text} is {d.state.value}")


PATHS: dict[str, Callable[[Desk], Awaitable[None]]] = {
    f.__name__: f
    for f in (
        older_clear_request,
        self_approved_clear,
        clear_by_outsider,
        denied_then_approved,
        expired_then_approved,
        clear_of_another_scope,
        second_kill_then_clear_first,
        enable_gates_then_clear,
        resume_an_older_incident,
        flatten_other_venue,
        flatten_every_venue,
        rollback_approved,
        kill_during_flatten,
        drill_on_the_desk,
        recover_after,
        clock_sweeps,
        gates_and_incident_commands,
        buttons,
        names_the_guard_does_not_know,
    )
}


def _scope(d: Desk) -> str:
    return d.scope.text


def orders_after_last_kill(d: Desk) -> int:
    """Closing orders sent after the last person's kill was stored."""
    row = d.rb.db.one(
        "SELECT id FROM events WHERE kind = 'HOLD_SET' AND actor = ? ORDER BY id DESC LIMIT 1",
        (KILLER,),
    )
    if row is None:
        return 0
    found = d.rb.db.one(
        "SELECT COUNT(*) AS n FROM events WHERE kind = 'ORDER_SENT' AND id > ?", (row["id"],)
    )
    return int(found["n"]) if found else 0


def loosened(d: Desk) -> list[str]:
    """A person's kill moved to a laxer state or cleared by anything, at any moment."""
    kills = {
        e.data.get("hold_id"): TradingState(e.data["state"])
        for e in d.rb.events.list(kinds=["HOLD_SET"])
        if e.actor in (KILLER, OTHER) and e.data.get("state") in ("HALTED", "REDUCING")
    }
    out = []
    for e in d.rb.events.list(kinds=["HOLD_STATE", "HOLD_CLEARED"]):
        was = kills.get(e.data.get("hold_id"))
        if was is not None and (
            e.kind == "HOLD_CLEARED" or TradingState(e.data.get("to")).strictness < was.strictness
        ):
            out.append(f"the kill's hold #{e.data['hold_id']}: {e.kind} {e.data.get('to', '')}")
    return out


# paths that need a venue whose closes never fill
PAPER = {"kill_during_flatten": {"fill": "none"}}
# paths that legitimately clear some person's hold (not the one under test): loosening of that
# one is what they do, the probe judges the rest
CLEARS_ANOTHER = {"clear_of_another_scope", "resume_an_older_incident"}


async def run_path(
    root: Path, scope: Scope, name: str, state: TradingState = TradingState.HALTED
) -> list[str]:
    d = await open_desk(root, scope, state, **PAPER.get(name, {}))
    try:
        await PATHS[name](d)
        problems = list(d.notes)
        if name not in CLEARS_ANOTHER:
            problems += loosened(d)
        said = d.governs()
        if said:
            problems.append(said)
        if d.rb.gates.read().live_allowed and d.check(side="BUY").allowed:
            problems.append("live trading re-armed: the guard allows a new BUY")
        # a strategy's kill does not cover a venue's flatten (rollbot's closes are no strategy's
        # orders, and the venue cannot tell strategies apart): the flatten goes on reducing; a
        # REDUCING kill lets closes through by design
        covers = scope.strategy is None and state is TradingState.HALTED
        if name == "kill_during_flatten" and covers and orders_after_last_kill(d):
            problems.append(f"{orders_after_last_kill(d)} closing orders after the kill")
        return problems
    finally:
        await d.rb.aclose()


async def test_every_path_leaves_every_kill_holding(scratch: Path):
    tried = held = 0
    failures: list[str] = []
    for state in (TradingState.HALTED, TradingState.REDUCING):
        for scope in SCOPES:
            for name in PATHS:
                where = scope.text.replace(":", "_").replace("/", "_")
                root = scratch / f"{state.value}-{where}-{name}"
                tried += 1
                problems = await run_path(root, scope, name, state)
                if problems:
                    failures.append(f"{state.value} {scope.text} / {name}: {'; '.join(problems)}")
                else:
                    held += 1
                shutil.rmtree(root, ignore_errors=True)
    line = f"{tried} paths tried (states x scopes x paths), {held} held"
    print(line)
    record("adversarial", line)
    assert not failures, "\n".join(failures)


async def test_the_probe_sees_a_proper_clear(scratch: Path):
    """Control: a clear filed after the kill, approved by a risk officer, does clear its scope
    (the suite's probe is not blind)."""
    for scope in SCOPES:
        d = await open_desk(scratch / scope.text.replace(":", "_").replace("/", "_"), scope)
        try:
            await d.kill()
            assert d.governs() is None
            d.rb.gates.disable(SYSTEM, "shadow first: clearing a hold never re-arms by itself")
            req = await d.request("clear_hold", {"scope": scope.text}, ASKER, "all fixed")
            await d.approve(req)
            assert d.governs() is not None, scope.text
        finally:
            await d.rb.aclose()


# -- at the terminal: identity and the guard's database -----------------------------------------
def _cli(cfg: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "ROLLBOT_CONFIG"}
    full.update(COLUMNS="200", NO_COLOR="1", **env)
    return subprocess.run(
        [ROLLBOT, "--config", str(cfg), *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cfg.parent,
    )


def _config(root: Path) -> Path:
    book = write_book(root, SMALL_BOOK)
    return write_config(root, scenario=book, extra=f'[slack]\nops_channel = "{OPS}"')


def _guard_buy(cfg: Path) -> subprocess.CompletedProcess[str]:
    return _cli(
        cfg,
        "guard",
        "check",
        "--venue",
        "paper",
        "--symbol",
        "AAPL",
        "--side",
        "BUY",
        "--quantity",
        "1",
    )


def test_terminal_identity_and_missing_database_cannot_open_a_hold(tmp_path: Path):
    cfg = _config(tmp_path)
    tried = held = 0
    problems: list[str] = []

    kill = _cli(cfg, "kill", "trigger", "--reason", "runaway", "--scope", "global")
    assert kill.returncode in (0, 1), kill.stderr
    filed = _cli(cfg, "kill", "clear", "--reason", "fixed", "--scope", "global")
    assert "APR-0001" in filed.stdout + filed.stderr, filed.stdout + filed.stderr

    attempts = {
        "LOGNAME/USER of the risk officer": (("approve", "APR-0001"), {"LOGNAME": "rita"}),
        "USER of the risk officer": (("approve", "APR-0001"), {"USER": "rita"}),
        "--by the risk officer's Slack id": (("approve", "APR-0001", "--by", RISK), {}),
    }
    for what, (args, env) in attempts.items():
        tried += 1
        _cli(cfg, *args, **env)
        status = _guard_buy(cfg)
        if status.returncode == 0 or "HALTED" not in status.stdout + status.stderr:
            problems.append(f"{what}: the guard no longer answers HALTED")
        else:
            held += 1

    # the database moved away: the guard must refuse, and must not create a fresh one
    moved = tmp_path / "moved.db"
    shutil.move(tmp_path / "rollbot.db", moved)
    tried += 1
    answer = _guard_buy(cfg)
    if answer.returncode == 0 or (tmp_path / "rollbot.db").exists():
        problems.append("a missing database: the guard allowed or created a fresh database")
    else:
        held += 1
    record("adversarial", f"{tried} terminal paths tried, {held} held")
    assert not problems, "\n".join(problems)
