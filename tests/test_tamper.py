"""Tamper matrix: whatever the assistant deletes, truncates or fills with garbage, the system ends up
at least as safe as it was.

Two parts.

1. The project's local state (paper trading, and what the hooks and `qts status` read): kill switch,
   breaker, risk profile, PIN files. "Safety" is a tuple measured the way a FRESH process would see it
   (new database connection, empty risk-profile cache), before and after one file is damaged:

   * kill switch engaged?                              (engaged must stay engaged)
   * a small PAPER buy allowed by the gate?            (refused must stay refused)
   * the risk profile in force                         (never looser than before, unless what it became is
                                                        the documented floor: the defaults tightened by settings)
   * breaker: live allowed? trading-state strictness   (open stays open; HALTED / REDUCING never loosen)
   * PIN entry locked?                                 (locked stays locked)

   Three starting states: "locked" (kill switch engaged, HALTED, PIN locked, a tightened profile),
   "open" (closed breaker, kill switch reset with the PIN, a PIN-approved looser profile) and "reducing"
   (breaker tripped open, REDUCING). Then forgeries (valid JSON written by hand).

2. Live money, which only the trading agent moves (agent/authority.py): its policy is in its memory and
   its day's budget comes from the exchange's own fills, so damaging, deleting or rolling back files in
   the project (the whole state home included) loosens nothing a running or restarted agent enforces.
   These run the gate the agent runs: the REAL live broker against the in-process loopback Binance.

(The file-based live grant, safety/grants/live.json, is no longer read by anything that trades: the gate
refuses live orders without the agent. Its tamper cases went with it; part 2 shows a grant file, even
one signed with the real PIN, opens nothing.)
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.broker.models import OrderIntent
from qts.broker.paper import PaperBroker
from qts.cli import cli
from qts.gate import Gate, Reason
from qts.paths import StateHome
from qts.safety import grants, pin, risk_gate
from qts.safety import kill_switch as ks
from qts.safety.approve import recent_failures
from qts.safety.breaker import HALTED, REDUCING, STRICTNESS, Breaker
from qts.safety.grants import ACTION_RAISE_RISK_LIMIT, sign_approval
from qts.safety.pin import SigningKey, WrongPin, set_pin, unlock
from qts.safety.risk_profile import (default_profile, is_loosening, profile_path, record_hash, save_profile,
                                     validate_profile)
from qts.store import Store
from test_gate import BTC, ETH, N, PIN, FixedFeed, buy, settings_for

S = 1000
GARBAGE = bytes(range(256)) * 3 + b"\x00not json{"
NO_ENV = {k: None for k in CONFIG_VARS}

FILES = {
    "kill_flag": lambda h: h.kill_flag,
    "breaker": lambda h: h.breaker_file,
    "pin": pin.pin_path,
    "pin_attempts": pin.attempts_path,
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
        path.parent.mkdir(parents=True, exist_ok=True)        # (a file that was not there is created)
        path.write_bytes(b"")
    elif op == "truncate_half":
        data = path.read_bytes() if path.exists() else b""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[: len(data) // 2])
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(GARBAGE)


# ================================================================================== the safety tuple

@dataclass(frozen=True)
class Safety:
    kill_switch: bool
    paper_buy_allowed: bool
    profile: object            # RiskProfile in force, or None: the gate cannot evaluate orders at all
    breaker_live: bool
    trading_strictness: int
    pin_locked: bool


def measure(env) -> Safety:
    """The system's state as a fresh process sees it. Nothing here writes except what the system
    itself writes when it reads (a breaker trip on an unreadable state, a first-seen key, the paper
    account a new database needs)."""
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
        broker = PaperBroker(store, feed)
        try:
            broker.ensure_account(10_000.0)
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
    if after.paper_buy_allowed and not before.paper_buy_allowed:
        problems.append("a paper buy allowed")
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


# ================================================================================== the environment

class Clock:
    """Real wall-clock time in epoch ms (the breaker, the PIN and the approvals are checked at it)."""

    @staticmethod
    def ms() -> int:
        return int(time.time() * 1000)


@dataclass
class Env:
    home: StateHome
    store: Store
    settings: object
    feed: FixedFeed
    broker: PaperBroker
    gate: Gate
    key: object
    clock: Clock


def close_breaker(breaker: Breaker, now_ms: int) -> None:
    """A fresh install reads as open; half_open after the 900 s cool-down, closed after 900 s of
    probation. Played in the past (the breaker is read on the wall clock, i.e. now)."""
    breaker.status(now_ms - 3000 * S)
    assert breaker.check(now_ms - 2000 * S).state == "half_open"
    assert breaker.check(now_ms - 1000 * S).state == "closed"


def make_env(root) -> Env:
    """A paper state home: a PIN whose key was first seen two hours ago (past its cool-down) and a
    closed breaker."""
    clock = Clock()
    home = StateHome(root).ensure()
    store = Store.open(home)
    settings = settings_for(home)
    feed = FixedFeed(now=None)
    broker = PaperBroker(store, feed, fee_bps=settings.FEE_BPS, slippage_bps=settings.SLIPPAGE_BPS)
    broker.ensure_account(10_000.0)
    gate = Gate(store, feed, broker, settings=settings)
    now = clock.ms()
    set_pin(home, PIN, scrypt_n=N, now=now - 2 * 3600 * S)
    key = unlock(home, PIN, now=now)
    store.event("pin_key_seen", "first seen (test set-up)", "critical", {"fingerprint": key.fingerprint},
                ts=now - 2 * 3600 * S)
    close_breaker(gate.breaker, now)
    return Env(home, store, settings, feed, broker, gate, key, clock)


@pytest.fixture
def factory(tmp_path):
    made = []

    def make():
        env = make_env(tmp_path / f"home{len(made)}")
        made.append(env)
        return env

    yield make
    for env in made:
        env.store.close()


@pytest.fixture
def env(factory):
    return factory()


# ================================================================================== starting states

TIGHT = {"max_position_usd": 500.0, "risk_per_trade_pct": 1.0}
LOOSE = {"max_order_notional_usd": 2000.0, "max_positions": 20}   # (max_position_usd is capped by settings)


def _log(store):
    return lambda kind, msg, data=None: store.event("risk", msg, "warning", data)


def approve_profile(env, changes):
    """What `qts risk set` does when the human loosens with the PIN: save, then sign the record's hash."""
    new = validate_profile({**default_profile().model_dump(), **changes})
    saved = save_profile(env.home, new, log=_log(env.store), now_ms=env.clock.ms(), signing_key=env.key)
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


