"""Validation: DSR (the paper's worked example and its properties), PBO by CSCV (by hand, pure noise,
real edge), walk-forward and purged splits, the look-ahead check, gates and the verdict."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from pydantic import ValidationError

from qts.market.candles import Candles
from qts.research import overfit, splits
from qts.research.backtest import BacktestConfig
from qts.research.lookahead import lookahead_check
from qts.research.validation import Gates, judge, validate_strategy, walk_forward
from qts.strategies import STRATEGIES, make
from qts.strategies.library import SmaCross

GRID = {"fast": [5, 10, 15, 20, 30], "slow": [40, 60, 80, 100, 120]}


def candles_from_close(close: np.ndarray, tf: int = 3_600_000) -> Candles:
    n = len(close)
    op = np.r_[close[0], close[:-1]]
    ts = (1_704_067_200_000 + np.arange(n) * tf).astype(np.int64)
    return Candles(ts, op, np.maximum(op, close) * 1.001, np.minimum(op, close) * 0.999, close, np.full(n, 10.0), tf)


def trending(n=6000, period=160, drift=0.003, noise=0.004, seed=1) -> Candles:
    """Alternating up and down trends of ``period / 2`` bars: an SMA crossover has a real edge here."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    mu = drift * np.sign(np.sin(2 * np.pi * t / period) + 1e-9)
    return candles_from_close(100 * np.exp(np.cumsum(mu + noise * rng.standard_normal(n))))


def random_walk(n=6000, seed=5) -> Candles:
    return candles_from_close(100 * np.exp(np.cumsum(0.004 * np.random.default_rng(seed).standard_normal(n))))


# -- Deflated Sharpe Ratio --------------------------------------------------------------------------------

def test_dsr_reproduces_the_papers_numerical_example():
    """Bailey & Lopez de Prado (2014): N = 100 trials, V[SR] = 1/2 (annualized), 5 years of daily returns
    (T = 1250), best SR 2.5 (annualized), skewness -3, kurtosis 10 -> SR0 ~ 0.1132 per day, DSR ~ 0.9004."""
    d = overfit.deflated_sharpe(sr=2.5 / math.sqrt(250), n_obs=1250, n_trials=100, var_sr=0.5 / 250,
                                skew=-3.0, kurt=10.0)
    assert d.sr0 == pytest.approx(0.1132, abs=1e-4)
    assert d.dsr == pytest.approx(0.9004, abs=1e-4)


def test_expected_max_sharpe_by_hand():
    # N = 2: sqrt(V) * ((1 - g) * Z(1/2) + g * Z(1 - 1/(2e))) = Z(0.8160603) * g with Z(1/2) = 0
    from scipy.stats import norm

    assert overfit.expected_max_sharpe(2, 1.0) == pytest.approx(0.5772156649 * norm.ppf(1 - 1 / (2 * math.e)))
    assert overfit.expected_max_sharpe(1, 1.0) == 0.0
    assert overfit.expected_max_sharpe(100, 0.0) == 0.0


def test_dsr_falls_with_more_trials_and_more_dispersed_trials():
    base = dict(sr=0.1, n_obs=1000, skew=0.0, kurt=3.0)
    by_n = [overfit.deflated_sharpe(n_trials=n, var_sr=0.001, **base).dsr for n in (1, 10, 100, 1000, 10000)]
    assert all(a > b for a, b in zip(by_n, by_n[1:]))
    by_v = [overfit.deflated_sharpe(n_trials=100, var_sr=v, **base).dsr for v in (1e-4, 1e-3, 1e-2)]
    assert all(a > b for a, b in zip(by_v, by_v[1:]))
    # one trial: the DSR is the probabilistic Sharpe ratio against zero
    assert overfit.deflated_sharpe(n_trials=1, var_sr=0.01, **base).dsr == pytest.approx(
        overfit.probabilistic_sharpe(0.1, 0.0, 1000))


def test_dsr_penalizes_negative_skew_and_fat_tails():
    kw = dict(sr=0.08, n_obs=1000, n_trials=10, var_sr=0.0005)
    assert (overfit.deflated_sharpe(skew=-2, kurt=3, **kw).dsr < overfit.deflated_sharpe(skew=0, kurt=3, **kw).dsr
            < overfit.deflated_sharpe(skew=1, kurt=3, **kw).dsr)
    assert overfit.deflated_sharpe(skew=0, kurt=20, **kw).dsr < overfit.deflated_sharpe(skew=0, kurt=3, **kw).dsr


