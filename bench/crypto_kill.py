"""Kill time on a ccxt exchange that cancels per symbol, at the exchange's own rate limit:
200 resting orders on 20 Binance spot symbols (the loopback fake, signing on), cancelled by the
venue's cancel-all as step 1 of a kill does it, with ccxt's limiter at Binance's real spacing.

The floor is what Binance's request weights allow, ccxt's limiter spacing each request by
cost x rateLimit (50 ms): one open-orders list without a symbol (weight 16), one cancel-all per
symbol (DELETE /api/v3/openOrders, 0.2 each) and the read-back list (16). The first request
goes out at once (the bucket starts full), so the floor is the cost of all but the first.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

from fakes.exchange import FakeExchange, Instrument

from bench.common import Figure, Sizes
from rollbot.brokers.crypto.venue import CryptoVenue
from rollbot.config import CryptoVenueConfig

RATE_LIMIT_MS = 50  # ccxt binance.rateLimit: the spacing per unit of request weight
LIST_WEIGHT, CANCEL_WEIGHT = 16, 0.2  # ccxt's binance spot costs: openOrders (no symbol), DELETE


def book(symbols: int) -> tuple[tuple[Instrument, ...], dict[str, str], dict[str, str]]:
    coins = [f"C{i:02d}" for i in range(symbols)]
    step = Decimal("0.01")
    instruments = tuple(Instrument(f"{c}USDT", c, "USDT", step, step, step) for c in coins)
    prices = {f"{c}USDT": "10" for c in coins}
    balances = {c: "1000" for c in coins} | {"USDT": "1000"}
    return instruments, prices, balances


def floor_s(symbols: int) -> float:
    weights = [LIST_WEIGHT] + [CANCEL_WEIGHT] * symbols + [LIST_WEIGHT]
    return sum(weights[1:]) * RATE_LIMIT_MS / 1000


async def one_run(symbols: int, orders: int) -> float:
    instruments, prices, balances = book(symbols)
    async with FakeExchange(
        "binance", instruments=instruments, prices=prices, balances=balances
    ) as fake:
        for n in range(orders):
            inst = instruments[n % symbols]
            fake.book.add_order(inst.symbol, "SELL", "1", price=str(20 + n // symbols))
        cfg = CryptoVenueConfig(**fake.venue_config("binance", market="spot"))
        venue = CryptoVenue(cfg, api_key=fake.api_key, secret=fake.secret)  # ccxt's own pacing
        venue.exchange.timeout_on_exit = 0
        try:
            await venue.connect()
            started = time.perf_counter()
            result = await venue.cancel_all()
            elapsed = time.perf_counter() - started
        finally:
            await venue.close()
        if result.remaining or len(result.cancelled) != orders or fake.book.open_orders():
            raise RuntimeError(f"cancel-all left {len(result.remaining)} of {orders} orders")
        return elapsed


async def run(sizes: Sizes, workdir: Path) -> list[Figure]:
    symbols, orders = (20, 200) if sizes.kill_runs > 2 else (4, 20)
    runs = 5 if sizes.kill_runs > 2 else 1
    samples = [await one_run(symbols, orders) for _ in range(runs)]
    floor = floor_s(symbols)
    return [
        Figure(
            key="crypto_kill_cancel",
            title=f"Kill cancels on Binance spot ({orders} orders, {symbols} symbols, per symbol)",
            unit="s",
            samples=samples,
            target=floor * 1.5,
            target_text=f"1.5 x the rate-limit floor of {floor:.2f} s",
            bound=floor,
            note="ccxt's limiter at Binance's 50 ms per weight unit: list (16), 20 x"
            " DELETE openOrders (0.2), read back (16)",
        )
    ]
