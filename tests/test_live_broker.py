"""The live broker against the loopback Binance, through the REAL ccxt.binance client (issue 5, part 1).

Nothing in ccxt or the database is mocked: the loopback is a real HTTP server on 127.0.0.1 and its
access log / order book / balances are the exchange's side of every assertion. Faults are the
loopback's own (see ``tests/support/loopback_exchange.py``): ``5xx``/``429``/``418``/``timeout`` are answered
BEFORE the request is processed; ``lost``/``malformed`` AFTER it (e.g. the order exists).

Live orders go only through the trading agent: the key check runs at ``qts agent start`` (a real agent
process, as the unprivileged test user), ``open_session`` refuses live, and the live gate is the agent's
(``agent_gate``: the real broker, the agent's Authority over the exchange's own view).
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from live_support import ex, srv  # noqa: F401  (the shared loopback fixtures)
from live_support import (FastSleep, agent_gate, approve_live, ccxt_client, compare, fast_client, journal,
                          live_broker, live_settings, make_server, write_breaker_closed)
from qts.broker.models import OrderIntent

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
POST, ORDER = "POST", "/api/v3/order"


@pytest.fixture
def broker(store, ex):
    b = live_broker(store, ex, SYMBOLS)
    b.reconcile()
    return b


def history(store, coid):
    return [r["status"] for r in store.query(
        "SELECT status FROM order_status_history WHERE client_order_id=? ORDER BY id", (coid,))]


def details(store, coid):
    return [r["detail"] or "" for r in store.query(
        "SELECT detail FROM order_status_history WHERE client_order_id=? ORDER BY id", (coid,))]


def ex_orders(srv, coid):
    return [o for o in srv.orders() if o["clientOrderId"] == coid]


def posts(srv, coid=None):
    return [p for m, path, p in srv.access_log if m == POST and path == ORDER
            and (coid is None or p.get("newClientOrderId") == coid)]


def buy(symbol="BTC/USDT", amount=0.01, **kw):
    return OrderIntent(symbol, "buy", amount, **kw)


# -- basics -----------------------------------------------------------------------------------------

def test_market_buy_and_sell_recorded_with_status_history(store, srv, broker):
    r = broker.place(buy(amount=0.01), "mb1")
    assert r.accepted and r.status == "filled" and r.filled == pytest.approx(0.01)
    assert history(store, "mb1") == ["intent", "sent", "filled"]
    o = store.one("SELECT * FROM orders WHERE client_order_id='mb1'")
    assert o["exchange_order_id"] == str(ex_orders(srv, "mb1")[0]["orderId"])
    assert o["avg_price"] == pytest.approx(60000) and o["fee"] == pytest.approx(0.6)
    r = broker.place(OrderIntent("BTC/USDT", "sell", 0.004), "ms1")
    assert r.status == "filled" and history(store, "ms1") == ["intent", "sent", "filled"]
    assert broker.position_amount("BTC/USDT") == pytest.approx(0.006)
    assert compare(store, srv, SYMBOLS) == []
    lines = [j for j in journal(store.home) if j["client_order_id"] in ("mb1", "ms1")]
    assert len(lines) == 2 and len({j["fill_id"] for j in lines}) == 2


def test_limit_order_rests_then_fills_on_poll(store, srv, broker):
    r = broker.place(buy(amount=0.01, type="limit", price=59000), "lb1")
    assert r.status == "open" and history(store, "lb1") == ["intent", "sent", "open"]
    assert broker.process_market() == 0
    srv.set_price("BTC/USDT", 58900)          # trades through: fills as maker at the limit
    assert broker.process_market() == 1
    assert history(store, "lb1") == ["intent", "sent", "open", "filled"]
    o = store.one("SELECT * FROM orders WHERE client_order_id='lb1'")
    assert o["status"] == "filled" and o["avg_price"] == pytest.approx(59000)
    assert compare(store, srv, SYMBOLS) == []


def test_client_order_id_is_in_the_database_before_the_post(store, srv, broker):
    """When the loopback receives the POST, a SEPARATE connection already sees the order row (status
    'sent') and its intent -> sent history: the id to ask about is durable before anything is sent."""
    seen = []

    class Probe(list):
        def append(self, item):
            method, path, params = item
            if method == POST and path == ORDER:
                con = sqlite3.connect(str(store.home.db_path))
                row = con.execute("SELECT status FROM orders WHERE client_order_id=?",
                                  (params.get("newClientOrderId"),)).fetchone()
                hist = [h[0] for h in con.execute("SELECT status FROM order_status_history WHERE client_order_id=? "
                                                  "ORDER BY id", (params.get("newClientOrderId"),))]
                con.close()
                seen.append((params.get("newClientOrderId"), row and row[0], hist))
            super().append(item)

    srv.access_log = Probe(srv.access_log)
    broker.place(buy(amount=0.002), "pre1")
    broker.place(buy(amount=0.002, type="limit", price=50000), "pre2")
    assert seen == [("pre1", "sent", ["intent", "sent"]), ("pre2", "sent", ["intent", "sent"])]


def test_partial_fills_tracked_to_completion(store, srv, broker):
    srv.set_fill_fraction(0.25)
    r = broker.place(buy(amount=0.01, type="limit", price=59000), "pf1")
    assert r.status == "open"
    for k in range(1, 5):
        srv.set_price("BTC/USDT", 58990 - k)    # each trade-through fills a quarter
        assert broker.process_market() == 1
        o = store.one("SELECT * FROM orders WHERE client_order_id='pf1'")
        assert o["filled"] == pytest.approx(0.0025 * k)
        assert o["status"] == ("filled" if k == 4 else "partially_filled")
        assert compare(store, srv, SYMBOLS) == []
    assert history(store, "pf1") == ["intent", "sent", "open"] + ["partially_filled"] * 3 + ["filled"]
    assert broker.process_market() == 0        # nothing left to poll
    # a market order only partly filled expires at the exchange: cancelled with what it got
    srv.set_fill_fraction(0.5)
    r = broker.place(buy("ETH/USDT", 0.1), "pf2")
    o = store.one("SELECT * FROM orders WHERE client_order_id='pf2'")
    assert o["status"] == "cancelled" and o["filled"] == pytest.approx(0.05)
    assert compare(store, srv, SYMBOLS) == []


def test_cancel(store, srv, broker):
    broker.place(buy(amount=0.01, type="limit", price=50000), "c1")
    assert srv.balance("USDT")[1] > 0          # funds locked at the exchange
    assert broker.cancel("c1") is True
    assert store.one("SELECT status FROM orders WHERE client_order_id='c1'")["status"] == "cancelled"
    assert ex_orders(srv, "c1")[0]["status"] == "CANCELED" and srv.balance("USDT")[1] == 0
    assert broker.cancel("c1") is False        # not open any more: nothing sent
    assert compare(store, srv, SYMBOLS) == []


@pytest.mark.parametrize("intent, exc", [
    (buy(amount=1.0), "InsufficientFunds"),                                     # 60,000 USDT > 10,000
    (buy(amount=0.00002), "BadRequest"),                                        # -1013 Filter failure: NOTIONAL
    (buy(amount=0.001, type="limit", price=2_000_000), "InvalidOrder"),         # PRICE_FILTER (max price)
    (buy(amount=0.2, type="limit", price=10 ** 5), "InsufficientFunds"),        # locks more than there is
    (buy(amount=0.01, type="limit", price=0.02), "BadRequest"),                 # NOTIONAL below 5
])
def test_definite_refusals_are_rejected_without_retry(store, srv, broker, intent, exc):
    before = srv.count(POST, ORDER)
    r = broker.place(intent, "rj1")
    assert not r.accepted and r.status == "rejected" and r.reason_code == "EXCHANGE_REJECTED"
    assert exc in r.message
    assert srv.count(POST, ORDER) - before == 1                 # exactly one POST, no lookup-and-resend
    assert srv.count("GET", ORDER) == 0
    assert history(store, "rj1") == ["intent", "sent", "rejected"]
    assert ex_orders(srv, "rj1") == []
    assert compare(store, srv, SYMBOLS) == []


def test_429_418_and_5xx_on_gets_retried_with_backoff_and_recorded(store, srv, ex):
    sleep = FastSleep()
    client = fast_client(ex, store, retries=4, base_backoff_s=0.01, max_backoff_s=0.05, sleep=sleep)
    b = live_broker(store, ex, SYMBOLS, client=client)
    b.reconcile()
    b.place(buy(amount=0.002, type="limit", price=50000), "rt1")
    for k, (kind, status) in enumerate((("429", None), ("418", None), ("5xx", 503), ("5xx", 502))):
        srv.faults.add(kind, path=ORDER, method="GET", times=1, skip=k, status=status)  # one per call
    gets = srv.count("GET", ORDER)
    errors0 = store.scalar("SELECT COUNT(*) FROM metrics WHERE name='api_error'")
    b.process_market()                                          # one poll: 4 failures, then the answer
    assert srv.count("GET", ORDER) - gets == 5
    errs = [json.loads(r["tags"]) for r in store.query("SELECT tags FROM metrics WHERE name='api_error' "
                                                       "ORDER BY id")][errors0:]
    assert [e["error"] for e in errs] == ["DDoSProtection", "DDoSProtection", "ExchangeNotAvailable",
                                          "ExchangeNotAvailable"]
    assert all(e["method"] == "fetch_order" for e in errs)
    waits = sleep.calls[-4:]
    # the 429 and the 418 are waited out for their Retry-After (loopback: 1 s, 120 s); the 5xx get full jitter
    assert len(sleep.calls) >= 4 and waits[0] == pytest.approx(1.0, abs=0.01) and waits[1] == pytest.approx(120, abs=0.01)
    assert all(0 <= w <= 0.05 for w in waits[2:])
    assert store.one("SELECT status FROM orders WHERE client_order_id='rt1'")["status"] == "open"
    assert "not_found" not in history(store, "rt1")
    # a fault that outlasts the retries is counted and reported, never taken as "not found", and does not
    # stop the poll (nor the loop that called it): the order is polled again next time
    srv.faults.add("5xx", path=ORDER, method="GET", times=None)
    assert b.process_market() == 0
    srv.faults.clear()
    ev = store.one("SELECT * FROM events WHERE kind='broker' ORDER BY id DESC LIMIT 1")
    assert "poll failed for 1 open order" in ev["message"] and "ExchangeNotAvailable" in ev["data"]
    assert srv.count("GET", ORDER) - gets == 5 + 5
    assert "not_found" not in history(store, "rt1")
    assert compare(store, srv, SYMBOLS) == []


def test_rate_limited_post_is_not_blindly_retried(store, srv, broker):
    """A 429 on the POST itself is answered before processing: the broker asks by client id, finds
    nothing, and sends once more with the same id."""
    srv.faults.add("429", path=ORDER, method=POST, times=1)
    r = broker.place(buy(amount=0.002), "rl1")
    assert r.status == "filled"
    assert [p["newClientOrderId"] for p in posts(srv, "rl1")] == ["rl1", "rl1"]
    assert len(ex_orders(srv, "rl1")) == 1
    assert compare(store, srv, SYMBOLS) == []


@pytest.mark.parametrize("mode", ["drop", "error"])
def test_lost_answer_on_post_is_looked_up_and_adopted(store, srv, broker, mode):
    srv.faults.add("lost", path=ORDER, method=POST, times=1, mode=mode)
    r = broker.place(buy(amount=0.003), "lost1")
    assert r.accepted and r.status == "filled" and r.filled == pytest.approx(0.003)
    assert len(posts(srv, "lost1")) == 1 and len(ex_orders(srv, "lost1")) == 1
    assert any("answer lost" in d for d in details(store, "lost1"))
    assert compare(store, srv, SYMBOLS) == []


def test_timeout_on_post_order_never_processed_is_resent_once(store, srv, ex):
    """The loopback's ``timeout`` holds the request unprocessed until the client gives up."""
    ex.timeout = 200
    b = live_broker(store, ex, SYMBOLS)
    b.reconcile()
    srv.faults.add("timeout", path=ORDER, method=POST, times=1)
    r = b.place(buy(amount=0.003), "to1")
    assert r.status == "filled"
    assert len(posts(srv, "to1")) == 2 and len(ex_orders(srv, "to1")) == 1
    assert compare(store, srv, SYMBOLS) == []


