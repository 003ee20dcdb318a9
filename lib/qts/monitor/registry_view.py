"""Registry strategies and predicted vs realized, cached: what the dashboard's data and /metrics both show."""

from __future__ import annotations

import time

_PERF_TTL_S = 30.0
_CACHE: dict = {}


def registry_view(home, store, mode: str, cache: dict = _CACHE) -> dict:
    """Registry strategies and predicted vs realized (performance() over the whole history: cached 30 s,
    and recomputed as soon as a new snapshot lands or the registry file changes). Also /metrics'."""
    from ..reports.performance import load_registry, performance

    reg_file = home.root / "registry" / "strategies.json"
    try:
        reg_stamp = reg_file.stat().st_mtime_ns
    except OSError:
        reg_stamp = None
    stamp = (str(home.root), mode, store.scalar("SELECT MAX(id) FROM equity_snapshots"), reg_stamp)
    hit = cache.get("registry")
    if hit and hit[0] == stamp and time.monotonic() - hit[1] < _PERF_TTL_S:
        return hit[2]
    entries, problem = load_registry(home)
    perf = performance(store, mode)
    out = {"problem": problem,
           "strategies": [{"id": e.get("id"), "strategy": e.get("strategy") or e.get("name"),
                           "stage": e.get("stage") or e.get("status"), "params": e.get("params")} for e in entries],
           "predicted_vs_realized": perf["predicted_vs_realized"],
           "realized": [{k: g.get(k) for k in ("strategy", "pnl", "trades", "win_rate", "sharpe", "max_drawdown_pct")}
                        for g in perf["per_strategy"]]}
    cache["registry"] = (stamp, time.monotonic(), out)
    return out
