"""Numba kernels of the vectorized backtest: ONE simulation core, and the drivers that feed it.

The fill model (the paper broker's, on bars):
- a signal on bar ``i``'s close becomes a market order that fills at bar ``i+1``'s OPEN, moved
  against us by ``slip`` (buys pay ``open * (1 + slip)``, sells get ``open * (1 - slip)``);
- ``fee`` (a fraction) of each fill's notional is charged once per side, in the quote currency;
- long-only, one position at a time: an entry signal while flat buys, an exit signal while long
  sells everything; any other signal is ignored (the hysteresis of ``Strategy.targets``);
- confidence: ``size`` (per bar, in [0, 1]; an empty array means 1 everywhere) scales an entry: the
  entry signalled on bar ``i`` buys ``size[i]`` x the amount a full (1) signal would buy, under the same
  rules below (a strategy emitting 0/1 passes an empty ``size`` and trades exactly as before);
- sizing: ``size_usd <= 0`` puts all the cash in (amount = cash / (1 + fee) / fill price, the rule of
  ``vectorbt.Portfolio.from_signals(size=inf)``); ``size_usd > 0`` buys ``size_usd / open`` (the
  unslipped reference price, as the trading loop sizes its intent), never more than the cash
  affords; ``step > 0`` truncates amounts to that step like ``MarketRules.amount_to_precision``;
- signals are acted on for bars ``start <= i < stop - 1`` (a signal on ``stop - 1`` would fill
  outside the window); the position is flat before ``start``; a position still open at the end is
  marked at the last close (and reported as open), not sold.

Equity is marked at every bar's close; bar returns are ``equity_i / equity_{i-1} - 1`` with
``equity_{start-1} = init_cash``. The statistics in ``STAT_NAMES`` are accumulated on the fly, so a
sweep keeps no per-bar arrays: see :mod:`qts.research.metrics` for their definitions (a test checks
that both agree).

``NUMBA_CACHE_DIR`` defaults to ``<repo>/.numba-cache`` when unset (and the repository is writable),
so the compiled kernels survive across processes.
"""

from __future__ import annotations

import os

from .. import numba_cache  # noqa: F401 - sets NUMBA_CACHE_DIR before numba is imported

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

if os.environ.get("NUMBA_CACHE_DIR") and not numba.config.CACHE_DIR:  # numba was imported earlier
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

STAT_NAMES = ("final_equity", "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "max_dd_bars",
              "calmar", "win_rate", "profit_factor", "expectancy", "avg_trade_return", "exposure", "n_trades",
              "open_trade")
NSTAT = len(STAT_NAMES)
(S_FINAL, S_TOTAL_RETURN, S_CAGR, S_SHARPE, S_SORTINO, S_MDD, S_MDD_BARS, S_CALMAR, S_WIN_RATE, S_PF,
 S_EXPECTANCY, S_AVG_RET, S_EXPOSURE, S_NTRADES, S_OPEN) = range(NSTAT)
TRADE_FIELDS = ("entry_bar", "exit_bar", "amount", "entry_price", "exit_price", "entry_fee", "exit_fee",
                "pnl", "ret")
NTF = len(TRADE_FIELDS)
BLOCK_FIELDS = ("sum_r", "sum_r2", "count")  # per block of bars: sufficient statistics of the returns


@njit(cache=True)
def trunc_amount(x, step):
    """Truncate to a multiple of ``step`` (as ``MarketRules.amount_to_precision``: binary noise within
    half a billionth of a step below a boundary snaps up). ``step <= 0``: unchanged."""
    if step <= 0.0:
        return x
    k = np.floor(x / step + 5e-10)
    inv = 1.0 / step
    ri = np.round(inv)
    if ri >= 1.0 and abs(inv - ri) <= 1e-9 * ri:
        return k / ri  # k / 100000 is the double nearest to the decimal result, k * 1e-5 may not be
    return k * step


@njit(cache=True)
def all_finite(x, lo, hi):
    for i in range(lo, hi):
        if not np.isfinite(x[i]):
            return False
    return True


