"""Operator alerts (issue #14): real conditions in real paper sessions reach a real webhook on 127.0.0.1
with their level; info (paper fills) stays in the events table; each alert once per cooldown.

The expected alerts are derived from what the session recorded (the gate's refusal events, the verdict
log's adjustments), not from the alert code. The webhook server stops by itself (watchdog, 60 s).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import CONFIG_VARS

NOTIFY_VARS = ("QTS_NOTIFY_WEBHOOK_URL", "QTS_NOTIFY_WEBHOOK_FORMAT", "QTS_TELEGRAM_TOKEN", "QTS_TELEGRAM_CHAT_ID",
               "QTS_SMTP_HOST", "QTS_NOTIFY_LOG", "QTS_NOTIFY_RATE", "QTS_NOTIFY_BURST", "QTS_NOTIFY_REPLAY",
               "QTS_NOTIFY_LEVEL", "QTS_ALERT_REFUSALS")
QTS = str(Path(sys.executable).parent / "qts")


class Hook:
    """A webhook receiver recording each JSON body."""

    def __init__(self):
        self.bodies: list[dict] = []
        rec = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                rec.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.watchdog = threading.Timer(60, self.srv.shutdown)
        self.watchdog.daemon = True
        self.watchdog.start()

    def events(self) -> list[dict]:
        return [b["event"] for b in self.bodies]

    def stop(self):
        self.watchdog.cancel()
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(5)


@pytest.fixture
def hook(monkeypatch):
    from qts import notify
    from qts.notify import alerts

    for k in NOTIFY_VARS:
        monkeypatch.delenv(k, raising=False)
    notify.shutdown(1.0)
    alerts.reset()
    h = Hook()
    yield h
    notify.shutdown(1.0)
    alerts.reset()
    h.stop()


def test_risk_limits_hit_in_a_paper_session_alert_with_their_level(hook, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS + NOTIFY_VARS}
    env.update(QTS_NOTIFY_WEBHOOK_URL=hook.url, QTS_NOTIFY_WEBHOOK_FORMAT="json", QTS_NOTIFY_REPLAY="1",
               QTS_ALERT_REFUSALS="3")
    # tight limits (tightening needs no PIN), then two days of the generated market in a real process
    r = subprocess.run([QTS, "--home", str(home), "risk", "set", "daily_loss_limit_pct=0.3",
                        "drawdown_reduce_pct=0.2", "drawdown_halt_pct=0.5"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([QTS, "--home", str(home), "run", "--days", "2", "--quiet", "--json"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fills"] > 0

    conn = sqlite3.connect(home / "db" / "metrics.db")
    codes = [json.loads(d)["code"] for (d,) in conn.execute("SELECT data FROM events WHERE kind='gate'")]
    notified = [json.loads(d).get("event") for (d,) in conn.execute("SELECT data FROM events WHERE kind='notify'")]
    conn.close()
    verdicts = [json.loads(line) for line in (home / "logs" / "pre_trade.json").read_text().splitlines()]
    throttled = any(n.startswith("RISK_DRAWDOWN_REDUCE") for v in verdicts for n in v.get("adjustments") or [])
    expected = {"daily_loss": "critical"} if "RISK_DAILY_LOSS" in codes else {}
    if "RISK_DRAWDOWN_HALT" in codes:
        expected["drawdown_halt"] = "critical"
    if len(codes) >= 3:
        expected["refusals"] = "warning"
    if throttled:
        expected["drawdown_throttle"] = "warning"
    assert set(expected) == {"daily_loss", "drawdown_halt", "refusals", "drawdown_throttle"}  # the limits were tight enough to bite

    got = [e for e in hook.events() if e["kind"] != "breaker"]
    assert {e["kind"]: e["severity"] for e in got} == expected
    assert len(got) == len(expected)  # each once: the cooldown holds back the repeats
    # fills are info: in the events table (the log sink), never at the webhook
    assert "trade" in notified and all(e["kind"] != "trade" for e in hook.events())


def _gap_session(home: Path, gap_bars: int):
    """A paper session on generated candles where ETH/USDT's feed stops for ``gap_bars`` candles."""
    from qts.config import load_settings
    from qts.engine.session import open_session
    from qts.market import synthetic
    from qts.market.feed import ReplayFeed

    tf = 300_000
    count = 200 + 120
    data = {s: synthetic.generate(s, count, tf, 7) for s in ("BTC/USDT", "ETH/USDT")}
    eth = data["ETH/USDT"]
    cut = np.ones(count, bool)
    cut[230:230 + gap_bars] = False  # the exchange's ETH candles are missing for a while
    data["ETH/USDT"] = type(eth)(eth.ts[cut], eth.open[cut], eth.high[cut], eth.low[cut], eth.close[cut],
                                 eth.volume[cut], tf)
    feed = ReplayFeed(data, source="replay:gap", warmup=200)
    settings = load_settings(environ={"SYMBOLS": "BTC/USDT,ETH/USDT", "TRADE_INTERVAL": "5"}, home=home)
    return open_session(settings, feed)


