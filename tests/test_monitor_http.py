"""The monitor endpoint, with real HTTP requests to 127.0.0.1 (port 0): /health, /metrics (Prometheus
text format 0.0.4), /positions, /status, and POST /kill-switch behind a bearer token."""

from __future__ import annotations

import http.client
import json
import os
import re
import sqlite3
import time

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

NO_ENV = {k: None for k in CONFIG_VARS}
TOKEN = "monitor-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for k in ("QTS_MONITOR_TOKEN", "QTS_MONITOR_PORT", "QTS_MONITOR_HOST", "QTS_MONITOR_ALLOW_REMOTE",
              "QTS_NOTIFY_WEBHOOK_URL", "QTS_TELEGRAM_TOKEN", "QTS_SMTP_HOST"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    home = tmp_path_factory.mktemp("monitor") / "home"
    r = CliRunner().invoke(cli, ["--home", str(home), "run", "--days", "0.5", "--fresh", "--quiet"], env=NO_ENV,
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return home


@pytest.fixture
def replay(replayed, tmp_path):
    """A private copy of the replayed state home (tests change it)."""
    import shutil

    from qts.paths import StateHome

    home = tmp_path / "home"
    shutil.copytree(replayed, home)
    return StateHome(home)


@pytest.fixture
def monitor(replay):
    from qts.monitor import start_monitor

    started = []

    def start(**kw):
        srv = start_monitor(replay, port=0, **kw)
        started.append(srv)
        return srv

    yield start
    for s in started:
        s.stop()


def request(srv, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        r = conn.getresponse()
        raw = r.read()
        ctype = r.getheader("Content-Type", "")
        return r.status, (json.loads(raw) if ctype.startswith("application/json") else raw.decode()), r
    finally:
        conn.close()


def set_loop_status(home, **fields):
    st = json.loads(home.status_file.read_text())
    st.update(fields)
    home.status_file.write_text(json.dumps(st))


def db(home):
    conn = sqlite3.connect(home.db_path)
    conn.row_factory = sqlite3.Row
    return conn


# -- health -------------------------------------------------------------------------------------------------

def test_health_follows_the_loop(monitor, replay):
    srv = monitor()
    code, body, _ = request(srv, "GET", "/health")
    assert code == 503 and body["status"] == "unhealthy" and body["loop"]["state"] == "stopped"
    assert any("loop stopped" in r for r in body["reasons"])
    # a running loop (this process stands in for it) that cycled just now
    set_loop_status(replay, state="running", pid=os.getpid(), updated=time.time())
    code, body, _ = request(srv, "GET", "/health")
    assert code == 200 and body == {**body, "status": "ok", "reasons": []}
    assert body["loop"]["pid"] == os.getpid() and body["loop"]["cycles"] > 0
    # silent for an hour: stale
    set_loop_status(replay, updated=time.time() - 3600)
    code, body, _ = request(srv, "GET", "/health")
    assert code == 503 and "stale" in body["reasons"][0]
    # dead: the pid is gone
    set_loop_status(replay, pid=2 ** 22 + 4321, updated=time.time())
    code, body, _ = request(srv, "GET", "/health")
    assert code == 503 and body["loop"]["state"] == "dead"
    # halted by the kill switch
    set_loop_status(replay, state="halted", reason="kill switch engaged: x", pid=os.getpid())
    code, body, _ = request(srv, "GET", "/health")
    assert code == 503 and "loop halted" in body["reasons"][0]


def test_health_is_503_while_the_kill_switch_is_engaged(monitor, replay):
    from qts.safety import kill_switch

    set_loop_status(replay, state="running", pid=os.getpid(), updated=time.time())
    srv = monitor()
    assert request(srv, "GET", "/health")[0] == 200
    kill_switch.engage(replay, "test")
    code, body, _ = request(srv, "GET", "/health")
    assert code == 503 and body["kill_switch"]["engaged"] and any("kill switch" in r for r in body["reasons"])


# -- metrics ------------------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? '
                    r'(-?[0-9.e+-]+|NaN|[+-]Inf)$')


def parse_prometheus(text: str) -> dict:
    """Strict enough: HELP and TYPE before each family's samples, valid names, labels and values."""
    assert text.endswith("\n")
    families, samples, current = {}, {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in families, f"{name} declared twice"
            families[name] = {"help": line.split(" ", 3)[3]}
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == current and kind in ("gauge", "counter", "untyped", "summary", "histogram")
            families[name]["type"] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            assert m.group(1) == current, f"{m.group(1)} outside its family"
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            samples[(m.group(1), tuple(sorted(labels.items())))] = float(m.group(4))
    return {"families": families, "samples": samples}


def test_metrics_in_prometheus_text_format(monitor, replay):
    from qts.reports.status import collect_status
    from qts.store import Store

    set_loop_status(replay, state="running", pid=os.getpid(), updated=time.time() - 7)
    store = Store.open(replay)
    now = int(time.time() * 1000)
    for i, v in enumerate(range(100, 120)):  # 20 latency samples: p95 is the 19th smallest
        store.metric("api_latency_ms", v, ts=now - i * 1000)
    store.close()
    srv = monitor()
    code, text, resp = request(srv, "GET", "/metrics")
    assert code == 200 and resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    p = parse_prometheus(text)
    s = p["samples"]
    st = collect_status(replay)
    conn = db(replay)
    fills = conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    pos = conn.execute("SELECT symbol, amount FROM positions WHERE amount > 0").fetchall()
    conn.close()
    m = (("mode", "paper"),)
    assert s[("qts_equity", m)] == pytest.approx(st["equity"])
    assert s[("qts_cash", m)] == pytest.approx(st["cash"])
    assert s[("qts_open_positions", m)] == len(pos) and len(pos) > 0
    for row in pos:
        assert s[("qts_position_amount", (("mode", "paper"), ("symbol", row["symbol"])))] == pytest.approx(row["amount"])
    assert s[("qts_fills_total", m)] == fills and p["families"]["qts_fills_total"]["type"] == "counter"
    assert s[("qts_open_orders", m)] == 0
    assert s[("qts_breaker_state", ())] == {"closed": 0, "half_open": 1, "open": 2}[st["breaker"]["state"]]
    assert s[("qts_trading_state", ())] == 0
    assert s[("qts_kill_switch_engaged", ())] == 0
    assert 6 <= s[("qts_last_cycle_age_seconds", ())] < 600
    assert s[("qts_loop_running", ())] == 1
    assert s[("qts_api_latency_p95_seconds", ())] == pytest.approx(0.118)
    assert s[("qts_up", ())] == 1
    for fam in p["families"].values():
        assert fam["help"] and fam["type"]


def test_metrics_without_latency_samples_and_with_the_kill_switch(monitor, replay):
    from qts.safety import kill_switch

    kill_switch.engage(replay, 'quote " and \\ backslash')
    srv = monitor()
    p = parse_prometheus(request(srv, "GET", "/metrics")[1])
    assert p["samples"][("qts_kill_switch_engaged", ())] == 1
    assert "qts_api_latency_p95_seconds" not in p["families"]
    assert p["samples"][("qts_loop_running", ())] == 0


# -- positions and status --------------------------------------------------------------------------------------

def test_positions_and_status(monitor, replay):
    srv = monitor()
    code, body, _ = request(srv, "GET", "/positions")
    conn = db(replay)
    rows = conn.execute("SELECT symbol, amount, avg_entry FROM positions WHERE amount > 0 ORDER BY symbol").fetchall()
    conn.close()
    assert code == 200 and body["mode"] == "paper"
    assert [(p["symbol"], p["amount"], p["avg_entry"]) for p in body["positions"]] == [tuple(r) for r in rows]
    assert all({"mark", "value", "unrealized_pnl"} <= set(p) for p in body["positions"])
    code, body, _ = request(srv, "GET", "/status")
    assert code == 200 and body["loop"]["state"] == "stopped" and "today" in body and "drawdown" in body


def test_unknown_routes_and_methods(monitor):
    srv = monitor()
    assert request(srv, "GET", "/nope")[0] == 404
    assert request(srv, "GET", "/kill-switch")[0] == 405
    assert request(srv, "DELETE", "/health")[0] == 405
    assert request(srv, "POST", "/health", body={})[0] == 404
    code, body, _ = request(srv, "GET", "/")
    assert code == 200 and "POST /kill-switch" in body["routes"]


# -- POST /kill-switch -------------------------------------------------------------------------------------

def test_kill_switch_is_refused_without_a_configured_token(monitor, replay):
    srv = monitor()
    code, body, _ = request(srv, "POST", "/kill-switch", {"reason": "x"}, {"Authorization": "Bearer anything"})
    assert code == 403 and "QTS_MONITOR_TOKEN" in body["error"]
    srv2 = monitor(token="too-short")
    code, body, _ = request(srv2, "POST", "/kill-switch", {}, {"Authorization": "Bearer too-short"})
    assert code == 403 and "shorter" in body["error"]
    assert not replay.kill_flag.exists()


def test_kill_switch_needs_the_right_token(monitor, replay):
    srv = monitor(token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abc"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}):
        code, body, resp = request(srv, "POST", "/kill-switch", {"reason": "x"}, headers)
        assert code == 401 and resp.getheader("WWW-Authenticate") == 'Bearer realm="qts"', headers
    assert not replay.kill_flag.exists()
    conn = db(replay)
    assert conn.execute("SELECT COUNT(*) FROM events WHERE kind='kill_switch'").fetchone()[0] == 0
    conn.close()


def test_kill_switch_engages_and_flattens(monitor, replay):
    from qts.safety import kill_switch

    conn = db(replay)
    held = {r["symbol"]: r["amount"] for r in conn.execute("SELECT symbol, amount FROM positions WHERE amount > 0")}
    conn.close()
    assert held, "the replay left no position to flatten"
    called = []
    srv = monitor(token=TOKEN, on_kill=lambda: called.append(True))
    code, body, _ = request(srv, "POST", "/kill-switch", {"reason": "drawdown alarm"},
                            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert code == 200, body
    assert body["engaged"] is True and body["flat"] is True and body["failed"] == []
    assert {c["symbol"] for c in body["closed"]} == set(held) and body["remaining_positions"] == []
    assert called == [True] and body["loop"] == "stop requested"
    assert replay.kill_flag.exists()
    st = kill_switch.status(replay)
    assert st.engaged and "monitor: drawdown alarm" in st.reason
    conn = db(replay)
    assert conn.execute("SELECT COUNT(*) FROM positions WHERE amount > 0").fetchone()[0] == 0
    actions = [json.loads(r[0])["action"] for r in conn.execute("SELECT data FROM events WHERE kind='kill_switch'")]
    sells = conn.execute("SELECT COUNT(*) FROM orders WHERE side='sell' AND reason='kill switch: flatten'").fetchone()[0]
    conn.close()
    assert actions == ["engaged", "flatten"] and sells == len(held)
    # with the switch engaged, only flattening passes the gate: the loop's next order would be refused
    code, body, _ = request(srv, "GET", "/health")
    assert code == 503
    # again: safe, nothing left to do
    code, body, _ = request(srv, "POST", "/kill-switch", {"flatten": True}, {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and body["closed"] == [] and body["flat"] is True


def test_kill_switch_without_flatten_and_bad_bodies(monitor, replay):
    srv = monitor(token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert request(srv, "POST", "/kill-switch", b"{not json", auth)[0] == 400
    assert request(srv, "POST", "/kill-switch", [1, 2], auth)[0] == 400
    assert request(srv, "POST", "/kill-switch", {"reason": "x" * 300}, auth)[0] == 400
    assert request(srv, "POST", "/kill-switch", {"flatten": "yes"}, auth)[0] == 400
    assert request(srv, "POST", "/kill-switch", b"x" * 20_000, auth)[0] == 413
    assert not replay.kill_flag.exists()
    code, body, _ = request(srv, "POST", "/kill-switch", {"flatten": False}, auth)
    assert code == 200 and "closed" not in body and replay.kill_flag.exists()
    conn = db(replay)
    assert conn.execute("SELECT COUNT(*) FROM positions WHERE amount > 0").fetchone()[0] > 0  # left for the CLI
    conn.close()


def test_repeated_bad_tokens_lock_the_endpoint(monitor, replay):
    srv = monitor(token=TOKEN)
    for _ in range(10):
        assert request(srv, "POST", "/kill-switch", {}, {"Authorization": "Bearer nope-nope-nope-nope"})[0] == 401
    code, body, _ = request(srv, "POST", "/kill-switch", {}, {"Authorization": f"Bearer {TOKEN}"})
    assert code == 429 and not replay.kill_flag.exists()
    assert request(srv, "GET", "/health")[0] in (200, 503)  # reads still answer


# -- binding ------------------------------------------------------------------------------------------------

def test_binding_rules_and_stop(replay):
    from qts.monitor import MonitorError, is_loopback, start_monitor

    for host in ("0.0.0.0", "192.0.2.10", "::"):
        with pytest.raises(MonitorError, match="loopback"):
            start_monitor(replay, port=0, host=host)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("8.8.8.8")
    with pytest.raises(MonitorError, match="QTS_MONITOR_PORT"):
        start_monitor(replay, environ={"QTS_MONITOR_PORT": "http"})
    srv = start_monitor(replay, environ={"QTS_MONITOR_PORT": "0", "QTS_MONITOR_TOKEN": TOKEN})
    assert srv.token_problem is None and srv.url == f"http://127.0.0.1:{srv.port}"
    assert request(srv, "GET", "/health")[0] == 503
    srv.stop()
    with pytest.raises(OSError):
        request(srv, "GET", "/health")
    # the port is free again
    again = start_monitor(replay, port=srv.port)
    again.stop()


def test_cli_monitor_serve(replay):
    r = CliRunner().invoke(cli, ["--home", str(replay.root), "monitor", "serve", "--port", "0", "--duration", "0.3"],
                           env=NO_ENV, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "monitor on http://127.0.0.1:" in r.output and "QTS_MONITOR_TOKEN is not set" in r.output
    r = CliRunner().invoke(cli, ["--home", str(replay.root), "monitor", "serve", "--host", "0.0.0.0", "--duration", "0"],
                           env=NO_ENV)
    assert r.exit_code == 2 and "loopback" in r.output
