"""The trading agent's live checks (agent/authority.py) through the REAL live broker and the loopback
Binance: nothing here is a paper broker labelled live.

``agent_gate`` (live_support.py) builds what the agent runs in its own process: the gate over
``LiveBroker`` (ccxt.binance against the in-process loopback), with the agent's ``Authority`` over an
``ExchangeView`` of the same loopback, and the policy each test passes explicitly. Every refused order
is checked at the exchange too: nothing refused reaches it.

The rules under test, from authority.py / policy.py / gate.py:
* kill switch -> trading state (HALTED: only the kill switch's own flatten; REDUCING: only sells within
  the exchange's balance) -> breaker (open: only exposure-reducing orders) -> live grant (expiry,
  symbols, notional per order, today's buys from the EXCHANGE's fills) -> daily loss (today's fills
  marked at the mid) -> large orders (single-use approval per client order id, 15 min) -> collar.
* orders per minute, counted when an order is really sent, checked before anything else in the
  agent's live check.
* the collar: every order against the mid the agent fetched itself (bid/ask of the exchange's ticker);
  limit buys at most ``collar_bps`` above it, limit sells at most that below, and a market order only
  when the book's spread is within twice the collar.

The loopback's ticker is last price +/- one tick (its bid and ask), so the mid is the last price and
the spread is 2 ticks / price: a symbol with a coarse tick (WID below: price 100, tick 0.5) has a wide
spread (100 bps). Its market orders fill at the last price; the fee is 0.1 % in USDT.

Expected numbers are worked by hand in the comments. The agent's caches (mid 1 s, balances 5 s, fills
30 s) are set to 0 in most tests so each check reads the exchange; the tests with ``fresh=False`` keep them
and show that the agent's own orders count at once all the same.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from live_support import agent_gate, ccxt_client, compare, make_server
from qts.agent.policy import Grant, Policy, PolicyError
from qts.broker.models import OrderIntent
from qts.gate import Reason, Refuse
from qts.store import Store
from support.loopback_exchange import SymbolSpec

BTC, ETH, WID = "BTC/USDT", "ETH/USDT", "WID/USDT"
SY = [BTC, ETH]


def now_ms() -> int:
    return int(time.time() * 1000)


def make_policy(max_order=450.0, max_daily=1_000_000.0, symbols=tuple(SY), hours=8.0, grant=True, **limits):
    """A grant (unless grant=False) and loose limits except those a test names."""
    base = dict(max_orders_per_minute=10_000, max_daily_loss_usd=1e9, order_approval_usd=1e9)
    base.update(limits)
    g = Grant.make(max_order, max_daily, list(symbols), hours, now_ms()) if grant else None
    return Policy(grant=g, **base)


class Live:
    """The agent's gate over the real live broker, reconciled; helpers to ask and to look at the exchange."""

    def __init__(self, store, srv, ex, policy, symbols=SY, fresh=True):
        self.store, self.srv, self.ex = store, srv, ex
        self.gate, self.broker, self.auth = agent_gate(store, ex, symbols, policy=policy)
        if fresh:
            v = self.auth.view
            v.mid_ttl_s = v.balance_ttl_s = v.fills_ttl_s = 0.0
        self.broker.reconcile()

    def code(self, intent) -> str:
        v = self.gate.evaluate(intent)
        return "OK" if v.allowed else v.code

    def verdict(self, intent):
        return self.gate.evaluate(intent)

    def submit(self, intent):
        return self.gate.submit(intent)

    def placed(self, intent):
        res = self.gate.submit(intent)
        assert res.accepted and res.status == "filled", res
        return res

    def at_exchange(self) -> dict[str, dict]:
        return {o["clientOrderId"]: o for o in self.srv.orders()}

    def held(self, asset: str) -> float:
        free, locked = self.srv.balance(asset)
        return float(free + locked)


def buy(amount, symbol=BTC, **kw):
    return OrderIntent(symbol, "buy", amount, source="cli", **kw)


def sell(amount, symbol=BTC, **kw):
    return OrderIntent(symbol, "sell", amount, source="cli", **kw)


@pytest.fixture
def srv():
    s = make_server(balances={"USDT": "10000"})
    yield s
    s.close()
    assert s.errors == []


@pytest.fixture
def ex(srv):
    return ccxt_client(srv)