def test_timeout_after_processing_is_adopted(store, srv, ex):
    """The order is created, then the answer takes longer than the client waits (latency > timeout)."""
    ex.timeout = 200
    b = live_broker(store, ex, SYMBOLS)
    b.reconcile()
    srv.faults.add("latency", path=ORDER, method=POST, times=1, delay=0.4)
    # the loopback processes after the delay: the lookups must wait for it
    b.lookup_pause_s = 0.25
    r = b.place(buy(amount=0.003), "to2")
    assert r.status == "filled"
    assert len(ex_orders(srv, "to2")) == 1
    assert compare(store, srv, SYMBOLS) == []


def test_order_never_created_is_resent_once_with_the_same_id(store, srv, broker):
    srv.faults.add("5xx", path=ORDER, method=POST, times=1, status=503)
    r = broker.place(buy(amount=0.002), "nc1")
    assert r.accepted and r.status == "filled"
    assert [p["newClientOrderId"] for p in posts(srv, "nc1")] == ["nc1", "nc1"]
    assert len(ex_orders(srv, "nc1")) == 1
    assert history(store, "nc1").count("not_found") == 0       # lookups before a resend are not "lost"
    assert compare(store, srv, SYMBOLS) == []


def test_vanish_then_reappear_within_the_limit_is_adopted(store, srv, broker):
    srv.faults.add("lost", path=ORDER, method=POST, times=1)
    srv.faults.add("vanish", path=ORDER, method=POST, times=1, lookups=2)
    r = broker.place(buy(amount=0.002), "vr1")
    assert r.status == "filled" and len(posts(srv, "vr1")) == 1 and len(ex_orders(srv, "vr1")) == 1
    assert compare(store, srv, SYMBOLS) == []


