"""`rollbot serve`: the Slack bot (Socket Mode by default, HTTP with --http)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from rollbot.bot.cli.shared import LogJson, LogLevel, guarded, settings


def serve(
    http: Annotated[bool, typer.Option("--http", help="Serve Slack's requests over HTTP.")] = False,
    port: Annotated[
        int | None, typer.Option(help="HTTP port (also /healthz and /metrics).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    guard_port: Annotated[
        int | None, typer.Option(help="Also serve POST /guard on this HTTP port.")
    ] = None,
    guard_socket: Annotated[
        Path | None, typer.Option(help="Also serve POST /guard on this Unix socket.")
    ] = None,
    log_level: LogLevel = None,
    log_json: LogJson = False,
) -> None:
    """Run the Slack bot, the outbox courier and the clock in one asyncio loop (and the guard
    service with --guard-port/--guard-socket; ROLLBOT_GUARD_TOKEN in the environment)."""
    from rollbot.bot import logs
    from rollbot.bot.slack.server import serve as run

    guarded(lambda: logs.configure(log_level, log_json))
    if http and port is None:
        port = 3000
    guard = {"guard_port": guard_port, "guard_socket": guard_socket}
    guarded(lambda: asyncio.run(run(settings(), http=http, port=port, host=host, **guard)))
