"""``qts kill-switch`` and ``qts breaker``: the safety kernel's stops, from the command line."""

from __future__ import annotations

import json
import sys
import time

import click

from ..paths import StateHome
from .base import _store, cli
from .errors import _approval_errors


# -- kill switch ---------------------------------------------------------------------------------------

@cli.group("kill-switch", invoke_without_command=True)
@click.option("--reason", default="manual", show_default=True, help="Why (recorded with the event).")
@click.pass_context
def kill_switch_grp(ctx, reason):
    """Stop everything at once: flag, stop the loop, cancel orders, close positions.

    With no subcommand it ENGAGES the switch. Safe to run twice: a second run retries whatever the
    first could not do. While engaged every order except flattening is refused. Releasing it needs
    the PIN: `qts kill-switch reset`, typed by a human in their own terminal.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(kill_engage, reason=reason)


@kill_switch_grp.command("engage")
@click.option("--reason", default="manual", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and nothing else on stdout.")
@click.option("--paper-only", is_flag=True, hidden=True,
              help="Flatten only the paper account (the flag is already set; used by hooks/kill_switch.sh).")
@click.pass_context
def kill_engage(ctx, reason, as_json=False, paper_only=False):
    """Engage the switch and flatten (the default action).

    The flag first (milliseconds, nothing else needed), then the paper loop is stopped, the trading
    agent (live) cancels and closes from the exchange's own view and says "flat" only when the exchange
    confirms it, and the paper account is flattened. Exit 0 only when everything is confirmed flat;
    1 when anything is left or UNVERIFIED (live configured but no agent answered).
    """
    from ..agent import kill

    home = StateHome.resolve(ctx.obj.get("home"))
    if paper_only:
        out = _paper_flatten(ctx, home)
        click.echo(json.dumps(out, default=str) if as_json else ("paper flat" if out.get("flat") else f"paper: {out}"))
        sys.exit(0 if out.get("flat") else 1)
    out = kill.run(home.root, reason, paper_flatten=lambda: _paper_flatten(ctx, home))
    click.echo(json.dumps(out, default=str) if as_json else kill.render(out))
    sys.exit(0 if out["flat"] else 1)


def _paper_flatten(ctx, home) -> dict:
    """Cancel and close the PAPER account through the gate's flatten path."""
    from ..config import load_settings_reducing_risk
    from ..engine.session_tools import flatten_paper, session_feed

    store = _store(ctx)
    try:
        # a bad setting (a .env the assistant can write) must not keep positions open: defaults stand in
        settings, replaced = load_settings_reducing_risk(home=ctx.obj.get("home"))
        for line in replaced:
            click.echo(f"warning: configuration: {line}", err=True)
        out = flatten_paper(settings, store, session_feed(settings, store))
        return {**{k: out[k] for k in ("flat", "cancelled", "closed", "failed")}, "ms": round(out["ms"], 1)}
    finally:
        store.close()


@kill_switch_grp.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def kill_status(ctx, as_json):
    """Is the switch engaged, since when and why."""
    from ..safety import kill_switch as ks

    # the flag and the per-user anchor suffice: no database is opened (a damaged one cannot stop this)
    st = ks.status(StateHome.resolve(ctx.obj.get("home")))
    if as_json:
        click.echo(json.dumps(st.__dict__))
    else:
        click.echo(("ENGAGED: " if st.engaged else "clear: ") + st.reason)


@kill_switch_grp.command("reset")
@click.pass_context
@_approval_errors
def kill_reset(ctx):
    """Release the switch. Asks for the PIN on the terminal (never as an argument). Exit 0 only when the
    switch is clear afterwards; 1 when it stays engaged (the reason is printed)."""
    from ..safety import kill_switch as ks
    from ..safety.approve import unlock_from_terminal

    store = _store(ctx)
    try:
        key = unlock_from_terminal(store, "PIN to reset the kill switch: ")
        try:
            ks.reset(store.home, store, key)
        except ks.ResetRefused as e:
            click.echo(f"error: kill switch NOT reset: {e}", err=True)
            sys.exit(1)
        st = ks.status(store.home, store)
    finally:
        store.close()
    if st.engaged:
        click.echo(f"error: the kill switch is still engaged: {st.reason}", err=True)
        sys.exit(1)
    click.echo("kill switch reset")


# -- breaker -----------------------------------------------------------------------------------------

