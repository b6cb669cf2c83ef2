"""Versioned schema. Migration N runs once, when PRAGMA user_version < N. Append, never edit.

A migration is a script of statements, or a function given the Database, run inside the same
write transaction (for what SQL alone cannot do portably, such as hashing the history)."""

from __future__ import annotations

from rollbot.storage.chain import GENESIS, HEAD_SQL, INSERT_SQL, event_hash, next_link, row_hash

TYPE_CHECKING = False  # not typing's: fast_hold.py imports this module on the kill's path
if TYPE_CHECKING:
    from collections.abc import Callable

    from rollbot.storage.db import Database

    Migration = str | Callable[[Database], None]

V1_CORE = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('slack', 'cli', 'clock', 'system')),
    scope TEXT,
    incident_id TEXT,
    reason TEXT,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_incident ON events (incident_id, id);
CREATE INDEX events_kind_at ON events (kind, at);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    opened_at TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLOSED')),
    phase TEXT NOT NULL DEFAULT 'OPENED',
    reason TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT 'global',
    trigger TEXT,
    trigger_value REAL,
    trigger_threshold REAL,
    final_status TEXT,
    start_nav TEXT,
    closed_at TEXT,
    slack_channel TEXT,
    slack_ts TEXT,
    dedupe_key TEXT UNIQUE
);

CREATE TABLE holds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('HALTED', 'REDUCING')),
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    incident_id TEXT REFERENCES incidents (id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    cleared_at TEXT,
    cleared_by TEXT,
    clear_reason TEXT
);
CREATE UNIQUE INDEX holds_active ON holds (scope, source) WHERE cleared_at IS NULL;

CREATE TABLE order_intents (
    client_order_id TEXT PRIMARY KEY,
    incident_id TEXT REFERENCES incidents (id),
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity TEXT NOT NULL,
    type TEXT NOT NULL,
    limit_price TEXT,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    venue_order_id TEXT,
    filled_quantity TEXT NOT NULL DEFAULT '0',
    detail TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX order_intents_incident ON order_intents (incident_id, venue, symbol);

CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    plan TEXT NOT NULL,
    plan_hash TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    requested_by TEXT NOT NULL,
    requested_source TEXT NOT NULL,
    quorum INTEGER NOT NULL,
    roles TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'PENDING',
    incident_id TEXT REFERENCES incidents (id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    decided_at TEXT,
    decided_by TEXT,
    result TEXT,
    reason TEXT NOT NULL DEFAULT '',
    requester TEXT NOT NULL DEFAULT '{}',
    replaces TEXT REFERENCES approvals (id),
    superseded_by TEXT REFERENCES approvals (id)
);
CREATE INDEX approvals_status ON approvals (status, expires_at);

CREATE TABLE votes (
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    voter TEXT NOT NULL,
    vote TEXT NOT NULL CHECK (vote IN ('approve', 'deny')),
    reason TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (approval_id, voter)
);

CREATE TABLE message_copies (
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    PRIMARY KEY (kind, ref, channel, ts)
);

CREATE TABLE escalations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL UNIQUE REFERENCES incidents (id),
    chain TEXT NOT NULL,
    tier INTEGER NOT NULL DEFAULT 0,
    round INTEGER NOT NULL DEFAULT 0,
    run_token TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ACTIVE',
    acked_by TEXT,
    acked_at TEXT,
    critical INTEGER NOT NULL DEFAULT 0,
    loss TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT
);

CREATE TABLE timers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    due_at TEXT NOT NULL,
    token TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    fired_at TEXT,
    cancelled_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX timers_due ON timers (fired_at, cancelled_at, due_at);
CREATE INDEX timers_ref ON timers (kind, ref);

CREATE TABLE reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    format TEXT NOT NULL,
    path TEXT,
    content BLOB,
    created_at TEXT NOT NULL
);

