"""Failed PIN attempts and the lockout they trigger (``pin_attempts.json`` beside the record).

5 consecutive failures lock PIN entry for 60 s, each further failure twice as long, up to 24 h; a
missing or unreadable attempts file next to a PIN record counts as tampering and re-locks. See
``qts.safety.pin`` for why this is a speed bump, not a wall. Standard library only at import time.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..fsutil import write_atomic
from ..paths import StateHome
from . import pin_kdf as _kdf
from .pin_common import (MAX_LOCK_S, Announce, PinLocked, WrongPin, _call, _canonical, _fmt_s, attempts_path,
                         ensure_keystore)
from .pin_record import PinRecord

MAX_FAILURES = 5
BASE_LOCK_S = 60


def lock_duration_s(failures: int) -> float:
    """How long PIN entry stays locked after the ``failures``-th consecutive failure."""
    if failures < MAX_FAILURES:
        return 0.0
    return float(min(BASE_LOCK_S * 2 ** min(failures - MAX_FAILURES, 20), MAX_LOCK_S))


@dataclass(frozen=True)
class _Attempts:
    failures: int
    last_failure_ts: int | None
    readable: bool
    problem: str = ""


def _read_attempts(home: StateHome, pin_exists: bool) -> _Attempts:
    path = attempts_path(home)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if pin_exists or os.path.lexists(path):
            return _Attempts(0, None, False, "the attempts file is missing although a PIN is set")
        return _Attempts(0, None, True)
    except OSError as e:
        return _Attempts(0, None, False, f"the attempts file cannot be read ({e.__class__.__name__})")
    try:
        d = json.loads(raw.decode("utf-8"))
        f, ts = d["failures"], d["last_failure_ts"]
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError("failures")
        if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int)):
            raise ValueError("last_failure_ts")
        if f >= MAX_FAILURES and ts is None:
            raise ValueError("a lockout without a time")
        return _Attempts(f, ts, True)
    except Exception:
        return _Attempts(0, None, False, "the attempts file is unreadable")


def _write_attempts(home: StateHome, failures: int, last_failure_ts: int | None, note: str = "") -> None:
    ensure_keystore(home)
    write_atomic(attempts_path(home), _canonical({"version": 1, "failures": failures,
                                                  "last_failure_ts": last_failure_ts, "note": note}))


@dataclass(frozen=True)
class LockState:
    failures: int
    locked: bool
    remaining_s: float
    attempts_readable: bool
    problem: str = ""


def _lock_state(att: _Attempts, now: int, recent_failures: int) -> LockState:
    recent = max(0, int(recent_failures or 0))
    if not att.readable:
        failures = max(MAX_FAILURES, recent)
        return LockState(failures, True, lock_duration_s(failures), False, att.problem)
    failures = max(att.failures, recent)
    if failures < MAX_FAILURES:
        return LockState(failures, False, 0.0, True)
    if recent > att.failures or att.last_failure_ts is None:
        # the caller knows of more failures than the file does: the file was reset. Lock from now.
        return LockState(failures, True, lock_duration_s(failures), True,
                         "the attempts file shows fewer failures than the caller's records")
    until = att.last_failure_ts + lock_duration_s(failures) * 1000
    remaining = min((until - now) / 1000.0, MAX_LOCK_S)
    return LockState(failures, remaining > 0, max(0.0, remaining), True)


def _enforce_lock(home: StateHome, now: int, recent_failures: int, announce: Announce | None,
                  pin_exists: bool) -> int:
    """Raise PinLocked while locked (re-anchoring a tampered attempts file); else return failures."""
    st = _lock_state(_read_attempts(home, pin_exists), now, recent_failures)
    if st.problem:
        try:
            _write_attempts(home, st.failures, now, note=f"re-anchored: {st.problem}")
        except OSError as e:  # cannot even rewrite it (a directory in its place?): stays locked
            st = LockState(st.failures, True, st.remaining_s, st.attempts_readable,
                           f"{st.problem}; rewriting it failed ({e.__class__.__name__}): remove "
                           f"{attempts_path(home)} by hand")
        _call(announce, "pin_attempts_tampered",
              f"PIN attempt counter was reset or damaged ({st.problem}); PIN entry locked for "
              f"{_fmt_s(st.remaining_s)}", "critical",
              {"failures": st.failures, "locked_for_s": st.remaining_s, "problem": st.problem})
    if st.locked:
        why = f" ({st.problem})" if st.problem else ""
        raise PinLocked(f"PIN entry is locked for another {_fmt_s(st.remaining_s)} after {st.failures} "
                        f"failed attempts{why}; even the right PIN is refused until then",
                        st.failures, st.remaining_s)
    return st.failures


def _fail(home: StateHome, failures_before: int, now: int, announce: Announce | None) -> WrongPin:
    failures = failures_before + 1
    _write_attempts(home, failures, now)
    locked_for = lock_duration_s(failures)
    if locked_for:
        msg = f"wrong PIN; PIN entry is now locked for {_fmt_s(locked_for)} ({failures} failures in a row)"
    else:
        left = MAX_FAILURES - failures
        msg = f"wrong PIN ({left} attempt{'s' if left != 1 else ''} left before PIN entry is locked)"
    _call(announce, "pin_failure", msg, "critical" if locked_for else "warning",
          {"failures": failures, "locked_for_s": locked_for})
    return WrongPin(msg, failures, locked_for)


def _verify_locked(home: StateHome, pin: str, now: int, recent_failures: int,
                   announce: Announce | None, rec: PinRecord) -> _kdf.SigningKey:
    """Lockout check + constant-time compare + decrypt. Caller holds the PIN lock."""
    failures = _enforce_lock(home, now, recent_failures, announce, pin_exists=True)
    if not isinstance(pin, str):
        raise TypeError("the PIN must be a string")
    kek = _kdf.verify_pin(rec, pin)
    if kek is None:
        raise _fail(home, failures, now, announce)
    key = _kdf.open_key(rec, kek)
    _write_attempts(home, 0, None, note=f"last success {now}")
    _call(announce, "pin_unlocked", "PIN accepted", "info", {"fingerprint": rec.fingerprint})
    return key