def test_vanish_past_the_limit_resend_hits_the_duplicate_and_adopts(store, srv, broker):
    """Hidden for every lookup: the broker resends with the same id; the exchange refuses the duplicate
    (Binance: -2010 "Duplicate order sent.", which ccxt raises as InvalidOrder, not DuplicateOrderId)
    and the order is adopted rather than left unknown."""
    srv.faults.add("lost", path=ORDER, method=POST, times=1)
    srv.faults.add("vanish", path=ORDER, method=POST, times=1, lookups=broker.not_found_limit)
    r = broker.place(buy(amount=0.002), "vr2")
    assert len(ex_orders(srv, "vr2")) == 1 and len(posts(srv, "vr2")) == 2
    assert r.accepted and r.status == "filled"
    assert compare(store, srv, SYMBOLS) == []


def test_duplicate_order_id_adopts_the_existing_order(store, srv, ex, broker):
    """The id is already known to the exchange (sent by an earlier process whose answer never came
    back): the duplicate refusal means "it exists", so it is adopted, not recorded as rejected."""
    ex.create_order("BTC/USDT", "market", "buy", 0.002, None, {"clientOrderId": "dup1"})
    r = broker.place(buy(amount=0.002), "dup1")
    assert r.accepted and r.status == "filled" and r.filled == pytest.approx(0.002)
    assert len(ex_orders(srv, "dup1")) == 1
    assert compare(store, srv, SYMBOLS) == []


