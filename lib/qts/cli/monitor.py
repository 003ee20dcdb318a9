"""``qts`` commands for watching the system: status, perf, report, metrics, monitor."""

from __future__ import annotations

import json
import signal
import threading
import time

import click

from ..paths import StateHome
from .base import _iso, cli
from .errors import InputError


def _home(ctx) -> StateHome:
    return StateHome.resolve(ctx.obj.get("home"))


def _open_store(home: StateHome):
    from ..store import Store

    if not home.db_path.exists():
        raise click.ClickException(f"no database at {home.db_path} yet: run `qts run` first")
    return Store.open(home)


def _range(store, since, until, mode="paper", table="equity_snapshots"):
    from ..reports.performance import TimeSpecError, parse_time

    if table == "metrics":
        now = store.scalar("SELECT MAX(ts) FROM metrics") or int(time.time() * 1000)
    else:
        now = store.scalar("SELECT MAX(ts) FROM equity_snapshots WHERE mode=?", (mode,)) or int(time.time() * 1000)
    try:
        lo, hi = parse_time(since, now), parse_time(until, now, end=True)
    except TimeSpecError as e:
        raise InputError(f"--since/--until: {e}") from None
    if lo is not None and hi is not None and lo > hi:
        raise InputError("--since is after --until")
    return lo, hi


_RANGE_HELP = ("YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC), epoch ms, or a span back from the latest record "
               "(30m, 12h, 7d, 2w)")


def _range_options(f):
    f = click.option("--until", default=None, help="End of the range (inclusive): " + _RANGE_HELP)(f)
    f = click.option("--since", default=None, help="Start of the range: " + _RANGE_HELP)(f)
    return f


# -- status ------------------------------------------------------------------------------------------------

@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--decisions", type=click.IntRange(0, 1000), default=12, show_default=True,
              help="How many of the latest decisions to show.")
@click.pass_context
def status_cmd(ctx, as_json, decisions):
    """Everything at a glance: mode, loop health, breaker, kill switch, equity, positions, limits.

    Loop state (running, stopped, dead, halted) with its last and next cycle; breaker and trading
    state; kill switch; equity and cash; open positions with unrealized P&L at the last recorded
    prices; today's P&L against the daily loss limit; drawdown against its reduce and halt limits;
    the latest decisions with their reason codes. --json for machines.
    """
    from ..reports.status import collect_status, render_status

    d = collect_status(_home(ctx), decisions=decisions)
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
    else:
        click.echo(render_status(d))


# -- performance -------------------------------------------------------------------------------------------

def _mode(ctx, mode):
    if mode:
        return mode
    from ..engine.status_file import read_status

    st = read_status(_home(ctx))
    if st.get("mode") in ("paper", "live"):
        return st["mode"]
    from ..config import ConfigError, load_settings

    try:
        return "paper" if load_settings(home=_home(ctx).root).PAPER_TRADING else "live"
    except ConfigError:
        return "paper"


