"""Exactly once across crashes: a real `rollbot rollback` process is SIGKILLed between steps and
in the middle of FLATTEN; the next start finishes the incident, and the paper book shows exactly
one filled closing order per position."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pg_server import BOTH, read_rows

from engine.support import START, book_positions, closing_orders, open_order_count
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import ROLLBACK_STEPS, Engine, StepStatus
from rollbot.commands.rollback.flatten import client_order_id
from rollbot.config import (
    ApprovalsConfig,
    DatabaseConfig,
    FlattenConfig,
    PaperVenueConfig,
    Settings,
)
from rollbot.errors import StateUnavailable, StorageError
from rollbot.storage.events import Actor

LATENCY_MS = 150  # every venue call takes this long: time to land the kill where we want it


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The shared settings, with a slow paper venue and break-glass rollback (no approval)."""
    return settings.model_copy(
        update={
            "venues": [PaperVenueConfig(book_path=tmp_path / "paper.db", latency_ms=LATENCY_MS)],
            "approvals": ApprovalsConfig(rollback_needs_approval=False),
            "flatten": FlattenConfig(recheck_interval_s=0.2),
        }
    )


@pytest.fixture
def fast_config(settings: Settings, write_config: Any, tmp_path: Path) -> list[str]:
    """The same book without the latency: the restart need not be slow to prove anything."""
    quick = PaperVenueConfig(book_path=tmp_path / "paper.db")
    return [
        "--config",
        str(write_config(settings.model_copy(update={"venues": [quick]}), "fast.toml")),
    ]


@pytest.fixture
def paper(settings: Settings) -> Iterator[PaperVenue]:
    """The book the subprocesses trade against, seeded with the default drill book."""
    cfg = settings.venues[0]
    assert isinstance(cfg, PaperVenueConfig)
    venue = PaperVenue(cfg)
    assert book_positions(venue) == START
    yield venue
    venue.book.db.close()


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    """The rollbot database on SQLite and on PostgreSQL (the paper book is SQLite either way)."""
    return request.param


def wait_for(
    db: Path | DatabaseConfig, sql: str, proc: subprocess.Popen[str], timeout: float = 30
) -> None:
    """Poll a database (read-only) until `sql` returns a row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"rollback ended before the kill: {proc.communicate()}"
        try:
            if rows(db, sql):
                return
        except (sqlite3.OperationalError, StateUnavailable, StorageError):
            pass  # not created yet
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for: {sql}")


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def rows(db: Path | DatabaseConfig, sql: str) -> list[Any]:
    if not isinstance(db, Path):
        return read_rows(db, sql)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
        return conn.execute(sql).fetchall()


def assert_closed_exactly_once(paper: PaperVenue, incident: str) -> None:
    assert book_positions(paper) == {}
    assert open_order_count(paper) == 0
    closes = closing_orders(paper)
    assert set(closes) == set(START)
    for symbol, orders in closes.items():
        [order] = orders  # no duplicate, whatever the crash interrupted
        assert order["client_order_id"] == client_order_id(incident, "paper", symbol, 1)
        assert order["status"] == "FILLED"
        assert Decimal(order["filled"]) == abs(START[symbol])
        assert order["side"] == ("SELL" if START[symbol] > 0 else "BUY")


def test_sigkill_between_steps_then_recover_finishes_without_a_duplicate(
    rollbot: Any, settings: Settings, paper: PaperVenue, fast_config: list[str]
) -> None:
    db = settings.database
    proc = rollbot.popen("rollback", "--reason", "crash between steps", "--confirm")
    wait_for(
        db,
        "SELECT 1 FROM events WHERE kind = 'STEP_ENDED' AND json_extract(data, '$.step') = 3",
        proc,
    )
    kill(proc)

    # it died between ASSESS and FLATTEN: held, cancelled, nothing closed, nothing intended
    assert rows(db, "SELECT id, phase FROM incidents") == [("INC-0001", "RUNNING")]
    assert rows(db, "SELECT * FROM order_intents") == []
    assert book_positions(paper) == START and closing_orders(paper) == {}
    assert open_order_count(paper) == 0

    result = rollbot(*fast_config, "recover")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "INC-0001 rollback: SUCCESS" in result.stdout
    assert_closed_exactly_once(paper, "INC-0001")
    assert rows(db, "SELECT phase, final_status FROM incidents") == [("DONE", "SUCCESS")]
    ended = rows(
        db,
        "SELECT json_extract(data, '$.step') FROM events WHERE kind = 'STEP_ENDED' ORDER BY id",
    )
    assert [r[0] for r in ended] == [1, 2, 3, 4, 5]

    # the finished incident, run again, sends nothing (not even a read)
    app = Rollbot.open(settings)
    try:
        incident = app.incidents.get("INC-0001")
        again = asyncio_run(Engine(app, Actor(id="U0OPERATOR", source="cli")), incident)
        venue = app.venue("paper")
        assert isinstance(venue, PaperVenue)
        assert again.final_status is StepStatus.SUCCESS
        assert venue.calls == 0
        venue.book.db.close()
    finally:
        app.db.close()
    assert_closed_exactly_once(paper, "INC-0001")


def asyncio_run(engine: Engine, incident: Any) -> Any:
    import asyncio

    return asyncio.run(engine.run(incident, ROLLBACK_STEPS, new=False))


def test_sigkill_mid_flatten_then_a_second_rollback_finishes_without_a_duplicate(
    rollbot: Any, settings: Settings, paper: PaperVenue, fast_config: list[str]
) -> None:
    """Killed once the first closing order is written down: sent or not, no one knows."""
    db = settings.database
    proc = rollbot.popen("rollback", "--reason", "crash mid-flatten", "--confirm")
    wait_for(db, "SELECT 1 FROM order_intents", proc)
    kill(proc)

    assert rows(db, "SELECT * FROM order_intents")
    assert rows(db, "SELECT phase FROM incidents") == [("RUNNING",)]

    result = rollbot(*fast_config, "rollback", "--reason", "second try", "--confirm")

    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "finished the interrupted INC-0001 first" in out
    assert "INC-0001 rollback: SUCCESS" in out and "INC-0002 rollback: SUCCESS" in out
    assert_closed_exactly_once(paper, "INC-0001")
    # the second incident found the book flat: it intended and sent nothing
    assert rows(db, "SELECT * FROM order_intents WHERE incident_id = 'INC-0002'") == []
    assert rows(db, "SELECT id, phase, final_status FROM incidents ORDER BY id") == [
        ("INC-0001", "DONE", "SUCCESS"),
        ("INC-0002", "DONE", "SUCCESS"),
    ]


def test_sigkill_after_the_venue_took_orders_then_recover_reads_them_back(
    rollbot: Any, settings: Settings, paper: PaperVenue, fast_config: list[str]
) -> None:
    """Killed once closing orders exist at the venue, before the ledger heard back: the restart
    must find them by client order id instead of sending them again."""
    db = settings.database
    proc = rollbot.popen("rollback", "--reason", "crash after sending", "--confirm")
    wait_for(paper.book.db.path, "SELECT 1 FROM orders WHERE client_order_id LIKE 'rb%'", proc)
    kill(proc)

    at_venue = {
        r["client_order_id"] for r in paper.book.order_rows("WHERE client_order_id LIKE 'rb%'")
    }
    assert at_venue
    ledger = dict(rows(db, "SELECT client_order_id, status FROM order_intents"))
    assert at_venue <= set(ledger)  # written down before sent, always

    result = rollbot(*fast_config, "recover")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "INC-0001 rollback: SUCCESS" in result.stdout
    assert_closed_exactly_once(paper, "INC-0001")