CREATE TABLE nav_samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    venue TEXT NOT NULL,
    at TEXT NOT NULL,
    nav TEXT NOT NULL,
    currency TEXT NOT NULL
);
CREATE INDEX nav_samples_venue_at ON nav_samples (venue, at);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    incident_id TEXT,
    target TEXT,
    payload TEXT NOT NULL,
    dedupe_key TEXT UNIQUE,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at TEXT,
    result TEXT
);
CREATE INDEX outbox_pending ON outbox (delivered_at, id);

CREATE TABLE deliveries (
    key TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    result TEXT
);

CREATE TABLE rca (
    incident_id TEXT PRIMARY KEY REFERENCES incidents (id),
    timeline TEXT NOT NULL,
    root_cause TEXT NOT NULL,
    contributing_factors TEXT NOT NULL,
    lessons_learned TEXT NOT NULL,
    recommended_actions TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);

CREATE TABLE checklist_items (
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    item TEXT NOT NULL,
    label TEXT NOT NULL,
    due_at TEXT NOT NULL,
    ticked_by TEXT,
    ticked_at TEXT,
    PRIMARY KEY (incident_id, item)
);

CREATE TABLE drills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT REFERENCES incidents (id),
    at TEXT NOT NULL,
    status TEXT NOT NULL,
    report_path TEXT
);

CREATE TABLE risk_venue_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    venue TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    code TEXT,
    value REAL
);
CREATE INDEX risk_venue_events_lookup ON risk_venue_events (venue, kind, at);

CREATE TABLE risk_firings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger TEXT NOT NULL,
    venue TEXT NOT NULL,
    action TEXT NOT NULL,
    value REAL,
    threshold REAL,
    data TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    incident_id TEXT REFERENCES incidents (id),
    fired_at TEXT NOT NULL,
    acked_by TEXT,
    acked_at TEXT,
    cleared_at TEXT
);
CREATE UNIQUE INDEX risk_firings_active ON risk_firings (trigger, venue) WHERE cleared_at IS NULL;
"""

# one process at a time runs the risk monitor (storage/leases.py)
V2_LEASES = """
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started TEXT,
    taken_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
"""

# the armed status: the latest answer of each preflight check (commands/risk/preflight.py)
V5_ARMED_CHECKS = """
CREATE TABLE IF NOT EXISTS armed_checks (
    name TEXT PRIMARY KEY,
    ok INTEGER NOT NULL,
    reason TEXT NOT NULL,
    action TEXT NOT NULL DEFAULT '',
    checked_at TEXT NOT NULL,
    since TEXT NOT NULL
);
"""

# approvals that need a sign-off from each of several roles ([approvals.X] all_of)
V6_REQUIRED_ROLES = """
ALTER TABLE approvals ADD COLUMN required_roles TEXT NOT NULL DEFAULT '[]';
"""

# the guard under REDUCING: the position as last read from the venue, and what it already allowed
# (storage/reservations.py). IF NOT EXISTS, new tables only: its order among migrations is free.
V4_GUARD_RESERVATIONS = """
CREATE TABLE IF NOT EXISTS guard_position_reads (
    venue TEXT PRIMARY KEY,
    read_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS guard_positions (
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    quantity TEXT NOT NULL,
    PRIMARY KEY (venue, symbol)
);
CREATE TABLE IF NOT EXISTS guard_reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity TEXT NOT NULL,
    order_id TEXT,
    reserved_at TEXT NOT NULL,
    released_at TEXT,
    release_reason TEXT
);
CREATE INDEX IF NOT EXISTS guard_reservations_open
    ON guard_reservations (venue, symbol) WHERE released_at IS NULL;
"""


# each kill is its own hold: two people's kills of one scope are two holds (one per incident),
# so clearing one never clears the other; a hold without an incident stays one per source
V3_HOLD_PER_KILL = """
DROP INDEX IF EXISTS holds_active;
CREATE UNIQUE INDEX IF NOT EXISTS holds_active_per_kill
    ON holds (scope, source, IFNULL(incident_id, '')) WHERE cleared_at IS NULL;
