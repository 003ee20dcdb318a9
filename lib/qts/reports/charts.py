"""Charts without a browser library: hand-made SVG for the HTML report, a terminal sparkline, and PNGs
through matplotlib's Agg backend (imported only when a PNG is asked for).

The SVG charts are plain markup styled by the report's CSS (classes ``grid``, ``axis``, ``s0``..),
so the report opens offline with no script from anywhere. Each chart also returns the (down-sampled)
data its hover read-out needs.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape

SPARK = "▁▂▃▄▅▆▇█"
PALETTE = ["#4aa3ff", "#f2b134", "#b36bff", "#2ec4b6", "#ff7aa2", "#9ccc65", "#ff8a50", "#90a4ae"]
UP, DOWN = "#26a69a", "#ef5350"


# -- scales and ticks ---------------------------------------------------------------------------------

def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.01 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out, v = [], start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


_TIME_STEPS = [(60_000, "%H:%M"), (300_000, "%H:%M"), (900_000, "%H:%M"), (1_800_000, "%H:%M"),
               (3_600_000, "%H:%M"), (3 * 3_600_000, "%d %b %H:%M"), (6 * 3_600_000, "%d %b %H:%M"),
               (12 * 3_600_000, "%d %b %H:%M"), (86_400_000, "%d %b"), (2 * 86_400_000, "%d %b"),
               (7 * 86_400_000, "%d %b"), (14 * 86_400_000, "%d %b")]


def time_ticks(lo: int, hi: int, n: int = 7) -> list[tuple[int, str]]:
    span = max(1, hi - lo)
    for step, fmt in _TIME_STEPS:
        if span / step <= n:
            first = lo - lo % step + (step if lo % step else 0)
            return [(t, _utc(t, fmt)) for t in range(first, hi + 1, step)]
    # months
    out = []
    d = datetime.fromtimestamp(lo / 1000, timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    months = max(1, round(span / (30.44 * 86_400_000) / n))
    while True:
        m = d.month - 1 + months
        d = d.replace(year=d.year + m // 12, month=m % 12 + 1)
        t = int(d.timestamp() * 1000)
        if t > hi:
            break
        if t >= lo:
            out.append((t, d.strftime("%b %Y")))
    return out


def _utc(ms: int, fmt: str) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime(fmt)


def fmt_num(v: float, kind: str = "money") -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if abs(v) < 1e-9:
        v = 0.0
    if kind == "pct":
        return f"{v:.1f}%" if abs(v) >= 1 or v == 0 else f"{v:.2f}%"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:,.2f}"
    return f"{v:.4g}"


def downsample(xs: list, ys: list, max_points: int = 1500) -> tuple[list, list]:
    """Keep each bucket's first, min, max and last point so spikes survive thinning."""
    n = len(xs)
    if n <= max_points:
        return list(xs), list(ys)
    buckets = max_points // 4
    size = n / buckets
    ox, oy = [], []
    for b in range(buckets):
        i0, i1 = int(b * size), min(n, int((b + 1) * size))
        if i0 >= i1:
            continue
        idx = {i0, i1 - 1}
        seg = range(i0, i1)
        idx.add(min(seg, key=lambda i: ys[i]))
        idx.add(max(seg, key=lambda i: ys[i]))
        for i in sorted(idx):
            ox.append(xs[i])
            oy.append(ys[i])
    return ox, oy


# -- SVG ------------------------------------------------------------------------------------------------

class Frame:
    def __init__(self, width, height, x0, x1, y0, y1, left=64, right=14, top=10, bottom=26):
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)

    @property
    def pw(self):
        return self.w - self.left - self.right

    @property
    def ph(self):
        return self.h - self.top - self.bottom

    def X(self, x):
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.pw

    def Y(self, y):
        return self.top + (1 - (y - self.y0) / (self.y1 - self.y0)) * self.ph


