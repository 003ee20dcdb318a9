"""Safety kernel benchmarks, on the paper broker, each figure against a baseline from the same run.

1. Kill switch, time to flag and loop halted: `qts kill-switch` steps 1-2 against a real loop process
   (a paced replay) — target < 0.2 s. Baseline: one atomic file write.
2. Kill switch, time to flat: 10 positions and 20 open orders flattened — target < 1 s.
3. Gate decisions per second: gate.evaluate() on a mix of buys and sells (all checks, no order
   placed). Baseline: the exchange-rules check alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, peak_rss_mb, row

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "LTC/USDT",
           "DOT/USDT", "AVAX/USDT"]


def _session(tmp: str, symbols):
    from qts.config import load_settings
    from qts.engine.session import make_feed, open_session

    settings = load_settings(environ={"QTS_HOME": tmp, "SYMBOLS": ",".join(symbols), "INITIAL_CASH": "1000000",
                                      "MAX_POSITION_SIZE": "100000"})
    feed = make_feed(settings, "synthetic", days=0.5, warmup=60)
    return settings, open_session(settings, feed)


def bench_flatten() -> None:
    from qts.broker.models import OrderIntent
    from qts.safety import kill_switch as ks
    from qts.safety.risk_profile import default_profile  # noqa: F401  (import cost outside the timing)

    with tempfile.TemporaryDirectory() as tmp:
        settings, s = _session(tmp, SYMBOLS)
        s.loop.cycle()
        for sym in SYMBOLS:  # 10 positions via the broker directly (bench set-up, not a trading path)
            q = s.feed.quote(sym)
            s.broker.place(OrderIntent(sym, "buy", s.feed.rules(sym).amount_to_precision(500 / q.price)), f"b{sym}")
            for k in range(2):  # 20 resting limit orders far below the market
                s.broker.place(OrderIntent(sym, "buy", s.feed.rules(sym).amount_to_precision(50 / q.price),
                                           type="limit", price=q.price * 0.5), f"l{sym}{k}")
        n_pos, n_open = len(s.broker.positions()), len(s.broker.open_orders())
        t0 = time.perf_counter()
        ks.engage(s.store.home, "bench", s.store)
        rep = ks.flatten(s.gate, s.broker)
        flat_s = time.perf_counter() - t0
        left = len(s.broker.positions()), len(s.broker.open_orders())
        s.close()
    row("positions / open orders before", f"{n_pos} / {n_open}")
    row("kill switch: time to flat (paper)", f"{flat_s * 1000:.0f} ms", "target < 1000 ms")
    row("left after: positions / open orders", f"{left[0]} / {left[1]}", "must be 0 / 0")
    row("closed / cancelled / failed", f"{len(rep.closed)} / {len(rep.cancelled)} / {len(rep.failed)}")


def bench_halt() -> None:
    from qts.fsutil import write_atomic

    data = os.environ.get("QTS_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_atomic(Path(tmp) / "baseline", "x")
        base = time.perf_counter() - t0
        env = {**os.environ, "QTS_HOME": tmp, "PYTHONPATH": str(ROOT / "lib")}
        args = [sys.executable, "-m", "qts.cli", "run", "--pace", "0.2", "--quiet"]
        if Path(data, "ohlcv").is_dir():
            args += ["--data", str(Path(data, "ohlcv"))]
        loop = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid_file = Path(tmp, "run", "loop.pid")
        deadline = time.time() + 60
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        sys.path.insert(0, str(ROOT / "lib"))
        from qts.paths import StateHome
        from qts.safety import kill_switch as ks

        home = StateHome(Path(tmp))
        t0 = time.perf_counter()
        step = ks.engage(home, "bench")
        stopped = ks.stop_loop(home, timeout_s=5)
        halt = time.perf_counter() - t0
        loop.wait(10)
    row("baseline: one atomic file write", f"{base * 1000:.2f} ms")
    row("kill switch: flag set", f"{step['flag_ms']:.2f} ms")
    row("kill switch: flag + loop process halted", f"{halt * 1000:.0f} ms", "target < 200 ms")
    row("loop exit code after SIGTERM", str(loop.returncode), "0 = clean shutdown")
    row("loop halted", str(stopped["stopped"]))


def bench_gate() -> None:
    from qts.broker.models import OrderIntent
    from qts.gate import check_exchange_rules

    with tempfile.TemporaryDirectory() as tmp:
        settings, s = _session(tmp, SYMBOLS[:3])
        s.loop.cycle()
        intents = []
        for i in range(300):
            sym = SYMBOLS[i % 3]
            p = s.feed.quote(sym).price
            intents.append(OrderIntent(sym, "buy", s.feed.rules(sym).amount_to_precision((20 + i) / p)))
        t0 = time.perf_counter()
        for it in intents:
            check_exchange_rules(s.gate, it)
        base = time.perf_counter() - t0
        t0 = time.perf_counter()
        verdicts = [s.gate.evaluate(it) for it in intents]
        full = time.perf_counter() - t0
        allowed = sum(v.allowed for v in verdicts)
        s.close()
    row("gate decisions per second (all checks)", f"{len(intents) / full:,.0f}", f"{allowed} of {len(intents)} allowed")
    row("baseline: exchange-rules check only", f"{len(intents) / base:,.0f} /s")
    row("full gate / baseline time", f"{full / base:.1f}x")


def bench_anchor() -> None:
    """The one kill-switch reading (flag + per-user anchor + database), on the hooks' standard-library path
    and the gate's, and the breaker reading with the anchor; median of 300 calls each."""
    import statistics

    from qts.hooks import probe
    from qts.safety import kill_switch as ks
    from qts.safety.breaker import load

    os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="qts-bench-state-"))
    with tempfile.TemporaryDirectory() as tmp:
        settings, s = _session(tmp, SYMBOLS[:3])
        s.loop.cycle()
        ks.status(s.store.home, s.store)  # registers the home in the anchor
        home = s.store.home

        def median_ms(fn, n=300):
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1000)
            return statistics.median(out)
        hook = median_ms(lambda: probe.kill_switch(home))
        gate = median_ms(lambda: ks.status(home, s.store))
        brk = median_ms(lambda: load(home, int(time.time() * 1000)))
        s.close()
    row("kill switch reading, hooks (stdlib: flag + anchor + db)", f"{hook:.2f} ms", "target < 5 ms")
    row("kill switch reading, gate (same function, open store)", f"{gate:.2f} ms")
    row("breaker reading with the anchor", f"{brk:.2f} ms")


def main() -> int:
    print("safety kernel (paper broker)")
    bench_anchor()
    bench_halt()
    bench_flatten()
    bench_gate()
    row("peak memory (process RSS)", f"{peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
