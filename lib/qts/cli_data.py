"""``qts`` commands for market data the trader needs: ``market liquidity`` (the liquidity gate's numbers and
verdict) and the ``data`` group (download / sync candles).

Heavy imports (ccxt, numpy) happen inside the commands.
"""

from __future__ import annotations

import json

import click

from .cli import InputError, _market_feed, _market_opts, _network_errors, _settings, cli


def liquidity_report(settings, feed, symbol: str, amount: float | None = None) -> dict:
    """The numbers the liquidity gate reads for ``symbol`` from ``feed``, the risk profile's limits (the one
    the gate applies), and the verdict for a buy of ``amount`` (default: a full MAX_POSITION_SIZE position)."""
    from types import SimpleNamespace

    from .safety.liquidity import measure, problems
    from .safety.risk_gate import effective_profile
    from .store import Store

    reading = measure(feed, symbol)
    store = Store.open(settings.home)
    try:
        profile = effective_profile(SimpleNamespace(store=store, settings=settings, authority=None))
    finally:
        store.close()
    if amount is None and reading.price:
        amount = min(settings.MAX_POSITION_SIZE, profile.max_position_usd) / reading.price
    bad = problems(reading, profile, "buy", amount)
    return {**reading.to_dict(), "amount": amount,
            "limits": {"min_quote_volume_24h": profile.min_quote_volume_24h,
                       "max_spread_bps": profile.max_spread_bps,
                       "max_depth_fraction": profile.max_depth_fraction},
            "allowed": not bad, "problems": bad}


market_grp = cli.commands["market"]


@market_grp.command("liquidity")
@click.argument("symbol")
@click.option("--amount", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Order size in base units to judge against the book depth (default: a full position).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_market_opts
@click.pass_context
@_network_errors
def market_liquidity(ctx, symbol, amount, as_json, data_dir, synthetic):
    """24 h quote volume, spread and visible depth of SYMBOL, the risk profile's limits, and whether the
    gate would let an entry through (reason LIQUIDITY when not)."""
    symbol = symbol.upper()
    if "/" not in symbol:
        raise InputError(f"SYMBOL {symbol!r}: expected a market like BTC/USDT")
    feed = _market_feed(ctx, data_dir, synthetic)
    rep = liquidity_report(_settings(ctx), feed, symbol, amount)
    if as_json:
        click.echo(json.dumps(rep, indent=2, default=str))
        return
    lim = rep["limits"]

    def f(v, fmt):
        return "unknown" if v is None else format(v, fmt)

    click.echo(f"{symbol} liquidity ({rep['source']})")
    click.echo(f"  24 h quote volume  {f(rep['quote_volume_24h'], ',.0f'):>20}   min {lim['min_quote_volume_24h']:,.0f}")
    click.echo(f"  spread             {f(rep['spread_bps'], '.2f'):>16} bps   max {lim['max_spread_bps']:g} bps")
    click.echo(f"  depth (asks/bids)  {f(rep['depth_asks'], '.6g'):>9} / {f(rep['depth_bids'], '.6g')}")
    if rep["amount"]:
        click.echo(f"  order              {rep['amount']:>20.8g}   max {lim['max_depth_fraction']:g} of the asks")
    if rep["allowed"]:
        click.echo("verdict: entries pass the liquidity gate")
    else:
        click.echo("verdict: REFUSED (LIQUIDITY): " + "; ".join(rep["problems"]))