@pytest.fixture
def live(store, srv, ex):
    def make(policy, symbols=SY, fresh=True):
        return Live(store, srv, ex, policy, symbols, fresh)
    return make


# ================================================================================== the grant

def test_a_granted_buy_goes_to_the_exchange_and_the_books_agree(live, store, srv):
    a = live(make_policy())
    res = a.placed(buy(0.005, client_order_id="qtsaOK1"))
    assert (res.filled, res.avg_price) == (0.005, 60000.0)
    o = a.at_exchange()["qtsaOK1"]
    assert (o["side"], o["type"], o["status"]) == ("BUY", "MARKET", "FILLED")
    # 0.005 x 60 000 = 300 USDT, fee 0.1 % = 0.30 USDT
    assert a.held("BTC") == 0.005 and a.held("USDT") == pytest.approx(10_000 - 300 - 0.3)
    assert compare(store, srv, SY) == []


def test_no_grant_refuses_and_sends_nothing(live, store):
    a = live(make_policy(grant=False))
    v = a.verdict(buy(0.005))
    assert (v.allowed, v.code, v.check) == (False, Reason.LIVE_NOT_APPROVED, "check_live_approval")
    assert "qts agent approve grant" in v.message
    res = a.submit(buy(0.005, client_order_id="qtsaNOG"))
    assert res.reason_code == Reason.LIVE_NOT_APPROVED
    assert a.code(sell(0.001)) == Reason.LIVE_NOT_APPROVED        # nothing held: a sell is no reduction
    assert a.at_exchange() == {} and store.query("SELECT * FROM orders") == []


def test_a_reducing_sell_needs_no_grant(live):
    """Closing risk is always allowed: with the grant revoked, a sell of no more than the exchange's
    balance passes and is placed; a sell of more is no reduction and needs the grant."""
    a = live(make_policy())
    a.placed(buy(0.005, client_order_id="qtsaRS0"))
    a.auth.tighten("revoke", {})
    assert a.code(buy(0.001)) == Reason.LIVE_NOT_APPROVED
    assert a.code(sell(0.006)) == Reason.LIVE_NOT_APPROVED
    a.placed(sell(0.004, client_order_id="qtsaRS1"))
    assert a.held("BTC") == pytest.approx(0.001)


def test_a_pin_signed_grant_opens_live_trading_within_its_scope(live, tmp_path):
    """What the agent does with `qts agent approve grant` (service._op_loosen): it issues a challenge bound
    to its policy's hash, the human signs it with the PIN key, the agent redeems it and loosens. A
    challenge issued before a tightening is void afterwards."""
    from qts.agent import challenge
    from qts.agent.challenge import ChallengeBook, ChallengeError
    from qts.paths import StateHome
    from qts.safety.pin import set_pin, unlock

    home = StateHome(tmp_path / "pin-home").ensure()
    set_pin(home, "Tr4de-Safely!", scrypt_n=2 ** 10)
    key = unlock(home, "Tr4de-Safely!")
    a = live(make_policy(grant=False))
    book = ChallengeBook("instance", str(home.root), "binance:acct", key.public_key)
    params = {"max_order_usd": 300, "max_daily_usd": 1000, "symbols": [BTC], "hours": 1}

    def redeem_and_loosen(ch):
        got = book.redeem(challenge.sign(key, ch), a.auth.policy.hash())
        new, what = a.auth.policy.loosen(got.action, got.params, a.auth.now_ms())
        a.auth.set_policy(new, what)

    stale = book.issue("grant", params, a.auth.policy.hash()).to_dict()
    a.auth.tighten("lower", {"collar_bps": 150})                  # the policy changed in between
    with pytest.raises(ChallengeError, match="policy changed"):
        redeem_and_loosen(stale)
    assert a.code(buy(0.005)) == Reason.LIVE_NOT_APPROVED
    redeem_and_loosen(book.issue("grant", params, a.auth.policy.hash()).to_dict())
    assert a.code(buy(0.005)) == "OK"                              # 300: at the per-order cap
    assert a.code(buy(0.0051)) == Reason.LIVE_SCOPE                # 306
    assert a.code(buy(0.1, symbol=ETH)) == Reason.LIVE_SCOPE       # not in the grant
    assert a.auth.policy.collar_bps == 150.0                       # the grant loosened nothing else


