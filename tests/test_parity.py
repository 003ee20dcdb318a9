"""Parity: the vectorized backtest against the event-driven replay through the REAL gate and paper broker.

The replay: ``open_session`` (store, paper broker, gate with every check, trading loop) on a
``ReplayFeed`` of real BTC/USDT 5-minute candles, one symbol, SmaCross. The backtest: ``backtest``
on the same candles with the loop's sizing and the broker's costs.

What is compared, fill by fill: time (bar), side, amount, price and fee; and the cash at the end.
- time and side: equal. A cycle at time t decides on the candles closed by t (the last one is the
  signal bar) and its market order fills at the open of the candle starting at t: the backtest's
  "signal on bar i's close, fill at bar i+1's open".
- amount: the loop buys ``MAX_POSITION_SIZE / open`` (open = the unslipped quote), truncated to the
  market's amount step (1e-5 BTC), never more than the cash affords; it sells the whole position.
  The backtest runs with ``size_usd = MAX_POSITION_SIZE`` and ``amount_step = 1e-5``: equal to 1e-12.
- price: open x (1 +/- 5 bps slippage); fee: 10 bps of the fill's notional: equal to float rounding.
- the replay starts flat at its first cycle (after ``warmup`` candles): the backtest starts at the
  same signal bar (``start = warmup - 1``), with indicators over the same earlier candles.

The loop's risk layer can refuse entries (cooldown, low-profit lock, Kelly "no edge", ...) and it
enforces ATR stop-losses and take-profits that the vectorized backtest does not model. For the
equality test the risk profile is made permissive the way a human would (saved with a PIN-signed
approval, the real path the gate checks); the test asserts that no refusal, stop or take-profit
happened. The second test runs the DEFAULT profile and shows what then differs, and why.
"""

from __future__ import annotations

import json
import time
import threading

import pytest

from qts.config import load_settings
from qts.engine.session import open_session
from qts.market.feed import ReplayFeed
from qts.research.backtest import BacktestConfig, backtest

TF = 300_000
WARMUP = 200
PARAMS = {"fast": 5, "slow": 30}
PIN = "Tr4de-Safely!"

PERMISSIVE = dict(risk_per_trade_pct=100.0, max_position_usd=1e9, max_order_notional_usd=1e9, sizing="fixed_fraction",
                  stop_atr_mult=100.0, take_profit_atr_mult=1000.0, max_symbol_exposure_pct=100.0,
                  max_total_exposure_pct=100.0, max_cluster_exposure_pct=100.0, daily_loss_limit_pct=100.0,
                  drawdown_reduce_pct=99.0, drawdown_reduce_mult=1.0, drawdown_halt_pct=100.0, cooldown_minutes=0,
                  low_profit_stop_min=0, stoploss_guard_stop_min=0, max_orders_per_minute=100_000)


def approve_permissive_profile(home) -> None:
    """What ``qts risk set`` does after the human typed the PIN: save the looser profile, sign an
    approval of its exact hash."""
    from qts.fsutil import write_atomic
    from qts.safety.grants import ACTION_RAISE_RISK_LIMIT, sign_approval
    from qts.safety.pin import set_pin, unlock
    from qts.safety.risk_profile import default_profile, save_profile

    from qts.store import Store

    long_ago = int(time.time() * 1000) - 2 * 3600 * 1000  # the human's PIN key is past its cool-down
    set_pin(home, PIN, scrypt_n=2 ** 10, now=long_ago)
    key = unlock(home, PIN)
    store = Store.open(home)
    store.event("pin_key_seen", "first seen (test set-up)", "critical", {"fingerprint": key.fingerprint},
                ts=long_ago)
    store.close()
    profile = default_profile().model_copy(update=PERMISSIVE)
    saved = save_profile(home, profile, log=lambda *a, **k: None, signing_key=key)
    approval = sign_approval(home, key, ACTION_RAISE_RISK_LIMIT, {"hash": saved.record_hash}, ttl_s=3600)
    write_atomic(home.safety_dir / "risk_profile.approval.json", json.dumps(approval))


def replay(tmp_path, candles, cycles: int, permissive: bool):
    settings = load_settings(environ={
        "QTS_HOME": str(tmp_path / "home"), "SYMBOLS": "BTC/USDT", "STRATEGY": "sma_cross", "TRADE_INTERVAL": "5",
        "MAX_POSITION_SIZE": "1000", "RISK_LIMIT_PERCENT": "100", "INITIAL_CASH": "10000", "FEE_BPS": "10",
        "SLIPPAGE_BPS": "5"})
    settings.home.ensure()
    if permissive:
        approve_permissive_profile(settings.home)
    feed = ReplayFeed({"BTC/USDT": candles}, source="replay:parity", warmup=WARMUP)
    feed.end_ms = feed.start_ms + (cycles - 1) * TF
    s = open_session(settings, feed, PARAMS)
    try:
        n = s.loop.run(threading.Event())
        assert n == cycles
        fills = s.store.query("SELECT side, amount, price, fee, ts, client_order_id FROM fills ORDER BY id")
        orders = s.store.query("SELECT client_order_id, status, amount, filled FROM orders ORDER BY id")
        decisions = [(d["ts"], json.loads(d["reason_codes"]))
                     for d in s.store.query("SELECT ts, reason_codes FROM decisions ORDER BY id")]
        cash = s.broker.cash()
    finally:
        s.close()
    return fills, orders, decisions, cash


