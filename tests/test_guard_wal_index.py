"""The guard learns of a commit from the wal-index header's bytes (storage/wal_index.py), not
from a `PRAGMA data_version` per order. Every commit by any process is seen by the next check;
a header that cannot be trusted (not SQLite's, torn mid-write, truncated) falls back to asking
SQLite, and never crashes the trading system that calls the guard."""

from __future__ import annotations

import gc
import mmap
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import Gates
from rollbot.config import Settings
from rollbot.storage import wal_index
from rollbot.storage.events import Actor
from rollbot.storage.wal_index import WalIndexHead

ALICE = Actor(id="U0ALICE", source="slack")


class _CountingConn:
    """The guard's connection, counting the `PRAGMA data_version` it is asked."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.data_versions = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if "data_version" in sql:
            self.data_versions += 1
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.fixture
def guarded(settings: Settings) -> tuple[Rollbot, _CountingConn]:
    Gates(settings.paths.live_environment, settings.paths.shadow_config).arm(ALICE, "live")
    rb = Rollbot.open(settings)
    counting = _CountingConn(rb.db.conn)
    rb.db.conn = counting  # type: ignore[assignment]
    assert _code(rb) == "OK"
    assert rb.killswitch.guard.state_cache.head is not None
    assert rb.killswitch.guard.state_cache.head.inode is not None, "the header is read"
    return rb, counting


def _code(rb: Rollbot, venue: str = "paper") -> str:
    return rb.killswitch.check_order(venue, "AAPL", "BUY", 1).code


def test_a_hold_stored_by_another_process_is_seen_by_the_next_check(
    guarded: tuple[Rollbot, _CountingConn], rollbot: Any
) -> None:
    rb, counting = guarded
    done = rollbot("kill", "trigger", "--scope", "venue:paper", "--reason", "another process")
    assert done.returncode == 0, done.stderr
    assert _code(rb) == "HALTED"
    assert counting.data_versions == 0, "answered from the header, not from a pragma per check"


def test_every_commit_by_another_connection_is_seen_by_the_next_check(
    guarded: tuple[Rollbot, _CountingConn], settings: Settings
) -> None:
    rb, counting = guarded
    other = Rollbot.open(settings)
    try:
        for i in range(60):
            scope = "venue:paper" if i % 3 == 0 else f"strategy:s{i}"
            other.killswitch.trigger(scope, f"kill {i}", ALICE)
            held = rb.killswitch.check_order("paper", "AAPL", "BUY", 1, strategy=f"s{i}").code
            assert held == "HALTED", f"commit {i}: the next check answered {held}"
            other.killswitch.clear(scope, f"clear {i}", ALICE)
            assert _code(rb) == "OK", f"commit {i}: the clear was not seen"
    finally:
        other.db.close()
    assert counting.data_versions == 0


def test_a_wal_index_this_process_does_not_map_is_never_trusted(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    Path(str(db) + "-shm").write_bytes(_header() * 2 + bytes(40))
    assert WalIndexHead(db).read() is None, "a file SQLite does not map here could never move"


def test_a_torn_foreign_or_truncated_header_answers_none_without_crashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_index, "RETRY_S", 0.0)
    db = tmp_path / "x.db"
    shm = Path(str(db) + "-shm")
    shm.write_bytes(_header() * 2 + bytes(32768 - 96))
    with open(shm, "r+b") as f, mmap.mmap(f.fileno(), 32768) as mapped:  # "mapped here"
        head = WalIndexHead(db)
        first = head.read()
        assert first is not None
        mapped[48:96] = _header(change=2)  # a writer between the two copies
        assert head.read() is None
        mapped[0:48] = _header(change=2)
        second = head.read()
        assert second is not None and second != first, "a commit moves the bytes"
        mapped[0:96] = _header(version=3007001) * 2
        assert head.read() is None, "another version's header is not read"
        mapped[0:96] = _header(change=3) * 2
        os.truncate(shm, 0)  # under a pread: a short read, never SIGBUS
        assert head.read() is None
        head.forget()


def test_where_the_header_cannot_be_read_sqlite_is_asked_and_the_answer_is_never_stale(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_index, "_mapped_here", lambda dev, inode: False)
    Gates(settings.paths.live_environment, settings.paths.shadow_config).arm(ALICE, "live")
    rb = Rollbot.open(settings)
    other = Rollbot.open(settings)
    counting = _CountingConn(rb.db.conn)
    rb.db.conn = counting  # type: ignore[assignment]
    try:
        assert _code(rb) == "OK"
        other.killswitch.trigger("venue:paper", "no header", ALICE)
        assert _code(rb) == "HALTED"
        assert counting.data_versions == 2, "one pragma per check"
    finally:
        rb.db.close()
        other.db.close()


def _header(change: int = 1, version: int = 3007000) -> bytes:
    """One copy of a wal-index header (walformat.html): iVersion, unused, iChange, isInit,
    bigEndCksum, szPage, mxFrame, nPage, frame checksum, salt, checksum."""
    return struct.pack("=IIIBBHII2I2I2I", version, 0, change, 1, 0, 4096, 5, 2, 0, 0, 1, 2, 3, 4)


DMS_BYTE = 128  # the unix VFS's "dead man switch" lock byte in the -shm (os_unix.c)
PEEK_LOCK = """
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
ask = struct.pack("@hhqqixxxx", fcntl.F_WRLCK, os.SEEK_SET, int(sys.argv[2]), 1, 0)
kind, _, _, _, pid = struct.unpack("@hhqqixxxx", fcntl.fcntl(fd, fcntl.F_GETLK, ask))
print(kind == fcntl.F_RDLCK, pid)
"""


def test_sqlites_locks_on_the_wal_index_outlive_every_guard_that_read_it(
    settings: Settings,
) -> None:
    """POSIX locks are the process's: closing any descriptor of the -shm would drop SQLite's
    own, and another process would then rebuild the index under a live connection."""
    rb = Rollbot.open(settings)
    try:
        assert _code(rb) in {"OK", "LIVE_GATES_DISABLED"}
        for _ in range(3):  # guards come and go over one connection (a service restarted)
            head = WalIndexHead(rb.db.path)
            assert head.read() is not None
            head.forget()
            del head
        rb.killswitch.guard.state_cache.head = None  # type: ignore[assignment]
        gc.collect()
        shm = str(rb.db.path.resolve()) + "-shm"
        peek = [sys.executable, "-c", PEEK_LOCK, shm, str(DMS_BYTE)]
        held, pid = subprocess.run(peek, capture_output=True, text=True).stdout.split()
        assert (held, int(pid)) == ("True", os.getpid()), "SQLite's shared lock is still held"
    finally:
        rb.db.close()


def test_a_process_guarding_many_databases_keeps_a_bounded_number_of_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The descriptors are never closed (SQLite's locks), so they are capped: past the cap a
    database is guarded through `PRAGMA data_version`, still never stale."""
    monkeypatch.setattr(wal_index, "_DESCRIPTORS", {})
    monkeypatch.setattr(wal_index, "_EXTRA", [])
    monkeypatch.setattr(wal_index, "MAX_DESCRIPTORS", 2)
    monkeypatch.setattr(wal_index, "_mapped_here", lambda dev, inode: True)
    heads = []
    for i in range(4):
        db = tmp_path / f"d{i}.db"
        Path(str(db) + "-shm").write_bytes(_header() * 2 + bytes(40))
        heads.append(WalIndexHead(db))
    assert [h.read() is not None for h in heads] == [True, True, False, False]
    assert len(wal_index._DESCRIPTORS) == 2


def test_a_header_that_cannot_be_used_is_looked_for_ever_more_rarely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look reads /proc/self/maps (a millisecond in a large process): a trading system whose
    database's header cannot be used pays it at 1, 2, 4 ... 64 s intervals, not per check."""
    now = [1000.0]
    monkeypatch.setattr(wal_index, "time", SimpleNamespace(monotonic=lambda: now[0]))
    looks = []
    monkeypatch.setattr(wal_index, "_mapped_here", lambda dev, inode: looks.append(now[0]))
    db = tmp_path / "x.db"
    Path(str(db) + "-shm").write_bytes(_header() * 2 + bytes(40))
    head = WalIndexHead(db)
    for _ in range(200):
        assert head.read() is None
        now[0] += 0.5
    assert [t - 1000.0 for t in looks] == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0]
