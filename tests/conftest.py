"""Shared fixtures for every test: real SQLite files and the real paper venue under tmp_path.

Fixtures
    settings     Settings with every path (database, reports, gates files, paper book) under
                 tmp_path; roles: operator U0OPERATOR, risk_officer U0RISK. Override a section
                 with `settings.model_copy(update={...})`.
    clock        a ManualClock (time moves only when the test says so).
    app          Rollbot.open(settings, clock=clock): the object commands take; closed after.
    write_config write Settings (or a plain dict) as TOML: `write_config(settings, "x.toml")`
                 -> the path under tmp_path; load_settings reads it back unchanged.
    config_file  `settings` written as TOML to tmp_path/rollbot.toml (for subprocesses).
    rollbot      run the real CLI in a subprocess (python -m rollbot.bot.cli, cwd tmp_path,
                 ROLLBOT_CONFIG = config_file): `rollbot("kill", "status", "--json")`
                 -> CompletedProcess (text). `env={"ROLLBOT_CONFIG": other}` switches config;
                 `script=True` runs the installed `rollbot` console script instead;
                 `rollbot.popen(...)` starts one without waiting; `person="alice"` runs it as
                 that person's real uid (terminal_users.py: the test module then imports
                 its `tmp_path`, a directory other uids can reach). Each call costs a Python
                 start (~0.7 s): keep them few.
    write_lock   `with write_lock(db_path):` another process holds SQLite's write lock (BEGIN
                 IMMEDIATE) on that database for the block, then lets go having written nothing.
    make_paper   build a PaperVenue with faults: `make_paper(fill="partial", name="p2")`; its book
                 lives under tmp_path (one file per venue name) and is closed after the test.

Helpers live in fixtures, not imports: `from conftest import ...` breaks once another directory
has its own conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from pg_server import CURRENT, PgServer, database_config
from terminal_users import as_person

from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import (
    FlattenConfig,
    PaperVenueConfig,
    PathsConfig,
    Settings,
)

# -- TOML writing (tomllib reads only) ------------------------------------------------------------
_BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _key(key: str) -> str:
    return key if key and set(key) <= _BARE else json.dumps(key)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML: {v!r}")


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def toml_text(data: dict[str, Any], _prefix: str = "") -> str:
    """A dict as TOML: scalars first, then [tables] and [[arrays of tables]]. None is dropped."""
    lines: list[str] = []
    for k, v in data.items():
        if v is not None and not isinstance(v, dict) and not _is_tables(v):
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in data.items():
        name = f"{_prefix}{_key(k)}"
        if isinstance(v, dict):
            lines.append(f"\n[{name}]")
            lines.append(toml_text(v, f"{name}.").strip("\n"))
        elif _is_tables(v):
            for item in v:
                lines.append(f"\n[[{name}]]")
                # nested tables inside an array element are written inline
                lines.extend(
                    f"{_key(ik)} = {_value(iv)}" for ik, iv in item.items() if iv is not None
                )
    return "\n".join(line for line in lines if line != "") + "\n"


def _write_config(data: Settings | dict[str, Any], path: Path) -> Path:
    if isinstance(data, Settings):
        data = data.model_dump(mode="json", exclude_none=True)
    path.write_text(toml_text(data), "utf-8")
    return path


# -- settings, clock, app ------------------------------------------------------------------------
OPERATOR = "U0OPERATOR"  # Slack user IDs the `settings` fixture maps to roles
RISK_OFFICER = "U0RISK"


def tmp_settings(root: Path) -> Settings:
    return Settings(
        database=database_config(root, busy_timeout_ms=5000),
        paths=PathsConfig(
            reports_dir=root / "reports",
            live_environment=root / "config" / "live_environment.toml",
            shadow_config=root / "config" / "shadow_config.toml",
        ),
        venues=[PaperVenueConfig(book_path=root / "paper.db")],
        flatten=FlattenConfig(recheck_interval_s=0.05),
        roles={"operator": [OPERATOR], "risk_officer": [RISK_OFFICER]},
    )


# -- the database backend -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL for the session (tests/pg_server.py), started on first use."""
    server = PgServer().start()
    try:
        server.make_template()
        yield server
    finally:
        server.stop()


@pytest.fixture
def backend() -> str:
    """SQLite (ROLLBOT_TEST_BACKEND=postgresql runs every other test on PostgreSQL too, where
    it does not read the SQLite file itself); a directory or module whose tests run on both
    overrides this with `@pytest.fixture(params=BOTH)` (pg_server.BOTH)."""
    return os.environ.get("ROLLBOT_TEST_BACKEND", "sqlite")


