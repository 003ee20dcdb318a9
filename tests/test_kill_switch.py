"""Kill switch: engage + flatten, idempotence, an unreachable market, refusal of everything but
flattening, the database record behind the flag, PIN-signed reset, forged resets, the loop halting,
`qts run` refusing, and `qts kill-switch` exit codes.

Real SQLite under tmp_path; positions and resting orders are set up through the paper broker, as
bench/bench_safety.py does. Expected fills are computed from the paper fill model (market sells fill
at the price moved against us by the 5 bps slippage).
"""

from __future__ import annotations

import base64
import json

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.broker.models import OrderIntent
from qts.cli import cli
from qts.engine.runner import Runner, read_status
from qts.engine.session import make_feed, open_session
from qts.gate import Reason
from qts.paths import StateHome
from qts.safety import grants
from qts.safety import kill_switch as ks
from qts.safety.pin import SigningKey, set_pin, unlock
from qts.store import Store
from test_gate import (BTC, ETH, N, PIN, SLIP, T0, buy, make_paper_env, order_rows, paper,  # noqa: F401
                       read_lines, seed_position, sell, settings_for)

NO_ENV = {k: None for k in CONFIG_VARS}


def run_cli(args):
    return CliRunner().invoke(cli, args, env=NO_ENV, catch_exceptions=False)


def book(env):
    """Two positions and three resting limit buys far below the market."""
    seed_position(env, BTC, 2.0, "seedBTC")
    seed_position(env, ETH, 4.0, "seedETH")
    for i, (sym, px) in enumerate([(BTC, 50.0), (BTC, 60.0), (ETH, 20.0)]):
        r = env.broker.place(OrderIntent(sym, "buy", 1.0, type="limit", price=px), f"rest{i}")
        assert r.status == "open"
    assert set(env.broker.positions()) == {BTC, ETH} and len(env.broker.open_orders()) == 3


def flatten(env, **kw):
    kw.setdefault("backoff_s", 0.0)
    return ks.flatten(env.gate, env.broker, **kw)


@pytest.fixture
def engaged(paper):
    book(paper)
    ks.engage(paper.home, "test", paper.store)
    return paper


# ================================================================================== engage + flatten

def test_engage_and_flatten(engaged):
    env = engaged
    rep = flatten(env)
    assert rep.flat and rep.failed == []
    assert sorted(rep.cancelled) == ["rest0", "rest1", "rest2"]
    assert {c["symbol"]: c["amount"] for c in rep.closed} == {BTC: 2.0, ETH: 4.0}
    # market sells fill at the price less 5 bps slippage
    assert {c["symbol"]: c["price"] for c in rep.closed} == pytest.approx({BTC: 100 * (1 - SLIP), ETH: 50 * (1 - SLIP)})
    assert env.broker.positions() == {} and env.broker.open_orders() == []
    assert {o["client_order_id"]: o["status"] for o in order_rows(env.store) if o["client_order_id"].startswith("rest")} \
        == {"rest0": "cancelled", "rest1": "cancelled", "rest2": "cancelled"}
    sells = env.store.query("SELECT symbol, amount, price FROM fills WHERE side='sell' ORDER BY symbol")
    assert [(r["symbol"], r["amount"]) for r in sells] == [(BTC, 2.0), (ETH, 4.0)]
    journal = [r for r in read_lines(env.home.trades_log) if r["side"] == "sell"]
    assert sorted(r["symbol"] for r in journal) == [BTC, ETH]
    # the closing orders went through the gate, marked as the kill switch's
    pre = [r for r in read_lines(env.home.pre_trade_log) if r["intent"]["source"] == "kill_switch"]
    assert len(pre) == 2 and all(r["allowed"] for r in pre)
    assert ks.status(env.home, env.store).engaged


def test_the_paper_step_shared_by_the_cli_and_the_monitor_closes_everything_and_records_it(engaged):
    from qts.engine.session_tools import flatten_paper

    env = engaged
    out = flatten_paper(env.settings, env.store, env.feed, backoff_s=0.0, label="flatten (test)")
    assert out["flat"] is True and out["failed"] == [] and out["remaining_positions"] == []
    assert sorted(out["cancelled"]) == ["rest0", "rest1", "rest2"] and len(out["closed"]) == 2
    assert env.broker.positions() == {} and env.broker.open_orders() == []
    ev = env.store.one("SELECT message, severity FROM events WHERE kind='kill_switch' AND message LIKE 'flatten (test)%'")
    assert ev["severity"] == "critical" and "3 cancelled, 2 closed, 0 failed" in ev["message"]


