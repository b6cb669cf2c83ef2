"""Outbound webhooks for contacts paged off Slack: a JSON POST, or the PagerDuty Events v2 shape.

A page is a durable deadline (kind "webhook", due at once), so it is sent by whichever clock
runs — even when it was queued by a process that then died — and claimed once. The POST itself
retries transport errors, 429 and 5xx with exponential backoff; any other answer is final.
The PagerDuty routing key is read from the environment variable the contact names, at send
time: it is never stored, logged or put in an event. So is the webhook URL itself: its
user:pass@, its path (often the token) and its query are secrets, so what is stored or shown
anywhere (timers, escalation snapshots, events, Slack) is `redact_url`'s scheme://host:port, and
the URL is looked up in rollbot.toml again when the page is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel

from rollbot.clock import Clock, iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.liveness import is_me
from rollbot.config import Settings
from rollbot.storage.db import loads
from rollbot.storage.events import Actor
from rollbot.storage.timers import Timer, Timers

TIMER_KIND = "webhook"
WebhookEvent = Literal["trigger", "acknowledge", "resolve"]


class Delivery(BaseModel):
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def redact_url(url: str) -> str:
    """The one form of a webhook URL that may be stored or shown: scheme, host and port; "/…"
    says a path, query or fragment was left out. Idempotent."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # a port that is not a number
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    if port is not None:
        host += f":{port}"
    hidden = parts.path.strip("/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host or '(no host)'}" + ("/…" if hidden else "")


def host_of(url: str) -> str:
    return urlsplit(redact_url(url)).netloc or "(no host)"


def configured_url(settings: Settings, contact_name: str, shown: str) -> str | None:
    """The secret URL behind a stored (redacted) one: the contact's webhook_url in rollbot.toml
    as it is now. A URL stored before redaction existed is returned as it is."""
    if redact_url(shown) != shown:
        return shown
    for c in settings.contacts:
        if c.webhook_url and c.name == contact_name and redact_url(c.webhook_url) == shown:
            return c.webhook_url
    return None


def page_target(settings: Settings, contact_name: str, shown: str) -> str:
    """What makes two pages one (the same receiver): the configured URL, else the stored one (a
    page whose contact left the config is still queued, and fails saying so)."""
    return configured_url(settings, contact_name, shown) or shown


def scrub(text: str | None, url: str) -> str | None:
    """An error message (a library's, a receiver's answer) without the URL's secrets."""
    if not text:
        return text
    parts = urlsplit(url)
    text = text.replace(url, redact_url(url))
    for secret in (parts.password, parts.path.strip("/"), parts.query, parts.username):
        if secret and len(secret) > 2:
            text = text.replace(secret, "…")
    return text


def queue(
    app: Rollbot,
    incident_id: str,
    contact: dict[str, Any],
    event: WebhookEvent,
    details: dict[str, Any],
) -> Timer:
    """Schedule one POST to `contact["webhook_url"]` (inside the caller's transaction); the
    timer holds the URL redacted."""
    cfg = app.settings.escalation
    return Timers(app.db, app.clock).schedule(
        TIMER_KIND,
        incident_id,
        app.clock.now(),
        {
            "contact": {"name": contact.get("name", ""), "role": contact.get("role", "")},
            "url": redact_url(contact["webhook_url"]),
            "format": contact.get("webhook_format", "json"),
            "key_env": contact.get("webhook_key_env", ""),
            "event": event,
            "details": details,
            "retries": cfg.webhook_retries,
            "backoff_s": cfg.webhook_backoff_s,
        },
    )


def pagerduty_body(
    routing_key: str, event: WebhookEvent, incident_id: str, details: dict[str, Any]
) -> dict[str, Any]:
    """PagerDuty Events API v2: one dedup key per incident, so repeats and the ack update it."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": event,
        "dedup_key": f"rollbot-{incident_id}",
    }
    if event == "trigger":
        body["payload"] = {
            "summary": str(details.get("summary") or f"rollbot incident {incident_id}")[:1024],
            "severity": "critical" if details.get("critical") else "error",
            "source": "rollbot",
            "component": details.get("scope") or "trading",
            "group": details.get("kind") or "incident",
            "class": "escalation",
            "custom_details": details,
        }
        body["client"] = "rollbot"
    return body


JSON_EVENTS = {
    "trigger": "escalation.page",
    "acknowledge": "escalation.acknowledged",
    "resolve": "incident.closed",
}


def json_body(event: WebhookEvent, incident_id: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": "rollbot",
        "event": JSON_EVENTS[event],
        "incident_id": incident_id,
        **details,
    }


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


async def post_json(
    url: str,
    body: dict[str, Any],
    *,
    retries: int,
    backoff_s: float,
    clock: Clock,
    timeout_s: float = 10,
    headers: dict[str, str] | None = None,
) -> Delivery:
    """POST `body`; retry transport errors, 429 and 5xx up to `retries` more times."""
    error: str | None = None
    status: int | None = None
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(1, retries + 2):
            if attempt > 1:
                await clock.sleep(backoff_s * 2 ** (attempt - 2))
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    status = resp.status
                    text = (await resp.text())[:200]
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status, error = None, f"{exc.__class__.__name__}: {exc}"
                continue
            if 200 <= status < 300:
                return Delivery(ok=True, attempts=attempt, status=status)
            error = f"HTTP {status}: {text}".strip()
            if not _retryable(status):
                return Delivery(ok=False, attempts=attempt, status=status, error=error)
    return Delivery(ok=False, attempts=retries + 1, status=status, error=error)


def on_send(app: Rollbot, timer: Timer, lag_s: float) -> Callable[[], Awaitable[None]]:
    """Timer handler: nothing to change in the claim; the POST runs after the commit."""

    async def send() -> None:
        await deliver(app, timer)

    return send


async def deliver(app: Rollbot, timer: Timer) -> Delivery:
    p = timer.payload
    incident_id = timer.ref
    event: WebhookEvent = p.get("event", "trigger")
    details = dict(p.get("details") or {})
    contact = p.get("contact") or {}
    shown = str(p.get("url") or "")
    fmt = p.get("format", "json")
    headers = {"Idempotency-Key": f"rollbot-webhook-{timer.id}"}
    url = configured_url(app.settings, str(contact.get("name", "")), shown)
    if url is None:
        result = Delivery(
            ok=False,
            attempts=0,
            error=f"contact {contact.get('name', '?')} has no webhook {shown} in the config"
            " any more",
        )
        _record(app, timer, result, fmt, shown, contact, event)
        return result
    if fmt == "pagerduty":
        from rollbot.secrets import secret

        key = secret(p.get("key_env") or "") or ""
        if not key:
            result = Delivery(
                ok=False,
                attempts=0,
                error="PagerDuty routing key not set: "
                f"{p.get('key_env') or '(no variable named)'} is empty in the environment and"
                " in .env",
            )
            _record(app, timer, result, fmt, url, contact, event)
            return result
        body = pagerduty_body(key, event, incident_id, details)
    else:
        body = json_body(event, incident_id, details)
    result = await post_json(
        url,
        body,
        retries=int(p.get("retries", 3)),
        backoff_s=float(p.get("backoff_s", 1.0)),
        clock=app.clock,
        headers=headers,
    )
    result.error = scrub(result.error, url)
    _record(app, timer, result, fmt, url, contact, event)
    return result


RESEND_WINDOW = timedelta(days=1)  # pages older than this are not looked for again


async def resend_lost(app: Rollbot) -> list[Delivery]:
    """Pages lost with their sender: claimed (TIMER_FIRED) by a process that died with the POST
    in flight, so never answered (no WEBHOOK_SENT or WEBHOOK_FAILED). Each is sent again under
    the same Idempotency-Key (a receiver that did get the first drops this one), claimed first
    with WEBHOOK_RESENT so that one clock sends it. The clock runs this at start and in its
    auditor."""
    since = iso(app.clock.now() - RESEND_WINDOW)
    timers = Timers(app.db, app.clock)
    out = []
    for row in app.db.query(
        "SELECT id FROM timers WHERE kind = ? AND fired_at >= ? ORDER BY id", (TIMER_KIND, since)
    ):
        with app.db.write():
            last = app.db.one(
                "SELECT kind, data FROM events WHERE kind IN"
                " ('TIMER_FIRED', 'WEBHOOK_RESENT', 'WEBHOOK_SENT', 'WEBHOOK_FAILED')"
                " AND json_extract(data, '$.timer_id') = ? ORDER BY id DESC LIMIT 1",
                (row["id"],),
            )
            if last is None or last["kind"] in ("WEBHOOK_SENT", "WEBHOOK_FAILED"):
                continue
            sender = loads(last["data"]) or {}
            if not sender.get("pid") or is_me(sender, app.me) or app.live_elsewhere(sender):
                continue  # still in flight (here or in a live process), or of unknown origin
            timer = timers.get(row["id"])
            assert timer is not None
            app.events.append(
                "WEBHOOK_RESENT",
                Actor.clock(TIMER_KIND),
                incident_id=timer.ref,
                reason=f"process {sender.get('pid')} stopped with this page in flight",
                data={
                    "timer_id": timer.id,
                    "host": host_of(str(timer.payload.get("url"))),
                    **app.me,
                },
            )
        out.append(await deliver(app, timer))
    return out


def _record(
    app: Rollbot,
    timer: Timer,
    result: Delivery,
    fmt: str,
    url: str,
    contact: dict[str, Any],
    event: str,
) -> None:
    data = {
        "timer_id": timer.id,
        "contact": contact.get("name"),
        "role": contact.get("role"),
        "format": fmt,
        "host": host_of(url),
        "event": event,
        **result.model_dump(),
    }
    with app.db.write():
        app.events.append(
            "WEBHOOK_SENT" if result.ok else "WEBHOOK_FAILED",
            Actor.clock(TIMER_KIND),
            incident_id=timer.ref,
            data=data,
        )
        if not result.ok:
            app.outbox.put(
                "thread",
                incident_id=timer.ref,
                text=f"⚠️ The {fmt} webhook page to {contact.get('name', '?')} "
                f"({host_of(url)}) failed after {result.attempts} attempt(s): {result.error}",
                data=data,
            )
