"""`rollbot positions`, `cancel-all` and `flatten`: what each venue holds, every open order
cancelled, and the flatten plan (sent only once a second person approves it)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

from rollbot.bot.cli.glass import break_glass
from rollbot.bot.cli.shared import (
    ByOpt,
    Confirm,
    JsonOpt,
    VenueOpt,
    actor,
    err,
    folding_table,
    out,
    request_at_terminal,
    run_async,
)
from rollbot.commands.desk.context import Rollbot
from rollbot.errors import BadInput


def positions(venue: VenueOpt = None, as_json: JsonOpt = False) -> None:
    """Positions, open orders, exposure and PnL per venue."""

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.rollback.positions import coverage_line, read_books

        books = await read_books(rb.select(venue))
        if as_json:
            data = [
                b.model_dump(mode="json")
                | {"exposure": str(b.exposure), "unrealized_pnl": str(b.unrealized_pnl)}
                for b in books
            ]
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            for b in books:
                if b.error:
                    out.print(f"[red]{b.venue}: unreachable — {b.error}[/]")
                    continue
                nav = f"NAV {b.account.nav:,.2f} {b.account.currency}" if b.account else ""
                table = folding_table(
                    title=f"{b.venue} — {nav} — exposure {b.exposure:,.2f} — "
                    f"unrealized {b.unrealized_pnl:,.2f}"
                )
                for col in ("Symbol", "Quantity", "Avg", "Mark", "Unrealized"):
                    table.add_column(
                        col, justify="right" if col != "Symbol" else "left", overflow="fold"
                    )
                for p in b.positions:
                    table.add_row(
                        p.symbol,
                        f"{p.quantity}",
                        f"{p.avg_price}",
                        f"{p.market_price}",
                        f"{p.unrealized_pnl:,.2f}",
                    )
                out.print(table if b.positions else f"{b.venue}: no positions — {nav}")
                out.print(f"{b.venue}: {len(b.orders)} open orders")
                if coverage_line(b):
                    out.print(f"{b.venue}: {coverage_line(b)}", markup=False)
                for o in b.orders:
                    px = o.limit_price or o.stop_price or ""
                    out.print(
                        f"    {o.order_id} {o.side.value} {o.remaining} {o.symbol}"
                        f" {o.type.value} {px}"
                    )
        return 1 if any(b.error or b.not_checked for b in books) else 0

    raise typer.Exit(run_async(go))


def cancel_all(venue: VenueOpt = None, by: ByOpt = None) -> None:
    """Cancel every open order (stops included) and say what remains."""

    async def go(rb: Rollbot) -> int:
        who = actor(rb, by)
        targets = rb.select(venue)
        break_glass(rb, who, "cancel-all")
        code = 0
        results = await asyncio.gather(
            *(v.cancel_all() for v in targets.values()), return_exceptions=True
        )
        for name, res in zip(targets, results, strict=True):
            if isinstance(res, BaseException):
                out.print(f"[red]{name}: cancel failed — {res}[/]")
                code = 1
                continue
            rb.events.append(
                "ORDERS_CANCELLED",
                who,
                scope=f"venue:{name}",
                data={
                    "requested": res.requested,
                    "cancelled": res.cancelled,
                    "remaining": [o.order_id for o in res.remaining],
                },
            )
            out.print(
                f"{name}: {len(res.cancelled)} of {res.requested} cancelled; "
                f"{len(res.remaining)} remain"
            )
            for o in res.remaining:
                out.print(
                    f"    still open: {o.order_id} {o.side.value} {o.remaining} {o.symbol}"
                    f" {o.type.value}"
                )
                code = 1
        return code

    raise typer.Exit(run_async(go))


def flatten(
    venue: VenueOpt = None,
    symbol: Annotated[
        list[str] | None, typer.Option("--symbol", "-s", help="Only these symbols.")
    ] = None,
    confirm: Confirm = False,
    reason: Annotated[str, typer.Option("--reason", "-r")] = "flatten from the terminal",
    by: ByOpt = None,
) -> None:
    """Show the flatten plan; with --confirm, ask a second person to approve it."""

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.rollback.flatten import plan_venue
        from rollbot.commands.rollback.positions import read_books

        who = actor(rb, by)
        books = await read_books(rb.select(venue))
        wanted = set(symbol or [])
        held = {p.symbol for b in books for p in b.positions}
        missing = sorted(wanted - held)
        if missing:
            raise BadInput(
                f"unknown symbol(s) {', '.join(missing)}: no position held "
                f"(held: {', '.join(sorted(held)) or 'none'})"
            )
        plans = [plan_venue(b, rb.settings.flatten, wanted or None) for b in books]
        out.print("[bold]Flatten plan[/] (every order that would be sent):")
        for p in plans:
            if p.error:
                out.print(f"  [red]{p.venue}: unreachable — {p.error}[/]")
            for o in p.orders:
                out.print(f"  {o.describe()}")
            if not p.orders and not p.error:
                out.print(f"  {p.venue}: nothing to close")
        if not confirm:
            err.print("nothing sent: add --confirm to ask a second person to approve these orders")
            return 2
        params = {"venue": venue, "symbols": sorted(wanted) or None}
        return await request_at_terminal(rb, who, "flatten", params, reason)

    raise typer.Exit(run_async(go))
