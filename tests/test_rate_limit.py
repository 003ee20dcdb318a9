"""Request rate against the loopback Binance (issue 15): ccxt's own limiter with ccxt's per-endpoint costs keeps a
burst inside the exchange's weight limit, measured by the loopback's own weight counter; the ExchangeClient
honours a 429/418 ``Retry-After`` for every later call and does not send during a ban it will not sleep through.

The burst runs in scaled time: the loopback's minute window and ccxt's ``rateLimit`` are both divided by
``SPEED``, so ccxt behaves exactly as against Binance while the test takes seconds, not minutes."""

from __future__ import annotations

import time
from types import SimpleNamespace

import ccxt
import pytest

from live_support import ccxt_client, make_server
from qts.broker.exchange_client import ExchangeClient, retry_after_s

SPEED = 10
LIMIT = 6000            # Binance spot: request weight per minute (the loopback's default)
BURST = [               # the calls the live broker and reconcile make, with the loopback's (Binance's) weights
    ("fetch_ticker", ("BTC/USDT",), {}, 2),
    ("fetch_order", (None, "BTC/USDT", {"clientOrderId": "burst0"}), {}, 4),
    ("fetch_open_orders", ("BTC/USDT",), {}, 6),
    ("fetch_my_trades", ("BTC/USDT",), {}, 20),
    ("fetch_balance", (), {}, 20),
    ("cancel_order", (None, "BTC/USDT", {"clientOrderId": "nope"}), {}, 1),
]


class FakeClock:
    """Monotonic seconds that move only when the client sleeps."""

    def __init__(self):
        self.t, self.slept = 1000.0, []

    def now(self):
        return self.t

    def sleep(self, s):
        self.slept.append(s)
        self.t += max(0.0, s)


def _call(ex_or_client, method, args, kw):
    try:
        return ex_or_client.call(method, *args, **kw) if isinstance(ex_or_client, ExchangeClient) \
            else getattr(ex_or_client, method)(*args, **kw)
    except ccxt.OrderNotFound:     # cancel of an unknown id: still a weighed request
        return None


def test_a_burst_stays_within_the_exchange_weight_limit(store):
    srv = make_server(weight_limit=LIMIT, rate_clock=lambda: time.monotonic() * SPEED)
    try:
        ex = ccxt_client(srv)
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, 50000, {"clientOrderId": "burst0"})
        # without a limiter the same burst passes the limit inside one window: the loopback refuses it
        srv.reset_weight()
        for i in range(3000):
            method, args, kw, _ = BURST[i % len(BURST)]
            try:
                _call(ex, method, args, kw)
            except ccxt.DDoSProtection:
                break
        assert srv.weight_refusals >= 1, "the burst never reached the limit: the test would prove nothing"
        srv.reset_weight()                             # (also lifts any ban the control run earned)
        srv.weight_refusals = srv.peak_weight = 0

        ex.enableRateLimit = True
        ex.rateLimit = ex.rateLimit / SPEED            # ccxt's 50 ms per cost unit, in scaled time
        client = ExchangeClient(ex, store, retries=0)
        total, t0 = 0, time.monotonic()
        n = 0
        while (time.monotonic() - t0) * SPEED < 80:    # 80 s of exchange time: at least one full window
            method, args, kw, w = BURST[n % len(BURST)]
            _call(client, method, args, kw)
            total, n = total + w, n + 1
        minutes = (time.monotonic() - t0) * SPEED / 60
        print(f"\nburst: {n} calls, {total} weight in {minutes:.2f} exchange-minutes = {total / minutes:.0f} weight/min; peak window {srv.peak_weight}; refusals {srv.weight_refusals}")
        assert srv.weight_refusals == 0
        client.flush_metrics()
        errors = [r["tags"] for r in store.query("SELECT tags FROM metrics WHERE name='api_error'")]
        assert errors and all("OrderNotFound" in t for t in errors)   # only the unknown-id cancels
        assert srv.peak_weight <= LIMIT
        # a real burst: windows filled to at least half the limit (the budget is 0.9; a busy machine is slower)
        assert total / minutes <= LIMIT
        assert srv.peak_weight >= 0.5 * LIMIT, (srv.peak_weight, total, minutes, n)
    finally:
        srv.close()


