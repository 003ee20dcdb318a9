"""Paper broker against hand-made candles: every expected number below is computed by hand from the
fill model documented in qts/broker/paper.py (market: the open of the candle starting at the
decision time, moved by the slippage; limits: only when a candle trades through; fee = notional x
fee_bps / 1e4 once per fill; per-candle volume x participation caps; amounts truncated to the step)."""

from __future__ import annotations

import json

import pytest

from conftest import T0, TF_5M as TF, make_candles
from qts.broker.models import OrderIntent
from qts.broker.paper import PaperBroker
from qts.market.feed import ReplayFeed
from qts.store import Store

FEE = 10 / 1e4  # fee_bps=10
SLIP = 5 / 1e4  # slippage_bps=5
CASH = 10_000.0


class Sim:
    """A store, a replay feed over hand-made candles (clock at candle 2) and a paper broker."""

    def __init__(self, home, data: dict, cash=CASH, participation=1.0, warmup=2):
        self.feed = ReplayFeed({s: make_candles(rows) for s, rows in data.items()}, source="test", warmup=warmup)
        self.data = data
        self.store = Store.open(home)
        self.broker = PaperBroker(self.store, self.feed, fee_bps=10, slippage_bps=5, participation=participation)
        self.broker.ensure_account(cash)
        self.n = 0

    def place(self, symbol, side, amount, type="market", price=None):
        self.n += 1
        return self.broker.place(OrderIntent(symbol, side, amount, type=type, price=price), f"t{self.n}")

    def step(self) -> int:
        """Advance the clock one candle and match resting orders; returns fills made."""
        assert self.feed.wait_next_cycle(TF) is not None
        return self.broker.process_market()

    def index(self) -> int:
        return (self.feed.now_ms() - T0) // TF

    def open_now(self, symbol) -> float:
        return self.data[symbol][self.index()][0]

    def fills(self, coid=None):
        if coid:
            return self.store.query("SELECT * FROM fills WHERE client_order_id=? ORDER BY id", (coid,))
        return self.store.query("SELECT * FROM fills ORDER BY id")

    def order(self, coid):
        return self.store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))


def flat(o=1000.0, n=8, vol=10.0):
    return [(o, o + 10, o - 10, o, vol)] * n


@pytest.fixture
def sim(home):
    rows = [(1000, 1010, 990, 1000, 10), (1000, 1010, 990, 1000, 10),
            (1000, 1020, 980, 1010, 10),  # candle 2 starts at the first decision time
            (1100, 1110, 1090, 1100, 10),
            (1200, 1210, 1190, 1200, 10)] + flat(1200, 3)
    s = Sim(home, {"BTC/USDT": rows})
    yield s
    s.store.close()


def test_market_buy_fills_at_next_open_plus_slippage_and_pays_the_fee_once(sim):
    assert sim.feed.now_ms() == T0 + 2 * TF
    r = sim.place("BTC/USDT", "buy", 0.5)
    assert r.accepted and r.status == "filled"
    price = 1000.0 * (1 + SLIP)  # open of candle 2 = 1000
    fee = 0.5 * price * FEE
    assert r.filled == 0.5
    assert r.avg_price == pytest.approx(1000.5, abs=1e-9) == pytest.approx(price)
    assert r.fee == pytest.approx(0.50025, abs=1e-12)
    fills = sim.fills()
    assert len(fills) == 1
    f = fills[0]
    assert (f["amount"], f["side"], f["ts"]) == (0.5, "buy", T0 + 2 * TF)
    assert f["price"] == pytest.approx(1000.5) and f["fee"] == pytest.approx(fee)
    assert sim.broker.cash() == pytest.approx(CASH - 0.5 * 1000.5 - 0.50025, abs=1e-9)
    assert sim.broker.position_amount("BTC/USDT") == 0.5
    # the fee is charged once: later cycles do not charge it again
    sim.step()
    sim.step()
    assert sim.broker.cash() == pytest.approx(CASH - 0.5 * 1000.5 - 0.50025, abs=1e-9)
    assert sim.store.scalar("SELECT SUM(fee) FROM fills") == pytest.approx(0.50025)
    # the journal line matches the database row
    (line,) = sim.store.home.trades_log.read_text().splitlines()
    rec = json.loads(line)
    assert rec["fill_id"] == f["fill_id"] and rec["amount"] == 0.5
    assert rec["price"] == pytest.approx(1000.5) and rec["fee"] == pytest.approx(0.50025)