@njit(cache=True)
def _held(close, cash, qty, lo, hi, prev, s1, s2, sd2, peak, trough, peak_i, mdd, mdd_bars):
    """Bars [lo, hi) held with no fill and no signal: the full step's marking, return and drawdown
    arithmetic, nothing else (a function of its own: few live values, so the loop keeps them in
    registers). Returns the updated values. A drawdown's depth is computed once, when it ends (or at
    the end of the stretch), from its deepest point: the full step computes it at each new low and keeps
    the largest, which is the same float (1 - low / peak falls as the low falls)."""
    eq = prev
    for k in range(lo, hi):
        eq = cash + qty * close[k]
        r = eq / prev - 1.0
        prev = eq
        s1 += r
        s2 += r * r
        rn = r if r < 0.0 else 0.0  # branch-free: a rise or a fall is a coin flip, sd2 + 0.0 == sd2
        sd2 += rn * rn
        if eq >= peak:
            if trough < peak:  # the drawdown under the old peak ends: its deepest point decides it
                dd = 1.0 - trough / peak
                if dd > mdd:
                    mdd = dd
            peak = eq
            trough = eq
            peak_i = k
        else:
            trough = eq if eq < trough else trough
            d = k - peak_i
            mdd_bars = d if d > mdd_bars else mdd_bars
    if trough < peak:  # the drawdown still open: as deep as it is now (the full step computes it bar by bar)
        dd = 1.0 - trough / peak
        if dd > mdd:
            mdd = dd
    return eq, prev, s1, s2, sd2, peak, trough, peak_i, mdd, mdd_bars


@njit(cache=True)
def _held_full(close, cash, qty, lo, hi, prev, s1, s2, sd2, peak, trough, peak_i, mdd, mdd_bars, equity, record_eq,
               start, a0, a1):
    """:func:`_held` that also records the equity and sums the returns of one block. Two copies of one
    loop on purpose: inside :func:`simulate`, behind the recording and block flags, the same loop took
    4.4 ns per bar against 3.4 ns here (measured before the drawdown change); tests/test_kernel_events.py
    holds both copies to the bits of the bar-by-bar kernel."""
    eq = prev
    for k in range(lo, hi):
        eq = cash + qty * close[k]
        r = eq / prev - 1.0
        prev = eq
        s1 += r
        s2 += r * r
        rn = r if r < 0.0 else 0.0
        sd2 += rn * rn
        if eq >= peak:
            if trough < peak:  # the drawdown under the old peak ends: its deepest point decides it
                dd = 1.0 - trough / peak
                if dd > mdd:
                    mdd = dd
            peak = eq
            trough = eq
            peak_i = k
        else:
            trough = eq if eq < trough else trough
            d = k - peak_i
            mdd_bars = d if d > mdd_bars else mdd_bars
        if record_eq:
            equity[k - start] = eq
        a0 += r
        a1 += r * r
    if trough < peak:
        dd = 1.0 - trough / peak
        if dd > mdd:
            mdd = dd
    return eq, prev, s1, s2, sd2, peak, trough, peak_i, mdd, mdd_bars, a0, a1


