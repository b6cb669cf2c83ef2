"""Arrows point one way: bot -> commands -> brokers, storage (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rollbot"
FACES = ("slack_bolt", "slack_sdk", "typer", "rich", "rollbot.bot")


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (SRC / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(SRC))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{file}: {name}"
        for file, names in imports_of(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_commands_never_import_a_face() -> None:
    assert offenders("commands", FACES) == []


def test_brokers_and_storage_never_import_commands_or_faces() -> None:
    inward = ("rollbot.commands", *FACES)
    assert offenders("brokers", inward) == []
    assert offenders("storage", inward) == []


def test_the_check_sees_real_imports() -> None:
    # the faces themselves do import slack_bolt and typer: the walker is not blind
    assert offenders("bot", ("slack_bolt",)) and offenders("bot", ("typer",))