def test_round_trip_pnl_is_price_move_times_size_minus_both_fees(sim):
    sim.place("BTC/USDT", "buy", 0.5)  # at 1000 * 1.0005 = 1000.5
    sim.step()  # candle 3 opens at 1100
    r = sim.place("BTC/USDT", "sell", 0.5)  # at 1100 * 0.9995 = 1099.45
    assert r.status == "filled" and r.avg_price == pytest.approx(1099.45)
    entry_fee = 0.5 * 1000.5 * FEE  # 0.50025
    exit_fee = 0.5 * 1099.45 * FEE  # 0.549725
    pnl = (1099.45 - 1000.5) * 0.5 - entry_fee - exit_fee  # 48.425025
    (t,) = sim.store.query("SELECT * FROM closed_trades")
    assert t["symbol"] == "BTC/USDT" and t["amount"] == 0.5
    assert t["entry_price"] == pytest.approx(1000.5) and t["exit_price"] == pytest.approx(1099.45)
    assert t["fees"] == pytest.approx(entry_fee + exit_fee)
    assert t["pnl"] == pytest.approx(48.425025, abs=1e-9) == pytest.approx(pnl)
    assert t["gross_pnl"] == pytest.approx(49.475)
    assert t["entry_ts"] == T0 + 2 * TF and t["exit_ts"] == T0 + 3 * TF
    assert sim.broker.cash() == pytest.approx(CASH + pnl, abs=1e-9)
    assert sim.broker.position_amount("BTC/USDT") == 0
    assert sim.broker.positions() == {}
    eq = sim.broker.equity()
    assert eq["equity"] == pytest.approx(CASH + pnl) and eq["realized_pnl"] == pytest.approx(pnl)


def test_equity_is_cash_plus_marked_positions_at_every_step(home):
    btc = [(1000 + 10 * i, 1000 + 10 * i + 5, 1000 + 10 * i - 5, 1000 + 10 * i, 50) for i in range(12)]
    eth = [(200 - 3 * i, 200 - 3 * i + 2, 200 - 3 * i - 2, 200 - 3 * i, 500) for i in range(12)]
    sim = Sim(home, {"BTC/USDT": btc, "ETH/USDT": eth})
    # (symbol, side, amount) per step, None = do nothing
    script = [("BTC/USDT", "buy", 0.3), ("ETH/USDT", "buy", 2.0), None, ("BTC/USDT", "buy", 0.2),
              ("ETH/USDT", "sell", 0.5), ("BTC/USDT", "sell", 0.5), None, ("ETH/USDT", "sell", 1.5)]
    cash = CASH
    held = {"BTC/USDT": 0.0, "ETH/USDT": 0.0}
    for i, act in enumerate(script):
        if i:
            sim.step()
        if act:
            sym, side, amt = act
            r = sim.place(sym, side, amt)
            assert r.status == "filled", r
            o = sim.open_now(sym)
            px = o * (1 + SLIP) if side == "buy" else o * (1 - SLIP)
            fee = amt * px * FEE
            cash += -(amt * px) - fee if side == "buy" else amt * px - fee
            held[sym] += amt if side == "buy" else -amt
        marks = {s: sim.open_now(s) for s in held}
        eq = sim.broker.equity()
        assert eq["cash"] == pytest.approx(cash, abs=1e-9)
        assert eq["equity"] == pytest.approx(cash + sum(held[s] * marks[s] for s in held), abs=1e-9)
        assert eq["equity"] == pytest.approx(eq["cash"] + eq["positions_value"], abs=1e-9)
    assert held == {"BTC/USDT": 0.0, "ETH/USDT": 0.0}
    assert sim.store.scalar("SELECT COUNT(*) FROM closed_trades") == 2
    # every closed trade: gross = sum over its fills, pnl = gross - fees
    for t in sim.store.query("SELECT * FROM closed_trades"):
        assert t["pnl"] == pytest.approx(t["gross_pnl"] - t["fees"])
    total_pnl = sim.store.scalar("SELECT SUM(pnl) FROM closed_trades")
    assert sim.broker.cash() == pytest.approx(CASH + total_pnl, abs=1e-9)
    sim.store.close()


