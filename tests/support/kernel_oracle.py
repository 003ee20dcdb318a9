"""The simulation core as it was before the event-driven one (bar by bar: every bar reads its signals and
goes through the full step). Kept as the oracle the kernel is checked against bit for bit
(tests/test_kernel_events.py): the fast paths of :func:`qts.research.kernels.simulate` must produce
the very same floating-point results, trades, equity and block sums."""

import numpy as np
from numba import njit

from qts.research.kernels import (NSTAT, S_AVG_RET, S_CAGR, S_CALMAR, S_EXPECTANCY, S_EXPOSURE, S_FINAL,  # noqa: F401
                                  S_MDD, S_MDD_BARS, S_NTRADES, S_OPEN, S_PF, S_SHARPE, S_SORTINO,
                                  S_TOTAL_RETURN, S_WIN_RATE, trunc_amount)


@njit
def simulate_bar_by_bar(open_, close, entry, exit_, size, start, stop, init_cash, fee, slip, size_usd, step, ppy,
             stats, equity, trades, block_edges, blocks):
    """Run one strategy over bars [start, stop). Writes ``stats`` (NSTAT values); when ``equity`` is
    not empty, the equity at each bar's close (index i - start); when ``trades`` is not empty, one
    row per trade (TRADE_FIELDS; an open trade last, exit_bar -1, marked at the last close, no exit
    fee); when ``block_edges`` has B+1 bar indices, ``blocks[b]`` = (sum r, sum r^2, count) of the
    bar returns in [edges[b], edges[b+1]). Returns the number of trade rows written."""
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
    for i in range(start, stop):
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

        if i + 1 < stop:
            if not held:
                if entry[i]:
                    conf = size[i] if sized else 1.0
                    if conf > 0.0:
                        pending = 1
            elif exit_[i]:
                pending = -1

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
