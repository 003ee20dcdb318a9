"""Generated candles for the offline default market. SYNTHETIC: not real prices.

Seeded and deterministic: the same (symbol, seed, start, count) always gives the same candles, and
a longer series starts with the shorter one (candle i never depends on ``count``). A session that is
regenerated further on (a resumed replay, a manual order in the session's market) therefore sees the
very prices the loop saw.
Prices follow a regime-switching random walk (bull, bear, sideways, and high-volatility spells,
with crypto-like 5-minute volatility and fat tails); volume rises with the size of the move. The
repository ships only data it generates itself: this is that data.
"""

from __future__ import annotations

import zlib

import numpy as np

from .candles import Candles

BASE_PRICE = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "BNB": 550.0, "XRP": 0.6, "ADA": 0.45,
              "DOGE": 0.15}
BASE_VOLUME_USD = 4_000_000.0  # per 5 minutes, before the move-size boost
DAILY_VOL = {"BTC": 0.03, "ETH": 0.038, "SOL": 0.055}

# (name, drift per day, volatility multiplier, mean length in bars)
REGIMES = [("bull", 0.03, 1.0, 600), ("bear", -0.03, 1.1, 500), ("sideways", 0.0, 0.7, 800),
           ("storm", 0.0, 2.2, 150)]
SYNTHETIC_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a date no real file here covers


def generate(symbol: str, count: int, timeframe_ms: int = 300_000, seed: int = 7,
             start_ms: int = SYNTHETIC_START_MS) -> Candles:
    base = symbol.split("/")[0]
    # one random stream per ingredient, each drawn element by element: the first n values of a stream
    # do not depend on how many are drawn, so candle i is the same whatever ``count`` is
    streams = {name: np.random.default_rng([seed, zlib.crc32(symbol.encode()), k])
               for k, name in enumerate(("regime", "shock", "start", "wick", "volume"))}
    bars_per_day = 86_400_000 / timeframe_ms
    sigma = DAILY_VOL.get(base, 0.05) / np.sqrt(bars_per_day)

    drift = np.empty(count)
    volmul = np.empty(count)
    i = 0
    rng = streams["regime"]
    r = int(rng.integers(len(REGIMES)))
    while i < count:
        _, d, v, mean_len = REGIMES[r]
        n = min(count - i, max(12, int(rng.exponential(mean_len))))
        drift[i:i + n] = d / bars_per_day
        volmul[i:i + n] = v
        i += n
        r = int(rng.integers(len(REGIMES)))

    # Student-t shocks (df=4) scaled to unit variance give the fat tails crypto returns show
    shocks = streams["shock"].standard_t(4, count) / np.sqrt(2.0)
    rets = drift + sigma * volmul * shocks
    start_price = BASE_PRICE.get(base, 100.0) * float(np.exp(streams["start"].normal(0, 0.05)))
    close = start_price * np.exp(np.cumsum(rets))
    open_ = np.r_[start_price, close[:-1]]
    # drawn as (count, 2) so that row i belongs to candle i, then split into upper and lower wicks
    wick = np.abs(streams["wick"].standard_normal((count, 2)).T * (sigma * volmul * 0.6))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) / (1 + wick[1])
    move = np.abs(rets) / sigma
    noise = np.exp(streams["volume"].normal(0, 0.35, count))
    volume_usd = BASE_VOLUME_USD * (timeframe_ms / 300_000) * noise * (0.6 + 0.5 * move)
    volume = volume_usd / close
    ts = start_ms + np.arange(count, dtype=np.int64) * timeframe_ms
    tick = _tick(start_price)
    rnd = lambda a: np.round(a / tick) * tick  # noqa: E731
    open_, close = rnd(open_), rnd(close)
    high = np.maximum(rnd(high), np.maximum(open_, close))
    low = np.minimum(rnd(low), np.minimum(open_, close))
    return Candles(ts, open_, high, low, close, np.round(volume, 5), timeframe_ms)


def _tick(price: float) -> float:
    return 0.01 if price >= 1 else 0.0001
