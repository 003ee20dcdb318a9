"""Bad-candle quarantine (issue #12): every candle is screened before a strategy, a mark or a drawdown
sees it. The attacks are the ones the issue reported, applied to real Binance candles: one candle x1000
(a bad print), volume 1e300, prices 1e-12, timestamps off the grid or going backwards, high < low.
"""

from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import pytest

from conftest import read_csv_rows

HEADER = "timestamp_ms,open,high,low,close,volume\n"


def _candles(a: np.ndarray, tf: int):
    from qts.market.candles import Candles

    return Candles.from_rows(a, tf)


@pytest.fixture(scope="module")
def btc1h(ohlcv_dir):
    return read_csv_rows(ohlcv_dir / "BTC_USDT-1h.csv")


def test_real_candles_pass_untouched(ohlcv_dir):
    """A year of real candles for three markets: nothing quarantined (the limits do not bite real prices)."""
    from qts.market.quarantine import screen

    for name in ("BTC_USDT-1h.csv", "ETH_USDT-5m.csv", "SOL_USDT-5m.csv"):
        a = read_csv_rows(ohlcv_dir / name)
        tf = 3_600_000 if "1h" in name else 300_000
        clean, rejected = screen(_candles(a, tf), name[:8].replace("_", "/"))
        assert rejected == [], rejected[:3]
        assert len(clean) == len(a)


@pytest.mark.parametrize("attack, field, words", [
    ("x1000", "high", "bad print"),
    ("tiny", "open", "bad print"),  # all four prices equally far: the first is named
    ("volume", "volume", "absurd"),
    ("off_grid", "timestamp", "off the 60m candle grid"),
    ("backwards", "timestamp", "not after"),
    ("high_lt_low", "high", "below low"),
    ("nan_close", "close", "NaN"),
    ("negative", "open", "> 0"),
    ("close_outside", "close", "outside [low, high]"),
])
def test_each_attack_is_quarantined_by_row_and_field(btc1h, attack, field, words):
    from qts.market.quarantine import screen

    a = btc1h[:500].copy()
    i = 300
    ts = int(a[i, 0])
    if attack == "x1000":
        a[i, 1:5] *= 1000
    elif attack == "tiny":
        a[i, 1:5] = [1e-12, 1e-12, 1e-12, 1e-12]
    elif attack == "volume":
        a[i, 5] = 1e300
    elif attack == "off_grid":
        a[i, 0] += 60_000 * 7
        ts = int(a[i, 0])
    elif attack == "backwards":
        a[i, 0] = a[i - 5, 0]
        ts = int(a[i, 0])
    elif attack == "high_lt_low":
        a[i, 2], a[i, 3] = a[i, 3] * 0.99, a[i, 2]
    elif attack == "nan_close":
        a[i, 4] = np.nan
    elif attack == "negative":
        a[i, 1] = -a[i, 1]
    elif attack == "close_outside":
        a[i, 4] = a[i, 2] * 1.01
    clean, rejected = screen(_candles(a, 3_600_000), "BTC/USDT")
    assert len(rejected) == 1, rejected
    r = rejected[0]
    assert (r.symbol, r.ts, r.field) == ("BTC/USDT", ts, field)
    assert words in r.reason
    assert len(clean) == 499
    # the rows kept are exactly the others, unchanged
    others = np.delete(a, i, axis=0)
    assert np.array_equal(clean.close, others[:, 4]) and np.array_equal(clean.ts, others[:, 0].astype(np.int64))


def test_a_real_regime_change_is_accepted_after_half_a_window(btc1h):
    """The median follows the market: a real x6 move is quarantined only until half the window stands
    at the new level (a bad print stays alone, so it is never accepted)."""
    from qts.market.quarantine import ScreenConfig, screen

    a = btc1h[:200].copy()
    a[100:, 1:5] *= 6
    clean, rejected = screen(_candles(a, 3_600_000), "BTC/USDT", ScreenConfig(max_jump=5, window=20))
    assert 1 <= len(rejected) <= 11
    assert {r.ts for r in rejected} == set(a[100:100 + len(rejected), 0].astype(int).tolist())
    assert clean.close[-1] == pytest.approx(a[-1, 4])


def test_load_csv_drops_a_bad_print_and_reports_it(tmp_path, btc1h):
    from qts.market.candles import load_csv

    a = btc1h[:400].copy()
    a[250, 1:5] *= 1000
    p = tmp_path / "BTC_USDT-1h.csv"
    p.write_text(HEADER + "".join(f"{int(r[0])},{float(r[1])!r},{float(r[2])!r},{float(r[3])!r},{float(r[4])!r},{float(r[5])!r}\n" for r in a))
    log: list = []
    c = load_csv(p, quarantine=log)
    assert len(c) == 399 and int(a[250, 0]) not in set(c.ts.tolist())
    assert [(r.symbol, r.ts, r.field) for r in log] == [("BTC/USDT", int(a[250, 0]), "high")]


def test_bad_settings_name_the_variable():
    from qts.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as e:
        load_settings(environ={"CANDLE_MAX_JUMP": "0.5"}, home="/tmp/qts-none")
    assert "CANDLE_MAX_JUMP" in str(e.value)


# -- the reported attack, through the loop ---------------------------------------------------------

