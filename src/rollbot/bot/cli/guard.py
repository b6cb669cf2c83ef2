"""`rollbot guard`: would an order pass the kill switch (check), give a done order's
reservation back (release), and the guard service on its own (serve)."""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from rollbot.bot.cli.shared import guarded, out, require, settings
from rollbot.commands.desk.context import Rollbot
from rollbot.errors import BadInput, StateUnavailable

guard_app = typer.Typer(no_args_is_help=True, help="The pre-trade guard.")


def _decimal(text: str, what: str, *, positive: bool = False) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadInput(f"{what} must be a number, got {text!r}") from None
    if not value.is_finite():
        raise BadInput(f"{what} must be a finite number, got {text!r}")
    if positive and value <= 0:
        raise BadInput(f"{what} must be positive, got {text!r}")
    return value


@guard_app.command("check")
def guard_check(
    venue: Annotated[str, typer.Option("--venue", "-v")],
    symbol: Annotated[str, typer.Option("--symbol", "-s")],
    side: Annotated[str, typer.Option("--side")],
    quantity: Annotated[str, typer.Option("--quantity", "-q")],
    position: Annotated[
        str, typer.Option("--position", help="Ignored under REDUCING: the venue's read counts.")
    ] = "0",
    account: Annotated[str | None, typer.Option("--account")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy")] = None,
    order_id: Annotated[
        str | None, typer.Option("--order-id", help="Releases its reservation when done.")
    ] = None,
) -> None:
    """Would this order pass the kill switch? Exit 0 allowed, 1 refused, 2 bad input."""

    def go() -> int:
        cfg = settings()
        names = [v.name for v in cfg.venues]
        if venue not in names:
            raise BadInput(f"unknown venue {venue!r} (configured: {', '.join(names)})")
        if side.upper() not in ("BUY", "SELL"):
            raise BadInput(f"--side must be BUY or SELL, got {side!r}")
        qty = _decimal(quantity, "--quantity", positive=True)
        pos = _decimal(position, "--position")
        require(symbol, "--symbol")
        try:
            rb = Rollbot.open(cfg, create=False)
        except StateUnavailable as exc:
            out.print(f"REFUSED STATE_UNAVAILABLE (state HALTED): {escape(str(exc))}")
            return 1
        d = rb.killswitch.check_order(
            venue,
            symbol,
            side,
            qty,
            position=pos,
            account=account,
            strategy=strategy,
            order_id=order_id,
        )
        out.print(
            f"{'ALLOWED' if d.allowed else 'REFUSED'} {d.code} (state {d.state.value})"
            + (f": {escape(d.reason)}" if d.reason else "")
        )
        return 0 if d.allowed else 1

    raise typer.Exit(guarded(go))


@guard_app.command("release")
def guard_release(
    order_id: Annotated[str, typer.Option("--order-id", help="The id sent with the check.")],
    venue: Annotated[str | None, typer.Option("--venue", "-v")] = None,
    reason: Annotated[str, typer.Option("--reason", "-r")] = "done (filled or cancelled)",
) -> None:
    """The order is done: give what the guard reserved for it back. Exit 0 released, 1 none."""

    def go() -> int:
        rb = Rollbot.open(settings(), create=False)
        try:
            released = rb.killswitch.guard.release(order_id, reason, venue)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        out.print(f"released {released} reservation(s) of order {escape(order_id)}")
        return 0 if released else 1

    raise typer.Exit(guarded(go))


@guard_app.command("serve")
def guard_serve(
    port: Annotated[int | None, typer.Option(help="HTTP port for POST /guard.")] = None,
    socket: Annotated[Path | None, typer.Option(help="Unix socket path for POST /guard.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """The guard service alone: POST /guard, POST /guard/release, GET /guard/events (SSE).
    Needs ROLLBOT_GUARD_TOKEN in the environment."""
    from rollbot.bot.guard_service import run_alone

    guarded(lambda: asyncio.run(run_alone(settings(), host=host, port=port, socket=socket)))