@njit(cache=True)
def simulate(open_, close, entries, n_entries, exits, n_exits, size, start, stop, init_cash, fee, slip, size_usd,
             step, ppy, stats, equity, trades, block_edges, blocks, close_finite):
    """Run one strategy over bars [start, stop). ``entries[:n_entries]`` / ``exits[:n_exits]``: the bars
    whose close signals an entry / an exit, increasing (:func:`bool_events`, :func:`sma_cross_events`).
    Writes ``stats`` (NSTAT values); when ``equity`` is not empty, the equity at each bar's close (index
    i - start); when ``trades`` is not empty, one row per trade (TRADE_FIELDS; an open trade last, exit_bar
    -1, marked at the last close, no exit fee); when ``block_edges`` has B+1 bar indices, ``blocks[b]`` =
    (sum r, sum r^2, count) of the bar returns in [edges[b], edges[b+1]). ``close_finite``: every close
    in [start, stop) is finite (lets flat stretches be skipped; False walks them bar by bar). Returns the
    number of trade rows written.

    Speed: a bar with a fill or an acted-on signal goes through the full step; between two such bars
    the position is either held (a tight loop: mark, return, drawdown; no signal is read) or flat (equity
    constant: the stretch is accounted for at once). Both produce the very floating-point operations, in
    the same order, as the full step would (a test compares bit for bit with a bar-by-bar kernel)."""
    record_eq = equity.shape[0] > 0
    record_tr = trades.shape[0] > 0
    sized = size.shape[0] > 0
    conf = 1.0  # the confidence of the pending entry
    nblocks = block_edges.shape[0] - 1
    cash = init_cash
    qty = 0.0
    held = False
    pending = 0
    entry_bar = -1
    entry_price = 0.0
    entry_fee = 0.0
    entry_cost = 0.0
    n_rec = 0
    n_tr = 0
    wins = 0
    gross_win = 0.0
    gross_loss = 0.0
    sum_pnl = 0.0
    sum_ret = 0.0
    prev = init_cash
    eq = init_cash
    peak = init_cash
    trough = init_cash
    peak_i = start - 1
    mdd = 0.0
    mdd_bars = 0
    s1 = 0.0
    s2 = 0.0
    sd2 = 0.0
    in_bars = 0
    b = 0
    ie = 0
    ix = 0
    i = start
    while i < stop:
        # -- the full step of bar i ------------------------------------------------------------------
        if pending == 1:
            px = open_[i]
            adj = px * (1.0 + slip)
            if size_usd > 0.0:
                q = trunc_amount(conf * size_usd / px, step)
                if step > 0.0:
                    aff = trunc_amount(cash / (adj * (1.0 + fee)) - step * 1e-6, step)
                else:
                    aff = cash / (adj * (1.0 + fee))
                if aff < q:
                    q = aff
                cost = q * adj
                f = cost * fee
                new_cash = cash - (cost + f)
            else:
                max_req = cash / (1.0 + fee)
                q = max_req / adj
                if conf < 1.0:  # a part of the cash: the fee is charged on what is bought
                    q = conf * q
                if step > 0.0:
                    q = trunc_amount(q, step)
                    cost = q * adj
                    f = cost * fee
                    new_cash = cash - (cost + f)
                elif conf < 1.0:
                    cost = q * adj
                    f = cost * fee
                    new_cash = cash - (cost + f)
                else:
                    cost = q * adj
                    f = cash - max_req
                    new_cash = 0.0
            if q > 0.0:
                entry_cost = cash - new_cash
                cash = new_cash
                qty = q
                held = True
                entry_bar = i
                entry_price = adj
                entry_fee = f
        elif pending == -1:
            adj = open_[i] * (1.0 - slip)
            proceeds = qty * adj
            f = proceeds * fee
            net = proceeds - f
            cash = cash + net
            pnl = net - entry_cost
            ret = pnl / entry_cost
            n_tr += 1
            if pnl > 0.0:
                wins += 1
                gross_win += pnl
            else:
                gross_loss -= pnl
            sum_pnl += pnl
            sum_ret += ret
            if record_tr:
                row = trades[n_rec]
                row[0] = entry_bar
                row[1] = i
                row[2] = qty
                row[3] = entry_price
                row[4] = adj
                row[5] = entry_fee
                row[6] = f
                row[7] = pnl
                row[8] = ret
                n_rec += 1
            qty = 0.0
            held = False
        traded = pending != 0
        pending = 0

        eq = cash + qty * close[i]
        if held or traded:
            r = eq / prev - 1.0
            prev = eq
            s1 += r
            s2 += r * r
            if r < 0.0:
                sd2 += r * r
        else:
            r = 0.0  # flat and no fill: equity unchanged (saves a division on every flat bar)
        if held:
            in_bars += 1
        if eq >= peak:
            peak = eq
            trough = eq
            peak_i = i
        else:
            if eq < trough:  # the deepest point under this peak decides its drawdown (division is monotone)
                trough = eq
                dd = 1.0 - eq / peak
                if dd > mdd:
                    mdd = dd
            if i - peak_i > mdd_bars:
                mdd_bars = i - peak_i
        if record_eq:
            equity[i - start] = eq
        if nblocks > 0 and i >= block_edges[0] and i < block_edges[nblocks]:
            while i >= block_edges[b + 1]:
                b += 1
            blocks[b, 0] += r
            blocks[b, 1] += r * r
            blocks[b, 2] += 1.0

        if i + 1 < stop:  # bar i's signal (a signal on the last bar would fill outside the window)
            if not held:
                while ie < n_entries and entries[ie] < i:
                    ie += 1
                if ie < n_entries and entries[ie] == i:
                    conf = size[i] if sized else 1.0
                    if conf > 0.0:
                        pending = 1
            else:
                while ix < n_exits and exits[ix] < i:
                    ix += 1
                if ix < n_exits and exits[ix] == i:
                    pending = -1
        i += 1
        if pending != 0 or i >= stop:
            continue

        # -- bars [i, j): no fill, and no signal that acts before bar j --------------------------------
        if held:
            while ix < n_exits and exits[ix] < i:
                ix += 1
            j = exits[ix] if ix < n_exits else stop
            if j > stop:
                j = stop
            while i < j:
                seg = j  # a stretch inside one block of bars (or outside all of them)
                inb = False
                if nblocks > 0:
                    if i < block_edges[0]:
                        if block_edges[0] < seg:
                            seg = block_edges[0]
                    elif i < block_edges[nblocks]:
                        while i >= block_edges[b + 1]:
                            b += 1
                        if block_edges[b + 1] < seg:
                            seg = block_edges[b + 1]
                        inb = True
                a0 = 0.0
                a1 = 0.0
                if inb:
                    a0 = blocks[b, 0]
                    a1 = blocks[b, 1]
                if record_eq or inb:
                    eq, prev, s1, s2, sd2, peak, trough, peak_i, mdd, mdd_bars, a0, a1 = _held_full(
                        close, cash, qty, i, seg, prev, s1, s2, sd2, peak, trough, peak_i, mdd, mdd_bars,
                        equity, record_eq, start, a0, a1)
                else:
                    eq, prev, s1, s2, sd2, peak, trough, peak_i, mdd, mdd_bars = _held(
                        close, cash, qty, i, seg, prev, s1, s2, sd2, peak, trough, peak_i, mdd, mdd_bars)
                in_bars += seg - i
                if inb:
                    blocks[b, 0] = a0
                    blocks[b, 1] = a1
                    blocks[b, 2] += seg - i
                i = seg
        elif close_finite:  # flat: equity stays cash (qty is 0 and every close finite), returns are 0
            while ie < n_entries and (entries[ie] < i or (sized and not size[entries[ie]] > 0.0)):
                ie += 1
            j = entries[ie] if ie < n_entries else stop
            if j > stop:
                j = stop
            if j > i:
                last = j - 1
                if eq >= peak:  # as the full step on each bar of the stretch: the last one decides
                    peak = eq
                    trough = eq
                    peak_i = last
                else:
                    if eq < trough:
                        trough = eq
                        dd = 1.0 - eq / peak
                        if dd > mdd:
                            mdd = dd
                    if last - peak_i > mdd_bars:
                        mdd_bars = last - peak_i
                if record_eq:
                    for k in range(i, j):
                        equity[k - start] = eq
                if nblocks > 0:
                    lo = i if i > block_edges[0] else block_edges[0]
                    hi = j if j < block_edges[nblocks] else block_edges[nblocks]
                    while lo < hi:
                        while lo >= block_edges[b + 1]:
                            b += 1
                        e = block_edges[b + 1] if block_edges[b + 1] < hi else hi
                        blocks[b, 2] += e - lo
                        lo = e
                i = j

    if record_tr and held:
        row = trades[n_rec]
        mark = close[stop - 1]
        row[0] = entry_bar
        row[1] = -1
        row[2] = qty
        row[3] = entry_price
        row[4] = mark
        row[5] = entry_fee
        row[6] = 0.0
        row[7] = qty * mark - entry_cost
        row[8] = (qty * mark - entry_cost) / entry_cost
        n_rec += 1

    n = stop - start
    stats[S_FINAL] = eq
    stats[S_TOTAL_RETURN] = eq / init_cash - 1.0
    years = n / ppy
    if n <= 0 or years <= 0.0:
        stats[S_CAGR] = np.nan
    elif eq <= 0.0:
        stats[S_CAGR] = -1.0
    else:
        stats[S_CAGR] = (eq / init_cash) ** (1.0 / years) - 1.0
    mean = s1 / n if n > 0 else 0.0
    var = (s2 - s1 * s1 / n) / (n - 1) if n > 1 else 0.0
    std = np.sqrt(var) if var > 0.0 else 0.0
    stats[S_SHARPE] = mean / std * np.sqrt(ppy) if std > 0.0 else 0.0
    down = np.sqrt(sd2 / n) if n > 0 else 0.0
    if down > 0.0:
        stats[S_SORTINO] = mean / down * np.sqrt(ppy)
    else:
        stats[S_SORTINO] = np.inf if mean > 0.0 else 0.0
    stats[S_MDD] = mdd
    stats[S_MDD_BARS] = mdd_bars
    stats[S_CALMAR] = stats[S_CAGR] / mdd if mdd > 0.0 else np.nan
    if n_tr > 0:
        stats[S_WIN_RATE] = wins / n_tr
        stats[S_EXPECTANCY] = sum_pnl / n_tr
        stats[S_AVG_RET] = sum_ret / n_tr
    else:
        stats[S_WIN_RATE] = np.nan
        stats[S_EXPECTANCY] = np.nan
        stats[S_AVG_RET] = np.nan
    if gross_loss > 0.0:
        stats[S_PF] = gross_win / gross_loss
    else:
        stats[S_PF] = np.inf if gross_win > 0.0 else np.nan
    stats[S_EXPOSURE] = in_bars / n if n > 0 else 0.0
    stats[S_NTRADES] = n_tr
    stats[S_OPEN] = 1.0 if held else 0.0
    return n_rec


