"""Performance metrics from an equity curve and a list of closed trades (numpy; pandas only for the
monthly table).

Definitions (the numba kernels accumulate the same quantities on the fly; a test keeps them equal):
- bar returns ``r_i = equity_i / equity_{i-1} - 1``, with ``equity_{-1} = init_cash``;
- total return ``final / init_cash - 1``; CAGR ``(final / init_cash) ** (1 / years) - 1`` with
  ``years = bars / periods_per_year`` (crypto trades all year: 5-minute bars -> 105,120 a year);
- Sharpe ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` (risk-free rate 0; 0 when std is 0);
- Sortino ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year)`` (downside deviation over
  ALL bars, target 0; +inf when nothing went down and the mean is positive, 0 when flat);
  both, and the drawdown, are computed by :mod:`qts.returns` (shared with the account reports);
- max drawdown ``max(1 - equity / running peak)`` (the peak starts at init_cash), as a positive
  fraction; its duration = the most bars spent below a previous peak (until it was regained, or
  the end); Calmar ``CAGR / max drawdown`` (NaN when there was no drawdown);
- per closed trade (net of both fees): win rate (pnl > 0), profit factor ``gross wins / gross
  losses`` (+inf with no loss, NaN with no trade), expectancy = mean pnl (quote currency), average
  trade return = mean of pnl / cost of entry including its fee;
- exposure = fraction of bars that closed with a position held;
- monthly returns: equity at the last close of each calendar month (UTC, by bar open time) over the
  previous month's, the first month against ``init_cash``.
"""

from __future__ import annotations

import math

import numpy as np

from ..returns import max_drawdown, sharpe, sortino  # noqa: F401  (the one implementation)

MINUTES_PER_YEAR = 365 * 24 * 60


def periods_per_year(timeframe_ms: int) -> float:
    return MINUTES_PER_YEAR * 60_000 / timeframe_ms


def bar_returns(equity: np.ndarray, init_cash: float) -> np.ndarray:
    eq = np.asarray(equity, dtype=float)
    prev = np.r_[init_cash, eq[:-1]]
    return eq / prev - 1.0


def total_return(equity: np.ndarray, init_cash: float) -> float:
    return float(equity[-1] / init_cash - 1.0) if len(equity) else 0.0


def cagr(equity: np.ndarray, init_cash: float, ppy: float) -> float:
    n = len(equity)
    if n == 0:
        return math.nan
    final = float(equity[-1])
    if final <= 0:
        return -1.0
    return (final / init_cash) ** (ppy / n) - 1.0


def calmar(cagr_: float, mdd: float) -> float:
    return cagr_ / mdd if mdd > 0 else math.nan


def win_rate(pnl: np.ndarray) -> float:
    pnl = np.asarray(pnl, dtype=float)
    return float(np.mean(pnl > 0)) if len(pnl) else math.nan


def profit_factor(pnl: np.ndarray) -> float:
    pnl = np.asarray(pnl, dtype=float)
    if not len(pnl):
        return math.nan
    gains = float(pnl[pnl > 0].sum())
    losses = float(-pnl[pnl <= 0].sum())
    if losses > 0:
        return gains / losses
    return math.inf if gains > 0 else math.nan


def expectancy(pnl: np.ndarray) -> float:
    pnl = np.asarray(pnl, dtype=float)
    return float(pnl.mean()) if len(pnl) else math.nan


def monthly_returns(equity: np.ndarray, ts_ms: np.ndarray, init_cash: float):
    """pandas Series of monthly returns indexed by month start (naive UTC)."""
    import pandas as pd

    s = pd.Series(np.asarray(equity, dtype=float), index=pd.to_datetime(np.asarray(ts_ms), unit="ms"))
    month_end = s.groupby(s.index.to_period("M")).last()
    prev = np.r_[init_cash, month_end.to_numpy()[:-1]]
    out = pd.Series(month_end.to_numpy() / prev - 1.0, index=month_end.index.to_timestamp(), name="return")
    out.index.name = "month"
    return out


def summarize(equity: np.ndarray, init_cash: float, ppy: float, pnl=(), trade_returns=(),
              in_position: np.ndarray | None = None, n_open: int = 0) -> dict:
    """Every metric of :mod:`qts.research.kernels` ``STAT_NAMES`` from an equity curve and closed trades."""
    eq = np.asarray(equity, dtype=float)
    r = bar_returns(eq, init_cash)
    mdd, mdd_bars = max_drawdown(eq, init_cash)
    c = cagr(eq, init_cash, ppy)
    pnl = np.asarray(pnl, dtype=float)
    tr = np.asarray(trade_returns, dtype=float)
    return {
        "final_equity": float(eq[-1]) if len(eq) else init_cash,
        "total_return": total_return(eq, init_cash),
        "cagr": c,
        "sharpe": sharpe(r, ppy),
        "sortino": sortino(r, ppy),
        "max_drawdown": mdd,
        "max_dd_bars": mdd_bars,
        "calmar": calmar(c, mdd),
        "win_rate": win_rate(pnl),
        "profit_factor": profit_factor(pnl),
        "expectancy": expectancy(pnl),
        "avg_trade_return": float(tr.mean()) if len(tr) else math.nan,
        "exposure": float(np.mean(in_position)) if in_position is not None and len(in_position) else 0.0,
        "n_trades": int(len(pnl)),
        "open_trade": int(n_open),
    }
