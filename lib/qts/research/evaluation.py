"""Judging one candidate on held-out candles: its own sweep and validation, its score, and the metrics a
survivor is later held against in paper and live.

``evaluate_candidate`` is what the research pipeline (:mod:`.pipeline`) runs for every candidate and also
the optimizer's metric (:func:`.program.make_metric`): a candidate that fails the gates scores 0, one that
passes scores its out-of-sample Sharpe ratio (floored at 0). It lives below both, so neither imports the
other.

Expected metrics of a survivor: the stitched walk-forward out-of-sample returns of the validation (Sharpe,
return per day, max drawdown), and the closed trades of the selected parameters over the walk-forward
test span (win rate, mean and standard deviation of trade returns, trades per day, profit factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..market.candles import Candles
from .proposer import Candidate

DAY_MS = 86_400_000


@dataclass
class Evaluation:
    candidate: Candidate
    window: tuple[int, int]                 # bars of the full candles the validation used
    passed: bool = False
    score: float = 0.0
    params: dict | None = None
    expected: dict | None = None
    validation: dict | None = None          # qts.registry.ValidationSummary fields
    n_combos: int = 0
    error: str | None = None
    report: object = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {"strategy": self.candidate.strategy, "grid": self.candidate.grid(), "window": list(self.window),
                "passed": self.passed, "score": self.score, "params": self.params, "expected": self.expected,
                "reasons": (self.validation or {}).get("reasons", []), "n_combos": self.n_combos,
                "error": self.error}


def walk_forward_sizes(n_bars: int) -> tuple[int, int]:
    """(train, test) bars: a third to train, a sixth to test: about four folds."""
    return max(2, n_bars // 3), max(1, n_bars // 6)


def strict_gates(gates) -> bool:
    """Every gate at least as strict as the defaults (what live stages require)."""
    from .validation import Gates

    d = Gates()
    return (gates.min_trades >= d.min_trades and gates.min_oos_trades >= d.min_oos_trades
            and gates.min_dsr >= d.min_dsr and gates.max_pbo <= d.max_pbo
            and gates.min_oos_sharpe >= d.min_oos_sharpe and gates.max_oos_drawdown <= d.max_oos_drawdown
            and (d.min_wf_efficiency is None or (gates.min_wf_efficiency or -math.inf) >= d.min_wf_efficiency)
            and (gates.require_no_lookahead or not d.require_no_lookahead)
            and (gates.require_stable_warmup or not d.require_stable_warmup))


def _f(v):
    from ..registry.models import finite

    return finite(v)


def expected_metrics(report, candles: Candles, config, params: dict | None = None) -> dict:
    """Out-of-sample expectations from a ValidationReport on ``candles`` (see the module docstring).
    ``params``: the trade-level figures for these parameters instead of the report's selection."""
    from ..strategies import make
    from .backtest import backtest

    wf = report.walk_forward
    bpd = DAY_MS / candles.timeframe_ms
    bars = int(wf.stats.get("bars") or 0)
    total = wf.stats.get("total_return")
    per_day = None
    if bars and total is not None and math.isfinite(total) and total > -1:
        per_day = 100 * ((1 + total) ** (bpd / bars) - 1)
    out = {"sharpe": wf.stats.get("sharpe"), "return_per_day_pct": per_day,
           "total_return_pct": 100 * total if total is not None else None,
           "max_drawdown_pct": 100 * wf.stats["max_drawdown"] if wf.stats.get("max_drawdown") is not None else None,
           "bars": bars, "period_days": bars / bpd if bars else None}
    params = params if params is not None else report.best_params
    if params is not None and wf.folds:
        a, b = wf.folds[0].test[0], wf.folds[-1].test[1]
        bt = backtest(make(report.strategy, params), candles, config, start=a, stop=b)
        rets = [100 * t.ret for t in bt.closed_trades]
        pnl = [t.pnl for t in bt.closed_trades]
        n = len(rets)
        days = (b - a) / bpd
        mean = sum(rets) / n if n else None
        out.update({
            "n_trades": n, "trades_per_day": n / days if days else None,
            "win_rate": (sum(1 for p in pnl if p > 0) / n) if n else None, "expectancy_pct": mean,
            "trade_return_std_pct": (math.sqrt(sum((x - mean) ** 2 for x in rets) / (n - 1)) if n > 1 else None),
            "profit_factor": _profit_factor(pnl)})
    return _f(out)


