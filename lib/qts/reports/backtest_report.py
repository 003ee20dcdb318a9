"""One backtest as a self-contained HTML report (opens offline) plus a PNG.

Sections: key figures; the independent check (vectorbt's statistics beside ours, and whether its
recomputation agrees: :mod:`qts.research.referee`) when it ran; equity curve; drawdown; monthly
returns heatmap; validation verdict (gates, deflated Sharpe, PBO, walk-forward folds) when the
backtest was validated; the trade list. Charts are
PNGs drawn with matplotlib's Agg canvas (no pyplot, no display) and embedded as ``data:`` URIs; CSS is
inline; there is no script and nothing is fetched from anywhere. The PNG file next to the HTML holds
the equity, drawdown and monthly-returns panels.
"""

from __future__ import annotations

import base64
import io
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import numpy as np

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
MAX_TRADE_ROWS = 1000

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1d232a;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
.sub{color:#5b6673;font-size:13px}.warn{background:#fff4d6;border:1px solid #f0c36d;padding:8px 12px;border-radius:4px;margin:10px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{padding:4px 9px;border-bottom:1px solid #e6eaef;text-align:right}
th{background:#f1f4f7;text-align:right}td.l,th.l{text-align:left}.pos{color:#1b7f4d}.neg{color:#c0392b}
.kpi{display:flex;flex-wrap:wrap;gap:10px}.kpi div{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:8px 12px;min-width:120px}
.kpi b{display:block;font-size:17px}.kpi span{color:#5b6673;font-size:12px}img{max-width:100%;border:1px solid #e6eaef;background:#fff}
.pass{color:#fff;background:#1b7f4d;padding:2px 8px;border-radius:4px}.fail{color:#fff;background:#c0392b;padding:2px 8px;border-radius:4px}
td.heat{text-align:center;min-width:52px}
"""


def _utc(ms, fmt="%Y-%m-%d %H:%M") -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(int(ms) / 1000, timezone.utc).strftime(fmt)


def _num(v, nd=2, pct=False, signed=False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else ("∞" if v > 0 else "-∞")
    if pct:
        v = 100 * v
    s = f"{v:+,.{nd}f}" if signed else f"{v:,.{nd}f}"
    return s + ("%" if pct else "")


def _cls(v) -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) < 1e-12:
        return ""
    return "pos" if v > 0 else "neg"


# -- charts -------------------------------------------------------------------------------------------

def _canvas(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _dates(ts):
    return np.asarray(ts, dtype="datetime64[ms]")


def _draw_equity(ax, result):
    ax.plot(_dates(result.ts), result.equity, color="#2f6fdb", lw=1.2, label="strategy")
    ax.axhline(result.config.init_cash, color="#9aa5b1", lw=0.8, ls="--")
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)


def _drawdown(result) -> np.ndarray:
    from ..returns import drawdown_curve

    return -100 * drawdown_curve(result.equity, result.config.init_cash)


def _draw_dd(ax, result):
    dd = _drawdown(result)
    ax.fill_between(_dates(result.ts), dd, 0, color="#c0392b", alpha=0.35, lw=0)
    ax.plot(_dates(result.ts), dd, color="#c0392b", lw=0.8)
    ax.set_ylabel("drawdown %")
    ax.grid(alpha=0.3)


def _monthly_table(monthly) -> dict[int, dict[int, float]]:
    out: dict[int, dict[int, float]] = {}
    for ts, v in monthly.items():
        out.setdefault(ts.year, {})[ts.month] = float(v)
    return out


def _draw_monthly(ax, table):
    years = sorted(table)
    grid = np.full((len(years), 12), np.nan)
    for i, y in enumerate(years):
        for m, v in table[y].items():
            grid[i, m - 1] = 100 * v
    lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    ax.imshow(grid, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(12), MONTHS, fontsize=8)
    ax.set_yticks(range(len(years)), [str(y) for y in years], fontsize=8)
    for i in range(len(years)):
        for j in range(12):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:+.1f}", ha="center", va="center", fontsize=7)
    ax.set_title("monthly returns %", fontsize=9)


def charts(result, title: str) -> dict[str, bytes]:
    """{"equity", "drawdown", "summary"} PNG bytes."""
    out = {}
    fig = _canvas(11, 3.2)
    _draw_equity(fig.add_subplot(111), result)
    out["equity"] = _png(fig)
    fig = _canvas(11, 2.2)
    _draw_dd(fig.add_subplot(111), result)
    out["drawdown"] = _png(fig)
    table = _monthly_table(result.metrics()["monthly_returns"])
    fig = _canvas(11, 8.5)
    gs = fig.add_gridspec(3, 1, height_ratios=[3, 1.6, max(1.0, 0.45 * len(table) + 0.6)])
    ax = fig.add_subplot(gs[0])
    _draw_equity(ax, result)
    ax.set_title(title, fontsize=11)
    _draw_dd(fig.add_subplot(gs[1], sharex=ax), result)
    if table:
        _draw_monthly(fig.add_subplot(gs[2]), table)
    out["summary"] = _png(fig)
    return out


# -- HTML -----------------------------------------------------------------------------------------------

def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _kpis(m: dict, result) -> str:
    items = [("total return", _num(m["total_return"], pct=True, signed=True), _cls(m["total_return"])),
             ("CAGR", _num(m["cagr"], pct=True, signed=True), _cls(m["cagr"])),
             ("Sharpe", _num(m["sharpe"]), ""), ("Sortino", _num(m["sortino"]), ""),
             ("max drawdown", _num(m["max_drawdown"], pct=True), "neg" if m["max_drawdown"] else ""),
             ("Calmar", _num(m["calmar"]), ""), ("trades", str(m["n_trades"]), ""),
             ("win rate", _num(m["win_rate"], pct=True, nd=1), ""), ("profit factor", _num(m["profit_factor"]), ""),
             ("avg trade", _num(m["avg_trade_return"], pct=True, nd=3, signed=True), _cls(m["avg_trade_return"])),
             ("expectancy", _num(m["expectancy"], signed=True), _cls(m["expectancy"])),
             ("exposure", _num(m["exposure"], pct=True, nd=1), ""),
             ("final equity", _num(m["final_equity"]), "")]
    return '<div class="kpi">' + "".join(f'<div><b class="{c}">{escape(v)}</b><span>{escape(k)}</span></div>'
                                         for k, v, c in items) + "</div>"


REFEREE_ROWS = [("total_return", "total return", dict(pct=True, signed=True)),
                ("cagr", "CAGR", dict(pct=True, signed=True)),
                ("sharpe", "Sharpe", {}), ("max_drawdown", "max drawdown", dict(pct=True)),
                ("win_rate", "win rate", dict(pct=True, nd=1)), ("expectancy", "expectancy", dict(signed=True)),
                ("n_trades", "trades", None), ("final_equity", "final equity", {})]


def _referee_html(ref: dict | None) -> str:
    if not ref:
        return ""
    msg = escape(str(ref.get("message", "")))
    if ref.get("agrees") is False:
        body = f'<p><span class="fail">MISMATCH</span> {msg}</p>'
    elif ref.get("agrees") is None:
        body = f"<p>{msg}</p>"
    else:
        theirs, ours = ref.get("vectorbt", {}), ref.get("ours", {})
        rows = "".join(
            f"<tr data-stat='{k}'><td class='l'>{escape(label)}</td>"
            f"<td class='ours'>{escape(str(ours.get(k)) if fmt is None else _num(ours.get(k), **fmt))}</td>"
            f"<td class='vbt'>{escape(str(theirs.get(k)) if fmt is None else _num(theirs.get(k), **fmt))}</td></tr>"
            for k, label, fmt in REFEREE_ROWS)
        body = (f'<p><span class="pass">AGREES</span> {msg}</p><table class="referee"><tr><th class="l">statistic'
                f'</th><th>ours</th><th>vectorbt</th></tr>{rows}</table>')
    return f'<section id="referee"><h2>Independent check: vectorbt</h2>{body}</section>'


def _monthly_html(table: dict) -> str:
    if not table:
        return "<p>no complete month</p>"
    vals = [abs(v) for y in table.values() for v in y.values()]
    scale = max(vals) if vals else 1.0
    head = '<tr><th class="l">year</th>' + "".join(f"<th>{m}</th>" for m in MONTHS) + "<th>year</th></tr>"
    rows = []
    for y in sorted(table):
        cells = []
        comp = 1.0
        for m in range(1, 13):
            v = table[y].get(m)
            if v is None:
                cells.append('<td class="heat"></td>')
                continue
            comp *= 1 + v
            a = min(1.0, abs(v) / scale) * 0.75 if scale else 0
            bg = f"rgba(27,127,77,{a:.2f})" if v >= 0 else f"rgba(192,57,43,{a:.2f})"
            cells.append(f'<td class="heat" style="background:{bg}">{100 * v:+.1f}%</td>')
        yr = comp - 1
        rows.append(f'<tr><td class="l">{y}</td>{"".join(cells)}<td class="{_cls(yr)}">{100 * yr:+.1f}%</td></tr>')
    return f'<table class="heatmap">{head}{"".join(rows)}</table>'


def _trades_html(result) -> str:
    trades = result.trades
    if not trades:
        return "<p>no trade</p>"
    shown = trades[-MAX_TRADE_ROWS:]
    head = ("<tr><th>#</th><th class='l'>entry (UTC)</th><th class='l'>exit (UTC)</th><th>bars</th><th>amount</th>"
            "<th>entry price</th><th>exit price</th><th>fees</th><th>P&amp;L</th><th>return</th></tr>")
    rows = []
    first = len(trades) - len(shown)
    for i, t in enumerate(shown, first + 1):
        bars = (t.exit_bar - t.entry_bar) if t.exit_bar is not None else (result.stop - t.entry_bar)
        rows.append(f"<tr><td>{i}</td><td class='l'>{_utc(t.entry_ts)}</td>"
                    f"<td class='l'>{_utc(t.exit_ts) if t.exit_ts is not None else 'open'}</td><td>{bars}</td>"
                    f"<td>{t.amount:.6g}</td><td>{t.entry_price:,.4f}</td><td>{t.exit_price:,.4f}</td>"
                    f"<td>{t.entry_fee + t.exit_fee:,.2f}</td><td class='{_cls(t.pnl)}'>{t.pnl:+,.2f}</td>"
                    f"<td class='{_cls(t.ret)}'>{100 * t.ret:+.2f}%</td></tr>")
    note = f"<p class='sub'>showing the last {len(shown)} of {len(trades)} trades</p>" if first else ""
    return f"{note}<table class='trades'>{head}{''.join(rows)}</table>"


def _validation_html(v) -> str:
    if v is None:
        return ("<p>not validated. Run <code>qts backtest STRATEGY ... --validate</code> for walk-forward, "
                "deflated Sharpe, PBO and look-ahead gates.</p>")
    verdict = v.verdict
    badge = '<span class="pass">PASS</span>' if verdict.passed else '<span class="fail">FAIL</span>'
    rows = "".join(f"<tr><td class='l'>{escape(c.name)}</td><td>{escape(_fmt(c.value))}</td>"
                   f"<td>{escape(_fmt(c.threshold))}</td><td class='l'>{'pass' if c.passed else '<b>FAIL</b>'}</td>"
                   f"<td class='l'>{escape(c.message)}</td></tr>" for c in verdict.checks)
    wf = v.walk_forward
    folds = "".join(f"<tr><td>{f.index + 1}</td><td class='l'>{f.train[0]}..{f.train[1]}</td>"
                    f"<td class='l'>{f.test[0]}..{f.test[1]}</td><td class='l'>{escape(str(f.best_params))}</td>"
                    f"<td>{_num(f.is_stats.get('sharpe'))}</td><td>{_num(f.oos_stats.get('sharpe'))}</td>"
                    f"<td>{int(f.oos_stats.get('n_trades', 0))}</td></tr>" for f in wf.folds)
    st = wf.stats
    return (f"<p>verdict {badge} &nbsp; trials {v.n_trials} &nbsp; deflated Sharpe "
            f"{_num(v.dsr.dsr if v.dsr else None, 3)} &nbsp; PBO {_num(v.pbo.pbo if v.pbo else None, 3)} &nbsp; "
            f"selected {escape(str(v.best_params))}</p>"
            "<table><tr><th class='l'>gate</th><th>value</th><th>threshold</th><th class='l'>result</th>"
            f"<th class='l'>detail</th></tr>{rows}</table>"
            f"<p>walk-forward out-of-sample (stitched): return {_num(st.get('total_return'), pct=True, signed=True)}, "
            f"Sharpe {_num(st.get('sharpe'))}, max drawdown {_num(st.get('max_drawdown'), pct=True)}, "
            f"trades {st.get('n_trades')}, bars {st.get('bars')}</p>"
            "<table><tr><th>fold</th><th class='l'>train bars</th><th class='l'>test bars</th>"
            f"<th class='l'>chosen in-sample</th><th>IS Sharpe</th><th>OOS Sharpe</th><th>OOS trades</th></tr>{folds}</table>")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def render(result, pngs: dict[str, bytes], *, title: str, validation=None, synthetic: bool = False,
           symbol: str | None = None, notes: list[str] | None = None, referee: dict | None = None) -> str:
    m = result.metrics()
    table = _monthly_table(m["monthly_returns"])
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    cfg = result.config
    warn = ('<div class="warn">SYNTHETIC market: generated prices, not real. These numbers say nothing about '
            'a real market.</div>' if synthetic else "")
    extra = "".join(f'<div class="warn">{escape(n)}</div>' for n in (notes or []))
    sub = (f"{escape(symbol or '')} {escape(result.strategy)} ({escape(params)}) &middot; "
           f"{_utc(result.ts[0] if len(result.ts) else None)} to {_utc(result.ts[-1] if len(result.ts) else None)} "
           f"&middot; {len(result.equity)} bars of {result.timeframe_ms // 60_000} min &middot; fee {cfg.fee_bps:g} bps, "
           f"slippage {cfg.slippage_bps:g} bps, fills at the next bar's open")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{escape(title)}</h1><div class="sub">{sub}</div>{warn}{extra}
<section id="summary"><h2>Key figures</h2>{_kpis(m, result)}</section>{_referee_html(referee)}
<section id="equity"><h2>Equity curve</h2>{_img(pngs['equity'], 'equity curve')}</section>
<section id="drawdown"><h2>Drawdown</h2>{_img(pngs['drawdown'], 'drawdown')}</section>
<section id="monthly"><h2>Monthly returns</h2>{_monthly_html(table)}</section>
<section id="validation"><h2>Validation verdict</h2>{_validation_html(validation)}</section>
<section id="trades"><h2>Trades</h2>{_trades_html(result)}</section>
<p class="sub">Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by qts backtest. One
backtest is not evidence of an edge: see the validation verdict and the paper stage.</p>
</body></html>
"""


def write_backtest_report(result, out: str | Path, *, validation=None, title: str | None = None,
                          synthetic: bool = False, symbol: str | None = None, notes: list[str] | None = None,
                          png: str | Path | None = None, referee: dict | None = None) -> dict[str, Path]:
    """Write ``out`` (HTML) and a PNG (``png``, default: ``out`` with .png). Returns both paths.
    ``referee``: :func:`qts.research.referee.report_check`'s dict, shown beside the key figures."""
    from ..fsutil import write_atomic

    out = Path(out)
    png_path = Path(png) if png else out.with_suffix(".png")
    title = title or f"Backtest: {result.strategy}" + (f" on {symbol}" if symbol else "")
    pngs = charts(result, title)
    html = render(result, pngs, title=title, validation=validation, synthetic=synthetic, symbol=symbol, notes=notes,
                  referee=referee)
    write_atomic(out, html, mode=0o644)
    write_atomic(png_path, pngs["summary"], mode=0o644)
    return {"html": out, "png": png_path}
