"""A kill never waits on the database: when another process holds SQLite's write lock past
HOLD_FIRST_WAIT_MS, Engine.open_held sends the cancels at once and this module keeps
retrying the hold write in a thread of its own until it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.held_incident import HOLD_WAIT_MS
from rollbot.errors import DatabaseBusy
from rollbot.storage.incidents import Incident

# a kill waits this long for another process's write transaction, then cancels without it
HOLD_FIRST_WAIT_MS = HOLD_WAIT_MS

Store = Callable[[], tuple[Incident, bool]]


def store_in_thread(
    app: Rollbot, store: Store, stop: threading.Event
) -> asyncio.Future[tuple[Incident, bool]]:
    """Its own thread, not the loop's shared executor: nothing else queued there (a slow
    call, a leaked one) may delay the hold."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[Incident, bool]] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        result, error = None, None
        try:
            result = _store_until_stored(app, store, stop)
        except BaseException as exc:  # handed to the awaiting kill, which reports it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: the process is ending
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="rollbot-hold-write", daemon=True).start()
    return future


def _store_until_stored(app: Rollbot, store: Store, stop: threading.Event) -> tuple[Incident, bool]:
    """In a thread: the hold write, again and again while another process holds the lock.
    Each try holds the shared connection 100 ms at most, so the event loop's own reads
    (and the cancels beside them) are never queued behind a long busy wait. Any other
    storage error is final."""
    while True:
        try:
            with app.db.patience(HOLD_FIRST_WAIT_MS):
                return store()
        except DatabaseBusy:
            if stop.wait(0.01):
                raise
