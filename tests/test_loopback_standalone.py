"""The loopback exchange as its own process (``python tests/support/loopback_exchange.py``), its state
file (kill -9 and restart), its control endpoints, and the library's EXCHANGE_URL rewriting
(``qts.market.exchange_url``). Everything offline, on 127.0.0.1 only, through the REAL ccxt clients.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import ccxt
import pytest

from qts.market.exchange_url import apply_exchange_url, is_loopback_host, validate_exchange_url
from support.loopback_exchange import (LoopbackBinance, RemoteLoopback, make_ccxt_client, start_standalone,
                                       stop_standalone)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "support" / "loopback_exchange.py"
D = Decimal


@pytest.fixture
def procs():
    """Every standalone process a test starts is stopped (SIGTERM, then SIGKILL) at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        stop_standalone(p, timeout=5)


def _start(procs, state=None, **kw):
    kw.setdefault("idle_timeout", 60)
    kw.setdefault("max_lifetime", 600)
    proc, remote = start_standalone(state, **kw)
    procs.append(proc)
    return proc, remote


def _bal(ex) -> dict:
    b = ex.fetch_balance()
    return {a: (D(str(b[a]["free"])), D(str(b[a]["used"]))) for a in ("USDT", "BTC")}


# == standalone process, state file, kill -9 =========================================================


def test_kill9_restart_keeps_orders_fills_balances_and_open_orders(tmp_path, procs):
    state = tmp_path / "exchange" / "state.json"
    proc, remote = _start(procs, state, symbols=["BTC/USDT", "ETH/USDT"],
                          balances={"USDT": "10000", "BTC": "0"})
    assert remote.base_url.startswith("http://127.0.0.1:") and remote.pid == proc.pid
    assert remote.state_path == str(state.resolve())
    ex = make_ccxt_client(remote)
    ex.load_markets()
    assert sorted(ex.symbols) == ["BTC/USDT", "ETH/USDT"]
    buy = ex.create_order("BTC/USDT", "market", "buy", 0.001, None, {"clientOrderId": "mkt-1"})
    assert buy["status"] == "closed" and buy["filled"] == pytest.approx(0.001)
    lim = ex.create_order("BTC/USDT", "limit", "buy", 0.002, 50000, {"clientOrderId": "lim-1"})
    assert lim["status"] == "open"
    before = remote.balances()
    # market buy 0.001 @ 60000: 60 + fee 0.06; resting limit 0.002 @ 50000 locks 100 + fee 0.1
    assert before["USDT"] == (D("9839.84"), D("100.1")) and before["BTC"] == (D("0.001"), D(0))
    orders_before, trades_before = remote.orders(), remote.trades()

    proc.kill()  # kill -9 right after the last acknowledged order: no clean-up, no final save
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads(state.read_text())
    assert all(isinstance(x, str) for x in saved["balances"]["USDT"])  # decimals kept as strings
    assert [D(x) for x in saved["balances"]["USDT"]] == [D("9839.84"), D("100.1")]
    assert {o["client_order_id"] for o in saved["orders"]} == {"mkt-1", "lim-1"}

    # restart from the same file (different --balances on the command line: the file wins)
    proc2, remote2 = _start(procs, state, symbols=["BTC/USDT", "ETH/USDT"], balances={"USDT": "1"})
    assert proc2.pid != proc.pid
    assert remote2.balances() == before
    assert remote2.orders() == orders_before and remote2.trades() == trades_before
    ex2 = make_ccxt_client(remote2)
    ex2.load_markets()
    got = ex2.fetch_order(None, "BTC/USDT", {"clientOrderId": "mkt-1"})
    assert got["id"] == buy["id"] and got["status"] == "closed" and got["filled"] == pytest.approx(0.001)
    fills = ex2.fetch_my_trades("BTC/USDT")
    assert [t["order"] for t in fills] == [buy["id"]]
    assert fills[0]["price"] == pytest.approx(60000) and fills[0]["fee"]["cost"] == pytest.approx(0.06)
    assert _bal(ex2) == {"USDT": (D("9839.84"), D("100.1")), "BTC": (D("0.001"), D(0))}
    open_orders = ex2.fetch_open_orders("BTC/USDT")
    assert [(o["id"], o["clientOrderId"], o["status"]) for o in open_orders] == [(lim["id"], "lim-1", "open")]

    # a price move through the control endpoint fills the order that rested across the restart
    fills = remote2.set_price("BTC/USDT", 49000)
    assert [(f["orderId"], f["price"], f["isMaker"]) for f in fills] == [(int(lim["id"]), "50000.00000000", True)]
    done = ex2.fetch_order(None, "BTC/USDT", {"clientOrderId": "lim-1"})
    assert done["status"] == "closed" and done["filled"] == pytest.approx(0.002)
    assert ex2.fetch_open_orders("BTC/USDT") == []
    assert _bal(ex2) == {"USDT": (D("9839.84"), D(0)), "BTC": (D("0.003"), D(0))}

    # client order ids used before the restart are still refused; new ids continue the old counters
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        ex2.create_order("BTC/USDT", "market", "buy", 0.001, None, {"clientOrderId": "mkt-1"})
    new = ex2.create_order("ETH/USDT", "market", "buy", 0.01, None, {"clientOrderId": "mkt-2"})
    assert int(new["id"]) == int(lim["id"]) + 1
    assert len({t["id"] for t in remote2.trades()}) == 3

    # and the fill made through the control endpoint survives the next kill -9 as well
    last = remote2.balances()
    proc2.kill()
    proc2.wait(timeout=10)
    _, remote3 = _start(procs, state)
    assert remote3.balances() == last
    third = {o["clientOrderId"]: o for o in remote3.orders()}
    assert third["lim-1"]["status"] == "FILLED" and third["mkt-2"]["status"] == "FILLED"
    assert remote3.balances()["BTC"] == (D("0.003"), D(0))


