"""The drill: a full rollback rehearsal on a seeded paper venue.

It runs in a sandbox (its own database, paper book and gates files under var/drill/) so a drill
on a live desk can never halt real trading or flip its gates; only the drill's outcome is
recorded in the main database, where the resume rule looks for a passed drill.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from rollbot.brokers.paper.scenario import load_scenario
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import Clock, SystemClock, iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import UNPARSABLE_SUFFIX
from rollbot.commands.rollback.engine import Engine, Outcome, StartCallback, Step, StepCallback
from rollbot.commands.rollback.report import write_reports
from rollbot.config import (
    DatabaseConfig,
    FlattenConfig,
    HooksConfig,
    PaperVenueConfig,
    PathsConfig,
    Settings,
)
from rollbot.errors import BadInput
from rollbot.storage.backends import open_database
from rollbot.storage.events import Actor, EventLog
from rollbot.storage.nav import NavSamples

FAULTS = ("rejects", "partial", "disconnect", "late-fill")
# what a drill makes in its sandbox, and so all it may delete there: the directory may hold
# anything else (a person's notes, another tool's files)
DRILL_DB, PAPER_DB = "drill.db", "paper.db"
LIVE_FILE, SHADOW_FILE = "config/live_environment.toml", "config/shadow_config.toml"
SANDBOX_FILES = (DRILL_DB, PAPER_DB, LIVE_FILE, SHADOW_FILE)
SQLITE_SIDECARS = ("", "-wal", "-shm", "-journal")


def clear_sandbox(workdir: Path) -> None:
    """Remove the previous drill's files, and the directories it made once they are empty."""
    for name in SANDBOX_FILES:
        suffixes = SQLITE_SIDECARS if name.endswith(".db") else ("", UNPARSABLE_SUFFIX)
        for suffix in suffixes:
            (workdir / f"{name}{suffix}").unlink(missing_ok=True)
    for directory in (workdir / "config", workdir):
        with contextlib.suppress(OSError):  # not empty (someone else's files) or not there
            directory.rmdir()


def parse_faults(text: str | None) -> set[str]:
    if not text:
        return set()
    faults = {f.strip() for f in text.split(",") if f.strip()}
    unknown = sorted(faults - set(FAULTS))
    if unknown:
        raise BadInput(f"unknown fault(s) {', '.join(unknown)}: choose from {', '.join(FAULTS)}")
    return faults


class DrillResult(BaseModel):
    outcome: Outcome
    reports: dict[str, Path]
    sandbox: Path
    faults: list[str]


def drill_settings(
    base: Settings,
    workdir: Path,
    scenario: Path | None,
    latency_ms: float,
    faults: set[str],
    stamp: str,
) -> Settings:
    paper = PaperVenueConfig(
        name="paper",
        book_path=workdir / PAPER_DB,
        scenario=scenario,
        latency_ms=latency_ms,
        reject_rate=0.3 if "rejects" in faults else 0.0,
        fill="none" if "late-fill" in faults else "partial" if "partial" in faults else "full",
        late_fill="late-fill" in faults,
    )
    return base.model_copy(
        update={
            "database": DatabaseConfig(path=workdir / DRILL_DB),
            "paths": PathsConfig(
                reports_dir=Path(base.paths.reports_dir) / "drills" / stamp,
                live_environment=workdir / LIVE_FILE,
                shadow_config=workdir / SHADOW_FILE,
                runbook=base.paths.runbook,  # the report names the desk's own runbook
            ),
            "venues": [paper],
            # a rehearsal reprices a resting close after 0.3 s (plus a round trip), not 10 s:
            # the drill stays short even when every close fills by halves
            "flatten": FlattenConfig(
                timeout_s=base.flatten.timeout_s,
                recheck_interval_s=0.1,
                limit_timeout_s=0.3 + 2 * latency_ms / 1000,
                market_exposure_threshold=base.flatten.market_exposure_threshold,
                limit_offset_bps=base.flatten.limit_offset_bps,
            ),
            "hooks": HooksConfig(),
        }
    )


