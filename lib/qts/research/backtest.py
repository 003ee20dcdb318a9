"""Vectorized backtest of one strategy with one parameter set.

``backtest(strategy, candles, config)`` runs any registered strategy (a name, or a Strategy
instance) through the numba simulation core (:mod:`qts.research.kernels`, whose docstring is the fill
model: next bar's open, slippage against us, a fee per side, long-only, all-in or fixed-notional
sizing). Signals come from ``Strategy.signals`` itself (a float entry is a confidence in [0, 1]:
the entry buys that share of what a full signal buys), so the backtest, the look-ahead check and
the trading loop share one definition of the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..market.candles import Candles
from ..strategies import Strategy, make
from ..strategies.base import split_confidence
from . import kernels as K
from . import metrics as M


class BacktestConfig(BaseModel):
    """Costs and sizing. The defaults are the paper broker's (10 bps fee, 5 bps slippage)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    init_cash: float = Field(10_000.0, gt=0, description="starting cash, quote currency")
    fee_bps: float = Field(10.0, ge=0, le=1000, description="fee per fill (each side), basis points of notional")
    slippage_bps: float = Field(5.0, ge=0, le=1000, description="market fills move this far against us")
    size_usd: float | None = Field(None, gt=0, description="None: all the cash in; else buy this notional "
                                                             "at the open (as the trading loop's MAX_POSITION_SIZE)")
    amount_step: float | None = Field(None, gt=0, description="truncate amounts to this step (exchange rules)")
    periods_per_year: float | None = Field(None, gt=0, description="None: from the candles' timeframe, 365 days")

    @property
    def fee(self) -> float:
        return self.fee_bps / 10_000

    @property
    def slippage(self) -> float:
        return self.slippage_bps / 10_000

    def ppy(self, timeframe_ms: int) -> float:
        return self.periods_per_year or M.periods_per_year(timeframe_ms)

    def kernel_args(self, timeframe_ms: int) -> tuple:
        """(init_cash, fee, slip, size_usd, step, ppy) as the kernels take them."""
        return (float(self.init_cash), self.fee, self.slippage, float(self.size_usd or 0.0),
                float(self.amount_step or 0.0), float(self.ppy(timeframe_ms)))

    @classmethod
    def from_settings(cls, settings, **kw) -> "BacktestConfig":
        """The paper account's costs and starting cash from qts Settings."""
        return cls(init_cash=settings.INITIAL_CASH, fee_bps=settings.FEE_BPS, slippage_bps=settings.SLIPPAGE_BPS,
                   **kw)


@dataclass(frozen=True)
class Trade:
    """One round trip. Bars are indices into the candles; ``*_ts`` their open times (the fill times).
    The signal was on the bar before each fill. An open trade has ``exit_bar`` None, is marked at
    the last close and pays no exit fee."""

    entry_bar: int
    exit_bar: int | None
    entry_ts: int
    exit_ts: int | None
    amount: float
    entry_price: float
    exit_price: float
    entry_fee: float
    exit_fee: float
    pnl: float
    ret: float

    @property
    def is_open(self) -> bool:
        return self.exit_bar is None


@dataclass
class BacktestResult:
    strategy: str
    params: dict
    config: BacktestConfig
    start: int
    stop: int
    ts: np.ndarray                 # open times of bars [start, stop)
    equity: np.ndarray             # equity at each of those bars' close
    trades: list[Trade]
    stats: dict                    # STAT_NAMES, as the kernel accumulated them
    timeframe_ms: int
    extra: dict = field(default_factory=dict)

    @property
    def closed_trades(self) -> list[Trade]:
        return [t for t in self.trades if not t.is_open]

    @property
    def returns(self) -> np.ndarray:
        return M.bar_returns(self.equity, self.config.init_cash)

    def in_position(self) -> np.ndarray:
        held = np.zeros(len(self.equity), bool)
        for t in self.trades:
            held[t.entry_bar - self.start:(self.stop if t.is_open else t.exit_bar) - self.start] = True
        return held

    def metrics(self, monthly: bool = True) -> dict:
        """The same statistics recomputed from the equity curve and trades by :mod:`.metrics`, plus
        the monthly returns (``monthly=False``: without them, and without importing pandas)."""
        closed = self.closed_trades
        out = M.summarize(self.equity, self.config.init_cash, self.config.ppy(self.timeframe_ms),
                          [t.pnl for t in closed], [t.ret for t in closed], self.in_position(),
                          int(len(self.trades) > len(closed)))
        if monthly:
            out["monthly_returns"] = M.monthly_returns(self.equity, self.ts, self.config.init_cash)
        return out


def resolve(strategy: Strategy | str, params: dict | None = None) -> Strategy:
    if isinstance(strategy, Strategy):
        if params:
            return type(strategy)(**{**strategy.params.model_dump(), **strategy.exits.nonzero(), **params})
        return strategy
    return make(strategy, params)


def _window(candles: Candles, start: int, stop: int | None) -> tuple[int, int]:
    n = len(candles)
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise ValueError(f"bars: need 0 <= start <= stop <= {n}, got start={start}, stop={stop}")
    return start, stop


