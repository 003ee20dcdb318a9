"""``qts market``: public market data (no keys) from the exchange, candle files or the generated market."""

from __future__ import annotations

import json

import click

from .base import _settings, cli
from .errors import _network_errors, input_errors


@cli.group("market")
def market_grp():
    """Public market data (no keys): markets, ticker, order book, candles.

    Uses the exchange's live public API by default; --data DIR or --synthetic answer offline from
    candle files or the generated market.
    """


def _market_feed(ctx, data_dir, synthetic):
    from ..engine.session import make_feed

    settings = _settings(ctx)
    with input_errors():
        if synthetic:
            return make_feed(settings, "synthetic", days=1)
        if data_dir:
            feed = make_feed(settings, "replay", data_dir)
            feed.seek(feed.end_ms)  # answer as of the end of the files
            return feed
        return make_feed(settings, "live-data")


def _market_opts(f):
    f = click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False), help="Answer from candle files.")(f)
    f = click.option("--synthetic", is_flag=True, help="Answer from the generated market.")(f)
    return f


@market_grp.command("ticker")
@click.argument("symbol")
@_market_opts
@click.pass_context
@_network_errors
def market_ticker(ctx, symbol, data_dir, synthetic):
    """Last price, bid and ask of SYMBOL (e.g. BTC/USDT)."""
    feed = _market_feed(ctx, data_dir, synthetic)
    click.echo(json.dumps(feed.ticker(symbol.upper()), indent=2, default=str))


@market_grp.command("markets")
@_market_opts
@click.pass_context
@_network_errors
def market_markets(ctx, data_dir, synthetic):
    """Trading rules (precision, minimum amount and notional) of the configured SYMBOLS."""
    feed = _market_feed(ctx, data_dir, synthetic)
    for sym in feed.symbols:
        r = feed.rules(sym)
        click.echo(f"{sym:12} amount step {r.amount_step:g}  price tick {r.price_step:g}  "
                   f"min amount {r.min_amount:g}  min notional {r.min_cost:g}")


@market_grp.command("orderbook")
@click.argument("symbol")
@click.option("--depth", type=click.IntRange(1, 100), default=5, show_default=True)
@_market_opts
@click.pass_context
@_network_errors
def market_orderbook(ctx, symbol, depth, data_dir, synthetic):
    """Best bids and asks of SYMBOL."""
    feed = _market_feed(ctx, data_dir, synthetic)
    click.echo(json.dumps(feed.order_book(symbol.upper(), depth), indent=2, default=str))


@market_grp.command("ohlcv")
@click.argument("symbol")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@_market_opts
@click.pass_context
@_network_errors
def market_ohlcv(ctx, symbol, limit, data_dir, synthetic):
    """The last closed candles of SYMBOL at TRADE_INTERVAL, as CSV."""
    feed = _market_feed(ctx, data_dir, synthetic)
    c = feed.candles(symbol.upper(), limit)
    click.echo("timestamp_ms,open,high,low,close,volume")
    for i in range(len(c)):
        click.echo(f"{c.ts[i]},{c.open[i]:g},{c.high[i]:g},{c.low[i]:g},{c.close[i]:g},{c.volume[i]:g}")

