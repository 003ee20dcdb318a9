"""Live approval (safety/live_approval.require_live_approval), exercised through a Gate whose broker
reports mode "live": a PaperBroker subclass (see test_gate.LiveReportingPaperBroker for why that is
acceptable here), with PAPER_TRADING=false and dummy keys.

The rules under test (module docstring): PAPER_TRADING=false, keys, a closed breaker, a PIN-signed
live grant from a key past its 1 h cool-down whose scope covers the symbol, the order's notional and
today's live notional; >= 7 days of paper history for the strategy or a PIN-signed override; above
500 USD a single-use PIN approval of that very order. Exposure-reducing orders need no grant.
time.time is a fixed mid-day instant that moves with real time (test_gate.Clock); PIN cost is low.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from qts.gate import Reason
from qts.paths import StateHome
from qts.safety import grants
from qts.safety.approve import ApprovalError, key_first_seen, save_approval, unlock_from_terminal
from qts.safety.grants import (ACTION_ORDER_OVER_THRESHOLD, ACTION_OVERRIDE_PAPER_DAYS, issue_live_grant,
                               sign_approval)
from qts.safety.pin import SigningKey
from qts.safety.tty import NoTerminal
from test_gate import BTC, ETH, PIN, STRATEGY, buy, live_factory, paper_history, seed_position, sell  # noqa: F401

S = 1000
HOUR = 3600 * S
DAY = 86_400_000


def verdict(env, intent):
    return env.gate.evaluate(intent)


def code(env, intent):
    v = env.gate.evaluate(intent)
    return v.code if not v.allowed else "OK"


# ================================================================================== the grant

def test_everything_in_place_passes(live_factory):
    env = live_factory(grant={})
    v = verdict(env, buy(1.0))
    assert v.allowed, (v.code, v.message)
    res = env.gate.submit(buy(1.0, client_order_id="qtslOK1"))
    assert res.accepted and res.status == "filled"
    assert env.store.one("SELECT mode FROM orders WHERE client_order_id='qtslOK1'")["mode"] == "live"


def test_no_grant(live_factory):
    env = live_factory(grant=None)
    v = verdict(env, buy(1.0))
    assert (v.allowed, v.code, v.check) == (False, Reason.LIVE_NOT_APPROVED, "check_live_approval")
    assert "guard_approve.sh live" in v.message


@pytest.mark.parametrize("how", ["grant_expired", "grant_garbage", "grant_other_key"])
def test_a_grant_that_does_not_verify_is_no_grant(live_factory, how):
    env = live_factory(grant={"ttl_s": 60} if how == "grant_expired" else {})
    path = grants.live_grant_path(env.home)
    if how == "grant_expired":
        env.clock.advance(61)
    elif how == "grant_garbage":
        path.write_bytes(b'{"grant": {"version": 1, "scope": ')
    else:
        other = SigningKey.generate()
        d = json.loads(path.read_text())
        body = grants.LiveGrant.model_validate(d["grant"]).canonical_bytes()
        d["signature"] = base64.b64encode(other.sign(grants.GRANT_DOMAIN + body)).decode()
        path.write_text(json.dumps(d))
    assert code(env, buy(1.0)) == Reason.LIVE_NOT_APPROVED


def test_a_key_inside_its_cooldown_is_refused_until_it_is_over(live_factory):
    env = live_factory(grant={}, key_age_s=0)            # PIN set (and its key first seen) just now
    assert code(env, buy(1.0)) == Reason.LIVE_NOT_APPROVED
    env.clock.advance(3590)
    assert code(env, buy(1.0)) == Reason.LIVE_NOT_APPROVED
    env.clock.advance(11)                                 # 1 h and a second
    assert code(env, buy(1.0)) == "OK"


def test_a_key_the_gate_never_saw_is_recorded_and_waits(live_factory):
    """Key created two hours ago by its (untrusted) record, but never seen by this system: the first
    live check records it (loudly) and the cool-down runs from then."""
    env = live_factory(grant={})
    env.store.execute("DELETE FROM events WHERE kind='pin_key_seen'")
    assert code(env, buy(1.0)) == Reason.LIVE_NOT_APPROVED
    seen = env.store.query("SELECT severity, ts FROM events WHERE kind='pin_key_seen'")
    assert len(seen) == 1 and seen[0]["severity"] == "critical"
    assert key_first_seen(env.store, env.home, env.clock.ms()) == {env.key.fingerprint: seen[0]["ts"]}
    env.clock.advance(3601)
    assert code(env, buy(1.0)) == "OK"


# ================================================================================== the grant's scope

def test_symbol_outside_the_scope(live_factory):
    env = live_factory(grant={"symbols": [BTC]})
    v = verdict(env, buy(1.0, symbol=ETH))
    assert (v.code, v.check) == (Reason.LIVE_SCOPE, "check_live_approval") and ETH in v.message


def test_order_above_max_order_notional(live_factory):
    env = live_factory(grant={"max_order_notional": 300.0})
    assert code(env, buy(3.0)) == "OK"                    # 3 x 100 = 300: at the cap
    v = verdict(env, buy(3.01))                           # 301 > 300
    assert v.code == Reason.LIVE_SCOPE and "per order" in v.message


def test_daily_total_above_max_daily_notional(live_factory):
    """Two filled buys of 3 BTC at 100 x 1.0005 = 100.05: 600.30 today. Then 0.99 BTC (99) makes
    699.30 <= 700; 1 BTC (100) would make 700.30 > 700."""
    env = live_factory(grant={"max_order_notional": 300.0, "max_daily_notional": 700.0})
    for i in range(2):
        assert env.gate.submit(buy(3.0, client_order_id=f"qtslDAY{i}")).accepted
    v = verdict(env, buy(1.0))
    assert v.code == Reason.LIVE_SCOPE and "daily notional" in v.message
    assert code(env, buy(0.99)) == "OK"


def test_paper_orders_and_refused_orders_do_not_count_today(live_factory):
    env = live_factory(grant={"max_order_notional": 300.0, "max_daily_notional": 700.0})
    for i, status in enumerate(["rejected", "rejected"]):
        env.store.insert("orders", {"client_order_id": f"x{i}", "mode": "live", "symbol": BTC, "side": "buy",
                                    "type": "market", "amount": 5.0, "status": status, "created_ts": env.clock.ms(),
                                    "updated_ts": env.clock.ms()})
    env.store.insert("orders", {"client_order_id": "p1", "mode": "paper", "symbol": BTC, "side": "buy", "type": "market",
                                "amount": 50.0, "status": "filled", "avg_price": 100.0, "created_ts": env.clock.ms(),
                                "updated_ts": env.clock.ms()})
    assert code(env, buy(3.0)) == "OK"


# ================================================================================== paper history

@pytest.mark.parametrize("days, ok", [(8.0, True), (7.0, True), (6.99, False), (0.0, False)])
def test_paper_days(live_factory, days, ok):
    env = live_factory(grant={}, paper_days=days)
    v = verdict(env, buy(1.0))
    if ok:
        assert v.allowed, v.message
    else:
        assert v.code == Reason.LIVE_PREREQUISITE and "paper history" in v.message


def test_only_this_strategys_paper_history_counts(live_factory):
    env = live_factory(grant={}, paper_days=0)
    now = env.clock.ms()
    paper_history(env.store, strategy="rsi_reversion", days=30, now_ms=now)
    paper_history(env.store, strategy=STRATEGY, days=30, now_ms=now, mode="live")
    assert code(env, buy(1.0)) == Reason.LIVE_PREREQUISITE
    assert code(env, buy(1.0, strategy=None)) == Reason.LIVE_PREREQUISITE     # counted as "manual"


def _override(env, strategy=STRATEGY, issued=None, key=None):
    a = sign_approval(env.home, key or env.key, ACTION_OVERRIDE_PAPER_DAYS, {"strategy": strategy},
                      ttl_s=24 * 3600, now=issued or env.clock.ms())
    save_approval(env.home, f"paper_override_{STRATEGY}", a)


def test_a_pin_signed_paper_override_passes(live_factory):
    env = live_factory(grant={}, paper_days=1)
    assert code(env, buy(1.0)) == Reason.LIVE_PREREQUISITE
    _override(env)
    assert code(env, buy(1.0)) == "OK"
    assert code(env, buy(1.0)) == "OK"                       # a standing override, not single use


def test_an_override_for_another_strategy_does_not_count(live_factory):
    env = live_factory(grant={}, paper_days=1)
    _override(env, strategy="rsi_reversion")                  # saved under this strategy's name
    assert code(env, buy(1.0)) == Reason.LIVE_PREREQUISITE


def test_a_paper_override_expires_after_its_24_hours(live_factory):
    """`qts approve paper-override` says 'valid 24 h' and signs a 24 h approval."""
    env = live_factory(grant={}, paper_days=1)
    _override(env, issued=env.clock.ms() - 25 * HOUR)
    assert code(env, buy(1.0)) == Reason.LIVE_PREREQUISITE


def test_an_override_signed_with_another_key_does_not_count(live_factory):
    env = live_factory(grant={}, paper_days=1)
    a = sign_approval(env.home, env.key, ACTION_OVERRIDE_PAPER_DAYS, {"strategy": STRATEGY}, now=env.clock.ms())
    other = SigningKey.generate()
    body = grants.Approval.model_validate({k: v for k, v in a.items() if k != "signature"})
    a["signature"] = base64.b64encode(other.sign(grants.APPROVAL_DOMAIN + body.canonical_bytes())).decode()
    save_approval(env.home, f"paper_override_{STRATEGY}", a)
    assert code(env, buy(1.0)) == Reason.LIVE_PREREQUISITE


# ================================================================================== large orders

BIG = {"max_order_notional": 1000.0, "max_daily_notional": 5000.0}


def _order_approval(env, coid, max_notional):
    a = sign_approval(env.home, env.key, ACTION_ORDER_OVER_THRESHOLD,
                      {"client_order_id": coid, "max_notional": max_notional}, now=env.clock.ms())
    save_approval(env.home, f"order_{coid}", a)
    return a


def test_above_500_needs_its_own_approval(live_factory):
    env = live_factory(grant=BIG)
    assert code(env, buy(5.0, client_order_id="qtslB500")) == "OK"          # 500: not above
    v = verdict(env, buy(6.0, client_order_id="qtslB600"))                   # 600 > 500
    assert v.code == Reason.ORDER_APPROVAL_NEEDED and "order qtslB600" in v.message


def test_a_matching_approval_passes_once(live_factory):
    env = live_factory(grant=BIG)
    coid = "qtslBIG1"
    a = _order_approval(env, coid, 700.0)
    assert code(env, buy(6.0, client_order_id=coid)) == "OK"
    assert code(env, buy(6.0, client_order_id=coid)) == "OK"          # a dry run does not use it up
    assert env.gate.submit(buy(6.0, client_order_id=coid)).accepted   # sent: now it is used up
    assert code(env, buy(6.0, client_order_id=coid)) == Reason.ORDER_APPROVAL_NEEDED
    save_approval(env.home, f"order_{coid}", a)                                           # replayed
    assert code(env, buy(6.0, client_order_id=coid)) == Reason.ORDER_APPROVAL_NEEDED


def test_an_approval_is_not_used_up_by_an_order_a_later_check_refuses(live_factory):
    env = live_factory(grant=BIG)
    coid = "qtslBIG2"
    a = _order_approval(env, coid, 700.0)
    from qts.gate import Refuse

    def refuses(gate, intent):  # any check after the live approval that says no
        raise Refuse("LATER_CHECK", "refused after the live approval")
    env.gate.checks.append(refuses)
    res = env.gate.submit(buy(6.0, client_order_id=coid))
    assert not res.accepted and res.reason_code != Reason.ORDER_APPROVAL_NEEDED, res
    assert grants.verify_approval(env.home, a, ACTION_ORDER_OVER_THRESHOLD, env.clock.ms()) is not None


def test_an_approval_is_bound_to_its_order_and_its_notional(live_factory):
    env = live_factory(grant=BIG)
    a = _order_approval(env, "qtslA", 700.0)
    save_approval(env.home, "order_qtslB", a)                       # A's approval filed under B's name
    assert code(env, buy(6.0, client_order_id="qtslB")) == Reason.ORDER_APPROVAL_NEEDED
    _order_approval(env, "qtslC", 550.0)
    assert code(env, buy(6.0, client_order_id="qtslC")) == Reason.ORDER_APPROVAL_NEEDED   # 600 > 550


def test_a_large_order_placed_with_its_approval(live_factory):
    env = live_factory(grant=BIG)
    _order_approval(env, "qtslPLACE", 700.0)
    res = env.gate.submit(buy(6.0, client_order_id="qtslPLACE"))
    assert res.accepted and res.filled == 6.0
    assert env.gate.submit(buy(6.0, client_order_id="qtslPLACE")).reason_code == Reason.DUPLICATE


# ================================================================================== prerequisites

def test_paper_trading_true_refuses_live(live_factory):
    env = live_factory(grant={}, paper_trading=True)
    v = verdict(env, buy(1.0))
    assert v.code == Reason.LIVE_PREREQUISITE and "PAPER_TRADING" in v.message


def test_no_keys_refuses_live(live_factory):
    env = live_factory(grant={}, keys=False)
    v = verdict(env, buy(1.0))
    assert v.code == Reason.LIVE_PREREQUISITE and "keys" in v.message


def test_a_reducing_sell_needs_no_grant(live_factory):
    env = live_factory(grant=None, paper_days=0)
    seed_position(env, BTC, 2.0, "seedLIVE")
    assert code(env, buy(1.0)) == Reason.LIVE_NOT_APPROVED
    res = env.gate.submit(sell(1.5, client_order_id="qtslSELL"))
    assert res.accepted and res.status == "filled"
    assert code(env, sell(0.6)) == Reason.LIVE_NOT_APPROVED           # more than the 0.5 held: not reducing


def test_breaker_not_closed(live_factory):
    env = live_factory(grant={})
    env.gate.breaker.trip("test", env.clock.ms())
    v = verdict(env, buy(1.0))
    assert (v.code, v.check) == (Reason.BREAKER_OPEN, "check_trading_state")
    env.clock.advance(901)
    assert env.gate.breaker.check(env.clock.ms()).state == "half_open"
    assert code(env, buy(1.0)) == Reason.BREAKER_OPEN
    env.clock.advance(901)
    assert env.gate.breaker.check(env.clock.ms()).state == "closed"
    assert code(env, buy(1.0)) == Reason.LIVE_NOT_APPROVED             # the trip revoked the grant
    issue_live_grant(env.home, env.key, max_order_notional=300.0, max_daily_notional=1000.0, symbols=[BTC],
                     now=env.clock.ms())
    assert code(env, buy(1.0)) == "OK"


# ================================================================================== the human side

def test_cli_approve_live_without_a_terminal_exits_2(tmp_path, proc_env, qts_exe):
    """The assistant's shell has no controlling terminal: the command says to run it in your own."""
    env = {**proc_env, "QTS_HOME": str(tmp_path / "home")}
    r = subprocess.run([*qts_exe, "approve", "live"], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60, start_new_session=True)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "in your own terminal" in r.stderr and "Traceback" not in r.stderr
    assert not grants.live_grant_path(StateHome(tmp_path / "home")).exists()


