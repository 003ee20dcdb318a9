"""``qts report``: one self-contained HTML file (opens offline: inline CSS, inline SVG, a few lines of
inline script for the hover read-out; nothing is fetched from anywhere), and optionally a PNG.

Sections: key figures; equity with drawdown; positions over time (value per symbol, stacked);
trades marked on price per symbol (prices from the decisions' ``inputs.price``, fills as markers);
monthly returns heatmap and daily returns; performance by strategy and symbol; predicted (strategy
registry) vs realized; open positions; closed trades; safety events.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from . import charts
from .performance import NO_EXPECTATION, performance
from .periods import _day_key, _month_key, period_returns  # noqa: F401
from .status import collect_status, last_prices

DAY_MS = 86_400_000
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _utc(ms, fmt="%Y-%m-%d %H:%M") -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc).strftime(fmt)


def _m(v, signed=False, nd=2) -> str:
    if v is None:
        return "-"
    return f"{v:+,.{nd}f}" if signed else f"{v:,.{nd}f}"


def _p(v, signed=True, nd=2) -> str:
    if v is None:
        return "-"
    return f"{v:+.{nd}f}%" if signed else f"{v:.{nd}f}%"


def _r(v, nd=2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _cls(v) -> str:
    if v is None or abs(v) < 1e-12:
        return ""
    return "pos" if v > 0 else "neg"


# -- data -----------------------------------------------------------------------------------------------

def gather(store, mode: str = "paper", since_ms: int | None = None, until_ms: int | None = None) -> dict:
    lo = since_ms if since_ms is not None else -1
    hi = until_ms if until_ms is not None else 1 << 62
    perf = performance(store, mode, since_ms, until_ms)
    snaps = store.query("SELECT ts, equity, cash, positions_value FROM equity_snapshots WHERE mode=? AND ts>=? AND ts<=? "
                        "ORDER BY ts, id", (mode, lo, hi))
    decs = store.query("SELECT ts, symbol, strategy, json_extract(inputs, '$.price') AS price, "
                       "json_extract(inputs, '$.source') AS source FROM decisions WHERE mode=? AND ts>=? AND ts<=? "
                       "ORDER BY ts, id", (mode, lo, hi))
    fills = store.query("SELECT f.*, o.strategy, o.reason, o.type FROM fills f LEFT JOIN orders o "
                        "ON o.client_order_id=f.client_order_id WHERE f.mode=? AND f.ts<=? ORDER BY f.ts, f.id", (mode, hi))
    trades = store.query("SELECT * FROM closed_trades WHERE mode=? AND exit_ts>=? AND exit_ts<=? ORDER BY exit_ts DESC, id DESC",
                         (mode, lo, hi))
    events = store.query("SELECT ts, kind, severity, message FROM events WHERE kind IN ('breaker','kill_switch','error','risk') "
                         "AND ts>=? AND ts<=? ORDER BY id DESC LIMIT 40", (lo, hi))
    refusal_codes = store.query(
        "SELECT json_extract(data, '$.code') AS code, COUNT(*) AS n, MIN(ts) AS first, MAX(ts) AS last, "
        "MAX(message) AS example FROM events WHERE kind='gate' AND ts>=? AND ts<=? GROUP BY 1 ORDER BY 2 DESC", (lo, hi))
    refusals = sum(r["n"] for r in refusal_codes)
    return {"perf": perf, "snaps": snaps, "decisions": decs, "fills": fills, "trades": trades, "events": events,
            "refusals": refusals, "refusal_codes": refusal_codes, "since": since_ms, "until": until_ms, "mode": mode,
            "synthetic": any(str(d["source"] or "").startswith("synthetic") for d in decs[-50:]),
            "sources": sorted({str(d["source"]) for d in decs if d["source"]})}


# -- pieces ---------------------------------------------------------------------------------------------

def _heat_color(v, scale) -> str:
    if v is None:
        return "transparent"
    a = min(1.0, abs(v) / scale) if scale > 0 else 0
    r, g, b = (38, 166, 154) if v >= 0 else (239, 83, 80)
    return f"rgba({r},{g},{b},{0.15 + 0.75 * a:.2f})"


def monthly_heatmap(months: list[tuple]) -> str:
    if not months:
        return '<p class="muted">no equity snapshots in this range</p>'
    by_year: dict[int, dict[int, float]] = {}
    for (y, m), _, r in months:
        by_year.setdefault(y, {})[m] = r
    scale = max(abs(r) for _, _, r in months) or 1.0
    head = "".join(f"<th>{m}</th>" for m in MONTHS)
    rows = []
    for y in sorted(by_year):
        cells = []
        total = 1.0
        for m in range(1, 13):
            r = by_year[y].get(m)
            if r is not None:
                total *= 1 + r / 100
            cells.append(f'<td style="background:{_heat_color(r, scale)}" title="{MONTHS[m - 1]} {y}: '
                         f'{"-" if r is None else f"{r:+.2f}%"}">{"" if r is None else f"{r:+.2f}%"}</td>')
        yr = 100 * (total - 1)
        rows.append(f'<tr><th>{y}</th>{"".join(cells)}<td class="yr {_cls(yr)}">{yr:+.2f}%</td></tr>')
    return (f'<table class="heat"><thead><tr><th></th>{head}<th>Year</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _table(headers, rows, num_from=1, cls="data", text_cols=(), wrap_cols=()) -> str:
    def isnum(i):
        return i >= num_from and i not in text_cols

    th = "".join(f'<th class="{"num" if isnum(i) else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r in rows:
        tds = []
        for i, c in enumerate(r):
            if isinstance(c, tuple):  # (text, css class)
                text, k = c
            else:
                text, k = c, ""
            k = (k + " wrap") if i in wrap_cols else k
            tds.append(f'<td class="{"num " if isnum(i) else ""}{k}">{escape(str(text))}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>')
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _group_rows(groups, key):
    out = []
    for g in groups:
        out.append([g[key], g["trades"], "-" if g["win_rate"] is None else f"{100 * g['win_rate']:.0f}%",
                    (_m(g["pnl"], True), _cls(g["pnl"])), (_m(g["realized_pnl"], True), _cls(g["realized_pnl"])),
                    _r(g["profit_factor"]), (_m(g["expectancy"], True), _cls(g["expectancy"])), _r(g["sharpe"]),
                    _r(g["sortino"]), _p(g["max_drawdown_pct"], False), _p(g["time_in_market_pct"], False, 0),
                    _m(g["fees"])])
    return out


GROUP_HEAD = ["P&L", "realized", "profit factor", "expectancy", "Sharpe", "Sortino", "max DD", "in market", "fees"]

CSS = """
:root{--bg:#0b0f14;--panel:#121821;--panel2:#0f141c;--line:#1f2a37;--text:#d7dee8;--muted:#7d8a9a;--up:#26a69a;
--down:#ef5350;--accent:#4aa3ff;--warn:#f2b134}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
header{padding:18px 28px 14px;background:linear-gradient(180deg,#111a26,#0b0f14);border-bottom:1px solid var(--line)}
header h1{margin:0 0 4px;font-size:20px;font-weight:600;letter-spacing:.2px}
header .sub{color:var(--muted);font-size:13px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;margin-left:6px;
vertical-align:2px;border:1px solid var(--line)}
.b-paper{background:#15324a;color:#8cc8ff}.b-live{background:#4a1520;color:#ff9aa5}.b-warn{background:#3d3010;color:#ffd36b}
.b-ok{background:#113b34;color:#7fe0cf}.b-bad{background:#4a1520;color:#ff9aa5}
main{padding:18px 28px 40px;max-width:1400px;margin:0 auto}
.kpis{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin-bottom:18px}
.kpi{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.kpi .l{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.6px}
.kpi .v{font-size:20px;font-weight:600;margin-top:2px;font-variant-numeric:tabular-nums}
.kpi .s{color:var(--muted);font-size:12px;font-variant-numeric:tabular-nums}
section{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:12px 16px 14px;margin-bottom:16px}
section h2{font-size:14px;font-weight:600;margin:0 0 8px;color:#e9eef5}
section h2 small{color:var(--muted);font-weight:400;margin-left:8px}
h3{font-size:13px;margin:10px 0 2px;color:var(--muted);font-weight:600}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media(max-width:1000px){.grid2{grid-template-columns:1fr}}
svg.chart{display:block;width:100%;height:auto;background:var(--panel2);border-radius:6px}
svg .grid{stroke:#1c2633;stroke-width:1}svg .frame{fill:none;stroke:#243142}
svg .axis{fill:var(--muted);font-size:11px;font-family:inherit}svg .zero{stroke:#556274;stroke-dasharray:3 3}
svg .cursor{stroke:#8a96a8;stroke-width:1;stroke-dasharray:2 2}
.legend{display:flex;gap:14px;flex-wrap:wrap;font-size:12px;color:var(--muted);margin:2px 0 6px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
table.data th,table.data td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
table.data th{color:var(--muted);font-weight:500;font-size:12px}
table.data tbody tr:hover{background:#16202c}
table.data td.wrap{white-space:normal;min-width:320px}section{overflow-x:auto}
.num{text-align:right!important}.pos{color:var(--up)}.neg{color:var(--down)}.muted{color:var(--muted)}
table.heat{width:auto}
table.heat th,table.heat td{padding:6px 9px;text-align:center;font-size:12px;border:1px solid var(--bg)}
table.heat th{color:var(--muted);font-weight:500}table.heat td{min-width:62px}table.heat td.yr{font-weight:600}
.scroll{max-height:420px;overflow:auto}
.banner{background:#3d3010;color:#ffd36b;border:1px solid #5a4716;padding:8px 12px;border-radius:6px;margin-bottom:14px}
#tip{position:fixed;display:none;pointer-events:none;background:#0b0f14ee;border:1px solid #2b3a4d;border-radius:6px;
padding:6px 9px;font-size:12px;z-index:10;min-width:160px}#tip .tt{color:var(--muted);margin-bottom:2px}
footer{color:var(--muted);font-size:12px;padding:0 28px 24px;max-width:1400px;margin:0 auto}
"""

JS = """
(function () {
  var el = document.getElementById('chart-data');
  if (!el) { return; }
  var data = JSON.parse(el.textContent);
  var tip = document.getElementById('tip');
  function fmt(v, kind) {
    if (v === null || v === undefined) { return '-'; }
    if (kind === 'pct') { return v.toFixed(2) + '%'; }
    return v.toLocaleString('en-US', {maximumFractionDigits: Math.abs(v) < 10 ? 4 : 2});
  }
  function nearest(xs, x) {
    var lo = 0, hi = xs.length - 1;
    while (hi - lo > 1) { var m = (lo + hi) >> 1; if (xs[m] < x) { lo = m; } else { hi = m; } }
    return Math.abs(xs[lo] - x) <= Math.abs(xs[hi] - x) ? lo : hi;
  }
  function iso(ms) { return new Date(ms).toISOString().slice(0, 16).replace('T', ' '); }
  Array.prototype.forEach.call(document.querySelectorAll('svg.chart[data-x0]'), function (svg) {
    var d = data[svg.id];
    var cur = svg.querySelector('line.cursor');
    if (!d || !cur) { return; }
    var x0 = +svg.getAttribute('data-x0'), x1 = +svg.getAttribute('data-x1');
    var left = +svg.getAttribute('data-left'), pw = +svg.getAttribute('data-pw'), w = +svg.getAttribute('data-w');
    function hide() { tip.style.display = 'none'; cur.setAttribute('x1', -10); cur.setAttribute('x2', -10); }
    svg.addEventListener('mouseleave', hide);
    svg.addEventListener('mousemove', function (ev) {
      var r = svg.getBoundingClientRect();
      var px = (ev.clientX - r.left) * w / r.width;
      if (px < left || px > left + pw) { hide(); return; }
      var t = x0 + (px - left) / pw * (x1 - x0), snap = null, rows = [];
      d.series.forEach(function (s) {
        if (!s.xs.length) { return; }
        var i = nearest(s.xs, t);
        if (snap === null) { snap = s.xs[i]; }
        rows.push('<span style="color:' + s.color + '">&#9632;</span> ' + s.name + ': <b>' + fmt(s.ys[i], d.kind) + '</b>');
      });
      if (snap === null) { return; }
      var sx = left + (snap - x0) / (x1 - x0) * pw;
      cur.setAttribute('x1', sx); cur.setAttribute('x2', sx);
      tip.innerHTML = '<div class="tt">' + iso(snap) + ' UTC</div>' + rows.join('<br>');
      tip.style.display = 'block';
      tip.style.left = Math.min(window.innerWidth - 240, ev.clientX + 14) + 'px';
      tip.style.top = (ev.clientY + 14) + 'px';
    });
  });
})();
"""


def _legend(items) -> str:
    spans = "".join(f'<span><i style="background:{c}"></i>{escape(n)}</span>' for n, c in items)
    return f'<div class="legend">{spans}</div>'


def render_html(g: dict, status: dict | None = None, title: str = "Trading report") -> str:
    from .. import __version__

    perf, a = g["perf"], g["perf"]["account"]
    chart_data: dict = {}
    snaps = g["snaps"]
    ts = [s["ts"] for s in snaps]
    eq = [s["equity"] for s in snaps]
    peak, dd = None, []
    for e in eq:
        peak = e if peak is None else max(peak, e)
        dd.append(-100 * (peak - e) / peak if peak else 0.0)

    # equity + drawdown
    eq_svg, chart_data["eq"] = charts.time_chart("eq", [
        {"name": "equity", "xs": ts, "ys": eq, "color": "#4aa3ff", "area": "base", "width": 1.8, "opacity": 0.12}],
        height=300)
    dd_svg, chart_data["dd"] = charts.time_chart("dd", [
        {"name": "drawdown", "xs": ts, "ys": dd, "color": charts.DOWN, "area": "zero", "opacity": 0.35}],
        height=130, y_kind="pct", y_max=0.0)

    # positions over time: amount after each cycle's fills x that cycle's price
    syms = sorted({d["symbol"] for d in g["decisions"]} | {f["symbol"] for f in g["fills"]})
    colors = {s: charts.PALETTE[i % len(charts.PALETTE)] for i, s in enumerate(syms)}
    fills_by = {s: [f for f in g["fills"] if f["symbol"] == s] for s in syms}
    pos_series, price_charts = [], []
    lo = g["since"] if g["since"] is not None else -1
    for s in syms:
        dec = [d for d in g["decisions"] if d["symbol"] == s and d["price"] is not None]
        fl = fills_by[s]
        amt, fi, xs, ys = 0.0, 0, [], []
        for d in dec:
            while fi < len(fl) and fl[fi]["ts"] <= d["ts"]:
                amt += fl[fi]["amount"] if fl[fi]["side"] == "buy" else -fl[fi]["amount"]
                fi += 1
            xs.append(d["ts"])
            ys.append(max(0.0, amt) * float(d["price"]))
        if any(ys):
            pos_series.append({"name": s, "xs": xs, "ys": ys, "color": colors[s]})
        marks = []
        for f in fl:
            if f["ts"] < lo:
                continue
            marks.append({"x": f["ts"], "y": f["price"], "kind": f["side"],
                          "title": f"{f['side'].upper()} {f['amount']:.6g} {s} @ {f['price']:,.2f}  fee {f['fee']:.2f}"
                                   f"  {_utc(f['ts'])}  {f['reason'] or ''}"
                                   + (f"  realized {f['realized_pnl']:+,.2f}" if f["side"] == "sell" else "")})
        svg, chart_data[f"px{len(price_charts)}"] = charts.time_chart(
            f"px{len(price_charts)}", [{"name": s, "xs": [d["ts"] for d in dec], "ys": [float(d["price"]) for d in dec],
                                        "color": colors[s], "width": 1.3}], height=230, markers=marks)
        nb = sum(1 for m in marks if m["kind"] == "buy")
        price_charts.append(f"<h3>{escape(s)} <span class='muted'>&middot; {nb} buys, {len(marks) - nb} sells</span>"
                            f"</h3>{svg}")
    pos_svg, chart_data["pos"] = charts.time_chart("pos", pos_series, height=220, stacked=True) if pos_series else \
        charts.time_chart("pos", [], height=220)

    months = period_returns(ts, eq, a["start_equity"], _month_key)
    days = period_returns(ts, eq, a["start_equity"], _day_key)
    day_svg, chart_data["daily"] = charts.bar_chart("daily", [d[0] for d in days], [d[2] for d in days], height=170)

    # header
    mode = g["mode"]
    badges = f'<span class="badge b-{"live" if mode == "live" else "paper"}">{mode.upper()}</span>'
    if g["synthetic"]:
        badges += '<span class="badge b-warn">SYNTHETIC DATA</span>'
    if status:
        ks, br = status["kill_switch"], status["breaker"]
        badges += (f'<span class="badge {"b-bad" if ks["engaged"] else "b-ok"}">kill switch '
                   f'{"ENGAGED" if ks["engaged"] else "clear"}</span>')
        badges += (f'<span class="badge {"b-ok" if br["state"] == "closed" else "b-warn"}">breaker {br["state"]} '
                   f'&middot; {br["trading_state"]}</span>')
        badges += f'<span class="badge">loop {escape(str(status["loop"].get("state")))}</span>'
    period = f"{_utc(a['start_ts'])} &rarr; {_utc(a['end_ts'])} UTC" + (f" &middot; {a['days']:.1f} days" if a["days"] else "")

    def kpi(label, value, sub="", cls=""):
        return (f'<div class="kpi"><div class="l">{label}</div><div class="v {cls}">{value}</div>'
                f'<div class="s">{sub}</div></div>')

    kpis = "".join([
        kpi("Equity", _m(a["end_equity"]), f"from {_m(a['start_equity'])}"),
        kpi("Net P&amp;L", _m(a["pnl"], True), _p(a["return_pct"]), _cls(a["pnl"])),
        kpi("Max drawdown", _p(a["max_drawdown_pct"], False), _m(-a["max_drawdown"]) if a["max_drawdown"] else "",
            "neg" if a["max_drawdown_pct"] else ""),
        kpi("Sharpe", _r(a["sharpe"]), f"Sortino {_r(a['sortino'])}"),
        kpi("Win rate", "-" if a["win_rate"] is None else f"{100 * a['win_rate']:.0f}%",
            f"{a['wins']} of {a['trades']} trades"),
        kpi("Profit factor", _r(a["profit_factor"]), f"payoff {_r(a['payoff_ratio'])}"),
        kpi("Expectancy", _m(a["expectancy"], True), f"{_p(a['expectancy_pct'])} per trade", _cls(a["expectancy"])),
        kpi("Exposure", _p(a["time_in_market_pct"], False, 0), f"mean {_p(a['avg_exposure_pct'], False, 1)} of equity"),
        kpi("Fees", _m(a["fees"]), f"{a['fills']} fills &middot; {g['refusals']} refusals"),
    ])

    # tables
    pos_rows = []
    for p in (status or {}).get("positions", []):
        pos_rows.append([p["symbol"], f"{p['amount']:.6g}", _m(p["avg_entry"]), _m(p["mark"]), _m(p["value"]),
                         (_m(p["unrealized_pnl"], True), _cls(p["unrealized_pnl"])),
                         (_p(p["unrealized_pct"]), _cls(p["unrealized_pct"])), _utc(p["opened_ts"])])
    trade_rows = [[_utc(t["exit_ts"]), t["symbol"], t["strategy"] or "-", f"{t['amount']:.6g}", _m(t["entry_price"]),
                   _m(t["exit_price"]), (_m(t["pnl"], True), _cls(t["pnl"])), (_p(t["return_pct"]), _cls(t["return_pct"])),
                   f"{(t['exit_ts'] - t['entry_ts']) / 60000:.0f} min", t["exit_reason"] or "-"]
                  for t in g["trades"][:200]]
    pred = []
    for p in perf["predicted_vs_realized"]:
        if p["status"] == NO_EXPECTATION:
            pred.append([p["strategy"], "-", NO_EXPECTATION, "", ""])
        for c in p["comparison"]:
            pred.append([p["strategy"], c["metric"], f"{c['expected']:.4g}",
                         "-" if c["realized"] is None else f"{c['realized']:.4g}",
                         ("-" if c["difference"] is None else f"{c['difference']:+.4g}", _cls(c["difference"]))])
    ref_rows = [[r["code"] or "-", r["n"], _utc(r["first"]), _utc(r["last"]), (r["example"] or "")[:300]]
                for r in g["refusal_codes"]]
    ev_rows = [[_utc(e["ts"]), e["kind"], (e["severity"], "neg" if e["severity"] in ("error", "critical") else ""),
                e["message"][:300]] for e in g["events"]]

    banner = ""
    if g["synthetic"]:
        banner = ('<div class="banner">These results come from a SYNTHETIC (generated) market: the prices are not real. '
                  'Use them to check the machinery, not to judge the strategy.</div>')
    generated = _utc(int(time.time() * 1000))
    strat_table = _table(["strategy", "trades", "win rate"] + GROUP_HEAD, _group_rows(perf["per_strategy"], "strategy"))
    trades_table = _table(["exit", "symbol", "strategy", "amount", "entry", "exit price", "P&L", "return", "held",
                           "exit reason"], trade_rows, num_from=3, text_cols=(9,))
    events_table = _table(["time", "kind", "severity", "message"], ev_rows, num_from=99, wrap_cols=(3,))
    data_json = json.dumps(chart_data, separators=(",", ":")).replace("</", "<\\/")
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>{escape(title)}{badges}</h1>
<div class="sub">{period} &middot; source {escape(", ".join(g["sources"]) or "-")} &middot; generated {generated} UTC</div>
</header>
<main>
{banner}
<div class="kpis">{kpis}</div>
<section><h2>Equity <small>cash + positions at the loop's prices, every cycle; hover for values</small></h2>{eq_svg}
<h3>Drawdown from peak</h3>{dd_svg}</section>
<section><h2>Positions over time <small>value per symbol at the loop's prices, stacked</small></h2>
{_legend([(s["name"], s["color"]) for s in pos_series])}{pos_svg}</section>
<section><h2>Trades on price <small>&#9650; buy &middot; &#9660; sell; hover a marker for the fill</small></h2>
{"".join(price_charts) or '<p class="muted">no decisions in this range</p>'}</section>
<section><h2>Monthly returns</h2>{monthly_heatmap(months)}
<h3>Daily returns</h3>{day_svg}</section>
<section><h2>By strategy</h2>{strat_table}
<h3>By symbol</h3>{_table(["symbol", "trades", "win rate"] + GROUP_HEAD, _group_rows(perf["per_symbol"], "symbol"))}
<p class="muted">P&amp;L: mark-to-market after fees and slippage over the range; realized: closed round trips.
Sharpe and Sortino annualized (365 days), no risk-free rate.</p></section>
<section><h2>Predicted vs realized <small>expectations from the strategy registry</small></h2>
{_table(["strategy", "metric", "expected", "realized", "difference"], pred, num_from=2)}</section>
<section><h2>Open positions <small>marked at the last recorded decision price</small></h2>
{_table(["symbol", "amount", "entry", "mark", "value", "unrealized", "%", "opened"], pos_rows, text_cols=(7,))}</section>
<section><h2>Closed trades <small>{len(g["trades"])} in range, newest first</small></h2><div class="scroll">
{trades_table}
</div></section>
<section><h2>Gate refusals <small>{g["refusals"]} orders refused in range, by reason code</small></h2>
{_table(["reason code", "refusals", "first", "last", "example"], ref_rows, num_from=1, text_cols=(2, 3, 4),
         wrap_cols=(4,))}</section>
<section><h2>Safety events</h2><div class="scroll">{events_table}</div></section>
</main>
<footer>quant-trading-system {escape(__version__)} &middot; database {escape(str((status or {}).get("database") or "-"))}
&middot; all times UTC &middot; this file is self-contained and opens offline</footer>
<div id="tip"></div>
<script type="application/json" id="chart-data">{data_json}</script>
<script>{JS}</script>
</body></html>
"""
    return html


def write_report(home, out: Path | None = None, mode: str | None = None, since_ms: int | None = None,
                 until_ms: int | None = None, png: bool | Path = False, title: str | None = None, store=None) -> dict:
    """Write the HTML report (and a PNG when asked). Returns {"html": path, "png": path or None, ...}."""
    own = store is None
    if own:
        from ..store import Store

        if not home.db_path.exists():
            raise FileNotFoundError(f"no database at {home.db_path}: run `qts run` first")
        store = Store.open(home)
    try:
        status = collect_status(home, store=store)
        mode = mode or status["mode"]
        g = gather(store, mode, since_ms, until_ms)
        title = title or f"Trading report \u00b7 {mode}"
        html = render_html(g, status, title)
        out = Path(out) if out else home.root / "reports" / f"report-{time.strftime('%Y%m%d-%H%M%S')}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
        png_path = None
        if png:
            from .report_png import sections_png  # matplotlib: only when a PNG is asked for

            png_path = Path(png) if not isinstance(png, bool) else out.with_suffix(".png")
            sections_png(png_path, g, title)  # the HTML's sections, labelled SYNTHETIC when they are
        return {"html": str(out), "png": str(png_path) if png_path else None, "bytes": len(html.encode()),
                "account": g["perf"]["account"]}
    finally:
        if own:
            store.close()


__all__ = ["gather", "render_html", "write_report", "period_returns", "monthly_heatmap", "last_prices"]
