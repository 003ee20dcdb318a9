"""Risk profile: every limit the risk manager enforces, its safe default, and how it is persisted.

Limits and defaults ("looser when" says which change needs the human's PIN; the opposite change,
tightening, is always allowed):

=============================  ===============  ==============  ============================================
field                          default          looser when     meaning
=============================  ===============  ==============  ============================================
risk_per_trade_pct             2.0              higher          % of equity at risk per trade (settings
                                                                RISK_LIMIT_PERCENT); also caps Kelly
max_position_usd               1000.0           higher          USD in one symbol, held + open orders + this
                                                                order (settings MAX_POSITION_SIZE)
max_order_notional_usd         1000.0           higher          USD of one order (fat-finger cap)
min_order_usd                  1.0              lower           an order shrunk below this is refused
sizing                         "kelly"          -> fixed        "kelly" or "fixed_fraction"; Kelly can only
                                                                lower the per-trade risk, so leaving it loosens
kelly_fraction                 0.25             higher          multiplier on full Kelly f*
kelly_cap                      0.5              higher          most of full Kelly ever used (kelly_fraction
                                                                must not exceed it)
kelly_min_trades               30               lower           fewer measured trades: fixed fraction
atr_period                     14               any change      ATR bars
stop_atr_mult                  2.0              lower           stop = price - mult x ATR (smaller = bigger size)
take_profit_atr_mult           3.0              any change      take profit = price + mult x ATR
max_symbol_exposure_pct        15.0             higher          % of equity in one symbol
max_total_exposure_pct         80.0             higher          % of equity in all positions (<= 100: no
                                                                leverage)
max_positions                  10               higher          concurrent positions (symbols held or with
                                                                open buy orders)
correlation_threshold          0.8              higher          returns correlation that joins a cluster
correlation_lookback           100              any change      bars of returns for the correlation
max_cluster_exposure_pct       25.0             higher          % of equity in one correlated cluster
daily_loss_limit_pct           5.0              higher          loss vs day_start_equity that halts entries
drawdown_reduce_pct            15.0             higher          drawdown from peak that shrinks entries
drawdown_reduce_mult           0.5              higher          size multiplier while above it
drawdown_halt_pct              20.0             higher          drawdown from peak that halts entries
stoploss_guard_trade_limit     3                higher          losing stop exits of a pair within ...
stoploss_guard_lookback_min    1440             lower           ... this many minutes lock the pair for ...
stoploss_guard_stop_min        360              lower           ... this many minutes
cooldown_minutes               15               lower           no re-entry of a pair this long after a close
low_profit_trades              4                higher          the pair's last N closed trades whose summed
low_profit_required_return     0.0              lower           return is below this (fraction) lock it for
low_profit_stop_min            720              lower           this many minutes
max_orders_per_minute          10               higher          entries refused while this many orders were
                                                                sent in the last 60 s
min_quote_volume_24h           1000000.0        lower           entries refused in a market trading less in
                                                                24 h (quote currency; 0 = off)
max_spread_bps                 50.0             higher          entries refused when (ask-bid)/mid is wider
max_depth_fraction             0.5              higher          entries refused when the order exceeds this
                                                                fraction of the book's visible depth (its side)
=============================  ===============  ==============  ============================================

"any change" fields cannot be ranked as stricter or looser, so every change to them needs the PIN.
A field added later without a direction is treated as "any change" (fail safe).

Persistence: ``<state home>/safety/risk_profile.json`` holds one record
``{version, profile, changed_ts, previous_hash, hash}``: ``hash`` is the SHA-256 of the canonical JSON
of the other four fields and ``previous_hash`` is the hash of the record it replaced (a chain).
:func:`load_profile` returns the built-in DEFAULT profile, and says why (``source="default"``,
``problem``), when the file is missing, truncated, not JSON, fails the hash or fails validation: a
damaged file can only make the system as strict as the defaults, never looser than them.
The per-user anchor (``anchor.py``, outside the project) keeps a copy of every saved profile: a missing or
damaged file reads as that copy, and a file looser than it is tightened back field by field (never the
defaults after the user tightened). :func:`save_profile` bumps the version, refuses a loosening change unless
it is given the key unlocked with the PIN (it signs the new record's hash and verifies the signature; a
boolean cannot approve), and reports every change (and every refusal) with its diff through
``log(kind, message, data)``. The hash detects damage; a deliberate edit that recomputes it is caught by the
anchor's copy (stricter wins) and, for a loosening, by the gate's check of the signed approval.
Settings passed to :func:`load_profile` can only TIGHTEN the profile (an environment variable must not
raise a limit the PIN protects).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..fsutil import dumps, write_atomic

PROFILE_FILENAME = "risk_profile.json"
MAX_FILE_BYTES = 1_000_000
MIN_CORRELATION_RETURNS = 20

HIGHER = "higher"   # a higher value is looser
LOWER = "lower"     # a lower value is looser
ANY = "any"         # any change needs the PIN
SIZING_STRICTNESS = {"fixed_fraction": 0, "kelly": 1}

LogFn = Callable[[str, str, dict], None]


class RiskProfileError(ValueError):
    """A profile value is invalid. ``field`` names it; ``str()`` is '<field>: <what is wrong>'."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class ProfileChangeRefused(PermissionError):
    """A change loosens limits and was not approved with the PIN. ``fields`` lists them."""

    def __init__(self, fields: list[str]):
        self.fields = list(fields)
        super().__init__("loosening " + ", ".join(self.fields) + " needs approval with the PIN")