def test_moments_of_a_known_sample():
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.02])
    sr, skew, kurt = overfit.moments(r)
    assert sr == pytest.approx(r.mean() / r.std(ddof=1))
    from scipy.stats import kurtosis, skew as sk

    assert skew == pytest.approx(sk(r)) and kurt == pytest.approx(kurtosis(r, fisher=False))


# -- PBO ----------------------------------------------------------------------------------------------------

def test_pbo_by_hand_two_trials_two_blocks():
    # A wins the first block and loses the second; B the opposite. Whichever half is in-sample, the
    # in-sample winner is the out-of-sample loser: rank 1 of 2 -> w = 1/3 -> logit ln(1/2) < 0. PBO = 1.
    a = [0.02, 0.01, -0.01, -0.02]
    b = [-0.01, -0.02, 0.02, 0.01]
    p = overfit.pbo_cscv(overfit.block_stats_from_returns(np.array([a, b]).T, 2))
    assert p.n_splits == 2 and p.pbo == 1.0
    np.testing.assert_allclose(p.logits, [math.log(0.5)] * 2)
    # A better than B in both blocks: the in-sample winner is the out-of-sample winner -> w = 2/3. PBO = 0.
    a = [0.02, 0.01, 0.03, 0.01]
    b = [-0.01, 0.0, -0.02, 0.01]
    p = overfit.pbo_cscv(overfit.block_stats_from_returns(np.array([a, b]).T, 2))
    assert p.pbo == 0.0
    np.testing.assert_allclose(p.logits, [math.log(2)] * 2)


def test_pbo_split_count_and_in_sample_winner_by_brute_force():
    rng = np.random.default_rng(3)
    r = rng.normal(0, 0.01, (240, 6))
    p = overfit.pbo_cscv(overfit.block_stats_from_returns(r, 6))
    assert p.n_splits == 20  # C(6, 3)
    blocks = np.split(r, 6)
    for k, ins in enumerate(combinations(range(6), 3)):
        x = np.vstack([blocks[i] for i in ins])
        y = np.vstack([blocks[i] for i in range(6) if i not in ins])
        srs_is = x.mean(0) / x.std(0, ddof=1)
        srs_oos = y.mean(0) / y.std(0, ddof=1)
        best = np.argmax(srs_is)
        rank = 1 + np.sum(srs_oos < srs_oos[best])
        assert p.is_sharpe[k] == pytest.approx(srs_is[best])
        assert p.logits[k] == pytest.approx(math.log((rank / 7) / (1 - rank / 7)))


def test_pbo_of_pure_noise_is_about_one_half():
    vals = [overfit.pbo_cscv(overfit.block_stats_from_returns(
        np.random.default_rng(seed).normal(0, 0.01, (1000, 20)), 8)).pbo for seed in range(60)]
    assert 0.4 < np.mean(vals) < 0.6


def test_pbo_of_a_real_edge_among_noise_is_low():
    for seed in range(5):
        r = np.random.default_rng(seed).normal(0, 0.01, (2000, 40))
        r[:, 0] += 0.001  # one strategy with a real edge (SR 0.1 per bar), 39 without
        p = overfit.pbo_cscv(overfit.block_stats_from_returns(r, 10))
        assert p.pbo < 0.2
        assert p.prob_oos_loss < 0.2


def test_pbo_input_checks():
    with pytest.raises(ValueError, match="even"):
        overfit.pbo_cscv(np.zeros((3, 5, 3)))
    with pytest.raises(ValueError, match="2 trials"):
        overfit.pbo_cscv(np.zeros((1, 4, 3)))


