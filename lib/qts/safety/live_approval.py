"""Live approval, checked by the gate for every live order (wall-clock time, never replay time).

Live needs ALL of: PAPER_TRADING=false, exchange keys present, a closed breaker (checked just before
this, in the trading-state layer), a PIN-signed live grant that is intact, bound to this state home,
unexpired, issued by a PIN key past its cool-down, and whose scope covers the symbol, the order's
notional and today's live notional; at least ``PAPER_DAYS`` of paper history for the strategy (or a
PIN-signed override); and, above ``ORDER_APPROVAL_USD``, a single-use PIN approval of that order.
(The loop also sizes live entries by the strategy registry's ramp, which needs its own PIN approval
per step: engine/loop.py.) Orders that only reduce exposure need none of the grant checks: closing
risk is always allowed.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .approve import key_first_seen, load_approval
from .grants import ACTION_ORDER_OVER_THRESHOLD, ACTION_OVERRIDE_PAPER_DAYS, load_live_grant, use_approval, verify_approval

PAPER_DAYS = 7


def grant_spending(home, grant_id: str, now: int) -> float | None:
    """Today's live notional under this grant, from its own record (kept beside the grant, so deleting
    the database does not reset the daily budget). None when the record is missing, damaged or belongs
    to another grant: live orders are then refused (fail safe)."""
    import json

    from .grants import usage_path

    try:
        lines = usage_path(home).read_text(encoding="utf-8").splitlines()
        head = json.loads(lines[0])
        if head.get("grant_id") != grant_id:
            return None
        day0 = now - now % DAY_MS
        total = 0.0
        for line in lines[1:]:
            rec = json.loads(line)
            if int(rec["ts"]) >= day0:
                total += float(rec["notional"])
        return total
    except Exception:
        return None


def record_spending(home, grant_id: str, client_order_id: str, notional: float) -> None:
    from ..fsutil import append_jsonl
    from .grants import usage_path

    append_jsonl(usage_path(home), {"ts": int(time.time() * 1000), "grant_id": grant_id,
                                    "client_order_id": client_order_id, "notional": float(notional)})
ORDER_APPROVAL_USD = 500.0
DAY_MS = 86_400_000


def _refuse(code: str, msg: str):
    from ..verdicts import Refuse

    return Refuse(code, msg)


def require_live_approval(gate, intent):
    from ..gate import Reason, reduces_exposure

    s = gate.settings
    if s is None or s.PAPER_TRADING:
        raise _refuse(Reason.LIVE_PREREQUISITE, "PAPER_TRADING is not false: live orders are refused")
    ex = getattr(gate.broker, "exchange", None)
    if not (s.has_keys or (ex is not None and getattr(ex, "apiKey", None) and getattr(ex, "secret", None))):
        raise _refuse(Reason.LIVE_PREREQUISITE, "exchange keys are not configured")
    if reduces_exposure(gate, intent):
        return intent
    home, store = gate.store.home, gate.store
    now = int(time.time() * 1000)
    grant = load_live_grant(home, now, key_first_seen=key_first_seen(store, home, now))
    if grant is None:
        raise _refuse(Reason.LIVE_NOT_APPROVED, "no valid live grant (missing, expired, not signed with this home's "
                                                "PIN, or the PIN key is still in its cool-down); the human approves "
                                                "live trading with hooks/guard_approve.sh live in their own terminal")
    price = intent.price or gate.feed.quote(intent.symbol).price
    notional = intent.amount * price
    spent = grant_spending(home, grant.id, now)
    if spent is None:
        raise _refuse(Reason.LIVE_NOT_APPROVED, "the live grant's spending record (safety/grants/usage.jsonl) is "
                                                "missing or damaged: approve live trading again with the PIN")
    day_before = max(spent, store.scalar(
        "SELECT COALESCE(SUM(amount * COALESCE(avg_price, price, 0)), 0) FROM orders WHERE mode='live' "
        "AND side='buy' AND created_ts>=? AND status NOT IN ('rejected')", (now - now % DAY_MS,)) or 0.0)
    why = grant.refusal(intent.symbol, notional, day_before)
    if why:
        raise _refuse(Reason.LIVE_SCOPE, why)
    gate.consume_on_submit(lambda: record_spending(home, grant.id, intent.client_order_id, notional))
    strategy = intent.strategy or "manual"
    span = store.one("SELECT MIN(ts) AS a, MAX(ts) AS b FROM decisions WHERE mode='paper' AND strategy=?", (strategy,))
    days = ((span["b"] - span["a"]) / DAY_MS) if span and span["a"] is not None else 0.0
    if days < PAPER_DAYS:
        override = load_approval(home, f"paper_override_{strategy}")
        # checked at wall-clock time: the override is signed for 24 h (`qts approve paper-override`)
        ok = override and (verify_approval(home, override, ACTION_OVERRIDE_PAPER_DAYS, now=now)
                           or {}).get("strategy") == strategy
        if not ok:
            raise _refuse(Reason.LIVE_PREREQUISITE, f"strategy {strategy} has {days:.1f} days of paper history; "
                                                    f"{PAPER_DAYS} are required (or a PIN-signed override)")
    if notional > ORDER_APPROVAL_USD:
        appr = load_approval(home, f"order_{intent.client_order_id}")
        payload = verify_approval(home, appr, ACTION_ORDER_OVER_THRESHOLD, now) if appr else None
        if not payload or payload.get("client_order_id") != intent.client_order_id \
                or float(payload.get("max_notional", 0)) < notional:
            raise _refuse(Reason.ORDER_APPROVAL_NEEDED,
                          f"order notional {notional:.2f} is above {ORDER_APPROVAL_USD:.0f}: it needs its own PIN "
                          f"approval (hooks/guard_approve.sh order {intent.client_order_id} --max-notional "
                          f"{notional:.0f})")

        def consume():  # single use: spent only when the order is really sent
            if use_approval(home, appr, ACTION_ORDER_OVER_THRESHOLD, int(time.time() * 1000)) is None:
                raise RuntimeError("approval already used")
        gate.consume_on_submit(consume)
    return replace(intent)
