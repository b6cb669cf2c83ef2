"""A loopback fake of Slack for tests that run the *real* slack-bolt / slack_sdk stack.

Two aiohttp servers bound to ``127.0.0.1:0``:

* **Web API** at ``slack.api_url`` (``http://127.0.0.1:PORT/api/``). Point
  ``AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)`` at it. The same server
  also serves the files upload URLs (``/upload/v1/<file_id>``) and the ``response_url`` of
  slash commands and interactions (``/response/<id>``).
* **Socket Mode** at ``slack.socket_url`` (``ws://127.0.0.1:PORT/link/``), which is what
  ``apps.connections.open`` hands out (with a ``ticket`` query parameter, like Slack).

Socket Mode wiring (the handler must be closed *before* the fake stops, otherwise the SDK
keeps trying to reconnect to a server that is gone)::

    async with FakeSlack() as slack:
        app = AsyncApp(client=AsyncWebClient(token=slack.bot_token, base_url=slack.api_url))
        handler = AsyncSocketModeHandler(app, slack.app_token)
        await handler.connect_async()
        try:
            delivery = await slack.deliver_slash_command("/ping", "", user_id="U1")
            ack = await slack.wait_for_ack(delivery.envelope_id)
        finally:
            await handler.close_async()

HTTP mode wiring: serve ``AsyncApp(signing_secret=slack.signing_secret, client=...)`` behind
any aiohttp endpoint (see ``slack_bolt.adapter.aiohttp.to_bolt_request``) and push signed
requests at it with :meth:`FakeSlack.post_to_app` (or build them yourself with
:func:`signed_headers`, :func:`slash_command_body`, :func:`block_action_body`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import hmac
import inspect
import itertools
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

JSONDict = dict[str, Any]
T = TypeVar("T")
MethodHandler = Callable[[JSONDict], JSONDict | Awaitable[JSONDict]]

TEAM_ID = "T0FAKETEAM"
TEAM_DOMAIN = "rollbot-test"
TEAM_NAME = "Rollbot Test"
APP_ID = "A0FAKEAPP"
BOT_USER_ID = "U0FAKEBOT"
BOT_ID = "B0FAKEBOT"
BOT_NAME = "rollbot"
DEFAULT_USER_ID = "U0FAKEUSR"
DEFAULT_CHANNEL_ID = "C0FAKECHN"
VERIFICATION_TOKEN = "fake-verification-token"
BOT_SCOPES = (
    "chat:write,chat:write.public,commands,im:write,users:read,files:write,app_mentions:read"
)

# The bot scope each method needs (docs.slack.dev/reference/methods/<method>, "Scopes"); a
# method called without it answers missing_scope. Methods absent here need no bot scope.
METHOD_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.delete": "chat:write",
    "chat.postEphemeral": "chat:write",
    "conversations.open": "im:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "users.info": "users:read",
}
# Block Kit limits (docs.slack.dev/reference/block-kit/blocks): 50 blocks in a message, 3000
# characters in a section's text, 150 in a header's. Past ~13k characters of block text in all
# Slack answers msg_blocks_too_long (observed: github.com/slackapi/bolt-js/issues/2509).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_BLOCKS_TEXT = 13_000


def block_errors(blocks: Any) -> tuple[str, list[str]] | None:
    """Slack's refusal of a blocks array: (error, response_metadata messages), or None."""
    if not isinstance(blocks, list):
        return None
    if len(blocks) > MAX_BLOCKS:
        return "invalid_blocks", [
            f"[ERROR] no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
        ]
    total = 0
    for i, block in enumerate(blocks):
        text = (block.get("text") or {}).get("text", "") if isinstance(block, dict) else ""
        kind = block.get("type") if isinstance(block, dict) else None
        limit = MAX_HEADER_TEXT if kind == "header" else MAX_SECTION_TEXT
        if len(text) > limit:
            return "invalid_blocks", [
                f"[ERROR] must be less than {limit + 1} characters"
                f" [json-pointer:/blocks/{i}/text/text]"
            ]
        total += len(text)
        for f in block.get("fields") or [] if isinstance(block, dict) else []:
            total += len(f.get("text", ""))
        for e in block.get("elements") or [] if isinstance(block, dict) else []:
            if isinstance(e, dict) and isinstance(e.get("text"), str):
                total += len(e["text"])
    if total > MAX_BLOCKS_TEXT:
        return "msg_blocks_too_long", []
    return None


# Parameters that Slack accepts either as JSON values or as JSON-encoded form strings.
_JSON_PARAMS = frozenset({"blocks", "attachments", "view", "metadata", "files", "user_auth_blocks"})
_POLL_INTERVAL = 0.005


class FakeSlackTimeout(TimeoutError):
    """A ``wait_*`` helper gave up; the message lists what *was* recorded."""


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class ApiCall:
    """One HTTP request to ``/api/<method>``, in arrival order (``seq``)."""

    seq: int
    method: str
    params: JSONDict
    token: str | None
    http_status: int
    response: JSONDict
    at: float  # time.monotonic() on arrival
    wall_time: float  # time.time() on arrival

    @property
    def ok(self) -> bool:
        return self.http_status == 200 and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        err = self.response.get("error")
        return str(err) if err is not None else None

    @property
    def rate_limited(self) -> bool:
        return self.http_status == 429


