"""Tamper matrix: whatever the assistant deletes, truncates or fills with garbage, the system ends up
at least as safe as it was.

"Safety" is a tuple measured the way a FRESH process would see it (new database connection, empty
risk-profile cache), before and after one file is damaged:

* kill switch engaged?                              (engaged must stay engaged)
* a small live buy allowed by the gate?             (refused must stay refused)
* the risk profile in force                         (never looser than before, unless what it became is
                                                     the documented floor: the defaults tightened by settings)
* breaker: live allowed? trading-state strictness   (open stays open; HALTED / REDUCING never loosen)
* PIN entry locked?                                 (locked stays locked)

Three starting states: "locked" (kill switch engaged, HALTED, PIN locked, a tightened profile, a
valid grant), "live" (everything allowing live: grant, closed breaker, kill switch reset with the
PIN, a PIN-approved looser profile) and "reducing" (breaker tripped open, REDUCING).

Then forgeries (valid JSON written by hand) and the cases found to leave the system LESS safe, each
a strict xfail with the reason: they fail today and must be fixed, not hidden.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli
from qts.gate import Gate, Reason
from qts.paths import StateHome
from qts.safety import grants, pin, risk_gate
from qts.safety import kill_switch as ks
from qts.safety.approve import recent_failures, save_approval
from qts.safety.breaker import HALTED, REDUCING, STRICTNESS, Breaker
from qts.safety.grants import (ACTION_ORDER_OVER_THRESHOLD, ACTION_OVERRIDE_PAPER_DAYS, ACTION_RAISE_RISK_LIMIT,
                               issue_live_grant, sign_approval)
from qts.safety.pin import SigningKey, WrongPin, set_pin, unlock
from qts.safety.risk_profile import (default_profile, is_loosening, profile_path, record_hash, save_profile,
                                     validate_profile)
from qts.store import Store
from test_gate import BTC, N, PIN, STRATEGY, FixedFeed, LiveReportingPaperBroker, buy, live_factory  # noqa: F401

S = 1000
GARBAGE = bytes(range(256)) * 3 + b"\x00not json{"
NO_ENV = {k: None for k in CONFIG_VARS}

FILES = {
    "kill_flag": lambda h: h.kill_flag,
    "breaker": lambda h: h.breaker_file,
    "pin": pin.pin_path,
    "pin_attempts": pin.attempts_path,
    "live_grant": grants.live_grant_path,
    "used_nonces": grants.used_nonces_path,
    "risk_profile": profile_path,
    "risk_approval": lambda h: h.safety_dir / "risk_profile.approval.json",
    "database": lambda h: h.db_path,
}
OPS = ["delete", "truncate_0", "truncate_half", "garbage"]


def tamper(path, op):
    if op == "delete":
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        for side in ("-wal", "-shm"):          # the database's companions go with it
            path.with_name(path.name + side).unlink(missing_ok=True)
    elif op == "truncate_0":
        path.write_bytes(b"")
    elif op == "truncate_half":
        data = path.read_bytes() if path.exists() else b""
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(GARBAGE)


# ================================================================================== the safety tuple

@dataclass(frozen=True)
class Safety:
    kill_switch: bool
    live_allowed: bool
    profile: object            # RiskProfile in force, or None: the gate cannot evaluate orders at all
    breaker_live: bool
    trading_strictness: int
    pin_locked: bool


def measure(env) -> Safety:
    """The system's state as a fresh process sees it. Nothing here writes except what the system
    itself writes when it reads (a breaker trip on an unreadable state, a first-seen key)."""
    home, settings = env.home, env.settings
    risk_gate._cache.clear()
    now = env.clock.ms()
    try:
        store = Store.open(home)
    except Exception:
        # an unusable database: no session opens and no gate can be built, so nothing trades; the PIN
        # cannot be used either (every approval command opens the database first)
        br = Breaker(home, None).status(now)
        return Safety(ks.status(home, None).engaged, False, None, br.live_allowed, STRICTNESS[br.trading_state], True)
    try:
        feed = FixedFeed(now=None)
        broker = LiveReportingPaperBroker(store, feed)
        try:
            broker.ensure_account(10_000.0)      # the exchange's balance: not what is under test
        except Exception:
            pass
        gate = Gate(store, feed, broker, settings=settings)
        v = gate.evaluate(buy(1.0, client_order_id="probe"))
        try:
            profile = risk_gate.effective_profile(gate)
        except Exception:
            profile = None
        br = gate.breaker.status(now)
        try:
            failures = recent_failures(store)
        except Exception:
            failures = 10
        locked = pin.pin_status(home, now=now, recent_failures=failures)["locked"]
        return Safety(ks.status(home, store).engaged, v.allowed, profile, br.live_allowed,
                      STRICTNESS[br.trading_state], locked)
    finally:
        store.close()


def floor(settings):
    return default_profile().tightened_by_settings(settings)


def assert_at_least_as_safe(before: Safety, after: Safety, settings):
    problems = []
    if before.kill_switch and not after.kill_switch:
        problems.append("kill switch released")
    if after.live_allowed and not before.live_allowed:
        problems.append("live trading allowed")
    if before.profile is None and after.profile is not None:
        problems.append("orders evaluated again")
    if before.profile is not None and after.profile is not None:
        looser = is_loosening(before.profile, after.profile)
        if looser and is_loosening(floor(settings), after.profile):
            problems.append(f"risk profile loosened beyond the floor: {looser}")
    if after.breaker_live and not before.breaker_live:
        problems.append("breaker now allows live")
    if after.trading_strictness < before.trading_strictness:
        problems.append(f"trading state loosened {before.trading_strictness} -> {after.trading_strictness}")
    if before.pin_locked and not after.pin_locked:
        problems.append("PIN lockout lifted")
    assert problems == [], (before, after)


# ================================================================================== starting states

TIGHT = {"max_position_usd": 500.0, "risk_per_trade_pct": 1.0}
LOOSE = {"max_order_notional_usd": 2000.0, "max_positions": 20}   # (max_position_usd is capped by settings)


def _log(store):
    return lambda kind, msg, data=None: store.event("risk", msg, "warning", data)


def approve_profile(env, changes):
    """What `qts risk set` does when the human loosens with the PIN: save, then sign the record's hash."""
    new = validate_profile({**default_profile().model_dump(), **changes})
    saved = save_profile(env.home, new, approved_by_pin=True, log=_log(env.store), now_ms=env.clock.ms())
    a = sign_approval(env.home, env.key, ACTION_RAISE_RISK_LIMIT, {"hash": saved.record_hash}, ttl_s=24 * 3600,
                      now=env.clock.ms())
    (env.home.safety_dir / "risk_profile.approval.json").write_text(json.dumps(a))
    return saved


