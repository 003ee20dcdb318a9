"""Market statistics the project computes from candles, for the research prompt and the offline proposer.

Everything is computed here from closes (never taken from notes or from a model). Definitions, with
``r_i = ln(close_i / close_{i-1})`` the log return of bar i and ``B`` the bars per day:

- ``total_return``: ``close_last / close_first - 1``; ``mean_daily_return``: ``mean(r) * B`` (log);
- ``daily_vol``: ``std(r) * sqrt(B)``; ``annual_vol``: ``daily_vol * sqrt(365)``;
- ``autocorr_lag1``: correlation of ``r_i`` with ``r_{i-1}`` (negative: reversal, positive: momentum);
- ``variance_ratio``: ``var(sum of q consecutive r) / (q * var(r))`` with q = max(2, B / 4)
  (about 1 for a random walk, > 1 trending, < 1 mean reverting; Lo & MacKinlay);
- ``efficiency_ratio``: ``|sum r| / sum |r|`` over the whole sample (1 = straight line, ~0 = noise);
- ``trend_r2``: R² of a straight-line fit of log price against time;
- ``max_drawdown``: the largest fall of the close from a running peak, as a fraction;
- ``regime_shares``: the sample is cut into windows of W = max(12, B) bars; a window is ``high_vol``
  when its volatility exceeds 1.5x the median window's, else ``trend_up`` / ``trend_down`` when its
  efficiency ratio exceeds 2 / sqrt(W) (twice what a random walk of W bars shows on average), by the
  sign of its return, else ``range``. Shares of windows, summing to 1.
"""

from __future__ import annotations

import json
import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..market.candles import Candles

DAY_MS = 86_400_000


class MarketStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str | None = None
    timeframe_minutes: float
    bars: int
    days: float
    start_ts: int
    end_ts: int
    bars_per_day: float
    first_close: float
    last_close: float
    total_return: float
    mean_daily_return: float
    daily_vol: float
    annual_vol: float
    autocorr_lag1: float | None
    variance_ratio: float | None
    variance_ratio_q: int
    efficiency_ratio: float | None
    trend_r2: float | None
    max_drawdown: float
    regime_window_bars: int
    regime_shares: dict[str, float]

    def to_prompt(self) -> str:
        """Compact JSON (4 significant digits) for the research prompt."""
        d = {k: _round(v) for k, v in self.model_dump().items()}
        return json.dumps(d, sort_keys=True, separators=(", ", ": "))


def _round(v):
    if isinstance(v, float):
        return float(f"{v:.4g}") if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def market_stats(candles: Candles, symbol: str | None = None) -> MarketStats:
    """Statistics of ``candles`` (at least 3 bars)."""
    n = len(candles)
    if n < 3:
        raise ValueError(f"market statistics need at least 3 candles, got {n}")
    close = np.asarray(candles.close, dtype=float)
    r = np.diff(np.log(close))
    bpd = DAY_MS / candles.timeframe_ms
    sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    q = int(max(2, round(bpd / 4)))
    vr = None
    if len(r) >= 4 * q and sd > 0:
        agg = np.convolve(r, np.ones(q), mode="valid")
        vr = float(agg.var(ddof=1) / (q * r.var(ddof=1)))
    path = float(np.abs(r).sum())
    er = float(abs(r.sum()) / path) if path > 0 else None
    t = np.arange(n, dtype=float)
    lp = np.log(close)
    r2 = None
    if lp.std() > 0:
        c = np.corrcoef(t, lp)[0, 1]
        r2 = float(c * c)
    peak = np.maximum.accumulate(close)
    mdd = float(np.max(1 - close / peak))
    w = int(max(12, round(bpd)))
    shares = {"trend_up": 0.0, "trend_down": 0.0, "range": 0.0, "high_vol": 0.0}
    k = len(r) // w
    if k >= 1:
        win = r[: k * w].reshape(k, w)
        vol = win.std(axis=1)
        med = float(np.median(vol))
        ret = win.sum(axis=1)
        eff = np.abs(ret) / np.maximum(np.abs(win).sum(axis=1), 1e-300)
        labels = np.where(vol > 1.5 * med, "high_vol",
                          np.where(eff > 2 / math.sqrt(w), np.where(ret > 0, "trend_up", "trend_down"), "range"))
        for lab in shares:
            shares[lab] = float(np.mean(labels == lab))
    return MarketStats(
        symbol=symbol, timeframe_minutes=candles.timeframe_ms / 60_000, bars=n,
        days=n * candles.timeframe_ms / DAY_MS, start_ts=int(candles.ts[0]), end_ts=int(candles.ts[-1]),
        bars_per_day=bpd, first_close=float(close[0]), last_close=float(close[-1]),
        total_return=float(close[-1] / close[0] - 1), mean_daily_return=float(r.mean() * bpd),
        daily_vol=sd * math.sqrt(bpd), annual_vol=sd * math.sqrt(bpd * 365),
        autocorr_lag1=_corr(r[1:], r[:-1]), variance_ratio=vr, variance_ratio_q=q, efficiency_ratio=er,
        trend_r2=r2, max_drawdown=mdd, regime_window_bars=w, regime_shares=shares)
