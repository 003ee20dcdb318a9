"""Indicators on numpy arrays. Value i uses inputs up to i only (no look-ahead); NaN while warming up."""

from __future__ import annotations

import numpy as np

from .rolling import rolling_mean, rolling_means


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """The exact mean of each window, correctly rounded: the same bits whatever the series' start (a
    backtest over a year, the live loop over its last bars), and equal means compare equal (ties)."""
    return rolling_mean(x, n)


def smas_into(x: np.ndarray, windows, out: np.ndarray, rows) -> None:
    """``out[rows[j]] = sma(x, windows[j])`` for every j (what a sweep needs: many windows, one series)."""
    rolling_means(x, windows, out, rows)


def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        w = np.lib.stride_tricks.sliding_window_view(x, n)
        out[n - 1:] = w.std(axis=1)
    return out


def rsi(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI."""
    out = np.full(len(x), np.nan)
    if len(x) <= n:
        return out
    d = np.diff(x)
    gain, loss = np.clip(d, 0, None), np.clip(-d, 0, None)
    g, l = gain[:n].mean(), loss[:n].mean()
    vals = np.empty(len(d) - n + 1)
    vals[0] = _rsi(g, l)
    a = 1.0 / n
    for i in range(n, len(d)):
        g += a * (gain[i] - g)
        l += a * (loss[i] - l)
        vals[i - n + 1] = _rsi(g, l)
    out[n:] = vals
    return out


def _rsi(g: float, l: float) -> float:
    if l == 0:
        return 100.0 if g > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + g / l)


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    prev = np.r_[np.nan, close[:-1]]
    tr = np.nanmax(np.vstack([high - low, np.abs(high - prev), np.abs(low - prev)]), axis=0)
    return sma(tr, n)
