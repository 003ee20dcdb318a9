"""The PIN record (``pin.json`` in the key store): its format, reading and writing, and the rules a new
PIN must pass. The cryptography it stores is ``pin_kdf``'s. Standard library only at import time.
"""
from __future__ import annotations

import hmac
import json
import os
import re
import unicodedata

from ..paths import StateHome
from . import pin_kdf as _kdf
from .pin_common import NoPin, PinRecord, PinRecordCorrupt, WeakPin, _b64, _unb64, pin_path
from .pin_kdf import DKLEN, normalize_pin

RECORD_VERSION = 1

MIN_PIN_LEN = 6
MAX_PIN_LEN = 256
# The rules a PIN was set under, recorded in its record (public: it says only which rule applied).
# 1: length and pattern checks only (records written before the rule below; digits-only PINs allowed).
# 2: also at least one letter and one digit. A PIN made only of digits (and separators) is a number, and a
#    chat is full of numbers (prices, amounts, dates): the prompt guard would have to hash every one of
#    them to spot a leaked PIN. Under rule 2 it hashes only words that could be a PIN, which a chat
#    rarely holds, and each of those still costs one full scrypt: nothing cheaper is stored anywhere.
PIN_RULES = 2


# -- PIN rules --------------------------------------------------------------------------------------

_COMMON = {
    "password", "passwort", "passwd", "qwerty", "qwertz", "azerty", "asdfgh", "asdfghjkl", "zxcvbn",
    "qazwsx", "1q2w3e", "1q2w3e4r", "abc123", "123abc", "letmein", "iloveyou", "trustno1", "monkey",
    "dragon", "master", "secret", "changeme", "123321", "112233", "159753", "147258", "147258369",
    "789456", "456789", "987654", "102030", "010203", "696969", "bitcoin", "satoshi", "crypto",
}


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
    if not _letter_and_digit(pin):
        out.append("the PIN must contain at least one letter and at least one digit (a PIN of digits only is a "
                   "number, and chats are full of numbers; a passphrase like 'blue-7-harbor' is easy to type)")
    elif _looks_like_chat_data(pin):
        out.append("the PIN must not look like everyday chat text (a date or time, a commit id or UUID, a word "
                   "followed by a number, an amount followed by a unit); mix words and digits, as in 'blue-7-harbor'")
    return out


# Shapes that fill a trading chat and are weak PINs anyway (rule 2 refuses them, so the prompt guard never
# hashes them): ISO dates/times, hexadecimal ids, word+number (python3, rsi14, trade2024), number+unit.
_CHAT_DATA = re.compile(r"\d{4}-\d\d-\d\d(?:[Tt ][\d:.]+)?(?:[Zz]|[+-]\d\d:?\d\d)?"
                        r"|[0-9a-fA-F]+(?:-[0-9a-fA-F]+)*"
                        r"|[^\W\d_]{1,16}[-_./:#]?\d[\d.,]*%?"
                        r"|[+-]?\d[\d.,]*%?[-_./:]?[^\W\d_]{1,16}")


def _looks_like_chat_data(s: str) -> bool:
    return _CHAT_DATA.fullmatch(s) is not None


def _letter_and_digit(s: str) -> bool:
    return any(c.isalpha() for c in s) and any(c.isdigit() for c in s)


def could_be_pin(token: str, rules: int = PIN_RULES) -> bool:
    """Could ``token`` be a PIN set under ``rules``? Cheap (no hashing): the prompt guard hashes only these.

    Rule 2 PINs pass :func:`pin_problems` exactly, so a word that fails it cannot be the PIN. Rule 1
    (legacy) PINs could be any text of MIN_PIN_LEN or more characters."""
    if not isinstance(token, str) or not (MIN_PIN_LEN <= len(token) <= MAX_PIN_LEN):
        return False
    if rules >= 2:
        return _letter_and_digit(token) and not pin_problems(token)
    return True


def record_rules(home: StateHome) -> int | None:
    """The PIN rules the current record was set under (1 for records older than the marker), or None when
    there is no readable record. Never raises."""
    try:
        return load_record(home).rules
    except Exception:
        return None


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


# -- the record ------------------------------------------------------------------------------------

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
        _kdf.check_kdf_params(kdf["n"], kdf["r"], kdf["p"])
        salt = _unb64(kdf["salt"], min_length=16)
        pub = _unb64(d["public_key"], 32)
        enc = d["encrypted_signing_key"]
        if not isinstance(enc, dict) or enc.get("alg") != "AES-256-GCM":
            raise ValueError("unsupported key encryption")
        rec = PinRecord(
            version=RECORD_VERSION, kdf=dict(kdf), salt=salt, verifier=_unb64(d["verifier"], 32),
            public_key=pub, fingerprint=_kdf.fingerprint_of(pub), nonce=_unb64(enc["nonce"], 12),
            ciphertext=_unb64(enc["ciphertext"], 48),
            created_ts=d.get("created_ts") if isinstance(d.get("created_ts"), int)
            and not isinstance(d.get("created_ts"), bool) else None,
            origin=str(d.get("origin", "")),
            rules=d["pin_rules"] if d.get("pin_rules") in (1, 2) and not isinstance(d.get("pin_rules"), bool) else 1)
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


def _build_record(pin: str, key: _kdf.SigningKey, n: int, origin: str, now: int) -> dict:
    kdf, verifier, nonce, ct = _kdf.seal_key(pin, key, n)
    return {
        "version": RECORD_VERSION,
        "kdf": kdf,
        "verifier": _b64(verifier),
        "public_key": _b64(key.public_key),
        "fingerprint": key.fingerprint,
        "encrypted_signing_key": {"alg": "AES-256-GCM", "nonce": _b64(nonce), "ciphertext": _b64(ct)},
        "created_ts": now,
        "origin": origin,
        "pin_rules": PIN_RULES,
    }


def public_key(home: StateHome) -> bytes:
    """The raw 32-byte Ed25519 public key (NoPin / PinRecordCorrupt when unavailable)."""
    return load_record(home).public_key


def fingerprint(home: StateHome) -> str:
    return load_record(home).fingerprint


def verify_signature(home: StateHome, data: bytes, sig: bytes) -> bool:
    """True only if ``sig`` is a valid signature of ``data`` by the current PIN key. Never raises."""
    try:
        return _kdf.verify_with(public_key(home), data, sig)
    except Exception:
        return False


def check_pin_quietly(home: StateHome, candidate: str) -> bool:
    """True if ``candidate`` is the PIN. Records nothing and never raises: for the prompt guard, which
    checks whether text typed into the chat leaked the PIN (standard library only, bounded work)."""
    try:
        rec = load_record(home)
        if not candidate or len(candidate) > 256:
            return False
        verifier, _ = _kdf.derive(candidate, rec.salt, rec.kdf["n"], rec.kdf["r"], rec.kdf["p"])
        return hmac.compare_digest(verifier, rec.verifier)
    except Exception:
        return False
