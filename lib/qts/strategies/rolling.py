"""Exact rolling means: each window's mean is its values' exact mean, correctly rounded to a float.

Why: a running sum (``cumsum`` differences) carries the rounding of every bar since the start of the
series, so the same window gave a different moving average in a backtest over a year of candles and in
the live loop over its last few hundred (up to 2e-7 apart on BTC 5m), and an exact tie of two averages
(SMA20 == SMA100) came out as -4.4e-13 and exited a bar early. Here a window's result is a function of
that window's values only, and of their exact mean: the backtest, paper and live get the same bits from
the same candles, and two windows whose exact means are equal get equal floats (correct rounding maps
equal reals to the same float), so a tie is a tie, as in exact arithmetic.

Two implementations that return identical bits (a test checks it on the real candles):

* short series (the live loop; no compiler needed): the values as integers at a common binary scale,
  prefix sums in Python's exact integers, one correctly rounded integer division per window;
* long series (research sweeps), numba: the values as int64 at one binary unit, each split in a high and
  a low part whose window sums are exact int64 running sums (so the window's sum is exactly the sum of two
  doubles), a first guess of the quotient, and the exact-enough residual deciding between it and its
  neighbours; only a mean within ~2^-40 of a rounding midpoint, or a series that does not fit (NaN,
  values spanning more than ~2^9 in magnitude), keeps the window's sum as Shewchuk's non-overlapping
  partials (the algorithm behind ``math.fsum``) and corrects the quotient from the exact residual.

A window holding a NaN or an infinity gives NaN.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np

COMPILED_ABOVE = 2_000  # series longer than this use the numba kernel (its first call in a fresh cache compiles)
_kernel = None


def rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """``out[i]`` = the exact mean of ``x[i-n+1 : i+1]`` correctly rounded, for ``i >= n-1``; NaN before."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    n = int(n)
    if n < 1:
        raise ValueError(f"window must be at least 1, got {n}")
    out = np.full(len(x), np.nan)
    if len(x) < n:
        return out
    if len(x) > COMPILED_ABOVE:
        _long(x, n, _as_units(x), out)
        return out
    finite = np.isfinite(x)
    if not finite.all():
        bad_windows = np.convolve(~finite, np.ones(n, dtype=np.int64), mode="valid") > 0
        x = np.where(finite, x, 0.0)
    else:
        bad_windows = None
    ratios = [v.as_integer_ratio() for v in x.tolist()]  # (numerator, power-of-two denominator): exact
    scale = max(d.bit_length() for _, d in ratios) - 1
    prefix = list(accumulate((num << (scale - d.bit_length() + 1) for num, d in ratios), initial=0))
    den = n << scale
    for i in range(n - 1, len(x)):
        if bad_windows is None or not bad_windows[i - n + 1]:
            out[i] = (prefix[i + 1] - prefix[i + 1 - n]) / den  # int / int: correctly rounded
    return out


def rolling_means(x: np.ndarray, windows, out: np.ndarray, rows) -> None:
    """``out[rows[j]] = rolling_mean(x, windows[j])`` for each j, the series converted once; the windows
    run on threads (the kernels release the GIL)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    jobs = list(zip([int(w) for w in windows], [int(r) for r in rows]))
    for w, _ in jobs:
        if w < 1:
            raise ValueError(f"window must be at least 1, got {w}")
    if len(x) <= COMPILED_ABOVE:
        for w, r in jobs:
            out[r] = rolling_mean(x, w)
        return
    units = _as_units(x)

    def one(job):
        w, r = job
        row = out[r]
        row[:w - 1] = np.nan  # the kernel writes every later value
        if len(x) >= w:
            _long(x, w, units, row)

    import os

    threads = min(len(jobs), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, jobs))
    else:
        for job in jobs:
            one(job)


def _long(x: np.ndarray, n: int, units, out: np.ndarray) -> None:
    k = _compiled()
    if units is not None and n < k.MAX_SPLIT_WINDOW:
        k.split_kernel(units[0], n, units[1], out)
    else:
        k.kernel(x, n, out)


def _as_units(x: np.ndarray):
    """(int64 values, unit exponent) when every value is a whole number of one binary unit below 2^62 of
    them; else None (NaN, infinity, or a series whose values span too many binary orders of magnitude)."""
    k = _compiled()
    units = np.empty(len(x), dtype=np.int64)
    e = k.to_units(np.ascontiguousarray(x, dtype=np.float64), units)
    return None if e == k.NO_UNITS else (units, int(e))


def _compiled():
    global _kernel
    if _kernel is None:
        from . import _rolling_kernel

        _kernel = _rolling_kernel
    return _kernel
