"""``qts approve`` and ``qts risk``: what only a human does, with the PIN typed in their own terminal (set the
PIN, store exchange keys, loosen the risk profile); and the status of the approvals."""

from __future__ import annotations

import json
import sys
import time

import click

from ..paths import StateHome
from .base import _settings, _store, cli
from .errors import InputError, _approval_errors


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
