"""Shared parts of the reliability suite: small paper books, settings on a directory, an
in-process driver for the Slack face's listener wrapper, and the audits every test ends with
(the paper book read as an auditor would, and the event log checked for gaps)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from terminal_users import login

from rollbot.bot.slack.app import SlackBot
from rollbot.bot.slack.ids import Action, Command
from rollbot.bot.slack.listeners import actions, commands
from rollbot.commands.killswitch.gates import Gates
from rollbot.config import (
    ApprovalsConfig,
    DatabaseConfig,
    EscalationConfig,
    FlattenConfig,
    PaperVenueConfig,
    PathsConfig,
    Settings,
    SlackConfig,
)
from rollbot.storage.db import Database, loads

OPS = "C0OPS"
OPERATORS = [f"U0OP{i}" for i in range(1, 7)]  # one requester per operation in a trial
RISK = "U0RISK"
DEVOPS = "U0DEVOPS"  # holds a role, but not one that may act on trading
OUTSIDER = "U0NOBODY"  # no rollbot role at all
IDENTITIES = {login("alice"): OPERATORS[0], login("bob"): OPERATORS[1], login("rita"): RISK}

# exposure 7,930 (< 10,000): closed with market orders; a resting limit and a stop to cancel
SMALL_BOOK = """
name = "reliability-small"
[account]
cash = 100000
[[positions]]
symbol = "AAPL"
quantity = 30
avg_price = 100
[[positions]]
symbol = "MSFT"
quantity = -12
avg_price = 400
[[positions]]
symbol = "BTC"
quantity = 0.53
avg_price = 1000
[[orders]]
symbol = "AAPL"
side = "SELL"
type = "LIMIT"
quantity = 10
limit_price = 200
[[orders]]
symbol = "MSFT"
side = "BUY"
type = "STOP"
quantity = 12
stop_price = 500
"""
SMALL_START = {"AAPL": Decimal(30), "MSFT": Decimal(-12), "BTC": Decimal("0.53")}

# exposure 26,400 (>= 10,000): closed with aggressive limit orders and a limit timeout
LARGE_BOOK = """
name = "reliability-large"
[account]
cash = 250000
[[positions]]
symbol = "AAPL"
quantity = 120
avg_price = 100
[[positions]]
symbol = "MSFT"
quantity = -36
avg_price = 400
"""
LARGE_START = {"AAPL": Decimal(120), "MSFT": Decimal(-36)}


def write_book(root: Path, text: str = SMALL_BOOK, name: str = "book.toml") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


def settings_for(
    root: Path,
    book: Path,
    *,
    rollback_needs_approval: bool = True,
    flatten: FlattenConfig | None = None,
    busy_timeout_ms: int = 5000,
    escalation: EscalationConfig | None = None,
    **paper: Any,
) -> Settings:
    """Everything under `root`; the paper venue seeded from `book` with these faults."""
    return Settings(
        database=DatabaseConfig(path=root / "rollbot.db", busy_timeout_ms=busy_timeout_ms),
        paths=PathsConfig(
            reports_dir=root / "reports",
            live_environment=root / "config" / "live_environment.toml",
            shadow_config=root / "config" / "shadow_config.toml",
        ),
        venues=[PaperVenueConfig(book_path=root / "paper.db", scenario=book, **paper)],
        roles={"operator": list(OPERATORS), "risk_officer": [RISK], "devops": [DEVOPS]},
        identities=dict(IDENTITIES),
        flatten=flatten or FlattenConfig(recheck_interval_s=0.05),
        approvals=ApprovalsConfig(rollback_needs_approval=rollback_needs_approval),
        slack=SlackConfig(ops_channel=OPS),
        escalation=escalation or EscalationConfig(),
    )


# -- the Slack face, in process -----------------------------------------------------------------
_trigger_seq = itertools.count(1)


def new_trigger() -> str:
    return f"{next(_trigger_seq):013d}.0000000001.reliability"


# (handler, ack_first) per slash command and action id, as listeners/*.register wires them
COMMANDS = {
    Command.KILL: (commands.kill, False),
    Command.POSITIONS: (commands.positions, True),
    Command.FLATTEN: (commands.flatten, True),
    Command.ROLLBACK: (commands.rollback, True),
    Command.REPORT: (commands.report, True),
    Command.INCIDENT: (commands.incident, True),
    Command.GATES: (commands.gates, True),
    Command.RESUME: (commands.resume, True),
}
ACTIONS = {
    Action.APPROVE: actions.approve,
    Action.DENY: actions.deny,
    Action.ESCALATION_ACK: actions.escalation_ack,
    Action.RISK_ROLLBACK: actions.risk_rollback,
    Action.RISK_ACK: actions.risk_ack,
    Action.CHECKLIST_TICK: actions.checklist_tick,
}


@dataclass
class Delivery:
    """What the user saw of one delivery: the ack's text and every response."""

    acks: list[dict[str, Any]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in [*self.acks, *self.replies] if m.get("text")]


