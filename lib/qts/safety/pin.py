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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..fsutil import LockTimeout, write_atomic
from ..fsutil import file_lock as _file_lock
from ..paths import StateHome

RECORD_VERSION = 1
RECORD_AAD = b"qts-pin-record-v1\x00"

DEFAULT_SCRYPT_N = 2 ** 17
SCRYPT_R = 8
SCRYPT_P = 1
MIN_SCRYPT_N = 2 ** 10          # lower N only as a function argument (tests); never from the env
MAX_SCRYPT_N = 2 ** 20
MAX_SCRYPT_MEM = 1 << 30        # refuse records asking for more than 1 GiB
SALT_BYTES = 32
DKLEN = 64

MIN_PIN_LEN = 6
MAX_PIN_LEN = 256

MAX_FAILURES = 5
BASE_LOCK_S = 60
MAX_LOCK_S = 24 * 3600

DEFAULT_COOLDOWN_S = 3600
CLOCK_SKEW_MS = 60_000
MIN_EPOCH_MS = 10 ** 11          # anything smaller is not epoch milliseconds (1973)

Announce = Callable[[str, str, str, dict], object]
"""``announce(kind, message, severity, data)``: the shape of ``Store.event``, so
``announce=store.event`` works. Severity is one of info / warning / critical."""


# -- errors ------------------------------------------------------------------------------------------

class PinError(Exception):
    """Base class: the PIN could not be used. Messages never contain the PIN."""


class NoPin(PinError):
    pass


class PinRecordCorrupt(PinError):
    pass


class WeakPin(PinError, ValueError):
    pass


class OldPinRequired(PinError):
    pass


class WrongPin(PinError):
    def __init__(self, message: str, failures: int, locked_for_s: float):
        super().__init__(message)
        self.failures = failures
        self.locked_for_s = locked_for_s


class PinLocked(PinError):
    def __init__(self, message: str, failures: int, remaining_s: float):
        super().__init__(message)
        self.failures = failures
        self.remaining_s = remaining_s


# -- small helpers -----------------------------------------------------------------------------------

def _now_ms(now: int | float | None) -> int:
    if now is None:
        return int(time.time() * 1000)
    if isinstance(now, bool) or not isinstance(now, (int, float)) or now != now:
        raise ValueError("now must be epoch milliseconds")
    if now < MIN_EPOCH_MS:
        raise ValueError(f"now={now!r} looks like seconds; pass epoch milliseconds")
    return int(now)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s, length: int | None = None, min_length: int | None = None) -> bytes:
    if not isinstance(s, str):
        raise ValueError("not a base64 string")
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"bad base64: {e}") from None
    if length is not None and len(raw) != length:
        raise ValueError(f"expected {length} bytes, got {len(raw)}")
    if min_length is not None and len(raw) < min_length:
        raise ValueError(f"expected at least {min_length} bytes, got {len(raw)}")
    return raw


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _fmt_s(s: float) -> str:
    s = int(max(0, s) + 0.999)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"


def _call(announce: Announce | None, kind: str, message: str, severity: str, data: dict) -> None:
    if announce is not None:
        announce(kind, message, severity, data)


def keystore_dir(home: StateHome) -> Path:
    """The key store for this state home: OUTSIDE the project (agent/paths.py), where the sandboxed
    assistant can neither read it (an offline PIN guess needs the record) nor write it."""
    from ..agent.paths import AgentPaths

    return AgentPaths.for_home(home.root).keystore


def pin_path(home: StateHome) -> Path:
    return keystore_dir(home) / "pin.json"


def attempts_path(home: StateHome) -> Path:
    return keystore_dir(home) / "pin_attempts.json"


def _lock_path(home: StateHome) -> Path:
    return keystore_dir(home) / ".pin.lock"


def ensure_keystore(home: StateHome) -> Path:
    """The key store folder, mode 0700 (its parents too, where this process creates them)."""
    d = keystore_dir(home)
    if not d.is_dir():
        old = os.umask(0o077)
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        finally:
            os.umask(old)
    try:
        os.chmod(d, 0o700)
    except OSError:
        pass
    return d


def ensure_safety_dir(home: StateHome) -> Path:
    d = home.safety_dir
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(d, 0o700)
    except OSError:
        pass
    return d


@contextmanager
def file_lock(path: Path, timeout_s: float = 30.0):
    """fsutil.file_lock, raising PinError (the callers' error type) when the lock cannot be had."""
    try:
        with _file_lock(path, timeout_s):
            yield
    except LockTimeout as e:
        raise PinError(str(e)) from None


