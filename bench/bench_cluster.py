"""A sweep on a real Dask cluster against the same sweep in-process (issue 13): a ``dask scheduler`` and two
``dask worker`` processes (one thread each) started here on 127.0.0.1, the way a cluster of many machines
is reached (``--cluster tcp://HOST:PORT``). Workload: 2,000 SMA-cross combinations (fast 2..101 x slow
110..300 step 10) on 287,335 generated five-minute bars. Both sides warm (kernels loaded, one small sweep
first); the results must be identical.

On one 2-core machine the cluster cannot win: the in-process kernels already use both cores, and each
worker recomputes the SMAs its chunks need and receives the candles with every task. The figure says what
the hop costs; a cluster pays off when its workers add cores the machine does not have."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import ROOT, row

GRID = {"fast": list(range(2, 102)), "slow": list(range(110, 310, 10))}
N_BARS = 287_335


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    dask_cmd = Path(sys.executable).parent / "dask"
    try:
        from distributed import Client
    except ImportError:
        print("  skipped: dask.distributed not installed (pip install -e '.[cluster]')")
        return 0
    if not dask_cmd.exists():
        print(f"  skipped: no dask command next to {sys.executable}")
        return 0
    import numpy as np

    from qts.market.synthetic import generate
    from qts.research import sweep

    c = generate("BTC/USDT", N_BARS, 300_000, seed=7)
    small = {"fast": [2, 3], "slow": [110]}
    sweep("sma_cross", c.slice(0, 3000), small, executor="inline", progress=False)
    t = time.perf_counter()
    local = sweep("sma_cross", c, GRID, executor="inline", progress=False)
    t_local = time.perf_counter() - t

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    logs = Path(tempfile.mkdtemp(prefix="qts-bench-dask-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "lib"), os.environ.get("PYTHONPATH")])),
           "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([str(dask_cmd), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard", "--idle-timeout", "300s"], env=env, cwd=logs,
                              stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    for i in range(2):
        procs.append(subprocess.Popen([str(dask_cmd), "worker", addr, "--host", "127.0.0.1", "--nthreads", "1",
                                       "--nworkers", "1", "--no-dashboard", "--death-timeout", "30s",
                                       "--local-directory", str(logs / f"w{i}")], env=env, cwd=logs,
                                      stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT))
    warnings.filterwarnings("ignore", message="Sending large graph")  # the candles travel with each task
    try:
        t = time.perf_counter()
        deadline = time.monotonic() + 90
        while True:
            try:
                client = Client(addr, timeout="5s", set_as_default=False)
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise
                time.sleep(0.5)
        with client:
            client.wait_for_workers(2, timeout=90)
            t_up = time.perf_counter() - t
            sweep("sma_cross", c.slice(0, 3000), small, executor="dask", client=client, chunk_size=1,
                  progress=False)  # each worker loads the kernels once
            t = time.perf_counter()
            remote = sweep("sma_cross", c, GRID, executor="dask", client=client, chunk_size=250, progress=False)
            t_remote = time.perf_counter() - t
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    same = np.array_equal(np.nan_to_num(local.stats, nan=-7.0), np.nan_to_num(remote.stats, nan=-7.0))
    print(f"  {local.n_trials:,} combinations x {N_BARS:,} bars; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    row("in-process (numba threads on every core)", f"{t_local:.2f} s", "baseline")
    row(f"Dask cluster, 2 workers x 1 thread ({remote.chunks} chunks)", f"{t_remote:.2f} s",
        f"{t_remote / t_local:.2f}x the in-process time; cluster up in {t_up:.1f} s (not counted)")
    print(f"  identical statistics: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