def state_open(env):
    ks.engage(env.home, "earlier", env.store)
    ks.reset(env.home, env.store, env.key)
    approve_profile(env, LOOSE)


def state_reducing(env):
    env.gate.breaker.trip("test trip", env.clock.ms())
    Breaker(env.home, env.store).set_trading_state(REDUCING, env.clock.ms())


STATES = {"locked": state_locked, "open": state_open, "reducing": state_reducing}
EXPECTED = {   # (kill switch, paper buy allowed, breaker live, strictness, pin locked)
    "locked": (True, False, True, 2, True),
    "open": (False, True, True, 0, False),
    "reducing": (False, False, False, 1, False),
}


def build(factory, state):
    env = factory()
    STATES[state](env)
    env.store.close()
    return env


@pytest.mark.parametrize("state", list(STATES))
def test_the_starting_states_are_what_they_claim(factory, state):
    """Guards the matrix: if a starting state silently lost its restrictions, nothing would be tested."""
    env = build(factory, state)
    s = measure(env)
    assert (s.kill_switch, s.paper_buy_allowed, s.breaker_live, s.trading_strictness, s.pin_locked) == EXPECTED[state]
    if state == "locked":
        assert s.profile.max_position_usd == 500.0 and s.profile.risk_per_trade_pct == 1.0
    if state == "open":
        assert (s.profile.max_order_notional_usd, s.profile.max_positions) == (2000.0, 20)
    assert measure(env) == s                      # measuring twice changes nothing


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("state", list(STATES))
def test_damage_never_loosens(factory, state, name, op):
    env = build(factory, state)
    before = measure(env)
    tamper(FILES[name](env.home), op)
    after = measure(env)
    assert_at_least_as_safe(before, after, env.settings)
    again = measure(env)                           # and it stays so (e.g. after the breaker recorded the trip)
    assert_at_least_as_safe(before, again, env.settings)


def test_a_directory_in_place_of_each_file_is_no_way_out(factory):
    for name in ("kill_flag", "breaker", "used_nonces", "risk_profile", "risk_approval"):
        for state in STATES:
            env = build(factory, state)
            before = measure(env)
            p = FILES[name](env.home)
            tamper(p, "delete")
            p.mkdir(parents=True)
            assert_at_least_as_safe(before, measure(env), env.settings)


