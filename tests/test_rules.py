"""Exchange trading rules from ccxt market definitions: steps, truncation, rounding, minimums."""

from __future__ import annotations

import json

import pytest

from qts.market.rules import DECIMAL_PLACES, TICK_SIZE, MarketRules, replay_market


@pytest.fixture(scope="module")
def binance_market():
    from conftest import CCXT_STATIC

    p = CCXT_STATIC / "binance" / "markets.excerpt.json"
    if not p.exists():
        pytest.skip(f"ccxt static excerpt not found at {p} (set QTS_SHARED_DATA)")
    return json.loads(p.read_text())["BTC/USDT"]


@pytest.fixture(scope="module")
def kraken_market():
    from conftest import CCXT_STATIC

    p = CCXT_STATIC / "kraken" / "markets.excerpt.json"
    if not p.exists():
        pytest.skip(f"ccxt static excerpt not found at {p} (set QTS_SHARED_DATA)")
    return json.loads(p.read_text())["BTC/USDT"]


def test_binance_excerpt_in_decimal_places_mode(binance_market):
    # the excerpt gives precision as digit counts: amount 5 -> step 0.00001, price 2 -> tick 0.01
    assert binance_market["precision"]["amount"] == 5
    r = MarketRules.from_ccxt(binance_market, DECIMAL_PLACES)
    assert r.symbol == "BTC/USDT" and r.base == "BTC" and r.quote == "USDT"
    assert r.amount_step == pytest.approx(0.00001, rel=1e-12)
    assert r.price_step == pytest.approx(0.01, rel=1e-12)
    assert r.min_amount == 0.00001
    assert r.min_cost == 5
    assert r.max_amount == 9000
    # and the steps agree with the exchange's own filters in the raw payload
    filters = {f["filterType"]: f for f in binance_market["info"]["filters"]}
    assert r.amount_step == pytest.approx(float(filters["LOT_SIZE"]["stepSize"]))
    assert r.price_step == pytest.approx(float(filters["PRICE_FILTER"]["tickSize"]))
    assert r.min_cost == float(filters["NOTIONAL"]["minNotional"])


def test_tick_size_market(kraken_market):
    r = MarketRules.from_ccxt(kraken_market, TICK_SIZE)
    assert r.amount_step == 1e-8
    assert r.price_step == 0.1
    assert r.min_amount == 0.0001
    assert r.min_cost == 0.0  # the excerpt gives no cost limit
    assert r.max_amount is None
    assert r.price_to_precision(60123.46) == 60123.5
    assert r.price_to_precision(60123.44) == 60123.4
    assert r.amount_to_precision(0.123456789) == 0.12345678


def test_replay_market_is_tick_size_and_binance_like():
    r = MarketRules.from_ccxt(replay_market("ETH/USDT"))
    assert (r.amount_step, r.price_step, r.min_amount, r.min_cost) == (1e-4, 0.01, 1e-4, 5.0)


@pytest.fixture
def btc():
    return MarketRules("BTC/USDT", "BTC", "USDT", amount_step=0.00001, price_step=0.01, min_amount=0.00001,
                       min_cost=5.0, max_amount=9000.0)


@pytest.mark.parametrize("amount,expected", [
    (0.123456789, 0.12345),
    (0.123459999, 0.12345),  # never rounds up, however close to the next step
    (0.99999999, 0.99999),
    (0.00001, 0.00001),
    (0.000019, 0.00001),
    (0.0000099, 0.0),
    (1.5, 1.5),
    (12, 12.0),
])
def test_amounts_are_truncated(btc, amount, expected):
    assert btc.amount_to_precision(amount) == expected
    assert btc.amount_to_precision(amount) <= amount


@pytest.mark.parametrize("price,expected", [
    (60000.123, 60000.12),
    (60000.127, 60000.13),
    (60000.125, 60000.13),  # halfway: up, as ccxt's price_to_precision rounds
    (100.005, 100.01),
    (0.004, 0.0),
    (42.0, 42.0),
])
def test_prices_are_rounded_to_the_tick(btc, price, expected):
    assert btc.price_to_precision(price) == expected


def test_rounding_agrees_with_ccxt(btc):
    """ccxt's own decimal_to_precision is the reference a live order goes through."""
    dtp = pytest.importorskip("ccxt.base.decimal_to_precision")
    values = [0.123456789, 1.000005, 2.5, 0.2, 12345.678915, 0.00001, 7.77777777, 100.005, 60000.125,
              3.14159265, 0.01999999]
    for v in values:
        want_amt = float(dtp.decimal_to_precision(repr(v), dtp.TRUNCATE, 5, dtp.DECIMAL_PLACES, dtp.NO_PADDING))
        want_px = float(dtp.decimal_to_precision(repr(v), dtp.ROUND, "0.01", dtp.TICK_SIZE, dtp.NO_PADDING))
        assert btc.amount_to_precision(v) == want_amt, v
        assert btc.price_to_precision(v) == want_px, v


def test_float_noise_does_not_cost_a_step(btc):
    """Positions are float sums of fills: 0.7 + 0.1 is 0.7999999999999999 in binary floating point.
    Truncating that to 0.79999 would leave 0.00001 BTC of unsellable dust after 'sell everything'."""
    assert 0.7 + 0.1 < 0.8 and 0.3 - 0.1 < 0.2
    assert btc.amount_to_precision(0.7 + 0.1) == 0.8
    assert btc.amount_to_precision(0.3 - 0.1) == 0.2
    assert btc.violation(0.8, 60000.0) is None
    # a genuine shortfall, however small compared to the step, is still truncated
    assert btc.amount_to_precision(0.199999) == 0.19999
    assert btc.amount_to_precision(0.2 - 1e-10) == 0.19999


def test_violations(btc):
    assert btc.violation(0.001, 60000.0) is None
    assert "minimum 5" in btc.violation(0.00005, 60000.0)  # 3.00 USDT notional
    assert "notional" in btc.violation(0.00005, 60000.0)
    assert btc.violation(0.0001, 60000.0) is None  # 6.00 USDT
    assert "step" in btc.violation(0.000015, 1e9)  # not a multiple of the step
    assert "maximum" in btc.violation(9001.0, 1.0)
    assert "positive" in btc.violation(0.0, 60000.0)
    assert "positive" in btc.violation(float("nan"), 60000.0)
    assert "positive" in btc.violation(-1.0, 60000.0)

    coarse = MarketRules("SOL/USDT", "SOL", "USDT", amount_step=0.001, price_step=0.01, min_amount=0.01,
                         min_cost=5.0)
    assert "below the minimum 0.01" in coarse.violation(0.005, 5000.0)  # on the step, under the min amount


def test_extreme_step_ratios_do_not_overflow_the_decimal_context():
    tiny = MarketRules("PEPE/USDT", "PEPE", "USDT", amount_step=1e-18, price_step=1e-18, min_amount=1e-18,
                       min_cost=0.0)
    assert tiny.amount_to_precision(1e9) == 1e9
    assert tiny.price_to_precision(123456789.5) == 123456789.5
