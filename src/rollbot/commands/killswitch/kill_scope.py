"""What a kill of a narrower scope than a venue reaches, and how it is verified.

An `account:V/ID` kill cancels only the orders venue V says belong to account ID (IB tags each
order with its account); orders a venue does not tag cannot be told apart and are left working,
and the outcome says so (cancel-all on the venue reaches them). A `strategy:S` kill is a hold
only: no venue knows which strategy an order came from. Each is verified by asking the guard
the question that scope governs (that account, that strategy), not a question about the venue.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollbot.brokers.base import Order, Venue, VenueError


@dataclass(frozen=True)
class AccountCancel:
    venue: str
    account: str
    cancelled: list[str]
    remaining: list[Order]  # that account's orders still working, read back after cancelling
    untagged: int  # working orders the venue does not attribute to any account: not touched
    others: int  # other accounts' working orders: not touched

    def describe(self) -> str:
        mine = len(self.cancelled) + len(self.remaining)
        text = f"account {self.account}: {len(self.cancelled)} of {mine} orders cancelled"
        if self.remaining:
            text += ", still open: " + ", ".join(
                o.order_id + (f" ({o.reason})" if o.reason else "") for o in self.remaining
            )
        else:
            text += ", none left"
        if self.others:
            text += f"; {self.others} order(s) of other accounts left working"
        if self.untagged:
            text += (
                f"; {self.untagged} order(s) NOT cancelled: {self.venue} does not say which"
                f" account an order is for (`rollbot cancel-all --venue {self.venue}` cancels"
                " the whole venue's)"
            )
        return text

    @property
    def complete(self) -> bool:
        return not self.remaining


async def cancel_account(venue: Venue, account: str) -> AccountCancel:
    """Cancel this account's working orders one by one, then read them back."""
    working = await venue.open_orders()
    mine = [o for o in working if o.account == account]
    refused: dict[str, str] = {}
    for order in mine:
        try:
            await venue.cancel_order(order.order_id)
        except VenueError as exc:  # one order the venue will not cancel stops no other
            refused[order.order_id] = exc.detail
    ids = {o.order_id for o in mine}
    left = [o for o in await venue.open_orders() if o.order_id in ids] if mine else []
    gone = {o.order_id for o in left}
    return AccountCancel(
        venue=venue.name,
        account=account,
        cancelled=[o.order_id for o in mine if o.order_id not in gone],
        remaining=[o.model_copy(update={"reason": refused.get(o.order_id)}) for o in left],
        untagged=sum(1 for o in working if o.account is None),
        others=sum(1 for o in working if o.account is not None and o.account != account),
    )


@dataclass(frozen=True)
class GuardProbe:
    venue: str
    account: str | None = None
    strategy: str | None = None

    @property
    def label(self) -> str:
        if self.account:
            return f" for account {self.venue}/{self.account}"
        if self.strategy:
            return f" for strategy {self.strategy} on {self.venue}"
        return ""


def guard_probes(scope: str, venues: list[str]) -> list[GuardProbe]:
    """The guard questions whose answer proves the hold on `scope` governs what it names."""
    kind, _, name = scope.partition(":")
    if kind == "account":
        venue, _, account = name.partition("/")
        return [GuardProbe(venue, account=account)]
    if kind == "strategy":
        return [GuardProbe(v, strategy=name) for v in venues]
    if kind == "venue":
        return [GuardProbe(name)]
    return [GuardProbe(venues[0] if venues else "none")]  # global governs every venue alike
