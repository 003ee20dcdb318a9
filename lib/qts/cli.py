"""``qts``: every operation of quant-trading-system from one command line.

A thin skin over the library: each command parses its options, calls a library function and prints
the result (``--json`` where a machine reads it). Exit codes: 0 ok, 1 the operation failed,
2 bad input (configuration, options, candle files) with a message naming what is wrong.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import datetime, timezone

import click

from . import __version__
from .paths import StateHome


class InputError(click.ClickException):
    exit_code = 2


def _settings(ctx: click.Context, **overrides):
    from .config import ConfigError, load_settings

    try:
        return load_settings(home=ctx.obj.get("home"), **overrides)
    except ConfigError as e:
        raise InputError(f"configuration: {e}") from None


def _network_errors(fn):
    """An exchange that cannot be reached is one line naming the exchange, the endpoint and why ("offline?"),
    exit code 1: never a page of traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from .market.ccxt_feed import ExchangeFailed

        try:
            return fn(*a, **kw)
        except ExchangeFailed as e:
            raise click.ClickException(str(e)) from None
    return wrapper


def _iso(ts_ms) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M") if ts_ms else "-"


def _parse_params(items, option: str = "--param") -> dict:
    """NAME=VALUE pairs; VALUE as JSON when it parses (numbers, lists), else text."""
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InputError(f"{option + ' ' if option else ''}{item!r}: expected NAME=VALUE")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def state_error_line(e: BaseException, home_opt=None) -> str | None:
    """The one line for a damaged or unwritable state file (None for any other error): a StateFileError
    names its file; a SQLite error raised past the checks (disk full mid-cycle, damage found in a page the
    open did not read) is named after the state home's database."""
    from .fsutil import StateFileError

    if isinstance(e, StateFileError):
        return str(e)
    import sqlite3

    if isinstance(e, sqlite3.DatabaseError):
        home = StateHome.resolve(home_opt)
        what = "the disk is full" if "full" in str(e) else f"SQLite says {e}"
        return (f"{home.db_path}: {what}; the change in progress was rolled back (nothing half-written) and no "
                "further order was placed")
    return None


READ_ONLY_COMMANDS = ("status", "report", "perf", "verify", "breaker", "metrics")


class QtsGroup(click.Group):
    """Turns a damaged state file into one line on stderr and exit code 2, for every command (CliRunner
    included), instead of a traceback. A stored row with NaN in its JSON (an older version wrote them) is
    repaired on the spot; a read-only command then runs again, any other asks to be run again."""

    def invoke(self, ctx):
        pending = getattr(ctx, "_protected_args", None)
        argv = [*(pending if pending is not None else ctx.protected_args), *ctx.args]  # for the one retry below
        try:
            return super().invoke(ctx)
        except Exception as e:
            if "malformed JSON" in str(e) and e.__class__.__module__ == "sqlite3":
                from .store.db import repair_home_json

                fixed = repair_home_json(StateHome.resolve((ctx.obj or {}).get("home")))
                if fixed and ctx.invoked_subcommand in READ_ONLY_COMMANDS:
                    name, cmd, rest = self.resolve_command(ctx, argv)
                    with cmd.make_context(name, rest, parent=ctx) as sub:
                        return cmd.invoke(sub)
                if fixed:
                    click.echo(f"error: {fixed} stored value(s) held NaN/Infinity and were repaired (now null); "
                               "nothing else was changed: run the command again", err=True)
                    ctx.exit(2)
            line = state_error_line(e, (ctx.obj or {}).get("home"))
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            ctx.exit(2)


# Commands that only reduce risk run even when a setting is bad (a .env is a file the assistant can write: a
# typo there must not keep the kill switch or a halt from working); they warn instead. Every other command
# stops on a bad setting with one line naming it, exit code 2.
RISK_REDUCING = {("kill-switch",), ("kill-switch", "engage"), ("stop",), ("breaker", "trip"),
                 ("breaker", "state", "HALTED"), ("breaker", "state", "REDUCING"), ("approve", "revoke"),
                 ("agent", "halt"), ("agent", "reduce"), ("agent", "revoke"), ("agent", "lower"), ("agent", "stop")}


class _Root(QtsGroup):
    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        ctx.meta["qts.command_path"] = _command_path(cmd, name, rest)
        return name, cmd, rest