@cli.group("breaker", invoke_without_command=True)
@click.pass_context
def breaker_grp(ctx):
    """Circuit breaker and trading state (ACTIVE / REDUCING / HALTED). No subcommand: status."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(breaker_status)


def _breaker(store):
    from ..safety.breaker import Breaker
    return Breaker(store.home, store)


def _print_breaker(st, m=None, as_json=False):
    d = {"state": st.state, "trading_state": st.trading_state, "since_ts": st.since_ts, "reason": st.reason,
         "trips": st.trips, "live_allowed": st.live_allowed}
    if m is not None:
        d["measures"] = m
    if as_json:
        click.echo(json.dumps(d, default=str))
        return
    click.echo(f"breaker {st.state.upper()}   trading {st.trading_state}   live {'allowed' if st.live_allowed else 'refused'}")
    click.echo(f"  since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(st.since_ts / 1000))} UTC: {st.reason}")
    if m:
        click.echo("  " + "  ".join(f"{k}={v if v is None or isinstance(v, int) else round(v, 2)}" for k, v in m.items()))


@breaker_grp.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def breaker_status(ctx, as_json=False):
    """Show the breaker state without changing it."""
    from ..reports.first_run import breaker_note

    store = _store(ctx)
    b = _breaker(store)
    now = int(time.time() * 1000)
    _print_breaker(b.status(now), b.measure(now), as_json)
    store.close()
    note = None if as_json else breaker_note(store.home, now)
    if note:
        import textwrap

        click.echo(textwrap.fill(note, 100, initial_indent="  ", subsequent_indent="  "))


@breaker_grp.command("check")
@click.option("--watch", is_flag=True, help="Keep checking every --every seconds until interrupted.")
@click.option("--every", type=click.FloatRange(min=0.1), default=10, show_default=True)
@click.option("--count", type=click.IntRange(min=1), default=None, help="With --watch: stop after N checks.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def breaker_check(ctx, watch, every, count, as_json):
    """Evaluate the breaker once (trip on problems, recover over time); --watch to monitor."""
    store = _store(ctx)
    b = _breaker(store)
    n = 0
    try:
        while True:
            now = int(time.time() * 1000)
            st = b.check(now)
            _print_breaker(st, b.measure(now), as_json)
            n += 1
            if not watch or (count and n >= count):
                break
            time.sleep(every)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()


@breaker_grp.command("trip")
@click.option("--reason", default="manual trip", show_default=True)
@click.pass_context
def breaker_trip(ctx, reason):
    """Open the breaker now (live stops, paper continues). Needs no PIN: it only reduces risk."""
    store = _store(ctx)
    _print_breaker(_breaker(store).trip(reason, int(time.time() * 1000)))
    store.close()
    _tell_agent(ctx, "trip", reason)


def _tell_agent(ctx, op: str, reason: str) -> None:
    """A tightening applies to the running trading agent too (its policy is in memory, not in these files)."""
    from ..agent import protocol
    from ..agent.paths import AgentPaths

    paths = AgentPaths.for_home(StateHome.resolve(ctx.obj.get("home")).root)
    if not protocol.agent_alive(paths):
        return
    try:
        ans = protocol.call(paths, op, {"reason": reason}, timeout_s=15)
        click.echo(f"trading agent: {(ans.get('data') or {}).get('changed') or ans.get('message')}")
    except (protocol.AgentUnavailable, OSError, ValueError) as e:
        click.echo(f"trading agent: not told ({e}); run `qts agent {op if op != 'trip' else 'halt'}`", err=True)


@breaker_grp.command("state")
@click.argument("target", type=click.Choice(["ACTIVE", "REDUCING", "HALTED"], case_sensitive=False))
@click.pass_context
@_approval_errors
def breaker_state(ctx, target):
    """Set the trading state. Restricting is free; loosening asks for the PIN on the terminal."""
    target = target.upper()
    store = _store(ctx)
    b = _breaker(store)
    now = int(time.time() * 1000)
    from ..safety.breaker import STRICTNESS

    key = None
    if STRICTNESS[target] < STRICTNESS[b.status(now).trading_state]:
        from ..safety.approve import unlock_from_terminal

        key = unlock_from_terminal(store, f"PIN to loosen trading to {target}: ")
    _print_breaker(b.set_trading_state(target, now, signing_key=key))
    store.close()
    if target in ("HALTED", "REDUCING"):
        _tell_agent(ctx, "halt" if target == "HALTED" else "reduce", "qts breaker state")
