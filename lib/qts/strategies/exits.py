"""Exit rules a strategy carries besides its signals: take-profit and stop-loss in basis points of the entry
price, and a time stop (bars or minutes held).

One rule, :meth:`ExitRules.check`, decides at each candle close, in the trading loop and in the backtest
alike: with ``entry`` the position's fill price (slippage included), ``bars`` the candles closed since the
fill (the fill's own candle counts as 1) and ``close`` the last close:

- ``close <= entry x (1 - stop_loss_bps/10000)`` -> ``STOP_LOSS``
- ``close >= entry x (1 + take_profit_bps/10000)`` -> ``TAKE_PROFIT``
- ``bars >= max_bars_held`` (``max_minutes_held`` converts to bars, rounded up) -> ``TIME_STOP``

The exit is a market order at the next candle's open, as for a signal exit. Given as strategy parameters
(``--param take_profit_bps=150``, the registry's pinned parameters); 0 or absent = no such rule.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

FIELDS = ("take_profit_bps", "stop_loss_bps", "max_bars_held", "max_minutes_held")


class ExitRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    take_profit_bps: float = Field(0.0, ge=0, le=100_000, description="exit at entry x (1 + bps/10000); 0 = off")
    stop_loss_bps: float = Field(0.0, ge=0, lt=10_000, description="exit at entry x (1 - bps/10000); 0 = off")
    max_bars_held: int = Field(0, ge=0, le=1_000_000, description="exit after this many candles; 0 = off")
    max_minutes_held: float = Field(0.0, ge=0, le=525_600 * 10, description="exit after this long; 0 = off")

    @property
    def active(self) -> bool:
        return any(getattr(self, f) for f in FIELDS)

    def bars_limit(self, timeframe_ms: int) -> int:
        """The time stop in candles (0 = none): the tighter of max_bars_held and max_minutes_held."""
        limits = [self.max_bars_held] if self.max_bars_held else []
        if self.max_minutes_held:
            limits.append(max(1, math.ceil(self.max_minutes_held * 60_000 / timeframe_ms)))
        return min(limits) if limits else 0

    def check(self, entry: float, bars: int, close: float, timeframe_ms: int) -> str | None:
        if self.stop_loss_bps and close <= entry * (1 - self.stop_loss_bps / 10_000):
            return "STOP_LOSS"
        if self.take_profit_bps and close >= entry * (1 + self.take_profit_bps / 10_000):
            return "TAKE_PROFIT"
        limit = self.bars_limit(timeframe_ms)
        if limit and bars >= limit:
            return "TIME_STOP"
        return None

    def nonzero(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v}


def split(params: dict | None) -> tuple[dict, dict]:
    """(strategy parameters, exit-rule fields) from one parameter dict."""
    params = dict(params or {})
    return {k: v for k, v in params.items() if k not in FIELDS}, {k: params[k] for k in FIELDS if k in params}
