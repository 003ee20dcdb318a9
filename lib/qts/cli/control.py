"""``qts`` commands of the operator control plane: replay (re-run recorded decisions)."""

from __future__ import annotations

import json
import sys
import time

import click

from ..paths import StateHome
from .base import _iso, cli
from .errors import InputError, _approval_errors


def _home(ctx) -> StateHome:
    return StateHome.resolve(ctx.obj.get("home"))


def _open_store(home: StateHome):
    from ..store import Store

    if not home.db_path.exists():
        raise click.ClickException(f"no database at {home.db_path} yet: run `qts run` first")
    return Store.open(home, check_journal=False)


@cli.command("replay")
@click.option("--verify", "do_verify", is_flag=True, required=True,
              help="Re-run the recorded decisions and report every one that differs (required: the only mode).")
@click.option("--since", default=None,
              help="Only decisions from: YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC), epoch ms, or a span back (12h, 7d).")
@click.option("--mode", type=click.Choice(["paper", "live"]), default=None, help="Only this mode's decisions.")
@click.option("--profile", "profile_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="What-if: size every recorded order with this risk profile (JSON) instead of the recorded one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def replay_cmd(ctx, do_verify, since, mode, profile_file, as_json):
    """Re-run recorded decisions exactly: the strategy on the candles it saw (stored by content), the
    loop's order rule, and the risk layer's sizing on the recorded portfolio and risk profile. Lists each
    decision whose re-run differs, field by field (recorded vs replayed), and any stored input that no
    longer matches its hash. Exit status 1 when any differs. Reads the database only."""
    from ..engine.replay import verify
    from ..reports.performance import TimeSpecError, parse_time

    store = _open_store(_home(ctx))
    try:
        lo = parse_time(since, store.scalar("SELECT MAX(ts) FROM decisions") or int(time.time() * 1000))
    except TimeSpecError as e:
        raise InputError(f"--since: {e}") from None
    override = None
    if profile_file:
        from ..safety.risk_profile import validate_profile

        try:
            with open(profile_file, encoding="utf-8") as fh:
                data = json.load(fh)
            # a profile record (safety/risk_profile.json) or a bare profile object
            override = validate_profile(data.get("profile", data) if isinstance(data, dict) else data)
        except (OSError, ValueError) as e:  # RiskProfileError is a ValueError naming the field
            raise InputError(f"--profile {profile_file}: {e}") from None
    rep = verify(store, since_ms=lo, mode=mode, profile_override=override)
    store.close()
    d = rep.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=1, default=str))
    else:
        rate = f" ({d['per_second']:,.0f}/s)" if d["per_second"] else ""
        click.echo(f"replayed {rep.checked} decision(s) in {rep.elapsed_s:.2f}s{rate}: {rep.verified} identical, "
                   f"{len(rep.mismatches)} differ" + (f", {len(rep.unreplayable)} not replayable (skipped; first: "
                                                       f"{rep.unreplayable[0]['why']})" if rep.unreplayable else ""))
        for m in rep.mismatches:
            click.echo(f"  decision {m.decision_id}  {_iso(m.ts)}  {m.symbol}  {m.strategy}")
            for f in m.fields:
                click.echo(f"    {f['field']}: recorded {f['recorded']!r}, replayed {f['replayed']!r}")
    if rep.mismatches:
        sys.exit(1)


@cli.command("summary")
@click.option("--day", "day", default="yesterday", show_default=True,
              help="The UTC day: YYYY-MM-DD, today or yesterday.")
