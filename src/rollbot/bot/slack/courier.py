"""Delivers the outbox to Slack, in order, until Slack takes it.

A transport failure (Slack unreachable, 5xx, rate limit after retries) stops the round and it is
tried again with backoff: nothing is lost and the thread stays in order. A refusal (e.g.
not_in_channel) is retried a few times, then set aside with its error so one bad message never
blocks an incident's thread — but never dropped: while anything is set aside /healthz is
unhealthy and says what to do, a metric counts it, and the set-aside messages are tried again,
in order, every `retry_set_aside_s` until Slack takes them (someone invited the bot, …).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from rollbot.bot.process_lease import ProcessLease, process_holder
from rollbot.bot.slack import views
from rollbot.clock import iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.mrkdwn import escape
from rollbot.commands.desk.outbox import OutboxMessage
from rollbot.storage.db import loads
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident

# one courier per desk posts the outbox, in order: with several hosts, the holder of this lease
OUTBOX_LEASE = "outbox_courier"

log = logging.getLogger("rollbot.slack.courier")
TRANSIENT = {
    "ratelimited",
    "service_unavailable",
    "internal_error",
    "fatal_error",
    "request_timeout",
}
MAX_PERMANENT_ATTEMPTS = 3
RETRY_SET_ASIDE_S = 30.0


def fix_for(error: str, channel: str) -> str:
    """What a person must do about a refusal, in the words of Slack's set-up screens."""
    fixes = {
        "not_in_channel": f"invite @rollbot to the ops channel {channel} (`/invite @rollbot` in"
        " it), or add the chat:write.public scope (manifest.yml) and reinstall the app",
        "channel_not_found": f"the ops channel {channel} does not exist or is private without"
        " rollbot in it: check [slack] ops_channel (a channel ID, C…) and invite @rollbot",
        "is_archived": f"the ops channel {channel} is archived: unarchive it or set another"
        " [slack] ops_channel",
        "missing_scope": "the bot token lacks a scope rollbot uses: paste manifest.yml into the"
        " app's settings and reinstall it",
    }
    return fixes.get(
        error, f"Slack refused rollbot's messages ({error}); see api.slack.com for that error"
    )


class SlackUnavailable(Exception):
    pass


