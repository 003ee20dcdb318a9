"""``qts agent``: start, watch, tighten and (with the PIN) loosen the trading agent."""

from __future__ import annotations

import json
import sys
import time

import click

from .base import _settings, cli
from .errors import InputError


def _paths(ctx):
    from ..agent.paths import AgentPaths

    return AgentPaths.for_home(_settings(ctx).QTS_HOME)


def _call(paths, op, params=None, timeout_s=60.0):
    from ..agent import protocol

    try:
        return protocol.call(paths, op, params or {}, timeout_s=timeout_s)
    except protocol.AgentUnavailable as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(3)


@cli.group("agent")
def agent_grp():
    """The trading agent: the one process that places LIVE orders.

    The human starts it in their own terminal (`qts agent start`); it asks for the PIN there, holds
    the exchange keys in memory only, and takes order intents from the assistant through a spool
    folder in the project. Anyone may tighten its policy (`halt`, `reduce`, `revoke`, `lower`, the kill
    switch); loosening needs the PIN (`qts agent approve ...`, in the human's terminal).
    """


@agent_grp.command("start", context_settings={"ignore_unknown_options": False})
@click.option("--no-loop", is_flag=True, help="Serve orders only; do not run the live strategy loop.")
@click.option("--max-order", type=click.FloatRange(min=1), default=None, help="Live grant: USD per order.")
@click.option("--max-daily", type=click.FloatRange(min=1), default=None, help="Live grant: USD of buys per day.")
@click.option("--max-daily-loss", type=click.FloatRange(min=0), default=None,
              help="Stop entries when today's trading loss reaches this many USD.")
@click.option("--hours", type=click.FloatRange(min=0.01, max=24), default=8, show_default=True,
              help="Live grant: how long it lasts.")
@click.option("--symbols", default=None, help="Live grant: comma-separated (default: SYMBOLS).")
@click.option("--accept-unconfined", is_flag=True,
              help="Start although Claude Code's sandbox is not configured: acknowledged with the PIN, and the "
                   "guarantee in the README does not hold.")
@click.option("--accept-unverified-key", is_flag=True,
              help="For exchanges that do not report key permissions: you have checked yourself that the key "
                   "cannot withdraw.")
@click.pass_context
def agent_start(ctx, no_loop, max_order, max_daily, max_daily_loss, hours, symbols, accept_unconfined,
                accept_unverified_key):
    """Start the trading agent HERE, in your own terminal (it asks for the PIN).

    It replaces this process with an isolated Python (-I, an allowlisted environment), disables
    tracing and core dumps of itself, refuses to run as root or while traced, unlocks the exchange keys
    from the key store, restores its policy from its journal (or starts HALTED when anything is missing
    or fails to verify) and serves until Ctrl-C. --max-order/--max-daily give the live grant now.
    """
    from ..agent import main as agent_main

    settings = _settings(ctx)
    argv = ["--home", str(settings.QTS_HOME), "--hours", str(hours)]
    for flag, v in (("--max-order", max_order), ("--max-daily", max_daily), ("--max-daily-loss", max_daily_loss),
                    ("--symbols", symbols)):
        if v is not None:
            argv += [flag, str(v)]
    argv += [f for f, on in (("--no-loop", no_loop), ("--accept-unconfined", accept_unconfined),
                             ("--accept-unverified-key", accept_unverified_key)) if on]
    sys.exit(agent_main.start(argv, settings))


