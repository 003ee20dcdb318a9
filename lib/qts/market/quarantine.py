"""Bad-candle quarantine: the one check every candle passes before a strategy, a mark or a drawdown sees it.

:func:`screen` splits candles into the ones to use and the ones to quarantine, each rejected row naming
the symbol, its timestamp, the field and why:

- a price (open/high/low/close) that is NaN, infinite, zero or negative;
- high below low, or open/close outside [low, high];
- a volume that is non-finite, negative, above ``max_volume`` base units, or worth more than
  ``max_quote_volume`` in the quote currency in one candle (1e300, the kind of print a broken feed sends);
- a timestamp off the timeframe grid (epoch aligned) or not after the previous kept candle;
- a bad print: any price more than ``max_jump`` times the median close of the previous ``window`` candles
  (or less than that median divided by ``max_jump``). The median is taken over the candles that passed the
  other checks, jump-flagged ones included, so one bad print barely moves it and a real regime change is
  accepted once half the window stands at the new level.

Quarantined candles are skipped (never used for equity, a signal or a drawdown) and recorded: the feeds
keep them in ``quarantine_log``; the loop writes each one once as a ``candle_quarantine`` event.
Settings: ``CANDLE_MAX_JUMP`` (default 5) and ``CANDLE_MAX_QUOTE_VOLUME`` (default 1e12).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .series import Candles

EVENT_KIND = "candle_quarantine"


@dataclass(frozen=True)
class ScreenConfig:
    max_jump: float = 5.0  # a price beyond x5 (or /5) of the recent median close is a bad print
    window: int = 20  # candles in that median
    max_volume: float = 1e18  # base units in one candle
    max_quote_volume: float = 1e12  # volume x close in one candle (the whole market trades ~1e11 a day)

    def __post_init__(self):
        if not (math.isfinite(self.max_jump) and self.max_jump > 1):
            raise ValueError(f"CANDLE_MAX_JUMP: must be a number > 1, got {self.max_jump!r}")
        if not (isinstance(self.window, int) and self.window >= 3):
            raise ValueError(f"window: must be an integer >= 3, got {self.window!r}")
        for name in ("max_volume", "max_quote_volume"):
            v = getattr(self, name)
            if not (v > 0):
                raise ValueError(f"{name}: must be > 0, got {v!r}")

    @classmethod
    def from_settings(cls, settings) -> "ScreenConfig":
        return cls(max_jump=getattr(settings, "CANDLE_MAX_JUMP", cls.max_jump),
                   max_quote_volume=getattr(settings, "CANDLE_MAX_QUOTE_VOLUME", cls.max_quote_volume))


@dataclass(frozen=True)
class Rejected:
    symbol: str
    ts: int
    field: str
    value: float | None
    reason: str

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["value"] is not None and not math.isfinite(d["value"]):
            d["value"] = str(d["value"])  # JSON has no NaN/inf
        return d

    def message(self) -> str:
        from datetime import datetime, timezone

        when = datetime.fromtimestamp(self.ts / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return f"{self.symbol} candle {when} ({self.ts}) quarantined: {self.field} {self.reason}"


_PRICES = ("open", "high", "low", "close")


def screen(c: Candles, symbol: str, config: ScreenConfig | None = None) -> tuple[Candles, list[Rejected]]:
    """(the candles to use, the ones quarantined). One reason per rejected candle: the first that applies."""
    cfg = config or ScreenConfig()
    n = len(c)
    if n == 0:
        return c, []
    ts = np.asarray(c.ts, dtype=np.int64)
    cols = {k: np.asarray(getattr(c, k), dtype=float) for k in (*_PRICES, "volume")}
    reason: dict[int, tuple[str, float | None, str]] = {}  # row -> (field, value, why): the first that applied
    bad = np.zeros(n, dtype=bool)

    def flag(mask, field, why, values=None):
        for i in np.flatnonzero(mask & ~bad):
            reason[int(i)] = (field, None if values is None else float(values[i]), why)
        bad[mask] = True

    with np.errstate(invalid="ignore", over="ignore"):
        for k in _PRICES:
            v = cols[k]
            flag(~np.isfinite(v), k, "is NaN or infinite", v)
            flag(np.isfinite(v) & (v <= 0), k, "must be > 0", v)
        o, h, l, cl, vol = cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"]
        flag(h < l, "high", "is below low", h)
        flag((o < l) | (o > h), "open", "is outside [low, high]", o)
        flag((cl < l) | (cl > h), "close", "is outside [low, high]", cl)
        flag(~np.isfinite(vol), "volume", "is NaN or infinite", vol)
        flag(vol < 0, "volume", "is negative", vol)
        flag(vol > cfg.max_volume, "volume", f"is absurd (> {cfg.max_volume:g} per candle)", vol)
        flag(vol * cl > cfg.max_quote_volume, "volume",
             f"is absurd (worth > {cfg.max_quote_volume:g} in quote currency per candle)", vol)
        flag(ts % c.timeframe_ms != 0, "timestamp", f"is off the {c.timeframe_ms // 60_000}m candle grid", ts)
    # timestamps must increase over the candles kept so far (a duplicate or an earlier one is quarantined)
    kept = np.flatnonzero(~bad)
    if kept.size > 1 and not np.all(np.diff(ts[kept]) > 0):  # (the common case needs no loop)
        last = None
        for i in kept:
            if last is not None and ts[i] <= last:
                reason[int(i)] = ("timestamp", float(ts[i]), "is not after the previous candle's")
                bad[i] = True
                continue
            last = int(ts[i])
    # bad prints: against the median close of the previous `window` candles that passed the checks above
    idx = np.flatnonzero(~bad)
    if idx.size >= 2:
        closes = cl[idx]
        w = cfg.window
        ref = np.empty(idx.size)
        # the first candles have no history: the median of the first `window` ones stands in
        ref[:] = np.median(closes[:w])
        if idx.size > w:
            from numpy.lib.stride_tricks import sliding_window_view

            ref[w:] = np.median(sliding_window_view(closes, w)[:-1], axis=1)
        hi = np.maximum.reduce([o[idx], h[idx], l[idx], cl[idx]])
        lo = np.minimum.reduce([o[idx], h[idx], l[idx], cl[idx]])
        jump = cfg.max_jump
        for j in np.flatnonzero((hi > ref * jump) | (lo < ref / jump)):
            i = int(idx[j])
            vals = {k: cols[k][i] for k in _PRICES}
            # name the field furthest from the median
            field = max(vals, key=lambda k: abs(math.log(vals[k] / ref[j])))
            ratio = vals[field] / ref[j]
            reason[i] = (field, float(vals[field]),
                         f"is a bad print: {ratio:.4g}x the recent median close {ref[j]:.8g} "
                         f"(limit x{jump:g})")
    rejected = [Rejected(symbol, int(ts[i]), *reason[i]) for i in sorted(reason)]
    if not rejected:
        return c, []
    keep = np.ones(n, dtype=bool)
    keep[list(reason)] = False
    clean = Candles(ts[keep], o[keep], h[keep], l[keep], cl[keep], vol[keep], c.timeframe_ms)
    return clean, rejected


def check_price(price: float, recent: Candles, config: ScreenConfig | None = None) -> str | None:
    """Why a quoted price is not to be used (non-finite, <= 0, a bad print against the recent clean closes),
    or None."""
    cfg = config or ScreenConfig()
    if price is None or not math.isfinite(price) or price <= 0:
        return f"is not a positive finite number ({price!r})"
    if len(recent):
        ref = float(np.median(recent.close[-cfg.window:]))
        if price > ref * cfg.max_jump or price < ref / cfg.max_jump:
            return (f"is a bad print: {price / ref:.4g}x the median close {ref:.8g} of the last "
                    f"{min(cfg.window, len(recent))} candles (limit x{cfg.max_jump:g})")
    return None


def record(store, rejected, seen: set | None = None) -> int:
    """Write each quarantined candle once as a ``candle_quarantine`` event (warning). Returns rows written."""
    seen = set() if seen is None else seen
    n = 0
    for r in rejected:
        key = (r.symbol, r.ts, r.field)
        if key in seen:
            continue
        seen.add(key)
        if store.one("SELECT 1 FROM events WHERE kind=? AND json_extract(data,'$.symbol')=? "
                     "AND json_extract(data,'$.ts')=? AND json_extract(data,'$.field')=?",
                     (EVENT_KIND, r.symbol, r.ts, r.field)):
            continue
        store.event(EVENT_KIND, r.message(), severity="warning", data=r.to_dict())
        n += 1
    return n
