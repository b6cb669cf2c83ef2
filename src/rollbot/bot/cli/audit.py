"""`rollbot audit`: the event log's hash chain — verify it, note its head, export the trail.

Exit codes: 0 intact / done; 1 the chain is broken (the first bad event is named); 2 bad input,
nothing changed."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.markup import escape

from rollbot.bot.cli.shared import err, guarded, out, settings

if TYPE_CHECKING:
    from rollbot.storage.db import Database

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident event log.")

ANCHOR = re.compile(r"^(\d+):([0-9a-f]{64})$")


def _reader() -> Database:
    """The configured database, SQLite or PostgreSQL ([database] path or url), never created by
    a reader: a missing file or a database without rollbot's schema is an error."""
    from rollbot.storage.backends import open_database

    return cast("Database", open_database(settings().database, create=False))


def _anchor(text: str | None) -> tuple[int, str] | None:
    from rollbot.errors import BadInput

    if text is None:
        return None
    match = ANCHOR.match(text.strip())
    if not match:
        raise BadInput(
            f"--anchor {text!r}: give SEQ:HASH as `rollbot audit head` printed it"
            " (e.g. 1520:9f2c...; 64 lowercase hex digits)"
        )
    return int(match.group(1)), match.group(2)


@audit_app.command("verify")
def verify_cmd(
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            help="SEQ:HASH of a head recorded earlier (`audit head`): it must still be there.",
        ),
    ] = None,
) -> None:
    """Check the hash chain from the first event to the last; name the first bad one."""
    from rollbot.storage.audit import verify

    def go() -> int:
        expected = _anchor(anchor)
        db = _reader()
        try:
            verdict = verify(db, expected)
        finally:
            db.close()
        if verdict.broken is not None:
            err.print(
                f"[bold red]audit verify: BROKEN[/] at {escape(verdict.broken.describe())}"
                f"\n{verdict.events} event(s) before it are intact (up to seq"
                f" {verdict.head_seq}).",
                soft_wrap=True,
            )
            return 1
        anchored = f"; anchor seq {expected[0]} matches" if expected else ""
        out.print(
            f"audit verify: intact - {verdict.events} event(s), seq 1..{verdict.head_seq},"
            f" head {verdict.head_hash}{anchored}",
            soft_wrap=True,
        )
        return 0

    raise typer.Exit(guarded(go))


@audit_app.command("head")
def head_cmd() -> None:
    """The chain's last event as SEQ:HASH: keep it elsewhere (a ticket, a WORM store, another
    system) and check later with `audit verify --anchor SEQ:HASH`."""
    from rollbot.storage.chain import HEAD_SQL

    def go() -> None:
        db = _reader()
        try:
            row = db.one(HEAD_SQL)
        finally:
            db.close()
        typer.echo(f"{row['seq']}:{row['hash']}" if row else "0:" + "0" * 64)

    guarded(go)


@audit_app.command("export")
def export_cmd(
    start: Annotated[
        str | None, typer.Option("--from", help="First day (YYYY-MM-DD) or ISO time (UTC).")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", help="Last day, included (YYYY-MM-DD), or ISO time (included)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "csv",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write here (never overwritten); else stdout.")
    ] = None,
) -> None:
    """The trail for a regulator: who, when, what, why, source, host, scope/venue/account/
    strategy, and each event's hash."""
    from rollbot.commands.desk.audit_export import (
        check_format,
        export_to_file,
        records,
        window,
        write,
    )
    from rollbot.storage.audit import verify

    def go() -> int:
        kind = check_format(fmt)
        span = window(start, end)  # both checked before anything is opened
        db = _reader()
        try:
            verdict = verify(db)
            if out_file is None:
                count = write(records(db, span), kind, sys.stdout)
                sys.stdout.flush()
            else:
                count = export_to_file(db, span, kind, out_file)
        finally:
            db.close()
        where = f" to {out_file}" if out_file else ""
        err.print(f"audit export: {count} event(s) from {span.describe()}{where}", soft_wrap=True)
        if verdict.broken is not None:
            err.print(
                "[bold red]the chain is BROKEN[/] at"
                f" {escape(verdict.broken.describe())}: the trail was exported as stored",
                soft_wrap=True,
            )
            return 1
        err.print(
            f"chain intact up to seq {verdict.head_seq} (head {verdict.head_hash})", soft_wrap=True
        )
        return 0

    raise typer.Exit(guarded(go))
