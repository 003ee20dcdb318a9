"""GET /liquidity on the monitor (issue #12): the numbers and verdict of `qts market liquidity`, behind the
monitor's bearer token, read by the real ccxt client from the loopback exchange over real HTTP."""

from __future__ import annotations

import http.client
import json
import socket

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli
from support.loopback_exchange import LoopbackBinance

TOKEN = "monitor-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for k in ("QTS_MONITOR_TOKEN", "QTS_MONITOR_PORT", "QTS_MONITOR_HOST", "QTS_MONITOR_ALLOW_REMOTE"):
        monkeypatch.delenv(k, raising=False)


def get(srv, path, token=TOKEN):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def cli_report(home, url, *args):
    env = {**{k: None for k in CONFIG_VARS}, "EXCHANGE": "binance", "EXCHANGE_URL": url}
    r = CliRunner().invoke(cli, ["--home", str(home.root), "market", "liquidity", *args, "--json"], env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


@pytest.fixture
def exchange(monkeypatch):
    with LoopbackBinance(idle_timeout=60, book_qty="0.5") as srv:
        monkeypatch.setenv("EXCHANGE", "binance")
        monkeypatch.setenv("EXCHANGE_URL", srv.base_url)
        yield srv


@pytest.fixture
def monitor(home):
    from qts.monitor import start_monitor

    started = []

    def start(**kw):
        srv = start_monitor(home, port=0, environ={}, **kw)
        started.append(srv)
        return srv

    yield start
    for s in started:
        s.stop()


def test_same_numbers_and_verdict_as_the_command(home, exchange, monitor):
    srv = monitor(token=TOKEN)
    code, body = get(srv, "/liquidity?symbol=btc/usdt")
    assert code == 200, body
    assert body == cli_report(home, exchange.base_url, "BTC/USDT")
    assert body["allowed"] is True and body["quote_volume_24h"] == pytest.approx(50_000_000, rel=1e-6)
    # a thin market and an order bigger than the book allows: refused, each limit named, as the command says
    exchange.market_quote_volume_24h = "250000"
    code, body = get(srv, "/liquidity?symbol=BTC/USDT&amount=6")
    assert code == 200
    assert body == cli_report(home, exchange.base_url, "BTC/USDT", "--amount", "6")
    assert body["allowed"] is False and len(body["problems"]) == 2
    assert "min_quote_volume_24h" in body["problems"][0] and "max_depth_fraction" in body["problems"][1]


def test_token_and_fields(home, exchange, monitor):
    srv = monitor(token=TOKEN)
    assert get(srv, "/liquidity?symbol=BTC/USDT", token=None)[0] == 401
    assert get(srv, "/liquidity?symbol=BTC/USDT", token="wrong-token-0123456789abc")[0] == 401
    code, body = get(srv, "/liquidity")
    assert code == 400 and body["error"].startswith("symbol:")
    code, body = get(srv, "/liquidity?symbol=BTC/USDT&amount=abc")
    assert code == 400 and body["error"].startswith("amount:")
    code, body = get(srv, "/liquidity?symbol=BTC/USDT&amount=-1")
    assert code == 400 and body["error"].startswith("amount:")
    no_token = monitor()
    code, body = get(no_token, "/liquidity?symbol=BTC/USDT")
    assert code == 403 and "QTS_MONITOR_TOKEN" in body["error"]
    assert get(srv, "/")[1]["routes"].count("GET /liquidity") == 1


def test_unreachable_exchange_is_502_never_allowed(home, monitor, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("EXCHANGE_URL", f"http://127.0.0.1:{port}")
    srv = monitor(token=TOKEN)
    code, body = get(srv, "/liquidity?symbol=BTC/USDT")
    assert code == 502 and body["allowed"] is False and "cannot read liquidity of BTC/USDT" in body["error"]
