"""A large sweep in-process against a local process pool (issue 13): 10,000 SMA-cross combinations
(fast 2..101 x slow 110..1100 step 10) on 287,335 five-minute bars (the generated market: the real files
hold ~72k bars each), statistics only. Each contender runs in its own process, so its peak RSS
(getrusage maxrss) is its own; a pool's workers are reported separately (the largest one).

Targets (issue 13): in-process < 1 GB peak and < 8 s; ``auto`` picks in-process here, so it must not be
slower or bigger than the pool. Both results must be identical.

Also: the first sweep of a fresh process with the numba cache warm (1,000 combinations on the real BTC 5m
candles, 71,769 bars), against the same sweep run again in that process: what an assistant's first
research command pays for loading the compiled kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from common import ROOT, row, shared_data

N_BARS = 287_335
GRID = {"fast": list(range(2, 102)), "slow": list(range(110, 1110, 10))}

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
import numpy as np
from qts.market.synthetic import generate
from qts.research import sweep
grid = json.loads(sys.argv[3])
c = generate("BTC/USDT", int(sys.argv[4]), 300_000, seed=7)
sweep("sma_cross", c.slice(0, 3000), {"fast": [2, 3], "slow": [110]}, executor="inline", progress=False)  # kernels loaded
t, cpu = time.perf_counter(), time.process_time()
sw = sweep("sma_cross", c, grid, executor=sys.argv[1], workers=2, progress=False)
wall = time.perf_counter() - t
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"executor": sw.executor, "chunks": sw.chunks, "n": sw.n_trials, "wall": wall,
                  "cpu": time.process_time() - cpu + kids.ru_utime + kids.ru_stime,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_rss_mb": kids.ru_maxrss / 1024, "digest": float(np.nansum(np.where(np.isfinite(sw.stats), sw.stats, 0)))}))
"""


def run(executor: str) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, executor, str(ROOT / "lib"), json.dumps(GRID), str(N_BARS)],
                       capture_output=True, text=True, env={**os.environ})
    if p.returncode:
        raise SystemExit(f"{executor}: exit {p.returncode}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


FIRST = r"""
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from qts.market.candles import load_csv
from qts.research import sweep
c = load_csv(sys.argv[2])
grid = {"fast": list(range(2, 102)), "slow": list(range(110, 291, 20))}
t1 = time.perf_counter()
sweep("sma_cross", c, grid, executor="inline", progress=False)
t2 = time.perf_counter()
sweep("sma_cross", c, grid, executor="inline", progress=False, cache_bytes=(512 << 20) + 1)  # a new indicator cache
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def first_sweep() -> None:
    data = shared_data()
    if data is None:
        print("  first sweep in a fresh process: skipped (../shared/data/ohlcv not found)")
        return
    csv = data / "ohlcv" / "BTC_USDT-5m.csv"
    runs = []
    for _ in range(3):
        p = subprocess.run([sys.executable, "-c", FIRST, str(ROOT / "lib"), str(csv)], capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"first sweep: exit {p.returncode}\n{p.stderr[-2000:]}")
        runs.append([float(v) for v in p.stdout.split()])
    imp, first, again = (sorted(r[i] for r in runs)[1] for i in range(3))  # medians of 3 processes
    row("first 1,000-combination sweep, fresh process", f"{first:.2f} s",
        f"median of 3 processes; the same sweep again in it: {again:.2f} s (the rest is loading the cached kernels); "
        f"imports + candles before it {imp:.2f} s")


def main() -> int:
    first_sweep()
    t0 = time.perf_counter()
    res = {ex: run(ex) for ex in ("auto", "processes")}
    a, p = res["auto"], res["processes"]
    print(f"  {a['n']:,} combinations x {N_BARS:,} bars; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    row(f"auto -> {a['executor']} ({a['chunks']} chunks)", f"{a['wall']:.1f} s", f"cpu {a['cpu']:.1f} s, peak {a['rss_mb']:.0f} MB")
    row(f"processes, 2 workers ({p['chunks']} chunks)", f"{p['wall']:.1f} s",
        f"cpu {p['cpu']:.1f} s, peak {p['rss_mb']:.0f} MB + workers up to {p['worker_rss_mb']:.0f} MB each; "
        f"{p['wall'] / a['wall']:.2f}x the in-process time")
    same = a["digest"] == p["digest"]
    print(f"  identical statistics: {same}; targets: in-process peak < 1024 MB "
          f"({'ok' if a['rss_mb'] < 1024 else 'MISSED'}), < 8 s ({'ok' if a['wall'] < 8 else 'MISSED'}); "
          f"({time.perf_counter() - t0:.0f} s in all)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
