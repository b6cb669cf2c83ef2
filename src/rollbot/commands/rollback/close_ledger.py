"""What a flatten writes down about its closing orders (flatten.py): the ORDER_* events, each
intent brought up to date from what the venue says, and the closes a venue refused for good —
recorded, told in the incident's thread and escalated, never re-sent (an earlier run's refusals
are read back from the events, so a rerun does not resend either)."""

from __future__ import annotations

import logging

from rollbot.brokers.base import Order, OrderStatus
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging import escalation
from rollbot.storage.events import Actor
from rollbot.storage.intents import Intent, Intents

log = logging.getLogger("rollbot.commands.rollback.flatten")  # the flatten's log, as before


class CloseLedger:
    """One venue's closes for one incident, as recorded; what went wrong on the way (errors),
    and the symbols whose close the venue refused for good (refused: symbol -> its words)."""

    def __init__(self, app: Rollbot, venue_name: str, incident_id: str, actor: Actor) -> None:
        self.app = app
        self.venue_name = venue_name
        self.incident_id = incident_id
        self.actor = actor
        self.intents = Intents(app.db)
        self.errors: list[str] = []
        self.refused = self._refused_before()

    def note(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)

    def record_found(self, intent: Intent, order: Order) -> None:
        """An order read back by its client id. Found while the ledger still says PENDING, it
        was sent before a restart and never recorded: ORDER_SENT is written now."""
        if intent.status == "PENDING":
            self.event(
                "ORDER_SENT",
                intent.client_order_id,
                order,
                reason="found at the venue by its client order id: its send was never confirmed"
                " (a restart, or an answer lost)",
                extra={"attempt": intent.attempt, "found_by_client_id": True},
            )
        self.record(intent, order)

    def rejected(self, intent: Intent, detail: str, final: bool = False) -> None:
        self.app.events.append(
            "ORDER_REJECTED",
            self.actor,
            incident_id=self.incident_id,
            scope=f"venue:{self.venue_name}",
            reason=detail,
            data={
                "client_order_id": intent.client_order_id,
                "symbol": intent.symbol,
                "side": intent.side,
                "quantity": str(intent.quantity),
                "attempt": intent.attempt,
                **({"final": True} if final else {}),
            },
        )
        self.note(f"{intent.symbol}: rejected: {detail}")

    def _refused_before(self) -> dict[str, str]:
        """Closes this incident's earlier runs saw refused for good: a rerun does not resend."""
        return {
            e.data["symbol"]: e.reason or ""
            for e in self.app.events.list(incident_id=self.incident_id, kinds=["ORDER_REJECTED"])
            if e.data.get("final") and e.scope == f"venue:{self.venue_name}"
        }

    def refuse(self, intent: Intent, detail: str) -> None:
        """A close refused for a reason that will not change: recorded, told in the incident's
        thread at once with the venue's words, and escalated (pages the chain if nobody is yet);
        never re-sent. The position stays for a person to close by hand."""
        self.refused[intent.symbol] = detail
        with self.app.db.write():
            self.rejected(intent, detail, final=True)
            self.app.outbox.put(
                "thread",
                incident_id=self.incident_id,
                text=f"⚠️ {self.venue_name} refused the close of {intent.symbol} "
                f"({intent.side} {intent.quantity}) and would refuse it again: {detail}. "
                "Not re-sent: close it by hand.",
                dedupe_key=f"refused:{self.incident_id}:{self.venue_name}:{intent.symbol}",
            )
        try:
            escalation.escalate_incident(self.app, self.incident_id, self.actor)
        except Exception as exc:  # paging must not stop the closes of the other symbols
            log.exception("escalating %s after a refused close failed", self.incident_id)
            self.note(f"escalating the refused close of {intent.symbol} failed: {exc}")

    def record(self, intent: Intent, order: Order) -> None:
        """Store what the venue says about one of our orders; write ORDER_REJECTED the first
        time the venue refuses it."""
        self.intents.update(
            intent.client_order_id,
            status=order.status.value,
            now=self.app.clock.now(),
            venue_order_id=order.order_id,
            filled=order.filled_quantity,
            detail=order.reason,
        )
        if order.status is OrderStatus.REJECTED and intent.status != "REJECTED":
            if order.rejected_for_good:  # refused after it was accepted: no new attempt either
                self.refuse(intent, order.reason or "rejected by the venue")
            else:
                self.rejected(intent, order.reason or "rejected by the venue")

    def event(
        self,
        kind: str,
        client_id: str,
        order: Order,
        reason: str | None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.app.events.append(
            kind,
            self.actor,
            incident_id=self.incident_id,
            scope=f"venue:{self.venue_name}",
            reason=reason,
            data={
                "client_order_id": client_id,
                "order_id": order.order_id,
                "symbol": order.symbol,
                "side": order.side.value,
                "quantity": str(order.quantity),
                "type": order.type.value,
                "status": order.status.value,
                "filled": str(order.filled_quantity),
                **(extra or {}),
            },
        )
