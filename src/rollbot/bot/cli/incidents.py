"""`rollbot report` (an incident's or a drill's rollback report) and `rollbot incidents`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rollbot.bot.cli.shared import folding_table, guarded, out, settings
from rollbot.commands.desk.context import Rollbot
from rollbot.errors import BadInput


def report(
    incident: Annotated[str, typer.Argument(help="Incident or drill id: INC-0001, DRILL-0001")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="md, json or png")] = "md",
) -> None:
    """Write an incident's rollback report (stored in SQLite and under the reports directory)."""

    def go() -> int:
        from rollbot.commands.rollback.report import drill_report, write_reports

        if fmt not in ("md", "json", "png"):
            raise BadInput(f"unknown --format {fmt!r}: use md, json or png")
        rb = Rollbot.open(settings())
        if incident.upper().startswith("DRILL-"):  # written in the drill's sandbox
            path = drill_report(rb, incident, fmt)  # type: ignore[arg-type]
        else:
            rb.incidents.get(incident)
            path = write_reports(rb, incident, (fmt,))[fmt]  # type: ignore[arg-type]
        if fmt == "png":
            out.print(str(path))
        else:
            sys.stdout.write(path.read_text(encoding="utf-8") + "\n")
        return 0

    raise typer.Exit(guarded(go))


def incidents(open_only: Annotated[bool, typer.Option("--open")] = False) -> None:
    """Incidents, newest first."""

    def go() -> None:
        rb = Rollbot.open(settings())
        table = folding_table("Id", "Opened", "Kind", "Status", "Phase", "Final", "Reason")
        for i in rb.incidents.list(open_only=open_only):
            table.add_row(
                i.id,
                f"{i.opened_at:%Y-%m-%d %H:%M:%S}",
                i.kind,
                i.status,
                i.phase,
                i.final_status or "",
                i.reason,
            )
        out.print(table)

    guarded(go)
