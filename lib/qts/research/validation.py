"""Validation of a strategy before it may go anywhere near paper or live: walk-forward, selection bias
(DSR, PBO), look-ahead, minimum trade counts, judged by configurable gates into a verdict.

``validate_strategy(name, candles, grid, train=..., test=...)``:
1. sweeps the whole grid on all the data (N = every valid combination: the real number of trials,
   plus ``prior_trials`` you declare) and keeps per-block return sums for the PBO;
2. selects the best combination by ``objective`` (among those with ``gates.min_trades`` trades);
3. Deflated Sharpe Ratio of that selection, with the variance of all the trials' Sharpe ratios;
4. PBO by CSCV over ``gates.pbo_blocks`` blocks;
5. walk-forward (rolling, or anchored): optimize in-sample, test the winner out-of-sample, fold after
   fold; out-of-sample returns stitched together;
6. look-ahead check of the selected parameters;
7. :class:`Gates` turn all that into a :class:`Verdict` (pass/fail and every reason);
8. recursive (warm-up) analysis of the selected parameters (:mod:`.recursive`): decisions must not
   depend on history before the declared ``lookback``;
9. with ``gates.purged_cv_folds`` set, purged k-fold cross-validation (:func:`purged_cv`, purge and
   embargo = the grid's longest lookback) judged by ``min_cv_positive`` and ``min_cv_sharpe``.

``purged_cv`` is the purged, embargoed k-fold alternative to the walk-forward (gated only when
``gates.purged_cv_folds`` is set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..market.candles import Candles
from ..strategies import make
from . import metrics as M
from . import overfit, parallel, splits
from .backtest import BacktestConfig, backtest
from .lookahead import LookaheadReport, lookahead_check
from .recursive import RecursiveReport, recursive_check
from .sweep import SweepResult, expand_grid, sweep


class Gates(BaseModel):
    """What a strategy must show to pass. Defaults are deliberately strict; every one is a field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_trades: int = Field(30, ge=0, description="closed trades of the selected combination, whole sample")
    min_oos_trades: int = Field(10, ge=0, description="closed trades over all walk-forward test ranges")
    min_dsr: float = Field(0.95, ge=0, le=1, description="deflated Sharpe ratio: P(true SR > expected max "
                                                          "of the trials)")
    max_pbo: float = Field(0.3, ge=0, le=1, description="probability of backtest overfitting (CSCV); 0.5 is "
                                                          "a coin flip")
    min_oos_sharpe: float = Field(0.0, description="annualized Sharpe of the stitched out-of-sample returns")
    max_oos_drawdown: float = Field(0.35, gt=0, le=1, description="max drawdown of the stitched OOS equity")
    min_wf_efficiency: float | None = Field(None, description="OOS / IS annualized Sharpe (mean over folds); "
                                                              "None: not gated")
    require_no_lookahead: bool = Field(True, description="signals on cut data must equal the full data's")
    pbo_blocks: int = Field(16, ge=2, le=24, description="CSCV blocks (even): C(S, S/2) splits")
    purged_cv_folds: int | None = Field(None, ge=2, le=20, description="purged k-fold CV as a gate: K folds "
                                                                       "(None: not run)")
    min_cv_positive: float = Field(0.5, ge=0, le=1, description="purged CV: share of the folds whose test "
                                                                "Sharpe is > 0")
    min_cv_sharpe: float = Field(0.0, description="purged CV: mean annualized test Sharpe over the folds")
    require_stable_warmup: bool = Field(True, description="decisions after the declared lookback must not "
                                                          "depend on earlier history (recursive analysis)")

    @model_validator(mode="after")
    def _even(self):
        if self.pbo_blocks % 2:
            raise ValueError("pbo_blocks: must be even")
        return self


@dataclass(frozen=True)
class Check:
    name: str
    value: float | bool | None
    threshold: float | bool | None
    passed: bool
    message: str


@dataclass
class Verdict:
    passed: bool
    checks: list[Check]

    @property
    def reasons(self) -> list[str]:
        """Why it failed (empty when it passed)."""
        return [c.message for c in self.checks if not c.passed]

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        if self.passed:
            return "PASS: " + "; ".join(c.message for c in self.checks)
        return "FAIL: " + "; ".join(self.reasons)


def _ge(name, value, threshold, what) -> Check:
    ok = value is not None and not (isinstance(value, float) and math.isnan(value)) and value >= threshold
    return Check(name, value, threshold, bool(ok), f"{what} {_fmt(value)} {'>=' if ok else '<'} {_fmt(threshold)}")


