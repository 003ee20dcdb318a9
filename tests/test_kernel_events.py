"""The event-driven simulation core against the bar-by-bar one it replaced, bit for bit.

``kernels.simulate`` skips the bars between two events: a held stretch runs a tight loop that reads no
signal, a flat stretch is accounted for at once. The claim is that this changes no result at all, not
"within 1e-12": every statistic, equity mark, trade field and block sum must be the same float as the
bar-by-bar kernel gives (tests/support/kernel_oracle.py, the previous core verbatim). The inputs are made
to hit the edges: signals on the first and last bars, on consecutive bars, entries and exits together,
confidences of 0, NaN and fractions, block edges inside held and flat stretches, windows that start and
stop mid-series, a NaN close (the flat shortcut must be off) and a NaN open.
"""

from __future__ import annotations

import numpy as np
import pytest

from qts.research import kernels as K
from support.kernel_oracle import simulate_bar_by_bar


def _market(rng, n):
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.002, n))
    return open_, close


def _signals(rng, n, density):
    entry = rng.random(n) < density
    exit_ = rng.random(n) < density
    entry[0] = entry[-1] = exit_[-1] = True  # the first bar and the last (whose signal must be ignored)
    return entry, exit_


def _edges(rng, start, stop, kind):
    if kind == "none":
        return np.empty(0, np.int64)
    if kind == "whole":
        return np.linspace(start, stop, 6).round().astype(np.int64)
    cuts = np.sort(rng.choice(np.arange(start + 1, stop), size=min(7, stop - start - 1), replace=False))
    return np.r_[cuts[0], cuts[1:]].astype(np.int64)  # strictly inside: bars before and after no block


def _both(open_, close, entry, exit_, size, start, stop, args, edges):
    n = len(close)
    nb = max(len(edges) - 1, 0)
    out = []
    for which in ("oracle", "events", "events-walk", "events-stats-only"):
        st, eq = np.zeros(K.NSTAT), np.zeros(stop - start)
        tr, bl = np.zeros((K.max_trade_rows(start, stop), K.NTF)), np.zeros((nb, 3))
        if which == "oracle":
            rows = simulate_bar_by_bar(open_, close, entry, exit_, size, start, stop, *args, st, eq, tr, edges, bl)
        else:
            ent, ext = np.empty(n, np.int64), np.empty(n, np.int64)
            ne, nx = K.bool_events(entry, start, stop, ent), K.bool_events(exit_, start, stop, ext)
            finite = which != "events-walk" and K.all_finite(close, start, stop)
            if which == "events-stats-only":  # what a sweep runs: nothing recorded, no blocks (its own held loop)
                rows = K.simulate(open_, close, ent, ne, ext, nx, size, start, stop, *args, st, np.empty(0),
                                  np.empty((0, K.NTF)), np.empty(0, np.int64), np.empty((0, 3)), finite)
                st2 = np.zeros(K.NSTAT)
                simulate_bar_by_bar(open_, close, entry, exit_, size, start, stop, *args, st2, np.empty(0),
                                    np.empty((0, K.NTF)), np.empty(0, np.int64), np.empty((0, 3)))
                assert rows == 0 and _same(st, st2), (st, st2)
                continue
            rows = K.simulate(open_, close, ent, ne, ext, nx, size, start, stop, *args, st, eq, tr, edges, bl, finite)
        out.append((st, eq, tr[:rows], bl))
    return out


def _same(a, b):
    """Equal as floats bit for bit (NaN where NaN)."""
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


