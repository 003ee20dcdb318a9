"""Signed, scoped, expiring approvals: verifiable without the PIN, impossible to make without it.

Two kinds, both Ed25519-signed by the PIN-protected key (see ``pin.py``) over canonical JSON
(sorted keys, no whitespace) behind a domain-separation prefix, so one kind can never be passed
off as the other:

* The live grant, ``safety/grants/live.json``::

      {"grant": {"version": 1, "id": "<32 hex>", "scope": {"max_order_notional": 100.0,
                 "max_daily_notional": 500.0, "symbols": ["BTC/USDT"], "mode": "live"},
                 "state_home": "/abs/path/.quant-trading", "issued_ts": <ms>, "expires_ts": <ms>,
                 "key_fingerprint": "<32 hex>"},
       "signature": "<base64 of 64 bytes>"}

  :func:`load_live_grant` returns ``None`` (never raises) for a missing, truncated, garbage,
  tampered, expired, other-home or other-key grant. Revoking is deleting: no PIN needed.

* Generic approvals for other risk-increasing actions (kill-switch reset, raising a risk limit,
  promoting a strategy to live, one order above a notional threshold, overriding the paper-days
  rule): a dict ``{version, action, payload, nonce, state_home, issued_ts, expires_ts,
  key_fingerprint, signature}``. :func:`verify_approval` returns the payload or ``None``.
  Single use: :func:`consume_approval` records the nonce in ``safety/grants/used_nonces.jsonl``;
  :func:`use_approval` verifies and consumes in one locked step (prefer it). The nonce file starts
  with a header whose ``epoch_ts`` is the time it was (re)created; it is created by
  :func:`sign_approval`, so a missing or unreadable file means tampering and every approval fails
  to verify (fail closed) until the human signs a new approval, which recreates the file with a new
  epoch: approvals issued before the epoch stay invalid, so deleting the file cannot re-enable
  consumed approvals.

Timestamps are epoch milliseconds; TTLs are seconds. The same residual risks as ``pin.py`` apply:
a wholesale replacement of ``pin.json`` makes forged grants verify, and only the caller's
first-seen record plus the cool-down (``key_first_seen=`` on :func:`load_live_grant`, or
``pin.pin_ready_since``) catches it; the nonce file can be edited (not just deleted) by the same
OS user, so single use is enforced against mistakes and casual replay, not against a determined
same-user attacker who also edits it (record consumption in the database too if it matters).
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..fsutil import write_atomic
from ..paths import StateHome
from .pin import (CLOCK_SKEW_MS, DEFAULT_COOLDOWN_S, _canonical, _now_ms, _unb64, ensure_safety_dir,
                  file_lock, load_record, pin_ready_since)

GRANT_DOMAIN = b"qts-live-grant-v1\x00"
APPROVAL_DOMAIN = b"qts-approval-v1\x00"

DEFAULT_GRANT_TTL_S = 8 * 3600
MAX_GRANT_TTL_S = 24 * 3600
DEFAULT_APPROVAL_TTL_S = 15 * 60
MAX_APPROVAL_TTL_S = 24 * 3600
MAX_FILE_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024
PRUNE_AFTER_LINES = 1000
PRUNE_KEEP_MS = 7 * 86_400_000   # used nonces are kept a week past their expiry

ACTION_KILL_SWITCH_RESET = "kill_switch_reset"
ACTION_RAISE_RISK_LIMIT = "raise_risk_limit"
ACTION_PROMOTE_STRATEGY_LIVE = "promote_strategy_live"
ACTION_ORDER_OVER_THRESHOLD = "order_over_threshold"
ACTION_OVERRIDE_PAPER_DAYS = "override_paper_days"

_ACTION_RE = r"^[a-z][a-z0-9_.:-]{0,63}$"
_HEX32 = r"^[0-9a-f]{32}$"
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}/[A-Za-z0-9._-]{1,32}(:[A-Za-z0-9._-]{1,32})?$")
_UNCHECKED = object()


def grants_dir(home: StateHome) -> Path:
    return home.safety_dir / "grants"


def live_grant_path(home: StateHome) -> Path:
    return grants_dir(home) / "live.json"


def used_nonces_path(home: StateHome) -> Path:
    return grants_dir(home) / "used_nonces.jsonl"


def _nonce_lock(home: StateHome) -> Path:
    return grants_dir(home) / ".nonces.lock"


def home_id(home: StateHome) -> str:
    """The absolute, symlink-resolved state-home path that grants and approvals are bound to."""
    return str(Path(home.root).resolve())


# -- models ------------------------------------------------------------------------------------------

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class GrantScope(BaseModel):
    model_config = _FROZEN

    max_order_notional: float = Field(gt=0, allow_inf_nan=False)
    max_daily_notional: float = Field(gt=0, allow_inf_nan=False)
    symbols: list[str] = Field(min_length=1, max_length=200)
    mode: Literal["live"] = "live"

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not _SYMBOL_RE.match(s)]
        if bad:
            raise ValueError(f"not a market symbol like BTC/USDT: {bad[:3]}")
        if len(set(v)) != len(v):
            raise ValueError("symbols must not repeat")
        return v

    @model_validator(mode="after")
    def _limits(self):
        if self.max_order_notional > self.max_daily_notional:
            raise ValueError("max_order_notional cannot exceed max_daily_notional")
        return self


class LiveGrant(BaseModel):
    model_config = _FROZEN

    version: Literal[1] = 1
    id: str = Field(pattern=_HEX32)
    scope: GrantScope
    state_home: str = Field(min_length=1, max_length=4096)
    issued_ts: int
    expires_ts: int
    key_fingerprint: str = Field(pattern=_HEX32)

    def canonical_bytes(self) -> bytes:
        return _canonical(self.model_dump(mode="json"))

    def remaining_s(self, now: int) -> float:
        return max(0.0, (self.expires_ts - now) / 1000.0)

    def refusal(self, symbol: str, notional: float, day_notional_before: float = 0.0) -> str | None:
        """Why this grant does not cover an order (None: it does)."""
        if symbol not in self.scope.symbols:
            return f"{symbol} is not in the live grant's symbols {self.scope.symbols}"
        if not (notional == notional) or notional > self.scope.max_order_notional:
            return f"order notional {notional} exceeds the grant's {self.scope.max_order_notional} per order"
        if day_notional_before + notional > self.scope.max_daily_notional:
            return (f"daily notional {day_notional_before + notional} would exceed the grant's "
                    f"{self.scope.max_daily_notional}")
        return None


class Approval(BaseModel):
    model_config = _FROZEN

    version: Literal[1] = 1
    action: str = Field(pattern=_ACTION_RE)
    payload: dict[str, Any]
    nonce: str = Field(pattern=_HEX32)
    state_home: str = Field(min_length=1, max_length=4096)
    issued_ts: int
    expires_ts: int
    key_fingerprint: str = Field(pattern=_HEX32)

    def canonical_bytes(self) -> bytes:
        return _canonical(self.model_dump(mode="json"))


# -- signing helpers ---------------------------------------------------------------------------------

def _check_key(home: StateHome, signing_key) -> None:
    fp = getattr(signing_key, "fingerprint", None)
    if fp != load_record(home).fingerprint:
        raise ValueError("the signing key does not belong to this state home's PIN record")


def _sign(home: StateHome, signing_key, domain: bytes, body: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig = signing_key.sign(domain + body)
    Ed25519PublicKey.from_public_bytes(load_record(home).public_key).verify(sig, domain + body)
    return sig


def _verify(home: StateHome, fingerprint: str, domain: bytes, body: bytes, sig_b64) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    rec = load_record(home)
    if not hmac.compare_digest(fingerprint.encode(), rec.fingerprint.encode()):
        return False
    sig = _unb64(sig_b64, 64)
    Ed25519PublicKey.from_public_bytes(rec.public_key).verify(sig, domain + body)  # raises if bad
    return True


def _ttl_ms(ttl_s, max_s: int) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not math.isfinite(ttl_s):
        raise ValueError("ttl_s must be a number of seconds")
    if ttl_s <= 0 or ttl_s > max_s:
        raise ValueError(f"ttl_s must be between 0 and {max_s} seconds")
    return int(ttl_s * 1000)


def _times_ok(issued: int, expires: int, now: int, max_s: int) -> bool:
    return (issued <= now + CLOCK_SKEW_MS and now < expires
            and 0 < expires - issued <= max_s * 1000)


def _read_small(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file")
    if st.st_size > limit:
        raise ValueError("file too large")
    return path.read_bytes()


# -- live grant --------------------------------------------------------------------------------------

def issue_live_grant(home: StateHome, signing_key, *, max_order_notional: float, max_daily_notional: float,
                     symbols: list[str], ttl_s: float = DEFAULT_GRANT_TTL_S, now: int | None = None) -> LiveGrant:
    """Sign and write the live grant (replacing any previous one). Needs the unlocked key."""
    now = _now_ms(now)
    _check_key(home, signing_key)
    grant = LiveGrant(
        id=secrets.token_hex(16),
        scope=GrantScope(max_order_notional=max_order_notional, max_daily_notional=max_daily_notional,
                         symbols=list(symbols)),
        state_home=home_id(home), issued_ts=now, expires_ts=now + _ttl_ms(ttl_s, MAX_GRANT_TTL_S),
        key_fingerprint=signing_key.fingerprint)
    sig = _sign(home, signing_key, GRANT_DOMAIN, grant.canonical_bytes())
    ensure_safety_dir(home)
    grants_dir(home).mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(live_grant_path(home),
                 _canonical({"grant": grant.model_dump(mode="json"),
                             "signature": base64.b64encode(sig).decode("ascii")}), mode=0o600)
    if load_live_grant(home, now) != grant:
        raise RuntimeError("the live grant did not verify after writing it")
    # the grant's spending record starts with it (live_approval reads and appends to it); a missing or
    # foreign record refuses live orders until the human approves again
    write_atomic(usage_path(home), _canonical({"grant_id": grant.id, "issued_ts": now}).decode() + "\n", mode=0o600)
    return grant


def usage_path(home: StateHome) -> Path:
    return grants_dir(home) / "usage.jsonl"


def load_live_grant(home: StateHome, now: int | None = None, *, key_first_seen=_UNCHECKED,
                    cooldown_s: float = DEFAULT_COOLDOWN_S) -> LiveGrant | None:
    """The current live grant if it is intact, signed by this home's PIN key, bound to this home
    and unexpired; else None. Never raises.

    ``key_first_seen`` (optional, see ``pin.pin_ready_since``): the caller's first-seen record for
    the PIN key; when given, the grant is also refused while that key is inside its cool-down.
    """
    try:
        now = _now_ms(now)
        d = json.loads(_read_small(live_grant_path(home)).decode("utf-8"))
        if not isinstance(d, dict) or set(d) != {"grant", "signature"}:
            return None
        grant = LiveGrant.model_validate(d["grant"], strict=True)
        if grant.state_home != home_id(home):
            return None
        if not _times_ok(grant.issued_ts, grant.expires_ts, now, MAX_GRANT_TTL_S):
            return None
        if not _verify(home, grant.key_fingerprint, GRANT_DOMAIN, grant.canonical_bytes(), d["signature"]):
            return None
        if key_first_seen is not _UNCHECKED:
            if not pin_ready_since(home, key_first_seen, now=now, cooldown_s=cooldown_s).ready:
                return None
        return grant
    except Exception:
        return None


def revoke_live_grant(home: StateHome) -> bool:
    """Delete the live grant (makes things safer: no PIN). True if something was removed."""
    path = live_grant_path(home)
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except FileNotFoundError:
        return False


# -- generic approvals -------------------------------------------------------------------------------

def _read_nonces(home: StateHome) -> tuple[int, set[str], list[dict]] | None:
    """(epoch_ts, used nonces, used records) or None when the file is missing or unreadable."""
    try:
        raw = _read_small(used_nonces_path(home), 16 * 1024 * 1024).decode("utf-8")
        lines = raw.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        header = json.loads(lines[0])
        if (not isinstance(header, dict) or header.get("type") != "header" or header.get("version") != 1
                or type(header.get("epoch_ts")) is not int):
            return None
        used, records = set(), []
        for line in lines[1:]:
            rec = json.loads(line)
            if (not isinstance(rec, dict) or rec.get("type") != "used" or not isinstance(rec.get("nonce"), str)
                    or not re.match(_HEX32, rec["nonce"])):
                return None
            used.add(rec["nonce"])
            records.append(rec)
        return header["epoch_ts"], used, records
    except Exception:
        return None


def _write_nonces(home: StateHome, epoch_ts: int, records: list[dict]) -> None:
    grants_dir(home).mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = [_canonical({"type": "header", "version": 1, "epoch_ts": epoch_ts})]
    lines += [_canonical(r) for r in records]
    write_atomic(used_nonces_path(home), b"\n".join(lines) + b"\n", mode=0o600)


def _check_payload(payload) -> dict:
    if not isinstance(payload, dict) or not all(isinstance(k, str) for k in payload):
        raise ValueError("payload must be a JSON object with string keys")
    try:
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"payload is not plain JSON: {e}") from None
    if len(body) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
    if json.loads(body) != payload:
        raise ValueError("payload does not survive a JSON round trip (tuples, non-string keys?)")
    return json.loads(body)


def sign_approval(home: StateHome, signing_key, action: str, payload: dict,
                  ttl_s: float = DEFAULT_APPROVAL_TTL_S, now: int | None = None, *, announce=None) -> dict:
    """A signed, single-use-able approval of ``action`` with ``payload`` (needs the unlocked key).

    Also makes sure the used-nonces file is readable; if it is missing or damaged it is recreated
    with ``epoch_ts = now`` (older approvals stay invalid) and, when it was damaged rather than
    absent, ``announce(kind, message, severity, data)`` is called.
    """
    now = _now_ms(now)
    _check_key(home, signing_key)
    appr = Approval(action=action, payload=_check_payload(payload), nonce=secrets.token_hex(16),
                    state_home=home_id(home), issued_ts=now,
                    expires_ts=now + _ttl_ms(ttl_s, MAX_APPROVAL_TTL_S),
                    key_fingerprint=signing_key.fingerprint)
    sig = _sign(home, signing_key, APPROVAL_DOMAIN, appr.canonical_bytes())
    ensure_safety_dir(home)
    with file_lock(_nonce_lock(home)):
        if _read_nonces(home) is None:
            existed = os.path.lexists(used_nonces_path(home))
            _write_nonces(home, now, [])
            if existed and announce is not None:
                announce("approval_nonces_reset", "the used-approvals file was unreadable and has been "
                         "recreated; approvals issued before now are no longer valid", "critical", {})
    return {**appr.model_dump(mode="json"), "signature": base64.b64encode(sig).decode("ascii")}


def _verify_unlocked(home: StateHome, approval, action: str, now) -> dict | None:
    now = _now_ms(now)
    if not isinstance(approval, dict) or "signature" not in approval:
        return None
    body = {k: v for k, v in approval.items() if k != "signature"}
    appr = Approval.model_validate(body, strict=True)
    if appr.action != action or appr.state_home != home_id(home):
        return None
    if not _times_ok(appr.issued_ts, appr.expires_ts, now, MAX_APPROVAL_TTL_S):
        return None
    if not _verify(home, appr.key_fingerprint, APPROVAL_DOMAIN, appr.canonical_bytes(), approval["signature"]):
        return None
    nonces = _read_nonces(home)
    if nonces is None:                      # fail closed: cannot tell whether it was used
        return None
    epoch, used, _ = nonces
    if appr.issued_ts < epoch or appr.nonce in used:
        return None
    return json.loads(json.dumps(appr.payload))


def verify_approval(home: StateHome, approval: dict, action: str, now: int | None = None) -> dict | None:
    """The payload of a valid, unexpired, unused approval of ``action`` for this home; else None.
    Does not consume it. Never raises."""
    try:
        return _verify_unlocked(home, approval, action, now)
    except Exception:
        return None


def _consume_unlocked(home: StateHome, approval: dict, now: int) -> bool:
    nonce = approval.get("nonce") if isinstance(approval, dict) else None
    if not isinstance(nonce, str) or not re.match(_HEX32, nonce):
        return False
    nonces = _read_nonces(home)
    if nonces is None:
        return False
    epoch, used, records = nonces
    if nonce in used:
        return False
    exp = approval.get("expires_ts")
    entry = {"type": "used", "nonce": nonce, "action": str(approval.get("action", ""))[:64],
             "expires_ts": exp if type(exp) is int else now, "used_ts": now}
    if len(records) >= PRUNE_AFTER_LINES:
        keep = [r for r in records if type(r.get("expires_ts")) is not int
                or r["expires_ts"] > now - PRUNE_KEEP_MS]
        _write_nonces(home, epoch, keep + [entry])
    else:
        from ..fsutil import append_jsonl

        append_jsonl(used_nonces_path(home), entry)
    return True


def consume_approval(home: StateHome, approval: dict, now: int | None = None) -> bool:
    """Record the approval's nonce as used. False if it was already used or the used-nonces file
    is missing/unreadable (fail closed). Does NOT check the signature: use :func:`use_approval`."""
    try:
        now = _now_ms(now)
        with file_lock(_nonce_lock(home)):
            return _consume_unlocked(home, approval, now)
    except Exception:
        return False


def use_approval(home: StateHome, approval: dict, action: str, now: int | None = None) -> dict | None:
    """Verify and consume in one locked step: the payload the first time, None ever after."""
    try:
        now = _now_ms(now)
        with file_lock(_nonce_lock(home)):
            payload = _verify_unlocked(home, approval, action, now)
            if payload is None or not _consume_unlocked(home, approval, now):
                return None
            return payload
    except Exception:
        return None