def test_an_expired_grant_is_no_grant(live):
    t0 = now_ms()
    pol = dataclasses.replace(make_policy(), grant=Grant.make(450, 10_000, SY, 1, t0))   # 1 h from t0
    a = live(pol)
    a.auth.clock = lambda: t0 / 1000 + 3599          # 1 s before the end
    assert a.code(buy(0.001)) == "OK"
    a.auth.clock = lambda: t0 / 1000 + 3600.5        # just past it
    v = a.verdict(buy(0.001))
    assert v.code == Reason.LIVE_NOT_APPROVED and "expired" in v.message
    assert a.submit(buy(0.001, client_order_id="qtsaEXP")).reason_code == Reason.LIVE_NOT_APPROVED
    assert a.at_exchange() == {}


def test_a_symbol_outside_the_grant(live):
    a = live(make_policy(symbols=[BTC]))
    v = a.verdict(buy(0.1, symbol=ETH))                # 0.1 x 3000 = 300: within every amount
    assert (v.code, v.check) == (Reason.LIVE_SCOPE, "check_live_approval") and ETH in v.message
    assert a.code(buy(0.005)) == "OK"
    assert a.submit(buy(0.1, symbol=ETH, client_order_id="qtsaSCOPE")).reason_code == Reason.LIVE_SCOPE
    assert a.at_exchange() == {}


def test_the_notional_per_order(live):
    """Market orders at the agent's mid (60 000), limit orders at their own price."""
    a = live(make_policy(max_order=300.0))
    assert a.code(buy(0.005)) == "OK"                                          # 300.00: at the cap
    v = a.verdict(buy(0.00501))                                                # 300.60
    assert v.code == Reason.LIVE_SCOPE and "per order" in v.message
    assert a.code(buy(0.0051, type="limit", price=58_000.0)) == "OK"          # 295.80 (306 at the mid)
    assert a.code(buy(0.0052, type="limit", price=58_000.0)) == Reason.LIVE_SCOPE   # 301.60
    assert a.submit(buy(0.00501, client_order_id="qtsaBIGO")).reason_code == Reason.LIVE_SCOPE
    assert a.at_exchange() == {}


# ================================================================================== the day's budget

def _spend_840(a):
    """Two market buys of 0.007 BTC at 60 000: 2 x 420 = 840 of the day's 1000."""
    for i in range(2):
        a.placed(buy(0.007, client_order_id=f"qtsaDAY{i}"))


def test_the_daily_cap_is_counted_from_the_exchanges_fills(live):
    a = live(make_policy(max_order=450.0, max_daily=1000.0))
    _spend_840(a)
    v = a.verdict(buy(0.003))                          # 840 + 180 = 1020 > 1000
    assert v.code == Reason.LIVE_SCOPE and "per day" in v.message
    assert a.code(buy(0.0026)) == "OK"                 # 840 + 156 = 996
    assert a.auth.view.day_spend() == pytest.approx(840.0)


@pytest.mark.parametrize("what", ["rows", "file"])
def test_the_daily_cap_survives_deleting_the_project_database(store, srv, ex, what):
    """The assistant deletes the orders and fills (or the whole database) and the agent restarts: the
    day's spend is read back from the exchange's trade list (fetch_my_trades), not from the project."""
    a = Live(store, srv, ex, make_policy(max_order=450.0, max_daily=1000.0))
    _spend_840(a)
    assert a.code(buy(0.003)) == Reason.LIVE_SCOPE
    home = store.home
    if what == "rows":
        for table in ("fills", "order_status_history", "orders"):
            store.execute(f"DELETE FROM {table}")
        assert store.query("SELECT * FROM orders") == []
        st = store
    else:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            p = home.db_path.with_name(home.db_path.name + suffix)
            if p.exists():
                os.unlink(p)
        st = Store.open(home)
        assert st.query("SELECT * FROM orders") == []
    try:
        # a new agent process: a new view that sent nothing itself today
        b = Live(st, srv, ex, make_policy(max_order=450.0, max_daily=1000.0))
        assert b.auth.view.sent_buy_notional == 0.0
        v = b.verdict(buy(0.003))                      # still 840 + 180 > 1000
        assert v.code == Reason.LIVE_SCOPE and "840.00" in v.message
        assert b.code(buy(0.0026)) == "OK"             # and still 996 <= 1000
        assert b.submit(buy(0.003, client_order_id="qtsaDAY9")).reason_code == Reason.LIVE_SCOPE
        assert "qtsaDAY9" not in b.at_exchange()
    finally:
        if st is not store:
            st.close()


