"""``qts order``: one order through the gate, outside the loop. Paper orders run here at the last paper
session's market; live ones are intents handed to the trading agent, which alone holds the keys."""

from __future__ import annotations

import json
import re
import sys
import time

import click

from .base import _settings, _store, cli
from .errors import InputError


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
