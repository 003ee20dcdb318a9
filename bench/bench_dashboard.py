"""The operator dashboard (issue #14) on a month of history: how long the page's first load and its updates take.

History, made with the library (no hand-written SQL): five registry strategies (sma_cross, rsi_reversion,
bollinger_reversion, zscore_reversion and a slower sma_cross variant), each registered with its expectations and
promoted to paper on its own symbol (BTC, ETH, SOL, BNB, AVAX), then 30 days of five-minute cycles of the generated
market through the whole loop (``open_session`` + ``TradingLoop.run``): 8,640 cycles, 43,200 decisions.

Measured over real HTTP on 127.0.0.1 (``start_dashboard``, a free port):
1. first load: ``GET /`` (the page) and a cold ``GET /dashboard/data`` (the registry / predicted-vs-realized cache
   empty, as after the server starts); median and worst of 7.
2. update: ``GET /dashboard/data`` as the page polls it every 2 s: warm (no new cycle since the last poll), and
   right after one more cycle landed (the new snapshot invalidates the cache: performance() runs again).
   The page shows a new cycle at most one poll interval (2 s) plus that time after the cycle commits.
3. ``GET /metrics`` on the same history (a Prometheus scrape; docs/grafana/qts-dashboard.json reads it).

    .venv/bin/python bench/bench_dashboard.py        (or: python bench/run.py dashboard)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
import urllib.request

from common import peak_rss_mb, row

TOKEN = "bench-dashboard-token-0123456789"
DAYS = 30
PLAN = [("sma_cross", {}, "BTC/USDT"), ("rsi_reversion", {}, "ETH/USDT"), ("bollinger_reversion", {}, "SOL/USDT"),
        ("zscore_reversion", {}, "BNB/USDT"), ("sma_cross_slow", {}, "AVAX/USDT")]


def _slow_variant():
    """A fifth strategy name: sma_cross with other default windows, registered like a built-in."""
    from qts import strategies
    from qts.strategies.library import BUILTIN

    base = BUILTIN["sma_cross"]

    class SmaCrossSlow(base):
        name = "sma_cross_slow"

        class Params(base.Params):
            fast: int = 30
            slow: int = 120

    strategies.STRATEGIES.setdefault("sma_cross_slow", SmaCrossSlow)


def build(tmp: str):
    from qts.config import load_settings
    from qts.engine.session import make_feed, open_session
    from qts.registry import Registry, promote
    from qts.registry.models import DataInfo, Expected, ValidationSummary
    from qts.store import Store

    _slow_variant()
    settings = load_settings(environ={"SYMBOLS": ",".join(s for _, _, s in PLAN), "QTS_HOME": tmp})
    settings.home.ensure()
    now = int(time.time() * 1000)
    for i, (name, params, sym) in enumerate(PLAN):
        v = ValidationSummary(passed=True, summary="PASS", strict_gates=True,
                              data=DataInfo(symbol=sym, synthetic=True, bars=10_000), validated_ts=now)
        exp = Expected(sharpe=1.0 + 0.1 * i, expectancy_pct=0.3, trade_return_std_pct=2.0, max_drawdown_pct=12.0,
                       win_rate=0.5, trades_per_day=1.0, n_trades=60)
        e = Registry.load(settings.home).add(strategy=name, params=params, symbol=sym, timeframe_minutes=5,
                                             validation=v, expected=exp, now=now - 1000)
        store = Store.open(settings.home)
        try:
            promote(settings.home, e.id, "paper", store=store, now=now)
        finally:
            store.close()
    feed = make_feed(settings, "synthetic", days=DAYS)
    session = open_session(settings, feed)
    assert session.notice and "sma_cross_slow" in session.notice, session.notice
    t0 = time.perf_counter()
    cycles = session.loop.run(threading.Event())
    return settings, session, cycles, time.perf_counter() - t0


def main() -> int:
    from qts.monitor import registry_view
    from qts.monitor.dashboard import start_dashboard

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def fetch(url, auth=True) -> tuple[float, int]:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"} if auth else {})
        t = time.perf_counter()
        with opener.open(req, timeout=120) as r:
            n = len(r.read())
        return time.perf_counter() - t, n

    with tempfile.TemporaryDirectory() as tmp:
        settings, session, cycles, wall = build(tmp)
        store = session.store
        n_dec = store.scalar("SELECT COUNT(*) FROM decisions")
        n_snap = store.scalar("SELECT COUNT(*) FROM equity_snapshots")
        n_orders = store.scalar("SELECT COUNT(*) FROM orders")
        strategies = [r["strategy"] for r in store.query("SELECT DISTINCT strategy FROM orders ORDER BY 1")]
        srv = start_dashboard(settings.home, port=0, token=TOKEN)
        try:
            page_t = min(fetch(srv.url + "/", auth=False)[0] for _ in range(5))
            cold = []
            for _ in range(7):
                registry_view._CACHE.clear()
                dt, size = fetch(srv.url + "/dashboard/data")
                cold.append(dt)
            warm = [fetch(srv.url + "/dashboard/data")[0] for _ in range(15)]
            after_cycle = []
            for _ in range(5):
                session.loop.cycle()  # one more cycle lands (a new snapshot): the next poll recomputes
                after_cycle.append(fetch(srv.url + "/dashboard/data")[0])
            metrics = []
            for _ in range(5):
                registry_view._CACHE.clear()
                metrics.append(fetch(srv.url + "/metrics")[0])
        finally:
            srv.stop()
            session.close()
    ms = lambda xs: f"{1000 * statistics.median(xs):,.0f} ms"  # noqa: E731
    row(f"history ({DAYS} days of 5 min, 5 strategies)", f"{cycles} cycles",
        f"{n_dec} decisions, {n_snap} snapshots, {n_orders} orders ({', '.join(strategies)}); built in {wall:.0f} s")
    row("first load: GET / (the page)", f"{1000 * page_t:.1f} ms", "best of 5")
    row("first load: GET /dashboard/data, cold", ms(cold), f"median of 7, worst {1000 * max(cold):,.0f} ms; "
                                                          f"{size / 1024:,.0f} KiB JSON")
    row("update: /dashboard/data, warm poll", ms(warm), f"median of 15, worst {1000 * max(warm):,.0f} ms")
    row("update: /dashboard/data after a new cycle", ms(after_cycle),
        f"median of 5, worst {1000 * max(after_cycle):,.0f} ms (+ up to one 2 s poll interval)")
    row("GET /metrics, cold", ms(metrics), "median of 5 (a Prometheus scrape)")
    row("peak RSS", f"{peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
