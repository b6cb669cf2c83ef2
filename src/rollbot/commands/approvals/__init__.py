"""Approvals: the two-person rule, the top room.

two_person.py (Approvals, the door the faces call: a request filed, voted on, run exactly
once), its jobs filing.py (checked, planned, stored, posted), voting.py (the decision, in one
transaction), executing.py (the run, once, and its outcome after a crash) and ledger.py (the
table they share: read back, status moved, copies refreshed, expiry), plans.py (what an
approval binds to: each action's plan, hashed), records.py (requests, votes, their view, and one
person recognised on both faces) and recover.py (at start: finish the runs a stopped process
cut off, then give the approvals that ran them their outcome; it does both rooms' work, so it
lives in the upper one and the rollback never imports approvals).

May import: rollback, risk, desk, killswitch.
"""
