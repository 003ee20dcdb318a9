"""Issue #12: a user adds strategies as files in <home>/strategies/NAME.py. They backtest, sweep, register, run
in paper through the registry, and reach the trading agent only through a registry entry that pinned their
code; an edited file is refused like an edited built-in; a broken file or a built-in's name is a clear error."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli
from qts.config import load_settings
from test_roster import register

SOURCE = textwrap.dedent('''
    """A user strategy: close above the prior window's highest close."""
    import numpy as np
    from pydantic import BaseModel, ConfigDict, Field

    from qts.strategies import Strategy


    class MyBreakout(Strategy):
        """Breakout: enter above the prior window's high close, exit below the prior exit_window's low close."""

        name = "my_breakout"

        class Params(BaseModel):
            model_config = ConfigDict(extra="forbid", frozen=True)
            window: int = Field(20, ge=2, le=500)
            exit_window: int = Field(10, ge=2, le=500)

        @property
        def lookback(self):
            return max(self.params.window, self.params.exit_window) + 1

        def signals(self, c):
            close = np.asarray(c.close, dtype=float)
            hi = np.full(len(close), np.nan)
            lo = np.full(len(close), np.nan)
            for i in range(len(close)):
                if i >= self.params.window:
                    hi[i] = close[i - self.params.window:i].max()
                if i >= self.params.exit_window:
                    lo[i] = close[i - self.params.exit_window:i].min()
            with np.errstate(invalid="ignore"):
                return close > hi, close < lo, {"high": hi, "low": lo}
