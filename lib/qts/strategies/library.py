"""The built-in strategies. Parameters are validated; each bound names what a trader would expect."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..market.candles import Candles
from . import indicators as ind
from .base import Strategy


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmaCross(Strategy):
    """Trend: enter when SMA(fast) crosses above SMA(slow) on close, exit when it crosses below."""

    name = "sma_cross"

    class Params(_P):
        fast: int = Field(20, ge=2, le=1000)
        slow: int = Field(50, ge=3, le=2000)

        @model_validator(mode="after")
        def _order(self):
            if self.fast >= self.slow:
                raise ValueError("fast must be shorter than slow")
            return self

    @property
    def lookback(self) -> int:
        return self.params.slow + 1

    def signals(self, c: Candles):
        f, s = ind.sma(c.close, self.params.fast), ind.sma(c.close, self.params.slow)
        above = f > s
        below = f < s
        prev_above = np.r_[False, above[:-1]]
        prev_below = np.r_[False, below[:-1]]
        entry = above & ~prev_above & ~np.isnan(np.r_[np.nan, s[:-1]])
        exit_ = below & ~prev_below
        return entry, exit_, {"sma_fast": f, "sma_slow": s}


class RsiReversion(Strategy):
    """Mean reversion: enter when RSI falls below ``lower``, exit when it rises above ``upper``."""

    name = "rsi_reversion"

    class Params(_P):
        period: int = Field(14, ge=2, le=200)
        lower: float = Field(30, gt=0, lt=100)
        upper: float = Field(60, gt=0, lt=100)

        @model_validator(mode="after")
        def _order(self):
            if self.lower >= self.upper:
                raise ValueError("lower must be below upper")
            return self

    @property
    def lookback(self) -> int:
        return self.params.period * 10  # Wilder smoothing needs a run-in to settle

    def signals(self, c: Candles):
        r = ind.rsi(c.close, self.params.period)
        return r < self.params.lower, r > self.params.upper, {"rsi": r}


class BollingerReversion(Strategy):
    """Mean reversion: enter when close drops below the lower band, exit at the middle band."""

    name = "bollinger_reversion"

    class Params(_P):
        window: int = Field(20, ge=5, le=1000)
        k: float = Field(2.0, ge=0.5, le=5.0)

    @property
    def lookback(self) -> int:
        return self.params.window

    def signals(self, c: Candles):
        mid = ind.sma(c.close, self.params.window)
        sd = ind.rolling_std(c.close, self.params.window)
        lower = mid - self.params.k * sd
        return c.close < lower, c.close > mid, {"bb_mid": mid, "bb_lower": lower}


class ZScoreReversion(Strategy):
    """Mean reversion: enter when the z-score of close drops below -entry_z, exit above -exit_z."""

    name = "zscore_reversion"

    class Params(_P):
        window: int = Field(50, ge=5, le=2000)
        entry_z: float = Field(2.0, ge=0.5, le=5.0)
        exit_z: float = Field(0.0, ge=-3.0, le=5.0)

        @model_validator(mode="after")
        def _order(self):
            if self.exit_z >= self.entry_z:
                raise ValueError("exit_z must be below entry_z (exit happens closer to the mean)")
            return self

    @property
    def lookback(self) -> int:
        return self.params.window

    def signals(self, c: Candles):
        mid = ind.sma(c.close, self.params.window)
        sd = ind.rolling_std(c.close, self.params.window)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (c.close - mid) / sd
        return z < -self.params.entry_z, z > -self.params.exit_z, {"zscore": z}


# the built-in rule strategies (an edge_meta model may use any of them as its primary signal)
BUILTIN: dict[str, type[Strategy]] = {s.name: s for s in (SmaCross, RsiReversion, BollingerReversion, ZScoreReversion)}