def _axes(f: Frame, y_kind: str, y_ticks=None, x_ticks=True) -> list[str]:
    out = []
    for v in (y_ticks if y_ticks is not None else nice_ticks(f.y0, f.y1, 5)):
        if f.y0 - 1e-9 <= v <= f.y1 + 1e-9:
            y = f.Y(v)
            out.append(f'<line class="grid" x1="{f.left}" x2="{f.w - f.right}" y1="{y:.1f}" y2="{y:.1f}"/>')
            out.append(f'<text class="axis" x="{f.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                       f'{escape(fmt_num(v, y_kind))}</text>')
    if x_ticks:
        for t, label in time_ticks(int(f.x0), int(f.x1), max(3, int(f.pw / 120))):
            x = f.X(t)
            if x + 3.2 * len(label) > f.w or x - 3.2 * len(label) < 0:
                continue  # its label would be cut at the edge
            out.append(f'<line class="grid v" x1="{x:.1f}" x2="{x:.1f}" y1="{f.top}" y2="{f.h - f.bottom}"/>')
            out.append(f'<text class="axis" x="{x:.1f}" y="{f.h - f.bottom + 16}" text-anchor="middle">'
                       f'{escape(label)}</text>')
    out.append(f'<rect class="frame" x="{f.left}" y="{f.top}" width="{f.pw}" height="{f.ph}"/>')
    return out


def _path(f: Frame, xs, ys) -> str:
    return "M" + " L".join(f"{f.X(x):.1f},{f.Y(y):.1f}" for x, y in zip(xs, ys))


def time_chart(chart_id: str, series: list[dict], width: int = 1100, height: int = 260, y_kind: str = "money",
               markers: list[dict] | None = None, stacked: bool = False, zero_line: bool = False,
               y_min: float | None = None, y_max: float | None = None, hover: bool = True) -> tuple[str, dict]:
    """An SVG time chart. ``series``: [{"name", "xs" (ms), "ys", "color"?, "area"? (fill to the zero line
    or the baseline), "dash"?}]. ``markers``: [{"x", "y", "kind": "buy"|"sell", "title"}].
    Returns (svg markup, hover data)."""
    series = [dict(s) for s in series if s.get("xs")]
    markers = markers or []
    if not series:
        return (f'<svg class="chart empty" viewBox="0 0 {width} 60" width="100%"><text class="axis" x="{width / 2}" '
                f'y="34" text-anchor="middle">no data in this range</text></svg>', {})
    for i, s in enumerate(series):
        s.setdefault("color", PALETTE[i % len(PALETTE)])
        s["xs"], s["ys"] = downsample(s["xs"], s["ys"])
    if stacked:
        grid = sorted({x for s in series for x in s["xs"]})
        base = [0.0] * len(grid)
        for s in series:
            m = dict(zip(s["xs"], s["ys"]))
            last = 0.0
            vals = []
            for x in grid:
                last = m.get(x, last)
                vals.append(last)
            s["base"] = list(base)
            base = [b + v for b, v in zip(base, vals)]
            s["top"] = list(base)
            s["gx"] = grid
            s["vals"] = vals
    xs_all = [x for s in series for x in s["xs"]] + [m["x"] for m in markers]
    if stacked:
        ys_all = [y for s in series for y in s["top"]] + [0.0]
    else:
        ys_all = [y for s in series for y in s["ys"]] + [m["y"] for m in markers]
    if zero_line or any(s.get("area") == "zero" for s in series):
        ys_all.append(0.0)
    lo, hi = min(ys_all), max(ys_all)
    pad = (hi - lo) * 0.06 or abs(hi) * 0.01 or 1.0
    lo = y_min if y_min is not None else lo - (0 if (stacked or lo == 0) and lo >= 0 else pad)
    hi = y_max if y_max is not None else hi + pad
    ticks = nice_ticks(lo, hi, 5)
    f = Frame(width, height, min(xs_all), max(xs_all), lo, hi)
    parts = [f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {height}" width="100%" '
             f'data-x0="{f.x0}" data-x1="{f.x1}" data-left="{f.left}" data-pw="{f.pw}" '
             f'data-w="{width}" role="img">']
    parts += _axes(f, y_kind, ticks)
    if zero_line and lo < 0 < hi:
        parts.append(f'<line class="zero" x1="{f.left}" x2="{f.w - f.right}" y1="{f.Y(0):.1f}" y2="{f.Y(0):.1f}"/>')
    for s in series:
        c = s["color"]
        if stacked:
            top = " L".join(f"{f.X(x):.1f},{f.Y(y):.1f}" for x, y in zip(s["gx"], s["top"]))
            bot = " L".join(f"{f.X(x):.1f},{f.Y(y):.1f}" for x, y in reversed(list(zip(s["gx"], s["base"]))))
            parts.append(f'<path d="M{top} L{bot} Z" fill="{c}" fill-opacity="0.55" stroke="{c}" stroke-width="1">'
                         f'<title>{escape(s["name"])}</title></path>')
            continue
        d = _path(f, s["xs"], s["ys"])
        if s.get("area"):
            yb = f.Y(0 if s["area"] == "zero" else lo)
            parts.append(f'<path d="{d} L{f.X(s["xs"][-1]):.1f},{yb:.1f} L{f.X(s["xs"][0]):.1f},{yb:.1f} Z" '
                         f'fill="{c}" fill-opacity="{s.get("opacity", 0.18)}" stroke="none"/>')
        dash = ' stroke-dasharray="5 4"' if s.get("dash") else ""
        parts.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="{s.get("width", 1.6)}"{dash} '
                     f'stroke-linejoin="round"><title>{escape(s["name"])}</title></path>')
    for m in markers:
        x, y = f.X(m["x"]), f.Y(m["y"])
        if m["kind"] == "buy":
            pts, col = f"{x:.1f},{y + 3:.1f} {x - 6:.1f},{y + 13:.1f} {x + 6:.1f},{y + 13:.1f}", UP
        else:
            pts, col = f"{x:.1f},{y - 3:.1f} {x - 6:.1f},{y - 13:.1f} {x + 6:.1f},{y - 13:.1f}", DOWN
        parts.append(f'<polygon class="mk" points="{pts}" fill="{col}" stroke="#0b0f14" stroke-width="0.8">'
                     f'<title>{escape(m.get("title", ""))}</title></polygon>')
    if hover:
        parts.append(f'<line class="cursor" x1="-10" x2="-10" y1="{f.top}" y2="{f.h - f.bottom}"/>')
    parts.append("</svg>")
    data = {"kind": y_kind, "series": [{"name": escape(s["name"]), "color": s["color"],
                                        "xs": s["gx"] if stacked else s["xs"],
                                        "ys": [round(v, 6) for v in (s["vals"] if stacked else s["ys"])]}
                                       for s in series]}
    return "".join(parts), data


