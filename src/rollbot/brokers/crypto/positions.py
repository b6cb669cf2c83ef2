"""What the crypto venue holds: derivatives positions, spot holdings priced in the quote (dust
left out), the balances behind both, and the NAV they make. A layer on the session
(session.py says why layers)."""

from __future__ import annotations

from decimal import Decimal

from rollbot.brokers.base import AccountSnapshot, Position
from rollbot.brokers.crypto.client import market_params
from rollbot.brokers.crypto.convert import D0, dec, position_from_ccxt, ticker_price
from rollbot.brokers.crypto.session import CryptoSession, Raw, contained, log


class CryptoPositions(CryptoSession):
    @contained
    async def account(self) -> AccountSnapshot:
        """NAV: account equity in the quote with unrealised PnL counted once (ccxt's total
        already holds it on some exchanges: profiles.py), plus spot holdings at market."""
        self._require("fetchBalance")
        await self._markets()
        nav = D0
        for market, balance in (await self._balances()).items():
            nav += dec((balance.get("total") or {}).get(self.cfg.quote))
            if market == "spot":
                holdings = await self._holdings(balance, priced=True)
                nav += sum((h.market_value for h in holdings), D0)
            elif not self._profile.total_includes_upl and self.exchange.has.get("fetchPositions"):
                positions = await self._derivative_positions()
                nav += sum(
                    (p.unrealized_pnl for p in positions if p.currency == self.cfg.quote), D0
                )
        return AccountSnapshot(
            venue=self.name, nav=nav, currency=self.cfg.quote, at=self._clock.now()
        )

    @contained
    async def positions(self) -> list[Position]:
        for market in self.markets:
            self._require("fetchBalance" if market == "spot" else "fetchPositions")
        await self._markets()
        found: list[Position] = []
        read: list[str] = []
        missing: list[str] = []
        if "derivatives" in self.markets:
            found += await self._derivative_positions()
            read.append(f"{self.cfg.quote}-settled derivatives positions")
        balance: Raw | None = None
        if "spot" in self.markets:
            holdings = await self._holdings(None, priced=True)
            # an unpriced holding is not known to be dust: show it rather than hide it
            found += [h for h in holdings if h.market_price == 0 or h.exposure >= self.cfg.dust]
            read.append("spot balances")
        elif self.exchange.has.get("fetchBalance"):
            # spot is not configured: the balance still shows coins an account holds there
            balance = (await self._balances()).get("derivatives")
            held = [
                f"{h.symbol} {h.quantity}"
                for h in await self._holdings(balance, priced=True)
                if h.market_price == 0 or h.exposure >= self.cfg.dust
            ]
            if held:
                missing.append(
                    'spot holdings (market "spot" not configured; the balance shows '
                    + ", ".join(held)
                    + ")"
                )
        self._covered["positions"] = (read, missing)
        return found

    async def _balances(self) -> dict[str, Raw]:
        """The balance each configured market reads, by market: one request where spot and
        derivatives share a wallet (or only one market is configured), else one each."""
        fetch = self.exchange.fetch_balance
        if len(self.markets) == 1 or self._profile.one_wallet:
            balance = await self._link.call("fetch_balance", fetch)
            first = self.markets[0] if len(self.markets) == 1 else "derivatives"
            # one wallet: the quote is counted once, under derivatives; spot adds its coins
            out = {first: balance}
            if len(self.markets) > 1:
                out["spot"] = {
                    **balance,
                    "total": {
                        k: v for k, v in (balance.get("total") or {}).items() if k != self.cfg.quote
                    },
                }
            return out
        return {
            m: await self._link.call("fetch_balance", fetch, market_params(m)) for m in self.markets
        }

    async def _derivative_positions(self) -> list[Position]:
        self._require("fetchPositions")
        fetch = self.exchange.fetch_positions
        if len(self.markets) > 1 and not self._profile.lists_all_markets:
            rows = await self._link.call(
                "fetch_positions", fetch, None, market_params("derivatives")
            )
        else:
            rows = await self._link.call("fetch_positions", fetch)
        out = []
        for raw in rows:
            market = self.exchange.markets.get(raw.get("symbol")) or {}
            if not market.get("contract"):
                continue  # OKX lists spot margin here too: spot is read from the balance
            position = position_from_ccxt(self.name, raw, market, self.cfg.quote)
            if position is not None:
                out.append(position)
        return out

    async def _holdings(self, balance: Raw | None, *, priced: bool) -> list[Position]:
        """Every non-quote balance (net of debt) that trades against the quote."""
        if balance is None:
            self._require("fetchBalance")
            balances = await self._balances()
            balance = balances.get("spot") or balances[self.markets[0]]
        totals = balance.get("total") or {}
        free = balance.get("free") or {}
        debt = balance.get("debt") or {}
        found: list[tuple[str, Raw, Decimal, Decimal]] = []
        for code, total in totals.items():
            qty = dec(total) - dec(debt.get(code))
            if code == self.cfg.quote or qty == 0:
                continue
            symbol = f"{code}/{self.cfg.quote}"
            market = self.exchange.markets.get(symbol)
            if not market or not market.get("spot"):
                log.warning("%s: %s %s has no %s market; ignored", self.name, qty, code, symbol)
                continue
            found.append((symbol, market, qty, dec(free.get(code))))
        prices = await self._prices([f[0] for f in found]) if priced else {}
        return [
            Position(
                venue=self.name,
                symbol=symbol,
                quantity=qty,
                market_price=prices.get(symbol, D0),
                currency=self.cfg.quote,
                instrument={"market_id": str(market["id"]), "type": "spot", "free": str(free_qty)},
            )
            for symbol, market, qty, free_qty in found
        ]

    async def _prices(self, symbols: list[str]) -> dict[str, Decimal]:
        if not symbols:
            return {}
        has = self.exchange.has
        if has.get("fetchTickers"):
            out: dict[str, Decimal] = {}
            spot = [s for s in symbols if (self.exchange.markets.get(s) or {}).get("spot")]
            if spot and self.exchange.options.get("defaultType") != "spot":
                # ccxt's fetch_tickers turns BTC/USDT into BTC/USDT:USDT on a venue whose
                # default type is swap (market_symbols): spot is priced one ticker at a time
                fetch_one = self.exchange.fetch_ticker
                for s in spot:
                    out[s] = ticker_price(await self._link.call("fetch_ticker", fetch_one, s))
            for group in (([] if out else spot), [s for s in symbols if s not in spot]):
                if not group:
                    continue
                params = market_params("spot" if group is spot else "derivatives")
                fetch = self.exchange.fetch_tickers
                tickers = await self._link.call("fetch_tickers", fetch, group, params)
                out |= {s: ticker_price(tickers.get(s)) for s in group}
            return out
        if has.get("fetchTicker"):
            fetch = self.exchange.fetch_ticker
            return {
                s: ticker_price(await self._link.call("fetch_ticker", fetch, s)) for s in symbols
            }
        raise self._unsupported("fetchTickers")

    async def _scope_symbols(self) -> list[str]:
        """Symbols to walk when the exchange wants one per request: the configured ones plus
        whatever we hold."""
        symbols = {s for s in self.cfg.symbols if s in self.exchange.markets}
        for unknown in sorted(set(self.cfg.symbols) - symbols):
            log.warning("%s: configured symbol %s is not a market here", self.name, unknown)
        if "spot" in self.markets:
            symbols |= {h.symbol for h in await self._holdings(None, priced=False)}
        if "derivatives" in self.markets:
            symbols |= {p.symbol for p in await self._derivative_positions()}
        return sorted(symbols)
