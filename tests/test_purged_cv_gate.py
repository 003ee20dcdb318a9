"""Purged k-fold cross-validation as a validation gate, on real candles: an over-fitted grid (the in-sample
winner of every fold loses out of sample) fails it; a single fixed combination is reported with fold
Sharpe ratios that match an independent computation from its backtest's returns."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from qts.cli import cli
from qts.registry import ValidationSummary
from qts.research.backtest import BacktestConfig, backtest
from qts.research.evaluation import strict_gates, validation_summary
from qts.research.validation import CVFold, CVResult, Gates, judge, validate_strategy
from qts.strategies import make

GOOD = dict(n_trades=100, oos_trades=40, dsr=0.99, pbo=0.1, oos_sharpe=1.5, oos_drawdown=0.1,
            wf_efficiency=0.6, lookahead_ok=True)


def _cv(*sharpes):
    return CVResult([CVFold(((0, 1),), (i, i + 1), {}, 1.0, s) for i, s in enumerate(sharpes)], 0, 0)


def test_judge_thresholds_of_the_purged_cv_gate():
    g = Gates(purged_cv_folds=5)
    v = judge(g, **GOOD, cv=_cv(0.5, 0.2, 0.1, -0.3, -0.1))          # 3 of 5 positive, mean 0.08
    assert v.passed and {"min_cv_positive", "min_cv_sharpe"} <= {c.name for c in v.checks}
    v = judge(g, **GOOD, cv=_cv(2.0, 1.0, -0.1, -0.3, -0.1))         # mean 0.5 but only 2 of 5 positive
    assert not v.passed and [c.name for c in v.checks if not c.passed] == ["min_cv_positive"]
    v = judge(g, **GOOD, cv=_cv(0.1, 0.1, 0.1, -0.3, -0.3))          # 3 of 5 positive, mean -0.06
    assert [c.name for c in v.checks if not c.passed] == ["min_cv_sharpe"]
    v = judge(Gates(purged_cv_folds=5, min_cv_positive=0.8, min_cv_sharpe=-1), **GOOD, cv=_cv(0.5, 0.2, 0.1, -0.3, 1))
    assert v.passed  # 4 of 5 = 0.8
    # asked for but not run: no evidence, fails
    v = judge(g, **GOOD)
    assert [c.name for c in v.checks if not c.passed] == ["min_cv_positive", "min_cv_sharpe"]
    # off by default: no such checks
    assert "min_cv_positive" not in {c.name for c in judge(Gates(), **GOOD).checks}
    with pytest.raises(ValidationError, match="purged_cv_folds"):
        Gates(purged_cv_folds=1)
    with pytest.raises(ValidationError, match="min_cv_positive"):
        Gates(min_cv_positive=1.5)
    assert strict_gates(Gates(purged_cv_folds=5)) and not strict_gates(Gates(require_stable_warmup=False))


def test_an_overfit_grid_fails_purged_cv(ohlcv_dir, tmp_path):
    # 168 RSI combinations on SOL 1h: every fold's in-sample winner does worse on its test fold
    args = ["backtest", "rsi_reversion", "--data", str(ohlcv_dir), "--symbol", "SOL/USDT", "--timeframe", "1h",
            "--grid", "period=2:26:4", "--grid", "lower=10:35:5", "--grid", "upper=50,60,70,80",
            "--validate", "--purged-cv", "5", "--json"]
    r = CliRunner().invoke(cli, args, env={"QTS_HOME": str(tmp_path / "home")}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    v = json.loads(r.output[r.output.index("{"):])["validation"]
    cv = v["purged_cv"]
    assert cv["folds"] == 5 and cv["purge"] == cv["embargo"] == 26 * 10  # the grid's longest lookback
    assert all(is_ > oos for is_, oos in zip(cv["is_sharpes"], cv["oos_sharpes"]))
    checks = {c["name"]: c for c in v["checks"]}
    pos = sum(s > 0 for s in cv["oos_sharpes"]) / 5
    assert checks["min_cv_positive"]["value"] == pytest.approx(pos) and pos < 0.5
    assert checks["min_cv_sharpe"]["value"] == pytest.approx(np.mean(cv["oos_sharpes"]))
    assert np.mean(cv["oos_sharpes"]) < 0
    assert not checks["min_cv_positive"]["passed"] and not checks["min_cv_sharpe"]["passed"]
    assert not v["passed"] and any("purged CV" in x for x in v["reasons"])
    assert v["gates"]["purged_cv_folds"] == 5
    # the text form shows every fold
    r = CliRunner().invoke(cli, args[:-1], env={"QTS_HOME": str(tmp_path / "home")}, catch_exceptions=False)
    assert "purged CV: 5 folds (purge 260, embargo 260 bars): test Sharpe" in r.output
    assert "[FAIL] purged CV (5 folds): share of folds with a positive test Sharpe" in r.output


def test_a_fixed_combination_is_reported_with_independent_fold_sharpes(btc_1h):
    params = {"window": 50, "entry_z": 2.0, "exit_z": 0.0}
    gates = Gates(purged_cv_folds=4, min_trades=0, min_oos_trades=0)
    rep = validate_strategy("zscore_reversion", btc_1h, [params], train=2000, test=1000, gates=gates)
    cv = rep.cv
    assert len(cv.folds) == 4 and cv.purge == cv.embargo == 50
    config = BacktestConfig()
    r = backtest(make("zscore_reversion", params), btc_1h, config).returns  # one continuous simulation
    ann = math.sqrt(config.ppy(btc_1h.timeframe_ms))
    mine = [float(np.mean(r[a:b]) / np.std(r[a:b], ddof=1) * ann) for a, b in (f.test for f in cv.folds)]
    assert [f.oos_sharpe for f in cv.folds] == pytest.approx(mine, rel=1e-6)
    assert [f.test for f in cv.folds][0][0] == 0 and cv.folds[-1].test[1] == len(btc_1h)
    checks = {c.name: c for c in rep.verdict.checks}
    assert checks["min_cv_positive"].value == pytest.approx(np.mean([s > 0 for s in mine]))
    assert checks["min_cv_sharpe"].value == pytest.approx(np.mean(mine))
    # the summary a registry entry keeps accepts it
    s = validation_summary(rep, gates, {"symbol": "BTC/USDT"}, 0)
    vs = ValidationSummary.model_validate(s)
    assert vs.purged_cv["oos_sharpes"] == pytest.approx(mine, rel=1e-6) and vs.recursive_ok is True


def test_purged_cv_option_errors(ohlcv_dir, tmp_path):
    env = {"QTS_HOME": str(tmp_path / "home")}
    base = ["backtest", "sma_cross", "--data", str(ohlcv_dir), "--timeframe", "1h"]
    r = CliRunner().invoke(cli, [*base, "--purged-cv", "5"], env=env)
    assert r.exit_code == 2 and "--purged-cv needs --validate" in r.output
    r = CliRunner().invoke(cli, [*base, "--validate", "--purged-cv", "1"], env=env)
    assert r.exit_code == 2 and "--purged-cv" in r.output
    r = CliRunner().invoke(cli, [*base, "--validate", "--gate", "min_cv_positive=2"], env=env)
    assert r.exit_code == 2 and "--gate min_cv_positive" in r.output