@pytest.fixture
def srv():
    s = make_server(balances={"USDT": "10000"})
    yield s
    s.close()


def test_a_429_retry_after_is_honoured_before_the_retry(store, srv):
    clock = FakeClock()
    client = ExchangeClient(ccxt_client(srv), store, sleep=clock.sleep, clock=clock.now, base_backoff_s=0.01)
    srv.faults.add("429", path="/api/v3/ticker/24hr", method="GET", retry_after=7)
    assert client.call("fetch_ticker", "BTC/USDT")["last"] > 0
    assert srv.count("GET", "/api/v3/ticker/24hr") == 2
    assert sum(clock.slept) == pytest.approx(7.0)           # the wait the exchange asked for, not a jitter


def test_retry_after_on_an_order_post_holds_every_later_call(store, srv):
    """An order POST answered 429 is not retried (the broker looks it up instead); the NEXT call, whatever it
    is, still waits out the Retry-After before anything is sent."""
    clock = FakeClock()
    client = ExchangeClient(ccxt_client(srv), store, sleep=clock.sleep, clock=clock.now)
    srv.faults.add("429", path="/api/v3/order", method="POST", retry_after=30)
    with pytest.raises(ccxt.DDoSProtection):
        client.call("create_order", "BTC/USDT", "market", "buy", 0.001, None, {"clientOrderId": "ra1"},
                    idempotent=False)
    assert srv.count("POST", "/api/v3/order") == 1 and clock.slept == []
    assert client.paused_for() == pytest.approx(30.0)
    client.call("fetch_ticker", "BTC/USDT")
    assert clock.slept == [pytest.approx(30.0)] and client.paused_for() == 0


def test_a_ban_longer_than_the_pause_limit_fails_fast_without_sending(store, srv):
    clock = FakeClock()
    client = ExchangeClient(ccxt_client(srv), store, sleep=clock.sleep, clock=clock.now, max_pause_s=300)
    srv.faults.add("418", path="/api/v3/ticker/24hr", method="GET", retry_after=600)
    with pytest.raises(ccxt.DDoSProtection):
        client.call("fetch_ticker", "BTC/USDT")
    assert srv.count("GET", "/api/v3/ticker/24hr") == 1      # not retried into the ban
    before = len(srv.access_log)
    with pytest.raises(ccxt.DDoSProtection, match="not sent"):
        client.call("fetch_balance")
    assert len(srv.access_log) == before                      # nothing left the process
    clock.t += 600
    assert client.call("fetch_balance") is not None


def test_retry_after_header_forms():
    assert retry_after_s({"retry-after": "12"}) == 12.0
    assert retry_after_s({"Retry-After": 3}) == 3.0
    assert retry_after_s({"Content-Type": "x"}) is None
    assert retry_after_s(None) is None
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert 50 <= retry_after_s({"Retry-After": time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                             time.gmtime(time.time() + 60))}) <= 61


def test_clients_stretch_ccxt_rate_limit_once_and_the_agent_turns_it_on(srv):
    from qts.agent.main import make_exchange

    ex = make_exchange(SimpleNamespace(EXCHANGE="binance", EXCHANGE_URL=srv.base_url), "k", "s")
    assert ex.enableRateLimit is True                     # also behind EXCHANGE_URL (may be a proxy)
    base = ex.rateLimit
    ExchangeClient(ex)
    ExchangeClient(ex)                                    # a second client over the same exchange
    assert ex.rateLimit == pytest.approx(base / 0.9)
    with pytest.raises(ValueError, match="rate_share"):
        ExchangeClient(ex, rate_share=0)
