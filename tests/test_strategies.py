"""Strategies: validated params, exact crossover bars, no look-ahead on real data, decide() == targets()."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_candles
from qts.strategies import STRATEGIES, StrategyError, make
from qts.strategies import indicators as ind


def closes(values):
    return make_candles([(v, v, v, v, 1.0) for v in values])


@pytest.mark.parametrize("name,params,field", [
    ("sma_cross", {"fast": 50, "slow": 20}, "sma_cross"),
    ("sma_cross", {"fast": 20, "slow": 20}, "sma_cross"),
    ("sma_cross", {"fast": 1}, "fast"),
    ("sma_cross", {"slow": "abc"}, "slow"),
    ("sma_cross", {"speed": 3}, "speed"),
    ("rsi_reversion", {"lower": 70, "upper": 30}, "rsi_reversion"),
    ("rsi_reversion", {"lower": 50, "upper": 50}, "rsi_reversion"),
    ("rsi_reversion", {"period": 1}, "period"),
    ("rsi_reversion", {"upper": 100}, "upper"),
    ("bollinger_reversion", {"k": 0.1}, "k"),
    ("bollinger_reversion", {"window": 2}, "window"),
    ("zscore_reversion", {"entry_z": 1.0, "exit_z": 1.5}, "zscore_reversion"),
])
def test_invalid_params_raise_strategy_error_naming_the_field(name, params, field):
    with pytest.raises(StrategyError) as ei:
        make(name, params)
    msg = str(ei.value)
    assert msg.startswith(name)
    assert field in msg


def test_order_errors_say_what_is_wrong():
    with pytest.raises(StrategyError, match="fast must be shorter than slow"):
        make("sma_cross", {"fast": 50, "slow": 20})
    with pytest.raises(StrategyError, match="lower must be below upper"):
        make("rsi_reversion", {"lower": 70, "upper": 30})


def test_unknown_strategy():
    with pytest.raises(StrategyError, match="sma_cross"):
        make("moon_shot")


# Hand-computed (fast=2, slow=3):
# i      0   1   2     3      4    5     6      7    8      9      10
# close 10  10  10     9      8   10    13     13   11      8       7
# sma2   -  10  10   9.5    8.5    9  11.5     13   12    9.5     7.5
# sma3   -   -  10  9.667     9    9 10.333    12 12.333 10.667  8.667
# f vs s         =    <      <     =    >      >    <      <       <
# fast crosses above slow at bar 6 (from "=" at 5), back below at bar 8.
CROSS = [10, 10, 10, 9, 8, 10, 13, 13, 11, 8, 7]


def test_sma_cross_lands_on_the_crossing_bars():
    s = make("sma_cross", {"fast": 2, "slow": 3})
    c = closes(CROSS)
    entry, exit_, info = s.signals(c)
    assert np.flatnonzero(entry).tolist() == [6]
    assert 8 in np.flatnonzero(exit_).tolist()
    assert s.targets(c).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    np.testing.assert_allclose(info["sma_fast"][1:], [10, 10, 9.5, 8.5, 9, 11.5, 13, 12, 9.5, 7.5])
    np.testing.assert_allclose(info["sma_slow"][2:], [10, 29 / 3, 9, 9, 31 / 3, 12, 37 / 3, 32 / 3, 26 / 3])


def test_sma_cross_needs_an_observed_cross():
    # fast is above slow from the first bar both exist: no crossing seen, so no entry
    s = make("sma_cross", {"fast": 2, "slow": 3})
    assert s.targets(closes([1, 2, 3, 4, 5, 6, 7])).tolist() == [0] * 7


def test_sma_cross_decide_on_the_loop_window():
    s = make("sma_cross", {"fast": 2, "slow": 3})
    c = closes(CROSS)
    # the loop hands over the last `lookback` closed candles
    assert s.lookback == 4
    expected = {6: (1.0, "ENTRY"), 8: (0.0, "EXIT")}
    held = 0.0
    for t in range(s.lookback - 1, len(CROSS)):
        window = c.slice(t + 1 - s.lookback, t + 1)
        target, info = s.decide(window, held)
        want = expected.get(t, (held, "HOLD"))
        assert (target, info["reason"]) == want, t
        assert info["close"] == CROSS[t]
        held = target
    target, info = s.decide(c.slice(0, 3), 0.0)
    assert info["reason"] == "WARMUP" and target == 0.0


def test_indicators_by_hand():
    x = np.array([1.0, 2, 3, 4, 5])
    np.testing.assert_allclose(ind.sma(x, 2), [np.nan, 1.5, 2.5, 3.5, 4.5])
    sd = np.sqrt(2 / 3)  # population std of three consecutive integers
    np.testing.assert_allclose(ind.rolling_std(x, 3), [np.nan, np.nan, sd, sd, sd])
    # RSI(2) of 1,2,1,2,3: changes +1,-1,+1,+1; seed g=0.5,l=0.5 -> 50; then g=0.75,l=0.25 -> 75;
    # then g=0.875,l=0.125 -> 87.5
    np.testing.assert_allclose(ind.rsi(np.array([1.0, 2, 1, 2, 3]), 2), [np.nan, np.nan, 50, 75, 87.5])


CUTS = 240


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_look_ahead_on_real_btc(btc_1h, name):
    """Targets from data cut at bar t equal the full-data targets up to t, at a few hundred cut points."""
    s = make(name)
    full = s.targets(btc_1h)
    assert 0 < full.sum() < len(full), "the strategy never trades on 8 months of BTC: a useless check"
    rng = np.random.default_rng(1)
    cuts = set(rng.integers(s.lookback, len(btc_1h), CUTS).tolist())
    # include every bar where the position changes (where look-ahead would show first)
    changes = np.flatnonzero(np.diff(full)) + 1
    cuts |= set(changes[:: max(1, len(changes) // 60)].tolist())
    for t in sorted(cuts):
        cut = s.targets(btc_1h.slice(0, t + 1))
        assert np.array_equal(cut, full[: t + 1]), f"{name}: bar {t} changes when later data is added"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_decide_agrees_with_targets(btc_1h, name):
    s = make(name)
    c = btc_1h.slice(0, 1500)
    full = s.targets(c)
    for t in range(s.lookback, len(c)):
        target, info = s.decide(c.slice(0, t + 1), full[t - 1])
        assert target == full[t], f"{name}: bar {t}: decide {target} ({info['reason']}) vs targets {full[t]}"
        if full[t] != full[t - 1]:
            assert info["reason"] == ("ENTRY" if full[t] else "EXIT")


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_decide_on_the_lookback_window_agrees_with_targets(btc_1h, name):
    """What the loop does: only `lookback` closed candles are passed. Windowed indicators are exact;
    Wilder's RSI depends on all history, so its 10 x period run-in must be long enough to settle."""
    s = make(name)
    c = btc_1h.slice(0, 1500)
    full = s.targets(c)
    for t in range(s.lookback, len(c)):
        target, _ = s.decide(c.slice(t + 1 - s.lookback, t + 1), full[t - 1])
        assert target == full[t], f"{name}: bar {t}"


def test_describe_has_the_params():
    d = make("sma_cross", {"fast": 5, "slow": 9}).describe()
    assert d == {"strategy": "sma_cross", "params": {"fast": 5, "slow": 9}}
