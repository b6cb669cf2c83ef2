"""bench/RESULTS.md from the results dict: the machine, the date, one table row per figure and
how each was measured. What bounds each figure (profiling notes) is kept here in prose, so a
re-run regenerates the numbers without losing the explanation."""

from __future__ import annotations

from typing import Any

from bench import before_after
from bench.common import Figure

ANALYSIS = """\
## What bounds each figure

Profiled with py-spy (the `rollbot serve` process) and pyinstrument (in-process runs).

- **Ack latency.** Per request the bot spends roughly 0.7-1.3 ms of CPU before the ack:
  aiohttp's parsing, the signature check, bolt's middleware and dispatch, and our listener
  (/kill: two SQLite write transactions, then the escalation hook; /positions acks before
  touching any venue). Bolt hands an ack to the HTTP response on its 10 ms poll, and one
  asyncio loop takes a burst's requests in arrival order, so a burst's acks leave together once
  the whole burst has been handled: the median sits close to the p99, and the figure is about
  the *Bot CPU time per burst* row plus up to 10 ms. That row does not depend on what else the
  machine runs; the latency does: on the shared two-core development machine, runs made while
  other test suites were running gave a p99 of 50-200 ms with the bot's own CPU per burst
  unchanged at 35-70 ms. On a core of its own the target holds with about 2x margin.
  The sender is lean on purpose (bench/sender.py): FakeSlack.http_slash_command opens a new
  HTTP session per request, and against a do-nothing server it alone took 45 ms (median) to
  110 ms (max) to get 50 concurrent requests answered.
  *The p99 spikes (h-perf, found with a gc.callbacks log in the bot):* generation-2 garbage
  collections. Start-up leaves ~80,000 tracked objects (modules, pydantic schemas, bolt, the
  config) that live as long as the process; every full collection walked all of them with the
  loop stopped: 43-75 ms of CPU, 100-450 ms wall on the loaded machine, one every few bursts,
  landing in the middle of one. `rollbot serve` now runs gc.collect(); gc.freeze() once it is
  ready: a full collection walks only what was made since, 4-8 ms of CPU. Second cause, in every
  burst: bolt's `respond()` opened an aiohttp session and a TCP connection (a resolver thread
  included) per /positions reply and closed both, a third of the listeners' CPU, on the loop
  that acks the rest of the burst; replies now go over the bot's pooled session (bot/slack/
  app.py `pooled`). Bot CPU per burst (10 bursts; four runs each of the branch point cdcf152
  and h-perf, back to back on the same shared machine, load 4-13): median 70-130 -> 70-105 ms,
  p99 147-185 -> 110-150 ms. The ack figure itself cannot be judged on that machine (p99 287-780
  ms before, 364-578 ms after: the bot had half a core). What remains per burst is ~1.4 ms of
  CPU per request (aiohttp, the signature,
  bolt, two SQLite write transactions per /kill, the escalation hook after the ack) plus bolt's
  10 ms ack poll, one per pending request.
  *Acks first (issue 18, this session).* A slow-callback log in the bot showed the burst's later
  acks waiting behind work its earlier requests had started: response_url posts, the courier's
  thread messages, each kill's run, the clock's jobs. bolt now answers at the ack
  (process_before_response; `listen` returns when the handler acks and the handler runs on as a
  task), and that work waits while requests still wait for their ack (bot/slack/acks_first.py;
  a kill's run at most 0.1 s). Quiet machine, 10 bursts of 50: median 95-104 -> 44-49 ms, p99
  126-146 -> 64-87 ms; bot CPU per burst 105 -> 50 ms. What is left is the requests' own work.
- **Kill latency.** The guard refuses as soon as the hold is stored, before the ack. Cancelling
  is one global-cancel message per venue (like IB's reqGlobalCancel), sent to the three venues
  at once: an account read and the cancel, two 25 ms round trips, plus one SQLite transaction
  that cancels a venue's ~333 orders. The engine then reads the open orders back (a third round
  trip) before step 1 ends.
- **Flatten under pacing.** The venue's token bucket has capacity 1, so closing orders leave
  evenly spaced 1/rate apart: the pacing bound (positions / rate) is also the floor. The engine
  keeps 16 orders in flight, so round trips and SQLite writes hide under the spacing (a run
  spends ~0.4 s of CPU in ~4.2 s). What is above the bound is the event loop's timer lateness:
  each wait for the next token ends a fraction of a millisecond late (20.6 ms spacing measured
  for 20 ms), and a capacity-1 bucket cannot bank the difference; plus the last round trip and
  the read-back that proves the book flat.
- **Full rollback.** Without a pacing limit, 200 positions over three venues close in a few
  rounds of 16 concurrent orders per venue; every other step is a handful of 25 ms round trips.
  The seed's targets (10 / 20 / 30 / 120 / 180 s) are two orders of magnitude away.
- **Escalation timers.** The clock keeps one APScheduler date job per pending deadline and
  re-reads the timers table every second, so firing lag is the event loop's lateness: a few
  milliseconds, with a tail when the loop is busy delivering pages. A deadline set less than a
  second ahead by another process can be found up to a second late (the benchmark's waits are
  3 s). After a restart the clock fires everything overdue in one pass before anything else;
  from exec, the interpreter start and imports dominate.
- **Footprint.** Start-to-ready is the interpreter start plus imports (slack-bolt, aiohttp,
  pydantic, sqlite-utils), the config, SQLite migrations and one auth.test; venue libraries
  (ccxt, ib_async) are imported only when configured, and the paper venue is built on first use.
- **Scale (issue 18).** The history database holds 10,000 closed incidents and ~1,000,000
  events (bench/history.py). Before the fix the clock's sweep, at start and every 30 s (every
  1 s in the benchmark), re-read every acknowledged escalation's step reports, one write
  transaction per past incident, and ran json_extract over every step report: 1.3 s per sweep
  in process at load ~9, all of it on the event loop, so acks and the risk monitor's venue
  reads waited behind it (the monitor reported the paper venues unreadable). It now reads the
  open incidents only, through partial indexes named with INDEXED BY: ~0.2 ms on the same
  database. The 50,000-order kill spent its time (pyinstrument) building an Order model and a
  venue event per cancelled order, kept in memory until the monitor drained them (RSS 216 MiB),
  and one UPDATE per order, all on the loop. Each venue's global cancel is now one
  transaction in a worker thread on its own connection: the ids read as one string
  (group_concat) and one UPDATE, so the thread holds the GIL twice, not once per order
  (UPDATE ... RETURNING made the loop wait for the GIL 5,000 times per venue). About 0.2 s
  of CPU in all for the bot's side of the kill, most of it SQLite rewriting 50,000 rows; on
  two shared cores the wall time above that is waiting for a core. What remains above the
  floor of two round trips is that CPU. A close read every mark in the book (n^1.4-1.7 for a
  rollback); it reads one now, and a 2,000-position rollback grows with exponent ~1: per
  close the engine writes its intent, two events and three book transactions.
- **The pre-trade guard (h-perf).** A check is three stat() calls (the database file, moved or
  replaced, and the two gates files) and one `PRAGMA data_version` (a read transaction: two
  fcntl locks), plus the decision: five system calls, and on this virtual machine each has a
  wall-clock tail of its own (a bare stat(): median 1.7 us, p99 12 us at load 6), so the p99
  follows the machine's load more than the code. CPython builds a stat_result with three
  nanosecond integers per stat (~4,800 instructions each). Cut: check_order passed its
  parameters as **kw, a dict built and unpacked twice per check (check_order -> Guard.check ->
  _decide); now by position; the default position is a shared Decimal zero and the gates' stats
  are made inline. callgrind, one ACTIVE check: 59,300 -> 49,000 instructions. In-process p99
  on the shared machine (load 5-13): 23-165 us before, 19-33 us after; the target needs a
  quieter machine or fewer system calls (each is what makes a change seen at once).
  *Fewer system calls (this session):* the three stat() calls are now one ioctl per file set
  (rollbot/file_watch.py): the kernel's inotify queue says whether anything along the paths
  changed, queued in the very call that changed it, so the answer is as fresh as a stat.
  Quiet machine: median 10-16 -> 5.5-6 us, p99 27-30 -> 11-15 us (ACTIVE). What is left is the
  `PRAGMA data_version` (2.5-4.5 us here, more with a long WAL) and the decision; after 2,000
  changes by another connection (the HALTED row runs then) a check takes 7.5-9.8 us median.
  The guard *service* spent 55 ms of CPU per second on its state watch whether or not anybody
  streamed (asyncio.wait_for every 10 ms: a task, a timer, a cancellation), each look up to
  0.5 ms in front of the checks; it now looks only while an event stream is open. Server CPU
  per check at 5,000/s: 55-75 -> 46-50 us (the bare asyncio floor: 12-25 us). Its p99 on the
  loaded machine was 6-26 ms for both, and for the bare floor server too (2-24 ms): the machine,
  not the service, decided those runs.
  *No SQL per check (next session):* what moves on every commit is SQLite's wal-index header,
  the first 96 bytes of the `-shm` file, and a commit is visible to readers only once that is
  written; the guard reads it with one pread(2) (~0.5 us) and asks SQL only when it moved
  (storage/wal_index.py). Median ~6 -> 3.7 us, p99 18-23 -> 7-10 us, and no longer growing with
  the WAL (the HALTED row, measured after 2,000 commits by another connection, equals ACTIVE).
- **The kill on PostgreSQL.** Each statement is a round trip to a server on the same two
  cores: 120-220 us under a burst, of which psycopg's own Python is ~40 us of the bot's CPU.
  *Before an ack* a burst of 50 ran 500 statements: per request a delivery record (BEGIN and
  the writers' lock, INSERT, COMMIT) and per kill a hold transaction of 12. Now ~230: the
  delivery records that arrive together are one INSERT ... ON CONFLICT DO NOTHING RETURNING key
  without the writers' lock (bot/slack/deliveries.py; the unique key picks the one winner), the
  hold and the incident come back from RETURNING, the dedupe check and the next incident number
  are one query, the chain's head comes with BEGIN, and a transaction's second event links on
  from its first without reading the head again (9 round trips per kill). Ack p99 167 -> 93-130
  ms over five runs on a quiet machine (one at 327 ms right after a test run): the target (100
  ms) is met in some runs and not in others. The SQL time of a burst (30-65 ms for the same
  statements) varies from burst to burst with the server's share of the two cores, which it
  shares with the bot and the client (no autovacuum or checkpoint ran meanwhile: logged);
  the first burst after start is the slowest (statements not yet prepared).
  *Kills stored together (next session):* the kills that reach their hold in one pass of the
  event loop share one transaction of one statement per table (bot/slack/pass_batch.py,
  store_held_incidents): a burst's ~230 statements before its last ack became 10-31, and its
  SQL time 60-150 -> 13-28 ms on a slower day of this machine. What was left was psycopg's own
  parse of each many-row INSERT (a regex pass, ~0.8 ms: psycopg caches it only for statements
  of at most 50 parameters); positional statements now go as `$n` through psycopg's RawCursor,
  unparsed. Ack p99 on that day: 150-220 -> 80-105 (batched) -> 65-82 ms (unparsed), three
  runs each; SQLite's 73 -> 60 ms with it.
  *Break glass:* `rollbot kill trigger` imported psycopg (130-160 ms alone); it now stores the
  hold through libpq itself over ctypes (storage/libpq.py, the libpq psycopg's binary wheel
  ships): exec to hold stored p99 303 -> 80-102 ms.

## Found while profiling (not changed by the benchmarks)

Measured when this section was written; re-check after changing the code involved.

- `storage/db.py` imports sqlite-utils (which imports numpy) for `Database.utils`, which
  nothing uses: about 13 MiB of the ~80 MiB idle RSS and ~0.1 s of the start.
- Every kill's step 2 rewrites both gate files with fsync even when they already read as shadow
  mode: ~5 ms of blocked event loop per kill, 22 % of the bot's busy time in a storm of 50 kills.
- slack-sdk's AsyncWebClient opens and closes a TCP connection per API call (no shared
  session): about half of the courier's time in a storm, and the courier is about a third of
  the bot's busy time there. (Since fixed: `rollbot serve` gives the client one pooled session,
  and bolt's `respond()` goes over it too.)
- The guard could not skip `PRAGMA data_version` by reading SQLite's WAL-index header from a
  memory map of the `-shm` file (tried on h-perf, reverted): a descriptor of that file, closed
  (Python 3.11's mmap keeps a dup and closes it later), drops every POSIX lock the process holds
  on it, SQLite's included; another process then rebuilt the index and the bot died. It now
  reads that header with pread(2) from one descriptor per file that is never closed
  (`storage/wal_index.py`; a test checks SQLite's lock outlives every guard that read it):
  in-process median ~6 -> ~3.6-5.8 us, p99 ~18-23 -> ~7-10 us (quick runs on a quiet machine).
- `Courier.run`, cancelled while it waits, leaves its two `Event.wait` tasks pending: the
  "Task was destroyed but it is pending!" lines in `make bench`'s output.
"""


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:.4g} {unit}"


