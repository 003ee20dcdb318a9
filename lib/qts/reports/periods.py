"""Returns per period (day, month) from an equity series: the HTML report's heatmaps and the PNG's panels."""

from __future__ import annotations

from datetime import datetime, timezone

DAY_MS = 86_400_000


def period_returns(ts: list[int], eq: list[float], start_equity: float | None, key) -> list[tuple]:
    """[(period key, first ts, return %)] from each period's last equity vs the previous period's last."""
    out = []
    prev = start_equity
    cur_key, cur_last, cur_first = None, None, None
    for t, e in zip(ts, eq):
        k = key(t)
        if k != cur_key and cur_key is not None:
            if prev:
                out.append((cur_key, cur_first, 100 * (cur_last / prev - 1)))
            prev = cur_last
            cur_first = None
        cur_key, cur_last = k, e
        cur_first = t if cur_first is None else cur_first
    if cur_key is not None and prev:
        out.append((cur_key, cur_first, 100 * (cur_last / prev - 1)))
    return out


def _month_key(t):
    d = datetime.fromtimestamp(t / 1000, timezone.utc)
    return (d.year, d.month)


def _day_key(t):
    return t - t % DAY_MS
