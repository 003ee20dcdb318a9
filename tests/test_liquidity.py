"""Liquidity gating (issue #12): entries refused (reason LIQUIDITY, through the one gate) in a market whose
24 h quote volume, spread or visible depth fails the risk profile. Paper reads the numbers from its feed
(real candles: the last 24 h closed), live from the exchange (real ccxt against the loopback exchange).
Expected numbers are computed here from the candle file with numpy, not by the library."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS, read_csv_rows
from qts.broker.models import OrderIntent

DAY = 86_400_000
NO_ENV = {k: None for k in CONFIG_VARS}


@pytest.fixture
def paper(tmp_path, ohlcv_dir):
    """A paper session on real BTC/USDT 5m candles, the clock at the end of the files."""
    from qts.config import load_settings
    from qts.engine.session import make_feed, open_session

    settings = load_settings(environ={"SYMBOLS": "BTC/USDT"}, home=tmp_path / "home")
    feed = make_feed(settings, "replay", ohlcv_dir)
    feed.seek(feed.end_ms - 300_000)
    s = open_session(settings, feed)
    yield s
    s.close()


def _expected_quote_volume(ohlcv_dir, now_ms):
    a = read_csv_rows(ohlcv_dir / "BTC_USDT-5m.csv")
    closed = (a[:, 0] + 300_000 <= now_ms) & (a[:, 0] >= now_ms - DAY)
    return float((a[closed, 5] * a[closed, 4]).sum())


def _tighten(home, **limits):
    from qts.safety import risk_gate
    from qts.safety.risk_profile import default_profile, save_profile

    save_profile(home, default_profile().model_copy(update=limits), log=lambda *a, **k: None)  # tightening: no PIN
    risk_gate._cache.clear()


def test_paper_reading_is_the_last_24h_of_real_candles(paper, ohlcv_dir):
    from qts.safety.liquidity import measure

    r = measure(paper.feed, "BTC/USDT")
    assert r.quote_volume_24h == pytest.approx(_expected_quote_volume(ohlcv_dir, paper.feed.now_ms()), rel=1e-9)
    assert 0 < r.spread_bps < 1 and r.depth_asks > 0


def test_thin_market_entry_is_refused_with_a_typed_reason_and_exits_still_pass(paper, ohlcv_dir):
    qv = _expected_quote_volume(ohlcv_dir, paper.feed.now_ms())
    assert paper.gate.submit(OrderIntent("BTC/USDT", "buy", 0.001, strategy="t", reason="entry")).accepted
    _tighten(paper.settings.home, min_quote_volume_24h=qv * 1.01)
    v = paper.gate.evaluate(OrderIntent("BTC/USDT", "buy", 0.001, strategy="t", reason="entry"))
    assert (v.allowed, v.code, v.check) == (False, "LIQUIDITY", "check_risk")
    assert "24 h quote volume" in v.message and "min_quote_volume_24h" in v.message
    # the position bought before the limit was tightened can still be sold, whatever the market's liquidity
    _tighten(paper.settings.home, min_quote_volume_24h=qv * 1.01, max_spread_bps=1e-6)
    held = paper.broker.position_amount("BTC/USDT")
    assert held > 0
    sell = paper.gate.evaluate(OrderIntent("BTC/USDT", "sell", held, strategy="t", reason="signal",
                                           reduce_only=True))
    assert sell.allowed, sell


def test_order_bigger_than_the_book_allows_is_refused(paper):
    from qts.safety.liquidity import measure

    depth = measure(paper.feed, "BTC/USDT").depth_asks
    amount = 0.001
    _tighten(paper.settings.home, max_depth_fraction=amount / depth / 2)  # half this order's share of the book
    v = paper.gate.evaluate(OrderIntent("BTC/USDT", "buy", amount, strategy="t", reason="entry"))
    assert (v.allowed, v.code) == (False, "LIQUIDITY")
    assert "of the visible depth" in v.message and "max_depth_fraction" in v.message
    assert "quote volume" not in v.message and "spread" not in v.message  # only the failing limit is named


def test_unreadable_liquidity_is_a_refusal(paper):
    def broken(symbol, depth=10):
        raise ConnectionError("book unavailable (test)")

    paper.feed.order_book = broken
    v = paper.gate.evaluate(OrderIntent("BTC/USDT", "buy", 0.001, strategy="t", reason="entry"))
    assert (v.allowed, v.code) == (False, "LIQUIDITY") and "cannot read liquidity" in v.message


def test_live_reading_from_the_exchange():
    """Real ccxt against the loopback exchange: 24 h quote volume from ticker/24hr, spread from bid/ask,
    depth from the order book; each limit refuses with its own line."""
    from support.loopback_exchange import LoopbackBinance, make_ccxt_client

    from qts.market.ccxt_feed import CcxtFeed
    from qts.safety.liquidity import measure, problems
    from qts.safety.risk_profile import default_profile

    with LoopbackBinance(idle_timeout=30, book_qty="0.5") as srv:
        srv.market_quote_volume_24h = "250000"  # a thin market
        feed = CcxtFeed(make_ccxt_client(srv), ["BTC/USDT"], 5)
        r = measure(feed, "BTC/USDT")
        price = float(srv.price("BTC/USDT"))
        tick = float(srv.spec("BTC/USDT").tick_size)
    assert r.quote_volume_24h == pytest.approx(250_000, rel=1e-6)
    assert r.spread_bps == pytest.approx(2 * tick / price * 10_000, rel=1e-6)
    assert r.depth_asks == pytest.approx(0.5 * 20) and r.depth_bids == pytest.approx(0.5 * 20)
    bad = problems(r, default_profile(), "buy", 6.0)  # 60% of 10 BTC of asks
    assert len(bad) == 2
    assert "250,000 < min_quote_volume_24h 1,000,000" in bad[0] and "max_depth_fraction 0.5" in bad[1]
    assert problems(r, default_profile().model_copy(update={"min_quote_volume_24h": 0.0}), "buy", 1.0) == []


def test_market_liquidity_command(tmp_path, ohlcv_dir):
    from qts.cli import cli

    home = str(tmp_path / "home")
    r = CliRunner().invoke(cli, ["--home", home, "market", "liquidity", "btc/usdt", "--data", str(ohlcv_dir), "--json"],
                           env={**NO_ENV, "SYMBOLS": "BTC/USDT"})
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    a = read_csv_rows(ohlcv_dir / "BTC_USDT-5m.csv")
    end = int(a[-1, 0]) + 300_000  # `--data` answers as of the end of the files
    assert rep["quote_volume_24h"] == pytest.approx(_expected_quote_volume(ohlcv_dir, end), rel=1e-9)
    assert rep["allowed"] is True and rep["limits"]["min_quote_volume_24h"] == 1_000_000
    r = CliRunner().invoke(cli, ["--home", home, "market", "liquidity", "BTC/USDT", "--data", str(ohlcv_dir),
                                 "--amount", "1000"], env={**NO_ENV, "SYMBOLS": "BTC/USDT"})
    assert r.exit_code == 0, r.output
    assert "REFUSED (LIQUIDITY)" in r.output and "max_depth_fraction" in r.output
    r = CliRunner().invoke(cli, ["--home", home, "market", "liquidity", "BTCUSDT", "--synthetic"], env=NO_ENV)
    assert r.exit_code == 2 and "BTC/USDT" in r.output
