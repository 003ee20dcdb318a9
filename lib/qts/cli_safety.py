"""``qts`` commands of the safety kernel: kill switch, breaker, orders through the gate."""

from __future__ import annotations

import json
import sys
import time

import click

from .cli import InputError, _settings, cli
from .paths import StateHome


def _store(ctx):
    from .store import Store

    return Store.open(StateHome.resolve(ctx.obj.get("home")))


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
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def kill_engage(ctx, reason, as_json=False):
    """Engage the switch and flatten (the default action)."""
    from .safety import kill_switch as ks

    home = StateHome.resolve(ctx.obj.get("home")).ensure()
    t0 = time.perf_counter()
    # 1. the flag first, before anything that could fail (settings, database)
    step = ks.engage(home, reason)
    out = {"flag_ms": round(step["flag_ms"], 2), "flag": str(home.kill_flag)}
    try:
        store = _store(ctx)
        store.event("kill_switch", f"engaged: {reason}", severity="critical",
                    data={"action": "engaged", "reason": reason}, ts=step["ts"])
    except Exception as e:
        store = None
        out["database_error"] = f"{e.__class__.__name__}: {e}"
    out["loop"] = ks.stop_loop(home)
    out["halted_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    flat_ok = False
    if store is not None:
        try:
            settings = _settings(ctx)
            from .safety.session_tools import paper_tools

            gate, broker = paper_tools(settings, store)
            rep = ks.flatten(gate, broker)
            out.update({"cancelled": rep.cancelled, "closed": rep.closed, "failed": rep.failed,
                        "flatten_ms": round(rep.ms, 2)})
            flat_ok = rep.flat
            store.event("kill_switch", f"flatten: {len(rep.cancelled)} cancelled, {len(rep.closed)} closed, "
                                       f"{len(rep.failed)} failed", severity="critical",
                        data={"action": "flatten", **{k: out[k] for k in ("cancelled", "closed", "failed")}})
        except Exception as e:
            out["failed"] = [{"flatten": f"{e.__class__.__name__}: {e}"}]
        store.close()
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        click.echo(f"KILL SWITCH ENGAGED  flag set in {out['flag_ms']:.1f} ms: {out['flag']}")
        lp = out["loop"]
        click.echo(f"  loop: {'stopped pid ' + str(lp['pid']) if lp['pid'] else 'none running'}"
                   + ("" if lp["stopped"] else "  (STILL RUNNING: its orders are refused by the gate)"))
        for c in out.get("cancelled", []):
            click.echo(f"  cancelled {c}")
        for c in out.get("closed", []):
            click.echo(f"  closed {c['symbol']} {c['amount']:.6g} @ {c['price']:.2f}")
        for f in out.get("failed", []):
            click.echo(f"  NOT DONE: {f}  -> the flag stays set; run the kill switch again to retry")
        click.echo("  flat." if flat_ok else "  not confirmed flat: see above.")
        click.echo("  Reset needs the PIN, in your own terminal: qts kill-switch reset")
    sys.exit(0 if flat_ok else 1)


@kill_switch_grp.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def kill_status(ctx, as_json):
    """Is the switch engaged, since when and why."""
    from .safety import kill_switch as ks

    store = _store(ctx)
    st = ks.status(store.home, store)
    store.close()
    if as_json:
        click.echo(json.dumps(st.__dict__))
    else:
        click.echo(("ENGAGED: " if st.engaged else "clear: ") + st.reason)


@kill_switch_grp.command("reset")
@click.pass_context
def kill_reset(ctx):
    """Release the switch. Asks for the PIN on the terminal (never as an argument)."""
    from .safety import kill_switch as ks
    from .safety.approve import unlock_from_terminal

    store = _store(ctx)
    key = unlock_from_terminal(store, "PIN to reset the kill switch: ")
    ks.reset(store.home, store, key)
    st = ks.status(store.home, store)
    store.close()
    click.echo("kill switch reset" if not st.engaged else f"still engaged: {st.reason}")


# -- breaker -----------------------------------------------------------------------------------------

@cli.group("breaker", invoke_without_command=True)
@click.pass_context
def breaker_grp(ctx):
    """Circuit breaker and trading state (ACTIVE / REDUCING / HALTED). No subcommand: status."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(breaker_status)


def _breaker(store):
    from .safety.breaker import Breaker
    from .safety.grants import revoke_live_grant

    return Breaker(store.home, store, on_trip=lambda st: revoke_live_grant(store.home))


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
    store = _store(ctx)
    b = _breaker(store)
    now = int(time.time() * 1000)
    _print_breaker(b.status(now), b.measure(now), as_json)
    store.close()


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


@breaker_grp.command("state")
@click.argument("target", type=click.Choice(["ACTIVE", "REDUCING", "HALTED"], case_sensitive=False))
@click.pass_context
def breaker_state(ctx, target):
    """Set the trading state. Restricting is free; loosening asks for the PIN on the terminal."""
    target = target.upper()
    store = _store(ctx)
    b = _breaker(store)
    now = int(time.time() * 1000)
    from .safety.breaker import STRICTNESS

    approved = False
    if STRICTNESS[target] < STRICTNESS[b.status(now).trading_state]:
        from .safety.approve import unlock_from_terminal

        unlock_from_terminal(store, f"PIN to loosen trading to {target}: ")
        approved = True
    _print_breaker(b.set_trading_state(target, now, approved=approved))
    store.close()


# -- orders ------------------------------------------------------------------------------------------

@cli.command("order")
@click.argument("side", type=click.Choice(["buy", "sell"]))
@click.argument("symbol")
@click.argument("amount", type=float)
@click.option("--limit", "limit_price", type=float, default=None, help="Limit price (default: market order).")
@click.option("--dry-run", is_flag=True, help="Only ask the gate for its verdict; place nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def order_cmd(ctx, side, symbol, amount, limit_price, dry_run, as_json):
    """Place one order through the gate (paper unless live is approved). AMOUNT is in base units.

    Paper orders fill at the last price the loop recorded for SYMBOL. The verdict (allowed or the
    refusal's reason code) is printed and logged to logs/pre_trade.json.
    """
    from .broker.models import OrderIntent
    from .safety.session_tools import paper_tools

    settings = _settings(ctx)
    try:
        intent = OrderIntent(symbol.upper(), side, amount, type="limit" if limit_price else "market",
                             price=limit_price, source="cli", reason="manual order")
    except ValueError as e:
        raise InputError(str(e)) from None
    store = _store(ctx)
    gate, _ = paper_tools(settings, store)
    if dry_run:
        v = gate.evaluate(intent)
        out = {"allowed": v.allowed, "code": v.code, "message": v.message, "adjustments": v.adjustments,
               "amount": v.intent.amount if v.intent else None}
    else:
        out = gate.submit(intent).to_dict()
    store.close()
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    elif dry_run:
        click.echo(("ALLOWED" if out["allowed"] else f"REFUSED {out['code']}") + f": {out['message']}")
    else:
        click.echo((f"{out['status'].upper()} {side} {symbol} {out['filled']:.6g}"
                    + (f" @ {out['avg_price']:.2f}" if out.get("avg_price") else ""))
                   if out["accepted"] else f"REFUSED {out['reason_code']}: {out['message']}")
    ok = out.get("allowed", out.get("accepted"))
    sys.exit(0 if ok else 3)
