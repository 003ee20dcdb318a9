"""Parameter sweep of a long-only SMA crossover on 71,769 five-minute BTC/USDT candles: our numba
engine against vectorbt used plainly, a plain Python loop and backtesting.py.

Workload: enter when SMA(fast) crosses above SMA(slow) on close, exit on the cross below; fills at
the next bar's open; 0.1 % fee per side, no slippage; all-in sizing; 10,000 starting cash;
1,000 combinations (fast 2..101 x slow 110..290 step 20). Numba caches warm (a warm-up run first).

Each contender runs in its own subprocess, so its peak RSS is its own:
- ours: ``qts.research.sweep`` (each SMA window computed once, fused numba kernel, all cores);
- vectorbt: ONE ``Portfolio.from_signals`` pass over all 1,000 columns, with our exact signals
  shifted one bar and price=open (naive DatetimeIndex: a tz-aware one is ~35x slower under pandas 3).
  It needs ~10-12 GB: the full grid runs only if the machine has the memory free (a watchdog kills
  it before it exhausts the machine); otherwise a fraction of the columns runs and the time is
  extrapolated linearly (said so in the table). Its signal step through vbt.MA is timed apart.
- plain Python loop (``qts.research.reference``): a random sample of combinations, extrapolated;
- backtesting.py (if installed: ``pip install backtesting``; skipped otherwise): a sample, extrapolated.
Check: our trades equal the plain loop's trade by trade on 50 random combinations (through the sweep
kernel's own signal code), and the sweep rows equal those runs; vectorbt's trade count equals ours
on every column it ran.
Targets (issue 6): >= 10x the plain vectorbt pass's throughput, peak memory < 2 GB, identical trades.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import peak_rss_mb, row, shared_data

HERE = Path(__file__).resolve().parent
FAST = list(range(2, 102))
SLOW = list(range(110, 291, 20))
COMBOS = [(f, s) for s in SLOW for f in FAST]
CASH, FEE = 10_000.0, 0.001
VBT_GB_PER_1000 = 13.0       # budget for the full vectorbt pass (measured 10-12 GB)
CHECK_N, PLAIN_N, BTPY_N = 50, 10, 3


def candles():
    from qts.market.candles import load_csv

    return load_csv(shared_data() / "ohlcv" / "BTC_USDT-5m.csv")


def config():
    from qts.research.backtest import BacktestConfig

    return BacktestConfig(init_cash=CASH, fee_bps=FEE * 10_000, slippage_bps=0.0)


def grid():
    return {"fast": FAST, "slow": SLOW}


# -- contenders (each runs in a child process: `bench_backtest.py --child NAME [ARG]`) ----------------------

def child_ours(_arg):
    from qts.research import kernels
    from qts.research.sweep import sweep

    c = candles()
    kernels.warm_up()
    sweep("sma_cross", c, grid(), config(), executor="inline", progress=False)  # warm-up run
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = sweep("sma_cross", c, grid(), config(), executor="inline", progress=False)
        times.append(time.perf_counter() - t0)
    import numba

    return {"wall": min(times), "walls": times, "combos": res.n_trials, "bars": len(c),
            "threads": numba.get_num_threads(),
            "n_trades": {f"{p['fast']},{p['slow']}": int(n + o) for p, n, o in
                         zip(res.params, res.column("n_trades"), res.column("open_trade"))}}


def child_vectorbt(arg):
    import numpy as np
    import pandas as pd
    import vectorbt as vbt

    from qts.research import specs

    ncols = int(arg)
    c = candles()
    idx = pd.to_datetime(c.ts, unit="ms")  # naive
    close, open_ = pd.Series(c.close, index=idx), pd.Series(c.open, index=idx)
    rng = np.random.default_rng(1)
    pick = sorted(rng.choice(len(COMBOS), ncols, replace=False)) if ncols < len(COMBOS) else range(len(COMBOS))
    combos = [COMBOS[i] for i in pick]
    # our exact signals (bit-identical to SmaCross.signals), shifted: signal at i -> order at i+1's open
    ctx = specs.Ctx(c, (), 0, len(c), np.empty(0, np.int64), specs.IndicatorCache())
    E = np.zeros((len(c), len(combos)), bool)
    X = np.zeros((len(c), len(combos)), bool)
    for k, (f, s) in enumerate(combos):
        e, x = specs.chunk_signals("sma_cross", ctx, {"fast": f, "slow": s})
        E[1:, k], X[1:, k] = e[:-1], x[:-1]
    cols = pd.MultiIndex.from_tuples(combos, names=["fast", "slow"])
    E, X = pd.DataFrame(E, index=idx, columns=cols), pd.DataFrame(X, index=idx, columns=cols)
    kw = dict(fees=FEE, size=np.inf, init_cash=CASH, direction="longonly", freq="5min")
    # warm-up: compile / load vectorbt's numba functions
    vbt.Portfolio.from_signals(close.iloc[:500], E.iloc[:500, :2], X.iloc[:500, :2], price=open_.iloc[:500], **kw)
    t0 = time.perf_counter()
    pf = vbt.Portfolio.from_signals(close, E, X, price=open_, **kw)
    wall = time.perf_counter() - t0
    counts = pf.trades.count()
    n_trades = {f"{f},{s}": int(counts[(f, s)]) for f, s in combos}
    del pf, E, X
    # vectorbt's own signal step (indicator factory + crossings), for information
    fw, sw = [f for f, _ in combos], [s for _, s in combos]
    t0 = time.perf_counter()
    fast = vbt.MA.run(close, fw, short_name="fast")
    slow = vbt.MA.run(close, sw, short_name="slow")
    fast.ma_crossed_above(slow)
    fast.ma_crossed_below(slow)
    sig_wall = time.perf_counter() - t0
    return {"wall": wall, "signals_wall": sig_wall, "combos": len(combos), "bars": len(c), "n_trades": n_trades}


def child_plain(_arg):
    import numpy as np

    from qts.research import kernels
    from qts.research.backtest import backtest_sma_fused
    from qts.research.reference import plain_backtest
    from qts.research.sweep import sweep
    from qts.strategies import make

    c = candles()
    kernels.warm_up()
    rng = np.random.default_rng(7)
    sample = [COMBOS[i] for i in rng.choice(len(COMBOS), CHECK_N, replace=False)]
    sw = sweep("sma_cross", c, [{"fast": f, "slow": s} for f, s in sample], config(), executor="inline",
               progress=False)
    mismatches, trades_checked, times = [], 0, []
    for k, (f, s) in enumerate(sample):
        strat = make("sma_cross", {"fast": f, "slow": s})
        t0 = time.perf_counter()
        plain, eq = plain_backtest(strat, c, CASH, FEE, 0.0)
        if k < PLAIN_N:
            times.append(time.perf_counter() - t0)
        ours = backtest_sma_fused(c, f, s, config())  # the sweep kernel's signal + simulation code
        same = len(plain) == len(ours.trades) and all(
            (t.entry_bar, t.exit_bar) == (p[0], p[1]) and abs(t.amount - p[2]) <= 1e-12 * p[2]
            and abs(t.entry_price - p[3]) <= 1e-12 * p[3] and (p[1] is None or abs(t.exit_price - p[4]) <= 1e-12 * p[4])
            for t, p in zip(ours.trades, plain))
        same = same and abs(ours.equity[-1] - eq[-1]) <= 1e-9 * eq[-1]
        same = same and np.array_equal(sw.stats[k], np.array(list(ours.stats.values()), float))
        trades_checked += len(plain)
        if not same:
            mismatches.append((f, s))
    per = sum(times) / len(times)
    return {"wall": per * len(COMBOS), "per_combo": per, "sampled": PLAIN_N, "combos": len(COMBOS), "bars": len(c),
            "checked": CHECK_N, "trades_checked": trades_checked, "mismatches": mismatches}


def child_backtestingpy(_arg):
    import warnings

    import numpy as np
    import pandas as pd
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest, crossover

    warnings.filterwarnings("ignore")
    c = candles()
    df = pd.DataFrame({"Open": c.open, "High": c.high, "Low": c.low, "Close": c.close, "Volume": c.volume},
                      index=pd.to_datetime(c.ts, unit="ms"))

    def sma(x, n):
        return pd.Series(x).rolling(n).mean().to_numpy()

    class Cross(Strategy):
        fast = 10
        slow = 130

        def init(self):
            self.f = self.I(sma, self.data.Close, self.fast)
            self.s = self.I(sma, self.data.Close, self.slow)

        def next(self):
            if not self.position and crossover(self.f, self.s):
                self.buy()
            elif self.position and crossover(self.s, self.f):
                self.position.close()

    rng = np.random.default_rng(3)
    sample = [COMBOS[i] for i in rng.choice(len(COMBOS), BTPY_N, replace=False)]
    times = []
    for f, s in sample:
        bt = FractionalBacktest(df, Cross, cash=CASH, commission=FEE, trade_on_close=False, finalize_trades=False)
        t0 = time.perf_counter()
        bt.run(fast=f, slow=s)
        times.append(time.perf_counter() - t0)
    per = sum(times) / len(times)
    return {"wall": per * len(COMBOS), "per_combo": per, "sampled": BTPY_N, "combos": len(COMBOS), "bars": len(c)}


CHILDREN = {"ours": child_ours, "vectorbt": child_vectorbt, "plain": child_plain, "backtesting.py": child_backtestingpy}


def child_main(name: str, arg: str) -> int:
    out = CHILDREN[name](arg)
    out["peak_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out))
    return 0


# -- parent ---------------------------------------------------------------------------------------------------

def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(name: str, arg: str = "", limit_mb: float | None = None, timeout_s: float = 1800) -> dict | None:
    """Run a contender in its own process; kill it if its RSS passes ``limit_mb``. None on failure."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.Popen([sys.executable, __file__, "--child", name, arg], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)
    t0, peak = time.time(), 0.0
    while p.poll() is None:
        peak = max(peak, rss_mb(p.pid))
        if limit_mb and peak > limit_mb:
            p.kill()
            p.wait()
            print(f"  ({name}: killed at {peak:,.0f} MB RSS, over the {limit_mb:,.0f} MB guard)")
            return None
        if time.time() - t0 > timeout_s:
            p.kill()
            p.wait()
            print(f"  ({name}: killed after {timeout_s:.0f} s)")
            return None
        time.sleep(0.05)
    out, err = p.communicate()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"  ({name}: failed, exit {p.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''})")
    return None


