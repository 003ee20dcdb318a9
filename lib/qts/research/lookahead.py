"""Look-ahead checks. (1) A strategy's signals on data cut at bar t must equal its signals on the full data
up to t, at many t (in the spirit of Freqtrade's lookahead-analysis).

A strategy that reads bar i+1 (a negative shift, a centred window, a normalization over the whole
series) produces, on the cut data, something different at the last bars than on the full data.
Entry and exit booleans must be identical; indicator series equal up to ``rtol`` (NaN equals NaN).

(2) :func:`perturbation_check`: any per-bar computation (the edge factory's features, the labels known
so far, walk-forward meta-model decisions) must give the same values at bars 0..t when every candle
after t is changed (:func:`perturb_after`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..market.candles import Candles
from ..strategies import Strategy


@dataclass
class LookaheadReport:
    strategy: str
    params: dict
    cuts: list[int]
    mismatches: list[dict] = field(default_factory=list)  # {cut, series, bar}

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def summary(self) -> str:
        if self.ok:
            return f"{self.strategy}: no look-ahead at {len(self.cuts)} cut points"
        m = self.mismatches[0]
        return (f"{self.strategy}: look-ahead: {len(self.mismatches)} of {len(self.cuts)} cut points differ; first "
                f"at cut {m['cut']}: {m['series']} differs at bar {m['bar']}")


def cut_points(n_bars: int, min_bars: int, points: int, seed: int = 0) -> list[int]:
    """About ``points`` cut positions in [min_bars, n_bars]: evenly spread plus random ones, and the end."""
    lo = max(1, min_bars)
    if lo > n_bars:
        return []
    even = np.linspace(lo, n_bars, max(2, points // 2)).round().astype(int)
    rnd = np.random.default_rng(seed).integers(lo, n_bars + 1, size=points - len(even))
    return sorted({int(x) for x in np.r_[even, rnd, n_bars]})


def lookahead_check(strategy: Strategy, candles: Candles, points: int = 50, min_bars: int | None = None,
                    rtol: float = 1e-9, seed: int = 0) -> LookaheadReport:
    full_e, full_x, full_ind = strategy.signals(candles)
    cuts = cut_points(len(candles), min_bars if min_bars is not None else strategy.lookback + 1, points, seed)
    rep = LookaheadReport(strategy.name, strategy.params.model_dump(), cuts)
    for t in cuts:
        e, x, ind = strategy.signals(candles.slice(0, t))
        series = [("entry", e, full_e[:t]), ("exit", x, full_x[:t])]
        series += [(k, v, full_ind[k][:t]) for k, v in ind.items() if k in full_ind]
        for name, cut, full in series:
            cut, full = np.asarray(cut), np.asarray(full)
            if cut.shape != full.shape:
                rep.mismatches.append({"cut": t, "series": name, "bar": -1})
                continue
            if cut.dtype == bool or full.dtype == bool:
                bad = np.flatnonzero(cut != full)
            else:
                bad = np.flatnonzero(~np.isclose(cut, full, rtol=rtol, atol=0.0, equal_nan=True))
            if bad.size:
                rep.mismatches.append({"cut": t, "series": name, "bar": int(bad[0])})
    return rep


# -- perturbation check: any causal computation, not only a strategy's signals --------------------------
def perturb_after(candles: Candles, t: int, seed: int = 0, scale: float = 0.05) -> Candles:
    """A copy whose bars AFTER ``t`` are changed: prices scaled by a random factor per bar (high and low
    stay around open and close), volume by another. Bars 0..t are untouched."""
    rng = np.random.default_rng(seed)
    n = len(candles) - (t + 1)
    f = 1.0 + rng.uniform(-scale, scale, n)
    g = rng.uniform(0.2, 5.0, n)

    def cut(a, k):
        a = np.array(a, dtype=np.float64, copy=True)
        a[t + 1:] *= k
        return a

    o, c = cut(candles.open, f), cut(candles.close, f[::-1] if n else f)
    h = np.maximum(cut(candles.high, f), np.maximum(o, c))
    lo = np.minimum(cut(candles.low, f), np.minimum(o, c))
    return Candles(candles.ts.copy(), o, h, lo, c, cut(candles.volume, g), candles.timeframe_ms)


def perturbation_check(fn, candles: Candles, cuts: list[int], name: str = "computation", seed: int = 0,
                       rtol: float = 0.0) -> LookaheadReport:
    """``fn(candles, t) -> {series: per-bar array}``. For each cut t, every series' values at bars 0..t
    must be the same on the real candles and on candles whose bars after t were perturbed
    (:func:`perturb_after`); NaN equals NaN; ``rtol`` 0 means bit for bit. A series that read one
    future bar differs somewhere."""
    rep = LookaheadReport(name, {}, list(cuts))
    for j, t in enumerate(cuts):
        base = fn(candles, t)
        pert = fn(perturb_after(candles, t, seed + j), t)
        for key, a in base.items():
            a, b = np.asarray(a)[: t + 1], np.asarray(pert[key])[: t + 1]
            if a.shape != b.shape:
                rep.mismatches.append({"cut": t, "series": key, "bar": -1})
                continue
            if a.dtype.kind in "bi" or b.dtype.kind in "bi":
                bad = np.flatnonzero(a != b)
            else:
                bad = np.flatnonzero(~np.isclose(a, b, rtol=rtol, atol=0.0, equal_nan=True))
            if bad.size:
                rep.mismatches.append({"cut": t, "series": key, "bar": int(bad[0])})
    return rep
