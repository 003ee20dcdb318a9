"""Paper validation, the live ramp, promotions with the PIN, automatic demotion, capital fractions.

**Realized results** of an entry are the ``closed_trades`` rows of its strategy name in the state
database (mode ``paper`` while in paper, ``live`` while in a live stage) whose trade OPENED after the
entry reached its current stage (paper) or ramp step (live-ramp / live), and closed by ``now``.
Returns are per trade (``return_pct``: P&L after fees over the cost of entry), so they do not depend on
the position size and compare directly with the backtest's closed-trade returns.

**Within tolerance** (:class:`Tolerance`, every number a field): with ``n`` realized trades of mean
return ``m`` and the expectation's mean trade return ``mu`` and per-trade standard deviation
``sigma`` (both from the validation's out-of-sample backtest),

- ``m >= mu - k_sigma * sigma / sqrt(n)``: the realized mean is not significantly worse than expected
  (k_sigma = 2: about a 2.3% one-sided false alarm rate if the expectation holds);
- the realized max drawdown (trade returns compounded in exit order) is at most
  ``max_dd_multiple`` (1.5) x the expected OOS max drawdown (at least ``dd_floor_pct``).

**Paper -> live-ramp** is possible ("eligible") when the entry has been in paper ``min_paper_days`` (7)
or more, has ``min_trades`` (5) or more realized paper trades, they are within tolerance, its paper
decisions used the registered parameters, its validation is unexpired, passed under the default
(strict) gates and on real (not synthetic) data. Then the human approves with the PIN.

**The ramp**: 10% -> 25% -> 50% -> 100% of the strategy's allocation (:data:`RAMP_STEPS`), each step
held at least :data:`RAMP_MIN_DAYS` (7, 7, 14, 7 days) with ``min_trades`` live trades within tolerance
and no breaker trip since the step began, before the next step (or, from 100%, ``live``); each step
up is a new PIN approval. :func:`supervise` demotes a live-ramp / live entry to paper by itself (no
PIN: reducing risk is free) when a ``breaker`` event with state ``open`` was recorded after its step
began, or when its realized live trades (``drift_min_trades`` or more) leave the tolerance.

:func:`capital_fraction` is what the trading loop multiplies a live allocation by: 0 unless the
strategy's entry is in live-ramp / live AND carries a PIN-signed authorization for exactly that entry,
parameters, stage and step AND (with the database) no breaker trip or demotion since it was signed.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass, field
from itertools import accumulate

from pydantic import BaseModel, ConfigDict, Field

from ..paths import StateHome
from .core import (Registry, RegistryCorrupt, RegistryError, authorization_payload, now_ms,
                   verify_authorization)
from .models import DAY_MS, LIVE_STAGES, RAMP_MIN_DAYS, RAMP_STEPS, Entry


class PromotionError(RegistryError):
    """A promotion was refused; ``reasons`` lists every unmet condition."""

    def __init__(self, message: str, reasons: list[str] | None = None):
        self.reasons = reasons or []
        super().__init__(message + ("".join(f"\n  - {r}" for r in self.reasons) if self.reasons else ""))


class Tolerance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_paper_days: float = Field(7.0, ge=0, description="days in paper before live can be considered")
    min_trades: int = Field(5, ge=1, description="realized trades needed to judge a stage or step")
    k_sigma: float = Field(2.0, ge=0, description="realized mean trade return >= expected - k * sigma / sqrt(n)")
    max_dd_multiple: float = Field(1.5, ge=1, description="realized drawdown <= this x expected drawdown")
    dd_floor_pct: float = Field(2.0, gt=0, description="an expected drawdown below this counts as this")
    drift_min_trades: int = Field(3, ge=1, description="live trades before drift can demote a strategy")
    ramp_min_days: tuple[float, ...] = RAMP_MIN_DAYS


@dataclass
class Realized:
    mode: str
    since_ts: int
    n_trades: int = 0
    mean_return_pct: float | None = None
    std_return_pct: float | None = None
    win_rate: float | None = None
    max_drawdown_pct: float = 0.0
    pnl: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Check:
    name: str
    passed: bool
    message: str


@dataclass
class Assessment:
    entry_id: str
    target: str
    eligible: bool
    checks: list[Check] = field(default_factory=list)
    realized: Realized | None = None
    next_step: int | None = None

    @property
    def reasons(self) -> list[str]:
        return [c.message for c in self.checks if not c.passed]

    def as_dict(self) -> dict:
        return {"entry_id": self.entry_id, "target": self.target, "eligible": self.eligible,
                "next_step": self.next_step, "checks": [c.__dict__ for c in self.checks],
                "realized": self.realized.as_dict() if self.realized else None}


# -- realized results -------------------------------------------------------------------------------

def realized(store, strategy: str, mode: str, since_ms: int, until_ms: int) -> Realized:
    rows = store.query("SELECT return_pct, pnl FROM closed_trades WHERE mode=? AND strategy=? AND entry_ts>=? "
                       "AND exit_ts<=? ORDER BY exit_ts, id", (mode, strategy, int(since_ms), int(until_ms)))
    out = Realized(mode, int(since_ms), len(rows))
    if not rows:
        return out
    r = [float(x["return_pct"]) for x in rows]
    out.mean_return_pct = sum(r) / len(r)
    out.std_return_pct = (math.sqrt(sum((x - out.mean_return_pct) ** 2 for x in r) / (len(r) - 1))
                          if len(r) > 1 else 0.0)
    out.win_rate = sum(1 for x in rows if x["pnl"] > 0) / len(rows)
    out.pnl = float(sum(x["pnl"] for x in rows))
    from ..returns import max_drawdown

    eq = list(accumulate((1 + x / 100 for x in r), operator.mul))  # one unit compounded in exit order
    out.max_drawdown_pct = 100 * max_drawdown(eq, 1.0)[0]
    return out


def breaker_trips_since(store, since_ms: int) -> list[dict]:
    """'breaker' events whose recorded state is open, at or after ``since_ms``."""
    out = []
    for row in store.query("SELECT ts, message, data FROM events WHERE kind='breaker' AND ts>=? ORDER BY id",
                           (int(since_ms),)):
        try:
            state = json.loads(row["data"]).get("state")
        except Exception:
            state = "open"  # an unreadable breaker record counts as a trip
        if state == "open":
            out.append({"ts": row["ts"], "message": row["message"]})
    return out


def within_tolerance(entry: Entry, r: Realized, tol: Tolerance) -> list[Check]:
    """The two performance checks (see the module docstring)."""
    exp = entry.expected
    checks = []
    mu = exp.expectancy_pct if exp else None
    sigma = exp.trade_return_std_pct if exp else None
    if mu is None:
        checks.append(Check("expected_return", False, "no expected trade return recorded: cannot judge realized "
                                                      "results (re-validate)"))
    elif r.n_trades == 0:
        checks.append(Check("mean_return", False, "no realized trades yet"))
    else:
        if sigma is None:
            sigma = r.std_return_pct or 0.0
        thr = mu - tol.k_sigma * sigma / math.sqrt(r.n_trades)
        ok = r.mean_return_pct >= thr
        checks.append(Check("mean_return", ok, f"realized mean trade return {r.mean_return_pct:+.3f}% "
                                               f"{'>=' if ok else '<'} expected {mu:+.3f}% - {tol.k_sigma:g} x "
                                               f"{sigma:.3f}% / sqrt({r.n_trades}) = {thr:+.3f}%"))
    exp_dd = exp.max_drawdown_pct if exp and exp.max_drawdown_pct is not None else None
    limit = tol.max_dd_multiple * max(exp_dd or 0.0, tol.dd_floor_pct)
    ok = r.max_drawdown_pct <= limit
    checks.append(Check("drawdown", ok, f"realized drawdown {r.max_drawdown_pct:.2f}% {'<=' if ok else '>'} "
                                        f"{tol.max_dd_multiple:g} x expected "
                                        f"{(exp_dd if exp_dd is not None else 0):.2f}% (floor {tol.dd_floor_pct:g}%) "
                                        f"= {limit:.2f}%"))
    return checks


def _params_checks(store, entry: Entry, since: int) -> list[Check]:
    rows = store.query("SELECT DISTINCT json_extract(inputs, '$.params') AS p FROM decisions WHERE mode='paper' "
                       "AND strategy=? AND ts>=?", (entry.strategy, since))
    seen = []
    for row in rows:
        try:
            seen.append(json.loads(row["p"]) if row["p"] else None)
        except ValueError:
            seen.append(None)
    if not seen:
        return []
    bad = [p for p in seen if p != entry.params]
    if bad:
        return [Check("params", False, f"paper decisions used other parameters {bad[0]} than the registered "
                                       f"{entry.params}: restart paper with the registered ones")]
    return [Check("params", True, "paper decisions used the registered parameters")]


def _common_checks(entry: Entry, now: int) -> list[Check]:
    out = []
    v = entry.validation
    out.append(Check("fresh", not entry.expired(now),
                     "validation unexpired" if not entry.expired(now) else
                     "validation expired: re-validate before any promotion"))
    out.append(Check("validated", bool(v and v.passed), "validation passed" if v and v.passed else
                     "no passed validation on record"))
    out.append(Check("strict_gates", bool(v and v.strict_gates), "validated under the default gates" if v and
                     v.strict_gates else "validated with gates looser than the defaults: live needs the default gates"))
    real = bool(v and not v.data.synthetic)
    out.append(Check("real_data", real, "validated on real market data" if real else
                     "validated on SYNTHETIC data: live needs real market data"))
    return out


def paper_assessment(store, entry: Entry, now: int | None = None, tol: Tolerance | None = None) -> Assessment:
    """Is this paper entry eligible for the live ramp? (The rule in the module docstring.)"""
    now, tol = int(now or now_ms()), tol or Tolerance()
    a = Assessment(entry.id, "live-ramp", False, next_step=0)
    if entry.stage != "paper":
        a.checks.append(Check("stage", False, f"it is {entry.stage_label()}, not paper"))
        return a
    since = entry.stage_since_ts
    days = (now - since) / DAY_MS
    a.checks.append(Check("paper_days", days >= tol.min_paper_days,
                          f"{days:.1f} days in paper {'>=' if days >= tol.min_paper_days else '<'} "
                          f"{tol.min_paper_days:g} required"))
    r = realized(store, entry.strategy, "paper", since, now)
    a.realized = r
    a.checks.append(Check("trades", r.n_trades >= tol.min_trades,
                          f"{r.n_trades} realized paper trades {'>=' if r.n_trades >= tol.min_trades else '<'} "
                          f"{tol.min_trades} required"))
    a.checks += within_tolerance(entry, r, tol)
    a.checks += _params_checks(store, entry, since)
    a.checks += _common_checks(entry, now)
    a.eligible = all(c.passed for c in a.checks)
    return a


def ramp_assessment(store, entry: Entry, now: int | None = None, tol: Tolerance | None = None) -> Assessment:
    """May this live-ramp entry take its next step (or, at 100%, go live)?"""
    now, tol = int(now or now_ms()), tol or Tolerance()
    last = len(RAMP_STEPS) - 1
    if entry.stage != "live-ramp" or entry.ramp_step is None:
        a = Assessment(entry.id, "live-ramp", False)
        a.checks.append(Check("stage", False, f"it is {entry.stage_label()}, not in the live ramp"))
        return a
    step = entry.ramp_step
    a = Assessment(entry.id, "live" if step == last else "live-ramp", False,
                   next_step=None if step == last else step + 1)
    since = entry.step_since_ts or entry.stage_since_ts
    need = tol.ramp_min_days[min(step, len(tol.ramp_min_days) - 1)]
    days = (now - since) / DAY_MS
    a.checks.append(Check("step_days", days >= need, f"{days:.1f} days at {int(RAMP_STEPS[step] * 100)}% "
                                                     f"{'>=' if days >= need else '<'} {need:g} required"))
    r = realized(store, entry.strategy, "live", since, now)
    a.realized = r
    a.checks.append(Check("trades", r.n_trades >= tol.min_trades,
                          f"{r.n_trades} realized live trades at this step "
                          f"{'>=' if r.n_trades >= tol.min_trades else '<'} {tol.min_trades} required"))
    a.checks += within_tolerance(entry, r, tol)
    trips = breaker_trips_since(store, since)
    a.checks.append(Check("breaker", not trips, "no breaker trip since the step began" if not trips else
                          f"the breaker opened {len(trips)} time(s) since the step began"))
    a.checks += _common_checks(entry, now)
    a.eligible = all(c.passed for c in a.checks)
    return a


def promotion_check(registry: Registry, store, eid: str, to: str, now: int | None = None,
                    tol: Tolerance | None = None) -> Assessment:
    """Every condition of promoting ``eid`` to ``to`` except the PIN (no side effects)."""
    now = int(now or now_ms())
    e = registry.get(eid)
    if to == "paper":
        a = Assessment(eid, "paper", False)
        a.checks.append(Check("stage", e.stage == "backtested", f"it is {e.stage_label()}" +
                              ("" if e.stage == "backtested" else ": only a backtested entry goes to paper")))
        a.checks.append(Check("fresh", not e.expired(now), "validation unexpired" if not e.expired(now) else
                              "validation expired: re-validate before any promotion"))
        ok = bool(e.validation and e.validation.passed)
        a.checks.append(Check("validated", ok, "validation passed" if ok else "no passed validation on record"))
        other = registry.active_for(e.strategy)
        if other is not None and other.id != e.id:
            a.checks.append(Check("one_active", False, f"{other.id} already runs {e.strategy} in {other.stage}"))
        a.eligible = all(c.passed for c in a.checks)
        return a
    if to == "live-ramp" and e.stage == "paper":
        return paper_assessment(store, e, now, tol)
    if e.stage == "live-ramp":
        a = ramp_assessment(store, e, now, tol)
        if a.target != to:
            a.checks.append(Check("target", False, f"from {e.stage_label()} the next promotion is to {a.target}"))
            a.eligible = False
        return a
    a = Assessment(eid, to, False)
    a.checks.append(Check("stage", False, f"it is {e.stage_label()}: no promotion to {to} from there"))
    return a


# -- promotion (the PIN) ----------------------------------------------------------------------------

def _event(store, message: str, severity: str, data: dict, now: int) -> None:
    if store is None:
        return
    try:
        store.event("registry", message, severity=severity, data=data, ts=now)
    except Exception:
        pass


def _registry(reg_or_home) -> Registry:
    if isinstance(reg_or_home, Registry):
        return Registry.load(reg_or_home.home)  # always act on the file as it is now
    return Registry.load(reg_or_home)


def promote(reg_or_home, eid: str, to: str, *, store=None, signing_key=None, approval: dict | None = None,
            now: int | None = None, tol: Tolerance | None = None) -> Entry:
    """Promote ``eid`` to ``paper`` (no PIN), ``live-ramp`` (from paper: step 10%; from live-ramp: the
    next step) or ``live`` (from the 100% step). Live stages need the database (realized results) and
    a PIN-signed approval of ACTION_PROMOTE_STRATEGY_LIVE for exactly this entry, stage and step:
    either ``signing_key`` (the unlocked PIN key: the approval is signed here) or ``approval`` (one
    signed earlier). The approval is verified and consumed (single use) before anything changes."""
    from ..safety.grants import ACTION_PROMOTE_STRATEGY_LIVE, sign_approval, use_approval

    now = int(now or now_ms())
    reg = _registry(reg_or_home)
    if not reg.ok:
        raise RegistryCorrupt(reg.problem)
    if to not in ("paper", "live-ramp", "live"):
        raise PromotionError(f"promote: the target is paper, live-ramp or live, not {to!r}")
    if to in LIVE_STAGES and store is None:
        raise PromotionError(f"{eid}: promoting to {to} needs the state database (realized results)")
    a = promotion_check(reg, store, eid, to, now, tol)
    if not a.eligible:
        raise PromotionError(f"{eid} cannot be promoted to {to}:", a.reasons)
    e = reg.get(eid)
    if to == "paper":
        out = reg.transition(eid, "paper", now=now, detail="promoted to paper (no capital at risk)")
        _event(store, f"registry: {eid} promoted to paper", "info",
               {"action": "promote", "entry_id": eid, "from": e.stage, "to": "paper"}, now)
        return out
    payload = authorization_payload(e, to, a.next_step)
    if signing_key is not None:
        approval = sign_approval(reg.home, signing_key, ACTION_PROMOTE_STRATEGY_LIVE, payload, now=now,
                                 announce=getattr(store, "event", None))
    if approval is None:
        raise PromotionError(f"{eid}: {to} needs the human's PIN: run `qts promote {eid} --to {to}` in your own "
                             "terminal")
    used = use_approval(reg.home, approval, ACTION_PROMOTE_STRATEGY_LIVE, now)
    if used is None or used != payload:
        _event(store, f"registry: refused promotion of {eid} to {to}: invalid approval", "warning",
               {"action": "refused", "entry_id": eid, "to": to}, now)
        raise PromotionError(f"{eid}: the approval is missing, forged, expired, already used, or for another "
                             "entry/stage/step: nothing changed")
    out = reg.transition(eid, to, now=now, authorization=approval, ramp_step=a.next_step,
                         detail="promoted with the PIN")
    _event(store, f"registry: {eid} promoted to {out.stage_label()} with the PIN", "warning",
           {"action": "promote", "entry_id": eid, "from": e.stage, "to": to, "ramp_step": out.ramp_step}, now)
    return out


def retire(reg_or_home, eid: str, *, store=None, reason: str = "", now: int | None = None) -> Entry:
    now = int(now or now_ms())
    reg = _registry(reg_or_home)
    e = reg.get(eid)
    out = reg.retire(eid, now=now, reason=reason)
    _event(store, f"registry: {eid} retired" + (f": {reason}" if reason else ""), "info",
           {"action": "retire", "entry_id": eid, "from": e.stage, "to": "retired"}, now)
    return out


# -- automatic demotion -----------------------------------------------------------------------------

def drift_reason(store, entry: Entry, now: int | None = None, tol: Tolerance | None = None) -> str | None:
    """Why a live-ramp / live entry must go back to paper now (None: it may stay)."""
    now, tol = int(now or now_ms()), tol or Tolerance()
    if entry.stage not in LIVE_STAGES:
        return None
    since = entry.step_since_ts or entry.stage_since_ts
    trips = breaker_trips_since(store, since)
    if trips:
        return f"breaker trip since the step began: {trips[0]['message']}"
    r = realized(store, entry.strategy, "live", since, now)
    if r.n_trades >= tol.drift_min_trades:
        bad = [c.message for c in within_tolerance(entry, r, tol) if not c.passed]
        if bad:
            return "drift: " + "; ".join(bad)
    return None


def supervise(reg_or_home, store, now: int | None = None, tol: Tolerance | None = None) -> list[dict]:
    """Demote every live-ramp / live entry whose step saw a breaker trip or whose realized live results
    drifted out of tolerance. Free (no PIN). Returns what was done."""
    now = int(now or now_ms())
    reg = _registry(reg_or_home)
    if not reg.ok:
        return [{"entry_id": None, "action": "none", "reason": f"registry unreadable, nothing is live: {reg.problem}"}]
    out = []
    for e in reg.entries:
        why = drift_reason(store, e, now, tol)
        if why is None:
            continue
        try:
            reg.demote(e.id, now=now, reason=why)
        except RegistryError as err:
            out.append({"entry_id": e.id, "action": "error", "reason": str(err)})
            continue
        _event(store, f"registry: {e.id} demoted from {e.stage_label()} to paper: {why}", "critical",
               {"action": "demote", "entry_id": e.id, "from": e.stage, "to": "paper", "reason": why}, now)
        out.append({"entry_id": e.id, "action": "demoted", "from": e.stage_label(), "to": "paper", "reason": why})
        if getattr(store, "home", None) is not None:
            from ..notify.alerts import on_demoted

            on_demoted(store.home, e.id, e.stage_label(), why)
    return out


# -- what the loop scales live allocations by ---------------------------------------------------------

def capital_fraction(registry, strategy: str, *, store=None, params: dict | None = None) -> float:
    """The share of its allocation ``strategy`` may use LIVE: 0.10 / 0.25 / 0.50 / 1.00 on the ramp,
    1.0 when live, 0.0 otherwise. 0.0 also when the registry is missing or damaged, the entry's
    parameters differ from ``params`` (when given), its PIN-signed authorization does not verify for
    exactly this entry, stage and step, or (with ``store``) the breaker opened or the entry was
    demoted since that authorization was signed. Never raises."""
    try:
        reg = registry if isinstance(registry, Registry) else Registry.load(
            registry if isinstance(registry, StateHome) else StateHome(registry))
        if not reg.ok:
            return 0.0
        e = reg.active_for(strategy)
        if e is None or e.stage not in LIVE_STAGES:
            return 0.0
        if params is not None and dict(params) != e.params:
            return 0.0
        if verify_authorization(reg.home, e.authorization, e, e.stage, e.ramp_step):
            return 0.0
        if store is not None:
            signed = int(e.authorization.get("issued_ts", 0))
            since = min(signed, e.step_since_ts or signed)
            if breaker_trips_since(store, since):
                return 0.0
            n = store.scalar("SELECT COUNT(*) FROM events WHERE kind='registry' AND ts>=? AND "
                             "json_extract(data, '$.entry_id')=? AND json_extract(data, '$.action') IN "
                             "('demote', 'retire')", (signed, e.id))
            if n:
                return 0.0
        return float(e.capital_share)
    except Exception:
        return 0.0