@agent_grp.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agent_status(ctx, as_json):
    """Is an agent running for this state home, and what does it allow (read from its own status file)."""
    from ..agent import protocol

    paths = _paths(ctx)
    st = protocol.read_status(paths)
    alive = protocol.agent_alive(paths, st)
    if as_json:
        click.echo(json.dumps({"running": alive, "status": st}, default=str))
        sys.exit(0 if alive else 1)
    if not alive:
        click.echo("no trading agent is running for this state home" + (f" (last state: {st.get('state')})" if st else ""))
        click.echo(f"  {protocol.START_HINT}")
        sys.exit(1)
    click.echo(f"trading agent running: pid {st['pid']}, instance {st['instance']}, since "
               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st['started']))}")
    click.echo(f"  exchange {st['exchange']} account {st['account']}" + (f" at {st['exchange_url']}" if st.get("exchange_url") else ""))
    click.echo(f"  policy   {st['policy_summary']}")
    click.echo(f"  confined {'yes' if st.get('confined') else 'NO (acknowledged with the PIN at start)'}; "
               f"loop {'on' if st.get('loop') else 'off'}; orders sent {st.get('orders_sent')}")
    click.echo(f"  code     {st['code_hash'][:16]}...  PIN key {st['key_fingerprint'][:16]}...")
    for e in st.get("events", [])[-5:]:
        click.echo(f"  {time.strftime('%H:%M:%S', time.localtime(e['ts'] / 1000))} {e['message']}")


def _tighten(ctx, op, params):
    paths = _paths(ctx)
    ans = _call(paths, op, params)
    d = ans.get("data") or {}
    click.echo(d.get("changed", ans.get("message")) if ans.get("ok") else f"refused: {ans.get('message')}")
    if d.get("policy"):
        click.echo(f"  policy now: {d['policy']}")
    sys.exit(0 if ans.get("ok") else 3)


@agent_grp.command("halt")
@click.option("--reason", default="manual", show_default=True)
@click.pass_context
def agent_halt(ctx, reason):
    """Trading HALTED: nothing but the kill switch's flattening passes. No PIN needed."""
    _tighten(ctx, "halt", {"reason": reason})


@agent_grp.command("reduce")
@click.option("--reason", default="manual", show_default=True)
@click.pass_context
def agent_reduce(ctx, reason):
    """Trading REDUCING: only orders that reduce exposure pass. No PIN needed."""
    _tighten(ctx, "reduce", {"reason": reason})


@agent_grp.command("revoke")
@click.option("--reason", default="manual", show_default=True)
@click.pass_context
def agent_revoke(ctx, reason):
    """End the live grant now. No PIN needed."""
    _tighten(ctx, "revoke", {"reason": reason})


def _kv(pairs) -> dict:
    from .base import _parse_params

    return _parse_params(pairs, option="")


