"""Parameter sweeps: every combination of a grid backtested, in chunks, memory bounded.

``sweep("sma_cross", candles, {"fast": range(2, 102), "slow": range(110, 291, 20)})`` validates each
combination with the strategy's own Params model (invalid ones, e.g. fast >= slow, are dropped and
counted), orders them so each chunk touches few indicator series, and runs the chunks inline or
on processes / Dask (:mod:`.parallel`). A chunk keeps only its statistics (``STAT_NAMES`` per
combination, optionally per-block return sums for the PBO): no per-bar arrays per combination
survive a chunk, so memory is bounded by the indicator cache plus one chunk's signals.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..market.candles import Candles
from ..strategies import strategy_class
from . import kernels as K
from . import parallel
from . import specs
from .backtest import BacktestConfig, _window


def expand_grid(strategy: str, grid) -> tuple[list[dict], int]:
    """(valid parameter dicts in grid order, number refused by the strategy's validation). ``grid``:
    {param: values} (cartesian product) or a list of dicts."""
    Params = strategy_class(strategy).Params  # a built-in or a user file (StrategyError naming it otherwise)
    if isinstance(grid, dict):
        keys = list(grid)
        combos = (dict(zip(keys, vals)) for vals in itertools.product(*(list(grid[k]) for k in keys)))
    else:
        combos = iter(grid)
    out, bad = [], 0
    for c in combos:
        try:
            out.append(Params(**c).model_dump())
        except Exception:
            bad += 1
    return out, bad


def block_edges(start: int, stop: int, n_blocks) -> np.ndarray:
    """``n_blocks`` contiguous, near-equal blocks of bars covering [start, stop); or, given an array
    of increasing bar indices inside [start, stop], those edges."""
    if not np.isscalar(n_blocks):
        e = np.asarray(n_blocks, dtype=np.int64)
        if len(e) < 2 or np.any(np.diff(e) <= 0) or e[0] < start or e[-1] > stop:
            raise ValueError(f"blocks: edges must increase strictly inside [{start}, {stop}]")
        return e
    if n_blocks <= 0:
        return np.empty(0, np.int64)
    if stop - start < n_blocks:
        raise ValueError(f"blocks: {n_blocks} blocks need at least as many bars, got {stop - start}")
    return np.linspace(start, stop, n_blocks + 1).round().astype(np.int64)


@dataclass
class SweepResult:
    strategy: str
    params: list[dict]
    stats: np.ndarray            # (m, NSTAT), columns STAT_NAMES
    blocks: np.ndarray           # (m, B, 3): per block (sum r, sum r^2, count); B = 0 without blocks
    block_edges: np.ndarray
    start: int
    stop: int
    n_invalid: int
    config: BacktestConfig
    timeframe_ms: int
    executor: str = "inline"
    chunks: int = 1

    @property
    def n_trials(self) -> int:
        """Every combination that was backtested (the N of the deflated Sharpe ratio)."""
        return len(self.params)

    def column(self, name: str) -> np.ndarray:
        return self.stats[:, K.STAT_NAMES.index(name)]

    def frame(self):
        import pandas as pd

        df = pd.DataFrame(self.params)
        for i, k in enumerate(K.STAT_NAMES):
            df[k] = self.stats[:, i]
        return df

    def best(self, metric: str = "sharpe", min_trades: int = 0) -> int:
        """Index of the best combination by ``metric`` among those with >= ``min_trades`` closed
        trades (NaN counts as worst); -1 when none qualifies."""
        v = self.column(metric).copy()
        v[~np.isfinite(v) & ~(v == np.inf)] = -np.inf
        v[self.column("n_trades") < min_trades] = -np.inf
        if not len(v) or np.all(v == -np.inf):
            return -1
        return int(np.argmax(v))

    def per_bar_sharpe(self) -> np.ndarray:
        """Each combination's Sharpe ratio per bar (not annualized): what the DSR works with."""
        return self.column("sharpe") / math.sqrt(self.config.ppy(self.timeframe_ms))


# -- chunk execution (module level: picklable for processes and Dask) --------------------------------
# One indicator cache per process, kept for the next sweep on the same candles (walk-forward folds
# and repeated sweeps reuse every series); a sweep on other candles replaces it.
_PROCESS_CACHES: dict = {}


def _cache_for(candles: Candles, budget: int) -> specs.IndicatorCache:
    key = (len(candles), int(candles.ts[0]), int(candles.ts[-1]), candles.timeframe_ms, float(candles.close.sum()))
    c = _PROCESS_CACHES.get(key)
    if c is None or c.budget != budget:
        _PROCESS_CACHES.clear()  # one data set at a time per process
        c = _PROCESS_CACHES[key] = specs.IndicatorCache(budget)
    return c


def _run_chunk(task):
    name, candles, kargs, start, stop, edges, params, cache_bytes = task
    ctx = specs.Ctx(candles, kargs, start, stop, edges, _cache_for(candles, cache_bytes))
    return specs.run_chunk(name, ctx, params)


def default_chunk_size(strategy: str, n_bars: int, mem_bytes: int = 64 << 20) -> int:
    if specs.is_fused(strategy):
        return 4096
    return max(8, mem_bytes // max(1, 2 * n_bars))  # two boolean (chunk, bars) matrices


def plan_chunks(strategy: str, params: list[dict], order: list[int], size: int, max_series: int) -> list[list[int]]:
    """Consecutive runs of ``order`` with at most ``size`` combinations and at most ``max_series``
    distinct indicator series each (what a chunk stacks into its kernel's input)."""
    chunks, cur, keys = [], [], set()
    for i in order:
        k = set(specs.indicator_keys(strategy, params[i]))
        if cur and (len(cur) >= size or len(keys | k) > max_series):
            chunks.append(cur)
            cur, keys = [], set()
        cur.append(i)
        keys |= k
    if cur:
        chunks.append(cur)
    return chunks


def estimate_seconds(strategy: str, m: int, n_bars: int, window: int) -> float:
    if specs.is_fused(strategy):
        return m * window * 4e-9 / max(1, parallel.cpu_count())  # measured ~3-4e-9 s per bar and combination
    return m * (n_bars * 1e-8 + 1e-3)


def sweep(strategy: str, candles: Candles, grid, config: BacktestConfig | None = None, start: int = 0,
          stop: int | None = None, blocks: int | np.ndarray = 0, chunk_size: int | None = None, executor: str = "auto",
          workers: int | None = None, progress: bool | None = None, client=None,
          cache_bytes: int = 512 << 20) -> SweepResult:
    """Backtest every valid combination of ``grid`` on bars [start, stop) (see :func:`backtest`).
    ``blocks > 0`` also keeps per-block return sums for :func:`qts.research.overfit.pbo_cscv`.

    Memory: the indicator cache (``cache_bytes`` per process) + per chunk at most ``chunk_size``
    combinations, 128 MB of stacked indicator rows, and for non-fused strategies two boolean
    (chunk, bars) signal matrices (64 MB by default) + the statistics of every combination."""
    config = config or BacktestConfig()
    start, stop = _window(candles, start, stop)
    params, bad = expand_grid(strategy, grid)
    edges = block_edges(start, stop, blocks)
    m = len(params)
    keys = specs.SORT_KEYS.get(strategy, ())
    order = sorted(range(m), key=lambda i: tuple(params[i][k] for k in keys)) if keys else list(range(m))
    size = chunk_size or default_chunk_size(strategy, len(candles))
    max_series = max(2, (128 << 20) // (8 * len(candles)))  # a chunk's stacked indicator rows: <= 128 MB
    if specs.is_fused(strategy):  # its SMAs stay in the cache's one matrix (no stacking): as many as fit
        max_series = max(max_series, cache_bytes // (8 * len(candles)))
    chunks = plan_chunks(strategy, params, order, size, max_series)
    kargs = config.kernel_args(candles.timeframe_ms)
    ex = parallel.choose(executor, len(chunks), estimate_seconds(strategy, m, len(candles), stop - start), workers,
                         client)
    ex = ex if len(chunks) > 1 else "inline"
    tasks = [(strategy, candles, kargs, start, stop, edges, [params[i] for i in ch], cache_bytes) for ch in chunks]
    results = parallel.run_tasks(_run_chunk, tasks, ex, workers, progress, desc=f"sweep {strategy}", client=client)
    stats = np.zeros((m, K.NSTAT))
    blk = np.zeros((m, max(len(edges) - 1, 0), 3))
    for ch, (s, b) in zip(chunks, results):
        stats[ch] = s
        blk[ch] = b
    return SweepResult(strategy, params, stats, blk, edges, start, stop, bad, config, candles.timeframe_ms,
                       ex, len(chunks))
