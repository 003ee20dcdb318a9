"""One interface for market data, whatever its source.

A feed answers, for its symbols and the current time of its clock: the markets (ccxt form), the
candles closed so far, a ticker, an order book, and the price a market order would get now. Replay
feeds own a simulated clock that the loop advances; live feeds follow the wall clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from . import synthetic
from .candles import Candles, find_files, load_csv
from .rules import MarketRules, replay_market


@dataclass(frozen=True)
class Quote:
    """The price a market order gets now and how much the market can absorb (base units)."""

    symbol: str
    price: float
    liquidity: float
    ts: int


class MarketFeed(Protocol):
    symbols: tuple[str, ...]
    timeframe_ms: int
    source: str  # "replay:<dir>", "synthetic", or "ccxt:<exchange>"

    def now_ms(self) -> int: ...
    def markets(self) -> dict[str, dict]: ...
    def rules(self, symbol: str) -> MarketRules: ...
    def candles(self, symbol: str, limit: int) -> Candles: ...
    def ticker(self, symbol: str) -> dict: ...
    def order_book(self, symbol: str, depth: int = 10) -> dict: ...
    def quote(self, symbol: str) -> Quote: ...
    def wait_next_cycle(self, interval_ms: int, stop) -> int | None: ...


class ReplayFeed:
    """Replays candles on a simulated clock.

    The clock stands on candle boundaries. At time ``t`` the closed candles are those with
    ``open + timeframe <= t``; the price now is the open of the candle starting at ``t`` (the first
    trade after the cycle's decision), falling back to the last close at the end of the data.
    Liquidity for a market order is the volume of the last closed candle (no look-ahead).
    """

    def __init__(self, data: dict[str, Candles], source: str, synthetic_data: bool = False,
                 warmup: int = 200, start_ms: int | None = None, end_ms: int | None = None,
                 quarantined: list | None = None, screen_config=None):
        if not data:
            raise ValueError("a replay needs at least one symbol")
        from .quarantine import screen

        # every candle passes the quarantine before anything sees it; the loop records what was dropped
        self.quarantine_log = list(quarantined or [])
        self.screen_config = screen_config
        screened = {}
        for sym, c in data.items():
            screened[sym], rejected = screen(c, sym, screen_config)
            self.quarantine_log.extend(rejected)
        data = screened
        tfs = {c.timeframe_ms for c in data.values()}
        if len(tfs) != 1:
            raise ValueError(f"all symbols must share one timeframe, got {sorted(tfs)}")
        self.timeframe_ms = tfs.pop()
        self.symbols = tuple(data)
        self.source = source
        self.synthetic = synthetic_data
        self._data = data
        self._markets = {s: replay_market(s, synthetic_data) for s in data}
        self._rules = {s: MarketRules.from_ccxt(m) for s, m in self._markets.items()}
        first = max(int(c.ts[0]) for c in data.values())
        last_close = min(int(c.ts[-1]) for c in data.values()) + self.timeframe_ms
        self.start_ms = max(first + warmup * self.timeframe_ms, start_ms or 0)
        self.end_ms = min(last_close, end_ms) if end_ms else last_close
        if self.start_ms > self.end_ms:
            raise ValueError("not enough candles for the warm-up and the requested range")
        self._now = self.start_ms
        self.pace_s = 0.0  # >0: wait this long between cycles (watch a replay, test the runner)

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, folder: Path | str, symbols, minutes: int, **kw) -> "ReplayFeed":
        data, quarantined = {}, []
        for sym, (path, factor) in find_files(folder, symbols, minutes).items():
            data[sym] = load_csv(path, quarantine=quarantined,
                                 screen_config=kw.get("screen_config")).resample(factor)
        return cls(data, source=f"replay:{Path(folder)}", quarantined=quarantined, **kw)

    @classmethod
    def synthetic(cls, symbols, minutes: int, days: float = 3.0, seed: int = 7, warmup: int = 200,
                  **kw) -> "ReplayFeed":
        tf = minutes * 60_000
        count = warmup + int(days * 86_400_000 / tf) + 1
        data = {s: synthetic.generate(s, count, tf, seed) for s in symbols}
        return cls(data, source=f"synthetic(seed={seed})", synthetic_data=True, warmup=warmup, **kw)

    # -- clock ------------------------------------------------------------------------------------
    def now_ms(self) -> int:
        return self._now

    def seek(self, ts_ms: int) -> bool:
        """Continue a replay from ``ts_ms`` (a later cycle boundary). False if outside the data."""
        if not self.start_ms <= ts_ms <= self.end_ms:
            return False
        self._now = self.start_ms + (ts_ms - self.start_ms) // self.timeframe_ms * self.timeframe_ms
        return True

    def cycles_total(self, interval_ms: int) -> int:
        return (self.end_ms - self.start_ms) // interval_ms + 1

    def wait_next_cycle(self, interval_ms: int, stop=None) -> int | None:
        """Advance to the next boundary; None when the data is exhausted."""
        nxt = self._now + interval_ms
        if nxt > self.end_ms:
            return None
        if self.pace_s and stop is not None and stop.wait(self.pace_s):
            return None
        self._now = nxt
        return nxt

    # -- data -------------------------------------------------------------------------------------
    def _closed_count(self, symbol: str) -> int:
        c = self._data[symbol]
        return int(np.searchsorted(c.ts, self._now - self.timeframe_ms, side="right"))

    def markets(self) -> dict[str, dict]:
        return self._markets

    def rules(self, symbol: str) -> MarketRules:
        return self._rules[symbol]

    def candles(self, symbol: str, limit: int = 500) -> Candles:
        n = self._closed_count(symbol)
        return self._data[symbol].slice(max(0, n - limit), n)

    def closed_since(self, symbol: str, since_ms: int) -> Candles:
        """Candles that opened at or after ``since_ms`` and have closed by now."""
        c = self._data[symbol]
        n = self._closed_count(symbol)
        i = int(np.searchsorted(c.ts, since_ms, side="left"))
        return c.slice(min(i, n), n)

    def quote(self, symbol: str) -> Quote:
        c = self._data[symbol]
        n = self._closed_count(symbol)
        if n == 0:
            raise LookupError(f"no candles for {symbol} before {self._now}")
        price = float(c.open[n]) if n < len(c) and int(c.ts[n]) == self._now else float(c.close[n - 1])
        return Quote(symbol, price, float(c.volume[n - 1]), self._now)

    def ticker(self, symbol: str) -> dict:
        q = self.quote(symbol)
        half = self._rules[symbol].price_step / 2
        # 24 h volume from the candles closed in the last 24 h (no look-ahead), as an exchange's ticker has it
        c = self._data[symbol]
        n = self._closed_count(symbol)
        i = int(np.searchsorted(c.ts, self._now - 86_400_000, side="left"))
        base24 = float(np.sum(c.volume[i:n]))
        quote24 = float(np.sum(c.volume[i:n] * c.close[i:n]))
        return {"symbol": symbol, "last": q.price, "bid": q.price - half, "ask": q.price + half,
                "timestamp": q.ts, "baseVolume": base24, "quoteVolume": quote24, "lastCandleVolume": q.liquidity}

    def order_book(self, symbol: str, depth: int = 10) -> dict:
        """A book synthesized around the price (replays have no real depth): labelled as such."""
        q = self.quote(symbol)
        step = self._rules[symbol].price_step
        size = q.liquidity / 20
        bids = [[q.price - step * (i + 0.5), size] for i in range(depth)]
        asks = [[q.price + step * (i + 0.5), size] for i in range(depth)]
        return {"symbol": symbol, "bids": bids, "asks": asks, "timestamp": q.ts, "synthesized": True}


class WallClock:
    """Sleeps to the next candle boundary (plus a small settle delay), interruptible by ``stop``."""

    def __init__(self, settle_ms: int = 2_000):
        self.settle_ms = settle_ms

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def wait_next_cycle(self, interval_ms: int, stop) -> int | None:
        now = self.now_ms()
        boundary = (now // interval_ms + 1) * interval_ms
        delay = (boundary + self.settle_ms - now) / 1000
        if stop.wait(delay):
            return None
        return boundary
