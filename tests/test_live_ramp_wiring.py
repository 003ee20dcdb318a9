"""The live loop sizes entries by the strategy registry's ramp: a strategy not promoted to live (or
live-ramp) gets no live entry at all, whatever its signal; paper is unaffected.

The live loop runs only inside the trading agent, which builds it as ``TradingLoop(settings, store, feed,
broker, gate, strategies)`` over its live broker and gate (agent/service.py ``_run_loop``): the same here,
with the agent's gate in this process (``agent_gate``)."""

from live_support import agent_gate, ccxt_client, live_settings, make_server

from qts.broker.paper import PaperBroker
from qts.engine.loop import TradingLoop
from qts.strategies import make

BTC = "BTC/USDT"


def test_an_unpromoted_strategy_gets_no_live_entry(home, store):
    with make_server() as srv:
        ex = ccxt_client(srv)
        settings = live_settings(home, srv, [BTC])
        gate, broker, _auth = agent_gate(store, ex, [BTC])
        broker.reconcile()
        loop = TradingLoop(settings, store, broker.feed, broker, gate, {BTC: make(settings.STRATEGY)})
        assert loop.broker.mode == "live"
        strat = loop.strategies[BTC]
        info = {}
        intent = loop.intent_for(BTC, 1.0, 0.0, 60_000.0, 10_000.0, strat, info)
        assert intent is None and info["reason"] == "NOT_PROMOTED_TO_LIVE"
        # exits are never held back by the ramp: closing risk is always allowed
        out = loop.intent_for(BTC, 0.0, 0.01, 60_000.0, 10_000.0, strat, {"reason": "EXIT"})
        assert out is not None and out.side == "sell" and out.amount == 0.01
        # the same decision on a paper broker is sized as usual: min(MAX_POSITION_SIZE, equity / symbols)
        loop.broker = PaperBroker(store, broker.feed)
        paper = loop.intent_for(BTC, 1.0, 0.0, 60_000.0, 10_000.0, strat, {})
        assert paper is not None and abs(paper.amount - 10_000.0 / 60_000.0) < 1e-12
        assert srv.count("POST", "/api/v3/order") == 0