_MIN_PER_YEAR = 525_600


class RiskProfile(BaseModel):
    """Every limit of the risk manager. Immutable; unknown fields and NaN/inf are rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True)

    risk_per_trade_pct: float = Field(2.0, gt=0, le=100, description="% of equity at risk per trade")
    max_position_usd: float = Field(1000.0, gt=0, le=1e9, description="USD in one symbol")
    max_order_notional_usd: float = Field(1000.0, gt=0, le=1e9, description="USD of one order")
    min_order_usd: float = Field(1.0, gt=0, le=1e6, description="smaller orders are refused")
    sizing: Literal["fixed_fraction", "kelly"] = "kelly"
    kelly_fraction: float = Field(0.25, gt=0, le=1, description="multiplier on full Kelly")
    kelly_cap: float = Field(0.5, gt=0, le=1, description="most of full Kelly ever used")
    kelly_min_trades: int = Field(30, ge=1, le=1_000_000, description="trades needed before Kelly")
    atr_period: int = Field(14, ge=2, le=1000)
    stop_atr_mult: float = Field(2.0, ge=0.1, le=100)
    take_profit_atr_mult: float = Field(3.0, gt=0, le=1000)
    max_symbol_exposure_pct: float = Field(15.0, gt=0, le=100)
    max_total_exposure_pct: float = Field(80.0, gt=0, le=100, description="<= 100: no leverage")
    max_positions: int = Field(10, ge=1, le=10_000)
    correlation_threshold: float = Field(0.8, gt=0, le=1)
    correlation_lookback: int = Field(100, ge=MIN_CORRELATION_RETURNS, le=100_000)
    max_cluster_exposure_pct: float = Field(25.0, gt=0, le=100)
    daily_loss_limit_pct: float = Field(5.0, gt=0, le=100)
    drawdown_reduce_pct: float = Field(15.0, gt=0, le=100)
    drawdown_reduce_mult: float = Field(0.5, gt=0, le=1)
    drawdown_halt_pct: float = Field(20.0, gt=0, le=100)
    stoploss_guard_trade_limit: int = Field(3, ge=1, le=10_000)
    stoploss_guard_lookback_min: int = Field(1440, ge=1, le=_MIN_PER_YEAR)
    stoploss_guard_stop_min: int = Field(360, ge=0, le=_MIN_PER_YEAR)
    cooldown_minutes: int = Field(15, ge=0, le=_MIN_PER_YEAR)
    low_profit_trades: int = Field(4, ge=1, le=10_000)
    low_profit_required_return: float = Field(0.0, ge=-1, le=10)
    low_profit_stop_min: int = Field(720, ge=0, le=_MIN_PER_YEAR)
    max_orders_per_minute: int = Field(10, ge=1, le=100_000)
    min_quote_volume_24h: float = Field(1_000_000.0, ge=0, le=1e13, description="entries refused in a market "
                                        "trading less than this in 24 h (quote currency); 0 = off")
    max_spread_bps: float = Field(50.0, gt=0, le=10_000, description="entries refused when (ask-bid)/mid is wider")
    max_depth_fraction: float = Field(0.5, gt=0, le=1, description="entries refused when the order exceeds this "
                                      "fraction of the visible book depth on its side")

    @model_validator(mode="after")
    def _consistent(self):
        if self.drawdown_reduce_pct >= self.drawdown_halt_pct:
            raise ValueError(f"drawdown_reduce_pct: must be below drawdown_halt_pct "
                             f"({self.drawdown_reduce_pct:g} >= {self.drawdown_halt_pct:g})")
        if self.kelly_fraction > self.kelly_cap:
            raise ValueError(f"kelly_fraction: must not exceed kelly_cap "
                             f"({self.kelly_fraction:g} > {self.kelly_cap:g})")
        return self

    def tightened_by_settings(self, settings) -> "RiskProfile":
        """A copy where settings (RISK_LIMIT_PERCENT, MAX_POSITION_SIZE) may lower, never raise, a limit."""
        upd = {}
        for attr, name in (("RISK_LIMIT_PERCENT", "risk_per_trade_pct"), ("MAX_POSITION_SIZE", "max_position_usd")):
            v = getattr(settings, attr, None)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
                if v < getattr(self, name):
                    upd[name] = float(v)
        return validate_profile({**self.model_dump(), **upd}) if upd else self


# Which direction of each field is looser. A test keeps this in step with the model's fields.
LIMIT_DIRECTIONS: dict[str, str] = {
    "risk_per_trade_pct": HIGHER,
    "max_position_usd": HIGHER,
    "max_order_notional_usd": HIGHER,
    "min_order_usd": LOWER,
    "sizing": "sizing",
    "kelly_fraction": HIGHER,
    "kelly_cap": HIGHER,
    "kelly_min_trades": LOWER,
    "atr_period": ANY,
    "stop_atr_mult": LOWER,
    "take_profit_atr_mult": ANY,
    "max_symbol_exposure_pct": HIGHER,
    "max_total_exposure_pct": HIGHER,
    "max_positions": HIGHER,
    "correlation_threshold": HIGHER,
    "correlation_lookback": ANY,
    "max_cluster_exposure_pct": HIGHER,
    "daily_loss_limit_pct": HIGHER,
    "drawdown_reduce_pct": HIGHER,
    "drawdown_reduce_mult": HIGHER,
    "drawdown_halt_pct": HIGHER,
    "stoploss_guard_trade_limit": HIGHER,
    "stoploss_guard_lookback_min": LOWER,
    "stoploss_guard_stop_min": LOWER,
    "cooldown_minutes": LOWER,
    "low_profit_trades": HIGHER,
    "low_profit_required_return": LOWER,
    "low_profit_stop_min": LOWER,
    "max_orders_per_minute": HIGHER,
    "min_quote_volume_24h": LOWER,
    "max_spread_bps": HIGHER,
    "max_depth_fraction": HIGHER,
}


def default_profile() -> RiskProfile:
    """The built-in safe profile (what a missing or damaged file reads as)."""
    return RiskProfile()


def validate_profile(data) -> RiskProfile:
    """A RiskProfile from a mapping (or a re-check of a RiskProfile); raises RiskProfileError."""
    if isinstance(data, RiskProfile):
        data = data.model_dump()
    if not isinstance(data, dict):
        raise RiskProfileError("profile", f"must be an object, got {type(data).__name__}")
    try:
        return RiskProfile.model_validate(data)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        first = errs[0]
        loc = ".".join(str(x) for x in first.get("loc", ())) or None
        msg = str(first.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if loc is None:  # a model-level check: its message starts with the field name
            field, _, rest = msg.partition(": ")
            loc, msg = (field, rest) if rest and field in RiskProfile.model_fields else ("profile", msg)
        if first.get("type") == "extra_forbidden":
            msg = "unknown field"
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        raise RiskProfileError(loc, msg + more) from None


def is_loosening(old: RiskProfile, new: RiskProfile) -> list[str]:
    """Fields whose change from ``old`` to ``new`` loosens a limit (needs the PIN), in field order."""
    out = []
    for name in type(new).model_fields:
        a, b = getattr(old, name, None), getattr(new, name)
        if a == b:
            continue
        direction = LIMIT_DIRECTIONS.get(name, ANY)
        if direction == "sizing":
            loose = SIZING_STRICTNESS.get(b, -1) < SIZING_STRICTNESS.get(a, -1)
        elif direction == HIGHER:
            loose = b > a
        elif direction == LOWER:
            loose = b < a
        else:
            loose = True
        if loose:
            out.append(name)
    return out


def profile_diff(old: RiskProfile, new: RiskProfile) -> dict[str, list]:
    """{field: [old, new]} for every changed field."""
    return {k: [getattr(old, k), getattr(new, k)] for k in type(new).model_fields if getattr(old, k) != getattr(new, k)}


@dataclass(frozen=True)
class LoadedProfile:
    profile: RiskProfile
    version: int                 # 0 when the defaults are in force
    source: str                  # "file" | "default"
    problem: str | None = None   # why the defaults are in force ("missing", "not JSON: ...", ...)
    record_hash: str | None = None
    changed_ts: int | None = None

    @property
    def is_default(self) -> bool:
        return self.source == "default"


def profile_path(home) -> Path:
    return Path(home.safety_dir) / PROFILE_FILENAME


def record_hash(version: int, profile: dict, changed_ts: int, previous_hash: str | None) -> str:
    body = {"version": version, "profile": profile, "changed_ts": changed_ts, "previous_hash": previous_hash}
    return hashlib.sha256(dumps(body).encode("utf-8")).hexdigest()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_record(raw: bytes) -> LoadedProfile:
    """Raises ValueError with the problem when the record is not a valid, intact profile record."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("version", "profile", "changed_ts", "previous_hash", "hash") if k not in rec]
    if missing:
        raise ValueError("missing " + ", ".join(missing))
    v, ts, prev, h = rec["version"], rec["changed_ts"], rec["previous_hash"], rec["hash"]
    if not (_is_int(v) and v >= 1):
        raise ValueError("version: must be an integer >= 1")
    if not (_is_int(ts) and ts >= 0):
        raise ValueError("changed_ts: must be a non-negative integer (ms)")
    if prev is not None and not isinstance(prev, str):
        raise ValueError("previous_hash: must be a string or null")
    if not isinstance(rec["profile"], dict):
        raise ValueError("profile: must be an object")
    if not isinstance(h, str) or h != record_hash(v, rec["profile"], ts, prev):
        raise ValueError("hash: does not match the record (damaged or edited by hand)")
    try:
        profile = validate_profile(rec["profile"])
    except RiskProfileError as e:
        raise ValueError(f"invalid profile: {e}") from None
    return LoadedProfile(profile, v, "file", None, h, ts)