@dataclass
class Message:
    """A message visible in a channel (posted by the bot, or an in-channel response)."""

    channel: str
    ts: str
    text: str
    user: str
    blocks: list[Any] | None = None
    attachments: list[Any] | None = None
    thread_ts: str | None = None
    bot_id: str | None = BOT_ID
    subtype: str | None = None
    files: list[JSONDict] | None = None
    metadata: JSONDict | None = None
    source: str = "chat.postMessage"
    edits: list[JSONDict] = field(default_factory=list)  # previous versions, oldest first
    deleted: bool = False

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_api(self) -> JSONDict:
        out: JSONDict = {"type": "message", "text": self.text, "user": self.user, "ts": self.ts}
        out["team"] = TEAM_ID
        if self.bot_id is not None:
            out["bot_id"] = self.bot_id
            out["app_id"] = APP_ID
        for key in ("blocks", "attachments", "thread_ts", "subtype", "files", "metadata"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.edits:
            out["edited"] = {"user": self.user, "ts": self.ts}
        return out


@dataclass
class Ephemeral:
    """An ephemeral message shown to one user.

    ``source`` is ``"chat.postEphemeral"``, ``"response_url"`` (``respond()`` without
    ``response_type="in_channel"``) or ``"ack"`` (a slash command acked with text).
    """

    channel: str | None
    user: str
    text: str
    blocks: list[Any] | None
    source: str
    at: float
    message_ts: str | None = None
    thread_ts: str | None = None


@dataclass
class ResponseTarget:
    """What a ``response_url`` issued by the fake belongs to."""

    response_id: str
    url: str
    kind: str  # "slash_commands" | "block_actions" | "view_submission" | ...
    user_id: str
    channel_id: str | None
    message_ts: str | None = None
    uses: int = 0


@dataclass
class ResponseUrlPost:
    """One POST to a ``response_url`` (what bolt's ``respond()`` sends)."""

    response_id: str
    body: JSONDict
    target: ResponseTarget | None
    http_status: int
    at: float

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def response_type(self) -> str:
        return str(self.body.get("response_type") or "ephemeral")


@dataclass
class View:
    id: str
    type: str  # "home" | "modal"
    user_id: str | None
    view: JSONDict  # the view payload as last sent by the app
    hash: str
    external_id: str | None = None
    root_view_id: str | None = None
    previous_view_id: str | None = None
    history: list[JSONDict] = field(default_factory=list)  # earlier payloads, oldest first

    def to_api(self) -> JSONDict:
        base: JSONDict = {
            "id": self.id,
            "team_id": TEAM_ID,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
            "app_installed_team_id": TEAM_ID,
            "type": self.type,
            "blocks": [],
            "private_metadata": "",
            "callback_id": "",
            "external_id": self.external_id or "",
            "state": {"values": {}},
            "hash": self.hash,
            "clear_on_close": False,
            "notify_on_close": False,
            "root_view_id": self.root_view_id or self.id,
            "previous_view_id": self.previous_view_id,
        }
        base.update({k: v for k, v in self.view.items() if k not in {"hash", "id"}})
        return base


@dataclass
class FileUpload:
    """A file going through files.getUploadURLExternal -> upload URL -> completeUploadExternal."""

    file_id: str
    filename: str
    length: int
    upload_url: str
    alt_txt: str | None = None
    snippet_type: str | None = None
    content: bytes | None = None
    title: str | None = None
    completed: bool = False
    channels: list[str] = field(default_factory=list)
    thread_ts: str | None = None
    initial_comment: str | None = None


@dataclass
class User:
    id: str
    name: str
    real_name: str
    tz: str = "UTC"
    is_bot: bool = False
    is_admin: bool = False
    profile: JSONDict = field(default_factory=dict)

    def to_api(self) -> JSONDict:
        profile: JSONDict = {
            "real_name": self.real_name,
            "display_name": self.name,
            "email": f"{self.name}@{TEAM_DOMAIN}.example",
            "team": TEAM_ID,
        }
        profile.update(self.profile)
        return {
            "id": self.id,
            "team_id": TEAM_ID,
            "name": self.name,
            "deleted": False,
            "real_name": self.real_name,
            "tz": self.tz,
            "tz_label": self.tz,
            "tz_offset": 0,
            "is_admin": self.is_admin,
            "is_owner": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
            "profile": profile,
        }


@dataclass
class Envelope:
    """A Socket Mode envelope exactly as put on the wire (``to_wire``)."""

    envelope_id: str
    type: str  # "slash_commands" | "interactive" | "events_api"
    payload: JSONDict
    accepts_response_payload: bool
    retry_attempt: int | None = None
    retry_reason: str | None = None

    def to_wire(self) -> JSONDict:
        out: JSONDict = {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
        }
        if self.retry_attempt is not None:
            out["retry_attempt"] = self.retry_attempt
            out["retry_reason"] = self.retry_reason or ""
        return out


@dataclass
class Delivery:
    """One send of an envelope over a websocket (a redelivery is a new Delivery)."""

    envelope: Envelope
    connection_id: int
    sent_at: float  # time.monotonic()

    @property
    def envelope_id(self) -> str:
        return self.envelope.envelope_id

    @property
    def retry_attempt(self) -> int | None:
        return self.envelope.retry_attempt


@dataclass
class Ack:
    """An acknowledgement the client sent back: ``{"envelope_id": ..., "payload"?: ...}``."""

    envelope_id: str
    payload: JSONDict | None
    received_at: float  # time.monotonic()
    connection_id: int
    delivery: Delivery | None  # the latest delivery of that envelope before the ack

    @property
    def latency(self) -> float:
        """Seconds between sending the (latest) delivery and receiving this ack."""
        if self.delivery is None:
            return float("nan")
        return self.received_at - self.delivery.sent_at


@dataclass
class SocketConnection:
    id: int
    ticket: str | None
    opened_at: float
    ws: web.WebSocketResponse = field(repr=False)
    transport: asyncio.BaseTransport | None = field(default=None, repr=False)
    closed_at: float | None = None
    received: list[str] = field(default_factory=list)  # raw text frames from the client

    @property
    def open(self) -> bool:
        return self.closed_at is None and not self.ws.closed


@dataclass
class HttpDelivery:
    """One signed request pushed at an app in HTTP mode (see :meth:`FakeSlack.post_to_app`)."""

    url: str
    body: str
    headers: dict[str, str]
    status: int
    response_text: str
    response_headers: dict[str, str]
    latency: float

    def json(self) -> Any:
        return json.loads(self.response_text) if self.response_text else None


# --------------------------------------------------------------------------------------------
# HTTP-mode helpers (pure functions)
# --------------------------------------------------------------------------------------------


def compute_signature(body: str | bytes, signing_secret: str, timestamp: int | str) -> str:
    """Slack's ``v0`` request signature: HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    base = f"v0:{timestamp}:".encode() + raw
    digest = hmac.new(signing_secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def signed_headers(
    body: str | bytes,
    signing_secret: str,
    timestamp: int | None = None,
    *,
    content_type: str | None = None,
) -> dict[str, str]:
    """``X-Slack-Signature`` + ``X-Slack-Request-Timestamp`` (+ ``Content-Type`` if given)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    headers = {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": compute_signature(body, signing_secret, ts),
    }
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def with_retry_headers(
    headers: Mapping[str, str], retry_num: int, retry_reason: str = "http_timeout"
) -> dict[str, str]:
    """Copy of ``headers`` plus Slack's ``X-Slack-Retry-Num`` / ``X-Slack-Retry-Reason``."""
    out = dict(headers)
    out["X-Slack-Retry-Num"] = str(retry_num)
    out["X-Slack-Retry-Reason"] = retry_reason
    return out


def new_trigger_id() -> str:
    return f"{secrets.randbelow(10**13):013d}.{secrets.randbelow(10**10):010d}.{uuid.uuid4().hex}"


def slash_command_payload(
    command: str,
    text: str = "",
    user_id: str = DEFAULT_USER_ID,
    channel_id: str = DEFAULT_CHANNEL_ID,
    *,
    response_url: str = "",
    trigger_id: str | None = None,
    user_name: str | None = None,
    channel_name: str | None = None,
    team_id: str = TEAM_ID,
    **extra: str,
) -> dict[str, str]:
    """The fields Slack sends for a slash command (all strings, like the real form body)."""
    payload = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name or ("directmessage" if channel_id[:1] == "D" else "ops"),
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }
    payload.update(extra)
    return payload


def slash_command_body(
    command: str,
    text: str = "",
    user_id: str = DEFAULT_USER_ID,
    channel_id: str = DEFAULT_CHANNEL_ID,
    **kwargs: Any,
) -> str:
    """Form-encoded slash command body (``application/x-www-form-urlencoded``)."""
    return urlencode(slash_command_payload(command, text, user_id, channel_id, **kwargs))


def interactive_body(payload: Mapping[str, Any]) -> str:
    """Form body ``payload=<json>`` as Slack posts interactions (block actions, views...)."""
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))})


def block_action_body(payload: Mapping[str, Any]) -> str:
    return interactive_body(payload)


def view_submission_body(payload: Mapping[str, Any]) -> str:
    return interactive_body(payload)


