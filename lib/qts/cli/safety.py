"""``qts`` commands of the safety kernel: kill switch, breaker, orders through the gate."""

from __future__ import annotations

import json
import re
import sys
import time

import click

from ..paths import StateHome
from .base import _settings, cli
from .errors import InputError


def _approval_errors(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from ..safety.approve import ApprovalError
        from ..safety.tty import PROMPT_ENDED, SecretCancelled

        try:
            return fn(*a, **kw)
        except ApprovalError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except PROMPT_ENDED as e:  # no terminal, Ctrl-C / Ctrl-D at a prompt, two PIN entries that differ
            msg = str(e) if "nothing was changed" in str(e) else f"{e}; nothing was changed"
            click.echo(("cancelled: " if isinstance(e, SecretCancelled) else "error: ") + msg, err=True)
            sys.exit(2)
    return wrapper


def _store(ctx):
    from ..store import Store

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


# -- orders ------------------------------------------------------------------------------------------

class NumbersMayBeNegative(click.Command):
    """Reads ``-1`` or ``-1e30`` as a number, not as an unknown option, so a negative amount reaches the gate
    and gets the same clear refusal as zero. Any other unknown option is still an error."""

    NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|-(inf|infinity|nan)", re.I)

    def __init__(self, *a, **kw):
        kw.setdefault("context_settings", {})["ignore_unknown_options"] = True
        super().__init__(*a, **kw)

    def parse_args(self, ctx, args):
        takes_value = {o for p in self.get_params(ctx) if isinstance(p, click.Option) and not p.is_flag
                       for o in p.opts + p.secondary_opts}
        known = {o for p in self.get_params(ctx) for o in p.opts + p.secondary_opts}
        rest = iter(args)
        for a in rest:
            name = a.split("=", 1)[0]
            if a == "--":
                break
            if name in takes_value and "=" not in a:
                next(rest, None)  # the option's value, whatever it looks like
            elif a.startswith("-") and not self.NUMBER.fullmatch(a) and name not in known:
                raise click.NoSuchOption(name, ctx=ctx)
        return super().parse_args(ctx, args)


@cli.command("order", cls=NumbersMayBeNegative)
@click.argument("side", type=click.Choice(["buy", "sell"]))
@click.argument("symbol")
@click.argument("amount", type=float)
@click.option("--limit", "limit_price", type=float, default=None, help="Limit price (default: market order).")
@click.option("--dry-run", is_flag=True, help="Only ask the gate for its verdict; place nothing.")
@click.option("--client-order-id", default=None,
              help="Your id for this order (retrying with the same id can never place it twice). "
                   "Default: a new id.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def order_cmd(ctx, side, symbol, amount, limit_price, dry_run, client_order_id, as_json):
    """Place one order through the gate. AMOUNT is in base units.

    Paper (the default): the order trades in the market of the last paper session, at its current
    cycle: the price the loop recorded there (the same replay or generated market, or the exchange's
    live public data). Before any paper session it is refused with NO_PAPER_SESSION and how to start
    one. Text output shows every adjustment the gate made (requested -> sent, and why). With
    PAPER_TRADING=false it goes to the exchange, and the gate's live checks (breaker, PIN grant,
    scope) apply. The verdict (allowed, or the refusal's reason code) is printed and logged to
    logs/pre_trade.json. Exit code 3 when refused.
    """
    from ..broker.models import OrderIntent
    from ..engine.session_tools import paper_tools, session_feed

    settings = _settings(ctx)
    try:
        import secrets

        if client_order_id and not re.fullmatch(r"[A-Za-z0-9_.:/-]{1,36}", client_order_id):
            raise ValueError("--client-order-id: 1-36 characters of letters, digits and _.:/-")
        coid = client_order_id or f"qtsc{int(time.time() * 1000):x}{secrets.token_hex(6)}"
        intent = OrderIntent(symbol.upper(), side, amount, type="limit" if limit_price else "market",
                             price=limit_price, source="cli", reason="manual order", client_order_id=coid)
    except ValueError as e:
        raise InputError(str(e)) from None
    if not settings.PAPER_TRADING:
        _live_order(settings, intent, client_order_id or coid, dry_run, as_json)
        return
    store = _store(ctx)
    if not store.one("SELECT 1 FROM decisions WHERE mode='paper' LIMIT 1"):
        # a paper order trades in the market of a paper session (its feed, seed and clock): without one there
        # is no market to trade in, and guessing one would fill at prices the loop never sees
        store.close()
        out = {"accepted": False, "allowed": False, "reason_code": NO_PAPER_SESSION, "code": NO_PAPER_SESSION,
               "message": NO_PAPER_SESSION_HINT, "client_order_id": coid}
        click.echo(json.dumps(out, indent=2) if as_json else f"REFUSED {NO_PAPER_SESSION}: {NO_PAPER_SESSION_HINT}")
        sys.exit(3)
    try:
        gate, _ = paper_tools(settings, store, session_feed(settings, store))
    except Exception as e:
        store.close()
        raise click.ClickException(f"cannot reach the market: {e.__class__.__name__}: {str(e)[:200]}") from None
    if dry_run:
        v = gate.evaluate(intent)
        out = {"allowed": v.allowed, "code": v.code, "message": v.message, "adjustments": v.adjustments,
               "amount": v.intent.amount if v.intent else None, "requested": amount}
    else:
        out = gate.submit(intent).to_dict()
        sent = store.one("SELECT amount FROM orders WHERE client_order_id=?", (out["client_order_id"],))
        out.update(requested=amount, amount=sent["amount"] if sent else None)
    store.close()
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    elif dry_run:
        click.echo(("ALLOWED" if out["allowed"] else f"REFUSED {out['code']}") + f": {out['message']}")
    else:
        click.echo((f"{out['status'].upper()} {side} {symbol} {out['filled']:.6g}"
                    + (f" @ {out['avg_price']:.2f}" if out.get("avg_price") else ""))
                   if out["accepted"] else f"REFUSED {out['reason_code']}: {out['message']}")
    if not as_json:
        for line in adjustment_lines(amount, out.get("amount"), out.get("adjustments") or []):
            click.echo(line)
    ok = out.get("allowed", out.get("accepted"))
    sys.exit(0 if ok else 3)


NO_PAPER_SESSION = "NO_PAPER_SESSION"
NO_PAPER_SESSION_HINT = ("there is no paper session yet: a paper order trades in the market of the last paper "
                         "session, at its current cycle. Start one with `qts once` (the generated market, offline), "
                         "`qts once --data DIR` (candle files) or `qts once --live-data` (the exchange's public data), "
                         "then place the order")


def adjustment_lines(requested: float, sent: float | None, adjustments: list) -> list[str]:
    """What the gate changed, for a trader reading text output: requested -> sent, then each step and why.
    Nothing when the order went out as asked."""
    changed = sent is not None and abs(sent - requested) > 1e-15
    if not changed and not adjustments:
        return []
    lines = [f"  requested {requested:.8g} -> sent {sent:.8g}: the gate adjusted the amount" if changed
             else f"  requested {requested:.8g}; the gate noted:"]
    lines += [f"    {a}" for a in adjustments]
    return lines


def _live_order(settings, intent, caller_id: str, dry_run: bool, as_json: bool) -> None:
    """A live order is an intent sent to the trading agent; it decides (the one gate) and answers."""
    from ..agent import protocol
    from ..agent.paths import AgentPaths

    if dry_run:
        raise InputError("--dry-run is paper-only: the agent decides live orders when they are sent")
    paths = AgentPaths.for_home(settings.QTS_HOME)
    params = {"symbol": intent.symbol, "side": intent.side, "amount": intent.amount, "type": intent.type,
              "client_order_id": caller_id, "reason": intent.reason}
    if intent.price is not None:
        params["price"] = intent.price
    try:
        ans = protocol.call(paths, "order", params, timeout_s=60)
    except protocol.AgentUnavailable as e:
        out = {"accepted": False, "reason_code": "NO_AGENT", "message": str(e), "client_order_id": caller_id}
    except (OSError, ValueError) as e:
        out = {"accepted": False, "reason_code": "NO_AGENT", "message": f"the agent did not answer: {e}",
               "client_order_id": caller_id}
    else:
        d = ans.get("data") or {}
        out = {**d, "accepted": bool(ans.get("ok")), "reason_code": d.get("reason_code") or (None if ans.get("ok") else
                                                                                              ans.get("code")),
               "message": ans.get("message") or d.get("message", "")}
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    elif out.get("accepted"):
        click.echo(f"LIVE {str(out.get('status', '')).upper()} {intent.side} {intent.symbol} {out.get('filled', 0):.8g}"
                   + (f" @ {out['avg_price']:.8g}" if out.get("avg_price") else "")
                   + ("  (duplicate: this client order id was already sent; this is its answer)" if out.get("duplicate") else ""))
    else:
        click.echo(f"REFUSED {out.get('reason_code')}: {out.get('message')}")
    sys.exit(0 if out.get("accepted") else 3)


# -- approvals (human only: the PIN is read from the terminal) -------------------------------------------

@cli.group("approve")
def approve_grp():
    """Human approvals with the PIN, typed in YOUR OWN terminal (read from /dev/tty, never echoed).

    The assistant cannot run these: it has no terminal, and the PIN never passes through the chat.
    """


@approve_grp.command("set-pin")
@click.pass_context
@_approval_errors
def approve_set_pin(ctx):
    """Set the PIN, or change it (asks for the current one). A new PIN key waits a cool-down before live."""
    from ..safety.approve import set_pin_from_terminal

    store = _store(ctx)
    out = set_pin_from_terminal(store)
    store.close()
    click.echo(f"PIN {out['origin']}; key fingerprint {out['fingerprint'][:12]}...")
    for w in out["warnings"]:
        click.echo(f"warning: {w}")
    click.echo("The trading agent trusts the key it is unlocked with at start: restart it (qts agent start) "
               "after changing the PIN.")


AGENT_LIVE = ("live trading is the trading agent's: start it in your own terminal with the grant, "
              "`qts agent start --max-order USD --max-daily USD` (or hooks/guard_approve.sh live ...), and loosen a "
              "running agent with `qts agent approve grant|order|resume ...`")


@approve_grp.command("live", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def approve_live(ctx):
    """Moved: live grants go to the trading agent (`qts agent start --max-order ... --max-daily ...`)."""
    click.echo(f"error: {AGENT_LIVE}", err=True)
    sys.exit(2)


@approve_grp.command("revoke")
@click.pass_context
def approve_revoke(ctx):
    """End live trading now: revoke the running agent's grant (no PIN needed: it only reduces risk)."""
    from ..agent import protocol
    from ..agent.paths import AgentPaths

    # the state home alone: a bad setting must not keep a revocation from reaching the agent
    paths = AgentPaths.for_home(StateHome.resolve(ctx.obj.get("home")).root)
    try:
        ans = protocol.call(paths, "revoke", {"reason": "qts approve revoke"}, timeout_s=30)
    except protocol.AgentUnavailable:
        click.echo("no trading agent is running: there is no live grant to revoke")
        return
    click.echo((ans.get("data") or {}).get("changed") or ans.get("message"))


@approve_grp.command("order", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def approve_order(ctx):
    """Moved: `qts agent approve order CLIENT_ORDER_ID --max-notional USD` (the agent checks it)."""
    click.echo("error: large live orders are approved in the trading agent: qts agent approve order "
               "CLIENT_ORDER_ID --max-notional USD", err=True)
    sys.exit(2)


@approve_grp.command("store-keys")
@click.pass_context
@_approval_errors
def approve_store_keys(ctx):
    """Store the exchange API key and secret encrypted under the PIN (recommended over environment
    variables, which every command the assistant runs can read). Live trading then asks for the PIN
    when it starts, on the terminal."""
    from ..safety import secret_store
    from ..safety.approve import ApprovalError, unlock_from_terminal
    from ..safety.tty import NoTerminal, read_secret

    settings = _settings(ctx)
    store = _store(ctx)
    key = unlock_from_terminal(store, "PIN: ")
    try:
        api_key = read_secret(f"{settings.EXCHANGE} API key: ")
        secret = read_secret(f"{settings.EXCHANGE} API secret: ")
    except NoTerminal as e:
        raise ApprovalError(str(e), exit_code=2) from None
    secret_store.store_keys(store.home, key, settings.EXCHANGE, api_key.strip(), secret.strip())
    store.event("approval", f"exchange keys for {settings.EXCHANGE} stored encrypted under the PIN", severity="warning")
    store.close()
    click.echo(f"exchange keys for {settings.EXCHANGE} stored encrypted in {secret_store.path(store.home)}.")
    click.echo("Remove EXCHANGE_API_KEY and EXCHANGE_SECRET from your environment and .env files.")


@approve_grp.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def approve_status(ctx, as_json):
    """The PIN (set, locked) and the live grant (the running trading agent's, if one runs)."""
    from ..agent import protocol
    from ..agent.paths import AgentPaths
    from ..safety.approve import now_ms
    from ..safety.pin import pin_status

    settings = _settings(ctx)
    from ..paths import StateHome

    st = pin_status(StateHome(settings.QTS_HOME), now=now_ms())
    paths = AgentPaths.for_home(settings.QTS_HOME)
    agent = protocol.read_status(paths)
    alive = protocol.agent_alive(paths, agent)
    grant = ((agent or {}).get("policy") or {}).get("grant") if alive else None
    out = {"pin": st, "agent_running": alive, "live_grant": grant}
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    click.echo(f"PIN        {st.get('state')}" + (f", locked {st.get('locked_remaining_s', 0):.0f}s" if st.get("locked") else ""))
    click.echo(f"agent      {'running' if alive else 'not running (qts agent start, in your own terminal)'}")
    click.echo("live grant " + (f"until {time.strftime('%H:%M UTC', time.gmtime(grant['expires_ts'] / 1000))}, "
                                f"{grant['max_order_usd']:g}/order, {grant['max_daily_usd']:g}/day, "
                                f"{', '.join(grant['symbols'])}" if grant else "none"))


# -- risk profile -----------------------------------------------------------------------------------------

@cli.group("risk")
def risk_grp():
    """The versioned risk profile: every limit the gate's risk layer enforces."""


@risk_grp.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def risk_show(ctx, as_json):
    """The profile in force (file, or the defaults when the file is missing or damaged)."""
    from ..safety.risk_profile import load_profile

    settings = _settings(ctx)
    store = _store(ctx)
    lp = load_profile(store.home, settings=settings)
    store.close()
    d = lp.profile.model_dump()
    if as_json:
        click.echo(json.dumps({"version": lp.version, "source": lp.source, "problem": lp.problem, "profile": d}, indent=2))
        return
    click.echo(f"risk profile v{lp.version} ({lp.source}{': ' + lp.problem if lp.problem else ''})")
    for k, v in d.items():
        click.echo(f"  {k:30} {v}")


@risk_grp.command("set")
@click.argument("changes", nargs=-1, required=True, metavar="FIELD=VALUE...")
@click.pass_context
@_approval_errors
def risk_set(ctx, changes):
    """Change limits. Tightening is free; loosening asks for the PIN on the terminal."""
    from ..safety.approve import now_ms, unlock_from_terminal
    from ..safety.risk_profile import (ProfileChangeRefused, RiskProfileError, is_loosening, load_profile,
                                      save_profile, validate_profile)

    settings = _settings(ctx)
    store = _store(ctx)
    cur = load_profile(store.home, settings=settings)
    data = cur.profile.model_dump()
    for c in changes:
        k, sep, v = c.partition("=")
        if not sep or k not in data:
            raise InputError(f"{c!r}: expected FIELD=VALUE with FIELD one of {', '.join(data)}")
        try:
            data[k] = json.loads(v)
        except json.JSONDecodeError:
            data[k] = v
    try:
        new = validate_profile(data)
    except RiskProfileError as e:
        raise InputError(str(e)) from None
    loosened = is_loosening(cur.profile, new)
    key = unlock_from_terminal(store, f"PIN to loosen {', '.join(loosened)}: ") if loosened else None
    log = lambda kind, msg, d=None: store.event("risk", msg, "warning", d)  # noqa: E731
    try:  # a loosening is signed with the unlocked key inside save_profile (approval file written there)
        saved = save_profile(store.home, new, log=log, now_ms=now_ms(), signing_key=key)
    except ProfileChangeRefused as e:
        raise InputError(str(e)) from None
    store.close()
    click.echo(f"risk profile v{saved.version} saved" + (f" (loosened with the PIN: {', '.join(loosened)})" if loosened else ""))
