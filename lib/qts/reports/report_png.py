"""`qts report --png`: the HTML report's sections as one PNG (matplotlib, Agg; imported only here).

Sections, in the HTML's order and under the HTML's headings: Equity, Drawdown from peak, Positions over time,
Trades on price (one panel per symbol, buys and sells marked), Daily returns, and a text panel with By
strategy, Predicted vs realized and Gate refusals. A report of the generated market says SYNTHETIC in its
title and across every panel. The section headings are also written into the PNG's text metadata
("Sections"), so a reader (or a test) can see what the image holds without looking at it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .charts import DOWN, PALETTE, UP

SYNTHETIC_NOTE = "SYNTHETIC market: generated prices, not real"


def _dt(ts):
    return [datetime.fromtimestamp(t / 1000, timezone.utc) for t in ts]


def sections_png(path, g: dict, title: str) -> list[str]:
    """Draw the report ``g`` (reports.html.gather) into ``path``. Returns the section headings drawn."""
    from .charts import _plt
    from .periods import _day_key, period_returns

    plt = _plt()
    import matplotlib.dates as mdates

    snaps = g["snaps"]
    ts = [s["ts"] for s in snaps]
    eq = [s["equity"] for s in snaps]
    peak, dd = None, []
    for e in eq:
        peak = e if peak is None else max(peak, e)
        dd.append(100 * (peak - e) / peak if peak else 0.0)
    fills = [f for f in g["fills"] if not ts or f["ts"] >= ts[0]]
    symbols = sorted({d["symbol"] for d in g["decisions"]})[:4]
    perf = g["perf"]
    a = perf["account"]

    heights = [3, 1.2, 1.6] + [1.6] * len(symbols) + [1.3, 2.4]
    fig, axes = plt.subplots(len(heights), 1, figsize=(11, sum(heights) * 1.05 + 0.8), dpi=100,
                             gridspec_kw={"height_ratios": heights})
    sections: list[str] = []
    synthetic = bool(g.get("synthetic"))
    head = f"{title}: equity {a['end_equity'] or 0:,.2f} ({(a['return_pct'] or 0):+.2f}%), max drawdown " \
           f"{(a['max_drawdown_pct'] or 0):.2f}%"
    fig.suptitle(head + (f"\n{SYNTHETIC_NOTE}" if synthetic else ""), x=0.01, ha="left", fontsize=11,
                 color="#b42318" if synthetic else "black")
    xs = _dt(ts)
    i = 0

    def section(ax, name):
        sections.append(name)
        ax.set_title(name, loc="left", fontsize=10, fontweight="bold")
        ax.grid(alpha=0.3)
        if synthetic:
            ax.text(0.5, 0.5, "SYNTHETIC", transform=ax.transAxes, fontsize=28, color="#b42318", alpha=0.12,
                    ha="center", va="center", rotation=12)

    ax = axes[i]; i += 1  # noqa: E702
    section(ax, "Equity")
    if xs:
        ax.plot(xs, eq, color="#1f77b4", lw=1.4)
    ax = axes[i]; i += 1  # noqa: E702
    section(ax, "Drawdown from peak")
    if xs:
        ax.fill_between(xs, [-d for d in dd], 0, color=DOWN, alpha=0.5, lw=0)
    ax.set_ylabel("%")
    ax = axes[i]; i += 1  # noqa: E702
    section(ax, "Positions over time")
    pos = _positions_over_time(ts, g)
    if xs and pos:
        ax.stackplot(xs, *pos.values(), labels=list(pos), colors=PALETTE[:len(pos)], alpha=0.8)
        ax.legend(loc="upper left", fontsize=8, ncol=len(pos))
    for sym in symbols:
        ax = axes[i]; i += 1  # noqa: E702
        section(ax, f"Trades on price: {sym}")
        d = [x for x in g["decisions"] if x["symbol"] == sym and x["price"] is not None]
        ax.plot(_dt([x["ts"] for x in d]), [x["price"] for x in d], color="#667085", lw=1)
        for side, marker, color in (("buy", "^", UP), ("sell", "v", DOWN)):
            f = [x for x in fills if x["symbol"] == sym and x["side"] == side]
            if f:
                ax.scatter(_dt([x["ts"] for x in f]), [x["price"] for x in f], marker=marker, color=color, s=36, zorder=3)
    ax = axes[i]; i += 1  # noqa: E702
    section(ax, "Daily returns")
    days = period_returns(ts, eq, a.get("start_equity"), _day_key)
    if days:
        ax.bar(_dt([d[0] + 43_200_000 for d in days]), [d[2] for d in days], width=0.8,
               color=[UP if d[2] >= 0 else DOWN for d in days])
    ax.set_ylabel("%")
    for ax in axes[:i]:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=timezone.utc))
        ax.tick_params(labelsize=8)
    ax = axes[i]
    ax.axis("off")
    lines = ["By strategy"]
    for s in perf["per_strategy"]:
        lines.append(f"  {s['strategy']:16} trades {s.get('trades') or 0:4}   P&L {s.get('pnl') or 0:+,.2f}   "
                     f"fees {s.get('fees') or 0:,.2f}   win rate "
                     + ("-" if s.get("win_rate") is None else f"{100 * s['win_rate']:.0f}%"))
    lines.append("Predicted vs realized")
    for p in perf["predicted_vs_realized"]:
        if not p["comparison"]:
            lines.append(f"  {p['strategy']:16} {p['status']}")
        for c in p["comparison"]:
            lines.append(f"  {p['strategy']:16} {c['metric']:16} expected {c['expected']:.4g}   realized "
                         + ("-" if c["realized"] is None else f"{c['realized']:.4g}"))
    lines.append(f"Gate refusals ({g['refusals']})")
    for r in g["refusal_codes"][:6]:
        lines.append(f"  {r['code'] or '-':28} x{r['n']}")
    sections += ["By strategy", "Predicted vs realized", "Gate refusals"]
    ax.text(0, 1, "\n".join(lines[:24]), va="top", ha="left", family="monospace", fontsize=8.5, transform=ax.transAxes)
    if synthetic:
        ax.text(0.98, 0.02, SYNTHETIC_NOTE, transform=ax.transAxes, ha="right", va="bottom", color="#b42318",
                fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if not synthetic else 0.95))
    fig.savefig(path, metadata={"Title": head + (f" ({SYNTHETIC_NOTE})" if synthetic else ""),
                                "Description": "Sections: " + " | ".join(sections)})
    plt.close(fig)
    return sections


def _positions_over_time(ts: list[int], g: dict) -> dict[str, list[float]]:
    """Value per symbol at each snapshot: the amount held (from the fills) times the last decision price."""
    import bisect

    if not ts:
        return {}
    out: dict[str, list[float]] = {}
    by_sym: dict[str, list] = {}
    for f in g["fills"]:
        by_sym.setdefault(f["symbol"], []).append(f)
    prices: dict[str, tuple[list, list]] = {}
    for d in g["decisions"]:
        if d["price"] is not None:
            p = prices.setdefault(d["symbol"], ([], []))
            p[0].append(d["ts"])
            p[1].append(d["price"])
    for sym, fl in by_sym.items():
        fl.sort(key=lambda f: f["ts"])
        held, j, vals = 0.0, 0, []
        pts, pvs = prices.get(sym, ([], []))
        for t in ts:
            while j < len(fl) and fl[j]["ts"] <= t:
                held += fl[j]["amount"] if fl[j]["side"] == "buy" else -fl[j]["amount"]
                j += 1
            k = bisect.bisect_right(pts, t) - 1
            vals.append(max(0.0, held) * (pvs[k] if k >= 0 else 0.0))
        if any(vals):
            out[sym] = vals
    return out
