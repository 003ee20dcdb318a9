"""One trading cycle, and a loop of them.

Each cycle, at a candle close: match resting orders against the candles that closed, then for each
symbol fetch closed candles, ask the strategy for a target exposure, turn the difference into an
order intent, pass it through the gate (the only way to a broker), and record the decision with its
inputs, outputs and reason codes. Then an equity snapshot. The loop never places an order itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..broker.models import OrderIntent
from ..fsutil import dumps
from ..strategies import Strategy


@dataclass
class CycleReport:
    ts: int
    equity: float
    cash: float
    orders: list[dict] = field(default_factory=list)
    refusals: list[dict] = field(default_factory=list)
    fills_matched: int = 0
    elapsed_ms: float = 0.0


class TradingLoop:
    def __init__(self, settings, store, feed, broker, gate, strategies: dict[str, Strategy], paper_broker=None):
        self.settings, self.store, self.feed, self.broker, self.gate = settings, store, feed, broker, gate
        self.paper_broker = paper_broker  # where a live session carries on when the breaker opens
        self.strategies = strategies
        self.interval_ms = settings.TRADE_INTERVAL * 60_000
        self.halted: str | None = None
        self._quarantine_seen: set = set()
        self.entry_ids: dict[str, str] = {}  # symbol -> registry entry id (the roster's), for paused entries

    def allocation(self, equity: float) -> float:
        """USD a full position may use: MAX_POSITION_SIZE, and no more than an equal share of equity."""
        return min(self.settings.MAX_POSITION_SIZE, equity / max(1, len(self.strategies)))

    def protective_exit(self, symbol: str, held: float, candles) -> str | None:
        """The stop loss / take profit the risk layer attached to the entry, checked on the last close.
        (Paper and exchanges without native stop orders: the loop enforces them.)"""
        if not len(candles):
            return None
        row = self.store.one(
            "SELECT o.stop_loss, o.take_profit FROM orders o JOIN positions p ON p.mode=o.mode AND p.symbol=o.symbol "
            "WHERE o.mode=? AND o.symbol=? AND o.side='buy' AND o.filled>0 AND o.created_ts>=p.opened_ts "
            "ORDER BY o.id DESC LIMIT 1", (self.broker.mode, symbol))
        close = float(candles.close[-1])
        self._protect = (row["stop_loss"], row["take_profit"]) if row else (None, None)  # for the decision record
        if row and row["stop_loss"] and close <= row["stop_loss"]:
            return "stop_loss"
        if row and row["take_profit"] and close >= row["take_profit"]:
            return "take_profit"
        return None

    def rule_exit(self, symbol: str, strategy: Strategy, candles, now_ms: int) -> str | None:
        """The strategy's own exit rules (take-profit / stop-loss in bps, time stop) on the last close, from
        the position's fill price and the candles closed since its fill: the backtest's rule
        (strategies/exits.py, research/backtest.apply_exit_rules)."""
        if not strategy.exits.active or not len(candles):
            return None
        pos = self.broker.positions().get(symbol)
        if not pos or not pos.get("avg_entry"):
            return None
        bars = (int(now_ms) - int(pos["opened_ts"])) // self.interval_ms
        why = strategy.exits.check(float(pos["avg_entry"]), bars, float(candles.close[-1]), self.interval_ms)
        return why.lower() if why else None

    def intent_for(self, symbol: str, target: float, held: float, price: float, equity: float,
                   strategy: Strategy, info: dict) -> OrderIntent | None:
        if target <= 0 < held:
            why = info.get("reason", "EXIT")
            # exit reasons the protections read: stop_loss / take_profit / signal
            reason = why.lower() if why in ("STOP_LOSS", "TAKE_PROFIT") else "signal"
            return OrderIntent(symbol, "sell", held, strategy=strategy.name, reason=reason, reduce_only=True)
        if target > 0 and held <= 0:
            # target: 1, or a confidence-emitting strategy's confidence in (0, 1] (that share of a full entry)
            target = min(float(target), 1.0)
            amount = self.allocation(equity) * target / price
            if self.broker.mode == "live":  # the registry's live ramp: 10% -> 25% -> 50% -> 100% of the allocation
                from ..registry import capital_fraction

                frac = capital_fraction(self.settings.home, strategy.name, store=self.store,
                                        params={**strategy.params.model_dump(), **strategy.exits.nonzero()})
                if frac <= 0:
                    info["reason"] = "NOT_PROMOTED_TO_LIVE"
                    return None
                amount *= frac
            return OrderIntent(symbol, "buy", amount, strategy=strategy.name, reason="entry", confidence=target)
        return None

    def check_breaker(self) -> None:
        """Live only: evaluate the breaker; if it is not closed, carry on in paper from now on."""
        if self.broker.mode != "live" or getattr(self.gate, "authority", None) is not None:
            return  # (in the trading agent the breaker is the agent's own, in memory)
        st = self.gate.breaker.check(int(time.time() * 1000))
        from ..registry import supervise

        for action in supervise(self.settings.home, self.store):  # demote drifting or tripped live strategies
            if action.get("action") not in (None, "none"):
                self.store.event("registry", f"live supervision: {action}", severity="warning", data=action)
        if not st.live_allowed and self.paper_broker is not None:
            self.store.event("loop", f"circuit breaker {st.state} ({st.reason}): live trading stopped, "
                                     "carrying on in PAPER mode; going back to live needs a fresh PIN approval",
                             severity="critical")
            self.broker = self.paper_broker
            self.gate.broker = self.paper_broker

    def record_quarantine(self, now_ms: int) -> set[str]:
        """Write the candles the feed quarantined (up to now) as ``candle_quarantine`` events, each once.
        Returns the symbols with a newly recorded one (their decisions carry CANDLE_QUARANTINED)."""
        from ..market.quarantine import record

        log = getattr(self.feed, "quarantine_log", None) or []
        new = [r for r in log if r.ts <= now_ms and (r.symbol, r.ts, r.field) not in self._quarantine_seen]
        if not new:
            return set()
        record(self.store, new, self._quarantine_seen)
        return {r.symbol for r in new}

    def cycle(self) -> CycleReport:
        t0 = time.perf_counter()
        self.check_breaker()
        ts = self.feed.now_ms()
        quarantined = self.record_quarantine(ts)
        matched = self.broker.process_market()
        eq = self.broker.equity()
        report = CycleReport(ts, eq["equity"], eq["cash"], fills_matched=matched)
        open_syms = {o["symbol"] for o in self.broker.open_orders()}
        from .replay import Recorder

        recorder = Recorder.for_loop(self)  # what each decision needs to be re-run (qts replay)
        from ..safety import pauses

        paused_now = pauses.paused(self.store.home, self.store)  # strategies that take no new entries
        decisions = []  # written with the equity snapshot in one transaction: a cycle is on record whole or not at all
        for symbol, strat in self.strategies.items():
            candles = self.feed.candles(symbol, strat.lookback)
            if len(candles) and ts - (int(candles.ts[-1]) + candles.timeframe_ms) >= 2 * candles.timeframe_ms:
                from ..notify.alerts import on_stale_feed  # queued; never blocks or raises

                on_stale_feed(self.store.home, symbol, ts - int(candles.ts[-1]) - candles.timeframe_ms,
                              candles.timeframe_ms, self.feed.source)
            held = self.broker.position_amount(symbol)
            account = recorder.account(self.broker)  # before the decision's order
            self._protect = (None, None)
            target, info = strat.decide(candles, 1.0 if held > 0 else 0.0)
            price = self.feed.quote(symbol).price
            exit_reason = self.protective_exit(symbol, held, candles) if held > 0 else None
            if held > 0 and not exit_reason:
                exit_reason = self.rule_exit(symbol, strat, candles, ts)
            if exit_reason:
                target, info = 0.0, {**info, "reason": exit_reason.upper()}
            quarantined |= self.record_quarantine(ts)  # a live feed screens as it fetches
            codes = [info.get("reason", "HOLD")]
            if symbol in quarantined:
                codes.append("CANDLE_QUARANTINED")
            intent = None
            result = None
            if symbol in open_syms:
                codes.append("ORDER_WORKING")  # let the resting order finish before adding another
            elif target > 0 and held <= 0 and pauses.is_paused(paused_now, strat.name, self.entry_ids.get(symbol)):
                codes.append("STRATEGY_PAUSED")  # paused (qts strategy pause / the dashboard): no new entry; exits run
            else:
                intent = self.intent_for(symbol, target, held, price, eq["equity"], strat, info)
                if info.get("reason") == "NOT_PROMOTED_TO_LIVE":
                    codes.append("NOT_PROMOTED_TO_LIVE")
            if intent and intent.client_order_id is None and self.broker.mode == "live" and len(candles):
                # the decision's own id: (strategy, symbol, side, the candle it was made on). Asked again (a
                # restarted agent, a repeated cycle) it is the same order, which the exchange and the books refuse
                from dataclasses import replace as _replace

                from ..broker.models import make_client_order_id

                intent = _replace(intent, client_order_id=make_client_order_id(
                    "live", int(candles.ts[-1]), symbol, intent.side, strat.name))
            self.gate.last_risk = None
            if intent:
                res = self.gate.submit(intent)
                result = res.to_dict()
                codes.append("ORDER_" + res.status.upper() if res.accepted else f"REFUSED:{res.reason_code}")
                (report.orders if res.accepted else report.refusals).append(
                    {"symbol": symbol, "side": intent.side, **result})
            decisions.append({
                "cycle_id": f"{self.broker.mode}-{ts}", "ts": ts, "mode": self.broker.mode, "symbol": symbol,
                "strategy": strat.name,
                "inputs": dumps({"params": strat.params.model_dump(), "candles": len(candles),
                                      "first_ts": int(candles.ts[0]) if len(candles) else None,
                                      "last_ts": int(candles.ts[-1]) if len(candles) else None,
                                      "held": held, "price": price, "equity": eq["equity"], "source": self.feed.source,
                                      "indicators": {k: v for k, v in info.items() if k != "reason"},
                                      "replay": recorder.record(
                                          symbol, strat, candles, held=held, price=price,
                                          allocation=self.allocation(eq["equity"]), protect=self._protect,
                                          account=account, feed=self.feed,
                                          risk=getattr(self.gate, "last_risk", None) if intent else None)}),
                "outputs": dumps({"target": target, "intent": intent.to_dict() if intent else None,
                                  "result": result}),
                "reason_codes": dumps(codes)})
        eq = self.broker.equity()
        report.equity, report.cash = eq["equity"], eq["cash"]
        try:
            with self.store.tx():
                recorder.flush()
                for row in decisions:
                    self.store.insert("decisions", row)
                self.store.insert("equity_snapshots", {"mode": self.broker.mode, "ts": ts, **eq})
        except BaseException:
            recorder.rolled_back()
            raise
        recorder.committed()
        report.elapsed_ms = (time.perf_counter() - t0) * 1000
        return report

    def run(self, stop, max_cycles: int | None = None, on_cycle=None) -> int:
        """Cycle until the feed ends, ``stop`` is set, or ``max_cycles`` ran. Returns cycles run."""
        from ..safety import kill_switch

        n = 0
        while not stop.is_set():
            ks = kill_switch.status(self.store.home, self.store)
            if ks.engaged:  # the gate would refuse every order anyway; stop cycling
                self.halted = f"kill switch engaged: {ks.reason}"
                break
            report = self.cycle()
            n += 1
            if on_cycle:
                on_cycle(report, n)
            if max_cycles is not None and n >= max_cycles:
                break
            if self.feed.wait_next_cycle(self.interval_ms, stop) is None:
                break
        return n
