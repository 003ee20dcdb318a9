"""Pair protections (in the spirit of Freqtrade's StoplossGuard, CooldownPeriod, LowProfitPairs).

Pure functions of the pair's closed trades and the current time: no state is kept, a lock is
recomputed from the trades each time, so a restart cannot forget one. Times are epoch milliseconds;
every lock is the half-open interval ``[start, until)``: at exactly ``until`` the pair is free again.
Trades stamped in the future (clock skew, bad data) are not ignored: they lock like any other (fail
safe).

- stoploss guard: ``trade_limit`` losing-or-flat stop exits (``exit_reason`` in STOP_EXIT_REASONS and
  ``pnl <= 0``) within ``lookback`` (inclusive: a stop exactly ``lookback`` before the latest counts)
  lock the pair for ``duration`` from the stop that reached the limit.
- cooldown: no new entry of the pair until ``cooldown`` after its latest close (any reason).
- low-profit lock: when the pair's last ``n_trades`` closed trades sum to a return below
  ``required_return`` (strictly), the pair is locked for ``duration`` from the latest of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STOP_EXIT_REASONS = frozenset({"stop_loss", "stoploss", "stoploss_on_exchange", "trailing_stop_loss"})
MINUTE_MS = 60_000


@dataclass(frozen=True)
class ClosedTrade:
    symbol: str
    exit_ts: int          # epoch ms
    pnl: float            # quote currency
    ret: float            # return as a fraction (0.01 = +1 %)
    exit_reason: str      # "stop_loss", "take_profit", "signal", ...
    strategy: str | None = None

    @classmethod
    def coerce(cls, t) -> "ClosedTrade":
        if isinstance(t, ClosedTrade):
            return t
        if isinstance(t, dict):
            ret = t["return"] if "return" in t else t["ret"]
            return cls(str(t["symbol"]), int(t["exit_ts"]), float(t["pnl"]), float(ret),
                       str(t.get("exit_reason", "")), t.get("strategy"))
        raise TypeError(f"closed trade: expected ClosedTrade or dict, got {type(t).__name__}")

    def problem(self) -> str | None:
        if not (math.isfinite(self.pnl) and math.isfinite(self.ret)):
            return f"closed trade {self.symbol}@{self.exit_ts}: pnl/return must be finite"
        return None


@dataclass(frozen=True)
class Lock:
    protection: str       # "stoploss_guard" | "cooldown" | "low_profit"
    until_ms: int
    message: str


def _pair(trades, symbol: str) -> list[ClosedTrade]:
    return sorted((t for t in trades if t.symbol == symbol), key=lambda t: t.exit_ts)


def stoploss_guard(trades, symbol: str, now_ms: int, trade_limit: int, lookback_ms: int,
                   duration_ms: int) -> Lock | None:
    stops = [t.exit_ts for t in _pair(trades, symbol) if t.exit_reason in STOP_EXIT_REASONS and t.pnl <= 0]
    until = None
    for k in range(trade_limit - 1, len(stops)):
        s = stops[k]
        in_window = sum(1 for x in stops[: k + 1] if x >= s - lookback_ms)
        if in_window >= trade_limit and now_ms < s + duration_ms:
            until = max(until or 0, s + duration_ms)
    if until is None:
        return None
    return Lock("stoploss_guard", until,
                f"{symbol}: {trade_limit} stop-loss exits within {lookback_ms // MINUTE_MS} min; "
                f"pair paused for {(until - now_ms) / MINUTE_MS:.1f} more min")


def cooldown(trades, symbol: str, now_ms: int, cooldown_ms: int) -> Lock | None:
    pair = _pair(trades, symbol)
    if not pair or cooldown_ms <= 0:
        return None
    until = pair[-1].exit_ts + cooldown_ms
    if now_ms >= until:
        return None
    return Lock("cooldown", until, f"{symbol}: closed {(now_ms - pair[-1].exit_ts) / MINUTE_MS:.1f} min ago; "
                                   f"cooldown {cooldown_ms // MINUTE_MS} min")


def low_profit(trades, symbol: str, now_ms: int, n_trades: int, required_return: float,
               duration_ms: int) -> Lock | None:
    pair = _pair(trades, symbol)
    if len(pair) < n_trades or duration_ms <= 0:
        return None
    last = pair[-n_trades:]
    total = math.fsum(t.ret for t in last)
    if not total < required_return:
        return None
    until = last[-1].exit_ts + duration_ms
    if now_ms >= until:
        return None
    return Lock("low_profit", until, f"{symbol}: last {n_trades} trades returned {total:+.4f} in total, below the "
                                     f"required {required_return:+.4f}; pair locked for "
                                     f"{(until - now_ms) / MINUTE_MS:.1f} more min")
