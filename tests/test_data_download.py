"""`qts data download` / `qts data sync` (issue #12): real ccxt paging through the loopback exchange's klines
(``startTime`` + ``limit``, at most 1000 a call), files `qts backtest --data` reads, atomic writes, resume,
and the bad-candle quarantine on the way in. Expected candles are fetched here by the test itself, in pages
of 500 (not the library's 1000), straight from ccxt."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from support.loopback_exchange import LoopbackBinance, make_ccxt_client

H = 3_600_000
NO_ENV = {k: None for k in CONFIG_VARS}


@pytest.fixture
def srv():
    with LoopbackBinance(idle_timeout=60, weight_limit=100_000) as s:
        s.backfill("BTC/USDT", bars=2600, step_ms=H, seed=5)
        yield s


def invoke(args, srv, home):
    from qts.cli import cli

    return CliRunner().invoke(cli, ["--home", str(home), *args], env={**NO_ENV, "EXCHANGE_URL": srv.base_url},
                              catch_exceptions=False)


def expected_rows(srv, since_ms, until_ms=None):
    """Closed 1h candles from since (inclusive) to until (exclusive), fetched by the test in pages of 500."""
    ex = make_ccxt_client(srv)
    now = int(time.time() * 1000)
    out, cursor = [], since_ms
    while True:
        page = [r for r in ex.fetch_ohlcv("BTC/USDT", "1h", since=cursor, limit=500) if r[0] + H <= now]
        if until_ms is not None:
            page = [r for r in page if r[0] < until_ms]
        if not page:
            return out
        out += page
        cursor = page[-1][0] + H


def file_rows(path: Path):
    lines = path.read_text().splitlines()
    assert lines[0] == "timestamp_ms,open,high,low,close,volume"
    return [[float(x) for x in ln.split(",")] for ln in lines[1:]]


def test_download_pages_through_the_exchange_into_a_backtestable_file(srv, tmp_path):
    since = (int(time.time() * 1000) // H - 100 * 24) * H  # 100 days: three pages of 1000
    out = tmp_path / "candles"
    r = invoke(["data", "download", "--symbol", "btc/usdt", "--timeframe", "1h", "--since", str(since),
                "--out", str(out), "--json"], srv, tmp_path / "home")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output[r.output.index("{"):])
    path = out / "BTC_USDT-1h.csv"
    klines = [p for m, p, _ in srv.access_log if p.endswith("/klines")]  # the download's own requests
    want = expected_rows(srv, since)
    got = file_rows(path)
    assert len(want) >= 2399 and len(got) == len(want)
    for g, w in zip(got, want):
        assert g == pytest.approx([float(x) for x in w], rel=1e-12)
    assert rep["candles"] == len(want) and rep["added"] == len(want) and rep["filled"] == 0
    assert rep["requests"] >= 3  # paged
    assert len(klines) == rep["requests"]
    # what `qts backtest --data` reads
    r = invoke(["backtest", "sma_cross", "--data", str(out), "--symbol", "BTC/USDT", "--timeframe", "1h"], srv,
               tmp_path / "home")
    assert r.exit_code == 0, r.output
    assert f"{len(want)} candles at 1h" in r.output


def test_until_and_default_folder(srv, tmp_path):
    now = int(time.time() * 1000)
    since, until = (now // H - 30 * 24) * H, (now // H - 10 * 24) * H + 1
    r = invoke(["data", "download", "--symbol", "BTC/USDT", "--since", str(since), "--until", str(until)], srv,
               tmp_path / "home")
    assert r.exit_code == 0, r.output
    path = tmp_path / "home" / "data" / "binance" / "BTC_USDT-1h.csv"
    got = file_rows(path)
    want = expected_rows(srv, since, until)
    assert [g[0] for g in got] == [float(w[0]) for w in want]
    assert got[-1][0] < until and got[0][0] == since
    assert "downloading BTC/USDT 1h" in r.output and f"--data {path.parent}" in r.output


def test_sync_appends_only_the_new_candles_and_a_failure_leaves_the_file_alone(srv, tmp_path):
    since = (int(time.time() * 1000) // H - 60 * 24) * H
    out = tmp_path / "c"
    assert invoke(["data", "download", "--symbol", "BTC/USDT", "--since", str(since), "--out", str(out)], srv,
                  tmp_path / "home").exit_code == 0
    path = out / "BTC_USDT-1h.csv"
    full = path.read_text()
    lines = full.splitlines(keepends=True)
    cut = "".join(lines[:-50])
    path.write_text(cut)
    # the exchange fails: exit 1 with one line, the file exactly as it was, no temporary file left
    srv.faults.add("5xx", path="/api/v3/klines", times=None)
    r = invoke(["data", "sync", "--out", str(out)], srv, tmp_path / "home")
    assert r.exit_code == 1 and "binance: cannot reach GET" in r.output and "Traceback" not in r.output
    assert path.read_text() == cut and sorted(p.name for p in out.iterdir()) == ["BTC_USDT-1h.csv"]
    srv.faults.clear()
    before = len(srv.access_log)
    r = invoke(["data", "sync", "--out", str(out), "--json"], srv, tmp_path / "home")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output[r.output.index("{"):])
    assert rep["added"] == 50 and rep["requests"] == 1
    assert path.read_text() == full  # the old rows untouched, the new ones appended
    # the one request started after the file's last candle: nothing refetched
    (req,) = [q for m, p, q in srv.access_log[before:] if p.endswith("/klines")]
    assert int(req["startTime"]) == int(file_rows(path)[-51][0]) + H


def test_a_bad_print_on_the_exchange_is_quarantined_and_filled_flat(srv, tmp_path):
    now = int(time.time() * 1000)
    since = (now // H - 20 * 24) * H
    with srv._lock:  # one recorded trade 1000x off, ten days ago
        hist_ts, hist_px = srv._hist_ts["BTCUSDT"], srv._hist_px["BTCUSDT"]
        k = next(i for i, t in enumerate(hist_ts) if t >= now - 10 * 24 * H)
        hist_px[k] = hist_px[k] * Decimal(1000)
        bad_open = hist_ts[k] // H * H
    out = tmp_path / "c"
    r = invoke(["data", "download", "--symbol", "BTC/USDT", "--since", str(since), "--out", str(out), "--json"], srv,
               tmp_path / "home")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output[r.output.index("{"):])
    q = {(x["ts"], x["symbol"]) for x in rep["quarantined"]}
    # the candle holding the print (its close) and the next one (its open is the price then in force)
    assert q == {(bad_open, "BTC/USDT"), (bad_open + H, "BTC/USDT")}
    assert all("bad print" in x["reason"] for x in rep["quarantined"]) and rep["filled"] == 2
    rows = file_rows(out / "BTC_USDT-1h.csv")
    ts = [x[0] for x in rows]
    assert ts == [since + i * H for i in range(len(rows))]  # a whole grid: the backtest can load it
    i = ts.index(bad_open)
    assert rows[i][1:] == [rows[i - 1][4]] * 4 + [0.0]  # flat at the previous close, volume 0
    assert max(x[2] for x in rows) < 2 * min(x[3] for x in rows)  # no 1000x price anywhere


def test_input_errors_name_the_option(srv, tmp_path):
    r = invoke(["data", "download", "--symbol", "BTC/USDT", "--since", "yesterday"], srv, tmp_path / "home")
    assert r.exit_code == 2 and "--since 'yesterday'" in r.output
    r = invoke(["data", "download", "--symbol", "BTC/USDT", "--since", "2024-01-01", "--timeframe", "7m"], srv,
               tmp_path / "home")
    assert r.exit_code == 2 and "timeframe" in r.output
    r = invoke(["data", "sync", "--out", str(tmp_path / "empty")], srv, tmp_path / "home")
    assert r.exit_code == 2 and "no candle files to sync" in r.output
