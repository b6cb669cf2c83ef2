"""One way to write an amount wherever a person reads it (report, chart, Slack): thousands
separated, two decimals, the currency after it: -3,720.00 USD. A report that printed -3720.0
beside -1495.80 made a desk check which one was rounded."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation


def money(value: object, currency: str | None = None) -> str:
    """`-3,720.00 USD`; without a currency, `-3,720.00`. A value that is not a number is shown
    as it is (a report never fails on one odd field)."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not amount.is_finite():
        return str(value)
    text = f"{amount:,.2f}"
    if text == "-0.00":
        text = "0.00"
    return f"{text} {currency}" if currency else text
