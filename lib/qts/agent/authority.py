"""What the gate asks the trading agent (``Gate(authority=...)``): its in-memory policy, checked against
the exchange's own numbers.

Hard limits, none of which reads a file the assistant can write:
* the kill switch, the trading state and the breaker: the policy in memory (a kill-switch flag file
  that appears only ever engages it);
* the live grant: expiry, symbols, notional per order and per day (the day's spend from the exchange's
  fills and what the agent itself sent);
* the daily loss cap: today's fills at the exchange, marked at the mid;
* orders per minute: counted in memory;
* large orders: a single-use PIN approval of that client order id;
* the price collar: every order against a mid the agent fetched itself.
Positions (what a sell may reduce) are the exchange's balances.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import replace
from typing import Callable

from ..verdicts import Reason, Refuse
from .policy import Policy

ORDER_APPROVAL_TTL_MS = 15 * 60_000


class Authority:
    def __init__(self, view, policy: Policy, *, risk_profile=None, kill_flag=None,
                 on_change: Callable[[Policy, str, dict], None] | None = None, clock=time.time):
        self.view = view
        self._policy = policy
        self._risk_profile = risk_profile
        self.kill_flag = kill_flag            # the project's kill-switch flag file: its appearance engages
        self.on_change = on_change
        self.clock = clock
        self.lock = threading.RLock()
        self.order_approvals: dict[str, tuple[float, int]] = {}
        self.order_times: collections.deque[float] = collections.deque(maxlen=10_000)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- the policy ----------------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        return self._policy

    def set_policy(self, new: Policy, what: str, data: dict | None = None) -> Policy:
        with self.lock:
            if new is self._policy:
                return new
            self._policy = new
        if self.on_change:
            self.on_change(new, what, data or {})
        return new

    def tighten(self, op: str, params: dict) -> tuple[Policy, str]:
        with self.lock:
            new, what = self._policy.tighten(op, params, self.now_ms())
            if new is not self._policy:
                self.set_policy(new, what, {"op": op, "params": params})
            return new, what

    def risk_profile(self):
        return self._risk_profile

    def set_risk_profile(self, profile) -> None:
        self._risk_profile = profile

    # -- gate questions --------------------------------------------------------------------------
    def kill_switch(self) -> tuple[bool, str]:
        p = self._policy
        if not p.kill_switch and self.kill_flag is not None:
            try:
                present = os.path.lexists(self.kill_flag)
            except OSError:
                present = True
            if present:  # the shell's stdlib first step (or anyone) set the flag: engage in memory too
                p, _ = self.tighten("engage", {"reason": "kill-switch flag file set"})
        return p.kill_switch, p.kill_reason or "engaged"

    def trading_state(self) -> tuple[str, bool, str]:
        p = self._policy
        return p.trading_state, p.breaker_open, p.state_reason or p.breaker_reason

    def position(self, symbol: str) -> float:
        return self.view.position(symbol)

    def cash(self) -> float:
        return self.view.cash()

    def positions(self, broker=None) -> dict[str, dict]:
        """{symbol: {"amount", "avg_entry"}} of the agent's markets, amounts from the exchange's balances;
        the entry price from the books when they know the position, else the mid."""
        books = broker.positions() if broker is not None else {}
        out = {}
        for sym in self.view.symbols:
            amt = self.view.position(sym)
            if amt > 0:
                avg = (books.get(sym) or {}).get("avg_entry") or self.view.mid(sym)
                out[sym] = {"amount": amt, "avg_entry": float(avg)}
        return out

    def _notional(self, intent) -> float:
        price = intent.price if intent.type == "limit" and intent.price else self.view.mid(intent.symbol)
        return float(intent.amount) * float(price)

    def check_live(self, gate, intent):
        from ..gate import reduces_exposure

        from ..gate import is_flatten

        p = self._policy
        now = self.now_ms()
        if is_flatten(gate, intent):
            return intent  # the kill switch's own closing orders: never throttled, never need a grant
        cutoff = time.monotonic() - 60
        while self.order_times and self.order_times[0] < cutoff:
            self.order_times.popleft()
        if len(self.order_times) >= p.max_orders_per_minute:
            raise Refuse(Reason.ORDER_RATE, f"{len(self.order_times)} orders in the last minute: the agent's limit is "
                                            f"{p.max_orders_per_minute}")
        gate.consume_on_submit(lambda: self.order_times.append(time.monotonic()))
        if reduces_exposure(gate, intent):
            return intent  # closing risk needs no grant (the collar still applies)
        g = p.grant
        if g is None:
            raise Refuse(Reason.LIVE_NOT_APPROVED, "no live grant: the human approves live trading with the PIN "
                                                   "(`qts agent approve grant ...` in their own terminal)")
        if not g.active(now):
            raise Refuse(Reason.LIVE_NOT_APPROVED, "the live grant has expired: approve again with the PIN")
        if intent.symbol not in g.symbols:
            raise Refuse(Reason.LIVE_SCOPE, f"{intent.symbol} is not in the live grant ({', '.join(g.symbols)})")
        notional = self._notional(intent)
        if notional > g.max_order_usd + 1e-9:
            raise Refuse(Reason.LIVE_SCOPE, f"order notional {notional:.2f} is above the grant's "
                                            f"{g.max_order_usd:g} USD per order")
        spent = self.view.day_spend()
        if spent + notional > g.max_daily_usd + 1e-9:
            raise Refuse(Reason.LIVE_SCOPE, f"today's live buys {spent:.2f} + this {notional:.2f} would pass the "
                                            f"grant's {g.max_daily_usd:g} USD per day")
        pnl = self.view.day_pnl()
        if pnl <= -p.max_daily_loss_usd:
            raise Refuse(Reason.DAILY_LOSS, f"today's trading loss {-pnl:.2f} has reached the daily cap of "
                                            f"{p.max_daily_loss_usd:g} USD: only orders that reduce exposure pass")
        if notional > p.order_approval_usd:
            appr = self.order_approvals.get(intent.client_order_id or "")
            if not appr or appr[1] < now or appr[0] + 1e-9 < notional:
                raise Refuse(Reason.ORDER_APPROVAL_NEEDED,
                             f"order notional {notional:.2f} is above {p.order_approval_usd:g}: it needs its own PIN "
                             f"approval (`qts agent approve order {intent.client_order_id} --max-notional "
                             f"{notional:.0f}` in the human's terminal)")

            def use():  # single use: spent only when the order is really sent
                if self.order_approvals.pop(intent.client_order_id, None) is None:
                    raise RuntimeError("approval already used")
            gate.consume_on_submit(use)

        def count():
            self.view.sent_buy_notional += notional
        gate.consume_on_submit(count)
        return intent

    def after_order(self, intent, result) -> None:
        """What the order did, applied to the cached balances at once; anything unclear re-reads them."""
        if result.accepted and result.status == "filled" and result.avg_price:
            args = (intent.symbol, intent.side, float(result.filled), float(result.avg_price), float(result.fee or 0.0))
            self.view.apply_fill(*args)
            self.view.record_order_fill(*args)
        else:
            self.view.invalidate()
            if result.filled:
                self.view._orders_since[intent.symbol] = self.view.refresh_every_orders  # re-read the fills

    def approve_order(self, client_order_id: str, max_notional: float) -> None:
        self.order_approvals[client_order_id] = (float(max_notional), self.now_ms() + ORDER_APPROVAL_TTL_MS)

    def check_collar(self, gate, intent):
        p = self._policy
        book = self.view.book(intent.symbol)
        mid, collar = book["mid"], p.collar_bps / 10_000
        if intent.type == "stop_loss_limit":
            # a protective stop rests below the market: its trigger must be below the mid (else it is a sell
            # now), and its limit within the collar of the trigger, where it starts to work
            stop, px = float(intent.stop_loss), float(intent.price)
            if not stop < mid:
                raise Refuse(Reason.PRICE_COLLAR, f"stop {stop:g} is not below the mid {mid:g}: it would sell now")
            if px < stop * (1 - collar):
                raise Refuse(Reason.PRICE_COLLAR, f"stop limit {px:g} is more than {p.collar_bps:g} bps below its "
                                                  f"trigger {stop:g}")
            return replace(intent)
        if intent.type == "limit":
            px = float(intent.price)
            if intent.side == "buy" and px > mid * (1 + collar):
                raise Refuse(Reason.PRICE_COLLAR, f"buy limit {px:g} is more than {p.collar_bps:g} bps above the "
                                                  f"mid {mid:g}")
            if intent.side == "sell" and px < mid * (1 - collar):
                raise Refuse(Reason.PRICE_COLLAR, f"sell limit {px:g} is more than {p.collar_bps:g} bps below the "
                                                  f"mid {mid:g}")
        else:
            spread = (book["ask"] - book["bid"]) / mid
            if spread > 2 * collar:
                raise Refuse(Reason.PRICE_COLLAR, f"{intent.symbol}: the book's spread ({spread * 1e4:.0f} bps) is wider "
                                                  f"than the collar allows a market order ({2 * p.collar_bps:g} bps)")
        return replace(intent)
