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
