"""Protective stops with the REAL trading agent (a `qts agent start` process, the PIN typed in its terminal)
against the standalone loopback Binance in its own process (issue #12): an entry through the agent gets its
STOP_LOSS_LIMIT on the exchange; the agent stops ("the loop is down"); the price falls through the stop and
the exchange fills it by itself; the agent starts again and its reconcile adopts the fill (books = exchange)."""

from __future__ import annotations

import json

import pytest

import agent_support as A

USER = A.test_user()
pytestmark = pytest.mark.skipif(isinstance(USER, str), reason=USER if isinstance(USER, str) else "")


def resting_stops(world):
    return [o for o in world.exchange_orders("BTC/USDT")
            if o["type"] == "STOP_LOSS_LIMIT" and o["status"] in ("NEW", "PARTIALLY_FILLED")]


def start(world):
    return world.start_agent("--no-loop", "--max-order", "500", "--max-daily", "2000", "--accept-unconfined")


def test_stop_rests_on_the_exchange_and_fills_while_the_agent_is_down():
    with A.World(USER[0], USER[1]) as world:
        world.set_pin_and_keys()
        agent = start(world)
        try:
            p = world.qts("order", "buy", "BTC/USDT", "0.002", "--client-order-id", "entry-1", "--json")
            assert p.returncode == 0, p.stdout + p.stderr
            assert json.loads(p.stdout)["status"] == "filled"
            (stop,) = resting_stops(world)  # placed by the agent right after the entry filled
        finally:
            agent.stop()
        store = world.store()
        try:
            row = store.one("SELECT * FROM orders WHERE client_order_id=?", (stop["clientOrderId"],))
            assert row["reason"] == "protective stop" and row["side"] == "sell" and row["status"] == "open"
            entry = store.one("SELECT stop_loss FROM orders WHERE side='buy' ORDER BY id DESC LIMIT 1")
            assert float(stop["stopPrice"]) == pytest.approx(entry["stop_loss"], abs=0.01)
        finally:
            store.close()

        # nothing of ours runs now; the market falls through the stop and the exchange sells by itself
        world.server.set_price("BTC/USDT", round(float(stop["stopPrice"]) - 5, 2))
        assert resting_stops(world) == []
        assert A.totals(world.server).get("BTC", 0.0) == pytest.approx(0.0)

        agent = start(world)  # start-up: reconcile adopts the stop's fill; no new stop (nothing held)
        try:
            store = world.store()
            try:
                row = store.one("SELECT * FROM orders WHERE client_order_id=?", (stop["clientOrderId"],))
                assert row["status"] == "filled" and row["filled"] == pytest.approx(0.002)
                assert store.scalar("SELECT COUNT(*) FROM fills WHERE client_order_id=?", (stop["clientOrderId"],)) == 1
            finally:
                store.close()
            assert resting_stops(world) == []
            assert A.books_disagree(world) == []
        finally:
            agent.stop()