def _profit_factor(pnl: list[float]) -> float | None:
    losses = -sum(p for p in pnl if p <= 0)
    return sum(p for p in pnl if p > 0) / losses if losses > 0 else None


def validation_summary(report, gates, data: dict, now_ms: int) -> dict:
    return _f({"passed": bool(report.verdict.passed), "summary": report.verdict.summary()[:2000],
               "reasons": list(report.verdict.reasons),
               "checks": [{"name": c.name, "value": c.value if not isinstance(c.value, bool) else bool(c.value),
                           "threshold": c.threshold, "passed": bool(c.passed), "message": c.message}
                          for c in report.verdict.checks],
               "n_trials": int(report.n_trials), "dsr": report.dsr.dsr if report.dsr else None,
               "pbo": report.pbo.pbo if report.pbo else None, "oos": dict(report.walk_forward.stats),
               "lookahead_ok": report.lookahead.ok if report.lookahead else None,
               "recursive_ok": report.recursive.ok if getattr(report, "recursive", None) else None,
               "purged_cv": report.cv.summary() if getattr(report, "cv", None) else None,
               "gates": gates.model_dump(), "strict_gates": strict_gates(gates),
               "selected_params": report.best_params, "data": data, "validated_ts": int(now_ms)})


def evaluate_candidate(candidate: Candidate, candles: Candles, start: int = 0, stop: int | None = None, *,
                       gates=None, config=None, prior_trials: int = 0, train: int | None = None,
                       test: int | None = None, data: dict | None = None, executor: str = "inline",
                       progress: bool | None = False, now_ms: int | None = None) -> Evaluation:
    """Validate ``candidate``'s grid on bars [start, stop) of ``candles`` (a held-out slice)."""
    import time

    from .backtest import BacktestConfig
    from .validation import Gates, validate_strategy

    stop = len(candles) if stop is None else stop
    ev = Evaluation(candidate, (int(start), int(stop)))
    gates, config = gates or Gates(), config or BacktestConfig()
    part = candles.slice(start, stop)
    try:
        combos = candidate.combos()
        ev.n_combos = len(combos)
        tr, te = walk_forward_sizes(len(part))
        rep = validate_strategy(candidate.strategy, part, combos, train=train or tr, test=test or te,
                                config=config, gates=gates, prior_trials=int(prior_trials), executor=executor,
                                progress=progress)
    except Exception as e:  # a candidate that cannot be validated scores 0
        ev.error = f"{e.__class__.__name__}: {e}"
        return ev
    ev.report = rep
    ev.params = rep.best_params
    ev.passed = bool(rep.verdict.passed)
    sr = rep.walk_forward.stats.get("sharpe")
    ev.score = float(max(0.0, sr)) if ev.passed and sr is not None and math.isfinite(sr) else 0.0
    info = {"bars": len(part), "timeframe_minutes": candles.timeframe_ms / 60_000,
            "start_ts": int(part.ts[0]) if len(part) else None, "end_ts": int(part.ts[-1]) if len(part) else None,
            **(data or {})}
    ev.validation = validation_summary(rep, gates, info, now_ms or int(time.time() * 1000))
    try:
        ev.expected = expected_metrics(rep, part, config)
    except Exception as e:
        ev.expected = None
        ev.error = f"expected metrics: {e.__class__.__name__}: {e}"
    return ev
