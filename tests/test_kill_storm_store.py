"""A storm of kills stored together (held_incident.store_held_incidents, which the Slack face
uses for the kills that reach their hold in one pass of the event loop): each kill is still its
own incident and hold, numbered in order and chained in the audit log; a retry is still caught
by its dedupe key, in the database or within the storm; the storm is one transaction, all or
nothing, of as many statements as one kill's. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pg_server import BOTH

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.switch import HoldWanted
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.rollback.held_incident import (
    HeldRequest,
    held_request,
    store_held_incident,
    store_held_incidents,
)
from rollbot.errors import BadInput, DatabaseBusy
from rollbot.storage.audit import verify
from rollbot.storage.events import Actor
from rollbot.storage.rows_sql import rows_sql


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def person(i: int) -> Actor:
    return Actor(id=f"U0DESK{i}", source="slack")


def kill(app: Rollbot, i: int, *, key: str | None = None, scope: str | None = None) -> HeldRequest:
    return held_request(
        app,
        person(i),
        kind="kill",
        reason=f"storm {i}",
        scope_text=scope,
        dedupe_key=key or f"slack:trigger-{i}",
        hold_state=TradingState.REDUCING if i % 3 == 0 else TradingState.HALTED,
    )


def counting(app: Rollbot, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements the database runs from here on (reads and writes)."""
    seen: list[str] = []

    def wrap(run: Callable[..., Any]) -> Callable[..., Any]:
        def counted(sql: str, *args: Any, **kw: Any) -> Any:
            seen.append(sql.split()[0])
            return run(sql, *args, **kw)

        return counted

    monkeypatch.setattr(app.db, "query", wrap(app.db.query))
    monkeypatch.setattr(app.db, "execute", wrap(app.db.execute))
    return seen