def test_resting_order_vanishing_briefly_is_not_lost(store, srv, broker):
    broker.place(buy(amount=0.01, type="limit", price=59000), "vz1")
    srv.hide_order(client_order_id="vz1", symbol="BTC/USDT", lookups=broker.not_found_limit - 1)
    for _ in range(broker.not_found_limit - 1):
        broker.process_market()
    assert store.one("SELECT status FROM orders WHERE client_order_id='vz1'")["status"] == "open"
    broker.process_market()                                    # it is back
    srv.hide_order(client_order_id="vz1", symbol="BTC/USDT", lookups=1)
    broker.process_market()                                    # one more miss, much later: not a streak
    assert store.one("SELECT status FROM orders WHERE client_order_id='vz1'")["status"] == "open"
    srv.set_price("BTC/USDT", 58000)
    assert broker.process_market() == 1
    assert compare(store, srv, SYMBOLS) == []


def test_order_declared_lost_that_reappears_is_adopted_at_reconcile(store, srv, broker):
    broker.place(buy(amount=0.01, type="limit", price=59000), "vz2")
    srv.hide_order(client_order_id="vz2", symbol="BTC/USDT", lookups=broker.not_found_limit)
    for _ in range(broker.not_found_limit):
        broker.process_market()
    assert store.one("SELECT status FROM orders WHERE client_order_id='vz2'")["status"] == "rejected"
    srv.set_price("BTC/USDT", 58000)           # it was alive all along, and now it trades
    rep = broker.reconcile()
    o = store.one("SELECT * FROM orders WHERE client_order_id='vz2'")
    assert o["status"] == "filled" and o["filled"] == pytest.approx(0.01)
    assert rep["fills_adopted"] == 1
    assert compare(store, srv, SYMBOLS) == []


