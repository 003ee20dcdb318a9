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
* long series (research sweeps), numba: the values as int64 at one binary unit, a running integer sum
  and a correctly rounded integer division (integer comparisons against the midpoints); where that does
  not fit (windows over 256, values spanning many binary orders of magnitude, NaN) the window's sum is
  kept exactly as Shewchuk's non-overlapping partials (the algorithm behind ``math.fsum``), and the
  quotient by ``n`` is corrected from the exact residual.

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
        k = _compiled()
        units = _as_units(x, n, k.INT_MAX_WINDOW)
        if units is not None:
            k.int_kernel(units[0], n, units[1], out)
        else:
            k.kernel(x, n, out)
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


def _as_units(x: np.ndarray, n: int, max_window: int):
    """(int64 values, unit exponent) when every value is a whole number of one binary unit and a window's
    sum fits an int64 with room to spare; else None (NaN, infinity, a long window, or a series whose
    values span too many binary orders of magnitude)."""
    if n > max_window or not np.isfinite(x).all():
        return None
    nz = x[x != 0]
    if not len(nz):
        return np.zeros(len(x), dtype=np.int64), 0
    _, e = np.frexp(nz)
    unit_exp = int(e.min()) - 53
    top = float(np.abs(nz).max())
    if np.ldexp(top, -unit_exp) * n >= 2.0 ** 62:
        return None
    return np.ldexp(x, -unit_exp).astype(np.int64), unit_exp


def _compiled():
    global _kernel
    if _kernel is None:
        from . import _rolling_kernel

        _kernel = _rolling_kernel
    return _kernel
