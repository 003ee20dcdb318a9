"""``qts registry`` and ``qts promote``: the strategies that passed validation, their stages (backtested,
paper, live-ramp, live) and what moves them."""

from __future__ import annotations

import json
import sys

import click

from .base import _iso, cli
from .errors import InputError
from .research import _config, _data_options, _gates, _home, _load_candles, _now, _print_verdict, _say, _tty


# -- qts registry -------------------------------------------------------------------------------------------

@cli.group("registry")
def registry_grp():
    """The strategy registry: research -> backtested -> paper -> live-ramp (10/25/50/100%) -> live -> retired."""


def _load_registry(ctx):
    from ..registry import Registry

    return Registry.load(_home(ctx))


def _store_if_db(ctx):
    from ..store import Store

    home = _home(ctx)
    return Store.open(home)


@registry_grp.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include retired entries.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def registry_list(ctx, show_all, as_json):
    """Entries with their stage, expiry and expected out-of-sample figures."""
    from ..registry import capital_fraction

    reg = _load_registry(ctx)
    entries = [e for e in reg.entries if show_all or e.stage != "retired"]
    now = _now()
    if as_json:
        click.echo(json.dumps({"path": str(reg.path), "ok": reg.ok, "problem": reg.problem, "version": reg.version,
                               "entries": [{**e.model_dump(mode="json"), "expired": e.expired(now),
                                            "capital_fraction": capital_fraction(reg, e.strategy)
                                            if e.stage in ("live-ramp", "live") else 0.0} for e in entries]},
                              indent=2))
        return
    if not reg.ok:
        click.echo(f"REGISTRY UNREADABLE: {reg.problem}")
        click.echo("No strategy is live. `qts registry reset` moves the damaged file aside.")
        sys.exit(1)
    if not entries:
        click.echo(f"registry {reg.path}: no entries" + ("" if reg.exists else " (not created yet)") +
                   ". Add some: qts research --notes FILE --synthetic | qts backtest STRATEGY --validate --register")
        return
    click.echo(f"{'id':28} {'stage':26} {'expires':17} {'OOS Sharpe':>10} {'ret/day':>8} {'max DD':>7}  params")
    for e in entries:
        x = e.expected
        exp = "EXPIRED" if e.expired(now) else _iso(e.expires_ts)
        click.echo(f"{e.id:28} {e.stage_label():26} {exp:17} "
                   f"{(f'{x.sharpe:.2f}' if x and x.sharpe is not None else '-'):>10} "
                   f"{(f'{x.return_per_day_pct:+.3f}%' if x and x.return_per_day_pct is not None else '-'):>8} "
                   f"{(f'{x.max_drawdown_pct:.1f}%' if x and x.max_drawdown_pct is not None else '-'):>7}  "
                   f"{e.params}" + ("  [synthetic]" if e.validation and e.validation.data.synthetic else ""))


