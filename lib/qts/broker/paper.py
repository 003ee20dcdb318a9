"""Paper broker: simulated fills on the feed's real (or replayed) prices.

Fill model, documented for traders:
- A market order fills at the feed's current price (in a replay, the open of the candle that starts
  at the decision time) moved against us by ``slippage_bps``: buys pay more, sells get less.
- A limit order rests. It fills only when a later candle trades THROUGH the limit (a buy needs
  ``low < limit``, a sell ``high > limit``), at the limit, or at the open when the candle opens
  already past it (the better price).
- Each candle can fill at most ``participation`` x its volume; the rest stays open for later candles
  (a partial fill). A market order's first fill is capped by the last closed candle's volume.
- Fees: ``fee_bps`` of the notional, charged in the quote currency on every fill, once.
- Amounts are truncated to the market's amount step; orders below the minimum amount or notional
  are refused. Long-only spot: a sell can never exceed the position; a buy never exceeds cash.
Every fill, its order update, the position and the cash move commit in one transaction; the journal
line in ``logs/trades.jsonl`` follows.
"""

from __future__ import annotations

from ..store import Store, now_ms
from ..store.journal import append_trade
from .ledger import BookedBroker, Ledger
from .models import OPEN_STATUSES, OrderIntent, OrderResult

EPS = 1e-12


