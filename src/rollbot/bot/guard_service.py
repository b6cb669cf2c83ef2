"""The guard service, for trading systems in any language: `POST /guard` answers the same
decision JSON as `check_order` (same code), `POST /guard/release` gives back what a done order
reserved, and `GET /guard/events` streams trading-state changes as server-sent events, so a
trading system stops the moment a hold is stored, without polling. Over HTTP and a Unix socket;
every request carries `Authorization: Bearer $ROLLBOT_GUARD_TOKEN`.

Wire format: README "The guard service"."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import signal
import stat
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from rollbot.bot.guard_http import Connection, Request, answer
from rollbot.clock import iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.guard import (
    ALLOWED,
    CANCEL,
    HALTED,
    Decision,
    GateCache,
    StateCache,
    refuse,
)
from rollbot.config import Settings
from rollbot.errors import ConfigError
from rollbot.storage.events import Actor

log = logging.getLogger(__name__)

TOKEN_ENV = "ROLLBOT_GUARD_TOKEN"
WATCH_INTERVAL_S = 0.01  # while a stream is open: three stats and a header read per look
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


def bad_request(exc: ValidationError | ValueError) -> dict[str, Any]:
    """The 400 body naming the field: the first one wrong, and every problem in `errors`."""
    if isinstance(exc, ValidationError):
        errors = []  # a union's alternatives (quantity.int, quantity.str) are one field
        for e in exc.errors():
            field = str(e["loc"][0]) if e["loc"] else "body"
            if not any(x["field"] == field for x in errors):
                errors.append({"field": field, "problem": e["msg"]})
    else:
        errors = [{"field": "body", "problem": str(exc)}]
    first = errors[0]
    return {
        "error": f"{first['field']}: {first['problem']}",
        "field": first["field"],
        "errors": errors,
    }


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
    """Trading state per scope and the gates, looked at every WATCH_INTERVAL_S while an event
    stream is open; each change is written to every open stream. With none open it sleeps until
    the first comes: a look costs the loop a wake-up (0.1-0.5 ms of CPU on a shared machine),
    and 100 of them a second, for nobody, stood in front of the checks (bench/guard_latency.py)."""

    def __init__(self, rb: Rollbot) -> None:
        self.rb = rb
        self.states = StateCache(rb.db)
        self.gates = GateCache(rb.gates)
        self.subscribers: set[Connection] = set()
        self.last: dict[str, Any] | None = None
        self.wake = asyncio.Event()  # a first subscriber, or stop

    def subscribe(self, conn: Connection) -> None:
        """The stream opens with the state as it is now; the watch sends what changes after."""
        snap = self.snapshot()
        conn.start_stream(_sse(snap | {"at": iso(self.rb.clock.now())}))
        if not self.subscribers:  # nobody else listens: nobody else waits for this change
            self.last = snap
        self.subscribers.add(conn)
        self.wake.set()

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
        quiet = 0.0
        while not stop.is_set():
            if not self.subscribers:
                self.wake.clear()
                await self.wake.wait()
                continue
            snap = self.snapshot()
            if snap != self.last:
                self.last = snap
                event = _sse(snap | {"at": iso(self.rb.clock.now())})
                for conn in list(self.subscribers):
                    conn.write(event)
                quiet = 0.0
            elif quiet >= KEEPALIVE_S:  # proxies and clients see a live stream
                for conn in list(self.subscribers):
                    conn.write(b": keep-alive\n\n")
                quiet = 0.0
            await asyncio.sleep(WATCH_INTERVAL_S)  # a plain sleep: wait_for costs a task
            quiet += WATCH_INTERVAL_S


def guard_token() -> str:
    from rollbot.secrets import secret

    token = secret(TOKEN_ENV) or ""
    if len(token) < 16:
        raise ConfigError(
            f"the guard service needs {TOKEN_ENV} in the environment (or .env): a shared secret"
            " of at least 16 characters that every trading system sends as `Authorization:"
            " Bearer`"
        )
    return token


class GuardService:
    def __init__(self, rb: Rollbot, token: str) -> None:
        self.rb = rb
        self._token = token.encode()
        self.refused = RefusedRequests(rb)
        self.watch = StateWatch(rb)
        self.stop_event = asyncio.Event()
        self.connections: set[Connection] = set()  # to close them all on stop
        self.heads: dict[bytes, Request] = {}  # parsed and token-checked once (guard_http)
        self._servers: list[asyncio.base_events.Server] = []
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.bound_port: int | None = None
        self.socket_path: Path | None = None

    # -- requests ---------------------------------------------------------------------------
    def lost(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.watch.subscribers.discard(conn)

    def handle(self, conn: Connection, req: Request, body: bytes) -> None:
        if req.authorized is None:  # the same head comes back with every check: checked once
            scheme, _, token = req.headers.get("authorization", "").partition(" ")
            req.authorized = scheme.lower() == "bearer" and hmac.compare_digest(
                token.encode(), self._token
            )
        if not req.authorized:
            given = req.headers.get("authorization", "")
            code = "NO_TOKEN" if not given else "BAD_TOKEN"
            peer = conn.transport.get_extra_info("peername") if conn.transport else None
            self.refused(code, req.path, str(peer) if peer else "unix")
            conn.reply(
                401,
                {"error": "missing or wrong bearer token", "code": code},
                keep=req.keep,
                extra='WWW-Authenticate: Bearer realm="rollbot-guard"\r\n',
            )
            return
        route = ROUTES.get(req.path)
        if route is None:
            conn.reply(404, {"error": f"no route {req.path[:100]}"}, keep=req.keep)
        elif route[0] != req.method:
            conn.reply(405, {"error": f"{req.path} takes {route[0]}"}, keep=req.keep)
        else:
            try:
                route[1](self, conn, req, body)
            except Exception as exc:  # fail closed, in the decision's own shape
                log.exception("guard request failed")
                refused = refuse("STATE_UNAVAILABLE", f"the guard could not decide: {exc}")
                conn.reply(200, refused.model_dump_json().encode(), keep=req.keep)

    def check(self, conn: Connection, req: Request, body: bytes) -> None:
        try:
            ask = GuardRequest.model_validate_json(body)
        except ValidationError as exc:
            conn.reply(400, bad_request(exc), keep=req.keep)
            return
        kw = {
            "position": ask.position,
            "account": ask.account,
            "strategy": ask.strategy,
            "cancel": ask.cancel,
            "order_id": ask.order_id,
        }
        guard = self.rb.killswitch.guard
        decision = guard.check_now(ask.venue, ask.symbol, ask.side, ask.quantity, **kw)
        if decision is not None:
            whole = _KEPT.get(id(decision)) if req.keep else None
            if whole is not None:  # OK, HALTED, cancel: the whole answer is encoded once
                conn.write(whole)
            else:
                conn.reply(200, _json(decision), keep=req.keep)
            return
        conn.waiting = True  # the venue is read first; this connection's next request waits

        async def later() -> None:
            try:
                d = await guard.check_async(ask.venue, ask.symbol, ask.side, ask.quantity, **kw)
                conn.reply(200, _json(d), keep=req.keep)
            finally:
                conn.waiting = False
                conn.process()

        task = asyncio.get_running_loop().create_task(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def release(self, conn: Connection, req: Request, body: bytes) -> None:
        try:
            ask = ReleaseRequest.model_validate_json(body)
            released = self.rb.killswitch.guard.release(ask.order_id, ask.reason, ask.venue)
        except (ValidationError, ValueError) as exc:
            conn.reply(400, bad_request(exc), keep=req.keep)
            return
        conn.reply(200, {"order_id": ask.order_id, "released": released}, keep=req.keep)

    def events(self, conn: Connection, req: Request, body: bytes) -> None:
        self.watch.subscribe(conn)

    # -- start and stop ---------------------------------------------------------------------
    async def start(
        self, *, host: str = "127.0.0.1", port: int | None = None, socket: Path | None = None
    ) -> None:
        if port is None and socket is None:
            raise ConfigError("the guard service needs --port, --socket or both")
        loop = asyncio.get_running_loop()
        if port is not None:
            server = await loop.create_server(lambda: Connection(self), host, port)
            self._servers.append(server)
            self.bound_port = server.sockets[0].getsockname()[1]
        if socket is not None:
            _remove_stale_socket(socket)
            server = await loop.create_unix_server(lambda: Connection(self), str(socket))
            self._servers.append(server)
            socket.chmod(0o600)  # the token still decides; the file mode keeps others off
            self.socket_path = socket
        self._watcher = asyncio.create_task(self.watch.run(self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        self.watch.wake.set()
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
        for server in self._servers:
            await server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            self.refused.flush(self.rb.clock.now())
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    def describe(self) -> str:
        where = []
        if self.bound_port is not None:
            where.append(f"http://127.0.0.1:{self.bound_port}/guard")
        if self.socket_path is not None:
            where.append(f"unix:{self.socket_path}")
        return "rollbot guard service on " + " and ".join(where)


ROUTES: dict[str, tuple[str, Any]] = {
    "/guard": ("POST", GuardService.check),
    "/guard/release": ("POST", GuardService.release),
    "/guard/events": ("GET", GuardService.events),
}


async def run_alone(
    settings: Settings, *, host: str, port: int | None, socket: Path | None
) -> None:
    """`rollbot guard serve`: until SIGTERM or SIGINT."""
    token = guard_token()
    rb = Rollbot.open(settings, create=False)  # a reader of state never creates the database
    service = GuardService(rb, token)
    await service.start(host=host, port=port, socket=socket)
    # What start-up allocated (modules, pydantic schemas, the config) is never freed: out of the
    # collector's reach, a full collection no longer walks it in the middle of a check (the
    # service's p99 at 5,000 checks/s, bench/guard_latency.py)
    gc.collect()
    gc.freeze()
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


_SHARED = {id(d): d.model_dump_json().encode() for d in (ALLOWED, HALTED, CANCEL)}


_KEPT = {key: answer(200, body, keep=True) for key, body in _SHARED.items()}


def _json(decision: Decision) -> bytes:
    """The shared answers (OK, HALTED, cancel) are encoded once."""
    return _SHARED.get(id(decision)) or decision.model_dump_json().encode()


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
