"""`rollbot db copy`: move a one-host history into another database, chain intact.

Exit codes: 0 done; 1 the copy is incomplete or the target's chain is broken; 2 bad input,
nothing changed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from rollbot.bot.cli.shared import err, guarded, out, settings

db_app = typer.Typer(no_args_is_help=True, help="The database itself.")


@db_app.command("copy")
def copy_cmd(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="postgresql://USER@HOST:PORT/DB (the password from ROLLBOT_DATABASE_PASSWORD or"
            " PGPASSWORD, never the URL) or sqlite:///PATH.",
        ),
    ],
) -> None:
    """Copy this host's whole database into a new, empty one, then verify its chain there.
    Stop `rollbot serve` and `rollbot clock` first: what they write during the copy is not in
    it (and is reported)."""
    from rollbot.errors import BadInput
    from rollbot.storage.copy import copy_database, open_target, redact_url
    from rollbot.storage.db import Database

    def go() -> int:
        cfg = settings()
        if cfg.database.url is not None:
            raise BadInput(
                "db copy moves a one-host SQLite history: this config's [database] is already"
                " PostgreSQL (url). Nothing was copied."
            )
        source = Database(cfg.database.path, cfg.database.busy_timeout_ms, create=False)
        try:
            target = open_target(to, cfg.database.busy_timeout_ms)
            try:
                copied = copy_database(
                    source, target, lambda t, n: out.print(f"  {t}: {n} row(s)", soft_wrap=True)
                )
            finally:
                target.db.close()
        finally:
            source.close()
        verdict = copied.verdict
        assert verdict is not None
        total = sum(copied.tables.values())
        out.print(
            f"db copy: {total} row(s) in {len(copied.tables)} tables to {escape(redact_url(to))}",
            soft_wrap=True,
        )
        code = 0
        if verdict.broken is not None:
            err.print(
                f"[bold red]target chain BROKEN[/] at {escape(verdict.broken.describe())}",
                soft_wrap=True,
            )
            code = 1
        else:
            out.print(
                f"target verified: {verdict.events} event(s), seq 1..{verdict.head_seq},"
                f" head {verdict.head_hash}",
                soft_wrap=True,
            )
        if copied.source_moved_on:
            err.print(
                f"[bold red]incomplete:[/] the source took {copied.source_moved_on} event(s)"
                " after the copy's snapshot; they are not in the target. Stop rollbot serve and"
                " clock, then copy again into a new, empty target.",
                soft_wrap=True,
            )
            code = 1
        return code

    raise typer.Exit(guarded(go))
