"""Strategy candidates, the one choke point every proposal passes, and the deterministic proposer.

A candidate is a registered strategy plus a RANGE per parameter (low, high, number of values), a
rationale and a list of risks: nothing else. Wherever a proposal comes from (the DSPy research
program reading untrusted notes, or :func:`propose` below), it becomes a :class:`Candidate` only
through :func:`sanitize`, which

- keeps only the known fields (``strategy``, ``param_ranges``, ``rationale``, ``risks``); anything
  else a model wrote (``stage``, ``MAX_POSITION_SIZE``, ``mode``, "promote to live", ...) is dropped
  and listed in ``violations``: there is no field through which it could act;
- refuses strategies that are not registered in :data:`qts.strategies.STRATEGIES`;
- drops parameters the strategy does not have, clips every range to the bounds of the strategy's own
  pydantic ``Params`` (``ge``/``gt``/``le``/``lt``), rounds integer parameters, fills missing ones with
  their default, caps the number of values per parameter and the size of the grid;
- refuses a candidate whose grid has no combination the strategy accepts (e.g. fast >= slow).

:func:`propose` is the offline proposer: seeded, deterministic grid proposals for every registered
strategy, shaped by the market statistics (:mod:`.marketstats`). Same statistics and seed, same
candidates.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..strategies import STRATEGIES

MAX_VALUES_PER_PARAM = 8
MAX_COMBOS = 64
DEFAULT_STEPS = 4
MAX_RATIONALE_CHARS = 2000
MAX_RISKS = 8
MAX_RISK_CHARS = 400
CANDIDATE_FIELDS = ("strategy", "param_ranges", "rationale", "risks")
RANGE_FIELDS = ("low", "high", "steps")

_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def clean_text(s: Any, limit: int) -> str:
    """Plain text: control and bidi characters removed, at most ``limit`` characters."""
    s = _CTRL.sub("", str(s if s is not None else ""))
    return s[:limit].strip()


# -- parameter bounds from the strategies' own Params models -----------------------------------------

class Bound(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    kind: str                  # "int" | "float"
    low: float                 # inclusive, after turning gt into the next representable value used
    high: float
    default: float
    description: str = ""


def param_bounds(strategy: str) -> dict[str, Bound]:
    """{parameter: Bound} read from the strategy's Params field constraints (ge/gt/le/lt)."""
    Params = STRATEGIES[strategy].Params
    out = {}
    for name, f in Params.model_fields.items():
        if f.annotation not in (int, float):
            raise ValueError(f"{strategy}.{name}: not a number, so no grid around it; {strategy} is built and "
                             f"validated by the edge factory (qts research edges)")
        kind = "int" if f.annotation is int else "float"
        lo, hi = -math.inf, math.inf
        for m in f.metadata:
            for attr, inclusive, is_low in (("ge", True, True), ("gt", False, True), ("le", True, False),
                                            ("lt", False, False)):
                v = getattr(m, attr, None)
                if v is None:
                    continue
                v = float(v)
                if not inclusive:
                    step = 1.0 if kind == "int" else max(1e-3, abs(v) * 1e-6)
                    v = v + step if is_low else v - step
                if is_low:
                    lo = max(lo, v)
                else:
                    hi = min(hi, v)
        if not math.isfinite(lo):
            lo = -1e9
        if not math.isfinite(hi):
            hi = 1e9
        out[name] = Bound(name=name, kind=kind, low=lo, high=hi, default=float(f.default),
                          description=f.description or "")
    return out


def neighbourhood(strategy: str, params: dict) -> dict[str, list]:
    """A small grid around ``params`` (x0.75, x1, x1.25 per parameter, clipped to its bounds; a missing parameter
    takes its default): what a validation judges when no grid was given, since a lone point cannot show
    overfitting. Used by ``qts backtest --validate`` and ``registry revalidate``."""
    out = {}
    for k, b in param_bounds(strategy).items():
        v = params.get(k, b.default)
        vals = {v}
        if v:
            for m in (0.75, 1.25):
                x = min(max(v * m, b.low), b.high)
                vals.add(int(round(x)) if b.kind == "int" else round(x, 6))
        out[k] = sorted(vals)
    return out