@cli.command("perf")
@_range_options
@click.option("--mode", type=click.Choice(["paper", "live"]), default=None, help="Account (default: the loop's).")
@click.option("--strategy", "strategies", multiple=True, help="Only this strategy (repeatable).")
@click.option("--symbol", "symbols", multiple=True, help="Only this symbol (repeatable), e.g. BTC/USDT.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def perf_cmd(ctx, since, until, mode, strategies, symbols, as_json):
    """Performance over a date range, per strategy and per symbol, from the database.

    P&L, win rate, profit factor, expectancy, Sharpe and Sortino (from equity snapshots), max
    drawdown, exposure, fees, and predicted (strategy registry) vs realized. Definitions:
    `python -c "import qts.reports.performance as p; print(p.__doc__)"`.
    """
    from ..reports.performance import performance, render_performance

    mode = _mode(ctx, mode)
    store = _open_store(_home(ctx))
    try:
        lo, hi = _range(store, since, until, mode)
        d = performance(store, mode, lo, hi, strategies=[s for s in strategies] or None,
                        symbols=[s.upper() for s in symbols] or None)
    finally:
        store.close()
    click.echo(json.dumps(d, indent=2, default=str) if as_json else render_performance(d))


# -- HTML report -------------------------------------------------------------------------------------------

@cli.command("report")
@_range_options
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write (default: <state home>/reports/report-<time>.html).")
@click.option("--png", "png", is_flag=True, help="Also write a PNG (equity and drawdown) next to the HTML.")
@click.option("--mode", type=click.Choice(["paper", "live"]), default=None)
@click.option("--title", default=None, help="Title of the report.")
@click.option("--json", "as_json", is_flag=True, help="Print the paths and headline figures as JSON.")
@click.pass_context
def report_cmd(ctx, since, until, out, png, mode, title, as_json):
    """Write a self-contained HTML report (opens offline; no CDN, no network).

    Equity and drawdown, positions over time, trades marked on price, monthly and daily returns,
    performance by strategy and symbol, predicted vs realized, open positions, closed trades,
    gate refusals and safety events.
    """
    from ..reports.html import write_report

    home = _home(ctx)
    mode = _mode(ctx, mode)
    store = _open_store(home)
    try:
        lo, hi = _range(store, since, until, mode)
        res = write_report(home, out=out, mode=mode, since_ms=lo, until_ms=hi, png=png, title=title, store=store)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(res, indent=2, default=str))
        return
    a = res["account"]
    click.echo(f"report written: {res['html']}  ({res['bytes'] / 1024:.0f} KB, self-contained)")
    if res["png"]:
        click.echo(f"png written:    {res['png']}")
    if a.get("pnl") is not None:
        click.echo(f"  equity {a['end_equity']:,.2f}  P&L {a['pnl']:+,.2f} ({a['return_pct']:+.2f}%)  "
                   f"max drawdown {a['max_drawdown_pct']:.2f}%  trades {a['trades']}")


# -- custom metrics ----------------------------------------------------------------------------------------

@cli.group("metrics")
def metrics_grp():
    """Custom metrics in the state database (name, value, time, tags)."""


@metrics_grp.command("write")
@click.argument("name")
@click.argument("value")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag, repeatable.")
@click.pass_context
def metrics_write(ctx, name, value, tags):
    """Record VALUE (a finite number) under NAME (letters, digits, '.', '_', '-'; starts with a letter)."""
    from ..metrics import MetricError, parse_tag, write_metric
    from ..store import Store

    home = _home(ctx)
    store = None
    try:
        tag_map = dict(parse_tag(t) for t in tags)
        store = Store.open(home)
        row = write_metric(store, name, value, tag_map)
    except MetricError as e:
        raise InputError(str(e)) from None
    finally:
        if store is not None:
            store.close()
    click.echo(f"recorded {row['name']} = {row['value']:g} at {_iso(row['ts'])}")


@metrics_grp.command("read")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 100000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def metrics_read(ctx, name, limit, as_json):
    """The latest values of metric NAME, newest first."""
    from ..metrics import read_metric
    from ..store import Store

    store = Store.open(_home(ctx))
    rows = read_metric(store, name, limit)
    store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{_iso(r['ts'])}  {r['value']:g}  {r['tags'] if r['tags'] != {} else ''}")


