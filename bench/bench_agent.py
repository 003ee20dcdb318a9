"""The trading agent: orders through its socket, and the kill switch from a shell to flat.

The exchange is the standalone loopback Binance in ITS OWN process (tests/support/loopback_exchange.py), the
client the real ccxt.binance. The agent runs in this process (the same TradingAgent that `qts agent start`
runs, minus the PIN prompt); its clients talk to it over its Unix socket, and `hooks/kill_switch.sh` runs as a
real shell command.

1. Orders per second through the agent's socket (request -> one serial gate -> live broker -> answer)
   vs raw ccxt create_order against the same exchange. Goal: at least 50% of raw ccxt.
2. `hooks/kill_switch.sh` wall time from the shell to "flat" (confirmed by the exchange) with 10 positions
   and 20 open orders. Goal < 1 s. Baseline: the same 20 cancels and 10 sells as raw ccxt calls.
3. A flag-only engagement (`python3 -S hooks/_hook.py kill_flag`), wall time. Goal < 100 ms.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, row

sys.path.insert(0, str(ROOT / "tests"))

N_ORDERS = 400


def _agent(tmp: str, server, symbols: list[str]):
    """A running TradingAgent on ``server`` with a wide grant (the figures are the software's)."""
    from live_support import fast_client  # noqa: F401 - path set-up
    from qts.agent import journal as jmod
    from qts.agent.main import make_exchange
    from qts.agent.paths import AgentPaths
    from qts.agent.policy import Grant, Policy
    from qts.agent.service import AgentConfig, TradingAgent, account_id
    from qts.broker.exchange_client import ExchangeClient
    from qts.config import load_settings
    from qts.paths import StateHome
    from qts.safety.pin import SigningKey
    from qts.safety.risk_profile import default_profile
    from qts.store import Store

    os.environ.update(XDG_CONFIG_HOME=f"{tmp}/cfg", XDG_STATE_HOME=f"{tmp}/state", XDG_RUNTIME_DIR=f"{tmp}/run",
                      QTS_HOME=f"{tmp}/project/.quant-trading")
    settings = load_settings(environ={"QTS_HOME": f"{tmp}/project/.quant-trading", "PAPER_TRADING": "false",
                                      "SYMBOLS": ",".join(symbols), "EXCHANGE_URL": server.base_url,
                                      "MAX_POSITION_SIZE": "1000000"})
    home = StateHome(settings.QTS_HOME).ensure()
    store = Store.open(home)
    ex = make_exchange(settings, server.api_key, server.secret)
    ex.load_markets()
    key = SigningKey.generate()
    paths = AgentPaths.for_home(home.root)
    now = int(time.time() * 1000)
    pol = Policy(grant=Grant.make(1e6, 1e9, symbols, 8, now), max_orders_per_minute=100_000,
                 max_daily_loss_usd=1e9, order_approval_usd=1e9)
    cfg = AgentConfig(settings=settings, paths=paths, exchange=ex, public_key=key.public_key,
                      key_fingerprint=key.fingerprint, journal=jmod.Journal(paths.journal, key.derive_key(b"j"), []),
                      policy=pol, account=account_id("binance", server.api_key), instance="bench", code_hash="bench",
                      store=store, run_loop=False, allow_uid0=True, say=lambda *_: None,
                      client=ExchangeClient(ex, store))
    agent = TradingAgent(cfg)
    agent.authority.set_risk_profile(default_profile().model_copy(update={
        "max_orders_per_minute": 100_000, "max_position_usd": 1e7, "max_order_usd": 1e7,
        "max_symbol_exposure_pct": 100.0, "max_total_exposure_pct": 100.0}))
    agent.start()
    return agent, paths, home


def bench_orders() -> dict:
    from live_support import ccxt_client
    from qts.agent import protocol
    from support.loopback_exchange import start_standalone, stop_standalone

    with tempfile.TemporaryDirectory() as tmp:
        proc, srv = start_standalone(None, symbols=["BTC/USDT", "ETH/USDT"], balances={"USDT": "100000000"},
                                     weight_limit=10 ** 9, idle_timeout=120)
        try:
            srv.backfill("BTC/USDT")
            ex = ccxt_client(srv)
            t0 = time.perf_counter()
            for i in range(N_ORDERS):
                ex.create_order("ETH/USDT", "market", "buy" if i % 2 == 0 else "sell", 0.002, None,
                                {"clientOrderId": f"raw{i}"})
            raw_s = time.perf_counter() - t0
            agent, paths, _ = _agent(tmp, srv, ["BTC/USDT", "ETH/USDT"])
            try:
                with protocol.SocketClient(paths) as c:
                    first = c.call(protocol.request("order", {"symbol": "BTC/USDT", "side": "buy", "amount": 0.002,
                                                              "client_order_id": "base"}))
                    assert first["ok"], first
                    lat = []
                    t0 = time.perf_counter()
                    answers = []
                    for i in range(N_ORDERS):
                        t1 = time.perf_counter()
                        answers.append(c.call(protocol.request("order", {
                            "symbol": "BTC/USDT", "side": "buy" if i % 2 == 0 else "sell", "amount": 0.0002,
                            "client_order_id": f"s{i}"})))
                        lat.append(time.perf_counter() - t1)
                    agent_s = time.perf_counter() - t0
                    # the same decision asked again: one order, answered from the agent's memory
                    t0 = time.perf_counter()
                    for i in range(100):
                        c.call(protocol.request("order", {"symbol": "BTC/USDT", "side": "buy", "amount": 0.0002,
                                                          "client_order_id": "s0"}))
                    dup_ms = (time.perf_counter() - t0) * 10
                spool_lat = []
                for i in range(30):
                    t1 = time.perf_counter()
                    ans = protocol.spool_call(paths, protocol.request("order", {
                        "symbol": "BTC/USDT", "side": "buy" if i % 2 == 0 else "sell", "amount": 0.0002,
                        "client_order_id": f"sp{i}"}))
                    spool_lat.append(time.perf_counter() - t1)
                    assert ans["ok"], ans
            finally:
                agent.request_stop("bench")
                agent.shutdown()
                agent.store.close()
        finally:
            stop_standalone(proc)
    ok = sum(1 for a in answers if a["ok"])
    raw_rate, agent_rate = N_ORDERS / raw_s, N_ORDERS / agent_s
    lat.sort()
    row("raw ccxt create_order (baseline)", f"{raw_rate:.0f} /s", f"{N_ORDERS} market orders, same exchange")
    row("through the agent's socket", f"{agent_rate:.0f} /s", "request -> serial gate -> live broker -> answer")
    row("  ratio to raw ccxt", f"{agent_rate / raw_rate:.2f}", "goal >= 0.50")
    row("  accepted", f"{ok} / {N_ORDERS}")
    row("  latency p50 / p95", f"{lat[len(lat) // 2] * 1000:.1f} / {lat[int(len(lat) * .95)] * 1000:.1f} ms")
    row("  the same decision again (duplicate)", f"{dup_ms:.2f} ms", "answered from memory, nothing sent")
    row("  through the spool (the sandbox's channel)", f"{statistics.median(spool_lat) * 1000:.1f} ms",
        "median round trip: file in, answer file out")
    return {"raw": raw_rate, "agent": agent_rate}


def _book_ten(ex, srv, symbols):
    """10 positions and 20 resting bids at the exchange (placed straight through ccxt: the agent's kill
    switch works from the exchange's view, whoever placed them)."""
    ex.load_markets()
    for k, sym in enumerate(symbols):
        px = float(srv.price(sym))
        amt = float(ex.amount_to_precision(sym, 300 / px))
        ex.create_order(sym, "market", "buy", amt, None, {"clientOrderId": f"pos{k}"})
        for j in range(2):
            bid = float(ex.price_to_precision(sym, px * (0.8 - 0.05 * j)))
            ex.create_order(sym, "limit", "buy", float(ex.amount_to_precision(sym, 60 / px)), bid,
                            {"clientOrderId": f"bid{k}{j}"})


TEN_SERVER = """
import sys, json, time
sys.path.insert(0, {tests!r})
from live_support import make_server, ten_symbol_specs
srv = make_server(symbols=ten_symbol_specs(), weight_limit=10 ** 9, balances={{"USDT": "100000"}}, idle_timeout=60,
                  max_lifetime=600)
print(json.dumps({{"url": srv.base_url}}), flush=True)
srv.wait_closed()
"""


def _ten_symbol_exchange():
    """The 10-symbol loopback in its own process (the in-process server's symbol specs, served remotely)."""
    import json

    from support.loopback_exchange import RemoteLoopback

    proc = subprocess.Popen([sys.executable, "-c", TEN_SERVER.format(tests=str(ROOT / "tests"))],
                            stdout=subprocess.PIPE, text=True)
    return proc, RemoteLoopback(json.loads(proc.stdout.readline())["url"])


def bench_kill_switch() -> dict:
    from live_support import ccxt_client, ten_symbol_specs

    specs = ten_symbol_specs()
    symbols = [f"{s.base}/{s.quote}" for s in specs]
    out = {}
    for variant in ("raw", "agent"):
        with tempfile.TemporaryDirectory() as tmp:
            proc, srv = _ten_symbol_exchange()
            try:
                ex = ccxt_client(srv)
                _book_ten(ex, srv, symbols)
                before = (sum(1 for a, (f, l) in srv.balances().items() if a != "USDT" and f + l > 0),
                          sum(1 for o in srv.orders() if o["status"] == "NEW"))
                if variant == "raw":
                    t0 = time.perf_counter()
                    for o in srv.orders():
                        if o["status"] == "NEW":
                            ex.cancel_order(None, o["symbol"].replace("USDT", "/USDT"),
                                            {"clientOrderId": o["clientOrderId"]})
                    for a, (f, l) in srv.balances().items():
                        if a != "USDT" and f > 0:
                            ex.create_order(f"{a}/USDT", "market", "sell", float(f))
                    out["raw_ms"] = (time.perf_counter() - t0) * 1000
                else:
                    agent, paths, home = _agent(tmp, srv, symbols)
                    try:
                        env = {**os.environ, "QTS_HOME": str(home.root)}
                        t0 = time.perf_counter()
                        p = subprocess.run([str(ROOT / "hooks" / "kill_switch.sh"), "--json", "--reason", "bench"],
                                           capture_output=True, text=True, env=env, timeout=120)
                        out["agent_ms"] = (time.perf_counter() - t0) * 1000
                        import json

                        out["report"] = json.loads(p.stdout)
                        out["exit"] = p.returncode
                    finally:
                        agent.request_stop("bench")
                        agent.shutdown()
                        agent.store.close()
                    # a flag-only engagement, as the slash command's first step does it
                    flag_ms = []
                    for _ in range(10):
                        t0 = time.perf_counter()
                        subprocess.run(["python3", "-S", str(ROOT / "hooks" / "_hook.py"), "kill_flag", "--reason", "b"],
                                       capture_output=True, env=env, timeout=30)
                        flag_ms.append((time.perf_counter() - t0) * 1000)
                    out["flag_ms"] = statistics.median(flag_ms)
                left = (sum(1 for a, (f, l) in srv.balances().items() if a != "USDT" and f + l > 0),
                        sum(1 for o in srv.orders() if o["status"] in ("NEW", "PARTIALLY_FILLED")))
                out[variant + "_left"], out["before"] = left, before
            finally:
                proc.terminate()
                proc.wait(10)
    rep = out["report"]["live"].get("report", {})
    row("positions / open orders before", "{} / {}".format(*out["before"]))
    row("raw ccxt: 20 cancels + 10 sells (baseline)", f"{out['raw_ms']:.0f} ms")
    row("kill_switch.sh, shell to flat (live)", f"{out['agent_ms']:.0f} ms", "goal < 1000 ms (before: 2.4-6.5 s)")
    row("  of which inside the agent", f"{rep.get('ms', 0):.0f} ms",
        f"{len(rep.get('closed', []))} closed, {len(rep.get('cancelled_foreign', [])) + len(rep.get('cancelled', []))} "
        f"cancelled; exit {out['exit']}, flat {out['report']['flat']}")
    row("  left at the exchange: positions / open", "{} / {}".format(*out["agent_left"]), "must be 0 / 0")
    row("flag-only engagement (_hook.py kill_flag)", f"{out['flag_ms']:.0f} ms", "goal < 100 ms; median of 10")
    return out


def main() -> int:
    print("Orders through the trading agent (standalone loopback Binance, real ccxt)")
    bench_orders()
    print("Kill switch from a shell, through the agent")
    bench_kill_switch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