class SlackDriver:
    """Calls SlackBot.listener's wrapper as slack-bolt would, without a network: the dedupe by
    trigger id, the role checks and the error handling are the real ones."""

    def __init__(self, rb: Any, client: AsyncWebClient | None = None) -> None:
        # by default the Web API is unroutable: the listeners driven this way never call it
        self.bot = SlackBot(
            rb, client or AsyncWebClient(token="xoxb-reliability", base_url="http://127.0.0.1:9/")
        )

    async def _deliver(
        self, kind: str, handler: Any, ack_first: bool, body: dict[str, Any]
    ) -> Delivery:
        seen = Delivery()

        async def ack(*args: Any, **kw: Any) -> None:
            seen.acks.append({"text": args[0] if args else kw.get("text"), **kw})

        async def respond(**kw: Any) -> None:
            seen.replies.append(kw)

        listen = self.bot.listener(kind, handler, ack_first=ack_first)
        await listen(
            ack=ack,
            body=body,
            respond=respond,
            client=self.bot.client,
        )
        while self.bot.handling:  # bolt answers at the ack; the handler's replies come after
            await asyncio.gather(*list(self.bot.handling), return_exceptions=True)
        return seen

    async def command(
        self, command: Command, text: str, user: str, *, trigger_id: str | None = None
    ) -> Delivery:
        handler, ack_first = COMMANDS[command]
        body = {
            "command": command.value,
            "text": text,
            "user_id": user,
            "user_name": user.lower(),
            "channel_id": OPS,
            "trigger_id": trigger_id or new_trigger(),
        }
        return await self._deliver(command.value, handler, ack_first, body)

    async def action(
        self, action: Action, value: str, user: str, *, trigger_id: str | None = None
    ) -> Delivery:
        body = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower()},
            "channel": {"id": OPS},
            "trigger_id": trigger_id or new_trigger(),
            "actions": [{"action_id": action.value, "value": value, "action_ts": "1.0"}],
        }
        return await self._deliver(action.value, ACTIONS[action], True, body)

    async def raw(self, action_id: str, body: dict[str, Any]) -> Delivery:
        """Any block_actions body, routed by action id as listeners/actions.register routes it
        (checkbox groups by the checklist_tick prefix)."""
        action = (
            Action.CHECKLIST_TICK if action_id.startswith("checklist_tick") else Action(action_id)
        )
        return await self._deliver(action.value, ACTIONS[action], True, body)

    async def settle(self) -> None:
        """Wait for the work spawned after the acks (engine runs) to end."""
        while self.bot.tasks:
            await asyncio.gather(*list(self.bot.tasks), return_exceptions=True)


# -- audits -------------------------------------------------------------------------------------
def _events(db: Database, *kinds: str) -> list[dict[str, Any]]:
    marks = ",".join("?" * len(kinds))
    rows = db.query(f"SELECT * FROM events WHERE kind IN ({marks}) ORDER BY id", kinds)
    for r in rows:
        r["data"] = loads(r["data"]) or {}
    return rows


