"""Worker processes for the concurrent-writers test: the Slack face (`bot`) and the terminal
(`cli`) writing to one database at once, while a real `rollbot clock` fires deadlines.

    python -m reliability.writers bot|cli CONFIG COUNT   (PYTHONPATH=tests)

Prints one JSON line: {"done": n, "errors": [...]} — an error is any answer that is not the
expected one (a "database is locked" among them)."""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from pathlib import Path

from reliability.support import RISK, SlackDriver
from rollbot.bot.slack.ids import Action, Command
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.config import load_settings
from rollbot.storage.events import Actor


async def bot(config: Path, count: int) -> dict[str, object]:
    """/kill on a strategy of its own, an approval request to clear that hold, a risk officer's
    Approve click that clears it: holds, incidents, escalations, approvals, votes, events."""
    rb = Rollbot.open(load_settings(config))
    slack = SlackDriver(rb)
    errors: list[str] = []
    done = 0
    for i in range(count):
        scope = f"strategy:bot{i}"
        seen = await slack.command(Command.KILL, f"{scope} runaway {i}", "U0OP1")
        await slack.settle()
        if not any("HALTED" in t for t in seen.texts):
            errors.append(f"kill {i}: {seen.texts}")
            continue
        request = await Approvals(rb).request(
            "clear_hold",
            {"scope": scope},
            Actor(id="U0OP1", source="slack"),
            f"bot {i} is fixed",
        )
        seen = await slack.action(Action.APPROVE, request.id, RISK)
        if not any("executed" in t for t in seen.texts):
            errors.append(f"clear {i}: {seen.texts}")
            continue
        done += 1
    await rb.aclose()
    return {"done": done, "errors": errors}


def cli(config: Path, count: int) -> dict[str, object]:
    """`rollbot kill trigger` and `rollbot request clear-hold` in one process, over and over."""
    from typer.testing import CliRunner

    from rollbot.bot.cli.app import app

    runner = CliRunner()
    errors: list[str] = []
    done = 0
    for i in range(count):
        scope = f"strategy:cli{i}"
        # the strategy-only kill is PARTIAL (1: no venue knows a strategy); the request is
        # filed and waits for a second person (3)
        for args, expected in (
            (["kill", "trigger", "--scope", scope, "--reason", f"cli {i}"], (0, 1)),
            (["request", "clear-hold", "--scope", scope, "--reason", f"cli {i} fixed"], (3,)),
        ):
            result = runner.invoke(app, ["--config", str(config), *args])
            if result.exception and not isinstance(result.exception, SystemExit):
                errors.append("".join(traceback.format_exception(result.exception))[-500:])
            elif result.exit_code not in expected:
                errors.append(f"{args[:2]} exit {result.exit_code}: {result.output[-300:]}")
        done += 1
    return {"done": done, "errors": errors}


def main() -> None:
    role, config, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    result = asyncio.run(bot(config, count)) if role == "bot" else cli(config, count)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
