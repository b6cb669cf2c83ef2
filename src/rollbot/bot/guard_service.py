"""The guard service, for trading systems in any language: `POST /guard` answers the same
decision JSON as `check_order` (same code), `POST /guard/release` gives back what a done order
reserved, and `GET /guard/events` streams trading-state changes as server-sent events, so a
trading system stops the moment a hold is stored, without polling. Over HTTP and a Unix socket;
every request carries `Authorization: Bearer $ROLLBOT_GUARD_TOKEN`.

Wire format: README "The guard service"."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import stat
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from rollbot.clock import iso
from rollbot.commands.context import Rollbot
from rollbot.commands.guard import GateCache, StateCache
from rollbot.config import Settings
from rollbot.errors import ConfigError
from rollbot.storage.events import Actor

log = logging.getLogger(__name__)

TOKEN_ENV = "ROLLBOT_GUARD_TOKEN"
WATCH_INTERVAL_S = 0.01  # PRAGMA data_version and two stats: a few microseconds per look
KEEPALIVE_S = 15.0
AUDIT_BURST = 20  # refused requests recorded one by one per window; the rest counted
AUDIT_WINDOW = timedelta(minutes=1)
UNAUTHENTICATED = Actor(id="unauthenticated", source="system")


class GuardRequest(BaseModel):
    """One order to check. Numbers as JSON numbers or strings ("0.5" keeps its decimals)."""

    model_config = ConfigDict(extra="forbid")

    venue: str
    symbol: str
    side: str
    quantity: int | float | str
    position: int | float | str = 0
    account: str | None = None
    strategy: str | None = None
    order_id: str | None = None
    cancel: bool = False


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str
    venue: str | None = None
    reason: str = "done (filled or cancelled)"


def bad_request(exc: ValidationError | ValueError) -> web.Response:
    """400 naming the field: the first one wrong, and every problem in `errors`."""
    if isinstance(exc, ValidationError):
        errors = []  # a union's alternatives (quantity.int, quantity.str) are one field
        for e in exc.errors():
            field = str(e["loc"][0]) if e["loc"] else "body"
            if not any(x["field"] == field for x in errors):
                errors.append({"field": field, "problem": e["msg"]})
    else:
        errors = [{"field": "body", "problem": str(exc)}]
    first = errors[0]
    error = f"{first['field']}: {first['problem']}"
    return web.json_response(
        {"error": error, "field": first["field"], "errors": errors}, status=400
    )


class RefusedRequests:
    """Requests without the right token: 401, and an event, the first AUDIT_BURST per window
    one by one, the rest counted into one summary event, so a flood cannot fill the disk or keep
    the write lock from a real /kill (the same rule as bot/slack/unverified.py)."""

    def __init__(self, rb: Rollbot) -> None:
        self.rb = rb
        self.window_start: datetime | None = None
        self.recorded = 0
        self.counted: Counter[str] = Counter()

    def __call__(self, code: str, path: str, peer: str) -> None:
        try:
            now = self.rb.clock.now()
            if self.window_start is None or now - self.window_start >= AUDIT_WINDOW:
                self.flush(now)
                self.window_start, self.recorded = now, 0
            if self.recorded < AUDIT_BURST:
                self.recorded += 1
                reason = (
                    "no bearer token"
                    if code == "NO_TOKEN"
                    else "the bearer token is not ROLLBOT_GUARD_TOKEN"
                )
                data = {"code": code, "path": path[:100], "peer": peer[:100]}
                self.rb.events.append("GUARD_REFUSED", UNAUTHENTICATED, reason=reason, data=data)
                return
            self.counted[code] += 1
        except Exception:  # the 401 stands even if it cannot be recorded
            log.exception("could not record a refused guard request")

    def flush(self, now: datetime) -> None:
        if not self.counted or self.window_start is None:
            return
        total = sum(self.counted.values())
        self.rb.events.append(
            "GUARD_REFUSED",
            UNAUTHENTICATED,
            reason=f"{total} more refused guard requests from {iso(self.window_start)} to"
            f" {iso(now)}, counted, not recorded one by one",
            data={"code": "COUNTED", "counts": dict(self.counted), "total": total},
        )
        self.counted.clear()


class StateWatch:
    """Trading state per scope and the gates, looked at every WATCH_INTERVAL_S; each change is
    put to every subscriber (the SSE streams)."""

    def __init__(self, rb: Rollbot) -> None:
        self.rb = rb
        self.states = StateCache(rb.db)
        self.gates = GateCache(rb.gates)
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.last: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        try:
            states = self.states.current()
            scopes = {"global": "ACTIVE"} | {f"venue:{v}": "ACTIVE" for v in self.rb.venue_names}
            for scope in scopes:  # a venue's effective state includes the global hold
                governing = [states.get("global"), states.get(scope)]
                held = [s for s in governing if s is not None]
                scopes[scope] = max(held, key=lambda s: s.strictness).value if held else "ACTIVE"
            scopes |= {s: v.value for s, v in states.items() if s not in scopes}
            return {"available": True, "scopes": scopes, "live_gates": self.gates.live_allowed()}
        except Exception as exc:  # say so: a trading system must stop on it
            return {"available": False, "problem": str(exc), "scopes": {}, "live_gates": False}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            snap = self.snapshot()
            if snap != self.last:
                self.last = snap
                event = snap | {"at": iso(self.rb.clock.now())}
                for queue in list(self.subscribers):
                    queue.put_nowait(event)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
        for queue in list(self.subscribers):
            queue.put_nowait(None)


def guard_token() -> str:
    token = os.environ.get(TOKEN_ENV, "")
    if len(token) < 16:
        raise ConfigError(
            f"the guard service needs {TOKEN_ENV} in the environment: a shared secret of at"
            " least 16 characters that every trading system sends as `Authorization: Bearer`"
        )
    return token


class GuardService:
    def __init__(self, rb: Rollbot, token: str) -> None:
        self.rb = rb
        self._token = token.encode()
        self.refused = RefusedRequests(rb)
        self.watch = StateWatch(rb)
        self.stop_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.bound_port: int | None = None
        self.socket_path: Path | None = None

    # -- the app ----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_post("/guard", self.check)
        app.router.add_post("/guard/release", self.release)
        app.router.add_get("/guard/events", self.events)
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self._token):
            code = "NO_TOKEN" if not given else "BAD_TOKEN"
            peer = request.remote or "unix"
            self.refused(code, request.path, peer)
            return web.json_response(
                {"error": "missing or wrong bearer token", "code": code},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="rollbot-guard"'},
            )
        return await handler(request)

    async def check(self, request: web.Request) -> web.Response:
        try:
            ask = GuardRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            return bad_request(exc)
        decision = await self.rb.killswitch.guard.check_async(
            ask.venue,
            ask.symbol,
            ask.side,
            ask.quantity,
            position=ask.position,
            account=ask.account,
            strategy=ask.strategy,
            cancel=ask.cancel,
            order_id=ask.order_id,
        )
        return web.Response(body=decision.model_dump_json(), content_type="application/json")

    async def release(self, request: web.Request) -> web.Response:
        try:
            ask = ReleaseRequest.model_validate_json(await request.read())
            released = self.rb.killswitch.guard.release(ask.order_id, ask.reason, ask.venue)
        except (ValidationError, ValueError) as exc:
            return bad_request(exc)
        return web.json_response({"order_id": ask.order_id, "released": released})

    async def events(self, request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self.watch.subscribers.add(queue)
        try:
            first = self.watch.snapshot() | {"at": iso(self.rb.clock.now())}
            await response.write(_sse(first))
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if event is None:
                    break
                await response.write(_sse(event))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watch.subscribers.discard(queue)
        return response

    # -- start and stop ---------------------------------------------------------------------
    async def start(
        self, *, host: str = "127.0.0.1", port: int | None = None, socket: Path | None = None
    ) -> None:
        if port is None and socket is None:
            raise ConfigError("the guard service needs --port, --socket or both")
        self._runner = web.AppRunner(self.app(), shutdown_timeout=1)
        await self._runner.setup()
        if port is not None:
            site = web.TCPSite(self._runner, host, port)
            await site.start()
            sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
            self.bound_port = sockets[0].getsockname()[1] if sockets else port
        if socket is not None:
            _remove_stale_socket(socket)
            await web.UnixSite(self._runner, str(socket)).start()
            socket.chmod(0o600)  # the token still decides; the file mode keeps others off
            self.socket_path = socket
        self._watcher = asyncio.create_task(self.watch.run(self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)
        with contextlib.suppress(Exception):
            self.refused.flush(self.rb.clock.now())
        if self._runner is not None:
            await self._runner.cleanup()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    def describe(self) -> str:
        where = []
        if self.bound_port is not None:
            where.append(f"http://127.0.0.1:{self.bound_port}/guard")
        if self.socket_path is not None:
            where.append(f"unix:{self.socket_path}")
        return "rollbot guard service on " + " and ".join(where)


async def run_alone(
    settings: Settings, *, host: str, port: int | None, socket: Path | None
) -> None:
    """`rollbot guard serve`: until SIGTERM or SIGINT."""
    token = guard_token()
    rb = Rollbot.open(settings, create=False)  # a reader of state never creates the database
    service = GuardService(rb, token)
    await service.start(host=host, port=port, socket=socket)
    print(service.describe(), flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await service.stop()
        await rb.aclose()


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: state\ndata: {json.dumps(event, sort_keys=True)}\n\n".encode()


def _remove_stale_socket(path: Path) -> None:
    """A socket file left by a process that died; anything else at that path is refused."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket: choose another --socket path")
    path.unlink()