async def run_drill(
    base: Settings,
    actor: Actor,
    *,
    scenario: Path | None = None,
    latency_ms: float = 0,
    faults: set[str] | None = None,
    on_start: StartCallback | None = None,
    on_step: StepCallback | None = None,
    clock: Clock | None = None,
    workdir: Path | None = None,
) -> DrillResult:
    faults = faults or set()
    if latency_ms < 0:
        raise BadInput("--latency-ms must be zero or more")
    book = load_scenario(scenario)  # a bad scenario fails here, before anything is touched
    if not book.positions:  # it would "pass" without closing anything
        raise BadInput(
            f"scenario {scenario or book.name} holds no positions: a drill must close at least"
            " one to rehearse the rollback (and to count as the passed drill /resume needs);"
            " nothing was run"
        )
    clock = clock or SystemClock()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    # beside the database file; on PostgreSQL (no file here) beside the reports
    local = base.database.path if base.database.url is None else base.paths.reports_dir
    workdir = workdir or Path(local).parent / "drill"
    clear_sandbox(workdir)
    settings = drill_settings(base, workdir, scenario, latency_ms, faults, stamp)
    number = _allocate(base, clock)
    sandbox = Rollbot.open(settings, clock=clock)
    sandbox.incidents.prefix, sandbox.incidents.first_seq = "DRILL", number
    outcome: Outcome | None = None
    reports: dict[str, Path] = {}
    try:
        paper = sandbox.venue("paper")
        assert isinstance(paper, PaperVenue)
        paper.seed(book)
        sandbox.gates.arm(actor, "drill: start from live mode")
        await _walk_prices(sandbox, paper)

        async def starting(step: Step) -> None:
            if step.number == 4 and "disconnect" in faults:
                paper.disconnect_in(2)  # flatten reads positions, then its first close is cut
            if on_start is not None:
                result = on_start(step)
                if result is not None:
                    await result

        engine = Engine(sandbox, actor, on_start=starting, on_step=on_step)
        outcome = await engine.rollback(
            f"Drill ({', '.join(sorted(faults)) or 'no faults'})", trigger="Drill"
        )
        await _sample(sandbox, paper)
        reports = write_reports(sandbox, outcome.incident.id)
    finally:
        await sandbox.aclose()
        _record(base, actor, number, outcome, reports, clock)  # FAILED if it did not finish
    assert outcome is not None
    return DrillResult(outcome=outcome, reports=reports, sandbox=workdir, faults=sorted(faults))


def _allocate(base: Settings, clock: Clock) -> int:
    """The drill's number in the main database (DRILL-N), taken before it starts."""
    db = open_database(base.database)
    try:
        with db.write():
            cur = db.execute(
                "INSERT INTO drills (incident_id, at, status, report_path)"
                " VALUES (NULL, ?, 'RUNNING', '')",
                (iso(clock.now()),),
            )
        return int(cur.lastrowid or 0)
    finally:
        db.close()


async def _sample(app: Rollbot, paper: PaperVenue) -> None:
    snap = await paper.account()
    NavSamples(app.db).add(paper.name, snap.at, snap.nav, snap.currency)


async def _walk_prices(app: Rollbot, paper: PaperVenue) -> None:
    """The session before the incident: marks move along the scenario's path, NAV sampled."""
    await _sample(app, paper)
    while paper.advance_prices() is not None:
        await asyncio.sleep(0.02)
        await _sample(app, paper)


def _record(
    base: Settings,
    actor: Actor,
    number: int,
    outcome: Outcome | None,
    reports: dict[str, Path],
    clock: Clock,
) -> None:
    status = outcome.final_status.value if outcome else "FAILED"
    db = open_database(base.database)
    try:
        with db.write():
            db.execute(
                "UPDATE drills SET at = ?, status = ?, report_path = ? WHERE id = ?",
                (iso(clock.now()), status, str(reports.get("md", "")), number),
            )
            EventLog(db, clock).append(
                "DRILL_COMPLETED",
                actor,
                reason=outcome.incident.reason if outcome else "the drill stopped on an error",
                data={
                    "drill_id": f"DRILL-{number:04d}",
                    "status": status,
                    "report": str(reports.get("md", "")),
                    "duration_s": sum(s.duration_seconds for s in outcome.steps) if outcome else 0,
                },
            )
    finally:
        db.close()