CASES = [
    # (density, sized, size_usd, step, slip, window, blocks)
    (0.02, False, 0.0, 0.0, 0.0, "all", "none"),
    (0.02, False, 0.0, 0.0, 0.0005, "all", "whole"),
    (0.3, False, 0.0, 0.0, 0.0, "mid", "inside"),
    (0.6, True, 0.0, 0.0, 0.0, "all", "inside"),
    (0.05, True, 0.0, 0.001, 0.0002, "mid", "whole"),
    (0.05, False, 2_500.0, 0.0, 0.0, "all", "inside"),
    (0.01, True, 2_500.0, 0.00001, 0.0003, "mid", "inside"),
    (0.002, False, 0.0, 0.0, 0.0, "all", "inside"),
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("density,sized,size_usd,step,slip,window,blocks", CASES)
def test_event_core_equals_bar_by_bar_bit_for_bit(seed, density, sized, size_usd, step, slip, window, blocks):
    rng = np.random.default_rng(seed * 100 + int(density * 1000))
    n = 3_000
    open_, close = _market(rng, n)
    entry, exit_ = _signals(rng, n, density)
    if sized:
        size = rng.choice([0.0, 0.25, 0.5, 1.0, np.nan], size=n, p=[0.2, 0.2, 0.2, 0.3, 0.1])
    else:
        size = np.empty(0)
    start, stop = (0, n) if window == "all" else (int(rng.integers(1, 400)), int(rng.integers(n - 400, n)))
    edges = _edges(rng, start, stop, blocks)
    args = (10_000.0, 0.001, slip, size_usd, step, 105_120.0)
    oracle, events, walk = _both(open_, close, entry, exit_, size, start, stop, args, edges)
    assert oracle[2].shape[0] >= 2, "the case should trade"
    for got in (events, walk):
        for name, a, b in zip(("stats", "equity", "trades", "blocks"), oracle, got):
            assert _same(a, b), f"{name} differ: {a if a.size < 20 else a[:5]} vs {b if b.size < 20 else b[:5]}"


def test_a_nan_close_walks_the_flat_stretch_bar_by_bar():
    rng = np.random.default_rng(7)
    n = 2_000
    open_, close = _market(rng, n)
    close[700] = np.nan  # flat there: the mark is NaN, as the bar-by-bar kernel has it
    open_[1_500] = np.nan
    entry, exit_ = _signals(rng, n, 0.01)
    entry[600:800] = False
    exit_[650] = True
    assert not K.all_finite(close, 0, n)
    oracle, events, _ = _both(open_, close, entry, exit_, np.empty(0), 0, n, (10_000.0, 0.001, 0.0, 0.0, 0.0, 1.0),
                              np.linspace(0, n, 5).round().astype(np.int64))
    for a, b in zip(oracle, events):
        assert _same(a, b)
    assert np.isnan(oracle[1][700])


def test_sma_events_are_the_boolean_signals(btc_5m):
    close = np.ascontiguousarray(btc_5m.close, dtype=np.float64)
    from qts.strategies import indicators as ind

    n = len(close)
    for fast, slow, lo, hi in ((5, 50, 0, n), (20, 100, 1, n), (2, 300, 5_000, 40_000), (50, 1_000, 999, 1_003)):
        f, s = ind.sma(close, fast), ind.sma(close, slow)
        e, x = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        K.sma_cross_signals(f, s, lo, hi, e, x)
        room = (hi - lo) // 2 + 2
        ent, ext = np.empty(room, np.int64), np.empty(room, np.int64)
        ne, nx = K.sma_cross_events(f, s, lo, hi, ent, ext)
        assert np.array_equal(ent[:ne], np.flatnonzero(e)) and np.array_equal(ext[:nx], np.flatnonzero(x))


def test_sma_sweep_equals_bar_by_bar_on_real_candles(btc_5m):
    from qts.strategies import indicators as ind

    close = np.ascontiguousarray(btc_5m.close, dtype=np.float64)
    open_ = np.ascontiguousarray(btc_5m.open, dtype=np.float64)
    n = len(close)
    fast, slow = [2, 9, 33], [110, 400]
    F, S = np.array([ind.sma(close, w) for w in fast]), np.array([ind.sma(close, w) for w in slow])
    fi = np.repeat(np.arange(3), 2).astype(np.int64)
    si = np.tile(np.arange(2), 3).astype(np.int64)
    edges = np.linspace(100, n - 100, 9).round().astype(np.int64)
    args = (10_000.0, 0.001, 0.0005, 0.0, 0.0, 105_120.0)
    stats, blocks = np.zeros((6, K.NSTAT)), np.zeros((6, 8, 3))
    K.sma_cross_sweep(open_, close, F, S, fi, si, 50, n, *args, edges, stats, blocks, 2)
    plain = np.zeros((6, K.NSTAT))  # no blocks: the sweep's plainest held loop
    K.sma_cross_sweep(open_, close, F, S, fi, si, 50, n, *args, np.empty(0, np.int64), plain, np.zeros((6, 0, 3)), 2)
    assert _same(plain, stats)
    for k in range(6):
        e, x = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        K.sma_cross_signals(F[fi[k]], S[si[k]], 50, n, e, x)
        st, bl = np.zeros(K.NSTAT), np.zeros((8, 3))
        simulate_bar_by_bar(open_, close, e, x, np.empty(0), 50, n, *args, st, np.empty(0), np.empty((0, K.NTF)),
                            edges, bl)
        assert st[K.S_NTRADES] > 10
        assert _same(st, stats[k]) and _same(bl, blocks[k])


def test_drawdown_duration_counts_from_the_last_flat_bar_at_the_peak():
    # flat at the starting cash (a peak) for 300 bars, then a position that only loses: the drawdown's
    # duration runs from bar 299, the last flat bar at the peak, to the end
    n = 1_000
    close = np.r_[np.full(300, 100.0), np.linspace(100.0, 60.0, n - 300)]
    open_ = close.copy()
    entry, exit_ = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
    entry[299] = True
    oracle, events, walk = _both(open_, close, entry, exit_, np.empty(0), 0, n, (10_000.0, 0.001, 0.0, 0.0, 0.0, 1.0),
                                 np.empty(0, np.int64))
    assert oracle[0][K.S_MDD_BARS] == n - 1 - 299
    for got in (events, walk):
        for a, b in zip(oracle, got):
            assert _same(a, b)


def test_a_dip_and_recovery_inside_one_held_stretch_is_the_max_drawdown():
    # held from bar 1 to 350 with no signal in between: up to 120, down to 84, up to 130 (a new peak, which
    # ends the dip's drawdown inside the same stretch), then out; 1 - 84/120 = 30 % is the deepest
    n = 600
    close = np.r_[np.linspace(100.0, 120.0, 101), np.linspace(120.0, 84.0, 101)[1:], np.linspace(84.0, 130.0, 101)[1:],
                  np.linspace(130.0, 125.0, n - 301)]
    entry, exit_ = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
    entry[0], exit_[350] = True, True
    oracle, events, walk = _both(close, close, entry, exit_, np.empty(0), 0, n, (10_000.0, 0.0, 0.0, 0.0, 0.0, 1.0),
                                 np.empty(0, np.int64))
    assert abs(oracle[0][K.S_MDD] - 0.3) < 1e-12
    for got in (events, walk):
        for a, b in zip(oracle, got):
            assert _same(a, b)
