"""Compile every numba kernel once into the on-disk cache (``NUMBA_CACHE_DIR``, by default
``<repo>/.numba-cache``), so the first research command after an install loads compiled code instead
of compiling for ~10-20 s. ``make install`` / ``make demo`` run ``python -m qts.research.warmup``.

Tiny inputs suffice: numba compiles per argument type, not per size. ``--referee`` also runs the vectorbt
referee (:mod:`qts.research.referee`) once, so vectorbt's cacheable numba functions are compiled into the same
cache (the install does; ``make demo`` does not, to stay clear of vectorbt's 3.5 s import).
"""

from __future__ import annotations

import time


def warm_up() -> float:
    """Compile (or load) the backtest kernels and the exact rolling-mean kernels; seconds taken."""
    t0 = time.perf_counter()
    import numpy as np

    from ..strategies import _rolling_kernel as R
    from . import kernels as K

    K.warm_up()
    out = np.zeros(8)
    R.split_kernel(np.arange(8, dtype=np.int64), 3, 0, out)  # the integer-units path of rolling_mean
    R.to_units(np.linspace(1.0, 2.0, 8), np.empty(8, dtype=np.int64))
    R.kernel(np.linspace(0.1, 0.8, 8), 3, out)             # its general float path
    return time.perf_counter() - t0


def warm_up_referee() -> float:
    """Run the vectorbt referee once on a tiny generated market; seconds taken."""
    t0 = time.perf_counter()
    from ..market.candles import Candles
    from .backtest import BacktestConfig, backtest
    from .referee import referee

    rows = [(i * 300_000, 10.0 + (i * 7) % 5, 16.0, 9.0, 10.0 + (i * 3) % 5, 1.0) for i in range(300)]
    c = Candles.from_rows(rows, 300_000)
    referee(c, "sma_cross", backtest("sma_cross", c, BacktestConfig(), params={"fast": 3, "slow": 8}))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    import os
    import sys

    argv = sys.argv[1:] if argv is None else argv
    secs = warm_up()
    print(f"numba kernels ready in {os.environ.get('NUMBA_CACHE_DIR', '(numba default cache)')} ({secs:.1f} s)")
    if "--referee" in argv:
        print(f"vectorbt referee compiled ({warm_up_referee():.1f} s)")


if __name__ == "__main__":
    main()