def proposable() -> list[str]:
    """Registered strategies whose parameters are all numbers (what a grid proposal can range over);
    ``edge_meta`` (a fitted model as parameters) comes from the edge factory instead."""
    return sorted(n for n, s in STRATEGIES.items()
                  if all(f.annotation in (int, float) for f in s.Params.model_fields.values()))


def catalog() -> list[dict]:
    """The registered strategies, their descriptions and parameter bounds (what a proposer may use)."""
    out = []
    for name in proposable():
        doc = (STRATEGIES[name].__doc__ or "").strip().splitlines()
        out.append({"strategy": name, "description": doc[0] if doc else "",
                    "parameters": {k: {"type": b.kind, "min": _num(b.low), "max": _num(b.high),
                                       "default": _num(b.default)} for k, b in param_bounds(name).items()}})
    return out


def _num(v: float):
    return int(v) if float(v).is_integer() else round(float(v), 6)


# -- the candidate ------------------------------------------------------------------------------------

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class ParamRange(BaseModel):
    """Values ``low .. high`` in ``steps`` evenly spaced values (integers rounded, duplicates removed)."""

    model_config = _FROZEN

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    steps: int = Field(1, ge=1, le=MAX_VALUES_PER_PARAM)

    def values(self, kind: str) -> list:
        n = 1 if self.high == self.low else self.steps
        xs = np.linspace(self.low, self.high, n)
        if kind == "int":
            return sorted({int(round(x)) for x in xs})
        return sorted({float(f"{x:.6g}") for x in xs})


