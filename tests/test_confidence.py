"""Signals with confidence: a strategy may enter with a size in (0, 1] instead of 1. The backtest kernel,
the trading loop (its allocation) and the risk layer (its per-trade risk budget) all size such an entry
as confidence x what a full (1) signal gets; 0/1 strategies trade exactly as before.

The loop-versus-backtest test replays REAL BTC/USDT 5-minute candles through the real gate and paper
broker with ``edge_meta`` (the edge factory's candidate, whose confidence is a meta-model probability)
and compares every fill with the vectorized backtest's: same bar, same side, same amount (which
carries the confidence), same price and fee.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from qts.broker.models import OrderIntent
from qts.config import load_settings
from qts.engine.session import open_session
from qts.market.feed import ReplayFeed
from qts.research.backtest import BacktestConfig, backtest
from qts.safety.risk import PortfolioSnapshot, RiskManager, RiskProfile
from qts.strategies import make
from qts.strategies.base import hysteresis, split_confidence
from qts.strategies.library import SmaCross

import test_parity
from test_parity import approve_permissive_profile


class HalfSma(SmaCross):
    """SmaCross whose entries come as a confidence: ``conf`` on every entry bar."""

    name = "half_sma"
    conf = 0.5

    def signals(self, c):
        e, x, ind = super().signals(c)
        return np.where(e, self.conf, 0.0), x, ind


@pytest.fixture(scope="module")
def btc(btc_5m):
    return btc_5m.slice(0, 6000)


def test_split_confidence_bool_unchanged_and_floats_clipped():
    e = np.array([True, False, True])
    b, size = split_confidence(e)
    assert size is None and b is e
    b, size = split_confidence(np.array([0.3, 0.0, np.nan, 1.7, -0.2]))
    assert b.tolist() == [True, False, False, True, False]
    assert size.tolist() == [0.3, 0.0, 0.0, 1.0, 0.0]
    assert hysteresis(np.array([0.3, 0.9, 0.0, 0.7]), np.array([False, False, True, False])).tolist() == \
        [0.3, 0.3, 0.0, 0.7]


@pytest.mark.parametrize("size_usd", [1000.0, None])
def test_backtest_sizes_entries_by_confidence(btc, size_usd):
    cfg = BacktestConfig(init_cash=10_000.0, fee_bps=10, slippage_bps=5, size_usd=size_usd)
    params = {"fast": 5, "slow": 30}
    full = backtest(SmaCross(**params), btc, cfg)
    half = backtest(HalfSma(**params), btc, cfg)
    assert len(full.trades) >= 20 and len(half.trades) == len(full.trades)
    o = btc.open
    slip, fee = 5e-4, 1e-3
    cash = 10_000.0
    for f, h in zip(full.trades, half.trades):
        assert (h.entry_bar, h.exit_bar) == (f.entry_bar, f.exit_bar)  # same timing: only the size differs
        px = o[h.entry_bar] * (1 + slip)
        if size_usd:  # a full signal buys size_usd / open; a 0.5 confidence half of it
            assert h.amount == pytest.approx(0.5 * size_usd / o[h.entry_bar], rel=1e-12)
            assert f.amount == pytest.approx(size_usd / o[h.entry_bar], rel=1e-12)
        else:  # all-in: a full signal spends all the cash, 0.5 spends half of it (fee included)
            assert h.amount == pytest.approx(0.5 * cash / (1 + fee) / px, rel=1e-12)
        assert h.entry_fee == pytest.approx(h.amount * px * fee, rel=1e-9)
        if not h.is_open:
            cash += h.pnl
    # a float entry of exactly 1.0 is the boolean strategy, bit for bit
    HalfSma.conf = 1.0
    try:
        one = backtest(HalfSma(**params), btc, cfg)
    finally:
        HalfSma.conf = 0.5
    assert [(t.entry_bar, t.exit_bar, t.amount, t.pnl) for t in one.trades] == \
        [(t.entry_bar, t.exit_bar, t.amount, t.pnl) for t in full.trades]
    assert np.array_equal(one.equity, full.equity)


def test_risk_layer_scales_its_budget_by_confidence():
    # equity 10 000 x 2% = 200 USD at risk; ATR 10 (flat candles +-5), stop 2 x ATR = 20 -> 10 units for a
    # full signal; a 0.4 confidence risks 80 USD -> 4 units
    prof = RiskProfile(max_position_usd=1e9, max_order_notional_usd=1e9, max_symbol_exposure_pct=100,
                       max_total_exposure_pct=100, max_cluster_exposure_pct=100)
    c = {"high": np.full(30, 105.0), "low": np.full(30, 95.0), "close": np.full(30, 100.0)}
    snap = PortfolioSnapshot(equity=10_000.0, cash=10_000.0, peak_equity=10_000.0, day_start_equity=10_000.0,
                             now_ms=1_704_067_200_000, candles={"BTC/USDT": c})
    m = RiskManager(prof)
    full = m.assess(OrderIntent("BTC/USDT", "buy", 50.0), snap)
    part = m.assess(OrderIntent("BTC/USDT", "buy", 50.0, confidence=0.4), snap)
    assert full.allowed and part.allowed
    assert full.amount == pytest.approx(10.0) and part.amount == pytest.approx(4.0)
    assert "confidence 0.4" in part.adjustments[0]
    small = m.assess(OrderIntent("BTC/USDT", "buy", 2.0, confidence=0.4), snap)  # under the cap: unchanged
    assert small.allowed and small.amount == pytest.approx(2.0)
    with pytest.raises(ValueError, match="confidence"):
        OrderIntent("BTC/USDT", "buy", 1.0, confidence=0.0)
    with pytest.raises(ValueError, match="confidence"):
        OrderIntent("BTC/USDT", "buy", 1.0, confidence=1.5)


def test_decide_returns_the_confidence_at_an_entry(btc):
    s = HalfSma(fast=5, slow=30)
    e, _, _ = s.signals(btc)
    i = int(np.flatnonzero(e > 0)[3])
    target, info = s.decide(btc.slice(0, i + 1), 0.0)
    assert target == 0.5 and info["reason"] == "ENTRY" and info["confidence"] == 0.5
    target, info = SmaCross(fast=5, slow=30).decide(btc.slice(0, i + 1), 0.0)
    assert target == 1.0 and "confidence" not in info  # 0/1 strategies: as before


# -- the loop against the backtest, fill by fill, with confidences from a meta-model -------------------
TF = 300_000
WARMUP = 400
CYCLES = 2500
EDGE = {"primary": "ret_drop", "threshold": 2.5, "window": 96, "horizon": 12, "tp_mult": 1.0, "sl_mult": 1.0,
        "min_prob": 0.3, "coef": (-0.15, 0.3, -0.2, -0.1, -0.5), "intercept": 0.0, "mean": (0.0, 0.0, 0.0, 0.0, 1.0),
        "scale": (1.0, 1.0, 1.0, 1.0, 0.5)}


def test_loop_and_backtest_take_the_same_confidence_sized_positions(tmp_path, btc_5m, monkeypatch):
    # 2024-01-29 onwards: (the 2024-01-03 crash, a 42-sigma 5-minute drop, would trip any sane stop-loss,
    # which the loop enforces and the vectorized backtest does not model: see test_parity)
    btc = btc_5m.slice(8000, 8000 + WARMUP + CYCLES + 10)
    settings = load_settings(environ={
        "QTS_HOME": str(tmp_path / "home"), "SYMBOLS": "BTC/USDT", "STRATEGY": "edge_meta", "TRADE_INTERVAL": "5",
        "MAX_POSITION_SIZE": "1000", "RISK_LIMIT_PERCENT": "100", "INITIAL_CASH": "10000", "FEE_BPS": "10",
        "SLIPPAGE_BPS": "5"})
    settings.home.ensure()
    # anomaly entries come in volatile bars: a 100 x ATR stop would be below zero (RISK_NO_STOP); 20 x ATR
    # is still far outside any 1-hour move, so no stop fires and the risk cap stays far above 1000 USD
    monkeypatch.setitem(test_parity.PERMISSIVE, "stop_atr_mult", 20.0)
    approve_permissive_profile(settings.home)
    strat = make("edge_meta", EDGE)
    assert strat.lookback <= WARMUP
    feed = ReplayFeed({"BTC/USDT": btc}, source="replay:confidence", warmup=WARMUP)
    feed.end_ms = feed.start_ms + (CYCLES - 1) * TF
    s = open_session(settings, feed, EDGE)
    try:
        assert s.loop.run(threading.Event()) == CYCLES
        fills = s.store.query("SELECT side, amount, price, fee, ts FROM fills ORDER BY id")
        codes = [c for r in s.store.query("SELECT reason_codes FROM decisions") for c in json.loads(r["reason_codes"])]
    finally:
        s.close()
    assert not [c for c in codes if c.startswith("REFUSED") or c in ("STOP_LOSS", "TAKE_PROFIT")]

    last_signal_bar = WARMUP - 1 + CYCLES - 1
    c = btc.slice(0, last_signal_bar + 2)
    cfg = BacktestConfig(init_cash=10_000.0, fee_bps=10, slippage_bps=5, size_usd=1000.0, amount_step=1e-5)
    res = backtest(strat, c, cfg, start=WARMUP - 1)
    conf, _, _ = strat.signals(c)
    expected = []
    for t in res.trades:
        expected.append({"side": "buy", "ts": t.entry_ts, "amount": t.amount, "price": t.entry_price,
                         "fee": t.entry_fee, "conf": conf[t.entry_bar - 1], "open": c.open[t.entry_bar]})
        if not t.is_open:
            expected.append({"side": "sell", "ts": t.exit_ts, "amount": t.amount, "price": t.exit_price,
                             "fee": t.exit_fee})
    buys = [e for e in expected if e["side"] == "buy"]
    assert len(buys) >= 15
    confs = np.array([b["conf"] for b in buys])
    assert confs.min() < 0.9 * confs.max()  # the sizes really vary: a run ignoring them would differ
    for b in buys:  # each entry is confidence x the full entry (1000 USD at the open), to the amount step
        assert b["amount"] == pytest.approx(np.floor(b["conf"] * 1000.0 / b["open"] / 1e-5 + 5e-10) * 1e-5, abs=1e-12)
    assert len(fills) == len(expected)
    for got, want in zip(fills, expected):
        assert got["ts"] == want["ts"] and got["side"] == want["side"], (got, want)
        assert got["amount"] == pytest.approx(want["amount"], rel=1e-12), (got, want)
        assert got["price"] == pytest.approx(want["price"], rel=1e-12)
        assert got["fee"] == pytest.approx(want["fee"], rel=1e-9)


def test_sweep_sizes_like_the_backtest(btc):
    """The sweep (the validation's engine) passes a confidence strategy's sizes to the same kernel."""
    from qts.research.sweep import sweep

    cfg = BacktestConfig(init_cash=10_000.0, size_usd=1000.0)
    sw = sweep("edge_meta", btc, [EDGE], cfg, executor="inline", progress=False)
    bt = backtest(make("edge_meta", EDGE), btc, cfg)
    full = backtest(make("edge_meta", {**EDGE, "coef": (), "mean": (), "scale": ()}), btc, cfg)
    assert bt.stats["n_trades"] >= 10
    assert sw.column("final_equity")[0] == bt.stats["final_equity"]
    assert sw.column("n_trades")[0] == bt.stats["n_trades"]
    assert full.stats["final_equity"] != bt.stats["final_equity"]