# ================================================================================== forgeries

def _replace_pin_record(env, tmp_path):
    """The attacker swaps in a PIN record of its own (made elsewhere, backdated) and knows its PIN."""
    scratch = StateHome(tmp_path / "attacker" / ".quant-trading")
    set_pin(scratch, "att4cker-PIN", scrypt_n=N, now=env.clock.ms() - 400 * 86_400_000)
    rec = json.loads(pin.pin_path(scratch).read_text())
    rec["origin"] = "changed"
    pin.pin_path(env.home).write_text(json.dumps(rec))
    shutil.copy(pin.attempts_path(scratch), pin.attempts_path(env.home))
    return unlock(env.home, "att4cker-PIN", now=env.clock.ms())


def _hand_written_profile(home, changes, version=7, previous="00" * 32):
    prof = {**default_profile().model_dump(), **changes}
    ts = 1_893_499_000_000
    rec = {"version": version, "profile": prof, "changed_ts": ts, "previous_hash": previous,
           "hash": record_hash(version, prof, ts, previous)}
    profile_path(home).write_text(json.dumps(rec))
    return rec


@pytest.mark.parametrize("approval", ["none", "other_hash", "attacker_key", "garbage"])
def test_a_hand_loosened_profile_with_a_recomputed_hash_is_not_in_force(env, approval):
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


def test_a_pin_approved_profile_is_in_force(env):
    """The other side of the test above (so it can fail): the same kind of file WITH a PIN approval counts."""
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
def test_a_running_process_drops_a_looser_profile_whose_approval_stopped_verifying(env, how):
    """No cache clearing here: the same process (a running loop) must notice that the approval behind a
    looser profile no longer holds (a PIN change rotates the key and voids every earlier approval)."""
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


# ================================================================================== the PIN reader

def test_unlock_from_terminal_with_an_injected_reader(env):
    """The PIN for local approvals (kill-switch reset, risk profile, promotion) is read from the human's
    own terminal: a wrong PIN is counted and never echoed; no terminal is a clear refusal (exit 2)."""
    from qts.safety.approve import ApprovalError, unlock_from_terminal
    from qts.safety.tty import NoTerminal

    prompts = []
    key = unlock_from_terminal(env.store, "PIN to reset the kill switch: ", reader=lambda p: prompts.append(p) or PIN)
    assert key.fingerprint == env.key.fingerprint and prompts == ["PIN to reset the kill switch: "]
    kinds = [r["kind"] for r in env.store.query("SELECT kind FROM events ORDER BY id")]
    assert "pin_unlocked" in kinds
    with pytest.raises(ApprovalError) as e:
        unlock_from_terminal(env.store, reader=lambda p: "not-the-pin")
    assert e.value.exit_code == 1 and "wrong PIN" in str(e.value) and PIN not in str(e.value)
    assert env.store.scalar("SELECT COUNT(*) FROM events WHERE kind='pin_failure'") == 1

    def no_tty(prompt):
        raise NoTerminal("test")

    with pytest.raises(ApprovalError) as e:
        unlock_from_terminal(env.store, reader=no_tty)
    assert e.value.exit_code == 2 and "own terminal" in str(e.value)


# ================================================================================== once LESS safe (regressions)

def test_a_replaced_pin_record_cannot_release_the_kill_switch(env, tmp_path):
    ks.engage(env.home, "test", env.store)
    attacker = _replace_pin_record(env, tmp_path)
    with pytest.raises(ks.ResetRefused, match="cool-down"):  # refused up front: a key nobody has seen before
        ks.reset(env.home, env.store, attacker)
    assert ks.status(env.home, env.store).engaged


def test_a_replaced_pin_record_cannot_approve_a_looser_profile(env, tmp_path):
    attacker = _replace_pin_record(env, tmp_path)
    rec = _hand_written_profile(env.home, {"max_order_notional_usd": 50_000.0})
    a = sign_approval(env.home, attacker, ACTION_RAISE_RISK_LIMIT, {"hash": rec["hash"]}, now=env.clock.ms())
    (env.home.safety_dir / "risk_profile.approval.json").write_text(json.dumps(a))
    risk_gate._cache.clear()
    assert risk_gate.effective_profile(env.gate) == floor(env.settings)