def _le(name, value, threshold, what) -> Check:
    ok = value is not None and not (isinstance(value, float) and math.isnan(value)) and value <= threshold
    return Check(name, value, threshold, bool(ok), f"{what} {_fmt(value)} {'<=' if ok else '>'} {_fmt(threshold)}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def judge(gates: Gates, *, n_trades: int, oos_trades: int, dsr: float, pbo: float, oos_sharpe: float,
          oos_drawdown: float, wf_efficiency: float, lookahead_ok: bool, cv: "CVResult | None" = None,
          recursive: RecursiveReport | None = None) -> Verdict:
    """Every gate as a check; NaN fails (a figure that cannot be computed is no evidence). ``cv``: the
    purged CV (required when ``gates.purged_cv_folds`` is set); ``recursive``: the warm-up analysis
    (its check is left out when None)."""
    checks = [
        _ge("min_trades", n_trades, gates.min_trades, "trades of the selection"),
        _ge("min_oos_trades", oos_trades, gates.min_oos_trades, "out-of-sample trades"),
        _ge("min_dsr", dsr, gates.min_dsr, "deflated Sharpe ratio"),
        _le("max_pbo", pbo, gates.max_pbo, "probability of backtest overfitting"),
        _ge("min_oos_sharpe", oos_sharpe, gates.min_oos_sharpe, "out-of-sample Sharpe"),
        _le("max_oos_drawdown", oos_drawdown, gates.max_oos_drawdown, "out-of-sample max drawdown"),
    ]
    if gates.min_wf_efficiency is not None:
        checks.append(_ge("min_wf_efficiency", wf_efficiency, gates.min_wf_efficiency, "walk-forward efficiency"))
    if gates.require_no_lookahead:
        checks.append(Check("no_lookahead", lookahead_ok, True, bool(lookahead_ok),
                            "no look-ahead" if lookahead_ok else "look-ahead: signals change when future bars "
                                                                 "are removed"))
    if gates.purged_cv_folds is not None:
        k = len(cv.folds) if cv else 0
        pos, mean = (cv.positive_fraction, cv.mean_oos_sharpe) if cv and cv.folds else (math.nan, math.nan)
        checks.append(_ge("min_cv_positive", pos, gates.min_cv_positive,
                          f"purged CV ({k} folds): share of folds with a positive test Sharpe"))
        checks.append(_ge("min_cv_sharpe", mean, gates.min_cv_sharpe, f"purged CV ({k} folds): mean test Sharpe"))
    if gates.require_stable_warmup and recursive is not None:
        checks.append(Check("stable_warmup", recursive.ok, True, bool(recursive.ok),
                            "warm-up: " + recursive.summary()))
    return Verdict(all(c.passed for c in checks), checks)


# -- walk-forward -------------------------------------------------------------------------------------
@dataclass
class Fold:
    index: int
    train: tuple[int, int]
    test: tuple[int, int]
    best_params: dict | None
    is_stats: dict
    oos_stats: dict
    oos_returns: np.ndarray
    n_trials: int


@dataclass
class WalkForwardResult:
    folds: list[Fold]
    oos_returns: np.ndarray
    oos_equity: np.ndarray
    stats: dict
    anchored: bool
    purge: int

    @property
    def oos_trades(self) -> int:
        return int(sum(f.oos_stats.get("n_trades", 0) for f in self.folds))

    @property
    def efficiency(self) -> float:
        """Mean OOS annualized Sharpe over mean IS annualized Sharpe of the selected combinations."""
        is_ = np.mean([f.is_stats.get("sharpe", np.nan) for f in self.folds])
        oos = np.mean([f.oos_stats.get("sharpe", np.nan) for f in self.folds])
        return float(oos / is_) if is_ and is_ > 0 else math.nan


def _run_fold(task) -> Fold:
    idx, strategy, candles, params, config, split, objective, min_trades = task
    (a, b), (c, d) = split.train[0], split.test
    sw = sweep(strategy, candles, params, config, start=a, stop=b, executor="inline", progress=False)
    best = sw.best(objective, min_trades)
    if best < 0:
        best = sw.best(objective, 0)
    if best < 0:
        flat = np.zeros(d - c)
        return Fold(idx, (a, b), (c, d), None, {}, {"n_trades": 0, "sharpe": 0.0}, flat, sw.n_trials)
    is_stats = dict(zip(_names(), sw.stats[best]))
    res = backtest(make(strategy, sw.params[best]), candles, config, start=c, stop=d)
    return Fold(idx, (a, b), (c, d), sw.params[best], is_stats, res.stats, res.returns, sw.n_trials)


def _names():
    from .kernels import STAT_NAMES

    return STAT_NAMES


