"""The vectorized backtest: metrics by hand, fills by hand on tiny candles, the numba kernels against a
plain Python loop and against vectorbt on real BTC candles, sweeps (chunking, executors, indicator
reuse) and the sweep signal specs against Strategy.signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import BaseModel

from conftest import make_candles
from qts.research import kernels as K
from qts.research import metrics as M
from qts.research import specs
from qts.research.backtest import BacktestConfig, backtest, backtest_sma_fused
from qts.research.reference import plain_backtest
from qts.research.sweep import expand_grid, sweep
from qts.strategies import Strategy, make


# -- helpers ------------------------------------------------------------------------------------------

class Scripted(Strategy):
    """Entry/exit signals given by hand (bar indices)."""

    name = "scripted"

    class Params(BaseModel):
        entries: tuple[int, ...] = ()
        exits: tuple[int, ...] = ()

    @property
    def lookback(self) -> int:
        return 1

    def signals(self, c):
        e = np.zeros(len(c), bool)
        x = np.zeros(len(c), bool)
        e[list(self.params.entries)] = True
        x[list(self.params.exits)] = True
        return e, x, {}


def flat_candles(opens, closes=None):
    closes = opens if closes is None else closes
    return make_candles([(o, max(o, c) + 1, min(o, c) - 1, c, 1000.0) for o, c in zip(opens, closes)])


def same_trades(ours, plain):
    """Trade by trade: the same bars, and amounts / prices / fees equal to float rounding."""
    assert len(ours) == len(plain)
    for a, b in zip(ours, plain):
        assert (a.entry_bar, a.exit_bar) == (b[0], b[1])
        assert a.amount == pytest.approx(b[2], rel=1e-12)
        assert a.entry_price == pytest.approx(b[3], rel=1e-12)
        assert a.entry_fee == pytest.approx(b[5], rel=1e-9)
        if b[1] is not None:
            assert a.exit_price == pytest.approx(b[4], rel=1e-12)
            assert a.exit_fee == pytest.approx(b[6], rel=1e-9)


NO_COST = BacktestConfig(init_cash=1000.0, fee_bps=0, slippage_bps=0, periods_per_year=4)


# -- metrics on hand-made equity curves ---------------------------------------------------------------

def test_metrics_by_hand():
    eq = np.array([100.0, 110.0, 99.0, 121.0])
    # returns: 0, +10 %, -10 %, +22.2 %
    r = M.bar_returns(eq, 100.0)
    assert r == pytest.approx([0.0, 0.1, -0.1, 22 / 99])
    assert M.total_return(eq, 100.0) == pytest.approx(0.21)
    mean = (0.1 - 0.1 + 22 / 99) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in (0.0, 0.1, -0.1, 22 / 99)) / 3)
    assert M.sharpe(r, 4) == pytest.approx(mean / sd * 2)          # sqrt(4 periods a year)
    assert M.sharpe(r, 4) == pytest.approx(0.8058, abs=1e-4)
    assert M.sortino(r, 4) == pytest.approx(mean / math.sqrt(0.01 / 4) * 2)  # downside: only -10 %
    assert M.max_drawdown(eq, 100.0) == (pytest.approx(0.1), 1)     # 110 -> 99, one bar under water
    assert M.cagr(eq, 100.0, 4) == pytest.approx(0.21)               # 4 bars = one year
    assert M.cagr(eq, 100.0, 2) == pytest.approx(1.21 ** 0.5 - 1)    # 4 bars = two years
    assert M.calmar(0.21, 0.1) == pytest.approx(2.1)
    assert math.isnan(M.calmar(0.21, 0.0))


def test_drawdown_duration_unrecovered_and_from_the_start():
    # below the starting cash from the first bar, never regained: 4 bars under water
    assert M.max_drawdown(np.array([90.0, 80.0, 85.0, 95.0]), 100.0) == (pytest.approx(0.2), 4)
    # two drawdowns: 3 bars (then regained), then 1 bar to the end
    eq = np.array([100.0, 120.0, 110.0, 100.0, 115.0, 121.0, 119.0])
    mdd, bars = M.max_drawdown(eq, 100.0)
    assert mdd == pytest.approx(20 / 120) and bars == 3
    assert M.max_drawdown(np.array([100.0, 100.0]), 100.0) == (0.0, 0)


def test_trade_metrics_by_hand():
    pnl = [10.0, -5.0, 20.0, -5.0, 0.0]           # a flat trade counts as a loss (no win)
    assert M.win_rate(pnl) == pytest.approx(0.4)
    assert M.profit_factor(pnl) == pytest.approx(30 / 10)
    assert M.expectancy(pnl) == pytest.approx(4.0)
    assert M.profit_factor([5.0, 1.0]) == math.inf
    assert math.isnan(M.profit_factor([])) and math.isnan(M.win_rate([])) and math.isnan(M.expectancy([]))


def test_sharpe_and_sortino_of_flat_curves():
    assert M.sharpe(np.zeros(10), 100) == 0.0
    assert M.sortino(np.zeros(10), 100) == 0.0
    assert M.sortino(np.full(10, 0.01), 100) == math.inf


def test_monthly_returns_by_hand():
    day = 86_400_000
    t0 = 1_704_067_200_000  # 2024-01-01
    ts = np.array([t0, t0 + 15 * day, t0 + 31 * day, t0 + 45 * day, t0 + 60 * day])  # Jan, Jan, Feb, Feb, Mar
    eq = np.array([100.0, 110.0, 99.0, 132.0, 66.0])
    m = M.monthly_returns(eq, ts, 100.0)
    assert [str(i.date()) for i in m.index] == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert m.to_numpy() == pytest.approx([0.10, 0.20, -0.5])  # 100->110, 110->132, 132->66


# -- the engine on tiny hand-made candles ---------------------------------------------------------------

def test_next_bar_open_fills_fees_and_pnl_by_hand():
    c = flat_candles([100, 100, 100, 105, 110, 120], [100, 100, 104, 108, 115, 121])
    cfg = BacktestConfig(init_cash=1000.0, fee_bps=10, slippage_bps=0)
    res = backtest(Scripted(entries=(1,), exits=(3,)), c, cfg)
    (t,) = res.trades
    assert (t.entry_bar, t.exit_bar) == (2, 4)                       # signal on bar 1 -> fill at bar 2's open
    assert (t.entry_ts, t.exit_ts) == (int(c.ts[2]), int(c.ts[4]))
    spend = 1000 / 1.001                                            # all in: cash = amount x price x (1 + fee)
    assert t.amount == pytest.approx(spend / 100)
    assert t.entry_price == 100 and t.exit_price == 110
    assert t.entry_fee == pytest.approx(1000 - spend)
    assert t.exit_fee == pytest.approx(spend / 100 * 110 * 0.001)
    net = spend / 100 * 110 * 0.999
    assert t.pnl == pytest.approx(net - 1000)
    assert t.ret == pytest.approx(net / 1000 - 1)
    # equity marked at each close: cash until bar 1, the position from bar 2, cash again from bar 4
    assert res.equity == pytest.approx([1000, 1000, spend / 100 * 104, spend / 100 * 108, net, net])
    assert res.stats["n_trades"] == 1 and res.stats["win_rate"] == 1.0
    assert res.stats["exposure"] == pytest.approx(2 / 6)


def test_slippage_moves_fills_against_us():
    c = flat_candles([100, 100, 100, 100, 110, 110])
    res = backtest(Scripted(entries=(1,), exits=(3,)), c, BacktestConfig(init_cash=1000.0, fee_bps=0, slippage_bps=50))
    (t,) = res.trades
    assert t.entry_price == pytest.approx(100.5) and t.exit_price == pytest.approx(110 * 0.995)
    assert t.amount == pytest.approx(1000 / 100.5)


def test_hysteresis_signals_while_in_or_out_are_ignored_and_last_bar_never_fills():
    c = flat_candles([10, 11, 12, 13, 14, 15, 16, 17])
    # exit at bar 0 while flat: ignored; entries at 1 and 2: one position; exits at 4 and 5: one sale;
    # entry at 7 (the last bar) would fill after the data: ignored
    res = backtest(Scripted(entries=(1, 2, 7), exits=(0, 4, 5)), c, NO_COST)
    assert [(t.entry_bar, t.exit_bar) for t in res.trades] == [(2, 5)]
    # an entry on bar 5 fills on bar 6 and is still open at the end: reported open, marked at the close
    res = backtest(Scripted(entries=(1, 5), exits=(3,)), c, NO_COST)
    assert [(t.entry_bar, t.exit_bar) for t in res.trades] == [(2, 4), (6, None)]
    assert res.trades[-1].is_open and res.stats["open_trade"] == 1 and res.stats["n_trades"] == 1
    assert res.trades[-1].exit_price == 17 and res.trades[-1].exit_fee == 0


def test_window_start_and_stop():
    c = flat_candles([10, 11, 12, 13, 14, 15, 16, 17])
    s = Scripted(entries=(1, 4), exits=(2, 5))
    res = backtest(s, c, NO_COST, start=3, stop=7)  # entry at 1 is before the window: flat at bar 3
    assert [(t.entry_bar, t.exit_bar) for t in res.trades] == [(5, 6)]
    assert len(res.equity) == 4 and list(res.ts) == list(c.ts[3:7])
    res = backtest(s, c, NO_COST, start=3, stop=6)  # exit signal at bar 5 = stop - 1: never fills
    assert [(t.entry_bar, t.exit_bar) for t in res.trades] == [(5, None)]
    with pytest.raises(ValueError, match="start"):
        backtest(s, c, NO_COST, start=5, stop=4)


def test_fixed_notional_sizing_with_amount_step():
    c = flat_candles([30_000.0] * 3 + [31_000.0] * 3)
    cfg = BacktestConfig(init_cash=10_000.0, fee_bps=10, slippage_bps=5, size_usd=1000.0, amount_step=1e-5)
    (t,) = backtest(Scripted(entries=(1,), exits=(3,)), c, cfg).trades
    assert t.amount == pytest.approx(0.03333)                        # 1000 / 30000 = 0.0333333 -> step 1e-5
    assert t.entry_price == pytest.approx(30_000 * 1.0005)
    assert t.entry_fee == pytest.approx(0.03333 * 30_000 * 1.0005 * 0.001)
    assert t.exit_price == pytest.approx(31_000 * 0.9995)
    # never more than the cash affords
    (t,) = backtest(Scripted(entries=(1,), exits=(3,)), c, cfg.model_copy(update={"init_cash": 500.0})).trades
    assert t.amount * t.entry_price + t.entry_fee <= 500.0
    assert t.amount == pytest.approx(math.floor(500 / (30_000 * 1.0005 * 1.001) * 1e5) / 1e5)


def test_sma_cross_on_hand_made_closes():
    # SMA(2) vs SMA(3): closes fall, then rise (cross above), then fall (cross below)
    closes = [10, 9, 8, 7, 9, 12, 14, 11, 7, 5, 5]
    c = flat_candles(closes, closes)
    s = make("sma_cross", {"fast": 2, "slow": 3})
    f = [np.nan, 9.5, 8.5, 7.5, 8, 10.5, 13, 12.5, 9, 6, 5]
    sl = [np.nan, np.nan, 9, 8, 8, 9.333333, 11.666667, 12.333333, 10.666667, 7.666667, 5.666667]
    e, x, ind = s.signals(c)
    np.testing.assert_allclose(ind["sma_fast"], f, rtol=1e-6)
    np.testing.assert_allclose(ind["sma_slow"], sl, rtol=1e-6)
    # fast > slow first at bar 5 (10.5 > 9.33); still above at bar 7 (12.5 > 12.33); below at bar 8 (9 < 10.67)
    assert list(np.flatnonzero(e)) == [5]
    assert list(np.flatnonzero(x)) == [2, 8]  # bar 2: 8.5 < 9 (first bar with both SMAs), flat then: ignored
    res = backtest(s, c, NO_COST)
    assert [(t.entry_bar, t.exit_bar) for t in res.trades] == [(6, 9)]
    assert res.trades[0].pnl == pytest.approx(1000 / 14 * 5 - 1000)   # in at bar 6's open 14, out at 5
    fused = backtest_sma_fused(c, 2, 3, NO_COST)
    assert [(t.entry_bar, t.exit_bar, t.amount) for t in fused.trades] == [(t.entry_bar, t.exit_bar, t.amount)
                                                                          for t in res.trades]


# -- the kernels against the plain loop, on real BTC candles --------------------------------------------

PARAMS = [(2, 110), (5, 30), (13, 250), (50, 290), (101, 110)]


@pytest.mark.parametrize("fast,slow", PARAMS)
def test_engine_equals_plain_loop_on_btc(btc_5m, fast, slow):
    cfg = BacktestConfig(init_cash=10_000.0, fee_bps=10, slippage_bps=5)
    s = make("sma_cross", {"fast": fast, "slow": slow})
    plain, eq = plain_backtest(s, btc_5m, 10_000.0, 0.001, 0.0005)
    res = backtest(s, btc_5m, cfg)
    assert len(plain) > 100
    same_trades(res.trades, plain)
    assert res.equity[-1] == pytest.approx(eq[-1], rel=1e-9)
    fused = backtest_sma_fused(btc_5m, fast, slow, cfg)  # the sweep's own signal code
    same_trades(fused.trades, plain)
    assert fused.stats == res.stats


def test_fixed_notional_equals_plain_loop_on_btc(btc_5m):
    cfg = BacktestConfig(init_cash=10_000.0, fee_bps=10, slippage_bps=5, size_usd=2_500.0)
    s = make("sma_cross", {"fast": 8, "slow": 55})
    plain, eq = plain_backtest(s, btc_5m, 10_000.0, 0.001, 0.0005, size_usd=2_500.0)
    res = backtest(s, btc_5m, cfg)
    same_trades(res.trades, plain)
    assert res.equity == pytest.approx(np.array(eq), rel=1e-9)


@pytest.mark.parametrize("name,params", [("rsi_reversion", {"period": 14, "lower": 25, "upper": 60}),
                                         ("bollinger_reversion", {"window": 40, "k": 2.5}),
                                         ("zscore_reversion", {"window": 100, "entry_z": 2.0, "exit_z": 0.5})])
def test_every_builtin_strategy_equals_plain_loop(btc_5m, name, params):
    c = btc_5m.slice(0, 20_000)
    s = make(name, params)
    plain, eq = plain_backtest(s, c, 10_000.0, 0.001, 0.0005)
    res = backtest(s, c, BacktestConfig())
    assert len(plain) > 10
    same_trades(res.trades, plain)
    assert res.equity == pytest.approx(np.array(eq), rel=1e-9)


def test_kernel_statistics_equal_the_metrics_module(btc_5m):
    res = backtest("sma_cross", btc_5m, BacktestConfig(), {"fast": 12, "slow": 90})
    m = res.metrics()
    for k, v in res.stats.items():
        assert m[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    assert len(m["monthly_returns"]) >= 6
    # compounding the monthly returns gives the total return
    assert np.prod(1 + m["monthly_returns"].to_numpy()) - 1 == pytest.approx(res.stats["total_return"], rel=1e-9)


@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_equals_vectorbt_from_signals(btc_5m):
    """vectorbt as the reference implementation: our next-bar-open fills are its from_signals with the
    signals shifted one bar and price=open (all-in size=inf, fees and slippage as fractions)."""
    vbt = pytest.importorskip("vectorbt")
    import pandas as pd

    c = btc_5m.slice(0, 6_000)
    idx = pd.to_datetime(c.ts, unit="ms")  # naive index (a tz-aware one is ~35x slower under pandas 3)
    combos = [(5, 30), (10, 130), (20, 50)]
    sig = [make("sma_cross", {"fast": f, "slow": s}).signals(c)[:2] for f, s in combos]
    E = pd.DataFrame(np.array([np.r_[False, e[:-1]] for e, _ in sig]).T, index=idx)
    X = pd.DataFrame(np.array([np.r_[False, x[:-1]] for _, x in sig]).T, index=idx)
    pf = vbt.Portfolio.from_signals(pd.Series(c.close, index=idx), E, X, price=pd.Series(c.open, index=idx),
                                    fees=0.001, slippage=0.0005, size=np.inf, init_cash=10_000.0,
                                    direction="longonly", freq="5min")
    trades = pf.trades.records_readable
    value = pf.value()
    for k, (f, s) in enumerate(combos):
        ours = backtest("sma_cross", c, BacktestConfig(), {"fast": f, "slow": s})
        t = trades[trades["Column"] == k]
        assert len(t) == len(ours.trades) > 10
        assert list(idx.get_indexer(t["Entry Timestamp"])) == [x.entry_bar for x in ours.trades]
        np.testing.assert_allclose(t["Size"].to_numpy(), [x.amount for x in ours.trades], rtol=1e-12)
        np.testing.assert_allclose(t["Avg Entry Price"].to_numpy(), [x.entry_price for x in ours.trades], rtol=1e-12)
        np.testing.assert_allclose(value.iloc[:, k].to_numpy(), ours.equity, rtol=1e-9)


# -- sweeps ---------------------------------------------------------------------------------------------

GRID = {"fast": [3, 5, 8, 13, 21], "slow": [20, 34, 55, 89]}


@pytest.fixture(scope="module")
def btc_small(btc_5m):
    return btc_5m.slice(0, 15_000)


def test_grid_validation_drops_invalid_combinations():
    params, bad = expand_grid("sma_cross", GRID)
    assert bad == 1 and len(params) == 19  # (21, 20): fast must be shorter than slow
    assert params[0] == {"fast": 3, "slow": 20}


def test_sweep_rows_equal_single_backtests(btc_small):
    cfg = BacktestConfig()
    sw = sweep("sma_cross", btc_small, GRID, cfg, executor="inline")
    for i in (0, 7, 18):
        res = backtest("sma_cross", btc_small, cfg, sw.params[i])
        assert dict(zip(K.STAT_NAMES, sw.stats[i])) == pytest.approx(res.stats, rel=1e-12)
    best = sw.best("sharpe")
    assert sw.column("sharpe")[best] == np.nanmax(sw.column("sharpe"))
    df = sw.frame()
    assert list(df.columns[:2]) == ["fast", "slow"] and len(df) == 19


def test_chunked_sweep_equals_unchunked(btc_small):
    a = sweep("sma_cross", btc_small, GRID, executor="inline", blocks=4)
    b = sweep("sma_cross", btc_small, GRID, executor="inline", blocks=4, chunk_size=3)
    assert b.chunks == 7 and a.chunks == 1
    np.testing.assert_array_equal(a.stats, b.stats)
    np.testing.assert_array_equal(a.blocks, b.blocks)
    g = {"window": [20, 30, 50], "k": [1.5, 2.0, 2.5]}
    a = sweep("bollinger_reversion", btc_small, g, executor="inline")
    b = sweep("bollinger_reversion", btc_small, g, executor="inline", chunk_size=2)
    np.testing.assert_array_equal(a.stats, b.stats)


def test_block_sums_add_up_to_the_whole_window(btc_small):
    sw = sweep("sma_cross", btc_small, GRID, executor="inline", blocks=6, start=1000)
    assert sw.block_edges[0] == 1000 and sw.block_edges[-1] == len(btc_small)
    assert np.all(sw.blocks[:, :, 2].sum(axis=1) == len(btc_small) - 1000)
    res = backtest("sma_cross", btc_small, BacktestConfig(), sw.params[4], start=1000)
    assert sw.blocks[4, :, 0].sum() == pytest.approx(res.returns.sum(), rel=1e-9)


def test_processes_executor_equals_inline(btc_small):
    a = sweep("sma_cross", btc_small, GRID, executor="inline")
    b = sweep("sma_cross", btc_small, GRID, executor="processes", workers=2, chunk_size=10)
    assert b.executor == "processes" and b.chunks == 2
    np.testing.assert_array_equal(a.stats, b.stats)


def test_dask_executor_equals_inline(btc_small):
    pytest.importorskip("dask", reason='dask not installed (optional: pip install "dask[distributed]")')
    a = sweep("sma_cross", btc_small, GRID, executor="inline")
    b = sweep("sma_cross", btc_small, GRID, executor="dask", workers=2, chunk_size=10)
    assert b.executor == "dask"
    np.testing.assert_array_equal(a.stats, b.stats)


def test_each_distinct_indicator_is_computed_once(btc_small):
    cache = specs.IndicatorCache()
    ctx = specs.Ctx(btc_small, BacktestConfig().kernel_args(btc_small.timeframe_ms), 0, len(btc_small),
                    np.empty(0, np.int64), cache)
    params, _ = expand_grid("sma_cross", GRID)
    for i in range(0, len(params), 4):  # five chunks
        specs.run_chunk("sma_cross", ctx, params[i:i + 4])
    assert cache.computed == 9  # fast 3, 5, 8, 13, 21 and slow 20, 34, 55, 89: one SMA each
    # a budget too small for everything evicts, and recomputes only what it has to
    small = specs.IndicatorCache(budget_bytes=2 * btc_small.close.nbytes)
    assert small.get(("sma", 3), lambda: np.zeros(len(btc_small))) is small.get(("sma", 3), lambda: None)
    assert small.computed == 1


@pytest.mark.parametrize("name,grid", [
    ("sma_cross", {"fast": [4, 9], "slow": [30, 77]}),
    ("rsi_reversion", {"period": [7, 14], "lower": [20.0, 30.0], "upper": [55.0, 70.0]}),
    ("bollinger_reversion", {"window": [10, 40], "k": [1.0, 2.2]}),
    ("zscore_reversion", {"window": [25, 60], "entry_z": [1.5, 2.5], "exit_z": [-0.5, 0.5]}),
])
def test_sweep_signals_are_the_strategies_own(btc_small, name, grid):
    ctx = specs.Ctx(btc_small, BacktestConfig().kernel_args(btc_small.timeframe_ms), 0, len(btc_small),
                    np.empty(0, np.int64), specs.IndicatorCache())
    params, _ = expand_grid(name, grid)
    for p in params:
        e, x = specs.chunk_signals(name, ctx, p)
        e0, x0, _ = make(name, p).signals(btc_small)
        np.testing.assert_array_equal(e, e0)
        np.testing.assert_array_equal(x, x0)


def test_sweep_progress_bar_runs(btc_small, capsys):
    sw = sweep("sma_cross", btc_small, GRID, executor="inline", chunk_size=5, progress=True)
    assert sw.chunks == 4
    assert "sweep sma_cross" in capsys.readouterr().err


def test_chunks_hold_a_bounded_number_of_indicator_series():
    from qts.research.sweep import plan_chunks

    params, _ = expand_grid("sma_cross", {"fast": range(2, 40), "slow": range(50, 60)})
    order = sorted(range(len(params)), key=lambda i: (params[i]["slow"], params[i]["fast"]))
    chunks = plan_chunks("sma_cross", params, order, size=10_000, max_series=45)
    assert sorted(i for ch in chunks for i in ch) == list(range(len(params)))
    for ch in chunks:
        keys = {k for i in ch for k in specs.indicator_keys("sma_cross", params[i])}
        assert len(keys) <= 45
    assert len(chunks) == 2  # 38 fast windows shared, + 7 slow ones in the first chunk, 3 in the second
    assert len(plan_chunks("sma_cross", params, order, size=10_000, max_series=39)) == 10  # one slow each
    assert len(plan_chunks("sma_cross", params, order, size=100, max_series=1000)) == 4


def test_dask_distributed_cluster_equals_inline(btc_small):
    pytest.importorskip("distributed", reason='dask.distributed not installed (optional: pip install "dask[distributed]")')
    from distributed import Client, LocalCluster

    a = sweep("sma_cross", btc_small, GRID, executor="inline")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        b = sweep("sma_cross", btc_small, GRID, executor="dask", client=client, chunk_size=5)
    assert b.chunks == 4
    np.testing.assert_array_equal(a.stats, b.stats)
