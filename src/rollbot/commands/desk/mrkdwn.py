"""Slack mrkdwn is what the outbox carries (mentions, *bold*): user-supplied text placed in it
must be escaped, or a reason of `<!channel>` pages the whole channel and `<https://x|y>` renders
a disguised link. Slack's rule: escape exactly `&`, `<` and `>` (api.slack.com, "Formatting text
for app surfaces", escaping text). This is the one function every face uses for it."""

from __future__ import annotations

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def escape(text: object) -> str:
    """User text (a reason, a note, an RCA field, a hold's reason) made inert in mrkdwn."""
    return str(text if text is not None else "").translate(_ESCAPES)
