"""Exact moving averages (issue #13): what exactness costs against the drifting running sum.

The SMA kernels used to take ``cumsum`` differences (fast, but a window's mean depended on every bar
before it: up to 2e-7 off on BTC 5m, and an exact tie could come out as -4.4e-13). ``rolling_mean`` gives
each window's exact mean, correctly rounded. This measures both, and pandas' rolling mean for scale, on the
windows a 1,000-combination SMA sweep needs, over the real 2024 candles, warm (the numba kernel compiled
and cached before timing), and prints how far the running sum drifts from the exact value.

    .venv/bin/python bench/bench_indicators.py
"""

from __future__ import annotations

import time

import numpy as np

from common import peak_rss_mb, row, shared_data


def _closes(name: str) -> np.ndarray | None:
    data = shared_data()
    if data is None:
        return None
    import csv

    with open(data / "ohlcv" / name, newline="") as fh:
        rows = list(csv.reader(fh))
    head = [h.strip().lower() for h in rows[0]]
    col = head.index("close")
    return np.array([float(r[col]) for r in rows[1:]], dtype=np.float64)


def _cumsum_mean(x: np.ndarray, n: int) -> np.ndarray:
    c = np.concatenate(([0.0], np.cumsum(x)))
    out = np.full(len(x), np.nan)
    out[n - 1:] = (c[n:] - c[:-n]) / n
    return out


def _best(f, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    from qts.strategies.rolling import rolling_mean

    print("exact moving averages vs the running sum (best of 3, warm)")
    for name in ("BTC_USDT-1h.csv", "BTC_USDT-5m.csv"):
        x = _closes(name)
        if x is None:
            print("  skipped: ../shared/data/ohlcv not found (set QTS_SHARED_DATA)")
            return 0
        windows = list(range(5, 115))  # the fast and slow windows of a 1,000-combination SMA grid
        rolling_mean(x, 20)  # compile / load the numba cache before timing
        t_exact = _best(lambda: [rolling_mean(x, n) for n in windows])
        t_cum = _best(lambda: [_cumsum_mean(x, n) for n in windows])
        import pandas as pd

        s = pd.Series(x)
        t_pd = _best(lambda: [s.rolling(n).mean().to_numpy() for n in windows])
        drift = max(float(np.nanmax(np.abs(_cumsum_mean(x, n) - rolling_mean(x, n)))) for n in (20, 50, 100))
        print(f"\n  {name}: {len(x):,} bars, {len(windows)} windows")
        row("exact rolling_mean", f"{t_exact * 1000:9.1f} ms", f"x{t_exact / t_cum:.1f} the running sum")
        row("running sum (cumsum differences)", f"{t_cum * 1000:9.1f} ms", "baseline")
        row("pandas rolling().mean()", f"{t_pd * 1000:9.1f} ms", f"x{t_pd / t_cum:.1f} the running sum")
        row("running sum's largest error (SMA 20/50/100)", f"{drift:.3g}", "absolute, in price units")
    row("peak RSS", f"{peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