def test_a_stale_feed_alerts_once_for_the_symbol_that_stopped(hook, tmp_path, monkeypatch):
    from qts import notify

    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_FORMAT", "json")
    monkeypatch.setenv("QTS_NOTIFY_REPLAY", "1")
    session = _gap_session(tmp_path / "home", gap_bars=12)
    stop = threading.Event()
    n = session.loop.run(stop, max_cycles=60)
    notify.get_notifier(session.store.home).flush(10)
    stale_cycles = session.store.scalar(
        "SELECT COUNT(*) FROM decisions WHERE symbol='ETH/USDT' AND ts - json_extract(inputs, '$.last_ts') >= 3*300000")
    session.close()
    assert n == 60 and stale_cycles >= 5  # the decisions record the old candle they had to use
    stale = [e for e in hook.events() if e["kind"] == "stale_feed"]
    assert len(stale) == 1 and stale[0]["severity"] == "warning"
    assert stale[0]["data"]["symbol"] == "ETH/USDT" and "ETH/USDT" in stale[0]["title"]


def test_a_crashed_loop_is_a_critical_alert_and_its_status_says_crashed(hook, tmp_path, monkeypatch):
    from qts import notify
    from qts.engine.runner import Runner, read_status

    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_FORMAT", "json")
    monkeypatch.setenv("QTS_NOTIFY_REPLAY", "1")
    session = _gap_session(tmp_path / "home", gap_bars=0)
    real = session.feed.candles
    calls = {"n": 0}

    def failing(symbol, limit=500):  # the feed's storage fails after a few cycles (a dead disk, a lost mount)
        calls["n"] += 1
        if calls["n"] > 6:
            raise OSError(5, "Input/output error")
        return real(symbol, limit)

    session.feed.candles = failing
    runner = Runner(session.store.home, session.loop, "paper", "replay")
    with pytest.raises(OSError):
        runner.run(max_cycles=10)
    notify.get_notifier(session.store.home).flush(10)
    home = session.store.home
    session.close()
    assert read_status(home)["state"] == "crashed"
    crashed = [e for e in hook.events() if e["kind"] == "loop_crashed"]
    assert len(crashed) == 1 and crashed[0]["severity"] == "critical"
    assert "Input/output error" in crashed[0]["text"]


# -- reconciliation against the loopback exchange (tests/live_support.py) -----------------------------------

from live_support import ex, srv  # noqa: E402,F401  (the shared loopback fixtures)


def test_a_reconciliation_mismatch_is_a_critical_alert(hook, store, ex, monkeypatch):  # noqa: F811
    from live_support import live_broker
    from qts import notify

    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_FORMAT", "json")
    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    broker = live_broker(store, ex, symbols)
    broker.reconcile()
    notify.get_notifier(store.home).flush(10)
    assert [e for e in hook.events() if e["kind"] == "reconcile"] == []  # books == exchange: nothing to say
    ex.create_order("ETH/USDT", "limit", "buy", 0.01, 1000, {"clientOrderId": "foreign1"})  # placed by hand
    rep = broker.reconcile()
    notify.get_notifier(store.home).flush(10)
    (e,) = [e for e in hook.events() if e["kind"] == "reconcile"]
    assert e["severity"] == "critical"
    assert [d["kind"] for d in e["data"]["discrepancies"]] == [d["kind"] for d in rep["discrepancies"]]
    assert "foreign_open_order" in e["text"]


def test_an_agent_whose_heartbeat_stopped_is_a_critical_alert(hook, home, monkeypatch):
    """The status file a killed agent leaves behind (state running, heartbeat frozen)."""
    import time as _time

    from qts import notify
    from qts.agent.paths import AgentPaths
    from qts.notify.alerts import check_agent

    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_FORMAT", "json")
    paths = AgentPaths.for_home(home.root)
    assert check_agent(home) is None  # no agent ever ran here
    paths.status_file.parent.mkdir(parents=True, exist_ok=True)
    paths.status_file.write_text(json.dumps({"state": "running", "pid": 999999, "heartbeat": _time.time()}))
    assert check_agent(home) is False  # alive
    paths.status_file.write_text(json.dumps({"state": "stopped", "pid": 999999, "heartbeat": _time.time() - 600}))
    assert check_agent(home) is False  # stopped cleanly: not an alarm
    paths.status_file.write_text(json.dumps({"state": "running", "pid": 999999, "heartbeat": _time.time() - 60}))
    assert check_agent(home) is True and check_agent(home) is True
    notify.get_notifier(home).flush(10)
    downs = [e for e in hook.events() if e["kind"] == "agent_down"]
    assert len(downs) == 1 and downs[0]["severity"] == "critical"  # twice down, once alerted (cooldown)
    assert "qts agent start" in downs[0]["text"]


from test_registry import key  # noqa: E402,F401  (the PIN-unlocked signing key fixture)


def test_a_demoted_strategy_is_a_warning(hook, home, store, key, monkeypatch):  # noqa: F811
    """Registry supervision demoting a live-ramp strategy after a breaker trip (test_registry's own setup)."""
    import test_registry as tr
    from qts import notify
    from qts.registry import supervise

    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_FORMAT", "json")
    e = tr.live_ramp_entry(home, store, key)
    t = tr.T0 + 8 * tr.DAY
    assert supervise(home, store, now=t + 2 * tr.DAY) == []
    store.event("breaker", "closed -> open: API error rate 40% > 25%", data={"state": "open"}, ts=t + 2 * tr.DAY)
    done = supervise(home, store, now=t + 3 * tr.DAY)
    assert [d["action"] for d in done] == ["demoted"]
    notify.get_notifier(home).flush(10)
    (ev,) = [x for x in hook.events() if x["kind"] == "demoted"]
    assert ev["severity"] == "warning" and ev["data"]["entry_id"] == e.id and "breaker" in ev["text"]
