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


def code_hash(name: str) -> str:
    """SHA-256 of the code that decides for strategy ``name``: its class, the strategy base (decide,
    hysteresis), the indicators and the exit rules. The registry pins it at registration; the trader refuses
    an entry whose code changed since (a re-validation pins the new code)."""
    import hashlib
    import inspect

    from . import base, exits, indicators

    if name not in STRATEGIES:
        raise StrategyError(f"strategy: unknown {name!r}; allowed: {', '.join(sorted(STRATEGIES))}")
    h = hashlib.sha256()
    for src in (inspect.getsource(STRATEGIES[name]), inspect.getsource(base), inspect.getsource(indicators),
                inspect.getsource(exits)):
        h.update(src.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()
