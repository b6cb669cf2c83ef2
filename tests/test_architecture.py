"""Arrows point one way: bot -> commands -> brokers, storage (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import re
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


# -- the rooms of commands/ (commands/__init__.py) -----------------------------------------------

COMMANDS = SRC / "commands"
ROOMS = sorted(p.parent.name for p in COMMANDS.glob("*/__init__.py"))


def _is_type_checking(test: ast.expr) -> bool:
    # typing's flag or a module's own `TYPE_CHECKING = False` (the kill's path avoids typing)
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_of(path: Path) -> str:
    parts = ["rollbot", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(p): p for p in SRC.rglob("*.py")}


def imported_modules(path: Path, *, run_time_only: bool = False) -> set[str]:
    """Every rollbot module this file imports: at module level and inside functions (a lazy
    import is still an arrow); `from a import b` names a.b when b is a module. With
    run_time_only, what sits under `if TYPE_CHECKING:` (never run) is left out."""
    me = module_of(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if run_time_only and isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in MODULES else base)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    out = set()
    for name in found:
        while name and name not in MODULES:  # an attribute of a module: the module
            name = name.rpartition(".")[0]
        if name.startswith("rollbot") and name != me:
            out.add(name)
    return out


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "commands" else None


def declared_arrows(docstring: str) -> set[str]:
    match = re.search(r"May import: ([^.]*)\.", docstring)
    assert match, "a room's docstring says `May import: ...` (rooms, or `no other room`)"
    return {w for w in re.findall(r"\w+", match[1]) if w in ROOMS}


def test_every_command_module_lives_in_a_room() -> None:
    loose = sorted(p.name for p in COMMANDS.glob("*.py") if p.name != "__init__.py")
    assert loose == []
    assert ROOMS == ["approvals", "desk", "killswitch", "paging", "risk", "rollback"]


def test_arrows_between_rooms_are_exactly_those_each_room_declares() -> None:
    actual: dict[str, set[str]] = {room: set() for room in ROOMS}
    for module, path in MODULES.items():
        here = room_of(module)
        if here is None:
            continue
        for target in imported_modules(path):
            there = room_of(target)
            if there is not None and there != here:
                actual[here].add(there)
    declared = {
        room: declared_arrows(
            ast.get_docstring(ast.parse((COMMANDS / room / "__init__.py").read_text())) or ""
        )
        for room in ROOMS
    }
    assert actual == declared


def test_the_commands_docstring_draws_the_same_arrows_as_the_rooms() -> None:
    doc = ast.get_docstring(ast.parse((COMMANDS / "__init__.py").read_text("utf-8"))) or ""
    drawn = {}
    for room, arrows in re.findall(r"^\s+(\w+)\s+->\s+(.+)$", doc, re.M):
        drawn[room] = {w for w in re.findall(r"\w+", arrows) if w in ROOMS}
    rooms = {
        room: declared_arrows(
            ast.get_docstring(ast.parse((COMMANDS / room / "__init__.py").read_text())) or ""
        )
        for room in ROOMS
    }
    assert drawn == rooms


def test_the_room_packages_import_nothing() -> None:
    # a room's __init__ is its docstring: importing one module of a room (the kill's fast hold)
    # loads nothing else, and no old path lives on as an alias
    for init in [COMMANDS / "__init__.py", *(COMMANDS / r / "__init__.py" for r in ROOMS)]:
        body = ast.parse(init.read_text("utf-8")).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), init


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycle_anywhere_in_src() -> None:
    """Module to module, imports inside functions included; only imports under
    `if TYPE_CHECKING:`, which never run, are left out."""
    graph = {
        m: imported_modules(p, run_time_only=True) & MODULES.keys() for m, p in MODULES.items()
    }
    assert cycles(graph) == []


def test_the_cycle_check_sees_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# -- the CLI package (bot/cli/): groups on one app, arrows one way -----------------------------
CLI = "rollbot.bot.cli"
CLI_APP = f"{CLI}.app"
CLI_HELPERS = {CLI, f"{CLI}.shared", f"{CLI}.glass"}  # what every group may import
CLI_ENTRY_POINTS = {"rollbot.bot.breakglass", f"{CLI}.__main__"}


def src_import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(path) for name, path in MODULES.items()}


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
