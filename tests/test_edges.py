"""The edge factory (issue #13): detectors, triple-barrier labels, meta-labeling, gates, no look-ahead.

The look-ahead tests change every candle AFTER bar t (prices and volumes, :func:`perturb_after`) and
demand that everything the factory derived at bars 0..t is bit-identical: features, triggers, the labels
known by t, the walk-forward IsolationForest flags and meta-model probabilities, the candidate's signals;
and, for the whole factory, that perturbing the held-out candles changes nothing it learned in-sample.
A deliberately leaky series shows the check does fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from qts.market.candles import Candles
from qts.research.edges import FactoryConfig, run_factory
from qts.research.edges.anomalies import isolation_forest_walk_forward
from qts.research.edges.factory import edge_series, register_candidate, render_markdown
from qts.research.edges.labels import SL, TIME, TP, triple_barrier
from qts.research.edges.meta import walk_forward_meta, wf_ranges
from qts.research.lookahead import perturb_after, perturbation_check
from qts.research.validation import Gates
from qts.strategies.edge import FEATURES, feature_matrix, features, robust_z, trailing_median_mad

CFG = FactoryConfig(window=96, horizon=12, thresholds=(2.5,), folds=3, min_events=40, lookahead_cuts=2)


@pytest.fixture(scope="module")
def btc(btc_5m):
    return btc_5m.slice(10_000, 22_000)


def test_robust_z_is_the_median_and_mad_of_the_window_before():
    x = np.random.default_rng(1).standard_t(3, 500)
    w = 40
    z = robust_z(x, w)
    med, mad = trailing_median_mad(x, w)
    assert np.isnan(z[:w]).all()
    for i in (w, 123, 499):
        win = x[i - w:i]  # the 40 values BEFORE i: x[i] itself is not in its own baseline
        m = np.median(win)
        s = 1.4826 * np.median(np.abs(win - m))
        assert med[i] == m
        assert z[i] == pytest.approx((x[i] - m) / s, rel=1e-12)
    even = trailing_median_mad(x, 41)[0]
    assert even[100] == np.median(x[59:100])


def test_features_cache_is_keyed_by_content(btc):
    c = btc.slice(0, 3000)
    a = features(c, 96)
    b = features(Candles(c.ts.copy(), c.open.copy(), c.high.copy(), c.low.copy(), c.close.copy(), c.volume.copy(),
                         c.timeframe_ms), 96)
    assert a["z_ret"] is b["z_ret"]  # equal content: the cached arrays
    with pytest.raises(ValueError):
        a["z_ret"][100] = 0.0  # read-only: no caller can spoil the cache
    d = features(perturb_after(c, 2000), 96)
    assert d["z_ret"] is not a["z_ret"] and not np.array_equal(d["z_ret"][2001:], a["z_ret"][2001:], equal_nan=True)
    assert np.array_equal(d["z_ret"][:2001], a["z_ret"][:2001], equal_nan=True)


def test_triple_barrier_by_hand():
    close = np.array([100, 101, 103, 99, 100, 96, 100, 100, 100.5, 100, 100, 99.0])
    sigma = np.full(len(close), 0.02 / 2)  # sqrt(horizon=4) = 2: barriers +-2%
    lab = triple_barrier(close, np.array([0, 3, 6, 9]), sigma, 1.0, 1.0, 4)
    # event 0 (100): 101, 103 >= 102 -> take profit at bar 2; event 3 (99): 100, 96 <= 97.02 -> stop at bar 5;
    # event 6 (100): 100, 100.5, 100, 100 (bar 10): time, 100 > 100 is false -> 0;
    # event 9: needs bars 10..13, only 10..11 exist and no barrier hit -> unknown
    assert lab.label[:3].tolist() == [1.0, 0.0, 0.0] and np.isnan(lab.label[3])
    assert lab.end.tolist() == [2, 5, 10, -1]
    assert lab.kind[:3].tolist() == [TP, SL, TIME]
    assert lab.ret[0] == pytest.approx(0.03) and lab.ret[1] == pytest.approx(96 / 99 - 1)
    assert lab.stats()["labelled"] == 3 and lab.stats()["positive_rate"] == pytest.approx(1 / 3)


def test_edge_meta_exits_where_its_labels_end(btc):
    """The candidate trades its labels: an entry on trigger t (flat before) is exited on the bar its
    triple-barrier label ends."""
    from qts.strategies import make
    from qts.strategies.base import hysteresis

    s = make("edge_meta", {"primary": "ret_drop", "threshold": 2.5, "window": 96, "horizon": 12})
    conf, ex, _ = s.signals(btc)
    pos = hysteresis(conf, ex)
    starts = np.flatnonzero((pos > 0) & (np.r_[0.0, pos[:-1]] == 0))
    f = features(btc, 96)
    lab = triple_barrier(btc.close, starts, f["sigma"], 1.0, 1.0, 12)
    checked = 0
    for t, e in zip(starts, lab.end):
        if e < 0 or (conf[t + 1:e + 1] > 0).any():  # a new trigger restarts the barriers
            continue
        assert pos[e] == 0 and (pos[t:e] > 0).all()
        checked += 1
    assert checked >= 20


def _walk_forward_series(c: Candles, t: int) -> dict:
    """The factory's learned pieces on ``c``: the IsolationForest flags and the meta-model's
    walk-forward probabilities (fold boundaries are bar indices, the same for any candles)."""
    f = features(c, 96)
    x = feature_matrix(f)
    ranges = wf_ranges(3000, len(c), 4)
    flags, scores = isolation_forest_walk_forward(x, ranges, 0.01, 5000)
    trig = f["z_ret"] <= -2.5
    ev = np.flatnonzero(trig & np.isfinite(f["sigma"]))
    lab = triple_barrier(c.close, ev, f["sigma"], 1.0, 1.0, 12)
    r = walk_forward_meta(x[ev], ev, lab.label, lab.end, ranges, min_train=20)
    prob = np.full(len(c), np.nan)
    prob[ev] = r.oos_prob
    return {"iforest_flag": flags, "iforest_score": scores, "meta_prob": prob}


def test_walk_forward_models_use_no_future_candles(btc):
    c = btc.slice(0, 7000)
    base = _walk_forward_series(c, 0)
    assert np.isfinite(base["meta_prob"]).sum() >= 30 and base["iforest_flag"].sum() >= 5
    cuts = [3500, 4800, 6200]
    rep = perturbation_check(_walk_forward_series, c, cuts, name="walk-forward models")
    assert rep.ok, rep.summary()


def test_features_labels_and_candidate_use_no_future_candles(btc):
    params = {"primary": "ret_drop", "threshold": 2.5, "window": 96, "horizon": 12, "min_prob": 0.3,
              "coef": (-0.15, 0.3, -0.2, -0.1, -0.5), "intercept": 0.0, "mean": (0, 0, 0, 0, 1.0),
              "scale": (1, 1, 1, 1, 0.5)}
    c = btc.slice(0, 5000)
    series = edge_series(c, len(c) - 1, CFG, params)
    assert {*FEATURES, "candidate:confidence", "label:ret_drop@2.5", "trigger:strategy:rsi_reversion"} <= set(series)
    cuts = [500, 1777, 3000, 4321]
    rep = perturbation_check(lambda cc, t: edge_series(cc, t, CFG, params), c, cuts, name="edge series")
    assert rep.ok, rep.summary()
    # labels known at t are exactly those whose barrier was reached by t: an event at t - 1 is not known yet
    lab = series["label:ret_drop@2.5"]
    ev = [int(i) for i in np.flatnonzero(np.isfinite(lab)) if i > 2000]
    for e in ev[:5]:
        at = edge_series(c, e + 1, CFG, params)["label:ret_drop@2.5"]
        assert np.isfinite(at[:e]).sum() >= 1
        assert np.isnan(at[e]) or abs(c.close[e + 1] / c.close[e] - 1) > 0.001  # resolved in one bar: a jump
        assert np.array_equal(np.isfinite(at[:e + 2]) & ~np.isfinite(lab[:e + 2]), np.zeros(e + 2, bool))


def test_the_perturbation_check_catches_a_leak(btc):
    c = btc.slice(0, 3000)

    def leaky(cc, t):  # labels used as if known at their event bar: the classic leak
        f = features(cc, 96)
        ev = np.flatnonzero(f["z_ret"] <= -2.5)
        lab = triple_barrier(cc.close, ev, f["sigma"], 1.0, 1.0, 12)
        out = np.full(len(cc), np.nan)
        out[ev] = lab.label
        return {"label": out}

    def centred(cc, t):  # a centred moving average
        return {"sma": np.convolve(cc.close, np.ones(5) / 5, mode="same")}

    events = [int(e) for e in np.flatnonzero(np.isfinite(leaky(c, 0)["label"])) if e > 500]
    cuts = events[:6]  # cut right at events: their labels need the bars after
    for fn in (leaky, centred):
        rep = perturbation_check(fn, c, cuts)
        assert not rep.ok
        assert rep.mismatches[0]["bar"] >= cuts[0] - 2  # found at the cut, where the future leaks in


@pytest.fixture(scope="module")
def factory_run(btc):
    return run_factory(btc, CFG)


def test_factory_end_to_end_on_real_candles(factory_run, btc):
    r = factory_run
    d = r.as_dict()
    assert d["in_sample_bars"] == round(len(btc) * 0.7)
    names = {x["name"] for x in d["detectors"]}
    assert {"ret_drop@2.5", "ret_spike@2.5", "volume_spike@2.5", "range_spike@2.5", "iforest",
            "strategy:rsi_reversion"} == names
    for x in d["detectors"]:
        assert x["labelled"] == x["take_profit"] + x["stop_loss"] + x["time"]
    fitted = [m for m in d["meta"] if "oos" in m]
    assert fitted and all(0 <= m["oos"]["auc"] <= 1 for m in fitted if m["oos"]["auc"] is not None)
    assert d["candidate"] is not None and d["candidate"]["params"]["window"] == 96
    names = [c["name"] for c in d["validation"]["checks"]]
    assert {"min_dsr", "max_pbo", "min_oos_sharpe", "no_lookahead"} <= set(names)
    assert d["validation"]["checks"][names.index("no_lookahead")]["passed"]
    ref = d["validation"]["checks"][names.index("referee")]  # vectorbt recomputed edge_meta's top candidates
    assert ref["passed"] and "vectorbt agrees" in ref["message"], ref
    assert d["lookahead"]["ok"] and len(d["lookahead"]["cuts"]) == 2
    md = render_markdown(r)
    assert "## Gates (held-out candles)" in md and ("PASS" in md or "FAIL" in md)
    # the verdict is the gates': passed only when every check passed
    assert r.passed == all(c["passed"] for c in d["validation"]["checks"])


def test_factory_learns_nothing_from_the_held_out_candles(factory_run, btc):
    """Perturb every held-out candle: detectors, labels, meta-model and the candidate's model are the same."""
    pert = perturb_after(btc, factory_run.cut - 1, seed=7)
    other = run_factory(pert, CFG)
    a, b = factory_run.as_dict(), other.as_dict()
    for k in ("detectors", "meta", "candidate"):
        assert a[k] == b[k], k
    assert a["validation"] != b["validation"]  # the held-out part did change, and the gates saw it


def test_only_a_passing_candidate_is_registered(factory_run, home, btc):
    from qts.registry import Registry

    if not factory_run.passed:
        with pytest.raises(ValueError, match="passed"):
            register_candidate(home, factory_run, symbol="BTC/USDT", timeframe_minutes=5)
    lenient = Gates(min_trades=0, min_oos_trades=0, min_dsr=0.0, max_pbo=1.0, min_oos_sharpe=-1e9,
                    max_oos_drawdown=1.0)
    r = run_factory(btc, CFG.model_copy(update={"iforest": False}), gates=lenient)
    assert r.passed
    e = register_candidate(home, r, symbol="BTC/USDT", timeframe_minutes=5)
    got = Registry.load(home).get(e.id)
    assert got.strategy == "edge_meta" and got.stage == "backtested"
    assert got.expected is not None and got.expected.n_trades == r.expected["n_trades"]
    assert tuple(got.params["coef"]) == tuple(r.candidate["params"]["coef"])