def stricter_profile(a: RiskProfile, b: RiskProfile) -> RiskProfile:
    """Field by field the stricter of ``a`` and ``b``; for fields that cannot be ranked ("any change"), ``b``.
    (Taking the stricter of each keeps the model's own rules: reduce < halt and fraction <= cap hold for the
    minimum of each pair when they hold for each profile.)"""
    out = {}
    for name in type(a).model_fields:
        x, y = getattr(a, name), getattr(b, name)
        d = LIMIT_DIRECTIONS.get(name, ANY)
        if d == HIGHER:
            out[name] = min(x, y)
        elif d == LOWER:
            out[name] = max(x, y)
        elif d == "sizing":
            out[name] = x if SIZING_STRICTNESS.get(x, -1) > SIZING_STRICTNESS.get(y, -1) else y
        else:
            out[name] = y
    return validate_profile(out)


def _with_anchor(home, loaded: LoadedProfile) -> LoadedProfile:
    """The per-user anchor keeps the last saved profile outside the project: a deleted or damaged file falls
    back to it (never to the looser defaults), and a file looser than it is tightened back field by field."""
    from . import anchor

    view = anchor.check(home)
    rec = view.profile if isinstance(view.profile, dict) else None
    if rec is None:
        return loaded
    try:
        anchored = validate_profile(rec.get("profile"))
    except RiskProfileError as e:
        return LoadedProfile(loaded.profile, loaded.version, loaded.source,
                             f"{loaded.problem or 'file in force'}; the anchor's copy is invalid ({e})",
                             loaded.record_hash, loaded.changed_ts)
    version = rec.get("version") if _is_int(rec.get("version")) else 0
    if loaded.is_default:
        return LoadedProfile(anchored, version, "anchor",
                             f"{profile_path(home)}: {loaded.problem}; the last saved profile (v{version}, kept in "
                             f"the per-user anchor {view.path}) is in force, never the looser defaults",
                             rec.get("hash"), None)
    loose = is_loosening(anchored, loaded.profile)
    if not loose:
        return loaded
    merged = stricter_profile(loaded.profile, anchored)
    return LoadedProfile(merged, loaded.version, "file+anchor",
                         f"{profile_path(home)} is looser than the last saved profile in the per-user anchor "
                         f"({', '.join(loose)}): the stricter value of each is in force",
                         loaded.record_hash, loaded.changed_ts)


