"""The strategy interface and the hysteresis rule shared by every strategy."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ValidationError

from ..market.candles import Candles


class StrategyError(ValueError):
    pass


class Strategy:
    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    def __init__(self, **params):
        from .exits import ExitRules, split

        params, exit_fields = split(params)
        try:
            self.params = self.Params(**params)
            self.exits = ExitRules(**exit_fields)  # take-profit / stop-loss in bps, time stop (strategies/exits.py)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "params"
            raise StrategyError(f"{self.name}.{field}: {err['msg'].removeprefix('Value error, ')}") from None

    @property
    def lookback(self) -> int:
        """Closed candles the strategy needs to decide."""
        raise NotImplementedError

    def signals(self, c: Candles) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Per bar: entry condition, exit condition, and indicator series (for the decision log)."""
        raise NotImplementedError

    def targets(self, c: Candles) -> np.ndarray:
        """Position series (0/1) from flat at the first bar; bar i's value uses data up to bar i only."""
        entry, exit_, _ = self.signals(c)
        return hysteresis(entry, exit_)

    def decide(self, c: Candles, current: float) -> tuple[float, dict]:
        """Next target given the current exposure (0 or >0), and the inputs that explain it."""
        if len(c) < self.lookback:
            return current, {"reason": "WARMUP", "have": len(c), "need": self.lookback}
        entry, exit_, ind = self.signals(c)
        info = {k: _f(v[-1]) for k, v in ind.items()}
        info["close"] = _f(c.close[-1])
        if current <= 0 and entry[-1]:
            return 1.0, {**info, "reason": "ENTRY"}
        if current > 0 and exit_[-1]:
            return 0.0, {**info, "reason": "EXIT"}
        return (1.0 if current > 0 else 0.0), {**info, "reason": "HOLD"}

    def describe(self) -> dict:
        out = {"strategy": self.name, "params": self.params.model_dump()}
        if self.exits.active:
            out["exits"] = self.exits.nonzero()
        return out


def hysteresis(entry: np.ndarray, exit_: np.ndarray) -> np.ndarray:
    out = np.zeros(len(entry))
    state = 0.0
    for i in range(len(entry)):
        if state == 0.0 and entry[i]:
            state = 1.0
        elif state > 0 and exit_[i]:
            state = 0.0
        out[i] = state
    return out


def _f(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 8)