''')


@pytest.fixture
def home(tmp_path):
    from qts.paths import StateHome

    h = StateHome(tmp_path / "home").ensure()
    (h.root / "strategies").mkdir()
    (h.root / "strategies" / "my_breakout.py").write_text(SOURCE)
    return h


def qts(home, *args, env=None):
    return CliRunner().invoke(cli, ["--home", str(home.root), *args], env={**{k: None for k in CONFIG_VARS}, **(env or {})})


def test_list_shows_builtins_and_the_user_file_with_parameters(home):
    r = qts(home, "strategies", "list", "--json")
    assert r.exit_code == 0, r.output
    cat = json.loads(r.output)
    rows = {s["name"]: s for s in cat["strategies"]}
    assert rows["sma_cross"]["source"] == "built-in"
    mine = rows["my_breakout"]
    assert mine["source"] == str(home.root / "strategies" / "my_breakout.py")
    assert [(p["name"], p["default"], p["bounds"]) for p in mine["params"]] == [
        ("window", 20, {"ge": 2, "le": 500}), ("exit_window", 10, {"ge": 2, "le": 500})]
    assert cat["refused"] == []


def test_user_strategy_backtests_sweeps_and_validates_its_params(home):
    r = qts(home, "backtest", "my_breakout", "--synthetic", "--days", "5", "--param", "window=30", "--json")
    assert r.exit_code == 0, r.output
    assert "my_breakout" in r.output and '"window": 30' in r.output
    r = qts(home, "backtest", "my_breakout", "--synthetic", "--days", "5", "--grid", "window=20:40:10")
    assert r.exit_code == 0, r.output
    assert all(f"window={w}" in r.output for w in (20, 30, 40))
    r = qts(home, "backtest", "my_breakout", "--synthetic", "--days", "5", "--param", "window=1")
    assert r.exit_code == 2 and "my_breakout.window" in r.output


def test_registered_user_strategy_runs_in_paper_then_an_edit_is_refused(home):
    from qts.engine.roster import load_roster
    from qts.strategies import code_hash

    e = register(home, "my_breakout", {"window": 25}, "BTC/USDT")
    assert e.stage == "paper" and e.code_sha256 == code_hash("my_breakout", home)
    r = qts(home, "once", "--json")
    assert r.exit_code == 0, r.output
    from qts.store import Store

    store = Store.open(home)
    try:
        rows = store.query("SELECT symbol, strategy, inputs FROM decisions")
    finally:
        store.close()
    assert {(x["symbol"], x["strategy"]) for x in rows} == {("BTC/USDT", "my_breakout")}
    assert json.loads(rows[0]["inputs"])["params"] == {"window": 25, "exit_window": 10}

    # the user edits the file (one constant): the roster refuses the entry until it is re-validated
    f = home.root / "strategies" / "my_breakout.py"
    f.write_text(SOURCE.replace("Field(10, ge=2", "Field(12, ge=2"))
    settings = load_settings(environ={}, home=home.root)
    with pytest.raises(Exception) as err:
        load_roster(settings)
    assert f"{e.id}: the code of my_breakout changed since it was registered" in str(err.value)
    r = qts(home, "once")
    assert r.exit_code != 0 and "changed since it was registered" in r.output
    # restoring the exact bytes restores the pinned hash
    f.write_text(SOURCE)
    assert load_roster(settings).entries == {"BTC/USDT": e.id}


def test_broken_file_is_named_with_its_error_and_builtins_keep_working(home):
    bad = home.root / "strategies" / "broken_one.py"
    bad.write_text("import numpy\nraise RuntimeError('no data for you')\n")
    (home.root / "strategies" / "half.py").write_text("def f(:\n")
    r = qts(home, "backtest", "broken_one", "--synthetic", "--days", "1")
    assert r.exit_code == 2
    assert f"{bad}: failed to import: RuntimeError: no data for you" in r.output and "Traceback" not in r.output
    r = qts(home, "strategies", "list")
    assert r.exit_code == 0 and "Traceback" not in r.output
    assert f"refused: {bad}: failed to import: RuntimeError: no data for you" in r.output
    assert f"refused: {home.root / 'strategies' / 'half.py'}: failed to import (line 1): SyntaxError" in r.output
    assert "my_breakout" in r.output and "sma_cross" in r.output
    r = qts(home, "backtest", "sma_cross", "--synthetic", "--days", "1")
    assert r.exit_code == 0, r.output


def test_a_builtin_name_is_refused_and_the_builtin_runs(home, tmp_path):
    marker = tmp_path / "imported"
    (home.root / "strategies" / "sma_cross.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n" + SOURCE.replace('"my_breakout"', '"sma_cross"'))
    r = qts(home, "strategies", "list")
    assert f"refused: {home.root / 'strategies' / 'sma_cross.py'}: strategy: 'sma_cross' is a built-in" in r.output
    assert not marker.exists()  # refused without being imported
    from qts.strategies import make

    assert type(make("sma_cross", home=home)).__module__ == "qts.strategies.library"
    r = qts(home, "backtest", "sma_cross", "--synthetic", "--days", "1")
    assert r.exit_code == 0 and not marker.exists()


def test_file_must_define_the_strategy_it_is_named_after(home):
    (home.root / "strategies" / "other_name.py").write_text(SOURCE)
    r = qts(home, "backtest", "other_name", "--synthetic", "--days", "1")
    assert r.exit_code == 2 and "needs exactly one Strategy subclass with name = 'other_name'" in r.output


def test_config_accepts_a_user_strategy_by_file_without_importing_it(home, tmp_path):
    marker = tmp_path / "imported"
    (home.root / "strategies" / "noisy.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    s = load_settings(environ={"STRATEGY": "noisy"}, home=home.root)
    assert s.STRATEGY == "noisy" and not marker.exists()
    from qts.config import ConfigError

    with pytest.raises(ConfigError, match="STRATEGY: unknown 'nope'.*strategies/nope.py"):
        load_settings(environ={"STRATEGY": "nope"}, home=home.root)


def test_the_agent_runs_a_user_strategy_only_through_a_pinned_registry_entry(home):
    """The trading agent's live loop (engine/roster.live_strategies): STRATEGY=my_breakout, with no registry
    entry pinning its code, is not run on the agent's symbols (a built-in STRATEGY would be)."""
    from qts.engine.roster import live_strategies

    s = load_settings(environ={"STRATEGY": "my_breakout"}, home=home.root)
    strategies, notes = live_strategies(s, ("BTC/USDT",))
    assert strategies == {}
    assert notes == ["not run: BTC/USDT: strategy: 'my_breakout' is a user strategy; it runs here only through a "
                     "registry entry that pinned its code"]
    s = load_settings(environ={"STRATEGY": "rsi_reversion"}, home=home.root)
    assert live_strategies(s, ("BTC/USDT",))[0]["BTC/USDT"].name == "rsi_reversion"


def test_the_hooks_never_reach_a_user_strategy_file():
    """Code a user drops in never runs on the hooks' path: no module the hooks import, even lazily and
    transitively, imports qts.strategies (nor qts.config, whose STRATEGY check only looks for the file)."""
    from test_architecture import import_graph, modules

    graph = import_graph(modules())
    hooks = [m for m in graph if m == "qts.hooks" or m.startswith("qts.hooks.")]
    assert hooks
    seen, todo = set(), list(hooks)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(graph.get(m, {}))
    assert "qts.strategies.user" in graph and "qts.safety.pin" in seen  # the walk follows the hooks' lazy imports
    assert not {"qts.strategies", "qts.strategies.user", "qts.config"} & seen, sorted(seen)


def test_a_registered_user_file_that_breaks_is_refused_and_the_builtin_entries_run(home):
    from qts.engine.roster import load_roster

    mine = register(home, "my_breakout", {}, "BTC/USDT")
    builtin = register(home, "rsi_reversion", {}, "ETH/USDT")
    path = home.root / "strategies" / "my_breakout.py"
    path.write_text(SOURCE + "\nraise ImportError('numpy too old')\n")
    roster = load_roster(load_settings(environ={}, home=home.root))
    assert roster.entries == {"ETH/USDT": builtin.id}
    assert roster.refused == [f"{mine.id}: {path}: failed to import: ImportError: numpy too old"]