def test_malformed_answer_to_post_resolves_on_the_next_poll(store, srv, broker):
    srv.faults.add("malformed", path=ORDER, method=POST, times=1)
    r = broker.place(buy(amount=0.002), "mf1")
    assert len(ex_orders(srv, "mf1")) == 1 and len(posts(srv, "mf1")) == 1
    if r.status != "filled":
        assert r.status == "sent" and "unknown" in r.message
        broker.process_market()
    assert store.one("SELECT status FROM orders WHERE client_order_id='mf1'")["status"] == "filled"
    assert compare(store, srv, SYMBOLS) == []


def test_failure_to_read_fills_after_the_order_is_accepted_is_not_a_rejection(store, srv, broker):
    srv.faults.add("5xx", path="/api/v3/myTrades", method="GET", times=None)
    r = broker.place(buy(amount=0.002), "ft1")
    srv.faults.clear()
    assert r.status != "rejected" and r.accepted           # the order exists: never call it rejected
    assert len(ex_orders(srv, "ft1")) == 1
    broker.process_market()
    assert store.one("SELECT status FROM orders WHERE client_order_id='ft1'")["status"] == "filled"
    assert compare(store, srv, SYMBOLS) == []


# -- reconciliation ----------------------------------------------------------------------------------

def test_reconcile_after_restart_adopts_missed_fills_and_keeps_cash_right(store, srv, ex, broker):
    broker.place(buy(amount=0.01, type="limit", price=59000), "rc1")
    broker.place(buy(amount=0.01), "rc2")
    restarted = live_broker(store, ex, SYMBOLS)                # a new process: same DB, same exchange
    with pytest.raises(Exception, match="reconciliation"):
        restarted.place(buy(amount=0.001), "rc3")
    rep = restarted.reconcile()
    assert rep["discrepancies"] == [] and rep["lost"] == []
    assert compare(store, srv, SYMBOLS) == []                  # cash counts the funds the open buy locks
    srv.set_price("BTC/USDT", 58000)                           # fills while nobody watches
    rep = live_broker(store, ex, SYMBOLS).reconcile()
    assert rep["fills_adopted"] == 1
    assert compare(store, srv, SYMBOLS) == []


def test_reconcile_reports_foreign_orders_and_position_differences(store, srv, ex, broker):
    ex.create_order("ETH/USDT", "limit", "buy", 0.01, 1000, {"clientOrderId": "foreign1"})
    srv.set_balance("SOL", "3")
    rep = broker.reconcile()
    kinds = sorted(d["kind"] for d in rep["discrepancies"])
    assert kinds == ["foreign_open_order", "position"]
    assert store.scalar("SELECT COUNT(*) FROM events WHERE kind='reconcile' AND severity='warning'") >= 2


def test_reconcile_does_not_trust_an_empty_balance_answer(store, srv, broker):
    cash = broker.cash()
    srv.faults.add("malformed", path="/api/v3/account", method="GET", times=1)
    try:
        broker.reconcile()
    except Exception:
        pass                                                    # refusing to finish is fine too
    assert broker.cash() == pytest.approx(cash)                # never zeroed by a garbled answer


