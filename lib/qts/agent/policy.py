"""The trading agent's policy: what it will let through, held in its memory (files are only its journal).

Anyone may TIGHTEN it (engage the kill switch, halt, reduce, trip the breaker, revoke the grant, lower
a limit): that never adds risk. LOOSENING (resume, reset the kill switch, a new grant, a higher limit,
approving one large order, stopping the agent) needs a signature made with the PIN over a single-use
challenge (challenge.py). Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace

ACTIVE, REDUCING, HALTED = "ACTIVE", "REDUCING", "HALTED"
STRICTNESS = {ACTIVE: 0, REDUCING: 1, HALTED: 2}

# limits a loosening may raise and a tightening may lower (name -> (lowest, highest, "lower is stricter"))
LIMITS = {
    "max_daily_loss_usd": (0.0, 1e9, True),
    "collar_bps": (1.0, 2000.0, True),
    "order_approval_usd": (0.0, 1e9, True),
    "max_orders_per_minute": (1, 10_000, True),
}
GRANT_LIMITS = ("max_order_usd", "max_daily_usd")
MAX_GRANT_HOURS = 24.0


class PolicyError(ValueError):
    """A change the policy refuses; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def _num(name: str, v, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise PolicyError(name, f"must be a finite number, got {v!r}")
    if not lo <= v <= hi:
        raise PolicyError(name, f"must be between {lo:g} and {hi:g}, got {v:g}")
    return float(v)


def _symbols(v) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [s for s in v.split(",")]
    if not isinstance(v, (list, tuple)) or not v:
        raise PolicyError("symbols", "a non-empty list like BTC/USDT,ETH/USDT")
    out = []
    for s in v:
        s = str(s).strip().upper()
        if not (3 <= len(s) <= 26 and s.count("/") == 1 and all(c.isalnum() or c == "/" for c in s)):
            raise PolicyError("symbols", f"{s!r} is not a BASE/QUOTE symbol")
        out.append(s)
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class Grant:
    """What the human allowed the agent to trade: per order, per day, which symbols, until when."""

    max_order_usd: float
    max_daily_usd: float
    symbols: tuple[str, ...]
    expires_ts: int
    issued_ts: int

    @classmethod
    def make(cls, max_order_usd, max_daily_usd, symbols, hours, now_ms: int) -> "Grant":
        mo = _num("max_order_usd", max_order_usd, 1.0, 1e9)
        md = _num("max_daily_usd", max_daily_usd, 1.0, 1e10)
        if mo > md:
            raise PolicyError("max_order_usd", "cannot exceed max_daily_usd")
        h = _num("hours", hours, 0.01, MAX_GRANT_HOURS)
        return cls(mo, md, _symbols(symbols), int(now_ms + h * 3_600_000), int(now_ms))

    def active(self, now_ms: int) -> bool:
        return now_ms < self.expires_ts


@dataclass(frozen=True)
class Policy:
    kill_switch: bool = False
    kill_reason: str = ""
    trading_state: str = ACTIVE
    state_reason: str = ""
    breaker_open: bool = False
    breaker_reason: str = ""
    grant: Grant | None = None
    max_daily_loss_usd: float = 100.0
    collar_bps: float = 200.0
    order_approval_usd: float = 500.0
    max_orders_per_minute: int = 10
    unconfined_acknowledged: bool = False
    changed_ts: int = 0
    version: int = 0

    # -- what the gate asks --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        if self.grant is not None:
            d["grant"]["symbols"] = list(self.grant.symbols)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Policy":
        g = d.get("grant")
        grant = Grant(float(g["max_order_usd"]), float(g["max_daily_usd"]), tuple(g["symbols"]),
                      int(g["expires_ts"]), int(g["issued_ts"])) if g else None
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "grant"}
        if fields.get("trading_state") not in STRICTNESS:
            raise PolicyError("trading_state", f"unknown state {fields.get('trading_state')!r}")
        return cls(grant=grant, **fields)

    def hash(self) -> str:
        """What a loosening signature is bound to: any change in between invalidates the challenge."""
        raw = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(raw.encode()).hexdigest()

    def summary(self, now_ms: int | None = None) -> str:
        now_ms = now_ms or int(time.time() * 1000)
        parts = [("KILL SWITCH ENGAGED" if self.kill_switch else "kill switch clear"), f"trading {self.trading_state}",
                 "breaker OPEN" if self.breaker_open else "breaker closed"]
        g = self.grant
        if g and g.active(now_ms):
            left = (g.expires_ts - now_ms) / 60_000
            parts.append(f"grant {g.max_order_usd:g}/order {g.max_daily_usd:g}/day {','.join(g.symbols)} "
                         f"({left:.0f} min left)")
        else:
            parts.append("no live grant" if g is None else "grant expired")
        parts.append(f"daily loss cap {self.max_daily_loss_usd:g}, collar {self.collar_bps:g} bps")
        return "; ".join(parts)

    def _bump(self, now_ms: int, **changes) -> "Policy":
        return replace(self, changed_ts=int(now_ms), version=self.version + 1, **changes)

    # -- tightening: anyone ----------------------------------------------------------------------
    def tighten(self, op: str, params: dict, now_ms: int) -> tuple["Policy", str]:
        """(new policy, what changed). PolicyError when the request is malformed or would loosen."""
        reason = str(params.get("reason") or op)[:200]
        if op == "engage":
            if self.kill_switch:
                return self, "kill switch already engaged"
            return self._bump(now_ms, kill_switch=True, kill_reason=reason), f"kill switch engaged: {reason}"
        if op in ("halt", "reduce"):
            target = HALTED if op == "halt" else REDUCING
            if STRICTNESS[target] <= STRICTNESS[self.trading_state]:
                return self, f"trading already {self.trading_state}"
            return self._bump(now_ms, trading_state=target, state_reason=reason), f"trading {target}: {reason}"
        if op == "trip":
            if self.breaker_open:
                return self, "breaker already open"
            return self._bump(now_ms, breaker_open=True, breaker_reason=reason), f"breaker opened: {reason}"
        if op == "revoke":
            if self.grant is None:
                return self, "there was no live grant"
            return self._bump(now_ms, grant=None), f"live grant revoked: {reason}"
        if op == "lower":
            return self._lower(params, now_ms)
        raise PolicyError("op", f"{op!r} is not a tightening")

    def _lower(self, params: dict, now_ms: int) -> tuple["Policy", str]:
        changes, said = {}, []
        grant = self.grant
        for k, v in params.items():
            if k == "reason":
                continue
            if k in LIMITS:
                lo, hi, _ = LIMITS[k]
                nv = _num(k, v, lo, hi)
                if k == "max_orders_per_minute":
                    nv = int(nv)
                if nv > getattr(self, k):
                    raise PolicyError(k, f"{nv:g} is higher than {getattr(self, k):g}: raising a limit needs the PIN "
                                         f"(qts agent approve limits {k}={nv:g})")
                changes[k] = nv
                said.append(f"{k} {getattr(self, k):g} -> {nv:g}")
            elif k in GRANT_LIMITS or k in ("symbols", "hours"):
                if grant is None:
                    raise PolicyError(k, "there is no live grant to lower")
                if k == "symbols":
                    syms = _symbols(v)
                    if not set(syms) <= set(grant.symbols):
                        raise PolicyError(k, "adding symbols needs the PIN")
                    grant = replace(grant, symbols=syms)
                elif k == "hours":
                    end = int(now_ms + _num(k, v, 0.0, MAX_GRANT_HOURS) * 3_600_000)
                    if end > grant.expires_ts:
                        raise PolicyError(k, "extending the grant needs the PIN")
                    grant = replace(grant, expires_ts=end)
                else:
                    nv = _num(k, v, 1.0, 1e10)
                    if nv > getattr(grant, k):
                        raise PolicyError(k, "raising the grant needs the PIN")
                    grant = replace(grant, **{k: nv})
                said.append(f"grant {k} -> {v}")
            else:
                raise PolicyError(k, "unknown limit; allowed: " + ", ".join([*LIMITS, *GRANT_LIMITS, "symbols", "hours"]))
        if not said:
            raise PolicyError("params", "nothing to lower")
        return self._bump(now_ms, grant=grant, **changes), "lowered: " + ", ".join(said)

    # -- loosening: only after challenge.verify ----------------------------------------------------
    def loosen(self, action: str, params: dict, now_ms: int) -> tuple["Policy", str]:
        if action == "resume":
            return self._bump(now_ms, trading_state=ACTIVE, state_reason="resumed with the PIN", breaker_open=False,
                              breaker_reason=""), "trading ACTIVE and breaker closed (PIN)"
        if action == "reset_kill_switch":
            return self._bump(now_ms, kill_switch=False, kill_reason=""), "kill switch reset (PIN)"
        if action == "grant":
            g = Grant.make(params.get("max_order_usd"), params.get("max_daily_usd"), params.get("symbols"),
                           params.get("hours", 8), now_ms)
            extra = {}
            if "max_daily_loss_usd" in params:
                extra["max_daily_loss_usd"] = _num("max_daily_loss_usd", params["max_daily_loss_usd"], 0.0, 1e9)
            return self._bump(now_ms, grant=g, **extra), (f"live grant: {g.max_order_usd:g} USD/order, "
                                                         f"{g.max_daily_usd:g} USD/day, {', '.join(g.symbols)} (PIN)")
        if action == "limits":
            changes = {}
            for k, v in params.items():
                if k not in LIMITS:
                    raise PolicyError(k, "unknown limit; allowed: " + ", ".join(LIMITS))
                lo, hi, _ = LIMITS[k]
                changes[k] = int(_num(k, v, lo, hi)) if k == "max_orders_per_minute" else _num(k, v, lo, hi)
            if not changes:
                raise PolicyError("params", "no limit given")
            return self._bump(now_ms, **changes), "limits set (PIN): " + ", ".join(f"{k}={v:g}" for k, v in changes.items())
        raise PolicyError("action", f"{action!r} is not a policy loosening")


def strict_defaults(last: Policy | None, reason: str, now_ms: int) -> Policy:
    """What the agent starts in when anything it kept is missing or fails to verify: HALTED, no grant,
    the kill switch as it was (or engaged if unknown), the last limits it knew (never looser)."""
    base = last or Policy(kill_switch=True, kill_reason=reason)
    return replace(base, trading_state=HALTED, state_reason=reason, grant=None, changed_ts=int(now_ms),
                   version=base.version + 1)
