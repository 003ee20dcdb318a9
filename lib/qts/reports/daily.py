"""The daily summary of one UTC day: P&L by strategy and symbol, fees, refusals by reason, predicted vs
realized (strategy registry), registry changes and the alerts raised, from the database and the registry
file alone (``qts summary --day YYYY-MM-DD``).

The loop sends it to the notification sinks once a day when ``QTS_SUMMARY_AT=HH:MM`` (UTC) is set: after
the first cycle at or past that time of day, the summary of the PREVIOUS day (complete by then) goes out,
once (an events row ``kind='summary'`` records it, so a restarted loop does not send it twice). The time is
the cycle's: a replay sends the summaries of the simulated days as it crosses them. Without a loop, cron:
``5 0 * * * qts --home HOME summary --day yesterday --send``.
"""

from __future__ import annotations

import collections
import json
import re
import time
from datetime import datetime, timezone

DAY_MS = 86_400_000
SUMMARY_AT_ENV = "QTS_SUMMARY_AT"


class DayError(ValueError):
    pass


def parse_day(spec: str, now_ms: int | None = None) -> int:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` (UTC) -> the day's first millisecond."""
    s = (spec or "").strip().lower()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if s in ("today", "yesterday"):
        d0 = now - now % DAY_MS
        return d0 - (DAY_MS if s == "yesterday" else 0)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        raise DayError(f"expected YYYY-MM-DD, today or yesterday, got {spec!r}")
    try:
        d = datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise DayError(f"not a date: {spec!r}") from None
    return int(d.timestamp() * 1000)


def day_name(day0: int) -> str:
    return datetime.fromtimestamp(day0 / 1000, timezone.utc).strftime("%Y-%m-%d")


def daily_summary(store, day0: int, mode: str = "paper") -> dict:
    from .performance import performance

    lo, hi = day0, day0 + DAY_MS - 1
    perf = performance(store, mode, lo, hi)
    a = perf["account"]
    refusals: collections.Counter = collections.Counter()
    for r in store.query("SELECT data FROM events WHERE kind='gate' AND ts>=? AND ts<=?", (lo, hi)):
        try:
            d = json.loads(r["data"])
        except ValueError:
            d = {}
        if d.get("mode", mode) == mode:
            refusals[str(d.get("code") or "?")] += 1
    alerts: collections.Counter = collections.Counter()
    for r in store.query("SELECT json_extract(data, '$.alert') AS k FROM events WHERE kind='notify' AND ts>=? AND "
                         "ts<=? AND json_extract(data, '$.alert') IS NOT NULL", (lo, hi)):
        alerts[r["k"]] += 1
    decisions = store.scalar("SELECT COUNT(*) FROM decisions WHERE mode=? AND ts>=? AND ts<=?", (mode, lo, hi))

    def group(g: dict, key: str) -> dict:
        return {key: g[key], "pnl": g.get("pnl"), "realized_pnl": g.get("realized_pnl"), "fees": g.get("fees"),
                "trades": g.get("trades"), "fills": g.get("fills"), "win_rate": g.get("win_rate")}

    return {
        "day": day_name(day0), "mode": mode, "since_ts": lo, "until_ts": hi,
        "account": {"start_equity": a["start_equity"], "end_equity": a["end_equity"], "pnl": a["pnl"],
                    "return_pct": a["return_pct"], "fees": a["fees"], "fills": a["fills"], "trades": a["trades"],
                    "max_drawdown_pct": a["max_drawdown_pct"], "decisions": decisions},
        "per_strategy": [group(g, "strategy") for g in perf["per_strategy"]],
        "per_symbol": [group(g, "symbol") for g in perf["per_symbol"]],
        "refusals": dict(refusals.most_common()),
        "predicted_vs_realized": perf["predicted_vs_realized"],
        "registry_changes": registry_changes(store.home, lo, hi),
        "alerts": dict(alerts.most_common()),
    }


def registry_changes(home, lo: int, hi: int) -> list[dict]:
    from ..registry.core import registry_path

    try:
        raw = json.loads(registry_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for rec in raw.get("history", []) if isinstance(raw, dict) else []:
        if isinstance(rec, dict) and isinstance(rec.get("ts"), int) and lo <= rec["ts"] <= hi:
            out.append({k: rec.get(k) for k in ("ts", "action", "entry_id", "from_stage", "to_stage", "detail")})
    return out


def _m(v) -> str:
    return "-" if v is None else f"{v:+,.2f}"


def render_daily(d: dict) -> str:
    a = d["account"]
    L = [f"Daily summary {d['day']} (UTC, {d['mode']})"]
    if a["start_equity"] is None and not a["decisions"]:
        L.append("  no cycles ran on this day")
    else:
        L.append(f"  equity   {a['start_equity'] or 0:,.2f} -> {a['end_equity'] or 0:,.2f}   P&L {_m(a['pnl'])}"
                 + (f" ({a['return_pct']:+.2f}%)" if a["return_pct"] is not None else "")
                 + f"   fees {a['fees']:,.2f} on {a['fills']} fills   {a['trades']} closed trades   "
                   f"{a['decisions']} decisions")
    for title, key in (("by strategy", "per_strategy"), ("by symbol", "per_symbol")):
        for g in d[key]:
            name = g.get("strategy") or g.get("symbol")
            L.append(f"  {title:12} {name:14} P&L {_m(g['pnl']):>10}   realized {_m(g['realized_pnl']):>10}   "
                     f"fees {g['fees'] or 0:,.2f}   trades {g['trades'] or 0}")
    L.append("  refusals     " + (", ".join(f"{k} x{v}" for k, v in d["refusals"].items()) or "none"))
    for p in d["predicted_vs_realized"]:
        if p.get("status") != "compared":
            L.append(f"  predicted    {p['strategy']}: {p.get('status')}")
            continue
        L.append(f"  predicted    {p['strategy']}: " + ", ".join(
            f"{c['metric']} {c['expected']:.4g} vs {'-' if c['realized'] is None else format(c['realized'], '.4g')}"
            for c in p["comparison"]))
    L.append("  registry     " + ("; ".join(f"{c['action']} {c.get('entry_id') or ''} {c.get('from_stage') or ''}"
                                            f"->{c.get('to_stage') or ''}".strip() for c in d["registry_changes"])
                                  or "no changes"))
    L.append("  alerts       " + (", ".join(f"{k} x{v}" for k, v in d["alerts"].items()) or "none"))
    return "\n".join(L)


def send_summary(home, d: dict, source: str | None = None) -> int:
    """To every configured sink (a report: not held back by the level routing). Returns sinks that took it.
    ``source``: the loop's feed; summaries of replays follow QTS_NOTIFY_REPLAY like trades."""
    from ..notify import _is_replay, get_notifier
    from ..notify.core import Event

    n = get_notifier(home)
    if n is None or (source is not None and _is_replay(source) and not n.send_replays):
        return 0
    a = d["account"]
    title = f"Daily summary {d['day']} ({d['mode']}): P&L {_m(a['pnl'])}, fees {a['fees']:,.2f}, " \
            f"{sum(d['refusals'].values())} refusals"
    return n.notify(Event("summary", title, render_daily(d), "info", {"summary": d}))


def summary_at(home) -> tuple[int, int] | None:
    """QTS_SUMMARY_AT (environment or the state home's .env) as (hour, minute); None when unset or
    malformed (a bad value never stops the loop; ``qts notify status`` shows it)."""
    from ..notify import _env

    raw = _env(home).get(SUMMARY_AT_ENV)
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", raw or "")
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        return None
    return int(m.group(1)), int(m.group(2))


def maybe_send_daily(home, store, cycle_ts: int, mode: str = "paper", source: str | None = None) -> str | None:
    """Called by the loop's runner after each cycle. Sends the previous day's summary once, at the first
    cycle at or past QTS_SUMMARY_AT. Returns the day sent, or None. Never raises."""
    try:
        at = summary_at(home)
        if at is None:
            return None
        day0 = cycle_ts - cycle_ts % DAY_MS
        if cycle_ts < day0 + (at[0] * 60 + at[1]) * 60_000:
            return None
        prev = day0 - DAY_MS
        name = day_name(prev)
        if store.scalar("SELECT 1 FROM events WHERE kind='summary' AND json_extract(data, '$.day')=? AND "
                        "json_extract(data, '$.mode')=?", (name, mode)):
            return None
        if not store.scalar("SELECT 1 FROM equity_snapshots WHERE mode=? AND ts>=? AND ts<?", (mode, prev, day0)):
            return None  # the loop did not run that day: nothing to summarize
        d = daily_summary(store, prev, mode)
        store.event("summary", f"daily summary {name} sent", "info", {"day": name, "mode": mode,
                                                                      "pnl": d["account"]["pnl"]})
        send_summary(home, d, source)
        return name
    except Exception as e:
        import logging

        logging.getLogger("qts.notify").warning("daily summary: %s: %s", e.__class__.__name__, e)
        return None