def test_the_paper_step_is_not_flat_while_a_position_remains(engaged):
    from qts.engine.session_tools import flatten_paper

    env = engaged
    env.feed.down = True  # the closing sells cannot be priced
    out = flatten_paper(env.settings, env.store, env.feed, backoff_s=0.0, retries=1)
    assert out["flat"] is False and sorted(out["remaining_positions"]) == sorted([BTC, ETH]) and out["failed"]


def test_flatten_twice_is_a_no_op_success(engaged):
    first = flatten(engaged)
    assert first.flat and first.closed
    orders_before = len(order_rows(engaged.store))
    second = flatten(engaged)
    assert second.flat and (second.cancelled, second.closed, second.failed) == ([], [], [])
    assert len(order_rows(engaged.store)) == orders_before
    st = ks.status(engaged.home, engaged.store)
    assert st.engaged and engaged.home.kill_flag.exists()


def test_unreachable_market_reports_failures_keeps_the_flag_and_a_later_run_finishes(engaged):
    env = engaged
    env.feed.down = True
    rep = flatten(env)
    assert not rep.flat
    assert sorted(rep.cancelled) == ["rest0", "rest1", "rest2"]     # cancelling needs no price
    assert sorted(f["close"] for f in rep.failed) == [BTC, ETH]
    assert all(Reason.GATE_ERROR in f["error"] for f in rep.failed)
    assert set(env.broker.positions()) == {BTC, ETH}
    assert env.home.kill_flag.exists() and ks.status(env.home, env.store).engaged
    env.feed.down = False                                            # the exchange answers again
    again = flatten(env)
    assert again.flat and {c["symbol"] for c in again.closed} == {BTC, ETH}
    assert env.broker.positions() == {}
    assert ks.status(env.home, env.store).engaged                    # flat, and still engaged


def test_only_flattening_passes_while_engaged(engaged):
    """The exemption belongs to the orders the kill switch makes in this process (Gate.submit_flatten):
    no field a caller sets (source="kill_switch", a kill-switch-looking client order id, reduce_only)
    claims it."""
    env = engaged
    held = env.broker.position_amount(BTC)
    refused = [
        buy(1),                                                        # an entry
        buy(1, symbol=ETH, type="limit", price=40.0),                  # a limit entry
        sell(held),                                                    # an exit, but not the kill switch's
        sell(held, source="cli"),
        sell(held, source="kill_switch"),                              # says it is the kill switch's: is not
        sell(held, source="kill_switch", strategy="kill_switch", reduce_only=True, client_order_id="qtsk1a2b3c"),
        sell(held, type="limit", price=101.0, source="kill_switch"),  # not a market order
        sell(held + 1, source="kill_switch"),                         # more than held: not reducing
    ]
    posted = len(order_rows(env.store))
    for intent in refused:
        v = env.gate.evaluate(intent)
        assert (v.allowed, v.code) == (False, Reason.KILL_SWITCH), intent
        r = env.gate.submit(intent)
        assert (r.accepted, r.reason_code) == (False, Reason.KILL_SWITCH), intent
    assert len(order_rows(env.store)) == posted                        # none reached the broker
    # the kill switch's own order passes only while it reduces exposure
    r = env.gate.submit_flatten(BTC, held + 1)
    assert (r.accepted, r.reason_code) == (False, Reason.KILL_SWITCH), r
    r = env.gate.submit_flatten(BTC, held)
    assert r.accepted and r.status == "filled", r
    assert env.broker.position_amount(BTC) == 0
    assert env.gate._flatten_ids == set()                              # its exemption ended with it
    v = env.gate.evaluate(sell(1.0, symbol=ETH, source="kill_switch", client_order_id=r.client_order_id))
    assert (v.allowed, v.code) == (False, Reason.KILL_SWITCH)          # nor can its id be replayed


