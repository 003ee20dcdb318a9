"""The paper-trading loop: ``run``, ``once``, ``stop``. The loop itself is ``engine.runner.Runner`` over a session
from ``engine.session``; here are the options, the loop lock taken before anything is touched, and the progress
lines and summary."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import click

from ..paths import StateHome
from .base import _iso, _parse_params, _settings, cli
from .errors import InputError, _network_errors, input_errors


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
    from ..engine.runner import AlreadyRunning, LoopLock

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
    from ..engine.session import SessionError, archive_state, last_cycle_ts, make_feed, open_session

    source = "live-data" if live_data else "replay" if data_dir else "synthetic"
    if or_generated and not live_data:
        raise InputError("--or-generated goes with --live-data (the fallback when the exchange cannot be reached)")
    probed = None
    if live_data:  # reach the exchange before anything is archived or opened
        from ..market.ccxt_feed import ExchangeUnreachable

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
              help="Serve /health, /metrics (Prometheus), /positions, the dashboard (/) and its token-guarded "
                   "tightening controls on 127.0.0.1:PORT while the loop runs (0 picks a free port).")
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
    from ..engine.runner import AlreadyRunning, Runner
    from ..reports.summary import summarize

    session, source = _open(ctx, data_dir, live_data, days, seed, strategy, params, fresh, pace, or_generated)
    from ..safety import kill_switch

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
        from ..monitor import MonitorError, start_monitor
        from ..monitor.dashboard import dashboard_token, with_dashboard

        token, _ = dashboard_token()  # QTS_MONITOR_TOKEN, or one made up for this run (printed below)
        try:  # the dashboard's routes on the same port: one port shows the running loop
            mon = with_dashboard(start_monitor(session.settings.home, port=monitor_port, on_kill=runner.stop.set,
                                               token=token, feed=session.feed),
                               keep_monitor_routes=True)
        except MonitorError as e:
            session.close()
            session.loop_lock.release()
            raise InputError(f"--monitor-port: {e}") from None
        click.echo(f"monitor on {mon.url}; dashboard: {mon.url}/#token={token}", err=True)
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
    from ..engine.status_file import pid_alive, read_pid

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