@click.option("--mode", type=click.Choice(["paper", "live"]), default="paper", show_default=True)
@click.option("--send", is_flag=True, help="Also send it to the configured notification sinks (for cron).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def summary_cmd(ctx, day, mode, send, as_json):
    """The daily summary of one UTC day: P&L by strategy and symbol, fees, refusals by reason, predicted vs
    realized (strategy registry), registry changes, alerts raised. The loop sends it by itself once a day
    when QTS_SUMMARY_AT=HH:MM is set; from cron: `5 0 * * * qts summary --day yesterday --send`."""
    from ..reports.daily import DayError, daily_summary, parse_day, render_daily, send_summary

    try:
        day0 = parse_day(day)
    except DayError as e:
        raise InputError(f"--day: {e}") from None
    home = _home(ctx)
    store = _open_store(home)
    d = daily_summary(store, day0, mode)
    store.close()
    click.echo(json.dumps(d, indent=1, default=str) if as_json else render_daily(d))
    if send:
        from ..notify import get_notifier

        took = send_summary(home, d)
        n = get_notifier(home)
        if n is not None:
            n.flush(10)
        click.echo(f"sent to {took} sink(s)", err=True)
        if not took:
            sys.exit(1)


@cli.command("dashboard")
@click.option("--port", type=click.IntRange(0, 65535), default=8766, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--for", "for_s", type=click.FloatRange(min=0.1), default=None,
              help="Stop by itself after SECONDS (default: until Ctrl-C or SIGTERM).")
@click.pass_context
def dashboard_cmd(ctx, port, for_s):
    """Serve the operator dashboard on 127.0.0.1: equity and drawdown, positions with their stops, the last
    decisions with reason codes, recent orders and refusals, breaker / trading state / kill switch, registry
    strategies with predicted vs realized, alerts. It updates itself every 2 s.

    Reading it and its controls (engage the kill switch, halt, reduce only, lower a risk limit, pause a strategy:
    all only tighten, checked on the server) need the token:
    QTS_MONITOR_TOKEN (16+ characters), or one made up for this run. Open the printed URL; the token rides in
    its #fragment, which the browser never sends to a server. Loosening is not on the page: it shows the
    terminal commands (PIN)."""
    import os
    import secrets
    import signal
    import threading

    from ..monitor import MonitorError
    from ..monitor.dashboard import start_dashboard
    from ..monitor.server import MIN_TOKEN_LEN

    home = _home(ctx)
    if not home.db_path.exists():
        raise click.ClickException(f"no database at {home.db_path} yet: run `qts run` first")
    token = os.environ.get("QTS_MONITOR_TOKEN") or ""
    if len(token) < MIN_TOKEN_LEN:
        if token:
            click.echo(f"QTS_MONITOR_TOKEN is shorter than {MIN_TOKEN_LEN} characters: using a token made up for "
                       "this run instead", err=True)
        token = secrets.token_urlsafe(24)
    try:
        srv = start_dashboard(home, port=port, token=token)
    except MonitorError as e:
        raise InputError(f"--port: {e}") from None
    click.echo(f"dashboard: {srv.url}/#token={token}", err=False)
    click.echo("(the token is in the #fragment: keep the URL private; Ctrl-C stops the dashboard)", err=True)
    stop = threading.Event()

    def watch():  # the agent's heartbeat, whether or not a page is open
        from ..notify.alerts import check_agent

        while not stop.wait(30.0):
            check_agent(home)

    threading.Thread(target=watch, name="qts-dashboard-watch", daemon=True).start()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop.wait(for_s)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        srv.stop()


# -- pausing a strategy: free; resuming: the PIN ----------------------------------------------------------

@cli.group("strategy")
def strategy_grp():
    """Pause a strategy (it takes no new entries; its exits still run) or resume it (PIN)."""


@strategy_grp.command("pause")
@click.argument("name")
@click.option("--reason", default="manual", show_default=True)
@click.pass_context
def strategy_pause(ctx, name, reason):
    """Pause NAME (a strategy name as decisions show it, or a registry entry id): from the next cycle it opens
    no new position. Needs no PIN: it only reduces risk."""
    from ..safety import pauses
    from ..store import Store

    store = Store.open(_home(ctx))
    try:
        out = pauses.pause(store.home, name, reason=reason, store=store)
    except pauses.PauseError as e:
        raise InputError(str(e)) from None
    finally:
        store.close()
    click.echo(f"{name}: paused" + ("" if out["changed"] else " (already)") +
               f"; resume with the PIN: qts strategy resume {name}")


@strategy_grp.command("resume")
@click.argument("name")
@click.pass_context
@_approval_errors
def strategy_resume(ctx, name):
    """Resume NAME: it may take new entries again. That loosens, so the PIN is asked on the terminal."""
    from ..safety import pauses
    from ..safety.approve import now_ms, unlock_from_terminal
    from ..store import Store

    store = Store.open(_home(ctx))
    try:
        pauses.check_name(name)
        if name not in pauses.paused(store.home, store):
            click.echo(f"{name} is not paused")
            return
        key = unlock_from_terminal(store, f"PIN to resume {name}: ")
        out = pauses.resume(store.home, name, key, store=store, now_ms=now_ms())
    except pauses.PauseError as e:
        raise InputError(str(e)) from None
    except PermissionError as e:
        raise click.ClickException(str(e)) from None
    finally:
        store.close()
    click.echo(f"{name}: resumed" if out["changed"] else f"{name} is not paused")


@strategy_grp.command("paused")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def strategy_paused(ctx, as_json):
    """List the paused strategies."""
    from ..safety import pauses
    from ..store import Store

    store = Store.open(_home(ctx))
    try:
        p = pauses.paused(store.home, store)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(p, indent=1))
        return
    if not p:
        click.echo("no strategy is paused")
    for n, v in p.items():
        click.echo(f"{n:30} since {_iso(v['since_ts'])}  {v['reason']}")
