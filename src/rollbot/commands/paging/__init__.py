"""Paging: who is told, and who is chased until they answer.

escalation.py (the on-call chain: tiers, waits, acknowledgement, a critical loss paging every
tier), webhooks.py (pages sent as signed HTTP posts, each a durable deadline) and
ack_reminders.py (reminders to whoever acknowledged an incident still open). The rollback pages
through here; the deadlines themselves fire through rollback/timers.py, the one room that sees
every kind of deadline.

May import: desk.
"""