@metrics_grp.command("list")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only points with this tag (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def metrics_list(ctx, tags, as_json):
    """Every metric name with its count, last value and the tag keys seen."""
    from ..metrics import MetricError, list_metrics
    from ..reports.status import table

    home = _home(ctx)
    if not home.db_path.exists():
        rows = []
    else:
        store = _open_store(home)
        try:
            rows = list_metrics(store, tags)
        except MetricError as e:
            raise InputError(str(e)) from None
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no metrics recorded" + (" with those tags" if tags else "") + " (qts metrics write NAME VALUE)")
        return
    click.echo(table(["name", "count", "last value", "last at (UTC)", "min", "max", "tags"],
                     [[r["name"], r["count"], f"{r['last_value']:g}", _iso(r["last_ts"]), f"{r['min']:g}",
                       f"{r['max']:g}", ",".join(r["tag_keys"]) or "-"] for r in rows], align="lrrlrrl"))


@metrics_grp.command("chart")
@click.argument("name")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only points with this tag (repeatable).")
@_range_options
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG here (matplotlib); without it, print a terminal sparkline.")
@click.option("--width", type=click.IntRange(10, 400), default=60, show_default=True, help="Sparkline width.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100_000, show_default=True,
              help="At most this many of the latest points.")
@click.option("--json", "as_json", is_flag=True, help="Print the points as JSON.")
@click.pass_context
def metrics_chart(ctx, name, tags, since, until, out, width, limit, as_json):
    """Chart metric NAME: a PNG with --out, else an inline sparkline with min / last / max."""
    from ..metrics import NAME_RE, MetricError, metric_series
    from ..reports import charts

    if not NAME_RE.match(name or ""):
        raise InputError(f"name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter (max 100)")
    home = _home(ctx)
    if not home.db_path.exists():
        raise click.ClickException(f"no metric {name!r} recorded (no database yet)")
    store = _open_store(home)
    try:
        lo, hi = _range(store, since, until, table="metrics")
        rows = metric_series(store, name, tags, lo, hi, limit)
    except MetricError as e:
        raise InputError(str(e)) from None
    finally:
        store.close()
    if not rows:
        raise click.ClickException(f"no points of metric {name!r}" + (" with those tags" if tags else "")
                                   + (" in that range" if since or until else ""))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    ts = [r["ts"] for r in rows]
    vals = [r["value"] for r in rows]
    label = name + (" {" + ", ".join(tags) + "}" if tags else "")
    if out:
        charts.metric_png(out, label, ts, vals, f"  ({len(vals)} points)")
        click.echo(f"chart written: {out}  ({len(vals)} points, {_iso(ts[0])} -> {_iso(ts[-1])} UTC)")
        return
    click.echo(f"{label}  {len(vals)} points  {_iso(ts[0])} -> {_iso(ts[-1])} UTC")
    click.echo(f"  {charts.sparkline(vals, width)}")
    click.echo(f"  min {min(vals):g}   last {vals[-1]:g}   max {max(vals):g}   mean {sum(vals) / len(vals):g}")


# -- the monitor endpoint ----------------------------------------------------------------------------------

@cli.group("monitor")
def monitor_grp():
    """The HTTP monitor endpoint (health, Prometheus metrics, positions, kill switch) on 127.0.0.1."""


@monitor_grp.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port (default $QTS_MONITOR_PORT or 8765; 0 picks a free one).")
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--allow-remote", is_flag=True, default=None,
              help="Allow a non-loopback address (put TLS and a firewall in front of it).")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after SECONDS (default: never).")
@click.pass_context
def monitor_serve(ctx, port, host, allow_remote, duration):
    """Serve the monitor for the state home until interrupted (standalone; the loop can also start it).

    GET /health /metrics /positions /status; POST /kill-switch with `Authorization: Bearer
    $QTS_MONITOR_TOKEN` (unset: refused). Standalone, the kill switch also stops a running loop
    (SIGTERM) and flattens paper positions, like `qts kill-switch`.
    """
    from ..monitor import MonitorError, start_monitor

    home = _home(ctx).ensure()
    try:
        srv = start_monitor(home, port=port, host=host, allow_remote=allow_remote or None)
    except MonitorError as e:
        raise InputError(str(e)) from None
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    click.echo(f"monitor on {srv.url}  (GET /health /metrics /positions /status; POST /kill-switch"
               + (f"; {srv.token_problem}" if srv.token_problem else "") + ")", err=True)
    try:
        stop.wait(duration)
    finally:
        srv.stop()
        for s, h in old.items():
            signal.signal(s, h)
