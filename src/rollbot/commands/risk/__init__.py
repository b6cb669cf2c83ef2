"""Risk: when the desk should stop, and whether it still can.

metrics.py and checks.py (figures over NAV samples and venue events, against the configured
limits), monitors.py (the automatic kill switches: sample, check, then alert, kill or roll
back; its tick's parts in venue_sampling.py, triggers.py, fail_closed.py and monitor_report.py),
alerts.py (a breach put to a person), dead_mans_switch.py (the exchanges' countdown
cancel-all) and preflight.py (the armed status: can the kill path work right now).

May import: rollback, desk.
"""
