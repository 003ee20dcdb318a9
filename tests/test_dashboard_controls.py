"""The dashboard's tightening controls over real HTTP (a dashboard on 127.0.0.1, a free port, stopped by the
fixture), and what they change on disk: "lower a limit" (checked on the server against the effective risk
profile, by the profile's own rules) and "pause a strategy" (the paused strategy opens nothing in its next
cycles; resuming needs the PIN). Also: the loop's own --monitor-port serves the dashboard.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

NO_ENV = {k: None for k in CONFIG_VARS}
TOKEN = "dashboard-test-token-0123456789"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def invoke(args, env=None):
    return CliRunner().invoke(cli, args, env={**NO_ENV, **(env or {})}, catch_exceptions=False)


def post(srv, path, body, token=TOKEN):
    req = urllib.request.Request(srv.url + path, method="POST", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with OPENER.open(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url, token=TOKEN):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with OPENER.open(req, timeout=30) as r:
        return r.status, r.read()


def saved_profile(home: Path) -> dict:
    """The saved record, read as plain JSON (not through the library)."""
    return json.loads((home / "safety" / "risk_profile.json").read_text())["profile"]


def sql(home, q, args=()):
    conn = sqlite3.connect(home / "db" / "metrics.db")
    try:
        return conn.execute(q, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    r = invoke(["--home", str(h), "run", "--days", "0.5", "--quiet"])
    assert r.exit_code == 0, r.output
    return h


@pytest.fixture
def dash(home):
    from qts.monitor.dashboard import start_dashboard
    from qts.paths import StateHome

    srv = start_dashboard(StateHome.resolve(str(home)), port=0, token=TOKEN)
    yield srv
    srv.stop()


# ============================================================================ lower a limit

def test_lower_a_limit_applies_only_a_stricter_value(home, dash):
    assert not (home / "safety" / "risk_profile.json").exists()  # the defaults: max_positions 10
    code, out = post(dash, "/lower-limit", {"field": "max_positions", "value": 4})
    assert code == 200 and out["changed"] and (out["old"], out["new"]) == (10, 4), out
    assert saved_profile(home)["max_positions"] == 4
    assert "qts risk set max_positions=10" in out["undo"]

    # equal and looser: refused, with the terminal command; the saved profile does not move
    for v in (4, 5, 1000):
        code, out = post(dash, "/lower-limit", {"field": "max_positions", "value": v})
        assert code == 409 and not out["changed"], out
        assert out["command"].startswith(f"qts risk set max_positions={v}")
        assert saved_profile(home)["max_positions"] == 4
    # a field where LOWER is looser: raising is the tightening
    code, out = post(dash, "/lower-limit", {"field": "cooldown_minutes", "value": 5})
    assert code == 409 and saved_profile(home)["cooldown_minutes"] == 15
    code, out = post(dash, "/lower-limit", {"field": "cooldown_minutes", "value": 60})
    assert code == 200 and saved_profile(home)["cooldown_minutes"] == 60
    # "any change" fields cannot be ranked: never from the page
    code, out = post(dash, "/lower-limit", {"field": "atr_period", "value": 10})
    assert code == 409 and "PIN" in out["error"] and saved_profile(home)["atr_period"] == 14
    # the profile's own rules: below drawdown_reduce_pct (15) the halt level is invalid
    code, out = post(dash, "/lower-limit", {"field": "drawdown_halt_pct", "value": 10})
    assert code == 400 and "drawdown_reduce_pct" in out["error"] and saved_profile(home)["drawdown_halt_pct"] == 20
    for bad in ({"field": "no_such_field", "value": 1}, {"field": "max_positions", "value": True},
                {"field": "max_positions", "value": None}, {"field": "max_positions", "value": 0}):
        code, out = post(dash, "/lower-limit", bad)
        assert code == 400, (bad, out)
    assert saved_profile(home)["max_positions"] == 4
    # the change is on record in the events table, as a risk-profile change
    (msg,), = sql(home, "SELECT message FROM events WHERE kind='risk' AND message LIKE 'dashboard:%max_positions%'")
    assert "10 -> 4" in msg


def test_lower_a_limit_compares_with_the_effective_profile_not_the_page(home, dash, monkeypatch):
    """A setting (MAX_POSITION_SIZE=300) makes the effective max_position_usd 300 while the saved one is 1000:
    800 would tighten the file but loosen what is in force: refused."""
    monkeypatch.setenv("MAX_POSITION_SIZE", "300")
    code, out = post(dash, "/lower-limit", {"field": "max_position_usd", "value": 800})
    assert code == 409 and out["current"] == 300, out
    assert not (home / "safety" / "risk_profile.json").exists()
    code, out = post(dash, "/lower-limit", {"field": "max_position_usd", "value": 250})
    assert code == 200 and saved_profile(home)["max_position_usd"] == 250


def test_a_looser_anchor_copy_wins_over_an_edited_file(home, dash):
    """The per-user anchor keeps the tightest saved profile: after a hand edit that loosens the file, the page
    still cannot set a value between the two."""
    code, _ = post(dash, "/lower-limit", {"field": "max_positions", "value": 3})
    assert code == 200
    rec_path = home / "safety" / "risk_profile.json"
    rec = json.loads(rec_path.read_text())
    rec["profile"]["max_positions"] = 50  # (the hash no longer matches: the anchor's copy is in force)
    rec_path.write_text(json.dumps(rec))
    code, out = post(dash, "/lower-limit", {"field": "max_positions", "value": 5})
    assert code == 409 and out["current"] == 3, out


def test_controls_need_the_token_and_a_loopback_host(home, dash):
    for path, body in (("/lower-limit", {"field": "max_positions", "value": 2}), ("/pause", {"strategy": "sma_cross"})):
        code, out = post(dash, path, body, token="wrong-token-wrong-token")
        assert code == 401
    req = urllib.request.Request(dash.url + "/pause", method="POST", data=b'{"strategy": "sma_cross"}',
                                 headers={"Authorization": f"Bearer {TOKEN}", "Host": f"evil.example:{dash.port}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        OPENER.open(req, timeout=30)
    assert e.value.code == 421
    assert not (home / "safety" / "risk_profile.json").exists()
    assert not (home / "safety" / "strategy_pauses.jsonl").exists()


# ============================================================================ pause a strategy

def test_pause_from_the_page_stops_entries_and_resume_needs_the_pin(home, dash):
    code, out = post(dash, "/pause", {"strategy": "sma_cross"})
    assert code == 200 and out["changed"] and out["paused"] == ["sma_cross"], out
    assert "qts strategy resume sma_cross" in out["undo"]
    code, out = post(dash, "/pause", {"strategy": "sma_cross"})
    assert code == 200 and not out["changed"]
    assert post(dash, "/pause", {"strategy": "../etc"})[0] == 400
    _, raw = get(dash.url + "/dashboard/data")
    d = json.loads(raw)
    assert [p["strategy"] for p in d["paused"]] == ["sma_cross"]
    assert {"what": "resume a paused strategy", "command": "qts strategy resume NAME"} in d["loosen"]
    lim = {f["field"]: f for f in d["limits"]["fields"]}
    assert lim["max_positions"]["value"] == 10 and lim["max_positions"]["stricter"] == "lower"
    assert "atr_period" not in lim  # not rankable: not offered

    last_id = sql(home, "SELECT MAX(id) FROM decisions")[0][0]
    buys_before = sql(home, "SELECT COUNT(*) FROM orders WHERE side='buy'")[0][0]
    assert buys_before > 0  # the strategy does enter on this market
    r = invoke(["--home", str(home), "run", "--days", "0.5", "--quiet"])  # the next cycles (resumes the replay)
    assert r.exit_code == 0, r.output
    assert sql(home, "SELECT COUNT(*) FROM orders WHERE side='buy'")[0][0] == buys_before
    codes = [json.loads(c) for (c,) in sql(home, "SELECT reason_codes FROM decisions WHERE id>?", (last_id,))]
    paused_codes = [c for c in codes if "STRATEGY_PAUSED" in c]
    assert paused_codes and all(c[0] == "ENTRY" for c in paused_codes)  # it wanted to enter, and did not
    # the recorded decisions still replay identically (the replay knows a paused entry makes no order)
    r = invoke(["--home", str(home), "replay", "--verify"])
    assert r.exit_code == 0 and " 0 differ" in r.output, r.output

    # resuming is a loosening: not without the PIN (no terminal here), and one appended line cannot do it
    r = invoke(["--home", str(home), "strategy", "resume", "sma_cross"])
    assert r.exit_code != 0
    with open(home / "safety" / "strategy_pauses.jsonl", "a") as fh:
        fh.write(json.dumps({"version": 99, "strategy": "sma_cross", "paused": False, "ts": 1, "reason": "x"}) + "\n")
    r = invoke(["--home", str(home), "strategy", "paused", "--json"])
    assert list(json.loads(r.output)) == ["sma_cross"]
    # deleting the file does not resume it either: the events table keeps a copy
    (home / "safety" / "strategy_pauses.jsonl").unlink()
    r = invoke(["--home", str(home), "strategy", "paused", "--json"])
    assert list(json.loads(r.output)) == ["sma_cross"]
    # nor deleting the events rows too: the per-user anchor (outside the project) keeps it
    conn = sqlite3.connect(home / "db" / "metrics.db")
    with conn:
        assert conn.execute("DELETE FROM events WHERE kind='strategy_pause'").rowcount >= 1
    conn.close()
    r = invoke(["--home", str(home), "strategy", "paused", "--json"])
    assert json.loads(r.output)["sma_cross"]["source"] == "per-user anchor"
    last_id = sql(home, "SELECT MAX(id) FROM decisions")[0][0]
    assert invoke(["--home", str(home), "run", "--days", "0.5", "--quiet"]).exit_code == 0
    assert sql(home, "SELECT COUNT(*) FROM orders WHERE side='buy'")[0][0] == buys_before
    assert sql(home, "SELECT COUNT(*) FROM decisions WHERE id>? AND reason_codes LIKE '%STRATEGY_PAUSED%'",
               (last_id,))[0][0] > 0


def test_resume_with_the_pin_key_lets_it_enter_again(tmp_path):
    from qts.paths import StateHome
    from qts.safety import pauses
    from qts.store import Store
    from test_breaker import human_key

    home = StateHome.resolve(str(tmp_path / "home"))
    store = Store.open(home)
    try:
        pauses.pause(home, "sma_cross", "test", store=store)
        with pytest.raises(PermissionError):
            pauses.resume(home, "sma_cross", None, store=store)
        key = human_key(store, pauses_now())
        out = pauses.resume(home, "sma_cross", key, store=store)
        assert out["changed"] and pauses.paused(home, store) == {}
        # the signed line is in the file, and it counts when read back from the file (and the anchor) alone
        assert pauses.paused(home, None) == {}
        from qts.safety import anchor

        assert anchor.check(home).paused == {}
    finally:
        store.close()
    r = invoke(["--home", str(home.root), "run", "--days", "0.5", "--quiet"])
    assert r.exit_code == 0
    assert sql(home.root, "SELECT COUNT(*) FROM orders WHERE side='buy'")[0][0] > 0
    assert sql(home.root, "SELECT COUNT(*) FROM decisions WHERE reason_codes LIKE '%STRATEGY_PAUSED%'")[0][0] == 0


def pauses_now() -> int:
    import time

    return int(time.time() * 1000)


def test_pausing_a_registry_entry_id_stops_only_that_entry(tmp_path, ohlcv_dir):
    """Two homes with the same registry (sma_cross on BTC, rsi_reversion on ETH) and the same half day of real
    candles; in one the sma_cross ENTRY ID (not the strategy name) is paused: BTC opens nothing there while it
    does in the other, and nothing else is marked paused."""
    from qts.config import load_settings
    from qts.safety import pauses
    from test_roster import register, run_half_day

    buys, paused_syms = {}, {}
    for case in ("control", "paused"):
        s = load_settings(environ={}, home=tmp_path / case)
        s.home.ensure()
        a = register(s.home, "sma_cross", {"fast": 5, "slow": 20}, "BTC/USDT")
        register(s.home, "rsi_reversion", {}, "ETH/USDT")
        if case == "paused":
            pauses.pause(s.home, a.id, "test")
        run_half_day(s, ohlcv_dir)
        buys[case] = dict(sql(s.home.root, "SELECT symbol, COUNT(*) FROM orders WHERE side='buy' GROUP BY symbol"))
        paused_syms[case] = {sym for (sym,) in sql(s.home.root, "SELECT DISTINCT symbol FROM decisions WHERE "
                                                                "reason_codes LIKE '%STRATEGY_PAUSED%'")}
    assert buys["control"].get("BTC/USDT", 0) > 0 and paused_syms["control"] == set()
    assert "BTC/USDT" not in buys["paused"] and paused_syms["paused"] == {"BTC/USDT"}
    assert buys["paused"].get("ETH/USDT", 0) == buys["control"].get("ETH/USDT", 0)


def test_pause_cli_is_free_and_validates_the_name(tmp_path):
    h = str(tmp_path / "home")
    r = invoke(["--home", h, "strategy", "pause", "rsi_reversion", "--reason", "too volatile"])
    assert r.exit_code == 0 and "qts strategy resume rsi_reversion" in r.output
    r = invoke(["--home", h, "strategy", "paused"])
    assert "rsi_reversion" in r.output and "too volatile" in r.output
    r = invoke(["--home", h, "strategy", "pause", "a b"])
    assert r.exit_code == 2


# ============================================================================ the loop's own port

def test_the_loops_monitor_keeps_its_own_routes_for_any_host(home):
    """On the loop's port (keep_monitor_routes) the dashboard's routes answer only a loopback Host, while the
    monitor's POST /kill-switch and route list answer as before (a monitor exposed with allow_remote)."""
    from qts.monitor import start_monitor
    from qts.monitor.dashboard import with_dashboard
    from qts.paths import StateHome

    srv = with_dashboard(start_monitor(StateHome.resolve(str(home)), port=0, token=TOKEN), keep_monitor_routes=True)
    try:
        def status(method, path, host, body=None, token=TOKEN):
            req = urllib.request.Request(srv.url + path, method=method, data=body,
                                         headers={"Host": host, "Authorization": f"Bearer {token}"})
            try:
                with OPENER.open(req, timeout=30) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        other = f"monitor.example:{srv.port}"
        assert status("POST", "/kill-switch", other, b"{}", token="wrong-token-wrong-token")[0] == 401  # not 421
        code, body = status("GET", "/", other)
        assert code == 200 and "POST /kill-switch" in json.loads(body)["routes"]
        assert status("POST", "/pause", other, b'{"strategy": "sma_cross"}')[0] == 421
        assert status("GET", "/dashboard/data", other)[0] == 421
        code, body = status("GET", "/", f"127.0.0.1:{srv.port}")
        assert code == 200 and b"/dashboard/data" in body
    finally:
        srv.stop()
    assert not (home / "safety" / "strategy_pauses.jsonl").exists()