def test_the_daily_cap_counts_resting_orders_the_agent_sent(live):
    """A resting limit buy has no fill at the exchange yet, but it is the agent's own commitment: 0.007 at
    59 000 = 413 rests; then 0.01 at 59 000 = 590 would make 1003 > 1000, 0.0099 (584.10) makes 997.10."""
    a = live(make_policy(max_order=700.0, max_daily=1000.0))
    res = a.submit(buy(0.007, type="limit", price=59_000.0, client_order_id="qtsaREST"))
    assert res.accepted and res.status == "open" and a.srv.trades() == []
    assert a.code(buy(0.01, type="limit", price=59_000.0)) == Reason.LIVE_SCOPE
    assert a.code(buy(0.0099, type="limit", price=59_000.0)) == "OK"


# ================================================================================== the daily loss cap

def test_the_daily_loss_cap_marks_todays_fills_at_the_mid(live, srv):
    """Buy 0.007 at 60 000: paid 420 + fee 0.42. Marked at 58 000: -420.42 + 406 = -14.42 (cap 20: a buy
    passes). At 57 000: -420.42 + 399 = -21.42: buys refused, a sell that reduces exposure passes."""
    a = live(make_policy(max_daily_loss_usd=20.0))
    a.placed(buy(0.007, client_order_id="qtsaL1"))
    srv.set_price(BTC, "58000")
    assert a.code(buy(0.001)) == "OK"
    srv.set_price(BTC, "57000")
    v = a.verdict(buy(0.001))
    assert (v.code, v.check) == (Reason.DAILY_LOSS, "check_live_approval") and "21.42" in v.message
    res = a.placed(sell(0.003, client_order_id="qtsaL2"))          # reduces: passes, at 57 000
    assert res.avg_price == 57_000.0 and a.held("BTC") == pytest.approx(0.004)
    # -420.42 + (171 - 0.171) + 0.004 x 57 000 = -21.591: buys stay refused
    assert a.code(buy(0.001)) == Reason.DAILY_LOSS
    assert a.code(sell(0.005)) == Reason.DAILY_LOSS               # more than held: not a reduction
    assert a.submit(buy(0.001, client_order_id="qtsaL3")).reason_code == Reason.DAILY_LOSS
    assert set(a.at_exchange()) == {"qtsaL1", "qtsaL2"}
    srv.set_price(BTC, "60000")                                     # the market comes back:
    assert a.code(buy(0.001)) == "OK"                               # -420.42 + 170.829 + 240 = -9.591


def test_the_loss_cap_sees_the_agents_own_fills_at_once(live, srv):
    """With the agent's real caches (today's fills re-read every 30 s): its own order's answer counts at
    once, so a loss made in the last 30 s is not missed."""
    a = live(make_policy(max_daily_loss_usd=20.0), fresh=False)
    a.auth.view.mid_ttl_s = 0.0                         # only the fills cache is under test
    assert a.code(buy(0.001)) == "OK"                   # reads today's (empty) fills
    a.placed(buy(0.007, client_order_id="qtsaC1"))
    srv.set_price(BTC, "57000")                         # -21.42 (see above)
    assert a.code(buy(0.001)) == Reason.DAILY_LOSS


# ================================================================================== large orders

def test_a_large_order_needs_its_own_single_use_approval(live):
    a = live(make_policy(order_approval_usd=300.0))
    assert a.code(buy(0.005, client_order_id="qtsaB300")) == "OK"                 # 300: not above
    v = a.verdict(buy(0.006, client_order_id="qtsaBIG1"))                          # 360 > 300
    assert v.code == Reason.ORDER_APPROVAL_NEEDED and "qtsaBIG1" in v.message
    a.auth.approve_order("qtsaBIG1", 400.0)
    assert a.code(buy(0.006, client_order_id="qtsaBIG1")) == "OK"
    assert a.code(buy(0.006, client_order_id="qtsaBIG1")) == "OK"                 # a dry run uses nothing
    a.placed(buy(0.006, client_order_id="qtsaBIG1"))
    assert "qtsaBIG1" not in a.auth.order_approvals                                 # used up
    assert a.code(buy(0.006, client_order_id="qtsaBIG1")) == Reason.ORDER_APPROVAL_NEEDED
    assert a.submit(buy(0.006, client_order_id="qtsaBIG1")).reason_code == Reason.DUPLICATE
    assert [c for c in a.at_exchange() if c == "qtsaBIG1"] == ["qtsaBIG1"]         # one order


