"""Interactive speed of `qts backtest` (issue 13), whole process, as a user types it.

- baseline: `python -c pass` (interpreter start) and `qts --help`, measured in the same run;
- argument errors (unknown strategy, bad --param, missing data): must answer before anything heavy
  (numba, pandas, scipy) is imported — target < 0.5 s;
- one backtest of sma_cross on 71,769 BTC/USDT 5m candles (the real 2024 file): warm (numba cache
  filled, as `make install` / `make demo` leave it) — target < 2 s; and cold (an empty numba cache: the
  first command without the warm-up compiles its kernels).
Wall time is the median of the runs; CPU time (user+sys of the child) is printed next to it because the
shared 2-core machine's load moves wall time, not CPU time.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, row, shared_data

QTS = Path(sys.executable).parent / "qts"
CMD = [str(QTS)] if QTS.exists() else [sys.executable, "-c", "import sys; from qts.cli import main; sys.exit(main())"]


def timed(args, env=None, expect=0, runs=5):
    walls, cpus = [], []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        p = subprocess.run(args, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        if p.returncode != expect:
            raise SystemExit(f"{' '.join(args)}: exit {p.returncode}, expected {expect}\n{p.stderr[-2000:]}")
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    data = shared_data()
    if data is None:
        print("  skipped: no ../shared/data/ohlcv (set QTS_SHARED_DATA)")
        return 0
    ohlcv = str(data / "ohlcv")
    home = tempfile.mkdtemp(prefix="qts-bench-cli-")
    env = {**os.environ, "QTS_HOME": home}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user's shell: compiled modules cached in __pycache__
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba-cache"))
    subprocess.run([sys.executable, "-m", "qts.research.warmup"], env=env, check=True, capture_output=True)

    base, base_cpu = timed([sys.executable, "-c", "pass"], env)
    row("python -c pass (baseline)", f"{base * 1000:.0f} ms", f"cpu {base_cpu * 1000:.0f} ms")
    w, c = timed(CMD + ["--help"], env)
    row("qts --help", f"{w * 1000:.0f} ms", f"cpu {c * 1000:.0f} ms, {w / base:.1f}x baseline")
    errors = {
        "unknown strategy": ["backtest", "nope", "--data", ohlcv],
        "bad --param": ["backtest", "sma_cross", "--param", "fast=abc", "--data", ohlcv],
        "missing data (no such market)": ["backtest", "sma_cross", "--symbol", "XRP/USDT", "--data", ohlcv],
    }
    worst = 0.0
    for name, a in errors.items():
        w, c = timed(CMD + a, env, expect=2)
        worst = max(worst, w)
        row(f"error: {name}", f"{w * 1000:.0f} ms", f"cpu {c * 1000:.0f} ms, {w / base:.1f}x baseline")
    bt = ["backtest", "sma_cross", "--data", ohlcv, "--timeframe", "5m"]
    w, c = timed(CMD + bt, env)
    row("backtest sma_cross, 71,769 5m bars, warm", f"{w:.2f} s", f"cpu {c:.2f} s, {w / base:.0f}x baseline")
    with tempfile.TemporaryDirectory(prefix="qts-bench-numba-") as cold:
        wc, cc = timed(CMD + bt, {**env, "NUMBA_CACHE_DIR": cold}, runs=1)
    row("the same, cold (empty numba cache)", f"{wc:.2f} s", f"cpu {cc:.2f} s")
    print(f"  targets: argument errors < 0.5 s (worst {worst:.2f} s: {'ok' if worst < 0.5 else 'MISSED'}); "
          f"warm backtest < 2 s ({w:.2f} s: {'ok' if w < 2 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
