"""Turn bad-input errors from market data into the CLI's exit code 2 with the file, row and reason."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def input_errors():
    from . import InputError
    from ..market.candles import CandleFileError
    from ..strategies import StrategyError

    try:
        yield
    except (CandleFileError, StrategyError) as e:
        raise InputError(str(e)) from None
    except ValueError as e:
        raise InputError(str(e)) from None
