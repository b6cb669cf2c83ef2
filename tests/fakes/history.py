"""A desk's long past written straight into a rollbot database: closed incidents (rollbacks,
kills, flattens) each with its story in events — step reports with their PnL, pages and the
ack, order events — its acknowledged escalation, fired and cancelled deadlines, a ticked
checklist, a cleared hold and delivered outbox messages. What a database looks like after years
of use; the periodic work must not slow down because of it.

Written with executemany in one transaction (a million events in well under a minute), through
the real schema (Database runs the migrations first).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollbot.clock import iso
from rollbot.commands.rollback.report import CHECKLIST
from rollbot.storage.chain import GENESIS, event_hash
from rollbot.storage.db import Database
from rollbot.storage.migrations import MIGRATIONS

if TYPE_CHECKING:
    from rollbot.storage.migrations import Migration

KINDS = ("rollback", "rollback", "kill", "kill", "flatten")  # 2 : 2 : 1
STEP_NAMES = {1: "HALT", 2: "DISCONNECT", 3: "ASSESS", 4: "FLATTEN", 5: "VERIFY"}
CHAIN = {
    "tiers": [
        {
            "roles": ["operator"],
            "contacts": [{"name": "Ops", "role": "operator", "slack_id": "U0OPERATOR"}],
        },
        {"roles": ["risk_officer"], "contacts": [{"name": "Risk", "role": "risk_officer"}]},
    ],
    "wait_s": 300.0,
    "repeat": 1,
    "critical_loss": "10000",
    "skipped_roles": [],
}


def _dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _steps(kind: str) -> list[int]:
    return [1, 2, 3, 4, 5] if kind == "rollback" else [1, 2] if kind == "kill" else [1, 3, 4]


def _step_report(rng: random.Random, step: int) -> dict[str, Any]:
    """A STEP_ENDED report with the figures the sweep reads: a loss well under the critical."""
    report: dict[str, Any] = {
        "step": step,
        "name": STEP_NAMES[step],
        "status": "SUCCESS",
        "elapsed_seconds": round(rng.uniform(0.1, 30), 3),
        "venues": ["paper1", "paper2", "paper3"],
    }
    if step == 3:
        report["total_pnl"] = f"{-rng.uniform(10, 5000):.2f}"
        report["positions"] = [
            {"symbol": f"S{rng.randrange(2000):04d}", "quantity": str(rng.randrange(1, 500))}
            for _ in range(8)
        ]
    if step == 5:
        report["verification"] = {
            "start_nav": "10000000",
            "final_pnl": f"{-rng.uniform(10, 5000):.2f}",
            "positions_left": 0,
            "orders_left": 0,
        }
    return report


def _incident_events(
    rng: random.Random, inc_id: str, kind: str, opened: datetime, per_incident: int
) -> Iterator[tuple[Any, ...]]:
    """(at, kind, actor, source, scope, incident_id, reason, data) rows, in order."""
    t = opened
    head: list[tuple[str, str, dict[str, Any]]] = [
        ("INCIDENT_OPENED", "U0OPERATOR", {"kind": kind, "trigger": None}),
        ("HOLD_SET", "U0OPERATOR", {"hold_id": 0, "source": "person", "state": "HALTED"}),
        ("ESCALATION_STARTED", "clock:escalation", {"tiers": CHAIN["tiers"], "wait_s": 300.0}),
        ("ESCALATION_PINGED", "clock:escalation", {"tier": 1, "round": 1, "reason": "start"}),
        ("ESCALATION_ACKED", "U0OPERATOR", {"acked_by": "U0OPERATOR", "tier": 1}),
    ]
    for step in _steps(kind):
        head.append(("STEP_STARTED", "U0OPERATOR", {"step": step, "name": STEP_NAMES[step]}))
        head.append(("STEP_ENDED", "U0OPERATOR", _step_report(rng, step)))
    tail: list[tuple[str, str, dict[str, Any]]] = []
    if kind == "rollback":
        items = [k for k, _, _ in CHECKLIST]
        tail.append(("CHECKLIST_OPENED", "clock:checklist", {"items": items}))
        tail.append(("TIMER_FIRED", "clock:checklist_reminder", {"via": "scheduler"}))
    tail += [
        ("HOLD_CLEARED", "U0RISK", {"hold_id": 0, "source": "person", "state": "HALTED"}),
        ("INCIDENT_CLOSED", "U0RISK", {}),
    ]
    fillers = max(0, per_incident - len(head) - len(tail))
    middle = [
        (
            "ORDER_CANCELLED" if i % 3 else "ORDER_FILLED",
            "U0OPERATOR",
            {
                "venue": f"paper{i % 3 + 1}",
                "order_id": f"P{i:06d}",
                "symbol": f"S{rng.randrange(2000):04d}",
                "quantity": str(rng.randrange(1, 500)),
                "price": f"{rng.uniform(10, 500):.2f}",
            },
        )
        for i in range(fillers)
    ]
    for ev_kind, actor, data in [*head, *middle, *tail][:per_incident]:
        t += timedelta(milliseconds=rng.randrange(5, 500))
        source = "clock" if actor.startswith("clock:") else "slack"
        yield (iso(t), ev_kind, actor, source, "global", inc_id, None, _dumps(data))


def _chained(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows as EventLog.append chains them: + (host, seq, prev_hash, hash)."""
    out, prev = [], GENESIS
    for seq, (at, kind, actor, source, scope, incident, reason, data) in enumerate(rows, 1):
        digest = event_hash(seq, at, kind, actor, source, None, scope, incident, reason, data, prev)
        out.append(
            (at, kind, actor, source, scope, incident, reason, data, None, seq, prev, digest)
        )
        prev = digest
    return out