def test_state_file_round_trips_decimals_exactly_and_refuses_damage(tmp_path):
    path = tmp_path / "s.json"
    with LoopbackBinance(state_path=path, idle_timeout=30) as a:
        a.set_balance("USDT", "1234.567890123456789012345", "0.000000000000000000001")
        a.set_price("ETH/USDT", "3000.123456789012345")
        a.set_fill_fraction(0.3)
        a.set_api_restrictions(enableWithdrawals=True)
        hist = list(a._hist_px["ETHUSDT"])
    with LoopbackBinance(state_path=path, idle_timeout=30) as b:
        assert b.restored
        assert b.balance("USDT") == (D("1234.567890123456789012345"), D("0.000000000000000000001"))
        assert b.price("ETH/USDT") == D("3000.123456789012345")
        assert b._hist_px["ETHUSDT"] == hist and len(hist) == 2
        assert b.fill_fraction == 0.3 and b.api_restrictions["enableWithdrawals"] is True
    path.write_text('{"format": "loopback-exchange-state", "version": 1, "balances": ')
    with pytest.raises(ValueError, match=r"s\.json"):
        LoopbackBinance(state_path=path, autostart=False)
    path.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a loopback exchange state file"):
        LoopbackBinance(state_path=path, autostart=False)


def test_process_stops_by_itself_when_idle_and_requests_keep_it_alive(procs):
    proc, remote = _start(procs, idle_timeout=1.0)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:  # control requests are activity: no idle stop meanwhile
        remote.state()
        time.sleep(0.2)
    assert proc.poll() is None
    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - t0 < 10
    proc._loopback_stderr.seek(0)
    assert "stopped (idle)" in proc._loopback_stderr.read().decode()


