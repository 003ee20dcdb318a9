"""Start-up reconciliation never counts a fill twice; a market order never carries a price to ccxt.

Against the loopback Binance through the REAL ccxt.binance client (servers and clients only through
``live_support``). The race: a resting limit order fills at the exchange AFTER reconcile has resolved
the open orders and BEFORE it reads the balance. That balance already includes the fill; if the fill
were adopted later by a poll, the books' cash would carry it twice.
"""

from __future__ import annotations

import pytest

from live_support import ex, srv  # noqa: F401  (the shared loopback fixtures)
from live_support import ccxt_client, compare, journal, live_broker, make_server
from qts.broker.models import OrderIntent

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
POST, ORDER = "POST", "/api/v3/order"


def fill_rows(store, coid):
    return store.query("SELECT * FROM fills WHERE client_order_id=?", (coid,))


def journal_lines(store, coid):
    return [j for j in journal(store.home) if j.get("client_order_id") == coid]


def resting_buy(store, ex, coid="rest1", price=59000.0, amount=0.01):
    """A first session places a resting limit buy, then "stops"; returns nothing (the order is open)."""
    first = live_broker(store, ex, SYMBOLS)
    first.reconcile()
    r = first.place(OrderIntent("BTC/USDT", "buy", amount, type="limit", price=price), coid)
    assert r.accepted and r.status == "open", r


def hook_calls(broker, before):
    """Wrap ``broker.client.call``: ``before(name, n)`` runs before the n-th (1-based) call of ``name``."""
    real, counts = broker.client.call, {}

    def call(name, *a, **kw):
        counts[name] = counts.get(name, 0) + 1
        before(name, counts[name])
        return real(name, *a, **kw)

    broker.client.call = call
    return counts


def test_fill_between_order_resolution_and_balance_read_is_counted_once(store, srv, ex):
    resting_buy(store, ex)
    broker = live_broker(store, ex, SYMBOLS)              # the restarted session
    fills_at_exchange = []

    def before(name, n):
        if name == "fetch_balance" and n == 1:           # the open order was resolved (still open) just now
            fills_at_exchange.extend(srv.set_price("BTC/USDT", 58900))   # ... and fills at the exchange

    counts = hook_calls(broker, before)
    rep = broker.reconcile()
    assert len(fills_at_exchange) == 1                    # the race did happen, in the window
    broker.process_market()
    assert compare(store, srv, SYMBOLS) == []
    assert len(fill_rows(store, "rest1")) == 1
    assert len(journal_lines(store, "rest1")) == 1
    o = store.one("SELECT * FROM orders WHERE client_order_id='rest1'")
    assert o["status"] == "filled" and o["filled"] == pytest.approx(0.01)
    assert rep["fills_adopted"] == 1
    assert counts["fetch_balance"] >= 2                   # the balance was read again after the adoption
    cash = store.scalar("SELECT free FROM balances WHERE mode='live' AND asset='USDT'")
    free, locked = srv.balance("USDT")
    assert cash == pytest.approx(float(free + locked), abs=1e-9)


def test_fill_after_the_balance_read_is_adopted_by_the_poll_once(store, srv, ex):
    """A fill after reconcile's last look is NOT in the balance it used: the poll adopts it, once."""
    resting_buy(store, ex, coid="rest2")
    broker = live_broker(store, ex, SYMBOLS)
    broker.reconcile()
    srv.set_price("BTC/USDT", 58900)
    assert broker.process_market() == 1
    assert broker.process_market() == 0
    assert compare(store, srv, SYMBOLS) == []
    assert len(fill_rows(store, "rest2")) == 1 and len(journal_lines(store, "rest2")) == 1


def test_reconcile_that_never_gets_a_stable_view_refuses_clearly(store, srv, ex):
    """A fill lands between EVERY balance read and the next look at the orders: reconcile gives up
    (bounded) with an error that says to retry, and the broker stays unreconciled (no orders)."""
    from qts.broker.live import NotReconciled

    srv.set_fill_fraction(0.1)                            # each price move fills 10% of the order
    resting_buy(store, ex, coid="rest3", amount=0.1)
    broker = live_broker(store, ex, SYMBOLS)
    prices = iter([58900 - i for i in range(100)])

    def before(name, n):
        if name == "fetch_balance":
            srv.set_price("BTC/USDT", next(prices))

    hook_calls(broker, before)
    with pytest.raises(RuntimeError, match="stable") as e:
        broker.reconcile()
    assert "retry" in str(e.value) or "again" in str(e.value)
    assert not broker.reconciled
    with pytest.raises(NotReconciled):
        broker.place(OrderIntent("BTC/USDT", "buy", 0.001), "after1")
    srv.set_fill_fraction(1.0)
    # a later reconcile (no more races) gets a stable view and agrees with the exchange
    del broker.client.call                               # the real client again
    broker.reconcile()
    broker.process_market()
    assert compare(store, srv, SYMBOLS) == []


def test_market_sell_with_a_far_price_sends_no_price_and_sells_the_amount(store, srv, ex):
    broker = live_broker(store, ex, SYMBOLS)
    broker.reconcile()
    assert broker.place(OrderIntent("BTC/USDT", "buy", 0.01), "mkb1").status == "filled"
    srv.clear_access_log()
    intent = OrderIntent("BTC/USDT", "sell", 0.004, type="market", price=60000.0 * 200)
    r = broker.place(intent, "mks1")
    assert r.accepted and r.status == "filled", r
    sent = [p for m, path, p in srv.access_log if m == POST and path == ORDER]
    assert len(sent) == 1
    assert "quoteOrderQty" not in sent[0] and "price" not in sent[0], sent[0]
    assert sent[0]["type"] == "MARKET" and float(sent[0]["quantity"]) == pytest.approx(0.004)
    eo = [o for o in srv.orders("BTC/USDT") if o["clientOrderId"] == "mks1"]
    assert len(eo) == 1 and float(eo[0]["executedQty"]) == pytest.approx(0.004)
    row = store.one("SELECT * FROM orders WHERE client_order_id='mks1'")
    assert row["price"] is None and row["filled"] == pytest.approx(0.004)
    assert compare(store, srv, SYMBOLS) == []


def test_market_buy_with_a_price_sends_no_price_either(store, srv, ex):
    broker = live_broker(store, ex, SYMBOLS)
    broker.reconcile()
    srv.clear_access_log()
    r = broker.place(OrderIntent("BTC/USDT", "buy", 0.002, type="market", price=3000.0), "mkb2")
    assert r.status == "filled", r
    sent = [p for m, path, p in srv.access_log if m == POST and path == ORDER]
    assert len(sent) == 1 and "quoteOrderQty" not in sent[0] and "price" not in sent[0], sent[0]
    assert float(sent[0]["quantity"]) == pytest.approx(0.002)
    assert store.one("SELECT price FROM orders WHERE client_order_id='mkb2'")["price"] is None
    assert compare(store, srv, SYMBOLS) == []
