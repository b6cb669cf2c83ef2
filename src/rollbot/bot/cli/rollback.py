"""`rollbot rollback` (the whole five-step procedure, then the report) and `rollbot recover`
(finish a rollback a crash cut off)."""

from __future__ import annotations

import typer

from rollbot.bot.cli.glass import break_glass
from rollbot.bot.cli.shared import (
    ByOpt,
    Confirm,
    Reason,
    actor,
    on_start,
    out,
    print_outcome,
    print_step,
    request_at_terminal,
    require,
    run_async,
)
from rollbot.commands.desk.context import Rollbot
from rollbot.errors import BadInput


def rollback(
    reason: Reason,
    confirm: Confirm = False,
    by: ByOpt = None,
) -> None:
    """The whole procedure: halt, disconnect, assess, flatten, verify; then the report."""

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.approvals.recover import resume_unfinished
        from rollbot.commands.rollback.engine import Engine
        from rollbot.commands.rollback.report import write_reports

        who = actor(rb, by)
        require(reason, "--reason")
        if not confirm:
            raise BadInput("rollback sends closing orders: add --confirm (nothing was sent)")
        for earlier in await resume_unfinished(rb, who, on_step=print_step):
            out.print(f"finished the interrupted {earlier.incident.id} first")
            print_outcome(earlier)
        if rb.settings.approvals.rollback_needs_approval:  # a person asked: a second approves
            return await request_at_terminal(rb, who, "rollback", {}, reason)
        break_glass(rb, who, "rollback", reason)
        engine = Engine(rb, who, on_start=on_start, on_step=print_step)
        outcome = await engine.rollback(reason)  # break-glass: its own incident
        code = print_outcome(outcome)
        paths = write_reports(rb, outcome.incident.id)
        out.print("Report: " + ", ".join(str(p) for p in paths.values()))
        return code

    raise typer.Exit(run_async(go))


def recover(by: ByOpt = None) -> None:
    """Finish any rollback that a crash cut off (reads the venues back first)."""

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.approvals.recover import resume_unfinished

        outcomes = await resume_unfinished(rb, actor(rb, by), on_step=print_step)
        if not outcomes:
            out.print("nothing to recover")
        return max((print_outcome(o) for o in outcomes), default=0)

    raise typer.Exit(run_async(go))