def state_locked(env):
    ks.engage(env.home, "test", env.store)
    Breaker(env.home, env.store).set_trading_state(HALTED, env.clock.ms())
    save_profile(env.home, validate_profile({**default_profile().model_dump(), **TIGHT}), approved_by_pin=False,
                 log=_log(env.store), now_ms=env.clock.ms())
    for i in range(5):
        with pytest.raises(WrongPin):
            unlock(env.home, f"wrong-{i}-pin", now=env.clock.ms(), announce=env.store.event)


def state_live(env):
    ks.engage(env.home, "earlier", env.store)
    ks.reset(env.home, env.store, env.key)
    approve_profile(env, LOOSE)


def state_reducing(env):
    env.gate.breaker.trip("test trip", env.clock.ms())
    Breaker(env.home, env.store).set_trading_state(REDUCING, env.clock.ms())


STATES = {"locked": state_locked, "live": state_live, "reducing": state_reducing}
EXPECTED = {   # (kill switch, live allowed, breaker live, strictness, pin locked)
    "locked": (True, False, True, 2, True),
    "live": (False, True, True, 0, False),
    "reducing": (False, False, False, 1, False),
}


def build(factory, state):
    env = factory(grant={})
    STATES[state](env)
    env.store.close()
    return env


@pytest.mark.parametrize("state", list(STATES))
def test_the_starting_states_are_what_they_claim(live_factory, state):
    """Guards the matrix: if a starting state silently lost its restrictions, nothing would be tested."""
    env = build(live_factory, state)
    s = measure(env)
    assert (s.kill_switch, s.live_allowed, s.breaker_live, s.trading_strictness, s.pin_locked) == EXPECTED[state]
    if state == "locked":
        assert s.profile.max_position_usd == 500.0 and s.profile.risk_per_trade_pct == 1.0
    if state == "live":
        assert (s.profile.max_order_notional_usd, s.profile.max_positions) == (2000.0, 20)
    assert measure(env) == s                      # measuring twice changes nothing


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("state", list(STATES))
def test_damage_never_loosens(live_factory, state, name, op):
    env = build(live_factory, state)
    before = measure(env)
    tamper(FILES[name](env.home), op)
    after = measure(env)
    assert_at_least_as_safe(before, after, env.settings)
    again = measure(env)                           # and it stays so (e.g. after the breaker recorded the trip)
    assert_at_least_as_safe(before, again, env.settings)