def log_gaps(db: Database, gates: Gates | None = None) -> list[str]:
    """Every state change the tables show, looked for in the event log; [] when none is missing.

    holds -> HOLD_SET (and HOLD_CLEARED once cleared); order intents -> ORDER_SENT or
    ORDER_REJECTED unless still PENDING; incidents -> INCIDENT_OPENED and an INCIDENT_PHASE
    event for the phase they are in; each STEP_ENDED after its STEP_STARTED; approvals ->
    APPROVAL_REQUESTED, a vote event per vote, the event of their final status; escalations ->
    ESCALATION_STARTED (ACKED, EXHAUSTED too); fired deadlines -> TIMER_FIRED; the gates files
    as the last GATES_WRITTEN left them; event ids 1..N with none missing.
    """
    gaps: list[str] = []
    stats = db.one("SELECT COUNT(*) AS n, COALESCE(MAX(id), 0) AS top FROM events")
    assert stats is not None
    if stats["n"] != stats["top"]:
        gaps.append(f"event ids: {stats['n']} events but the highest id is {stats['top']}")

    by_hold = defaultdict(set)
    for e in _events(db, "HOLD_SET", "HOLD_CLEARED"):
        by_hold[e["data"].get("hold_id")].add(e["kind"])
    for h in db.query("SELECT * FROM holds"):
        if "HOLD_SET" not in by_hold[h["id"]]:
            gaps.append(f"hold #{h['id']} on {h['scope']} has no HOLD_SET event")
        if h["cleared_at"] and "HOLD_CLEARED" not in by_hold[h["id"]]:
            gaps.append(f"hold #{h['id']} was cleared without a HOLD_CLEARED event")

    told = {
        e["data"].get("client_order_id")
        for e in _events(db, "ORDER_SENT", "ORDER_REJECTED", "ORDER_NOT_SENT")
    }
    for i in db.query("SELECT * FROM order_intents"):
        if i["status"] != "PENDING" and i["client_order_id"] not in told:
            gaps.append(
                f"order {i['client_order_id']} ({i['symbol']} attempt {i['attempt']}) is"
                f" {i['status']} with no ORDER_SENT/ORDER_REJECTED event"
            )

    opened = {e["incident_id"] for e in _events(db, "INCIDENT_OPENED")}
    phases: dict[str, str] = {}
    for e in _events(db, "INCIDENT_PHASE"):
        phases[e["incident_id"]] = e["data"].get("phase")
    closed = {e["incident_id"] for e in _events(db, "INCIDENT_CLOSED")}
    for inc in db.query("SELECT * FROM incidents"):
        if inc["id"] not in opened:
            gaps.append(f"{inc['id']} has no INCIDENT_OPENED event")
        if inc["phase"] != "OPENED" and phases.get(inc["id"]) != inc["phase"]:
            gaps.append(
                f"{inc['id']} is {inc['phase']} but its last INCIDENT_PHASE event says"
                f" {phases.get(inc['id'])}"
            )
        if inc["status"] == "CLOSED" and inc["id"] not in closed:
            gaps.append(f"{inc['id']} is CLOSED with no INCIDENT_CLOSED event")
    started: Counter[tuple[str, int]] = Counter()
    for e in _events(db, "STEP_STARTED", "STEP_ENDED"):
        key = (e["incident_id"], e["data"].get("step"))
        if e["kind"] == "STEP_STARTED":
            started[key] += 1
        elif not started[key]:
            gaps.append(f"{key[0]} step {key[1]} ended with no STEP_STARTED before it")

    final_event = {
        "EXECUTED": "APPROVAL_EXECUTED",
        "FAILED": "APPROVAL_FAILED",
        "DENIED": "APPROVAL_DENIED",
        "EXPIRED": "APPROVAL_EXPIRED",
        "SUPERSEDED": "APPROVAL_SUPERSEDED",
        "EXECUTING": "APPROVAL_APPROVED",
    }
    by_approval = defaultdict(list)
    for e in _events(db, "APPROVAL_REQUESTED", "APPROVAL_VOTE", *sorted(set(final_event.values()))):
        by_approval[e["data"].get("approval_id")].append(e)
    for a in db.query("SELECT * FROM approvals"):
        kinds = Counter(e["kind"] for e in by_approval[a["id"]])
        if not kinds["APPROVAL_REQUESTED"]:
            gaps.append(f"{a['id']} has no APPROVAL_REQUESTED event")
        want = final_event.get(a["status"])
        if want and not kinds[want]:
            gaps.append(f"{a['id']} is {a['status']} with no {want} event")
        votes = db.query("SELECT * FROM votes WHERE approval_id = ?", (a["id"],))
        if len(votes) != kinds["APPROVAL_VOTE"]:
            gaps.append(f"{a['id']}: {len(votes)} votes, {kinds['APPROVAL_VOTE']} vote events")

    esc_events = defaultdict(set)
    for e in _events(db, "ESCALATION_STARTED", "ESCALATION_ACKED", "ESCALATION_EXHAUSTED"):
        esc_events[e["incident_id"]].add(e["kind"])
    for esc in db.query("SELECT * FROM escalations"):
        need = {"ESCALATION_STARTED"} | {
            "ACKED": {"ESCALATION_ACKED"},
            "EXHAUSTED": {"ESCALATION_EXHAUSTED"},
        }.get(esc["status"], set())
        for kind in sorted(need - esc_events[esc["incident_id"]]):
            gaps.append(f"escalation of {esc['incident_id']} is {esc['status']} with no {kind}")
    fired = {e["data"].get("timer_id") for e in _events(db, "TIMER_FIRED")}
    for t in db.query("SELECT * FROM timers WHERE fired_at IS NOT NULL"):
        if t["id"] not in fired:
            gaps.append(f"deadline #{t['id']} ({t['kind']}) fired with no TIMER_FIRED event")

    if gates is not None:
        written = _events(db, "GATES_WRITTEN")
        now = gates.read()
        if written:
            after = written[-1]["data"].get("after") or {}
            drift = {k: v for k, v in after.items() if getattr(now, k, v) != v}
            if drift:
                gaps.append(
                    f"the gates files differ from the last GATES_WRITTEN event on {sorted(drift)}"
                )
    return gaps