def walk_forward(strategy: str, candles: Candles, grid, train: int, test: int, step: int | None = None,
                 anchored: bool = False, purge: int = 0, objective: str = "sharpe", min_trades: int = 1,
                 config: BacktestConfig | None = None, start: int = 0, executor: str = "auto",
                 workers: int | None = None, progress: bool | None = None, client=None) -> WalkForwardResult:
    """Optimize ``objective`` (higher is better; any of STAT_NAMES) on each training range, run the
    winner on the following test range (flat at its start), stitch the test ranges' returns."""
    config = config or BacktestConfig()
    params, _ = expand_grid(strategy, grid)
    folds_split = splits.walk_forward(len(candles), train, test, step, anchored, purge, start)
    tasks = [(i, strategy, candles, params, config, s, objective, min_trades) for i, s in enumerate(folds_split)]
    est = sum(s.train_bars for s in folds_split) * len(params) * 1e-8
    ex = parallel.choose(executor, len(tasks), est, workers, client)
    folds = parallel.run_tasks(_run_fold, tasks, ex, workers, progress, desc="walk-forward", client=client)
    r = np.concatenate([f.oos_returns for f in folds]) if folds else np.empty(0)
    eq = config.init_cash * np.cumprod(1.0 + r)
    ppy = config.ppy(candles.timeframe_ms)
    mdd, mdd_bars = M.max_drawdown(eq, config.init_cash)
    stats = {"total_return": M.total_return(eq, config.init_cash), "cagr": M.cagr(eq, config.init_cash, ppy),
             "sharpe": M.sharpe(r, ppy), "sortino": M.sortino(r, ppy), "max_drawdown": mdd, "max_dd_bars": mdd_bars,
             "n_trades": int(sum(f.oos_stats.get("n_trades", 0) for f in folds)), "bars": int(len(r))}
    return WalkForwardResult(folds, r, eq, stats, anchored, purge)


# -- purged k-fold cross-validation -------------------------------------------------------------------
@dataclass
class CVFold:
    train: tuple[tuple[int, int], ...]
    test: tuple[int, int]
    best_params: dict
    is_sharpe: float
    oos_sharpe: float


@dataclass
class CVResult:
    folds: list[CVFold]
    purge: int
    embargo: int

    @property
    def mean_oos_sharpe(self) -> float:
        return float(np.mean([f.oos_sharpe for f in self.folds]))

    @property
    def positive_fraction(self) -> float:
        """Share of the folds whose test Sharpe (of the in-sample winner) is > 0."""
        return float(np.mean([f.oos_sharpe > 0 for f in self.folds])) if self.folds else math.nan

    def summary(self) -> dict:
        return {"folds": len(self.folds), "purge": self.purge, "embargo": self.embargo,
                "mean_oos_sharpe": self.mean_oos_sharpe if self.folds else None,
                "positive_fraction": self.positive_fraction if self.folds else None,
                "oos_sharpes": [f.oos_sharpe for f in self.folds], "is_sharpes": [f.is_sharpe for f in self.folds],
                "tests": [list(f.test) for f in self.folds], "params": [f.best_params for f in self.folds]}


def purged_cv(strategy: str, candles: Candles, grid, k: int = 5, purge: int = 0, embargo: int = 0,
              config: BacktestConfig | None = None, start: int = 0, executor: str = "auto",
              workers: int | None = None, progress: bool | None = None, client=None) -> CVResult:
    """Purged, embargoed k-fold CV (:func:`.splits.purged_kfold`): ONE sweep over the data keeps the
    return sums of every block between fold, purge and embargo boundaries; each fold then selects the
    combination with the best annualized Sharpe on its training blocks and scores it on its test
    block. (One continuous simulation: a position may be open when a test fold begins, unlike the
    walk-forward, which starts each test flat.)"""
    config = config or BacktestConfig()
    folds = splits.purged_kfold(len(candles), k, purge, embargo, start)
    cuts = {start, len(candles)}
    for f in folds:
        cuts.update(f.test)
        cuts.update(x for r in f.train for x in r)
    edges = np.array(sorted(cuts), np.int64)
    sw = sweep(strategy, candles, grid, config, start=start, blocks=edges, executor=executor, workers=workers,
               progress=progress, client=client)
    ann = math.sqrt(config.ppy(candles.timeframe_ms))
    out = []
    for f in folds:
        in_train = np.array([any(a <= lo and hi <= b for a, b in f.train) for lo, hi in zip(edges[:-1], edges[1:])])
        in_test = (edges[:-1] >= f.test[0]) & (edges[1:] <= f.test[1])
        is_sr = overfit.sharpe_from_sums(*(sw.blocks[:, in_train, j].sum(axis=1) for j in range(3))) * ann
        oos_sr = overfit.sharpe_from_sums(*(sw.blocks[:, in_test, j].sum(axis=1) for j in range(3))) * ann
        best = int(np.argmax(is_sr))
        out.append(CVFold(f.train, f.test, sw.params[best], float(is_sr[best]), float(oos_sr[best])))
    return CVResult(out, purge, embargo)