def build_history(
    path: Path,
    *,
    incidents: int,
    events: int,
    now: datetime,
    seed: int = 18,
    migrations: list[Migration] | None = None,
) -> None:
    """Write `incidents` closed incidents and `events` events (spread evenly) into a new
    database at `path`, every one of them over a day old. `migrations=MIGRATIONS[:9]` writes a
    database as an older rollbot left it (events before the hash chain)."""
    if path.exists():
        raise FileExistsError(path)
    migrations = MIGRATIONS if migrations is None else migrations
    db = Database(path, migrations=migrations)
    conn = db.conn
    rng = random.Random(seed)
    per = max(1, events // max(incidents, 1))
    spacing = timedelta(minutes=50)
    first = now - timedelta(days=2) - spacing * incidents
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        inc_rows, esc_rows, timer_rows, check_rows, hold_rows, outbox_rows = [], [], [], [], [], []
        event_rows: list[tuple[Any, ...]] = []
        for k in range(incidents):
            seq = k + 1
            inc_id = f"INC-{seq:04d}"
            kind = KINDS[k % len(KINDS)]
            opened = first + spacing * k
            closed = opened + timedelta(minutes=30)
            inc_rows.append(
                (inc_id, seq, iso(opened), "U0OPERATOR", "slack", kind, "CLOSED", "DONE",
                 f"history {kind} {seq}", "global", "SUCCESS", iso(closed))
            )  # fmt: skip
            event_rows.extend(_incident_events(rng, inc_id, kind, opened, per))
            esc_rows.append(
                (inc_id, _dumps(CHAIN), 0, 0, f"{rng.getrandbits(64):016x}", "ACKED",
                 "U0OPERATOR", iso(opened + timedelta(minutes=2)), iso(opened), iso(opened))
            )  # fmt: skip
            timer_rows.append(
                ("escalation", inc_id, iso(opened + timedelta(minutes=5)), "t", "{}", None,
                 iso(opened + timedelta(minutes=2)), iso(opened))
            )  # fmt: skip
            hold_rows.append(
                ("global", "person", "HALTED", f"history {seq}", "U0OPERATOR", inc_id,
                 iso(opened), iso(opened), iso(closed), "U0RISK", "resolved")
            )  # fmt: skip
            for m in range(8):
                outbox_rows.append(
                    (iso(opened), "thread", inc_id, None, _dumps({"text": f"message {m}"}),
                     f"history:{inc_id}:{m}", 1, iso(opened))
                )  # fmt: skip
            if kind == "rollback":
                for key, label, within in CHECKLIST:
                    check_rows.append(
                        (inc_id, key, label, iso(opened + within), "U0RISK", iso(closed))
                    )
                for within in (timedelta(hours=1), timedelta(hours=24)):
                    timer_rows.append(
                        ("checklist_reminder", inc_id, iso(opened + within), "t", "{}",
                         iso(opened + within), None, iso(opened))
                    )  # fmt: skip
        conn.executemany(
            "INSERT INTO incidents (id, seq, opened_at, opened_by, source, kind, status, phase,"
            " reason, scope, final_status, closed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            inc_rows,
        )
        if len(migrations) >= 10:  # V10: the event log is a hash chain
            conn.executemany(
                "INSERT INTO events (at, kind, actor, source, scope, incident_id, reason, data,"
                " host, seq, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                _chained(event_rows),
            )
        else:
            conn.executemany(
                "INSERT INTO events (at, kind, actor, source, scope, incident_id, reason, data)"
                " VALUES (?,?,?,?,?,?,?,?)",
                event_rows,
            )
        conn.executemany(
            "INSERT INTO escalations (incident_id, chain, tier, round, run_token, status,"
            " acked_by, acked_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            esc_rows,
        )
        conn.executemany(
            "INSERT INTO timers (kind, ref, due_at, token, payload, fired_at, cancelled_at,"
            " created_at) VALUES (?,?,?,?,?,?,?,?)",
            timer_rows,
        )
        conn.executemany(
            "INSERT INTO checklist_items (incident_id, item, label, due_at, ticked_by, ticked_at)"
            " VALUES (?,?,?,?,?,?)",
            check_rows,
        )
        conn.executemany(
            "INSERT INTO holds (scope, source, state, reason, actor, incident_id, created_at,"
            " updated_at, cleared_at, cleared_by, clear_reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            hold_rows,
        )
        conn.executemany(
            "INSERT INTO outbox (at, kind, incident_id, target, payload, dedupe_key, attempts,"
            " delivered_at) VALUES (?,?,?,?,?,?,?,?)",
            outbox_rows,
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        db.close()  # the last connection: SQLite checkpoints the WAL into the file