@pytest.fixture(autouse=True)
def _database_backend(backend: str, request: pytest.FixtureRequest) -> Iterator[None]:
    if backend == "sqlite":
        yield
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.new_database()
    CURRENT["url"] = url
    try:
        yield
    finally:
        CURRENT["url"] = None
        server.drop_database(url)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tmp_settings(tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(settings: Settings, clock: ManualClock) -> Iterator[Rollbot]:
    rb = Rollbot.open(settings, clock=clock)
    yield rb
    rb.db.close()


@pytest.fixture
def make_paper(tmp_path: Path) -> Iterator[Callable[..., PaperVenue]]:
    built: list[PaperVenue] = []

    def make(clock: Any = None, **overrides: Any) -> PaperVenue:
        name = overrides.get("name", "paper")
        overrides.setdefault("book_path", tmp_path / f"{name}.db")
        venue = PaperVenue(PaperVenueConfig(**overrides), clock=clock)
        built.append(venue)
        return venue

    yield make
    for venue in built:
        venue.book.db.close()


# -- the CLI as a real subprocess -----------------------------------------------------------------
class Cli:
    """`python -m rollbot.bot.cli ARGS` with ROLLBOT_CONFIG set and cwd = tmp_path."""

    def __init__(self, config: Path | None, cwd: Path) -> None:
        self.config = config
        self.cwd = cwd

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "ROLLBOT_CONFIG"}
        env.update(COLUMNS="250", NO_COLOR="1", PYTHONUNBUFFERED="1")
        if self.config is not None:
            env["ROLLBOT_CONFIG"] = str(self.config)
        env.update(extra or {})
        return env

    def argv(self, args: tuple[str, ...], script: bool = False) -> list[str]:
        if script:  # the console script pip installed next to this interpreter
            return [str(Path(sys.executable).with_name("rollbot")), *args]
        return [sys.executable, "-m", "rollbot.bot.cli", *args]

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        script: bool = False,
        person: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(args, script),
            cwd=self.cwd,
            env=self.env(env),
            preexec_fn=as_person(person) if person else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(
        self, *args: str, env: dict[str, str] | None = None, person: str | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(args),
            cwd=self.cwd,
            env=self.env(env),
            preexec_fn=as_person(person) if person else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    def write(data: Settings | dict[str, Any], name: str = "rollbot.toml") -> Path:
        return _write_config(data, tmp_path / name)

    return write


@pytest.fixture
def config_file(settings: Settings, write_config: Callable[..., Path]) -> Path:
    return write_config(settings)


@pytest.fixture
def rollbot(config_file: Path, tmp_path: Path) -> Cli:
    return Cli(config_file, tmp_path)


# -- another process holding the database's write lock -------------------------------------------
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # until the test lets go
conn.execute("ROLLBACK")
"""
# on PostgreSQL: the writers' advisory lock, inside a transaction (storage/postgres.py)
PG_LOCKER = """
import sys
from rollbot.storage.postgres import PostgresDatabase
db = PostgresDatabase(sys.argv[1])
with db.write():
    print("locked", flush=True)
    sys.stdin.read()  # until the test lets go
"""


REFUSE_HOLDS = {
    "sqlite": [
        "CREATE TRIGGER refuse_holds BEFORE INSERT ON holds"
        " BEGIN SELECT RAISE(ABORT, 'the disk refused this hold'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_holds() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'the disk refused this hold'; END $$",
        "CREATE TRIGGER refuse_holds BEFORE INSERT ON holds"
        " FOR EACH ROW EXECUTE FUNCTION refuse_holds()",
    ],
}


@pytest.fixture
def refuse_holds() -> Callable[[Any], None]:
    """`refuse_holds(db)`: from now on the database takes no hold, in any process, for a
    reason other than a lock (as a full disk or a server's refusal would): 'the disk refused
    this hold'."""

    def refuse(db: Any) -> None:
        for sql in REFUSE_HOLDS[db.dialect]:
            db.execute(sql)

    return refuse


@pytest.fixture
def write_lock() -> Callable[[Any], AbstractContextManager[None]]:
    """`with write_lock(path or settings.database):` another process holds the writers' lock."""

    @contextmanager
    def hold(db: Any) -> Iterator[None]:
        url = getattr(db, "url", None)
        target = [PG_LOCKER, url] if url else [LOCKER, str(getattr(db, "path", db))]
        locker = subprocess.Popen(
            [sys.executable, "-c", *target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
            yield
        finally:
            locker.communicate("", timeout=30)

    return hold