@agent_grp.command("lower")
@click.argument("changes", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.pass_context
def agent_lower(ctx, changes):
    """Lower limits (max_daily_loss_usd, collar_bps, order_approval_usd, max_orders_per_minute, or the
    grant's max_order_usd, max_daily_usd, symbols, hours). Raising any of them needs the PIN."""
    _tighten(ctx, "lower", _kv(changes))


@agent_grp.command("account")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agent_account(ctx, as_json):
    """The LIVE account as the exchange reports it (balances, open orders, today's fills), from the agent."""
    ans = _call(_paths(ctx), "account")
    d = ans.get("data") or {}
    if as_json or not ans.get("ok"):
        click.echo(json.dumps(d if ans.get("ok") else ans, indent=2, default=str))
        sys.exit(0 if ans.get("ok") else 3)
    click.echo(f"LIVE account {d['account']} on {d['exchange']}")
    for a, v in d["balances"].items():
        click.echo(f"  {a:8} {v:.8g}")
    click.echo(f"  open orders: {len(d['open_orders'])}; fills today: {len(d['fills_today'])}; "
               f"buys today {d['day_spend']:.2f} USD; today's result {d['day_pnl']:+.2f} USD")
    for o in d["open_orders"]:
        click.echo(f"    {o['symbol']} {o['side']} {o['amount']} @ {o['price']} {o['client_order_id']}"
                   + ("" if o["ours"] else "  (not placed by the agent)"))


# -- loosening: the human, with the PIN ----------------------------------------------------------------

def _unlock_here(home):
    """The PIN from this terminal (never argv, env or the chat), and the signing key it unlocks; exits
    2 without a terminal, when cancelled (Ctrl-C, Ctrl-D) or on unusable input, 1 when wrong."""
    from ..safety import pin as pinmod
    from ..safety.tty import NoTerminal, SecretCancelled, SecretInputError, read_secret

    try:
        secret = read_secret("PIN: ")
    except (NoTerminal, SecretInputError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except (SecretCancelled, KeyboardInterrupt):
        click.echo("cancelled; nothing done", err=True)
        sys.exit(2)
    try:
        return pinmod.unlock(home, secret)
    except pinmod.PinError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    finally:
        secret = None


def _approve(ctx, action: str, params: dict) -> None:
    """Ask the agent for a challenge, show it, read the PIN on this terminal, sign, send."""
    from ..agent import challenge, protocol
    from ..paths import StateHome

    settings = _settings(ctx)
    paths = _paths(ctx)
    st = protocol.read_status(paths) or {}
    ans = _call(paths, "challenge", {"action": action, "params": params})
    if not ans.get("ok"):
        click.echo(f"refused: {ans.get('message')}", err=True)
        sys.exit(3)
    ch = ans["data"]["challenge"]
    # sign only what THIS command asked for: an answer can come through the spool folder, which the assistant
    # can write, and a forged challenge could carry its own action, parameters or agent
    expect = {"action": action, "params": json.loads(json.dumps(params)), "home": str(paths.home_root)}
    if st.get("instance"):
        expect["instance"] = st["instance"]
    wrong = [k for k, v in expect.items() if ch.get(k) != v]
    if wrong:
        click.echo(f"refused: the challenge received does not match this request ({', '.join(wrong)}): nothing "
                   "signed. Someone may be answering in the agent's place; check `qts agent status`.", err=True)
        sys.exit(3)
    click.echo(f"To approve: {action} {json.dumps(params, sort_keys=True) if params else ''}")
    click.echo(f"  agent instance {ch['instance']}, account {ch['account']}, state home {ch['home']}")
    click.echo(f"  policy now: {ans['data'].get('policy_summary')}")
    key = _unlock_here(StateHome(settings.QTS_HOME))
    if st.get("key_fingerprint") and st["key_fingerprint"] != key.fingerprint:
        click.echo("error: the PIN key in the key store is not the one the running agent was unlocked with "
                   "(the key store changed since it started): nothing signed", err=True)
        sys.exit(1)
    signed = challenge.sign(key, ch, min(ch["expires_ts"], int(time.time() * 1000) + 110_000))
    key = None
    res = _call(paths, "loosen", signed)
    d = res.get("data") or {}
    if res.get("ok"):
        click.echo(d.get("changed") or ("approved " + json.dumps(d, default=str)))
        if d.get("policy"):
            click.echo(f"  policy now: {d['policy']}")
    else:
        click.echo(f"refused: {res.get('message')}", err=True)
    sys.exit(0 if res.get("ok") else 3)


@agent_grp.group("approve")
def approve_grp():
    """Loosen the agent's policy with the PIN, typed here (your own terminal, never the chat).

    Each approval is a signature over a single-use challenge from the running agent, bound to its
    instance, this state home, the exchange account and its current policy, valid for under two
    minutes. The agent checks it against the PIN key it was unlocked with.
    """


@approve_grp.command("resume")
@click.pass_context
def approve_resume(ctx):
    """Trading ACTIVE again and the breaker closed (after a halt, a trip or a strict start)."""
    _approve(ctx, "resume", {})


@approve_grp.command("reset-kill-switch")
@click.pass_context
def approve_reset_kill(ctx):
    """Release the kill switch in the agent. (The paper side: qts kill-switch reset.)"""
    _approve(ctx, "reset_kill_switch", {})


@approve_grp.command("grant")
@click.option("--max-order", type=click.FloatRange(min=1), required=True, help="USD per order.")
@click.option("--max-daily", type=click.FloatRange(min=1), required=True, help="USD of buys per day.")
@click.option("--symbols", default=None, help="Comma-separated (default: SYMBOLS).")
@click.option("--hours", type=click.FloatRange(min=0.01, max=24), default=8, show_default=True)
@click.option("--max-daily-loss", type=click.FloatRange(min=0), default=None)
@click.pass_context
def approve_grant(ctx, max_order, max_daily, symbols, hours, max_daily_loss):
    """A new live grant: per order, per day, which symbols, for how long."""
    p = {"max_order_usd": max_order, "max_daily_usd": max_daily, "hours": hours,
         "symbols": symbols or ",".join(_settings(ctx).SYMBOLS)}
    if max_daily_loss is not None:
        p["max_daily_loss_usd"] = max_daily_loss
    _approve(ctx, "grant", p)


@approve_grp.command("limits")
@click.argument("changes", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.pass_context
def approve_limits(ctx, changes):
    """Set limits, higher ones included: max_daily_loss_usd, collar_bps, order_approval_usd, max_orders_per_minute."""
    _approve(ctx, "limits", _kv(changes))


@approve_grp.command("risk")
@click.argument("changes", nargs=-1, required=True, metavar="FIELD=VALUE...")
@click.pass_context
def approve_risk(ctx, changes):
    """Change the agent's risk profile (qts risk show lists the fields), looser values included."""
    _approve(ctx, "risk_profile", _kv(changes))


@approve_grp.command("order")
@click.argument("client_order_id")
@click.option("--max-notional", type=click.FloatRange(min=1), required=True)
@click.pass_context
def approve_order(ctx, client_order_id, max_notional):
    """One large order (above the approval threshold), by its client order id: single use, 15 minutes."""
    _approve(ctx, "approve_order", {"client_order_id": client_order_id, "max_notional": max_notional})


@agent_grp.command("stop")
@click.pass_context
def agent_stop(ctx):
    """Stop the agent from another terminal (needs the PIN; or press Ctrl-C in the agent's own terminal)."""
    _approve(ctx, "stop", {})


@agent_grp.command("confine")
@click.option("--write", is_flag=True, help="Write the missing settings into the project's .claude/settings.json.")
@click.option("--project", type=click.Path(file_okay=False), default=None,
              help="The project folder (default: CLAUDE_PROJECT_DIR, else the state home's parent).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agent_confine(ctx, write, project, as_json):
    """Check (or --write) the Claude Code sandbox settings that live trading requires."""
    import os

    from ..agent import confinement

    settings = _settings(ctx)
    argv = ["--project", project or os.environ.get("CLAUDE_PROJECT_DIR") or str(settings.QTS_HOME.parent)]
    argv += (["--write"] if write else []) + (["--json"] if as_json else [])
    sys.exit(confinement.cli_main(argv))


@agent_grp.command("import-keys")
@click.pass_context
def agent_import_keys(ctx):
    """Move EXCHANGE_API_KEY / EXCHANGE_SECRET from your environment or .env into the key store,
    encrypted under the PIN (asks for it here). Then remove them from the environment."""
    from ..paths import StateHome
    from ..safety import secret_store

    settings = _settings(ctx)
    if not settings.has_keys:
        raise InputError("EXCHANGE_API_KEY and EXCHANGE_SECRET are not set in the environment or the state home's .env")
    home = StateHome(settings.QTS_HOME)
    key = _unlock_here(home)
    secret_store.store_keys(home, key, settings.EXCHANGE, settings.EXCHANGE_API_KEY.get_secret_value(),
                            settings.EXCHANGE_SECRET.get_secret_value())
    click.echo(f"exchange keys for {settings.EXCHANGE} stored encrypted in the key store ({secret_store.path(home)}).")
    click.echo("Now remove EXCHANGE_API_KEY and EXCHANGE_SECRET from your environment and .env files: every command "
               "the assistant runs can read them there, and the agent ignores them for live trading.")
