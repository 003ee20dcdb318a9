"""PIN, lockout, cool-down, live grants, single-use approvals and the terminal reader.

Real files under tmp_path and real cryptography throughout; the only concession to speed is a low
scrypt cost passed as a function argument. Time is injected (epoch ms), never slept on.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qts.paths import StateHome
from qts.safety import grants, pin
from qts.safety.grants import (issue_live_grant, load_live_grant, revoke_live_grant, sign_approval,
                               use_approval, verify_approval, consume_approval)
from qts.safety.pin import (NoPin, OldPinRequired, PinLocked, PinRecordCorrupt, SigningKey, WeakPin, WrongPin,
                            pin_ready_since, set_pin, unlock)
from qts.safety.tty import NoTerminal, read_new_secret, read_secret

LIB = Path(__file__).resolve().parents[1] / "lib"
N = 2 ** 10                       # low scrypt cost, for tests only (a function argument)
T0 = 1_700_000_000_000            # epoch ms
S = 1000                          # one second in ms
GOOD = "Tr4de-Safely!"
OTHER = "n3w-Pin-Phrase"


class Events:
    def __init__(self):
        self.items = []

    def __call__(self, kind, message, severity, data):
        self.items.append((kind, message, severity, data))

    def kinds(self):
        return [k for k, *_ in self.items]


@pytest.fixture
def home(tmp_path):
    return StateHome(tmp_path / "proj" / ".quant-trading")


@pytest.fixture
def ready(home):
    """A home with a PIN set; returns the unlocked key."""
    set_pin(home, GOOD, scrypt_n=N, now=T0)
    return unlock(home, GOOD, now=T0)


def _fail_n(home, n, now):
    """n wrong PINs starting at ``now``, each after any lock has passed; returns the last time."""
    for i in range(n):
        if i:
            now += int(pin.lock_duration_s(i) * 1000) + S
        with pytest.raises(WrongPin):
            unlock(home, "wrong-" + GOOD, now=now)
    return now


# -- PIN: set, unlock, record ------------------------------------------------------------------------

def test_set_and_unlock(home):
    ev = Events()
    res = set_pin(home, GOOD, scrypt_n=N, now=T0, announce=ev)
    assert res.origin == "created" and res.announced and ev.kinds() == ["pin_created"]
    key = unlock(home, GOOD, now=T0 + S)
    assert isinstance(key, SigningKey)
    assert key.fingerprint == res.fingerprint == pin.fingerprint(home)
    assert key.public_key == pin.public_key(home) and len(key.public_key) == 32
    sig = key.sign(b"hello")
    assert pin.verify_signature(home, b"hello", sig)
    assert not pin.verify_signature(home, b"hellO", sig)
    assert not pin.verify_signature(home, b"hello", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not pin.verify_signature(home, b"hello", SigningKey.generate().sign(b"hello"))
    assert (pin.pin_path(home).stat().st_mode & 0o777) == 0o600
    rec = json.loads(pin.pin_path(home).read_text())
    assert rec["kdf"]["n"] == N and rec["kdf"]["r"] == 8 and rec["kdf"]["p"] == 1
    assert len(base64.b64decode(rec["kdf"]["salt"])) >= 16
    assert rec["fingerprint"] == key.fingerprint and rec["origin"] == "created"
    assert "SigningKey" in repr(key) and key.fingerprint in repr(key)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(key)


def test_default_cost_is_scrypt_2_17(home):
    """One real-cost derivation: the default record stores N=2**17, r=8, p=1 (maxmem suffices)."""
    assert pin.DEFAULT_SCRYPT_N == 2 ** 17
    set_pin(home, GOOD, now=T0)
    rec = json.loads(pin.pin_path(home).read_text())
    assert (rec["kdf"]["n"], rec["kdf"]["r"], rec["kdf"]["p"], rec["kdf"]["dklen"]) == (2 ** 17, 8, 1, 64)


def test_scrypt_cost_bounds(home):
    with pytest.raises(ValueError):
        set_pin(home, GOOD, scrypt_n=2 ** 4, now=T0)
    with pytest.raises(ValueError):
        set_pin(home, GOOD, scrypt_n=3000, now=T0)
    assert not pin.pin_path(home).exists()


def test_no_pin(home):
    with pytest.raises(NoPin):
        unlock(home, GOOD, now=T0)
    assert not pin.verify_signature(home, b"x", b"y" * 64)
    assert pin.pin_status(home, now=T0)["state"] == "missing"


def test_wrong_pin_counts_and_reports(home, ready):
    ev = Events()
    with pytest.raises(WrongPin) as e:
        unlock(home, "Tr4de-Safely?", now=T0, announce=ev)
    assert e.value.failures == 1 and "4 attempts left" in str(e.value)
    assert ev.kinds() == ["pin_failure"] and ev.items[0][3]["failures"] == 1
    assert pin.pin_status(home, now=T0)["failures"] == 1
    unlock(home, GOOD, now=T0, announce=ev)            # success resets the count
    assert ev.kinds()[-1] == "pin_unlocked"
    assert pin.pin_status(home, now=T0)["failures"] == 0


# -- lockout -----------------------------------------------------------------------------------------

def test_five_failures_lock_then_expire(home, ready):
    ev = Events()
    for i in range(4):
        with pytest.raises(WrongPin) as e:
            unlock(home, f"wrong-{i}-x", now=T0 + i * S, announce=ev)
        assert e.value.locked_for_s == 0
    t5 = T0 + 10 * S
    with pytest.raises(WrongPin) as e:
        unlock(home, "wrong-5-x", now=t5, announce=ev)
    assert e.value.failures == 5 and e.value.locked_for_s == 60 and "locked" in str(e.value)
    assert ev.items[-1][2] == "critical"
    # the RIGHT PIN is refused while locked, with the remaining time
    with pytest.raises(PinLocked) as e:
        unlock(home, GOOD, now=t5 + 1 * S)
    assert e.value.remaining_s == pytest.approx(59) and "59 s" in str(e.value)
    with pytest.raises(PinLocked):
        unlock(home, GOOD, now=t5 + 59 * S)
    st = pin.pin_status(home, now=t5 + 30 * S)
    assert st["locked"] and st["locked_remaining_s"] == pytest.approx(30)
    # expired: the right PIN works again and resets the counter
    unlock(home, GOOD, now=t5 + 61 * S)
    assert pin.pin_status(home, now=t5 + 61 * S)["failures"] == 0


def test_lockout_grows_and_is_capped(home, ready):
    t = _fail_n(home, 5, T0)                               # locked 60 s
    t += 61 * S
    with pytest.raises(WrongPin) as e:
        unlock(home, "still-wrong", now=t)                 # 6th: 120 s
    assert e.value.locked_for_s == 120
    with pytest.raises(PinLocked):
        unlock(home, GOOD, now=t + 119 * S)
    t += 121 * S
    with pytest.raises(WrongPin) as e:
        unlock(home, "still-wrong", now=t)                 # 7th: 240 s
    assert e.value.locked_for_s == 240
    assert [pin.lock_duration_s(f) for f in (4, 5, 6, 7, 8)] == [0, 60, 120, 240, 480]
    assert pin.lock_duration_s(16) == pin.lock_duration_s(500) == 24 * 3600


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "directory", "negative"])
def test_damaged_attempts_file_is_no_free_reset(home, ready, damage):
    last = _fail_n(home, 5, T0)
    path = pin.attempts_path(home)
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"\x00\xffnot json")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:7])
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_text(json.dumps({"version": 1, "failures": -3, "last_failure_ts": None}))
    later = last + 61 * S                                  # the original lock has expired by now
    ev = Events()
    st = pin.pin_status(home, now=later)
    assert st["locked"] and not st["attempts_readable"]
    if damage == "directory":
        for t in (later, later + 3600 * S):                # cannot even rewrite it: stays locked
            with pytest.raises(PinLocked, match="by hand"):
                unlock(home, GOOD, now=t, announce=ev)
        return
    with pytest.raises(PinLocked) as e:
        unlock(home, GOOD, now=later, announce=ev)
    assert e.value.remaining_s >= 60
    assert "pin_attempts_tampered" in ev.kinds()
    # the re-anchored lock runs from when the damage was seen, then normal service resumes
    with pytest.raises(PinLocked):
        unlock(home, GOOD, now=later + 59 * S)
    unlock(home, GOOD, now=later + 61 * S)


def test_deleting_attempts_file_before_any_failure_still_locks(home, ready):
    pin.attempts_path(home).unlink()
    with pytest.raises(PinLocked):
        unlock(home, GOOD, now=T0)


def test_callers_failure_count_wins_over_an_edited_file(home, ready):
    last = _fail_n(home, 8, T0)                            # 8 failures: 480 s lock
    # the attacker rewrites the file as "no failures"; the caller's DB says 8
    pin.attempts_path(home).write_text(json.dumps({"version": 1, "failures": 0, "last_failure_ts": None}))
    ev = Events()
    later = last + 10 * 60 * S
    with pytest.raises(PinLocked) as e:
        unlock(home, GOOD, now=later, recent_failures=8, announce=ev)
    assert e.value.failures == 8 and e.value.remaining_s == 480
    assert "pin_attempts_tampered" in ev.kinds()
    with pytest.raises(PinLocked):                         # re-anchored in the file now
        unlock(home, GOOD, now=later + 479 * S, recent_failures=8)
    unlock(home, GOOD, now=later + 481 * S, recent_failures=8)


def test_recent_failures_alone_can_lock(home, ready):
    with pytest.raises(PinLocked):
        unlock(home, GOOD, now=T0, recent_failures=5)


# -- the PIN is never stored in clear ----------------------------------------------------------------

def test_pin_not_stored_in_clear_anywhere(home, tmp_path):
    ev = Events()
    set_pin(home, GOOD, scrypt_n=N, now=T0, announce=ev)
    key = unlock(home, GOOD, now=T0, announce=ev)
    issue_live_grant(home, key, max_order_notional=10, max_daily_notional=50, symbols=["BTC/USDT"], now=T0)
    sign_approval(home, key, grants.ACTION_RAISE_RISK_LIMIT, {"limit": "max_position", "to": 0.2}, now=T0)
    with pytest.raises(WrongPin) as e:
        unlock(home, GOOD + "x", now=T0, announce=ev)
    assert GOOD not in str(e.value)
    set_pin(home, OTHER, old_pin=GOOD, scrypt_n=N, now=T0, announce=ev)
    needles = []
    for secret in (GOOD, OTHER):
        b = secret.encode()
        needles += [b, b.hex().encode(), base64.b64encode(b), secret.encode("utf-16-le")]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    files += [p for p in pin.keystore_dir(home).rglob("*") if p.is_file()]  # the key store is outside the project
    assert len(files) >= 5
    for p in files:
        data = p.read_bytes()
        for n in needles:
            assert n not in data, f"PIN found in {p}"
    for item in ev.items:
        assert GOOD not in repr(item) and OTHER not in repr(item)


# -- PIN rules ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("weak, why", [
    ("", "at least 6"), ("12345", "at least 6"), ("aB3$x", "at least 6"),
    ("111111", "same character"), ("aaaaaaaaaa", "same character"), ("AaAaAa", "same character"),
    ("123456", "sequence"), ("654321", "sequence"), ("abcdef", "sequence"), ("0123456789", "sequence"),
    ("7890123", "sequence"), ("FEDCBA", "sequence"),
    ("121212", "repeated pattern"), ("abcabcabc", "repeated pattern"),
    ("qwerty", "commonly used"), ("Password1", "commonly used"), ("112233", "commonly used"),
    (" Tr4de-Safely", "whitespace"), ("Tr4de\nSafely", "control"),
    # rule 2: a letter and a digit, and not a shape that fills every trading chat
    ("829174", "at least one letter and at least one digit"), ("4821-9377", "at least one letter"),
    ("correct horse battery staple", "at least one digit"), ("trade2024", "everyday chat"),
    ("65000usdt", "everyday chat"), ("0.01BTC", "everyday chat"), ("2024-05-01T10:00Z", "everyday chat"),
    ("63bd4ae9c1", "everyday chat"), ("5c7c9720-0b76-426f-b187-af2f6e526d92", "everyday chat"),
])
def test_weak_pins_refused(home, weak, why):
    with pytest.raises(WeakPin) as e:
        set_pin(home, weak, scrypt_n=N, now=T0)
    assert why in str(e.value)
    if len(weak) >= 6 and weak not in ("123456", "654321", "abcdef", "121212", "abcabc"):  # examples
        assert weak not in str(e.value)
    assert not pin.pin_path(home).exists()


@pytest.mark.parametrize("ok", ["Tr4de-Safely!", "correct horse 42", "ключ-2024-мост", "blue-7-harbor", "k7Qx93vB"])
def test_reasonable_pins_accepted(ok):
    assert pin.pin_problems(ok) == []


WORDS = ["Tr4de-Safely!", "829174", "65000", "2024-05-01", "0.01", "python3", "sha256", "BTC/USDT", "blue-7-harbor",
         "trade2024", "63bd4ae9", "k7Qx93vB", "abc12", "ETH/USDT:1h", "1,250.50", "x" * 300 + "1", "hello"]


@pytest.mark.parametrize("word", WORDS)
def test_the_prompt_guards_filter_is_exactly_the_pin_rule(word):
    """A word the filter skips can never be a PIN set under rule 2 (the guard would miss it), and the filter
    skips every plain number."""
    settable = pin.pin_problems(word) == []
    assert pin.could_be_pin(word, 2) == settable
    assert pin.could_be_pin(word, 1) == (6 <= len(word) <= 256)   # legacy records: anything long enough


def test_new_records_carry_the_rule_marker_and_old_ones_read_as_legacy(home):
    set_pin(home, GOOD, scrypt_n=N, now=T0)
    rec = json.loads(pin.pin_path(home).read_text())
    assert rec["pin_rules"] == pin.PIN_RULES == 2 and pin.record_rules(home) == 2
    assert GOOD not in json.dumps(rec)
    del rec["pin_rules"]                                   # a record written before the marker existed
    pin.pin_path(home).write_text(json.dumps(rec))
    assert pin.record_rules(home) == 1
    assert unlock(home, GOOD, now=T0).fingerprint == rec["fingerprint"]   # still unlocks
    rec["pin_rules"] = True                                # not a rule number
    pin.pin_path(home).write_text(json.dumps(rec))
    assert pin.record_rules(home) == 1
    pin.pin_path(home).unlink()
    assert pin.record_rules(home) is None


def test_strength_warning_for_short_numeric():
    assert pin.pin_strength_warnings("829174")
    assert not pin.pin_strength_warnings("correct horse battery staple")


# -- changing / replacing the PIN --------------------------------------------------------------------

def test_change_requires_old_pin(home, ready):
    old_fp = ready.fingerprint
    with pytest.raises(OldPinRequired):
        set_pin(home, OTHER, scrypt_n=N, now=T0)
    with pytest.raises(WrongPin):
        set_pin(home, OTHER, old_pin="not-the-pin", scrypt_n=N, now=T0)
    assert pin.pin_status(home, now=T0)["failures"] == 1     # a wrong old PIN is a failed attempt
    assert pin.fingerprint(home) == old_fp
    ev = Events()
    res = set_pin(home, OTHER, old_pin=GOOD, scrypt_n=N, now=T0, announce=ev)
    assert res.origin == "changed" and res.key_rotated and res.previous_fingerprint == old_fp
    assert "pin_changed" in ev.kinds()
    with pytest.raises(WrongPin):
        unlock(home, GOOD, now=T0)
    assert unlock(home, OTHER, now=T0).fingerprint == res.fingerprint != old_fp


def test_change_refused_while_locked(home, ready):
    last = _fail_n(home, 5, T0)
    with pytest.raises(PinLocked):
        set_pin(home, OTHER, old_pin=GOOD, scrypt_n=N, now=last + S)


def test_change_without_rotation_keeps_key(home, ready):
    res = set_pin(home, OTHER, old_pin=GOOD, scrypt_n=N, now=T0, rotate_key=False)
    assert res.fingerprint == ready.fingerprint and not res.key_rotated
    assert unlock(home, OTHER, now=T0).fingerprint == ready.fingerprint


def test_creation_after_deletion_is_announced(home, ready):
    pin.pin_path(home).unlink()
    ev = Events()
    res = set_pin(home, OTHER, scrypt_n=N, now=T0, announce=ev)
    assert res.origin == "created" and res.announced and ev.kinds() == ["pin_created"]
    assert ev.items[0][2] == "warning" and "did not do this yourself" in ev.items[0][1]
    assert json.loads(pin.pin_path(home).read_text())["origin"] == "created"
    assert res.fingerprint != ready.fingerprint


def test_replacing_a_corrupt_record_is_announced(home, ready):
    pin.pin_path(home).write_text('{"version": 1, "kdf": ')
    with pytest.raises(PinRecordCorrupt):
        unlock(home, GOOD, now=T0)
    assert pin.pin_status(home, now=T0)["state"] == "corrupt"
    ev = Events()
    res = set_pin(home, OTHER, scrypt_n=N, now=T0, announce=ev)
    assert res.origin == "replaced_unreadable" and ev.kinds() == ["pin_replaced"] and ev.items[0][2] == "critical"


def test_failed_announcement_writes_nothing(home, ready):
    pin.pin_path(home).unlink()

    def broken(*a):
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError):
        set_pin(home, OTHER, scrypt_n=N, now=T0, announce=broken)
    assert not pin.pin_path(home).exists()


def test_tampered_record_fields(home, ready):
    rec = json.loads(pin.pin_path(home).read_text())
    # another key's public half: the fingerprint no longer matches, or the AAD breaks the decrypt
    other = SigningKey.generate()
    bad = dict(rec, public_key=base64.b64encode(other.public_key).decode())
    pin.pin_path(home).write_text(json.dumps(bad))
    with pytest.raises(PinRecordCorrupt):
        unlock(home, GOOD, now=T0)
    bad = dict(bad, fingerprint=other.fingerprint)
    pin.pin_path(home).write_text(json.dumps(bad))
    with pytest.raises(PinRecordCorrupt, match="tampered"):
        unlock(home, GOOD, now=T0)
    # flipped ciphertext with the right PIN
    enc = dict(rec["encrypted_signing_key"])
    ct = bytearray(base64.b64decode(enc["ciphertext"]))
    ct[0] ^= 1
    enc["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    pin.pin_path(home).write_text(json.dumps(dict(rec, encrypted_signing_key=enc)))
    with pytest.raises(PinRecordCorrupt):
        unlock(home, GOOD, now=T0)


# -- cool-down ---------------------------------------------------------------------------------------

def test_cooldown(home, ready):
    fp = ready.fingerprint
    r = pin_ready_since(home, None, now=T0)
    assert not r.ready and "not been seen" in r.reason
    assert not pin_ready_since(home, {}, now=T0).ready
    assert not pin_ready_since(home, T0, now=T0 + 3599 * S).ready
    assert pin_ready_since(home, T0, now=T0 + 3600 * S).ready
    assert pin_ready_since(home, {fp: T0}, now=T0 + 3600 * S).ready
    # only lengthened, never shortened
    assert pin_ready_since(home, T0, now=T0 + 3599 * S, cooldown_s=1).ready is False
    assert pin_ready_since(home, T0, now=T0 + 3600 * S, cooldown_s=1).ready
    assert not pin_ready_since(home, T0, now=T0 + 3600 * S, cooldown_s=7200).ready
    assert pin_ready_since(home, T0, now=T0 + 7200 * S, cooldown_s=7200).ready
    assert pin_ready_since(home, T0, now=T0 + 3599 * S, cooldown_s=float("nan")).ready is False
    # a first-seen in the future is not trusted
    assert not pin_ready_since(home, T0 + 3600 * S, now=T0).ready


def test_cooldown_record_created_ts_only_lengthens(home, ready):
    rec = json.loads(pin.pin_path(home).read_text())
    pin.pin_path(home).write_text(json.dumps(dict(rec, created_ts=T0 - 30 * 86_400_000)))   # backdated
    assert not pin_ready_since(home, T0, now=T0 + 60 * S).ready
    pin.pin_path(home).write_text(json.dumps(dict(rec, created_ts=T0 + 1800 * S)))          # later
    assert not pin_ready_since(home, T0, now=T0 + 3600 * S).ready
    assert pin_ready_since(home, T0, now=T0 + 5400 * S).ready


# -- live grant --------------------------------------------------------------------------------------

def _grant(home, key, now=T0, **kw):
    args = dict(max_order_notional=100.0, max_daily_notional=500.0, symbols=["BTC/USDT", "ETH/USDT"], now=now)
    args.update(kw)
    return issue_live_grant(home, key, **args)


def test_grant_valid_within_scope(home, ready):
    g = _grant(home, ready)
    got = load_live_grant(home, T0 + S)
    assert got == g and got.scope.mode == "live" and got.key_fingerprint == ready.fingerprint
    assert got.expires_ts - got.issued_ts == 8 * 3600 * S
    assert got.state_home == str(home.root.resolve())
    assert got.refusal("BTC/USDT", 100.0) is None
    assert got.refusal("BTC/USDT", 60.0, day_notional_before=450.0) is not None
    assert got.refusal("BTC/USDT", 60.0, day_notional_before=440.0) is None
    assert "SOL/USDT" in got.refusal("SOL/USDT", 1.0)
    assert got.refusal("BTC/USDT", 100.01) is not None
    raw = json.loads(grants.live_grant_path(home).read_text())
    assert set(raw) == {"grant", "signature"} and len(base64.b64decode(raw["signature"])) == 64
    assert (grants.live_grant_path(home).stat().st_mode & 0o777) == 0o600


def test_grant_scope_validation(home, ready):
    with pytest.raises(ValueError):
        _grant(home, ready, max_order_notional=600.0)            # order > daily
    with pytest.raises(ValueError):
        _grant(home, ready, symbols=[])
    with pytest.raises(ValueError):
        _grant(home, ready, symbols=["BTC/USDT", "BTC/USDT"])
    with pytest.raises(ValueError):
        _grant(home, ready, max_order_notional=float("inf"), max_daily_notional=float("inf"))
    with pytest.raises(ValueError):
        _grant(home, ready, ttl_s=25 * 3600)
    with pytest.raises(ValueError):
        _grant(home, ready, now=1_700_000_000)                   # seconds, not ms
    with pytest.raises(ValueError):
        _grant(home, SigningKey.generate())                      # not this home's PIN key
    assert load_live_grant(home, T0) is None


def test_grant_expiry_and_clock(home, ready):
    g = _grant(home, ready, ttl_s=3600)
    assert load_live_grant(home, g.expires_ts - 1) is not None
    assert load_live_grant(home, g.expires_ts) is None
    assert load_live_grant(home, T0 - 2 * pin.CLOCK_SKEW_MS) is None      # issued "in the future"
    assert load_live_grant(home, 1_700_000_000) is None                    # seconds: refused, no raise


def test_grant_bound_to_its_home(home, ready, tmp_path):
    _grant(home, ready)
    other = StateHome(tmp_path / "elsewhere" / ".quant-trading")
    shutil.copytree(home.safety_dir, other.safety_dir)        # same pin.json, same key, same grant
    assert load_live_grant(other, T0 + S) is None
    assert load_live_grant(home, T0 + S) is not None


def _tamper(obj, path, value):
    *parents, last = path
    for p in parents:
        obj = obj[p]
    if value is KeyError:
        del obj[last]
    else:
        obj[last] = value


@pytest.mark.parametrize("path, value", [
    (("grant", "id"), "0" * 32),
    (("grant", "version"), 2),
    (("grant", "scope", "max_order_notional"), 101.0),
    (("grant", "scope", "max_daily_notional"), 5000.0),
    (("grant", "scope", "symbols"), ["BTC/USDT", "ETH/USDT", "SOL/USDT"]),
    (("grant", "scope", "symbols"), ["ETH/USDT", "BTC/USDT"]),
    (("grant", "scope", "mode"), "paper"),
    (("grant", "scope", "extra"), 1),
    (("grant", "state_home"), "/somewhere/else"),
    (("grant", "issued_ts"), T0 + 1),
    (("grant", "expires_ts"), T0 + 9 * 3600 * S),
    (("grant", "expires_ts"), float(T0 + 8 * 3600 * S)),
    (("grant", "key_fingerprint"), "f" * 32),
    (("grant", "issued_ts"), KeyError),
    (("grant", "extra"), True),
    (("extra",), 1),
    (("signature",), KeyError),
    (("signature",), ""),
    (("signature",), "not base64!"),
])
def test_grant_tampering_detected(home, ready, path, value):
    _grant(home, ready)
    p = grants.live_grant_path(home)
    d = json.loads(p.read_text())
    _tamper(d, path, value)
    p.write_text(json.dumps(d))
    assert load_live_grant(home, T0 + S) is None


def test_grant_signature_bit_flip_detected(home, ready):
    _grant(home, ready)
    p = grants.live_grant_path(home)
    d = json.loads(p.read_text())
    sig = bytearray(base64.b64decode(d["signature"]))
    sig[10] ^= 0x40
    d["signature"] = base64.b64encode(bytes(sig)).decode()
    p.write_text(json.dumps(d))
    assert load_live_grant(home, T0 + S) is None


def test_grant_file_damage(home, ready):
    _grant(home, ready)
    p = grants.live_grant_path(home)
    good = p.read_bytes()
    for cut in (0, 1, len(good) // 2, len(good) - 1):
        p.write_bytes(good[:cut])
        assert load_live_grant(home, T0 + S) is None, cut
    for junk in (b"\x00\x01\x02", b"[]", b"null", b'{"grant": null, "signature": null}', b"\xff" * 100):
        p.write_bytes(junk)
        assert load_live_grant(home, T0 + S) is None
    p.unlink()
    assert load_live_grant(home, T0 + S) is None
    p.mkdir()
    assert load_live_grant(home, T0 + S) is None
    assert revoke_live_grant(home) and not p.exists()
    p.write_bytes(good)
    assert load_live_grant(home, T0 + S) is not None          # the intact bytes still verify


def test_grant_without_pin_record_or_with_corrupt_one(home, ready):
    _grant(home, ready)
    pin.pin_path(home).write_text("garbage")
    assert load_live_grant(home, T0 + S) is None
    pin.pin_path(home).unlink()
    assert load_live_grant(home, T0 + S) is None


def test_revoke(home, ready):
    _grant(home, ready)
    assert revoke_live_grant(home) is True
    assert load_live_grant(home, T0 + S) is None
    assert revoke_live_grant(home) is False


def test_pin_change_invalidates_grants(home, ready):
    _grant(home, ready)
    set_pin(home, OTHER, old_pin=GOOD, scrypt_n=N, now=T0)
    assert load_live_grant(home, T0 + S) is None


def test_forged_grant_with_attackers_own_key(home, ready):
    """The attacker makes a key of its own and signs a grant: it does not verify against pin.json."""
    _grant(home, ready)
    attacker = SigningKey.generate()
    p = grants.live_grant_path(home)
    d = json.loads(p.read_text())
    d["grant"]["scope"]["max_order_notional"] = 1e6
    d["grant"]["scope"]["max_daily_notional"] = 1e7
    body = grants.LiveGrant.model_validate(d["grant"]).canonical_bytes()
    d["signature"] = base64.b64encode(attacker.sign(grants.GRANT_DOMAIN + body)).decode()
    p.write_text(json.dumps(d))
    assert load_live_grant(home, T0 + S) is None
    d["grant"]["key_fingerprint"] = attacker.fingerprint
    p.write_text(json.dumps(d))
    assert load_live_grant(home, T0 + S) is None
    with pytest.raises(ValueError):                       # the library will not sign with it either
        issue_live_grant(home, attacker, max_order_notional=1, max_daily_notional=1, symbols=["BTC/USDT"], now=T0)


@pytest.mark.parametrize("how", ["set_pin_after_delete", "handcrafted_backdated_record"])
def test_forged_grant_with_replaced_pin_record_is_caught_by_cooldown(home, ready, tmp_path, how):
    """If the attacker ALSO replaces pin.json with its own key, signatures verify: only the caller's
    first-seen record and the cool-down stand in the way (and the creation is announced)."""
    human_fp = ready.fingerprint
    first_seen = {human_fp: T0}                           # the caller's own record of keys it has seen
    th = T0 + 2 * 3600 * S                                # the human's key is past its cool-down
    _grant(home, ready, now=th)
    assert load_live_grant(home, th + S, key_first_seen=first_seen) is not None

    t = th + 60 * S
    ev = Events()
    if how == "set_pin_after_delete":
        pin.pin_path(home).unlink()
        res = set_pin(home, "att4cker-PIN", scrypt_n=N, now=t, announce=ev)
        assert res.origin == "created" and "pin_created" in ev.kinds()
    else:
        scratch = StateHome(tmp_path / "attacker" / ".quant-trading")
        set_pin(scratch, "att4cker-PIN", scrypt_n=N, now=t)
        rec = json.loads(pin.pin_path(scratch).read_text())
        rec["created_ts"] = T0 - 365 * 86_400_000        # pretends to be a year old
        rec["origin"] = "changed"
        pin.pin_path(home).write_text(json.dumps(rec))
        shutil.copy(pin.attempts_path(scratch), pin.attempts_path(home))
    attacker_key = unlock(home, "att4cker-PIN", now=t)
    assert attacker_key.fingerprint != human_fp
    issue_live_grant(home, attacker_key, max_order_notional=1e6, max_daily_notional=1e7,
                     symbols=["BTC/USDT"], now=t)

    # signature alone: the forged grant verifies (this is why the cool-down exists)
    assert load_live_grant(home, t + S) is not None
    # with the caller's first-seen record: the new key is unknown -> refused
    assert load_live_grant(home, t + S, key_first_seen=first_seen) is None
    assert not pin_ready_since(home, first_seen, now=t + S).ready
    # the caller notices the new key now, records it (and should alert the human); still refused
    first_seen[attacker_key.fingerprint] = t + S
    for later in (t + 2 * S, t + 3599 * S):
        assert load_live_grant(home, later, key_first_seen=first_seen) is None
    # the cool-down is a detection window, not a wall: after it, the forged key would be trusted
    assert load_live_grant(home, t + S + 3600 * S, key_first_seen=first_seen) is not None


# -- approvals ---------------------------------------------------------------------------------------

ACTIONS = [grants.ACTION_KILL_SWITCH_RESET, grants.ACTION_RAISE_RISK_LIMIT, grants.ACTION_PROMOTE_STRATEGY_LIVE,
           grants.ACTION_ORDER_OVER_THRESHOLD, grants.ACTION_OVERRIDE_PAPER_DAYS]


@pytest.mark.parametrize("action", ACTIONS)
def test_approval_round_trip(home, ready, action):
    payload = {"what": action, "n": 3, "x": 1.5, "nested": {"a": [1, "b", None, True]}}
    a = sign_approval(home, ready, action, payload, ttl_s=300, now=T0)
    assert verify_approval(home, a, action, now=T0 + S) == payload
    # it survives the database's JSON round trip (as the kill switch stores it)
    assert verify_approval(home, json.loads(json.dumps(a, sort_keys=True)), action, now=T0 + S) == payload
    assert verify_approval(home, a, "some_other_action", now=T0 + S) is None
    assert verify_approval(home, a, action, now=T0 + 300 * S) is None          # expired
    assert verify_approval(home, a, action, now=T0 - 2 * pin.CLOCK_SKEW_MS) is None


def test_approval_tampering(home, ready, tmp_path):
    a = sign_approval(home, ready, grants.ACTION_RAISE_RISK_LIMIT, {"limit": "max_position", "to": 0.2},
                      ttl_s=300, now=T0)
    for key, value in [("payload", {"limit": "max_position", "to": 0.9}), ("action", "promote_strategy_live"),
                       ("nonce", "1" * 32), ("expires_ts", T0 + 3600 * S), ("issued_ts", T0 + 1),
                       ("state_home", "/x"), ("key_fingerprint", "a" * 32), ("version", 2), ("extra", 1)]:
        bad = dict(a, **{key: value})
        assert verify_approval(home, bad, bad.get("action", a["action"]), now=T0 + S) is None, key
    assert verify_approval(home, {k: v for k, v in a.items() if k != "signature"}, a["action"], now=T0 + S) is None
    assert verify_approval(home, "not a dict", a["action"], now=T0 + S) is None
    forged = dict(a, payload={"limit": "max_position", "to": 0.9})
    body = grants.Approval.model_validate({k: v for k, v in forged.items() if k != "signature"}).canonical_bytes()
    forged["signature"] = base64.b64encode(SigningKey.generate().sign(grants.APPROVAL_DOMAIN + body)).decode()
    assert verify_approval(home, forged, a["action"], now=T0 + S) is None
    # a grant's signature cannot be reused as an approval's (domain separation) and vice versa
    other = StateHome(tmp_path / "other" / ".quant-trading")
    shutil.copytree(home.safety_dir, other.safety_dir)
    assert verify_approval(other, a, a["action"], now=T0 + S) is None             # bound to its home


def test_approval_payload_must_be_plain_json(home, ready):
    for bad in ({"x": float("nan")}, {"x": (1, 2)}, {1: "a"}, {"x": object()}, ["not", "a", "dict"]):
        with pytest.raises(ValueError):
            sign_approval(home, ready, grants.ACTION_RAISE_RISK_LIMIT, bad, now=T0)
    with pytest.raises(ValueError):
        sign_approval(home, ready, "Bad Action!", {}, now=T0)
    with pytest.raises(ValueError):
        sign_approval(home, SigningKey.generate(), grants.ACTION_RAISE_RISK_LIMIT, {}, now=T0)


def test_approval_replay_rejected(home, ready):
    a = sign_approval(home, ready, grants.ACTION_ORDER_OVER_THRESHOLD,
                      {"client_order_id": "qts1", "notional": 2500.0}, ttl_s=120, now=T0)
    assert use_approval(home, a, grants.ACTION_ORDER_OVER_THRESHOLD, now=T0 + S) == {
        "client_order_id": "qts1", "notional": 2500.0}
    assert use_approval(home, a, grants.ACTION_ORDER_OVER_THRESHOLD, now=T0 + 2 * S) is None
    assert verify_approval(home, a, grants.ACTION_ORDER_OVER_THRESHOLD, now=T0 + 2 * S) is None
    b = sign_approval(home, ready, grants.ACTION_PROMOTE_STRATEGY_LIVE, {"strategy": "sma"}, now=T0)
    assert consume_approval(home, b, now=T0 + S) is True
    assert consume_approval(home, b, now=T0 + S) is False
    assert verify_approval(home, b, grants.ACTION_PROMOTE_STRATEGY_LIVE, now=T0 + S) is None


@pytest.mark.parametrize("damage", ["delete", "garbage", "torn_line", "bad_header"])
def test_damaged_used_nonces_file_fails_closed(home, ready, damage):
    used = sign_approval(home, ready, grants.ACTION_RAISE_RISK_LIMIT, {"to": 1}, ttl_s=3600, now=T0)
    assert use_approval(home, used, grants.ACTION_RAISE_RISK_LIMIT, now=T0 + S)
    fresh = sign_approval(home, ready, grants.ACTION_RAISE_RISK_LIMIT, {"to": 2}, ttl_s=3600, now=T0 + S)
    p = grants.used_nonces_path(home)
    if damage == "delete":
        p.unlink()
    elif damage == "garbage":
        p.write_bytes(b"\x00garbage")
    elif damage == "torn_line":
        with open(p, "ab") as fh:
            fh.write(b'{"type":"used","non')
    else:
        lines = p.read_text().splitlines()
        p.write_text("\n".join(['{"type":"header"}'] + lines[1:]) + "\n")
    # nothing verifies, nothing can be consumed: not the unused one, and certainly not a replay
    assert verify_approval(home, fresh, grants.ACTION_RAISE_RISK_LIMIT, now=T0 + 2 * S) is None
    assert use_approval(home, used, grants.ACTION_RAISE_RISK_LIMIT, now=T0 + 2 * S) is None
    assert consume_approval(home, fresh, now=T0 + 2 * S) is False
    # the human signs a new approval: the file is recreated with a new epoch; earlier approvals,
    # including the consumed one, stay invalid
    ev = Events()
    newest = sign_approval(home, ready, grants.ACTION_RAISE_RISK_LIMIT, {"to": 3}, ttl_s=3600, now=T0 + 3 * S,
                           announce=ev)
    assert ev.kinds() == ([] if damage == "delete" else ["approval_nonces_reset"])
    assert use_approval(home, used, grants.ACTION_RAISE_RISK_LIMIT, now=T0 + 4 * S) is None
    assert verify_approval(home, fresh, grants.ACTION_RAISE_RISK_LIMIT, now=T0 + 4 * S) is None
    assert use_approval(home, newest, grants.ACTION_RAISE_RISK_LIMIT, now=T0 + 4 * S) == {"to": 3}


def test_used_nonces_pruning_keeps_unexpired(home, ready, monkeypatch):
    monkeypatch.setattr(grants, "PRUNE_AFTER_LINES", 3)
    approvals = [sign_approval(home, ready, grants.ACTION_RAISE_RISK_LIMIT, {"i": i}, ttl_s=3600, now=T0)
                 for i in range(6)]
    for a in approvals:
        assert use_approval(home, a, grants.ACTION_RAISE_RISK_LIMIT, now=T0 + S) is not None
    for a in approvals:
        assert use_approval(home, a, grants.ACTION_RAISE_RISK_LIMIT, now=T0 + 2 * S) is None


def test_pin_change_invalidates_approvals(home, ready):
    a = sign_approval(home, ready, grants.ACTION_KILL_SWITCH_RESET, {"engaged_event_id": 1}, now=T0)
    set_pin(home, OTHER, old_pin=GOOD, scrypt_n=N, now=T0)
    assert verify_approval(home, a, grants.ACTION_KILL_SWITCH_RESET, now=T0 + S) is None


# -- terminal ----------------------------------------------------------------------------------------

def test_injected_reader():
    assert "your own terminal" in str(NoTerminal()) and "not through the AI assistant" in str(NoTerminal())
    assert read_secret("PIN: ", reader=lambda p: "abc-123") == "abc-123"
    assert read_new_secret("PIN: ", "again: ", reader=lambda p: "abc-123") == "abc-123"
    answers = iter(["first-1", "second-2"])
    with pytest.raises(ValueError, match="do not match"):
        read_new_secret("PIN: ", "again: ", reader=lambda p: next(answers))


def test_no_secret_sources_but_the_terminal():
    """No environment variable, argv or stdin is consulted by the safety modules."""
    names = ["tty.py", "grants.py"] + sorted(p.name for p in (LIB / "qts" / "safety").glob("pin*.py"))
    assert {"pin.py", "pin_kdf.py", "pin_record.py", "pin_lockout.py", "pin_common.py"} <= set(names)
    for name in names:
        src = (LIB / "qts" / "safety" / name).read_text()
        for forbidden in ("os.environ", "getenv", "sys.argv", "sys.stdin", "input("):
            assert forbidden not in src, (name, forbidden)


_CHILD_NO_TTY = textwrap.dedent("""
    import os, sys
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
        print("OPEN_OK")
    except OSError:
        print("OPEN_FAILED")
    from qts.safety.tty import NoTerminal, read_secret
    try:
        s = read_secret("PIN: ")
        print("READ", len(s))
    except NoTerminal as e:
        print("NOTERMINAL", e)