def test_a_directory_in_place_of_each_file_is_no_way_out(live_factory):
    for name in ("kill_flag", "breaker", "live_grant", "used_nonces", "risk_profile", "risk_approval"):
        for state in STATES:
            env = build(live_factory, state)
            before = measure(env)
            p = FILES[name](env.home)
            tamper(p, "delete")
            p.mkdir(parents=True)
            assert_at_least_as_safe(before, measure(env), env.settings)


# ================================================================================== forgeries

def _forge_grant(home, attacker, fingerprint, now):
    g = grants.LiveGrant(id="ab" * 16, scope=grants.GrantScope(max_order_notional=1e6, max_daily_notional=1e7,
                                                               symbols=[BTC]),
                         state_home=grants.home_id(home), issued_ts=now - 1000, expires_ts=now + 3600 * S,
                         key_fingerprint=fingerprint)
    sig = attacker.sign(grants.GRANT_DOMAIN + g.canonical_bytes())
    grants.live_grant_path(home).parent.mkdir(parents=True, exist_ok=True)
    grants.live_grant_path(home).write_text(json.dumps({"grant": g.model_dump(mode="json"),
                                                        "signature": base64.b64encode(sig).decode()}))


@pytest.mark.parametrize("fp", ["attacker", "victim"])
def test_a_hand_written_grant_signed_with_the_attackers_key_is_refused(live_factory, fp):
    env = live_factory(grant=None)
    attacker = SigningKey.generate()
    _forge_grant(env.home, attacker, attacker.fingerprint if fp == "attacker" else env.key.fingerprint,
                 env.clock.ms())
    v = env.gate.evaluate(buy(1.0))
    assert (v.allowed, v.code) == (False, Reason.LIVE_NOT_APPROVED)


def _replace_pin_record(env, tmp_path):
    """The attacker swaps in a PIN record of its own (made elsewhere, backdated) and knows its PIN."""
    scratch = StateHome(tmp_path / "attacker" / ".quant-trading")
    set_pin(scratch, "att4cker-PIN", scrypt_n=N, now=env.clock.ms() - 400 * 86_400_000)
    rec = json.loads(pin.pin_path(scratch).read_text())
    rec["origin"] = "changed"
    pin.pin_path(env.home).write_text(json.dumps(rec))
    shutil.copy(pin.attempts_path(scratch), pin.attempts_path(env.home))
    return unlock(env.home, "att4cker-PIN", now=env.clock.ms())


def test_a_forged_grant_with_a_replaced_pin_record_is_refused_by_the_cooldown(live_factory, tmp_path):
    env = live_factory(grant=None)
    attacker = _replace_pin_record(env, tmp_path)
    issue_live_grant(env.home, attacker, max_order_notional=1e6, max_daily_notional=1e7, symbols=[BTC],
                     now=env.clock.ms())
    assert grants.load_live_grant(env.home, env.clock.ms()) is not None       # the signature alone verifies
    v = env.gate.evaluate(buy(1.0))
    assert (v.allowed, v.code) == (False, Reason.LIVE_NOT_APPROVED)
    seen = env.store.query("SELECT severity, data FROM events WHERE kind='pin_key_seen' ORDER BY id")
    assert json.loads(seen[-1]["data"])["fingerprint"] == attacker.fingerprint
    assert seen[-1]["severity"] == "critical"                                   # announced loudly
    env.clock.advance(3599)
    assert env.gate.evaluate(buy(1.0)).code == Reason.LIVE_NOT_APPROVED


def _hand_written_profile(home, changes, version=7, previous="00" * 32):
    prof = {**default_profile().model_dump(), **changes}
    ts = 1_893_499_000_000
    rec = {"version": version, "profile": prof, "changed_ts": ts, "previous_hash": previous,
           "hash": record_hash(version, prof, ts, previous)}
    profile_path(home).write_text(json.dumps(rec))
    return rec


