"""`rollbot preflight`: the armed status — can the kill path work right now? Each check PASS or
FAIL with the reason and what to do; exit 0 only when every check passes. The same checks run
on a schedule in `serve` and `clock` (bot/scheduler.py), which alert the ops channel once per
change, turn /healthz unhealthy and show a banner on the App Home."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from rollbot.bot.cli.shared import guarded, out, settings, slack_probe_for


def preflight(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Check that the kill path is armed: Slack, every venue, gates, database, disk, the risk
    monitor and the last drill."""
    from rich.markup import escape
    from rich.table import Table

    from rollbot.commands.desk.context import Rollbot
    from rollbot.commands.risk import preflight as armed

    def go() -> int:
        rb = Rollbot.open(settings())

        async def main() -> list[armed.Check]:
            try:
                return await armed.preflight(rb, slack_probe_for(rb))
            finally:
                await rb.aclose()

        checks = asyncio.run(main())
        if as_json:
            out.print_json(json.dumps([c.model_dump() for c in checks]))
        else:
            table = Table(title="rollbot armed status", show_lines=False)
            for column in ("check", "", "why", "what to do"):
                table.add_column(column, overflow="fold")
            for c in checks:
                mark = "[green]PASS[/]" if c.ok else "[bold red]FAIL[/]"
                table.add_row(c.name, mark, escape(c.reason), escape(c.action if not c.ok else ""))
            out.print(table)
            bad = sum(not c.ok for c in checks)
            out.print(
                "[green]Armed: every check passes.[/]"
                if not bad
                else f"[bold red]Not armed: {bad} of {len(checks)} checks fail.[/]"
            )
        return 0 if all(c.ok for c in checks) else 1

    raise typer.Exit(guarded(go))