class PaperBroker(BookedBroker):
    mode = "paper"

    def __init__(self, store: Store, feed, fee_bps: float = 10.0, slippage_bps: float = 5.0,
                 participation: float = 1.0, quote_currency: str = "USDT"):
        if not 0 < participation <= 1:
            raise ValueError("participation: must be in (0, 1]")
        self.store, self.feed = store, feed
        self.fee_rate = fee_bps / 10_000
        self.slippage = slippage_bps / 10_000
        self.participation = participation
        self.quote_currency = quote_currency
        self.ledger = Ledger(store, self.mode, quote_currency)

    # -- account ----------------------------------------------------------------------------------
    def ensure_account(self, initial_cash: float) -> bool:
        """Open the paper account with ``initial_cash`` if it does not exist. True when created."""
        with self.store.tx():
            if self.store.one("SELECT 1 FROM balances WHERE mode=? AND asset=?", (self.mode, self.quote_currency)):
                return False  # (a --fresh reset deletes this row: the next session opens a new account)
            ts = self.feed.now_ms()
            self.store.insert("balances", {"mode": self.mode, "asset": self.quote_currency,
                                           "free": float(initial_cash), "updated_ts": ts})
            self.store.event("account", f"paper account opened with {initial_cash:.2f} {self.quote_currency}",
                             data={"initial_cash": initial_cash}, ts=ts)
        return True

    # -- orders -----------------------------------------------------------------------------------
    def place(self, intent: OrderIntent, client_order_id: str) -> OrderResult:
        rules = self.feed.rules(intent.symbol)
        amount = rules.amount_to_precision(intent.amount)
        price = rules.price_to_precision(intent.price) if intent.price else None
        ts = self.feed.now_ms()
        ref = price or self.feed.quote(intent.symbol).price
        problem = rules.violation(amount, ref)
        if problem:
            return OrderResult(False, client_order_id, "rejected", reason_code="EXCHANGE_RULES", message=problem)
        if intent.side == "sell" and amount > self.position_amount(intent.symbol) + EPS:
            return OrderResult(False, client_order_id, "rejected", reason_code="INSUFFICIENT_POSITION",
                               message=f"sell {amount} exceeds the position {self.position_amount(intent.symbol)} "
                                       f"(long-only spot)")
        if intent.side == "buy":
            need = amount * ref * (1 + self.slippage) * (1 + self.fee_rate)
            if need > self.cash() + EPS:
                return OrderResult(False, client_order_id, "rejected", reason_code="INSUFFICIENT_FUNDS",
                                   message=f"buy needs {need:.2f} {self.quote_currency}, cash is {self.cash():.2f}")
        with self.store.tx():
            self.store.insert("orders", {
                "client_order_id": client_order_id, "mode": self.mode, "symbol": intent.symbol,
                "side": intent.side, "type": intent.type, "amount": amount, "price": price,
                "status": "open", "strategy": intent.strategy, "reason": intent.reason,
                "stop_loss": intent.stop_loss, "take_profit": intent.take_profit,
                "created_ts": ts, "updated_ts": ts})
            self._history(client_order_id, "intent", ts, intent.source)
            self._history(client_order_id, "open", ts, None)
        if intent.type == "market":
            q = self.feed.quote(intent.symbol)
            self._fill_up_to(client_order_id, q.price, q.liquidity * self.participation, ts)
            # the candle starting now gave the first fill's price: any rest waits for the next one
            self.store.execute("UPDATE orders SET updated_ts=? WHERE client_order_id=? AND status!='filled'",
                               (ts + 1, client_order_id))
        return self.result(client_order_id)

    def result(self, client_order_id: str) -> OrderResult:
        o = self.store.one("SELECT * FROM orders WHERE client_order_id=?", (client_order_id,))
        return OrderResult(o["status"] != "rejected", client_order_id, o["status"], o["filled"], o["avg_price"], o["fee"])

    def cancel(self, client_order_id: str, reason: str = "cancelled") -> bool:
        with self.store.tx():
            o = self.store.one("SELECT status FROM orders WHERE client_order_id=?", (client_order_id,))
            if not o or o["status"] not in OPEN_STATUSES:
                return False
            ts = self.feed.now_ms()
            self.store.execute("UPDATE orders SET status='cancelled', updated_ts=? WHERE client_order_id=?",
                               (ts, client_order_id))
            self._history(client_order_id, "cancelled", ts, reason)
        return True

    def process_market(self) -> int:
        """Match resting orders against candles closed since each was last looked at. Returns fills."""
        n = 0
        for o in self.open_orders():
            coid = o["client_order_id"]
            bars = self.feed.closed_since(o["symbol"], max(o["created_ts"], o["updated_ts"]))
            for i in range(len(bars)):
                o = self.store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))
                if o["status"] not in OPEN_STATUSES:
                    break
                price = self._bar_price(o, bars.open[i], bars.high[i], bars.low[i])
                seen = bars.close_time(i) - 1
                if price is not None and self._fill_up_to(coid, price, bars.volume[i] * self.participation,
                                                          seen, slip=o["type"] == "market"):
                    n += 1
                else:
                    self.store.execute("UPDATE orders SET updated_ts=? WHERE client_order_id=?", (seen, coid))
        return n

    @staticmethod
    def _bar_price(o: dict, open_: float, high: float, low: float) -> float | None:
        if o["type"] == "market":
            return float(open_)
        limit = o["price"]
        if o["side"] == "buy":
            return float(min(open_, limit)) if low < limit else None
        return float(max(open_, limit)) if high > limit else None

    # -- fills ------------------------------------------------------------------------------------
    def _fill_up_to(self, coid: str, price: float, liquidity: float, ts: int, slip: bool = True) -> bool:
        with self.store.tx():
            o = self.store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))
            rules = self.feed.rules(o["symbol"])
            remaining = o["amount"] - o["filled"]
            qty = rules.amount_to_precision(min(remaining, liquidity))
            if o["type"] == "market" and slip:
                price = price * (1 + self.slippage) if o["side"] == "buy" else price * (1 - self.slippage)
            if o["side"] == "buy":  # never spend more than the cash there is
                # a millionth of a step below the exact figure: amount_to_precision snaps float noise
                # up to the next step, which here could overspend the cash by a hair
                affordable = self.cash() / (price * (1 + self.fee_rate)) - rules.amount_step * 1e-6
                qty = min(qty, rules.amount_to_precision(affordable))
            else:
                qty = min(qty, self.position_amount(o["symbol"]))
            if qty <= EPS:
                return False
            fill = self.ledger.apply_fill(o, qty, price, qty * price * self.fee_rate, ts, rules.amount_step)
        append_trade(self.store, fill)
        return True

    def _history(self, coid: str, status: str, ts: int, detail) -> None:
        self.ledger.history(coid, status, ts, detail)


