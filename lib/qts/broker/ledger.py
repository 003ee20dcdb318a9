"""The books: orders' fills, positions, cash and closed round trips, shared by every broker.

One fill updates, inside the caller's transaction: the fills table (idempotent on ``fill_id``), the
order's filled amount, average price, fee and status (with a status-history row), the quote
balance, and the position (average entry, realized P&L); a position that returns to flat becomes a
closed trade. Fees here are in the quote currency.
"""

from __future__ import annotations

from .models import OPEN_STATUSES


class Ledger:
    def __init__(self, store, mode: str, quote_currency: str = "USDT"):
        self.store, self.mode, self.quote_currency = store, mode, quote_currency

    def cash(self) -> float:
        v = self.store.scalar("SELECT free FROM balances WHERE mode=? AND asset=?", (self.mode, self.quote_currency))
        return float(v or 0.0)

    def set_cash(self, amount: float, ts: int) -> None:
        self.store.execute("INSERT INTO balances (mode, asset, free, updated_ts) VALUES (?,?,?,?) ON CONFLICT "
                           "(mode, asset) DO UPDATE SET free=excluded.free, updated_ts=excluded.updated_ts",
                           (self.mode, self.quote_currency, float(amount), ts))

    def positions(self) -> dict[str, dict]:
        rows = self.store.query("SELECT * FROM positions WHERE mode=? AND amount > 0", (self.mode,))
        return {r["symbol"]: r for r in rows}

    def position_amount(self, symbol: str) -> float:
        v = self.store.scalar("SELECT amount FROM positions WHERE mode=? AND symbol=?", (self.mode, symbol))
        return float(v or 0.0)

    def open_orders(self, symbol: str | None = None) -> list[dict]:
        marks = ",".join("?" for _ in OPEN_STATUSES)
        sql = f"SELECT * FROM orders WHERE mode=? AND status IN ({marks})"
        params = [self.mode, *OPEN_STATUSES]
        if symbol:
            sql += " AND symbol=?"
            params.append(symbol)
        return self.store.query(sql + " ORDER BY id", params)

    def apply_fill(self, o: dict, qty: float, price: float, fee: float, ts: int, step: float,
                   fill_id: str | None = None) -> dict | None:
        """Record one fill of order ``o`` (a row of orders), its order status, cash and position, in
        the caller's transaction. ``fill_id`` makes it idempotent (None for an already-known id)."""
        n = self.store.scalar("SELECT COUNT(*) FROM fills WHERE client_order_id=?", (o["client_order_id"],))
        if fill_id is not None and self.store.one("SELECT 1 FROM fills WHERE fill_id=?", (fill_id,)):
            return None
        pos = self.store.one("SELECT * FROM positions WHERE mode=? AND symbol=?", (self.mode, o["symbol"]))
        amt, avg = (pos["amount"], pos["avg_entry"]) if pos else (0.0, 0.0)
        realized = 0.0
        if o["side"] == "buy":
            new_amt = amt + qty
            new_avg = (amt * avg + qty * price) / new_amt
            cash_delta = -(qty * price + fee)
        else:
            realized = (price - avg) * qty
            new_amt = amt - qty
            new_avg = avg
            cash_delta = qty * price - fee
        fill = {"fill_id": fill_id or f"{o['client_order_id']}-{n + 1}", "client_order_id": o["client_order_id"],
                "mode": self.mode, "symbol": o["symbol"], "side": o["side"], "amount": qty, "price": price,
                "fee": fee, "fee_currency": self.quote_currency, "realized_pnl": realized, "ts": ts}
        row_id = self.store.insert("fills", fill)
        filled = o["filled"] + qty
        avg_price = ((o["avg_price"] or 0) * o["filled"] + price * qty) / filled
        done = o["amount"] - filled < step / 2
        status = "filled" if done else "partially_filled"
        self.store.execute("UPDATE orders SET filled=?, avg_price=?, fee=fee+?, status=?, updated_ts=? "
                           "WHERE client_order_id=?", (filled, avg_price, fee, status, ts, o["client_order_id"]))
        self.history(o["client_order_id"], status, ts, f"{qty}@{price:.8g}")
        self.store.execute("UPDATE balances SET free=free+?, updated_ts=? WHERE mode=? AND asset=?",
                           (cash_delta, ts, self.mode, self.quote_currency))
        self._update_position(o, pos, new_amt, new_avg, realized, fee, ts, row_id, step)
        return fill

    def _update_position(self, o, pos, new_amt, new_avg, realized, fee, ts, fill_id, step) -> None:
        sym = o["symbol"]
        if pos is None or pos["amount"] <= 0:
            self.store.execute(
                "INSERT INTO positions (mode, symbol, amount, avg_entry, realized_pnl, fees, strategy, opened_ts, "
                "opened_fill_id, updated_ts) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (mode, symbol) DO UPDATE SET "
                "amount=excluded.amount, avg_entry=excluded.avg_entry, realized_pnl=excluded.realized_pnl, "
                "fees=excluded.fees, strategy=excluded.strategy, opened_ts=excluded.opened_ts, "
                "opened_fill_id=excluded.opened_fill_id, updated_ts=excluded.updated_ts",
                (self.mode, sym, new_amt, new_avg, realized, fee, o["strategy"], ts, fill_id, ts))
            return
        if new_amt < step / 2:  # flat: the round trip is over
            self._close_trade(o, pos, realized, fee, ts)
            self.store.execute("UPDATE positions SET amount=0, avg_entry=0, realized_pnl=0, fees=0, opened_ts=NULL, "
                               "opened_fill_id=NULL, updated_ts=? WHERE mode=? AND symbol=?", (ts, self.mode, sym))
            return
        self.store.execute("UPDATE positions SET amount=?, avg_entry=?, realized_pnl=realized_pnl+?, fees=fees+?, "
                           "updated_ts=? WHERE mode=? AND symbol=?", (new_amt, new_avg, realized, fee, ts, self.mode, sym))

    def _close_trade(self, o, pos, realized, fee, ts) -> None:
        fills = self.store.query("SELECT side, amount, price FROM fills WHERE mode=? AND symbol=? AND id>=?",
                                 (self.mode, o["symbol"], pos["opened_fill_id"]))
        bought = sum(f["amount"] for f in fills if f["side"] == "buy")
        cost = sum(f["amount"] * f["price"] for f in fills if f["side"] == "buy")
        sold = sum(f["amount"] for f in fills if f["side"] == "sell")
        proceeds = sum(f["amount"] * f["price"] for f in fills if f["side"] == "sell")
        gross = pos["realized_pnl"] + realized
        fees = pos["fees"] + fee
        self.store.insert("closed_trades", {
            "mode": self.mode, "symbol": o["symbol"], "strategy": pos["strategy"], "entry_ts": pos["opened_ts"],
            "exit_ts": ts, "amount": bought, "entry_price": cost / bought if bought else 0.0,
            "exit_price": proceeds / sold if sold else 0.0, "gross_pnl": gross, "fees": fees, "pnl": gross - fees,
            "return_pct": 100 * (gross - fees) / cost if cost else 0.0, "exit_reason": o["reason"]})

    def history(self, coid: str, status: str, ts: int, detail) -> None:
        self.store.insert("order_status_history", {"client_order_id": coid, "status": status, "ts": ts,
                                                   "detail": detail})


