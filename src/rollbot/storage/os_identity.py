"""Who is at this terminal, from the OS alone. Standard library only: the terminal's kill
(commands/killswitch/fast_hold.py) names its actor by these rules before pydantic is imported."""

from __future__ import annotations

import os
import pwd


def os_login() -> tuple[str, int]:
    """(login name, uid) of the process's real uid; a uid with no passwd entry (containers) is
    named uidN, so it is still recorded."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return f"uid{uid}", uid


def hostname() -> str:
    """This machine's name, as socket.gethostname() gives it on POSIX (both read uname), without
    importing socket (~5 ms of a kill's start-up)."""
    return os.uname().nodename


def terminal_id(os_user: str, identities: dict[str, str] | None) -> str:
    """The id a terminal actor acts under: its login mapped through [identities], else the
    login itself."""
    return (identities or {}).get(os_user) or os_user
