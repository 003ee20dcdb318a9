"""`python -m qts.research.warmup` (run by `make install`, `make demo` and setup.sh) must leave the numba cache
complete: a following `qts backtest` process, single run and sweeps, loads every kernel and compiles none
(numba's NUMBA_DEBUG_CACHE output lists each cache entry saved or loaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

QTS = [sys.executable, "-c", "import sys; from qts.cli import main; sys.exit(main())"]
LIB = str(Path(__file__).resolve().parents[1] / "lib")


def test_after_the_warmup_a_backtest_compiles_nothing(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "QTS_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(filter(None, [LIB, os.environ.get("PYTHONPATH")]))}
    for k in ("QTS_DASK_SCHEDULER", "NUMBA_DISABLE_JIT"):
        env.pop(k, None)
    w = subprocess.run([sys.executable, "-m", "qts.research.warmup"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert w.returncode == 0, w.stderr[-2000:]
    assert any((tmp_path / "numba").rglob("*.nbi")), "the warm-up wrote no cache index"
    env["NUMBA_DEBUG_CACHE"] = "1"
    data = ["--synthetic", "--timeframe", "5m", "--days", "20"]  # 5,760 bars: the compiled rolling mean
    for args in (["backtest", "sma_cross", *data],
                 ["backtest", "sma_cross", *data, "--grid", "fast=5:15:5", "--grid", "slow=30:60:30"],
                 ["backtest", "rsi_reversion", *data, "--grid", "period=7:14:7"]):
        p = subprocess.run(QTS + args, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        log = p.stdout + p.stderr
        assert "data loaded" in log, log[-2000:]
        saved = [line for line in log.splitlines() if "data saved" in line]
        assert not saved, f"{' '.join(args)} compiled kernels the warm-up missed: {saved}"
