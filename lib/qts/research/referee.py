"""vectorbt as the independent referee of our backtest engine.

``referee(candles, strategy, result)`` replays the orders of one of our backtests through
``vectorbt.Portfolio.from_signals`` and compares the two, bar by bar and trade by trade. Only the
strategy's signals are shared (``Strategy.signals``, the one definition the engine, the look-ahead
check and the trading loop use); the simulation -- fills, fees, slippage, sizing, cash, the equity
mark -- is vectorbt's own code, configured to our fill model (:mod:`qts.research.kernels`):

- a signal on bar ``i`` is an order filled at bar ``i+1``'s open: the signals are shifted one bar and
  vectorbt fills at ``price=open``; slippage and fees are vectorbt's ``slippage`` and ``fees``;
- all-in sizing is vectorbt's ``size=inf``; a confidence entry (a float signal in [0, 1]) is
  ``size=confidence, size_type="percent"`` (that share of the cash); fixed-notional sizing
  (``size_usd``) is ``size_type="value"`` at the unslipped open, capped by the cash; a config with
  ``amount_step`` is not refereed (:class:`RefereeUnsupported`: vectorbt's granularity rounds
  differently from the exchange's precision);
- long-only, one position; an entry and an exit on the same bar act by the position
  (``upon_long_conflict="opposite"``), as our hysteresis does; a position open at the end stays open,
  marked at the last close.

Checked, each within ``tol`` (1e-9) relative: the trade count, every trade's entry and exit bar (so
their timestamps), amount, entry and exit price; the equity at every bar's close; the final equity.
The first difference raises :class:`RefereeMismatch`, which names the trade or the bar (and its UTC
time). vectorbt's own statistics come back for the report, beside ours.

vectorbt (and pandas) load only here, inside the functions: importing this module costs nothing,
and neither the CLI's start nor the hooks ever import it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

TOL = 1e-9
TOP = 3  # candidates of a validation run the referee recomputes


class RefereeMismatch(AssertionError):
    """Our engine and vectorbt disagree beyond the tolerance. ``what`` is "trade count", "trade",
    "equity" or "final equity"; ``bar`` the candle index (into the candles) where it first shows,
    ``trade`` the 0-based trade index when a trade differs."""

    def __init__(self, message: str, *, what: str, bar: int | None = None, ts: int | None = None,
                 trade: int | None = None, ours=None, theirs=None, strategy: str = "", params: dict | None = None):
        self.what, self.bar, self.ts, self.trade = what, bar, ts, trade
        self.ours, self.theirs, self.strategy, self.params = ours, theirs, strategy, dict(params or {})
        where = f"{strategy} {self.params}: " if strategy else ""
        super().__init__(f"referee mismatch: {where}{message}")


class RefereeUnsupported(ValueError):
    """A configuration the referee cannot express in vectorbt: ``amount_step`` (vectorbt's
    ``size_granularity`` floors binary noise down -- 0.02222 / 1e-5 = 2221.9999... -> 0.02221 -- where
    the exchange's amount precision, and our engine, snap it up to 0.02222)."""


@dataclass
class RefereeReport:
    """What the referee checked and vectorbt's statistics (same keys as ours where they exist)."""

    strategy: str
    params: dict
    bars: int
    trades: int
    max_rel_diff: float            # the largest relative equity difference over all bars
    seconds: float
    stats: dict                    # vectorbt's: total_return, cagr, sharpe, max_drawdown, win_rate, expectancy, ...
    ours: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "params": self.params, "bars": self.bars, "trades": self.trades,
                "max_rel_diff": self.max_rel_diff, "seconds": round(self.seconds, 4), "tolerance": TOL,
                "agrees": True, "vectorbt": self.stats}


