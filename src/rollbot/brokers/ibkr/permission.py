"""Whether this IBKR session may trade and cancel, asked without sending an order: a what-if
order, which TWS checks and answers with its margin impact and never transmits. A layer on the
reads (wire.py says why layers)."""

from __future__ import annotations

import asyncio
from typing import Any

from rollbot.brokers.base import VenueError
from rollbot.brokers.ibkr import mapping
from rollbot.brokers.ibkr._ib import Contract, IbOrder, MarketOrder
from rollbot.brokers.ibkr.reads import IbReads


class IbPermission(IbReads):
    async def trading_permission(self) -> tuple[bool, str, str]:
        """(may trade and cancel, why, what to do), read without sending an order: a what-if
        order (Order.whatIf: TWS runs its credit check and answers with the margin impact; the
        order is never transmitted) for 1 of a held contract on its closing side, as a flatten
        would send, or of cfg.permission_probe when nothing is held. TWS's read-only API
        refuses it (321), as it refuses every order and cancel. Allowed on a read-only
        connection: it changes nothing at IB."""
        await self._first_use()
        self._require_connected()
        contract, action, label, account = await self._what_if_target()
        order = MarketOrder(action, 1.0)
        order.whatIf = True  # ib_async sets it again on its own copy; never sent without it
        order.account = account
        refusals: list[tuple[int, str]] = []
        refused = asyncio.Event()

        def on_error(req_id: int, code: int, text: str, about: object) -> None:
            # ib_async names the what-if's contract in its errors; notices are not answers
            if about is contract and code not in mapping.INFO_CODES and not 2100 <= code < 2200:
                refusals.append((code, text))
                refused.set()

        self._ib.errorEvent += on_error
        self._probe = contract
        try:
            state = await self._call(
                f"what-if order for {label}",
                lambda: self._what_if(contract, order, refused),
            )
        finally:
            self._ib.errorEvent -= on_error
            self._probe = None
        what = f"a what-if {action} 1 {label}"
        if refusals:
            code, text = refusals[0]
            if mapping.read_only_refusal(code, text):
                return (
                    False,
                    f"TWS refused {what}: its API is read-only (error {code}: {text})",
                    mapping.READ_ONLY_ACTION,
                )
            return (
                False,
                f"TWS refused {what} (error {code}: {text})",
                f"let account {account or 'of this login'} trade {label} at IBKR, or set"
                f" {self.name}'s permission_probe to a stock it trades",
            )
        margin = getattr(state, "initMarginChange", "")
        if not margin:
            raise VenueError(self.name, f"TWS ended {what} without an answer")
        return (
            True,
            f"TWS answered {what} with its margin impact (initial margin change {margin});"
            " nothing was transmitted",
            "",
        )

    async def _what_if(self, contract: Contract, order: IbOrder, refused: asyncio.Event) -> Any:
        """The what-if's OrderState, or None once TWS refused it (a 321 ends no request)."""
        answer = asyncio.ensure_future(self._ib.whatIfOrderAsync(contract, order))
        waiting = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({answer, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            if not answer.done():
                answer.cancel()
        return None if answer.cancelled() else answer.result()

    async def _what_if_target(self) -> tuple[Contract, str, str, str]:
        """(contract, action, label, account): a held contract's closing side, else BUY the
        probe stock. A what-if needs no price: a market order."""
        held = await self._closable()
        if held:
            position = held[0]
            listing = await self._listing(position)
            account = position.instrument.get("account", "") or self.cfg.account
            return listing.contract, position.closing_side.value, position.symbol, account
        probe = self.cfg.permission_probe
        details = await self._call(
            f"contract details {probe}",
            lambda: self._ib.reqContractDetailsAsync(
                Contract(symbol=probe, secType="STK", exchange="SMART", currency="USD")
            ),
        )
        if not details:
            raise VenueError(
                self.name,
                f"permission_probe {probe!r} is not a US stock IB knows: set the venue's"
                " permission_probe to one this account trades",
            )
        found = details[0].contract
        contract = Contract(
            conId=found.conId, exchange="SMART", primaryExchange=found.primaryExchange
        )
        return contract, "BUY", probe, self.cfg.account
