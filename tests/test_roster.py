"""The trader runs what research promoted (issue #12): the registry's paper/live entries, each on its own
symbol with its pinned parameters (exit rules included), instead of the single STRATEGY; an entry whose code
changed since registration is refused; the environment's STRATEGY runs only when the registry has none."""

from __future__ import annotations

import json
import threading
import time

import pytest

from qts.config import load_settings
from qts.engine.session import SessionError, make_feed, open_session
from qts.registry import Registry, promote
from qts.registry.models import DataInfo, Expected, ValidationSummary
from test_registry import key, live_ramp_entry  # noqa: F401  (the PIN key fixture, a PIN-promoted entry)

EXPECTED = Expected(sharpe=1.2, expectancy_pct=0.5, trade_return_std_pct=2.0, max_drawdown_pct=10.0, win_rate=0.55,
                    trades_per_day=1.0, n_trades=40)


def register(home, strategy, params, symbol, tf=5):
    from qts.store import Store

    now = int(time.time() * 1000)
    v = ValidationSummary(passed=True, summary="PASS", strict_gates=True,
                          data=DataInfo(symbol=symbol, synthetic=False, bars=1000), validated_ts=now)
    e = Registry.load(home).add(strategy=strategy, params=params, symbol=symbol, timeframe_minutes=tf,
                                validation=v, expected=EXPECTED, now=now - 1000)
    store = Store.open(home)
    try:
        return promote(home, e.id, "paper", store=store, now=now)
    finally:
        store.close()


@pytest.fixture
def settings(tmp_path):
    s = load_settings(environ={}, home=tmp_path / "home")  # SYMBOLS: BTC, ETH, SOL; STRATEGY sma_cross
    s.home.ensure()
    return s


def run_half_day(settings, ohlcv_dir):
    feed = make_feed(settings, "replay", ohlcv_dir, days=0.5)
    s = open_session(settings, feed)
    try:
        s.loop.run(threading.Event())
        rows = s.store.query("SELECT symbol, strategy, inputs FROM decisions")
        events = s.store.query("SELECT message, data FROM events WHERE kind='roster'")
    finally:
        s.close()
    return feed, s, rows, events


def test_registry_strategies_run_on_their_own_symbols_with_pinned_parameters(settings, ohlcv_dir):
    a = register(settings.home, "sma_cross", {"fast": 7, "slow": 30, "take_profit_bps": 40}, "BTC/USDT")
    b = register(settings.home, "rsi_reversion", {}, "ETH/USDT")
    assert a.params == {"fast": 7, "slow": 30, "take_profit_bps": 40.0}  # the exit rule is pinned too
    feed, s, rows, events = run_half_day(settings, ohlcv_dir)
    assert set(feed.symbols) == {"BTC/USDT", "ETH/USDT"}  # SOL/USDT (env SYMBOLS) is not followed
    assert s.loop.strategies["BTC/USDT"].exits.take_profit_bps == 40
    seen = {(r["symbol"], r["strategy"], json.dumps(json.loads(r["inputs"])["params"], sort_keys=True))
            for r in rows}
    from qts.strategies import make

    rsi = make("rsi_reversion").params.model_dump()
    assert {(sym, name) for sym, name, _ in seen} == {("BTC/USDT", "sma_cross"), ("ETH/USDT", "rsi_reversion")}
    for sym, name, params in seen:
        assert json.loads(params) == ({"fast": 7, "slow": 30} if name == "sma_cross" else rsi)
    (ev,) = events
    assert a.id in ev["message"] and b.id in ev["message"] and json.loads(ev["data"])["source"] == "registry"


def test_changed_code_is_refused(settings, ohlcv_dir, monkeypatch):
    import qts.strategies

    real = qts.strategies.resolve_hashed
    monkeypatch.setattr(qts.strategies, "resolve_hashed",  # registered under older code
                        lambda name, home=None: (real(name, home)[0], "0" * 64))
    old = register(settings.home, "sma_cross", {"fast": 7, "slow": 30}, "BTC/USDT")
    monkeypatch.setattr(qts.strategies, "resolve_hashed", real)
    feed = make_feed(settings, "replay", ohlcv_dir, days=0.5)
    with pytest.raises(SessionError) as e:
        open_session(settings, feed)
    assert old.id in str(e.value) and "code of sma_cross changed since it was registered" in str(e.value)
    # another entry with matching code runs; the stale one is named as not run
    ok = register(settings.home, "rsi_reversion", {}, "ETH/USDT")
    feed, s, rows, events = run_half_day(settings, ohlcv_dir)
    assert {r["symbol"] for r in rows} == {"ETH/USDT"} and {r["strategy"] for r in rows} == {"rsi_reversion"}
    data = json.loads(events[-1]["data"])
    assert data["entries"] == {"ETH/USDT": ok.id} and old.id in data["refused"][0]
    assert "not run: " + old.id in events[-1]["message"]


def test_no_registry_runs_the_configured_strategy_everywhere(settings, ohlcv_dir):
    feed, s, rows, events = run_half_day(settings, ohlcv_dir)
    assert feed.symbols == settings.SYMBOLS
    assert {(r["symbol"], r["strategy"]) for r in rows} == {(x, "sma_cross") for x in settings.SYMBOLS}
    assert events == []


def test_other_timeframe_is_refused(settings, ohlcv_dir):
    e = register(settings.home, "sma_cross", {"fast": 7, "slow": 30}, "BTC/USDT", tf=60)
    with pytest.raises(SessionError, match=f"{e.id}: validated at 60m, the loop runs TRADE_INTERVAL=5"):
        open_session(settings, make_feed(settings, "replay", ohlcv_dir, days=0.5))


def test_run_says_what_it_runs(settings, ohlcv_dir):
    from click.testing import CliRunner

    from conftest import CONFIG_VARS
    from qts.cli import cli

    e = register(settings.home, "sma_cross", {"fast": 7, "slow": 30}, "BTC/USDT")
    r = CliRunner().invoke(cli, ["--home", str(settings.home.root), "run", "--data", str(ohlcv_dir), "--days", "0.1",
                                 "--quiet"], env={k: None for k in CONFIG_VARS})
    assert r.exit_code == 0, r.output
    assert f"running the registry's strategies: BTC/USDT: {e.id}" in r.output


def test_live_loop_runs_the_live_entries_on_the_agents_symbols(home, store, key):
    """The trading agent's loop (agent/service.py _run_loop): a live-ramp entry (PIN-promoted, real registry)
    runs on its symbol with its pinned parameters; the agent's other symbols keep STRATEGY; a paper entry is
    not a live strategy."""
    from qts.engine.roster import live_strategies

    settings = load_settings(environ={"TRADE_INTERVAL": "60", "STRATEGY": "rsi_reversion"}, home=home.root)
    e = live_ramp_entry(home, store, key)
    strategies, notes = live_strategies(settings, ("BTC/USDT", "ETH/USDT"))
    assert (strategies["BTC/USDT"].name, strategies["BTC/USDT"].params.model_dump()) == ("sma_cross", e.params)
    assert strategies["ETH/USDT"].name == "rsi_reversion" and notes == []
    # the entry's symbol outside the agent's SYMBOLS: not run, and said so
    strategies, notes = live_strategies(settings, ("ETH/USDT",))
    assert set(strategies) == {"ETH/USDT"} and notes == [f"not run: {e.id}: BTC/USDT is not one of the agent's SYMBOLS"]
