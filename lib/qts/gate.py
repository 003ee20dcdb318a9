"""The gate: the only function that hands an order to a broker.

``Gate.submit(intent)`` runs the checks in order and places the order only if every one passes. A
check either passes (possibly shrinking the order, with a reason) or refuses with a stable reason
code and a human message. Any exception inside a check, or in the gate itself, is a refusal
(``GATE_ERROR``), never a pass. Every verdict is appended to ``logs/pre_trade.json`` (JSON lines) and
refusals also to the events table; every placed order to ``logs/post_trade.json``.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import replace
from typing import Callable

from .broker.models import OrderIntent, OrderResult, make_client_order_id
from .fsutil import append_jsonl
from .verdicts import Reason, Refuse, Verdict


# the verdict types live below the gate (verdicts.py) so that the checks can import them; re-exported here
__all__ = ["Gate", "Reason", "Refuse", "Verdict", "DEFAULT_CHECKS"]


# A check takes (gate, intent) and returns the (possibly shrunk) intent, or raises Refuse.
Check = Callable[["Gate", OrderIntent], OrderIntent]


def check_order_sane(gate: "Gate", intent: OrderIntent) -> OrderIntent:
    if intent.symbol not in gate.feed.markets():
        raise Refuse(Reason.UNKNOWN_SYMBOL, f"{intent.symbol} is not a market of this session")
    if not (isinstance(intent.amount, (int, float)) and math.isfinite(intent.amount) and intent.amount > 0):
        raise Refuse(Reason.BAD_ORDER, f"amount must be a positive finite number, got {intent.amount!r}")
    if intent.price is not None and intent.type not in ("limit", "stop_loss_limit"):
        # ccxt turns amount x price into a quote amount for some exchanges (Binance's quoteOrderQty): a
        # "market sell 1 BTC at 200x" would sell 200 BTC. A price belongs to limit orders only.
        raise Refuse(Reason.BAD_ORDER, f"a {intent.type} order takes no price (got {intent.price!r}); "
                                       "use a limit order to name a price")
    if intent.price is not None and not (isinstance(intent.price, (int, float)) and math.isfinite(intent.price)
                                         and intent.price > 0):
        raise Refuse(Reason.BAD_ORDER, f"price must be a positive finite number, got {intent.price!r}")
    return intent


def reduces_exposure(gate: "Gate", intent: OrderIntent) -> bool:
    """Long-only spot: a sell of no more than the position held (the exchange's balance, in the agent)."""
    return intent.side == "sell" and intent.amount <= gate.position(intent.symbol) + 1e-12


def check_reduce_only(gate: "Gate", intent: OrderIntent) -> OrderIntent:
    """A reduce-only order may only move a position toward zero, never open, grow or flip it. Long-only
    spot holds no shorts, so a reduce-only buy has nothing to reduce, and a sell beyond the holding would
    go short. On spot this check is the whole protection (the exchange has no reduce-only flag there);
    on derivatives the live broker also sends ccxt's ``reduceOnly`` so the exchange enforces it at fill."""
    if not intent.reduce_only:
        return intent
    if intent.side == "buy":
        raise Refuse(Reason.REDUCE_ONLY, f"reduce-only buy of {intent.symbol} refused: long-only spot holds no "
                                         "short to reduce, so a buy would open or increase a position")
    held = gate.position(intent.symbol)
    if not (isinstance(held, (int, float)) and math.isfinite(held)):
        raise Refuse(Reason.REDUCE_ONLY, f"reduce-only sell of {intent.symbol} refused: position unknown ({held!r})")
    if intent.amount > held + 1e-12:
        raise Refuse(Reason.REDUCE_ONLY, f"reduce-only sell of {intent.amount} {intent.symbol} refused: it exceeds "
                                         f"the position {held} and would open or flip to a short")
    return intent


def is_flatten(gate: "Gate", intent: OrderIntent) -> bool:
    """An order the kill switch made inside this process (Gate.submit_flatten): no field a caller sets
    can claim the exemption."""
    return (intent.client_order_id is not None and intent.client_order_id in gate._flatten_ids
            and intent.type == "market" and intent.side == "sell" and reduces_exposure(gate, intent))


def check_kill_switch(gate: "Gate", intent: OrderIntent) -> OrderIntent:
    if gate.authority is not None:
        engaged, why = gate.authority.kill_switch()
    else:
        from .safety import kill_switch

        ks = kill_switch.status(gate.store.home, gate.store)
        engaged, why = ks.engaged, ks.reason
    if engaged and not is_flatten(gate, intent):
        raise Refuse(Reason.KILL_SWITCH, f"kill switch engaged ({why}); only flattening orders pass. "
                                         "A human resets it with the PIN in their own terminal.")
    return intent


def check_trading_state(gate: "Gate", intent: OrderIntent) -> OrderIntent:
    if gate.authority is not None:
        state, breaker_open, why = gate.authority.trading_state()
        if state == "HALTED" and not is_flatten(gate, intent):
            raise Refuse(Reason.TRADING_HALTED, f"trading state HALTED ({why})")
        if state == "REDUCING" and not reduces_exposure(gate, intent):
            raise Refuse(Reason.TRADING_REDUCING, "trading state REDUCING: only orders that reduce exposure pass")
        if breaker_open and not reduces_exposure(gate, intent):
            raise Refuse(Reason.BREAKER_OPEN, f"circuit breaker open ({why}): only orders that reduce exposure "
                                              "pass until the human resumes with the PIN")
        return intent
    st = gate.breaker.status(int(time.time() * 1000))  # wall clock: breaker state is about the real world
    if st.trading_state == "HALTED" and not is_flatten(gate, intent):
        raise Refuse(Reason.TRADING_HALTED, f"trading state HALTED ({st.reason})")
    if st.trading_state == "REDUCING" and not reduces_exposure(gate, intent):
        raise Refuse(Reason.TRADING_REDUCING, "trading state REDUCING: only orders that reduce exposure pass")
    if gate.mode == "live" and not st.live_allowed and not is_flatten(gate, intent):
        # (the kill switch's flattening still passes: closing risk is always allowed)
        raise Refuse(Reason.BREAKER_OPEN, f"circuit breaker {st.state} ({st.reason}): live orders refused, "
                                          "trading continues in paper")
    return intent


def check_live_approval(gate: "Gate", intent: OrderIntent) -> OrderIntent:
    if gate.mode != "live":
        return intent
    if gate.authority is None:
        # live money moves only through the trading agent the human started with the PIN
        raise Refuse(Reason.NO_AGENT, "live orders are placed only by the trading agent; the human starts it in "
                                      "their own terminal with `qts agent start`")
    return gate.authority.check_live(gate, intent)


def check_collar(gate: "Gate", intent: OrderIntent) -> OrderIntent:
    """Every live order, reduce-only and flattening ones included, against a mid price the agent
    fetches itself (not a price anyone passed in)."""
    if gate.mode != "live":
        return intent
    if gate.authority is None:
        raise Refuse(Reason.NO_AGENT, "no trading agent: no price collar, no live order")
    return gate.authority.check_collar(gate, intent)


def check_risk(gate: "Gate", intent: OrderIntent) -> OrderIntent:
    from .safety.risk_gate import apply_risk

    return apply_risk(gate, intent)


def check_exchange_rules(gate: "Gate", intent: OrderIntent) -> OrderIntent:
    """Precision, minimum amount and notional from the market definition; cash and position."""
    rules = gate.feed.rules(intent.symbol)
    amount = rules.amount_to_precision(intent.amount)
    price = intent.price or gate.feed.quote(intent.symbol).price
    problem = rules.violation(amount, price)
    if problem:
        raise Refuse(Reason.EXCHANGE_RULES, f"{intent.symbol}: {problem}")
    if intent.side == "buy":
        need = amount * price * (1 + gate.broker.fee_rate + gate.broker.slippage)
        cash = gate.authority.cash() if gate.authority is not None else gate.broker.cash()
        if need > cash + 1e-9:
            raise Refuse(Reason.INSUFFICIENT_FUNDS, f"buy needs about {need:.2f}, cash is {cash:.2f}")
    else:
        held = gate.position(intent.symbol)
        if amount > held + 1e-12:
            raise Refuse(Reason.INSUFFICIENT_POSITION, f"sell {amount} exceeds the position {held} (long-only spot)")
    return replace(intent, amount=amount) if amount != intent.amount else intent


# The order is the contract: kill switch -> breaker / trading state -> reduce-only -> live approval -> price
# collar -> risk -> exchange. (The kill switch's reason wins over every other refusal.)
DEFAULT_CHECKS: list[Check] = [check_order_sane, check_kill_switch, check_trading_state, check_reduce_only,
                               check_live_approval, check_collar, check_risk, check_exchange_rules]


class Gate:
    """``authority``: the trading agent's in-memory policy (agent/service.py). With it, the kill switch,
    trading state, live approval, collar and positions come from the agent, not from files. ``lock``:
    held from the first check to the broker's answer, so concurrent callers are served one at a time
    (no gap between checking and sending)."""

    def __init__(self, store, feed, broker, settings=None, checks: list[Check] | None = None, breaker=None,
                 authority=None, lock=None):
        from .safety.breaker import Breaker

        self.store, self.feed, self.broker, self.settings = store, feed, broker, settings
        self.authority, self.lock = authority, lock
        # fsync each verdict and post-trade line (the trading agent turns this off: its record of what it
        # sent is its own journal and the exchange; a power cut then loses at most the last log lines)
        self.sync_logs = True
        self.checks = list(DEFAULT_CHECKS if checks is None else checks)
        self.breaker = breaker or Breaker(store.home, store)
        self._notes: list[str] = []
        self._pending_consumptions: list = []
        self._flatten_ids: set[str] = set()

    def position(self, symbol: str) -> float:
        """What is held: the exchange's balance when the agent decides, else the broker's books."""
        if self.authority is not None:
            return self.authority.position(symbol)
        return self.broker.position_amount(symbol)

    def submit_flatten(self, symbol: str, amount: float, reason: str = "kill switch: flatten",
                       client_order_id: str | None = None) -> OrderResult:
        """A market sell the kill switch makes: the only kind of order that passes an engaged kill
        switch or a HALTED state (it must still reduce exposure, and pass the collar when live)."""
        import secrets
        import zlib

        coid = client_order_id or f"qtsk{int(time.time() * 1000):x}{zlib.crc32(symbol.encode()):08x}{secrets.token_hex(2)}"
        self._flatten_ids.add(coid)
        try:
            return self.submit(OrderIntent(symbol, "sell", amount, strategy="kill_switch", reason=reason,
                                           reduce_only=True, source="kill_switch", client_order_id=coid))
        finally:
            self._flatten_ids.discard(coid)

    def consume_on_submit(self, fn) -> None:
        """A check's single-use approval, used up only if the order is actually sent (not on a dry run,
        not when a later check refuses). ``fn`` raises if it can no longer be used."""
        self._pending_consumptions.append(fn)

    def note(self, message: str) -> None:
        """A check explains an adjustment (e.g. why it shrank the order)."""
        self._notes.append(message)

    @property
    def mode(self) -> str:
        return self.broker.mode

    def evaluate(self, intent: OrderIntent) -> Verdict:
        """Run every check; never raises."""
        current = intent
        notes: list[str] = []
        self._notes = notes
        self._pending_consumptions = []
        for check in self.checks:
            name = getattr(check, "__name__", "check")
            try:
                out = check(self, current)
                if not isinstance(out, OrderIntent):
                    raise TypeError(f"{name} returned {type(out).__name__}, not an OrderIntent")
            except Refuse as r:
                return Verdict(False, r.code, r.message, current, notes, name)
            except Exception as e:  # fail closed: a broken check is a refusal
                return Verdict(False, Reason.GATE_ERROR, f"{name} failed: {e.__class__.__name__}: {e}",
                               current, notes, name)
            if out.amount != current.amount:
                notes.append(f"{name}: amount {current.amount:g} -> {out.amount:g}")
            current = out
        return Verdict(True, Reason.OK, "all checks passed", current, notes)

    def submit(self, intent: OrderIntent) -> OrderResult:
        try:
            if self.lock is not None:
                with self.lock:
                    return self._submit(intent)
            return self._submit(intent)
        except Exception as e:  # never let an error become an order or a crash of the caller
            self._log_error("gate.submit", e)
            return OrderResult(False, intent.client_order_id, "rejected", reason_code=Reason.GATE_ERROR,
                               message=f"gate error: {e.__class__.__name__}: {e}")

    def _submit(self, intent: OrderIntent) -> OrderResult:
        now = self.feed.now_ms()
        coid = intent.client_order_id or make_client_order_id(self.mode, now, intent.symbol, intent.side,
                                                             f"{intent.strategy}|{intent.source}|{intent.reason}")
        intent = replace(intent, client_order_id=coid)
        if self.store.one("SELECT 1 FROM orders WHERE client_order_id=?", (coid,)):
            # the same decision was already sent (a restarted cycle): never send it twice
            verdict = Verdict(False, Reason.DUPLICATE, f"order {coid} already exists; not sent again", intent)
        else:
            verdict = self.evaluate(intent)
        try:
            self._log_verdict(now, verdict, intent)
        except Exception as e:
            # every verdict must be on record; an order we cannot account for does not go out, except the
            # kill switch's flattening (a broken log must never keep positions open)
            self._log_error("pre_trade log", e)
            if verdict.allowed and not is_flatten(self, verdict.intent):
                verdict = Verdict(False, Reason.GATE_ERROR, f"cannot record the verdict ({e.__class__.__name__}: "
                                                            f"{str(e)[:300]}); order not sent", intent)
        if not verdict.allowed:
            return OrderResult(False, coid, "rejected", reason_code=verdict.code, message=verdict.message)
        try:
            for consume in self._pending_consumptions:  # single-use approvals are used up only when the order goes
                consume()
        except Exception as e:
            self._log_error("approval consumption", e)
            return OrderResult(False, coid, "rejected", reason_code=Reason.ORDER_APPROVAL_NEEDED,
                               message=f"the order's approval could not be used ({e.__class__.__name__})")
        try:
            result = self.broker.place(verdict.intent, coid)
        except Exception as e:
            self._log_error("broker.place", e)
            result = OrderResult(False, coid, "rejected", reason_code=Reason.BROKER_ERROR,
                                 message=f"{e.__class__.__name__}: {e}")
        result.adjustments = verdict.adjustments
        if self.authority is not None:
            try:  # the agent's view of balances is stale once an order went out
                self.authority.after_order(verdict.intent, result)
            except Exception as e:
                self._log_error("authority.after_order", e)
        try:
            append_jsonl(self.store.home.post_trade_log, {"ts": now, "logged_at": time.time(), "mode": self.mode,
                                                          **result.to_dict(), "symbol": intent.symbol, "side": intent.side},
                         sync=self.sync_logs)
        except Exception as e:  # the order is at the broker: a log failure must not disown it (a retry would double it)
            self._log_error("post_trade log", e)
        from .notify import on_trade  # queued on a background thread: never blocks or fails trading

        on_trade(self.store.home, result, verdict.intent, mode=self.mode, source=getattr(self.feed, "source", None))
        return result

    def _log_verdict(self, ts: int, v: Verdict, intent: OrderIntent) -> None:
        rec = {"ts": ts, "logged_at": time.time(), "mode": self.mode, "allowed": v.allowed, "code": v.code, "message": v.message,
               "check": v.check, "adjustments": v.adjustments, "intent": intent.to_dict(),
               "final": v.intent.to_dict() if v.allowed and v.intent else None}
        append_jsonl(self.store.home.pre_trade_log, rec, sync=self.sync_logs)
        if not v.allowed:
            self.store.event("gate", f"refused {intent.side} {intent.symbol}: {v.code}: {v.message}",
                             severity="warning", data=rec, ts=ts)
            from .notify.alerts import on_refusal  # queued on a background thread; never blocks or raises

            on_refusal(self.store.home, str(v.code), v.message, self.mode, getattr(self.feed, "source", None),
                       intent.symbol)

    def _log_error(self, where: str, e: Exception) -> None:
        try:
            self.store.event("error", f"{where}: {e.__class__.__name__}: {e}", severity="error",
                             data={"traceback": traceback.format_exc(limit=5)})
        except Exception:
            pass
