"""Protective stops on the exchange (issue #12): in the agent's setup (the real live broker, the agent's
Authority over the exchange's own view, the real gate) against the loopback Binance through the real ccxt
client. Entry -> a STOP_LOSS_LIMIT rests on the exchange -> the price falls through it while nothing of ours
runs -> the exchange fills it -> a fresh broker's start-up reconcile adopts the fill and the sync cancels
nothing / places nothing (no position left)."""

from __future__ import annotations

import pytest

from live_support import ex, srv  # noqa: F401  (the shared loopback fixtures)
from live_support import agent_gate, ccxt_client, compare
from qts.broker import protective
from qts.broker.live import PROTECTIVE_STOP
from qts.broker.models import OrderIntent

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def open_stops(srv, symbol="BTCUSDT"):
    return [o for o in srv.orders() if o["type"] == "STOP_LOSS_LIMIT" and o["status"] in ("NEW", "PARTIALLY_FILLED")
            and o["symbol"] == symbol]


def enter(gate, coid, amount=0.002, symbol="BTC/USDT"):
    r = gate.submit(OrderIntent(symbol, "buy", amount, strategy="sma_cross", reason="entry", client_order_id=coid))
    assert r.accepted and r.status == "filled", r
    return r


@pytest.fixture
def agent(store, ex):
    gate, broker, auth = agent_gate(store, ex, SYMBOLS)
    broker.reconcile()
    return gate, broker, auth


def test_entry_gets_a_stop_on_the_exchange_that_fills_while_the_loop_is_down(store, srv, ex, agent):
    gate, broker, _ = agent
    enter(gate, "e1")
    entry = store.one("SELECT * FROM orders WHERE client_order_id='e1'")
    assert entry["stop_loss"] and entry["stop_loss"] < 60000  # the risk layer's stop for the entry
    (act,) = [a for a in protective.sync_all(gate, broker, SYMBOLS) if a.symbol == "BTC/USDT"]
    assert act.action == "placed", act
    (o,) = open_stops(srv)
    row = store.one("SELECT * FROM orders WHERE client_order_id=?", (act.client_order_id,))
    assert o["clientOrderId"] == act.client_order_id and row["reason"] == PROTECTIVE_STOP
    trigger = float(o["stopPrice"])
    assert trigger == pytest.approx(broker.feed.rules("BTC/USDT").price_to_precision(entry["stop_loss"]))
    assert float(o["origQty"]) == pytest.approx(0.002) and float(o["price"]) < trigger
    assert row["stop_loss"] == pytest.approx(trigger) and row["status"] == "open"
    # a second sync changes nothing: one stop, same price, same amount
    assert [a.action for a in protective.sync_all(gate, broker, SYMBOLS) if a.symbol == "BTC/USDT"] == ["kept"]
    assert len(open_stops(srv)) == 1

    # "the loop is down": nothing of ours runs; the market falls through the stop; the exchange sells by itself
    srv.set_price("BTC/USDT", round(trigger - 1, 2))
    assert open_stops(srv) == [] and srv.balance("BTC")[0] + srv.balance("BTC")[1] == 0

    # the agent starts again: a fresh broker on the same database reconciles and adopts the stop's fill
    gate2, broker2, _ = agent_gate(store, ccxt_client(srv, timeout_ms=1500), SYMBOLS)
    rep = broker2.reconcile()
    assert rep["fills_adopted"] == 1
    row = store.one("SELECT * FROM orders WHERE client_order_id=?", (act.client_order_id,))
    assert row["status"] == "filled" and row["filled"] == pytest.approx(0.002)
    assert broker2.position_amount("BTC/USDT") == pytest.approx(0)
    assert [a.action for a in protective.sync_all(gate2, broker2, SYMBOLS) if a.symbol == "BTC/USDT"] == ["none"]
    assert compare(store, srv, SYMBOLS) == []