@njit(cache=True)
def sma_cross_signals(f, s, lo, hi, entry, exit_):
    """``SmaCross.signals`` for bars [lo, hi), from the two SMA rows (NaN while warming up), as boolean
    arrays (for tests; the kernels use :func:`sma_cross_events`, the same rule)."""
    for i in range(lo, hi):
        above = f[i] > s[i]
        below = f[i] < s[i]
        if i > 0:
            pa = f[i - 1] > s[i - 1]
            pb = f[i - 1] < s[i - 1]
            snan = np.isnan(s[i - 1])
        else:
            pa = False
            pb = False
            snan = True
        entry[i] = above and not pa and not snan
        exit_[i] = below and not pb


@njit(cache=True)
def sma_cross_events(f, s, lo, hi, entries, exits):
    """The bars of [lo, hi) where :func:`sma_cross_signals` would be True, written to ``entries`` /
    ``exits`` (each needs room for (hi - lo) // 2 + 1: a crossing up needs a bar not above before it).
    Returns (number of entries, number of exits).

    One pass with one rarely taken branch: each bar's side (+1 above, -1 below, 0 equal or NaN) against
    the previous bar's; only a change of side can be a signal. An entry needs the previous slow value to
    be a number (a NaN has side 0, so it is checked only then)."""
    ne = 0
    nx = 0
    if lo > 0:
        prev = np.int64(f[lo - 1] > s[lo - 1]) - np.int64(f[lo - 1] < s[lo - 1])
    else:
        prev = 0
    for i in range(lo, hi):
        fv = f[i]
        sv = s[i]
        side = np.int64(fv > sv) - np.int64(fv < sv)
        if side != prev:
            if side == 1:
                if i > 0 and not np.isnan(s[i - 1]):
                    entries[ne] = i
                    ne += 1
            elif side == -1:
                exits[nx] = i
                nx += 1
            prev = side
    return ne, nx