def has(module: str) -> bool:
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return r.returncode == 0


def main() -> int:
    data = shared_data()
    if not data or not (data / "ohlcv" / "BTC_USDT-5m.csv").exists():
        print("bench_backtest: ../shared/data/ohlcv/BTC_USDT-5m.csv not found (set QTS_SHARED_DATA); skipped")
        return 0
    os.environ.setdefault("NUMBA_CACHE_DIR", str(HERE.parent / ".numba-cache"))
    print("backtest sweep: SMA crossover, BTC/USDT 5m, 1,000 combinations, next-bar open, 0.1 % fee, all-in")

    results: dict[str, dict] = {}
    notes: dict[str, str] = {}
    results["ours"] = run_child("ours")

    if has("vectorbt"):
        avail = mem_available_mb()
        need = VBT_GB_PER_1000 * 1024
        guard = max(avail - 2048, 1024)  # leave the machine 2 GB
        ncols = len(COMBOS) if avail > need + 2048 else max(50, int(len(COMBOS) * (avail - 3072) / need) // 50 * 50)
        ncols = min(ncols, len(COMBOS))
        r = run_child("vectorbt", str(ncols), limit_mb=guard)
        while r is None and ncols > 50:
            ncols = max(50, ncols // 2 // 50 * 50)
            r = run_child("vectorbt", str(ncols), limit_mb=guard)
        if r:
            if ncols < len(COMBOS):
                notes["vectorbt"] = f"ran {ncols} of {len(COMBOS)} columns (memory); time x{len(COMBOS) / ncols:.1f}"
                r["measured_wall"] = r["wall"]
                r["wall"] *= len(COMBOS) / ncols
            results["vectorbt"] = r
    else:
        print("  (vectorbt not installed: skipped)")

    results["plain"] = run_child("plain")
    if results["plain"]:
        notes["plain"] = f"mean of {PLAIN_N} random combinations x {len(COMBOS)}"
    if has("backtesting"):
        results["backtesting.py"] = run_child("backtesting.py")
        if results["backtesting.py"]:
            notes["backtesting.py"] = f"mean of {BTPY_N} random combinations x {len(COMBOS)}; FractionalBacktest"
    else:
        print("  (backtesting.py not installed: skipped; pip install backtesting to include it)")

    ours, vb = results.get("ours"), results.get("vectorbt")
    if not ours:
        print("bench_backtest: our engine failed")
        return 1
    bars = ours["bars"]
    base = vb["wall"] if vb else None
    print(f"  {'contender':22} {'wall (1,000 combos)':>20} {'combos x bars / s':>18} {'peak RSS':>10} "
          f"{'vs vectorbt':>12}  note")
    labels = {"ours": "ours (numba sweep)", "vectorbt": "vectorbt from_signals", "plain": "plain Python loop",
              "backtesting.py": "backtesting.py"}
    for k in ("ours", "vectorbt", "plain", "backtesting.py"):
        r = results.get(k)
        if not r:
            continue
        thr = len(COMBOS) * bars / r["wall"]
        ratio = f"{base / r['wall']:.1f}x" if base else "-"
        note = notes.get(k, "")
        if k == "ours":
            note = f"best of 3 after a warm-up: {', '.join(f'{w:.2f}' for w in r['walls'])} s; {r['threads']} numba threads"
        print(f"  {labels[k]:22} {r['wall']:>18.2f} s {thr:>18,.0f} {r['peak_mb']:>7,.0f} MB {ratio:>12}  {note}")
    if vb:
        print(f"  {'vectorbt signals':22} {vb['signals_wall']:>18.2f} s {'':>18} {'':>10} {'':>12}  "
              f"vbt.MA.run x2 + crossed_above/below on the same columns (not in the row above)")

    print("checks")
    ok = True
    if vb:
        speed = base / ours["wall"]
        row("throughput vs plain vectorbt pass", f"{speed:.1f}x", "target >= 10x " + ("PASS" if speed >= 10 else "FAIL"))
        ok &= speed >= 10
        diff = [k for k, n in vb["n_trades"].items() if ours["n_trades"][k] != n]
        row("vectorbt trade count == ours", f"{len(vb['n_trades']) - len(diff)}/{len(vb['n_trades'])} columns",
            "PASS" if not diff else f"FAIL {diff[:5]}")
        ok &= not diff
    row("our peak memory", f"{ours['peak_mb']:,.0f} MB", "target < 2,048 MB " + ("PASS" if ours["peak_mb"] < 2048 else "FAIL"))
    ok &= ours["peak_mb"] < 2048
    pl = results.get("plain")
    if pl:
        row("trades identical to the plain loop", f"{pl['checked'] - len(pl['mismatches'])}/{pl['checked']} combos",
            f"{pl['trades_checked']:,} trades compared one by one " + ("PASS" if not pl["mismatches"] else
                                                                        f"FAIL {pl['mismatches'][:5]}"))
        ok &= not pl["mismatches"]
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""))
    sys.exit(main())