@registry_grp.command("show")
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def registry_show(ctx, entry_id, as_json):
    """One entry: expectations, validation, history, and what its next promotion needs."""
    from ..registry import RegistryError, capital_fraction, promotion_check

    reg = _load_registry(ctx)
    try:
        e = reg.get(entry_id)
    except RegistryError as err:
        raise click.ClickException(str(err)) from None
    nxt = {"backtested": "paper", "paper": "live-ramp", "live-ramp": "live" if e.ramp_step == 3 else "live-ramp"}
    assess = None
    store = None
    if e.stage in nxt:
        store = _store_if_db(ctx)
        assess = promotion_check(reg, store, e.id, nxt[e.stage], _now())
    frac = capital_fraction(reg, e.strategy, store=store) if e.stage in ("live-ramp", "live") else 0.0
    hist = [h for h in reg.versions() if h["entry_id"] == e.id]
    if store is not None:
        store.close()
    if as_json:
        click.echo(json.dumps({"entry": e.model_dump(mode="json"), "expired": e.expired(_now()),
                               "capital_fraction": frac, "next": assess.as_dict() if assess else None,
                               "history": hist}, indent=2, default=str))
        return
    click.echo(f"{e.id}: {e.strategy} {e.params}  on {e.symbol} {e.timeframe_minutes and int(e.timeframe_minutes)}m")
    click.echo(f"  stage {e.stage_label()} since {_iso(e.stage_since_ts)}; live capital fraction {frac:.0%}")
    click.echo(f"  created {_iso(e.created_ts)}, updated {_iso(e.updated_ts)}, expires {_iso(e.expires_ts)}"
               + ("  (EXPIRED: re-validate before any promotion)" if e.expired(_now()) else ""))
    if e.expected:
        x = e.expected
        click.echo("  expected (out of sample): " + ", ".join(f"{k} {v:.4g}" for k, v in x.model_dump().items()
                                                             if isinstance(v, (int, float)) and v is not None))
    if e.validation:
        v = e.validation
        click.echo(f"  validation {'PASS' if v.passed else 'FAIL'} ({'default gates' if v.strict_gates else 'LOOSER gates'}"
                   f", {'SYNTHETIC' if v.data.synthetic else 'real'} data {v.data.source or ''}): {v.summary[:300]}")
    if e.provenance.source:
        click.echo(f"  source {e.provenance.source}" + (f"; why: {e.provenance.rationale[:200]}" if e.provenance.rationale else ""))
    if assess:
        click.echo(f"  next: {assess.target}{'' if assess.next_step is None else f' (step {assess.next_step + 1})'}: "
                   f"{'ELIGIBLE' if assess.eligible else 'not yet'}")
        for c in assess.checks:
            click.echo(f"    [{'ok' if c.passed else '--'}] {c.message}")
    click.echo("  history:")
    for h in hist:
        click.echo(f"    v{h['version']} {_iso(h['ts'])} {h['action']}: {h['detail']}")


@registry_grp.command("retire")
@click.argument("entry_id")
@click.option("--reason", default="", help="Why (recorded).")
@click.pass_context
def registry_retire(ctx, entry_id, reason):
    """Retire an entry (from any stage; final; no PIN: it only reduces risk)."""
    from ..registry import RegistryError, retire

    store = _store_if_db(ctx)
    try:
        e = retire(_home(ctx), entry_id, store=store, reason=reason)
    except RegistryError as err:
        raise click.ClickException(str(err)) from None
    finally:
        store.close()
    click.echo(f"{e.id} retired")


@registry_grp.command("check")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def registry_check(ctx, as_json):
    """Demote live-ramp / live strategies whose step saw a breaker trip or whose realized results drifted
    out of tolerance (no PIN: reducing risk is free). Run it from cron, or after each live cycle."""
    from ..registry import supervise

    store = _store_if_db(ctx)
    try:
        done = supervise(_home(ctx), store)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(done, indent=2))
        return
    if not done:
        click.echo("nothing to do: every live-ramp / live strategy is within tolerance")
    for d in done:
        click.echo(f"{d['entry_id']}: {d['action']}: {d['reason']}")