# -- PIN rules ---------------------------------------------------------------------------------------

_COMMON = {
    "password", "passwort", "passwd", "qwerty", "qwertz", "azerty", "asdfgh", "asdfghjkl", "zxcvbn",
    "qazwsx", "1q2w3e", "1q2w3e4r", "abc123", "123abc", "letmein", "iloveyou", "trustno1", "monkey",
    "dragon", "master", "secret", "changeme", "123321", "112233", "159753", "147258", "147258369",
    "789456", "456789", "987654", "102030", "010203", "696969", "bitcoin", "satoshi", "crypto",
}


def normalize_pin(pin: str) -> str:
    if not isinstance(pin, str):
        raise TypeError("the PIN must be a string")
    return unicodedata.normalize("NFC", pin)


def _is_step_sequence(s: str) -> bool:
    """abcdef, 123456, 654321, fedcba, 7890123 (digits wrap around)."""
    if s.isdigit():
        d = [int(c) for c in s]
        steps = {(b - a) % 10 for a, b in zip(d, d[1:])}
        return steps in ({1}, {9})
    cps = [ord(c) for c in s]
    steps = {b - a for a, b in zip(cps, cps[1:])}
    return steps in ({1}, {-1})


def pin_problems(pin: str) -> list[str]:
    """Why a new PIN is refused (empty list: acceptable). Messages never quote the PIN."""
    pin = normalize_pin(pin)
    out = []
    if len(pin) < MIN_PIN_LEN:
        out.append(f"the PIN must be at least {MIN_PIN_LEN} characters long (got {len(pin)})")
    if len(pin) > MAX_PIN_LEN:
        out.append(f"the PIN must be at most {MAX_PIN_LEN} characters long")
    if any(unicodedata.category(c).startswith("C") for c in pin):
        out.append("the PIN must not contain control or invisible characters")
    if pin != pin.strip():
        out.append("the PIN must not start or end with whitespace")
    if out:
        return out
    low = pin.lower()
    if len(set(low)) == 1:
        out.append("the PIN must not be the same character repeated")
    elif _is_step_sequence(low):
        out.append("the PIN must not be a simple sequence such as 123456, 654321 or abcdef")
    else:
        for period in (2, 3):
            if len(low) >= 2 * period and all(low[i] == low[i % period] for i in range(len(low))):
                out.append("the PIN must not be a short repeated pattern such as 121212 or abcabc")
                break
    if not out and (low in _COMMON or low.startswith("password")):
        out.append("the PIN is a commonly used password; choose something less guessable")
    return out


def check_pin_rules(pin: str) -> None:
    problems = pin_problems(pin)
    if problems:
        raise WeakPin("; ".join(problems))


def pin_strength_warnings(pin: str) -> list[str]:
    """Advice for an acceptable-but-weak PIN (the record can be attacked offline; see the docstring)."""
    pin = normalize_pin(pin)
    warn = []
    if pin.isdigit() and len(pin) < 12:
        warn.append("a short all-digit PIN can be guessed offline from pin.json in days; "
                    "prefer 10+ characters mixing letters, digits and symbols, or a passphrase")
    elif len(pin) < 10:
        warn.append("PINs shorter than 10 characters are guessable offline; a passphrase is safer")
    return warn


# -- KDF and record ----------------------------------------------------------------------------------

def _check_kdf_params(n, r, p) -> None:
    for name, v in (("n", n), ("r", r), ("p", p)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"scrypt {name} must be an integer")
    if n < MIN_SCRYPT_N or n > MAX_SCRYPT_N or n & (n - 1):
        raise ValueError(f"scrypt n must be a power of two between {MIN_SCRYPT_N} and {MAX_SCRYPT_N}")
    if not (1 <= r <= 32 and 1 <= p <= 16) or 128 * r * n * p > MAX_SCRYPT_MEM:
        raise ValueError("scrypt r/p out of range")


