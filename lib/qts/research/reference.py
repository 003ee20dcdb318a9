"""The obvious bar-by-bar backtest in plain Python: the yardstick the numba kernels are checked against
(tests) and timed against (benchmark). Same fill model as :mod:`.kernels`, written independently and
as plainly as possible; signals from ``Strategy.signals``.
"""

from __future__ import annotations

import math

from ..market.candles import Candles
from ..strategies import Strategy


def plain_backtest(strategy: Strategy, candles: Candles, init_cash: float = 10_000.0, fee: float = 0.001,
                   slippage: float = 0.0, size_usd: float | None = None, start: int = 0,
                   stop: int | None = None) -> tuple[list[tuple], list[float]]:
    """(trades, equity). A trade is (entry_bar, exit_bar or None, amount, entry_price, exit_price,
    entry_fee, exit_fee); equity is marked at each close of bars [start, stop)."""
    entry, exit_, _ = strategy.signals(candles)
    entry, exit_ = entry.tolist(), exit_.tolist()
    opens, closes = candles.open.tolist(), candles.close.tolist()
    stop = len(candles) if stop is None else stop
    cash, amount = init_cash, 0.0
    trades: list[tuple] = []
    equity: list[float] = []
    order = None  # "buy" / "sell", to fill at the next bar's open
    current = None
    for i in range(start, stop):
        if order == "buy":
            price = opens[i] * (1 + slippage)
            if size_usd:
                amount = min(size_usd / opens[i], cash / (price * (1 + fee)))
                fee_paid = amount * price * fee
                cash -= amount * price + fee_paid
            else:
                spend = cash / (1 + fee)
                amount = spend / price
                fee_paid = cash - spend
                cash = 0.0
            current = [i, None, amount, price, math.nan, fee_paid, 0.0]
        elif order == "sell":
            price = opens[i] * (1 - slippage)
            proceeds = amount * price
            fee_paid = proceeds * fee
            cash += proceeds - fee_paid
            current[1], current[4], current[6] = i, price, fee_paid
            trades.append(tuple(current))
            current, amount = None, 0.0
        order = None
        equity.append(cash + amount * closes[i])
        if i + 1 < stop:
            if current is None and entry[i]:
                order = "buy"
            elif current is not None and exit_[i]:
                order = "sell"
    if current is not None:
        trades.append(tuple(current))
    return trades, equity
