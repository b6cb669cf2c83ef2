"""Has a path changed since it was last looked at? The pre-trade guard asks before every order
(commands/killswitch/guard.py): does the database's path still name the file it opened,
were the gate files edited. A stat() per file per order was half of the guard's time; on
Linux the kernel says it instead (inotify), with one ioctl per question whatever the number
of files.

inotify queues an event inside the very call that changes a directory entry or a file (the
rename, the unlink, the write), so a change made before a question is seen by it: the answer
is never stale. What a path resolves to changes only when an entry along it changes, so every
directory from `/` down to the file is watched for its next component (a rename of
`/data` is an event in `/`). A path through a symbolic link is not watched (the link's target
would change unseen): nor is anything where inotify cannot be had (another OS, no watches
left). There, and until a watch is in place, every question answers "changed" and the caller
stats as before.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import math
import os
import struct
import termios
import time
import weakref
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_MASK_ADD = 0x20000000  # two paths through one directory: both masks, not the last one
# what changes which file a name resolves to
ENTRY = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
# ... and, for a file whose content is watched, what changes it in place
CONTENT = IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB
_SELF = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_Q_OVERFLOW
_EVENT = struct.Struct("iIII")
RETRY_S = 1.0
WATCH_AFTER = 64  # questions answered by stat() before the kernel is asked to watch


class FileWatch:
    """`generation()` moves on whenever a watched path may name another file, or (`content`)
    the file may have been written.

    A caller keeps the generation its cache was filled at and refills when it moved: two
    callers sharing a watch both see a change, whichever of them read the kernel's queue.
    """

    def __init__(self, paths: Iterable[Path] = (), *, content: bool = False) -> None:
        self._paths = [Path(os.path.abspath(p)) for p in paths]
        self._content = content
        self._gen = 0
        self._fd = -1
        self._buf = bytearray(4)
        self._names: dict[int, set[bytes]] = {}  # per watched directory: the names that matter
        # nothing to watch: nothing to skip, every question answers "changed"
        self._retry_at = 0.0 if self._paths else math.inf
        # a process that asks a few times (a CLI command) never takes one of the user's 128
        # inotify instances; a guard in front of every order takes it at its WATCH_AFTER-th
        self._questions = 0
        ref = weakref.ref(self)
        # a forked child would read the parent's queue, and the parent miss what it read
        os.register_at_fork(after_in_child=lambda: (w := ref()) is not None and w._forked())

    @property
    def watching(self) -> bool:
        return self._fd >= 0

    def generation(self) -> int:
        """Moves on when something that matters changed since the last question (or always,
        while nothing is watched)."""
        if self._fd < 0:
            self._gen += 1
            self._questions += 1
            if self._questions > WATCH_AFTER:
                self._watch()
            return self._gen
        fcntl.ioctl(self._fd, termios.FIONREAD, self._buf)
        if self._buf != b"\0\0\0\0" and self._read():
            self._gen += 1
            self.close()
            self._retry_at = 0.0
            self._watch()  # again: the entries along the paths may be other directories now
        return self._gen

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._names = {}

    def __del__(self) -> None:
        self.close()

    def _forked(self) -> None:
        self._fd = -1  # the parent's: not closed here, not read either
        self._names = {}
        self._retry_at = 0.0

    def _read(self) -> bool:
        """Whether any queued event matters (its name is on a watched path, or a watch ended)."""
        data = b""
        while True:  # all of it: an event that matters may queue behind many that do not
            try:
                chunk = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        at = 0
        matters = False
        while at + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, at)
            name = bytes(data[at + _EVENT.size : at + _EVENT.size + length]).rstrip(b"\0")
            at += _EVENT.size + length
            if mask & _SELF or name in self._names.get(wd, ()):
                matters = True
        return matters

    def _watch(self) -> None:
        if time.monotonic() < self._retry_at:
            return
        self._retry_at = time.monotonic() + RETRY_S  # a directory not made yet: again later
        if any(os.path.realpath(p) != str(p) for p in self._paths):
            return  # through a symbolic link: stat every time
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init, add = libc.inotify_init1, libc.inotify_add_watch
        except (OSError, AttributeError):
            self._retry_at = math.inf  # not Linux
            return
        fd = int(init(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            return
        names: dict[int, set[bytes]] = {}
        for path in self._paths:
            for directory, name in _steps(path):
                mask = ENTRY | (CONTENT if self._content and name == path.name else 0)
                wd = int(add(fd, os.fsencode(directory), mask | IN_ONLYDIR | IN_MASK_ADD))
                if wd < 0:
                    err = os.strerror(ctypes.get_errno())
                    log.debug("cannot watch %s (%s): stat per question", directory, err)
                    os.close(fd)
                    return
                names.setdefault(wd, set()).add(os.fsencode(name))
        self._fd, self._names = fd, names


def _steps(path: Path) -> list[tuple[Path, str]]:
    """(directory, the name in it that leads to `path`), for every directory along it."""
    return [(child.parent, child.name) for child in [path, *path.parents][:-1]]