@pytest.mark.parametrize("op", ["delete", "garbage"])
def test_damaging_a_tightened_profile_keeps_it_tight(env, op):
    save_profile(env.home, validate_profile({**default_profile().model_dump(), **TIGHT}), approved_by_pin=False,
                 log=_log(env.store), now_ms=env.clock.ms())
    risk_gate._cache.clear()
    before = risk_gate.effective_profile(env.gate)
    tamper(profile_path(env.home), op)
    risk_gate._cache.clear()
    assert is_loosening(before, risk_gate.effective_profile(env.gate)) == []


def test_a_hand_appended_breaker_line_does_not_loosen(env):
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




# ================================================================================== part 2: the trading agent

AGENT_SYMBOLS = [BTC, ETH]
AGENT_FILES = {**FILES, "live_grant": grants.live_grant_path, "pre_trade_log": lambda h: h.pre_trade_log,
               "post_trade_log": lambda h: h.post_trade_log}


def agent_policy(**kw):
    """The human's grant: 450 USD per order, 1000 per day, BTC and ETH, 8 h."""
    from qts.agent.policy import Grant, Policy

    g = Grant.make(450.0, 1000.0, AGENT_SYMBOLS, 8, Clock.ms()) if kw.pop("grant", True) else None
    return Policy(grant=g, **{"max_orders_per_minute": 10_000, "max_daily_loss_usd": 1e9,
                              "order_approval_usd": 1e9, **kw})


@pytest.fixture
def srv():
    from live_support import make_server

    s = make_server(balances={"USDT": "10000"})
    yield s
    s.close()
    assert s.errors == []


def start_agent(store, srv, policy):
    """What a (re)started agent runs: a new Authority and ExchangeView (nothing in memory from before) over
    the real live broker, reconciled with the exchange. Its caches are off: each check reads the exchange."""
    from live_support import agent_gate, ccxt_client

    gate, broker, auth = agent_gate(store, ccxt_client(srv), AGENT_SYMBOLS, policy=policy)
    v = auth.view
    v.mid_ttl_s = v.balance_ttl_s = v.fills_ttl_s = 0.0
    broker.reconcile()
    return gate, broker, auth


def live_buy(amount, coid=None):
    return OrderIntent(BTC, "buy", amount, source="cli", client_order_id=coid)


def spend_840(gate):
    """Two market buys of 0.007 BTC at 60 000: 2 x 420 = 840 of the day's 1000."""
    for i in range(2):
        res = gate.submit(live_buy(0.007, f"qtsaD{i}"))
        assert res.accepted and res.status == "filled", res


def test_wiping_the_whole_state_home_does_not_reset_the_daily_live_budget(tmp_path, srv):
    """Deleting the project's whole state home (database, logs, safety files) looks like a fresh install.
    A restarted agent reads the day's spend from the exchange's own trade list: 840 spent, so a buy of
    0.003 BTC (180) would make 1020 > 1000 and is refused; 0.0026 (156, 996 in all) still passes."""
    root = tmp_path / "project" / ".quant-trading"
    store = Store.open(StateHome(root).ensure())
    gate, _, _ = start_agent(store, srv, agent_policy())
    spend_840(gate)
    assert gate.evaluate(live_buy(0.003)).code == Reason.LIVE_SCOPE
    store.close()
    shutil.rmtree(root)
    store = Store.open(StateHome(root).ensure())
    try:
        assert store.query("SELECT * FROM orders") == []
        gate, _, auth = start_agent(store, srv, agent_policy())
        assert auth.view.sent_buy_notional == 0.0
        v = gate.evaluate(live_buy(0.003))
        assert v.code == Reason.LIVE_SCOPE and "840.00" in v.message
        assert gate.evaluate(live_buy(0.0026)).allowed
        assert gate.submit(live_buy(0.003, "qtsaD9")).reason_code == Reason.LIVE_SCOPE
        assert sorted(o["clientOrderId"] for o in srv.orders()) == ["qtsaD0", "qtsaD1"]
    finally:
        store.close()


