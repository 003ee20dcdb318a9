"""Performance metrics from the state database, for any date range, per strategy and per symbol.

Definitions (documented for traders; every figure is computed from the database alone):

- **Account curve**: the ``equity_snapshots`` rows in the range (one per cycle). The starting equity is
  the last snapshot before the range (the first inside it when there is none). Returns are snapshot
  to snapshot. Sharpe = mean / standard deviation (sample) x sqrt(periods per year); Sortino = mean /
  downside deviation (root mean square of the negative returns) x sqrt(periods per year); periods
  per year = 365 days / the median spacing of the snapshots (crypto trades every day). No risk-free
  rate. Fewer than 3 returns, or no variation: reported as None.
- **Per strategy / per symbol curve**: a mark-to-market P&L series rebuilt from the decisions (every
  cycle records the position held and the price): held x price change between cycles, minus fees,
  minus the slippage of each fill against the decision price. Summed over all symbols it equals the
  change of the account's equity (the account curve marks at the same prices). Its returns (P&L /
  account equity before the cycle) give the group's Sharpe, Sortino and max drawdown.
- **Trades**: the ``closed_trades`` whose exit lies in the range (a round trip: entry to flat).
  P&L is after fees. Win rate = winners / trades; profit factor = gross profit / gross loss (None
  without a loss); expectancy = mean P&L per trade (also as mean return %).
- **Exposure**: time in market (fraction of cycles holding a position) and the mean position value
  as a % of equity.
- **Fees**: fees of the fills in the range.
- **Predicted vs realized**: expectations read from ``<state home>/registry/strategies.json`` (the
  strategy registry) when it exists; otherwise "no expectation recorded".
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime, timezone

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
NO_EXPECTATION = "no expectation recorded"

# metric names a registry entry may carry, and the keys they may appear under
EXPECTATION_KEYS = {
    "sharpe": ("sharpe", "sharpe_ratio"),
    "sortino": ("sortino", "sortino_ratio"),
    "win_rate": ("win_rate", "winrate", "hit_rate"),
    "profit_factor": ("profit_factor",),
    "expectancy": ("expectancy", "expectancy_per_trade", "avg_trade_pnl"),
    "expectancy_pct": ("expectancy_pct", "avg_trade_return_pct", "mean_trade_return_pct"),
    "max_drawdown_pct": ("max_drawdown_pct", "max_drawdown", "max_dd_pct", "mdd_pct"),
    "trades_per_day": ("trades_per_day",),
    "return_pct": ("return_pct", "total_return_pct"),
}
EXPECTATION_CONTAINERS = ("expected", "expectations", "expectation", "predicted", "prediction", "oos",
                          "out_of_sample", "walk_forward", "backtest", "metrics", "stats")


class TimeSpecError(ValueError):
    pass


def parse_time(spec: str | None, now_ms: int, end: bool = False) -> int | None:
    """``YYYY-MM-DD`` (UTC; as an end bound, the END of that day), ``YYYY-MM-DDTHH:MM[:SS]``, epoch
    milliseconds, or a span back from ``now_ms``: ``90m``, ``12h``, ``7d``, ``2w``."""
    if spec is None or str(spec).strip() == "":
        return None
    s = str(spec).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", s)
    if m:
        unit = {"m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}[m.group(2)]
        return int(now_ms - float(m.group(1)) * unit)
    if re.fullmatch(r"\d{11,14}", s):
        return int(s)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        try:
            d = datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        except ValueError:
            raise TimeSpecError(f"{spec!r}: not a valid date") from None
        ms = int(d.timestamp() * 1000)
        return ms + DAY_MS - 1 if end else ms
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise TimeSpecError(f"{spec!r}: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM, epoch ms, or a span like 7d / 12h") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return int(d.timestamp() * 1000)


# -- statistics -----------------------------------------------------------------------------------------

def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def ratio_stats(returns: list[float], periods_per_year: float | None) -> dict:
    """Sharpe, Sortino (``qts.returns``) and annualised volatility; None where undefined (fewer than 3
    periods, no spread, nothing went down) rather than 0 or infinity."""
    n = len(returns)
    out = {"sharpe": None, "sortino": None, "volatility_ann_pct": None, "periods": n}
    if n < 3 or not periods_per_year:
        return out
    from .. import returns as R  # numpy: loaded only when there are ratios to compute

    sd = R.sample_std(returns)
    if sd > 1e-15:
        out["sharpe"] = _finite(R.sharpe(returns, periods_per_year))
        out["volatility_ann_pct"] = _finite(100 * sd * math.sqrt(periods_per_year))
    if R.downside_deviation(returns) > 1e-15:
        out["sortino"] = _finite(R.sortino(returns, periods_per_year))
    return out


def max_drawdown(ts: list[int], values: list[float], relative: bool = True) -> dict:
    """Largest peak-to-trough fall of ``values`` (equity, or cumulative P&L when ``relative`` is False), with the
    times of its peak, its trough and its recovery (None while under water). The curve is ``qts.returns``'."""
    out = {"max_drawdown": 0.0, "max_drawdown_pct": 0.0 if relative else None, "peak_ts": None, "trough_ts": None,
           "recovered_ts": None}
    if not values:
        return out
    from .. import returns as R

    curve = R.drawdown_curve(values, relative=relative)
    tr = int(curve.argmax())
    if curve[tr] <= 1e-12 / (100 if relative else 1):
        return out
    pk = max(range(tr + 1), key=lambda i: (values[i], -i))  # the first point at the running peak
    rec = next((ts[j] for j in range(tr + 1, len(values)) if values[j] >= values[pk]), None)
    out.update(max_drawdown=values[pk] - values[tr], peak_ts=ts[pk], trough_ts=ts[tr], recovered_ts=rec)
    if relative:
        out["max_drawdown_pct"] = 100 * float(curve[tr])
    return out