def _limit_sim(home, participation=1.0, vol=10.0):
    rows = [(1000, 1010, 990, 1000, vol), (1000, 1010, 990, 1000, vol),
            (1000, 1005, 950, 990, vol),   # 2: low only TOUCHES 950
            (990, 995, 940, 960, vol),     # 3: trades through 950, opens above it
            (930, 940, 920, 935, vol),     # 4: opens below 960
            (935, 980, 925, 970, vol),     # 5
            (970, 990, 940, 980, vol),     # 6
            (980, 1100, 975, 1090, vol),   # 7: high trades through 1050
            (1090, 1095, 1080, 1090, vol)]
    return Sim(home, {"BTC/USDT": rows}, participation=participation)


def test_limit_buy_needs_the_price_to_trade_through(home):
    sim = _limit_sim(home)
    r = sim.place("BTC/USDT", "buy", 0.5, "limit", 950.0)
    assert r.accepted and r.status == "open" and r.filled == 0
    assert sim.broker.cash() == CASH  # nothing paid while resting
    assert sim.step() == 0  # candle 2: low == 950, a touch is not a fill
    assert sim.order("t1")["status"] == "open"
    assert sim.step() == 1  # candle 3: low 940 < 950, opened at 990 -> fills at the limit
    (f,) = sim.fills("t1")
    assert f["price"] == 950.0 and f["amount"] == 0.5
    assert f["fee"] == pytest.approx(0.5 * 950 * FEE)
    assert f["ts"] < T0 + 4 * TF and f["ts"] >= T0 + 3 * TF  # during candle 3
    assert sim.order("t1")["status"] == "filled"
    assert sim.broker.cash() == pytest.approx(CASH - 475 - 0.475)
    sim.store.close()


def test_limit_buy_fills_at_the_open_when_it_opens_below(home):
    sim = _limit_sim(home)
    sim.step()
    sim.step()  # now at candle 4
    r = sim.place("BTC/USDT", "buy", 0.5, "limit", 960.0)
    assert r.status == "open"
    assert sim.step() == 1  # candle 4 opens at 930, below 960: the better price
    (f,) = sim.fills("t1")
    assert f["price"] == 930.0
    assert f["fee"] == pytest.approx(0.5 * 930 * FEE)
    sim.store.close()


def test_limit_sell_needs_the_high_above_the_limit(home):
    sim = _limit_sim(home)
    sim.place("BTC/USDT", "buy", 0.5)  # market, at 1000.5
    r = sim.place("BTC/USDT", "sell", 0.5, "limit", 1050.0)
    assert r.status == "open"
    fills_before = len(sim.fills())
    for _ in range(5):  # candles 2..6: highs 1005..990, never above 1050
        assert sim.step() == 0
    assert len(sim.fills()) == fills_before
    assert sim.step() == 1  # candle 7: high 1100 > 1050, opened at 980 -> at the limit
    f = sim.fills("t2")[0]
    assert f["price"] == 1050.0 and f["amount"] == 0.5
    (t,) = sim.store.query("SELECT * FROM closed_trades")
    assert t["pnl"] == pytest.approx((1050 - 1000.5) * 0.5 - 0.5 * 1000.5 * FEE - 0.5 * 1050 * FEE)
    sim.store.close()


def test_limit_order_rounded_to_the_tick(home):
    sim = _limit_sim(home)
    sim.place("BTC/USDT", "buy", 0.5, "limit", 950.004)
    assert sim.order("t1")["price"] == 950.0
    sim.store.close()


