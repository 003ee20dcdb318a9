"""What the PIN modules share: errors, the key-store paths and lock, time and encoding helpers.

The PIN code is split by concern (``pin_kdf`` the cryptography, ``pin_record`` the record file and the
PIN rules, ``pin_lockout`` failed attempts); ``qts.safety.pin`` is the public face that callers import.
Standard library only: the hooks import this path.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..fsutil import LockTimeout
from ..fsutil import file_lock as _file_lock
from ..paths import StateHome

DEFAULT_COOLDOWN_S = 3600
CLOCK_SKEW_MS = 60_000
MIN_EPOCH_MS = 10 ** 11          # anything smaller is not epoch milliseconds (1973)
MAX_LOCK_S = 24 * 3600

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


def lock_path(home: StateHome) -> Path:
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


# the PIN record as read from its file (pin_record reads and writes it; pin_kdf verifies against it)
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
    rules: int = 1           # PIN_RULES it was set under (absent in older records: 1)