def test_reconcile_resolves_an_intent_that_was_never_sent(store, srv, ex, broker):
    ts = 1
    store.insert("orders", {"client_order_id": "ghost1", "mode": "live", "symbol": "BTC/USDT", "side": "buy",
                            "type": "market", "amount": 0.001, "status": "intent", "created_ts": ts, "updated_ts": ts})
    rep = live_broker(store, ex, SYMBOLS).reconcile()
    assert rep["lost"] == ["ghost1"]
    assert store.one("SELECT status FROM orders WHERE client_order_id='ghost1'")["status"] == "rejected"
    assert ex_orders(srv, "ghost1") == []


# -- keys and the trading agent -----------------------------------------------------------------------

TEST_USER = None


def _agent_world():
    """A project, the user's key store (PIN and exchange keys stored) and a standalone loopback, all
    owned by the unprivileged test user the agent runs as (it refuses root); skips without that user."""
    import agent_support

    global TEST_USER
    if TEST_USER is None:
        TEST_USER = agent_support.test_user()
    if isinstance(TEST_USER, str):
        pytest.skip(TEST_USER)
    w = agent_support.World(TEST_USER[0], TEST_USER[1], symbols=SYMBOLS[:2])
    try:
        w.set_pin_and_keys()
    except BaseException:
        w.close()
        raise
    return w


def _agent_start_is_refused(world) -> str:
    """``qts agent start`` in the human's terminal, the PIN typed at its prompt: it must refuse, and leave
    nothing running and nothing sent. Returns what it printed."""
    from qts.agent import protocol

    a = world.start_agent("--no-loop", "--max-order", "100", "--max-daily", "1000", "--accept-unconfined",
                          expect=r"refused: |listening", timeout=60)
    a.proc.wait(30)
    out = a.output
    assert a.proc.returncode not in (0, None), out
    assert "listening" not in out and not protocol.agent_alive(world.paths), out
    assert world.server.count("POST", "/api/v3/order") == 0 and world.server.orders() == []
    assert world.server.secret not in out and world.server.api_key not in out     # never printed
    return out


def test_keys_that_can_withdraw_are_refused():
    """The agent unlocks the stored keys with the PIN, then asks the exchange what they may do: keys that
    can withdraw never trade live."""
    with _agent_world() as world:
        world.server.set_api_restrictions(enableWithdrawals=True)
        out = _agent_start_is_refused(world)
        assert "WITHDRAW" in out
        assert world.server.count("GET", "/sapi/v1/account/apiRestrictions") >= 1    # it really asked


@pytest.mark.parametrize("fault", ["5xx", "malformed", "timeout"])
def test_keys_whose_permissions_cannot_be_read_are_refused(fault):
    """Binance reports key permissions: a check that fails is "unverified", not "unknown" (the keys
    below could withdraw: a start that skipped the check would have gone live)."""
    with _agent_world() as world:
        world.server.set_api_restrictions(enableWithdrawals=True)
        world.server.add_fault(fault, path="/sapi/v1/account/apiRestrictions", method="GET", times=None)
        out = _agent_start_is_refused(world)
        assert "could not verify" in out


def test_a_live_session_outside_the_agent_is_refused(home, srv, ex, store):
    """`qts run` / `qts once` trade paper only: PAPER_TRADING=false is refused before anything reaches the
    exchange, whatever the files say (the old way to live: a closed breaker file and a PIN-signed grant)."""
    from qts.engine.session import SessionError, open_session
    from qts.market.ccxt_feed import CcxtFeed

    write_breaker_closed(home)
    approve_live(home, store, SYMBOLS)
    before = len(srv.access_log)
    with pytest.raises(SessionError) as e:
        open_session(live_settings(home, srv, SYMBOLS), CcxtFeed(ex, SYMBOLS, 5), exchange=ex)
    assert "qts agent start" in str(e.value) and "PAPER_TRADING" in str(e.value)
    assert srv.access_log[before:] == []                         # not even a balance request
    assert srv.api_key not in str(e.value) and srv.secret not in str(e.value)
    assert store.scalar("SELECT COUNT(*) FROM orders") == 0