class Candidate(BaseModel):
    """A validated proposal: only these fields exist."""

    model_config = _FROZEN

    strategy: str
    ranges: dict[str, ParamRange]
    rationale: str = Field("", max_length=MAX_RATIONALE_CHARS)
    risks: tuple[str, ...] = Field((), max_length=MAX_RISKS)
    source: str = Field("proposer", max_length=200)
    adjustments: tuple[str, ...] = ()   # benign changes (defaults filled, grid capped)
    violations: tuple[str, ...] = ()    # what the proposal tried that is not allowed (dropped/clipped)

    @field_validator("strategy")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; allowed: {', '.join(sorted(STRATEGIES))}")
        return v

    def grid(self) -> dict[str, list]:
        b = param_bounds(self.strategy)
        return {k: r.values(b[k].kind) for k, r in self.ranges.items()}

    def combos(self) -> list[dict]:
        """The valid parameter combinations (the strategy's own validation applied)."""
        from .sweep import expand_grid

        return expand_grid(self.strategy, self.grid())[0]

    @property
    def clean(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        g = self.grid()
        parts = [f"{k}={v[0]}" if len(v) == 1 else f"{k}={v[0]}..{v[-1]} ({len(v)})" for k, v in g.items()]
        return f"{self.strategy}  " + "  ".join(parts)


class Refusal(BaseModel):
    model_config = _FROZEN

    strategy: str | None
    reason: str
    violations: tuple[str, ...] = ()


def _as_float(v) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _raw_range(v) -> tuple[dict | None, list[str]]:
    """A proposal's range in any of the shapes a model writes: {low, high, steps}, [a, b, ...], a number."""
    notes = []
    if isinstance(v, BaseModel):
        v = v.model_dump()
    if isinstance(v, dict):
        extra = sorted(set(map(str, v)) - set(RANGE_FIELDS))
        if extra:
            notes.append(f"ignored range field(s) {', '.join(extra)}")
        lo, hi = _as_float(v.get("low")), _as_float(v.get("high"))
        steps = v.get("steps")
        if lo is None and hi is None:
            return None, notes
        lo = hi if lo is None else lo
        hi = lo if hi is None else hi
        return {"low": lo, "high": hi, "steps": steps}, notes
    if isinstance(v, (list, tuple)):
        xs = [x for x in (_as_float(x) for x in v) if x is not None]
        if not xs:
            return None, notes
        return {"low": min(xs), "high": max(xs), "steps": len(set(xs))}, notes
    x = _as_float(v)
    return ({"low": x, "high": x, "steps": 1} if x is not None else None), notes


def sanitize(raw: dict | BaseModel, source: str = "proposer", max_combos: int = MAX_COMBOS) -> Candidate | Refusal:
    """The choke point: a raw proposal (dict or model, possibly hostile) -> Candidate or Refusal."""
    if isinstance(raw, BaseModel):
        raw = raw.model_dump()
    if not isinstance(raw, dict):
        return Refusal(strategy=None, reason="a candidate must be an object")
    violations: list[str] = []
    adjustments: list[str] = []
    extra = sorted(str(k) for k in raw if k not in CANDIDATE_FIELDS)
    if extra:
        violations.append(f"ignored field(s) {', '.join(extra)}: a candidate has only "
                          f"{', '.join(CANDIDATE_FIELDS)}")
    name = clean_text(raw.get("strategy"), 64).lower()
    if name not in proposable():
        return Refusal(strategy=name or None, reason=f"unknown strategy {name!r}; allowed: "
                                                     f"{', '.join(proposable())}",
                       violations=tuple(violations))
    bounds = param_bounds(name)
    given = raw.get("param_ranges")
    if given is None:
        given = {}
    if isinstance(given, BaseModel):
        given = given.model_dump()
    if not isinstance(given, dict):
        violations.append("param_ranges is not an object: defaults used")
        given = {}
    ranges: dict[str, ParamRange] = {}
    for pname, v in given.items():
        pname = str(pname)
        if pname not in bounds:
            violations.append(f"ignored parameter {clean_text(pname, 40)!r}: not a parameter of {name}")
            continue
        b = bounds[pname]
        r, notes = _raw_range(v)
        violations += [f"{pname}: {n}" for n in notes]
        if r is None:
            violations.append(f"{pname}: no usable number, default {_num(b.default)} used")
            continue
        lo, hi = sorted((r["low"], r["high"]))
        if lo < b.low or hi > b.high:
            violations.append(f"{pname}: range {_num(lo)}..{_num(hi)} clipped to the bounds "
                              f"{_num(b.low)}..{_num(b.high)}")
            lo, hi = min(max(lo, b.low), b.high), max(min(hi, b.high), b.low)
        if b.kind == "int":
            lo, hi = float(math.ceil(lo - 1e-9)), float(math.floor(hi + 1e-9))
            if lo > hi:
                lo = hi = float(round((lo + hi) / 2))
        steps = r.get("steps")
        steps = int(steps) if _as_float(steps) is not None else (1 if lo == hi else DEFAULT_STEPS)
        if steps < 1 or steps > MAX_VALUES_PER_PARAM:
            adjustments.append(f"{pname}: {steps} values capped to 1..{MAX_VALUES_PER_PARAM}")
            steps = min(max(steps, 1), MAX_VALUES_PER_PARAM)
        if b.kind == "int":
            steps = min(steps, int(hi - lo) + 1)
        ranges[pname] = ParamRange(low=lo, high=hi, steps=1 if lo == hi else max(steps, 2))
    for pname, b in bounds.items():
        if pname not in ranges:
            ranges[pname] = ParamRange(low=b.default, high=b.default, steps=1)
            adjustments.append(f"{pname}: not proposed, default {_num(b.default)} used")
    ranges = {k: ranges[k] for k in bounds}  # the strategy's own order
    while math.prod(r.steps for r in ranges.values()) > max_combos:
        k = max(ranges, key=lambda k: (ranges[k].steps, k))
        ranges[k] = ranges[k].model_copy(update={"steps": ranges[k].steps - 1})
        adjustments.append(f"{k}: fewer values to keep the grid within {max_combos} combinations")
    risks_raw = raw.get("risks") or []
    if isinstance(risks_raw, str):
        risks_raw = [risks_raw]
    risks = tuple(t for t in (clean_text(x, MAX_RISK_CHARS) for x in list(risks_raw)[:MAX_RISKS]) if t)
    cand = Candidate(strategy=name, ranges=ranges, rationale=clean_text(raw.get("rationale"), MAX_RATIONALE_CHARS),
                     risks=risks, source=clean_text(source, 200), adjustments=tuple(_dedupe(adjustments)),
                     violations=tuple(violations))
    if not cand.combos():
        return Refusal(strategy=name, reason="no parameter combination in these ranges is valid for "
                                             f"{name} ({cand.describe()})", violations=tuple(violations))
    return cand


def _dedupe(xs: list[str]) -> list[str]:
    seen, out = set(), []
    for x in xs:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


# -- the deterministic proposer ---------------------------------------------------------------------

def _jitter(rng, x: float, spread: float = 0.15) -> float:
    return round(x * float(rng.uniform(1 - spread, 1 + spread)), 2)


def _templates(stats, rng) -> dict[str, dict]:
    """Raw proposals per strategy, scaled to the data's bars per day and its volatility."""
    bpd = max(1.0, stats.bars_per_day)
    day = max(4.0, bpd)                       # one day of bars
    hv = stats.regime_shares.get("high_vol", 0.0)
    wide = 1.0 + min(0.5, hv)                 # wider bands in stormier markets
    return {
        "sma_cross": {"fast": {"low": _jitter(rng, day / 8), "high": _jitter(rng, day / 2), "steps": 4},
                      "slow": {"low": _jitter(rng, day), "high": _jitter(rng, day * 3), "steps": 3}},
        "rsi_reversion": {"period": {"low": 7, "high": _jitter(rng, 21), "steps": 3},
                          "lower": {"low": _jitter(rng, 20 / wide), "high": _jitter(rng, 35), "steps": 3},
                          "upper": {"low": _jitter(rng, 50), "high": _jitter(rng, 65), "steps": 2}},
        "bollinger_reversion": {"window": {"low": _jitter(rng, day / 2), "high": _jitter(rng, day * 2), "steps": 4},
                                "k": {"low": _jitter(rng, 1.5 * wide), "high": _jitter(rng, 2.5 * wide), "steps": 3}},
        "zscore_reversion": {"window": {"low": _jitter(rng, day / 2), "high": _jitter(rng, day * 2), "steps": 4},
                             "entry_z": {"low": _jitter(rng, 1.5 * wide), "high": _jitter(rng, 2.5 * wide), "steps": 3},
                             "exit_z": {"low": 0.0, "high": _jitter(rng, 0.5), "steps": 2}},
    }


def _scores(stats) -> dict[str, float]:
    """How well the market statistics suit each family: trend-following likes trending windows and
    positive autocorrelation, mean reversion likes range-bound windows and negative autocorrelation."""
    trend = stats.regime_shares.get("trend_up", 0.0) + stats.regime_shares.get("trend_down", 0.0)
    rng_share = stats.regime_shares.get("range", 0.0)
    ac = stats.autocorr_lag1 or 0.0
    vr = (stats.variance_ratio or 1.0) - 1.0
    t = trend + 5 * ac + vr
    m = rng_share - 5 * ac - vr
    return {"sma_cross": t, "rsi_reversion": m, "bollinger_reversion": m - 0.01, "zscore_reversion": m - 0.02}


def propose(stats, seed: int = 0, strategies: list[str] | None = None, max_combos: int = MAX_COMBOS,
            limit: int | None = None) -> list[Candidate]:
    """Seeded grid proposals for each registered strategy (or ``strategies``), best-suited first.
    Deterministic: the same statistics and seed give the same candidates."""
    names = sorted(strategies or proposable())
    scores = _scores(stats)
    out = []
    for name in names:
        if name not in proposable():
            continue
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])
        tpl = _templates(stats, rng).get(name)
        if tpl is None:  # a strategy without a template: a small grid around its defaults
            tpl = {k: {"low": b.default * 0.75, "high": b.default * 1.25, "steps": 3} if b.default else
                   {"low": b.default, "high": b.default} for k, b in param_bounds(name).items()}
        why = (f"offline proposal for {stats.symbol or 'the market'}: trend share "
               f"{100 * (stats.regime_shares.get('trend_up', 0) + stats.regime_shares.get('trend_down', 0)):.0f}%, "
               f"range share {100 * stats.regime_shares.get('range', 0):.0f}%, lag-1 autocorrelation "
               f"{(stats.autocorr_lag1 or 0):+.3f}, variance ratio {(stats.variance_ratio or 1):.2f}; "
               f"windows scaled to {stats.bars_per_day:g} bars per day")
        risks = ["regime change: the statistics describe the in-sample period only",
                 "costs: fees and slippage can erase a small edge",
                 "selection bias: the gates deflate the Sharpe ratio for every combination tried"]
        c = sanitize({"strategy": name, "param_ranges": tpl, "rationale": why, "risks": risks},
                     source=f"proposer(seed={seed})", max_combos=max_combos)
        if isinstance(c, Candidate):
            out.append((scores.get(name, 0.0), name, c))
    out.sort(key=lambda t: (-t[0], t[1]))
    cands = [c for _, _, c in out]
    return cands[:limit] if limit else cands
