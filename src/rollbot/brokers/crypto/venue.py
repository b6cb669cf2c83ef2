"""CryptoVenue: rollbot's Venue protocol over ccxt.async_support, for any ccxt exchange id.

Derivatives (market = "derivatives") are the positions ccxt's fetch_positions returns for
linear contracts settled in the configured quote; closes are reduce-only and capped at the
position read from the venue just before sending, so a close can shrink a position but
never flip it. Spot (market = "spot") treats every non-quote balance that trades against
the quote as a position worth its ticker price; holdings worth less than `dust` are left.
One venue may read both (market = ["spot", "derivatives"] or "all").

Every resting-order list the exchange keeps is read (plain, trigger, and the algo lists of
profiles.py), and `coverage()` names what was read and what could not be: a verify never
says "flat" about a list or a market it did not read.

Every ccxt request goes through `Link.call` (link.py): latency, pacing retries, error
mapping and link-state events.

The venue is its layers, each in its own module (session.py says why layers, not
collaborators): session < positions < orders; and on the orders, side by side, the cancels and
the closes.
"""

from __future__ import annotations

from rollbot.brokers.crypto.cancels import CryptoCancels
from rollbot.brokers.crypto.closes import CryptoCloses


class CryptoVenue(CryptoCloses, CryptoCancels):
    """The Venue protocol over one ccxt exchange (session.py)."""
