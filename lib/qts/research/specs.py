"""How a sweep computes each strategy's signals for a chunk of parameter combinations.

Each distinct indicator (an SMA of one window, an RSI of one period, ...) is computed once per
process and kept in :class:`IndicatorCache` (bounded in bytes; with a grid too large for the budget
the least recently used indicators are dropped and recomputed when needed again, and the sweep
orders combinations so that rarely happens). Indicators come from ``qts.strategies.indicators`` with
the very expressions of ``qts.strategies.library``, so a sweep's signals are bit-identical to
``Strategy.signals`` (a test checks it for every built-in strategy).

- ``sma_cross`` is fused: the kernel takes the SMA rows and computes the crossings itself.
- the other built-ins build boolean entry/exit matrices for the chunk from cached indicators.
- any other registered strategy falls back to ``make(name, params).signals(candles)`` per combination.
"""

from __future__ import annotations

import mmap
from collections import OrderedDict

import numpy as np

from ..market.candles import Candles
from ..strategies import indicators as ind
from ..strategies import make
from ..strategies.base import split_confidence
from . import kernels as K


def _fresh_matrix(rows: int, cols: int, touched: int) -> np.ndarray:
    """An uninitialised (rows, cols) float64 matrix whose first ``touched`` rows are faulted in up front:
    one madvise(MADV_POPULATE_WRITE) instead of a page fault per 4 KB page as the kernels first write
    them, which costs several times more on a virtual machine (460 MB of SMA rows: 0.2 to 0.5 s instead of
    0.7 to 1.6 s on this project's machine). The rest is reserved, not resident, until used.
    Anywhere that call is missing (Linux < 5.14, other systems) it is simply a plain np.empty."""
    nbytes = rows * cols * 8
    if nbytes < (64 << 20) or not hasattr(mmap.mmap, "madvise"):
        return np.empty((rows, cols))
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buf.madvise(getattr(mmap, "MADV_POPULATE_WRITE", 23), 0, min(nbytes, touched * cols * 8))
    except (OSError, ValueError, AttributeError):
        return np.empty((rows, cols))
    return np.frombuffer(buf, dtype=np.float64).reshape(rows, cols)


