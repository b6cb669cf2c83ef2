"""Reliability and security suite (issue 11): retries, double clicks, crashes, venue faults, bad
input and storage faults. Each test records its figures (reliability/figures.py); they are
printed at the end of the run under "rollbot reliability figures".

Fixtures
    scratch   a directory for many small SQLite files: RAM-backed (/dev/shm) when writable, so a
              thousand trials do not wait on the disk; tmp_path otherwise. Removed after.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from terminal_users import tmp_path  # people at the terminal run as other uids

from reliability.figures import FIGURES

__all__ = ["tmp_path"]


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="rollbot-reliability-", dir=shm))
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)
    else:
        yield tmp_path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("rollbot reliability figures")
    for section in sorted(FIGURES):
        for line in FIGURES[section]:
            terminalreporter.write_line(f"{section}: {line}")