def test_reconcile_gives_a_bare_position_its_stop_and_cancels_a_stop_without_position(store, srv, ex, agent):
    gate, broker, _ = agent
    enter(gate, "e2")
    # the agent went down between the entry and its stop: the sync after start places it
    gate2, broker2, _ = agent_gate(store, ccxt_client(srv, timeout_ms=1500), SYMBOLS)
    broker2.reconcile()
    acts = {a.symbol: a for a in protective.sync_all(gate2, broker2, SYMBOLS)}
    assert acts["BTC/USDT"].action == "placed" and len(open_stops(srv)) == 1
    assert acts["ETH/USDT"].action == "none"
    # the position is sold (the loop's exit): the sell cancels the stop first (it locks the BTC), then sells
    r = gate2.submit(OrderIntent("BTC/USDT", "sell", 0.002, strategy="sma_cross", reason="exit", client_order_id="x2"))
    assert r.accepted and r.status == "filled", r
    assert open_stops(srv) == []
    assert store.one("SELECT status FROM orders WHERE client_order_id=?", (acts["BTC/USDT"].client_order_id,))[
        "status"] == "cancelled"
    # a stop left without a position: the ETH the stop would sell is gone from the account (taken outside the
    # agent); at the next start the sync cancels the stop instead of keeping an order that protects nothing
    enter(gate2, "e3", amount=0.1, symbol="ETH/USDT")
    (placed,) = [a for a in protective.sync_all(gate2, broker2, SYMBOLS) if a.symbol == "ETH/USDT"]
    assert placed.action == "placed" and len(open_stops(srv, "ETHUSDT")) == 1
    srv.set_balance("ETH", 0, 0)
    gate3, broker3, _ = agent_gate(store, ccxt_client(srv, timeout_ms=1500), SYMBOLS)
    broker3.reconcile()
    acts = {a.symbol: a for a in protective.sync_all(gate3, broker3, SYMBOLS)}
    assert acts["ETH/USDT"].action == "cancelled", acts
    assert open_stops(srv, "ETHUSDT") == []
    assert store.one("SELECT status FROM orders WHERE client_order_id=?", (placed.client_order_id,))["status"] == \
        "cancelled"


def test_a_stop_moves_when_a_new_entry_sets_another_stop(store, srv, ex, agent):
    gate, broker, _ = agent
    enter(gate, "e4")
    (first,) = [a for a in protective.sync_all(gate, broker, SYMBOLS) if a.symbol == "BTC/USDT"]
    store.execute("UPDATE orders SET stop_loss=stop_loss+100 WHERE client_order_id='e4'")  # the entry's stop moved
    (second,) = [a for a in protective.sync_all(gate, broker, SYMBOLS) if a.symbol == "BTC/USDT"]
    assert second.action == "placed" and second.client_order_id != first.client_order_id
    (o,) = open_stops(srv)
    assert o["clientOrderId"] == second.client_order_id
    assert store.one("SELECT status FROM orders WHERE client_order_id=?", (first.client_order_id,))["status"] == \
        "cancelled"


def test_a_stop_passes_the_gate_like_any_order(store, srv, ex, agent):
    gate, broker, _ = agent
    # reduce-only: with nothing held, a protective stop is refused by the gate, never sent
    r = gate.submit(OrderIntent("BTC/USDT", "sell", 0.002, type="stop_loss_limit", price=58000, stop_loss=58100,
                                reduce_only=True, reason=PROTECTIVE_STOP))
    assert (r.accepted, r.reason_code) == (False, "REDUCE_ONLY"), r
    enter(gate, "e5")
    # a "stop" above the market would sell now: the agent's collar refuses it
    r = gate.submit(OrderIntent("BTC/USDT", "sell", 0.002, type="stop_loss_limit", price=60500, stop_loss=60600,
                                reduce_only=True, reason=PROTECTIVE_STOP))
    assert (r.accepted, r.reason_code) == (False, "PRICE_COLLAR") and "would sell now" in r.message
    assert open_stops(srv) == []
    with pytest.raises(ValueError, match="reduce-only sell"):
        OrderIntent("BTC/USDT", "sell", 0.002, type="stop_loss_limit", price=58000, stop_loss=58100)
