"""vectorbt as the independent referee (issue 13): our engine's fills, trades and equity, recomputed by
``vectorbt.Portfolio.from_signals``, agree within 1e-9 relative on real candles for every built-in
strategy and every sizing; a corrupted result (a nudged fill price, a removed trade, a shifted exit,
a bent equity bar) is caught with the trade or bar named; a validation run reports the referee's
verdict and FAILS when the referee finds a difference; vectorbt never loads at CLI start."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qts.research.backtest import BacktestConfig, backtest
from qts.research.referee import RefereeMismatch, RefereeUnsupported, referee, referee_sweep
from qts.strategies.library import SmaCross

pytest.importorskip("vectorbt")
pytestmark = pytest.mark.filterwarnings("ignore")

LIB = Path(__file__).resolve().parents[1] / "lib"
BUILTIN = [("sma_cross", {"fast": 12, "slow": 90}), ("rsi_reversion", {"period": 14, "lower": 25, "upper": 60}),
           ("bollinger_reversion", {"window": 40, "k": 2.5}),
           ("zscore_reversion", {"window": 100, "entry_z": 2.0, "exit_z": 0.5})]


class ConfSma(SmaCross):
    """SmaCross whose entries come as a confidence that varies from entry to entry (0.2 .. 1.0)."""

    name = "conf_sma"

    def signals(self, c):
        e, x, ind = super().signals(c)
        conf = 0.2 + 0.8 * ((np.arange(len(e)) * 7919) % 101) / 100.0
        return np.where(e, conf, 0.0), x, ind


@pytest.fixture(scope="module")
def btc(btc_5m):
    return btc_5m


@pytest.fixture(scope="module")
def sma_result(btc):
    return backtest("sma_cross", btc, BacktestConfig(), params={"fast": 12, "slow": 90})


# -- agreement ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params", BUILTIN)
@pytest.mark.parametrize("cfg", [BacktestConfig(), BacktestConfig(size_usd=1_500.0, fee_bps=7.5, slippage_bps=2)],
                         ids=["all-in", "fixed-notional"])
def test_vectorbt_agrees_on_every_builtin_strategy(btc, name, params, cfg):
    res = backtest(name, btc, cfg, params=params)
    rep = referee(btc, name, res)
    assert rep.trades == len(res.trades) > 50 and rep.bars == len(btc) > 70_000
    assert rep.max_rel_diff <= 1e-9
    # vectorbt's own statistics, computed its way, agree with ours (the report shows them side by side)
    for k in ("total_return", "cagr", "sharpe", "max_drawdown", "win_rate", "expectancy", "final_equity"):
        assert rep.stats[k] == pytest.approx(rep.ours[k], rel=1e-6), k
    assert rep.stats["n_trades"] == rep.ours["n_trades"] == len(res.trades)


def test_vectorbt_agrees_on_a_window_and_on_confidence_sizes(btc):
    strat = ConfSma(fast=10, slow=60)
    for cfg in (BacktestConfig(), BacktestConfig(size_usd=2_000.0)):
        res = backtest(strat, btc, cfg, start=20_000, stop=60_000)
        assert len({round(t.amount * t.entry_price, 6) for t in res.trades}) > 10  # sizes really vary
        rep = referee(btc, strat, res)
        assert rep.bars == 40_000 and rep.trades == len(res.trades) > 100 and rep.max_rel_diff <= 1e-9
    # and the confidence matters: referee the sized result as if the entries were full -> caught
    res = backtest(strat, btc, BacktestConfig(), start=20_000, stop=60_000)
    with pytest.raises(RefereeMismatch) as e:
        referee(btc, SmaCross(fast=10, slow=60), res)
    assert e.value.what == "trade" and e.value.trade == 0


def test_an_amount_step_is_refused_not_guessed(btc):
    res = backtest("sma_cross", btc.slice(0, 3000), BacktestConfig(size_usd=1000, amount_step=1e-5),
                   params={"fast": 12, "slow": 90})
    with pytest.raises(RefereeUnsupported, match="amount_step"):
        referee(btc.slice(0, 3000), "sma_cross", res)


# -- corruption is caught, and named --------------------------------------------------------------------

def _with_trade(res, k, **change):
    trades = list(res.trades)
    trades[k] = dataclasses.replace(trades[k], **change)
    return dataclasses.replace(res, trades=trades)


def test_a_nudged_fill_price_is_caught_with_the_trade_and_bar_named(btc, sma_result):
    k = 37
    t = sma_result.trades[k]
    bad = _with_trade(sma_result, k, entry_price=t.entry_price * (1 + 1e-8))  # 10x the tolerance
    with pytest.raises(RefereeMismatch) as e:
        referee(btc, "sma_cross", bad)
    err = e.value
    assert (err.what, err.trade, err.bar, err.ts) == ("trade", k, t.entry_bar, t.entry_ts)
    assert f"trade {k + 1}: entry price at bar {t.entry_bar}" in str(err)
    # below the tolerance it passes: the check is 1e-9 relative, not exact
    referee(btc, "sma_cross", _with_trade(sma_result, k, entry_price=t.entry_price * (1 + 1e-10)))
    # the exit side too
    bad = _with_trade(sma_result, k, exit_price=t.exit_price * (1 - 1e-6))
    with pytest.raises(RefereeMismatch) as e:
        referee(btc, "sma_cross", bad)
    assert (e.value.trade, e.value.bar) == (k, t.exit_bar)


def test_a_removed_trade_is_caught_at_its_entry(btc, sma_result):
    k = 100
    t = sma_result.trades[k]
    bad = dataclasses.replace(sma_result, trades=sma_result.trades[:k] + sma_result.trades[k + 1:])
    with pytest.raises(RefereeMismatch) as e:
        referee(btc, "sma_cross", bad)
    assert e.value.what == "trade" and e.value.trade == k and e.value.bar == t.entry_bar
    # the last trade removed: nothing to misalign, the count says it
    bad = dataclasses.replace(sma_result, trades=sma_result.trades[:-1])
    with pytest.raises(RefereeMismatch) as e:
        referee(btc, "sma_cross", bad)
    assert e.value.what == "trade count" and e.value.bar == sma_result.trades[-1].entry_bar
    assert (e.value.ours, e.value.theirs) == (len(sma_result.trades) - 1, len(sma_result.trades))


def test_a_shifted_exit_and_a_bent_equity_bar_are_caught(btc, sma_result):
    k = 5
    t = sma_result.trades[k]
    bad = _with_trade(sma_result, k, exit_bar=t.exit_bar + 1, exit_ts=int(btc.ts[t.exit_bar + 1]))
    with pytest.raises(RefereeMismatch) as e:
        referee(btc, "sma_cross", bad)
    assert (e.value.trade, e.value.bar) == (k, t.exit_bar)
    eq = sma_result.equity.copy()
    i = 54_321
    eq[i] *= 1 + 5e-9
    with pytest.raises(RefereeMismatch) as e:
        referee(btc, "sma_cross", dataclasses.replace(sma_result, equity=eq))
    assert (e.value.what, e.value.bar, e.value.ts) == ("equity", i, int(btc.ts[i]))
    assert "1 bar(s) differ" in str(e.value)


# -- in a validation run ---------------------------------------------------------------------------------

def test_a_validation_run_reports_the_referees_verdict_and_fails_on_a_mismatch(btc, monkeypatch):
    from qts.research import referee as R
    from qts.research.validation import Gates, validate_strategy

    c = btc.slice(0, 30_000)
    grid = {"fast": [8, 12, 20], "slow": [60, 90]}
    kw = dict(train=10_000, test=5_000, gates=Gates(min_trades=5), executor="inline", lookahead_points=5)
    rep = validate_strategy("sma_cross", c, grid, **kw)
    chk = [x for x in rep.verdict.checks if x.name == "referee"]
    assert len(chk) == 1 and chk[0].passed and "vectorbt agrees on the top 3 candidate(s)" in chk[0].message
    assert rep.referee.passed and len(rep.referee.reports) == 3
    # the candidates are the sweep's best by Sharpe, the selected one first
    assert rep.referee.reports[0].params == rep.best_params
    assert rep.summary()["referee"]["passed"] is True
    base_passed = all(x.passed for x in rep.verdict.checks if x.name != "referee")
    assert rep.verdict.passed == base_passed

    # turned off: no referee check at all (the sweep benchmarks' setting)
    off = validate_strategy("sma_cross", c, grid, referee=False, **kw)
    assert off.referee is None and "referee" not in [x.name for x in off.verdict.checks]

    # an engine that goes wrong on the second candidate: the verdict FAILS and says where
    B = sys.modules["qts.research.backtest"]  # referee_sweep imports backtest when it runs: patch it at its source

    orig = B.backtest
    calls = []

    def broken(*a, **k):
        res = orig(*a, **k)
        calls.append(1)
        if len(calls) == 2:
            t = res.trades[3]
            res.trades[3] = dataclasses.replace(t, exit_price=t.exit_price * 1.001)
        return res

    monkeypatch.setattr(B, "backtest", broken)
    bad = R.referee_sweep("sma_cross", c, rep.sweep, BacktestConfig(), objective="sharpe", min_trades=5)
    assert not bad.passed and bad.mismatch.trade == 3 and "trade 4: exit price" in bad.message
    assert len(bad.reports) == 1 and bad.to_dict()["mismatch"]["bar"] == bad.mismatch.bar
    monkeypatch.undo()

    # and through validate_strategy: a corrupted sweep row (the sweep kernel's figure) fails the gate
    def corrupt_sweep(*a, **k):
        sw = real_sweep(*a, **k)
        sw.stats[:, 0] *= 1 + 1e-6  # final_equity of every row
        return sw

    V = sys.modules["qts.research.validation"]
    real_sweep = V.sweep
    monkeypatch.setattr(V, "sweep", corrupt_sweep)
    failed = validate_strategy("sma_cross", c, grid, **kw)
    chk = [x for x in failed.verdict.checks if x.name == "referee"][0]
    assert not chk.passed and not failed.verdict.passed
    assert "referee mismatch" in chk.message and "sweep's final equity" in chk.message
    assert any("referee mismatch" in r for r in failed.verdict.reasons)


def test_referee_sweep_on_a_window(btc):
    from qts.research.sweep import sweep

    sw = sweep("rsi_reversion", btc, {"period": [7, 14], "lower": [25, 30], "upper": [60]}, BacktestConfig(),
               start=10_000, stop=40_000, executor="inline", progress=False)
    v = referee_sweep("rsi_reversion", btc, sw, BacktestConfig(), top=2)
    assert v.passed and [r.bars for r in v.reports] == [30_000, 30_000]


# -- vectorbt stays off the CLI's start and the hooks' path ---------------------------------------------

def test_vectorbt_is_not_imported_at_cli_start_nor_by_backtest_help():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import qts.cli; from click.testing import CliRunner; "
            "r = CliRunner().invoke(qts.cli.cli, ['backtest', '--help']); assert r.exit_code == 0, r.output; "
            "assert 'Vectorized backtest' in r.output; "
            "print(sorted(m for m in ('vectorbt', 'pandas', 'numba', 'sklearn') if m in sys.modules)); "
            "import qts.research.referee, qts.research.validation; "  # light: vectorbt loads when the referee runs
            "print(sorted(m for m in ('vectorbt', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(LIB)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "[]"]
    # the negative control: running the referee does load it (so the check above can see it)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from qts.research.referee import portfolio; "
            "from qts.market.candles import Candles; from qts.research.backtest import BacktestConfig; "
            "c = Candles.from_rows([(i * 300000, 1.0 + i % 7, 9.0, 0.5, 1.0 + i % 5, 1.0) for i in range(200)], "
            "300000); "
            "portfolio(c, 'sma_cross', {'fast': 3, 'slow': 8}, BacktestConfig(), 0, 200); "
            "import os; print('vectorbt' in sys.modules, 'sklearn' in sys.modules, "
            "sorted(k for k in os.environ if k.startswith('KMP_')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMP_")}
    out = subprocess.run([sys.executable, "-c", code, str(LIB)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    # vectorbt loaded (scikit-learn with it, which sets KMP_* on import): the environment is left as it was
    assert out.stdout.strip().splitlines()[-1] == "True True []"


# -- the backtest report: vectorbt's statistics beside ours, in a real headless Chromium -------------------

@pytest.fixture(scope="module")
def backtest_report(ohlcv_dir, tmp_path_factory):
    import json

    from click.testing import CliRunner

    from conftest import CONFIG_VARS
    from qts.cli import cli

    tmp = tmp_path_factory.mktemp("bt-report")
    out = tmp / "backtest.html"
    r = CliRunner().invoke(cli, ["--home", str(tmp / "home"), "backtest", "sma_cross", "--data", str(ohlcv_dir),
                                 "--timeframe", "1h", "--param", "fast=12", "--param", "slow=90",
                                 "--report", str(out), "--json"], env={k: None for k in CONFIG_VARS})
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _pct(v):
    return f"{100 * v:+,.2f}%"


def test_backtest_report_in_headless_chromium(backtest_report, tmp_path):
    from test_report_html import Browser, _find_chromium, pixel_stats

    exe = _find_chromium()
    if not exe:
        pytest.skip("headless Chromium not found (/usr/bin/chromium): install Debian's `chromium` package")
    d = backtest_report
    ref, m = d["referee"], d["metrics"]
    assert ref["agrees"] is True and ref["trades"] == m["n_trades"] + m["open_trade"] > 20
    b = Browser(exe, tmp_path / "chromium-profile")
    try:
        b.open(Path(d["report"]["html"]).as_uri())
        assert b.problems() == []
        assert [u for u in b.requests() if not u.startswith(("file://", "data:"))] == []  # offline: nothing fetched
        kpi = b.evaluate("Object.fromEntries([...document.querySelectorAll('#summary .kpi div')]"
                         ".map(e => [e.querySelector('span').textContent, e.querySelector('b').textContent]))")
        assert kpi["CAGR"] == _pct(m["cagr"]) and kpi["expectancy"] == f"{m['expectancy']:+,.2f}"
        assert kpi["trades"] == str(m["n_trades"])
        rows = b.evaluate("Object.fromEntries([...document.querySelectorAll('#referee tr[data-stat]')]"
                          ".map(r => [r.dataset.stat, [r.querySelector('.ours').textContent,"
                          " r.querySelector('.vbt').textContent]]))")
        v = ref["vectorbt"]
        want = {"total_return": _pct(v["total_return"]), "cagr": _pct(v["cagr"]), "sharpe": f"{v['sharpe']:,.2f}",
                "max_drawdown": f"{100 * v['max_drawdown']:,.2f}%", "win_rate": f"{100 * v['win_rate']:,.1f}%",
                "expectancy": f"{v['expectancy']:+,.2f}", "n_trades": str(v["n_trades"]),
                "final_equity": f"{v['final_equity']:,.2f}"}
        assert {k: x[1] for k, x in rows.items()} == want
        assert rows["cagr"][0] == kpi["CAGR"] and rows["expectancy"][0] == kpi["expectancy"]
        assert "AGREES" in b.evaluate("document.querySelector('#referee').textContent")
        var, colours, (w, h) = pixel_stats(b.screenshot())
        assert w == 1280 and var > 200 and colours > 20
    finally:
        b.close()


def test_a_report_of_a_mismatch_says_so_in_red(btc, sma_result, tmp_path):
    from qts.reports.backtest_report import write_backtest_report
    from qts.research.referee import report_check

    c = btc
    bad = dataclasses.replace(sma_result, trades=sma_result.trades[:-1])
    ref = report_check(c, "sma_cross", bad)
    assert ref["agrees"] is False and ref["what"] == "trade count"
    html = write_backtest_report(sma_result, tmp_path / "r.html", referee=ref)["html"].read_text()
    assert '<span class="fail">MISMATCH</span>' in html and "trade count: ours" in html
    assert "data-stat" not in html  # no side-by-side figures from a run that disagrees


def test_backtest_report_exits_1_when_the_referee_disagrees(ohlcv_dir, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from conftest import CONFIG_VARS
    from qts.cli import cli

    R = sys.modules["qts.research.referee"]
    real = R.referee

    def drop_last_trade(candles, strategy, result, *a, **k):  # our engine "loses" its last trade
        return real(candles, strategy, dataclasses.replace(result, trades=result.trades[:-1]), *a, **k)

    monkeypatch.setattr(R, "referee", drop_last_trade)
    out = tmp_path / "bt.html"
    r = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "backtest", "sma_cross", "--data", str(ohlcv_dir),
                                 "--timeframe", "1h", "--param", "fast=12", "--param", "slow=90",
                                 "--report", str(out), "--json"], env={k: None for k in CONFIG_VARS})
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    assert d["referee"]["agrees"] is False and d["referee"]["what"] == "trade count"
    assert "Error: referee mismatch" in r.stderr and "trade count" in r.stderr
    assert "MISMATCH" in out.read_text()  # the report is written, and says it


def test_the_install_warmup_runs_the_referee():
    from qts.research.warmup import warm_up_referee

    assert warm_up_referee() >= 0.0  # raises if the referee disagrees on the tiny generated market
