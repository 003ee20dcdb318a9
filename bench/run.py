"""Run every benchmark, each in its own process (so peak memory is its own). `make bench`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_loop.py", "bench_safety.py", "bench_hooks.py", "bench_backtest.py", "bench_cli.py",
           "bench_sweep_scale.py", "bench_live.py", "bench_agent.py", "bench_store.py", "bench_indicators.py",
           "bench_edges.py", "bench_query.py", "bench_replay.py", "bench_dashboard.py", "bench_cluster.py"]


def main() -> int:
    import os
    import tempfile

    only = sys.argv[1:]
    rc = 0
    # the benchmarks open throw-away state homes: their per-user anchors go to a throw-away folder too
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="qts-bench-state-")
    for b in BENCHES:
        if only and not any(o in b for o in only):
            continue
        print(f"\n== {b}")
        r = subprocess.run([sys.executable, str(HERE / b)], cwd=HERE)
        rc |= r.returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
