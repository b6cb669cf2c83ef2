"""Figure 7 — the pre-trade guard (issue 18.3).

In-process: `check_order` per call, ACTIVE and HALTED (target p99 <= 20 us), and the first call
after another connection stored a hold (the cache is re-read: what "state changes are seen at
once" costs). Its floor is one read of SQLite's wal-index header (storage/wal_index.py), what
every check must pay to never answer from a stale cache. Service: `rollbot guard serve --socket`
as a real subprocess, driven open-loop at 5,000 checks/s, evenly spaced, over its Unix socket by
keep-alive connections; the time from each request's send to its whole answer read by the client
(target p99 <= 1 ms). The client is a raw-socket loop (`_drive`) so that its own cost takes as
little as possible of the 2 cores; the note gives both sides' CPU per check, and the same
client's figure against a bare asyncio server (FLOOR_SERVER): what this machine gives any Python
server.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import select
import socket
import sys
import time
from pathlib import Path

from bench.common import Figure, Sizes, settings_for
from bench.serve_process import config_toml
from rollbot.bot.guard_http import answer
from rollbot.brokers.base import Side
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.guard import ALLOWED
from rollbot.config import PaperVenueConfig
from rollbot.storage.events import Actor

TOKEN = "bench-guard-token-0123456789abcdef"
BENCH = Actor(id="bench", source="system")
RATE = 5000  # checks per second over the service
CONNECTIONS = 8


def _inprocess(rb: Rollbot, calls: int) -> list[float]:
    check = rb.killswitch.check_order
    for _ in range(1000):  # warm: caches filled, code paths hot
        check("paper1", "AAPL", Side.BUY, 10)
    out = []
    perf = time.perf_counter_ns
    for _ in range(calls):
        t0 = perf()
        check("paper1", "AAPL", Side.BUY, 10)
        out.append((perf() - t0) / 1000)
    return out


def _cpu_per_call(rb: Rollbot, calls: int) -> list[float]:
    """The guard's own CPU per call (this thread's clock): what it costs whatever else the
    machine runs, beside the wall-clock figure that a loaded machine's scheduling inflates."""
    check = rb.killswitch.check_order
    clock = time.thread_time_ns
    out = []
    for _ in range(calls):
        t0 = clock()
        check("paper1", "AAPL", Side.BUY, 10)
        out.append((clock() - t0) / 1000)
    return out


def _after_change(rb: Rollbot, other: Rollbot, runs: int) -> list[float]:
    """Another connection commits (a hold set, then cleared); the next check must see it."""
    out = []
    for i in range(runs):
        scope = f"strategy:bench{i % 2}"
        other.killswitch.trigger(scope, "bench", BENCH)
        t0 = time.perf_counter_ns()
        rb.killswitch.check_order("paper1", "AAPL", Side.BUY, 10)
        out.append((time.perf_counter_ns() - t0) / 1000)
        other.killswitch.clear(scope, "bench", BENCH)
    return out


def _floor(rb: Rollbot, calls: int) -> tuple[list[float], str]:
    """What every check pays to know nothing was committed: the wal-index header's read, or
    SQLite's `PRAGMA data_version` where the guard cannot use the header (then said so)."""
    head = rb.killswitch.guard.state_cache.head
    conn = rb.db.conn
    if head is not None and head.read() is not None:
        ask, what = head.read, "one read of the wal-index header"
    else:
        ask = conn.execute("PRAGMA data_version").fetchone
        what = "one PRAGMA data_version (the wal-index header is not used here)"
    out = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        ask()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out, what


REQUEST = json.dumps({"venue": "paper1", "symbol": "AAPL", "side": "BUY", "quantity": 10}).encode()
HTTP = (
    b"POST /guard HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    b"Content-Length: " + str(len(REQUEST)).encode() + b"\r\n\r\n" + REQUEST
)


