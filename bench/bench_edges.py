"""The edge factory end to end (issue #13) on the 71,769 five-minute BTC/USDT candles of 2024: features,
robust z-score and IsolationForest detectors, triple-barrier labels, walk-forward meta-models, the
candidate's gates on the held-out 30 % (sweep, DSR, PBO, walk-forward, look-ahead) and the perturbation
look-ahead check. Default FactoryConfig (window 288, thresholds 2.5 / 3.5, horizon 24, 4 folds).

Runs in its own process (peak RSS is its own); numba kernels warmed first (their compile is not the
factory's). Prints the time of each step, the total and the peak memory, and the verdict.
Command: ``.venv/bin/python bench/bench_edges.py`` (or ``bench/run.py edges``).
"""

from __future__ import annotations

import sys
import time

from common import peak_rss_mb, row, shared_data


def main() -> int:
    data = shared_data()
    if data is None:
        print("  skipped: shared data not found (set QTS_SHARED_DATA)")
        return 0
    from qts.market.candles import load_csv
    from qts.research import kernels
    from qts.research.edges import FactoryConfig, run_factory

    kernels.warm_up()
    c = load_csv(data / "ohlcv" / "BTC_USDT-5m.csv")
    base = peak_rss_mb()
    t0 = time.perf_counter()
    r = run_factory(c, FactoryConfig())
    total = time.perf_counter() - t0
    print(f"edge factory on {len(c):,} BTC/USDT 5m bars ({r.cut:,} in-sample, {len(c) - r.cut:,} held out)")
    for k, v in r.timings.items():
        row(f"  {k}", f"{v:.2f} s")
    row("total", f"{total:.1f} s")
    row("peak RSS", f"{peak_rss_mb():.0f} MB", f"(after loading + warm-up: {base:.0f} MB)")
    cand = r.candidate
    row("candidate", cand["primary"] if cand else "none", f"OOS AUC {cand['oos_auc']:.3f}" if cand else "")
    row("verdict", "PASS" if r.passed else "FAIL", "; ".join((r.validation or {}).get("reasons", []))[:200])
    return 0


if __name__ == "__main__":
    sys.exit(main())