@pytest.mark.parametrize("damaged", ["breaker_dir", "breaker_garbage", "flag_dir", "grant_dir"])
def test_flattening_survives_damaged_state_files(engaged, damaged):
    """What the assistant breaks must not keep the kill switch from closing positions."""
    env = engaged
    target = {"breaker_dir": env.home.breaker_file, "breaker_garbage": env.home.breaker_file,
              "flag_dir": env.home.kill_flag, "grant_dir": env.home.safety_dir / "grants" / "live.json"}[damaged]
    target.unlink(missing_ok=True)
    if damaged == "breaker_garbage":
        target.write_bytes(b"\x00\xff not json")
    else:
        target.mkdir(parents=True)
    rep = flatten(env)
    assert rep.flat, rep.failed
    assert env.broker.positions() == {} and env.broker.open_orders() == []
    assert ks.status(env.home, env.store).engaged


def test_an_unwritable_verdict_log_does_not_block_flattening(engaged):
    engaged.home.pre_trade_log.unlink(missing_ok=True)
    engaged.home.pre_trade_log.mkdir(parents=True)
    rep = flatten(engaged)
    assert rep.flat, rep.failed


# ================================================================================== the database record

def test_deleting_the_flag_does_not_release(engaged):
    engaged.home.kill_flag.unlink()
    st = ks.status(engaged.home, engaged.store)
    assert st.engaged and st.source == "anchor"  # the anchor holds it first; the database too (below)
    assert engaged.gate.evaluate(buy(1, symbol=ETH)).code == Reason.KILL_SWITCH


@pytest.mark.parametrize("content", [b"", b"\x00\xffgarbage", b'{"reason": '])
def test_a_damaged_flag_still_engages(paper, content):
    paper.home.kill_flag.write_bytes(content)
    st = ks.status(paper.home, paper.store)
    assert st.engaged and "flag" in st.source


def test_a_flag_only_engagement_is_recorded_by_the_next_check(paper):
    """The hook's first step sets the flag alone (standard library, no database). The next check that
    has the database records it there, so deleting the flag afterwards does not release the switch."""
    ks.engage(paper.home, "hook first step")                           # no store: the flag only
    assert paper.gate.evaluate(buy(1)).code == Reason.KILL_SWITCH
    paper.home.kill_flag.unlink()
    st = ks.status(paper.home, paper.store)
    assert st.engaged, st
    assert paper.gate.evaluate(buy(1)).code == Reason.KILL_SWITCH


# ================================================================================== reset

@pytest.fixture
def key(paper):
    set_pin(paper.home, PIN, scrypt_n=N, now=T0)
    k = unlock(paper.home, PIN, now=T0)
    # the human's key was set up long ago: past its one-hour cool-down (a brand-new key's resets do
    # not count until then: see test_a_replaced_pin_record_cannot_release_the_kill_switch)
    paper.store.event("pin_key_seen", "first seen (test set-up)", "critical", {"fingerprint": k.fingerprint},
                      ts=T0 - 2 * 3600 * 1000)
    return k


def test_reset_with_the_pin_releases(engaged, key):
    env = engaged
    flatten(env)
    ks.reset(env.home, env.store, key)
    assert not env.home.kill_flag.exists()
    st = ks.status(env.home, env.store)
    assert not st.engaged, st
    last = env.store.one("SELECT data FROM events WHERE kind='kill_switch' ORDER BY id DESC LIMIT 1")
    appr = json.loads(last["data"])["approval"]
    assert appr["action"] == ks.RESET_ACTION and appr["key_fingerprint"] == key.fingerprint
    env.feed.now += 3600 * 1000                                        # past the 15 min re-entry cooldown
    assert env.gate.submit(buy(1, symbol=ETH)).accepted


def test_reset_needs_this_homes_pin_key(engaged):
    set_pin(engaged.home, PIN, scrypt_n=N, now=T0)
    with pytest.raises(ValueError):
        ks.reset(engaged.home, engaged.store, SigningKey.generate())
    assert ks.status(engaged.home, engaged.store).engaged


def engage_without_anchor(env, monkeypatch, reason="engaged inside the sandbox"):
    """An engagement whose anchor write fails, as inside Claude Code's sandbox (writes outside the project
    fail): XDG_STATE_HOME points below a regular file for the duration, so the anchor's mkdir fails for real."""
    import os

    from qts.safety import anchor

    anchor.record(env.home, "register")
    blocker = env.home.root.parent / "read-only-fs"
    blocker.write_text("")
    real = os.environ["XDG_STATE_HOME"]
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker / "state"))
    out = ks.engage(env.home, reason, env.store)
    monkeypatch.setenv("XDG_STATE_HOME", real)
    assert out["anchor_error"], out
    assert not anchor.check(env.home).kill_engaged
    return out


