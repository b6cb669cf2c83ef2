"""`positions` (terminal and Slack) and step 5 say per venue what was read and what was not."""

from __future__ import annotations

from rollbot.bot.slack import views
from rollbot.brokers.base import Coverage
from rollbot.commands.rollback.positions import VenueBook, coverage_line


def test_a_venue_that_reports_coverage_is_shown_with_what_it_did_not_check() -> None:
    book = VenueBook(
        venue="okx",
        coverage=Coverage(
            read=["USDT-settled derivatives positions", "derivatives plain orders"],
            not_checked=["spot holdings (BTC/USDT 0.5)"],
        ),
    )
    line = coverage_line(book)
    assert line == (
        "read: USDT-settled derivatives positions, derivatives plain orders;"
        " NOT CHECKED: spot holdings (BTC/USDT 0.5)"
    )
    _, blocks = views.positions([book])
    assert line in str(blocks)
    assert book.not_checked == ["spot holdings (BTC/USDT 0.5)"]


def test_a_venue_that_says_nothing_about_coverage_adds_nothing() -> None:
    book = VenueBook(venue="paper")
    assert coverage_line(book) == "" and book.not_checked == []
    assert "read:" not in str(views.positions([book])[1])