def _drive(socket_path: Path, seconds: float, rate: float) -> tuple[list[float], int]:
    """The load generator, as cheap as a Python client can be so that on a 2-core machine it
    takes as little as possible from the server it measures: blocking-free raw sockets, one
    pre-encoded request, one select() per wake. Open loop on an even schedule: request k is due
    at start + k / rate, on connection k % CONNECTIONS. Each connection has one request in
    flight; one still unanswered when its next is due delays that send (counted as late, and
    timed from its actual send). Returns (send-to-answer times in us, late sends)."""
    socks = []
    for _ in range(CONNECTIONS):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(socket_path))
        s.setblocking(False)
        socks.append(s)
    perf = time.perf_counter
    times: list[float] = []
    sent: dict[socket.socket, float] = {}
    bufs = {s: b"" for s in socks}
    total = int(seconds * rate)
    every = 1 / rate
    late = k = 0
    collecting = gc.isenabled()
    gc.disable()  # a collection here would be the client's pause, timed as the server's
    start = perf() + 0.001
    try:
        while k < total or sent:
            now = perf()
            while k < total and start + k * every <= now:
                s = socks[k % CONNECTIONS]
                if s in sent:
                    break
                if now - (start + k * every) > 1e-4:
                    late += 1
                s.send(HTTP)
                sent[s] = perf()
                k += 1
            wait = max(0.0, start + k * every - perf()) if k < total else 1.0
            if not sent:
                time.sleep(wait)
                continue
            ready, _, _ = select.select(list(sent), [], [], wait)
            for s in ready:
                data = s.recv(65536)
                got = perf()
                if not data:
                    raise RuntimeError("the guard service closed a connection")
                buf = bufs[s] + data
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    bufs[s] = buf
                    continue
                at = buf.find(b"Content-Length: ", 0, end) + 16
                length = int(buf[at : buf.index(b"\r\n", at)])
                if len(buf) < end + 4 + length:
                    bufs[s] = buf
                    continue
                body = buf[end + 4 : end + 4 + length]
                if b'"code":"OK"' not in body:
                    raise RuntimeError(f"unexpected answer {buf!r}")
                bufs[s] = buf[end + 4 + length :]
                times.append((got - sent.pop(s)) * 1e6)
    finally:
        if collecting:
            gc.enable()
        for s in socks:
            s.close()
    return times, late


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (what the server spent, whatever the load)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The floor beside the service's figure: an asyncio server on the same kind of socket answering
# every request at once with the guard's own OK bytes, driven by the same client at the same
# rate. What is left of the service's latency above it is the guard's; what the floor shows is
# the machine's (its scheduling, the other processes on its 2 cores) and the client's.
FLOOR_SERVER = """
import asyncio, sys
WHOLE = sys.argv[2].encode("latin-1")
class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(WHOLE * data.count(b"POST "))
async def main():
    await asyncio.get_running_loop().create_unix_server(Answer, sys.argv[1])
    print("guard service on (floor)", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def _service(
    socket: Path, argv: list[str], env: dict[str, str], seconds: float
) -> tuple[list[float], float, float, float, int]:
    """(latencies in us, achieved checks/s, server and client CPU us per check, late sends)
    against the server `argv` starts in its own process."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if b"guard service on" not in line:
            err = await proc.stderr.read() if proc.stderr else b""
            raise RuntimeError(f"guard serve did not start: {line!r} {err[-500:]!r}")
        await asyncio.to_thread(_drive, socket, 0.3, 1000)  # warm
        cpu0 = _cpu_seconds(proc.pid)
        client0 = time.process_time()
        started = time.perf_counter()
        times, late = await asyncio.to_thread(_drive, socket, seconds, RATE)
        rate = len(times) / (time.perf_counter() - started)
        cpu = (_cpu_seconds(proc.pid) - cpu0) / len(times) * 1e6
        client = (time.process_time() - client0) / len(times) * 1e6
        return times, rate, cpu, client, late
    finally:
        proc.terminate()
        await proc.wait()


