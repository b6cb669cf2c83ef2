"""The desk's frame: what every room is handed, and the little they share.

context.py (Rollbot: settings, storage, clock, venues, the kill switch and the outbox, handed to
every command), liveness.py (which process claimed work, and whether it still runs), outbox.py
(what people are to see, stored before anything is announced), venue_timeouts.py (every venue
call bounded; a venue that cannot be built stands in as a BrokenVenue), mrkdwn.py and money.py
(text and amounts as a person reads them), client_ids.py (IBKR client ids across hosts) and
audit_export.py (the regulator's trail). Kept small on purpose: a module lives here only when
the context needs it, several rooms use it, or it belongs to no desk job (client ids, the audit
export); anything one room alone uses lives in that room.

May import: killswitch (the context is built from the gates, the guard and the kill switch).
"""
