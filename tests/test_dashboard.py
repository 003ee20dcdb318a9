"""`qts dashboard` in a real headless Chromium (the DevTools client of test_report_html): the page loads
with no console error and no request leaving 127.0.0.1, shows the numbers the database holds (read here
with plain SQL), moves when a cycle runs without reloading, and its two controls only tighten (halt,
kill switch) and need the token; loosening is only shown as a terminal command.

The dashboard server binds 127.0.0.1 on a free port and is stopped by the fixture.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli
from test_report_html import Browser, chromium  # noqa: F401  (the fixture, reused)

NO_ENV = {k: None for k in CONFIG_VARS}
TOKEN = "dashboard-test-token-0123456789"


def invoke(args):
    return CliRunner().invoke(cli, args, env=NO_ENV, catch_exceptions=False)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    r = invoke(["--home", str(h), "run", "--days", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    return h


@pytest.fixture
def dash(home):
    from qts.monitor.dashboard import start_dashboard
    from qts.paths import StateHome

    srv = start_dashboard(StateHome.resolve(str(home)), port=0, token=TOKEN)
    yield srv
    srv.stop()


@pytest.fixture
def browser(chromium, tmp_path):  # noqa: F811
    b = Browser(chromium, tmp_path / "chromium-profile")
    yield b
    b.close()


def sql(home, q, args=()):
    conn = sqlite3.connect(home / "db" / "metrics.db")
    try:
        return conn.execute(q, args).fetchall()
    finally:
        conn.close()


def wait_for(browser, expr: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = browser.evaluate(expr)
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {expr}")


def text(browser, el_id: str) -> str:
    return browser.evaluate(f"document.getElementById({json.dumps(el_id)}).textContent")


def db_equity(home) -> float:
    cash = sql(home, "SELECT COALESCE(SUM(free),0) FROM balances WHERE mode='paper'")[0][0]
    held = sql(home, "SELECT p.amount * json_extract(d.inputs, '$.price') FROM positions p JOIN decisions d ON "
                     "d.id=(SELECT MAX(id) FROM decisions WHERE symbol=p.symbol AND mode='paper') "
                     "WHERE p.mode='paper' AND p.amount>0")
    return cash + sum(v for (v,) in held)


def test_the_page_shows_the_database_and_moves_with_a_cycle(home, dash, browser):
    browser.open(f"{dash.url}/?every=300#token={TOKEN}")
    wait_for(browser, "window.qtsData !== undefined")
    assert browser.problems() == []
    assert all(u.startswith(dash.url) for u in browser.requests()), browser.requests()
    # the token left the address bar (it stays in this tab's sessionStorage only)
    assert "token" not in browser.evaluate("location.href")

    n_dec = sql(home, "SELECT COUNT(*) FROM decisions")[0][0]
    assert text(browser, "decision_count") == str(n_dec)
    assert text(browser, "equity") == f"{db_equity(home):,.2f}"
    (sym, codes), = sql(home, "SELECT symbol, reason_codes FROM decisions ORDER BY id DESC LIMIT 1")
    first = browser.evaluate("Array.from(document.querySelectorAll('#decisions tr')[1].cells).map(c => c.textContent)")
    assert first[1] == sym and first[-1] == " ".join(json.loads(codes))
    (status, side), = sql(home, "SELECT status, side FROM orders ORDER BY id DESC LIMIT 1")
    row = browser.evaluate("Array.from(document.querySelectorAll('#orders tr')[1].cells).map(c => c.textContent)")
    assert row[2] == side and row[6] == status
    assert text(browser, "ks") == "clear" and text(browser, "synthetic") == "SYNTHETIC market"
    assert browser.evaluate("document.querySelectorAll('#eqpath')[0].getAttribute('d').split('L').length") > 100

    # a cycle runs (another process's command, here in-process): the page follows without a reload
    browser.evaluate("window.loadMarker = 'same page'")
    before_cycle = text(browser, "last_cycle")
    r = invoke(["--home", str(home), "once"])
    assert r.exit_code == 0, r.output
    n_after = sql(home, "SELECT COUNT(*) FROM decisions")[0][0]
    assert n_after > n_dec
    wait_for(browser, f"document.getElementById('decision_count').textContent === '{n_after}'")
    assert browser.evaluate("window.loadMarker") == "same page"
    assert text(browser, "last_cycle") != before_cycle
    assert text(browser, "equity") == f"{db_equity(home):,.2f}"
    assert browser.problems() == []


def test_controls_tighten_with_the_token_and_loosening_is_only_a_command(home, dash, browser):
    from qts.paths import StateHome
    from qts.safety import kill_switch
    from qts.safety.breaker import Breaker

    h = StateHome.resolve(str(home))
    # without the token: neither the data nor a control
    for method, path in (("GET", "/dashboard/data"), ("POST", "/halt"), ("POST", "/kill-switch")):
        req = urllib.request.Request(dash.url + path, method=method, data=b"{}" if method == "POST" else None,
                                     headers={"Authorization": "Bearer wrong-token-wrong-token"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10)
        assert e.value.code == 401
    assert Breaker(h).status(int(time.time() * 1000)).trading_state == "ACTIVE"
    assert not kill_switch.status(h).engaged

    browser.open(f"{dash.url}/?every=300#token={TOKEN}")
    wait_for(browser, "window.qtsData !== undefined")
    loosen = browser.evaluate("document.getElementById('loosen').textContent")
    assert "qts kill-switch reset" in loosen and "qts breaker state ACTIVE" in loosen
    # no control on the page loosens anything
    assert browser.evaluate("Array.from(document.querySelectorAll('button')).map(b => b.id)") == [
        "btn_kill", "btn_halt", "btn_reduce", "btn_lower", "btn_pause"]

    browser.evaluate("window.confirm = () => true")
    browser.evaluate("document.getElementById('btn_reduce').click()")
    wait_for(browser, "document.getElementById('ctl_result').textContent === 'Reduce only: done'")
    assert Breaker(h).status(int(time.time() * 1000)).trading_state == "REDUCING"
    browser.evaluate("document.getElementById('btn_halt').click()")
    wait_for(browser, "document.getElementById('ctl_result').textContent === 'Halt trading: done'")
    assert Breaker(h).status(int(time.time() * 1000)).trading_state == "HALTED"
    wait_for(browser, "document.getElementById('trading').textContent === 'HALTED'")
    # back to REDUCING would loosen: refused, the state stays HALTED, the page says so
    browser.evaluate("document.getElementById('btn_reduce').click()")
    wait_for(browser, "document.getElementById('ctl_result').textContent.startsWith('Reduce only: refused')")
    assert Breaker(h).status(int(time.time() * 1000)).trading_state == "HALTED"

    browser.evaluate("document.getElementById('btn_kill').click()")
    wait_for(browser, "document.getElementById('ctl_result').textContent === 'Engage the kill switch: done'")
    assert kill_switch.status(h).engaged
    wait_for(browser, "document.getElementById('ks').textContent === 'ENGAGED'")
    # a cycle now is refused by the loop itself (the gate would refuse every order anyway)
    r = invoke(["--home", str(home), "once"])
    assert "kill switch" in (r.output + str(r.exception or "")).lower()
    # the browser logs the refused loosening (409) as a failed load; nothing else went wrong
    problems = browser.problems()
    assert [p for p in problems if "409 (Conflict)" not in p] == [] and len(problems) == 1


def test_prometheus_predicted_vs_realized_per_strategy(home, dash):
    reg = home / "registry" / "strategies.json"
    reg.parent.mkdir(exist_ok=True)
    reg.write_text(json.dumps({"strategies": [{"name": "sma_cross", "status": "paper", "params": {"fast": 20, "slow": 50},
                                               "expected": {"sharpe": 1.5, "win_rate": 0.55}}]}))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text_ = opener.open(dash.url + "/metrics", timeout=30).read().decode()
    lines = dict(line.rsplit(" ", 1) for line in text_.splitlines() if line and not line.startswith("#"))
    key = 'qts_strategy_{}{{mode="paper",strategy="sma_cross",metric="{}"}}'
    assert float(lines[key.format("predicted", "sharpe")]) == 1.5
    assert float(lines[key.format("predicted", "win_rate")]) == 0.55
    wins, n = sql(home, "SELECT SUM(pnl > 0), COUNT(*) FROM closed_trades WHERE mode='paper'")[0]
    assert n > 0 and float(lines[key.format("realized", "win_rate")]) == pytest.approx(wins / n)
    (pnl_end,), (start,) = (sql(home, "SELECT equity FROM equity_snapshots ORDER BY id DESC LIMIT 1")[0],
                            sql(home, "SELECT equity FROM equity_snapshots ORDER BY id LIMIT 1")[0])
    # one strategy trades every symbol: its P&L is the account's from the first snapshot
    assert float(lines['qts_strategy_pnl{mode="paper",strategy="sma_cross"}']) == pytest.approx(pnl_end - start, abs=0.01)


def test_the_dashboard_command_prints_a_working_url_and_stops_by_itself(home):
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS and k != "QTS_MONITOR_TOKEN"}
    qts = str(Path(sys.executable).parent / "qts")
    p = subprocess.Popen([qts, "--home", str(home), "dashboard", "--port", "0", "--for", "20"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        m = re.match(r"dashboard: (http://127\.0\.0\.1:\d+)/#token=(\S+)", line)
        assert m, line
        base, token = m.group(1), m.group(2)
        assert len(token) >= 16
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(base + "/dashboard/data", headers={"Authorization": f"Bearer {token}"})
        d = json.loads(opener.open(req, timeout=30).read())
        assert d["decision_count"] == sql(home, "SELECT COUNT(*) FROM decisions")[0][0]
        page = opener.open(base + "/", timeout=30).read().decode()
        assert token not in page and "/dashboard/data" in page  # the page carries no secret and no data
        p.terminate()  # SIGTERM: stops cleanly
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


def test_lower_a_limit_and_pause_a_strategy_by_clicking(home, dash, browser):
    """A click lowers max_positions in the saved profile (read back as plain JSON); a looser value is refused and
    the page shows the terminal command; a click pauses the strategy and its next cycles open nothing."""
    prof = home / "safety" / "risk_profile.json"
    browser.open(f"{dash.url}/?every=300#token={TOKEN}")
    wait_for(browser, "window.qtsData !== undefined && document.getElementById('limit_field').options.length > 0")
    browser.evaluate("window.confirm = () => true")
    browser.evaluate("document.getElementById('limit_field').value = 'max_positions';"
                     "document.getElementById('limit_field').dispatchEvent(new Event('change'))")
    assert text(browser, "limit_now") == "10" and text(browser, "limit_dir") == "lower"
    browser.evaluate("document.getElementById('limit_value').value = '3'; document.getElementById('btn_lower').click()")
    wait_for(browser, "document.getElementById('ctl_result').textContent === 'Set max_positions to 3: done'")
    assert json.loads(prof.read_text())["profile"]["max_positions"] == 3
    wait_for(browser, "document.getElementById('limit_now').textContent === '3'")
    # looser: refused on the server, the saved value stays, the page gives the terminal command
    browser.evaluate("document.getElementById('limit_value').value = '8'; document.getElementById('btn_lower').click()")
    wait_for(browser, "document.getElementById('ctl_result').textContent.startsWith('Set max_positions to 8: refused')")
    assert "qts risk set max_positions=8" in text(browser, "ctl_result")
    assert json.loads(prof.read_text())["profile"]["max_positions"] == 3

    # pause the strategy the decisions show
    names = browser.evaluate("Array.from(document.getElementById('pause_name').options).map(o => o.value)")
    assert "sma_cross" in names
    browser.evaluate("document.getElementById('pause_name').value = 'sma_cross'; document.getElementById('btn_pause').click()")
    wait_for(browser, "document.getElementById('ctl_result').textContent === 'Pause sma_cross: done'")
    wait_for(browser, "document.getElementById('paused').textContent === 'sma_cross'")
    last = sql(home, "SELECT MAX(id) FROM decisions")[0][0]
    buys = sql(home, "SELECT COUNT(*) FROM orders WHERE side='buy'")[0][0]
    r = invoke(["--home", str(home), "run", "--days", "1", "--quiet"])  # the next cycles
    assert r.exit_code == 0, r.output
    assert sql(home, "SELECT COUNT(*) FROM orders WHERE side='buy'")[0][0] == buys
    assert sql(home, "SELECT COUNT(*) FROM decisions WHERE id>? AND reason_codes LIKE '%STRATEGY_PAUSED%'",
               (last,))[0][0] > 0
    assert "qts strategy resume NAME" in browser.evaluate("document.getElementById('loosen').textContent")
    problems = browser.problems()  # the refused loosening (409) is logged by the browser as a failed load
    assert [p for p in problems if "409 (Conflict)" not in p] == [] and len(problems) == 1