def test_a_reset_covers_only_the_engagements_before_it(engaged, key, monkeypatch):
    env = engaged
    ks.reset(env.home, env.store, key)
    assert not ks.status(env.home, env.store).engaged
    old = env.store.one("SELECT ts, data FROM events WHERE kind='kill_switch' ORDER BY id DESC LIMIT 1")
    engage_without_anchor(env, monkeypatch, "again")
    env.home.kill_flag.unlink()
    # the assistant replays the old, genuine reset record
    env.store.event("kill_switch", "reset with the PIN", "warning", json.loads(old["data"]), ts=old["ts"])
    st = ks.status(env.home, env.store)
    assert st.engaged and "not signed" in st.reason


def _self_signed_reset(home, attacker, fingerprint, engaged_id):
    body = grants.Approval(action=ks.RESET_ACTION, payload={"engaged_event_id": engaged_id}, nonce="ab" * 16,
                           state_home=grants.home_id(home), issued_ts=T0, expires_ts=T0 + 300_000,
                           key_fingerprint=fingerprint)
    sig = attacker.sign(grants.APPROVAL_DOMAIN + body.canonical_bytes())
    return {**body.model_dump(mode="json"), "signature": base64.b64encode(sig).decode()}


@pytest.mark.parametrize("forgery", ["garbage", "no_approval", "self_signed", "self_signed_victim_fp", "unsigned_dict"])
def test_a_forged_reset_event_does_not_release(paper, key, forgery, monkeypatch):
    env = paper
    book(env)
    engage_without_anchor(env, monkeypatch)
    last_engage = env.store.scalar("SELECT MAX(id) FROM events WHERE kind='kill_switch'")
    attacker = SigningKey.generate()
    approval = {
        "garbage": "c2lnbmVkIGJ5IHRoZSBQSU4sIHRydXN0IG1l",
        "no_approval": None,
        "self_signed": _self_signed_reset(env.home, attacker, attacker.fingerprint, last_engage + 100),
        "self_signed_victim_fp": _self_signed_reset(env.home, attacker, key.fingerprint, last_engage + 100),
        "unsigned_dict": {k: v for k, v in _self_signed_reset(env.home, attacker, key.fingerprint,
                                                              last_engage + 100).items() if k != "signature"},
    }[forgery]
    env.store.event("kill_switch", "reset with the PIN", "warning", {"action": "reset", "approval": approval}, ts=T0)
    env.home.kill_flag.unlink()
    st = ks.status(env.home, env.store)
    assert st.engaged and "not signed" in st.reason
    assert env.gate.evaluate(buy(1, symbol=ETH)).code == Reason.KILL_SWITCH


# ================================================================================== the loop and the CLI

def _session(root, symbols="BTC/USDT"):
    settings = settings_for(StateHome(root), SYMBOLS=symbols)
    feed = make_feed(settings, "synthetic", days=0.05, warmup=60)
    return open_session(settings, feed)


def test_the_loop_halts_when_the_flag_appears(tmp_path):
    s = _session(tmp_path / "home")
    try:
        home = s.settings.home
        runner = Runner(home, s.loop, s.broker.mode, s.feed.source)
        seen = []

        def on_cycle(report, n):
            seen.append(n)
            if n == 2:
                ks.engage(home, "from another shell")       # the flag alone, as the hook's first step
        n = runner.run(max_cycles=10, on_cycle=on_cycle)
        assert n == 2 and seen == [1, 2]
        st = read_status(home)
        assert st["state"] == "halted" and "kill switch" in st["reason"]
        assert s.store.scalar("SELECT COUNT(*) FROM decisions") == 2         # no cycle after the flag
        assert not home.pid_file.exists()
    finally:
        s.close()


def test_qts_run_refuses_to_start_while_engaged(tmp_path):
    root = tmp_path / "home"
    home = StateHome(root).ensure()
    ks.engage(home, "test")
    r = run_cli(["--home", str(root), "run", "--cycles", "1", "--quiet", "--days", "0.05"])
    assert r.exit_code == 1 and "kill switch engaged" in r.output
    store = Store.open(home)
    try:
        assert store.scalar("SELECT COUNT(*) FROM decisions") == 0
    finally:
        store.close()