def arrays(candles: Candles) -> tuple[np.ndarray, np.ndarray]:
    return (np.ascontiguousarray(candles.open, dtype=np.float64),
            np.ascontiguousarray(candles.close, dtype=np.float64))


def build_result(strategy: Strategy, candles: Candles, config: BacktestConfig, start: int, stop: int,
                 stats: np.ndarray, equity: np.ndarray, rows: np.ndarray) -> BacktestResult:
    ts = candles.ts
    trades = []
    for r in rows:
        eb, xb = int(r[0]), int(r[1])
        trades.append(Trade(eb, None if xb < 0 else xb, int(ts[eb]), None if xb < 0 else int(ts[xb]),
                            float(r[2]), float(r[3]), float(r[4]), float(r[5]), float(r[6]), float(r[7]),
                            float(r[8])))
    st = {k: float(v) for k, v in zip(K.STAT_NAMES, stats)}
    st["n_trades"], st["max_dd_bars"], st["open_trade"] = int(st["n_trades"]), int(st["max_dd_bars"]), int(st["open_trade"])
    return BacktestResult(strategy.name, strategy.params.model_dump(), config, start, stop,
                          np.asarray(ts[start:stop]), equity, trades, st, candles.timeframe_ms)


def backtest(strategy: Strategy | str, candles: Candles, config: BacktestConfig | None = None,
             params: dict | None = None, start: int = 0, stop: int | None = None) -> BacktestResult:
    """Backtest ``strategy`` on bars [start, stop) of ``candles`` (indicators see all earlier bars;
    the position is flat at ``start``). Signals of ``Strategy.signals``; fills per the kernel's model."""
    strat = resolve(strategy, params)
    config = config or BacktestConfig()
    start, stop = _window(candles, start, stop)
    entry, exit_, _ = strat.signals(candles)
    entry, size = split_confidence(entry)  # a confidence-emitting strategy: entries sized by it
    o, c = arrays(candles)
    exit_reasons: dict[int, str] = {}
    if strat.exits.active:  # take-profit / stop-loss / time stop: the loop's rule, bar by bar
        exit_, exit_reasons = apply_exit_rules(strat.exits, entry, exit_, o, c, start, stop, config.slippage,
                                               candles.timeframe_ms)
    stats = np.zeros(K.NSTAT)
    equity = np.zeros(stop - start)
    rows = np.zeros((K.max_trade_rows(start, stop), K.NTF))
    n = K.signals_record(o, c, np.ascontiguousarray(entry, dtype=np.bool_),
                         np.ascontiguousarray(exit_, dtype=np.bool_),
                         np.empty(0) if size is None else np.ascontiguousarray(size), start, stop,
                         *config.kernel_args(candles.timeframe_ms), stats, equity, rows)
    res = build_result(strat, candles, config, start, stop, stats, equity, rows[:n])
    if exit_reasons:
        res.extra["exit_reasons"] = exit_reasons  # signal bar -> STOP_LOSS / TAKE_PROFIT / TIME_STOP
    return res


def apply_exit_rules(rules, entry, exit_, open_, close, start: int, stop: int, slip: float,
                     timeframe_ms: int) -> tuple[np.ndarray, dict[int, str]]:
    """The exit signals with the strategy's exit rules added: follows the kernel's position (enter at the
    open after an entry signal at open x (1 + slip), exit at the open after an exit signal) and, while
    held, asks :meth:`ExitRules.check` at each close, as the trading loop does. Returns (exit array,
    {bar whose close triggered a rule: its reason})."""
    out = np.array(exit_, dtype=np.bool_, copy=True)
    reasons: dict[int, str] = {}
    held, pending, entry_bar, entry_price = False, 0, -1, 0.0
    for i in range(start, stop):
        if pending == 1:
            held, entry_bar, entry_price = True, i, float(open_[i]) * (1.0 + slip)
        elif pending == -1:
            held = False
        pending = 0
        if i + 1 >= stop:
            break
        if not held:
            if entry[i]:
                pending = 1
        else:
            why = rules.check(entry_price, i - entry_bar + 1, float(close[i]), timeframe_ms)
            if why:
                out[i] = True
                reasons[i] = why
            if out[i]:
                pending = -1
    return out, reasons


def backtest_sma_fused(candles: Candles, fast: int, slow: int, config: BacktestConfig | None = None,
                       start: int = 0, stop: int | None = None) -> BacktestResult:
    """SmaCross through the sweep's fused numba signal code (the one :func:`qts.research.sweep.sweep`
    runs for ``sma_cross``), with trades recorded: lets tests and the benchmark check the sweep's own
    code path trade by trade."""
    from ..strategies import indicators as ind

    strat = make("sma_cross", {"fast": fast, "slow": slow})
    config = config or BacktestConfig()
    start, stop = _window(candles, start, stop)
    o, c = arrays(candles)
    stats = np.zeros(K.NSTAT)
    equity = np.zeros(stop - start)
    rows = np.zeros((K.max_trade_rows(start, stop), K.NTF))
    n = K.sma_cross_record(o, c, ind.sma(c, fast), ind.sma(c, slow), start, stop,
                           *config.kernel_args(candles.timeframe_ms), stats, equity, rows)
    return build_result(strat, candles, config, start, stop, stats, equity, rows[:n])