def periods_per_year(ts: list[int]) -> float | None:
    if len(ts) < 3:
        return None
    gaps = sorted(b - a for a, b in zip(ts, ts[1:]) if b > a)
    if not gaps:
        return None
    med = gaps[len(gaps) // 2]
    return YEAR_MS / med


def trade_stats(trades: list[dict], days: float | None = None) -> dict:
    n = len(trades)
    wins = [t["pnl"] for t in trades if t["pnl"] > 0]
    losses = [t["pnl"] for t in trades if t["pnl"] <= 0]
    gp, gl = sum(wins), -sum(losses)
    hold = [(t["exit_ts"] - t["entry_ts"]) / 60_000 for t in trades]
    return {
        "trades": n, "wins": len(wins), "losses": len(losses),
        "win_rate": len(wins) / n if n else None,
        "realized_pnl": sum(t["pnl"] for t in trades),
        "gross_profit": gp, "gross_loss": gl,
        "profit_factor": (gp / gl) if gl > 1e-12 else None,
        "expectancy": (sum(t["pnl"] for t in trades) / n) if n else None,
        "expectancy_pct": (sum(t["return_pct"] for t in trades) / n) if n else None,
        "avg_win": (gp / len(wins)) if wins else None,
        "avg_loss": (-gl / len(losses)) if losses else None,
        "payoff_ratio": ((gp / len(wins)) / (gl / len(losses))) if wins and losses and gl > 1e-12 else None,
        "best_trade": max((t["pnl"] for t in trades), default=None),
        "worst_trade": min((t["pnl"] for t in trades), default=None),
        "avg_hold_min": (sum(hold) / n) if n else None,
        "trades_per_day": (n / days) if days and days > 0 else None,
        "trade_fees": sum(t["fees"] for t in trades),
    }


# -- the mark-to-market series per symbol ---------------------------------------------------------------

def _mtm_series(store, mode: str, since: int | None, until: int | None) -> dict:
    """{symbol: {"strategy", "ts", "pnl", "held_value"}}: per-cycle P&L of each symbol over the range."""
    lo = since if since is not None else -1
    hi = until if until is not None else 1 << 62
    # one decision before the range gives the starting price
    rows = store.query(
        "SELECT ts, symbol, strategy, json_extract(inputs, '$.held') AS held, json_extract(inputs, '$.price') AS price "
        "FROM decisions WHERE mode=? AND ts<=? AND ts>=COALESCE((SELECT MAX(ts) FROM decisions WHERE mode=? AND ts<?), ?) "
        "ORDER BY ts, id", (mode, hi, mode, lo, lo))
    fills = store.query("SELECT symbol, side, amount, price, fee, ts FROM fills WHERE mode=? AND ts<=? ORDER BY ts, id",
                        (mode, hi))
    by_sym: dict[str, dict] = {}
    for r in rows:
        if r["price"] is None:
            continue
        s = by_sym.setdefault(r["symbol"], {"strategy": r["strategy"], "rows": []})
        s["rows"].append((r["ts"], float(r["held"] or 0.0), float(r["price"])))
        s["strategy"] = r["strategy"]
    out = {}
    fills_by_sym: dict[str, list] = {}
    for f in fills:
        fills_by_sym.setdefault(f["symbol"], []).append(f)
    for sym, s in by_sym.items():
        rws = s["rows"]
        # dedupe cycles (one decision per symbol per cycle; keep the last)
        dedup: dict[int, tuple] = {}
        for ts, held, price in rws:
            dedup[ts] = (held, price)
        ts_list = sorted(dedup)
        prices = {t: dedup[t][1] for t in ts_list}
        fl = fills_by_sym.get(sym, [])
        fi = 0
        series_ts, pnl, held_value = [], [], []
        prev_t = None
        for t in ts_list:
            held, price = dedup[t]
            if prev_t is None:
                prev_t = t
                # fills at the first (pre-range) cycle happened before the range: skip them
                while fi < len(fl) and fl[fi]["ts"] <= t:
                    fi += 1
                continue
            p = held * (price - prices[prev_t])
            # fills between the previous cycle (exclusive) and this one (inclusive): fees and slippage
            while fi < len(fl) and fl[fi]["ts"] <= t:
                f = fl[fi]
                ref = prices.get(f["ts"], price)
                signed = f["amount"] if f["side"] == "buy" else -f["amount"]
                p += signed * (ref - f["price"]) - f["fee"]
                fi += 1
            if since is None or t >= since:
                series_ts.append(t)
                pnl.append(p)
                held_value.append(held * price)
            prev_t = t
        out[sym] = {"strategy": s["strategy"], "ts": series_ts, "pnl": pnl, "held_value": held_value}
    return out


def _group_curve(parts: list[dict], equity_at: dict[int, float], start_equity: float | None) -> dict:
    """Combine symbol series into one group curve and its statistics."""
    agg: dict[int, list] = {}
    for p in parts:
        for t, v, hv in zip(p["ts"], p["pnl"], p["held_value"]):
            a = agg.setdefault(t, [0.0, 0.0, 0])
            a[0] += v
            a[1] += hv
            a[2] += 1 if hv > 0 else 0
    ts = sorted(agg)
    pnl = [agg[t][0] for t in ts]
    cum, c = [], 0.0
    for v in pnl:
        c += v
        cum.append(c)
    eq_ts = sorted(equity_at)
    rets, prev_eq = [], start_equity
    exposure = []
    j = 0
    last_eq = start_equity
    for t, v in zip(ts, pnl):
        # account equity before this cycle: the last snapshot strictly before t
        while j < len(eq_ts) and eq_ts[j] < t:
            last_eq = equity_at[eq_ts[j]]
            j += 1
        prev_eq = last_eq
        if prev_eq and prev_eq > 0:
            rets.append(v / prev_eq)
            exposure.append(agg[t][1] / prev_eq)
    base = start_equity or 0.0
    dd = max_drawdown(ts, [base + x for x in cum], relative=bool(base))
    stats = ratio_stats(rets, periods_per_year(ts))
    return {"mtm_pnl": cum[-1] if cum else 0.0, "sharpe": stats["sharpe"], "sortino": stats["sortino"],
            "max_drawdown": dd["max_drawdown"], "max_drawdown_pct": dd["max_drawdown_pct"],
            "time_in_market_pct": (100 * sum(1 for t in ts if agg[t][2] > 0) / len(ts)) if ts else None,
            "avg_exposure_pct": (100 * sum(exposure) / len(exposure)) if exposure else None,
            "cycles": len(ts)}


# -- registry -------------------------------------------------------------------------------------------

def load_registry(home) -> tuple[list[dict], str | None]:
    """Entries of ``registry/strategies.json`` (a list, or {"strategies": [...]}, or {name: entry}).
    Returns (entries, problem). A missing file is not a problem; a damaged one is reported, not raised."""
    path = home.root / "registry" / "strategies.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [], None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return [], f"{path}: unreadable ({e.__class__.__name__})"
    if isinstance(raw, dict) and isinstance(raw.get("strategies"), (list, dict)):
        raw = raw["strategies"]
    entries = []
    if isinstance(raw, dict):
        for k, v in raw.items():
            if isinstance(v, dict):
                entries.append({"name": k, **v})
    elif isinstance(raw, list):
        entries = [e for e in raw if isinstance(e, dict)]
    else:
        return [], f"{path}: expected a list or an object of strategies"
    return entries, None


def _entry_name(e: dict) -> str | None:
    for k in ("strategy", "name", "id", "strategy_name"):
        if isinstance(e.get(k), str):
            return e[k]
    return None


def _as_float(v):
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def expectations_of(entry: dict) -> dict:
    """The expected metrics of one registry entry (its first container that has any; else top level)."""
    def pick(d):
        got = {}
        for metric, keys in EXPECTATION_KEYS.items():
            for k in keys:
                v = _as_float(d.get(k))
                if v is not None:
                    got[metric] = v
                    break
        return got

    for c in EXPECTATION_CONTAINERS:
        if isinstance(entry.get(c), dict):
            got = pick(entry[c])
            if got:
                return got
    return pick(entry)


def find_expectation(entries: list[dict], strategy: str, params: dict | None = None) -> dict | None:
    cands = [e for e in entries if _entry_name(e) == strategy and expectations_of(e)]
    if not cands:
        return None
    if params:
        same = [e for e in cands if isinstance(e.get("params"), dict) and e["params"] == params]
        if same:
            cands = same
    return cands[-1]


def compare(expected: dict, realized: dict) -> list[dict]:
    out = []
    for metric, exp in expected.items():
        real = realized.get(metric)
        if metric == "win_rate" and exp > 1:  # recorded in percent
            exp = exp / 100
        if metric == "max_drawdown_pct" and 0 < exp < 1 and real is not None and real >= 1:
            exp = exp * 100  # recorded as a fraction
        out.append({"metric": metric, "expected": exp, "realized": real,
                    "difference": (real - exp) if real is not None else None})
    return out


# -- the report -----------------------------------------------------------------------------------------

def _clock(store, mode: str) -> int:
    v = store.scalar("SELECT MAX(ts) FROM equity_snapshots WHERE mode=?", (mode,))
    return int(v) if v else int(time.time() * 1000)


def performance(store, mode: str = "paper", since_ms: int | None = None, until_ms: int | None = None,
                strategies: list[str] | None = None, symbols: list[str] | None = None) -> dict:
    """Metrics for the range [since_ms, until_ms] (either may be None: unbounded)."""
    lo = since_ms if since_ms is not None else -1
    hi = until_ms if until_ms is not None else 1 << 62
    snaps = store.query("SELECT ts, equity, cash, positions_value FROM equity_snapshots WHERE mode=? AND ts>=? AND ts<=? "
                        "ORDER BY ts, id", (mode, lo, hi))
    before = store.one("SELECT ts, equity FROM equity_snapshots WHERE mode=? AND ts<? ORDER BY ts DESC, id DESC LIMIT 1",
                       (mode, lo)) if since_ms is not None else None
    ts = [s["ts"] for s in snaps]
    eq = [s["equity"] for s in snaps]
    start_equity = before["equity"] if before else (eq[0] if eq else None)
    curve_ts = ([before["ts"]] if before else []) + ts
    curve_eq = ([before["equity"]] if before else []) + eq
    rets = [b / a - 1 for a, b in zip(curve_eq, curve_eq[1:]) if a > 0]
    first_ts = curve_ts[0] if curve_ts else None
    last_ts = curve_ts[-1] if curve_ts else None
    days = ((last_ts - first_ts) / DAY_MS) if curve_ts and last_ts > first_ts else None
    stats = ratio_stats(rets, periods_per_year(curve_ts))
    dd = max_drawdown(curve_ts, curve_eq)
    end_equity = eq[-1] if eq else start_equity
    trades = store.query("SELECT * FROM closed_trades WHERE mode=? AND exit_ts>=? AND exit_ts<=? ORDER BY exit_ts, id",
                         (mode, lo, hi))
    fills = store.query("SELECT f.symbol, f.fee, f.amount, f.price, o.strategy FROM fills f "
                        "LEFT JOIN orders o ON o.client_order_id=f.client_order_id "
                        "WHERE f.mode=? AND f.ts>=? AND f.ts<=?", (mode, lo, hi))
    account = {
        "start_ts": first_ts, "end_ts": last_ts, "days": days, "start_equity": start_equity, "end_equity": end_equity,
        "pnl": (end_equity - start_equity) if start_equity is not None and end_equity is not None else None,
        "return_pct": (100 * (end_equity / start_equity - 1)) if start_equity else None,
        "sharpe": stats["sharpe"], "sortino": stats["sortino"], "volatility_ann_pct": stats["volatility_ann_pct"],
        "max_drawdown_pct": dd["max_drawdown_pct"], "max_drawdown": dd["max_drawdown"],
        "max_drawdown_peak_ts": dd["peak_ts"], "max_drawdown_trough_ts": dd["trough_ts"],
        "max_drawdown_recovered_ts": dd["recovered_ts"],
        "time_in_market_pct": (100 * sum(1 for s in snaps if s["positions_value"] > 0) / len(snaps)) if snaps else None,
        "avg_exposure_pct": (100 * sum(s["positions_value"] / s["equity"] for s in snaps if s["equity"] > 0) / len(snaps))
        if snaps else None,
        "fees": sum(f["fee"] for f in fills), "fills": len(fills),
        "traded_volume": sum(f["amount"] * f["price"] for f in fills),
        "snapshots": len(snaps),
        **trade_stats(trades, days),
    }
    mtm = _mtm_series(store, mode, since_ms, until_ms)
    equity_at = dict(zip(curve_ts, curve_eq))
    if before:
        equity_at[before["ts"]] = before["equity"]

    def group(kind: str, key: str, syms: list[str]) -> dict:
        tr = [t for t in trades if (t["strategy"] if kind == "strategy" else t["symbol"]) == key]
        fl = [f for f in fills if (f["strategy"] if kind == "strategy" else f["symbol"]) == key]
        g = {kind: key, **trade_stats(tr, days), "fees": sum(f["fee"] for f in fl), "fills": len(fl)}
        g.update(_group_curve([mtm[s] for s in syms if s in mtm], equity_at, start_equity))
        g["pnl"] = g.pop("mtm_pnl")
        return g

    sym_names = sorted(set(mtm) | {t["symbol"] for t in trades} | {f["symbol"] for f in fills})
    strat_syms: dict[str, set] = {}
    for s, v in mtm.items():
        strat_syms.setdefault(v["strategy"], set()).add(s)
    for t in trades:
        if t["strategy"]:
            strat_syms.setdefault(t["strategy"], set())
    if symbols:
        sym_names = [s for s in sym_names if s in symbols]
    per_symbol = [group("symbol", s, [s]) for s in sym_names]
    strat_names = sorted(strat_syms)
    if strategies:
        strat_names = [s for s in strat_names if s in strategies]
    per_strategy = [group("strategy", s, sorted(strat_syms[s])) for s in strat_names]

    entries, reg_problem = load_registry(store.home)
    params_of = {}
    for r in store.query("SELECT strategy, json_extract(inputs, '$.params') AS params FROM decisions WHERE id IN "
                         "(SELECT MAX(id) FROM decisions WHERE mode=? GROUP BY strategy)", (mode,)):
        try:
            params_of[r["strategy"]] = json.loads(r["params"]) if r["params"] else None
        except ValueError:
            params_of[r["strategy"]] = None
    predicted = []
    for g in per_strategy:
        name = g["strategy"]
        e = find_expectation(entries, name, params_of.get(name))
        if e is None:
            predicted.append({"strategy": name, "status": NO_EXPECTATION, "comparison": []})
        else:
            predicted.append({"strategy": name, "status": "compared", "registry_id": e.get("id"),
                              "registry_status": e.get("status") or e.get("stage"), "params": e.get("params"),
                              "comparison": compare(expectations_of(e), g)})
    return {"mode": mode, "since_ts": since_ms, "until_ts": until_ms, "generated_ts": int(time.time() * 1000),
            "definitions": "see qts.reports.performance module docstring", "account": account,
            "per_strategy": per_strategy, "per_symbol": per_symbol, "predicted_vs_realized": predicted,
            "registry": {"path": str(store.home.root / "registry" / "strategies.json"), "entries": len(entries),
                         "problem": reg_problem}}


# -- rendering ------------------------------------------------------------------------------------------

def _f(v, kind: str) -> str:
    from .status import money, pct

    if v is None:
        return "-"
    if kind == "money":
        return money(v, True)
    if kind == "pct":
        return pct(v)
    if kind == "upct":
        return pct(v, False)
    if kind == "rate":
        return f"{100 * v:.0f}%"
    if kind == "ratio":
        return f"{v:.2f}"
    if kind == "fee":
        return money(v)
    if kind == "int":
        return f"{int(v)}"
    return str(v)


GROUP_COLS = [("trades", "int"), ("win_rate", "rate"), ("pnl", "money"), ("realized_pnl", "money"),
              ("profit_factor", "ratio"), ("expectancy", "money"), ("sharpe", "ratio"), ("sortino", "ratio"),
              ("max_drawdown_pct", "upct"), ("time_in_market_pct", "upct"), ("fees", "fee")]
GROUP_HEAD = ["trades", "win", "P&L", "realized", "PF", "expect.", "Sharpe", "Sortino", "max DD", "in mkt", "fees"]


def render_performance(d: dict) -> str:
    from .status import iso, money, pct, table

    a = d["account"]
    L = [f"Performance ({d['mode']})  {iso(a['start_ts'])} -> {iso(a['end_ts'])} UTC"
         + (f"  ({a['days']:.2f} days)" if a["days"] else "")]
    if not a["snapshots"] and not a["trades"]:
        L.append("  no equity snapshots or closed trades in this range")
        return "\n".join(L)
    L.append(f"  equity        {money(a['start_equity'])} -> {money(a['end_equity'])}   P&L {money(a['pnl'], True)} "
             f"({pct(a['return_pct'])})")
    L.append(f"  risk          Sharpe {_f(a['sharpe'], 'ratio')}   Sortino {_f(a['sortino'], 'ratio')}   "
             f"volatility {pct(a['volatility_ann_pct'], False)} a year   max drawdown {pct(a['max_drawdown_pct'], False)} "
             f"({money(-a['max_drawdown'])}, {iso(a['max_drawdown_peak_ts'])} -> {iso(a['max_drawdown_trough_ts'])})")
    L.append(f"  trades        {a['trades']} closed   win rate {_f(a['win_rate'], 'rate')}   profit factor "
             f"{_f(a['profit_factor'], 'ratio')}   expectancy {_f(a['expectancy'], 'money')} / trade "
             f"({pct(a['expectancy_pct'])})   avg win {_f(a['avg_win'], 'money')}   avg loss {_f(a['avg_loss'], 'money')}")
    L.append(f"  exposure      in market {pct(a['time_in_market_pct'], False)} of the time   mean exposure "
             f"{pct(a['avg_exposure_pct'], False)} of equity")
    L.append(f"  costs         fees {money(a['fees'])} on {a['fills']} fills   volume {money(a['traded_volume'])}")
    for title, key, rows in (("By strategy", "strategy", d["per_strategy"]), ("By symbol", "symbol", d["per_symbol"])):
        if rows:
            L.append("")
            L.append(title)
            L.append(table([key] + GROUP_HEAD, [[g[key]] + [_f(g[k], kind) for k, kind in GROUP_COLS] for g in rows],
                           align="l" + "r" * len(GROUP_COLS)))
    L.append("")
    L.append("Predicted (strategy registry) vs realized")
    if d["registry"].get("problem"):
        L.append(f"  ! {d['registry']['problem']}")
    if not d["predicted_vs_realized"]:
        L.append(f"  {NO_EXPECTATION}")
    for p in d["predicted_vs_realized"]:
        if p["status"] == NO_EXPECTATION:
            L.append(f"  {p['strategy']}: {NO_EXPECTATION}")
            continue
        L.append(f"  {p['strategy']}" + (f" (registry: {p['registry_status']})" if p.get("registry_status") else ""))
        L.append(table(["metric", "expected", "realized", "difference"],
                       [[c["metric"], f"{c['expected']:.4g}", "-" if c["realized"] is None else f"{c['realized']:.4g}",
                         "-" if c["difference"] is None else f"{c['difference']:+.4g}"] for c in p["comparison"]],
                       align="lrrr", indent=4))
    L.append("")
    L.append("P&L = mark-to-market after fees and slippage; realized = closed trades; PF = profit factor; "
             "Sharpe/Sortino annualized, no risk-free rate.")
    return "\n".join(L)
