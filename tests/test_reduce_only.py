"""``OrderIntent.reduce_only`` means what it says (issue 15): the real gate on a real SQLite store refuses a
reduce-only order that would open, grow or flip a position (``REDUCE_ONLY``) before any broker sees it; the
paper broker never fills a sell beyond the position; the live broker sends ccxt's ``reduceOnly`` only to
derivative markets, and a spot reduce-only exit reaches the loopback exchange without it."""

from __future__ import annotations

import pytest

from conftest import TF_5M as TF, make_candles
from live_support import agent_gate, ccxt_client, make_server
from qts.broker.live import order_params
from qts.broker.models import OrderIntent
from qts.broker.paper import PaperBroker
from qts.market.feed import ReplayFeed
from qts.store import Store
from test_gate import BTC, ETH, make_paper_env, seed_position

POST, ORDER = "POST", "/api/v3/order"


def ro_sell(amount, symbol=BTC, **kw):
    return OrderIntent(symbol, "sell", amount, reduce_only=True, **kw)


@pytest.fixture
def paper(tmp_path):
    env = make_paper_env(tmp_path / "home")
    yield env
    env.store.close()


def placed(store):
    return store.query("SELECT client_order_id, side, amount, status FROM orders ORDER BY id")


def test_gate_refuses_reduce_only_orders_that_would_open_grow_or_flip(paper):
    seed_position(paper, BTC, 2.0, "seed1")
    before = placed(paper.store)
    cases = [
        (OrderIntent(BTC, "buy", 0.5, reduce_only=True, client_order_id="qtspRO1"), "would open or increase"),
        (ro_sell(0.5, ETH, client_order_id="qtspRO2"), "exceeds the position 0"),      # nothing held: opens a short
        (ro_sell(2.5, client_order_id="qtspRO3"), "exceeds the position 2.0"),         # flips 2 long to 0.5 short
    ]
    for intent, why in cases:
        v = paper.gate.evaluate(intent)
        assert (v.allowed, v.code, v.check) == (False, "REDUCE_ONLY", "check_reduce_only"), v
        assert why in v.message
        assert paper.gate.submit(intent).reason_code == "REDUCE_ONLY"
    assert placed(paper.store) == before                       # no order row: the broker never saw them
    refusals = paper.store.query("SELECT message FROM events WHERE kind='gate' ORDER BY id")
    assert sum(": REDUCE_ONLY: " in r["message"] for r in refusals) == 3        # submit() logs each refusal


def test_gate_passes_reduce_only_sells_within_the_position_and_plain_orders_unchanged(paper):
    seed_position(paper, BTC, 2.0, "seed1")
    r = paper.gate.submit(ro_sell(1.5, client_order_id="qtspRO4"))
    assert r.accepted and r.status == "filled" and r.filled == pytest.approx(1.5)
    r = paper.gate.submit(ro_sell(0.5, client_order_id="qtspRO5"))                # exactly the rest
    assert r.accepted and r.filled == pytest.approx(0.5)
    assert paper.broker.position_amount(BTC) == pytest.approx(0.0)
    # a buy without the flag is an ordinary entry; the same buy flagged is refused
    assert paper.gate.evaluate(OrderIntent(ETH, "buy", 0.5, strategy="sma_cross")).allowed
    assert paper.gate.evaluate(OrderIntent(ETH, "buy", 0.5, strategy="sma_cross", reduce_only=True)).code == "REDUCE_ONLY"


def test_paper_fill_never_exceeds_the_position_when_it_shrank_after_placing(home):
    """A resting reduce-only limit sell for the whole position; a market sell then takes part of it. When
    the limit trades through, only what is still held is sold (no short appears)."""
    rows = [(1000, 1010, 990, 1000, 10)] * 2 + [(1000, 1100, 990, 1050, 10)] + [(1000, 1010, 990, 1000, 10)] * 3
    feed = ReplayFeed({BTC: make_candles(rows)}, source="test", warmup=2)
    store = Store.open(home)
    try:
        b = PaperBroker(store, feed, fee_bps=10, slippage_bps=5)
        b.ensure_account(10_000.0)
        assert b.place(OrderIntent(BTC, "buy", 0.5), "p1").status == "filled"
        assert b.place(ro_sell(0.5, type="limit", price=1050.0), "p2").status == "open"
        assert b.place(OrderIntent(BTC, "sell", 0.3), "p3").filled == pytest.approx(0.3)
        assert feed.wait_next_cycle(TF) is not None
        assert b.process_market() == 1                         # candle 2 closed: high 1100 > 1050
        assert store.scalar("SELECT filled FROM orders WHERE client_order_id='p2'") == pytest.approx(0.2)
        assert b.position_amount(BTC) == pytest.approx(0.0)
        assert b.positions() == {}
    finally:
        store.close()


def test_order_params_send_reduce_only_to_derivatives_only():
    spot = {"spot": True, "contract": False}
    swap = {"spot": False, "contract": True, "swap": True, "linear": True}
    assert order_params(spot, "c1", True) == {"clientOrderId": "c1"}
    assert order_params(swap, "c2", True) == {"clientOrderId": "c2", "reduceOnly": True}
    assert order_params(swap, "c3", False) == {"clientOrderId": "c3"}
    assert order_params({}, "c4", True) == {"clientOrderId": "c4"}       # unknown market kind: no flag


@pytest.fixture
def srv():
    s = make_server(balances={"USDT": "10000"})
    yield s
    s.close()
    assert s.errors == []


def test_live_reduce_only_through_the_agent_gate_and_the_loopback(store, srv):
    """The agent's gate on the real LiveBroker and ccxt.binance over HTTP: a reduce-only buy and an
    oversized reduce-only sell never reach the exchange; a reduce-only exit within the balance does, as a
    plain spot order (Binance spot has no reduceOnly parameter)."""
    gate, broker, auth = agent_gate(store, ccxt_client(srv), [BTC, ETH])
    auth.view.mid_ttl_s = auth.view.balance_ttl_s = auth.view.fills_ttl_s = 0.0
    broker.reconcile()
    assert gate.submit(OrderIntent(BTC, "buy", 0.005, strategy="manual", client_order_id="qtsaROB1")).status == "filled"

    def order_posts():
        return [p for m, path, p in srv.access_log if m == POST and path == ORDER]

    n = len(order_posts())
    assert gate.submit(OrderIntent(BTC, "buy", 0.001, reduce_only=True, client_order_id="qtsaROB2")).reason_code \
        == "REDUCE_ONLY"
    assert gate.submit(ro_sell(0.006, client_order_id="qtsaROB3")).reason_code == "REDUCE_ONLY"
    assert len(order_posts()) == n                              # nothing left the process
    r = gate.submit(ro_sell(0.005, client_order_id="qtsaROB4"))
    assert r.accepted and r.status == "filled", r
    (post,) = [p for p in order_posts() if p.get("newClientOrderId") == "qtsaROB4"]
    assert "reduceOnly" not in post and post["side"] == "SELL"
    assert float(sum(srv.balance("BTC"))) == 0.0
