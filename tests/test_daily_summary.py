"""Daily summary (issue #14): `qts summary --day` from the database, and the loop sending the previous UTC
day's summary once at QTS_SUMMARY_AT to a real webhook on 127.0.0.1, in real `qts run` processes.

Expected figures come from plain SQL over the session's database (fills, gate refusal events, equity
snapshots), not from the summary code.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest

from conftest import CONFIG_VARS
from test_alerts import NOTIFY_VARS, QTS, Hook

DAY = 86_400_000


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.stop()


def day0(name: str) -> int:
    from datetime import datetime, timezone

    return int(datetime.strptime(name, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_the_loop_sends_each_finished_day_once_and_the_numbers_are_the_databases(hook, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS + NOTIFY_VARS}
    env.update(QTS_NOTIFY_WEBHOOK_URL=hook.url, QTS_NOTIFY_WEBHOOK_FORMAT="json", QTS_NOTIFY_REPLAY="1",
               QTS_SUMMARY_AT="00:10")
    # tight limits so that the days have refusals to count by reason
    r = subprocess.run([QTS, "--home", str(home), "risk", "set", "daily_loss_limit_pct=0.3",
                        "drawdown_reduce_pct=0.2", "drawdown_halt_pct=0.5"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the generated market starts 2026-01-01 16:40 (after the warm-up): 2 days cross two midnights
    for days in ("2", "0.5"):  # the second run resumes the replay and must not send a day twice
        r = subprocess.run([QTS, "--home", str(home), "run", "--days", days, "--quiet", "--json"], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    sent = [e for e in hook.events() if e["kind"] == "summary"]
    assert [e["data"]["summary"]["day"] for e in sent] == ["2026-01-01", "2026-01-02", "2026-01-03"]

    conn = sqlite3.connect(home / "db" / "metrics.db")
    total_refusals = 0
    for e in sent:
        s = e["data"]["summary"]
        lo = day0(s["day"])
        hi = lo + DAY - 1
        fees, fills = conn.execute("SELECT COALESCE(SUM(fee),0), COUNT(*) FROM fills WHERE mode='paper' AND ts BETWEEN ? AND ?",
                                   (lo, hi)).fetchone()
        assert s["account"]["fees"] == pytest.approx(fees) and s["account"]["fills"] == fills
        by_symbol = dict(conn.execute("SELECT symbol, SUM(fee) FROM fills WHERE mode='paper' AND ts BETWEEN ? AND ? "
                                      "GROUP BY symbol", (lo, hi)).fetchall())
        assert {g["symbol"]: g["fees"] for g in s["per_symbol"] if g["fees"]} == pytest.approx(by_symbol)
        refusals = dict(conn.execute("SELECT json_extract(data, '$.code'), COUNT(*) FROM events WHERE kind='gate' AND "
                                     "ts BETWEEN ? AND ? GROUP BY 1", (lo, hi)).fetchall())
        assert s["refusals"] == refusals
        total_refusals += sum(refusals.values())
        end = conn.execute("SELECT equity FROM equity_snapshots WHERE mode='paper' AND ts<=? ORDER BY ts DESC LIMIT 1",
                           (hi,)).fetchone()[0]
        before = conn.execute("SELECT equity FROM equity_snapshots WHERE mode='paper' AND ts<? ORDER BY ts DESC LIMIT 1",
                              (lo,)).fetchone()
        start = before[0] if before else conn.execute(
            "SELECT equity FROM equity_snapshots WHERE mode='paper' AND ts>=? ORDER BY ts LIMIT 1", (lo,)).fetchone()[0]
        assert s["account"]["pnl"] == pytest.approx(end - start)
        assert sum(g["pnl"] for g in s["per_symbol"]) == pytest.approx(end - start, abs=1e-6)
        assert e["title"].startswith(f"Daily summary {s['day']} (paper): P&L")
    conn.close()
    assert total_refusals > 0

    # the command gives the same summary the loop sent
    r = subprocess.run([QTS, "--home", str(home), "summary", "--day", "2026-01-02", "--json"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(json.dumps(sent[1]["data"]["summary"]))
    r = subprocess.run([QTS, "--home", str(home), "summary", "--day", "2026-01-02"], env=env, capture_output=True,
                       text=True)
    assert "Daily summary 2026-01-02 (UTC, paper)" in r.stdout and "refusals" in r.stdout
    r = subprocess.run([QTS, "--home", str(home), "summary", "--day", "2026-13-01"], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--day" in r.stderr


def test_summary_send_for_cron_reaches_the_sink(hook, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS + NOTIFY_VARS}
    r = subprocess.run([QTS, "--home", str(home), "run", "--days", "1", "--quiet"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    env.update(QTS_NOTIFY_WEBHOOK_URL=hook.url, QTS_NOTIFY_WEBHOOK_FORMAT="json")
    r = subprocess.run([QTS, "--home", str(home), "summary", "--day", "2026-01-01", "--send"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "sent to 2 sink(s)" in r.stderr  # webhook + events table
    (e,) = [e for e in hook.events() if e["kind"] == "summary"]
    assert e["data"]["summary"]["day"] == "2026-01-01" and e["data"]["summary"]["account"]["decisions"] > 0


def test_registry_changes_of_the_day_are_listed(tmp_path):
    """A research entry added on the day (the registry's own API, test_registry's helper) appears in the
    summary of that day and not in the next day's."""
    import test_registry as tr
    from qts.paths import StateHome
    from qts.reports.daily import daily_summary
    from qts.store import Store

    home = StateHome.resolve(str(tmp_path / "home"))
    store = Store.open(home)
    t = tr.T0 + 3_600_000
    e = tr.add(home, now=t)
    day = t - t % DAY
    s = daily_summary(store, day)
    (c,) = s["registry_changes"]
    assert (c["entry_id"], c["ts"], c["to_stage"]) == (e.id, t, e.stage)
    assert daily_summary(store, day + DAY)["registry_changes"] == []
    store.close()