def event_callback(
    event: Mapping[str, Any],
    *,
    event_id: str | None = None,
    team_id: str = TEAM_ID,
    bot_user_id: str = BOT_USER_ID,
) -> JSONDict:
    """Events API ``event_callback`` wrapper around an inner ``event``."""
    now = time.time()
    inner = dict(event)
    inner.setdefault("event_ts", f"{now:.6f}")
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": APP_ID,
        "event": inner,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(now),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }


def event_body(event: Mapping[str, Any], **kwargs: Any) -> str:
    """JSON body of an Events API request (``application/json``)."""
    return json.dumps(event_callback(event, **kwargs))


def block_action_payload(
    action_id: str,
    value: str | None = None,
    *,
    user_id: str = DEFAULT_USER_ID,
    channel_id: str = DEFAULT_CHANNEL_ID,
    message_ts: str | None = None,
    block_id: str = "actions",
    action_type: str = "button",
    message: JSONDict | None = None,
    response_url: str = "",
    trigger_id: str | None = None,
    state_values: JSONDict | None = None,
) -> JSONDict:
    """A ``block_actions`` payload for a button (or other element) in a message."""
    ts = message_ts or f"{time.time():.6f}"
    action: JSONDict = {
        "action_id": action_id,
        "block_id": block_id,
        "type": action_type,
        "action_ts": f"{time.time():.6f}",
    }
    if action_type == "button":
        action["text"] = {"type": "plain_text", "text": action_id, "emoji": True}
    if value is not None:
        action["value"] = value
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower()},
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": "ops"},
        "message": message or {"type": "message", "ts": ts, "text": "", "user": BOT_USER_ID},
        "state": {"values": state_values or {}},
        "response_url": response_url,
        "actions": [action],
    }


