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


# -- the CLI package (bot/cli/): groups on one app, arrows one way -----------------------------
CLI = "rollbot.bot.cli"
CLI_APP = f"{CLI}.app"
CLI_HELPERS = {CLI, f"{CLI}.shared", f"{CLI}.glass"}  # what every group may import
CLI_ENTRY_POINTS = {"rollbot.bot.breakglass", f"{CLI}.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rollbot_imports(path: Path, known: set[str]) -> set[str]:
    """The rollbot modules a file imports anywhere in it, inside functions too; `from P import m`
    counts the module P.m when there is one, and a relative import counts as what it names."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names & known


def src_import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: rollbot_imports(path, set(paths)) - {name} for name, path in paths.items()}


def cli_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the modules of bot/cli/, as the path around it, or None."""
    cli = {m for m in graph if m == CLI or m.startswith(CLI + ".")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for target in sorted(graph[module] & cli):
            if cycle := visit(target, [*path, module]):
                return cycle
        done.add(module)
        return None

    return next((c for m in sorted(cli) if (c := visit(m, []))), None)


def test_cli_package_modules_form_no_import_cycle() -> None:
    graph = src_import_graph()
    assert cli_cycle(graph) is None
    # the package's __init__ runs before any module in it, the console script's hold included
    assert graph[CLI] == set()
    # the check is not blind: a group importing the app would close a circle through it
    assert cli_cycle(graph | {f"{CLI}.kill": graph[f"{CLI}.kill"] | {CLI_APP}}) is not None


def test_cli_package_only_the_app_imports_the_command_groups() -> None:
    graph = src_import_graph()
    groups = {
        m
        for m in graph
        if m.startswith(CLI + ".") and m not in CLI_HELPERS | CLI_ENTRY_POINTS | {CLI_APP}
    }
    assert {f"{CLI}.{g}" for g in ("kill", "gates", "approvals", "audit", "serve")} <= groups
    importers = {m: {g for g in groups if g in imports} for m, imports in graph.items()}
    assert {m for m, found in importers.items() if found} == {CLI_APP}
    assert importers[CLI_APP] == groups  # every group is registered on the one app
    assert {m for m, imports in graph.items() if CLI_APP in imports} <= CLI_ENTRY_POINTS
