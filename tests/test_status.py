"""`qts status`: the loop, breaker, kill switch, equity, positions marked at the last decision price,
today's P&L against the daily loss limit, drawdown against its limits, the latest decisions.

State comes from a real replay (`qts run --days 0.5 --fresh`) in a temporary state home, or from rows
written by hand into a real SQLite database when a test needs exact numbers. Expected values are
recomputed here with plain sqlite3, independently of the library's queries.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

NO_ENV = {k: None for k in CONFIG_VARS}
DAY = 86_400_000


def invoke(args, **env):
    return CliRunner().invoke(cli, args, env={**NO_ENV, **env}, catch_exceptions=False)


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    home = tmp_path_factory.mktemp("status") / "home"
    r = invoke(["--home", str(home), "run", "--days", "0.5", "--fresh", "--quiet"])
    assert r.exit_code == 0, r.output
    return home


def status_json(home, *extra):
    r = invoke(["--home", str(home), "status", "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def db(home):
    conn = sqlite3.connect(home / "db" / "metrics.db")
    conn.row_factory = sqlite3.Row
    return conn


def test_status_after_a_replay_matches_the_database(replay):
    st = status_json(replay)
    conn = db(replay)
    marks = {}
    for r in conn.execute("SELECT symbol, inputs FROM decisions ORDER BY id"):
        marks[r["symbol"]] = json.loads(r["inputs"])["price"]  # the last one wins
    pos = conn.execute("SELECT symbol, amount, avg_entry FROM positions WHERE mode='paper' AND amount>0 "
                       "ORDER BY symbol").fetchall()
    cash = conn.execute("SELECT free FROM balances WHERE mode='paper'").fetchone()[0]
    snaps = conn.execute("SELECT ts, equity FROM equity_snapshots ORDER BY ts, id").fetchall()
    last_decisions = conn.execute("SELECT symbol, reason_codes FROM decisions ORDER BY id DESC LIMIT 12").fetchall()
    conn.close()

    assert st["mode"] == "paper" and st["configured_mode"] == "paper"
    assert st["loop"]["state"] == "stopped" and st["loop"]["reason"] == "finished"
    assert st["loop"]["cycles"] == len(snaps)
    assert st["kill_switch"]["engaged"] is False
    assert st["breaker"]["state"] in ("open", "half_open", "closed") and st["breaker"]["trading_state"] == "ACTIVE"
    assert st["synthetic"] is True

    assert pos, "the replay left no open position to mark"
    assert [p["symbol"] for p in st["positions"]] == [p["symbol"] for p in pos]
    for p, row in zip(st["positions"], pos):
        assert p["mark"] == pytest.approx(marks[row["symbol"]])
        assert p["amount"] == pytest.approx(row["amount"])
        assert p["unrealized_pnl"] == pytest.approx(row["amount"] * (marks[row["symbol"]] - row["avg_entry"]))
        assert p["value"] == pytest.approx(row["amount"] * marks[row["symbol"]])
    equity = cash + sum(r["amount"] * marks[r["symbol"]] for r in pos)
    assert st["cash"] == pytest.approx(cash)
    assert st["equity"] == pytest.approx(equity)
    # the loop's own last snapshot marks at the same prices
    assert st["equity"] == pytest.approx(snaps[-1]["equity"], rel=1e-9)

    # today: from the first snapshot of the UTC day of the last snapshot; limit from the risk profile (default 5%)
    day0 = snaps[-1]["ts"] - snaps[-1]["ts"] % DAY
    day_start = next(s["equity"] for s in snaps if s["ts"] >= day0)
    t = st["today"]
    assert t["day_start_equity"] == pytest.approx(day_start)
    assert t["pnl"] == pytest.approx(equity - day_start)
    assert t["limit_pct"] == 5.0 and t["limit_amount"] == pytest.approx(day_start * 0.05)
    loss_pct = max(0.0, 100 * (day_start - equity) / day_start)
    assert t["limit_used_pct"] == pytest.approx(100 * loss_pct / 5.0)
    assert t["state"] == "ok"

    peak = max(max(s["equity"] for s in snaps), equity)
    dd = st["drawdown"]
    assert dd["peak_equity"] == pytest.approx(peak)
    assert dd["drawdown_pct"] == pytest.approx(100 * (peak - equity) / peak)
    assert (dd["reduce_pct"], dd["halt_pct"]) == (15.0, 20.0)

    assert len(st["decisions"]) == 12
    assert [(d["symbol"], d["reason_codes"]) for d in st["decisions"]] == \
           [(r["symbol"], json.loads(r["reason_codes"])) for r in last_decisions]


def test_status_json_keeps_the_loop_fields_at_the_top(replay):
    st = status_json(replay)
    for k in ("state", "pid", "cycles", "last_cycle_ts", "next_cycle_ts"):
        assert st[k] == st["loop"][k]
    assert {"symbol", "amount", "avg_entry"} <= set(st["positions"][0])
    assert len(status_json(replay, "--decisions", "3")["decisions"]) == 3


def test_status_text(replay):
    r = invoke(["--home", str(replay), "status"])
    assert r.exit_code == 0, r.output
    out = r.output
    for needle in ("mode          PAPER", "SYNTHETIC", "loop          STOPPED", "breaker", "kill switch   clear",
                   "equity", "today", "daily loss limit -5%", "drawdown", "reduce at 15%", "halt at 20%",
                   "Open positions (marked at the last recorded decision price)", "Last 12 decisions",
                   "reason codes"):
        assert needle in out, needle
    st = status_json(replay)
    assert st["positions"][0]["symbol"] in out
    assert f"{st['equity']:,.2f}" in out


def test_status_follows_the_risk_profile_and_the_kill_switch(tmp_path):
    import shutil

    from qts.paths import StateHome
    from qts.safety import kill_switch
    from qts.safety.risk_profile import load_profile, save_profile

    home = tmp_path / "home"
    r = invoke(["--home", str(home), "run", "--days", "0.2", "--fresh", "--quiet"])
    assert r.exit_code == 0, r.output
    h = StateHome(home)
    prof = load_profile(h).profile.model_dump()
    prof.update(daily_loss_limit_pct=2.5, drawdown_reduce_pct=8.0, drawdown_halt_pct=12.0)
    save_profile(h, prof, approved_by_pin=False, log=lambda *a: None)  # tightening needs no PIN
    st = status_json(home)
    assert st["today"]["limit_pct"] == 2.5
    assert (st["drawdown"]["reduce_pct"], st["drawdown"]["halt_pct"]) == (8.0, 12.0)
    assert st["risk_profile"]["source"] == "file"

    kill_switch.engage(h, "test stop")
    st = status_json(home)
    assert st["kill_switch"]["engaged"] is True and "test stop" in st["kill_switch"]["reason"]
    assert "kill switch   ENGAGED" in invoke(["--home", str(home), "status"]).output
    shutil.rmtree(h.safety_dir)  # deleting the flag does not release it: the database remembers
    assert status_json(home)["kill_switch"]["engaged"] is True


def test_status_of_a_new_home(tmp_path):
    home = tmp_path / "new"
    st = status_json(home)
    assert st["database"] is None and st["positions"] == [] and st["loop"]["state"] == "not running"
    assert not (home / "db" / "metrics.db").exists()  # status only reads
    r = invoke(["--home", str(home), "status"])
    assert r.exit_code == 0 and "none yet" in r.output


def test_status_reports_a_dead_and_a_stale_loop(replay, tmp_path):
    import shutil

    home = tmp_path / "copy"
    shutil.copytree(replay, home)
    status_file = home / "run" / "loop.status.json"
    st = json.loads(status_file.read_text())
    # a loop that died without cleaning up (kill -9): its pid no longer exists
    st.update(state="running", pid=2 ** 22 + 12345, updated=time.time())
    status_file.write_text(json.dumps(st))
    out = status_json(home)
    assert out["loop"]["state"] == "dead"
    assert "loop          DEAD" in invoke(["--home", str(home), "status"]).output
    # alive but silent for more than 3 intervals
    st.update(state="running", pid=os.getpid(), updated=time.time() - 3600, interval_min=5)
    status_file.write_text(json.dumps(st))
    out = status_json(home)
    assert out["loop"]["state"] == "running" and out["loop"]["stale"] is True
    assert "STALE" in invoke(["--home", str(home), "status"]).output


def _seed(store, snaps, cash, positions=(), decisions=()):
    with store.tx():
        store.insert("balances", {"mode": "paper", "asset": "USDT", "free": cash, "updated_ts": snaps[-1][0]})
        for ts, eq in snaps:
            store.insert("equity_snapshots", {"mode": "paper", "ts": ts, "equity": eq, "cash": eq, "positions_value": 0,
                                              "unrealized_pnl": 0, "realized_pnl": 0})
        for sym, amount, entry in positions:
            store.insert("positions", {"mode": "paper", "symbol": sym, "amount": amount, "avg_entry": entry,
                                       "updated_ts": snaps[-1][0], "opened_ts": snaps[0][0]})
        for ts, sym, price in decisions:
            store.insert("decisions", {"cycle_id": f"paper-{ts}", "ts": ts, "mode": "paper", "symbol": sym,
                                       "strategy": "sma_cross", "inputs": json.dumps({"price": price, "held": 0}),
                                       "outputs": json.dumps({"target": 0}), "reason_codes": json.dumps(["HOLD"])})


@pytest.mark.parametrize("equity_now, today_state, dd_state", [
    (9_700.0, "ok", "ok"),            # -3% today, 3% below the peak
    (9_500.0, "halted", "ok"),        # -5% today: AT the daily limit halts entries
    (8_400.0, "halted", "reducing"),  # 16% below the 10,000 peak
    (7_900.0, "halted", "halted"),    # 21% below the peak
])
def test_limits_are_judged_like_the_gate(store, equity_now, today_state, dd_state):
    from qts.reports.status import collect_status

    d0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
    # yesterday peaked at 10,000; today started at 10,000 (first snapshot of the day)
    _seed(store, [(d0 - 3_600_000, 10_000.0), (d0 + 300_000, 10_000.0), (d0 + 600_000, equity_now)],
          cash=equity_now - 2 * 100.0, positions=[("BTC/USDT", 2.0, 90.0)],
          decisions=[(d0 + 300_000, "BTC/USDT", 95.0), (d0 + 600_000, "BTC/USDT", 100.0)])
    st = collect_status(store.home, store=store)
    assert st["equity"] == pytest.approx(equity_now)  # cash + 2 x 100 (the LAST decision price)
    assert st["positions"][0]["mark"] == 100.0 and st["positions"][0]["unrealized_pnl"] == pytest.approx(20.0)
    assert st["today"]["day_start_equity"] == 10_000.0
    assert st["today"]["pnl"] == pytest.approx(equity_now - 10_000.0)
    assert st["today"]["state"] == today_state
    assert st["drawdown"]["state"] == dd_state
    assert st["drawdown"]["drawdown_pct"] == pytest.approx(100 * (10_000 - equity_now) / 10_000)


def test_a_position_without_a_recorded_price_is_marked_at_entry(store):
    from qts.reports.status import collect_status, render_status

    _seed(store, [(1_767_225_600_000, 1_000.0)], cash=900.0, positions=[("ETH/USDT", 0.05, 2_000.0)])
    st = collect_status(store.home, store=store)
    p = st["positions"][0]
    assert p["mark"] == 2_000.0 and p["mark_source"] == "entry (no price)" and p["unrealized_pnl"] == 0
    assert "ETH/USDT" in render_status(st)