# -- splits ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize("purge", [0, 7])
def test_walk_forward_splits_do_not_overlap_and_honour_the_purge(anchored, purge):
    folds = splits.walk_forward(1000, train=300, test=100, anchored=anchored, purge=purge, start=20)
    assert len(folds) == (1000 - 20 - 300 - purge) // 100
    for i, f in enumerate(folds):
        ((a, b),) = f.train
        c, d = f.test
        assert d - c == 100
        assert b + purge == c                      # exactly `purge` bars between train and test
        assert set(range(a, b)).isdisjoint(range(c, d))
        assert a == (20 if anchored else 20 + 100 * i)
        assert b - a == (300 + 100 * i if anchored else 300)
    tests = [f.test for f in folds]
    assert all(t1[1] == t2[0] for t1, t2 in zip(tests, tests[1:]))  # test ranges tile, no overlap
    with pytest.raises(ValueError):
        splits.walk_forward(100, train=90, test=20)


def test_purged_kfold_honours_purge_and_embargo():
    folds = splits.purged_kfold(1000, k=5, purge=10, embargo=15)
    assert [f.test for f in folds] == [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1000)]
    for f in folds:
        c, d = f.test
        tr = set(f.train_indices().tolist())
        assert tr.isdisjoint(range(max(0, c - 10), min(1000, d + 15)))     # test, purge and embargo excluded
        assert tr == set(range(0, max(0, c - 10))) | set(range(min(1000, d + 15), 1000))
    assert folds[0].train == ((215, 1000),) and folds[-1].train == ((0, 790),)


# -- look-ahead ------------------------------------------------------------------------------------------------

class PeeksAtNextClose(SmaCross):
    """Leaky on purpose: its SMAs run on the NEXT bar's close (bar i reads bar i + 1)."""

    name = "leaky_sma"

    def signals(self, c):
        nxt = np.r_[c.close[1:], c.close[-1]]
        return super().signals(Candles(c.ts, c.open, c.high, c.low, nxt, c.volume, c.timeframe_ms))


class PeeksOnlyInSignals(SmaCross):
    """Leaky without indicators to show: enters when the next close is higher."""

    name = "leaky_entry"

    def signals(self, c):
        up = np.r_[c.close[1:] > c.close[:-1], False]
        return up, ~up, {}


@pytest.mark.parametrize("cls", [PeeksAtNextClose, PeeksOnlyInSignals])
def test_lookahead_check_catches_a_leaky_strategy(btc_1h, cls):
    rep = lookahead_check(cls(fast=5, slow=20), btc_1h.slice(0, 3000), points=40)
    assert not rep.ok
    assert len(rep.mismatches) >= 10
    assert "look-ahead" in rep.summary()
    m = rep.mismatches[0]
    assert m["bar"] == m["cut"] - 1  # the last bar of the cut data is where the future was read


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_lookahead_check_passes_the_builtin_strategies(btc_1h, name):
    rep = lookahead_check(make(name), btc_1h.slice(0, 3000), points=40)
    assert rep.ok, rep.summary()
    assert len(rep.cuts) >= 30


# -- gates and the verdict -------------------------------------------------------------------------------------

GOOD = dict(n_trades=100, oos_trades=40, dsr=0.99, pbo=0.1, oos_sharpe=1.5, oos_drawdown=0.1,
            wf_efficiency=0.6, lookahead_ok=True)


def test_verdict_passes_when_every_gate_passes_and_lists_each_failure():
    v = judge(Gates(), **GOOD)
    assert v.passed and bool(v) and v.reasons == []
    v = judge(Gates(), **{**GOOD, "n_trades": 12, "pbo": 0.45, "lookahead_ok": False})
    assert not v.passed
    assert v.reasons == ["trades of the selection 12 < 30", "probability of backtest overfitting 0.45 > 0.3",
                         "look-ahead: signals change when future bars are removed"]


def test_verdict_nan_fails_and_gates_are_configurable():
    v = judge(Gates(), **{**GOOD, "dsr": math.nan})
    assert not v.passed and v.reasons == ["deflated Sharpe ratio nan < 0.95"]
    loose = Gates(min_trades=5, max_pbo=0.5, min_wf_efficiency=0.5, require_no_lookahead=False)
    assert judge(loose, **{**GOOD, "n_trades": 12, "pbo": 0.45, "lookahead_ok": False}).passed
    assert judge(loose, **{**GOOD, "wf_efficiency": 0.2}).reasons == ["walk-forward efficiency 0.2 < 0.5"]
    assert not judge(Gates(), **{**GOOD, "oos_trades": 3}).passed
    with pytest.raises(ValidationError, match="even"):
        Gates(pbo_blocks=5)
    with pytest.raises(ValidationError):
        Gates(max_pbo=1.5)
    with pytest.raises(ValidationError):
        Gates(unknown=1)