def test_partial_fills_capped_by_volume_times_participation(home):
    # every candle can give 0.4 x 0.5 = 0.2 BTC
    sim = _limit_sim(home, participation=0.5, vol=0.4)
    sim.step()
    r = sim.place("BTC/USDT", "buy", 0.5, "limit", 1000.0)  # at candle 3: trades through 1000 from here on
    assert r.status == "open"
    assert sim.step() == 1
    assert sim.order("t1")["status"] == "partially_filled" and sim.order("t1")["filled"] == pytest.approx(0.2)
    assert sim.step() == 1
    assert sim.order("t1")["filled"] == pytest.approx(0.4)
    assert sim.step() == 1
    o = sim.order("t1")
    assert o["status"] == "filled"
    fills = sim.fills("t1")
    assert [f["amount"] for f in fills] == pytest.approx([0.2, 0.2, 0.1], abs=1e-12)
    assert len(fills) == 3
    # candles 3, 4, 5 open at 990, 930, 935: all below the 1000 limit -> at the open
    assert [f["price"] for f in fills] == [990.0, 930.0, 935.0]
    assert [f["fee"] for f in fills] == pytest.approx([0.2 * 990 * FEE, 0.2 * 930 * FEE, 0.1 * 935 * FEE])
    assert o["fee"] == pytest.approx(sum(f["fee"] for f in fills))
    assert o["avg_price"] == pytest.approx((0.2 * 990 + 0.2 * 930 + 0.1 * 935) / 0.5)
    assert sim.broker.position_amount("BTC/USDT") == pytest.approx(0.5, abs=1e-12)
    assert sim.step() == 0  # nothing more once filled
    statuses = [r["status"] for r in sim.store.query(
        "SELECT status FROM order_status_history WHERE client_order_id='t1' ORDER BY id")]
    assert statuses == ["intent", "open", "partially_filled", "partially_filled", "filled"]
    sim.store.close()


def test_partial_fills_then_selling_everything_leaves_no_dust(home):
    """Three partial buys of 0.2 + 0.2 + 0.1 then a sell of the whole position: flat, one closed trade."""
    sim = _limit_sim(home, participation=0.5, vol=0.4)
    sim.step()
    sim.place("BTC/USDT", "buy", 0.5, "limit", 1000.0)
    for _ in range(3):
        sim.step()
    held = sim.broker.position_amount("BTC/USDT")
    r = sim.place("BTC/USDT", "sell", held, "limit", 900.0)  # below every later high: fills at the opens
    assert r.accepted, r
    for _ in range(3):
        sim.step()
    assert sim.order("t2")["status"] == "filled"
    assert sim.broker.position_amount("BTC/USDT") == 0
    assert sim.store.scalar("SELECT COUNT(*) FROM closed_trades") == 1
    sim.store.close()


def test_market_order_larger_than_liquidity_completes_over_later_candles(home):
    rows = [(1000, 1010, 990, 1000, 0.2)] * 2 + [(1000 + 10 * i, 1020 + 10 * i, 990 + 10 * i, 1005 + 10 * i, 0.2)
                                                 for i in range(6)]
    sim = Sim(home, {"BTC/USDT": rows})
    r = sim.place("BTC/USDT", "buy", 0.5)
    # the first fill is capped by the last closed candle's volume (0.2), at the open of candle 2
    assert r.status == "partially_filled" and r.filled == pytest.approx(0.2)
    assert sim.fills("t1")[0]["price"] == pytest.approx(1000 * (1 + SLIP))
    for _ in range(4):
        sim.step()
    o = sim.order("t1")
    assert o["status"] == "filled" and o["filled"] == pytest.approx(0.5, abs=1e-12)
    fills = sim.fills("t1")
    assert all(f["amount"] <= 0.2 + 1e-12 for f in fills)
    opens = {round(r_[0] * (1 + SLIP), 9) for r_ in rows[2:]}
    assert all(round(f["price"], 9) in opens for f in fills)  # each at a later candle's open + slippage
    assert all(f["fee"] == pytest.approx(f["amount"] * f["price"] * FEE) for f in fills)
    sim.store.close()


def test_amounts_truncated_to_the_step(sim):
    r = sim.place("BTC/USDT", "buy", 0.123456789)
    assert r.filled == 0.12345
    assert sim.order("t1")["amount"] == 0.12345
    assert sim.fills()[0]["amount"] == 0.12345
    r = sim.place("BTC/USDT", "sell", 0.0999999)
    assert r.filled == 0.09999
    assert sim.broker.position_amount("BTC/USDT") == pytest.approx(0.12345 - 0.09999, abs=1e-12)


