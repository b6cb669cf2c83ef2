"""The terminal face (break-glass): typer commands that call commands/ and print with rich.

Exit codes: 0 done; 1 refused or only partly done (what remains is printed); 2 bad input
(nothing changed); 3 request filed, waiting for a second person to approve it (nothing ran yet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rollbot.bot.cli import (
    approvals,
    audit,
    clock,
    db,
    drill,
    gates,
    guard,
    incidents,
    kill,
    positions,
    preflight,
    risk,
    rollback,
    serve,
)
from rollbot.bot.cli.shared import state

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="rollbot.toml (default: $ROLLBOT_CONFIG or ./rollbot.toml)"
    ),
]


@app.callback()
def _main(config: ConfigOpt = None) -> None:
    """rollbot: stop live trading and roll back to shadow/paper mode."""
    state.config = config


# `rollbot --help` lists the commands, then the groups, each in the order registered here
for command in (
    positions.positions,
    positions.cancel_all,
    positions.flatten,
    rollback.rollback,
    rollback.recover,
    drill.drill,
    incidents.report,
    incidents.incidents,
    serve.serve,
    preflight.preflight,
    clock.clock,
    approvals.approve,
    approvals.deny,
    approvals.approvals,
    approvals.rca,
    approvals.resume,  # also `rollbot request resume`
):
    app.command()(command)  # named after the function: cancel_all is `cancel-all`

for name, group in {
    "kill": kill.kill_app,
    "gates": gates.gates_app,
    "shadow": gates.shadow_app,
    "paper": drill.paper_app,
    "guard": guard.guard_app,
    "request": approvals.request_app,
    "risk": risk.risk_app,
    "audit": audit.audit_app,
    "db": db.db_app,
}.items():
    app.add_typer(group, name=name)


def main() -> None:
    app()
