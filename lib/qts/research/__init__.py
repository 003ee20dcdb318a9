"""Research: vectorized backtests, parameter sweeps, walk-forward validation and overfitting statistics.

- :mod:`.backtest`  one strategy, one parameter set (``backtest``, ``BacktestConfig``, ``Trade``)
- :mod:`.sweep`     grids of thousands of combinations, chunked, inline / processes / Dask
- :mod:`.specs`     per-strategy sweep signals from an indicator cache (each window computed once)
- :mod:`.parallel`  inline / local processes / Dask execution of independent tasks
- :mod:`.kernels`   the numba simulation core (its docstring is the fill model)
- :mod:`.metrics`   metric definitions (Sharpe, Sortino, Calmar, drawdown, ...)
- :mod:`.splits`    walk-forward and purged k-fold splits
- :mod:`.overfit`   Deflated Sharpe Ratio, PBO by CSCV
- :mod:`.lookahead` signals on cut data == signals on full data
- :mod:`.validation` walk-forward runs, purged k-fold CV, gates and the verdict
- :mod:`.reference` a plain Python loop, the yardstick of the kernels
"""

from .backtest import BacktestConfig, BacktestResult, Trade, backtest  # noqa: F401
from .sweep import SweepResult, expand_grid, sweep  # noqa: F401
from .validation import (Gates, ValidationReport, Verdict, judge, purged_cv, validate_strategy,  # noqa: F401
                         walk_forward)
