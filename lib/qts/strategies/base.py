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
        """Per bar: entry condition, exit condition, and indicator series (for the decision log).

        The entry may be booleans (enter with a full position) or floats in [0, 1]: a confidence, the
        share of a full position to enter with (0 or NaN: no entry; values are clipped to [0, 1]).
        The loop, the backtest and the risk layer all size an entry as confidence x what a 1 gets."""
        raise NotImplementedError

    def targets(self, c: Candles) -> np.ndarray:
        """Position series (0/1, or the entry's confidence while held) from flat at the first bar; bar
        i's value uses data up to bar i only."""
        entry, exit_, _ = self.signals(c)
        return hysteresis(entry, exit_)

    def decide(self, c: Candles, current: float) -> tuple[float, dict]:
        """Next target given the current exposure (0 or >0), and the inputs that explain it."""
        if len(c) < self.lookback:
            return current, {"reason": "WARMUP", "have": len(c), "need": self.lookback}
        entry, exit_, ind = self.signals(c)
        info = {k: _f(v[-1]) for k, v in ind.items()}
        info["close"] = _f(c.close[-1])
        _, size = split_confidence(entry[-1:])
        conf = 1.0 if size is None else float(size[0])
        if current <= 0 and conf > 0 and entry[-1]:
            if size is not None:
                info["confidence"] = _f(conf)
            return conf, {**info, "reason": "ENTRY"}
        if current > 0 and exit_[-1]:
            return 0.0, {**info, "reason": "EXIT"}
        return (1.0 if current > 0 else 0.0), {**info, "reason": "HOLD"}

    def describe(self) -> dict:
        out = {"strategy": self.name, "params": self.params.model_dump()}
        if self.exits.active:
            out["exits"] = self.exits.nonzero()
        return out


def split_confidence(entry: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(entry as booleans, per-bar confidence in [0, 1] or None for a boolean entry). A float entry's
    NaN and values <= 0 are no entry; values above 1 count as 1."""
    entry = np.asarray(entry)
    if entry.dtype == np.bool_:
        return entry, None
    size = np.clip(np.nan_to_num(entry.astype(np.float64), nan=0.0), 0.0, 1.0)
    return size > 0.0, size


def hysteresis(entry: np.ndarray, exit_: np.ndarray) -> np.ndarray:
    """Position series: flat -> the entry's size (1 for a boolean entry) on an entry; held -> 0 on an exit."""
    entry, size = split_confidence(entry)
    out = np.zeros(len(entry))
    state = 0.0
    for i in range(len(entry)):
        if state == 0.0 and entry[i]:
            state = 1.0 if size is None else float(size[i])
        elif state > 0 and exit_[i]:
            state = 0.0
        out[i] = state
    return out


def _f(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 8)
