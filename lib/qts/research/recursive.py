"""Recursive (warm-up) analysis: do a strategy's decisions depend on how much history precedes them?

The live loop decides on the last ``strategy.lookback`` candles (``feed.candles(symbol, lookback)``);
the backtest computes the same signals over the whole history from bar 0. They agree only if the
declared ``lookback`` really is enough warm-up: an indicator with a longer memory than declared (a
recursive smoothing like EMA or Wilder's RSI given too short a run-in, a window longer than the
declared lookback, anything cumulative) makes a decision at bar t differ with the amount of history
before t (in the spirit of Freqtrade's recursive-analysis).

:func:`recursive_check` computes the signals from bar 0 (the reference) and again from several start
bars k, on ``candles[k:]``; from the first bar that has ``lookback`` candles of history (k + lookback
- 1, where the live loop makes its first decision) on, the entry and exit decisions must be
identical (a confidence entry equal up to ``rtol``). The first differing bar is reported. Indicator
series are compared too (NaN equals NaN, up to ``rtol``) and reported, but only decisions fail the
check: an indicator may converge without changing a decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..market.candles import Candles
from ..strategies import Strategy


@dataclass
class RecursiveReport:
    strategy: str
    params: dict
    lookback: int
    starts: list[int]
    mismatches: list[dict] = field(default_factory=list)            # decisions: {start, series, bar}
    indicator_mismatches: list[dict] = field(default_factory=list)  # {start, series, bar, rel_diff}

    @property
    def ok(self) -> bool:
        """No decision differs (and at least one start bar was checked)."""
        return bool(self.starts) and not self.mismatches

    @property
    def first(self) -> dict | None:
        """The earliest differing decision bar over all starts (None when none differs)."""
        return min(self.mismatches, key=lambda m: (m["bar"], m["start"])) if self.mismatches else None

    def summary(self) -> str:
        if not self.starts:
            return f"{self.strategy}: recursive analysis: too few candles for lookback {self.lookback}"
        if not self.mismatches:
            extra = ""
            if self.indicator_mismatches:
                m = self.indicator_mismatches[0]
                extra = (f" (indicator {m['series']} still differs by {m['rel_diff']:.2g} relative at bar "
                         f"{m['bar']}, without changing a decision)")
            return (f"{self.strategy}: decisions independent of history beyond the declared lookback "
                    f"{self.lookback} at {len(self.starts)} start bars{extra}")
        m = self.first
        return (f"{self.strategy}: declared lookback {self.lookback} is too short: started at bar {m['start']}, "
                f"{m['series']} differs at bar {m['bar']} ({m['bar'] - m['start'] + 1} bars of history) from "
                f"the decision computed from bar 0; {len(self.mismatches)} of {len(self.starts)} start bars differ")


def start_points(n_bars: int, lookback: int, points: int, seed: int = 0) -> list[int]:
    """About ``points`` start bars in [1, n_bars - lookback]: evenly spread plus random ones."""
    hi = n_bars - max(1, lookback)
    if hi < 1:
        return []
    even = np.linspace(1, hi, max(2, points // 2)).round().astype(int)
    rnd = np.random.default_rng(seed).integers(1, hi + 1, size=max(0, points - len(even)))
    return sorted({int(x) for x in np.r_[even, rnd]})


def _diff(a: np.ndarray, b: np.ndarray, rtol: float) -> np.ndarray:
    if a.dtype == bool and b.dtype == bool:
        return np.flatnonzero(a != b)
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.flatnonzero(~np.isclose(a, b, rtol=rtol, atol=0.0, equal_nan=True))


def recursive_check(strategy: Strategy, candles: Candles, points: int = 20, span: int | None = None,
                    rtol: float = 1e-9, seed: int = 0, starts: list[int] | None = None) -> RecursiveReport:
    """Signals from bar 0 against signals from each start bar k (see the module docstring). ``span``:
    bars compared after each warm-up (default ``2 * lookback + 200``: a memory longer than declared
    shows first right after the warm-up)."""
    lb = max(1, int(strategy.lookback))
    n = len(candles)
    span = span or 2 * lb + 200
    full_e, full_x, full_ind = strategy.signals(candles)
    full_e, full_x = np.asarray(full_e), np.asarray(full_x)
    ks = sorted(set(starts)) if starts is not None else start_points(n, lb, points, seed)
    ks = [k for k in ks if 0 < k and k + lb <= n]
    rep = RecursiveReport(strategy.name, strategy.params.model_dump(), lb, ks)
    for k in ks:
        stop = min(n, k + lb - 1 + span)
        e, x, ind = strategy.signals(candles.slice(k, stop))
        w = lb - 1  # the first bar with lookback candles of history, relative to k
        for name, cut, ref in (("entry", e, full_e), ("exit", x, full_x)):
            bad = _diff(np.asarray(cut)[w:], ref[k + w:stop], rtol)
            if bad.size:
                rep.mismatches.append({"start": k, "series": name, "bar": int(k + w + bad[0])})
        for name, v in ind.items():
            if name not in full_ind:
                continue
            a, b = np.asarray(v, dtype=np.float64)[w:], np.asarray(full_ind[name], dtype=np.float64)[k + w:stop]
            bad = _diff(a, b, rtol)
            if bad.size:
                i = bad[0]
                den = abs(b[i]) if np.isfinite(b[i]) and b[i] != 0 else 1.0
                rel = float(abs(a[i] - b[i]) / den) if np.isfinite(a[i]) and np.isfinite(b[i]) else float("inf")
                rep.indicator_mismatches.append({"start": k, "series": name, "bar": int(k + w + i), "rel_diff": rel})
    return rep