# -- end to end ---------------------------------------------------------------------------------------------

def test_walk_forward_folds_select_in_sample_and_stitch_out_of_sample():
    c = trending()
    wf = walk_forward("sma_cross", c, GRID, train=1500, test=500, purge=10, config=BacktestConfig())
    assert len(wf.folds) == (6000 - 1500 - 10) // 500
    assert len(wf.oos_returns) == sum(f.test[1] - f.test[0] for f in wf.folds)
    for f in wf.folds:
        assert f.train[1] + 10 == f.test[0]
        assert f.best_params in [dict(fast=a, slow=b) for a in GRID["fast"] for b in GRID["slow"]]
        assert f.n_trials == 25
    assert wf.oos_equity[-1] == pytest.approx(10_000 * np.prod(1 + wf.oos_returns))
    anchored = walk_forward("sma_cross", c, GRID, train=1500, test=500, anchored=True)
    assert all(f.train[0] == 0 for f in anchored.folds)


def test_validate_passes_a_real_edge_and_rejects_a_random_walk():
    good = validate_strategy("sma_cross", trending(), GRID, train=1500, test=500)
    assert good.verdict.passed, good.verdict.summary()
    assert good.n_trials == 25 and good.dsr.dsr > 0.95 and good.pbo.pbo < 0.3 and good.lookahead.ok
    bad = validate_strategy("sma_cross", random_walk(), GRID, train=1500, test=500)
    assert not bad.verdict.passed
    assert any("deflated Sharpe" in r for r in bad.verdict.reasons)
    # the real number of trials: declaring earlier research lowers the DSR
    more = validate_strategy("sma_cross", random_walk(), GRID, train=1500, test=500, prior_trials=5000)
    assert more.n_trials == 5025 and more.dsr.dsr < bad.dsr.dsr


def test_validate_on_real_btc_gives_a_verdict_with_reasons(btc_1h):
    rep = validate_strategy("sma_cross", btc_1h, {"fast": [5, 10, 20], "slow": [50, 100, 200]},
                            train=2000, test=500, gates=Gates(min_trades=10))
    assert isinstance(rep.verdict.passed, bool)
    assert {c.name for c in rep.verdict.checks} == {"min_trades", "min_oos_trades", "min_dsr", "max_pbo",
                                                    "min_oos_sharpe", "max_oos_drawdown", "no_lookahead",
                                                    "stable_warmup", "referee"}  # + vectorbt's check
    assert rep.verdict.passed == (not rep.verdict.reasons)
    s = rep.summary()
    assert s["n_trials"] == 9 and 0 <= s["dsr"] <= 1 and 0 <= s["pbo"] <= 1


def test_walk_forward_folds_on_processes_equal_inline():
    c = trending(n=4000)
    a = walk_forward("sma_cross", c, GRID, train=1500, test=500, executor="inline")
    b = walk_forward("sma_cross", c, GRID, train=1500, test=500, executor="processes", workers=2)
    assert [f.best_params for f in a.folds] == [f.best_params for f in b.folds]
    np.testing.assert_array_equal(a.oos_returns, b.oos_returns)


def test_purged_cv_trains_only_outside_test_purge_and_embargo():
    from qts.research.backtest import backtest
    from qts.research.validation import purged_cv

    c = trending()
    cv = purged_cv("sma_cross", c, GRID, k=4, purge=50, embargo=30)
    assert [f.test for f in cv.folds] == [(0, 1500), (1500, 3000), (3000, 4500), (4500, 6000)]
    assert cv.folds[1].train == ((0, 1450), (3030, 6000))
    assert cv.mean_oos_sharpe > 0  # the trend edge survives out of sample
    # the fold's OOS Sharpe is the selected combination's Sharpe over exactly the test bars
    f = cv.folds[2]
    full = backtest("sma_cross", c, BacktestConfig(), f.best_params).returns
    r = full[f.test[0]:f.test[1]]
    assert f.oos_sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(365 * 24), rel=1e-9)
    # ... and its in-sample Sharpe is over the training bars only (purge and embargo left out)
    r = np.concatenate([full[a:b] for a, b in f.train])
    assert f.is_sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(365 * 24), rel=1e-9)
