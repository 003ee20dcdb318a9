"""Research -> backtest -> validate -> registry.

``run_research(candles, notes, ...)``:

1. cuts the candles into an in-sample part (the first ``1 - holdout`` share) and a held-out part;
2. computes the market statistics (:mod:`.marketstats`) on the in-sample part only;
3. asks for candidates: the DSPy research program (:mod:`.program`) when a model is configured, else
   the deterministic proposer (:mod:`.proposer`); both pass :func:`.proposer.sanitize`;
4. validates each candidate on the HELD-OUT part with :func:`qts.research.validation.validate_strategy`
   (its own sweep, deflated Sharpe with every combination of every candidate counted as a trial,
   PBO, walk-forward, look-ahead check, judged by the gates);
5. adds the survivors to the strategy registry as ``backtested`` (nothing else: no other stage, no
   setting, no limit is reachable from here), with their expected out-of-sample metrics.

Each candidate is judged by :func:`.evaluation.evaluate_candidate`, which is also the optimizer's
metric (:func:`.program.make_metric`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..market.candles import Candles
from .evaluation import Evaluation, evaluate_candidate, expected_metrics, validation_summary, walk_forward_sizes
from .proposer import Candidate, Refusal


@dataclass
class ResearchResult:
    source: str
    stats: object
    candidates: list[Candidate]
    refused: list[Refusal]
    evaluations: list[Evaluation]
    registered: list[str]
    warnings: list[str]
    notes_sha256: str
    cut: int
    n_bars: int

    def as_dict(self) -> dict:
        return {"source": self.source, "stats": self.stats.model_dump(), "notes_sha256": self.notes_sha256,
                "in_sample_bars": self.cut, "held_out_bars": self.n_bars - self.cut,
                "candidates": [c.model_dump(mode="json") for c in self.candidates],
                "refused": [r.model_dump(mode="json") for r in self.refused],
                "evaluations": [e.as_dict() for e in self.evaluations], "registered": self.registered,
                "warnings": self.warnings}


def split_holdout(n_bars: int, holdout: float) -> int:
    """Index of the first held-out bar."""
    if not 0.05 <= holdout <= 0.95:
        raise ValueError(f"holdout: a share between 0.05 and 0.95, got {holdout}")
    cut = int(round(n_bars * (1 - holdout)))
    if cut < 3 or n_bars - cut < 20:
        raise ValueError(f"{n_bars} candles are too few to keep {holdout:.0%} held out (need 3+ in-sample and "
                         "20+ held-out bars)")
    return cut


def register(home, ev: Evaluation, *, symbol: str | None, timeframe_minutes: float, source: str,
             notes_sha256: str | None, now_ms: int | None = None):
    """Add a passed evaluation to the registry as ``backtested`` (the only stage research can reach)."""
    from ..registry import Expected, Provenance, Registry, ValidationSummary

    if not ev.passed or ev.params is None:
        raise ValueError("only a candidate that passed the gates is registered")
    reg = Registry.load(home)
    return reg.add(strategy=ev.candidate.strategy, params=ev.params, stage="backtested", symbol=symbol,
                   timeframe_minutes=timeframe_minutes,
                   expected=Expected.model_validate({k: v for k, v in (ev.expected or {}).items()
                                                     if k in Expected.model_fields}),
                   validation=ValidationSummary.model_validate(ev.validation),
                   grid={k: list(v) for k, v in ev.candidate.grid().items()},
                   provenance=Provenance(source=source, notes_sha256=notes_sha256, rationale=ev.candidate.rationale,
                                         risks=list(ev.candidate.risks)), now=now_ms)


def run_research(candles: Candles, notes: str, *, symbol: str | None = None, model: str | None = None,
                 program=None, lm=None, seed: int = 0, holdout: float = 0.4, gates=None, config=None,
                 max_candidates: int = 4, home=None, synthetic: bool = False, data_source: str | None = None,
                 executor: str = "inline", on_progress=None, now_ms: int | None = None) -> ResearchResult:
    """The whole pipeline (see the module docstring). ``home``: register survivors there (None: don't).
    ``model``/``lm``/``program``: use the DSPy program (else the deterministic proposer). A model that
    fails (network, unparsable answer) falls back to the proposer with a warning."""
    from . import proposer
    from .marketstats import market_stats

    say = on_progress or (lambda msg: None)
    notes = notes or ""
    notes_sha = hashlib.sha256(notes.encode("utf-8", "replace")).hexdigest()
    n = len(candles)
    cut = split_holdout(n, holdout)
    stats = market_stats(candles.slice(0, cut), symbol)
    warnings: list[str] = []
    refused: list[Refusal] = []
    cands: list[Candidate] = []
    source = f"proposer(seed={seed})"
    if model or lm is not None or program is not None:
        from .program import propose_with_model

        say(f"asking the research model {model or getattr(lm, 'model', '(configured)')} for candidates ...")
        try:
            cands, refused, source = propose_with_model(notes, stats, model=model, lm=lm, program=program,
                                                        max_candidates=max_candidates)
        except Exception as e:
            warnings.append(f"research model failed ({e.__class__.__name__}: {str(e)[:300]}); "
                            "fell back to the deterministic proposer")
            cands = []
            source = f"proposer(seed={seed})"
        if not cands and not warnings:
            warnings.append("the research model proposed no usable candidate; fell back to the deterministic "
                            "proposer")
        if not cands:
            source = f"proposer(seed={seed})"
    if not cands:
        cands = proposer.propose(stats, seed=seed, limit=max_candidates)
    for c in cands:
        if c.violations:
            warnings.append(f"{c.strategy}: the proposal was corrected: " + "; ".join(c.violations))
    combos = [len(c.combos()) for c in cands]
    total = sum(combos)
    evals: list[Evaluation] = []
    data = {"symbol": symbol, "synthetic": bool(synthetic), "source": data_source}
    for i, (c, m) in enumerate(zip(cands, combos), 1):
        say(f"[{i}/{len(cands)}] validating {c.describe()}  ({m} combinations, held-out bars {cut}..{n})")
        ev = evaluate_candidate(c, candles, cut, n, gates=gates, config=config, prior_trials=total - m, data=data,
                                executor=executor, now_ms=now_ms)
        evals.append(ev)
        say(f"      {'PASS' if ev.passed else 'FAIL'}" + (f": {ev.error}" if ev.error else "") +
            ("" if ev.passed or not ev.validation else ": " + "; ".join(ev.validation["reasons"])[:300]))
    registered = []
    if home is not None:
        for ev in evals:
            if ev.passed and ev.params is not None:
                e = register(home, ev, symbol=symbol, timeframe_minutes=candles.timeframe_ms / 60_000, source=source,
                             notes_sha256=notes_sha, now_ms=now_ms)
                registered.append(e.id)
    return ResearchResult(source, stats, cands, refused, evals, registered, warnings, notes_sha, cut, n)


def revalidate_entry(home, entry_id: str, candles: Candles, *, gates=None, config=None, data: dict | None = None,
                     train: int | None = None, test: int | None = None, executor: str = "auto",
                     progress: bool | None = None, now_ms: int | None = None):
    """Validate a registry entry again on ``candles`` (its recorded grid, or a small neighbourhood of its
    parameters) and record the result on THAT entry: a pass renews its expiry and expectations (trade
    figures for its own parameters); a failure is recorded, blocks promotions, and takes a live-ramp /
    live entry back to paper. Returns (entry, report)."""
    import time

    from ..registry import Expected, Registry, ValidationSummary
    from .backtest import BacktestConfig
    from .proposer import neighbourhood
    from .validation import Gates, validate_strategy

    from ..registry import RegistryError

    reg = Registry.load(home)
    e = reg.get(entry_id)
    if e.stage == "retired":
        raise RegistryError(f"{entry_id} is retired: retired entries are not re-validated")
    gates, config = gates or Gates(), config or BacktestConfig()
    grid = {k: list(v) for k, v in (e.grid or {}).items()}
    if not grid:
        grid = neighbourhood(e.strategy, e.params)
    for k, v in e.params.items():  # the entry's own parameters are always among the trials
        if k in grid and v not in grid[k]:
            grid[k] = sorted(grid[k] + [v])
    tr, te = walk_forward_sizes(len(candles))
    rep = validate_strategy(e.strategy, candles, grid, train=train or tr, test=test or te, config=config,
                            gates=gates, executor=executor, progress=progress)
    info = {"bars": len(candles), "timeframe_minutes": candles.timeframe_ms / 60_000,
            "start_ts": int(candles.ts[0]), "end_ts": int(candles.ts[-1]), **(data or {})}
    now = now_ms or int(time.time() * 1000)
    summary = validation_summary(rep, gates, info, now)
    exp = expected_metrics(rep, candles, config, params=e.params)
    out = reg.add(strategy=e.strategy, params=e.params, stage="backtested", symbol=e.symbol,
                  timeframe_minutes=e.timeframe_minutes,
                  expected=Expected.model_validate({k: v for k, v in exp.items() if k in Expected.model_fields}),
                  validation=ValidationSummary.model_validate(summary), grid=grid, now=now)
    return out, rep