def test_below_minimum_notional_is_refused(sim):
    r = sim.place("BTC/USDT", "buy", 0.004)  # 0.004 x 1000 = 4 USDT < 5
    assert not r.accepted and r.reason_code == "EXCHANGE_RULES" and "notional" in r.message
    r = sim.place("BTC/USDT", "buy", 0.000009)  # truncates to 0
    assert not r.accepted and r.reason_code == "EXCHANGE_RULES"
    assert sim.store.scalar("SELECT COUNT(*) FROM orders") == 0
    assert sim.fills() == [] and sim.broker.cash() == CASH


def test_selling_more_than_held_is_refused(sim):
    r = sim.place("BTC/USDT", "sell", 0.1)
    assert not r.accepted and r.reason_code == "INSUFFICIENT_POSITION"
    sim.place("BTC/USDT", "buy", 0.1)
    r = sim.place("BTC/USDT", "sell", 0.10001)
    assert not r.accepted and r.reason_code == "INSUFFICIENT_POSITION"
    assert sim.broker.position_amount("BTC/USDT") == 0.1
    r = sim.place("BTC/USDT", "sell", 0.1)
    assert r.status == "filled"


def test_buys_never_make_cash_negative(home):
    sim = _limit_sim(home)
    sim.broker.store.execute("UPDATE balances SET free=600")
    # market: 0.6 x 1000.5 x 1.001 > 600
    r = sim.place("BTC/USDT", "buy", 0.6)
    assert not r.accepted and r.reason_code == "INSUFFICIENT_FUNDS"
    assert sim.broker.cash() == 600
    # two resting limits, each affordable alone (475.475), both triggered by the same candle
    assert sim.place("BTC/USDT", "buy", 0.5, "limit", 950.0).status == "open"
    assert sim.place("BTC/USDT", "buy", 0.5, "limit", 950.0).status == "open"
    sim.step()
    sim.step()  # candle 3 trades through 950
    assert sim.order("t2")["status"] == "filled"
    second = sim.order("t3")
    left = 600 - 0.5 * 950 * (1 + FEE)  # 124.525
    assert second["status"] == "partially_filled"
    assert 0 < second["filled"] <= left / (950 * (1 + FEE))
    assert second["filled"] == pytest.approx(left / (950 * (1 + FEE)), abs=1e-5)  # as much as cash allows
    assert sim.broker.cash() >= 0
    assert sim.broker.cash() < 950 * 1e-5 * (1 + FEE)  # less than one more step of BTC
    for _ in range(4):
        sim.step()
        assert sim.broker.cash() >= 0
    sim.store.close()


def test_cancel_stops_a_resting_order(home):
    sim = _limit_sim(home)
    sim.place("BTC/USDT", "buy", 0.5, "limit", 950.0)
    assert sim.broker.cancel("t1")
    assert not sim.broker.cancel("t1")
    sim.step()
    sim.step()
    assert sim.fills() == [] and sim.order("t1")["status"] == "cancelled"
    sim.store.close()


def test_account_opened_once(sim):
    assert sim.broker.ensure_account(123.0) is False
    assert sim.broker.cash() == CASH


def test_selling_a_float_summed_position_closes_it(sim):
    """0.7 + 0.1 BTC is 0.7999999999999999 as a float: selling 'everything' must still go flat."""
    sim.place("BTC/USDT", "buy", 0.7)
    sim.place("BTC/USDT", "buy", 0.1)
    held = sim.broker.position_amount("BTC/USDT")
    r = sim.place("BTC/USDT", "sell", held)
    assert r.status == "filled" and r.filled == pytest.approx(0.8)
    assert sim.broker.position_amount("BTC/USDT") == 0
    assert sim.broker.positions() == {}
    (t,) = sim.store.query("SELECT * FROM closed_trades")
    assert t["amount"] == pytest.approx(0.8)


def test_a_fill_never_overspends_cash_by_float_noise(home):
    sim = _limit_sim(home)
    assert sim.place("BTC/USDT", "buy", 0.5, "limit", 950.0).status == "open"
    # cash shrinks (as by another fill) to a hair under 0.13095 BTC at 950 plus the fee
    sim.store.execute("UPDATE balances SET free=?", ((0.13095 - 1e-15) * 950 * (1 + FEE),))
    sim.step()
    sim.step()  # candle 3 trades through 950
    (f,) = sim.fills("t1")
    assert f["amount"] == 0.13094  # not rounded up to what the cash cannot pay
    assert sim.broker.cash() >= 0
