"""The trading loop replaying real Binance candles: through the CLI (in-process for the replay,
real subprocesses for `once` and the long-running mode) and the invariants between the journal,
the database, the summary and the candle files.

Expected prices come from the candle files themselves (read here with numpy, not the library): a
cycle at time t trades at the open of the candle starting at t, marks positions there, and decides
on candles closed by t.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS, read_csv_rows
from qts.cli import cli

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
TF = 300_000
DAY_MS = 86_400_000
NO_ENV = {k: None for k in CONFIG_VARS}  # CliRunner: None removes the variable
# what a cycle decided for a symbol (the first reason code); order outcomes follow it
DECISION_CODES = {"ENTRY", "EXIT", "HOLD", "WARMUP", "STOP_LOSS", "TAKE_PROFIT"}
CODE_RE = re.compile(r"^[A-Z][A-Z_]*(:[A-Z][A-Z_]*)?$")


# -- helpers ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def opens(ohlcv_dir) -> dict[str, dict[int, float]]:
    """Candle open price by open time, per symbol, from the 5m files."""
    out = {}
    for sym in SYMBOLS:
        a = read_csv_rows(ohlcv_dir / f"{sym.replace('/', '_')}-5m.csv")
        out[sym] = dict(zip(a[:, 0].astype(np.int64).tolist(), a[:, 1].tolist()))
    return out


def run_cli(args, env=None):
    r = CliRunner().invoke(cli, args, env={**NO_ENV, **(env or {})}, catch_exceptions=False)
    return r


def db(home: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(home / "db" / "metrics.db")
    conn.row_factory = sqlite3.Row
    return conn


def rows(conn, sql, params=()):
    return [dict(r) for r in conn.execute(sql, params)]


def journal(home: Path) -> list[dict]:
    p = home / "logs" / "trades.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def check_invariants(home: Path, opens: dict, initial_cash: float = 10_000.0):
    """Journal == database, one decision per symbol per cycle, snapshots == a replay of the fills
    marked at the candle files' prices. Returns (decisions, fills, snapshots)."""
    conn = db(home)
    fills = rows(conn, "SELECT * FROM fills ORDER BY id")
    decisions = rows(conn, "SELECT * FROM decisions ORDER BY id")
    snaps = rows(conn, "SELECT * FROM equity_snapshots ORDER BY id")
    orders = rows(conn, "SELECT * FROM orders")
    conn.close()

    # 1. trades.jsonl and the database agree, fill for fill
    jl = journal(home)
    assert [r["fill_id"] for r in jl] == [f["fill_id"] for f in fills]
    for rec, f in zip(jl, fills):
        for k in ("client_order_id", "symbol", "side", "amount", "price", "fee", "ts"):
            assert rec[k] == f[k], (k, rec, f)

    # 2. every cycle: one decision per symbol, with reason codes; cycles 5 minutes apart
    by_cycle = defaultdict(list)
    for d in decisions:
        by_cycle[d["cycle_id"]].append(d)
    for cid, ds in by_cycle.items():
        assert sorted(d["symbol"] for d in ds) == sorted(SYMBOLS), cid
        assert len({d["ts"] for d in ds}) == 1
        for d in ds:
            codes = json.loads(d["reason_codes"])
            assert codes and codes[0] in DECISION_CODES, codes
            assert all(CODE_RE.match(c) for c in codes), codes
            assert "REFUSED:GATE_ERROR" not in codes, d  # a broken check is a bug, even if it fails closed
            inputs = json.loads(d["inputs"])
            # decided on candles closed by the cycle time; priced at the open of the next candle
            assert inputs["last_ts"] == d["ts"] - TF
            assert inputs["price"] == opens[d["symbol"]][d["ts"]]
    cycle_ts = sorted({d["ts"] for d in decisions})
    assert np.all(np.diff(cycle_ts) == TF)

    # 3. each fill of a market order: the open at its time, moved 5 bps against us; fee 10 bps once
    for f in fills:
        o = opens[f["symbol"]][f["ts"]]
        assert f["price"] == pytest.approx(o * (1.0005 if f["side"] == "buy" else 0.9995), rel=1e-12)
        assert f["fee"] == pytest.approx(f["amount"] * f["price"] * 0.001, rel=1e-12)
    assert all(o["type"] == "market" for o in orders)

    # 4. one snapshot per cycle; equity = cash + sum(amount x open now), replaying the fills by hand
    assert [s["ts"] for s in snaps] == cycle_ts
    for s in snaps:
        cash, held = initial_cash, defaultdict(float)
        for f in fills:
            if f["ts"] <= s["ts"]:
                sign = 1 if f["side"] == "buy" else -1
                cash -= sign * f["amount"] * f["price"] + f["fee"]
                held[f["symbol"]] += sign * f["amount"]
        value = sum(a * opens[sym][s["ts"]] for sym, a in held.items())
        assert s["cash"] == pytest.approx(cash, abs=1e-6)
        assert s["positions_value"] == pytest.approx(value, abs=1e-6)
        assert s["equity"] == pytest.approx(cash + value, abs=1e-6)
    return decisions, fills, snaps