AGENT_STATES = {
    # name: (policy, set-up, the probe's refusal before any damage)
    "locked": (lambda: agent_policy(kill_switch=True, kill_reason="test", trading_state="HALTED", breaker_open=True,
                                    grant=False), None, Reason.KILL_SWITCH),
    "budget_spent": (agent_policy, spend_840, Reason.LIVE_SCOPE),
}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", list(AGENT_FILES))
@pytest.mark.parametrize("state", list(AGENT_STATES))
def test_damage_to_project_files_never_loosens_the_agent(tmp_path, srv, state, name, op):
    """The project's files as the live set-up leaves them (a PIN, a PIN-signed grant FILE, a closed
    breaker file, the logs, the kill flag when locked); one is damaged. The running agent still refuses
    the probe (a 0.003 BTC buy) and sends nothing; so does an agent restarted on what is left (when the
    database is unusable no agent can start, which trades nothing either)."""
    from live_support import approve_live, write_breaker_closed

    make_policy, setup, code = AGENT_STATES[state]
    home = StateHome(tmp_path / "home").ensure()
    store = Store.open(home)
    approve_live(home, store, AGENT_SYMBOLS)
    write_breaker_closed(home)
    gate, broker, auth = start_agent(store, srv, make_policy())
    if setup:
        setup(gate)
    if state == "locked":
        ks.engage(home, "test", store)                 # what kill_switch.sh leaves: the flag file
    assert gate.evaluate(live_buy(0.003)).code == code
    sent = sorted(o["clientOrderId"] for o in srv.orders())
    policy_before = auth.policy

    tamper(AGENT_FILES[name](home), op)

    res = gate.submit(live_buy(0.003, "qtsaPROBE1"))
    assert not res.accepted, res
    p, b = auth.policy, policy_before
    assert p.kill_switch >= b.kill_switch and p.breaker_open >= b.breaker_open
    assert STRICTNESS[p.trading_state] >= STRICTNESS[b.trading_state]
    assert p.grant is None or p.grant == b.grant
    store.close()
    try:
        store2 = Store.open(home)
    except Exception:
        store2 = None                                  # no agent starts on an unusable database
    if store2 is not None:
        try:
            gate2, _, auth2 = start_agent(store2, srv, make_policy())
            res = gate2.submit(live_buy(0.003, "qtsaPROBE2"))
            assert not res.accepted, res
            if state == "budget_spent":
                assert auth2.view.day_spend() == pytest.approx(840.0)
        finally:
            store2.close()
    assert sorted(o["clientOrderId"] for o in srv.orders()) == sent


def test_qts_approve_live_points_to_the_agent_and_writes_no_grant(tmp_path, proc_env, qts_exe):
    """The old file-based approval command: exit 2, says where live grants went, writes nothing."""
    import subprocess

    env = {**proc_env, "QTS_HOME": str(tmp_path / "home")}
    r = subprocess.run([*qts_exe, "approve", "live", "--max-order", "1000000"], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60, start_new_session=True)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "qts agent start" in r.stderr and "Traceback" not in r.stderr
    assert not grants.live_grant_path(StateHome(tmp_path / "home")).exists()


def test_a_grant_file_signed_with_the_pin_opens_nothing_in_the_agent(store, srv):
    """The old file-based approval, complete and valid (PIN set two hours ago, a signed grant, a signed
    paper override): the agent without a grant in its memory still refuses."""
    from live_support import approve_live

    approve_live(store.home, store, AGENT_SYMBOLS)
    assert grants.load_live_grant(store.home, Clock.ms()) is not None      # the file itself verifies
    gate, _, _ = start_agent(store, srv, agent_policy(grant=False))
    v = gate.evaluate(live_buy(0.001))
    assert (v.code, v.check) == (Reason.LIVE_NOT_APPROVED, "check_live_approval")
    assert gate.submit(live_buy(0.001, "qtsaGF")).reason_code == Reason.LIVE_NOT_APPROVED
    assert srv.orders() == []


def test_a_replaced_pin_record_cannot_sign_a_loosening_the_agent_accepts(env, tmp_path):
    """The agent keeps the public key of the PIN the human typed at its start. An attacker who swaps in a
    PIN record of its own (and knows that PIN) signs the agent's challenge with its key: refused; the
    human's signature over the same challenge passes."""
    from qts.agent import challenge
    from qts.agent.challenge import ChallengeBook, ChallengeError

    book = ChallengeBook("instance", str(env.home.root), "binance:acct", env.key.public_key)
    policy_hash = agent_policy(grant=False).hash()
    ch = book.issue("grant", {"max_order_usd": 1e6, "max_daily_usd": 1e7, "symbols": [BTC]}, policy_hash).to_dict()
    attacker = _replace_pin_record(env, tmp_path)
    assert unlock(env.home, "att4cker-PIN").fingerprint == attacker.fingerprint   # the record on disk is theirs
    with pytest.raises(ChallengeError, match="does not verify"):
        book.redeem(challenge.sign(attacker, ch), policy_hash)
    assert book.redeem(challenge.sign(env.key, ch), policy_hash).nonce == ch["nonce"]