def test_an_approval_is_bound_to_its_order_and_its_notional(live):
    a = live(make_policy(order_approval_usd=300.0))
    a.auth.approve_order("qtsaA", 400.0)
    assert a.code(buy(0.006, client_order_id="qtsaB")) == Reason.ORDER_APPROVAL_NEEDED   # another order
    a.auth.approve_order("qtsaC", 350.0)
    assert a.code(buy(0.006, client_order_id="qtsaC")) == Reason.ORDER_APPROVAL_NEEDED   # 360 > 350
    assert a.code(buy(0.0058, client_order_id="qtsaC")) == "OK"                          # 348 <= 350


def test_an_approval_expires_after_15_minutes(live):
    a = live(make_policy(order_approval_usd=300.0))
    t0 = time.time()
    a.auth.clock = lambda: t0
    a.auth.approve_order("qtsaT", 400.0)
    a.auth.clock = lambda: t0 + 15 * 60 - 1
    assert a.code(buy(0.006, client_order_id="qtsaT")) == "OK"
    a.auth.clock = lambda: t0 + 15 * 60 + 1
    assert a.code(buy(0.006, client_order_id="qtsaT")) == Reason.ORDER_APPROVAL_NEEDED
    assert a.submit(buy(0.006, client_order_id="qtsaT")).reason_code == Reason.ORDER_APPROVAL_NEEDED
    assert a.at_exchange() == {}


def test_an_approval_is_not_used_up_by_an_order_a_later_check_refuses(live):
    a = live(make_policy(order_approval_usd=300.0))
    a.auth.approve_order("qtsaLATE", 400.0)

    def refuses(gate, intent):
        raise Refuse("LATER_CHECK", "refused after the live checks")
    a.gate.checks.append(refuses)
    assert a.submit(buy(0.006, client_order_id="qtsaLATE")).reason_code == "LATER_CHECK"
    assert "qtsaLATE" in a.auth.order_approvals and a.at_exchange() == {}
    a.gate.checks.remove(refuses)
    assert a.submit(buy(0.006, client_order_id="qtsaLATE")).accepted
    assert "qtsaLATE" not in a.auth.order_approvals and "qtsaLATE" in a.at_exchange()


# ================================================================================== orders per minute

def test_orders_per_minute(live):
    a = live(make_policy(max_orders_per_minute=2, symbols=[BTC]))
    for _ in range(5):
        assert a.code(buy(0.001)) == "OK"                          # dry runs are not orders
    for i in range(3):                                             # refused orders are not orders either
        assert a.submit(buy(0.1, symbol=ETH, client_order_id=f"qtsaX{i}")).reason_code == Reason.LIVE_SCOPE
    a.placed(buy(0.001, client_order_id="qtsaR1"))
    a.placed(buy(0.001, client_order_id="qtsaR2"))
    v = a.verdict(buy(0.001))
    assert (v.code, v.check) == (Reason.ORDER_RATE, "check_live_approval") and "2 orders" in v.message
    assert a.code(sell(0.001)) == Reason.ORDER_RATE                # a reducing sell is an order too
    assert a.submit(buy(0.001, client_order_id="qtsaR3")).reason_code == Reason.ORDER_RATE
    assert sorted(a.at_exchange()) == ["qtsaR1", "qtsaR2"]


def test_the_kill_switchs_flatten_is_not_throttled_by_the_order_rate(live):
    """The kill switch works when everything else is broken: with the minute's one order used, an
    ordinary sell is refused ORDER_RATE but the gate's own flatten still sells (and is not counted)."""
    a = live(make_policy(max_orders_per_minute=1))
    a.placed(buy(0.005, client_order_id="qtsaF1"))
    a.auth.tighten("engage", {"reason": "test"})
    assert a.code(sell(0.005)) == Reason.KILL_SWITCH
    a.auth.set_policy(dataclasses.replace(a.auth.policy, kill_switch=False), "test")
    assert a.code(sell(0.005)) == Reason.ORDER_RATE
    a.auth.tighten("engage", {"reason": "test"})
    res = a.gate.submit_flatten(BTC, 0.002)
    assert res.accepted and res.status == "filled", res
    res = a.gate.submit_flatten(BTC, 0.003)                       # not counted: the next one passes too
    assert res.accepted and res.status == "filled", res
    assert a.held("BTC") == 0.0 and len(a.at_exchange()) == 3