async def run(sizes: Sizes, workdir: Path) -> list[Figure]:
    full = sizes == Sizes.full()
    calls = 10_000 if full else 300
    root = workdir
    root.mkdir(parents=True, exist_ok=True)
    venues = [PaperVenueConfig(name="paper1", book_path=root / "paper1.db")]
    settings = settings_for(root, venues)
    (root / "rollbot.toml").write_text(config_toml(root, venues), "utf-8")
    rb = Rollbot.open(settings)
    other = Rollbot.open(settings)
    try:
        rb.gates.arm(BENCH, "bench: live, so ACTIVE answers OK")
        rb.killswitch.trigger("strategy:elsewhere", "bench: one unrelated hold", BENCH)
        active = _inprocess(rb, calls)
        watched = rb.killswitch.guard.watched
        cpu = _cpu_per_call(rb, calls)
        after = _after_change(rb, other, 2000 if full else 20)
        floor, floor_what = _floor(rb, calls)
        other.killswitch.trigger("venue:paper1", "bench: halted", BENCH)
        assert rb.killswitch.check_order("paper1", "AAPL", Side.BUY, 1).code == "HALTED"
        halted_check = rb.killswitch.check_order
        halted = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            halted_check("paper1", "AAPL", Side.BUY, 10)
            halted.append((time.perf_counter_ns() - t0) / 1000)
        other.killswitch.clear("venue:paper1", "bench: live again", BENCH)
    finally:
        rb.db.close()
        other.db.close()
    seconds = 3.0 if full else 0.3
    socket = root / "guard.sock"
    env = {**os.environ, "ROLLBOT_CONFIG": str(root / "rollbot.toml"), "ROLLBOT_GUARD_TOKEN": TOKEN}
    serve = [sys.executable, "-m", "rollbot.bot.cli", "guard", "serve", "--socket", str(socket)]
    service, achieved, cpu_per_check, client_cpu, late = await _service(socket, serve, env, seconds)
    whole = answer(200, ALLOWED.model_dump_json().encode(), keep=True).decode("latin-1")
    floor_socket = root / "floor.sock"
    floor_argv = [sys.executable, "-c", FLOOR_SERVER, str(floor_socket), whole]
    bare, _, bare_cpu, _, bare_late = await _service(floor_socket, floor_argv, env, seconds)
    bare_p99 = sorted(bare)[int(len(bare) * 0.99)]
    floor_p99 = sorted(floor)[int(len(floor) * 0.99)]
    load = os.getloadavg()[0]
    return [
        Figure(
            key="guard_inprocess",
            title="Guard in-process check_order (ACTIVE)",
            unit="us",
            samples=active,
            target=20,
            target_text="p99 <= 20 us",
            bound=floor_p99,
            note=f"floor: {floor_what}, p99 {floor_p99:.1f} us; files watched"
            f" by the kernel: {'yes' if watched else 'no, stat per check'}; load {load:.1f}",
        ),
        Figure(
            key="guard_inprocess_cpu",
            title="Guard in-process check_order, CPU time per call (ACTIVE)",
            unit="us",
            samples=cpu,
            note="thread CPU clock: the cost without the machine's other load",
        ),
        Figure(
            key="guard_inprocess_halted",
            title="Guard in-process check_order (HALTED)",
            unit="us",
            samples=halted,
            target=20,
            target_text="p99 <= 20 us",
        ),
        Figure(
            key="guard_after_change",
            title="Guard: first check after another process stored a hold",
            unit="us",
            samples=after,
            note="the cache is re-read; the answer is never stale",
        ),
        Figure(
            key="guard_service",
            title=f"Guard service POST /guard over its Unix socket at {RATE}/s",
            unit="us",
            samples=service,
            target=1000,
            target_text="p99 <= 1 ms",
            bound=bare_p99,
            note=f"achieved {achieved:,.0f} checks/s, evenly spaced over {CONNECTIONS} keep-alive"
            f" connections ({late} sent late); CPU per check: server {cpu_per_check:.0f} us,"
            f" client {client_cpu:.0f} us; floor: a bare asyncio server answering the same bytes,"
            f" same client and rate, p99 {bare_p99:.0f} us ({bare_late} sent late, its CPU"
            f" {bare_cpu:.0f} us per answer); load {load:.1f}",
        ),
    ]
