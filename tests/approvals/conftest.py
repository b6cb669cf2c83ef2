"""Fixtures for the two-person rule tests (helpers live in support.py)."""

from terminal_users import tmp_path

from approvals.support import app, approvals, clock, settings

__all__ = ["app", "approvals", "clock", "settings", "tmp_path"]
