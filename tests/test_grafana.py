"""docs/grafana/qts-dashboard.json cannot drift from what the monitor exposes: every PromQL expression in it
(panel targets and template variables) names only metrics, and only labels of those metrics, that the real
``GET /metrics`` of a real state home contains.

The state home: a registry strategy promoted to paper (so predicted vs realized exist), one day of the
generated market through ``qts run``, a paper position (``qts order``, or the strategy's own), a gate
refusal (``qts breaker state HALTED`` then an order), exchange API latency samples recorded with
``Store.metric`` as the live feed records them, and a paused strategy. /metrics is fetched over HTTP from a
monitor on 127.0.0.1 (free port, stopped by the test).
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "qts-dashboard.json"
NO_ENV = {k: None for k in CONFIG_VARS}

# PromQL words that are not metric names
FUNCTIONS = {"sum", "avg", "min", "max", "count", "rate", "irate", "increase", "delta", "deriv", "topk", "bottomk",
             "abs", "clamp_min", "clamp_max", "label_values", "histogram_quantile", "avg_over_time", "max_over_time",
             "min_over_time", "last_over_time", "changes", "resets", "time", "vector", "scalar", "sort", "sort_desc"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"}


def invoke(args):
    r = CliRunner().invoke(cli, args, env=NO_ENV, catch_exceptions=False)
    return r


def expressions(dash: dict) -> list[str]:
    out = []

    def walk(panels):
        for p in panels:
            out.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            out.append(q)
    return out


def referenced(expr: str) -> list[tuple[str, set[str]]]:
    """[(metric, labels used with it)] in one expression; raises on an identifier that is neither."""
    e = re.sub(r'"[^"]*"', '""', expr)                # string literals
    e = re.sub(r"\[[^\]]*\]", "", e)                 # range selectors [1h]
    grouped = set()
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", e):
        grouped |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    e = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", e)
    found = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?", e):
        name, sel = m.group(1), m.group(2) or ""
        if name in FUNCTIONS or name in KEYWORDS:
            continue
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", sel))
        found.append((name, labels))
    # label_values(metric, label): the second argument is a label of the metric
    lv = re.match(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", e)
    if lv:
        found = [(lv.group(1), {lv.group(2)})]
    elif grouped:
        found = [(n, ls | grouped) for n, ls in found]
    return found


def test_the_parser_sees_what_it_should():
    """The checker itself: it finds metrics and labels, and it does not let an unknown name through."""
    assert referenced('sum by (reason) (increase(qts_x_total{mode=~"$mode"}[1h]))') == [("qts_x_total", {"mode", "reason"})]
    assert referenced("label_values(qts_equity, mode)") == [("qts_equity", {"mode"})]
    assert referenced("rate(node_cpu_seconds_total[5m])") == [("node_cpu_seconds_total", set())]


@pytest.fixture(scope="module")
def real_metrics(tmp_path_factory) -> str:
    from qts.config import load_settings
    from qts.monitor import start_monitor
    from qts.paths import StateHome
    from qts.safety import pauses
    from qts.store import Store
    from test_roster import register

    home = tmp_path_factory.mktemp("grafana") / "home"
    s = load_settings(environ={}, home=home)
    s.home.ensure()
    register(s.home, "sma_cross", {"fast": 10, "slow": 40}, "BTC/USDT")
    r = invoke(["--home", str(home), "run", "--days", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    # a paper position (the per-symbol series): bought now unless the strategy already holds one at its limit
    r = invoke(["--home", str(home), "order", "buy", "BTC/USDT", "0.002"])
    assert r.output.startswith("FILLED") or "RISK_POSITION_USD" in r.output, r.output
    assert invoke(["--home", str(home), "breaker", "state", "HALTED"]).exit_code == 0
    r = invoke(["--home", str(home), "order", "buy", "BTC/USDT", "0.01"])
    assert "REFUSED" in r.output
    h = StateHome.resolve(str(home))
    store = Store.open(h)
    try:
        for ms in (80.0, 95.0, 120.0, 240.0, 90.0):
            store.metric("api_latency_ms", ms, {"method": "fetch_ohlcv"})
        store.metric("api_error", 1.0, {"method": "fetch_ohlcv", "error": "RequestTimeout"})
        pauses.pause(h, "rsi_reversion", "test", store=store)
    finally:
        store.close()
    srv = start_monitor(h, port=0)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return opener.open(srv.url + "/metrics", timeout=30).read().decode()
    finally:
        srv.stop()


def exposed(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})? ", line)
        assert m, line
        out.setdefault(m.group(1), set()).update(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', m.group(3) or ""))
    return out


def test_every_promql_expression_names_a_metric_the_monitor_exposes(real_metrics):
    dash = json.loads(DASHBOARD.read_text())
    exprs = expressions(dash)
    assert len(exprs) >= 20
    have = exposed(real_metrics)
    used: dict[str, set[str]] = {}
    problems = []
    for e in exprs:
        refs = referenced(e)
        if not refs:
            problems.append(f"{e!r}: names no metric")
        for name, labels in refs:
            used.setdefault(name, set()).update(labels)
            if name not in have:
                problems.append(f"{e!r}: {name} is not in /metrics")
            elif labels - have[name]:
                problems.append(f"{e!r}: {name} has no label(s) {sorted(labels - have[name])} "
                                f"(it has {sorted(have[name])})")
    assert problems == []
    # what the issue asks the dashboard to show is there
    for must in ("qts_equity", "qts_drawdown_ratio", "qts_breaker_state", "qts_gate_refusals_by_reason_total",
                 "qts_strategy_predicted", "qts_strategy_realized", "qts_strategy_pnl", "qts_trading_state",
                 "qts_kill_switch_engaged"):
        assert must in used, must


def test_the_dashboard_is_importable_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    ds = {json.dumps(t["datasource"], sort_keys=True) for p in dash["panels"] for t in p["targets"]}
    assert ds == {json.dumps({"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, sort_keys=True)}
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    for p in dash["panels"]:  # on the 24-column grid
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
