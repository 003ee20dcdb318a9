"""The PIN: the one proof that a human, not the assistant, approved something risk-increasing.

How it works
------------
``pin.json`` in the KEY STORE (mode 0600, written atomically) holds. The key store lives outside the
project, in the user's config folder (``~/.config/quant-trading-system/keys/<home-id>/``, see
``agent/paths.py``), where Claude Code's sandbox keeps the assistant from reading or writing it:

* scrypt parameters (N=2**17, r=8, p=1, 64-byte output) and a random 32-byte salt;
* ``verifier``: the first 32 bytes of scrypt(PIN). The last 32 bytes are the key-encryption key
  (KEK), which is never stored;
* ``public_key``: an Ed25519 public key, in clear, so approvals and grants can be VERIFIED by
  anyone without the PIN;
* ``encrypted_signing_key``: the matching private key, AES-256-GCM encrypted under the KEK
  (additional data binds it to the public key and the KDF parameters), so approvals can only be
  MADE by someone who knows the PIN.

:func:`unlock` returns a :class:`SigningKey` when the PIN is right. Comparisons use
``hmac.compare_digest``. All timestamps are epoch MILLISECONDS (the project's convention); delays
and TTLs are seconds.

Lockout: 5 consecutive failures lock PIN entry for 60 s; every further failure locks again for
twice as long (120 s, 240 s, ...) up to 24 h. While locked even the right PIN is refused. Failures
live in ``pin_attempts.json`` beside it and are also reported through the ``announce`` callback (same
shape as ``Store.event``) so the caller can log them to the database; the caller may pass
``recent_failures`` (consecutive failures since the last success, counted from its own records) and
the larger of the two counts wins. The attempts file is written when a PIN is set, so a missing
attempts file next to a PIN record, or an unreadable one, counts as tampering: it is rewritten as
"5 failures, just now" (locked 60 s, or longer if the caller's count is higher) and announced.

Cool-down: a public key the caller has not seen for at least :data:`DEFAULT_COOLDOWN_S` (1 h; a
caller may only lengthen it) must not enable live trading. :func:`pin_ready_since` combines the
caller's own "first seen" record with the record's ``created_ts`` (which is untrusted and can only
make the wait longer, never shorter).

Residual risks (read these)
---------------------------
The assistant runs as the same OS user, so it can read, write and delete every file here.

1. Offline guessing. ``pin.json`` is readable, so the PIN can be guessed offline against the
   verifier; the lockout does nothing against that. Each guess costs one scrypt (about 0.45 s and
   128 MiB on this machine): all 10**6 six-digit PINs take about 5 CPU-days, less on many cores. Only the PIN's own
   strength protects here: use 10+ characters mixing letters, digits and symbols, or a passphrase.
   (New PINs need a letter and a digit: PIN_RULES below; older all-digit records still unlock.)
2. The attempts file (and the caller's database) can be EDITED, not just deleted: deletion or
   garbage fails closed, but a well-formed rewrite ("failures": 0) resets the online lockout. It is
   a speed bump and an audit trail, not a wall; see (1) for what actually bounds guessing.
3. Wholesale replacement. An attacker can delete ``pin.json`` and set its own PIN (announced, and
   recorded as ``origin``), or write a forged record holding its own public key; signatures then
   verify under the attacker's key. Only the caller's first-seen record plus the cool-down catch
   this, and that record is itself writable by the same user (it could be backdated). The cool-down
   is therefore a detection window: the caller should notify the human loudly whenever a new key
   fingerprint is first seen, so they can engage the kill switch. ``created_ts`` in the record is
   untrusted and is only ever used to lengthen the wait.
4. A PIN typed anywhere the assistant can read (the chat, which is written to the transcript on
   disk, a command line, shell history, a file, an environment variable) is compromised: change it.
   Changing the PIN rotates the signing key by default, which invalidates every grant and approval
   signed with the old key (and starts a new cool-down for the new key).
5. Memory. Python cannot wipe strings: the PIN and the private key stay in the unlocking process's
   memory until collected, and a same-user process may be able to read it (ptrace, /proc/PID/mem)
   where the kernel's ptrace policy allows.
6. A terminal is not proof of a human (see ``tty.py``); the PIN is.
7. Clock. Callers must pass wall-clock time in live mode (never replayed candle time): ``now`` is a
   function argument so tests can move time, and a caller that passes a stale ``now`` accepts stale
   grants.

Where the code lives: ``pin_kdf`` (scrypt, the signing key, its sealing), ``pin_record`` (the record
file and the PIN rules), ``pin_lockout`` (failed attempts), ``pin_common`` (errors, paths, helpers).
This module is the public face: import PIN names from here, not from those.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..fsutil import write_atomic
from ..paths import StateHome
from . import pin_kdf as _kdf
from .pin_common import (CLOCK_SKEW_MS, DEFAULT_COOLDOWN_S, MAX_LOCK_S, MIN_EPOCH_MS, Announce, NoPin,
                         OldPinRequired, PinError, PinLocked, PinRecordCorrupt, WeakPin, WrongPin, _b64,
                         _call, _canonical, _fmt_s, _now_ms, _unb64, attempts_path, ensure_keystore,
                         ensure_safety_dir, file_lock, keystore_dir, lock_path, pin_path)
from .pin_kdf import (DEFAULT_SCRYPT_N, DKLEN, MAX_SCRYPT_MEM, MAX_SCRYPT_N, MIN_SCRYPT_N,
                      RECORD_AAD, SALT_BYTES, SCRYPT_P, SCRYPT_R, SigningKey, fingerprint_of, normalize_pin)
from .pin_lockout import (BASE_LOCK_S, MAX_FAILURES, LockState, _enforce_lock, _lock_state,
                          _read_attempts, _verify_locked, _write_attempts, lock_duration_s)
from .pin_record import (MAX_PIN_LEN, MIN_PIN_LEN, PIN_RULES, RECORD_VERSION, PinRecord,
                         _build_record, _record_state, check_pin_quietly, check_pin_rules, could_be_pin,
                         fingerprint, load_record, pin_problems, pin_strength_warnings, public_key,
                         record_rules, verify_signature)

__all__ = [  # the public face: everything a caller imported from the single pin.py before the split
    "Announce", "BASE_LOCK_S", "CLOCK_SKEW_MS", "DEFAULT_COOLDOWN_S", "DEFAULT_SCRYPT_N", "DKLEN",
    "LockState", "MAX_FAILURES", "MAX_LOCK_S", "MAX_PIN_LEN", "MAX_SCRYPT_MEM", "MAX_SCRYPT_N",
    "MIN_EPOCH_MS", "MIN_PIN_LEN", "MIN_SCRYPT_N", "NoPin", "OldPinRequired", "PIN_RULES", "PinError",
    "PinLocked", "PinRecord", "PinRecordCorrupt", "RECORD_AAD", "RECORD_VERSION", "Readiness", "SALT_BYTES",
    "SCRYPT_P", "SCRYPT_R", "SetPinResult", "SigningKey", "WeakPin", "WrongPin", "_b64", "_build_record",
    "_call", "_canonical", "_derive", "_enforce_lock", "_fmt_s", "_lock_path", "_lock_state", "_now_ms",
    "_read_attempts", "_record_state", "_unb64", "_verify_locked", "_write_attempts", "attempts_path",
    "check_pin_quietly", "check_pin_rules", "could_be_pin", "ensure_keystore", "ensure_safety_dir",
    "file_lock", "fingerprint", "fingerprint_of", "keystore_dir", "load_record", "lock_duration_s",
    "lock_path", "normalize_pin", "pin_path", "pin_problems", "pin_ready_since", "pin_status",
    "pin_strength_warnings", "public_key", "record_rules", "set_pin", "unlock", "verify_signature",
]

_lock_path = lock_path
_derive = _kdf.derive            # old private names, still used by benches; patch pin_kdf.derive instead


def unlock(home: StateHome, pin: str, *, now: int | None = None, recent_failures: int = 0,
           announce: Announce | None = None) -> SigningKey:
    """The signing key, if ``pin`` is right and PIN entry is not locked.

    Raises NoPin, PinRecordCorrupt, PinLocked (with ``remaining_s``), WrongPin. ``recent_failures``:
    consecutive failures since the last success according to the caller's own records (for example
    ``pin_failure`` events after the last ``pin_unlocked`` event); the larger count wins.
    """
    now = _now_ms(now)
    ensure_keystore(home)
    with file_lock(lock_path(home)):
        state, rec = _record_state(home)
        if rec is None:
            load_record(home)  # raises the precise NoPin / PinRecordCorrupt
            raise PinRecordCorrupt("the PIN record changed while it was being read")
        return _verify_locked(home, pin, now, recent_failures, announce, rec)


@dataclass(frozen=True)
class SetPinResult:
    origin: str                 # "created" | "replaced_unreadable" | "changed"
    fingerprint: str
    previous_fingerprint: str | None
    announced: bool             # True when an announce callback was called
    key_rotated: bool


def set_pin(home: StateHome, new_pin: str, old_pin: str | None = None, *,
            scrypt_n: int = DEFAULT_SCRYPT_N, now: int | None = None, announce: Announce | None = None,
            recent_failures: int = 0, rotate_key: bool = True) -> SetPinResult:
    """Create or change the PIN.

    * A readable record exists: ``old_pin`` must verify (lockout applies, failures count). The
      signing key is replaced by a fresh one unless ``rotate_key=False`` (a leaked old PIN means a
      leaked key), which invalidates grants and approvals signed with the old key.
    * No record, or an unreadable one: a new record is created, ``origin`` says so in the record
      and the result, and ``announce`` is called (kind ``pin_created`` / ``pin_replaced``) BEFORE
      anything is written, so a failing announcement writes nothing.

    ``scrypt_n``: tests may pass a lower cost (down to 2**10), as an argument only.
    """
    now = _now_ms(now)
    check_pin_rules(new_pin)
    _kdf.check_kdf_params(scrypt_n, SCRYPT_R, SCRYPT_P)
    ensure_keystore(home)
    with file_lock(lock_path(home)):
        state, rec = _record_state(home)
        previous = None
        if state == "set":
            if old_pin is None:
                raise OldPinRequired("a PIN is already set: the current PIN is required to change it")
            old_key = _verify_locked(home, old_pin, now, recent_failures, announce, rec)
            previous = rec.fingerprint
            key = SigningKey.generate() if rotate_key else old_key
            origin, kind, severity = "changed", "pin_changed", "warning"
            msg = "the PIN was changed" + (" and the signing key rotated (earlier grants and approvals "
                                           "are no longer valid)" if rotate_key else "")
        else:
            key = SigningKey.generate()
            if state == "missing":
                origin, kind, severity = "created", "pin_created", "warning"
                msg = ("a new PIN is being created where none existed. If you did not do this yourself, "
                       "engage the kill switch and set a new PIN")
            else:
                origin, kind, severity = "replaced_unreadable", "pin_replaced", "critical"
                msg = ("the PIN record was unreadable and is being replaced by a new one. If you did not "
                       "do this yourself, engage the kill switch and set a new PIN")
            _call(announce, kind, msg, severity, {"fingerprint": key.fingerprint, "origin": origin})
        record = _build_record(new_pin, key, scrypt_n, origin, now)
        _write_attempts(home, 0, None, note=f"PIN {origin} {now}")
        write_atomic(pin_path(home), _canonical(record), mode=0o600)
        if origin == "changed":
            _call(announce, kind, msg, severity, {"fingerprint": key.fingerprint,
                                                  "previous_fingerprint": previous, "origin": origin})
    return SetPinResult(origin, key.fingerprint, previous, announce is not None,
                        previous is not None and key.fingerprint != previous)


def pin_status(home: StateHome, *, now: int | None = None, recent_failures: int = 0) -> dict:
    """What a status screen shows. Read-only and never raises."""
    try:
        now = _now_ms(now)
        state, rec = _record_state(home)
        st = _lock_state(_read_attempts(home, state != "missing"), now, recent_failures)
        out = {"state": state, "fingerprint": rec.fingerprint if rec else None,
               "created_ts_untrusted": rec.created_ts if rec else None,
               "origin": rec.origin if rec else None, "pin_rules": rec.rules if rec else None,
               "scrypt": {k: rec.kdf[k] for k in ("n", "r", "p")} if rec else None,
               "failures": st.failures, "locked": st.locked, "locked_remaining_s": st.remaining_s,
               "attempts_readable": st.attempts_readable, "problem": st.problem}
        return out
    except Exception as e:
        return {"state": "error", "fingerprint": None, "locked": True, "problem": e.__class__.__name__}


@dataclass(frozen=True)
class Readiness:
    ready: bool
    remaining_s: float
    fingerprint: str | None
    reason: str


def pin_ready_since(home: StateHome, first_seen: int | Mapping[str, int] | None, *,
                    now: int | None = None, cooldown_s: float = DEFAULT_COOLDOWN_S) -> Readiness:
    """May the current PIN key enable live trading yet? Never raises.

    ``first_seen``: when the CALLER first saw the current key fingerprint (epoch ms, from its own
    records), or a mapping fingerprint -> first-seen ms, or None if it has never seen it (then: not
    ready; the caller should record it now and notify the human). ``cooldown_s`` can only lengthen
    the default. The record's own ``created_ts`` is untrusted and only ever makes the wait longer.
    """
    try:
        now = _now_ms(now)
        rec = load_record(home)
        cool = max(float(DEFAULT_COOLDOWN_S), float(cooldown_s))  # NaN or less: the default
    except Exception as e:
        return Readiness(False, float(DEFAULT_COOLDOWN_S), None, f"not ready ({e.__class__.__name__}: {e})")
    if isinstance(first_seen, Mapping):
        seen = first_seen.get(rec.fingerprint)
    else:
        seen = first_seen
    if seen is None or isinstance(seen, bool) or not isinstance(seen, (int, float)) or seen != seen:
        return Readiness(False, cool, rec.fingerprint,
                         f"PIN key {rec.fingerprint} has not been seen before: record it now; live "
                         f"trading is refused for {_fmt_s(cool)} after that")
    if seen > now + CLOCK_SKEW_MS:
        return Readiness(False, cool, rec.fingerprint, "the first-seen record lies in the future")
    start = max(int(seen), rec.created_ts if rec.created_ts is not None else 0)
    # a far-future created_ts (clock trouble or tampering) still delays, but by at most a day per check
    start = min(start, now + MAX_LOCK_S * 1000)
    remaining = (start + cool * 1000 - now) / 1000.0
    if remaining > 0:
        return Readiness(False, remaining, rec.fingerprint,
                         f"PIN key {rec.fingerprint} is new: live trading waits another {_fmt_s(remaining)}")
    return Readiness(True, 0.0, rec.fingerprint, "cool-down passed")
