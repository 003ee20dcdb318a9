"""Live-path benchmarks against the loopback Binance (real ccxt.binance client over HTTP on 127.0.0.1).

1. Orders per second through gate.submit + the live broker, as the trading agent runs them (every gate
   check: the agent's kill switch, trading state, grant, collar, risk, exchange rules; the broker writes the
   intent before sending, then adopts the fill from the order's answer) — target >= 200/s.
   Baseline: raw ccxt create_order calls per second against the same server. (The whole agent, socket and
   kill switch included: bench_agent.py.)
2. Reconciliation of 1,000 past orders: all open in the database; (a) still open at the exchange,
   (b) all filled at the exchange while we were down (1,000 fills to adopt).

The loopback client runs without ccxt's rate limiter (enableRateLimit off) so the figures are the software's;
what Binance's real weight limit allows instead is printed alongside.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, peak_rss_mb, row

sys.path.insert(0, str(ROOT / "tests"))

N_ORDERS = 600
N_RECONCILE = 1000


def _home(tmp: str):
    from qts.paths import StateHome
    from qts.store import Store

    home = StateHome(Path(tmp) / "home").ensure()
    return home, Store.open(home)


def _big_client(ex, store):
    from qts.broker.exchange_client import ExchangeClient

    return ExchangeClient(ex, store)


SERVER = """
import sys, json
sys.path.insert(0, {tests!r})
from live_support import make_server
srv = make_server(weight_limit=10 ** 9, balances={{"USDT": "100000"}}, idle_timeout=20, max_lifetime=600)
print(json.dumps({{"url": srv.base_url, "key": srv.api_key, "secret": srv.secret}}), flush=True)
srv.wait_closed()
"""


class RemoteServer:
    """A loopback server in its own process (as an exchange is): the client's figures are then not
    shared with the server's threads under one GIL. Request counts come from the server's reply headers."""

    def __init__(self):
        import json
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", SERVER.format(tests=str(ROOT / "tests"))],
                                     stdout=subprocess.PIPE, text=True)
        info = json.loads(self.proc.stdout.readline())
        self.base_url, self.api_key, self.secret = info["url"], info["key"], info["secret"]

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def bench_orders() -> None:
    from live_support import agent_gate, ccxt_client
    from qts.broker.models import OrderIntent

    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    srv = RemoteServer()
    calls = {"n": 0}
    try:
        ex = ccxt_client(srv)
        fetch = ex.fetch

        def counting_fetch(*a, **k):  # count HTTP requests (ccxt's one entry point to the network)
            calls["n"] += 1
            return fetch(*a, **k)

        ex.fetch = counting_fetch
        n_raw = N_ORDERS
        t0 = time.perf_counter()
        for i in range(n_raw):
            ex.create_order("ETH/USDT", "market", "buy", 0.002, None, {"clientOrderId": f"raw{i}"})
        raw_s = time.perf_counter() - t0

        with tempfile.TemporaryDirectory() as tmp:
            home, store = _home(tmp)
            gate, broker, _auth = agent_gate(store, ex, symbols, max_order=1e6, client=_big_client(ex, store))
            broker.reconcile()
            base = gate.submit(OrderIntent("BTC/USDT", "buy", 0.002, client_order_id="base", source="cli"))
            assert base.status == "filled", base
            reqs0 = calls["n"]
            t0 = time.perf_counter()
            results = []
            for i in range(N_ORDERS):  # alternate small buys and sells: the position never goes flat
                side = "buy" if i % 2 == 0 else "sell"
                results.append(gate.submit(OrderIntent("BTC/USDT", side, 0.0002, client_order_id=f"b{i}",
                                                       source="cli")))
            gate_s = time.perf_counter() - t0
            filled = sum(1 for r in results if r.accepted and r.status == "filled")
            refused = [r for r in results if not r.accepted]
            reqs = (calls["n"] - reqs0) / N_ORDERS
            posts = sum(1 for r in results if r.accepted)
            # where the time goes: the gate's checks alone (nothing placed), and the broker alone
            n_part = N_ORDERS // 3
            t0 = time.perf_counter()
            for i in range(n_part):
                gate.evaluate(OrderIntent("BTC/USDT", "buy" if i % 2 == 0 else "sell", 0.0002,
                                          client_order_id=f"e{i}", source="cli"))
            eval_ms = (time.perf_counter() - t0) / n_part * 1000
            t0 = time.perf_counter()
            for i in range(n_part):
                broker.place(OrderIntent("BTC/USDT", "buy" if i % 2 == 0 else "sell", 0.0002), f"p{i}")
            place_ms = (time.perf_counter() - t0) / n_part * 1000
            store.close()
    finally:
        srv.close()
    raw_rate, gate_rate = n_raw / raw_s, N_ORDERS / gate_s
    row("raw ccxt create_order (baseline)", f"{raw_rate:.0f} /s", f"{n_raw} market orders")
    row("gate (agent authority) + live broker", f"{gate_rate:.0f} /s", "target >= 200/s")
    row("  ratio to raw ccxt", f"{gate_rate / raw_rate:.2f}x", f"{raw_rate / gate_rate:.1f} x the time per order")
    row("  filled / refused / accepted", f"{filled} / {len(refused)} / {posts}",
        refused[0].reason_code if refused else "")
    row("  HTTP requests per order", f"{reqs:.2f}", "create + what the agent's view re-reads")
    row("  per order: gate checks alone", f"{eval_ms:.1f} ms", "evaluate(): kill switch .. exchange rules")
    row("  per order: live broker alone", f"{place_ms:.1f} ms", "place(): intent, POST, fills from the answer")
    row("  per order: gate.submit, all in", f"{1000 / gate_rate:.1f} ms", "(the two parts above were timed apart)")


def bench_reconcile() -> None:
    from live_support import ccxt_client, live_broker, make_server
    from qts.broker.models import OrderIntent

    srv = make_server(weight_limit=10 ** 9, balances={"USDT": "100000000"})
    try:
        ex = ccxt_client(srv)
        with tempfile.TemporaryDirectory() as tmp:
            home, store = _home(tmp)
            b = live_broker(store, ex, ["BTC/USDT"], client=_big_client(ex, store))
            b.reconcile()
            t0 = time.perf_counter()
            for i in range(N_RECONCILE):
                b.place(OrderIntent("BTC/USDT", "buy", 0.001, type="limit", price=50000 - (i % 50)), f"r{i}")
            build_s = time.perf_counter() - t0
            assert len(b.open_orders()) == N_RECONCILE
            t0 = time.perf_counter()
            rep_a = live_broker(store, ex, ["BTC/USDT"], client=_big_client(ex, store)).reconcile()
            a_s = time.perf_counter() - t0
            srv.set_price("BTC/USDT", 40000)        # every order fills while "we are down"
            t0 = time.perf_counter()
            rep_b = live_broker(store, ex, ["BTC/USDT"], client=_big_client(ex, store)).reconcile()
            b_s = time.perf_counter() - t0
            left = len(b.open_orders())
            store.close()
    finally:
        srv.close()
    row("build: 1,000 resting orders via the broker", f"{build_s:.2f} s", f"{N_RECONCILE / build_s:.0f} orders/s")
    row("reconcile 1,000 open orders (no change)", f"{a_s * 1000:.0f} ms",
        f"{rep_a['orders_checked']} checked, {a_s / N_RECONCILE * 1000:.2f} ms/order")
    row("reconcile 1,000 filled while down", f"{b_s * 1000:.0f} ms",
        f"{rep_b['fills_adopted']} fills adopted, {left} left open; {b_s / a_s:.1f}x the no-change case")
    row("  Binance's limit instead", f"{N_RECONCILE * 24 / 6000:.0f}+ min",
        "1,000 x (order 4 + myTrades 20) weight at 6,000/min")


def main() -> int:
    print("Orders through the gate (loopback Binance, real ccxt)")
    bench_orders()
    print("Start-up reconciliation")
    bench_reconcile()
    row("peak RSS", f"{peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
