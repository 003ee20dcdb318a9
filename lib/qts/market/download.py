"""Download candles from an exchange into the files ``qts backtest --data`` and ``qts run --data`` read.

:func:`download` pages through ccxt ``fetch_ohlcv`` (``since`` + ``limit``, up to 1000 a call) from ``since_ms``
to ``until_ms`` (default: now), keeps closed candles only, passes every candle through the bad-candle
quarantine (market/quarantine.py) and writes ``<BASE>_<QUOTE>-<tf>.csv`` (``timestamp_ms,open,high,low,close,
volume``) atomically (a temporary file renamed over the old one: an interrupted download leaves the old file
as it was). The file format refuses gaps (a backtest assumes one candle per period), so a missing or
quarantined candle is filled flat at the previous close with volume 0, and counted.

Resume / sync: with an existing file, only candles after its last one are fetched and appended (``sync``);
a ``since`` earlier than the file's first candle fetches the missing head too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .candles import HEADER, TIMEFRAMES, Candles, load_csv

PAGE = 1000


class DownloadError(RuntimeError):
    """The download cannot go on; ``str()`` says why in one line."""


@dataclass
class DownloadResult:
    path: Path
    candles: int  # in the file now
    added: int  # new candles written by this call
    filled: int  # missing or quarantined candles written flat (volume 0)
    quarantined: list = field(default_factory=list)
    first_ts: int | None = None
    last_ts: int | None = None
    requests: int = 0

    def to_dict(self) -> dict:
        return {"path": str(self.path), "candles": self.candles, "added": self.added, "filled": self.filled,
                "quarantined": [r.to_dict() for r in self.quarantined], "first_ts": self.first_ts,
                "last_ts": self.last_ts, "requests": self.requests}


def file_name(symbol: str, timeframe: str) -> str:
    base, _, quote = symbol.upper().partition("/")
    if not base or not quote or "/" in quote:
        raise ValueError(f"symbol: expected BASE/QUOTE like BTC/USDT, got {symbol!r}")
    return f"{base}_{quote}-{timeframe}.csv"


def _fetch_range(exchange, symbol, timeframe, tf_ms, since_ms, until_ms, progress, counter) -> list[list]:
    """Closed candles with since_ms <= ts < until_ms, paging forward."""
    rows: list[list] = []
    cursor = since_ms
    while cursor < until_ms:
        page = _call(exchange, "fetch_ohlcv", symbol, timeframe, since=cursor, limit=PAGE)
        counter[0] += 1
        page = [r for r in page or [] if isinstance(r, (list, tuple)) and len(r) >= 6 and r[0] is not None]
        page = [r[:6] for r in page if cursor <= r[0] < until_ms]
        if not page:
            break
        rows.extend(page)
        nxt = int(page[-1][0]) + tf_ms
        if nxt <= cursor:  # no progress: an exchange answering the same page again
            break
        cursor = nxt
        if progress:
            progress(min(cursor, until_ms) - since_ms, until_ms - since_ms)
    return rows


def _call(exchange, method, *args, **kwargs):
    """A ccxt call; its failures become the one-line ExchangeUnreachable / ExchangeFailed the CLI prints."""
    import ccxt

    from .ccxt_feed import ExchangeFailed, ExchangeUnreachable, describe_network_error

    try:
        return getattr(exchange, method)(*args, **kwargs)
    except ccxt.NetworkError as e:
        raise ExchangeUnreachable(describe_network_error(exchange.id, e)) from None
    except ccxt.ExchangeError as e:
        raise ExchangeFailed(f"{exchange.id}: {method} failed: {' '.join(str(e).split())[:300]}") from None


def _grid(rows: np.ndarray, tf_ms: int, symbol: str, screen_config, start_ms: int | None,
          prev_close: float | None) -> tuple[np.ndarray, list, int]:
    """Screen the rows, then lay them on the candle grid from ``start_ms`` (or the first row) to the last:
    missing candles filled flat at the previous close, volume 0. Returns (rows, quarantined, filled)."""
    from .quarantine import screen

    c = Candles.from_rows(rows if len(rows) else np.empty((0, 6)), tf_ms)
    clean, rejected = screen(c, symbol, screen_config)
    if not len(clean):
        return np.empty((0, 6)), rejected, 0
    first = int(clean.ts[0]) if start_ms is None else start_ms
    last = int(clean.ts[-1])
    grid = np.arange(first, last + 1, tf_ms, dtype=np.int64)
    idx = np.searchsorted(clean.ts, grid)
    have = (idx < len(clean)) & (clean.ts[np.minimum(idx, len(clean) - 1)] == grid)
    out = np.empty((len(grid), 6))
    out[:, 0] = grid
    filled = 0
    last_close = prev_close
    for k in range(len(grid)):
        if have[k]:
            j = idx[k]
            out[k, 1:] = (clean.open[j], clean.high[j], clean.low[j], clean.close[j], clean.volume[j])
            last_close = float(clean.close[j])
        else:
            p = last_close if last_close is not None else float(clean.open[0])
            out[k, 1:] = (p, p, p, p, 0.0)
            filled += 1
    return out, rejected, filled


def _csv(rows: np.ndarray) -> str:
    lines = [",".join(HEADER)]
    for r in rows:
        lines.append(f"{int(r[0])},{float(r[1])!r},{float(r[2])!r},{float(r[3])!r},{float(r[4])!r},{float(r[5])!r}")
    return "\n".join(lines) + "\n"


def download(exchange, symbol: str, timeframe: str, out_dir, since_ms: int | None = None,
             until_ms: int | None = None, progress=None, screen_config=None, now_ms: int | None = None
             ) -> DownloadResult:
    """Fetch ``symbol`` at ``timeframe`` into ``out_dir`` (see the module docstring). ``since_ms`` None: carry
    on after the file's last candle (a sync; refused without a file). ``progress(done_ms, total_ms)``."""
    from ..fsutil import write_atomic

    if timeframe not in TIMEFRAMES:
        raise ValueError(f"timeframe: one of {', '.join(TIMEFRAMES)}, got {timeframe!r}")
    tf_ms = TIMEFRAMES[timeframe] * 60_000
    path = Path(out_dir) / file_name(symbol, timeframe)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    # exclusive bound on open times: candles that have closed by now (x + tf <= now) and open before until
    end = now // tf_ms * tf_ms
    if until_ms is not None:
        end = min(end, -(-until_ms // tf_ms) * tf_ms)
    existing = load_csv(path) if path.exists() else None  # a damaged file is refused, naming its row
    if since_ms is None and existing is None:
        raise DownloadError(f"{path}: no file to sync; download it first with --since")
    counter = [0]
    head = np.empty((0, 6))
    quarantined: list = []
    filled = 0
    if existing is not None and since_ms is not None and since_ms < int(existing.ts[0]):
        start = -(-since_ms // tf_ms) * tf_ms
        raw = _fetch_range(exchange, symbol, timeframe, tf_ms, start, int(existing.ts[0]), progress, counter)
        head, rej, filled = _grid(np.asarray(raw, dtype=float).reshape(-1, 6), tf_ms, symbol, screen_config,
                                  None, None)
        quarantined += rej
        if len(head):  # the head must meet the file: fill up to its first candle
            gap = np.arange(int(head[-1, 0]) + tf_ms, int(existing.ts[0]), tf_ms)
            if len(gap):
                p = head[-1, 4]
                head = np.vstack([head, np.column_stack([gap, *[np.full(len(gap), p)] * 4, np.zeros(len(gap))])])
                filled += len(gap)
    if existing is not None:
        body = np.column_stack([existing.ts, existing.open, existing.high, existing.low, existing.close,
                                existing.volume]).astype(float)
        start = int(existing.ts[-1]) + tf_ms
        prev_close = float(existing.close[-1])
    else:
        body = np.empty((0, 6))
        start = -(-since_ms // tf_ms) * tf_ms
        prev_close = None
    tail = np.empty((0, 6))
    if start < end:
        raw = _fetch_range(exchange, symbol, timeframe, tf_ms, start, end, progress, counter)
        tail, rej, f = _grid(np.asarray(raw, dtype=float).reshape(-1, 6), tf_ms, symbol, screen_config,
                             start if existing is not None and raw else None, prev_close)
        quarantined += rej
        filled += f
    rows = np.vstack([head, body, tail]) if len(head) or len(tail) else body
    added = len(head) + len(tail)
    if not len(rows):
        raise DownloadError(f"{symbol} {timeframe}: the exchange returned no closed candles "
                            f"from {_iso(start)} to {_iso(end)}")
    if added:
        Candles.from_rows(rows, tf_ms)  # shape check
        write_atomic(path, _csv(rows), mode=0o644)
    return DownloadResult(path, len(rows), added, filled, quarantined, int(rows[0, 0]), int(rows[-1, 0]),
                          counter[0])


def _iso(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def parse_time(text: str, option: str) -> int:
    """``2024-01-01``, ``2024-01-01T12:00`` (UTC) or epoch milliseconds."""
    from datetime import datetime, timezone

    s = str(text).strip()
    if s.isdigit():
        return int(s)
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return int(datetime.strptime(s, fmt).replace(tzinfo=timezone.utc).timestamp() * 1000)
        except ValueError:
            continue
    raise ValueError(f"{option} {text!r}: expected a date like 2024-01-01 (UTC), 2024-01-01T12:00 or epoch ms")
