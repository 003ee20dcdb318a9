"""Shared fixtures for the foundation tests.

Real market data is NOT in this repository: it lives in the shared data folder, located through
``QTS_SHARED_DATA`` (default ``<repo>/../shared/data``). Tests that need it skip with a reason when
it is absent. Nothing here talks to the network.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("QTS_SHARED_DATA") or (REPO.parent / "shared" / "data")).expanduser()
OHLCV_DIR = SHARED_DATA / "ohlcv"
CCXT_STATIC = SHARED_DATA / "ccxt-static"

# Settings the library reads from the environment: cleared for every test so a developer's shell
# (or a .env of theirs) cannot change what a test sees.
CONFIG_VARS = ("EXCHANGE", "EXCHANGE_URL", "EXCHANGE_API_KEY", "EXCHANGE_SECRET", "PAPER_TRADING", "TRADE_INTERVAL",
               "MAX_POSITION_SIZE", "RISK_LIMIT_PERCENT", "SYMBOLS", "STRATEGY", "INITIAL_CASH", "FEE_BPS",
               "SLIPPAGE_BPS", "QTS_HOME", "CLAUDE_PROJECT_DIR", "EXCHANGE_SANDBOX", "CANDLE_MAX_JUMP",
               "CANDLE_MAX_QUOTE_VOLUME", "QTS_STRATEGY_PATH")

# Module- and session-scoped fixtures run before the per-test folders below exist: give the whole session
# its own user folders too, so nothing (the per-user anchor included) ever lands in the real ~/.local/state.
_SESSION_USER = Path(tempfile.mkdtemp(prefix="qts-test-user-"))
for _var, _sub in (("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state"), ("XDG_RUNTIME_DIR", "run")):
    os.environ[_var] = str(_SESSION_USER / _sub)

TF_5M = 300_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, on every candle grid


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path_factory):
    for k in CONFIG_VARS:
        monkeypatch.delenv(k, raising=False)
    # the key store, the agent's state and its socket live in the user's folders (qts.agent.paths):
    # each test gets its own, so nothing reaches (or reads) the developer's real ~/.config
    user = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(user / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(user / "run"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared market data not found at {path} (set QTS_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def ohlcv_dir() -> Path:
    return _need(OHLCV_DIR)


@pytest.fixture(scope="session")
def ccxt_static() -> Path:
    return _need(CCXT_STATIC)


@pytest.fixture(scope="session")
def btc_5m(ohlcv_dir):
    from qts.market.candles import load_csv

    return load_csv(_need(ohlcv_dir / "BTC_USDT-5m.csv"))


@pytest.fixture(scope="session")
def btc_1h(ohlcv_dir):
    from qts.market.candles import load_csv

    return load_csv(_need(ohlcv_dir / "BTC_USDT-1h.csv"))


@pytest.fixture
def home(tmp_path):
    from qts.paths import StateHome

    return StateHome(tmp_path / "home").ensure()


@pytest.fixture
def store(home):
    from qts.store import Store

    s = Store.open(home)
    yield s
    s.close()


def make_candles(rows, timeframe_ms: int = TF_5M, t0: int = T0):
    """Candles from (open, high, low, close, volume) tuples, one per consecutive candle from t0."""
    from qts.market.candles import Candles

    return Candles.from_rows([(t0 + i * timeframe_ms, *r) for i, r in enumerate(rows)], timeframe_ms)


@pytest.fixture
def qts_exe() -> list[str]:
    """The CLI as a real process (the installed entry point; the module form as a fallback)."""
    exe = Path(sys.executable).parent / "qts"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "qts.cli"]


@pytest.fixture
def proc_env(tmp_path) -> dict:
    """Environment for subprocesses: no inherited settings, no network proxies needed."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def read_csv_rows(path: Path) -> np.ndarray:
    """Independent reader of a candle CSV (numpy, not the library's loader)."""
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
