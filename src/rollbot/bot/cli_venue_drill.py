"""`rollbot drill --venue NAME`: the venue drill (commands/rollback/venue_drill.py) at the terminal.
Exit 0 when the sentinel was cancelled at the venue and the drill's hold cleared, 1 when not,
2 when the venue is not marked paper/testnet (nothing placed)."""

from __future__ import annotations

from rich.markup import escape

from rollbot.bot.cli import actor, guarded, out, run_async, settings
from rollbot.commands.desk.context import Rollbot


def venue_drill(name: str, by: str | None) -> int:
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