def backtest_fills(candles, cycles: int):
    """The vectorized backtest over the same span, as the list of fills the broker would have made."""
    last_signal_bar = WARMUP - 1 + cycles - 1
    c = candles.slice(0, last_signal_bar + 2)
    cfg = BacktestConfig(init_cash=10_000.0, fee_bps=10, slippage_bps=5, size_usd=1000.0, amount_step=1e-5)
    res = backtest("sma_cross", c, cfg, PARAMS, start=WARMUP - 1)
    out = []
    for t in res.trades:
        out.append({"side": "buy", "ts": t.entry_ts, "amount": t.amount, "price": t.entry_price, "fee": t.entry_fee})
        if not t.is_open:
            out.append({"side": "sell", "ts": t.exit_ts, "amount": t.amount, "price": t.exit_price,
                        "fee": t.exit_fee})
    cash = 10_000.0 + sum((-1 if f["side"] == "buy" else 1) * f["amount"] * f["price"] - f["fee"] for f in out)
    return out, cash


def same_fill(a: dict, b: dict) -> bool:
    return (a["ts"] == b["ts"] and a["side"] == b["side"] and a["amount"] == pytest.approx(b["amount"], rel=1e-12)
            and a["price"] == pytest.approx(b["price"], rel=1e-12) and a["fee"] == pytest.approx(b["fee"], rel=1e-9))


@pytest.fixture(scope="module")
def btc(btc_5m):
    return btc_5m.slice(0, 4000)


CYCLES = 3000  # about 10 days of 5-minute cycles


def test_replay_through_the_gate_equals_the_vectorized_backtest(tmp_path, btc):
    fills, orders, decisions, cash = replay(tmp_path, btc, CYCLES, permissive=True)
    # the configuration is one where the loop adds nothing of its own: no refusal, stop or take-profit,
    # every order filled at once, in one fill
    codes = [c for _, cs in decisions for c in cs]
    assert not [c for c in codes if c.startswith("REFUSED") or c in ("STOP_LOSS", "TAKE_PROFIT")]
    assert all(o["status"] == "filled" for o in orders) and len(fills) == len(orders)
    expected, expected_cash = backtest_fills(btc, CYCLES)
    assert len(fills) >= 60  # enough round trips to mean something
    assert len(fills) == len(expected)
    for got, want in zip(fills, expected):
        assert same_fill(got, want), (got, want)
    assert cash == pytest.approx(expected_cash, abs=1e-6)


def test_what_differs_with_the_default_risk_profile(tmp_path, btc):
    """Default profile: stop-loss 2 x ATR, take-profit 3 x ATR, 15-minute cooldown, low-profit lock. The
    replay then trades differently from the vectorized backtest, and ONLY because of those: until the
    first stop / take-profit / refusal the fills are identical; the first difference is one of them."""
    fills, orders, decisions, _ = replay(tmp_path, btc, CYCLES, permissive=False)
    expected, _ = backtest_fills(btc, CYCLES)
    events = [(ts, c) for ts, cs in decisions for c in cs
              if c in ("STOP_LOSS", "TAKE_PROFIT") or c.startswith("REFUSED")]
    assert events, "expected the default profile to stop out or refuse something in 10 days"
    first_event_ts = events[0][0]
    kinds = {c.split(":")[0] if c.startswith("REFUSED") else c for _, c in events}
    assert kinds & {"STOP_LOSS", "TAKE_PROFIT"}
    i = 0
    while i < min(len(fills), len(expected)) and same_fill(fills[i], expected[i]):
        i += 1
    assert i < max(len(fills), len(expected)), "the runs should differ"
    before = [f for f in expected if f["ts"] < first_event_ts]
    assert i >= len(before)  # everything before the first event matched
    first_diff_ts = min(x["ts"] for x in (fills[i:i + 1] + expected[i:i + 1]))
    assert first_diff_ts >= first_event_ts
    # and the first differing replay fill is the event itself: a protective sell, or a refused entry
    # that the backtest did make
    event_at = {ts for ts, _ in events}
    assert first_diff_ts in event_at