def _cli_home(tmp_path, dust=False):
    """A paper account with a BTC position and a resting order, and the prices the loop last saw."""
    root = tmp_path / "home"
    env = make_paper_env(root)
    seed_position(env, BTC, 2.0, "seedBTC")
    assert env.broker.place(OrderIntent(BTC, "buy", 1.0, type="limit", price=50.0), "rest0").status == "open"
    if dust:   # 0.001 ETH left after a partial exit: 0.05 USDT, under the exchange's 5 USDT minimum
        seed_position(env, ETH, 1.0, "seedETH")
        assert env.broker.place(OrderIntent(ETH, "sell", 0.999), "partETH").status == "filled"
    for sym, px in ((BTC, 100.0), (ETH, 50.0)):
        env.store.insert("decisions", {"cycle_id": "paper-1", "ts": T0, "mode": "paper", "symbol": sym,
                                       "strategy": "sma_cross", "inputs": json.dumps({"price": px}),
                                       "outputs": "{}", "reason_codes": "[]"})
    env.store.close()
    return root


def test_cli_kill_switch_exits_0_when_flat(tmp_path):
    root = _cli_home(tmp_path)
    r = run_cli(["--home", str(root), "kill-switch", "--reason", "test"])
    assert r.exit_code == 0, r.output
    assert "flat." in r.output and "cancelled rest0" in r.output
    store = Store.open(StateHome(root))
    try:
        assert store.scalar("SELECT COUNT(*) FROM positions WHERE amount > 0") == 0
        assert store.one("SELECT status FROM orders WHERE client_order_id='rest0'")["status"] == "cancelled"
        fill = store.one("SELECT amount, price FROM fills WHERE side='sell'")
        assert fill["amount"] == 2.0 and fill["price"] == pytest.approx(100 * (1 - SLIP))
        assert ks.status(store.home, store).engaged
    finally:
        store.close()
    again = run_cli(["--home", str(root), "kill-switch", "--reason", "again"])
    assert again.exit_code == 0 and "flat." in again.output


def test_cli_kill_switch_exits_1_when_something_is_left(tmp_path):
    root = _cli_home(tmp_path, dust=True)
    r = run_cli(["--home", str(root), "kill-switch", "--reason", "test"])
    assert r.exit_code == 1, r.output
    assert "NOT DONE" in r.output and ETH in r.output and "NOT confirmed flat" in r.output
    assert "below the minimum" in r.output and "\n  flat." not in r.output   # why ETH is left, and no "flat"
    assert (root / "safety" / "KILL_SWITCH").exists()


# ================================================================================== known holes

def test_run_fresh_does_not_release_an_engaged_switch(tmp_path):
    root = tmp_path / "home"
    home = StateHome(root).ensure()
    store = Store.open(home)
    ks.engage(home, "test", store)
    store.close()
    home.kill_flag.unlink()                                # the flag alone; the database still says engaged
    r = run_cli(["--home", str(root), "run", "--fresh", "--cycles", "1", "--quiet", "--days", "0.05"])
    assert r.exit_code != 0 and "kill switch engaged" in r.output


def test_a_home_from_before_the_anchor_keeps_its_signed_reset_and_profile(engaged, key):
    """Upgrading: a reset made (and signed) before the anchor existed still counts once the anchor meets the
    home; a forged one (above) does not. The saved profile becomes the anchor's last profile."""
    import shutil

    from qts.safety import anchor
    from qts.safety.risk_profile import RiskProfile, load_profile, profile_path, save_profile

    env = engaged
    ks.reset(env.home, env.store, key)
    save_profile(env.home, RiskProfile(max_positions=4), log=lambda *a: None)
    # as if the anchor had never existed: no anchor folder, no id file
    shutil.rmtree(anchor.anchor_path(env.home).parent)
    anchor.mark_path(env.home).unlink()
    assert ks.status(env.home).engaged   # before the library meets it: an unconfirmed reset reads as engaged
    st = ks.status(env.home, env.store)                       # the library meets the home: registers it
    assert not st.engaged, st
    assert anchor.check(env.home).known and not ks.status(env.home).engaged   # one truth afterwards
    profile_path(env.home).unlink()
    assert load_profile(env.home).profile.max_positions == 4
