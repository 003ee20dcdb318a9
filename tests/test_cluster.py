"""Sweeps, walk-forward folds and `qts research` on a REAL Dask cluster (issue 13): a `dask scheduler` and
two `dask worker` processes started here on 127.0.0.1 (random free ports, no dashboard; the scheduler
stops itself after 5 idle minutes and the workers 30 s after losing it, should this test die), reached
through `--cluster tcp://HOST:PORT` and $QTS_DASK_SCHEDULER. Results must equal the local run's, and the
scheduler must have run the chunks (its transition log names them)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed", reason='dask.distributed not installed (the "test" extra has it)')

from conftest import CONFIG_VARS  # noqa: E402
from qts.cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).parent / "dask"
NO_ENV = {**{k: None for k in CONFIG_VARS}, "ANTHROPIC_API_KEY": None, "QTS_RESEARCH_MODEL": None,
          "QTS_DASK_SCHEDULER": None}
FAST = ["--synthetic", "--timeframe", "1h", "--days", "60"]
LOOSE = ["--gate", "min_trades=0", "--gate", "min_oos_trades=0", "--gate", "min_dsr=0", "--gate", "max_pbo=1",
         "--gate", "min_oos_sharpe=-100", "--gate", "max_oos_drawdown=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not DASK.exists():
        pytest.skip(f"no dask command next to {sys.executable}")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "lib"), os.environ.get("PYTHONPATH")])),
           "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                               "--idle-timeout", "300s"], env=env, cwd=logs,
                              stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    for i in range(2):
        procs.append(subprocess.Popen([str(DASK), "worker", addr, "--host", "127.0.0.1", "--nthreads", "1",
                                       "--nworkers", "1", "--no-dashboard", "--death-timeout", "30s",
                                       "--name", f"w{i}", "--local-directory", str(logs / f"w{i}")], env=env,
                                      cwd=logs, stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT))
    try:
        from distributed import Client

        deadline = time.monotonic() + 90
        while True:
            try:
                client = Client(addr, timeout="5s", set_as_default=False)  # the code under test finds its own
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise
                time.sleep(0.5)
        with client:
            client.wait_for_workers(2, timeout=90)
            yield addr, client
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _chunks_run_by(client, prefix: str) -> int:
    """How many tasks named ``prefix``-... the scheduler took to memory."""
    def count(dask_scheduler, prefix=prefix):
        return sum(1 for t in dask_scheduler.transition_log if str(t[0]).startswith(prefix) and t[2] == "memory")
    return client.run_on_scheduler(count)


def invoke(args, **env):
    r = CliRunner().invoke(cli, args, env={**NO_ENV, **env})
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def _json(r) -> dict:
    return json.loads(r.stdout[r.stdout.index("{"):])


def test_grid_and_validation_on_the_cluster_equal_the_local_run(cluster, tmp_path):
    addr, client = cluster
    args = ["--home", str(tmp_path / "h"), "backtest", "sma_cross", *FAST, "--grid", "fast=4:16:4",
            "--grid", "slow=30:90:20", "--validate", *LOOSE, "--json"]
    local = _json(invoke(args))
    before = (_chunks_run_by(client, "_run_chunk"), _chunks_run_by(client, "_run_fold"))
    remote = _json(invoke(args + ["--cluster", addr]))
    after = (_chunks_run_by(client, "_run_chunk"), _chunks_run_by(client, "_run_fold"))
    assert after[1] > before[1], "no walk-forward fold ran on the cluster"
    for k in ("sweep", "params", "metrics"):
        assert remote[k] == local[k], k
    v_local, v_remote = dict(local["validation"]), dict(remote["validation"])
    for v in (v_local, v_remote):
        v.pop("validated_ts", None)
    assert v_remote == v_local


def test_research_through_the_environment_variable_equals_the_local_run(cluster, tmp_path):
    addr, client = cluster
    notes = tmp_path / "notes.md"
    notes.write_text("Mean reversion after sharp hourly drops.\n")
    args = ["--home", str(tmp_path / "h"), "research", "--notes", str(notes), "--offline", "--no-register", *FAST,
            "--max-candidates", "2", "--json"]
    local = _json(invoke(args))
    before = _chunks_run_by(client, "_run_fold")
    remote = _json(invoke(args, QTS_DASK_SCHEDULER=addr))
    assert _chunks_run_by(client, "_run_fold") > before, "no fold ran on the cluster"
    assert remote == local


def test_an_unreachable_or_malformed_cluster_is_one_line(tmp_path):
    args = ["--home", str(tmp_path / "h"), "backtest", "sma_cross", *FAST, "--grid", "fast=4:8:4"]
    r = CliRunner().invoke(cli, args + ["--cluster", "127.0.0.1:8786"], env=NO_ENV)
    assert r.exit_code == 2 and "expected a Dask scheduler address" in r.output
    r = CliRunner().invoke(cli, args + ["--cluster", f"tcp://127.0.0.1:{_free_port()}"], env=NO_ENV)
    assert r.exit_code == 2 and "cannot reach the Dask scheduler" in r.output, r.output


def test_a_large_sweep_runs_its_chunks_on_the_cluster(cluster, tmp_path):
    addr, client = cluster
    # 79 x 70 = 5,530 combinations: two chunks of the fused sma_cross sweep (4,096 each at most)
    args = ["--home", str(tmp_path / "h"), "backtest", "sma_cross", *FAST, "--grid", "fast=2:80:1",
            "--grid", "slow=81:150:1", "--json"]
    local = _json(invoke(args))
    before = _chunks_run_by(client, "_run_chunk")
    remote = _json(invoke(args, QTS_DASK_SCHEDULER=addr))
    assert _chunks_run_by(client, "_run_chunk") - before == 2
    assert remote["sweep"]["combinations"] == 5530
    assert remote == local


def test_library_auto_uses_the_environment_cluster_with_one_connection(cluster, monkeypatch):
    from qts.market.synthetic import generate
    from qts.research import parallel, sweep

    addr, client = cluster
    c = generate("BTC/USDT", 2_000, 3_600_000, seed=9)
    grid = {"fast": [3, 5, 8, 13], "slow": [21, 34, 55]}
    local = sweep("sma_cross", c, grid, executor="inline", chunk_size=4, progress=False)
    monkeypatch.setenv("QTS_DASK_SCHEDULER", addr)
    before = _chunks_run_by(client, "_run_chunk")
    a = sweep("sma_cross", c, grid, chunk_size=4, progress=False)  # executor="auto"
    b = sweep("sma_cross", c, grid, chunk_size=4, progress=False)
    assert a.executor == b.executor == "dask" and a.chunks == 3
    assert _chunks_run_by(client, "_run_chunk") - before == 6
    assert len(parallel._ENV_CLIENTS) == 1  # both sweeps shared one connection
    np.testing.assert_array_equal(a.stats, local.stats)
    np.testing.assert_array_equal(b.stats, local.stats)
    parallel._ENV_CLIENTS.pop(addr).close()
