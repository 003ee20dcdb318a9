"""Circuit breaker on a fake clock: every ``now_ms`` is explicit and the metrics / equity_snapshots /
events tables are fed by hand (real SQLite). Thresholds are the documented defaults of
``BreakerConfig``: p95 latency > 2 000 ms over 300 s with >= 5 samples, error rate > 25 %, daily
loss <= -5 %, any position-size breach; cool-down 900 s, probation 900 s.
"""

from __future__ import annotations

import json

import pytest

from qts.broker.paper import PaperBroker
from qts.gate import Gate, Reason
from qts.safety import kill_switch as ks
from qts.safety.breaker import ACTIVE, CLOSED, HALF_OPEN, HALTED, OPEN, REDUCING, Breaker, BreakerConfig
from test_gate import BTC, N, PIN, FixedFeed, buy, paper, read_lines, seed_position, sell  # noqa: F401

T = 1_800_000_000_000            # the fake "now" (epoch ms)
S = 1000
DAY = 86_400_000


@pytest.fixture
def b(store):
    return Breaker(store.home, store)


def closed(br: Breaker, now: int = T) -> Breaker:
    """Fresh state (reads open) -> half_open after 900 s -> closed after 900 s more, ending at ``now``."""
    assert br.status(now - 1800 * S).state == OPEN
    assert br.check(now - 900 * S).state == HALF_OPEN
    assert br.check(now).state == CLOSED
    return br


def latency(store, values, now=T, age_s=1):
    for v in values:
        store.metric("api_latency_ms", v, {"method": "fetch_ticker"}, ts=now - age_s * S)


def errors(store, n, now=T, age_s=1):
    for _ in range(n):
        store.metric("api_error", 1.0, {"method": "fetch_ticker", "error": "RequestTimeout"}, ts=now - age_s * S)


def equity(store, value, ts):
    store.insert("equity_snapshots", {"mode": "paper", "ts": ts, "equity": value, "cash": value,
                                      "positions_value": 0.0, "unrealized_pnl": 0.0, "realized_pnl": 0.0})


# ================================================================================== the state machine

def test_fresh_state_reads_open_then_recovers_over_time(b):
    st = b.status(T)
    assert (st.state, st.trading_state, st.live_allowed) == (OPEN, ACTIVE, False)
    assert "missing" in st.reason
    assert b.check(T + 899 * S).state == OPEN                    # cool-down not over
    assert b.check(T + 900 * S).state == HALF_OPEN
    assert not b.status(T + 900 * S).live_allowed               # probation is still paper
    assert b.check(T + 1799 * S).state == HALF_OPEN
    st = b.check(T + 1800 * S)
    assert st.state == CLOSED and st.live_allowed


def test_every_transition_is_a_json_line_and_an_event(b, store):
    closed(b)
    b.trip("manual", T + S)
    b.set_trading_state(REDUCING, T + 2 * S)
    lines = read_lines(store.home.breaker_file)
    events = store.query("SELECT * FROM events WHERE kind='breaker' ORDER BY id")
    assert [(x["from"], x["state"], x["trading_state"]) for x in lines] == [
        ("unreadable", OPEN, ACTIVE), (OPEN, HALF_OPEN, ACTIVE), (HALF_OPEN, CLOSED, ACTIVE),
        (CLOSED, OPEN, ACTIVE), (OPEN, OPEN, REDUCING)]
    assert [x["version"] for x in lines] == [1, 2, 3, 4, 5]
    assert [x["since_ts"] for x in lines] == [T - 1800 * S, T - 900 * S, T, T + S, T + 2 * S]
    assert [json.loads(e["data"]) for e in events] == lines
    assert [e["ts"] for e in events] == [x["since_ts"] for x in lines]
    assert [x["trips"] for x in lines] == [1, 1, 1, 2, 2]


# ================================================================================== what trips it

@pytest.mark.parametrize("values, trips", [
    ([5000] * 4, False),                  # 4 samples < min_samples 5
    ([5000] * 5, True),                   # p95 of 5 = the largest = 5000 > 2000
    ([2000] * 10, False),                 # at the threshold, not over it
    ([100] * 19 + [5000], False),         # nearest rank: p95 of 20 = the 19th value = 100
    ([100] * 18 + [5000] * 2, True),      # the 19th value is now 5000
])
def test_latency_p95(b, store, values, trips):
    closed(b)
    latency(store, values)
    st = b.check(T)
    assert (st.state == OPEN) is trips, st
    if trips:
        assert "p95 5000 ms > 2000 ms" in st.reason


