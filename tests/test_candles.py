"""Candle files: the real Binance data loads and resamples as documented; bad files are refused with
the file, the row and the reason."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import read_csv_rows
from qts.market.candles import CandleFileError, find_files, load_csv

HEADER = "timestamp_ms,open,high,low,close,volume\n"
T0 = 1_704_067_200_000
TF = 300_000

# row counts and ranges documented in shared/data/README.md
DOCUMENTED = {
    "BTC_USDT-5m.csv": (71_769, "2024-01-01 00:00", "2024-09-06 04:40"),
    "ETH_USDT-5m.csv": (71_769, "2024-01-01 00:00", "2024-09-06 04:40"),
    "SOL_USDT-5m.csv": (72_028, "2024-01-01 00:00", "2024-09-07 01:55"),
    "BTC_USDT-1h.csv": (5_980, "2024-01-01 00:00", "2024-09-06 03:00"),
}


def _utc_ms(s: str) -> int:
    from datetime import datetime, timezone

    return int(datetime.strptime(s, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_real_btc_5m_loads_with_documented_rows(btc_5m, ohlcv_dir):
    rows, first, last = DOCUMENTED["BTC_USDT-5m.csv"]
    assert len(btc_5m) == rows == 71_769
    assert btc_5m.timeframe_ms == TF
    assert int(btc_5m.ts[0]) == _utc_ms(first)
    assert int(btc_5m.ts[-1]) == _utc_ms(last)
    # values equal an independent parse of the same file
    raw = read_csv_rows(ohlcv_dir / "BTC_USDT-5m.csv")
    assert np.array_equal(btc_5m.ts, raw[:, 0].astype(np.int64))
    assert np.array_equal(btc_5m.close, raw[:, 4])
    assert np.array_equal(btc_5m.volume, raw[:, 5])


@pytest.mark.parametrize("name", ["ETH_USDT-5m.csv", "SOL_USDT-5m.csv", "BTC_USDT-1h.csv"])
def test_other_real_files_match_the_readme(ohlcv_dir, name):
    rows, first, _ = DOCUMENTED[name]
    c = load_csv(ohlcv_dir / name)
    # documented: the row count, the first candle, no gaps => the last candle follows from them.
    # (The README's end time for SOL_USDT-5m, 01:55, disagrees with its own count: 72,028 gap-free
    # 5m candles from 2024-01-01 00:00 end at 2024-09-07 02:15, which is what the file holds.)
    assert (len(c), int(c.ts[0]), int(c.ts[-1])) == (rows, _utc_ms(first), _utc_ms(first) + (rows - 1) * c.timeframe_ms)


def test_resampling_5m_by_12_equals_the_1h_file(btc_5m, btc_1h):
    r = btc_5m.resample(12)
    assert r.timeframe_ms == 3_600_000
    # overlapping range: the 1h file's hours (the last, incomplete 5m hour 04:00-04:40 is dropped)
    start = int(np.searchsorted(r.ts, btc_1h.ts[0]))
    r = r.slice(start, start + len(btc_1h))
    assert len(r) == len(btc_1h) == 5_980
    assert np.array_equal(r.ts, btc_1h.ts)
    assert np.array_equal(r.open, btc_1h.open)
    assert np.array_equal(r.high, btc_1h.high)
    assert np.array_equal(r.low, btc_1h.low)
    assert np.array_equal(r.close, btc_1h.close)
    np.testing.assert_allclose(r.volume, btc_1h.volume, rtol=1e-9, atol=1e-6)


def test_resample_by_hand():
    from conftest import make_candles

    # 2 complete 15-minute buckets from 6 five-minute candles, then an incomplete one (dropped)
    c = make_candles([(10, 12, 9, 11, 1), (11, 15, 10, 14, 2), (14, 14, 8, 9, 3),
                      (9, 10, 7, 8, 4), (8, 9, 8, 9, 5), (9, 20, 9, 19, 6),
                      (19, 19, 18, 18, 7)])
    r = c.resample(3)
    assert r.ts.tolist() == [T0, T0 + 3 * TF]
    assert r.open.tolist() == [10, 9]
    assert r.high.tolist() == [15, 20]
    assert r.low.tolist() == [8, 7]
    assert r.close.tolist() == [9, 19]
    assert r.volume.tolist() == [6, 15]


def _rows(n=5, start=T0, price=100.0):
    return [[start + i * TF, price, price + 2, price - 2, price + 1, 10.0] for i in range(n)]


def _write(tmp_path, rows, name="BTC_USDT-5m.csv", header=HEADER):
    p = tmp_path / name
    p.write_text(header + "".join(",".join(str(v) for v in r) + "\n" for r in rows))
    return p


def _refused(path) -> CandleFileError:
    with pytest.raises(CandleFileError) as ei:
        load_csv(path)
    e = ei.value
    assert path.name in str(e), f"error does not name the file: {e}"
    return e


def test_good_small_file_loads(tmp_path):
    c = load_csv(_write(tmp_path, _rows(5)))
    assert len(c) == 5 and c.close.tolist() == [101.0] * 5


def test_gap_is_refused(tmp_path):
    rows = _rows(6)
    del rows[3]  # data row 4 is now two candles after row 3: one candle missing
    e = _refused(_write(tmp_path, rows))
    assert e.row == 4 and "gap" in e.reason and "1 candle" in e.reason
    assert "row 4" in str(e)


def test_nan_is_refused(tmp_path):
    rows = _rows(5)
    rows[2][4] = "nan"
    e = _refused(_write(tmp_path, rows))
    assert e.row == 3 and "NaN" in e.reason


def test_infinite_value_is_refused(tmp_path):
    rows = _rows(5)
    rows[1][5] = "inf"
    e = _refused(_write(tmp_path, rows))
    assert e.row == 2 and "infinite" in e.reason


def test_out_of_order_is_refused(tmp_path):
    rows = _rows(5)
    rows[3][0] = rows[0][0] - TF  # row 4 is earlier than every row before it
    e = _refused(_write(tmp_path, rows))
    assert e.row == 4 and "out of order" in e.reason


def test_duplicate_timestamp_is_refused(tmp_path):
    rows = _rows(5)
    rows[3][0] = rows[2][0]
    e = _refused(_write(tmp_path, rows))
    assert e.row == 4 and "duplicate" in e.reason


def test_high_below_low_is_refused(tmp_path):
    rows = _rows(5)
    rows[4][2], rows[4][3] = 90.0, 110.0
    e = _refused(_write(tmp_path, rows))
    assert e.row == 5 and "high < low" in e.reason


def test_high_below_close_is_refused(tmp_path):
    rows = _rows(5)
    rows[1][4] = rows[1][2] + 1  # close above high
    e = _refused(_write(tmp_path, rows))
    assert e.row == 2 and "high below" in e.reason


def test_off_grid_timestamp_is_refused_as_such(tmp_path):
    rows = _rows(5)
    for r in rows[2:]:
        r[0] += TF // 2  # row 3 comes 1.5 candles after row 2: not on the 5-minute grid
    e = _refused(_write(tmp_path, rows))
    assert e.row == 3 and "grid" in e.reason


def test_wrong_column_names_are_refused(tmp_path):
    e = _refused(_write(tmp_path, _rows(3), header="time,open,high,low,close,volume\n"))
    assert e.row == 0 and "columns" in e.reason and "timestamp_ms" in e.reason


def test_wrong_number_of_values_is_refused(tmp_path):
    rows = _rows(5)
    rows[2] = rows[2][:5]
    e = _refused(_write(tmp_path, rows))
    assert e.row == 3 and "6 values" in e.reason and "got 5" in e.reason


def test_text_value_is_refused(tmp_path):
    rows = _rows(4)
    rows[1][1] = "abc"
    e = _refused(_write(tmp_path, rows))
    assert e.row == 2 and "not a number" in e.reason


def test_empty_file_is_refused(tmp_path):
    p = tmp_path / "BTC_USDT-5m.csv"
    p.write_text("")
    e = _refused(p)
    assert "empty" in e.reason


def test_header_only_file_is_refused(tmp_path):
    e = _refused(_write(tmp_path, []))
    assert "no candles" in e.reason


def test_name_without_timeframe_is_refused(tmp_path):
    e = _refused(_write(tmp_path, _rows(3), name="btc.csv"))
    assert "timeframe" in e.reason


def test_find_files_picks_a_file_dividing_the_interval(ohlcv_dir, tmp_path):
    f = find_files(ohlcv_dir, ["BTC/USDT", "ETH/USDT"], 60)
    assert f["BTC/USDT"] == (ohlcv_dir / "BTC_USDT-1h.csv", 1)
    f = find_files(ohlcv_dir, ["SOL/USDT"], 15)
    assert f["SOL/USDT"] == (ohlcv_dir / "SOL_USDT-5m.csv", 3)
    with pytest.raises(CandleFileError) as ei:
        find_files(ohlcv_dir, ["DOGE/USDT"], 5)
    assert "DOGE/USDT" in str(ei.value)


# -- the fast reader (numpy's C parser) and the row-by-row reader must agree --------------------------------

def test_fast_reader_equals_row_by_row_reader_on_real_file(ohlcv_dir, monkeypatch):
    from qts.market import candles as C

    fast = load_csv(ohlcv_dir / "ETH_USDT-5m.csv")
    monkeypatch.setattr(C, "_parse_fast", lambda fh: None)  # force the row-by-row reader
    slow = load_csv(ohlcv_dir / "ETH_USDT-5m.csv")
    for k in ("ts", "open", "high", "low", "close", "volume"):
        a, b = getattr(fast, k), getattr(slow, k)
        assert a.dtype == b.dtype and np.array_equal(a, b), k


def test_blank_line_mid_file_is_refused_with_its_row(tmp_path):
    p = _write(tmp_path, _rows(5))
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:3] + ["\n"] + lines[3:]))  # numpy's reader would skip it silently
    e = _refused(p)
    assert e.row == 3 and "6 values" in e.reason and "got 0" in e.reason


def test_fractional_timestamp_is_refused_with_its_row(tmp_path):
    rows = _rows(4)
    rows[2][0] = rows[2][0] + 0.5
    e = _refused(_write(tmp_path, rows))
    assert e.row == 3 and "integer" in e.reason


def test_quoted_values_still_load(tmp_path):
    rows = _rows(4)
    p = tmp_path / "BTC_USDT-5m.csv"
    p.write_text(HEADER + "".join(",".join(f'"{v}"' for v in r) + "\n" for r in rows))  # csv quoting
    c = load_csv(p)
    assert c.ts.tolist() == [r[0] for r in rows] and c.close.tolist() == [101.0] * 4