@dataclass
class BookAudit:
    """What the venue did, read from the paper book's SQLite file (no venue call)."""

    orders: int  # rollbot's closing orders at the venue
    duplicates: list[str]  # a second order for one (incident, symbol, attempt), or unledgered
    overfilled: list[str]  # a symbol filled past its starting position
    flipped: list[str]  # a symbol that crossed zero to the other side
    positions: dict[str, Decimal]  # what the book holds now

    @property
    def duplicate_orders(self) -> int:
        return len(self.duplicates) + len(self.overfilled) + len(self.flipped)


def audit_book(book_db: Database, ledger_db: Database, start: dict[str, Decimal]) -> BookAudit:
    orders = book_db.query(
        "SELECT * FROM orders WHERE client_order_id LIKE 'rb%' ORDER BY order_id"
    )
    intents = {r["client_order_id"]: r for r in ledger_db.query("SELECT * FROM order_intents")}
    duplicates: list[str] = []
    per_attempt: Counter[tuple[str, str, int]] = Counter()
    for o in orders:
        intent = intents.get(o["client_order_id"])
        if intent is None:
            duplicates.append(f"order {o['order_id']} ({o['client_order_id']}) has no intent")
            continue
        per_attempt[(intent["incident_id"], intent["symbol"], intent["attempt"])] += 1
    duplicates += [
        f"{inc} {sym} attempt {att}: {n} orders"
        for (inc, sym, att), n in per_attempt.items()
        if n > 1
    ]
    held = dict(start)
    filled: dict[str, Decimal] = defaultdict(Decimal)
    flipped: list[str] = []
    for f in book_db.query("SELECT * FROM fills ORDER BY id"):
        qty = Decimal(f["quantity"])
        before = held.get(f["symbol"], Decimal(0))
        after = before + (qty if f["side"] == "BUY" else -qty)
        if before > 0 > after or before < 0 < after:
            flipped.append(f"{f['symbol']}: {before} -> {after} (fill #{f['id']})")
        held[f["symbol"]] = after
        filled[f["symbol"]] += qty
    overfilled = [
        f"{sym}: filled {qty} of a {abs(start.get(sym, Decimal(0)))} position"
        for sym, qty in filled.items()
        if qty > abs(start.get(sym, Decimal(0)))
    ]
    positions = {
        r["symbol"]: Decimal(r["quantity"])
        for r in book_db.query("SELECT symbol, quantity FROM positions ORDER BY symbol")
    }
    return BookAudit(len(orders), duplicates, overfilled, flipped, positions)
