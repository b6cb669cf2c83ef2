"""Which invocations the console script's fast kill takes on itself (bot/breakglass.py): only
a plain `kill trigger` with a reason; everything else goes to the full CLI, which explains."""

from __future__ import annotations

import pytest

from rollbot.bot.breakglass import kill_args


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["kill", "trigger", "--reason", "x"], {"reason": "x"}),
        (
            ["kill", "trigger", "-r", "x", "--scope", "venue:paper"],
            {"reason": "x", "scope": "venue:paper"},
        ),
        (
            ["--config", "a.toml", "kill", "trigger", "--reason=x y"],
            {"config": "a.toml", "reason": "x y"},
        ),
        (["kill", "trigger", "--reason", "x", "--by", "U0OTHER"], None),  # who acts: the full CLI
        (["kill", "trigger", "--reason", " "], None),
        (["kill", "trigger", "--help"], None),
        (["kill", "trigger", "--reason", "x", "--reason", "y"], None),
        (["kill", "trigger", "--reason"], None),
        (["kill", "status"], None),
        (["positions"], None),
        ([], None),
    ],
)
def test_only_a_plain_kill_trigger_takes_the_fast_path(
    argv: list[str], expected: dict[str, str] | None
) -> None:
    assert kill_args(argv) == expected