@njit(cache=True)
def bool_events(flags, lo, hi, out):
    """The bars of [lo, hi) where ``flags`` is True, into ``out``; returns how many."""
    n = 0
    for i in range(lo, hi):
        if flags[i]:
            out[n] = i
            n += 1
    return n


@njit(cache=True)
def _tasks(m, threads):
    # work split into a few tasks per thread: each task owns its event buffers (allocated once, not per
    # combination), and more tasks than threads even out combinations of unequal cost
    nt = 4 * threads
    if nt > m:
        nt = m
    return nt, (m + nt - 1) // nt if nt > 0 else 0


def threads() -> int:
    return numba.get_num_threads()


@njit(cache=True, parallel=True)
def sma_cross_sweep(open_, close, fast, slow, fi, si, start, stop, init_cash, fee, slip, size_usd, step, ppy,
                    block_edges, stats, blocks, threads):
    """Combination k uses SMA rows ``fast[fi[k]]`` and ``slow[si[k]]`` (each distinct window computed
    once by the caller). Signals (as crossing bars) and simulation per combination, combinations in
    parallel."""
    m = fi.shape[0]
    no_eq = np.empty(0)
    no_tr = np.empty((0, NTF))
    finite = all_finite(close, start, stop)
    nt, per = _tasks(m, threads)
    room = (stop - start) // 2 + 2
    for t in prange(nt):
        ent = np.empty(room, np.int64)
        ext = np.empty(room, np.int64)
        for k in range(t * per, min(m, (t + 1) * per)):
            ne, nx = sma_cross_events(fast[fi[k]], slow[si[k]], start, stop, ent, ext)
            simulate(open_, close, ent, ne, ext, nx, np.empty(0), start, stop, init_cash, fee, slip, size_usd, step,
                     ppy, stats[k], no_eq, no_tr, block_edges, blocks[k], finite)