# ================================================================================== the price collar

def test_limit_prices_are_collared_against_the_agents_mid(live):
    """Collar 200 bps around the mid 60 000: buys up to 61 200, sells down to 58 800."""
    a = live(make_policy())
    a.placed(buy(0.005, client_order_id="qtsaPOS"))
    assert a.code(buy(0.001, type="limit", price=61_100.0)) == "OK"
    v = a.verdict(buy(0.001, type="limit", price=61_300.0))
    assert (v.code, v.check) == (Reason.PRICE_COLLAR, "check_collar") and "above" in v.message
    assert a.code(sell(0.001, type="limit", price=58_900.0)) == "OK"
    v = a.verdict(sell(0.001, type="limit", price=58_700.0))
    assert (v.code, v.check) == (Reason.PRICE_COLLAR, "check_collar") and "below" in v.message
    # a reduce-only sell far below the market (it needs no grant) is collared all the same
    dump = sell(0.005, type="limit", price=30_000.0, reduce_only=True, client_order_id="qtsaDUMP")
    assert a.code(dump) == Reason.PRICE_COLLAR
    a.auth.tighten("revoke", {})
    assert a.code(dump) == Reason.PRICE_COLLAR
    assert a.submit(dump).reason_code == Reason.PRICE_COLLAR
    assert set(a.at_exchange()) == {"qtsaPOS"} and a.held("BTC") == 0.005


def test_the_collar_follows_the_exchange_not_the_caller(live, srv):
    a = live(make_policy())
    srv.set_price(BTC, "50000")                               # the market moved: 51 000 is the new ceiling
    assert a.code(buy(0.001, type="limit", price=51_500.0)) == Reason.PRICE_COLLAR
    assert a.code(buy(0.001, type="limit", price=50_900.0)) == "OK"


@pytest.fixture
def wide():
    """BTC as usual, and WID at 100 with a 0.5 tick: bid 99.5, ask 100.5, spread 1 / 100 = 100 bps."""
    s = make_server(symbols=[SymbolSpec("BTC", "USDT", price="60000"),
                             SymbolSpec("WID", "USDT", price="100", tick_size="0.5", min_price="0.5",
                                        step_size="0.01", min_qty="0.01")],
                    balances={"USDT": "10000"})
    yield s
    s.close()
    assert s.errors == []


def test_market_orders_need_a_spread_within_twice_the_collar(store, wide):
    ex = ccxt_client(wide)
    a = Live(store, wide, ex, make_policy(collar_bps=60.0, symbols=[BTC, WID]), symbols=[BTC, WID])
    # the collar is the subject here, not the risk profile's liquidity limit (max_spread_bps 50 by default)
    prof = a.auth.risk_profile()
    a.auth.set_risk_profile(prof.model_copy(update={"max_spread_bps": 200.0}))
    b = a.auth.view.book(WID)
    assert (b["bid"], b["ask"], b["mid"]) == (99.5, 100.5, 100.0)
    a.placed(buy(1.0, symbol=WID, client_order_id="qtsaW1"))      # 100 bps <= 2 x 60 = 120
    a.auth.tighten("lower", {"collar_bps": 40})                   # 100 bps > 2 x 40 = 80
    v = a.verdict(buy(1.0, symbol=WID))
    assert (v.code, v.check) == (Reason.PRICE_COLLAR, "check_collar") and "spread" in v.message
    assert a.code(sell(1.0, symbol=WID)) == Reason.PRICE_COLLAR    # reducing, and still collared
    assert a.code(buy(0.001)) == "OK"                              # BTC: 0.02 / 60 000 = 0.03 bps
    a.auth.tighten("engage", {"reason": "test"})
    res = a.gate.submit_flatten(WID, 1.0)                          # the kill switch's own sell too
    assert res.reason_code == Reason.PRICE_COLLAR
    assert set(a.at_exchange()) == {"qtsaW1"} and a.held("WID") == 1.0


def test_a_market_order_carrying_a_price_is_a_bad_order(live, srv):
    a = live(make_policy())
    for intent in (sell(0.001, price=12_000_000.0, client_order_id="qtsaMP1"),
                   buy(0.001, price=60_000.0, client_order_id="qtsaMP2")):
        v = a.verdict(intent)
        assert (v.code, v.check) == (Reason.BAD_ORDER, "check_order_sane") and "takes no price" in v.message
        assert a.submit(intent).reason_code == Reason.BAD_ORDER
    assert a.at_exchange() == {} and srv.count("POST", "/api/v3/order") == 0


