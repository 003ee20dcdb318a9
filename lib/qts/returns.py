"""Sharpe, Sortino and drawdown: the one implementation, used by the backtests (``research.metrics``), the
account's performance (``reports.performance``), the registry's realized-vs-expected check
(``registry.lifecycle``) and the charts. The numba kernels accumulate the same quantities on the fly for sweeps;
a test keeps them equal to these.

- Sharpe ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` (risk-free rate 0; 0 when std is 0);
- Sortino ``mean(r) / downside deviation * sqrt(periods_per_year)``, the downside deviation being
  ``sqrt(mean(min(r, 0)^2))`` over ALL periods (target 0); +inf when nothing went down and the mean is
  positive, 0 when flat;
- drawdown at each point ``1 - value / running peak`` (or ``peak - value`` for a P&L that may be <= 0); the
  maximum, and the longest time under water.

numpy only (no pandas, no numba): the account reports import this lazily, when they compute ratios.
"""

from __future__ import annotations

import math

import numpy as np


def sample_std(returns) -> float:
    r = np.asarray(returns, dtype=float)
    return float(r.std(ddof=1)) if len(r) > 1 else 0.0


def downside_deviation(returns) -> float:
    r = np.asarray(returns, dtype=float)
    return math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) if len(r) else 0.0


def sharpe(returns, ppy: float) -> float:
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return 0.0
    sd = r.std(ddof=1)
    return float(r.mean() / sd * math.sqrt(ppy)) if sd > 0 else 0.0


def sortino(returns, ppy: float) -> float:
    r = np.asarray(returns, dtype=float)
    if len(r) == 0:
        return 0.0
    down = downside_deviation(r)
    m = float(r.mean())
    if down > 0:
        return m / down * math.sqrt(ppy)
    return math.inf if m > 0 else 0.0


def drawdown_curve(values, start_peak: float | None = None, relative: bool = True) -> np.ndarray:
    """At each point, how far below the running peak: ``1 - v / peak`` (a fraction; 0 where the peak is not
    positive) or, with ``relative=False``, ``peak - v``. The peak starts at ``start_peak`` (e.g. the initial
    cash) when given, else at the first value."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return v
    seed = v[:1] if start_peak is None else np.array([float(start_peak)])
    peak = np.maximum.accumulate(np.r_[seed, v])[1:]
    if not relative:
        return peak - v
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, 1.0 - v / np.where(peak > 0, peak, 1.0), 0.0)


def max_drawdown(equity, init_cash: float) -> tuple[float, int]:
    """(max drawdown as a positive fraction, longest time under water in bars); the peak starts at init_cash."""
    eq = np.asarray(equity, dtype=float)
    if len(eq) == 0:
        return 0.0, 0
    peak = np.maximum.accumulate(np.r_[init_cash, eq])[1:]
    mdd = float(np.max(drawdown_curve(eq, init_cash)))
    # bars since the last bar that set (or equalled) the peak; the initial cash is "bar -1"
    at_peak = np.r_[True, eq >= peak]
    last_peak = np.maximum.accumulate(np.where(at_peak, np.arange(-1, len(eq)), -1))[1:]
    under = np.where(eq >= peak, 0, np.arange(len(eq)) - last_peak)
    return max(mdd, 0.0), int(under.max())