def _write(folder, name, a):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(HEADER + "".join(
        f"{int(r[0])},{float(r[1])!r},{float(r[2])!r},{float(r[3])!r},{float(r[4])!r},{float(r[5])!r}\n" for r in a))


def _replay(home, data_dir):
    """One day of BTC/USDT 5m through the paper loop with the full gate; returns the database path."""
    from qts.config import load_settings
    from qts.engine.session import make_feed, open_session

    settings = load_settings(environ={"SYMBOLS": "BTC/USDT"}, home=home)
    feed = make_feed(settings, "replay", data_dir, days=1)
    s = open_session(settings, feed)
    s.loop.run(threading.Event())
    s.close()
    conn = sqlite3.connect(home / "db" / "metrics.db")
    conn.row_factory = sqlite3.Row
    return conn


def test_one_candle_x1000_leaves_equity_and_drawdown_alone(tmp_path, ohlcv_dir):
    """The exact report: one candle 1000x off while a position is open. Without the quarantine it would
    mark the position at 1000x (equity in the millions, a 99% "drawdown" after it). With it, equity
    follows the clean run, entries after it are not refused, and one event names the row."""
    src = read_csv_rows(ohlcv_dir / "BTC_USDT-5m.csv")
    # keep the last ~3 days: enough for the warm-up and one replayed day
    a = src[-(200 + 288 + 300):].copy()
    clean_dir = tmp_path / "clean"
    _write(clean_dir, "BTC_USDT-5m.csv", a)
    clean = _replay(tmp_path / "h1", clean_dir)
    held = [(r["ts"], json.loads(r["inputs"])["held"]) for r in clean.execute(
        "SELECT ts, inputs FROM decisions ORDER BY ts")]
    in_pos = [ts for ts, h in held if h > 0]
    assert in_pos, "the clean day never held a position: the attack would not be felt"
    bad_ts = in_pos[len(in_pos) // 2]
    amount = dict(held)[bad_ts]
    row = int(np.flatnonzero(a[:, 0] == bad_ts)[0])
    assert amount * a[row, 1] * 1000 > 10_000 * 10  # the attack is real: the mark would be >10x the account

    bad = a.copy()
    bad[row, 1:5] *= 1000
    bad_dir = tmp_path / "bad"
    _write(bad_dir, "BTC_USDT-5m.csv", bad)
    conn = _replay(tmp_path / "h2", bad_dir)
    snaps = {r["ts"]: r["equity"] for r in conn.execute("SELECT ts, equity FROM equity_snapshots")}
    clean_snaps = {r["ts"]: r["equity"] for r in clean.execute("SELECT ts, equity FROM equity_snapshots")}
    assert snaps.keys() == clean_snaps.keys()
    eq = np.array([snaps[t] for t in sorted(snaps)])
    assert eq.max() < 10_000 * 1.2
    drawdown = 1 - eq / np.maximum.accumulate(eq)
    assert drawdown.max() < 0.05
    for t in sorted(snaps):
        assert snaps[t] == pytest.approx(clean_snaps[t], rel=0.01), t
    # no refusal mentions the drawdown
    for r in conn.execute("SELECT reason_codes FROM decisions"):
        assert "DRAWDOWN" not in r["reason_codes"].upper()
    ev = [json.loads(r["data"]) | {"message": r["message"]} for r in conn.execute(
        "SELECT data, message FROM events WHERE kind='candle_quarantine'")]
    assert len(ev) == 1, ev
    assert (ev[0]["symbol"], ev[0]["ts"]) == ("BTC/USDT", bad_ts)
    assert ev[0]["field"] in ("open", "high", "low", "close") and "bad print" in ev[0]["reason"]
    assert "BTC/USDT" in ev[0]["message"] and str(bad_ts) in ev[0]["message"]
    codes = [json.loads(r["reason_codes"]) for r in conn.execute("SELECT reason_codes FROM decisions WHERE ts=?",
                                                                 (bad_ts,))]
    assert codes and "CANDLE_QUARANTINED" in codes[0]


# -- the live feed: real ccxt against the loopback exchange ----------------------------------------

def test_live_feed_never_quotes_a_bad_ticker_print():
    """A ticker 1000x off on the exchange: the live feed quotes the last clean close instead and logs
    the ticker as quarantined; the candles it returns are the exchange's closed ones, all positive."""
    from support.loopback_exchange import LoopbackBinance, make_ccxt_client

    from qts.market.ccxt_feed import CcxtFeed

    with LoopbackBinance(idle_timeout=30) as srv:
        srv.backfill("BTC/USDT", bars=120, step_ms=300_000, seed=3)
        feed = CcxtFeed(make_ccxt_client(srv), ["BTC/USDT"], 5)
        c = feed.candles("BTC/USDT", 50)
        assert len(c) >= 20 and feed.quarantine_log == []
        good = feed.quote("BTC/USDT").price
        assert good == pytest.approx(float(srv.price("BTC/USDT")))
        srv.set_price("BTC/USDT", srv.price("BTC/USDT") * 1000)
        feed._quotes.clear()  # past the quote's 1 s cache
        q = feed.quote("BTC/USDT")
    assert q.price == pytest.approx(float(c.close[-1]))
    (r,) = feed.quarantine_log
    assert (r.symbol, r.field) == ("BTC/USDT", "ticker.last") and "bad print" in r.reason
    assert r.value == pytest.approx(good * 1000)