def _row(f: Figure) -> str:
    if f.target is None:
        target, ratio, verdict = "—", "—", "info"
    else:
        target = f.target_text or _fmt(f.target, f.unit)
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else "—"
        verdict = "✅ met" if f.ok else "❌ **missed**"
    return (
        f"| {f.title} | {f.runs} | {_fmt(f.median, f.unit)} | {_fmt(f.p99, f.unit)} |"
        f" {target} | {ratio} | {verdict} |"
    )


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    load = ", ".join(str(x) for x in m["load_average_at_start"])
    end = ", ".join(str(x) for x in results.get("load_average_at_end", [])) or "?"
    lines = [
        "# rollbot benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.run`); the raw samples are in"
        " [results.json](results.json). Issue 10 sets the targets.",
        "",
        f"- **Date:** {m['date']}",
        f"- **Machine:** {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM;"
        f" {m['os']}; load average at start {load}, at end {end}",
        f"- **Python:** {m['implementation']} {m['python']}",
        f"- **Commit:** {m['commit'] or 'unknown'} (working tree as run)",
        f"- **Run time:** {results['seconds']:.0f} s",
        "",
    ]
    if results["misses"]:
        lines.append(f"**{len(results['misses'])} target(s) missed:**")
        lines.append("")
        lines += [f"- {miss}" for miss in results["misses"]]
    else:
        lines.append("**Every target met.**")
    lines += [
        "",
        "Each figure is measured over repeated runs; the target is judged on the p99 (with few"
        " runs, the p99 is close to the slowest run). Ratio = p99 / target: 1.00 or less meets"
        " it. Rows marked *info* have no target of their own.",
        "",
    ]
    # in the order, whatever order they ran in
    for bench in sorted(results["benchmarks"], key=lambda b: b["title"]):
        lines += [f"## {bench['title']}", ""]
        if bench["error"]:
            lines += [f"**Did not run:** `{bench['error']}`", ""]
        figures = [Figure.model_validate(f) for f in bench["figures"]]
        if figures:
            lines += [
                "| Figure | Runs | Median | p99 | Target | Ratio | |",
                "|---|---:|---:|---:|---|---:|---|",
                *(_row(f) for f in figures),
                "",
            ]
            notes = [f"- *{f.title}*: {f.note}" for f in figures if f.note]
            lines += [*notes, ""] if notes else []
        load = bench.get("load_average_at_start")
        lines.append(
            f"({bench['seconds']:.1f} s"
            + (f"; 1-min load average at its start {load}" if load is not None else "")
            + ")"
        )
        lines.append("")
    lines += before_after.section(results)
    lines.append(ANALYSIS)
    return "\n".join(lines)
