"""Custom metrics: validated names, finite values, string tags."""

from __future__ import annotations

import json
import math
import re

from .store import Store, now_ms

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")
TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,49}$")


class MetricError(ValueError):
    pass


def write_metric(store: Store, name: str, value, tags: dict | None = None, ts: int | None = None) -> dict:
    if not NAME_RE.match(name or ""):
        raise MetricError(f"name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter (max 100)")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MetricError(f"value {value!r}: not a number") from None
    if not math.isfinite(v):
        raise MetricError(f"value {value!r}: must be finite (no NaN or infinity)")
    tags = dict(tags or {})
    for k, tv in tags.items():
        if not TAG_RE.match(k):
            raise MetricError(f"tag {k!r}: use letters, digits, '.', '_' or '-', starting with a letter")
        if not isinstance(tv, str) or len(tv) > 200:
            raise MetricError(f"tag {k}: value must be text of at most 200 characters")
    row = {"name": name, "value": v, "tags": tags, "ts": ts if ts is not None else now_ms()}
    store.metric(name, v, tags, row["ts"])
    return row


def read_metric(store: Store, name: str, limit: int = 20) -> list[dict]:
    rows = store.query("SELECT name, value, ts, tags FROM metrics WHERE name=? ORDER BY ts DESC, id DESC LIMIT ?",
                       (name, limit))
    for r in rows:
        r["tags"] = json.loads(r["tags"])
    return rows


def parse_tag(item: str) -> tuple[str, str]:
    """``KEY=VALUE`` as typed after ``--tag``."""
    k, sep, v = item.partition("=")
    if not sep:
        raise MetricError(f"--tag {item!r}: expected KEY=VALUE")
    return k, v


def _tag_filter(tags) -> tuple[str, list]:
    """SQL (``AND ...`` clauses) and parameters keeping only rows whose tags hold every KEY=VALUE of ``tags``."""
    sql, params = "", []
    for t in tags:
        k, v = parse_tag(t)
        if not TAG_RE.match(k):
            raise MetricError(f"--tag {t!r}: key must use letters, digits, '.', '_' or '-', starting with a letter")
        sql += " AND json_extract(tags, ?) = ?"
        params += [f'$."{k}"', v]
    return sql, params


def list_metrics(store: Store, tags=()) -> list[dict]:
    """One row per metric name (only points carrying every ``KEY=VALUE`` of ``tags``): count, first/last time,
    mean/min/max, the latest value with its tags, and every tag key seen."""
    where, params = _tag_filter(tags)
    rows = store.query(f"SELECT name, COUNT(*) AS count, MIN(ts) AS first_ts, MAX(ts) AS last_ts, "
                       f"AVG(value) AS mean, MIN(value) AS min, MAX(value) AS max FROM metrics WHERE 1=1{where} "
                       f"GROUP BY name ORDER BY name", params)
    for r in rows:
        last = store.one(f"SELECT value, tags FROM metrics WHERE name=?{where} ORDER BY ts DESC, id DESC LIMIT 1",
                         [r["name"], *params])
        r["last_value"] = last["value"]
        r["last_tags"] = json.loads(last["tags"])
        keys = set()
        for t in store.query(f"SELECT DISTINCT tags FROM metrics WHERE name=?{where}", [r["name"], *params]):
            try:
                keys |= set(json.loads(t["tags"]))
            except ValueError:
                pass
        r["tag_keys"] = sorted(keys)
    return rows


def metric_series(store: Store, name: str, tags=(), since_ms=None, until_ms=None, limit: int = 100_000) -> list[dict]:
    """The latest ``limit`` points of metric ``name`` in [since_ms, until_ms] (either may be None), oldest first."""
    if not NAME_RE.match(name or ""):
        raise MetricError(f"name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter (max 100)")
    where, params = _tag_filter(tags)
    if since_ms is not None:
        where += " AND ts>=?"
        params.append(since_ms)
    if until_ms is not None:
        where += " AND ts<=?"
        params.append(until_ms)
    rows = store.query(f"SELECT ts, value, tags FROM (SELECT id, ts, value, tags FROM metrics WHERE name=?{where} "
                       f"ORDER BY ts DESC, id DESC LIMIT ?) ORDER BY ts, id", [name, *params, limit])
    for r in rows:
        r["tags"] = json.loads(r["tags"])
    return rows