class BookedBroker:
    """What every broker answers from its books: cash, positions, open orders, equity."""

    mode: str
    store = feed = ledger = None

    def cash(self) -> float:
        return self.ledger.cash()

    def positions(self) -> dict[str, dict]:
        return self.ledger.positions()

    def position_amount(self, symbol: str) -> float:
        return self.ledger.position_amount(symbol)

    def open_orders(self, symbol: str | None = None) -> list[dict]:
        return self.ledger.open_orders(symbol)

    def equity(self, prices: dict[str, float] | None = None) -> dict:
        """Cash + positions marked at ``prices`` (default: the feed's current price)."""
        cash = self.cash()
        value = unreal = 0.0
        for sym, p in self.positions().items():
            mark = (prices or {}).get(sym)
            if not mark:
                try:
                    mark = self.feed.quote(sym).price
                except (KeyError, LookupError):  # a symbol this feed does not follow (any more)
                    mark = p["avg_entry"]
            value += p["amount"] * mark
            unreal += p["amount"] * (mark - p["avg_entry"])
        realized = self.store.scalar("SELECT COALESCE(SUM(realized_pnl - fee), 0) FROM fills WHERE mode=?",
                                     (self.mode,)) or 0.0
        return {"equity": cash + value, "cash": cash, "positions_value": value,
                "unrealized_pnl": unreal, "realized_pnl": realized}
