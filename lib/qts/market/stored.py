"""Last known prices from the state database, for work that must not wait on a market feed.

The kill switch flattens paper positions at the last price the loop saw (the latest decision's
price, else the average entry): it must work offline, in a fresh process, in milliseconds. Live
positions are flattened at the exchange instead.
"""

from __future__ import annotations

import json
import time

from .feed import Quote
from .rules import MarketRules, replay_market


class StoredPriceFeed:
    source = "stored-prices"
    synthetic = False

    def __init__(self, store, mode: str = "paper"):
        self.store, self.mode = store, mode
        self._prices: dict[str, float] = {}
        for r in store.query("SELECT symbol, inputs FROM decisions WHERE id IN "
                             "(SELECT MAX(id) FROM decisions WHERE mode=? GROUP BY symbol)", (mode,)):
            try:
                self._prices[r["symbol"]] = float(json.loads(r["inputs"])["price"])
            except (ValueError, KeyError, TypeError):
                pass
        for r in store.query("SELECT symbol, avg_entry FROM positions WHERE mode=? AND amount>0", (mode,)):
            self._prices.setdefault(r["symbol"], float(r["avg_entry"]))
        for r in store.query("SELECT DISTINCT symbol FROM orders WHERE mode=?", (mode,)):
            self._prices.setdefault(r["symbol"], 0.0)
        self.symbols = tuple(self._prices)

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def markets(self) -> dict[str, dict]:
        return {s: replay_market(s) for s in self.symbols}

    def rules(self, symbol: str) -> MarketRules:
        return MarketRules.from_ccxt(replay_market(symbol))

    def quote(self, symbol: str) -> Quote:
        p = self._prices.get(symbol)
        if not p:
            raise LookupError(f"no stored price for {symbol}")
        return Quote(symbol, p, float("inf"), self.now_ms())

    def closed_since(self, symbol, since_ms):
        from .candles import Candles
        import numpy as np

        return Candles.from_rows(np.empty((0, 6)), 300_000)
