"""Scope names: what a hold can name, as text. Standard library only, so the terminal's kill
(commands/killswitch/fast_hold.py) checks a scope by these same rules before pydantic is
imported."""

from __future__ import annotations

import re

from rollbot.errors import BadInput

SCOPE_KINDS = ("venue", "account", "strategy")
# account ids and strategy names, in scopes and at the guard alike: what a hold can name, the
# guard can be asked about, character for character
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def parse_scope(text: str | None, venues: list[str]) -> str:
    """`global`, `venue:NAME` (or a bare venue name), `account:VENUE/ID`, `strategy:NAME`."""
    if not text or text == "global" or text == "all":
        return "global"
    if text in venues:
        return f"venue:{text}"
    kind, sep, name = text.partition(":")
    if not sep or kind not in SCOPE_KINDS or not name:
        raise BadInput(
            f"unknown scope {text!r}: use global, a venue name ({', '.join(venues)}), "
            "venue:NAME, account:VENUE/ID or strategy:NAME"
        )
    if kind == "venue" and name not in venues:
        raise BadInput(f"unknown venue {name!r} in scope (configured: {', '.join(venues)})")
    if kind == "account":
        venue, slash, account = name.partition("/")
        if venue not in venues:
            raise BadInput(
                f"unknown venue in account scope {text!r} (configured: {', '.join(venues)})"
            )
        if not slash or not NAME.match(account):
            raise BadInput(
                f"account scope {text!r} needs an account id: account:{venue}/ID "
                "(letters, digits and ._@- only)"
            )
    if kind == "strategy" and not NAME.match(name):
        raise BadInput(f"strategy scope {text!r}: the name may hold letters, digits and ._@- only")
    return f"{kind}:{name}"
