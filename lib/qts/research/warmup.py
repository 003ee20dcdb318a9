"""Compile every numba kernel once into the on-disk cache (``NUMBA_CACHE_DIR``, by default
``<repo>/.numba-cache``), so the first research command after an install loads compiled code instead
of compiling for ~10-20 s. ``make install`` / ``make demo`` run ``python -m qts.research.warmup``.

Tiny inputs suffice: numba compiles per argument type, not per size.
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
    R.int_kernel(np.arange(8, dtype=np.int64), 3, 0, out)  # the integer-units path of rolling_mean
    R.kernel(np.linspace(0.1, 0.8, 8), 3, out)             # its general float path
    return time.perf_counter() - t0


def main() -> None:
    import os

    secs = warm_up()
    print(f"numba kernels ready in {os.environ.get('NUMBA_CACHE_DIR', '(numba default cache)')} ({secs:.1f} s)")


if __name__ == "__main__":
    main()
