"""The venue drill: prove, on a paper or testnet venue, that a kill scoped to it cancels at the
venue, and how long that takes.

It places one sentinel order far from the market (a BUY limit at half the last price, the
smallest size the market takes; on IBKR, 1 of a held contract at half its mark), triggers the
real kill path (Engine.kill, scope venue:NAME), reads the venue back until the sentinel is no
longer working, reports the time from the kill to the cancel confirmed, then clears the drill's
own hold and closes its incident. Every step is an event. Only venues marked paper/testnet: a
crypto venue with `sandbox = true`, an IBKR paper account (an account id starting with "DU",
or `paper = true`), the embedded paper venue. Any other venue is refused before anything is
placed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from decimal import Decimal

from pydantic import BaseModel

from rollbot.brokers.base import Order
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine
from rollbot.config import CryptoVenueConfig, IbkrVenueConfig, PaperVenueConfig
from rollbot.errors import BadInput
from rollbot.storage.events import Actor

READ_BACK_S = 10.0  # how long the drill reads the venue back before calling it a failure
POLL_S = 0.05


class VenueDrillResult(BaseModel):
    venue: str
    incident_id: str
    symbol: str
    order_id: str
    price: Decimal | None
    quantity: Decimal
    cancelled: bool
    kill_to_cancel_s: float | None  # from the kill's start to the read-back that saw it gone
    kill_status: str
    hold_cleared: bool
    detail: str


def marked_paper(app: Rollbot, name: str) -> str | None:
    """Why `name` is a paper/testnet venue, or None when it is not marked as one."""
    try:
        cfg = app.settings.venue(name)
    except KeyError as exc:
        raise BadInput(str(exc.args[0])) from None
    if isinstance(cfg, PaperVenueConfig):
        return "the embedded paper venue"
    if isinstance(cfg, CryptoVenueConfig):
        return f"{cfg.exchange} in sandbox (testnet) mode" if cfg.sandbox else None
    if isinstance(cfg, IbkrVenueConfig):
        if cfg.account.startswith("DU"):
            return f"IB paper account {cfg.account}"
        return "marked `paper = true`" if cfg.paper else None
    return None


def refuse_unless_paper(app: Rollbot, name: str) -> str:
    why = marked_paper(app, name)
    if why is None:
        raise BadInput(
            f"venue {name!r} is not marked paper/testnet: the venue drill places a real order,"
            " so it runs only where `sandbox = true` (crypto), the IBKR account starts with"
            " 'DU' or `paper = true` (IBKR), or on the paper venue. Nothing was placed."
        )
    return why


async def run_venue_drill(
    app: Rollbot, actor: Actor, name: str, *, read_back_s: float = READ_BACK_S
) -> VenueDrillResult:
    marked = refuse_unless_paper(app, name)
    scope = f"venue:{name}"
    held = app.killswitch.holds.active([scope])
    if held:  # the drill clears its own hold: never next to someone else's
        raise BadInput(
            f"venue {name!r} is already held ({held[0].reason}); the venue drill runs only on"
            " a venue without a hold. Nothing was placed."
        )
    venue = app.venue(name)
    place = getattr(venue, "place_sentinel", None)
    if place is None:
        raise BadInput(
            f"venue {name!r}: this kind of venue cannot place the drill's sentinel yet."
            " Nothing was placed."
        )
    await venue.connect()
    client_id = f"rbdrill{secrets.token_hex(6)}"
    sentinel: Order = await place(client_id)
    app.events.append(
        "VENUE_DRILL_SENTINEL_PLACED",
        actor,
        reason=f"venue drill on {name} ({marked})",
        scope=scope,
        data={
            "venue": name,
            "order_id": sentinel.order_id,
            "client_order_id": client_id,
            "symbol": sentinel.symbol,
            "price": str(sentinel.limit_price),
            "quantity": str(sentinel.quantity),
        },
    )
    started = time.perf_counter()
    outcome = await Engine(app, actor, page=False).kill(
        f"venue drill on {name}: sentinel {sentinel.order_id} must be cancelled", scope
    )
    incident_id = outcome.incident.id
    cancelled, detail = await _read_back(venue, client_id, sentinel.order_id, read_back_s)
    elapsed = round(time.perf_counter() - started, 3) if cancelled else None
    venue.set_reconnect(True)  # the kill's step 2 switched it off for this process
    # fail closed: a sentinel not confirmed cancelled leaves the venue held
    cleared = _clear_own_hold(app, actor, scope, incident_id) if cancelled else False
    if not cancelled:
        detail += f"; the drill's hold on {scope} is left in place"
    app.incidents.close(incident_id, actor, f"venue drill on {name} finished")
    result = VenueDrillResult(
        venue=name,
        incident_id=incident_id,
        symbol=sentinel.symbol,
        order_id=sentinel.order_id,
        price=sentinel.limit_price,
        quantity=sentinel.quantity,
        cancelled=cancelled,
        kill_to_cancel_s=elapsed,
        kill_status=outcome.final_status.value,
        hold_cleared=cleared,
        detail=detail,
    )
    app.events.append(
        "VENUE_DRILL_PASSED" if cancelled else "VENUE_DRILL_FAILED",
        actor,
        reason=detail,
        scope=scope,
        incident_id=incident_id,
        data=result.model_dump(mode="json"),
    )
    return result


async def _read_back(
    venue: object, client_id: str, order_id: str, read_back_s: float
) -> tuple[bool, str]:
    """Read the venue until the sentinel is no longer working (or read_back_s passes)."""
    deadline = time.monotonic() + read_back_s
    last = "not read"
    while True:
        try:
            order = await venue.order_by_client_id(client_id)  # type: ignore[attr-defined]
            working = {o.order_id for o in await venue.open_orders()}  # type: ignore[attr-defined]
        except Exception as exc:  # a read that fails is not a confirmation
            last = f"the read-back failed: {exc}"
        else:
            status = order.status.value if order is not None else "not found"
            if order_id not in working and order is not None and order.status.is_terminal:
                return True, f"sentinel {order_id} read back {status}, not among open orders"
            last = f"sentinel {order_id} still {status}"
        if time.monotonic() >= deadline:
            return False, f"{last} after {read_back_s:g} s of reading back"
        await asyncio.sleep(POLL_S)


def _clear_own_hold(app: Rollbot, actor: Actor, scope: str, incident_id: str) -> bool:
    own = [h for h in app.killswitch.holds.active([scope]) if h.incident_id == incident_id]
    for hold in own:
        app.killswitch.clear(scope, "venue drill finished", actor, source=hold.source)
    return bool(own)
