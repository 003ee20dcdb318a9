"""Recursive (warm-up) analysis on real candles: the built-in strategies' decisions do not depend on history
before their declared lookback; a strategy that declares too short a lookback is flagged at the first bar
where a decision differs, as a validation gate and by ``qts backtest --recursive``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from qts.cli import cli
from qts.research.recursive import recursive_check
from qts.research.validation import Gates, validate_strategy
from qts.strategies import BUILTIN, STRATEGIES, RsiReversion, SmaCross, make


class ShortSma(SmaCross):
    """sma_cross declaring only its fast window as lookback: its slow SMA is NaN where the live loop decides."""

    name = "short_sma"

    @property
    def lookback(self) -> int:
        return self.params.fast


class ShortRsi(RsiReversion):
    """rsi_reversion without the run-in Wilder's smoothing needs: period + 1 bars."""

    name = "short_rsi"

    @property
    def lookback(self) -> int:
        return self.params.period + 1


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_strategies_have_enough_warmup(btc_1h, name):
    rep = recursive_check(make(name), btc_1h, points=30)
    assert rep.ok, rep.summary()
    assert len(rep.starts) >= 20 and rep.lookback == make(name).lookback
    assert "independent of history" in rep.summary()


def _first_difference(strategy, candles, start, lb):
    """Independently: the first bar from start+lb-1 on where signals on candles[start:] differ from bar 0's."""
    fe, fx, _ = strategy.signals(candles)
    e, x, _ = strategy.signals(candles.slice(start, len(candles)))
    for i in range(lb - 1, len(e)):
        if bool(e[i]) != bool(fe[start + i]) or bool(x[i]) != bool(fx[start + i]):
            return start + i
    return None


@pytest.mark.parametrize("strategy", [ShortSma(fast=10, slow=50), ShortRsi(period=14)], ids=["sma", "rsi"])
def test_an_under_declared_lookback_is_flagged_at_the_first_differing_bar(btc_1h, strategy):
    candles = btc_1h.slice(0, 3000)
    rep = recursive_check(strategy, candles, points=30)
    assert not rep.ok
    m = rep.first
    lb = strategy.lookback
    assert m["bar"] >= m["start"] + lb - 1  # never inside the declared warm-up
    # the bar named is where a decision on candles[start:] first disagrees with the one from bar 0
    assert _first_difference(strategy, candles, m["start"], lb) == m["bar"]
    assert f"declared lookback {lb} is too short" in rep.summary() and f"differs at bar {m['bar']}" in rep.summary()
    # the same strategy with its true warm-up declared (the built-in's) passes at the same start bars
    fixed = BUILTIN["sma_cross" if isinstance(strategy, SmaCross) else "rsi_reversion"](**strategy.params.model_dump())
    assert recursive_check(fixed, candles, starts=rep.starts).ok


def test_the_warmup_gate_fails_validation_and_can_be_switched_off(btc_1h, monkeypatch):
    monkeypatch.setitem(STRATEGIES, ShortSma.name, ShortSma)
    grid = {"fast": [10, 20], "slow": [50, 100]}
    rep = validate_strategy("short_sma", btc_1h, grid, train=2000, test=500, gates=Gates(min_trades=10))
    (check,) = [c for c in rep.verdict.checks if c.name == "stable_warmup"]
    assert check.passed is False and not rep.verdict.passed
    assert check.message in rep.verdict.reasons and f"differs at bar {rep.recursive.first['bar']}" in check.message
    assert rep.summary()["recursive_ok"] is False
    off = validate_strategy("short_sma", btc_1h, grid, train=2000, test=500,
                            gates=Gates(min_trades=10, require_stable_warmup=False))
    assert "stable_warmup" not in {c.name for c in off.verdict.checks}
    # the same grid with the built-in (honest lookback) passes this check
    ok = validate_strategy("sma_cross", btc_1h, grid, train=2000, test=500, gates=Gates(min_trades=10))
    assert [c.passed for c in ok.verdict.checks if c.name == "stable_warmup"] == [True]


def test_backtest_recursive_flag_reports_the_first_differing_bar(ohlcv_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(STRATEGIES, ShortSma.name, ShortSma)
    args = ["backtest", "short_sma", "--data", str(ohlcv_dir), "--timeframe", "1h", "--param", "fast=10",
            "--param", "slow=50", "--recursive"]
    env = {"QTS_HOME": str(tmp_path / "home")}
    r = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "warm-up: FAIL: short_sma: declared lookback 10 is too short" in r.output
    r = CliRunner().invoke(cli, [*args, "--json"], env=env, catch_exceptions=False)
    d = json.loads(r.output[r.output.index("{"):])["recursive"]
    assert d["ok"] is False and d["lookback"] == 10 and f"differs at bar {d['first']['bar']}" in d["summary"]
    r = CliRunner().invoke(cli, ["backtest", "sma_cross", "--data", str(ohlcv_dir), "--timeframe", "1h",
                                 "--recursive", "--json"], env=env, catch_exceptions=False)
    d = json.loads(r.output[r.output.index("{"):])["recursive"]
    assert d["ok"] is True and d["first"] is None and d["starts"] >= 10


def test_too_few_candles_is_not_a_pass(btc_1h):
    rep = recursive_check(make("sma_cross", {"fast": 20, "slow": 500}), btc_1h.slice(0, 300))
    assert rep.starts == [] and not rep.ok and "too few candles" in rep.summary()
    np.testing.assert_equal(rep.mismatches, [])
