"""Interactive Brokers as a rollbot venue: TWS or IB Gateway through ib_async.

Every request is bounded by cfg.timeout_s and every failure leaves as a VenueError subclass: a
kill switch must be able to tell "refused" (OrderRejected, nothing placed) from "unknown"
(VenueUnavailable, check again after reconnecting).

The venue is its layers, each in its own module (wire.py says why layers, not collaborators):
wire (requests, pacing, events) < session (connecting, reconnecting) < trades (IB's trades as
orders, order news) < contracts (routing, price ladders) < reads; and on the reads, side by side,
the closes, the cancels and the what-if permission check.
"""

from __future__ import annotations

from rollbot.brokers.ibkr.cancels import IbCancels
from rollbot.brokers.ibkr.closes import IbCloses
from rollbot.brokers.ibkr.permission import IbPermission


class IbkrVenue(IbCloses, IbCancels, IbPermission):
    """The Venue protocol over one API client connection to TWS / IB Gateway (session.py)."""
