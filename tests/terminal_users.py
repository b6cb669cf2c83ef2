"""People at the terminal, as the OS sees them.

rollbot takes who is acting at the terminal from the process's real uid (never USER or LOGNAME,
which anyone can export). A test that needs two people runs each one's rollbot under its own
real uid. The suite runs as root: the child keeps effective uid 0 (as a setuid wrapper would), so
it can still write the test's files, while getuid() says who it is. These uids have no passwd
entry, so rollbot names each one uidN, and that is the key [identities] maps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PEOPLE = {
    "alice": 61001,
    "bob": 61002,
    "rita": 61003,
    "mallory": 61004,
    "eve": 61005,
    **{f"op{i:02d}": 61100 + i for i in range(50)},
}


def login(person: str) -> str:
    """The OS user rollbot records for `person` (and the key to map in [identities])."""
    return f"uid{PEOPLE[person]}"


def as_person(person: str) -> Callable[[], None]:
    """A preexec_fn: the child's real uid (and gid) become `person`'s."""
    uid = PEOPLE[person]

    def switch() -> None:
        os.setgroups([])  # nor root's group: access(2) would apply the group's bits, not others'
        os.setresgid(uid, 0, 0)
        os.setresuid(uid, 0, 0)

    return switch


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """pytest's tmp_path, but where other uids can reach it: access(2) (click's readable-path
    check, SQLite's journal checks) answers for the real uid, and pytest keeps its own temp root
    0700 (every session resets it). Files inside are world-readable (umask 022)."""
    root = Path(tempfile.mkdtemp(prefix="rollbot-people-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)