def bar_chart(chart_id: str, xs: list[int], ys: list[float], width: int = 1100, height: int = 180,
              y_kind: str = "pct", bar_ms: int = 86_400_000) -> tuple[str, dict]:
    """Bars per period (e.g. daily returns), green up, red down."""
    if not xs:
        return time_chart(chart_id, [], width, height)
    lo, hi = min(ys + [0.0]), max(ys + [0.0])
    pad = (hi - lo) * 0.08 or 1.0
    f = Frame(width, height, min(xs), max(xs) + bar_ms, lo - (pad if lo < 0 else 0), hi + (pad if hi > 0 else 0))
    parts = [f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {height}" width="100%" '
             f'data-x0="{f.x0}" data-x1="{f.x1}" data-left="{f.left}" data-pw="{f.pw}" data-w="{width}" role="img">']
    parts += _axes(f, y_kind)
    parts.append(f'<line class="zero" x1="{f.left}" x2="{f.w - f.right}" y1="{f.Y(0):.1f}" y2="{f.Y(0):.1f}"/>')
    bw = max(1.0, f.X(min(xs) + bar_ms) - f.X(min(xs)) - 2)
    for x, y in zip(xs, ys):
        y0, y1 = f.Y(max(y, 0)), f.Y(min(y, 0))
        parts.append(f'<rect x="{f.X(x) + 1:.1f}" y="{y0:.1f}" width="{bw:.1f}" height="{max(0.5, y1 - y0):.1f}" '
                     f'fill="{UP if y >= 0 else DOWN}"><title>{_utc(x, "%Y-%m-%d")}: {y:+.2f}%</title></rect>')
    parts.append(f'<line class="cursor" x1="-10" x2="-10" y1="{f.top}" y2="{f.h - f.bottom}"/></svg>')
    return "".join(parts), {"kind": y_kind, "series": [{"name": "return", "color": UP, "xs": xs,
                                                         "ys": [round(v, 6) for v in ys]}]}


# -- terminal ---------------------------------------------------------------------------------------------

def sparkline(values: list[float], width: int = 60) -> str:
    """Unicode block sparkline of ``values`` resampled to ``width`` characters (bucket means)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    if len(vals) > width:
        n, out = len(vals), []
        for i in range(width):
            a = int(i * n / width)
            seg = vals[a:max(a + 1, int((i + 1) * n / width))]
            out.append(sum(seg) / len(seg))
        vals = out
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        return SPARK[3] * len(vals)
    return "".join(SPARK[min(7, int((v - lo) / (hi - lo) * 7.999))] for v in vals)


# -- PNG (matplotlib, Agg) -------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def metric_png(path, name: str, ts: list[int], values: list[float], title_extra: str = "") -> None:
    plt = _plt()
    import matplotlib.dates as mdates

    xs = [datetime.fromtimestamp(t / 1000, timezone.utc) for t in ts]
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=110)
    ax.plot(xs, values, color=PALETTE[0], lw=1.4, marker="o" if len(xs) < 60 else None, ms=3)
    ax.set_title(f"{name}{title_extra}", loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=timezone.utc))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
