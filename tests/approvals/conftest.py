"""Fixtures for the two-person rule tests (helpers live in support.py)."""

from approvals.support import app, approvals, clock, settings

__all__ = ["app", "approvals", "clock", "settings"]
