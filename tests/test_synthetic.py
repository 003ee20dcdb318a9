"""The generated (synthetic) market: seeded, valid candles with up and down moves, labelled synthetic."""

from __future__ import annotations

import numpy as np
import pytest

from qts.market import synthetic
from qts.market.candles import validate
from qts.market.feed import ReplayFeed

TF = 300_000
DAY = 288  # 5-minute candles per day


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("ts", "open", "high", "low", "close", "volume"))


def test_same_seed_same_candles():
    a = synthetic.generate("BTC/USDT", 3 * DAY, TF, seed=7)
    b = synthetic.generate("BTC/USDT", 3 * DAY, TF, seed=7)
    assert _same(a, b)


def test_other_seed_or_symbol_differs():
    a = synthetic.generate("BTC/USDT", 3 * DAY, TF, seed=7)
    b = synthetic.generate("BTC/USDT", 3 * DAY, TF, seed=8)
    c = synthetic.generate("ETH/USDT", 3 * DAY, TF, seed=7)
    assert not np.array_equal(a.close, b.close)
    assert not np.allclose(a.close / a.close[0], c.close / c.close[0])


@pytest.mark.parametrize("symbol", ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "FOO/USDT"])
@pytest.mark.parametrize("seed", [1, 7, 123])
def test_passes_validation(symbol, seed):
    c = synthetic.generate(symbol, 3 * DAY, TF, seed=seed)
    validate(c, f"synthetic {symbol}")  # raises CandleFileError on any bad row
    assert len(c) == 3 * DAY
    assert np.all(np.diff(c.ts) == TF)
    assert np.all(c.volume > 0)
    # prices on the tick (0.01 above 1 USD): at most 2 decimals
    if c.close.min() >= 1:
        assert np.allclose(np.round(c.close * 100), c.close * 100, atol=1e-6)


def test_hourly_generation_is_valid_too():
    c = synthetic.generate("BTC/USDT", 500, 3_600_000, seed=3)
    validate(c)
    assert np.all(np.diff(c.ts) == 3_600_000)


@pytest.mark.parametrize("seed", list(range(1, 11)))
def test_has_up_and_down_moves_over_three_days(seed):
    """Over 3 days there is a 6-hour stretch that rises and one that falls by at least 1 %: a market a
    trend strategy and a mean-reversion strategy can both be tried on."""
    c = synthetic.generate("BTC/USDT", 3 * DAY, TF, seed=seed)
    w = 72  # 6 hours of 5-minute candles
    moves = c.close[w:] / c.close[:-w] - 1
    assert moves.max() > 0.01
    assert moves.min() < -0.01


def test_volatility_is_crypto_like():
    # BTC: about 3 % a day, documented in synthetic.DAILY_VOL; allow a wide band
    c = synthetic.generate("BTC/USDT", 30 * DAY, TF, seed=11)
    daily = np.std(np.diff(np.log(c.close))) * np.sqrt(DAY)
    assert 0.015 < daily < 0.08


def test_feed_is_labelled_synthetic():
    feed = ReplayFeed.synthetic(["BTC/USDT", "ETH/USDT"], 5, days=1, seed=7)
    assert feed.synthetic is True
    assert "synthetic" in feed.source and "seed=7" in feed.source
    for sym, m in feed.markets().items():
        assert m["info"]["synthetic"] is True
    # and a replay of real files is not labelled synthetic
    real = ReplayFeed({"BTC/USDT": synthetic.generate("BTC/USDT", 300, TF, 1)}, source="replay:x")
    assert real.synthetic is False


def test_synthetic_feed_prices_come_from_the_generator():
    feed = ReplayFeed.synthetic(["BTC/USDT"], 5, days=1, seed=7, warmup=200)
    gen = synthetic.generate("BTC/USDT", 200 + DAY + 1, TF, seed=7)
    # the clock starts after the warm-up: the price now is the open of candle 200
    assert feed.now_ms() == int(gen.ts[200])
    assert feed.quote("BTC/USDT").price == gen.open[200]
    closed = feed.candles("BTC/USDT", 1000)
    assert len(closed) == 200 and np.array_equal(closed.close, gen.close[:200])
    # synthetic dates lie outside any real data file (2026 on)
    assert feed.now_ms() >= synthetic.SYNTHETIC_START_MS


@pytest.mark.parametrize("short,long", [(1, 400), (203, 777), (777, 5000)])
def test_longer_series_starts_with_the_shorter_one(short, long):
    """A session regenerated further on (a resumed replay, a manual order in the session's market) must see
    the prices the loop saw: candle i may not depend on how many candles were generated."""
    a = synthetic.generate("BTC/USDT", short, TF, seed=7)
    b = synthetic.generate("BTC/USDT", long, TF, seed=7)
    for k in ("ts", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(a, k), getattr(b, k)[:short]), k