# -- the whole validation -----------------------------------------------------------------------------
@dataclass
class ValidationReport:
    strategy: str
    verdict: Verdict
    best_params: dict | None
    best_stats: dict
    n_trials: int
    dsr: overfit.DSR | None
    pbo: overfit.PBO | None
    walk_forward: WalkForwardResult
    lookahead: LookaheadReport | None
    sweep: SweepResult = field(repr=False)
    cv: CVResult | None = None                  # with gates.purged_cv_folds
    recursive: RecursiveReport | None = None    # the warm-up analysis of the selection
    referee: object | None = None  # qts.research.referee.RefereeVerdict, None when not refereed

    def summary(self) -> dict:
        return {"strategy": self.strategy, "passed": self.verdict.passed, "reasons": self.verdict.reasons,
                "best_params": self.best_params, "n_trials": self.n_trials,
                "dsr": self.dsr.dsr if self.dsr else None, "pbo": self.pbo.pbo if self.pbo else None,
                "oos": self.walk_forward.stats, "lookahead_ok": self.lookahead.ok if self.lookahead else None,
                "purged_cv": self.cv.summary() if self.cv else None,
                "recursive_ok": self.recursive.ok if self.recursive else None,
                "referee": self.referee.to_dict() if self.referee else None}


def validate_strategy(strategy: str, candles: Candles, grid, *, train: int, test: int, step: int | None = None,
                      anchored: bool = False, purge: int = 0, objective: str = "sharpe",
                      config: BacktestConfig | None = None, gates: Gates | None = None, prior_trials: int = 0,
                      lookahead_points: int = 30, executor: str = "auto", workers: int | None = None,
                      progress: bool | None = None, client=None, referee: bool | int = True) -> ValidationReport:
    """``referee``: True (the top 3), or how many of the best candidates vectorbt recomputes
    (:mod:`.referee`; a mismatch fails the verdict, saying where); False or 0: not refereed."""
    config = config or BacktestConfig()
    gates = gates or Gates()
    sw = sweep(strategy, candles, grid, config, blocks=gates.pbo_blocks, executor=executor, workers=workers,
               progress=progress, client=client)
    n_trials = sw.n_trials + prior_trials
    best = sw.best(objective, gates.min_trades)
    if best < 0:
        best = sw.best(objective, 0)
    dsr = pbo = look = rec = cv = None
    best_params, best_stats = None, {}
    if best >= 0:
        best_params = sw.params[best]
        best_stats = dict(zip(_names(), sw.stats[best]))
        res = backtest(make(strategy, best_params), candles, config)
        srs = sw.per_bar_sharpe()
        var_sr = float(np.var(srs[np.isfinite(srs)], ddof=1)) if sw.n_trials > 1 else 0.0
        dsr = overfit.deflated_sharpe_from_returns(res.returns, n_trials, var_sr)
        look = lookahead_check(make(strategy, best_params), candles, points=lookahead_points)
        rec = recursive_check(make(strategy, best_params), candles, points=lookahead_points)
    if sw.n_trials >= 2:
        pbo = overfit.pbo_cscv(sw.blocks)
    wf = walk_forward(strategy, candles, grid, train, test, step, anchored, purge, objective, 1, config,
                      executor=executor, workers=workers, progress=progress, client=client)
    if gates.purged_cv_folds is not None and sw.n_trials:
        # purge and embargo: the longest warm-up in the grid, so no training bar's indicators reach into the test fold
        gap = max(make(strategy, p).lookback for p in sw.params)
        cv = purged_cv(strategy, candles, sw.params, k=gates.purged_cv_folds, purge=gap, embargo=gap, config=config,
                       executor=executor, workers=workers, progress=progress, client=client)
    verdict = judge(gates, n_trades=int(best_stats.get("n_trades", 0)), oos_trades=wf.oos_trades,
                    dsr=dsr.dsr if dsr else math.nan, pbo=pbo.pbo if pbo else math.nan,
                    oos_sharpe=wf.stats["sharpe"], oos_drawdown=wf.stats["max_drawdown"],
                    wf_efficiency=wf.efficiency, lookahead_ok=bool(look and look.ok), cv=cv, recursive=rec)
    ref = None
    if referee and best >= 0:  # vectorbt recomputes the top candidates: any difference fails the verdict
        from .referee import TOP, TOL, referee_sweep

        ref = referee_sweep(strategy, candles, sw, config, objective=objective, min_trades=gates.min_trades,
                            top=TOP if referee is True else int(referee))
        verdict = Verdict(verdict.passed and ref.passed,
                          verdict.checks + [Check("referee", ref.max_rel_diff, TOL, ref.passed, ref.message)])
    return ValidationReport(strategy, verdict, best_params, best_stats, n_trials, dsr, pbo, wf, look, sw,
                            cv=cv, recursive=rec, referee=ref)
