"""The live loop sizes entries by the strategy registry's ramp: a strategy not promoted to live (or
live-ramp) gets no live entry at all, whatever its signal; paper is unaffected."""

from live_support import ccxt_client, make_server, live_settings, write_breaker_closed

from qts.engine.session import open_session
from qts.market.ccxt_feed import CcxtFeed
from qts.paths import StateHome

BTC = "BTC/USDT"


def test_an_unpromoted_strategy_gets_no_live_entry(tmp_path):
    home = StateHome(tmp_path / "home").ensure()
    with make_server() as srv:
        ex = ccxt_client(srv)
        settings = live_settings(home, srv, [BTC])
        write_breaker_closed(home)
        s = open_session(settings, CcxtFeed(ex, settings.SYMBOLS, 5), exchange=ex)
        try:
            assert s.broker.mode == "live"
            strat = s.loop.strategies[BTC]
            info = {}
            intent = s.loop.intent_for(BTC, 1.0, 0.0, 60_000.0, 10_000.0, strat, info)
            assert intent is None and info["reason"] == "NOT_PROMOTED_TO_LIVE"
            # exits are never held back by the ramp: closing risk is always allowed
            out = s.loop.intent_for(BTC, 0.0, 0.01, 60_000.0, 10_000.0, strat, {"reason": "EXIT"})
            assert out is not None and out.side == "sell" and out.amount == 0.01
            # the same decision on the paper broker is sized as usual: min(MAX_POSITION_SIZE, equity / symbols)
            s.loop.broker = s.loop.paper_broker
            paper = s.loop.intent_for(BTC, 1.0, 0.0, 60_000.0, 10_000.0, strat, {})
            assert paper is not None and abs(paper.amount - 10_000.0 / 60_000.0) < 1e-12
        finally:
            s.close()
