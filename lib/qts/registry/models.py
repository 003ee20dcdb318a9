"""The registry file's schema (pydantic): entries, their expected metrics and validation, the history."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

SCHEMA_VERSION = 1
STAGES = ("research", "backtested", "paper", "live-ramp", "live", "retired")
Stage = Literal["research", "backtested", "paper", "live-ramp", "live", "retired"]
ACTIVE_STAGES = ("paper", "live-ramp", "live")   # realized results are attributed to these
LIVE_STAGES = ("live-ramp", "live")              # these trade real money
RAMP_STEPS = (0.10, 0.25, 0.50, 1.00)            # share of the strategy's allocation per ramp step
RAMP_MIN_DAYS = (7.0, 7.0, 14.0, 7.0)            # time at each step before the next promotion
DEFAULT_TTL_DAYS = 7.0                           # a validation is good for this long
DAY_MS = 86_400_000
GENESIS = "0" * 64

# which transitions exist at all (the lifecycle adds the conditions)
LEGAL: dict[str, tuple[str, ...]] = {
    "research": ("backtested", "retired"),
    "backtested": ("paper", "retired"),
    "paper": ("live-ramp", "retired"),
    "live-ramp": ("live-ramp", "live", "paper", "retired"),   # live-ramp -> live-ramp: the next step
    "live": ("paper", "retired"),
    "retired": (),
}
PATH = "research -> backtested -> paper -> live-ramp (10% -> 25% -> 50% -> 100%) -> live; retired from anywhere"

_STRICT = ConfigDict(extra="forbid")


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def sha256(obj) -> str:
    return hashlib.sha256(obj if isinstance(obj, bytes) else canonical(obj)).hexdigest()


def params_hash(strategy: str, params: dict) -> str:
    return sha256({"strategy": strategy, "params": params})


def finite(v):
    """JSON has no NaN/inf: they are stored as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        try:
            return finite(v.item())
        except Exception:
            return v
    return v


class Expected(BaseModel):
    """What the validation predicts for the strategy (out-of-sample), compared against realized results.
    Names follow the performance report's expectation keys."""

    model_config = _STRICT

    sharpe: float | None = None                 # annualized, stitched walk-forward OOS returns
    return_per_day_pct: float | None = None     # OOS, compounded per day
    total_return_pct: float | None = None
    max_drawdown_pct: float | None = None       # OOS equity, percent
    win_rate: float | None = None               # fraction of closed trades with pnl > 0
    expectancy_pct: float | None = None         # mean closed-trade return, percent of cost
    trade_return_std_pct: float | None = None   # standard deviation of closed-trade returns, percent
    trades_per_day: float | None = None
    profit_factor: float | None = None
    n_trades: int = 0
    bars: int = 0
    period_days: float | None = None


class DataInfo(BaseModel):
    model_config = _STRICT

    symbol: str | None = None
    timeframe_minutes: float | None = None
    start_ts: int | None = None
    end_ts: int | None = None
    bars: int = 0
    synthetic: bool = False
    source: str | None = None


class ValidationSummary(BaseModel):
    model_config = _STRICT

    passed: bool
    summary: str = ""
    reasons: list[str] = Field(default_factory=list)
    checks: list[dict[str, Any]] = Field(default_factory=list)
    n_trials: int = 0
    dsr: float | None = None
    pbo: float | None = None
    oos: dict[str, Any] = Field(default_factory=dict)
    lookahead_ok: bool | None = None
    recursive_ok: bool | None = None            # warm-up analysis (None: not run, e.g. older entries)
    purged_cv: dict[str, Any] | None = None     # with the purged-CV gate: folds, mean and per-fold test Sharpe
    gates: dict[str, Any] = Field(default_factory=dict)
    strict_gates: bool = False                  # every gate at least as strict as the defaults
    selected_params: dict[str, Any] | None = None
    data: DataInfo = Field(default_factory=DataInfo)
    validated_ts: int = 0


class Provenance(BaseModel):
    model_config = _STRICT

    source: str = ""                            # "proposer(seed=0)", "model:anthropic/...", "manual"
    notes_sha256: str | None = None
    rationale: str = ""
    risks: list[str] = Field(default_factory=list)


class Entry(BaseModel):
    model_config = _STRICT

    id: str = Field(pattern=r"^[a-z0-9_]+-[0-9a-f]{8,}(-\d+)?$")
    strategy: str
    params: dict[str, Any]
    symbol: str | None = None
    timeframe_minutes: float | None = None
    stage: Stage
    ramp_step: int | None = None                # index into RAMP_STEPS while in live-ramp
    created_ts: int
    updated_ts: int
    expires_ts: int
    stage_since_ts: int
    step_since_ts: int | None = None
    expected: Expected | None = None
    validation: ValidationSummary | None = None
    grid: dict[str, list] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)
    authorization: dict[str, Any] | None = None  # the PIN-signed approval of the current live stage/step
    note: str = ""
    code_sha256: str | None = None  # the strategy's code when registered (strategies.code_hash); the trader
    #                                 refuses an entry whose code changed since

    @model_serializer(mode="wrap")
    def _omit_unset_code_hash(self, handler):
        # entries written before code_sha256 existed keep their exact form (and so their hashes) when dumped
        d = handler(self)
        if isinstance(d, dict) and d.get("code_sha256") is None:
            d.pop("code_sha256", None)
        return d

    @field_validator("ramp_step")
    @classmethod
    def _step(cls, v):
        if v is not None and not 0 <= v < len(RAMP_STEPS):
            raise ValueError(f"ramp_step must be 0..{len(RAMP_STEPS) - 1}")
        return v

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ts

    @property
    def capital_share(self) -> float:
        """The nominal share of the allocation for this stage (capital_fraction() also checks proof)."""
        if self.stage == "live":
            return 1.0
        if self.stage == "live-ramp" and self.ramp_step is not None:
            return RAMP_STEPS[self.ramp_step]
        return 0.0

    def stage_label(self) -> str:
        if self.stage == "live-ramp" and self.ramp_step is not None:
            return f"live-ramp {int(RAMP_STEPS[self.ramp_step] * 100)}% (step {self.ramp_step + 1}/{len(RAMP_STEPS)})"
        return self.stage


class HistoryRecord(BaseModel):
    model_config = _STRICT

    version: int
    ts: int
    action: str
    entry_id: str | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    ramp_step: int | None = None
    detail: str = ""
    entry: dict[str, Any] | None = None          # the entry as it was after this change
    state_hash: str                              # sha256 of all entries after this change
    prev_hash: str
    hash: str

    def body(self) -> dict:
        return self.model_dump(mode="json", exclude={"hash"})


class RegistryFile(BaseModel):
    model_config = _STRICT

    schema_version: Literal[1] = SCHEMA_VERSION
    version: int = 0
    strategies: list[Entry] = Field(default_factory=list)
    history: list[HistoryRecord] = Field(default_factory=list)

    def state_hash(self) -> str:
        return sha256([e.model_dump(mode="json") for e in self.strategies])