def view_submission_payload(
    callback_id: str,
    values: JSONDict | None = None,
    *,
    user_id: str = DEFAULT_USER_ID,
    view_id: str | None = None,
    private_metadata: str = "",
    trigger_id: str | None = None,
    view_hash: str | None = None,
) -> JSONDict:
    """A ``view_submission`` payload; ``values`` is ``state.values`` ({block: {action: ...}})."""
    vid = view_id or f"V{uuid.uuid4().hex[:10].upper()}"
    return {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower()},
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id or new_trigger_id(),
        "view": {
            "id": vid,
            "team_id": TEAM_ID,
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "state": {"values": values or {}},
            "hash": view_hash or uuid.uuid4().hex[:16],
            "title": {"type": "plain_text", "text": callback_id},
            "blocks": [],
            "root_view_id": vid,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeSlack:
    """Fake Slack Web API + Socket Mode server. Use as ``async with FakeSlack() as slack:``.

    Tokens: ``bot_token`` (``xoxb-``) and ``app_token`` (``xapp-``) are accepted; anything else
    gets ``invalid_auth`` (``not_authed`` when missing). App tokens only work for
    ``apps.connections.open``, bot tokens for everything else (``not_allowed_token_type``).
    """

    def __init__(
        self,
        *,
        bot_token: str | None = None,
        app_token: str | None = None,
        signing_secret: str | None = None,
        strict_trigger_ids: bool = True,
        trigger_id_ttl: float = 3.0,
        scopes: str = BOT_SCOPES,
    ) -> None:
        self.bot_token = bot_token or f"xoxb-fake-{secrets.token_hex(12)}"
        self.app_token = app_token or f"xapp-1-{APP_ID}-fake-{secrets.token_hex(12)}"
        self.signing_secret = signing_secret or secrets.token_hex(16)
        self.team_id = TEAM_ID
        self.app_id = APP_ID
        self.bot_user_id = BOT_USER_ID
        self.bot_id = BOT_ID
        self.strict_trigger_ids = strict_trigger_ids
        self.trigger_id_ttl = trigger_id_ttl
        self.accepted_tokens: set[str] = {self.bot_token, self.app_token}
        # what the app was granted; without chat:write.public the bot posts only where it is a
        # member, as in Slack (docs.slack.dev/reference/scopes/chat:write.public)
        self.scopes: set[str] = {x for x in scopes.split(",") if x}
        self.member_of: set[str] = set()
        self.private_channels: set[str] = set()
        self.archived_channels: set[str] = set()

        # Slack spreads a workspace's envelopes over an app's open connections (up to 10: "Using
        # Socket Mode", docs.slack.dev/apis/events-api/using-socket-mode): None sends each to
        # the newest, a function picks one (a test spreading them over several hosts)
        self.route: Callable[[list[SocketConnection]], SocketConnection] | None = None
        self.rerouted = 0  # envelopes sent again over another connection (a closing one)

        self.api_port = 0
        self.socket_port = 0
        self._api_runner: web.AppRunner | None = None
        self._socket_runner: web.AppRunner | None = None
        self._api_down: Literal["refuse", "503"] | None = None
        self._socket_down = False

        # Web API state
        self._calls: list[ApiCall] = []
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._last_ts_us = 0
        self._messages: dict[str, list[Message]] = {}
        self._ephemerals: list[Ephemeral] = []
        self._responses: list[ResponseUrlPost] = []
        self._response_targets: dict[str, ResponseTarget] = {}
        self._views: dict[str, View] = {}
        self._home_views: dict[str, str] = {}  # user_id -> view id
        self._uploads: dict[str, FileUpload] = {}
        self._dm_channels: dict[str, str] = {}
        self._triggers: dict[str, float] = {}
        self._used_triggers: set[str] = set()
        self._users: dict[str, User] = {}
        self._rate_limits: dict[str | None, int] = {}
        self._retry_after: dict[str | None, int] = {}
        self._failures: dict[str, list[tuple[str, int, JSONDict]]] = {}
        self._latency: dict[str | None, float] = {}
        self._custom: dict[str, MethodHandler] = {}
        self._tickets: set[str] = set()
        self._handlers: dict[str, Callable[[JSONDict], JSONDict]] = {
            "auth.test": self._m_auth_test,
            "chat.postMessage": self._m_chat_post_message,
            "chat.update": self._m_chat_update,
            "chat.delete": self._m_chat_delete,
            "chat.postEphemeral": self._m_chat_post_ephemeral,
            "conversations.open": self._m_conversations_open,
            "views.publish": self._m_views_publish,
            "views.open": self._m_views_open,
            "views.push": self._m_views_push,
            "views.update": self._m_views_update,
            "files.getUploadURLExternal": self._m_files_get_upload_url,
            "files.completeUploadExternal": self._m_files_complete_upload,
            "apps.connections.open": self._m_apps_connections_open,
            "users.info": self._m_users_info,
        }

        # Socket Mode state
        self._conn_ids = itertools.count(1)
        self._connections: list[SocketConnection] = []
        self._envelopes: dict[str, Envelope] = {}
        self._deliveries: list[Delivery] = []
        self._acks: list[Ack] = []

        # HTTP mode
        self._http_deliveries: list[HttpDelivery] = []

        self.add_user(BOT_USER_ID, BOT_NAME, real_name="Rollbot", is_bot=True)
        self.add_user(DEFAULT_USER_ID, "oncall", real_name="On Call")

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._api_runner = await self._start_runner(self._make_api_app(), self.api_port)
        self.api_port = self._api_runner.addresses[0][1]
        self._socket_runner = await self._start_runner(self._make_socket_app(), self.socket_port)
        self.socket_port = self._socket_runner.addresses[0][1]

    async def stop(self) -> None:
        await self._close_connections(code=1001)
        for runner in (self._socket_runner, self._api_runner):
            if runner is not None:
                await runner.cleanup()
        self._socket_runner = None
        self._api_runner = None

    @staticmethod
    async def _start_runner(app: web.Application, port: int) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        return runner

    def _make_api_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        app.router.add_post("/response/{response_id}", self._handle_response_url)
        return app

    def _make_socket_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/link/", self._handle_socket)
        return app

    @property
    def api_root(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_url(self) -> str:
        return f"{self.api_root}/api/"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.socket_port}/link/"

    # ---------------------------------------------------------------- fault knobs

    def rate_limit_next(self, n: int, retry_after: int = 1, *, method: str | None = None) -> None:
        """The next ``n`` Web API calls (of ``method``, or any) get HTTP 429 + ``Retry-After``."""
        self._rate_limits[method] = self._rate_limits.get(method, 0) + n
        self._retry_after[method] = retry_after

    def fail_next(
        self,
        method: str,
        error: str,
        *,
        times: int = 1,
        http_status: int = 200,
        extra: JSONDict | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` answer ``{"ok": false, "error": error}``."""
        queue = self._failures.setdefault(method, [])
        queue.extend([(error, http_status, dict(extra or {}))] * times)

    def set_latency(self, seconds: float, *, method: str | None = None) -> None:
        """Delay Web API replies (of ``method``, or all) by ``seconds``; 0 to clear."""
        if seconds <= 0:
            self._latency.pop(method, None)
        else:
            self._latency[method] = seconds

    def on_method(self, method: str, handler: MethodHandler) -> None:
        """Answer ``method`` with ``handler(params)`` (sync or async) instead of the default."""
        self._custom[method] = handler

    def revoke_token(self, token: str) -> None:
        self.accepted_tokens.discard(token)

    def accept_token(self, token: str) -> None:
        self.accepted_tokens.add(token)

    async def go_down(
        self, mode: Literal["refuse", "503"] = "refuse", *, socket: bool = False
    ) -> None:
        """Simulate an outage of the Web API (and the Socket Mode server if ``socket``).

        ``refuse``: the listener is closed (and open connections dropped), so clients get a
        connection error (``aiohttp.ClientConnectorError``, an ``OSError``). ``503``: the
        server stays up and answers ``503 {"ok": false, "error": "service_unavailable"}``
        (slack_sdk raises ``SlackApiError``). Call :meth:`come_back` to recover on the same URL.
        """
        self._api_down = mode
        if mode == "refuse" and self._api_runner is not None:
            await self._api_runner.cleanup()
            self._api_runner = None
        if socket:
            self._socket_down = True
            await self._close_connections(code=1011)
            if self._socket_runner is not None:
                await self._socket_runner.cleanup()
                self._socket_runner = None

    async def come_back(self) -> None:
        """Undo :meth:`go_down`; servers listen again on the same ports."""
        if self._api_runner is None:
            self._api_runner = await self._start_runner(self._make_api_app(), self.api_port)
        self._api_down = None
        if self._socket_runner is None:
            self._socket_runner = await self._start_runner(
                self._make_socket_app(), self.socket_port
            )
        self._socket_down = False

    # ---------------------------------------------------------------- query helpers

    def calls(self, method: str | None = None, *, ok: bool | None = None) -> list[ApiCall]:
        """Recorded Web API calls (all attempts, incl. 429/503/errors), in arrival order."""
        return [
            c
            for c in self._calls
            if (method is None or c.method == method) and (ok is None or c.ok == ok)
        ]

    def messages(self, channel: str, *, include_replies: bool = True) -> list[Message]:
        """Messages in ``channel`` in posting order (deleted ones excluded).

        A user id (``U...``) is resolved to its DM channel, like chat.postMessage does.
        """
        chan = self._resolve_channel(channel)
        return [
            m
            for m in self._messages.get(chan, [])
            if not m.deleted and (include_replies or not m.is_reply)
        ]

    def message(self, channel: str, ts: str) -> Message | None:
        chan = self._resolve_channel(channel)
        for m in self._messages.get(chan, []):
            if m.ts == ts:
                return m
        return None

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Replies in the thread rooted at ``ts`` (the parent itself is not included)."""
        return [m for m in self.messages(channel) if m.thread_ts == ts and m.ts != ts]

    def ephemeral_to(self, user: str) -> list[Ephemeral]:
        return [e for e in self._ephemerals if e.user == user]

    def ephemerals(self) -> list[Ephemeral]:
        return list(self._ephemerals)

    def responses(self, response_id: str | None = None) -> list[ResponseUrlPost]:
        """What was POSTed to response URLs (``respond()``), in order."""
        return [r for r in self._responses if response_id is None or r.response_id == response_id]

    def views(self) -> list[View]:
        return list(self._views.values())

    def view(self, view_id: str) -> View | None:
        return self._views.get(view_id)

    def home_view(self, user_id: str) -> View | None:
        vid = self._home_views.get(user_id)
        return self._views.get(vid) if vid is not None else None

    def uploads(self) -> list[FileUpload]:
        return list(self._uploads.values())

    def dm_channel(self, user_id: str) -> str:
        """The DM channel id conversations.open returns for ``user_id`` (stable)."""
        return self._dm_channels.setdefault(user_id, "D" + user_id[1:])

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[ApiCall], bool] | None = None,
        timeout: float = 5.0,
    ) -> ApiCall:
        """First recorded call of ``method`` (any time, also before the wait) matching."""

        def find() -> ApiCall | None:
            for c in self._calls:
                if c.method == method and (predicate is None or predicate(c)):
                    return c
            return None

        try:
            return await self.wait_until(find, timeout)
        except FakeSlackTimeout:
            seen = [(c.method, c.http_status, c.params) for c in self.calls(method)]
            raise FakeSlackTimeout(
                f"no matching {method} call within {timeout}s; recorded: {seen}"
            ) from None

    async def wait_until(self, condition: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Poll ``condition()`` until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise FakeSlackTimeout(f"condition not met within {timeout}s")
            await asyncio.sleep(_POLL_INTERVAL)

    # ---------------------------------------------------------------- users / ids

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        tz: str = "UTC",
        is_bot: bool = False,
        is_admin: bool = False,
        **profile: Any,
    ) -> User:
        user = User(user_id, name, real_name or name, tz, is_bot, is_admin, dict(profile))
        self._users[user_id] = user
        return user

    def _ensure_user(self, user_id: str | None) -> None:
        if user_id and user_id not in self._users:
            self.add_user(user_id, user_id.lower())

    def new_trigger_id(self) -> str:
        """A trigger_id views.open will accept for ``trigger_id_ttl`` seconds, once."""
        trigger = new_trigger_id()
        self._triggers[trigger] = time.monotonic()
        return trigger

    def _register_trigger(self, trigger_id: str) -> None:
        self._triggers[trigger_id] = time.monotonic()

    def new_response_url(
        self,
        kind: str,
        user_id: str,
        channel_id: str | None,
        message_ts: str | None = None,
    ) -> str:
        rid = uuid.uuid4().hex
        url = f"{self.api_root}/response/{rid}"
        self._response_targets[rid] = ResponseTarget(
            rid, url, kind, user_id, channel_id, message_ts
        )
        return url

    def _next_ts(self) -> str:
        now_us = int(time.time() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def _resolve_channel(self, channel: str) -> str:
        if channel[:1] in {"U", "W"}:
            return self.dm_channel(channel)
        return channel

    # ---------------------------------------------------------------- payload builders

    def slash_command_payload(
        self,
        command: str,
        text: str = "",
        user_id: str = DEFAULT_USER_ID,
        channel_id: str = DEFAULT_CHANNEL_ID,
        **kwargs: Any,
    ) -> dict[str, str]:
        """Like :func:`slash_command_payload`, with a live response_url and trigger_id."""
        kwargs.setdefault(
            "response_url", self.new_response_url("slash_commands", user_id, channel_id)
        )
        kwargs.setdefault("trigger_id", self.new_trigger_id())
        self._register_trigger(kwargs["trigger_id"])
        self._ensure_user(user_id)
        return slash_command_payload(command, text, user_id, channel_id, **kwargs)

    def slash_command_body(self, command: str, text: str = "", **kwargs: Any) -> str:
        return urlencode(self.slash_command_payload(command, text, **kwargs))

    def block_action_payload(
        self, action_id: str, value: str | None = None, **kwargs: Any
    ) -> JSONDict:
        """Like :func:`block_action_payload`, with a live response_url and trigger_id."""
        return self._complete_interactive(block_action_payload(action_id, value, **kwargs))

    def view_submission_payload(
        self, callback_id: str, values: JSONDict | None = None, **kwargs: Any
    ) -> JSONDict:
        return self._complete_interactive(view_submission_payload(callback_id, values, **kwargs))

    def _complete_interactive(self, payload: Mapping[str, Any]) -> JSONDict:
        out = dict(payload)
        user_id = str((out.get("user") or {}).get("id") or DEFAULT_USER_ID)
        out.setdefault(
            "user", {"id": user_id, "username": user_id.lower(), "name": user_id.lower()}
        )
        out.setdefault("team", {"id": TEAM_ID, "domain": TEAM_DOMAIN})
        out.setdefault("api_app_id", APP_ID)
        out.setdefault("token", VERIFICATION_TOKEN)
        out.setdefault("is_enterprise_install", False)
        out.setdefault("enterprise", None)
        if not out.get("trigger_id"):
            out["trigger_id"] = self.new_trigger_id()
        self._register_trigger(str(out["trigger_id"]))
        self._ensure_user(user_id)
        kind = str(out.get("type", "block_actions"))
        if kind != "view_submission" and not out.get("response_url"):
            container = out.get("container") or {}
            channel = container.get("channel_id") or (out.get("channel") or {}).get("id")
            out["response_url"] = self.new_response_url(
                kind, user_id, channel, container.get("message_ts")
            )
        return out

    # ---------------------------------------------------------------- Web API server

    async def _parse_api_request(self, request: web.Request) -> tuple[JSONDict, str | None]:
        params: JSONDict = dict(request.query)
        ctype = request.content_type
        if request.can_read_body:
            if ctype == "application/json":
                raw = await request.text()
                body = json.loads(raw) if raw.strip() else {}
                if isinstance(body, dict):
                    params.update(body)
            elif ctype in {"application/x-www-form-urlencoded", "multipart/form-data"}:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        params[key] = {"filename": value.filename, "size": len(value.file.read())}
                    else:
                        params[key] = value
        for key in _JSON_PARAMS & params.keys():
            value = params[key]
            if isinstance(value, str) and value[:1] in {"[", "{"}:
                with contextlib.suppress(ValueError):
                    params[key] = json.loads(value)
        token: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :].strip()
        body_token = params.pop("token", None)
        if token is None and isinstance(body_token, str):
            token = body_token
        return params, token

    def _record(
        self,
        seq: int,
        method: str,
        params: JSONDict,
        token: str | None,
        status: int,
        response: JSONDict,
        at: float,
        wall: float,
    ) -> ApiCall:
        call = ApiCall(seq, method, params, token, status, response, at, wall)
        bisect.insort(self._calls, call, key=lambda c: c.seq)  # arrival order despite latency
        return call

    def _take_rate_limit(self, method: str) -> int | None:
        for key in (method, None):
            if self._rate_limits.get(key, 0) > 0:
                self._rate_limits[key] -= 1
                return self._retry_after.get(key, 1)
        return None

    def _check_auth(self, method: str, token: str | None) -> str | None:
        if not token:
            return "not_authed"
        if token not in self.accepted_tokens:
            return "invalid_auth"
        is_app_token = token.startswith("xapp-")
        if (method == "apps.connections.open") != is_app_token:
            return "not_allowed_token_type"
        return None

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        seq, at, wall = next(self._seq), time.monotonic(), time.time()
        method = request.match_info["method"]
        params, token = await self._parse_api_request(request)
        delay = self._latency.get(method, self._latency.get(None, 0.0))
        if delay:
            await asyncio.sleep(delay)
        headers = {"X-OAuth-Scopes": ",".join(sorted(self.scopes))}

        if self._api_down == "503":
            body: JSONDict = {"ok": False, "error": "service_unavailable"}
            self._record(seq, method, params, token, 503, body, at, wall)
            return web.json_response(body, status=503)

        retry_after = self._take_rate_limit(method)
        if retry_after is not None:
            body = {"ok": False, "error": "ratelimited"}
            self._record(seq, method, params, token, 429, body, at, wall)
            return web.json_response(body, status=429, headers={"Retry-After": str(retry_after)})

        status = 200
        if method not in self._handlers and method not in self._custom:
            body = {"ok": False, "error": "unknown_method"}
        elif (auth_error := self._check_auth(method, token)) is not None:
            body = {"ok": False, "error": auth_error}
        elif (needed := METHOD_SCOPES.get(method)) and needed not in self.scopes:
            provided = ",".join(sorted(self.scopes))
            body = {"ok": False, "error": "missing_scope", "needed": needed, "provided": provided}
        elif self._failures.get(method):
            error, status, extra = self._failures[method].pop(0)
            body = {"ok": False, "error": error, **extra}
        elif method in self._custom:
            result = self._custom[method](params)
            body = await result if inspect.isawaitable(result) else result
        else:
            body = self._handlers[method](params)
        self._record(seq, method, params, token, status, body, at, wall)
        return web.json_response(body, status=status, headers=headers)

    # ---- methods

    def _m_auth_test(self, params: JSONDict) -> JSONDict:
        return {
            "ok": True,
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": TEAM_NAME,
            "user": BOT_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    @staticmethod
    def _has_content(params: JSONDict) -> bool:
        return any(params.get(k) for k in ("text", "blocks", "attachments"))

    def join(self, channel: str) -> None:
        """Someone invited the bot into `channel`."""
        self.member_of.add(channel)

    def _may_post(self, chan: str) -> str | None:
        """Slack's refusal of a post to `chan`, if any (DMs are always open to the app)."""
        if chan[:1] not in {"C", "G"}:
            return None
        if chan in self.archived_channels:
            return "is_archived"
        if chan in self.member_of:
            return None
        if chan in self.private_channels or chan[:1] == "G":
            return "channel_not_found"  # a private channel the bot is not in cannot be seen
        return None if "chat:write.public" in self.scopes else "not_in_channel"

    def _m_chat_post_message(self, params: JSONDict) -> JSONDict:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not self._has_content(params):
            return {"ok": False, "error": "no_text"}
        chan = self._resolve_channel(str(channel))
        if (refused := self._may_post(chan)) is not None:
            return {"ok": False, "error": refused}
        if (bad := block_errors(params.get("blocks"))) is not None:
            return {"ok": False, "error": bad[0], "response_metadata": {"messages": bad[1]}}
        # Like Slack, an unknown thread_ts is accepted as is (no validation).
        thread_ts = params.get("thread_ts") or None
        msg = Message(
            channel=chan,
            ts=self._next_ts(),
            text=str(params.get("text") or ""),
            user=BOT_USER_ID,
            blocks=params.get("blocks"),
            attachments=params.get("attachments"),
            thread_ts=str(thread_ts) if thread_ts else None,
            metadata=params.get("metadata"),
        )
        self._messages.setdefault(chan, []).append(msg)
        return {"ok": True, "channel": chan, "ts": msg.ts, "message": msg.to_api()}

    def _m_chat_update(self, params: JSONDict) -> JSONDict:
        channel, ts = params.get("channel"), params.get("ts")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        msg = self.message(str(channel), str(ts or ""))
        if msg is None or msg.deleted:
            return {"ok": False, "error": "message_not_found"}
        if msg.user != BOT_USER_ID:
            return {"ok": False, "error": "cant_update_message"}
        if not self._has_content(params):
            return {"ok": False, "error": "no_text"}
        if (bad := block_errors(params.get("blocks"))) is not None:
            return {"ok": False, "error": bad[0], "response_metadata": {"messages": bad[1]}}
        msg.edits.append({"text": msg.text, "blocks": msg.blocks, "attachments": msg.attachments})
        if "text" in params:
            msg.text = str(params["text"] or "")
        if "blocks" in params:
            msg.blocks = params["blocks"] or None
        if "attachments" in params:
            msg.attachments = params["attachments"] or None
        return {
            "ok": True,
            "channel": msg.channel,
            "ts": msg.ts,
            "text": msg.text,
            "message": msg.to_api(),
        }

    def _m_chat_delete(self, params: JSONDict) -> JSONDict:
        msg = self.message(str(params.get("channel") or ""), str(params.get("ts") or ""))
        if msg is None or msg.deleted:
            return {"ok": False, "error": "message_not_found"}
        msg.deleted = True
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def _m_chat_post_ephemeral(self, params: JSONDict) -> JSONDict:
        channel, user = params.get("channel"), params.get("user")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not user or str(user) not in self._users:
            return {"ok": False, "error": "user_not_found"}
        if not self._has_content(params):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        self._ephemerals.append(
            Ephemeral(
                channel=self._resolve_channel(str(channel)),
                user=str(user),
                text=str(params.get("text") or ""),
                blocks=params.get("blocks"),
                source="chat.postEphemeral",
                at=time.monotonic(),
                message_ts=ts,
                thread_ts=params.get("thread_ts"),
            )
        )
        return {"ok": True, "message_ts": ts}

    def _m_conversations_open(self, params: JSONDict) -> JSONDict:
        if params.get("channel"):
            return {
                "ok": True,
                "no_op": True,
                "already_open": True,
                "channel": {"id": params["channel"]},
            }
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if not users:
            return {"ok": False, "error": "users_list_not_supplied"}
        for u in users:
            if u not in self._users:
                return {"ok": False, "error": "user_not_found"}
        if len(users) == 1:
            already = users[0] in self._dm_channels
            chan = self.dm_channel(users[0])
        else:
            key = ",".join(sorted(users))
            already = key in self._dm_channels
            digest = hashlib.sha1(key.encode()).hexdigest()[:8].upper()
            chan = self._dm_channels.setdefault(key, f"G{digest}")
        return {"ok": True, "no_op": already, "already_open": already, "channel": {"id": chan}}

    @staticmethod
    def _view_param(params: JSONDict) -> JSONDict | None:
        view = params.get("view")
        return view if isinstance(view, dict) else None

    def _new_view(self, view_type: str, user_id: str | None, payload: JSONDict) -> View:
        vid = f"V{next(self._ids):010d}"
        view = View(
            id=vid,
            type=view_type,
            user_id=user_id,
            view=payload,
            hash=f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            external_id=payload.get("external_id"),
        )
        self._views[vid] = view
        return view

    def _check_trigger(self, params: JSONDict) -> str | None:
        trigger = params.get("trigger_id")
        if not trigger:
            return "invalid_arguments"
        if not self.strict_trigger_ids:
            return None
        trigger = str(trigger)
        issued = self._triggers.get(trigger)
        if issued is None:
            return "invalid_trigger_id"
        if trigger in self._used_triggers:
            return "exchanged_trigger_id"
        if time.monotonic() - issued > self.trigger_id_ttl:
            return "expired_trigger_id"
        self._used_triggers.add(trigger)
        return None

    def _m_views_publish(self, params: JSONDict) -> JSONDict:
        user_id, payload = params.get("user_id"), self._view_param(params)
        if not user_id or payload is None:
            return {"ok": False, "error": "invalid_arguments"}
        if str(user_id) not in self._users:
            return {"ok": False, "error": "user_not_found"}
        existing = self.home_view(str(user_id))
        if existing is not None:
            if params.get("hash") and params["hash"] != existing.hash:
                return {"ok": False, "error": "hash_conflict"}
            existing.history.append(existing.view)
            existing.view = payload
            existing.hash = f"{int(time.time())}.{uuid.uuid4().hex[:8]}"
            return {"ok": True, "view": existing.to_api()}
        view = self._new_view("home", str(user_id), payload)
        self._home_views[str(user_id)] = view.id
        return {"ok": True, "view": view.to_api()}

    def _m_views_open(self, params: JSONDict) -> JSONDict:
        payload = self._view_param(params)
        if payload is None:
            return {"ok": False, "error": "invalid_arguments"}
        if (err := self._check_trigger(params)) is not None:
            return {"ok": False, "error": err}
        view = self._new_view(str(payload.get("type", "modal")), None, payload)
        return {"ok": True, "view": view.to_api()}

    def _m_views_push(self, params: JSONDict) -> JSONDict:
        return self._m_views_open(params)

    def _m_views_update(self, params: JSONDict) -> JSONDict:
        payload = self._view_param(params)
        if payload is None:
            return {"ok": False, "error": "invalid_arguments"}
        view: View | None = None
        if params.get("view_id"):
            view = self._views.get(str(params["view_id"]))
        elif params.get("external_id"):
            view = next(
                (v for v in self._views.values() if v.external_id == params["external_id"]), None
            )
        else:
            return {"ok": False, "error": "invalid_arguments"}
        if view is None:
            return {"ok": False, "error": "not_found"}
        if params.get("hash") and params["hash"] != view.hash:
            return {"ok": False, "error": "hash_conflict"}
        view.history.append(view.view)
        view.view = payload
        view.hash = f"{int(time.time())}.{uuid.uuid4().hex[:8]}"
        return {"ok": True, "view": view.to_api()}

    def _m_files_get_upload_url(self, params: JSONDict) -> JSONDict:
        filename, length = params.get("filename"), params.get("length")
        if not filename or length is None:
            return {"ok": False, "error": "invalid_arguments"}
        try:
            size = int(length)
        except (TypeError, ValueError):
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):010d}"
        url = f"{self.api_root}/upload/v1/{file_id}"
        self._uploads[file_id] = FileUpload(
            file_id=file_id,
            filename=str(filename),
            length=size,
            upload_url=url,
            alt_txt=params.get("alt_txt"),
            snippet_type=params.get("snippet_type"),
        )
        return {"ok": True, "upload_url": url, "file_id": file_id}

    def _m_files_complete_upload(self, params: JSONDict) -> JSONDict:
        files = params.get("files")
        if not isinstance(files, list) or not files:
            return {"ok": False, "error": "invalid_arguments"}
        uploads: list[FileUpload] = []
        for item in files:
            upload = self._uploads.get(str(item.get("id"))) if isinstance(item, dict) else None
            if upload is None or upload.content is None:
                return {"ok": False, "error": "file_not_found"}
            upload.title = str(item.get("title") or upload.filename)
            uploads.append(upload)
        channels = [c for c in str(params.get("channels") or "").split(",") if c]
        if params.get("channel_id"):
            channels.insert(0, str(params["channel_id"]))
        for chan in channels:  # sharing into a channel is posting in it
            if (refused := self._may_post(self._resolve_channel(chan))) is not None:
                return {"ok": False, "error": refused}
        thread_ts = params.get("thread_ts") or None
        comment = params.get("initial_comment")
        for upload in uploads:
            upload.completed = True
            upload.channels = [self._resolve_channel(c) for c in channels]
            upload.thread_ts = thread_ts
            upload.initial_comment = comment
        file_objs = [
            {"id": u.file_id, "name": u.filename, "title": u.title, "size": len(u.content or b"")}
            for u in uploads
        ]
        for chan in (self._resolve_channel(c) for c in channels):
            msg = Message(
                channel=chan,
                ts=self._next_ts(),
                text=str(comment or ""),
                user=BOT_USER_ID,
                thread_ts=thread_ts,
                files=file_objs,
                source="files.completeUploadExternal",
            )
            self._messages.setdefault(chan, []).append(msg)
        return {"ok": True, "files": [{"id": u.file_id, "title": u.title} for u in uploads]}

    def _m_apps_connections_open(self, params: JSONDict) -> JSONDict:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"ok": True, "url": f"{self.socket_url}?ticket={ticket}&app_id={APP_ID}"}

    def _m_users_info(self, params: JSONDict) -> JSONDict:
        user = self._users.get(str(params.get("user") or ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user.to_api()}

    # ---- upload URL and response_url (served by the API server, no auth like Slack)

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        upload = self._uploads.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="Not Found")
        if request.content_type == "multipart/form-data":
            form = await request.post()
            field_value = next((v for v in form.values() if isinstance(v, web.FileField)), None)
            data = field_value.file.read() if field_value is not None else b""
        else:
            data = await request.read()
        upload.content = data
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["response_id"]
        raw = await request.text()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = {"text": raw}
        if not isinstance(body, dict):
            body = {"text": str(body)}
        target = self._response_targets.get(rid)
        status, text = 200, "ok"
        if target is None:
            status, text = 404, "invalid_url"
        elif target.uses >= 5:  # Slack: up to 5 responses within 30 minutes
            status, text = 404, "used_url"
        self._responses.append(ResponseUrlPost(rid, body, target, status, time.monotonic()))
        if target is not None and status == 200:
            target.uses += 1
            self._apply_response(target, body, source="response_url")
        return web.Response(status=status, text=text, content_type="text/plain")

    def _apply_response(self, target: ResponseTarget, body: JSONDict, *, source: str) -> None:
        """Make a response (response_url POST or slash command ack payload) visible."""
        original = (
            self.message(target.channel_id, target.message_ts)
            if target.channel_id and target.message_ts
            else None
        )
        if _truthy(body.get("delete_original")) and original is not None:
            original.deleted = True
            return
        if _truthy(body.get("replace_original")) and original is not None:
            original.edits.append(
                {
                    "text": original.text,
                    "blocks": original.blocks,
                    "attachments": original.attachments,
                }
            )
            original.text = str(body.get("text") or "")
            original.blocks = body.get("blocks")
            original.attachments = body.get("attachments")
            return
        if not self._has_content(body):
            return
        if body.get("response_type") == "in_channel" and target.channel_id:
            chan = self._resolve_channel(target.channel_id)
            msg = Message(
                channel=chan,
                ts=self._next_ts(),
                text=str(body.get("text") or ""),
                user=BOT_USER_ID,
                blocks=body.get("blocks"),
                attachments=body.get("attachments"),
                thread_ts=body.get("thread_ts"),
                source=source,
            )
            self._messages.setdefault(chan, []).append(msg)
        else:
            self._ephemerals.append(
                Ephemeral(
                    channel=target.channel_id,
                    user=target.user_id,
                    text=str(body.get("text") or ""),
                    blocks=body.get("blocks"),
                    source=source,
                    at=time.monotonic(),
                    thread_ts=body.get("thread_ts"),
                )
            )

    # ---------------------------------------------------------------- Socket Mode server

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket")
        if self._socket_down:
            return web.Response(status=503)
        if ticket is not None and ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)  # answers the SDK's pings with pongs
        await ws.prepare(request)
        conn = SocketConnection(
            next(self._conn_ids), ticket, time.monotonic(), ws, request.transport
        )
        self._connections.append(conn)
        hello = {
            "type": "hello",
            "num_connections": len(self.active_connections()),
            "debug_info": {
                "host": "applink-fake-0",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": APP_ID},
        }
        try:
            await ws.send_str(json.dumps(hello))
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_client_frame(conn, str(msg.data))
        finally:
            conn.closed_at = time.monotonic()
        return ws

    def _on_client_frame(self, conn: SocketConnection, data: str) -> None:
        received_at = time.monotonic()
        conn.received.append(data)
        try:
            frame = json.loads(data)
        except ValueError:
            return
        if not isinstance(frame, dict) or "envelope_id" not in frame:
            return
        envelope_id = str(frame["envelope_id"])
        delivery = next(
            (d for d in reversed(self._deliveries) if d.envelope_id == envelope_id), None
        )
        payload = frame.get("payload")
        self._acks.append(
            Ack(
                envelope_id,
                payload if isinstance(payload, dict) else None,
                received_at,
                conn.id,
                delivery,
            )
        )
        if delivery is not None and isinstance(payload, dict):
            self._apply_ack_payload(delivery.envelope, payload)

    def _apply_ack_payload(self, envelope: Envelope, payload: JSONDict) -> None:
        # Slash command acks with a body show up like a response_url response.
        if envelope.type != "slash_commands" or not self._has_content(payload):
            return
        p = envelope.payload
        target = ResponseTarget(
            "ack", "", "slash_commands", str(p.get("user_id")), p.get("channel_id")
        )
        self._apply_response(target, payload, source="ack")

    def active_connections(self) -> list[SocketConnection]:
        return [c for c in self._connections if c.open]

    def connections(self) -> list[SocketConnection]:
        """Every websocket connection ever accepted (open and closed), oldest first."""
        return list(self._connections)

    async def wait_connected(self, count: int = 1, timeout: float = 5.0) -> SocketConnection:
        """Wait until ``count`` connections were accepted in total; return the newest open one."""

        def ready() -> SocketConnection | None:
            active = self.active_connections()
            return active[-1] if len(self._connections) >= count and active else None

        return await self.wait_until(ready, timeout)

    async def _close_connections(self, code: int) -> None:
        for conn in self.active_connections():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=code), timeout=1.0)

    async def drop_connections(self, *, abrupt: bool = False) -> None:
        """Close every websocket (close frame 1001, or TCP abort if ``abrupt``)."""
        if not abrupt:
            await self._close_connections(code=1001)
            return
        for conn in self.active_connections():
            if isinstance(conn.transport, asyncio.Transport):
                conn.transport.abort()
            conn.closed_at = time.monotonic()

    async def send_disconnect(self, reason: str = "warning") -> None:
        """Send Slack's ``{"type": "disconnect"}`` (the SDK then opens a new connection)."""
        conn = await self.wait_connected()
        frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake-0"}}
        await conn.ws.send_str(json.dumps(frame))

    async def deliver(
        self,
        envelope_type: str,
        payload: JSONDict,
        *,
        accepts_response_payload: bool = False,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        envelope_id: str | None = None,
        timeout: float = 5.0,
    ) -> Delivery:
        """Send a raw envelope to the newest open connection (waits up to ``timeout`` for one)."""
        envelope = Envelope(
            envelope_id=envelope_id or str(uuid.uuid4()),
            type=envelope_type,
            payload=payload,
            accepts_response_payload=accepts_response_payload,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
        )
        self._envelopes[envelope.envelope_id] = envelope
        return await self._send_envelope(envelope, timeout)

    async def _send_envelope(self, envelope: Envelope, timeout: float) -> Delivery:
        try:
            conn = await self.wait_connected(timeout=timeout)
        except FakeSlackTimeout:
            raise FakeSlackTimeout(f"no Socket Mode connection within {timeout}s") from None
        if self.route is not None and (active := self.active_connections()):
            conn = self.route(active)
        delivery = Delivery(envelope, conn.id, time.monotonic())
        self._deliveries.append(delivery)
        try:
            await conn.ws.send_str(json.dumps(envelope.to_wire()))
        except ConnectionResetError:
            # the client is replacing this connection (Socket Mode refreshes them): Slack sends
            # the envelope over another open one
            if self.route is None:
                raise
            others = await self.wait_until(
                lambda: [c for c in self.active_connections() if c is not conn], timeout
            )
            self.rerouted += 1
            conn = self.route(others)
            delivery = Delivery(envelope, conn.id, time.monotonic())
            self._deliveries.append(delivery)
            await conn.ws.send_str(json.dumps(envelope.to_wire()))
        return delivery

    async def deliver_slash_command(
        self,
        command: str,
        text: str = "",
        user_id: str = DEFAULT_USER_ID,
        channel_id: str = DEFAULT_CHANNEL_ID,
        *,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> Delivery:
        """Deliver a ``slash_commands`` envelope (extra kwargs become payload fields)."""
        payload = self.slash_command_payload(command, text, user_id, channel_id, **kwargs)
        return await self.deliver(
            "slash_commands", dict(payload), accepts_response_payload=True, timeout=timeout
        )

    async def deliver_block_action(self, payload: Mapping[str, Any]) -> Delivery:
        """Deliver an ``interactive`` envelope; missing response_url/trigger_id are filled in."""
        full = self._complete_interactive({"type": "block_actions", **payload})
        return await self.deliver("interactive", full, accepts_response_payload=False)

    async def deliver_view_submission(self, payload: Mapping[str, Any]) -> Delivery:
        full = self._complete_interactive({"type": "view_submission", **payload})
        return await self.deliver("interactive", full, accepts_response_payload=True)

    async def deliver_event(
        self, event: Mapping[str, Any], *, event_id: str | None = None
    ) -> Delivery:
        """Deliver an ``events_api`` envelope wrapping ``event`` in an event_callback."""
        user = event.get("user")
        self._ensure_user(user if isinstance(user, str) else None)
        payload = event_callback(event, event_id=event_id)
        return await self.deliver(
            "events_api", payload, accepts_response_payload=False, retry_attempt=0, retry_reason=""
        )

    async def redeliver(self, envelope_id: str, *, reason: str = "timeout") -> Delivery:
        """Send the same envelope again with ``retry_attempt`` + 1, like Slack's retries."""
        original = self._envelopes[envelope_id]
        retried = Envelope(
            envelope_id=original.envelope_id,
            type=original.type,
            payload=original.payload,
            accepts_response_payload=original.accepts_response_payload,
            retry_attempt=(original.retry_attempt or 0) + 1,
            retry_reason=reason,
        )
        self._envelopes[envelope_id] = retried
        return await self._send_envelope(retried, timeout=5.0)

    def deliveries(self, envelope_id: str | None = None) -> list[Delivery]:
        return [d for d in self._deliveries if envelope_id is None or d.envelope_id == envelope_id]

    def acks(self, envelope_id: str | None = None) -> list[Ack]:
        return [a for a in self._acks if envelope_id is None or a.envelope_id == envelope_id]

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0, *, count: int = 1) -> Ack:
        """Wait for the ``count``-th ack of ``envelope_id`` and return it."""

        def find() -> Ack | None:
            acks = self.acks(envelope_id)
            return acks[count - 1] if len(acks) >= count else None

        try:
            return await self.wait_until(find, timeout)
        except FakeSlackTimeout:
            raise FakeSlackTimeout(
                f"no ack #{count} for envelope {envelope_id} within {timeout}s "
                f"(acks so far: {len(self.acks(envelope_id))})"
            ) from None

    # ---------------------------------------------------------------- HTTP mode (Slack -> app)

    async def post_to_app(
        self,
        url: str,
        body: str,
        *,
        content_type: str = "application/x-www-form-urlencoded",
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        signing_secret: str | None = None,
        timeout: float = 10.0,
    ) -> HttpDelivery:
        """POST a signed request to an app's HTTP endpoint, like Slack does; record it."""
        headers = signed_headers(
            body, signing_secret or self.signing_secret, timestamp, content_type=content_type
        )
        if retry_num is not None:
            headers = with_retry_headers(headers, retry_num, retry_reason)
        started = time.monotonic()
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.post(url, data=body.encode("utf-8"), headers=headers) as resp,
        ):
            text = await resp.text()
            result = HttpDelivery(
                url=url,
                body=body,
                headers=headers,
                status=resp.status,
                response_text=text,
                response_headers=dict(resp.headers),
                latency=time.monotonic() - started,
            )
        self._http_deliveries.append(result)
        return result

    async def http_slash_command(
        self, url: str, command: str, text: str = "", **kwargs: Any
    ) -> HttpDelivery:
        return await self.post_to_app(url, self.slash_command_body(command, text, **kwargs))

    async def http_interactive(self, url: str, payload: Mapping[str, Any]) -> HttpDelivery:
        full = self._complete_interactive({"type": "block_actions", **payload})
        return await self.post_to_app(url, interactive_body(full))

    async def http_event(
        self,
        url: str,
        event: Mapping[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> HttpDelivery:
        body = event_body(event, event_id=event_id)
        return await self.post_to_app(
            url,
            body,
            content_type="application/json",
            retry_num=retry_num,
            retry_reason=retry_reason,
        )

    def http_deliveries(self) -> list[HttpDelivery]:
        return list(self._http_deliveries)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in {"true", "1", "yes"}
    return bool(value)