# ================================================================================== kill switch, states, breaker

def test_the_kill_switch_passes_only_the_gates_own_flatten(live):
    a = live(make_policy())
    a.placed(buy(0.005, client_order_id="qtsaK0"))
    a.auth.tighten("engage", {"reason": "test"})
    v = a.verdict(buy(0.001))
    assert (v.code, v.check) == (Reason.KILL_SWITCH, "check_kill_switch")
    # what the kill switch would send, but submitted as an ordinary intent: no field claims the exemption
    forged = OrderIntent(BTC, "sell", 0.005, strategy="kill_switch", reason="kill switch: flatten",
                         reduce_only=True, source="kill_switch", client_order_id="qtsk0000forged")
    assert a.submit(forged).reason_code == Reason.KILL_SWITCH
    assert a.submit(sell(0.005, client_order_id="qtsaK1")).reason_code == Reason.KILL_SWITCH
    assert a.gate.submit_flatten(BTC, 0.006).reason_code == Reason.KILL_SWITCH     # more than held
    assert set(a.at_exchange()) == {"qtsaK0"}
    res = a.gate.submit_flatten(BTC, 0.005)
    assert res.accepted and res.status == "filled" and res.filled == 0.005
    o = a.at_exchange()[res.client_order_id]
    assert (o["side"], o["type"]) == ("SELL", "MARKET") and res.client_order_id.startswith("qtsk")
    assert a.held("BTC") == 0.0


def test_halted_refuses_everything_but_the_flatten(live):
    a = live(make_policy())
    a.placed(buy(0.005, client_order_id="qtsaH0"))
    a.auth.tighten("halt", {"reason": "test"})
    for intent in (buy(0.001), sell(0.001), sell(0.005, reduce_only=True)):
        v = a.verdict(intent)
        assert (v.code, v.check) == (Reason.TRADING_HALTED, "check_trading_state"), intent
    res = a.gate.submit_flatten(BTC, 0.005)
    assert res.accepted and res.status == "filled"
    assert a.held("BTC") == 0.0 and len(a.at_exchange()) == 2


def test_reducing_passes_only_sells_within_the_exchanges_balance(live, srv, store):
    a = live(make_policy())
    a.placed(buy(0.007, client_order_id="qtsaRD0"))
    a.auth.tighten("reduce", {"reason": "test"})
    assert a.code(buy(0.001)) == Reason.TRADING_REDUCING
    a.placed(sell(0.002, client_order_id="qtsaRD1"))
    # the books say 0.005 BTC; the exchange says 0.001 (moved away outside the system): the exchange decides
    srv.set_balance("BTC", "0.001")
    assert store.scalar("SELECT amount FROM positions WHERE mode='live' AND symbol=?", (BTC,)) == pytest.approx(0.005)
    v = a.verdict(sell(0.003))
    assert (v.code, v.check) == (Reason.TRADING_REDUCING, "check_trading_state")
    assert a.code(sell(0.001)) == "OK"
    assert set(a.at_exchange()) == {"qtsaRD0", "qtsaRD1"}


def test_an_open_breaker_refuses_buys_and_passes_reducing_sells(live):
    a = live(make_policy())
    a.placed(buy(0.005, client_order_id="qtsaBR0"))
    a.auth.tighten("trip", {"reason": "exchange errors"})
    v = a.verdict(buy(0.001))
    assert (v.code, v.check) == (Reason.BREAKER_OPEN, "check_trading_state") and "exchange errors" in v.message
    assert a.code(sell(0.006)) == Reason.BREAKER_OPEN              # more than held
    a.placed(sell(0.002, client_order_id="qtsaBR1"))
    assert a.held("BTC") == pytest.approx(0.003)


