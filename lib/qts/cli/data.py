"""``qts`` commands for market data the trader needs: ``market liquidity`` (the liquidity gate's numbers and
verdict) and the ``data`` group (download / sync candles).

Heavy imports (ccxt, numpy) happen inside the commands.
"""

from __future__ import annotations

import json

import click

from .base import _iso, _settings, cli
from .errors import InputError, _network_errors
from .market import _market_feed, _market_opts, market_grp


def liquidity_report(settings, feed, symbol: str, amount: float | None = None) -> dict:
    """:func:`qts.safety.liquidity_report.report` (``qts market liquidity`` and the monitor's ``GET /liquidity``)."""
    from ..safety.liquidity_report import report

    return report(settings, feed, symbol, amount)


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


# -- data: candles for backtests and replays ----------------------------------------------------------------

@cli.group("data")
def data_grp():
    """Candle files for `qts backtest --data` and `qts run --data`: download from an exchange, keep in sync.

    Files are named like BTC_USDT-1h.csv (timestamp_ms,open,high,low,close,volume) in
    <state home>/data/<exchange>/ unless --out DIR. Every candle passes the bad-candle quarantine.
    """


def _data_dir(ctx, exchange_id: str, out):
    from pathlib import Path

    if out:
        return Path(out)
    return _settings(ctx).home.root / "data" / exchange_id


def _exchange(ctx, exchange_id: str | None):
    from ..market.ccxt_feed import public_exchange

    settings = _settings(ctx)
    ex_id = (exchange_id or settings.EXCHANGE).strip().lower()
    try:
        return public_exchange(ex_id, url=settings.EXCHANGE_URL, sandbox=settings.EXCHANGE_SANDBOX), settings
    except ValueError as e:
        raise InputError(str(e).replace("EXCHANGE:", "--exchange:")) from None


def _run_download(ctx, exchange, settings, symbol, timeframe, out_dir, since_ms, until_ms, as_json):
    import sys

    from ..market.download import DownloadError, download
    from ..market.quarantine import ScreenConfig

    label = f"{symbol} {timeframe}"
    bar = click.progressbar(length=1000, label=f"downloading {label}", file=sys.stderr,
                            show_eta=True) if not as_json else None
    done = [0]

    def progress(part, total):
        if bar is not None and total > 0:
            k = int(1000 * part / total)
            bar.update(max(0, k - done[0]))
            done[0] = max(done[0], k)

    try:
        if bar is not None:
            bar.__enter__()
        try:
            res = download(exchange, symbol, timeframe, out_dir, since_ms, until_ms, progress=progress,
                           screen_config=ScreenConfig.from_settings(settings))
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    except DownloadError as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:  # bad symbol / timeframe, a damaged existing file (CandleFileError names its row)
        raise InputError(str(e)) from None
    return res


def _report(res, as_json):

    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
        return
    click.echo(f"{res.path}: {res.candles} candles, {_iso(res.first_ts)} to {_iso(res.last_ts)} UTC "
               f"({res.added} new, {res.requests} request(s))")
    if res.filled:
        click.echo(f"  {res.filled} missing or quarantined candle(s) written flat at the previous close, volume 0")
    for r in res.quarantined[:20]:
        click.echo(f"  quarantined: {r.message()}")
    if len(res.quarantined) > 20:
        click.echo(f"  ... and {len(res.quarantined) - 20} more quarantined (see --json)")


@data_grp.command("download")
@click.option("--exchange", "exchange_id", default=None, help="ccxt exchange id (default: EXCHANGE).")
@click.option("--symbol", "symbols", multiple=True, required=True, help="Market, e.g. BTC/USDT; repeatable.")
@click.option("--timeframe", default="1h", show_default=True, help="Candle timeframe: 1m, 5m, 15m, 1h, 4h, 1d, ...")
@click.option("--since", required=True, help="First candle, UTC: 2024-01-01, 2024-01-01T12:00 or epoch ms.")
@click.option("--until", default=None, help="Stop before this time (default: the last closed candle).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder of candle files (default: <state home>/data/<exchange>).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@_network_errors
def data_download(ctx, exchange_id, symbols, timeframe, since, until, out, as_json):
    """Page through the exchange's candles into a file `qts backtest --data` reads. An existing file is
    extended (to an earlier --since, and with the candles after its last one); nothing is refetched."""
    from ..market.download import parse_time

    try:
        since_ms = parse_time(since, "--since")
        until_ms = parse_time(until, "--until") if until else None
    except ValueError as e:
        raise InputError(str(e)) from None
    if until_ms is not None and until_ms <= since_ms:
        raise InputError(f"--until {until}: must be after --since {since}")
    exchange, settings = _exchange(ctx, exchange_id)
    out_dir = _data_dir(ctx, exchange.id, out)
    results = [_run_download(ctx, exchange, settings, s.upper(), timeframe, out_dir, since_ms, until_ms, as_json)
               for s in symbols]
    for res in results:
        _report(res, as_json)
    if not as_json:
        click.echo(f"backtest with: qts backtest STRATEGY --data {out_dir} --symbol {symbols[0].upper()} "
                   f"--timeframe {timeframe}")


@data_grp.command("sync")
@click.option("--exchange", "exchange_id", default=None, help="ccxt exchange id (default: EXCHANGE).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder of candle files (default: <state home>/data/<exchange>).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@_network_errors
def data_sync(ctx, exchange_id, out, as_json):
    """Append the candles closed since each file's last one, for every candle file in the folder."""
    from ..market.candles import FILE_RE, TIMEFRAMES

    exchange, settings = _exchange(ctx, exchange_id)
    out_dir = _data_dir(ctx, exchange.id, out)
    files = sorted(p for p in out_dir.glob("*.csv") if FILE_RE.match(p.name)) if out_dir.is_dir() else []
    files = [p for p in files if FILE_RE.match(p.name).group(3) in TIMEFRAMES]
    if not files:
        raise InputError(f"{out_dir}: no candle files to sync; start with `qts data download --since ...`")
    for p in files:
        m = FILE_RE.match(p.name)
        res = _run_download(ctx, exchange, settings, f"{m.group(1)}/{m.group(2)}", m.group(3), out_dir, None, None,
                            as_json)
        _report(res, as_json)
