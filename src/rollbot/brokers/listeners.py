"""Venue events to their listeners: the one delivery the IBKR venue and the crypto link share."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from rollbot.brokers.base import VenueEvent, VenueListener


def deliver(event: VenueEvent, listeners: Iterable[VenueListener], log: logging.Logger) -> None:
    """Every listener hears the event, on a copy of the list (a listener may subscribe another)."""
    for listener in list(listeners):
        try:
            listener(event)
        except Exception:  # a broken listener must not break order handling or the kill path
            log.exception("%s: event listener failed on %s", event.venue, event.kind)