def test_latency_outside_the_window_does_not_count(b, store):
    closed(b)
    latency(store, [9000] * 10, age_s=301)          # older than the 300 s window
    assert b.check(T).state == CLOSED


@pytest.mark.parametrize("ok, failed, trips", [
    (3, 1, False),     # 1 / 4 = 25 %: not over 25 % (and only 4 calls)
    (6, 2, False),     # 2 / 8 = 25 %: at the threshold
    (3, 2, True),      # 2 / 5 = 40 % over 5 calls
    (0, 2, False),     # 100 % but only 2 calls: too few to judge
    (0, 10, True),     # a total outage: every one of 10 calls failed
])
def test_error_rate(b, store, ok, failed, trips):
    closed(b)
    latency(store, [50] * ok)
    errors(store, failed)
    st = b.check(T)
    assert (st.state == OPEN) is trips, (st, b.measure(T))
    if trips:
        assert "error rate" in st.reason


@pytest.mark.parametrize("last, trips", [(9_500.0, True), (9_501.0, False), (8_000.0, True), (10_400.0, False)])
def test_daily_loss(b, store, last, trips):
    closed(b)
    day0 = T - T % DAY
    equity(store, 20_000.0, day0 - 3600 * S)         # yesterday: not today's start
    equity(store, 10_000.0, day0 + 60 * S)           # today's first snapshot
    equity(store, last, T - S)
    st = b.check(T)
    assert (st.state == OPEN) is trips, (st, b.measure(T))
    if trips:
        assert "daily P&L" in st.reason


def test_position_breach_event(b, store):
    closed(b)
    store.event("position_breach", "BTC/USDT 1 200 USD > 1 000", "warning", ts=T - 301 * S)   # too old
    assert b.check(T).state == CLOSED
    store.event("position_breach", "BTC/USDT 1 200 USD > 1 000", "warning", ts=T - 10 * S)
    st = b.check(T)
    assert st.state == OPEN and "position-size breach" in st.reason


def test_a_problem_in_probation_trips_again_and_recovery_restarts(b, store):
    b.status(T)
    assert b.check(T + 900 * S).state == HALF_OPEN
    errors(store, 10, now=T + 1000 * S)
    st = b.check(T + 1000 * S)
    assert st.state == OPEN and st.trips == 2
    assert b.check(T + 1100 * S).state == OPEN                       # still failing: stays open, no new line
    assert len(read_lines(store.home.breaker_file)) == 3
    assert b.check(T + 1000 * S + 899 * S).state == OPEN            # cool-down counts from the new trip
    assert b.check(T + 1000 * S + 900 * S).state == HALF_OPEN       # errors are out of the 300 s window


# ================================================================================== trip revokes the grant

# (A trip no longer revokes a live grant FILE: live grants live in the trading agent's memory, and the
# agent's own breaker is tested in test_reliability.py and test_agent_authority.py.)


# ================================================================================== file vs database copy

def test_a_file_rolled_back_to_an_earlier_line_reads_open_and_keeps_the_stricter_state(b, store):
    closed(b)
    b.set_trading_state(HALTED, T + S)
    lines = store.home.breaker_file.read_text().splitlines(keepends=True)
    store.home.breaker_file.write_text("".join(lines[:-1]))      # the HALTED line is gone: "closed, ACTIVE"
    st = b.status(T + 2 * S)
    assert (st.state, st.trading_state, st.live_allowed) == (OPEN, HALTED, False)
    assert b.status(T + 3 * S).state == OPEN                      # recorded: it stays so
    assert read_lines(store.home.breaker_file)[-1]["version"] == 5  # past the database's 4


def test_a_hand_written_closed_line_behind_the_recorded_trip_does_not_close(b, store):
    closed(b)
    b.trip("manual", T + S)
    with open(store.home.breaker_file, "a") as fh:                # no version: behind the trip on record
        fh.write(json.dumps({"state": "closed", "trading_state": "ACTIVE", "since_ts": T + 2 * S}) + "\n")
    assert b.status(T + 3 * S).state == OPEN


