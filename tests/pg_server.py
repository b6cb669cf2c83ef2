"""A real PostgreSQL server for the tests, set up from nothing by the project's own files.

The binaries come from the `pgserver` wheel (a dev dependency: PyPI ships the server inside it),
else from the machine's own /usr/lib/postgresql/*/bin, else from $ROLLBOT_TEST_PG_BIN. One server
per test session: initdb into a temp directory, `postgres` listening on a Unix socket there only
(no TCP port to collide with another session's), trust authentication for the one local user,
stopped and deleted at the end. PostgreSQL refuses to run as root, and CI runs as root: the
server then runs as `nobody`, which owns only the temp directory.

Each test gets its own database, a copy of a template that already holds rollbot's schema
(CREATE DATABASE ... TEMPLATE: ~20 ms, where migrating costs ~150 ms), or an empty one.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rollbot.config import DatabaseConfig

USER = "rollbot"  # the database role the tests connect as
TEMPLATE = "rollbot_template"


def _candidates() -> list[Path]:
    found: list[Path] = []
    if os.environ.get("ROLLBOT_TEST_PG_BIN"):
        found.append(Path(os.environ["ROLLBOT_TEST_PG_BIN"]))
    spec = importlib.util.find_spec("pgserver")  # not imported: its import writes to ~/.cache
    if spec is not None and spec.submodule_search_locations:
        found.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    found += [Path(p) for p in sorted(glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return found


def _as_server_user() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    return {"user": "nobody", "group": pwd.getpwnam("nobody").pw_gid, "extra_groups": []}


def find_binaries() -> Path:
    """The first bin directory whose `postgres` runs as the server's user."""
    tried = []
    for bindir in _candidates():
        postgres = bindir / "postgres"
        if not postgres.is_file():
            tried.append(f"{bindir}: no postgres")
            continue
        run = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, **_as_server_user()
        )
        if run.returncode == 0:
            return bindir
        tried.append(f"{bindir}: {run.stderr.strip() or run.returncode}")
    raise RuntimeError(
        "no PostgreSQL server binaries for the tests (install the dev extra: pip install -e"
        " '.[dev]' brings the pgserver wheel); tried: " + "; ".join(tried or ["nothing"])
    )


class PgServer:
    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # the server's defaults (fsync, synchronous commit): benchmarks
        self.bindir = find_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="rollbot-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root  # the socket path must stay under ~100 bytes
        self._names = itertools.count(1)
        self.proc: subprocess.Popen[bytes] | None = None

    # -- life ------------------------------------------------------------------------------------
    def start(self) -> PgServer:
        as_user = _as_server_user()
        if as_user:
            os.chown(self.root, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
        self.root.chmod(0o755)
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **as_user,
        )
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the server's, kept open)
        # fsync off for tests: a test server's durability is the OS's page cache (a crash test
        # kills rollbot's processes, never this server); the files are deleted at the end anyway
        fast = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        settings = ["listen_addresses=", "max_connections=200", "shared_buffers=32MB"]
        if not self.durable:
            settings += fast
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-k",
                str(self.socket_dir),
                *(arg for s in settings for arg in ("-c", s)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            **as_user,
        )
        deadline = time.monotonic() + 30
        while not (self.socket_dir / ".s.PGSQL.5432").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the test PostgreSQL did not start:\n" + (self.root / "server.log").read_text()
                )
            time.sleep(0.02)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url("postgres")).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: smart shutdown; clients are gone by now
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -------------------------------------------------------------------------------
    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres")) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def make_template(self) -> None:
        """A database holding rollbot's schema at the current version, to copy per test."""
        from rollbot.storage.postgres import PostgresDatabase

        self.admin(f"CREATE DATABASE {TEMPLATE}")
        PostgresDatabase(self.url(TEMPLATE)).close()
        self.admin(f"ALTER DATABASE {TEMPLATE} WITH is_template = true ALLOW_CONNECTIONS = false")

    def new_database(self, *, migrated: bool = True) -> str:
        """The URL of a new database: rollbot's schema already in it, or empty."""
        name = f"t{os.getpid()}_{next(self._names)}"
        template = TEMPLATE if migrated else "template0"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
        return self.url(name)

    def copy_database(self, url: str) -> str:
        """A new database copied from the one at `url` (nobody may be connected to it)."""
        from urllib.parse import urlsplit

        name = f"c{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {urlsplit(url).path.strip('/')}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        from urllib.parse import urlsplit

        name = urlsplit(url).path.strip("/")
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # a leftover client too


# -- which backend the running test uses --------------------------------------------------------
# The `backend` fixture (tests/conftest.py) is "sqlite" unless a directory or module overrides it
# with BOTH; for "postgresql" the autouse fixture below makes a fresh database and sets it here,
# and every test settings builder takes its [database] from `database_config`.
CURRENT: dict[str, str | None] = {"url": None}
BOTH = ["sqlite", "postgresql"]


def database_config(root: Path, **fields: object) -> DatabaseConfig:
    from rollbot.config import DatabaseConfig

    if CURRENT["url"] is not None:
        return DatabaseConfig(url=CURRENT["url"], **fields)  # type: ignore[arg-type]
    return DatabaseConfig(path=root / "rollbot.db", **fields)  # type: ignore[arg-type]


def read_rows(
    database: DatabaseConfig, sql: str, params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    """Rows as tuples, read as another process would (a reader: never creates the database;
    StateUnavailable until some process has)."""
    from rollbot.storage.backends import open_database

    db = open_database(database, create=False)
    try:
        return [tuple(r.values()) for r in db.query(sql, params)]
    finally:
        db.close()
