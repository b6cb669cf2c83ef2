"""Domain errors every face turns into a message: a user sees the sentence, never a traceback."""

from __future__ import annotations


class RollbotError(Exception):
    """Base: the message is written for the person who caused it."""

    exit_code = 1


class BadInput(RollbotError):
    """The request itself is wrong; nothing was changed."""

    exit_code = 2


class ConfigError(BadInput):
    """rollbot.toml (or a scenario file) is unreadable or invalid."""


class StorageError(BadInput):
    """The database is locked, corrupt or unwritable; nothing was written."""


class StateUnavailable(RollbotError):
    """The trading state cannot be read (no database, an empty or foreign one): refuse."""

    code = "STATE_UNAVAILABLE"


class DatabaseBusy(StorageError):
    """Another process holds the write lock and did not let go within the wait given."""


class Refused(RollbotError):
    """Understood, but not allowed now (a role, a hold, a rule). `code` is machine-readable."""

    def __init__(self, message: str, code: str = "REFUSED") -> None:
        super().__init__(message)
        self.code = code


class NotFound(BadInput):
    """An id (incident, approval, venue) that does not exist."""


class HoldNotStored(RollbotError):
    """A kill's cancels went out but its hold could not be stored: something changed (exit 1),
    and the message says exactly what."""
