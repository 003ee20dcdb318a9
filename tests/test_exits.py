"""Exit rules (issue #12): take-profit and stop-loss in basis points and a time stop, per strategy, applied
by one rule in the trading loop and in the backtest. The proof: real BTC/USDT 5m candles, the loop through
the real gate and paper broker vs the vectorized backtest: the same fills, and each rule exit on the same
bar with the same reason."""

from __future__ import annotations

import json
import threading

import pytest

from qts.config import load_settings
from qts.engine.session import open_session
from qts.market.feed import ReplayFeed
from qts.research.backtest import BacktestConfig, backtest
from qts.strategies import StrategyError, make
from test_parity import TF, WARMUP, approve_permissive_profile, same_fill

EXITS = {"take_profit_bps": 40, "stop_loss_bps": 25, "max_bars_held": 24}
PARAMS = {"fast": 5, "slow": 30, **EXITS}
CYCLES = 1500  # ~5 days of 5-minute cycles
RULES = ("STOP_LOSS", "TAKE_PROFIT", "TIME_STOP")


def test_rule_by_hand():
    from qts.strategies.exits import ExitRules

    r = ExitRules(**EXITS)
    assert r.check(100.0, 1, 99.75, TF) == "STOP_LOSS"      # exactly -25 bps
    assert r.check(100.0, 1, 99.76, TF) is None
    assert r.check(100.0, 1, 100.40, TF) == "TAKE_PROFIT"   # exactly +40 bps
    assert r.check(100.0, 23, 100.0, TF) is None
    assert r.check(100.0, 24, 100.0, TF) == "TIME_STOP"
    # minutes convert to candles, rounded up; the tighter time stop wins
    assert ExitRules(max_minutes_held=61).bars_limit(TF) == 13
    assert ExitRules(max_minutes_held=61, max_bars_held=5).bars_limit(TF) == 5
    assert not ExitRules().active


def test_bad_exit_parameter_names_the_field():
    with pytest.raises(StrategyError, match=r"sma_cross\.stop_loss_bps"):
        make("sma_cross", {"stop_loss_bps": -5})
    s = make("sma_cross", {"fast": 5, "slow": 30, "take_profit_bps": 150})
    assert s.params.model_dump() == {"fast": 5, "slow": 30}  # the signal parameters are untouched
    assert s.describe()["exits"] == {"take_profit_bps": 150}


@pytest.fixture(scope="module")
def btc(btc_5m):
    return btc_5m.slice(0, WARMUP + CYCLES + 10)


def test_loop_and_backtest_exit_on_the_same_bar(tmp_path, btc):
    settings = load_settings(environ={
        "QTS_HOME": str(tmp_path / "home"), "SYMBOLS": "BTC/USDT", "STRATEGY": "sma_cross", "TRADE_INTERVAL": "5",
        "MAX_POSITION_SIZE": "1000", "RISK_LIMIT_PERCENT": "100", "INITIAL_CASH": "10000", "FEE_BPS": "10",
        "SLIPPAGE_BPS": "5"})
    settings.home.ensure()
    approve_permissive_profile(settings.home)  # the risk layer's own ATR stops out of the way
    feed = ReplayFeed({"BTC/USDT": btc}, source="replay:exits", warmup=WARMUP)
    feed.end_ms = feed.start_ms + (CYCLES - 1) * TF
    s = open_session(settings, feed, PARAMS)
    try:
        assert s.loop.run(threading.Event()) == CYCLES
        fills = s.store.query("SELECT side, amount, price, fee, ts FROM fills ORDER BY id")
        decisions = [(d["ts"], json.loads(d["reason_codes"]))
                     for d in s.store.query("SELECT ts, reason_codes FROM decisions ORDER BY id")]
    finally:
        s.close()
    loop_exits = {ts: codes[0] for ts, codes in decisions if codes[0] in RULES}
    assert not [c for _, cs in decisions for c in cs if c.startswith("REFUSED")]

    last_signal_bar = WARMUP - 1 + CYCLES - 1
    c = btc.slice(0, last_signal_bar + 2)
    cfg = BacktestConfig(init_cash=10_000.0, fee_bps=10, slippage_bps=5, size_usd=1000.0, amount_step=1e-5)
    res = backtest("sma_cross", c, cfg, PARAMS, start=WARMUP - 1)
    # a rule that fired on bar i's close is decided by the loop's cycle at that candle's close time
    bt_exits = {int(c.ts[i]) + TF: why for i, why in res.extra["exit_reasons"].items()}
    assert set(bt_exits.values()) == set(RULES), bt_exits  # every rule fires at least once in these 5 days
    assert loop_exits == bt_exits
    expected = []
    for t in res.trades:
        expected.append({"side": "buy", "ts": t.entry_ts, "amount": t.amount, "price": t.entry_price,
                         "fee": t.entry_fee})
        if not t.is_open:
            expected.append({"side": "sell", "ts": t.exit_ts, "amount": t.amount, "price": t.exit_price,
                             "fee": t.exit_fee})
    assert len(fills) == len(expected) >= 40
    for got, want in zip(fills, expected):
        assert same_fill(got, want), (got, want)
    # and the rules changed the trading: without them the backtest trades differently
    plain = backtest("sma_cross", c, cfg, {"fast": 5, "slow": 30}, start=WARMUP - 1)
    assert [t.exit_ts for t in plain.trades] != [t.exit_ts for t in res.trades]