def _command_path(cmd, name, rest) -> tuple:
    """("breaker", "state", "HALTED"): the command names typed after ``qts`` (options left out), or () for help."""
    if any(a in ("-h", "--help") for a in rest):
        return ()
    path = [name]
    words = [a for a in rest if not a.startswith("-")]
    while isinstance(cmd, click.Group) and words:
        sub = cmd.get_command(None, words[0]) if words[0] in cmd.list_commands(None) else None
        if sub is None:
            break
        path.append(words.pop(0))
        cmd = sub
    if tuple(path) == ("breaker", "state") and words:
        path.append(words[0].upper())
    return tuple(path)


def _check_settings(ctx) -> None:
    path = ctx.meta.get("qts.command_path", ())
    if not path or path[0] in ("config",):  # help; `qts config` reports the bad setting itself
        return
    if path in RISK_REDUCING:
        from .config import ConfigError, load_settings

        try:
            load_settings(home=ctx.obj.get("home"))
        except ConfigError as e:
            click.echo(f"warning: configuration: {e} (carrying on: `qts {' '.join(path)}` only reduces risk)",
                       err=True)
        return
    _settings(ctx)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="qts")
@click.option("--home", type=click.Path(file_okay=False), envvar="QTS_HOME",
              help="State home (database, logs, flags). Default: $CLAUDE_PROJECT_DIR/.quant-trading "
                   "or ./.quant-trading.")
@click.pass_context
def cli(ctx, home):
    """quant-trading-system: research, backtest, paper-trade and (with a human PIN) live-trade crypto.

    Paper trading is the default and needs no keys. Every order, whoever proposes it, passes one
    gate. Settings come from the environment (EXCHANGE, SYMBOLS, TRADE_INTERVAL, MAX_POSITION_SIZE,
    RISK_LIMIT_PERCENT, PAPER_TRADING, ...) or a .env file in the state home: see `qts config`.
    """
    ctx.ensure_object(dict)
    ctx.obj["home"] = home
    _check_settings(ctx)  # a bad setting: one line naming it, exit 2, before any command runs


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config_cmd(ctx, as_json):
    """Show the effective settings (secrets shown only as set/unset).

    A bad value stops here with exit code 2 and a message naming the variable and what is allowed.
    """
    s = _settings(ctx)
    d = s.public_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        for k, v in d.items():
            click.echo(f"{k:20} {', '.join(v) if isinstance(v, list) else v}")


# -- trading loop -------------------------------------------------------------------------------------

def _source_options(f):
    f = click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False),
                     help="Replay real candle files from DIR (named like BTC_USDT-5m.csv).")(f)
    f = click.option("--live-data", is_flag=True,
                     help="Follow the exchange's live public data (network, no keys) on the wall clock.")(f)
    f = click.option("--or-generated", "or_generated", is_flag=True,
                     help="With --live-data: if the exchange cannot be reached at start, say so and replay the "
                          "generated (SYNTHETIC, offline) market instead of stopping.")(f)
    f = click.option("--days", type=click.FloatRange(min=0.01, max=3650), default=None,
                     help="Replay length in days (default: 2 for the generated market, all of --data).")(f)
    f = click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generated market.")(f)
    f = click.option("--strategy", default=None, help="Strategy name (default: $STRATEGY or sma_cross).")(f)
    f = click.option("--pace", type=click.FloatRange(min=0, max=3600), default=0.0,
                     help="Replay only: wait SECONDS between cycles (to watch it, or to test the runner).")(f)
    f = click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
                     help="Strategy parameter, repeatable, e.g. --param fast=10 --param slow=40.")(f)
    return f


def _open(ctx, data_dir, live_data, days, seed, strategy, params, fresh, pace=0.0, or_generated=False):
    from .engine.runner import AlreadyRunning, LoopLock

    if data_dir and live_data:
        raise InputError("--data and --live-data: choose one source")
    settings = _settings(ctx, STRATEGY=strategy)
    try:  # the loop's lock, before touching anything (--fresh moves the database away; the last cycle is read)
        lock = LoopLock.acquire(settings.home)
    except AlreadyRunning as e:
        raise InputError(str(e)) from None
    try:
        session, source = _open_locked(ctx, settings, data_dir, live_data, days, seed, params, fresh, pace,
                                       or_generated)
    except BaseException:
        lock.release()
        raise
    session.loop_lock = lock  # released by the Runner when the loop ends (or by run_cmd if it does not start)
    return session, source


