"""Requests whose Slack signature does not verify: a forgery, or a replay of an old one. Each is
answered 401 by bolt; here it is recorded. A flood must not fill the disk or keep the database's
write lock from a real /kill, so per window the first AUDIT_BURST are recorded one by one and the
rest only counted (in /metrics at once, in one summary event when the window is over), and the
ops channel is told once that a flood is under way."""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rollbot.clock import iso
from rollbot.storage.events import Actor

if TYPE_CHECKING:
    from rollbot.bot.slack.app import SlackBot

log = logging.getLogger(__name__)

STALE_AFTER_S = 300  # Slack's own rule: a request signed more than 5 minutes ago is a replay
AUDIT_BURST = 20  # recorded one by one per window
AUDIT_WINDOW = timedelta(minutes=1)
UNVERIFIED = Actor(id="unverified", source="slack")


def classify(headers: dict[str, Any], body: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """(code, reason, data) of one unverified request. Who it claims to come from is kept as a
    claim, never as the actor."""
    stamp = (headers.get("x-slack-request-timestamp") or [""])[0]
    try:
        age = abs(time.time() - int(stamp))
    except ValueError:
        age = None
    stale = age is not None and age > STALE_AFTER_S
    payload = body.get("payload") if isinstance(body.get("payload"), dict) else body
    user = payload.get("user_id") or (payload.get("user") or {}).get("id") or ""
    what = payload.get("command") or payload.get("type") or ""
    reason = (
        f"request signed {age:.0f} s ago: a replay"
        if stale and age is not None
        else "the request's signature does not match the signing secret"
    )
    code = "STALE_REQUEST" if stale else "BAD_SIGNATURE"
    return code, reason, {"code": code, "request": str(what)[:50], "claimed_user": str(user)[:50]}


class UnverifiedRequests:
    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.window_start: datetime | None = None
        self.recorded = 0
        self.counted: Counter[str] = Counter()

    def __call__(self, headers: dict[str, Any], body: dict[str, Any]) -> None:
        code, reason, data = classify(headers, body)
        self.bot.metrics.unverified.labels(code=code).inc()
        try:
            now = self.bot.rb.clock.now()
            if self.window_start is None or now - self.window_start >= AUDIT_WINDOW:
                self.flush(now)
                self.window_start, self.recorded = now, 0
            if self.recorded < AUDIT_BURST:
                self.recorded += 1
                self.bot.rb.events.append("SLACK_REFUSED", UNVERIFIED, reason=reason, data=data)
                return
            if not self.counted:
                self.bot.rb.outbox.put(
                    "channel",
                    text=f"⚠️ {AUDIT_BURST} Slack requests with a bad or stale signature within"
                    f" {AUDIT_WINDOW.seconds // 60} minute: forged or replayed. All are refused;"
                    " more are counted in /metrics (rollbot_unverified_requests), not recorded"
                    " one by one.",
                )
                self.bot.courier.kick()
            self.counted[code] += 1
        except Exception:  # the 401 stands even if it cannot be recorded
            log.exception("could not record a refused request")

    def flush(self, now: datetime) -> None:
        """One event for the requests only counted in the window that ended."""
        if not self.counted or self.window_start is None:
            return
        total = sum(self.counted.values())
        self.bot.rb.events.append(
            "SLACK_REFUSED",
            UNVERIFIED,
            reason=f"{total} more unverified requests from {iso(self.window_start)} to"
            f" {iso(now)}, counted, not recorded one by one",
            data={"code": "COUNTED", "counts": dict(self.counted), "total": total},
        )
        self.counted.clear()
