"""Candles as numpy columns, loaded from ``timestamp_ms,open,high,low,close,volume`` CSV files.

A bad file is refused with :class:`CandleFileError` naming the file, the row and the reason: wrong
columns, unparsable or NaN/infinite values, timestamps out of order or with a gap, high below low
(or below open/close), negative volume.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = ["timestamp_ms", "open", "high", "low", "close", "volume"]
TIMEFRAMES = {"1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "2h": 120, "4h": 240,
              "6h": 360, "8h": 480, "12h": 720, "1d": 1440}
FILE_RE = re.compile(r"^([A-Z0-9]+)_([A-Z0-9]+)-(\d+[mhd])\.csv$")


def timeframe_of(minutes: int) -> str:
    for k, v in TIMEFRAMES.items():
        if v == minutes:
            return k
    raise ValueError(f"no candle timeframe of {minutes} minutes")


class CandleFileError(ValueError):
    def __init__(self, path: Path | str, row: int | None, reason: str):
        self.path, self.row, self.reason = Path(path), row, reason
        where = f"{self.path.name}, row {row}" if row is not None else self.path.name
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Candles:
    """Columns of equal length; ``ts`` is each candle's OPEN time in ms, strictly increasing."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    timeframe_ms: int

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> "Candles":
        return Candles(self.ts[start:stop], self.open[start:stop], self.high[start:stop],
                       self.low[start:stop], self.close[start:stop], self.volume[start:stop],
                       self.timeframe_ms)

    def close_time(self, i: int) -> int:
        return int(self.ts[i]) + self.timeframe_ms

    @classmethod
    def from_rows(cls, rows, timeframe_ms: int) -> "Candles":
        arr = np.asarray(rows, dtype=float).reshape(-1, 6)
        return cls(arr[:, 0].astype(np.int64), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy(),
                   arr[:, 4].copy(), arr[:, 5].copy(), timeframe_ms)

    def resample(self, factor: int) -> "Candles":
        """Aggregate ``factor`` consecutive candles (aligned to the epoch) into one."""
        if factor == 1:
            return self
        tf = self.timeframe_ms * factor
        bucket = self.ts // tf
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        counts = np.diff(np.r_[starts, len(self.ts)])
        full = counts == factor  # drop incomplete buckets at the edges
        s = starts[full]
        e = s + factor - 1
        return Candles(bucket[s] * tf, self.open[s], np.maximum.reduceat(self.high, starts)[full],
                       np.minimum.reduceat(self.low, starts)[full], self.close[e],
                       np.add.reduceat(self.volume, starts)[full], tf)


def validate(c: Candles, path: Path | str = "<candles>", first_row: int = 1) -> None:
    """Raise CandleFileError at the first bad row."""
    cols = np.vstack([c.open, c.high, c.low, c.close, c.volume])
    bad = ~np.isfinite(cols).all(axis=0)
    checks = [
        (bad, "value is NaN or infinite"),
        (np.r_[False, np.diff(c.ts) <= 0], "timestamp not after the previous row (out of order or duplicate)"),
        # off-grid before gap: a step of 1.5 candles is off the grid, not "0 candles missing"
        (np.r_[False, (np.diff(c.ts) % c.timeframe_ms) != 0], "timestamp off the candle grid"),
        (np.r_[False, np.diff(c.ts) > c.timeframe_ms], "gap: candles missing before this row"),
        (c.high < c.low, "high < low"),
        (c.high < np.maximum(c.open, c.close), "high below open or close"),
        (c.low > np.minimum(c.open, c.close), "low above open or close"),
        (np.minimum.reduce([c.open, c.high, c.low, c.close]) <= 0, "price must be > 0"),
        (c.volume < 0, "volume < 0"),
    ]
    first = None
    for mask, reason in checks:
        idx = np.flatnonzero(mask)
        if idx.size and (first is None or idx[0] < first[0]):
            first = (int(idx[0]), reason)
    if first:
        i, reason = first
        if reason.startswith("gap"):
            missing = (int(c.ts[i]) - int(c.ts[i - 1])) // c.timeframe_ms - 1
            reason = f"gap: {missing} candle(s) missing before this row"
        raise CandleFileError(path, first_row + i, reason)


def load_csv(path: Path | str, timeframe_ms: int | None = None, quarantine: list | None = None,
             screen_config=None) -> Candles:
    """Load and validate one candle file. The timeframe comes from the file name (``BTC_USDT-5m.csv``)
    when not given. A file that is broken as a whole (columns, order, grid, gaps, impossible rows) is
    refused; then the bad-candle quarantine (market/quarantine.py) drops bad prints and absurd volumes,
    appending what it dropped to ``quarantine`` when a list is given."""
    path = Path(path)
    m = FILE_RE.match(path.name)
    if timeframe_ms is None:
        if not m or m.group(3) not in TIMEFRAMES:
            raise CandleFileError(path, None, "cannot tell the timeframe: name it like BTC_USDT-5m.csv")
        timeframe_ms = TIMEFRAMES[m.group(3)] * 60_000
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise CandleFileError(path, None, f"cannot open ({e.strerror})") from None
    rows = []
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise CandleFileError(path, None, "empty file") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise CandleFileError(path, None, f"unreadable header ({e})") from None
        if [h.strip() for h in header] != HEADER:
            raise CandleFileError(path, 0, f"wrong columns {header!r}; expected {','.join(HEADER)}")
        try:
            for n, row in enumerate(reader, 1):
                if len(row) != 6:
                    raise CandleFileError(path, n, f"expected 6 values, got {len(row)}")
                try:
                    vals = [float(x) for x in row]
                except ValueError:
                    raise CandleFileError(path, n, f"not a number in {row!r}") from None
                if not math.isfinite(vals[0]) or vals[0] != int(vals[0]):
                    raise CandleFileError(path, n, "timestamp_ms is not an integer")
                rows.append(vals)
        except (csv.Error, UnicodeDecodeError) as e:
            raise CandleFileError(path, len(rows) + 1, f"unreadable row ({e})") from None
    if not rows:
        raise CandleFileError(path, None, "no candles after the header")
    c = Candles.from_rows(rows, timeframe_ms)
    validate(c, path)
    from .quarantine import screen

    c, rejected = screen(c, f"{m.group(1)}/{m.group(2)}" if m else path.stem, screen_config)
    if quarantine is not None:
        quarantine.extend(rejected)
    return c


def find_files(folder: Path | str, symbols, minutes: int) -> dict[str, tuple[Path, int]]:
    """For each symbol, the candle file in ``folder`` to replay at ``minutes`` and the resample
    factor (a 5m file serves a 60-minute interval with factor 12). Missing symbols raise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CandleFileError(folder, None, "not a folder of candle files")
    available: dict[str, list[tuple[int, Path]]] = {}
    for p in folder.glob("*.csv"):
        m = FILE_RE.match(p.name)
        if m and m.group(3) in TIMEFRAMES:
            available.setdefault(f"{m.group(1)}/{m.group(2)}", []).append((TIMEFRAMES[m.group(3)], p))
    out = {}
    for sym in symbols:
        options = sorted((tf, p) for tf, p in available.get(sym, []) if minutes % tf == 0)
        if not options:
            raise CandleFileError(folder / f"{sym.replace('/', '_')}-{timeframe_of(minutes)}.csv", None,
                                  f"no candle file for {sym} at {minutes}m or a finer timeframe dividing it")
        tf, p = options[-1]  # the coarsest file that still divides the interval
        out[sym] = (p, minutes // tf)
    return out
