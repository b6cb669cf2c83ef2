"""Contracts as IB lists them, for a close: the qualified contract an order is routed to and its
price ladder (market rules), each asked of TWS once per contract. A layer on the trades (wire.py
says why layers)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from rollbot.brokers.base import Position, RejectedForGood, Side
from rollbot.brokers.ibkr import mapping
from rollbot.brokers.ibkr._ib import Contract
from rollbot.brokers.ibkr.trades import IbTrades
from rollbot.config import IbkrVenueConfig


@dataclass(frozen=True)
class _Listing:
    """What a close needs to know about a contract: where to send it and its price ladder."""

    contract: Contract  # qualified: conId with SMART (and primaryExchange) or its own exchange
    ladder: tuple[tuple[Decimal, Decimal], ...]  # (low edge, increment), low edges ascending

    def tick_at(self, price: Decimal) -> Decimal:
        steps = [inc for edge, inc in self.ladder if edge <= abs(price)]
        return steps[-1] if steps else self.ladder[0][1]

    def round(self, price: Decimal, side: Side) -> Decimal:
        """To the tick on the crossing side: a sell down, a buy up (never less aggressive)."""
        tick = self.tick_at(price)
        steps = (price / tick).to_integral_value(
            ROUND_FLOOR if side == Side.SELL else ROUND_CEILING
        )
        return max(steps * tick, tick).normalize()  # a sell of a near-worthless option: 1 tick


class IbContracts(IbTrades):
    def __init__(self, cfg: IbkrVenueConfig) -> None:
        super().__init__(cfg)
        self._listings: dict[int, _Listing] = {}  # conId -> qualified contract and ladder
        self._ladders: dict[int, tuple[tuple[Decimal, Decimal], ...]] = {}  # by market rule id

    async def _listing(self, position: Position) -> _Listing:
        """The contract qualified by IB (once per conId): SMART routing where IB offers it, with
        the primary exchange for a stock (a direct-routed order trips TWS's order precautions),
        else the contract's own exchange (CME, IDEALPRO); and its price ladder, from the market
        rule of that exchange or, without one, the contract's minTick."""
        con_id = int(position.instrument["conId"])
        known = self._listings.get(con_id)
        if known is not None:
            return known
        details = await self._call(
            f"contract details {con_id}",
            lambda: self._ib.reqContractDetailsAsync(Contract(conId=con_id)),
        )
        if not details:
            raise RejectedForGood(
                self.name,
                f"contract {con_id} ({position.symbol}) is not known to IB: no security "
                "definition, nothing sent",
                str(mapping.NO_DEFINITION),
            )
        d = details[0]
        c = d.contract
        exchanges = [e for e in d.validExchanges.split(",") if e]
        exchange = (
            "SMART"
            if "SMART" in exchanges
            else (c.exchange or position.instrument.get("exchange", ""))
        )
        contract = Contract(
            conId=con_id,
            exchange=exchange,
            primaryExchange=c.primaryExchange if exchange == "SMART" else "",
        )
        # marketRuleIds line up with validExchanges: the rule of the exchange the order goes to
        rules = [r.strip() for r in d.marketRuleIds.split(",") if r.strip()]
        by_exchange = dict(zip(exchanges, rules, strict=False))
        rule = by_exchange.get(exchange) or (rules[0] if rules else "")
        ladder = await self._ladder(int(rule)) if rule.isdigit() else ()
        if not ladder:
            tick = mapping.decimal(d.minTick) or Decimal("0.01")
            ladder = ((Decimal(0), tick),)
        listing = _Listing(contract=contract, ladder=ladder)
        self._listings[con_id] = listing
        return listing

    async def _ladder(self, rule_id: int) -> tuple[tuple[Decimal, Decimal], ...]:
        known = self._ladders.get(rule_id)
        if known is not None:
            return known
        rows = await self._call(
            f"market rule {rule_id}", lambda: self._ib.reqMarketRuleAsync(rule_id)
        )
        ladder = tuple(
            sorted(
                (mapping.decimal(r.lowEdge), mapping.decimal(r.increment))
                for r in rows or []
                if r.increment > 0
            )
        )
        if ladder:
            self._ladders[rule_id] = ladder
        return ladder