@pytest.mark.parametrize("kind", ["file", "directory", "dangling_symlink"])
def test_a_kill_flag_appearing_engages_the_agents_kill_switch(live, store, kind):
    a = live(make_policy())
    flag = store.home.kill_flag
    assert a.auth.kill_flag == flag and not a.auth.policy.kill_switch
    assert a.code(buy(0.001)) == "OK"
    flag.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file":
        flag.write_text("engaged by kill_switch.sh\n")
    elif kind == "directory":
        flag.mkdir()
    else:
        os.symlink(store.home.root / "nowhere", flag)
    v = a.verdict(buy(0.001))
    assert (v.code, v.check) == (Reason.KILL_SWITCH, "check_kill_switch")
    assert a.auth.policy.kill_switch and "flag" in a.auth.policy.kill_reason
    # removing the flag does not release it: the agent's memory holds it until the PIN resets it
    if kind == "directory":
        flag.rmdir()
    else:
        flag.unlink()
    assert a.code(buy(0.001)) == Reason.KILL_SWITCH and a.auth.policy.kill_switch


# ================================================================================== tightening

@pytest.mark.parametrize("op, params, intent, code", [
    ("engage", {"reason": "t"}, buy(0.005), Reason.KILL_SWITCH),
    ("halt", {"reason": "t"}, buy(0.005), Reason.TRADING_HALTED),
    ("reduce", {"reason": "t"}, buy(0.005), Reason.TRADING_REDUCING),
    ("trip", {"reason": "t"}, buy(0.005), Reason.BREAKER_OPEN),
    ("revoke", {"reason": "t"}, buy(0.005), Reason.LIVE_NOT_APPROVED),
    ("lower", {"max_order_usd": 100}, buy(0.005), Reason.LIVE_SCOPE),             # 300 > 100
    ("lower", {"max_daily_usd": 200}, buy(0.005), Reason.LIVE_SCOPE),             # 300 > 200 today
    ("lower", {"symbols": [ETH]}, buy(0.005), Reason.LIVE_SCOPE),
    ("lower", {"hours": 0}, buy(0.005), Reason.LIVE_NOT_APPROVED),                # expires now
    ("lower", {"collar_bps": 10}, buy(0.005, type="limit", price=60_100.0), Reason.PRICE_COLLAR),  # > 60 060
    ("lower", {"order_approval_usd": 100}, buy(0.005), Reason.ORDER_APPROVAL_NEEDED),
    ("lower", {"max_orders_per_minute": 1}, None, Reason.ORDER_RATE),
])
def test_each_tightening_takes_effect_at_once(live, op, params, intent, code):
    a = live(make_policy())
    changes = []
    a.auth.on_change = lambda p, what, data: changes.append((p, what, data))
    if intent is None:                                   # the rate: one order sent in the last minute first
        a.placed(buy(0.001, client_order_id="qtsaT0"))
        intent = buy(0.001)
    assert a.code(intent) == "OK"
    before = a.auth.policy
    new, what = a.auth.tighten(op, params)
    assert new is a.auth.policy and new.version == before.version + 1
    assert changes == [(new, what, {"op": op, "params": params})]      # what the agent journals
    assert a.code(intent) == code


@pytest.mark.parametrize("params", [{"max_order_usd": 451}, {"max_daily_usd": 1001}, {"symbols": [BTC, "SOL/USDT"]},
                                    {"hours": 9}, {"collar_bps": 201}, {"max_daily_loss_usd": 101},
                                    {"order_approval_usd": 501}, {"max_orders_per_minute": 51},
                                    {"collar_bps": 100, "max_order_usd": 451}])
def test_lower_refuses_to_raise_anything(live, params):
    """Grant 450 / 1000 on BTC, ETH for 8 h; collar 200, loss cap 100, approvals above 500, 50 a minute."""
    a = live(make_policy(max_order=450.0, max_daily=1000.0, collar_bps=200.0, max_daily_loss_usd=100.0,
                         order_approval_usd=500.0, max_orders_per_minute=50))
    changes = []
    a.auth.on_change = lambda p, what, data: changes.append(what)
    before = a.auth.policy
    with pytest.raises(PolicyError):
        a.auth.tighten("lower", params)
    assert a.auth.policy is before and changes == []


@pytest.mark.parametrize("op", ["resume", "reset_kill_switch", "grant", "limits"])
def test_a_loosening_cannot_be_asked_as_a_tightening(live, op):
    a = live(dataclasses.replace(make_policy(), kill_switch=True, trading_state="HALTED"))
    before = a.auth.policy
    with pytest.raises(PolicyError):
        a.auth.tighten(op, {"max_order_usd": 1e6, "max_daily_usd": 1e7, "symbols": SY})
    assert a.auth.policy is before and a.code(buy(0.001)) == Reason.KILL_SWITCH
