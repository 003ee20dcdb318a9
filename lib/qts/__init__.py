"""quant-trading-system: research, backtest, paper-trade and live-trade crypto behind one safety gate.

The package is split by concern (see README "Library map"): ``config``, ``paths``, ``store``,
``market`` (feeds), ``broker``, ``strategies``, ``engine`` (the loop and the one submit path),
``cli``. Modules used by Claude Code hooks on every Bash call (``paths``, ``fsutil``) import only
the standard library.
"""

__version__ = "0.1.0"
