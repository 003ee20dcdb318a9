"""The SMA-cross sweep's SMA rows (issue 13): every window's SMA lives in one matrix of the cache's
budget, rows reused least recently used first; a chunk passes row indices to the kernel instead of
stacking copies. The rows must equal the exact SMA whatever the eviction order, and a sweep with a cache
too small for the grid must give the same statistics as one with room for everything."""

from __future__ import annotations

import numpy as np

from qts.market.synthetic import generate
from qts.research import specs, sweep
from qts.strategies import indicators as ind


def _close(n=5_000):
    return np.ascontiguousarray(generate("BTC/USDT", n, 300_000, seed=3).close)


def test_rows_hold_the_exact_sma_through_evictions():
    close = _close()
    cache = specs.IndicatorCache(budget_bytes=3 * 8 * len(close))  # room for 3 rows
    slab, rows = cache.sma_rows(close, [5, 9, 20])  # computed on threads (more than one missing)
    assert cache.computed == 3
    for w, r in zip([5, 9, 20], rows):
        assert np.array_equal(slab[r], ind.sma(close, w), equal_nan=True)
    slab, rows = cache.sma_rows(close, [9, 33])  # 33 evicts the least recently used (5), not 9
    assert cache.computed == 4
    assert np.array_equal(slab[rows[0]], ind.sma(close, 9), equal_nan=True)
    assert np.array_equal(slab[rows[1]], ind.sma(close, 33), equal_nan=True)
    slab, rows = cache.sma_rows(close, [20, 9, 33])  # all resident: nothing recomputed
    assert cache.computed == 4 and len(set(rows.tolist())) == 3
    slab, rows = cache.sma_rows(close, [5])  # evicted earlier: computed again, into a reused row
    assert cache.computed == 5 and np.array_equal(slab[rows[0]], ind.sma(close, 5), equal_nan=True)


def test_sweep_with_a_cache_too_small_for_the_grid_gives_the_same_statistics():
    c = generate("BTC/USDT", 4_000, 300_000, seed=5)
    grid = {"fast": [3, 5, 8, 13], "slow": [21, 34, 55, 89, 144]}
    big = sweep("sma_cross", c, grid, executor="inline", progress=False)
    small = sweep("sma_cross", c, grid, executor="inline", progress=False, chunk_size=3,
                  cache_bytes=3 * 8 * len(c))  # 3 rows for 9 windows: chunks evict and recompute
    assert small.chunks > 1
    from qts.research.sweep import _PROCESS_CACHES

    (cache,) = _PROCESS_CACHES.values()
    assert cache.budget == 3 * 8 * len(c) and cache.computed > 9  # rows were evicted and recomputed
    np.testing.assert_array_equal(big.stats, small.stats)