def load_profile(home, log: LogFn | None = None, settings=None) -> LoadedProfile:
    """The persisted profile, made at least as strict as the per-user anchor's copy; with no intact file, the
    anchor's copy, else the DEFAULT profile; ``problem`` says why. Never raises for a bad file. ``settings``
    (optional) can only tighten the result."""
    path = profile_path(home)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        loaded = _parse_record(raw)
    except FileNotFoundError:
        loaded = LoadedProfile(default_profile(), 0, "default", "missing")
    except IsADirectoryError:
        loaded = LoadedProfile(default_profile(), 0, "default", "a folder is in its place")
    except (OSError, ValueError) as e:
        problem = f"unreadable ({e.__class__.__name__}: {e})" if isinstance(e, OSError) else str(e)
        loaded = LoadedProfile(default_profile(), 0, "default", problem)
    loaded = _with_anchor(home, loaded)
    if loaded.source != "file" and log is not None:
        log("risk_profile_default" if loaded.is_default else "risk_profile_anchor",
            f"risk profile {path}: {loaded.problem}" + ("; using the default (safe) profile" if loaded.is_default else ""),
            {"path": str(path), "problem": loaded.problem})
    if settings is not None:
        tightened = loaded.profile.tightened_by_settings(settings)
        if tightened is not loaded.profile:
            loaded = LoadedProfile(tightened, loaded.version, loaded.source, loaded.problem,
                                   loaded.record_hash, loaded.changed_ts)
    return loaded