def check_summary(summary: dict, snaps: list[dict], fills: list[dict], initial_cash=10_000.0):
    assert summary["total_pnl"] == pytest.approx(summary["realized_pnl"] + summary["unrealized_pnl"], abs=1e-6)
    assert summary["equity"] == pytest.approx(snaps[-1]["equity"])
    assert summary["total_pnl"] == pytest.approx(snaps[-1]["equity"] - initial_cash, abs=1e-6)
    assert summary["fills"] == len(fills)
    assert summary["fees"] == pytest.approx(sum(f["fee"] for f in fills))


# -- one day through `qts run` ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def day_run(tmp_path_factory, ohlcv_dir):
    home = tmp_path_factory.mktemp("loop") / "home"
    r = run_cli(["--home", str(home), "run", "--data", str(ohlcv_dir), "--days", "1", "--fresh", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    return home, json.loads(r.stdout)


def test_day_replay_records_a_decision_per_symbol_per_cycle(day_run, opens):
    home, summary = day_run
    conn = db(home)
    ts = sorted({r["ts"] for r in rows(conn, "SELECT ts FROM decisions")})
    conn.close()
    # cycles every 5 minutes across one day, starting after the 200-candle warm-up
    assert ts[0] == 1_704_067_200_000 + 200 * TF
    assert DAY_MS - TF <= ts[-1] - ts[0] <= DAY_MS
    assert summary["cycles"] == len(ts)
    check_invariants(home, opens)


def test_day_replay_journal_database_and_summary_agree(day_run, opens):
    home, summary = day_run
    decisions, fills, snaps = check_invariants(home, opens)
    assert fills, "a day of BTC/ETH/SOL with sma_cross should trade"
    check_summary(summary, snaps, fills)


def test_second_run_resumes_after_the_last_cycle(tmp_path, ohlcv_dir, opens):
    home = tmp_path / "home"
    base = ["--home", str(home), "run", "--data", str(ohlcv_dir), "--quiet", "--json"]
    r1 = run_cli(base + ["--fresh", "--cycles", "30"])
    assert r1.exit_code == 0, r1.output
    r2 = run_cli(base + ["--cycles", "30"])
    assert r2.exit_code == 0, r2.output
    assert "resuming" in r2.stderr
    conn = db(home)
    ts = [r["ts"] for r in rows(conn, "SELECT DISTINCT cycle_id, ts FROM decisions ORDER BY ts")]
    conn.close()
    assert len(ts) == 60 == len(set(ts))  # no decision time repeats
    assert np.all(np.diff(ts) == TF)  # the second run starts right after the first
    assert json.loads(r2.stdout)["cycles"] == 30
    check_invariants(home, opens)


def test_second_day_run_continues_with_the_next_day(tmp_path, ohlcv_dir, opens):
    """`run --days 1` twice: the second run replays the day AFTER the first (--days counts from the
    resume point), not the same day again."""
    home = tmp_path / "home"
    base = ["--home", str(home), "run", "--data", str(ohlcv_dir), "--days", "1", "--quiet", "--json"]
    assert run_cli(base + ["--fresh"]).exit_code == 0
    conn = db(home)
    first_end = conn.execute("SELECT MAX(ts) FROM decisions").fetchone()[0]
    conn.close()
    r = run_cli(base)
    assert r.exit_code == 0, r.output
    assert "resuming" in r.stderr
    conn = db(home)
    n, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT ts) FROM decisions").fetchone()
    second = [x[0] for x in conn.execute("SELECT DISTINCT ts FROM decisions WHERE ts > ? ORDER BY ts", (first_end,))]
    conn.close()
    assert n == 3 * distinct  # no cycle time recorded twice
    assert second[0] == first_end + TF
    assert DAY_MS - TF <= second[-1] - second[0] <= DAY_MS
    check_invariants(home, opens)


def test_loop_in_process_with_exchange_checks_only(tmp_path, ohlcv_dir, opens):
    """The loop's own bookkeeping, independent of the risk layers: a session whose gate runs only the
    order-sanity and exchange-rule checks, over one day of real candles."""
    from qts import gate as gate_mod
    from qts.config import load_settings
    from qts.engine.session import make_feed, open_session
    from qts.reports.summary import summarize

    settings = load_settings(environ={}, home=tmp_path / "home")
    feed = make_feed(settings, "replay", ohlcv_dir, days=1)
    s = open_session(settings, feed)
    s.gate.checks = [gate_mod.check_order_sane, gate_mod.check_exchange_rules]
    start = feed.now_ms()
    n = s.loop.run(threading.Event())
    summary = summarize(s.store, since_ts=start)
    s.close()
    assert n == summary["cycles"]
    decisions, fills, snaps = check_invariants(tmp_path / "home", opens)
    assert fills and summary["closed_trades"] > 0
    check_summary(summary, snaps, fills)
    # closed trades: pnl = (exit - entry) x size - both fees, from the fills themselves
    conn = db(tmp_path / "home")
    for t in rows(conn, "SELECT * FROM closed_trades"):
        assert t["pnl"] == pytest.approx((t["exit_price"] - t["entry_price"]) * t["amount"] - t["fees"], abs=1e-9)
    conn.close()


def test_open_position_at_the_end_counts_as_unrealized(tmp_path, ohlcv_dir, opens):
    """Stop right after an entry so the summary carries an open position: total = realized + unrealized."""
    from qts import gate as gate_mod
    from qts.config import load_settings
    from qts.engine.session import make_feed, open_session
    from qts.reports.summary import summarize

    settings = load_settings(environ={}, home=tmp_path / "home")
    feed = make_feed(settings, "replay", ohlcv_dir, days=1)
    s = open_session(settings, feed)
    s.gate.checks = [gate_mod.check_order_sane, gate_mod.check_exchange_rules]
    start = feed.now_ms()
    stop = threading.Event()

    def on_cycle(report, n):
        if report.orders and s.broker.positions():
            stop.set()

    s.loop.run(stop, on_cycle=on_cycle)
    summary = summarize(s.store, since_ts=start)
    s.close()
    assert summary["open_positions"], "no entry in a day of three symbols"
    assert summary["unrealized_pnl"] != 0
    decisions, fills, snaps = check_invariants(tmp_path / "home", opens)
    check_summary(summary, snaps, fills)
    # unrealized by hand: each open position marked at the open of the last cycle's candle
    last = snaps[-1]["ts"]
    unreal = sum(p["amount"] * (opens[p["symbol"]][last] - p["avg_entry"]) for p in summary["open_positions"])
    assert summary["unrealized_pnl"] == pytest.approx(unreal, abs=1e-9)


# -- real processes -----------------------------------------------------------------------------------

def _run(cmd, env, timeout=60):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_once_as_a_subprocess_records_exactly_one_cycle(tmp_path, ohlcv_dir, qts_exe, proc_env, opens):
    home = tmp_path / "home"
    r = _run(qts_exe + ["--home", str(home), "once", "--data", str(ohlcv_dir), "--json"], proc_env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cycles"] == 1
    conn = db(home)
    ds = rows(conn, "SELECT cycle_id, symbol FROM decisions")
    assert len({d["cycle_id"] for d in ds}) == 1
    assert sorted(d["symbol"] for d in ds) == sorted(SYMBOLS)
    assert conn.execute("SELECT COUNT(*) FROM equity_snapshots").fetchone()[0] == 1
    conn.close()
    # a second `once` is the next cycle, not the same one again
    r = _run(qts_exe + ["--home", str(home), "once", "--data", str(ohlcv_dir), "--json"], proc_env)
    assert r.returncode == 0, r.stderr
    conn = db(home)
    ts = [x[0] for x in conn.execute("SELECT DISTINCT ts FROM decisions ORDER BY ts")]
    conn.close()
    assert len(ts) == 2 and ts[1] - ts[0] == TF
    check_invariants(home, opens)


def _wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def _status(home: Path) -> dict:
    try:
        return json.loads((home / "run" / "loop.status.json").read_text())
    except (OSError, ValueError):
        return {}


def test_long_running_loop_status_stop_and_single_runner(tmp_path, ohlcv_dir, qts_exe, proc_env):
    home = tmp_path / "home"
    loop = subprocess.Popen(qts_exe + ["--home", str(home), "run", "--data", str(ohlcv_dir), "--pace", "0.05",
                                       "--quiet"], env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        st = _wait_for(lambda: (s := _status(home)).get("state") == "running" and s.get("cycles", 0) >= 2 and s,
                       what="the loop to report running cycles")
        assert st["pid"] == loop.pid
        assert (home / "run" / "loop.pid").read_text().strip() == str(loop.pid)

        # another process reads the status
        r = _run(qts_exe + ["--home", str(home), "status", "--json"], proc_env)
        assert r.returncode == 0, r.stderr
        seen = json.loads(r.stdout)
        assert seen["state"] == "running" and seen["pid"] == loop.pid and seen["cycles"] >= 2

        # a second runner on the same home is refused while the first runs
        r = _run(qts_exe + ["--home", str(home), "run", "--data", str(ohlcv_dir), "--cycles", "1", "--quiet"],
                 proc_env)
        assert r.returncode != 0
        assert "already running" in r.stderr and str(loop.pid) in r.stderr
        assert loop.poll() is None
        assert _status(home)["pid"] == loop.pid
        before = _status(home)["cycles"]
        _wait_for(lambda: _status(home).get("cycles", 0) > before, what="the first loop to keep cycling")

        # qts stop: SIGTERM, the loop finishes its cycle and exits 0
        r = _run(qts_exe + ["--home", str(home), "stop"], proc_env)
        assert r.returncode == 0, r.stderr
        assert str(loop.pid) in r.stdout
        out, err = loop.communicate(timeout=30)
        assert loop.returncode == 0, err
    finally:
        if loop.poll() is None:
            loop.send_signal(signal.SIGKILL)
            loop.wait()
    st = _status(home)
    assert st["state"] == "stopped" and st["reason"] == "signal"
    assert not (home / "run" / "loop.pid").exists()
    r = _run(qts_exe + ["--home", str(home), "status", "--json"], proc_env)
    assert json.loads(r.stdout)["state"] == "stopped"
    # the cycles it ran are all on record, once each
    conn = db(home)
    n, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT ts) FROM decisions").fetchone()
    conn.close()
    assert n == 3 * distinct and distinct >= st["cycles"]
    # nothing running: stop says so and succeeds
    r = _run(qts_exe + ["--home", str(home), "stop"], proc_env)
    assert r.returncode == 0 and "no trading loop" in r.stdout


def test_refused_fresh_runner_leaves_the_running_loops_state_alone(tmp_path, ohlcv_dir, qts_exe, proc_env):
    home = tmp_path / "home"
    loop = subprocess.Popen(qts_exe + ["--home", str(home), "run", "--data", str(ohlcv_dir), "--pace", "0.05",
                                       "--quiet"], env=proc_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _status(home).get("state") == "running" and _status(home).get("cycles", 0) >= 1,
                  what="the loop to run")
        r = _run(qts_exe + ["--home", str(home), "run", "--data", str(ohlcv_dir), "--cycles", "1", "--fresh",
                            "--quiet"], proc_env)
        assert r.returncode != 0 and "already running" in r.stderr
        assert not (home / "archive").exists()  # --fresh must not move a running loop's state away
        conn = db(home)
        assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] > 0
        conn.close()
    finally:
        loop.send_signal(signal.SIGTERM)
        loop.wait(timeout=30)


def test_two_onces_at_the_same_moment_never_run_the_same_cycle_twice(tmp_path, qts_exe, proc_env):
    """20 pairs of real `qts once` processes started together on one state home: the loop's lock is taken
    before the session opens, so each pair runs two successive cycles or one cycle and one refusal
    ("already running", exit 2); never one cycle twice (duplicate decisions or snapshots)."""
    home = tmp_path / "home"
    args = qts_exe + ["--home", str(home), "once"]
    assert subprocess.run(args, env=proc_env, capture_output=True, timeout=120).returncode == 0
    ran, busy = 1, 0
    for _ in range(20):
        procs = [subprocess.Popen(args, env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert "Traceback" not in err
            if p.returncode == 0:
                ran += 1
            else:
                assert p.returncode == 2 and "already running" in err, err
                busy += 1
    conn = db(home)
    try:
        per_cycle = conn.execute("SELECT cycle_id, COUNT(*), COUNT(DISTINCT symbol) FROM decisions "
                                 "GROUP BY cycle_id").fetchall()
        snaps = conn.execute("SELECT COUNT(*), COUNT(DISTINCT ts) FROM equity_snapshots").fetchone()
    finally:
        conn.close()
    assert all(n == len(SYMBOLS) and d == len(SYMBOLS) for _, n, d in per_cycle), per_cycle
    assert len(per_cycle) == ran and tuple(snaps) == (ran, ran)
    assert ran + busy == 41


def test_stale_pid_file_is_not_trusted(tmp_path, qts_exe, proc_env):
    """A pid left in run/loop.pid with no lock held (a crash, or written by hand) is not a running loop:
    `qts stop` must not signal that process, and a new cycle runs."""
    home = tmp_path / "home"
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (home / "run").mkdir(parents=True)
        (home / "run" / "loop.pid").write_text(str(bystander.pid))
        r = subprocess.run(qts_exe + ["--home", str(home), "stop"], env=proc_env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and "no trading loop is running" in r.stdout
        assert bystander.poll() is None
        r = subprocess.run(qts_exe + ["--home", str(home), "once"], env=proc_env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