@registry_grp.command("revalidate")
@click.argument("entry_id")
@_data_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def registry_revalidate(ctx, entry_id, data_dir, synthetic, symbol, timeframe, days, seed, gate_items, as_json):
    """Validate an entry again on fresh data (its recorded grid); a pass renews its 7-day expiry and its
    expectations, a failure blocks promotions and takes a live-ramp / live entry back to paper.
    --symbol and --timeframe default to the entry's."""
    from ..market.candles import timeframe_of
    from ..registry import RegistryError
    from ..research.pipeline import revalidate_entry

    reg = _load_registry(ctx)
    try:
        e = reg.get(entry_id)
    except RegistryError as err:
        raise click.ClickException(str(err)) from None
    src = click.get_current_context().get_parameter_source("symbol")
    if src is not None and src.name == "DEFAULT" and e.symbol:
        symbol = e.symbol
    if timeframe is None and e.timeframe_minutes:
        timeframe = timeframe_of(int(e.timeframe_minutes))
    candles, symbol, desc = _load_candles(ctx, data_dir, synthetic, symbol, timeframe, days, seed)
    if e.symbol and symbol != e.symbol:
        raise InputError(f"{entry_id} trades {e.symbol}, not {symbol}")
    gates = _gates(gate_items)
    if not as_json:
        _say(f"re-validating {entry_id} on {desc} ...")
    try:
        out, rep = revalidate_entry(_home(ctx), entry_id, candles, gates=gates, config=_config(ctx),
                                    data={"symbol": symbol, "synthetic": bool(synthetic), "source": desc},
                                    progress=True if _tty() else None)
    except RegistryError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps({"entry": out.model_dump(mode="json"), "passed": rep.verdict.passed,
                               "reasons": rep.verdict.reasons}, indent=2, default=str))
        return
    _print_verdict(rep)
    if rep.verdict.passed:
        click.echo(f"{out.id}: re-validated, expires {_iso(out.expires_ts)}; stage {out.stage_label()}")
    else:
        click.echo(f"{out.id}: re-validation FAILED (recorded): promotions refused; stage now {out.stage_label()}")
        sys.exit(1)


@registry_grp.command("reset")
@click.pass_context
def registry_reset(ctx):
    """Move the registry file aside (kept, never deleted) and start an empty one. Nothing becomes live."""
    from ..registry import Registry

    dest = Registry.reset(_home(ctx))
    click.echo(f"registry file moved to {dest}; a new, empty registry was started" if dest else "no registry file")


# -- qts promote --------------------------------------------------------------------------------------------

@cli.command("promote")
@click.argument("entry_id")
@click.option("--to", "target", type=click.Choice(["paper", "live-ramp", "live"]), required=True,
              help="paper (no PIN); live-ramp (from paper: 10%; from the ramp: the next step) or live (from "
                   "100%): the PIN, typed in YOUR terminal.")
@click.pass_context
def promote_cmd(ctx, entry_id, target):
    """Promote a registry entry. Refused when its validation expired or it is not eligible (for live:
    7+ days of paper results within tolerance, or the ramp step's time and results)."""
    from ..registry import PromotionError, Registry, RegistryError, promote, promotion_check
    from ..safety.approve import ApprovalError

    home = _home(ctx)
    reg = Registry.load(home)
    if not reg.ok:
        raise click.ClickException(f"{reg.problem}")
    store = _store_if_db(ctx)
    try:
        try:
            a = promotion_check(reg, store, entry_id, target, _now())
        except RegistryError as err:
            raise click.ClickException(str(err)) from None
        if not a.eligible:
            click.echo(f"{entry_id} cannot be promoted to {target}:", err=True)
            for r in a.reasons:
                click.echo(f"  - {r}", err=True)
            sys.exit(1)
        key = None
        if target != "paper":
            from ..safety.approve import unlock_from_terminal

            share = "" if a.next_step is None else f" at {int([0.10, 0.25, 0.50, 1.0][a.next_step] * 100)}%"
            click.echo(f"Promoting {entry_id} to {target}{share}: real money. Type your PIN in this terminal.")
            try:
                key = unlock_from_terminal(store, f"PIN to promote {entry_id} to {target}: ")
            except ApprovalError as e:
                click.echo(f"error: {e}", err=True)
                sys.exit(e.exit_code)
        try:
            e = promote(home, entry_id, target, store=store, signing_key=key, now=_now())
        except PromotionError as err:
            click.echo(f"refused: {err}", err=True)
            sys.exit(1)
        except RegistryError as err:
            raise click.ClickException(str(err)) from None
    finally:
        store.close()
    click.echo(f"{e.id} is now {e.stage_label()}")
    if e.stage == "paper":
        click.echo(f"the paper loop runs it on {e.symbol or 'its symbol'} with its pinned parameters: qts run "
                   "(or /quant-trading-system:crypto-trader start)")