def save_profile(home, new, approved_by_pin=None, log: LogFn | None = None, now_ms: int | None = None, *,
                 signing_key=None) -> LoadedProfile:
    """Persist ``new`` as the next version. Loosening any limit (see :func:`is_loosening`) against the
    profile in force (file and anchor) raises :class:`ProfileChangeRefused` unless ``signing_key`` is the
    key unlocked with this home's PIN: the change is then signed with it (ACTION_RAISE_RISK_LIMIT over the
    record's hash, written to ``safety/risk_profile.approval.json``, where the gate checks it) and the
    signature verified before anything is written. A boolean cannot approve: ``approved_by_pin`` is
    ignored. Tightening is always allowed. Every change, and every refusal, goes to ``log`` with the diff,
    and every saved profile is recorded in the per-user anchor. Saving the profile already in force writes
    nothing (unless the file was missing or damaged)."""
    del approved_by_pin  # kept for old call sites: it never approves anything (a caller can pass any value)
    log = log or (lambda *a, **k: None)
    new = validate_profile(new)  # also re-checks a RiskProfile built with model_construct
    current = load_profile(home)
    diff = profile_diff(current.profile, new)
    loosened = is_loosening(current.profile, new)
    path = profile_path(home)
    data = {"path": str(path), "previous_version": current.version, "diff": diff, "loosened": loosened,
            "approved_by_pin": False}
    if loosened and signing_key is None:
        log("risk_profile_refused",
            f"risk profile change refused: loosening {', '.join(loosened)} needs approval with the PIN", data)
        raise ProfileChangeRefused(loosened)
    if not diff and current.source == "file":
        return current
    version = current.version + 1
    ts = int(time.time() * 1000) if now_ms is None else int(now_ms)
    prof = new.model_dump()
    h = record_hash(version, prof, ts, current.record_hash)
    approval = None
    if loosened:
        from .grants import ACTION_RAISE_RISK_LIMIT, sign_approval, verify_approval

        try:
            approval = sign_approval(home, signing_key, ACTION_RAISE_RISK_LIMIT, {"hash": h}, ttl_s=24 * 3600, now=ts)
        except Exception as e:  # noqa: BLE001 - not this home's PIN key, or no PIN set
            log("risk_profile_refused", f"risk profile change refused: the PIN signature failed ({e})", data)
            raise ProfileChangeRefused(loosened) from None
        if (verify_approval(home, approval, ACTION_RAISE_RISK_LIMIT, now=ts) or {}).get("hash") != h:
            log("risk_profile_refused", "risk profile change refused: the PIN signature does not verify", data)
            raise ProfileChangeRefused(loosened)
        data["approved_by_pin"] = True
    record = {"version": version, "profile": prof, "changed_ts": ts, "previous_hash": current.record_hash, "hash": h}
    write_atomic(path, dumps(record) + "\n")
    if approval is not None:
        write_atomic(home.safety_dir / "risk_profile.approval.json", json.dumps(approval))
    from . import anchor

    anchor_error = anchor.try_record(home, "profile", ts, version=version, hash=h, profile=prof)
    if anchor_error and loosened:
        # the anchor keeps the stricter profile, and every reader takes the stricter of the two: say so
        log("risk_profile_anchor", f"the loosened profile could not be recorded in the per-user anchor ({anchor_error}): "
                                   "the stricter saved profile stays in force", {**data, "error": anchor_error})
    what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items()) or "no field changed (rewritten)"
    log("risk_profile_changed", f"risk profile v{current.version} -> v{version}: {what}",
        {**data, "version": version, "hash": h, "replaced_problem": current.problem, "profile": prof})
    return LoadedProfile(new, version, "file", None, h, ts)
