"""Moving averages that do not drift: the same window gives the same bits whatever series it sits in, and
an exact tie of two averages is a tie (issue #13: backtest, paper and live decide alike, ties included).

The reference is exact rational arithmetic (fractions.Fraction), never the code's own output.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from qts.market.candles import Candles, load_csv
from qts.strategies import STRATEGIES, make
from qts.strategies import rolling
from qts.strategies.indicators import sma


def exact_mean(window) -> float:
    return float(sum(map(Fraction, window)) / len(window))  # Fraction -> float rounds correctly


def cumsum_sma(x, n):  # what the indicators did before: a running sum carried from the series' start
    out = np.full(len(x), np.nan)
    c = np.cumsum(np.r_[0.0, x])
    out[n - 1:] = (c[n:] - c[:-n]) / n
    return out


@pytest.fixture(scope="module")
def walk():
    rng = np.random.default_rng(7)
    return np.round(60_000 + np.cumsum(rng.normal(0, 40, 30_000)), 2)


def wide(walk):
    """Prices over eight orders of magnitude: too wide for the integer kernel, so the exact-partials one runs."""
    return walk * np.logspace(-5, 3, len(walk))


@pytest.mark.parametrize("n", [1, 2, 7, 20, 100, 256, 257, 365, 1_100])
@pytest.mark.parametrize("series", ["walk", "wide"])
def test_every_path_equals_the_exact_mean_correctly_rounded(walk, n, series):
    if series == "wide":
        walk = wide(walk)
    assert (rolling._as_units(walk) is None) == (series == "wide")
    # long series: the split-integer kernel (the walk) or the exact-partials kernel (eight orders wide)
    long = rolling.rolling_mean(walk, n)
    short = rolling.rolling_mean(walk[:rolling.COMPILED_ABOVE], n)  # integer prefix sums (short series)
    assert len(walk) > rolling.COMPILED_ABOVE
    assert np.isnan(long[:n - 1]).all() and np.isnan(short[:n - 1]).all()
    assert np.array_equal(short, long[:len(short)], equal_nan=True)
    for i in list(range(n - 1, n + 50)) + list(range(len(walk) - 300, len(walk), 3)):
        assert long[i] == exact_mean(walk[i - n + 1:i + 1].tolist()), i


def test_a_window_gives_the_same_bits_in_any_series(ohlcv_dir):
    """The backtest sees a year of candles, the live loop its last few hundred: same window, same value. The
    running sum it replaces differed in nearly every window (the control proves the check can fail)."""
    for name in ("BTC_USDT-5m", "ETH_USDT-5m", "SOL_USDT-1h"):
        close = load_csv(ohlcv_dir / f"{name}.csv").close
        for n in (20, 100):
            full, tail = sma(close, n), sma(close[-400:], n)
            assert np.array_equal(full[-(401 - n):], tail[n - 1:]), name
            control = cumsum_sma(close, n)[-(401 - n):] != cumsum_sma(close[-400:], n)[n - 1:]
            assert control.sum() > 100, name


@pytest.mark.parametrize("price", [58_236.61, 0.3337, 1.1, 101.05, 7.0e-5, 63_999.99])
def test_equal_means_are_equal_so_a_tie_is_not_a_cross(price):
    """A flat stretch: SMA20 and SMA100 are both exactly the price, so neither is above the other."""
    for length in (400, 3 * rolling.COMPILED_ABOVE):  # every path
        x = np.full(length, price)
        for n in (20, 100, 300):
            assert (sma(x, n)[n - 1:] == price).all(), (length, n)
    strat = make("sma_cross", {"fast": 20, "slow": 100})
    rises = np.r_[np.linspace(price * 0.9, price, 200), np.full(300, price)]  # up into a long flat top
    c = Candles(np.arange(len(rises), dtype=np.int64) * 3_600_000, rises, rises, rises, rises, np.ones(len(rises)),
                3_600_000)
    entry, exit_, ind = strat.signals(c)
    flat = np.flatnonzero(ind["sma_slow"] == ind["sma_fast"])
    assert len(flat) > 100 and not exit_[flat].any()  # a tie is not "below"


def test_a_window_with_a_bad_value_is_nan_and_the_rest_are_not(walk):
    for x in (walk.copy(), walk[:1500].copy()):  # both paths
        x[700] = np.nan
        out = rolling.rolling_mean(x, 30)
        assert np.isnan(out[700:730]).all()
        assert out[699] == exact_mean(x[670:700].tolist()) and out[730] == exact_mean(x[701:731].tolist())


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_the_loop_decides_as_the_backtest_on_every_bar_of_real_candles(ohlcv_dir, strategy):
    """The loop hands a strategy its last `lookback` candles; the backtest, the whole year. Every bar of BTC
    1h 2024: the same entry and exit."""
    c = load_csv(ohlcv_dir / "BTC_USDT-1h.csv")
    strat = make(strategy)
    entry, exit_, _ = strat.signals(c)
    lb = strat.lookback
    differ = []
    for i in range(lb - 1, len(c)):
        we, wx, _ = strat.signals(c.slice(i - lb + 1, i + 1))
        if we[-1] != entry[i] or wx[-1] != exit_[i]:
            differ.append(i)
    assert differ == []


def _hard_series():
    """Series whose window means land on or next to rounding midpoints, around powers of two, at zero and
    below it: where a first guess of the quotient is wrong and the split-integer kernel must decide."""
    rng = np.random.default_rng(11)
    n = 3 * rolling.COMPILED_ABOVE
    yield "near 2^53 (spacing 2: means of two are often exact ties)", 2.0 ** 53 + rng.integers(-6, 7, n).astype(float)
    yield "around 1024 (means just below and above a power of two)", 1024.0 + rng.integers(-5, 6, n) * 2.0 ** -42
    yield "two decimals (prices): ties by the percent", np.round(100 + np.cumsum(rng.normal(0, 0.05, n)), 2)
    yield "both signs, means at and near zero", rng.choice([-1.0, 1.0], n) * (100.0 + rng.integers(0, 50, n))
    yield "constant", np.full(n, 0.1)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 20, 365])
def test_split_integer_kernel_against_fractions_on_hard_series(n):
    for name, x in _hard_series():
        units = rolling._as_units(x)
        assert units is not None, name  # the split-integer kernel runs
        long = rolling.rolling_mean(x, n)
        want = [exact_mean(x[i - n + 1:i + 1].tolist()) for i in range(n - 1, len(x))]
        got = long[n - 1:]
        bad = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
        assert not bad, (name, n, bad[:5])


def test_many_windows_at_once_equal_one_at_a_time(walk):
    windows = [2, 5, 50, 257, 1_000, 40_000]  # the last is longer than the series: all NaN
    out = np.full((8, len(walk)), 7.0)
    rows = [6, 0, 3, 1, 7, 2]
    rolling.rolling_means(walk, windows, out, rows)
    for w, r in zip(windows, rows):
        assert np.array_equal(out[r], rolling.rolling_mean(walk, w), equal_nan=True), w
    assert (out[4] == 7.0).all() and (out[5] == 7.0).all()  # rows not asked for are left alone
    with pytest.raises(ValueError):
        rolling.rolling_means(walk, [0], out, [0])