@pytest.mark.parametrize("approval", ["none", "other_hash", "attacker_key", "garbage"])
def test_a_hand_loosened_profile_with_a_recomputed_hash_is_not_in_force(live_factory, approval):
    env = live_factory(grant={})
    rec = _hand_written_profile(env.home, {"max_order_notional_usd": 50_000.0, "daily_loss_limit_pct": 50.0})
    path = env.home.safety_dir / "risk_profile.approval.json"
    if approval == "other_hash":
        a = sign_approval(env.home, env.key, ACTION_RAISE_RISK_LIMIT, {"hash": "11" * 32}, now=env.clock.ms())
        path.write_text(json.dumps(a))
    elif approval == "attacker_key":
        attacker = SigningKey.generate()
        body = grants.Approval(action=ACTION_RAISE_RISK_LIMIT, payload={"hash": rec["hash"]}, nonce="cd" * 16,
                               state_home=grants.home_id(env.home), issued_ts=env.clock.ms(),
                               expires_ts=env.clock.ms() + 3600 * S, key_fingerprint=env.key.fingerprint)
        sig = attacker.sign(grants.APPROVAL_DOMAIN + body.canonical_bytes())
        path.write_text(json.dumps({**body.model_dump(mode="json"), "signature": base64.b64encode(sig).decode()}))
    elif approval == "garbage":
        path.write_bytes(GARBAGE)
    risk_gate._cache.clear()
    assert risk_gate.effective_profile(env.gate) == floor(env.settings)
    ev = env.store.query("SELECT message FROM events WHERE kind='risk' ORDER BY id DESC LIMIT 1")
    assert "without a PIN approval" in ev[0]["message"]


def test_a_pin_approved_profile_is_in_force(live_factory):
    """The other side of the test above (so it can fail): the same kind of file WITH a PIN approval counts."""
    env = live_factory(grant={})
    saved = approve_profile(env, {"max_order_notional_usd": 50_000.0})
    risk_gate._cache.clear()
    assert risk_gate.effective_profile(env.gate).max_order_notional_usd == 50_000.0
    # editing the approved record by one field (hash recomputed) loses the approval
    rec = json.loads(profile_path(env.home).read_text())
    assert rec["hash"] == saved.record_hash
    _hand_written_profile(env.home, {"max_order_notional_usd": 50_000.0, "max_positions": 50}, rec["version"],
                          rec["previous_hash"])
    risk_gate._cache.clear()
    assert risk_gate.effective_profile(env.gate) == floor(env.settings)


@pytest.mark.parametrize("how", ["pin_changed", "approval_deleted", "nonces_deleted"])
def test_a_running_process_drops_a_looser_profile_whose_approval_stopped_verifying(live_factory, how):
    """No cache clearing here: the same process (a running loop) must notice that the approval behind a
    looser profile no longer holds (a PIN change rotates the key and voids every earlier approval)."""
    env = live_factory(grant={})
    approve_profile(env, {"max_order_notional_usd": 50_000.0})
    risk_gate._cache.clear()
    assert risk_gate.effective_profile(env.gate).max_order_notional_usd == 50_000.0
    if how == "pin_changed":
        set_pin(env.home, "n3w-Pin-Phrase", old_pin=PIN, scrypt_n=N, now=env.clock.ms())
    elif how == "approval_deleted":
        (env.home.safety_dir / "risk_profile.approval.json").unlink()
    else:
        grants.used_nonces_path(env.home).unlink()
    assert risk_gate.effective_profile(env.gate) == floor(env.settings)


def test_a_consumed_order_approval_made_fresh_again_still_sends_nothing_twice(live_factory):
    """The used-nonces file truncated back to before a consumption (a truncation at a line boundary)
    makes the approval verify again, but the order it names exists already: DUPLICATE, not sent."""
    env = live_factory(grant={"max_order_notional": 1000.0, "max_daily_notional": 5000.0})
    coid = "qtslBIG1"
    a = sign_approval(env.home, env.key, ACTION_ORDER_OVER_THRESHOLD,
                      {"client_order_id": coid, "max_notional": 700.0}, now=env.clock.ms())
    save_approval(env.home, f"order_{coid}", a)
    nonces = grants.used_nonces_path(env.home)
    clean = nonces.read_bytes()
    res = env.gate.submit(buy(6.0, client_order_id=coid))                     # 600 USD > 500: needs it
    assert res.accepted, res
    nonces.write_bytes(clean)                                                  # the consumption is gone
    assert grants.verify_approval(env.home, a, ACTION_ORDER_OVER_THRESHOLD, env.clock.ms()) is not None
    again = env.gate.submit(buy(6.0, client_order_id=coid))
    assert (again.accepted, again.reason_code) == (False, Reason.DUPLICATE)
    assert env.store.scalar("SELECT COUNT(*) FROM orders WHERE client_order_id=?", (coid,)) == 1


