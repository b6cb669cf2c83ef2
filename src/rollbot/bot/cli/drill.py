"""`rollbot drill`: rehearse the whole rollback on a seeded paper venue in a sandbox; with
--venue, the venue drill (commands/rollback/venue_drill.py): exit 0 when the sentinel was
cancelled at the venue and the drill's hold cleared, 1 when not, 2 when the venue is not
marked paper/testnet (nothing placed). `rollbot paper seed` resets a paper venue's book."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from rollbot.bot.cli.shared import (
    ByOpt,
    actor,
    guarded,
    on_start,
    out,
    print_outcome,
    print_step,
    run_async,
    settings,
)
from rollbot.commands.desk.context import Rollbot
from rollbot.errors import BadInput

paper_app = typer.Typer(no_args_is_help=True, help="The embedded paper venue.")

DRILL_LATENCY_MS = 25.0  # a rehearsal on an instant venue would time nothing a desk meets


def drill(
    scenario: Annotated[
        Path | None, typer.Option(help="Scenario TOML (default: built-in book).")
    ] = None,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", help="Simulated round trip (0: none).")
    ] = DRILL_LATENCY_MS,
    faults: Annotated[str | None, typer.Option(help="rejects,partial,disconnect,late-fill")] = None,
    by: ByOpt = None,
    venue: Annotated[
        str | None,
        typer.Option("--venue", help="A paper/testnet venue: kill a sentinel order there."),
    ] = None,
) -> None:
    """Rehearse the whole rollback on a seeded paper venue, in a sandbox; write the report.
    With --venue: the venue drill on that paper/testnet venue (bot/cli/drill.py)."""
    if venue is not None:
        raise typer.Exit(venue_drill(venue, by))

    def go() -> int:
        from rollbot.commands.rollback.drill import parse_faults, run_drill

        base = settings()
        chosen = parse_faults(faults)
        main_db = Rollbot.open(base)
        try:
            who = actor(main_db, by)
        finally:
            main_db.db.close()
        realistic = " (a venue's typical round trip)" if latency_ms == DRILL_LATENCY_MS else ""
        out.print(
            f"[bold]Drill[/] — paper venue, latency {latency_ms:g} ms{realistic}, faults: "
            f"{', '.join(sorted(chosen)) or 'none'}"
        )
        result = asyncio.run(
            run_drill(
                base,
                who,
                scenario=scenario,
                latency_ms=latency_ms,
                faults=chosen,
                on_start=on_start,
                on_step=print_step,
            )
        )
        code = print_outcome(result.outcome)
        total = sum(s.duration_seconds for s in result.outcome.steps)
        out.print(f"Total {total:.2f} s against the seed's 180 s.")
        for fmt, path in result.reports.items():
            out.print(f"Report ({fmt}): {path}")
        out.print(
            f"Again later: rollbot report {result.outcome.incident.id} [--format md|json|png]"
        )
        return code

    raise typer.Exit(guarded(go))


def venue_drill(name: str, by: str | None) -> int:
    """`drill --venue NAME`: a sentinel order placed, killed and read back on that venue."""
    from rollbot.commands.rollback.venue_drill import refuse_unless_paper, run_venue_drill

    cfg = guarded(settings)
    rb = Rollbot.open(cfg)
    try:
        who = guarded(lambda: actor(rb, by))
        marked = guarded(lambda: refuse_unless_paper(rb, name))  # before any venue loads
    finally:
        rb.db.close()
    out.print(f"[bold]Venue drill[/] on {escape(name)} ({escape(marked)})")
    result = run_async(lambda app: run_venue_drill(app, who, name), cfg)
    out.print(
        f"Sentinel: BUY {result.quantity:f} {escape(result.symbol)} limit {result.price}"
        f" (order {escape(result.order_id)})"
    )
    out.print(f"Kill {result.incident_id} scoped to venue:{escape(name)}: {result.kill_status}")
    if result.cancelled:
        out.print(
            f"[green]Cancelled at the venue[/], confirmed by read-back"
            f" {result.kill_to_cancel_s:.3f} s after the kill: {escape(result.detail)}"
        )
    else:
        out.print(f"[bold red]NOT confirmed cancelled:[/] {escape(result.detail)}")
    out.print(
        "Drill hold cleared." if result.hold_cleared else "[bold red]Drill hold NOT cleared.[/]"
    )
    return 0 if result.cancelled and result.hold_cleared else 1


@paper_app.command("seed")
def paper_seed(
    scenario: Annotated[
        Path | None, typer.Option(help="Scenario TOML (default: built-in book).")
    ] = None,
    venue: Annotated[str, typer.Option("--venue", "-v")] = "paper",
) -> None:
    """Reset a paper venue's book from a scenario."""

    def go() -> None:
        from rollbot.brokers.paper.scenario import load_scenario
        from rollbot.brokers.paper.venue import PaperVenue

        rb = Rollbot.open(settings())
        book = load_scenario(scenario)
        target = rb.venue(venue)
        if not isinstance(target, PaperVenue):
            raise BadInput(f"venue {venue!r} is not a paper venue")
        target.seed(book)
        out.print(f"{venue}: seeded {len(book.positions)} positions and {len(book.orders)} orders")

    guarded(go)