def _open_locked(ctx, settings, data_dir, live_data, days, seed, params, fresh, pace, or_generated=False):
    from .candles_errors import input_errors
    from .engine.session import SessionError, archive_state, last_cycle_ts, make_feed, open_session

    source = "live-data" if live_data else "replay" if data_dir else "synthetic"
    if or_generated and not live_data:
        raise InputError("--or-generated goes with --live-data (the fallback when the exchange cannot be reached)")
    probed = None
    if live_data:  # reach the exchange before anything is archived or opened
        from .market.ccxt_feed import ExchangeUnreachable

        try:
            with input_errors():
                probed = make_feed(settings, "live-data")
                probed.markets()
        except ExchangeUnreachable as e:
            if not or_generated:
                raise click.ClickException(f"{e}. Without the network: `qts run` replays the generated market "
                                           "(offline), `qts run --data DIR` real candle files") from None
            click.echo(f"{e}: falling back to the generated market (SYNTHETIC prices, offline). Run "
                       "`qts run --live-data` again when the network is back.", err=True)
            source, live_data, probed = "synthetic", False, None
    with input_errors():
        try:
            archived = archive_state(settings) if fresh else None
        except SessionError as e:
            raise InputError(str(e)) from None
        resume = None if source == "live-data" else last_cycle_ts(settings.home)
        feed = probed or make_feed(settings, source, data_dir, days=days, seed=seed, resume_after=resume)
        try:
            session = open_session(settings, feed, _parse_params(params))
        except SessionError as e:
            raise InputError(str(e)) from None
    if pace and source != "live-data":
        feed.pace_s = pace
    if archived:
        click.echo(f"new paper account; the previous one is archived in {archived}", err=True)
    if session.notice:  # which registry strategies run (and which were refused), from engine/roster.py
        click.echo(session.notice, err=True)
    if getattr(feed, "resumed", False):
        click.echo(f"resuming the replay after {_iso(resume)} (use --fresh to start over)", err=True)
    return session, source


def _progress_printer(session, source, quiet):
    feed = session.feed
    total = feed.cycles_total(session.loop.interval_ms) if hasattr(feed, "cycles_total") else None
    tty = sys.stdout.isatty()
    every = max(1, 60 // session.settings.TRADE_INTERVAL)  # non-tty: one line per simulated hour

    def on_cycle(r, n):
        if quiet:
            return
        for o in r.orders:
            px = f"{o['avg_price']:.2f}" if o.get("avg_price") else "resting"
            click.echo(f"{'' if not tty else chr(13)}  {_iso(r.ts)}  {o['side'].upper():4} {o['symbol']:10} "
                       f"{o['filled']:.6g} @ {px}  fee {o['fee']:.2f}  [{o['status']}]" + " " * 10)
        for o in r.refusals:
            click.echo(f"  {_iso(r.ts)}  REFUSED {o['side']} {o['symbol']}: {o['reason_code']} {o['message']}")
        line = (f"cycle {n}{'/' + str(total) if total else ''}  {_iso(r.ts)}  equity {r.equity:,.2f}  "
                f"cash {r.cash:,.2f}  ({r.elapsed_ms:.1f} ms)")
        if tty:
            click.echo("\r" + line + "   ", nl=False)
        elif n == 1 or n % every == 0 or (total and n == total):
            click.echo(line)

    return on_cycle


def _print_summary(summary: dict, synthetic: bool) -> None:
    s = summary
    click.echo("")
    click.echo("Session summary" + ("  (SYNTHETIC market: generated prices, not real)" if synthetic else ""))
    click.echo(f"  cycles            {s['cycles']}")
    click.echo(f"  fills             {s['fills']}   closed trades {s['closed_trades']}"
               + (f"   win rate {100 * s['win_rate']:.0f}%" if s["win_rate"] is not None else ""))
    click.echo(f"  realized P&L      {s['realized_pnl']:,.2f}   (this session, after fees)")
    click.echo(f"  unrealized P&L    {s['unrealized_pnl']:,.2f}")
    click.echo(f"  fees              {s['fees']:,.2f}")
    if s["total_pnl"] is not None:
        click.echo(f"  equity            {s['equity']:,.2f}   ({s['return_pct']:+.2f}% since the account opened "
                   f"with {s['initial_cash']:,.2f})")
    if s["open_positions"]:
        click.echo("  open positions    " + ", ".join(f"{p['symbol']} {p['amount']:.6g}" for p in s["open_positions"]))
    click.echo(f"  gate refusals     {s['refusals']}")
    click.echo(f"  trades log        {s['trades_log']}")
    click.echo(f"  database          {s['database']}")


@cli.command("run")
@_source_options
@click.option("--once", is_flag=True, help="Run a single cycle and exit.")
@click.option("--cycles", type=click.IntRange(min=1), default=None, help="Stop after N cycles.")
@click.option("--fresh", is_flag=True, help="Move the old database and logs to archive/ and start a new paper account.")
@click.option("--quiet", is_flag=True, help="No per-cycle progress; only the summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--monitor-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /health, /metrics (Prometheus), /positions and a token-guarded POST /kill-switch on "
                   "127.0.0.1:PORT while the loop runs (0 picks a free port).")
@click.pass_context
@_network_errors
def run_cmd(ctx, data_dir, live_data, days, seed, strategy, params, pace, once, cycles, fresh, quiet, as_json,
            monitor_port=None, or_generated=False):
    """Run the paper-trading loop.

    With no source option it replays a generated (SYNTHETIC, seeded) market offline: no network, no
    keys. --data DIR replays real candle files; --live-data follows the exchange's public data in
    real time. Cycles run at candle closes every TRADE_INTERVAL minutes (instantly in a replay).
    Writes a PID file and a status file in the state home; SIGTERM or SIGINT stops it cleanly
    after the current cycle. A replay continues where the last run stopped unless --fresh.
    """
    from .engine.runner import AlreadyRunning, Runner
    from .reports.summary import summarize

    session, source = _open(ctx, data_dir, live_data, days, seed, strategy, params, fresh, pace, or_generated)
    from .safety import kill_switch

    ks = kill_switch.status(session.store.home, session.store)
    if ks.engaged:
        session.close()
        session.loop_lock.release()
        raise click.ClickException(f"kill switch engaged ({ks.reason}): the loop does not start. A human resets "
                                   "it with the PIN in their own terminal: qts kill-switch reset")
    started = session.feed.now_ms()
    runner = Runner(session.settings.home, session.loop, session.broker.mode, session.feed.source,
                    lock=session.loop_lock)
    if not quiet and not as_json:
        click.echo(f"paper trading {', '.join(session.settings.SYMBOLS)} with {session.settings.STRATEGY} on "
                   f"{session.feed.source}, every {session.settings.TRADE_INTERVAL} min; state home "
                   f"{session.settings.home.root}")
    mon = None
    if monitor_port is not None:
        from .monitor import MonitorError, start_monitor

        try:
            mon = start_monitor(session.settings.home, port=monitor_port, on_kill=runner.stop.set)
        except MonitorError as e:
            session.close()
            session.loop_lock.release()
            raise InputError(f"--monitor-port: {e}") from None
        click.echo(f"monitor on {mon.url}", err=True)
    try:
        runner.run(max_cycles=1 if once else cycles, on_cycle=_progress_printer(session, source, quiet or as_json))
    except AlreadyRunning as e:
        raise click.ClickException(str(e)) from None
    finally:
        if mon is not None:
            mon.stop()
        if sys.stdout.isatty() and not quiet:
            click.echo("")
    if session.loop.halted:
        click.echo(f"HALTED: {session.loop.halted}", err=True)
    summary = summarize(session.store, since_ts=started)
    session.close()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary, getattr(session.feed, "synthetic", False))


