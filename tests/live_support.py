"""Shared helpers for the live-broker and reliability tests (and bench/bench_live.py).

Everything talks to the loopback Binance (``tests/support/loopback_exchange.py``) through the REAL
``ccxt.binance`` client; nothing in ccxt or the database is mocked.

Run as a script, this file is the **driver** of the kill -9 tests: it starts what the trading agent runs
(:func:`agent_gate`: the real live broker, the agent's Authority over the exchange's own view, one serial
gate) against a loopback server running in ANOTHER process (the test), reconciles with the exchange as
the agent does at start, submits one order through the gate with a fixed client order id, prints the
result as one JSON line and exits (or is SIGKILLed by the broker's test-only crash hook,
``QTS_TEST_CRASH_AT``)::

    python tests/live_support.py --home H --url http://127.0.0.1:PORT --key K --secret S \
        --symbols BTC/USDT,ETH/USDT --symbol BTC/USDT --side buy --amount 0.002 --coid C [--price P]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "lib") not in sys.path:
    sys.path.insert(0, str(REPO / "lib"))
if str(REPO / "tests") not in sys.path:  # test equipment: ``from support.loopback_exchange import ...``
    sys.path.insert(0, str(REPO / "tests"))

PIN = "Tr4de-Safely!"          # the human's PIN in these tests (low scrypt cost below)
SCRYPT_N = 2 ** 10
TEN_SYMBOLS = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "LTC", "DOT", "AVAX"]
TEN_PRICES = {"BTC": "60000", "ETH": "3000", "SOL": "150", "BNB": "600", "XRP": "0.6", "ADA": "0.45",
              "DOGE": "0.15", "LTC": "80", "DOT": "7", "AVAX": "35"}


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the loopback exchange ----------------------------------------------------------------------------

def ten_symbol_specs():
    """10 USDT symbols (the kill-switch scenario: 10 positions, 20 open orders)."""
    from support.loopback_exchange import SymbolSpec

    out = []
    for b in TEN_SYMBOLS:
        px = Decimal(TEN_PRICES[b])
        tick = Decimal("0.01") if px >= 10 else Decimal("0.0001")
        step = Decimal("0.00001") if px >= 1000 else Decimal("0.001") if px >= 10 else Decimal("0.1")
        out.append(SymbolSpec(b, "USDT", price=px, tick_size=tick, min_price=tick, step_size=step, min_qty=step,
                              market_max_qty="100000", max_qty="1000000"))
    return out


def backfill_history(server, symbol: str, bars: int = 200, step_ms: int = 300_000, seed: int = 1,
                     vol: float = 0.004) -> None:
    """Give ``symbol`` a price history in the past, so the loopback's klines have real ranges (the
    gate's risk layer needs an ATR to place a stop); the last price (the one in force now) is unchanged.
    ``server`` is a ``LoopbackBinance`` or a ``RemoteLoopback`` (same seeded walk either way)."""
    server.backfill(symbol, bars=bars, step_ms=step_ms, seed=seed, vol=vol)


def make_server(symbols=None, balances=None, **kw):
    from support.loopback_exchange import LoopbackBinance

    kw.setdefault("idle_timeout", 60)
    kw.setdefault("max_lifetime", 900)
    srv = LoopbackBinance(symbols=symbols, balances={"USDT": "10000"} if balances is None else balances, **kw)
    for s in srv._specs.values():
        backfill_history(srv, f"{s.base}/{s.quote}")
    return srv


def _fixtures():
    """``srv`` (a loopback that must end with no server-side errors) and ``ex`` (the real ccxt client on
    it): pytest fixtures the live tests import from here."""
    import pytest

    @pytest.fixture
    def srv():
        s = make_server()
        yield s
        s.close()
        assert s.errors == []

    @pytest.fixture
    def ex(srv):
        return ccxt_client(srv, timeout_ms=1500)

    return srv, ex


srv, ex = _fixtures()


class Remote:
    """What ``make_ccxt_client`` needs to know about a loopback running in another process."""

    def __init__(self, base_url: str, api_key: str, secret: str):
        self.base_url, self.api_key, self.secret = base_url.rstrip("/"), api_key, secret


def ccxt_client(server, timeout_ms: int = 3000, **kw):
    from support.loopback_exchange import make_ccxt_client

    ex = make_ccxt_client(server, timeout_ms=timeout_ms, **kw)
    ex.load_markets()
    return ex


class FastSleep:
    """Records every back-off the client asks for and sleeps at most ``cap`` seconds of it; ``now`` is a
    monotonic clock that moves by the full asked-for time (so a Retry-After pause is over once slept)."""

    def __init__(self, cap: float = 0.0005):
        self.cap, self.calls, self.skipped = cap, [], 0.0

    def __call__(self, s: float) -> None:
        self.calls.append(s)
        if s > 0:
            self.skipped += s
            if self.cap > 0:
                time.sleep(min(s, self.cap))

    def now(self) -> float:
        return time.monotonic() + self.skipped


def fast_client(ex, store, **kw):
    from qts.broker.exchange_client import ExchangeClient

    kw.setdefault("base_backoff_s", 0.001)
    kw.setdefault("max_backoff_s", 0.01)
    kw.setdefault("sleep", FastSleep())
    if isinstance(kw["sleep"], FastSleep):
        kw.setdefault("clock", kw["sleep"].now)
    return ExchangeClient(ex, store, **kw)


def live_broker(store, ex, symbols, quote="USDT", client=None, **kw):
    from qts.broker.live import LiveBroker
    from qts.market.ccxt_feed import CcxtFeed

    kw.setdefault("lookup_pause_s", 0.001)
    feed = CcxtFeed(ex, symbols, 5)
    return LiveBroker(store, feed, ex, client=client or fast_client(ex, store), quote_currency=quote, **kw)


# -- the state home -----------------------------------------------------------------------------------

def write_breaker_closed(home) -> None:
    """logs/circuit_breaker.json's documented format: the last valid line is the state."""
    home.logs.mkdir(parents=True, exist_ok=True)
    version = 0  # the next version: the breaker reads a file BEHIND its database record as open
    try:
        for line in home.breaker_file.read_text(encoding="utf-8").splitlines():
            try:
                version = max(version, int(json.loads(line).get("version", 0)))
            except (ValueError, AttributeError, TypeError):
                pass
    except FileNotFoundError:
        pass
    rec = {"state": "closed", "trading_state": "ACTIVE", "since_ts": now_ms(), "reason": "test"}
    if version:
        rec["version"] = version + 1
    with open(home.breaker_file, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")


def live_environ(home, server, symbols, **extra) -> dict:
    root = getattr(home, "root", home)
    env = {"QTS_HOME": str(root), "PAPER_TRADING": "false", "EXCHANGE": "binance",
           "EXCHANGE_API_KEY": server.api_key, "EXCHANGE_SECRET": server.secret, "SYMBOLS": ",".join(symbols),
           "TRADE_INTERVAL": "5", "MAX_POSITION_SIZE": "100000", "INITIAL_CASH": "10000"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def live_settings(home, server, symbols, **extra):
    from qts.config import load_settings

    return load_settings(environ=live_environ(home, server, symbols, **extra))


def approve_live(home, store, symbols, strategy: str = "manual", max_order: float = 450.0,
                 max_daily: float = 10_000_000.0, max_orders_per_minute: int | None = None):
    """What the human does with the PIN before live trading: set a PIN (its key older than the cool-down),
    issue a live grant, override the paper-history requirement for ``strategy`` and, optionally, approve
    a looser order-rate limit. Returns the unlocked signing key."""
    from qts.safety import grants, pin
    from qts.safety.approve import save_approval

    t = now_ms()
    earlier = t - 2 * 3600 * 1000  # the PIN was set, and its key first seen, two hours ago
    pin.set_pin(home, PIN, scrypt_n=SCRYPT_N, now=earlier)
    key = pin.unlock(home, PIN, now=earlier)
    store.event("pin_key_seen", "PIN key first seen (test set-up)", severity="critical",
                data={"fingerprint": key.fingerprint}, ts=earlier)
    grants.issue_live_grant(home, key, max_order_notional=max_order, max_daily_notional=max_daily,
                            symbols=list(symbols), ttl_s=8 * 3600, now=t)
    a = grants.sign_approval(home, key, grants.ACTION_OVERRIDE_PAPER_DAYS, {"strategy": strategy},
                             ttl_s=24 * 3600, now=t)
    save_approval(home, f"paper_override_{strategy}", a)
    if max_orders_per_minute:
        from qts.safety.risk_profile import default_profile, save_profile

        prof = default_profile().model_copy(update={"max_orders_per_minute": max_orders_per_minute})
        rec = save_profile(home, prof, log=lambda *a: None, now_ms=t, signing_key=key)
        appr = grants.sign_approval(home, key, grants.ACTION_RAISE_RISK_LIMIT, {"hash": rec.record_hash},
                                    ttl_s=24 * 3600, now=t)
        (home.safety_dir / "risk_profile.approval.json").write_text(json.dumps(appr))
    return key


# -- database vs exchange -----------------------------------------------------------------------------

def exchange_totals(server) -> dict[str, float]:
    return {a: float(f + l) for a, (f, l) in server.balances().items()}


def compare(store, server, symbols, quote: str = "USDT", cash_tol: float = 1e-6) -> list[str]:
    """Every way the database disagrees with the exchange (empty: they agree)."""
    from qts.broker.models import OPEN_STATUSES

    bad: list[str] = []
    totals = exchange_totals(server)
    cash = store.scalar("SELECT free FROM balances WHERE mode='live' AND asset=?", (quote,)) or 0.0
    if abs(cash - totals.get(quote, 0.0)) > cash_tol:
        bad.append(f"cash: database {cash!r} != exchange {totals.get(quote, 0.0)!r}")
    rows = {r["client_order_id"]: r for r in store.query("SELECT * FROM orders WHERE mode='live'")}
    for sym in symbols:
        base = sym.split("/")[0]
        step = float(server.spec(sym).step_size)
        pos = store.scalar("SELECT amount FROM positions WHERE mode='live' AND symbol=?", (sym,)) or 0.0
        if abs(pos - totals.get(base, 0.0)) > step / 2:
            bad.append(f"{sym} position: database {pos!r} != exchange {totals.get(base, 0.0)!r}")
        trades_by_order: dict[int, list] = {}
        for t in server.trades(sym):
            trades_by_order.setdefault(t["orderId"], []).append(t)
        seen = set()
        for eo in server.orders(sym):
            cid = eo["clientOrderId"]
            if cid in seen:
                bad.append(f"{sym}: two exchange orders with client id {cid}")
            seen.add(cid)
            r = rows.get(cid)
            if r is None:
                bad.append(f"{sym}: exchange order {cid} ({eo['status']}) unknown to the database")
                continue
            if abs(r["filled"] - float(eo["executedQty"])) > step / 2:
                bad.append(f"{cid}: filled database {r['filled']!r} != exchange {eo['executedQty']}")
            n_db = store.scalar("SELECT COUNT(*) FROM fills WHERE client_order_id=?", (cid,))
            n_ex = len(trades_by_order.get(eo["orderId"], []))
            if n_db != n_ex:
                bad.append(f"{cid}: {n_db} fills in the database, {n_ex} trades at the exchange")
            ex_open = eo["status"] in ("NEW", "PARTIALLY_FILLED")
            if ex_open != (r["status"] in OPEN_STATUSES):
                bad.append(f"{cid}: database status {r['status']} vs exchange {eo['status']}")
        for cid, r in rows.items():
            if r["symbol"] == sym and cid not in seen and r["filled"] > 0:
                bad.append(f"{cid}: filled {r['filled']} in the database but unknown at the exchange")
    return bad


def journal(home) -> list[dict]:
    from qts.fsutil import read_jsonl

    return read_jsonl(home.trades_log)


# -- the driver (a separate process) --------------------------------------------------------------------

def driver_cmd(home, server, symbols, symbol, side, amount, coid, price=None) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--home", str(home.root), "--url", server.base_url,
           "--key", server.api_key, "--secret", server.secret, "--symbols", ",".join(symbols), "--symbol", symbol,
           "--side", side, "--amount", repr(amount), "--coid", coid]
    if price is not None:
        cmd += ["--price", repr(price)]
    return cmd


def _drive(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for a in ("--home", "--url", "--key", "--secret", "--symbols", "--symbol", "--side", "--coid"):
        ap.add_argument(a, required=True)
    ap.add_argument("--amount", type=float, required=True)
    ap.add_argument("--price", type=float)
    args = ap.parse_args(argv)

    from qts.broker.models import OrderIntent
    from qts.paths import StateHome
    from qts.store import Store

    remote = Remote(args.url, args.key, args.secret)
    symbols = args.symbols.split(",")
    ex = ccxt_client(remote, timeout_ms=3000)
    store = Store.open(StateHome(args.home).ensure())
    try:
        gate, broker, _authority = agent_gate(store, ex, symbols)
        rep = broker.reconcile()  # what the agent does at start, before it serves any request
        out = {"mode": broker.mode, "reconcile": {k: rep.get(k) for k in ("lost", "fills_adopted", "discrepancies")}}
        intent = OrderIntent(args.symbol, args.side, args.amount, type="limit" if args.price else "market",
                             price=args.price, client_order_id=args.coid, source="agent:spool",
                             reason="reliability test")
        res = gate.submit(intent)
        out["result"] = res.to_dict()
    finally:
        store.close()
    print(json.dumps(out, default=str), flush=True)
    return 0


# -- the live gate as the trading agent runs it (in-process) ------------------------------------------------

def agent_gate(store, ex, symbols, *, max_order: float = 450.0, max_daily: float = 10_000_000.0,
               policy=None, client=None, quote: str = "USDT", **broker_kw):
    """The gate the trading agent runs, in this process: the REAL live broker, the agent's Authority over
    an ExchangeView of the same loopback (positions, day's spend and mid prices from the exchange), and a
    policy with a live grant. What the agent process adds on top (transports, journal, PIN unlock) is
    tested through a real agent in test_redteam.py. Returns (gate, broker, authority)."""
    import threading

    from qts.agent.authority import Authority
    from qts.agent.exchange_view import ExchangeView
    from qts.agent.policy import Grant, Policy
    from qts.gate import Gate

    broker = live_broker(store, ex, symbols, quote=quote, client=client, **broker_kw)
    if policy is None:
        policy = Policy(grant=Grant.make(max_order, max_daily, list(symbols), 8, now_ms()),
                        max_orders_per_minute=10_000, max_daily_loss_usd=1e9, order_approval_usd=1e9)
    view = ExchangeView(broker.client, symbols, quote)
    authority = Authority(view, policy, kill_flag=store.home.kill_flag)
    from qts.safety.risk_profile import default_profile

    authority.set_risk_profile(default_profile().model_copy(update={"max_orders_per_minute": 10_000}))
    gate = Gate(store, broker.feed, broker, authority=authority, lock=threading.RLock(),
                settings=live_settings_for_store(store, symbols))
    gate.sync_logs, store.fsync_journal = False, False  # as the agent runs it (agent/service.py)
    return gate, broker, authority


def live_settings_for_store(store, symbols):
    from qts.config import load_settings

    return load_settings(environ={"QTS_HOME": str(store.home.root), "PAPER_TRADING": "false",
                                  "SYMBOLS": ",".join(symbols), "MAX_POSITION_SIZE": "100000"})


if __name__ == "__main__":  # at the end: the driver uses everything above
    sys.exit(_drive())
