"""The suite's figures: each test records what it measured (before it asserts), and
conftest.py prints them all at the end of the run, so a failing run still shows its numbers."""

from __future__ import annotations

FIGURES: dict[str, list[str]] = {}


def record(section: str, line: str) -> None:
    FIGURES.setdefault(section, []).append(line)