""")


@pytest.mark.parametrize("stdin", ["devnull", "pipe_with_pin"])
def test_no_terminal_raises(stdin):
    env = dict(os.environ, PYTHONPATH=str(LIB))
    p = subprocess.run([sys.executable, "-c", _CHILD_NO_TTY], start_new_session=True, env=env,
                       stdin=subprocess.DEVNULL if stdin == "devnull" else None,
                       input=None if stdin == "devnull" else "829174\n",
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "OPEN_FAILED", "a new session without a controlling terminal should not open /dev/tty"
    assert lines[1].startswith("NOTERMINAL") and "your own terminal" in lines[1]
    assert "not through the AI assistant" in lines[1]


_CHILD_PTY = textwrap.dedent("""
    import os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)      # session leader opens a tty: it becomes the controlling one
    from qts.safety.tty import read_secret
    s = read_secret("PIN: ")
    sys.stdout.write("GOT " + s.encode().hex() + "\\n")
""")


def test_reads_from_the_controlling_terminal_with_echo_off():
    try:
        master, slave = os.openpty()
    except OSError:
        pytest.skip("no pseudo-terminals in this sandbox")
    secret = "Tr4de-Safely!"
    env = dict(os.environ, PYTHONPATH=str(LIB))
    try:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD_PTY, os.ttyname(slave)], start_new_session=True,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        seen = b""
        while b"PIN: " not in seen:                          # the prompt comes after echo is off
            r, _, _ = select.select([master], [], [], 30)
            assert r, f"no prompt; stderr={proc.stderr.read() if proc.poll() is not None else ''}"
            seen += os.read(master, 1024)
        os.write(master, secret.encode() + b"\n")
        out, err = proc.communicate(timeout=30)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert out.decode().strip() == "GOT " + secret.encode().hex()
    assert secret.encode() not in seen                        # not echoed