def test_each_kill_of_a_storm_is_its_own_incident_and_hold_in_as_many_statements_as_one(
    app: Rollbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = counting(app, monkeypatch)
    [(first, new)] = store_held_incidents(app, [kill(app, 0)])
    assert new and first.id == "INC-0001"
    one_kill = len(statements)
    statements.clear()

    storm = [kill(app, i) for i in range(1, 26)]
    stored = store_held_incidents(app, storm)
    assert len(statements) == one_kill, "25 kills cost what one costs"

    assert [inc.id for inc, _ in stored] == [f"INC-{n:04d}" for n in range(2, 27)]
    assert all(new for _, new in stored)
    holds = {h.incident_id: h for h in app.killswitch.holds.active()}
    assert len(holds) == 26
    for i, (incident, _) in enumerate(stored, start=1):
        assert (incident.reason, incident.opened_by, incident.scope) == (
            f"storm {i}",
            f"U0DESK{i}",
            "global",
        )
        hold = holds[incident.id]
        assert (hold.scope, hold.source, hold.actor, hold.reason) == (
            "global",
            "person",
            f"U0DESK{i}",
            f"storm {i}",
        )
        assert hold.state == ("REDUCING" if i % 3 == 0 else "HALTED")
        events = app.events.list(incident_id=incident.id)
        assert [e.kind for e in events] == ["INCIDENT_OPENED", "HOLD_SET"]
        assert events[1].data == {"hold_id": hold.id, "source": "person", "state": hold.state}
        assert events[1].actor == f"U0DESK{i}"
    headlines = app.db.query("SELECT incident_id FROM outbox WHERE kind = 'headline'")
    assert sorted(r["incident_id"] for r in headlines) == sorted(holds)
    verdict = verify(app.db)
    assert verdict.intact and verdict.events == 52
    assert app.killswitch.state_of(["global"]) is TradingState.HALTED


def test_a_retry_in_the_database_or_twice_in_the_storm_opens_nothing_new(app: Rollbot) -> None:
    [(before, _)] = store_held_incidents(app, [kill(app, 1, key="slack:seen")])
    stored = store_held_incidents(
        app,
        [
            kill(app, 2, key="slack:seen"),  # Slack's retry of the kill already stored
            kill(app, 3, key="slack:twice"),
            kill(app, 4, key="slack:twice"),  # its retry, in the same pass of the loop
            kill(app, 5, key="slack:other"),
        ],
    )
    assert [(inc.id, new) for inc, new in stored] == [
        (before.id, False),
        ("INC-0002", True),
        ("INC-0002", False),
        ("INC-0003", True),
    ]
    assert stored[2][0].reason == "storm 3", "the retry is the first delivery's incident"
    assert len(app.killswitch.holds.active()) == 3
    assert app.events.count("HOLD_SET") == 3
    assert app.events.count("INCIDENT_OPENED") == 3
    assert len(app.db.query("SELECT id FROM outbox WHERE kind = 'headline'")) == 3
    assert verify(app.db).intact


def test_the_holds_of_a_storm_follow_the_rules_of_one_trigger_at_a_time(app: Rollbot) -> None:
    """trigger_many is trigger, applied in order: a second wish for one (scope, source,
    incident) finds the first's hold, tightens it, or repeats it; it never adds a second."""
    boss, ops = person(1), person(2)
    [(inc, _)] = store_held_incidents(app, [kill(app, 3)])  # REDUCING
    out = app.killswitch.trigger_many(
        [
            HoldWanted("venue:paper", "one", ops, TradingState.REDUCING, "monitor", None),
            HoldWanted("venue:paper", "two", boss, TradingState.HALTED, "monitor", None),
            HoldWanted("venue:paper", "three", ops, TradingState.REDUCING, "monitor", None),
            HoldWanted("global", "kill again", boss, TradingState.HALTED, "person", inc.id),
        ]
    )
    assert [created for _, created in out] == [True, False, False, False]
    assert [h.state for h, _ in out] == ["REDUCING", "HALTED", "HALTED", "HALTED"]
    assert len({h.id for h, _ in out[:3]}) == 1
    kinds = [e.kind for e in app.events.list(kinds=["HOLD_SET", "HOLD_TIGHTENED", "HOLD_REPEATED"])]
    assert kinds == ["HOLD_SET", "HOLD_SET", "HOLD_TIGHTENED", "HOLD_REPEATED", "HOLD_TIGHTENED"]
    assert {h.scope: h.state for h in app.killswitch.holds.active()} == {
        "global": "HALTED",
        "venue:paper": "HALTED",
    }
    assert verify(app.db).intact


def test_a_storm_is_one_transaction_and_a_lock_held_elsewhere_stores_none_of_it(
    app: Rollbot, write_lock: Callable[[Any], Any]
) -> None:
    storm = [kill(app, i) for i in range(5)]
    with write_lock(app.settings.database), app.db.patience(100), pytest.raises(DatabaseBusy):
        store_held_incidents(app, storm)
    assert app.incidents.list() == []
    assert app.killswitch.holds.active() == []
    assert app.db.query("SELECT id FROM events") == []
    stored = store_held_incidents(app, storm)  # once the lock is let go: every one, once
    assert [inc.id for inc, new in stored if new] == [f"INC-{n:04d}" for n in range(1, 6)]


def test_what_is_wrong_with_one_kill_is_said_before_anything_is_written(app: Rollbot) -> None:
    with pytest.raises(BadInput, match="nowhere"):
        kill(app, 1, scope="venue:nowhere")
    with pytest.raises(BadInput, match="reason"):
        held_request(app, person(1), kind="kill", reason="  ")
    with pytest.raises(BadInput, match="HALTED or REDUCING"):
        store_held_incident(app, person(1), kind="kill", reason="r", hold_state=TradingState.ACTIVE)
    assert app.incidents.list() == []
    assert app.db.query("SELECT id FROM events") == []


def test_one_insert_for_many_rows_keeps_what_follows_the_values_once() -> None:
    one = "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING a"
    assert rows_sql(one, 3) == (
        "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT DO NOTHING RETURNING a"
    )
    assert rows_sql(one, 1) == one
    for bad, rows in [
        ("INSERT INTO t (a) SELECT 1", 2),
        ("INSERT INTO t (a) VALUES (f(?))", 2),
        (one, 0),
    ]:
        with pytest.raises(ValueError):
            rows_sql(bad, rows)