def _derive(pin: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    """scrypt(PIN) -> (verifier, key-encryption key), 32 bytes each."""
    maxmem = 128 * r * (n + p + 2) + (32 << 20)
    out = hashlib.scrypt(normalize_pin(pin).encode("utf-8"), salt=salt, n=n, r=r, p=p,
                         maxmem=maxmem, dklen=DKLEN)
    return out[:32], out[32:]


def fingerprint_of(public_key_bytes: bytes) -> str:
    return hashlib.sha256(public_key_bytes).hexdigest()[:32]


def _aad(public_key_bytes: bytes, kdf: dict) -> bytes:
    return RECORD_AAD + public_key_bytes + _canonical(kdf)


class SigningKey:
    """An unlocked Ed25519 signing key. Not picklable; its repr shows only the fingerprint."""

    __slots__ = ("_key", "public_key", "fingerprint")

    def __init__(self, private_key):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("an Ed25519PrivateKey is required")
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        self.fingerprint = fingerprint_of(self.public_key)

    @classmethod
    def generate(cls) -> "SigningKey":
        """A fresh key NOT protected by any PIN (tests; the attacker can make these too)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data))

    def derive_key(self, purpose: bytes) -> bytes:
        """A 32-byte symmetric key for ``purpose`` (HKDF-SHA256 over the private key): what only the
        PIN can unlock, e.g. the encrypted exchange secret."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        raw = self._key.private_bytes_raw()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"qts:" + purpose).derive(raw)

    def __repr__(self) -> str:
        return f"<SigningKey {self.fingerprint}>"

    def __reduce__(self):
        raise TypeError("a SigningKey cannot be pickled or copied")


@dataclass(frozen=True)
class PinRecord:
    version: int
    kdf: dict
    salt: bytes
    verifier: bytes
    public_key: bytes
    fingerprint: str
    nonce: bytes
    ciphertext: bytes
    created_ts: int | None   # UNTRUSTED: written by whoever wrote the file
    origin: str


def _parse_record(raw: bytes) -> PinRecord:
    try:
        d = json.loads(raw.decode("utf-8"))
        if not isinstance(d, dict) or d.get("version") != RECORD_VERSION:
            raise ValueError("unknown record version")
        kdf = d["kdf"]
        if not isinstance(kdf, dict) or set(kdf) != {"name", "n", "r", "p", "dklen", "salt"}:
            raise ValueError("bad kdf block")
        if kdf["name"] != "scrypt" or kdf["dklen"] != DKLEN:
            raise ValueError("unsupported kdf")
        _check_kdf_params(kdf["n"], kdf["r"], kdf["p"])
        salt = _unb64(kdf["salt"], min_length=16)
        pub = _unb64(d["public_key"], 32)
        enc = d["encrypted_signing_key"]
        if not isinstance(enc, dict) or enc.get("alg") != "AES-256-GCM":
            raise ValueError("unsupported key encryption")
        rec = PinRecord(
            version=RECORD_VERSION, kdf=dict(kdf), salt=salt, verifier=_unb64(d["verifier"], 32),
            public_key=pub, fingerprint=fingerprint_of(pub), nonce=_unb64(enc["nonce"], 12),
            ciphertext=_unb64(enc["ciphertext"], 48),
            created_ts=d.get("created_ts") if isinstance(d.get("created_ts"), int)
            and not isinstance(d.get("created_ts"), bool) else None,
            origin=str(d.get("origin", "")))
        if d.get("fingerprint") != rec.fingerprint:
            raise ValueError("fingerprint does not match the public key")
        return rec
    except PinRecordCorrupt:
        raise
    except Exception as e:
        raise PinRecordCorrupt("the PIN record (pin.json in the key store) is unreadable: "
                               f"{e.__class__.__name__}: {e}") from None


def load_record(home: StateHome) -> PinRecord:
    """The parsed PIN record. Raises NoPin (missing) or PinRecordCorrupt (anything else)."""
    path = pin_path(home)
    try:
        raw = path.read_bytes() if path.stat().st_size <= 64 * 1024 else None
    except FileNotFoundError:
        raise NoPin("no PIN is set: set one in your own terminal with `qts approve set-pin`") from None
    except OSError as e:
        raise PinRecordCorrupt(f"cannot read the PIN record: {e.__class__.__name__}") from None
    if raw is None:
        raise PinRecordCorrupt("the PIN record is implausibly large")
    return _parse_record(raw)


def _record_state(home: StateHome) -> tuple[str, PinRecord | None]:
    try:
        return "set", load_record(home)
    except NoPin:
        if os.path.lexists(pin_path(home)):   # a dangling symlink, say
            return "corrupt", None
        return "missing", None
    except PinRecordCorrupt:
        return "corrupt", None


def _build_record(pin: str, key: SigningKey, n: int, origin: str, now: int) -> dict:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt = secrets.token_bytes(SALT_BYTES)
    verifier, kek = _derive(pin, salt, n, SCRYPT_R, SCRYPT_P)
    kdf = {"name": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "dklen": DKLEN, "salt": _b64(salt)}
    nonce = secrets.token_bytes(12)
    ct = AESGCM(kek).encrypt(nonce, key._key.private_bytes_raw(), _aad(key.public_key, kdf))
    return {
        "version": RECORD_VERSION,
        "kdf": kdf,
        "verifier": _b64(verifier),
        "public_key": _b64(key.public_key),
        "fingerprint": key.fingerprint,
        "encrypted_signing_key": {"alg": "AES-256-GCM", "nonce": _b64(nonce), "ciphertext": _b64(ct)},
        "created_ts": now,
        "origin": origin,
    }


def _open_key(rec: PinRecord, kek: bytes) -> SigningKey:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        raw = AESGCM(kek).decrypt(rec.nonce, rec.ciphertext, _aad(rec.public_key, rec.kdf))
    except InvalidTag:
        raise PinRecordCorrupt("the PIN is right but the stored signing key does not decrypt: "
                               "the PIN record was tampered with") from None
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(raw))
    if not hmac.compare_digest(key.public_key, rec.public_key):
        raise PinRecordCorrupt("the stored signing key does not match the stored public key")
    return key