def _utc(ms) -> str:
    return "-" if ms is None else datetime.fromtimestamp(int(ms) / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _rel(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def _f(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x


def _vectorbt():
    """``import vectorbt``, leaving the process environment as it was: scikit-learn, joblib and
    threadpoolctl (which vectorbt imports) set KMP_* variables on import, and the research pipeline
    promises to change no environment variable."""
    import os
    import sys

    if "vectorbt" in sys.modules:
        return sys.modules["vectorbt"]
    before = dict(os.environ)
    try:
        import vectorbt
    finally:
        for k in set(os.environ) - set(before):
            del os.environ[k]
        for k, v in before.items():
            if os.environ.get(k) != v:
                os.environ[k] = v
    return vectorbt


def portfolio(candles, strategy, params: dict | None, config, start: int, stop: int):
    """vectorbt's Portfolio of ``strategy`` on bars [start, stop), under our fill model."""
    import warnings

    import pandas as pd

    vbt = _vectorbt()

    from ..strategies.base import split_confidence
    from .backtest import resolve

    if config.amount_step:
        raise RefereeUnsupported(f"amount_step={config.amount_step:g}: vectorbt's size_granularity floors "
                                 "binary noise down where the exchange's precision snaps it up")
    strat = resolve(strategy, params)
    entry, exit_, _ = strat.signals(candles)
    entry, conf = split_confidence(entry)
    n = stop - start
    E = np.zeros(n, bool)
    X = np.zeros(n, bool)
    # signal on bar i (start <= i < stop - 1) -> order at bar i + 1's open
    E[1:] = np.asarray(entry[start:stop - 1], bool)
    X[1:] = np.asarray(exit_[start:stop - 1], bool)
    idx = pd.to_datetime(np.asarray(candles.ts[start:stop]), unit="ms")  # naive: a tz-aware index is far slower
    close = pd.Series(np.asarray(candles.close[start:stop], np.float64), index=idx)
    open_ = pd.Series(np.asarray(candles.open[start:stop], np.float64), index=idx)
    kw = dict(price=open_, fees=config.fee, slippage=config.slippage, init_cash=float(config.init_cash),
              direction="longonly", upon_long_conflict="opposite", accumulate=False,
              freq=pd.Timedelta(milliseconds=int(candles.timeframe_ms)))  # annualized by 365 days (year_freq), as ours
    share = np.ones(n)
    if conf is not None:
        share[1:] = np.asarray(conf[start:stop - 1], np.float64)
    if config.size_usd:
        kw.update(size=share * float(config.size_usd), size_type="value")
    elif conf is not None:
        kw.update(size=share, size_type="percent")
    else:
        kw.update(size=np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vbt.Portfolio.from_signals(close, pd.Series(E, index=idx), pd.Series(X, index=idx), **kw)


def vectorbt_stats(pf) -> dict:
    """vectorbt's figures, under our names (max drawdown as a positive fraction, like ours)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = pf.trades
        closed = tr.closed
        return {"total_return": _f(pf.total_return()), "cagr": _f(pf.annualized_return()),
                "sharpe": _f(pf.sharpe_ratio()), "max_drawdown": abs(_f(pf.max_drawdown())),
                "win_rate": _f(closed.win_rate()) if closed.count() else math.nan,
                "expectancy": _f(closed.expectancy()) if closed.count() else math.nan,
                "n_trades": int(tr.count()), "final_equity": _f(pf.final_value())}


def referee(candles, strategy, result, params: dict | None = None, *, tol: float = TOL) -> RefereeReport:
    """Recompute ``result`` (our :class:`~qts.research.backtest.BacktestResult` of ``strategy`` on
    ``candles``) with vectorbt and compare. Raises :class:`RefereeMismatch` at the first difference
    beyond ``tol`` relative; returns a :class:`RefereeReport` with vectorbt's statistics."""
    t0 = time.perf_counter()
    params = result.params if params is None else params
    a, b = result.start, result.stop
    ts = candles.ts
    name = result.strategy
    pf = portfolio(candles, strategy, params, result.config, a, b)

    def fail(msg, **kw):
        raise RefereeMismatch(msg, strategy=name, params=params, **kw)

    rec = pf.trades.values  # the structured record array (.records is a DataFrame)
    rec = rec[np.argsort(rec["entry_idx"], kind="stable")]
    ours = result.trades
    for k in range(min(len(rec), len(ours))):  # trade by trade: the first that differs is named
        t, r = ours[k], rec[k]
        v_entry = a + int(r["entry_idx"])
        v_open = int(r["status"]) == 0
        v_exit = None if v_open else a + int(r["exit_idx"])
        if t.entry_bar != v_entry:
            bar = min(t.entry_bar, v_entry)
            fail(f"trade {k + 1}: entry at bar {t.entry_bar} ({_utc(ts[t.entry_bar])}), vectorbt enters at bar "
                 f"{v_entry} ({_utc(ts[v_entry])})", what="trade", trade=k, bar=bar, ts=int(ts[bar]),
                 ours=t.entry_bar, theirs=v_entry)
        if t.exit_bar != v_exit:
            cands = [x for x in (t.exit_bar, v_exit) if x is not None]
            bar = min(cands) if cands else None
            fail(f"trade {k + 1} (entered {_utc(ts[t.entry_bar])}): exit at "
                 f"{'bar %d (%s)' % (t.exit_bar, _utc(ts[t.exit_bar])) if t.exit_bar is not None else 'none (open)'}"
                 f", vectorbt exits at "
                 f"{'bar %d (%s)' % (v_exit, _utc(ts[v_exit])) if v_exit is not None else 'none (open)'}",
                 what="trade", trade=k, bar=bar, ts=None if bar is None else int(ts[bar]), ours=t.exit_bar,
                 theirs=v_exit)
        checks = [("amount", t.amount, r["size"], t.entry_bar), ("entry price", t.entry_price, r["entry_price"],
                                                                  t.entry_bar)]
        if not v_open:
            checks.append(("exit price", t.exit_price, r["exit_price"], t.exit_bar))
        for what, x, y, bar in checks:
            if not _rel(x, float(y)) <= tol:
                fail(f"trade {k + 1}: {what} at bar {bar} ({_utc(ts[bar])}): ours {x!r}, vectorbt {float(y)!r} "
                     f"(relative difference {_rel(x, float(y)):.3g} > {tol:g})", what="trade", trade=k, bar=bar,
                     ts=int(ts[bar]), ours=x, theirs=float(y))
    if len(rec) != len(ours):
        k = min(len(rec), len(ours))
        extra = ours[k] if len(ours) > k else None
        bar = extra.entry_bar if extra else a + int(rec[k]["entry_idx"])
        fail(f"trade count: ours {len(ours)}, vectorbt {len(rec)}; the first unmatched trade is trade {k + 1} "
             f"({'ours' if extra else 'vectorbt'}'s), entered at bar {bar} ({_utc(ts[bar])})", what="trade count",
             trade=k, bar=bar, ts=int(ts[bar]), ours=len(ours), theirs=len(rec))

    eq_v = np.asarray(pf.value(), np.float64)
    eq_o = np.asarray(result.equity, np.float64)
    if eq_v.shape != eq_o.shape:
        fail(f"equity curve length: ours {len(eq_o)}, vectorbt {len(eq_v)}", what="equity", ours=len(eq_o),
             theirs=len(eq_v))
    scale = np.maximum(np.abs(eq_o), np.abs(eq_v))
    rel = np.divide(np.abs(eq_o - eq_v), scale, out=np.zeros_like(scale), where=scale > 0)
    rel[~(np.isfinite(eq_o) & np.isfinite(eq_v))] = np.inf
    bad = np.flatnonzero(~(rel <= tol))
    if bad.size:
        i = int(bad[0])
        fail(f"equity at bar {a + i} ({_utc(ts[a + i])}): ours {eq_o[i]!r}, vectorbt {eq_v[i]!r} (relative "
             f"difference {rel[i]:.3g} > {tol:g}; {bad.size} bar(s) differ)", what="equity", bar=a + i,
             ts=int(ts[a + i]), ours=float(eq_o[i]), theirs=float(eq_v[i]))
    fin_o = float(result.stats.get("final_equity", eq_o[-1] if len(eq_o) else result.config.init_cash))
    fin_v = float(eq_v[-1]) if len(eq_v) else float(result.config.init_cash)
    if not _rel(fin_o, fin_v) <= tol:
        fail(f"final equity: ours {fin_o!r}, vectorbt {fin_v!r}", what="final equity", bar=b - 1,
             ts=int(ts[b - 1]) if b > a else None, ours=fin_o, theirs=fin_v)
    stats = vectorbt_stats(pf)
    st = result.stats
    mine = {k: _f(st.get(k)) for k in ("total_return", "cagr", "sharpe", "max_drawdown", "win_rate", "expectancy",
                                        "final_equity")}
    mine["n_trades"] = int(st.get("n_trades", 0)) + int(st.get("open_trade", 0))
    return RefereeReport(name, dict(params), b - a, len(ours), float(rel.max()) if rel.size else 0.0,
                         time.perf_counter() - t0, stats, mine)


# -- validation: the top candidates of a sweep -----------------------------------------------------------

@dataclass
class RefereeVerdict:
    """The referee's verdict on a validation run's top candidates."""

    passed: bool
    message: str
    reports: list[RefereeReport]
    mismatch: RefereeMismatch | None = None
    seconds: float = 0.0

    @property
    def max_rel_diff(self) -> float:
        """The largest relative equity difference of the candidates checked (inf after a mismatch)."""
        if not self.passed:
            return math.inf
        return max((r.max_rel_diff for r in self.reports), default=0.0)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "message": self.message, "seconds": round(self.seconds, 3),
                "candidates": [r.to_dict() for r in self.reports],
                "mismatch": None if self.mismatch is None else {
                    "what": self.mismatch.what, "bar": self.mismatch.bar, "ts": self.mismatch.ts,
                    "trade": self.mismatch.trade, "params": self.mismatch.params}}


def top_candidates(sw, objective: str, min_trades: int, top: int) -> list[int]:
    """Indices of the ``top`` best sweep rows by ``objective`` (those with ``min_trades`` closed trades
    first, as :meth:`SweepResult.best` selects; NaN last)."""
    vals = np.asarray(sw.column(objective), np.float64)
    trades = np.asarray(sw.column("n_trades"), np.float64)
    key = np.where(np.isfinite(vals), vals, -np.inf)
    order = sorted(range(len(vals)), key=lambda i: (trades[i] < min_trades, -key[i], i))
    return [i for i in order if np.isfinite(vals[i])][:max(0, top)]


def referee_sweep(strategy: str, candles, sw, config, *, objective: str = "sharpe", min_trades: int = 0,
                  top: int = TOP, tol: float = TOL) -> RefereeVerdict:
    """Recompute the ``top`` candidates of sweep ``sw`` with our engine AND vectorbt: our backtest must
    equal vectorbt's (trades, every bar's equity) and the sweep's row its final equity. A mismatch is a
    failed verdict that says where (never an exception: the validation reports it as a failed gate)."""
    from .backtest import backtest

    t0 = time.perf_counter()
    reports = []
    idx = top_candidates(sw, objective, min_trades, top)
    if config.amount_step:
        return RefereeVerdict(True, f"referee skipped: amount_step={config.amount_step:g} is not expressible in "
                              "vectorbt (its size_granularity rounds differently)", [], None, 0.0)
    try:
        for i in idx:
            p = sw.params[i]
            res = backtest(strategy, candles, config, params=p, start=sw.start,
                           stop=sw.stop)
            rep = referee(candles, strategy, res, p, tol=tol)
            row = dict(zip(_stat_names(), sw.stats[i]))
            fin = float(row.get("final_equity", math.nan))
            if not _rel(fin, rep.stats["final_equity"]) <= tol:
                raise RefereeMismatch(f"the sweep's final equity {fin!r} differs from vectorbt's "
                                      f"{rep.stats['final_equity']!r} (the sweep kernel, not the single backtest)",
                                      what="final equity", strategy=strategy, params=p, ours=fin,
                                      theirs=rep.stats["final_equity"])
            reports.append(rep)
    except RefereeMismatch as e:
        return RefereeVerdict(False, str(e), reports, e, time.perf_counter() - t0)
    if not idx:
        return RefereeVerdict(True, "referee: no candidate to recompute", [], None, time.perf_counter() - t0)
    worst = max(r.max_rel_diff for r in reports)
    msg = (f"vectorbt agrees on the top {len(reports)} candidate(s): "
           f"{sum(r.trades for r in reports)} trades, every bar's equity within {worst:.2g} relative (<= {tol:g})")
    return RefereeVerdict(True, msg, reports, None, time.perf_counter() - t0)


def _stat_names():
    from .kernels import STAT_NAMES

    return STAT_NAMES


# -- the backtest report ---------------------------------------------------------------------------------

def report_check(candles, strategy, result) -> dict:
    """The referee for ``qts backtest --report``: a JSON-ready dict, ``agrees`` True (with vectorbt's
    statistics beside ours), False (``message`` says where they differ), or None (not refereed, why)."""
    try:
        rep = referee(candles, strategy, result)
    except RefereeMismatch as e:
        return {"agrees": False, "message": str(e), "what": e.what, "bar": e.bar, "ts": e.ts, "trade": e.trade,
                "tolerance": TOL}
    except RefereeUnsupported as e:
        return {"agrees": None, "message": f"not refereed: {e}", "tolerance": TOL}
    return {**rep.to_dict(), "ours": rep.ours,
            "message": f"vectorbt agrees: {rep.trades} trades and all {rep.bars} bars' equity within "
                       f"{rep.max_rel_diff:.2g} relative (<= {TOL:g})"}
