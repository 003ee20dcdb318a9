"""The candle series type (columns of equal length): below the file loader and the bad-candle quarantine,
which both build series."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    def gaps(self) -> int:
        """How many times candles are missing between two consecutive rows (a market that closes)."""
        return int(np.count_nonzero(np.diff(self.ts) > self.timeframe_ms))

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
