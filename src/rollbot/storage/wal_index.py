"""Has anyone committed to this SQLite database since I last looked? Asked before every order by
the pre-trade guard (commands/killswitch/guard.py), which must never answer from a stale cache.

`PRAGMA data_version` answers it, but at 2-3 us (p99 ~10 us) it was most of the in-process
check. SQLite's own readers learn of a commit from the wal-index header, the first 96 bytes of
the `-shm` file (two copies of a 48-byte header, https://www.sqlite.org/walformat.html, "The
WAL-Index Header"): every commit, by any connection of any process, rewrites both copies and
bumps their change counter `iChange`, and the commit becomes visible to readers only by that
write. So if those bytes are the same as before, nothing was committed since: one pread(2) of
the page cache (~0.5 us), no SQL.

pread, not mmap: a `-shm` truncated under an mmap would kill the trading system with SIGBUS; a
read only comes back short, and then this says "can't tell" and the caller asks SQLite.

The descriptor is never closed. POSIX locks belong to the process and the file, not to the
descriptor: closing any descriptor of the `-shm` drops every lock this process holds on it,
SQLite's included, and another process then rebuilds the index under a live connection (an
earlier attempt through mmap did exactly that: Python's mmap closes its dup later). So one
descriptor per `-shm` file is opened once per process and kept (`_DESCRIPTORS`), as SQLite
itself keeps the descriptors of a database it has locks on.

The file read must be the very one SQLite maps for this database, else the bytes would never
move and the guard would be stale for good: it is opened by the database's resolved path and
accepted only if this process has that inode mapped (/proc/self/maps), i.e. it is the wal-index
this process's connection uses. Anything unexpected (not WAL, not Linux, a header of another
version, the two copies differing mid-write) answers None: ask `PRAGMA data_version`."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from pathlib import Path

HEADER = 96  # both copies of the wal-index header
_VERSION = struct.Struct("=I")  # iVersion, first field of each copy
WAL_INDEX_VERSION = 3007000
_IS_INIT = 12  # offset of isInit in a copy
RETRY_S = 1.0  # after a failed look, the next one; doubled after each, up to RETRY_MAX_S
RETRY_MAX_S = 64.0


class WalIndexHead:
    """`read()` gives bytes that differ whenever a commit happened in between, or None."""

    def __init__(self, db_path: Path) -> None:
        self.path = Path(str(db_path.resolve()) + "-shm")
        self._fd = -1
        self.inode: int | None = None
        self._retry_at = 0.0
        self._retry_s = RETRY_S

    def open(self) -> bool:
        """Find the -shm of the database's path; False when it is not usable. A look reads
        /proc/self/maps (a millisecond in a large process), so after a failed one the next is
        RETRY_S later, then twice that, up to RETRY_MAX_S: a check never pays it often."""
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
        fd = _descriptor(self.path)
        if fd < 0:
            return False
        st = os.fstat(fd)
        if st.st_size < HEADER or not _mapped_here(st.st_dev, st.st_ino):
            return False
        self._fd, self.inode = fd, st.st_ino
        if self._read() is None:
            self.forget()
            return False
        return True

    def read(self) -> bytes | None:
        if self._fd < 0 and not self.open():
            return None
        return self._read()

    def _read(self) -> bytes | None:
        try:
            head = os.pread(self._fd, HEADER, 0)
        except OSError:
            return None
        # the copies differ while a writer is between them; an uninitialised or foreign header
        # is not one whose bytes are known to move on commit
        if (
            len(head) != HEADER
            or head[:48] != head[48:]
            or not head[_IS_INIT]
            or _VERSION.unpack_from(head)[0] != WAL_INDEX_VERSION
        ):
            return None
        return head

    def forget(self) -> None:
        """Stop reading the file; its descriptor stays open (see the module's note)."""
        self._fd, self.inode = -1, None


_DESCRIPTORS: dict[tuple[int, int], int] = {}  # (device, inode) -> a descriptor, never closed
_EXTRA: list[int] = []  # a second descriptor of a file, opened in a race: kept, never closed
_LOCK = threading.Lock()
# never closed, so never more than this many: a process guarding more databases than that (a
# test run opening thousands) asks SQLite's `PRAGMA data_version` for the others
MAX_DESCRIPTORS = 256


def _descriptor(path: Path) -> int:
    """This process's one descriptor of the file the path names now, or -1."""
    with _LOCK:
        try:
            st = os.stat(path)
            known = _DESCRIPTORS.get((st.st_dev, st.st_ino))
            if known is not None:
                return known
            if len(_DESCRIPTORS) + len(_EXTRA) >= MAX_DESCRIPTORS:
                return -1
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1
        st = os.fstat(fd)  # the path may name another file than it did a moment ago
        known = _DESCRIPTORS.setdefault((st.st_dev, st.st_ino), fd)
        if known != fd:
            _EXTRA.append(fd)
        return known


def _mapped_here(dev: int, inode: int) -> bool:
    """Whether this process maps that file (SQLite maps the wal-index of every WAL database
    its connections have read)."""
    try:
        maps = Path("/proc/self/maps").read_text("ascii", "replace")
    except OSError:
        return False
    major, minor = os.major(dev), os.minor(dev)
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5 or fields[4] != str(inode):
            continue
        dmajor, _, dminor = fields[3].partition(":")
        with contextlib.suppress(ValueError):
            if int(dmajor, 16) == major and int(dminor, 16) == minor:
                return True
    return False