class IndicatorCache:
    def __init__(self, budget_bytes: int = 512 << 20):
        self.budget = budget_bytes
        self._d: OrderedDict = OrderedDict()
        self.bytes = 0
        self.computed = 0  # how many indicator series were computed (a test checks "once each")

    def sma_rows(self, close: np.ndarray, windows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(matrix, row of each window): the SMA of every window in ``windows`` resident in ONE matrix of
        ``budget`` bytes (rows reused least recently used first), so a chunk hands the kernel row indices
        instead of stacking its SMAs: a 10,000-combination sweep on 287k bars stacked ~130 MB per chunk
        (178 chunks), and faulting in that fresh memory cost more than the kernel. The matrix is allocated
        untouched (np.empty): only rows written count in the resident memory. An SMA-cross sweep uses
        these rows only, never ``get``."""
        n = len(close)
        need = len(set(windows))
        slab = getattr(self, "_slab", None)
        if slab is None or slab.shape[1] != n or slab.shape[0] < need:
            cap = max(need, 2, self.budget // max(1, 8 * n))
            slab = self._slab = _fresh_matrix(cap, n, need)
            self._rows: OrderedDict = OrderedDict()
        rows = self._rows
        for w in windows:
            if w in rows:
                rows.move_to_end(w)
        out = np.empty(len(windows), np.int64)
        todo = []
        for j, w in enumerate(windows):
            r = rows.get(w)
            if r is None:
                if len(rows) < slab.shape[0]:
                    r = len(rows)
                else:  # the least recently used row: never one of ``windows`` (moved to the end above)
                    _, r = rows.popitem(last=False)
                rows[w] = r
                todo.append((w, r))
            out[j] = r
        self.computed += len(todo)
        if todo:  # the series converted once for all windows; the windows on threads (the kernels drop the GIL)
            ind.smas_into(close, [w for w, _ in todo], slab, [r for _, r in todo])
        return slab, out

    def get(self, key, fn):
        if key in self._d:
            self._d.move_to_end(key)
            return self._d[key]
        v = fn()
        self.computed += 1
        size = sum(a.nbytes for a in v) if isinstance(v, tuple) else v.nbytes
        while self._d and self.bytes + size > self.budget:
            _, old = self._d.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in old) if isinstance(old, tuple) else old.nbytes
        self._d[key] = v
        self.bytes += size
        return v


class Ctx:
    """What a chunk needs: the candles, the kernel arguments, the window and the cache."""

    def __init__(self, candles: Candles, kargs: tuple, start: int, stop: int, block_edges: np.ndarray,
                 cache: IndicatorCache):
        self.candles = candles
        self.open = np.ascontiguousarray(candles.open, dtype=np.float64)
        self.close = np.ascontiguousarray(candles.close, dtype=np.float64)
        self.kargs, self.start, self.stop = kargs, start, stop
        self.block_edges = block_edges
        self.cache = cache

    def sma(self, n: int) -> np.ndarray:
        return self.cache.get(("sma", n), lambda: ind.sma(self.close, n))

    def std(self, n: int) -> np.ndarray:
        return self.cache.get(("std", n), lambda: ind.rolling_std(self.close, n))

    def rsi(self, n: int) -> np.ndarray:
        return self.cache.get(("rsi", n), lambda: ind.rsi(self.close, n))

    def zscore(self, n: int) -> np.ndarray:
        def f():
            with np.errstate(invalid="ignore", divide="ignore"):
                return (self.close - self.sma(n)) / self.std(n)
        return self.cache.get(("z", n), f)

    def outputs(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        nb = max(len(self.block_edges) - 1, 0)
        return np.zeros((m, K.NSTAT)), np.zeros((m, nb, 3))


def run_sma_cross(ctx: Ctx, params: list[dict]):
    windows = sorted({p["fast"] for p in params} | {p["slow"] for p in params})
    smas, row = ctx.cache.sma_rows(ctx.close, windows)
    pos = dict(zip(windows, row.tolist()))
    fi = np.array([pos[p["fast"]] for p in params], np.int64)
    si = np.array([pos[p["slow"]] for p in params], np.int64)
    stats, blocks = ctx.outputs(len(params))
    K.sma_cross_sweep(ctx.open, ctx.close, smas, smas, fi, si, ctx.start, ctx.stop, *ctx.kargs,
                      ctx.block_edges, stats, blocks, K.threads())
    return stats, blocks


def _signals_chunk(ctx: Ctx, params: list[dict], fn):
    n = len(ctx.close)
    entries = np.zeros((len(params), n), np.bool_)
    exits = np.zeros((len(params), n), np.bool_)
    sizes = np.empty((len(params), 0))
    for k, p in enumerate(params):
        e, x = fn(ctx, p)
        e, size = split_confidence(e)  # a confidence-emitting strategy: per-bar entry sizes
        if size is not None:
            if sizes.shape[1] == 0:
                sizes = np.ones((len(params), n))
            sizes[k] = size
        entries[k], exits[k] = e, x
    stats, blocks = ctx.outputs(len(params))
    K.signals_sweep(ctx.open, ctx.close, entries, exits, sizes, ctx.start, ctx.stop, *ctx.kargs, ctx.block_edges,
                    stats, blocks, K.threads())
    return stats, blocks


def _rsi(ctx, p):
    r = ctx.rsi(p["period"])
    return r < p["lower"], r > p["upper"]


def _bollinger(ctx, p):
    mid, sd = ctx.sma(p["window"]), ctx.std(p["window"])
    lower = mid - p["k"] * sd
    return ctx.close < lower, ctx.close > mid


def _zscore(ctx, p):
    z = ctx.zscore(p["window"])
    return z < -p["entry_z"], z > -p["exit_z"]


def _generic(name):
    def fn(ctx, p):
        e, x, _ = make(name, p).signals(ctx.candles)
        return e, x
    return fn


SIGNAL_FNS = {"rsi_reversion": _rsi, "bollinger_reversion": _bollinger, "zscore_reversion": _zscore}
# parameters to order combinations by so that each chunk touches few indicator series
SORT_KEYS = {"sma_cross": ("slow", "fast"), "rsi_reversion": ("period",), "bollinger_reversion": ("window",),
             "zscore_reversion": ("window",)}


def indicator_keys(name: str, p: dict) -> tuple:
    """The indicator series a combination needs (a chunk holds a bounded number of them at once)."""
    if name == "sma_cross":
        return (("sma", p["fast"]), ("sma", p["slow"]))
    if name == "rsi_reversion":
        return (("rsi", p["period"]),)
    if name in ("bollinger_reversion", "zscore_reversion"):
        return (("sma", p["window"]), ("std", p["window"]))
    return ()


def is_fused(name: str) -> bool:
    return name == "sma_cross"


def run_chunk(name: str, ctx: Ctx, params: list[dict]):
    """(stats (m, NSTAT), blocks (m, B, 3)) for the combinations ``params`` (already validated)."""
    if name == "sma_cross":
        return run_sma_cross(ctx, params)
    return _signals_chunk(ctx, params, SIGNAL_FNS.get(name) or _generic(name))


def chunk_signals(name: str, ctx: Ctx, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """The entry/exit arrays a sweep uses for one combination (for tests; sma_cross via its rows)."""
    if name == "sma_cross":
        n = len(ctx.close)
        e, x = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        K.sma_cross_signals(ctx.sma(p["fast"]), ctx.sma(p["slow"]), 0, n, e, x)
        return e, x
    return (SIGNAL_FNS.get(name) or _generic(name))(ctx, p)