class Courier:
    def __init__(self, app: Rollbot, client: AsyncWebClient, channel: str) -> None:
        self.app = app
        self.client = client
        self.channel = channel
        self.wake = asyncio.Event()
        self.backoff = 0.5
        # awaited before each post: the bot's acks go first (bot/slack/acks_first.py)
        self.yield_to: Callable[[], Awaitable[None]] | None = None
        self._lock = asyncio.Lock()
        self.retry_set_aside_s = RETRY_SET_ASIDE_S
        self._set_aside_tried = time.monotonic()
        self.on_set_aside: Callable[[str], None] = lambda error: None
        # why Slack would not take a message in the ops channel (the start-up probe or the
        # last refusal); None once a message there went through
        self.channel_problem: str | None = None

        self.holder = process_holder(app, "courier")
        self._lease = ProcessLease(app, OUTBOX_LEASE, self.holder)
        self._lease_checked = -1e9  # monotonic: a standby asks at most twice a lease interval

    def kick(self) -> None:
        self.wake.set()

    def delivers_here(self) -> bool:
        """Does this process hold the courier's lease? Two couriers (two hosts) would post each
        message twice and out of order; a standby takes over 3 lease intervals after the
        holder's last renewal, at once when the holder is known to have ended."""
        interval = self.app.settings.host.lease_interval_s
        until = self._lease.until
        if until is not None and until - self.app.clock.now() > timedelta(seconds=interval):
            return True
        if until is None and time.monotonic() - self._lease_checked < interval / 2:
            return False
        self._lease_checked = time.monotonic()
        try:
            return self._lease.hold(3 * interval).held
        except Exception:
            log.warning("courier: its lease cannot be read; not posting meanwhile", exc_info=True)
            self._lease.until = None
            return False

    def release(self) -> None:
        self._lease.release()

    async def run(self, stop: asyncio.Event, poll_s: float = 1.0) -> None:
        """Drain whenever kicked, and poll (other processes — CLI, clock, other hosts — queue
        too); only while this process holds the courier's lease."""
        try:
            await self._run(stop, poll_s)
        finally:
            self.release()

    async def _run(self, stop: asyncio.Event, poll_s: float) -> None:
        delay = poll_s
        while not stop.is_set():
            try:
                if self.delivers_here():
                    await self.drain()
                    await self.retry_set_aside()
                delay = min(poll_s, self.app.settings.host.lease_interval_s)
            except SlackUnavailable as exc:
                log.warning("Slack unreachable, will retry: %s", exc)
                delay = min(max(self.backoff, 0.2) * 2, 30)
                self.backoff = delay
            self.wake.clear()
            waiter = asyncio.create_task(self.wake.wait())
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait(
                    {waiter, stopper}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
                stopper.cancel()
                await asyncio.gather(waiter, stopper, return_exceptions=True)

    async def drain(self) -> int:
        async with self._lock:
            sent = 0
            while True:
                batch = self.app.outbox.pending(limit=50)
                if not batch:
                    return sent
                for msg in batch:
                    if self._superseded(msg, batch):
                        self.app.outbox.delivered(msg.id, {"coalesced": True})
                        continue
                    if self.yield_to is not None:
                        await self.yield_to()
                    await self._deliver_one(msg)
                    sent += 1
                self.backoff = 0.5

    async def probe(self) -> str | None:
        """Prove at start that a message can be posted in the ops channel (posted, then
        deleted). Returns what to do when it cannot; transport failures are not its business."""
        try:
            resp = await self.client.chat_postMessage(
                channel=self.channel, text="rollbot is starting: checking it can post here."
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error", "")) if exc.response else str(exc)
            self.channel_problem = f"{error}: {fix_for(error, self.channel)}"
            return self.channel_problem
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("start-up post probe could not reach Slack: %s", exc)
            return None  # the courier's backoff deals with Slack being away
        self.channel_problem = None
        try:  # the proof is made; a probe left standing is only a stray line in the channel
            await self.client.chat_delete(channel=str(resp["channel"]), ts=str(resp["ts"]))
        except (SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("could not delete the start-up probe message: %s", exc)
        return None

    async def retry_set_aside(self, *, force: bool = False) -> int:
        """Try the set-aside messages again, oldest first; stop at the first still refused."""
        if not force and time.monotonic() - self._set_aside_tried < self.retry_set_aside_s:
            return 0
        self._set_aside_tried = time.monotonic()
        sent = 0
        async with self._lock:
            for msg in self.app.outbox.set_aside_list():
                try:
                    result = await self._deliver(msg)
                except SlackApiError as exc:
                    error = str(exc.response.get("error", "")) if exc.response else str(exc)
                    log.warning("set-aside outbox %s still refused: %s", msg.id, error)
                    return sent
                except (aiohttp.ClientError, TimeoutError, OSError):
                    return sent
                except Exception:  # one odd message must not stop the courier; next round
                    log.exception("set-aside outbox %s cannot be retried", msg.id)
                    return sent
                self.app.outbox.delivered(msg.id, {**result, "after_set_aside": True})
                self.channel_problem = None
                sent += 1
        if self.channel_problem and not sent:
            await self.probe()  # a quiet channel: prove again, so a fix shows without traffic
        return sent

    @staticmethod
    def _superseded(msg: OutboxMessage, batch: list[OutboxMessage]) -> bool:
        """A headline refresh followed by another for the same incident need not be sent."""
        if msg.kind != "headline":
            return False
        return any(
            m.kind == "headline" and m.incident_id == msg.incident_id and m.id > msg.id
            for m in batch
        )

    async def _deliver_one(self, msg: OutboxMessage) -> None:
        try:
            result = await self._deliver(msg)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "")) if exc.response else str(exc)
            status = exc.response.status_code if exc.response is not None else 0
            if error in TRANSIENT or status >= 500 or status == 429:
                raise SlackUnavailable(error or f"HTTP {status}") from None
            self.app.outbox.failed(msg.id, error)
            if msg.kind != "dm":
                self.channel_problem = f"{error}: {fix_for(error, self.channel)}"
            if msg.attempts + 1 >= MAX_PERMANENT_ATTEMPTS:
                log.error(
                    "outbox %s (%s) set aside after %s attempts, to be retried: %s — %s",
                    msg.id,
                    msg.kind,
                    msg.attempts + 1,
                    error,
                    fix_for(error, self.channel),
                )
                with self.app.db.write():
                    self.app.outbox.set_aside(msg.id, error)
                    self.app.events.append(
                        "SLACK_UNDELIVERABLE",
                        Actor(id="rollbot", source="system"),
                        reason=f"{error}: {fix_for(error, self.channel)}",
                        incident_id=msg.incident_id,
                        data={"outbox_id": msg.id, "kind": msg.kind, "error": error},
                    )
                self.on_set_aside(error)
            return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SlackUnavailable(f"{exc.__class__.__name__}: {exc}") from None
        self.app.outbox.delivered(msg.id, result)
        if msg.kind != "dm":
            self.channel_problem = None

    # -- kinds ----------------------------------------------------------------------------------
    async def _deliver(self, msg: OutboxMessage) -> dict[str, Any]:
        if msg.kind == "headline":
            return await self._headline(self.app.incidents.get(msg.incident_id or ""))
        if msg.kind == "approval":
            return await self._refresh_copies(msg)
        text, blocks = views.render_payload(msg.payload)
        if msg.kind == "thread":
            incident = self.app.incidents.get(msg.incident_id or "")
            if not incident.slack_ts:
                await self._headline(incident)
                incident = self.app.incidents.get(incident.id)
            resp = await self.client.chat_postMessage(
                channel=incident.slack_channel or self.channel,
                thread_ts=incident.slack_ts,
                text=text,
                blocks=blocks,
            )
        elif msg.kind == "dm":
            resp = await self.client.chat_postMessage(
                channel=msg.target or "", text=text, blocks=blocks
            )
        else:  # channel
            resp = await self.client.chat_postMessage(
                channel=msg.target or self.channel, text=text, blocks=blocks
            )
        self._remember_copy(msg, str(resp["channel"]), str(resp["ts"]))
        if msg.payload.get("view") == "approval" and isinstance(msg.payload.get("data"), dict):
            # a plan too long for one card goes on, whole, in messages right under it
            under = str(resp.get("message", {}).get("thread_ts") or resp["ts"])
            for more_text, more_blocks in views.approval_continuations(msg.payload["data"]):
                await self.client.chat_postMessage(
                    channel=str(resp["channel"]),
                    thread_ts=under,
                    text=more_text,
                    blocks=more_blocks,
                )
        return {"channel": resp["channel"], "ts": resp["ts"]}

    def _remember_copy(self, msg: OutboxMessage, channel: str, ts: str) -> None:
        """Posted copies of a request, so every copy can be updated when it is decided."""
        view = msg.payload.get("view")
        data = msg.payload.get("data") or {}
        ref = data.get("id") or data.get("alert_id") if isinstance(data, dict) else None
        if view in ("approval", "risk_alert", "checklist") and ref:
            self.app.db.execute(
                "INSERT INTO message_copies (kind, ref, channel, ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (view, str(ref), channel, ts),
            )
        if view == "checklist" and isinstance(data, dict) and data.get("incident_id"):
            self.app.db.execute(
                "INSERT INTO message_copies (kind, ref, channel, ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                ("checklist", str(data["incident_id"]), channel, ts),
            )

    async def _refresh_copies(self, msg: OutboxMessage) -> dict[str, Any]:
        data = msg.payload.get("data") or {}
        view = msg.payload.get("view") or "approval"
        ref = str(data.get("id") or data.get("approval_id") or data.get("incident_id") or "")
        text, blocks = views.render_payload(
            {"view": view, "data": data, "text": msg.payload.get("text")}
        )
        copies = self.app.db.query(
            "SELECT channel, ts FROM message_copies WHERE kind = ? AND ref = ?", (view, ref)
        )
        for copy in copies:
            await self.client.chat_update(
                channel=copy["channel"], ts=copy["ts"], text=text, blocks=blocks
            )
        return {"updated": len(copies)}

    async def _headline(self, incident: Incident) -> dict[str, Any]:
        text, blocks = views.headline(
            self.headline_data(incident), self.steps_data(incident.id), self._extra(incident)
        )
        if incident.slack_ts and incident.slack_channel:
            await self.client.chat_update(
                channel=incident.slack_channel, ts=incident.slack_ts, text=text, blocks=blocks
            )
            return {"updated": incident.slack_ts}
        resp = await self.client.chat_postMessage(channel=self.channel, text=text, blocks=blocks)
        self.app.incidents.update(
            incident.id, slack_channel=str(resp["channel"]), slack_ts=str(resp["ts"])
        )
        return {"channel": resp["channel"], "ts": resp["ts"]}

    def headline_data(self, incident: Incident) -> dict[str, Any]:
        data = incident.model_dump(mode="json")
        data["opened_at"] = iso(incident.opened_at)
        # what ran in it, in order: "kill → flatten" when an approved flatten continued a kill
        went_on = self.app.db.query(
            "SELECT data FROM events WHERE incident_id = ? AND kind = 'INCIDENT_CONTINUED'"
            " ORDER BY id",
            (incident.id,),
        )
        if went_on:
            kinds = [incident.kind, *((loads(r["data"]) or {}).get("kind", "?") for r in went_on)]
            data["kind"] = " → ".join(kinds)
        data["opened_by_label"] = (
            f"<@{incident.opened_by}>" if incident.source == "slack" else escape(incident.opened_by)
        )
        try:  # what trading is now on the incident's scope, as the guard would answer
            scopes = ["global"] if incident.scope == "global" else ["global", incident.scope]
            data["trading_state"] = self.app.killswitch.state_of(scopes).value
        except Exception:  # the headline still goes out; it just does not claim a state
            log.exception("trading state of %s cannot be read", incident.scope)
        return data

    def steps_data(self, incident_id: str) -> list[dict[str, Any]]:
        return [e.data for e in self.app.events.list(incident_id=incident_id, kinds=["STEP_ENDED"])]

    def _extra(self, incident: Incident) -> list[str]:
        extra = []
        esc = self.app.db.one("SELECT * FROM escalations WHERE incident_id = ?", (incident.id,))
        if esc:
            if esc.get("acked_by"):
                since = views.when(esc.get("acked_at"))
                extra.append(f"*On it:* <@{esc['acked_by']}> since {since}")
            else:
                extra.append(f"*Escalation:* tier {int(esc['tier']) + 1}, {esc['status']}")
        return extra
