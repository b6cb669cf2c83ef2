"""Figure — break-glass start-up: `rollbot kill trigger` from exec to its HALTED hold stored
(issue 18 item 4), the console script as a person runs it, imports included. Beside it, the
same kill through the full CLI (`python -m rollbot.bot.cli`, typer and every command loaded
first), which is what the console script did before it stored the hold by itself.

Each run execs a fresh process against a fresh copy of a seeded desk (database and paper
book), and watches the holds table through its own SQLite connection (WAL: reading never
blocks the writer) — what is stored, not what the process prints.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import PG, Figure, Sizes, paper_venues, pg_url_for
from bench.serve_process import config_toml, query_one, rollbot_argv
from rollbot.commands.desk.context import Rollbot
from rollbot.config import load_settings

POLL_S = 0.001
HELD = "SELECT COUNT(*) FROM holds WHERE cleared_at IS NULL"


def _template(root: Path) -> Path:
    """A desk as a kill finds it: database migrated, paper book seeded (24 resting orders)."""
    root.mkdir(parents=True, exist_ok=True)
    venues = paper_venues(root, 1, latency_ms=0)
    (root / "rollbot.toml").write_text(config_toml(root, venues), "utf-8")
    rb = Rollbot.open(load_settings(root / "rollbot.toml"))
    try:
        rb.venue(venues[0].name)  # seeds the book
    finally:
        rb.db.close()
        for v in (rb._venues or {}).values():
            v.book.db.close()  # type: ignore[attr-defined]
    return root


def _one(template: Path, root: Path, argv: list[str]) -> float:
    shutil.copytree(template, root)
    # the config names the template's paths: point it at this copy
    text = (root / "rollbot.toml").read_text("utf-8").replace(str(template), str(root))
    if (seeded := pg_url_for(template, create=False)) is not None:  # a copy of its database too
        PG["urls"][root.resolve()] = copy = PG["server"].copy_database(seeded)
        text = text.replace(seeded, copy)
    (root / "rollbot.toml").write_text(text, "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ROLLBOT_"))}
    env["ROLLBOT_CONFIG"] = str(root / "rollbot.toml")
    db = root / "rollbot.db"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*argv, "kill", "trigger", "--reason", "bench: break glass"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stored_at = None
    while stored_at is None:
        if (query_one(db, HELD) or (0,))[0]:
            stored_at = time.perf_counter()
        elif proc.poll() is not None:
            raise RuntimeError(f"kill trigger ended without a hold: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        elif time.perf_counter() - started > 30:
            proc.kill()
            raise TimeoutError("kill trigger: no hold stored after 30 s")
        else:
            time.sleep(POLL_S)
    _, errors = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"kill trigger exited {proc.returncode}: {errors!r}")
    return stored_at - started


def _measure(root: Path, runs: int, full_cli: bool = True) -> dict[str, list[float]]:
    template = _template(root / "template")
    script = rollbot_argv()
    full = [sys.executable, "-m", "rollbot.bot.cli"]
    out: dict[str, list[float]] = {"script": [], "full": []}
    for i in range(runs):  # interleaved: the machine's load falls on both alike
        out["script"].append(_one(template, root / f"script{i}", script))
        if full_cli:
            out["full"].append(_one(template, root / f"full{i}", full))
    return out


async def run(sizes: Sizes, root: Path, *, full_cli: bool = True) -> list[Figure]:
    """`full_cli=False`: the console script's figure only (bench/postgres.py)."""
    runs = max(3, sizes.start_runs * 2)
    got = await asyncio.to_thread(_measure, root, runs, full_cli)
    setup = (
        f"fresh process, seeded desk copy, hold read back through its own connection ({runs} runs)"
    )
    figures = [
        Figure(
            key="kill_startup",
            title="Kill: `rollbot kill trigger` exec to hold stored",
            unit="s",
            samples=got["script"],
            target=0.15,
            target_text="<= 150 ms",
            note=setup + "; imports only what storing the hold needs",
        ),
    ]
    if full_cli:
        figures.append(
            Figure(
                key="kill_startup_full_cli",
                title="Kill: the full CLI (python -m rollbot.bot.cli) exec to hold stored",
                unit="s",
                samples=got["full"],
                note="typer, rich, pydantic-settings and every command imported before the hold",
            )
        )
    return figures