@cli.command("once")
@_source_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def once_cmd(ctx, **kw):
    """Run one cycle of the loop and exit (for cron or a Claude Code command). Same options as run."""
    ctx.invoke(run_cmd, once=True, cycles=None, fresh=False, quiet=True, **kw)


@cli.command("stop")
@click.option("--timeout", type=float, default=30, show_default=True, help="Seconds to wait for it to exit.")
@click.pass_context
def stop_cmd(ctx, timeout):
    """Stop the running loop cleanly (SIGTERM; it finishes the current cycle)."""
    from .engine.runner import pid_alive, read_pid
    from .paths import StateHome

    home = StateHome.resolve(ctx.obj.get("home"))
    pid = read_pid(home)
    if not pid:
        click.echo("no trading loop is running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and pid_alive(pid):
        time.sleep(0.05)
    if pid_alive(pid):
        raise click.ClickException(f"loop (pid {pid}) still running after {timeout:g}s")
    click.echo(f"stopped the trading loop (pid {pid})")


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
    from .cli_monitor import status_impl

    status_impl(ctx, as_json, decisions)


# -- market data ----------------------------------------------------------------------------------------

@cli.group("market")
def market_grp():
    """Public market data (no keys): markets, ticker, order book, candles.

    Uses the exchange's live public API by default; --data DIR or --synthetic answer offline from
    candle files or the generated market.
    """


def _market_feed(ctx, data_dir, synthetic):
    from .candles_errors import input_errors
    from .engine.session import make_feed

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


# -- metrics and database ------------------------------------------------------------------------------

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
    from .metrics import MetricError, write_metric
    from .store import Store

    home = StateHome.resolve(ctx.obj.get("home"))
    store = None
    try:
        tag_map = dict(_split_tag(t) for t in tags)
        store = Store.open(home)
        row = write_metric(store, name, value, tag_map)
    except MetricError as e:
        raise InputError(str(e)) from None
    finally:
        if store is not None:
            store.close()
    click.echo(f"recorded {row['name']} = {row['value']:g} at {_iso(row['ts'])}")


def _split_tag(t: str):
    from .metrics import MetricError

    k, sep, v = t.partition("=")
    if not sep:
        raise MetricError(f"--tag {t!r}: expected KEY=VALUE")
    return k, v


@metrics_grp.command("read")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 100000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def metrics_read(ctx, name, limit, as_json):
    """The latest values of metric NAME, newest first."""
    from .metrics import read_metric
    from .store import Store

    store = Store.open(StateHome.resolve(ctx.obj.get("home")))
    rows = read_metric(store, name, limit)
    store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{_iso(r['ts'])}  {r['value']:g}  {r['tags'] if r['tags'] != {} else ''}")


@cli.command("verify")
@click.option("--mode", type=click.Choice(["paper", "live"]), default="paper", show_default=True)
@click.option("--rebuild", is_flag=True,
              help="Rebuild the paper books from logs/trades.jsonl when the database is missing, empty or damaged "
                   "(a damaged one is moved to archive/ first). Cash starts from INITIAL_CASH.")
@click.pass_context
def verify_cmd(ctx, mode, rebuild):
    """Check that the trades journal, fills, positions, cash and P&L agree. Exit 1 if they do not.

    --rebuild recovers lost paper books from the journal; to start a new paper account deliberately
    instead, use `qts run --fresh` (the old journal is archived, nothing is deleted).
    """
    from .reports.verify import verify_books
    from .store import Store

    if rebuild:
        _rebuild(ctx, mode)
        return

    store = Store.open(StateHome.resolve(ctx.obj.get("home")))
    problems = verify_books(store, mode)
    n = store.scalar("SELECT COUNT(*) FROM fills WHERE mode=?", (mode,))
    store.close()
    for p in problems:
        click.echo(f"MISMATCH: {p}")
    if problems:
        sys.exit(1)
    click.echo(f"books agree: {n} fills in trades.jsonl and the database, cash, positions and P&L consistent")


def _rebuild(ctx, mode):
    from .reports.verify import RebuildError, rebuild_books

    if mode != "paper":
        raise InputError("--rebuild: paper books only (live positions come from the exchange: the trading agent "
                         "reconciles them when it starts)")
    settings = _settings(ctx)
    try:
        out = rebuild_books(settings.home, settings.INITIAL_CASH)
    except RebuildError as e:
        raise InputError(str(e)) from None
    if out["moved_aside"]:
        click.echo(f"the damaged database was moved to {out['moved_aside']}")
    click.echo(f"rebuilt the paper books from {settings.home.trades_log}: {out['fills']} fills, cash "
               f"{out['cash']:,.2f} (starting from INITIAL_CASH {out['initial_cash']:,.2f}), positions "
               + (", ".join(f"{k} {v:.6g}" for k, v in out["positions"].items()) or "none"))
    click.echo("not in the journal, so not rebuilt: the loop's decisions and equity history, and the events of a "
               "moved database (the kill-switch flag file still counts)")
    for p in out["problems"]:
        click.echo(f"MISMATCH: {p}")
    if out["problems"]:
        sys.exit(1)


@cli.group("db")
def db_grp():
    """The state database (SQLite, WAL) in the state home."""


@db_grp.command("migrate")
@click.pass_context
def db_migrate(ctx):
    """Create the database or apply pending migrations from db/migrations."""
    from .store.db import open_checked

    home = StateHome.resolve(ctx.obj.get("home"))
    applied: list[int] = []
    # damage is refused by name; a new empty database opens no account (the next command checks the journal)
    open_checked(home, check_journal=False, applied=applied).close()
    click.echo(f"{home.db_path}: " + (f"applied {applied}" if applied else "up to date"))


from . import cli_safety  # noqa: E402,F401  (registers the safety commands)
from . import cli_monitor  # noqa: E402,F401  (status, perf, report, metrics list/chart, notify, monitor)
from . import cli_research  # noqa: E402,F401  (backtest, research, registry, promote)
from . import cli_data  # noqa: E402,F401  (market liquidity, data download/sync)
from . import cli_agent  # noqa: E402,F401  (agent start/status/approve/...: live trading)


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="qts", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # raised outside a command (QtsGroup handles those inside one)
        line = state_error_line(e, os.environ.get("QTS_HOME"))
        if line is None:
            raise
        click.echo(f"error: {line}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