def test_a_database_that_lags_behind_the_file_is_not_a_problem(b, store):
    """The event is written after the file line: if that write failed, the file is simply ahead."""
    closed(b)
    store.execute("DELETE FROM events WHERE id=(SELECT MAX(id) FROM events WHERE kind='breaker')")
    st = b.status(T + S)
    assert (st.state, st.live_allowed) == (CLOSED, True)
    assert len(read_lines(store.home.breaker_file)) == 3           # nothing recorded: nothing was wrong


# ================================================================================== trading states

def human_key(store, now):
    """The human's PIN key, set up long ago (past its cool-down)."""
    from qts.safety.pin import set_pin, unlock

    long_ago = now - 2 * 3600 * 1000
    set_pin(store.home, "correct horse 42", scrypt_n=2 ** 10, now=long_ago)
    key = unlock(store.home, "correct horse 42", now=now)
    store.event("pin_key_seen", "first seen (test set-up)", "critical", {"fingerprint": key.fingerprint}, ts=long_ago)
    return key


def test_a_loosening_line_without_the_pin_is_ignored(b):
    """One line appended by hand (no signed approval) cannot loosen HALTED; a signed one can."""
    closed(b)
    last = b.set_trading_state(HALTED, T + S)
    forged = {"state": "closed", "trading_state": "ACTIVE", "since_ts": T + 2 * S, "reason": "ok",
              "trips": last.trips, "version": last.version + 1, "from": "closed"}
    with open(b.home.breaker_file, "a") as fh:
        fh.write(json.dumps(forged) + "\n")
    assert b.status(T + 3 * S).trading_state == HALTED


def test_tightening_is_free_loosening_needs_approval(b):
    closed(b)
    assert b.set_trading_state(REDUCING, T + S).trading_state == REDUCING
    assert b.set_trading_state(HALTED, T + 2 * S).trading_state == HALTED
    for target in (REDUCING, ACTIVE):
        with pytest.raises(PermissionError):
            b.set_trading_state(target, T + 3 * S)
    assert b.status(T + 3 * S).trading_state == HALTED
    key = human_key(b.store, T)
    assert b.set_trading_state(ACTIVE, T + 4 * S, signing_key=key).trading_state == ACTIVE
    assert b.status(T + 4 * S + 1).trading_state == ACTIVE      # the signed line holds when read back
    with pytest.raises(ValueError):
        b.set_trading_state("PAUSED", T + 5 * S)
    # a trading-state change does not touch the breaker state
    assert b.status(T + 5 * S).state == CLOSED


def test_reducing_lets_only_exposure_reducing_orders_through(paper):
    seed_position(paper, BTC, 2.0, "seedBTC")
    Breaker(paper.home, paper.store).set_trading_state(REDUCING, T)
    for intent in (buy(1), buy(1, type="limit", price=90.0), sell(3)):
        v = paper.gate.evaluate(intent)
        assert (v.allowed, v.code) == (False, Reason.TRADING_REDUCING), intent
    assert paper.gate.evaluate(sell(1, type="limit", price=120.0)).allowed
    res = paper.gate.submit(sell(1))
    assert res.accepted and res.status == "filled" and paper.broker.position_amount(BTC) == pytest.approx(1.0)


def test_halted_lets_only_kill_switch_flattening_through(paper):
    seed_position(paper, BTC, 2.0, "seedBTC")
    Breaker(paper.home, paper.store).set_trading_state(HALTED, T)
    for intent in (buy(1), sell(2), sell(2, source="cli"), sell(2, source="kill_switch", type="limit", price=99.0)):
        v = paper.gate.evaluate(intent)
        assert (v.allowed, v.code) == (False, Reason.TRADING_HALTED), intent
    ks.engage(paper.home, "test", paper.store)
    rep = ks.flatten(paper.gate, paper.broker, backoff_s=0)
    assert rep.flat and paper.broker.positions() == {}


def test_breaker_config_defaults_are_the_documented_ones():
    c = BreakerConfig()
    assert (c.latency_p95_ms, c.latency_window_s, c.min_samples, c.error_rate, c.daily_loss_pct, c.cooldown_s,
            c.probation_s) == (2000.0, 300, 5, 0.25, 5.0, 900, 900)
