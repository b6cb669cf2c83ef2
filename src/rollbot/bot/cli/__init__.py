"""The terminal face (break-glass) as a package of command groups on one typer app.

- shared.py: what every group uses (consoles, settings, `guarded`, `actor`, the printing of
  steps, outcomes and approval requests, the kill once its hold is stored);
- glass.py: the BREAK_GLASS event, standard library only;
- one module a command group: kill, positions, rollback, gates, guard, drill, incidents,
  approvals, audit, db, risk, preflight, clock, serve;
- app.py: builds the app, registers every group on it, `main`; __main__.py runs it.

Arrows point one way: the groups import shared.py and glass.py, app.py imports the groups, and
only the entry points (bot/breakglass.py, __main__.py) import app.py. This file imports
nothing: importing any module of the package runs it, the console script's hold included.
"""
