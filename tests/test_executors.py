"""Executors of sweeps and walk-forward folds (issue 13): ``auto`` stays in-process unless the caller
pointed at a Dask cluster; the ``processes`` executor works from a script without a ``__main__`` guard;
a worker's exception reaches the caller."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qts.research import parallel

LIB = str(Path(__file__).resolve().parents[1] / "lib")


def test_auto_is_inline_without_a_cluster_however_big_the_work(monkeypatch):
    monkeypatch.delenv("QTS_DASK_SCHEDULER", raising=False)
    # the old rule sent anything above 5 s of estimated work to a process pool
    assert parallel.choose("auto", n_tasks=10_000, est_seconds=3600.0, workers=64) == "inline"
    assert parallel.choose("processes", 10, 1.0) == "processes"  # asked for: honoured


def test_auto_is_dask_when_pointed_at_a_cluster(monkeypatch):
    monkeypatch.setenv("QTS_DASK_SCHEDULER", "tcp://127.0.0.1:1")
    assert parallel.choose("auto", 1, 0.0) == "dask"
    monkeypatch.delenv("QTS_DASK_SCHEDULER")
    assert parallel.choose("auto", 1, 0.0, client=object()) == "dask"


def test_processes_keep_task_order_and_raise_a_workers_error():
    assert parallel.run_tasks(math.sqrt, [1.0, 4.0, 9.0, 16.0, 25.0], "processes", workers=2,
                              progress=False) == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="math domain error"):
        parallel.run_tasks(math.sqrt, [4.0, -1.0, 9.0], "processes", workers=2, progress=False)


SCRIPT = """\
# no `if __name__ == "__main__":` guard, on purpose: multiprocessing's spawn re-ran this file in every
# worker (BrokenProcessPool)
import json, sys
sys.path.insert(0, {lib!r})
from qts.market.synthetic import generate
from qts.research import sweep

c = generate("BTC/USDT", 3000, 300_000, seed=11)
grid = {{"fast": [5, 10, 15, 20], "slow": [40, 60, 80]}}
out = {{}}
for ex in ("inline", "auto", "processes"):
    sw = sweep("sma_cross", c, grid, executor=ex, workers=2, chunk_size=3, progress=False)
    out[ex] = {{"executor": sw.executor, "chunks": sw.chunks, "stats": sw.stats.tolist()}}
print("RESULT " + json.dumps(out))
"""


def test_a_script_without_main_guard_runs_auto_and_processes(tmp_path, monkeypatch):
    monkeypatch.delenv("QTS_DASK_SCHEDULER", raising=False)
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.format(lib=LIB))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("RESULT ") == 1, p.stdout  # the script ran once: no worker re-ran it
    out = json.loads(p.stdout.split("RESULT ", 1)[1])
    assert out["auto"]["executor"] == "inline"
    assert out["processes"]["executor"] == "processes" and out["processes"]["chunks"] == 4
    assert out["processes"]["stats"] == out["inline"]["stats"] == out["auto"]["stats"]
