"""The rollback: from a kill to trading resumed (the IBKR seed's steps, Live -> Shadow).

engine.py (HALT -> DISCONNECT -> ASSESS -> FLATTEN -> VERIFY on every venue at once; /kill is
steps 1-2: its run is in run_*.py, continuation.py and hold_first.py, its five steps in steps/,
one module each), held_incident.py (the incident and hold a kill stores first), hooks.py (the
strategy-stop hook), flatten.py and positions.py (closing each venue to zero exactly once; the
books read back; the closes planned in close_plan.py, placed by close_orders.py and recorded by
close_ledger.py), report.py and checklist.py (the report and its post-rollback checklist),
drill.py, drill_schedule.py and venue_drill.py (rehearsals: in a sandbox, on schedule, against a
venue), rca.py, resume.py and rearm.py (the root cause, the resume conditions, and the one rule
for re-arming live trading with the resume that obeys it), and timers.py, the dispatcher of
durable deadlines: it lives here, the lowest room that sees every kind (paging's, the
checklist's, the drill schedule's).

May import: paging, desk, killswitch.
"""
