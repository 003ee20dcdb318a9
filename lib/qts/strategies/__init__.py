"""Strategies: candles in, target exposure out (0 = flat, 1 = fully in the allocated position; a
strategy may enter with a confidence in (0, 1] instead, that share of a full position: ``edge_meta``).

Long-only spot. Each strategy defines entry and exit conditions per bar; :meth:`Strategy.targets`
turns them into a position series (vectorized over history, for backtests and look-ahead checks) and
:meth:`Strategy.decide` gives the next target for the live loop from the current position, so the
loop and a backtest follow the same rule.
"""

from .base import Strategy, StrategyError  # noqa: F401
from .edge import EdgeMeta
from .library import BUILTIN, BollingerReversion, RsiReversion, SmaCross, ZScoreReversion  # noqa: F401

STRATEGIES: dict[str, type[Strategy]] = {**BUILTIN, EdgeMeta.name: EdgeMeta}


def make(name: str, params: dict | None = None) -> Strategy:
    if name not in STRATEGIES:
        raise StrategyError(f"strategy: unknown {name!r}; allowed: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](**(params or {}))