def test_unlock_from_terminal_with_an_injected_reader(live_factory):
    env = live_factory(grant=None)
    prompts = []
    key = unlock_from_terminal(env.store, "PIN to approve LIVE trading: ", reader=lambda p: prompts.append(p) or PIN)
    assert key.fingerprint == env.key.fingerprint and prompts == ["PIN to approve LIVE trading: "]
    kinds = [r["kind"] for r in env.store.query("SELECT kind FROM events ORDER BY id")]
    assert kinds[-1] in ("pin_unlocked", "pin_key_seen") and "pin_unlocked" in kinds
    with pytest.raises(ApprovalError) as e:
        unlock_from_terminal(env.store, reader=lambda p: "not-the-pin")
    assert e.value.exit_code == 1 and "wrong PIN" in str(e.value) and PIN not in str(e.value)
    assert env.store.scalar("SELECT COUNT(*) FROM events WHERE kind='pin_failure'") == 1

    def no_tty(prompt):
        raise NoTerminal("test")

    with pytest.raises(ApprovalError) as e:
        unlock_from_terminal(env.store, reader=no_tty)
    assert e.value.exit_code == 2 and "own terminal" in str(e.value)


def test_the_cli_flow_end_to_end_through_the_library(live_factory):
    """What `qts approve live` does, with the reader injected: the grant it issues opens live trading."""
    env = live_factory(grant=None)
    key = unlock_from_terminal(env.store, reader=lambda p: PIN)
    issue_live_grant(env.home, key, max_order_notional=100.0, max_daily_notional=1000.0, symbols=[BTC],
                     ttl_s=8 * 3600, now=env.clock.ms())
    assert code(env, buy(1.0)) == "OK"
    assert code(env, buy(1.01)) == Reason.LIVE_SCOPE