def test_a_live_gate_without_the_agent_refuses(home, store, srv, ex):
    """The gate itself: a live broker without the agent's authority is refused (NO_AGENT), never placed."""
    from qts.gate import Gate, Reason

    b = live_broker(store, ex, SYMBOLS)
    b.reconcile()
    write_breaker_closed(home)
    approve_live(home, store, SYMBOLS)
    gate = Gate(store, b.feed, b)
    r = gate.submit(OrderIntent("BTC/USDT", "buy", 0.002, client_order_id="na1", source="cli"))
    assert (r.accepted, r.reason_code) == (False, Reason.NO_AGENT), r
    r = gate.submit_flatten("BTC/USDT", 0.002)                    # not even the kill switch's own orders
    assert not r.accepted
    assert posts(srv) == [] and store.scalar("SELECT COUNT(*) FROM orders") == 0


def test_gate_places_a_live_order_end_to_end(store, srv, ex):
    """The gate as the agent runs it (``agent_gate``): checks, the collar against the exchange's own mid,
    the real broker; the same decision twice is one order."""
    gate, broker, auth = agent_gate(store, ex, SYMBOLS)
    r = gate.submit(OrderIntent("BTC/USDT", "buy", 0.002, client_order_id="g0", source="agent:spool"))
    assert not r.accepted and ex_orders(srv, "g0") == []           # not before start-up reconciliation
    broker.reconcile()
    r = gate.submit(OrderIntent("BTC/USDT", "buy", 0.002, client_order_id="g1", source="agent:spool"))
    assert r.accepted and r.status == "filled", r
    assert gate.submit(OrderIntent("BTC/USDT", "buy", 0.002, client_order_id="g1", source="agent:spool")).reason_code \
        == "DUPLICATE"
    assert len(ex_orders(srv, "g1")) == 1 and [p["newClientOrderId"] for p in posts(srv)] == ["g1"]
    assert auth.position("BTC/USDT") == pytest.approx(0.002)        # the agent reads positions from the exchange
    # a limit buy far above the exchange's mid is refused by the collar, before it is sent
    mid = float(srv.price("BTC/USDT"))
    r = gate.submit(OrderIntent("BTC/USDT", "buy", 0.002, type="limit", price=round(mid * 1.05, 2),
                                client_order_id="g2", source="agent:spool"))
    assert (r.accepted, r.reason_code) == (False, "PRICE_COLLAR"), r
    r = gate.submit_flatten("BTC/USDT", 0.002)                      # the kill switch's sell
    assert r.accepted and r.status == "filled", r
    assert [p["newClientOrderId"] for p in posts(srv)] == ["g1", r.client_order_id]
    assert compare(store, srv, SYMBOLS) == []


def test_cancel_of_an_order_hidden_for_a_moment_is_retried(store, srv, broker):
    broker.place(buy(amount=0.01, type="limit", price=50000), "ch1")
    srv.hide_order(client_order_id="ch1", symbol="BTC/USDT", lookups=1)   # the DELETE answers "unknown order"
    assert broker.cancel("ch1") is True
    assert ex_orders(srv, "ch1")[0]["status"] == "CANCELED"
    assert compare(store, srv, SYMBOLS) == []


def test_cancel_that_the_exchange_keeps_refusing_is_an_error_not_a_no_op(store, srv, broker):
    """The kill switch reads False as "nothing to cancel": an order still working must raise instead."""
    broker.place(buy(amount=0.01, type="limit", price=50000), "ch2")
    srv.faults.add("vanish", path=ORDER, method="DELETE", times=None)      # every cancel: -2011
    with pytest.raises(RuntimeError, match="not confirmed"):
        broker.cancel("ch2")
    srv.faults.clear()
    assert ex_orders(srv, "ch2")[0]["status"] == "NEW"
    assert store.one("SELECT status FROM orders WHERE client_order_id='ch2'")["status"] == "open"
    assert broker.cancel("ch2") is True
