"""Risk manager and risk profile: every layer at and just past its boundary.

Expected numbers are worked out by hand from the rules in the module docstrings (shown in the
comments), not taken from running the code. Pure, offline, no clocks: every time is an explicit
epoch-ms value.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from qts.broker.models import OrderIntent
from qts.safety import risk as risk_mod
from qts.safety.risk import (
    LIMIT_DIRECTIONS,
    PortfolioSnapshot,
    ProfileChangeRefused,
    RiskManager,
    RiskProfile,
    RiskProfileError,
    RiskReason,
    is_loosening,
    load_profile,
    profile_path,
    returns_correlation,
    save_profile,
    validate_profile,
)

T = 1_704_067_200_000  # "now"
MIN = 60_000
BTC, ETH, SOL, XRP, DOGE = "BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT"

# Every layer switched off or wide open, so a test can switch on just the one it examines.
WIDE = dict(risk_per_trade_pct=100, max_position_usd=1e9, max_order_notional_usd=1e9, sizing="fixed_fraction",
            max_symbol_exposure_pct=100, max_total_exposure_pct=100, max_cluster_exposure_pct=100,
            max_positions=10_000, cooldown_minutes=0, stoploss_guard_trade_limit=10_000, low_profit_trades=10_000,
            max_orders_per_minute=100_000, daily_loss_limit_pct=100, drawdown_reduce_pct=99, drawdown_halt_pct=100)


def wide(**kw) -> RiskManager:
    return RiskManager(RiskProfile(**{**WIDE, **kw}))


def flat_candles(n=30, price=100.0, half_range=5.0):
    """Constant close, high/low +-half_range: every true range is 2 x half_range, so ATR = 2 x half_range."""
    return {"high": np.full(n, price + half_range), "low": np.full(n, price - half_range), "close": np.full(n, price)}


def snap(**kw) -> PortfolioSnapshot:
    base = dict(equity=10_000.0, cash=10_000.0, peak_equity=10_000.0, day_start_equity=10_000.0, now_ms=T,
                candles={BTC: flat_candles()})
    base.update(kw)
    return PortfolioSnapshot(**base)


def buy(amount, symbol=BTC, **kw) -> OrderIntent:
    return OrderIntent(symbol, "buy", amount, **kw)


def sell(amount, symbol=BTC) -> OrderIntent:
    return OrderIntent(symbol, "sell", amount)


def pos(amount, price=100.0):
    return {"amount": amount, "price": price, "avg_entry": price}


def trade(symbol, exit_ts, ret=-0.01, reason="signal", pnl=None):
    return {"symbol": symbol, "exit_ts": exit_ts, "pnl": ret * 1000 if pnl is None else pnl, "return": ret,
            "exit_reason": reason}


def allowed(d, amount):
    assert d.allowed, (d.code, d.message)
    assert d.code == RiskReason.OK
    assert d.amount == pytest.approx(amount, rel=1e-9)


def refused(d, code):
    assert not d.allowed, (d.code, d.message, d.amount)
    assert d.code == code, d.message
    assert d.amount == 0.0 and d.stop_loss is None and d.take_profit is None


# ------------------------------------------------------------------------------------------ profile
def test_defaults_match_the_table_and_settings():
    p = RiskProfile()
    assert (p.risk_per_trade_pct, p.max_position_usd, p.sizing, p.kelly_fraction, p.kelly_cap) == (2.0, 1000.0, "kelly", 0.25, 0.5)
    assert (p.atr_period, p.stop_atr_mult, p.take_profit_atr_mult) == (14, 2.0, 3.0)
    assert (p.max_symbol_exposure_pct, p.max_total_exposure_pct, p.max_positions) == (15.0, 80.0, 10)
    assert (p.correlation_threshold, p.max_cluster_exposure_pct) == (0.8, 25.0)
    assert (p.daily_loss_limit_pct, p.drawdown_reduce_pct, p.drawdown_halt_pct) == (5.0, 15.0, 20.0)
    assert p.cooldown_minutes == 15 and p.stoploss_guard_trade_limit == 3
    from qts.config import Settings  # the profile's defaults are the settings' defaults

    assert p.risk_per_trade_pct == Settings.model_fields["RISK_LIMIT_PERCENT"].default
    assert p.max_position_usd == Settings.model_fields["MAX_POSITION_SIZE"].default
    # every field is classified, so is_loosening cannot silently ignore a new limit
    assert set(LIMIT_DIRECTIONS) == set(RiskProfile.model_fields)
    from qts.safety import risk_profile

    for name in RiskProfile.model_fields:  # ... and documented in the table
        assert f"\n{name} " in risk_profile.__doc__, name


@pytest.mark.parametrize("data, field", [
    ({"risk_per_trade_pct": 0}, "risk_per_trade_pct"),
    ({"risk_per_trade_pct": float("nan")}, "risk_per_trade_pct"),
    ({"max_total_exposure_pct": 150}, "max_total_exposure_pct"),  # > 100 would be leverage
    ({"max_positions": 0}, "max_positions"),
    ({"sizing": "martingale"}, "sizing"),
    ({"max_leverage": 3}, "max_leverage"),
    ({"drawdown_reduce_pct": 20, "drawdown_halt_pct": 20}, "drawdown_reduce_pct"),
    ({"kelly_fraction": 0.6}, "kelly_fraction"),  # above kelly_cap 0.5
])
def test_validation_names_the_field(data, field):
    with pytest.raises(RiskProfileError) as ei:
        validate_profile(data)
    assert ei.value.field == field
    assert str(ei.value).startswith(field + ":")


def test_is_loosening_per_direction():
    base = RiskProfile()
    assert is_loosening(base, base) == []
    assert is_loosening(base, RiskProfile(risk_per_trade_pct=3)) == ["risk_per_trade_pct"]
    assert is_loosening(base, RiskProfile(risk_per_trade_pct=1)) == []
    assert is_loosening(base, RiskProfile(cooldown_minutes=5)) == ["cooldown_minutes"]
    assert is_loosening(base, RiskProfile(cooldown_minutes=30)) == []
    assert is_loosening(base, RiskProfile(correlation_threshold=0.9)) == ["correlation_threshold"]
    assert is_loosening(base, RiskProfile(stop_atr_mult=1.5)) == ["stop_atr_mult"]
    assert is_loosening(base, RiskProfile(sizing="fixed_fraction")) == ["sizing"]
    assert is_loosening(RiskProfile(sizing="fixed_fraction"), base) == []
    assert is_loosening(base, RiskProfile(atr_period=20)) == ["atr_period"]  # unrankable: any change
    mixed = RiskProfile(max_positions=5, daily_loss_limit_pct=8, low_profit_required_return=-0.05)
    assert is_loosening(base, mixed) == ["daily_loss_limit_pct", "low_profit_required_return"]


class Log:
    def __init__(self):
        self.entries = []

    def __call__(self, kind, message, data):
        self.entries.append((kind, message, data))

    def kinds(self):
        return [e[0] for e in self.entries]


def test_missing_file_is_the_default_profile(home):
    log = Log()
    lp = load_profile(home, log)
    assert lp.profile == RiskProfile() and lp.is_default and lp.version == 0 and lp.problem == "missing"
    assert log.kinds() == ["risk_profile_default"]


def test_tighten_without_pin_version_log_and_chain(home):
    log = Log()
    v1 = save_profile(home, RiskProfile(risk_per_trade_pct=1.0), approved_by_pin=False, log=log, now_ms=T)
    assert v1.version == 1
    rec = json.loads(profile_path(home).read_text())
    assert set(rec) == {"version", "profile", "changed_ts", "previous_hash", "hash"}
    assert rec["version"] == 1 and rec["changed_ts"] == T and rec["previous_hash"] is None
    assert rec["profile"]["risk_per_trade_pct"] == 1.0
    kind, msg, data = log.entries[-1]
    assert kind == "risk_profile_changed" and "risk_per_trade_pct" in msg
    assert data["diff"] == {"risk_per_trade_pct": [2.0, 1.0]} and data["loosened"] == []

    v2 = save_profile(home, RiskProfile(risk_per_trade_pct=1.0, max_positions=5), False, log, now_ms=T + 1)
    assert v2.version == 2 and json.loads(profile_path(home).read_text())["previous_hash"] == v1.record_hash
    back = load_profile(home)
    assert back.source == "file" and back.version == 2 and back.profile.max_positions == 5
    # saving what is already in force writes and logs nothing
    n = len(log.entries)
    assert save_profile(home, back.profile, False, log).version == 2 and len(log.entries) == n


def test_loosening_needs_the_pin(home):
    log = Log()
    save_profile(home, RiskProfile(risk_per_trade_pct=1.0), False, log, now_ms=T)
    before = profile_path(home).read_bytes()
    looser = RiskProfile(risk_per_trade_pct=3.0, cooldown_minutes=0)
    for not_pin in (False, True, "yes", 1):  # no value a caller can pass approves: only the PIN's key
        with pytest.raises(ProfileChangeRefused) as ei:
            save_profile(home, looser, not_pin, log)
        assert ei.value.fields == ["risk_per_trade_pct", "cooldown_minutes"]
    assert profile_path(home).read_bytes() == before  # nothing written
    kind, _, data = log.entries[-1]
    assert kind == "risk_profile_refused"
    assert data["diff"] == {"risk_per_trade_pct": [1.0, 3.0], "cooldown_minutes": [15, 0]}

    from qts.safety.pin import SigningKey

    with pytest.raises(ProfileChangeRefused):  # a key, but not the one this home's PIN unlocks
        save_profile(home, looser, log=log, now_ms=T + 4, signing_key=SigningKey.generate())
    assert profile_path(home).read_bytes() == before
    v = save_profile(home, looser, log=log, now_ms=T + 5, signing_key=pin_key(home))
    assert v.version == 2 and load_profile(home).profile == looser
    assert log.entries[-1][0] == "risk_profile_changed" and log.entries[-1][2]["approved_by_pin"] is True
    # the signed approval of exactly this record is where the gate checks it
    from qts.safety.grants import ACTION_RAISE_RISK_LIMIT, verify_approval

    appr = json.loads((home.safety_dir / "risk_profile.approval.json").read_text())
    assert verify_approval(home, appr, ACTION_RAISE_RISK_LIMIT, now=T + 5)["hash"] == v.record_hash


def pin_key(home):
    from qts.safety.pin import set_pin, unlock

    set_pin(home, "correct-horse-7", scrypt_n=2 ** 10, now=T - 7_200_000)
    return unlock(home, "correct-horse-7", now=T)


def _loose_record(home):
    """A loose profile on disk that the per-user anchor never saw (written with the library's own record
    format, as a hand-made or pre-anchor file); returns what the file claims."""
    from qts.fsutil import dumps
    from qts.safety.risk_profile import record_hash

    claimed = RiskProfile(risk_per_trade_pct=10, max_position_usd=50_000, max_total_exposure_pct=100,
                          daily_loss_limit_pct=30, drawdown_reduce_pct=40, drawdown_halt_pct=50, cooldown_minutes=0)
    prof = claimed.model_dump()
    rec = {"version": 1, "profile": prof, "changed_ts": T, "previous_hash": None,
           "hash": record_hash(1, prof, T, None)}
    home.safety_dir.mkdir(parents=True, exist_ok=True)
    profile_path(home).write_text(dumps(rec))
    return claimed


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "hand_edit", "invalid_value", "bad_version"])
def test_damaged_file_reads_as_defaults_never_looser(home, damage):
    claimed = _loose_record(home)
    path = profile_path(home)
    raw = path.read_bytes()
    rec = json.loads(raw)
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff{not json")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "hand_edit":  # the hash no longer matches
        rec["profile"]["risk_per_trade_pct"] = 50
        path.write_text(json.dumps(rec))
    elif damage == "invalid_value":  # hash recomputed, but the value is out of range
        rec["profile"]["max_total_exposure_pct"] = 500
        from qts.safety.risk_profile import record_hash

        rec["hash"] = record_hash(rec["version"], rec["profile"], rec["changed_ts"], rec["previous_hash"])
        path.write_text(json.dumps(rec))
    elif damage == "bad_version":
        rec["version"] = "7"
        path.write_text(json.dumps(rec))
    log = Log()
    lp = load_profile(home, log)
    assert lp.is_default and lp.profile == RiskProfile() and lp.problem and lp.problem != "missing"
    assert log.kinds() == ["risk_profile_default"]
    assert is_loosening(claimed, lp.profile) == []  # the defaults are at least as strict as the claim
    assert is_loosening(lp.profile, claimed) != []  # ... and strictly stricter here
    # re-saving the claimed loose profile over the damaged file needs the PIN again
    with pytest.raises(ProfileChangeRefused):
        save_profile(home, claimed, False, log)
    # saving the defaults repairs the file (a write even though nothing differs from the defaults)
    assert save_profile(home, RiskProfile(), False, log, now_ms=T + 9).version == 1
    assert load_profile(home).source == "file"


def test_settings_can_only_tighten(home):
    s = SimpleNamespace(RISK_LIMIT_PERCENT=1.0, MAX_POSITION_SIZE=5_000.0)
    p = load_profile(home, settings=s).profile
    assert p.risk_per_trade_pct == 1.0 and p.max_position_usd == 1000.0


# ------------------------------------------------------------------------------------ sizing, stops
def test_fixed_fraction_sizing_stop_and_take_profit_defaults():
    # equity 10 000 x 2 % = 200 USD at risk; ATR 10, stop distance 2 x 10 = 20 -> 10 units (1000 USD, which
    # is exactly max_position_usd and max_order_notional_usd: no further shrink)
    m = RiskManager()
    d = m.assess(buy(10), snap())
    allowed(d, 10)
    assert d.adjustments == []
    assert d.stop_loss == pytest.approx(80.0) and d.take_profit == pytest.approx(130.0)
    d = m.assess(buy(10.5), snap())  # just past: shrunk back to 10 by sizing
    allowed(d, 10)
    assert len(d.adjustments) == 1 and d.adjustments[0].startswith(RiskReason.SIZING)
    allowed(m.assess(buy(3), snap()), 3)  # smaller than allowed: never enlarged


def test_atr_from_uneven_candles_and_limit_price():
    # true ranges alternate 8 and 12 -> ATR(14) = (7 x 8 + 7 x 12) / 14 = 10
    n = 30
    c = {"high": np.where(np.arange(n) % 2 == 0, 104.0, 106.0), "low": np.where(np.arange(n) % 2 == 0, 96.0, 94.0),
         "close": np.full(n, 100.0)}
    d = wide(stop_atr_mult=1.5, take_profit_atr_mult=4).assess(buy(1, price=110.0, type="limit"), snap(candles={BTC: c}))
    allowed(d, 1)
    assert d.stop_loss == pytest.approx(110 - 1.5 * 10) and d.take_profit == pytest.approx(110 + 4 * 10)
    # a gap on the last bar: prev close 100, bar 119..121 -> TR = 21; ATR = (13 x 10 + 21) / 14
    c = flat_candles()
    c["high"][-1], c["low"][-1], c["close"][-1] = 121.0, 119.0, 120.0
    d = wide().assess(buy(1), snap(candles={BTC: c}))
    assert d.stop_loss == pytest.approx(120 - 2 * (13 * 10 + 21) / 14)


def test_no_stop_without_enough_candles_or_a_positive_stop():
    refused(wide().assess(buy(1), snap(candles={})), RiskReason.NO_PRICE)  # no candle, no price either
    refused(wide().assess(buy(1), snap(candles={}, prices={BTC: 100.0})), RiskReason.NO_STOP)
    refused(wide().assess(buy(1), snap(candles={BTC: flat_candles(n=13)})), RiskReason.NO_STOP)
    allowed(wide().assess(buy(1), snap(candles={BTC: flat_candles(n=14)})), 1)  # exactly atr_period bars
    # ATR 50 at price 100: stop = 100 - 2 x 50 = 0, not above zero
    refused(wide().assess(buy(1), snap(candles={BTC: flat_candles(half_range=25)})), RiskReason.NO_STOP)
    allowed(wide().assess(buy(1), snap(candles={BTC: flat_candles(half_range=24.9)})), 1)  # stop 0.4


def test_kelly_hand_example_and_fallbacks():
    m = RiskManager()  # kelly, fraction 0.25, min 30 trades, capped at 2 %
    # W = 0.36, R = 2: f* = 0.36 - 0.64 / 2 = 0.04; x 0.25 = 0.01 -> 100 USD at risk / 20 = 5 units
    stats = {"trend": {"win_rate": 0.36, "payoff_ratio": 2.0, "n_trades": 30}}
    d = m.assess(buy(8, strategy="trend"), snap(strategy_stats=stats))
    allowed(d, 5)
    assert d.details["risk_fraction"] == pytest.approx(0.01)
    # 29 measured trades: fixed fraction 2 % -> 10 units
    stats29 = {"trend": {"win_rate": 0.36, "payoff_ratio": 2.0, "n_trades": 29}}
    allowed(m.assess(buy(12, strategy="trend"), snap(strategy_stats=stats29)), 10)
    # W = 0.5, R = 2: f* = 0.25, x 0.25 = 0.0625, capped at risk_per_trade_pct 2 % -> 10 units
    strong = {"trend": {"win_rate": 0.5, "payoff_ratio": 2.0, "n_trades": 100}}
    allowed(m.assess(buy(12, strategy="trend"), snap(strategy_stats=strong)), 10)
    # no edge: W = 0.25, R = 3 -> f* = 0.25 - 0.75 / 3 = 0; W = 0.3, R = 1 -> -0.4
    for w, r in ((0.25, 3.0), (0.3, 1.0)):
        st = {"trend": {"win_rate": w, "payoff_ratio": r, "n_trades": 100}}
        refused(m.assess(buy(1, strategy="trend"), snap(strategy_stats=st)), RiskReason.NO_EDGE)
    # unknown strategy / implausible stats: the fixed fraction, never more
    allowed(m.assess(buy(12, strategy="other"), snap(strategy_stats=stats)), 10)
    bad = {"trend": {"win_rate": 1.5, "payoff_ratio": 2.0, "n_trades": 100}}
    allowed(m.assess(buy(12, strategy="trend"), snap(strategy_stats=bad)), 10)


def test_too_small():
    m = RiskManager()  # min_order_usd 1: 0.01 units x 100 = 1 USD is allowed, 0.009 is not
    allowed(m.assess(buy(0.01), snap()), 0.01)
    refused(m.assess(buy(0.009), snap()), RiskReason.TOO_SMALL)
    # a cap leaving 50 USD room (of 1500 at 15 %) shrinks to 0.5 units; with min_order_usd 60 that is too small
    s = snap(positions={BTC: pos(14.5)})
    allowed(wide(max_symbol_exposure_pct=15, min_order_usd=50).assess(buy(1), s), 0.5)
    refused(wide(max_symbol_exposure_pct=15, min_order_usd=60).assess(buy(1), s), RiskReason.TOO_SMALL)


# ---------------------------------------------------------------------------------------- system
def test_daily_loss_at_and_past_the_limit():
    m = wide(daily_loss_limit_pct=5)
    # loss 10 000 - 9 500 = 500 = 5 % of the day start: reached -> refused
    refused(m.assess(buy(1), snap(equity=9_500.0)), RiskReason.DAILY_LOSS)
    refused(m.assess(buy(1), snap(equity=9_000.0)), RiskReason.DAILY_LOSS)
    allowed(m.assess(buy(1), snap(equity=9_501.0)), 1)


def test_drawdown_reduce_and_halt():
    m = wide(drawdown_reduce_pct=15, drawdown_reduce_mult=0.5, drawdown_halt_pct=20)

    def s(eq):
        return snap(equity=eq, day_start_equity=eq)  # peak stays 10 000

    allowed(m.assess(buy(10), s(8_501.0)), 10)           # drawdown 14.99 %: full size
    d = m.assess(buy(10), s(8_500.0))                    # exactly 15 %: x 0.5
    allowed(d, 5)
    assert d.adjustments[-1].startswith(RiskReason.DRAWDOWN_REDUCE)
    allowed(m.assess(buy(10), s(8_001.0)), 5)            # 19.99 %: still reduced
    refused(m.assess(buy(10), s(8_000.0)), RiskReason.DRAWDOWN_HALT)  # exactly 20 %
    # peak below equity: the peak is the equity, no drawdown
    allowed(m.assess(buy(10), snap(peak_equity=5_000.0)), 10)


def test_order_rate_throttle():
    m = wide(max_orders_per_minute=10)
    ten = [T - i * 1_000 for i in range(10)]
    refused(m.assess(buy(1), snap(order_timestamps=ten)), RiskReason.ORDER_RATE)
    nine_plus_old = [T - i * 1_000 for i in range(9)] + [T - 60_000]  # exactly 60 s old has left the window
    allowed(m.assess(buy(1), snap(order_timestamps=nine_plus_old)), 1)


# ----------------------------------------------------------------------------------- protections
def test_stoploss_guard_window_and_duration():
    m = wide(stoploss_guard_trade_limit=3, stoploss_guard_lookback_min=1440, stoploss_guard_stop_min=360)
    s3 = T - 60 * MIN

    def stops(first):
        return [trade(BTC, first, reason="stop_loss"), trade(BTC, s3 - 60 * MIN, reason="stop_loss"),
                trade(BTC, s3, reason="stop_loss")]

    refused(m.assess(buy(1), snap(closed_trades=stops(s3 - 1440 * MIN))), RiskReason.STOPLOSS_GUARD)  # window edge
    allowed(m.assess(buy(1), snap(closed_trades=stops(s3 - 1440 * MIN - 1))), 1)  # 1 ms outside the window
    two = stops(s3 - 120 * MIN)[1:]
    allowed(m.assess(buy(1), snap(closed_trades=two)), 1)
    # the pair is paused until s3 + 360 min
    locked = stops(s3 - 120 * MIN)
    refused(m.assess(buy(1), snap(closed_trades=locked, now_ms=s3 + 360 * MIN - 1)), RiskReason.STOPLOSS_GUARD)
    allowed(m.assess(buy(1), snap(closed_trades=locked, now_ms=s3 + 360 * MIN)), 1)
    # a winning trailing stop, a signal exit and another pair's stops do not count
    mixed = two + [trade(BTC, s3 - 5 * MIN, ret=0.02, reason="trailing_stop_loss")]
    allowed(m.assess(buy(1), snap(closed_trades=mixed)), 1)
    mixed = two + [trade(BTC, s3 - 5 * MIN, reason="signal")]
    allowed(m.assess(buy(1), snap(closed_trades=mixed)), 1)
    other = [dict(t, symbol=ETH) for t in locked]
    allowed(m.assess(buy(1), snap(closed_trades=other)), 1)


def test_cooldown_after_a_close():
    m = wide(cooldown_minutes=15)
    allowed(m.assess(buy(1), snap(closed_trades=[trade(BTC, T - 15 * MIN)])), 1)
    refused(m.assess(buy(1), snap(closed_trades=[trade(BTC, T - 15 * MIN + 1)])), RiskReason.COOLDOWN)
    allowed(m.assess(buy(1), snap(closed_trades=[trade(ETH, T - 1)])), 1)  # another pair


def test_low_profit_lock():
    m = wide(low_profit_trades=4, low_profit_required_return=0.0, low_profit_stop_min=720)
    last = T - 60 * MIN

    def four(rets):
        return [trade(BTC, last - (3 - i) * 60 * MIN, ret=r) for i, r in enumerate(rets)]

    losing = four([0.01, -0.02, 0.005, 0.004])  # sum -0.001 < 0
    refused(m.assess(buy(1), snap(closed_trades=losing)), RiskReason.LOW_PROFIT_LOCK)
    allowed(m.assess(buy(1), snap(closed_trades=four([0.01, -0.01, 0.02, -0.02]))), 1)  # sum exactly 0
    allowed(m.assess(buy(1), snap(closed_trades=four([-0.05, -0.05, -0.05])[:3])), 1)  # only 3 trades
    # only the LAST 4 count: an old loser followed by four winners is fine
    allowed(m.assess(buy(1), snap(closed_trades=[trade(BTC, last - 10 * 60 * MIN, ret=-0.5)] + four([0.01] * 4))), 1)
    # lock lasts 720 min from the last of the four
    refused(m.assess(buy(1), snap(closed_trades=losing, now_ms=last + 720 * MIN - 1)), RiskReason.LOW_PROFIT_LOCK)
    allowed(m.assess(buy(1), snap(closed_trades=losing, now_ms=last + 720 * MIN)), 1)


# ------------------------------------------------------------------------------ positions and caps
def test_max_positions():
    m = wide(max_positions=3)
    three = {"A/USDT": pos(1), "B/USDT": pos(1), "C/USDT": pos(1)}
    refused(m.assess(buy(1), snap(positions=three)), RiskReason.MAX_POSITIONS)
    allowed(m.assess(buy(1, "A/USDT"), snap(positions=three, candles={"A/USDT": flat_candles()})), 1)  # adding
    two = {"A/USDT": pos(1), "B/USDT": pos(1)}
    allowed(m.assess(buy(1), snap(positions=two)), 1)
    dust = {**two, "C/USDT": pos(0.005)}  # 0.5 USD < min_order_usd 1: dust, not a position
    allowed(m.assess(buy(1), snap(positions=dust)), 1)
    pending = snap(positions=two, open_order_notional={"C/USDT": 100.0})  # an open buy counts
    refused(m.assess(buy(1), pending), RiskReason.MAX_POSITIONS)


def test_order_notional_and_position_usd_caps():
    m = wide(max_order_notional_usd=1000)
    allowed(m.assess(buy(10), snap()), 10)
    d = m.assess(buy(12), snap())
    allowed(d, 10)
    assert [a.split(":")[0] for a in d.adjustments] == [RiskReason.ORDER_NOTIONAL]
    m = wide(max_position_usd=1000)  # held 6 x 100 = 600 -> room 400 = 4 units
    allowed(m.assess(buy(4), snap(positions={BTC: pos(6)})), 4)
    d = m.assess(buy(5), snap(positions={BTC: pos(6)}))
    allowed(d, 4)
    assert d.adjustments[-1].startswith(RiskReason.POSITION_USD)
    refused(m.assess(buy(1), snap(positions={BTC: pos(10)})), RiskReason.POSITION_USD)
    refused(m.assess(buy(1), snap(positions={BTC: pos(6)}, open_order_notional={BTC: 400.0})), RiskReason.POSITION_USD)


def test_symbol_exposure_cap():
    m = wide(max_symbol_exposure_pct=15)  # 15 % of 10 000 = 1 500; held 10 x 100 = 1 000 -> room 500
    allowed(m.assess(buy(5), snap(positions={BTC: pos(10)})), 5)
    d = m.assess(buy(5.5), snap(positions={BTC: pos(10)}))
    allowed(d, 5)
    assert d.adjustments[-1].startswith(RiskReason.SYMBOL_EXPOSURE)
    refused(m.assess(buy(1), snap(positions={BTC: pos(15)})), RiskReason.SYMBOL_EXPOSURE)
    refused(m.assess(buy(1), snap(positions={BTC: pos(10)}, open_order_notional={BTC: 500.0})),
            RiskReason.SYMBOL_EXPOSURE)
    # the mark price, not the entry price, measures exposure: 10 units marked at 120 = 1 200 -> room 300
    allowed(m.assess(buy(5, price=100.0, type="limit"), snap(positions={BTC: pos(10, price=120.0)})), 3)


def test_total_exposure_cap():
    m = wide(max_total_exposure_pct=80)  # 8 000 of 10 000; others hold 3 000 + 4 500 -> room 500
    held = {ETH: pos(30), SOL: pos(45)}
    allowed(m.assess(buy(5), snap(positions=held)), 5)
    d = m.assess(buy(6), snap(positions=held))
    allowed(d, 5)
    assert d.adjustments[-1].startswith(RiskReason.TOTAL_EXPOSURE)
    refused(m.assess(buy(1), snap(positions={ETH: pos(30), SOL: pos(50)})), RiskReason.TOTAL_EXPOSURE)


# --------------------------------------------------------------------------------------- clusters
def _series(a, b, n_returns=100, prefix=None):
    """Closes whose returns are a*x + b*z with x = +-1 % alternating and z = ++-- (1 %): x and z have the
    same variance, zero mean and zero covariance over a multiple of 4 bars, so corr(x, a*x + b*z) =
    a / sqrt(a^2 + b^2)."""
    i = np.arange(n_returns)
    x = 0.01 * np.where(i % 2 == 0, 1.0, -1.0)
    z = 0.01 * np.where(i % 4 < 2, 1.0, -1.0)
    r = a * x + b * z
    if prefix is not None:
        r = np.r_[prefix, r]
    return 100.0 * np.cumprod(np.r_[1.0, 1.0 + r])


def test_returns_correlation_by_construction():
    base = _series(1, 0)
    assert returns_correlation(base, _series(0.8, 0.6), 100) == pytest.approx(0.8, abs=1e-12)
    assert returns_correlation(base, _series(0, 1), 100) == pytest.approx(0.0, abs=1e-12)
    # only the last `lookback` returns count: 40 anti-correlated bars before them change nothing
    anti = -0.01 * np.where(np.arange(40) % 2 == 0, 1.0, -1.0)
    assert returns_correlation(_series(1, 0, prefix=-anti), _series(0.8, 0.6, prefix=anti), 100) == pytest.approx(0.8)
    assert returns_correlation(base[-20:], base[-20:], 100) is None  # 19 returns: too few
    assert returns_correlation(np.full(50, 100.0), base, 100) is None  # flat series


def test_correlated_cluster_cap():
    m = wide(correlation_threshold=0.8, max_cluster_exposure_pct=25)  # 2 500 USD per cluster
    b = math.sqrt(1 - 0.79 ** 2)
    closes = {BTC: _series(1, 0), ETH: _series(0.8, 0.6), SOL: _series(0.79, b), XRP: _series(0, 1)}
    # ETH correlates at exactly 0.8 -> same cluster: 2 000 held -> room 500 -> 5 units
    held = {ETH: pos(20), SOL: pos(20), XRP: pos(20)}
    d = m.assess(buy(5), snap(positions=held, closes=closes))
    allowed(d, 5)
    assert sorted(d.details["cluster"]) == [BTC, ETH]
    d = m.assess(buy(6), snap(positions=held, closes=closes))
    allowed(d, 5)
    assert d.adjustments[-1].startswith(RiskReason.CLUSTER_EXPOSURE)
    refused(m.assess(buy(1), snap(positions={ETH: pos(25)}, closes=closes)), RiskReason.CLUSTER_EXPOSURE)
    # SOL at 0.79 and XRP at 0 are outside: 2 500 each held, BTC still gets its full 10
    allowed(m.assess(buy(10), snap(positions={SOL: pos(25), XRP: pos(25)}, closes=closes)), 10)
    # a holding whose correlation cannot be measured counts as correlated
    d = m.assess(buy(1), snap(positions={DOGE: pos(25)}, closes=closes))
    refused(d, RiskReason.CLUSTER_EXPOSURE)
    assert d.details["cluster_unmeasured"] == [DOGE]


# ------------------------------------------------------------------------------------------ exits
def test_reduce_only_sells_always_pass():
    m = RiskManager()
    hostile = snap(
        equity=7_000.0, day_start_equity=10_000.0,                # daily loss 30 %, drawdown 30 %
        positions={BTC: pos(3), ETH: pos(40), SOL: pos(40), XRP: pos(40)},  # over every cap
        order_timestamps=[T - i for i in range(100)],             # throttle saturated
        closed_trades=[trade(BTC, T - i * MIN, reason="stop_loss") for i in range(1, 6)],  # guard + cooldown
        candles={},                                               # no ATR
    )
    refused(m.assess(buy(0.1), hostile), RiskReason.DAILY_LOSS)   # entries are blocked ...
    d = m.assess(sell(3), hostile)                                # ... an exit of the whole position is not
    allowed(d, 3)
    assert d.adjustments == [] and d.stop_loss is None
    allowed(m.assess(sell(1), hostile), 1)
    refused(m.assess(sell(3.001), hostile), RiskReason.SHORT_NOT_ALLOWED)
    refused(m.assess(sell(1, ETH), snap()), RiskReason.SHORT_NOT_ALLOWED)  # nothing held
    bad = snap(equity=float("nan"), positions={BTC: pos(2)})
    allowed(m.assess(sell(2), bad), 2)                            # even with a broken snapshot
    refused(m.assess(buy(1), bad), RiskReason.BAD_SNAPSHOT)


def test_fails_closed(monkeypatch):
    refused(RiskManager().assess(buy(1), snap(positions={ETH: pos(-1)})), RiskReason.BAD_SNAPSHOT)

    def boom(*a, **k):
        raise RuntimeError("indicator broke")

    monkeypatch.setattr(risk_mod, "_atr", boom)
    d = RiskManager().assess(buy(1), snap())
    refused(d, RiskReason.ERROR)
    assert "indicator broke" in d.message


def test_reason_codes_are_stable():
    codes = RiskReason.all()
    assert len(codes) == len(set(codes))
    for c in ("RISK_DAILY_LOSS", "RISK_DRAWDOWN_HALT", "RISK_MAX_POSITIONS", "RISK_SYMBOL_EXPOSURE",
              "RISK_TOTAL_EXPOSURE", "RISK_CLUSTER_EXPOSURE", "RISK_STOPLOSS_GUARD", "RISK_COOLDOWN",
              "RISK_LOW_PROFIT_LOCK", "RISK_ORDER_RATE", "RISK_ORDER_NOTIONAL", "RISK_NO_STOP",
              "RISK_SHORT_NOT_ALLOWED", "RISK_TOO_SMALL"):
        assert c in codes


# ------------------------------------------------------------------------------------ the per-user anchor
def test_a_deleted_profile_reads_as_the_anchors_last_profile_not_the_defaults(home):
    save_profile(home, RiskProfile(max_positions=5), log=Log(), now_ms=T)
    profile_path(home).unlink()
    log = Log()
    lp = load_profile(home, log)
    assert lp.profile.max_positions == 5 and lp.source == "anchor" and str(profile_path(home)) in lp.problem
    assert log.kinds() == ["risk_profile_anchor"]
    with pytest.raises(ProfileChangeRefused):  # and saving the defaults over it is a loosening
        save_profile(home, RiskProfile(), log=Log())


def test_a_file_rewritten_looser_with_a_valid_hash_is_tightened_back_field_by_field(home):
    from qts.fsutil import dumps
    from qts.safety.risk_profile import record_hash

    save_profile(home, RiskProfile(max_positions=5, cooldown_minutes=60), log=Log(), now_ms=T)
    rec = json.loads(profile_path(home).read_text())
    rec["profile"].update(max_positions=50, cooldown_minutes=0, daily_loss_limit_pct=2.0)  # 2 looser, 1 tighter
    rec["hash"] = record_hash(rec["version"], rec["profile"], rec["changed_ts"], rec["previous_hash"])
    profile_path(home).write_text(dumps(rec))
    lp = load_profile(home)
    assert lp.source == "file+anchor" and "max_positions" in lp.problem and "cooldown_minutes" in lp.problem
    assert (lp.profile.max_positions, lp.profile.cooldown_minutes, lp.profile.daily_loss_limit_pct) == (5, 60, 2.0)