# -- attempts / lockout ------------------------------------------------------------------------------

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
                   announce: Announce | None, rec: PinRecord) -> SigningKey:
    """Lockout check + constant-time compare + decrypt. Caller holds the PIN lock."""
    failures = _enforce_lock(home, now, recent_failures, announce, pin_exists=True)
    if not isinstance(pin, str):
        raise TypeError("the PIN must be a string")
    verifier, kek = _derive(pin, rec.salt, rec.kdf["n"], rec.kdf["r"], rec.kdf["p"])
    if not hmac.compare_digest(verifier, rec.verifier):
        raise _fail(home, failures, now, announce)
    key = _open_key(rec, kek)
    _write_attempts(home, 0, None, note=f"last success {now}")
    _call(announce, "pin_unlocked", "PIN accepted", "info", {"fingerprint": rec.fingerprint})
    return key


# -- public API --------------------------------------------------------------------------------------

def unlock(home: StateHome, pin: str, *, now: int | None = None, recent_failures: int = 0,
           announce: Announce | None = None) -> SigningKey:
    """The signing key, if ``pin`` is right and PIN entry is not locked.

    Raises NoPin, PinRecordCorrupt, PinLocked (with ``remaining_s``), WrongPin. ``recent_failures``:
    consecutive failures since the last success according to the caller's own records (for example
    ``pin_failure`` events after the last ``pin_unlocked`` event); the larger count wins.
    """
    now = _now_ms(now)
    ensure_keystore(home)
    with file_lock(_lock_path(home)):
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
    _check_kdf_params(scrypt_n, SCRYPT_R, SCRYPT_P)
    ensure_keystore(home)
    with file_lock(_lock_path(home)):
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


def public_key(home: StateHome) -> bytes:
    """The raw 32-byte Ed25519 public key (NoPin / PinRecordCorrupt when unavailable)."""
    return load_record(home).public_key


def fingerprint(home: StateHome) -> str:
    return load_record(home).fingerprint


def verify_signature(home: StateHome, data: bytes, sig: bytes) -> bool:
    """True only if ``sig`` is a valid signature of ``data`` by the current PIN key. Never raises."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        Ed25519PublicKey.from_public_bytes(public_key(home)).verify(bytes(sig), bytes(data))
        return True
    except Exception:
        return False


def pin_status(home: StateHome, *, now: int | None = None, recent_failures: int = 0) -> dict:
    """What a status screen shows. Read-only and never raises."""
    try:
        now = _now_ms(now)
        state, rec = _record_state(home)
        st = _lock_state(_read_attempts(home, state != "missing"), now, recent_failures)
        out = {"state": state, "fingerprint": rec.fingerprint if rec else None,
               "created_ts_untrusted": rec.created_ts if rec else None,
               "origin": rec.origin if rec else None,
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


def check_pin_quietly(home: StateHome, candidate: str) -> bool:
    """True if ``candidate`` is the PIN. Records nothing and never raises: for the prompt guard, which
    checks whether text typed into the chat leaked the PIN (standard library only, bounded work)."""
    try:
        rec = load_record(home)
        if not candidate or len(candidate) > 256:
            return False
        verifier, _ = _derive(candidate, rec.salt, rec.kdf["n"], rec.kdf["r"], rec.kdf["p"])
        return hmac.compare_digest(verifier, rec.verifier)
    except Exception:
        return False
