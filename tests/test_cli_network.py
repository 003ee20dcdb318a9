"""Network failures from the CLI: one line naming the exchange, the endpoint and "offline?", exit 1; a live-data
loop that cannot reach the exchange stops cleanly or, with --or-generated, says it falls back to the generated
market. Only loopback addresses: a closed local port and the loopback exchange made to fail."""

from __future__ import annotations

import json
import socket
import sqlite3

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli
from support.loopback_exchange import LoopbackBinance

NO_ENV = {k: None for k in CONFIG_VARS}


def invoke(args, **env):
    return CliRunner().invoke(cli, args, env={**NO_ENV, **env})


@pytest.fixture
def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: a connection is refused at once
    return port


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def _one_error_line(r) -> str:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


@pytest.mark.parametrize("args,endpoint", [
    (["market", "ticker", "BTC/USDT"], "/api/v3/"),
    (["market", "markets"], "/api/v3/exchangeInfo"),
    (["market", "orderbook", "BTC/USDT"], "/api/v3/"),
    (["market", "ohlcv", "BTC/USDT"], "/api/v3/"),
])
def test_market_commands_offline_are_one_line(home, closed_port, args, endpoint):
    r = invoke(["--home", str(home), *args], EXCHANGE_URL=f"http://127.0.0.1:{closed_port}")
    line = _one_error_line(r)
    assert line.startswith("Error: binance: cannot reach GET ")
    assert f"http://127.0.0.1:{closed_port}{endpoint}" in line
    assert "offline?" in line and "refused" in line


def test_the_exchange_is_named_whichever_it_is(home, closed_port):
    r = invoke(["--home", str(home), "market", "markets"], EXCHANGE="kraken", EXCHANGE_URL=f"http://127.0.0.1:{closed_port}")
    assert _one_error_line(r).startswith("Error: kraken: cannot reach GET http://127.0.0.1:")


def test_an_exchange_answering_5xx_says_it_is_unavailable(home):
    with LoopbackBinance(idle_timeout=30) as srv:
        ok = invoke(["--home", str(home), "market", "ticker", "BTC/USDT"], EXCHANGE_URL=srv.base_url)
        assert ok.exit_code == 0, ok.output  # EXCHANGE_URL is honoured for public data
        assert json.loads(ok.output)["symbol"] == "BTC/USDT"
        srv.faults.add("5xx", path="/api/v3/ticker/24hr", times=None)
        r = invoke(["--home", str(home), "market", "ticker", "BTC/USDT"], EXCHANGE_URL=srv.base_url)
    line = _one_error_line(r)
    assert "binance: cannot reach GET " in line and "/api/v3/ticker/24hr" in line and "unavailable" in line


def test_live_data_loop_offline_stops_with_one_line_and_opens_nothing(home, closed_port):
    r = invoke(["--home", str(home), "run", "--live-data", "--cycles", "1"], EXCHANGE_URL=f"http://127.0.0.1:{closed_port}")
    line = _one_error_line(r)
    assert "binance: cannot reach" in line and "offline?" in line and "`qts run`" in line
    # nothing was opened or archived, and no status file says "crashed"
    assert not (home / "db" / "metrics.db").exists()
    assert not (home / "run" / "loop.status.json").exists()


@pytest.mark.parametrize("cmd", [["once"], ["run", "--cycles", "2"]])
def test_live_data_with_or_generated_falls_back_and_says_so(home, closed_port, cmd):
    r = invoke(["--home", str(home), *cmd, "--live-data", "--or-generated"], EXCHANGE_URL=f"http://127.0.0.1:{closed_port}")
    assert r.exit_code == 0, r.output
    assert "cannot reach" in r.output and "falling back to the generated market" in r.output
    assert "SYNTHETIC" in r.output
    with sqlite3.connect(home / "db" / "metrics.db") as conn:
        sources = {json.loads(x)["source"] for (x,) in conn.execute("SELECT inputs FROM decisions")}
    assert sources and all(s.startswith("synthetic") for s in sources)


def test_or_generated_needs_live_data(home):
    r = invoke(["--home", str(home), "once", "--or-generated"])
    assert r.exit_code == 2 and "--or-generated goes with --live-data" in r.output


def test_an_error_answer_is_one_line_too(home):
    with LoopbackBinance(idle_timeout=30) as srv:
        r = invoke(["--home", str(home), "market", "ohlcv", "DOGE/USDT"], EXCHANGE_URL=srv.base_url)
    line = _one_error_line(r)
    assert line.startswith("Error: binance: ") and "DOGE/USDT" in line
