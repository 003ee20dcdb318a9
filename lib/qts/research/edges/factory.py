"""The edge factory, end to end (seed 001 of issue #13).

``run_factory(candles, FactoryConfig(), ...)``:

1. cut the candles: the first ``1 - holdout`` share is in-sample, the rest held out (the same rule as
   the research pipeline). Steps 2-5 see ONLY the in-sample candles (a slice: later bars do not exist
   for them);
2. features and robust anomaly detectors (every kind x threshold), plus built-in strategies' entries as
   primary signals; triple-barrier labels of every trigger (:mod:`.labels`);
3. the IsolationForest, walk-forward (refitted on past bars at each test range), and its triggers' labels;
4. the meta-model of every primary with enough labelled events, walk-forward and purged: out-of-sample
   AUC, Brier, precision of acting vs the base rate (:mod:`.meta`);
5. the candidate: the exportable primary (not the IsolationForest: its forest is not a parameter the
   loop can run) with the best out-of-sample AUC; the logistic model refitted on all its in-sample events
   becomes ``edge_meta``'s parameters;
6. the gates, on the HELD-OUT candles: ``validate_strategy('edge_meta', ...)`` over the ``min_probs``
   grid (sweep, DSR with every detector tried counted as a trial, PBO, walk-forward, look-ahead check of
   the signals), judged by :class:`~qts.research.validation.Gates`; a purged k-fold CV reported beside it;
   the final model's meta metrics on held-out events;
7. the perturbation look-ahead check (:func:`qts.research.lookahead.perturbation_check`) of features,
   the candidate's signals and the labels known so far, at cut points in the held-out range.

``register_candidate`` adds a candidate that passed to the registry as ``backtested`` (as the research
pipeline does for its survivors).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...market.candles import Candles

STEPS = ("features", "detectors", "isolation forest", "meta-model", "candidate", "gates", "look-ahead")


class FactoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(288, ge=20, le=5000, description="bars of the robust z-scores' trailing window")
    thresholds: tuple[float, ...] = Field((2.5, 3.5), min_length=1, description="robust z-score triggers")
    strategy_primaries: tuple[str, ...] = Field(("rsi_reversion",), description="built-in strategies whose "
                                                                                 "entries are primary signals too")
    horizon: int = Field(24, ge=1, le=2000, description="time barrier, bars")
    tp_mult: float = Field(1.0, gt=0, le=20)
    sl_mult: float = Field(1.0, gt=0, le=20)
    holdout: float = Field(0.3, ge=0.05, le=0.95, description="share of the candles held out for the gates")
    folds: int = Field(4, ge=2, le=20, description="walk-forward test ranges in-sample")
    min_events: int = Field(60, ge=10, description="labelled events a primary needs for a meta-model")
    min_probs: tuple[float, ...] = Field((0.5, 0.55, 0.6), min_length=1, description="act when p >= this "
                                                                                      "(the gates' grid)")
    iforest: bool = True
    contamination: float = Field(0.01, gt=0, lt=0.5)
    iforest_max_train: int = Field(20_000, ge=100)
    lookahead_cuts: int = Field(3, ge=1, le=50)
    seed: int = 0


@dataclass
class FactoryResult:
    config: FactoryConfig
    n_bars: int
    cut: int
    detectors: list[dict]
    meta: list[dict]
    candidate: dict | None
    held_out_meta: dict | None
    validation: dict | None
    purged_cv: dict | None
    lookahead: dict
    timings: dict
    notes: list[str] = field(default_factory=list)
    report: object = field(default=None, repr=False)   # the ValidationReport
    expected: dict | None = None                        # out-of-sample expectations (the registry's)

    @property
    def passed(self) -> bool:
        return bool(self.validation and self.validation.get("passed") and self.lookahead.get("ok"))

    def as_dict(self) -> dict:
        return _clean({"config": self.config.model_dump(), "n_bars": self.n_bars, "in_sample_bars": self.cut,
                       "held_out_bars": self.n_bars - self.cut, "detectors": self.detectors, "meta": self.meta,
                       "candidate": self.candidate, "held_out_meta": self.held_out_meta,
                       "validation": self.validation, "purged_cv": self.purged_cv, "lookahead": self.lookahead,
                       "expected": self.expected, "passed": self.passed, "timings": self.timings,
                       "notes": self.notes})


def _clean(v):
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _primaries(c: Candles, f: dict, cfg: FactoryConfig) -> dict[str, tuple[str, float, np.ndarray]]:
    from ...strategies.edge import primary
    from .anomalies import robust_detectors

    out = robust_detectors(c, f, cfg.thresholds)
    for name in cfg.strategy_primaries:
        out[f"strategy:{name}"] = (name, 0.0, primary(name, 0.0, c, f))
    return out


def edge_series(c: Candles, t: int, cfg: FactoryConfig, params: dict | None) -> dict[str, np.ndarray]:
    """Every per-bar quantity the factory derives from candles, as known at bar ``t``: the features, each
    primary's triggers, the labels of its events that were known by t (the rest NaN), and the candidate's
    signals. What the perturbation check compares."""
    from ...strategies import make
    from ...strategies.edge import FEATURES, features
    from .labels import triple_barrier

    f = features(c, cfg.window)
    out = {k: f[k] for k in (*FEATURES, "sigma")}
    for name, (_, _, trig) in _primaries(c, f, cfg).items():
        out[f"trigger:{name}"] = trig
        ev = np.flatnonzero(trig & np.isfinite(f["sigma"]))
        lab = triple_barrier(c.close, ev, f["sigma"], cfg.tp_mult, cfg.sl_mult, cfg.horizon)
        known = np.full(len(c), np.nan)
        k = lab.known & (lab.end <= t)
        known[ev[k]] = lab.label[k]
        out[f"label:{name}"] = known
    if params:
        e, x, ind = make("edge_meta", params).signals(c)
        out["candidate:confidence"] = e
        out["candidate:exit"] = x
        out["candidate:meta_prob"] = ind["meta_prob"]
    return out


def run_factory(candles: Candles, cfg: FactoryConfig | None = None, *, gates=None, config=None,
                step=None) -> FactoryResult:
    """The whole factory (module docstring). ``step(name)`` is called as each of STEPS starts."""
    from ...strategies.edge import MOM_BARS, feature_matrix, features
    from ..backtest import BacktestConfig
    from ..evaluation import walk_forward_sizes
    from ..lookahead import perturbation_check
    from ..pipeline import split_holdout
    from ..validation import Gates, purged_cv, validate_strategy
    from .anomalies import isolation_forest_walk_forward
    from .labels import triple_barrier
    from .meta import fit_logistic, oos_metrics, predict, walk_forward_meta, wf_ranges

    cfg = cfg or FactoryConfig()
    gates, config = gates or Gates(), config or BacktestConfig()
    step = step or (lambda name: None)
    timings: dict[str, float] = {}
    notes: list[str] = []
    n = len(candles)
    cut = split_holdout(n, cfg.holdout)
    warm = cfg.window + MOM_BARS + 2
    if cut <= warm + cfg.horizon * 4 or n - cut <= warm + cfg.horizon * 4:
        raise ValueError(f"candles: {n} bars are too few for window {cfg.window} and horizon {cfg.horizon} on "
                         f"both sides of the {cfg.holdout:.0%} hold-out")

    def timed(name):
        step(name)
        timings[name] = time.perf_counter()

    def done(name):
        timings[name] = round(time.perf_counter() - timings[name], 3)

    # 1. features, in-sample only
    timed("features")
    ins = candles.slice(0, cut)
    f = features(ins, cfg.window)
    x = feature_matrix(f)
    ranges = wf_ranges(max(warm, cut // (cfg.folds + 1)), cut, cfg.folds)
    done("features")

    # 2. robust detectors and strategy primaries, labelled
    timed("detectors")
    prim = _primaries(ins, f, cfg)
    labelled: dict[str, tuple] = {}
    detectors = []
    for name, (kind, k, trig) in prim.items():
        ev = np.flatnonzero(trig & np.isfinite(f["sigma"]) & (f["sigma"] > 0))
        lab = triple_barrier(ins.close, ev, f["sigma"], cfg.tp_mult, cfg.sl_mult, cfg.horizon)
        labelled[name] = (kind, k, lab, True)
        detectors.append({"name": name, "kind": kind, "threshold": k, "type": "strategy" if
                          name.startswith("strategy:") else "robust z-score", "exportable": True,
                          "trigger_rate": float(trig.mean()), **lab.stats()})
    done("detectors")

    # 3. IsolationForest, walk-forward
    timed("isolation forest")
    if cfg.iforest:
        flags, _ = isolation_forest_walk_forward(x, ranges, cfg.contamination, cfg.iforest_max_train,
                                                 seed=cfg.seed)
        ev = np.flatnonzero(flags & np.isfinite(f["sigma"]) & (f["sigma"] > 0))
        lab = triple_barrier(ins.close, ev, f["sigma"], cfg.tp_mult, cfg.sl_mult, cfg.horizon)
        labelled["iforest"] = ("iforest", cfg.contamination, lab, False)
        scored = sum(b - a for a, b in ranges)
        detectors.append({"name": "iforest", "kind": "isolation forest (walk-forward)",
                          "threshold": cfg.contamination, "type": "learned", "exportable": False,
                          "trigger_rate": float(flags.sum() / scored) if scored else 0.0, **lab.stats()})
    done("isolation forest")

    # 4. meta-model per primary, walk-forward and purged
    timed("meta-model")
    meta = []
    for name, (kind, k, lab, exportable) in labelled.items():
        nk = int(lab.known.sum())
        if nk < cfg.min_events:
            meta.append({"primary": name, "skipped": f"{nk} labelled events < min_events {cfg.min_events}"})
            continue
        r = walk_forward_meta(x[lab.events], lab.events, lab.label, lab.end, ranges, min_prob=cfg.min_probs[0])
        meta.append({"primary": name, "exportable": exportable, "oos": r.metrics, "folds": r.folds})
    done("meta-model")

    # 5. the candidate
    timed("candidate")
    ok = [m for m in meta if m.get("exportable") and m["oos"].get("auc") is not None and m["oos"]["events"] >= 20]
    candidate = params = None
    if ok:
        best = max(ok, key=lambda m: (m["oos"]["auc"], m["oos"]["events"]))
        kind, k, lab, _ = labelled[best["primary"]]
        kn = lab.known
        model = fit_logistic(x[lab.events[kn]], lab.label[kn])
        params = {"primary": kind, "threshold": max(k, 0.5), "window": cfg.window, "horizon": cfg.horizon,
                  "tp_mult": cfg.tp_mult, "sl_mult": cfg.sl_mult, "min_prob": cfg.min_probs[0], **model}
        candidate = {"primary": best["primary"], "oos_auc": best["oos"]["auc"], "params": params,
                     "trained_on_events": int(kn.sum())}
    else:
        notes.append("no exportable primary had a meta-model with a measurable out-of-sample AUC: no candidate")
    done("candidate")

    # 6. the gates on the held-out candles
    timed("gates")
    validation = held_meta = cv = expected = None
    report = None
    if params:
        held = candles.slice(cut, n)
        # the final model on held-out events (features and labels of the held-out slice only)
        fh = features(held, cfg.window)
        from ...strategies.edge import primary

        trig = primary(params["primary"], params["threshold"], held, fh)
        ev = np.flatnonzero(trig & np.isfinite(fh["sigma"]) & (fh["sigma"] > 0))
        lab = triple_barrier(held.close, ev, fh["sigma"], cfg.tp_mult, cfg.sl_mult, cfg.horizon)
        p = predict(params, feature_matrix(fh)[ev])
        held_meta = oos_metrics(p, lab.label, cfg.min_probs[0])
        held_meta["labels"] = lab.stats()
        grid = [{**params, "min_prob": mp} for mp in cfg.min_probs]
        tr, te = walk_forward_sizes(len(held))
        trials = len(labelled) * len(cfg.min_probs)  # every primary looked at counts as tried
        from ..evaluation import validation_summary

        report = validate_strategy("edge_meta", held, grid, train=tr, test=te, config=config, gates=gates,
                                   prior_trials=trials - len(grid), lookahead_points=10, executor="inline",
                                   progress=False)
        validation = validation_summary(report, gates, {"bars": len(held), "start_ts": int(held.ts[0]),
                                                        "end_ts": int(held.ts[-1]),
                                                        "timeframe_minutes": candles.timeframe_ms / 60_000},
                                        int(time.time() * 1000))
        try:
            r = purged_cv("edge_meta", held, grid, k=4, purge=cfg.horizon, embargo=cfg.horizon, config=config,
                          executor="inline", progress=False)
            cv = {"k": 4, "purge": cfg.horizon, "embargo": cfg.horizon, "mean_oos_sharpe": r.mean_oos_sharpe,
                  "folds": [{"test": list(fo.test), "best_min_prob": fo.best_params["min_prob"],
                             "is_sharpe": fo.is_sharpe, "oos_sharpe": fo.oos_sharpe} for fo in r.folds]}
        except ValueError as e:
            notes.append(f"purged CV not run: {e}")
        try:
            from ..evaluation import expected_metrics

            expected = expected_metrics(report, held, config)
        except Exception as e:  # expectations are for the registry; the verdict stands without them
            notes.append(f"expected metrics: {e.__class__.__name__}: {e}")
    done("gates")

    # 7. look-ahead by perturbation: at cut points in the held-out range (bars before: up to 5000)
    timed("look-ahead")
    rng = np.random.default_rng(cfg.seed)
    pts = sorted({int(v) for v in rng.integers(cut, n - 1, cfg.lookahead_cuts)})
    span, tail = 5000, 500
    lo = [max(0, t - span) for t in pts]
    reports = []
    for t, a in zip(pts, lo):
        part = candles.slice(a, min(n, t + tail))
        rep = perturbation_check(lambda c, tt: edge_series(c, tt, cfg, params), part, [t - a],
                                 name="edge factory", seed=cfg.seed)
        reports.append((t, rep))
    bad = [m | {"cut": t} for t, rep in reports for m in rep.mismatches]
    look = {"ok": not bad, "cuts": pts, "mismatches": bad[:10],
            "series": sorted(edge_series(candles.slice(0, min(n, 2 * warm)), 0, cfg, params)) if params else []}
    done("look-ahead")
    return FactoryResult(cfg, n, cut, detectors, meta, candidate, held_meta, validation, cv, look, timings, notes,
                         report, expected)


def register_candidate(home, result: FactoryResult, *, symbol: str | None, timeframe_minutes: float):
    """Add a candidate that passed every gate to the registry as ``backtested``."""
    from ...registry import Expected, Provenance, Registry, ValidationSummary

    if not result.passed or not result.report or result.report.best_params is None:
        raise ValueError("only a candidate that passed the gates and the look-ahead check is registered")
    return Registry.load(home).add(
        strategy="edge_meta", params=result.report.best_params, stage="backtested", symbol=symbol,
        timeframe_minutes=timeframe_minutes, validation=ValidationSummary.model_validate(result.validation),
        expected=Expected.model_validate({k: v for k, v in (result.expected or {}).items() if k in Expected.model_fields}),
        provenance=Provenance(source="edge_factory", rationale=f"meta-labeled {result.candidate['primary']}"))


def render_markdown(result: FactoryResult, title: str = "Edge factory") -> str:
    d = result.as_dict()
    out = [f"# {title}", "", f"{d['n_bars']} bars: {d['in_sample_bars']} in-sample (detectors, labels, "
           f"meta-model), {d['held_out_bars']} held out (gates).", "",
           f"**Verdict: {'PASS' if d['passed'] else 'FAIL'}**", ""]
    c = d["config"]
    out += ["## Detectors and labels (in-sample)", "",
            f"Triple barrier: take profit {c['tp_mult']:g} / stop loss {c['sl_mult']:g} x sigma x sqrt({c['horizon']}),"
            f" time barrier {c['horizon']} bars.", "",
            "| detector | type | trigger rate | events | labelled | TP | SL | time | positive rate | mean return |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["detectors"]:
        out.append(f"| {r['name']} | {r['type']} | {_p(r['trigger_rate'])} | {r['events']} | {r['labelled']} | "
                   f"{r['take_profit']} | {r['stop_loss']} | {r['time']} | {_p(r['positive_rate'])} | "
                   f"{_p(r['mean_return'], 3)} |")
    out += ["", "## Meta-model, walk-forward out-of-sample (in-sample span)", "",
            "| primary | events | base rate | AUC | Brier | acted | precision | lift |", "|---|---|---|---|---|---|---|---|"]
    for m in d["meta"]:
        if "skipped" in m:
            out.append(f"| {m['primary']} | skipped: {m['skipped']} | | | | | | |")
            continue
        o = m["oos"]
        out.append(f"| {m['primary']} | {o['events']} | {_p(o['base_rate'])} | {_n(o['auc'])} | {_n(o['brier'])} | "
                   f"{o['acted']} | {_p(o['precision'])} | {_n(o['lift'])} |")
    out += ["", "## Candidate", ""]
    if d["candidate"]:
        cd = d["candidate"]
        out.append(f"`edge_meta` on **{cd['primary']}** (best out-of-sample AUC {_n(cd['oos_auc'])}), model fitted on "
                   f"{cd['trained_on_events']} in-sample events.")
        hm = d["held_out_meta"] or {}
        out.append(f"Held-out meta metrics: events {hm.get('events')}, base rate {_p(hm.get('base_rate'))}, AUC "
                   f"{_n(hm.get('auc'))}, precision {_p(hm.get('precision'))} on {hm.get('acted')} acted.")
    else:
        out.append("none")
    out += ["", "## Gates (held-out candles)", ""]
    v = d["validation"]
    if v:
        out += ["| check | value | threshold | passed |", "|---|---|---|---|"]
        for ch in v["checks"]:
            out.append(f"| {ch['name']} | {_n(ch['value'])} | {_n(ch['threshold'])} | {'yes' if ch['passed'] else 'NO'} |")
        out.append("")
        out.append(f"Trials counted for the DSR: {v['n_trials']}; selected min_prob: "
                   f"{(v.get('selected_params') or {}).get('min_prob')}.")
    else:
        out.append("not run (no candidate)")
    if d["purged_cv"]:
        out.append(f"Purged {d['purged_cv']['k']}-fold CV (purge = embargo = {d['purged_cv']['purge']} bars): mean "
                   f"out-of-sample Sharpe {_n(d['purged_cv']['mean_oos_sharpe'])} (reported, not gated).")
    lk = d["lookahead"]
    out += ["", "## Look-ahead (candles after t perturbed)", "",
            f"{'no look-ahead' if lk['ok'] else 'LOOK-AHEAD'} at cuts {lk['cuts']} over {len(lk['series'])} series"
            + ("" if lk["ok"] else f"; first: {lk['mismatches'][0]}"), ""]
    if d["notes"]:
        out += ["## Notes", ""] + [f"- {x}" for x in d["notes"]] + [""]
    out += ["## Timings (s)", "", ", ".join(f"{k} {v}" for k, v in d["timings"].items()), ""]
    return "\n".join(out)


def _p(v, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _n(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)