# ================================================================================== found: LESS safe

def test_a_replaced_pin_record_cannot_release_the_kill_switch(live_factory, tmp_path):
    env = live_factory(grant={})
    ks.engage(env.home, "test", env.store)
    attacker = _replace_pin_record(env, tmp_path)
    ks.reset(env.home, env.store, attacker)
    assert ks.status(env.home, env.store).engaged


def test_a_replaced_pin_record_cannot_approve_a_looser_profile(live_factory, tmp_path):
    env = live_factory(grant={})
    attacker = _replace_pin_record(env, tmp_path)
    rec = _hand_written_profile(env.home, {"max_order_notional_usd": 50_000.0})
    a = sign_approval(env.home, attacker, ACTION_RAISE_RISK_LIMIT, {"hash": rec["hash"]}, now=env.clock.ms())
    (env.home.safety_dir / "risk_profile.approval.json").write_text(json.dumps(a))
    risk_gate._cache.clear()
    assert risk_gate.effective_profile(env.gate) == floor(env.settings)


@pytest.mark.parametrize("op", ["delete", "garbage"])
def test_damaging_a_tightened_profile_keeps_it_tight(live_factory, op):
    env = live_factory(grant={})
    save_profile(env.home, validate_profile({**default_profile().model_dump(), **TIGHT}), approved_by_pin=False,
                 log=_log(env.store), now_ms=env.clock.ms())
    risk_gate._cache.clear()
    before = risk_gate.effective_profile(env.gate)
    tamper(profile_path(env.home), op)
    risk_gate._cache.clear()
    assert is_loosening(before, risk_gate.effective_profile(env.gate)) == []


def test_a_hand_appended_breaker_line_does_not_loosen(live_factory):
    env = live_factory(grant={})
    now = env.clock.ms()
    b = Breaker(env.home, env.store)
    last = b.set_trading_state(HALTED, now)
    forged = {"state": "closed", "trading_state": "ACTIVE", "since_ts": now + 1, "reason": "ok", "trips": last.trips,
              "version": last.version + 1, "from": "closed"}
    with open(env.home.breaker_file, "a") as fh:
        fh.write(json.dumps(forged) + "\n")
    assert b.status(now + 2).trading_state == HALTED


def test_run_fresh_does_not_loosen_a_halted_state(tmp_path):
    root = tmp_path / "home"
    home = StateHome(root).ensure()
    store = Store.open(home)
    Breaker(home, store).set_trading_state(HALTED, 1_893_499_200_000)
    store.close()
    r = CliRunner().invoke(cli, ["--home", str(root), "run", "--fresh", "--cycles", "1", "--quiet", "--days", "0.05"],
                           env=NO_ENV, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    store = Store.open(home)
    try:
        assert Breaker(home, store).status(1_893_499_300_000).trading_state == HALTED
    finally:
        store.close()


def test_deleting_the_database_does_not_reset_the_daily_live_budget(live_factory):
    env = live_factory(grant={"max_order_notional": 300.0, "max_daily_notional": 700.0})
    for i in range(2):                                             # 2 x 3 BTC x ~100 = ~600 of 700 today
        assert env.gate.submit(buy(3.0, client_order_id=f"qtslD{i}")).accepted
    assert env.gate.evaluate(buy(3.0, client_order_id="qtslD9")).code == Reason.LIVE_SCOPE
    a = sign_approval(env.home, env.key, ACTION_OVERRIDE_PAPER_DAYS, {"strategy": STRATEGY}, ttl_s=24 * 3600,
                      now=env.clock.ms())
    save_approval(env.home, f"paper_override_{STRATEGY}", a)      # the human's own override, still valid
    env.store.close()
    tamper(env.home.db_path, "delete")
    store = Store.open(env.home)
    env.store = store
    try:
        broker = LiveReportingPaperBroker(store, env.feed)
        broker.ensure_account(10_000.0)
        gate = Gate(store, env.feed, broker, settings=env.settings)
        assert gate.evaluate(buy(3.0, client_order_id="qtslD8")).code == Reason.LIVE_NOT_APPROVED   # new key?
        env.clock.advance(3601)                                    # same day, an hour later
        assert gate.evaluate(buy(3.0, client_order_id="qtslD7")).code == Reason.LIVE_SCOPE
    finally:
        store.close()
