"""The qts CLI offline: market data from the generated market and from candle files, metrics,
database migration, and --help everywhere."""

from __future__ import annotations

import json
import math
import sqlite3

import click
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS, read_csv_rows
from qts.cli import cli
from qts.market import synthetic

NO_ENV = {k: None for k in CONFIG_VARS}
TF = 300_000


def invoke(args, **env):
    return CliRunner().invoke(cli, args, env={**NO_ENV, **env})


@pytest.fixture
def hargs(tmp_path):
    return ["--home", str(tmp_path / "home")]


# -- market ---------------------------------------------------------------------------------------------

def _synthetic_btc():
    # `market --synthetic` replays one generated day after a 200-candle warm-up (seed 7): the clock
    # stands at candle 200, so the price now is that candle's open
    return synthetic.generate("BTC/USDT", 200 + 288 + 1, TF, seed=7)


def test_market_ticker_synthetic(hargs):
    r = invoke(hargs + ["market", "ticker", "BTC/USDT", "--synthetic"])
    assert r.exit_code == 0, r.output
    t = json.loads(r.output)
    g = _synthetic_btc()
    assert t["symbol"] == "BTC/USDT"
    assert t["last"] == g.open[200]
    assert t["timestamp"] == int(g.ts[200])
    assert t["bid"] < t["last"] < t["ask"]
    assert t["ask"] - t["bid"] == pytest.approx(0.01)  # one tick
    # 24 h volume as an exchange's ticker has it: the candles closed in the last 24 h (here: all 200)
    assert t["baseVolume"] == pytest.approx(g.volume[:200].sum())
    assert t["quoteVolume"] == pytest.approx((g.volume[:200] * g.close[:200]).sum())


def test_market_ticker_lowercase_symbol(hargs):
    r = invoke(hargs + ["market", "ticker", "eth/usdt", "--synthetic"])
    assert r.exit_code == 0 and json.loads(r.output)["symbol"] == "ETH/USDT"