@pytest.mark.parametrize("damage", ["delete", "garbage", "foreign"])
def test_a_missing_or_foreign_spending_record_refuses_live_orders(live_factory, damage):
    """The grant's spending record keeps the daily budget when the database is deleted; deleting or
    faking the record itself only refuses live orders (until the human approves again)."""
    env = live_factory(grant={"max_order_notional": 300.0, "max_daily_notional": 700.0})
    assert code(env, buy(1.0, client_order_id="qtslS1")) == "OK"
    usage = grants.usage_path(env.home)
    if damage == "delete":
        usage.unlink()
    elif damage == "garbage":
        usage.write_bytes(b"\x00garbage")
    else:
        usage.write_text(json.dumps({"grant_id": "someone-elses", "issued_ts": 0}) + "\n")
    assert code(env, buy(1.0, client_order_id="qtslS2")) == Reason.LIVE_NOT_APPROVED


def test_spending_is_recorded_only_for_orders_sent(live_factory):
    env = live_factory(grant={"max_order_notional": 300.0, "max_daily_notional": 700.0})
    usage = grants.usage_path(env.home)
    before = usage.read_text().splitlines()
    assert code(env, buy(1.0, client_order_id="qtslS3")) == "OK"          # a dry run spends nothing
    assert usage.read_text().splitlines() == before
    assert env.gate.submit(buy(1.0, client_order_id="qtslS4")).accepted
    recs = [json.loads(x) for x in usage.read_text().splitlines()[1:]]
    assert [r["client_order_id"] for r in recs] == ["qtslS4"] and recs[0]["notional"] > 0