@njit(cache=True)
def sma_cross_record(open_, close, f, s, start, stop, init_cash, fee, slip, size_usd, step, ppy,
                     stats, equity, trades):
    """One combination through the same signal and simulation code as :func:`sma_cross_sweep`, with
    the equity curve and the trades recorded."""
    room = (stop - start) // 2 + 2
    ent = np.empty(room, np.int64)
    ext = np.empty(room, np.int64)
    ne, nx = sma_cross_events(f, s, start, stop, ent, ext)
    return simulate(open_, close, ent, ne, ext, nx, np.empty(0), start, stop, init_cash, fee, slip, size_usd, step,
                    ppy, stats, equity, trades, np.empty(0, np.int64), np.empty((0, 3)),
                    all_finite(close, start, stop))


@njit(cache=True, parallel=True)
def signals_sweep(open_, close, entries, exits, sizes, start, stop, init_cash, fee, slip, size_usd, step, ppy,
                  block_edges, stats, blocks, threads):
    """Row k of ``entries`` / ``exits`` (shape (m, n)) is one combination's signals; row k of ``sizes``
    its confidence per bar (shape (m, n)), or ``sizes`` of shape (m, 0): every entry at full size."""
    m = entries.shape[0]
    no_eq = np.empty(0)
    no_tr = np.empty((0, NTF))
    finite = all_finite(close, start, stop)
    nt, per = _tasks(m, threads)
    room = max(stop - start, 0)
    for t in prange(nt):
        ent = np.empty(room, np.int64)
        ext = np.empty(room, np.int64)
        for k in range(t * per, min(m, (t + 1) * per)):
            ne = bool_events(entries[k], start, stop, ent)
            nx = bool_events(exits[k], start, stop, ext)
            simulate(open_, close, ent, ne, ext, nx, sizes[k], start, stop, init_cash, fee, slip, size_usd, step,
                     ppy, stats[k], no_eq, no_tr, block_edges, blocks[k], finite)


@njit(cache=True)
def signals_record(open_, close, entry, exit_, size, start, stop, init_cash, fee, slip, size_usd, step, ppy,
                   stats, equity, trades):
    room = max(stop - start, 0)
    ent = np.empty(room, np.int64)
    ext = np.empty(room, np.int64)
    ne = bool_events(entry, start, stop, ent)
    nx = bool_events(exit_, start, stop, ext)
    return simulate(open_, close, ent, ne, ext, nx, size, start, stop, init_cash, fee, slip, size_usd, step, ppy,
                    stats, equity, trades, np.empty(0, np.int64), np.empty((0, 3)), all_finite(close, start, stop))


def max_trade_rows(start: int, stop: int) -> int:
    return max(0, stop - start) // 2 + 2


def warm_up() -> None:
    """Compile (or load from the cache) every kernel on a tiny input."""
    n = 8
    o = np.linspace(1.0, 2.0, n)
    e = np.zeros(n, np.bool_)
    x = np.zeros(n, np.bool_)
    st = np.zeros(NSTAT)
    edges = np.array([0, 4, 8], np.int64)
    signals_record(o, o, e, x, np.empty(0), 0, n, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, st, np.zeros(n), np.zeros((6, NTF)))
    sma_cross_record(o, o, o, o, 0, n, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, st, np.zeros(n), np.zeros((6, NTF)))
    mat = o.reshape(1, n).copy()
    idx = np.zeros(1, np.int64)
    sma_cross_sweep(o, o, mat, mat, idx, idx, 0, n, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, edges,
                    np.zeros((1, NSTAT)), np.zeros((1, 2, 3)), 1)
    signals_sweep(o, o, e.reshape(1, n).copy(), x.reshape(1, n).copy(), np.empty((1, 0)), 0, n, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
                  edges, np.zeros((1, NSTAT)), np.zeros((1, 2, 3)), 1)