def test_market_ohlcv_synthetic(hargs):
    r = invoke(hargs + ["market", "ohlcv", "BTC/USDT", "--synthetic", "--limit", "5"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0] == "timestamp_ms,open,high,low,close,volume"
    got = np.array([[float(x) for x in ln.split(",")] for ln in lines[1:]])
    g = _synthetic_btc()
    assert got[:, 0].astype(np.int64).tolist() == g.ts[195:200].tolist()  # the 5 candles closed by now
    np.testing.assert_allclose(got[:, 4], g.close[195:200], rtol=1e-5)


def test_market_markets_synthetic(hargs):
    r = invoke(hargs + ["market", "markets", "--synthetic"])
    assert r.exit_code == 0, r.output
    lines = {ln.split()[0]: ln for ln in r.output.strip().splitlines()}
    assert set(lines) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    assert "amount step 1e-05" in lines["BTC/USDT"] and "amount step 0.0001" in lines["ETH/USDT"]
    assert all("price tick 0.01" in v and "min notional 5" in v for v in lines.values())


def test_market_orderbook_synthetic(hargs):
    r = invoke(hargs + ["market", "orderbook", "SOL/USDT", "--synthetic", "--depth", "3"])
    assert r.exit_code == 0, r.output
    ob = json.loads(r.output)
    assert len(ob["bids"]) == 3 and len(ob["asks"]) == 3
    bids = [b[0] for b in ob["bids"]]
    asks = [a[0] for a in ob["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0]
    assert ob["synthesized"] is True  # a replay has no real depth: labelled


def test_market_from_candle_files(hargs, ohlcv_dir):
    raw = read_csv_rows(ohlcv_dir / "BTC_USDT-5m.csv")
    by_ts = {int(r[0]): r for r in raw}
    r = invoke(hargs + ["market", "ticker", "BTC/USDT", "--data", str(ohlcv_dir)])
    assert r.exit_code == 0, r.output
    t = json.loads(r.output)
    # answered as of the end of the files (BTC and ETH end first): no candle starts "now", so the
    # price is the last close
    assert t["timestamp"] == max(by_ts) + TF
    assert t["last"] == by_ts[max(by_ts)][4]
    r = invoke(hargs + ["market", "ohlcv", "BTC/USDT", "--data", str(ohlcv_dir), "--limit", "3"])
    assert r.exit_code == 0, r.output
    rows = [ln.split(",") for ln in r.output.strip().splitlines()[1:]]
    assert len(rows) == 3
    for row in rows:  # every row is a real row of the file
        ts = int(row[0])
        np.testing.assert_allclose([float(x) for x in row[1:]], by_ts[ts][1:], rtol=1e-5)
    assert int(rows[-1][0]) == t["timestamp"] - TF  # closed candles only: the last ended at "now"
    r = invoke(hargs + ["market", "markets", "--data", str(ohlcv_dir)])
    assert r.exit_code == 0 and "SOL/USDT" in r.output
    r = invoke(hargs + ["market", "orderbook", "ETH/USDT", "--data", str(ohlcv_dir)])
    assert r.exit_code == 0 and len(json.loads(r.output)["bids"]) == 5


def test_market_bad_candle_folder_exits_2(hargs, tmp_path):
    bad = tmp_path / "candles"
    bad.mkdir()
    (bad / "BTC_USDT-5m.csv").write_text("timestamp_ms,open,high,low,close,volume\n1,2,3\n")
    r = invoke(hargs + ["market", "ticker", "BTC/USDT", "--data", str(bad)], SYMBOLS="BTC/USDT")
    assert r.exit_code == 2
    assert "BTC_USDT-5m.csv" in r.output and "row 1" in r.output
    r = invoke(hargs + ["market", "ticker", "BTC/USDT", "--data", str(bad)])  # ETH and SOL have no file
    assert r.exit_code == 2 and "ETH/USDT" in r.output


def test_run_on_the_generated_market_is_labelled_synthetic(hargs):
    r = invoke(hargs + ["run", "--cycles", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output


# -- metrics -----------------------------------------------------------------------------------------------

def test_metrics_write_and_read_back_with_tags(hargs):
    r = invoke(hargs + ["metrics", "write", "sharpe.btc", "1.25", "--tag", "strategy=sma_cross", "--tag", "tf=5m"])
    assert r.exit_code == 0, r.output
    r = invoke(hargs + ["metrics", "write", "sharpe.btc", "0.5"])
    assert r.exit_code == 0, r.output
    r = invoke(hargs + ["metrics", "read", "sharpe.btc", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [x["value"] for x in sorted(rows, key=lambda x: x["tags"] != {})] == [0.5, 1.25]
    tagged = [x for x in rows if x["tags"]]
    assert tagged[0]["tags"] == {"strategy": "sma_cross", "tf": "5m"}
    assert all(x["name"] == "sharpe.btc" for x in rows)
    assert json.loads(invoke(hargs + ["metrics", "read", "nothing.here", "--json"]).output) == []


@pytest.mark.parametrize("name,value,needle", [
    ("bad name", "1", "name"),
    ("1starts_with_digit", "1", "name"),
    ("", "1", "name"),
    ("x" * 101, "1", "name"),
    ("ok", "nan", "finite"),
    ("ok", "NaN", "finite"),
    ("ok", "inf", "finite"),
    ("ok", "1e400", "finite"),
    ("ok", "abc", "not a number"),
    ("ok", "", "not a number"),
])
def test_metrics_write_refuses_bad_input_with_exit_2(hargs, tmp_path, name, value, needle):
    r = invoke(hargs + ["metrics", "write", name, value])
    assert r.exit_code == 2, r.output
    assert needle in r.output
    db = tmp_path / "home" / "db" / "metrics.db"
    if db.exists():  # nothing was written
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0
        conn.close()


def test_metrics_write_refuses_a_bad_tag(hargs):
    r = invoke(hargs + ["metrics", "write", "ok", "1", "--tag", "novalue"])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = invoke(hargs + ["metrics", "write", "ok", "1", "--tag", "bad key=v"])
    assert r.exit_code == 2 and "tag" in r.output


def test_metrics_library_validation(store):
    from qts.metrics import MetricError, read_metric, write_metric

    for bad in (math.nan, math.inf, -math.inf, "x", None):
        with pytest.raises(MetricError):
            write_metric(store, "m", bad)
    with pytest.raises(MetricError):
        write_metric(store, "m", 1, {"k": 5})  # tag values are text
    write_metric(store, "m", "2.5", {"a": "b"}, ts=5)
    write_metric(store, "m", -1, ts=6)
    assert [(r["value"], r["tags"]) for r in read_metric(store, "m")] == [(-1.0, {}), (2.5, {"a": "b"})]


def test_metric_queries_filter_by_tag_and_range_without_the_cli(store):
    from qts.metrics import MetricError, list_metrics, metric_series, write_metric

    write_metric(store, "lat", 10, {"host": "a"}, ts=1000)
    write_metric(store, "lat", 30, {"host": "b", "dc": "x"}, ts=2000)
    write_metric(store, "lat", 20, {"host": "a"}, ts=3000)
    write_metric(store, "err", 1, ts=1500)
    rows = {r["name"]: r for r in list_metrics(store)}
    assert rows["lat"]["count"] == 3 and rows["lat"]["mean"] == 20 and rows["lat"]["last_value"] == 20
    assert rows["lat"]["tag_keys"] == ["dc", "host"] and rows["err"]["tag_keys"] == []
    only_a = list_metrics(store, ["host=a"])
    assert [(r["name"], r["count"], r["max"]) for r in only_a] == [("lat", 2, 20)]
    assert [p["value"] for p in metric_series(store, "lat")] == [10, 30, 20]  # oldest first
    assert [p["value"] for p in metric_series(store, "lat", since_ms=1500, until_ms=2500)] == [30]
    assert [p["value"] for p in metric_series(store, "lat", limit=2)] == [30, 20]  # the latest two
    assert metric_series(store, "lat", ["host=a"])[0]["tags"] == {"host": "a"}
    for bad in (["novalue"], ["bad key=v"]):
        with pytest.raises(MetricError):
            list_metrics(store, bad)
    with pytest.raises(MetricError):
        metric_series(store, "1bad")


# -- database and help ---------------------------------------------------------------------------------------

def test_db_migrate(hargs, tmp_path):
    r = invoke(hargs + ["db", "migrate"])
    assert r.exit_code == 0, r.output
    assert "applied [1" in r.output
    db = tmp_path / "home" / "db" / "metrics.db"
    conn = sqlite3.connect(db)
    names = {x[0] for x in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"orders", "fills", "decisions", "metrics"} <= names
    r = invoke(hargs + ["db", "migrate"])
    assert r.exit_code == 0 and "up to date" in r.output


def _all_commands(group: click.Group, path=()):
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*path, name))


@pytest.mark.parametrize("path", [()] + list(_all_commands(cli)), ids=lambda p: " ".join(p) or "qts")
def test_help_of_every_command(path):
    r = invoke([*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


def test_version():
    from qts import __version__

    r = invoke(["--version"])
    assert r.exit_code == 0 and __version__ in r.output


def test_unknown_option_exits_2(hargs):
    r = invoke(hargs + ["run", "--no-such-option"])
    assert r.exit_code == 2
