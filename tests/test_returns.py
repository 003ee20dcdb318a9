"""Sharpe, Sortino and drawdown have one implementation (qts.returns); the backtest metrics and the account's
performance report give the textbook figures through it. Expected values come from the standard library's
``statistics`` or are worked out by hand in the comments, not from the code under test."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from qts.reports import performance as P
from qts.research import metrics as M

R = [0.02, -0.01, 0.03, -0.04, 0.015, 0.0, 0.01, -0.005]
PPY = 365.0


def test_sharpe_and_sortino_are_the_textbook_ones_in_the_backtests_and_the_account_report():
    mean, sd = statistics.mean(R), statistics.stdev(R)
    down = math.sqrt(sum(min(x, 0.0) ** 2 for x in R) / len(R))
    want_sharpe, want_sortino = mean / sd * math.sqrt(PPY), mean / down * math.sqrt(PPY)
    assert M.sharpe(np.array(R), PPY) == pytest.approx(want_sharpe, rel=1e-12)
    assert M.sortino(np.array(R), PPY) == pytest.approx(want_sortino, rel=1e-12)
    stats = P.ratio_stats(R, PPY)
    assert stats["sharpe"] == pytest.approx(want_sharpe, rel=1e-12)
    assert stats["sortino"] == pytest.approx(want_sortino, rel=1e-12)
    assert stats["volatility_ann_pct"] == pytest.approx(100 * sd * math.sqrt(PPY), rel=1e-12)


def test_where_the_ratios_are_undefined_the_report_says_none_and_the_backtest_zero_or_infinity():
    assert P.ratio_stats([0.01, 0.01, 0.01], PPY)["sharpe"] is None       # no spread
    assert P.ratio_stats([0.01, 0.02, 0.03], PPY)["sortino"] is None      # nothing went down
    assert P.ratio_stats([0.01, -0.02], PPY)["sharpe"] is None            # fewer than 3 periods
    assert M.sharpe(np.full(5, 0.01), PPY) == 0.0
    assert M.sortino(np.array([0.01, 0.02, 0.03]), PPY) == math.inf


def test_drawdown_in_the_backtests_and_the_account_report():
    eq = [100.0, 120.0, 90.0, 130.0, 65.0, 70.0, 140.0]
    # peaks 120 -> 90 (25 %), then 130 -> 65 (50 %), regained at 140; under water: bar 2, bars 4-5 (2 bars)
    assert M.max_drawdown(np.array(eq), 100.0) == (pytest.approx(0.5), 2)
    ts = [1000 * i for i in range(len(eq))]
    dd = P.max_drawdown(ts, eq)
    assert dd["max_drawdown"] == pytest.approx(65.0) and dd["max_drawdown_pct"] == pytest.approx(50.0)
    assert (dd["peak_ts"], dd["trough_ts"], dd["recovered_ts"]) == (3000, 4000, 6000)
    # cumulative P&L (may be <= 0): in currency, not percent; 10 -> -20 is the largest fall, never regained
    pnl = P.max_drawdown(ts[:6], [0.0, 10.0, -5.0, 3.0, -20.0, 0.0], relative=False)
    assert pnl["max_drawdown"] == pytest.approx(30.0) and pnl["max_drawdown_pct"] is None
    assert (pnl["peak_ts"], pnl["trough_ts"], pnl["recovered_ts"]) == (1000, 4000, None)
    assert P.max_drawdown(ts[:3], [1.0, 2.0, 3.0])["peak_ts"] is None  # only up: no drawdown


def test_the_drawdown_curve():
    from qts.returns import drawdown_curve

    assert drawdown_curve([100.0, 80.0, 120.0, 90.0]).tolist() == pytest.approx([0.0, 0.2, 0.0, 0.25])
    assert drawdown_curve([90.0, 95.0], start_peak=100.0).tolist() == pytest.approx([0.1, 0.05])
    assert drawdown_curve([0.0, 5.0, -5.0], relative=False).tolist() == [0.0, 0.0, 10.0]