"""

# The clock's periodic work reads open state, never the whole history (issue 18): open incidents
# by a partial index, recently closed ones by closed_at, step reports by a partial index on
# STEP_ENDED, fired webhook deadlines by (kind, fired_at).
V7_OPEN_WORK_INDEXES = """
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (seq, opened_at) WHERE status = 'OPEN';
CREATE INDEX IF NOT EXISTS incidents_closed_at ON incidents (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_step_ended ON events (incident_id, id) WHERE kind = 'STEP_ENDED';
CREATE INDEX IF NOT EXISTS timers_kind_fired ON timers (kind, fired_at);
CREATE INDEX IF NOT EXISTS escalations_open ON escalations (status, critical);
"""

# messages Slack refused, kept aside (commands/desk/outbox.py): counted on every /healthz and scrape
V8_OUTBOX_SET_ASIDE = """
CREATE INDEX IF NOT EXISTS outbox_set_aside ON outbox (id)
    WHERE json_extract(result, '$.set_aside') = 1;
"""

# the exchanges' countdown cancel-all per venue, as last armed (commands/risk/dead_mans_switch.py)
V9_DEAD_MANS_SWITCH = """
CREATE TABLE IF NOT EXISTS dead_mans_switches (
    venue TEXT PRIMARY KEY,
    armed INTEGER NOT NULL,
    seconds INTEGER NOT NULL,
    trigger_at TEXT,
    covers TEXT NOT NULL DEFAULT '',
    failures INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
);
"""

# The tamper-evident event log (storage/chain.py): each event's place in the chain, the machine
# that wrote it, the hash before it and its own. Portable SQL (ADD COLUMN, a unique index); the
# existing history is chained in id order, in batches, inside the migration's transaction.
V10_EVENT_CHAIN_COLUMNS = """
ALTER TABLE events ADD COLUMN seq BIGINT;
ALTER TABLE events ADD COLUMN host TEXT;
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS events_seq ON events (seq);
"""

# V1's guard, lifted only while the history is hashed (SQLite's trigger syntax: a database
# with history to chain is an existing one-host SQLite file; a new PostgreSQL one has none)
_EVENTS_NO_UPDATE = (
    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events\n"
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
)
BACKFILL_BATCH = 2000


def v10_event_chain(db: Database) -> None:
    pg = getattr(db, "dialect", "sqlite") == "postgresql"
    columns = V10_EVENT_CHAIN_COLUMNS
    if pg:  # the PostgreSQL schema's text is byte-compared (storage/pg_migrations.py)
        columns = columns.replace(" TEXT;", ' TEXT COLLATE "C";')
    for statement in columns.split(";"):
        if statement.strip():
            db.execute(statement.strip())
    if db.one("SELECT 1 AS x FROM events WHERE hash IS NULL LIMIT 1") is None:
        return
    if pg:
        db.execute("ALTER TABLE events DISABLE TRIGGER events_no_update")
    else:
        db.execute("DROP TRIGGER IF EXISTS events_no_update")
    seq, prev, after = 0, GENESIS, -1
    while True:
        rows = db.query(
            "SELECT id, at, kind, actor, source, scope, incident_id, reason, data FROM events"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after, BACKFILL_BATCH),
        )
        if not rows:
            break
        for row in rows:
            seq += 1
            data = loads_object(row["data"])
            # a terminal actor's host was kept in its payload; any other event's is unknown
            host = data.get("host") if row["source"] == "cli" and isinstance(data, dict) else None
            row.update(seq=seq, host=host if isinstance(host, str) else None, prev_hash=prev)
            digest = row_hash(row)
            db.execute(
                "UPDATE events SET seq = ?, host = ?, prev_hash = ?, hash = ? WHERE id = ?",
                (seq, row["host"], prev, digest, row["id"]),
            )
            prev = digest
        after = rows[-1]["id"]
    db.execute("ALTER TABLE events ENABLE TRIGGER events_no_update" if pg else _EVENTS_NO_UPDATE)


def loads_object(text: object) -> object:
    import json

    if isinstance(text, str) and text:
        try:
            return json.loads(text)
        except ValueError:
            return None
    return text


# Where the resume rule (commands/rollback/resume.py, commands/rollback/rearm.py) starts counting
# incidents on a desk that already had them: the rule counts incidents opened since the last
# TRADING_RESUMED, and a desk upgraded with years of incidents, settled before the rule existed, has
# none. Its incidents are settled up to the earliest one that is not (fail closed): still OPEN,
# holding, or opened since live trading was last armed while the gates were last written off. Those
# stay counted. One event, written once by this migration, and only where there were incidents. A
# function rather than SQL: the JSON and time functions differ between SQLite and PostgreSQL.
_LIVE_KEYS = {"enable_live_trading": True, "live_mode_armed": True, "live_dry_run_mode": False}


def _gates_live(data: object) -> bool:
    after = loads_object(data)
    after = after.get("after") if isinstance(after, dict) else None
    return isinstance(after, dict) and all(after.get(k) == v for k, v in _LIVE_KEYS.items())


def v11_rearm_baseline(db: Database) -> None:
    if db.one("SELECT 1 AS x FROM events WHERE kind = 'INCIDENT_OPENED' LIMIT 1") is None:
        return
    import json
    from datetime import UTC, datetime

    from rollbot.iso_time import iso

    writes = db.query("SELECT id, data FROM events WHERE kind = 'GATES_WRITTEN' ORDER BY id")
    live_now = _gates_live(writes[-1]["data"]) if writes else None
    armed_at = max((w["id"] for w in writes if _gates_live(w["data"])), default=0)
    left_off = live_now is False  # gates last written off: incidents since arming still count
    first = db.one(
        "SELECT MIN(e.id) - 1 AS after FROM events e JOIN incidents i ON i.id = e.incident_id"
        " WHERE e.kind = 'INCIDENT_OPENED' AND (i.status = 'OPEN'"
        " OR EXISTS (SELECT 1 FROM holds h WHERE h.incident_id = i.id AND h.cleared_at IS NULL)"
        " OR (? = 1 AND e.id > ?))",
        (1 if left_off else 0, armed_at),
    )
    last = db.one("SELECT COALESCE(MAX(id), 0) AS last FROM events")
    after = first["after"] if first and first["after"] is not None else last["last"]  # type: ignore[index]
    now = iso(datetime.now(UTC))
    reason = (
        "the resume rule counts incidents opened after this point; those before were"
        " settled before it existed"
    )
    text = json.dumps({"after_event": int(after)})
    head = db.one(HEAD_SQL)  # chained like any event (V10 hashed the history before it)
    seq, prev = next_link(None if head is None else (head["seq"], head["hash"]))
    digest = event_hash(
        seq, now, "REARM_BASELINE", "rollbot", "system", None, None, None, reason, text, prev
    )
    db.execute(
        INSERT_SQL,
        (now, "REARM_BASELINE", "rollbot", "system", None, None, None, reason, text, seq, prev,
         digest),
    )  # fmt: skip


# gates across hosts (commands/killswitch/gates_agent.py): each change asked for, in order, and what
# the agent on the trading system's host last read back from its files
V12_GATE_CHANGES = """
CREATE TABLE IF NOT EXISTS gate_changes (
    generation INTEGER PRIMARY KEY,
    requested_at TEXT NOT NULL,
    gate_values TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    incident_id TEXT,
    applied_at TEXT,
    applied_by TEXT
);
CREATE TABLE IF NOT EXISTS gate_readings (
    name TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    generation INTEGER NOT NULL,
    gate_values TEXT NOT NULL,
    readable INTEGER NOT NULL,
    problem TEXT NOT NULL,
    read_at TEXT NOT NULL
);
"""

MIGRATIONS: list[Migration] = [
    V1_CORE,
    V2_LEASES,
    V3_HOLD_PER_KILL,
    V4_GUARD_RESERVATIONS,
    V5_ARMED_CHECKS,
    V6_REQUIRED_ROLES,
    V7_OPEN_WORK_INDEXES,
    V8_OUTBOX_SET_ASIDE,
    V9_DEAD_MANS_SWITCH,
    v10_event_chain,
    v11_rearm_baseline,
    V12_GATE_CHANGES,
]