def test_run_monitor_port_serves_the_dashboard(tmp_path):
    """`qts run --monitor-port 0` (a real process, paced so it is still running): the printed URL serves the
    page, its data, and a control, on the loop's port."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS and k != "QTS_MONITOR_TOKEN"}
    qts = str(Path(sys.executable).parent / "qts")
    p = subprocess.Popen([qts, "--home", str(home), "run", "--days", "0.2", "--pace", "0.2", "--quiet",
                          "--monitor-port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        reader = threading.Thread(target=lambda: lines.extend(iter(p.stderr.readline, "")), daemon=True)
        reader.start()
        m = None
        for _ in range(300):
            m = next((re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/#token=(\S+)", x) for x in lines
                      if "dashboard:" in x), None)
            if m or p.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert m, lines
        base, token = m.group(1), m.group(2)
        code, page = get(base + "/", token)
        assert code == 200 and b"/dashboard/data" in page and token.encode() not in page
        for _ in range(100):
            d = json.loads(get(base + "/dashboard/data", token)[1])
            if d["decision_count"]:
                break
            threading.Event().wait(0.1)
        assert d["decision_count"] > 0 and d["state"] == "running"
        metrics = get(base + "/metrics", token)[1].decode()
        assert "qts_equity" in metrics  # the monitor's own routes are still there
        code, out = post(type("S", (), {"url": base}), "/lower-limit", {"field": "max_positions", "value": 7}, token)
        assert code == 200 and saved_profile(home)["max_positions"] == 7
    finally:
        p.terminate()
        p.wait(timeout=30)
        p.stdout.close()
        p.stderr.close()