def test_process_stops_at_its_max_lifetime_on_shutdown_and_on_sigterm(procs, tmp_path):
    proc, remote = _start(procs, idle_timeout=60, max_lifetime=1.0)
    t0 = time.monotonic()
    assert proc.wait(timeout=15) == 0 and time.monotonic() - t0 < 10

    proc, remote = _start(procs, tmp_path)
    remote.set_balance("BTC", "1.5")
    remote.shutdown()
    assert proc.wait(timeout=15) == 0
    proc, remote = _start(procs, tmp_path)  # a directory: its loopback_state.json is the state file
    assert remote.balance("BTC") == (D("1.5"), D(0))
    assert stop_standalone(proc) == 0  # SIGTERM: a clean stop


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_non_loopback_host_is_refused(host):
    r = subprocess.run([sys.executable, str(SCRIPT), "--port", "0", "--host", host], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "refusing to bind" in r.stderr
    with pytest.raises(ValueError, match="refusing to bind"):
        LoopbackBinance(host=host, autostart=False)


def test_start_standalone_reports_a_refused_start(tmp_path):
    with pytest.raises(RuntimeError, match="refusing to bind"):
        start_standalone(tmp_path, host="10.0.0.1")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(RuntimeError, match="cannot be read"):
        start_standalone(tmp_path / "bad.json", idle_timeout=5)


# == control endpoints ==============================================================================


def test_control_endpoints_cost_no_weight_and_stay_out_of_the_access_log():
    with LoopbackBinance(idle_timeout=30) as srv:
        remote = RemoteLoopback(srv.base_url, srv.api_key, srv.secret)
        assert remote.set_price("BTC/USDT", "61000") == []
        remote.set_balance("usdt", "500", "1")
        remote.set_fill_fraction(0.5)
        remote.add_fault("5xx", path="/api/v3/time", method="GET", times=1)
        st = remote.state()
        assert srv.count() == 0 and srv.access_log == [] and srv.used_weight == 0
        assert st["prices"]["BTCUSDT"] == "61000" and srv.price("BTC/USDT") == D("61000")
        assert remote.balances() == srv.balances() and srv.balance("USDT") == (D("500"), D("1"))
        assert srv.fill_fraction == 0.5

        ex = make_ccxt_client(remote)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            ex.fetch_time()
        assert srv.faults.fired("5xx") == 1 and remote.count("GET", "time") == 1
        remote.add_fault("429", path="time", times=None)
        remote.clear_faults()
        assert ex.fetch_time() > 0
        assert srv.count() == 2 and srv.used_weight == 1  # the 5xx was answered before any weight

        remote.set_api_restrictions(enableSpotAndMarginTrading=False)
        assert srv.api_restrictions["enableSpotAndMarginTrading"] is False
        with pytest.raises(ccxt.AuthenticationError):
            ex.create_order("BTC/USDT", "market", "buy", 0.001)
        with pytest.raises(ValueError, match="price must be > 0"):
            remote.set_price("BTC/USDT", -1)
        with pytest.raises(ValueError, match="unknown symbol 'DOGE/USDT'"):
            remote.set_price("DOGE/USDT", 1)
        with pytest.raises(ValueError, match="missing field 'symbol'"):
            remote._call("POST", "backfill", {"bars": 3})
        with pytest.raises(ValueError, match="unknown fault kind"):
            remote.add_fault("meteor")
        with pytest.raises(RuntimeError, match="404"):
            remote._call("POST", "nothing-here", {})
        assert srv.errors == []


def test_backfill_over_http_matches_the_in_process_backfill():
    with LoopbackBinance(idle_timeout=30) as a, LoopbackBinance(idle_timeout=30) as b:
        a.backfill("BTC/USDT", bars=50, step_ms=60_000, seed=7, vol=0.01)
        RemoteLoopback(b.base_url).backfill("BTC/USDT", bars=50, step_ms=60_000, seed=7, vol=0.01)
        assert a._hist_px["BTCUSDT"] == b._hist_px["BTCUSDT"] and len(b._hist_px["BTCUSDT"]) == 51
        gaps = [y - x for x, y in zip(b._hist_ts["BTCUSDT"], b._hist_ts["BTCUSDT"][1:])]
        assert gaps == [60_000] * 50
        ex = make_ccxt_client(b)
        bars = ex.fetch_ohlcv("BTC/USDT", "1m", limit=40)
        assert len(bars) == 40 and sum(1 for c in bars if c[2] > c[3]) >= 30  # candles with real ranges
        assert len({c[4] for c in bars}) > 20
        assert b.price("BTC/USDT") == D("60000")             # the price in force now is unchanged


# == EXCHANGE_URL: the library's rewriting ============================================================


def _all_urls(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _all_urls(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _all_urls(v)


@pytest.mark.parametrize("name, path, api, params", [
    ("binance", "ping", ["public"], {}),
    ("kraken", "Ticker", ["public"], {"pair": "XBTUSD"}),
    ("okx", "market/ticker", ["public"], {"instId": "BTC-USDT"}),
])
def test_apply_exchange_url_points_every_api_url_at_the_base(name, path, api, params):
    ex = getattr(ccxt, name)()
    original = list(_all_urls(ex.urls["api"]))
    assert original and not any(u.startswith("http://127.0.0.1:18080") for u in original)
    assert apply_exchange_url(ex, "http://127.0.0.1:18080/") is ex
    rewritten = list(_all_urls(ex.urls["api"]))
    assert len(rewritten) == len(original)
    for old, new in zip(original, rewritten):
        assert new.startswith("http://127.0.0.1:18080")
        old_path = old.split("://", 1)[1].partition("/")[2]
        assert new == "http://127.0.0.1:18080" + ("/" + old_path if old_path else "")
    assert ex.sign(path, api, "GET", dict(params))["url"].startswith("http://127.0.0.1:18080/")
    assert ex.session.trust_env is False
    other = getattr(ccxt, name)()  # the class's own URLs are untouched
    assert list(_all_urls(other.urls["api"])) == original


def test_apply_exchange_url_keeps_binance_error_tables_and_proxy_settings_for_remote_hosts():
    ex = apply_exchange_url(ccxt.binance(), "http://127.0.0.1:18080")
    spot, linear = ex.exceptions["spot"]["exact"], ex.exceptions["linear"]["exact"]
    assert spot is not linear
    assert ex.get_exceptions_by_url("http://127.0.0.1:18080/api/v3/order", "exact") is spot
    assert ex.get_exceptions_by_url("http://127.0.0.1:18080/sapi/v1/account/apiRestrictions", "exact") is spot
    assert ex.get_exceptions_by_url("http://127.0.0.1:18080/fapi/v1/order", "exact") is linear
    assert ex.get_exceptions_by_url("https://elsewhere.example/api/v3/order", "exact") == {}

    mirror = ccxt.binanceus()
    mirror.session.trust_env = True
    apply_exchange_url(mirror, "https://mirror.example.com:8443")
    assert mirror.session.trust_env is True  # not a loopback host: the environment's proxy still applies
    assert all(u == "https://mirror.example.com:8443" or u.startswith("https://mirror.example.com:8443/")
               for u in _all_urls(mirror.urls["api"]))
    plain = ccxt.binanceus()
    assert mirror.get_exceptions_by_url("https://mirror.example.com:8443/api/v3/order", "exact") == \
        plain.get_exceptions_by_url(plain.urls["api"]["public"] + "/order", "exact")


@pytest.mark.parametrize("url, why", [
    ("", "empty"),
    ("ftp://127.0.0.1:21", "http:// or https://"),
    ("127.0.0.1:8080", "http:// or https://"),
    ("http://", "no host"),
    ("http://:8080", "no host"),
    ("http://user:secret@127.0.0.1:8080", "user name or password"),
    ("http://127.0.0.1:8080/api/v3", "must not have a path"),
    ("http://127.0.0.1:8080?x=1", "query"),
    ("http://127.0.0.1:8080/#frag", "fragment"),
    ("http://127.0.0.1:99999", "invalid port"),
    ("http://127.0.0.1:http", "invalid port"),
    ("http://127.0.0.1:", "invalid port"),
    ("http://exa mple.com", "whitespace"),
    ("http://[zz::1]:80", "invalid host"),
    ("http://bad_host!:80", "invalid host"),
])
def test_validate_exchange_url_refuses(url, why):
    with pytest.raises(ValueError, match=why):
        validate_exchange_url(url)
    with pytest.raises(ValueError):
        apply_exchange_url(ccxt.binance(), url)


def test_validate_exchange_url_accepts_and_normalises():
    assert validate_exchange_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert validate_exchange_url("HTTPS://api.example.com") == "https://api.example.com"
    assert validate_exchange_url(" http://[::1]:9000 ") == "http://[::1]:9000"
    assert is_loopback_host("127.0.0.2") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("10.0.0.1") and not is_loopback_host("example.com") and not is_loopback_host("")


def test_library_has_no_test_equipment_and_exchange_url_does_not_import_ccxt():
    code = ("import importlib.util, sys; import qts.market.exchange_url; "
            "print(importlib.util.find_spec('qts.testing') is None, 'ccxt' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                       cwd=str(REPO / "lib"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False"]
    hits = [str(p) for p in (REPO / "lib").rglob("*.py") if "qts.testing" in p.read_text(encoding="utf-8")]
    assert hits == []
