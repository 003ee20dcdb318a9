"""`qts perf`: performance metrics from the database for any date range, per strategy and symbol, and
predicted (strategy registry) vs realized. Also the Datasette metadata that documents the database.

Account-level figures are recomputed here with numpy straight from the equity snapshots; trade
statistics from the closed_trades rows; the per-symbol mark-to-market P&L must add up to the
account's equity change exactly.
"""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS, REPO
from qts.cli import cli

NO_ENV = {k: None for k in CONFIG_VARS}
DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def invoke(args, **env):
    return CliRunner().invoke(cli, args, env={**NO_ENV, **env}, catch_exceptions=False)


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    home = tmp_path_factory.mktemp("perf") / "home"
    r = invoke(["--home", str(home), "run", "--days", "3", "--fresh", "--quiet"])
    assert r.exit_code == 0, r.output
    return home


def perf(home, *args):
    r = invoke(["--home", str(home), "perf", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def rows(home, sql, params=()):
    conn = sqlite3.connect(home / "db" / "metrics.db")
    conn.row_factory = sqlite3.Row
    out = [dict(r) for r in conn.execute(sql, params)]
    conn.close()
    return out


# -- against the database ---------------------------------------------------------------------------------

def test_account_figures_from_the_equity_snapshots(replay):
    d = perf(replay)
    a = d["account"]
    snaps = rows(replay, "SELECT ts, equity, positions_value FROM equity_snapshots ORDER BY ts, id")
    eq = np.array([s["equity"] for s in snaps])
    ts = np.array([s["ts"] for s in snaps])
    r = eq[1:] / eq[:-1] - 1
    ppy = 365 * DAY / np.median(np.diff(ts))
    assert a["start_equity"] == pytest.approx(eq[0]) and a["end_equity"] == pytest.approx(eq[-1])
    assert a["pnl"] == pytest.approx(eq[-1] - eq[0])
    assert a["return_pct"] == pytest.approx(100 * (eq[-1] / eq[0] - 1))
    assert a["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(ppy), rel=1e-9)
    assert a["sortino"] == pytest.approx(r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(ppy), rel=1e-9)
    peak = np.maximum.accumulate(eq)
    assert a["max_drawdown_pct"] == pytest.approx(100 * np.max((peak - eq) / peak))
    worst = int(np.argmax((peak - eq) / peak))
    assert a["max_drawdown"] == pytest.approx(peak[worst] - eq[worst])
    assert a["time_in_market_pct"] == pytest.approx(100 * np.mean([s["positions_value"] > 0 for s in snaps]))
    assert a["days"] == pytest.approx(3.0, abs=0.01)


def test_trade_statistics_from_closed_trades(replay):
    d = perf(replay)
    trades = rows(replay, "SELECT * FROM closed_trades")
    fills = rows(replay, "SELECT * FROM fills")
    assert len(trades) >= 5, "the replay closed too few trades to test anything"
    pnl = [t["pnl"] for t in trades]
    wins, losses = [p for p in pnl if p > 0], [p for p in pnl if p <= 0]
    a = d["account"]
    assert a["trades"] == len(trades) and a["wins"] == len(wins)
    assert a["win_rate"] == pytest.approx(len(wins) / len(trades))
    assert a["profit_factor"] == pytest.approx(sum(wins) / -sum(losses))
    assert a["expectancy"] == pytest.approx(sum(pnl) / len(pnl))
    assert a["realized_pnl"] == pytest.approx(sum(pnl))
    assert a["fees"] == pytest.approx(sum(f["fee"] for f in fills)) and a["fills"] == len(fills)
    for g in d["per_symbol"]:
        mine = [t for t in trades if t["symbol"] == g["symbol"]]
        assert g["trades"] == len(mine)
        assert g["realized_pnl"] == pytest.approx(sum(t["pnl"] for t in mine))
        assert g["fees"] == pytest.approx(sum(f["fee"] for f in fills if f["symbol"] == g["symbol"]))


def test_per_symbol_pnl_adds_up_to_the_equity_change(replay):
    for args in ([], ["--since", "2026-01-02"], ["--since", "2026-01-02T06:00", "--until", "2026-01-03T18:00"]):
        d = perf(replay, *args)
        a = d["account"]
        assert len(d["per_symbol"]) == 3
        assert sum(g["pnl"] for g in d["per_symbol"]) == pytest.approx(a["pnl"], abs=1e-6), args
        assert sum(g["pnl"] for g in d["per_strategy"]) == pytest.approx(a["pnl"], abs=1e-6), args
        for g in d["per_symbol"] + d["per_strategy"]:
            for k in ("sharpe", "sortino", "max_drawdown_pct", "time_in_market_pct", "avg_exposure_pct"):
                assert k in g


def test_a_date_range_selects_what_it_says(replay):
    lo, hi = T0 + DAY + 6 * 3_600_000, T0 + 2 * DAY + 18 * 3_600_000
    d = perf(replay, "--since", str(lo), "--until", str(hi))
    trades = rows(replay, "SELECT * FROM closed_trades WHERE exit_ts BETWEEN ? AND ?", (lo, hi))
    fees = rows(replay, "SELECT COALESCE(SUM(fee), 0) AS f FROM fills WHERE ts BETWEEN ? AND ?", (lo, hi))[0]["f"]
    before = rows(replay, "SELECT equity FROM equity_snapshots WHERE ts < ? ORDER BY ts DESC LIMIT 1", (lo,))[0]["equity"]
    last = rows(replay, "SELECT equity FROM equity_snapshots WHERE ts <= ? ORDER BY ts DESC LIMIT 1", (hi,))[0]["equity"]
    a = d["account"]
    assert a["trades"] == len(trades) and a["fees"] == pytest.approx(fees)
    assert a["start_equity"] == pytest.approx(before) and a["end_equity"] == pytest.approx(last)
    # a day given as a date is the whole day
    d = perf(replay, "--since", "2026-01-02", "--until", "2026-01-02")
    assert d["until_ts"] == T0 + 2 * DAY - 1
    # a span counts back from the latest record
    d = perf(replay, "--since", "12h")
    end = rows(replay, "SELECT MAX(ts) AS t FROM equity_snapshots")[0]["t"]
    assert d["since_ts"] == end - 12 * 3_600_000


def test_filters_and_text(replay):
    d = perf(replay, "--symbol", "eth/usdt")
    assert [g["symbol"] for g in d["per_symbol"]] == ["ETH/USDT"]
    d = perf(replay, "--strategy", "nope")
    assert d["per_strategy"] == []
    r = invoke(["--home", str(replay), "perf"])
    assert r.exit_code == 0
    for needle in ("Performance (paper)", "Sharpe", "Sortino", "max drawdown", "win rate", "profit factor",
                   "expectancy", "By strategy", "By symbol", "BTC/USDT", "sma_cross",
                   "sma_cross: no expectation recorded"):
        assert needle in r.output, needle


def test_bad_input(replay, tmp_path):
    r = invoke(["--home", str(replay), "perf", "--since", "last tuesday"])
    assert r.exit_code == 2 and "--since" in r.output
    r = invoke(["--home", str(replay), "perf", "--since", "2026-02-01", "--until", "2026-01-01"])
    assert r.exit_code == 2 and "after" in r.output
    r = invoke(["--home", str(tmp_path / "none"), "perf"])
    assert r.exit_code == 1 and "no database" in r.output


# -- the strategy registry --------------------------------------------------------------------------------

def test_predicted_vs_realized_from_the_registry(replay):
    reg = replay / "registry" / "strategies.json"
    reg.parent.mkdir(exist_ok=True)
    try:
        reg.write_text(json.dumps({"strategies": [
            {"name": "sma_cross", "status": "paper", "params": {"fast": 20, "slow": 50},
             "expected": {"sharpe": 1.5, "win_rate": 55, "profit_factor": 1.4, "max_drawdown_pct": 12.0}},
            {"name": "other", "expected": {"sharpe": 3.0}}]}))
        d = perf(replay)
        (p,) = d["predicted_vs_realized"]
        g = d["per_strategy"][0]
        assert p["strategy"] == "sma_cross" and p["status"] == "compared" and p["registry_status"] == "paper"
        cmp = {c["metric"]: c for c in p["comparison"]}
        assert cmp["sharpe"]["expected"] == 1.5 and cmp["sharpe"]["realized"] == pytest.approx(g["sharpe"])
        assert cmp["sharpe"]["difference"] == pytest.approx(g["sharpe"] - 1.5)
        assert cmp["win_rate"]["expected"] == pytest.approx(0.55)  # recorded in percent, compared as a fraction
        assert cmp["profit_factor"]["realized"] == pytest.approx(g["profit_factor"])
        assert cmp["max_drawdown_pct"]["realized"] == pytest.approx(g["max_drawdown_pct"])
        out = invoke(["--home", str(replay), "perf"]).output
        assert "sma_cross (registry: paper)" in out and "profit_factor" in out

        reg.write_text("{ not json")
        d = perf(replay)
        assert "unreadable" in d["registry"]["problem"]
        assert d["predicted_vs_realized"][0]["status"] == "no expectation recorded"
    finally:
        reg.unlink(missing_ok=True)
    assert perf(replay)["predicted_vs_realized"][0]["status"] == "no expectation recorded"


def test_registry_shapes():
    from qts.reports.performance import expectations_of, find_expectation

    entries = [{"id": "a", "strategy": "s", "params": {"k": 1}, "backtest": {"sharpe_ratio": 0.9}},
               {"id": "b", "strategy": "s", "params": {"k": 2}, "oos": {"sharpe": 1.2, "expectancy": 3}},
               {"name": "t", "sharpe": 2.0}]
    assert find_expectation(entries, "s", {"k": 1})["id"] == "a"
    assert find_expectation(entries, "s", {"k": 9})["id"] == "b"  # no match on params: the latest
    assert expectations_of(entries[1]) == {"sharpe": 1.2, "expectancy": 3.0}
    assert expectations_of(entries[2]) == {"sharpe": 2.0}
    assert find_expectation(entries, "u") is None


# -- exact numbers on a hand-made database ---------------------------------------------------------------

def test_exact_trade_statistics(store):
    from qts.reports.performance import performance

    pnls = [10.0, -5.0, 20.0, -10.0]
    with store.tx():
        for i, p in enumerate(pnls):
            store.insert("closed_trades", {"mode": "paper", "symbol": "BTC/USDT", "strategy": "s", "entry_ts": T0 + i * 1000,
                                           "exit_ts": T0 + i * 1000 + 500, "amount": 1, "entry_price": 100,
                                           "exit_price": 100 + p, "gross_pnl": p + 1, "fees": 1, "pnl": p,
                                           "return_pct": p, "exit_reason": "signal"})
        for i, e in enumerate([100.0, 110.0, 99.0, 121.0, 107.0]):
            store.insert("equity_snapshots", {"mode": "paper", "ts": T0 + i * 300_000, "equity": e, "cash": e,
                                              "positions_value": 0, "unrealized_pnl": 0, "realized_pnl": 0})
    d = performance(store)
    a = d["account"]
    assert a["win_rate"] == 0.5 and a["profit_factor"] == pytest.approx(2.0) and a["expectancy"] == pytest.approx(3.75)
    assert a["payoff_ratio"] == pytest.approx(15 / 7.5) and a["best_trade"] == 20 and a["worst_trade"] == -10
    # two drawdowns: 110 -> 99 (10%) and 121 -> 107 (11.6%, the larger)
    assert a["max_drawdown_pct"] == pytest.approx(100 * 14 / 121)
    assert a["max_drawdown"] == pytest.approx(14.0)
    assert (a["max_drawdown_peak_ts"], a["max_drawdown_trough_ts"]) == (T0 + 3 * 300_000, T0 + 4 * 300_000)
    r = np.array([0.1, -0.1, 121 / 99 - 1, 107 / 121 - 1])
    ppy = 365 * DAY / 300_000
    assert a["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(ppy))
    # no losing trade: profit factor is undefined, not infinite
    store.execute("DELETE FROM closed_trades WHERE pnl <= 0")
    assert performance(store)["account"]["profit_factor"] is None


def test_parse_time():
    from qts.reports.performance import TimeSpecError, parse_time

    now = T0 + 5 * DAY
    assert parse_time("2026-01-02", now) == T0 + DAY
    assert parse_time("2026-01-02", now, end=True) == T0 + 2 * DAY - 1
    assert parse_time("2026-01-02T06:30", now) == T0 + DAY + 6.5 * 3_600_000
    assert parse_time("2026-01-02T06:30:00Z", now) == T0 + DAY + 6.5 * 3_600_000
    assert parse_time("7d", now) == now - 7 * DAY and parse_time("90m", now) == now - 90 * 60_000
    assert parse_time(str(T0), now) == T0 and parse_time(None, now) is None
    for bad in ("2026-13-01", "soon", "7y"):
        with pytest.raises(TimeSpecError):
            parse_time(bad, now)


# -- Datasette metadata ------------------------------------------------------------------------------------

def test_datasette_metadata_describes_every_table_and_column(tmp_path):
    from qts.store import connect, migrate

    meta = json.loads((REPO / "db" / "datasette-metadata.json").read_text(encoding="utf-8"))
    assert isinstance(meta.get("title"), str) and isinstance(meta.get("description"), str)
    assert set(meta["databases"]) == {"metrics"}  # `datasette db/metrics.db` names the database after the file
    dbm = meta["databases"]["metrics"]
    conn = connect(tmp_path / "metrics.db")
    migrate(conn)
    schema = {t: [c[1] for c in conn.execute(f"PRAGMA table_info({t})")]
              for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}
    assert set(dbm["tables"]) == set(schema), "tables described vs tables in the migrations"
    table_keys = {"description", "description_html", "columns", "sort", "sort_desc", "facets", "label_column",
                  "hidden", "sortable_columns", "units", "size", "title", "license", "license_url", "source",
                  "source_url", "about", "about_url"}
    for t, cols in schema.items():
        tm = dbm["tables"][t]
        assert set(tm) <= table_keys, (t, set(tm) - table_keys)
        assert isinstance(tm["description"], str) and len(tm["description"]) > 10, t
        assert set(tm["columns"]) == set(cols), (t, set(cols) ^ set(tm["columns"]))
        assert all(isinstance(v, str) and v.strip() for v in tm["columns"].values()), t
        for k in ("sort", "sort_desc", "label_column"):
            if k in tm:
                assert tm[k] in cols, (t, k)
        for f in tm.get("facets", []):
            assert f in cols, (t, f)
    # canned queries are valid SQL against the schema
    for name, q in dbm.get("queries", {}).items():
        assert set(q) <= {"sql", "title", "description", "description_html", "hide_sql", "write", "params"}, name
        conn.execute(q["sql"], {"mode": "paper"}).fetchall()
    conn.close()
