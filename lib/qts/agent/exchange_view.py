"""The agent's own view of the exchange: mid prices it fetches itself, balances, and today's fills.

Everything the agent's hard limits rest on comes from here, never from files in the project (which the
assistant can rewrite or roll back): positions are the exchange's balances; the day's spend and the
day's loss come from the exchange's own trade list (the one append-only record the assistant cannot
touch) plus what the agent itself sent today. Reads are cached briefly and refreshed after orders.
"""

from __future__ import annotations

import threading
import time

DAY_MS = 86_400_000


def day_start(now_ms: int) -> int:
    return now_ms - now_ms % DAY_MS


class ExchangeView:
    def __init__(self, client, symbols, quote: str = "USDT", mid_ttl_s: float = 1.0, balance_ttl_s: float = 5.0,
                 fills_ttl_s: float = 30.0, clock=time.time):
        self.client, self.symbols, self.quote = client, tuple(symbols), quote
        self.mid_ttl_s, self.balance_ttl_s, self.fills_ttl_s = mid_ttl_s, balance_ttl_s, fills_ttl_s
        self.clock = clock
        self._lock = threading.RLock()
        self._mids: dict[str, tuple[float, dict]] = {}
        self._balance: tuple[float, dict] | None = None
        self._fills: dict[str, dict[str, dict]] = {}     # symbol -> trade id -> trade (today)
        self._fills_at: dict[str, float] = {}
        self._agg: dict[str, list[float]] = {}
        self._recent: dict[str, list[float]] = {}
        self._orders_since: dict[str, int] = {}
        self._last_ts: dict[str, int] = {}
        self._day = day_start(int(clock() * 1000))
        self.sent_buy_notional = 0.0                      # what the agent itself sent today (buys)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _roll_day(self) -> None:
        d = day_start(self.now_ms())
        if d != self._day:
            self._day, self._fills, self._fills_at, self.sent_buy_notional = d, {}, {}, 0.0
            self._agg, self._recent, self._orders_since, self._last_ts = {}, {}, {}, {}

    # -- prices --------------------------------------------------------------------------------
    def book(self, symbol: str, fresh: bool = False) -> dict:
        """{"bid", "ask", "mid", "ts"} from the exchange (ticker, else the order book's top)."""
        with self._lock:
            hit = self._mids.get(symbol)
            if hit and not fresh and time.monotonic() - hit[0] < self.mid_ttl_s:
                return hit[1]
        t = self.client.call("fetch_ticker", symbol)
        bid, ask = t.get("bid"), t.get("ask")
        if not (bid and ask):
            ob = self.client.call("fetch_order_book", symbol, 5)
            bid = ob["bids"][0][0] if ob.get("bids") else None
            ask = ob["asks"][0][0] if ob.get("asks") else None
        if not (bid and ask) or bid <= 0 or ask <= 0 or ask < bid:
            raise LookupError(f"{symbol}: the exchange gave no usable bid/ask (bid={bid}, ask={ask})")
        out = {"bid": float(bid), "ask": float(ask), "mid": (float(bid) + float(ask)) / 2, "ts": self.now_ms()}
        with self._lock:
            self._mids[symbol] = (time.monotonic(), out)
        return out

    def mid(self, symbol: str) -> float:
        return self.book(symbol)["mid"]

    # -- balances ------------------------------------------------------------------------------
    def balances(self, fresh: bool = False) -> dict[str, float]:
        """Totals (free + locked) by asset."""
        with self._lock:
            if self._balance and not fresh and time.monotonic() - self._balance[0] < self.balance_ttl_s:
                return self._balance[1]
        b = self.client.call("fetch_balance")
        total = {k: float(v or 0) for k, v in (b.get("total") or {}).items() if isinstance(v, (int, float))}
        if not total and not b.get("free"):
            raise LookupError("the balance answer lists no asset at all: not trusted")
        with self._lock:
            self._balance = (time.monotonic(), total)
        return total

    def free(self) -> dict[str, float]:
        """What can be sold now (not locked in open orders), read fresh: the kill switch sells this."""
        b = self.client.call("fetch_balance")
        return {k: float(v or 0) for k, v in (b.get("free") or {}).items() if isinstance(v, (int, float))}

    def position(self, symbol: str) -> float:
        return self.balances().get(symbol.split("/")[0], 0.0)

    def cash(self) -> float:
        return self.balances().get(self.quote, 0.0)

    def invalidate(self) -> None:
        with self._lock:
            self._balance = None

    def apply_fill(self, symbol: str, side: str, amount: float, price: float, fee_quote: float) -> None:
        """An order's own answer moves the cached balances at once (no balance request per order); the
        periodic refresh re-reads the exchange's numbers."""
        base = symbol.split("/")[0]
        with self._lock:
            if self._balance is None:
                return
            t, bal = self._balance
            bal = dict(bal)
            cost = amount * price
            sign = 1 if side == "buy" else -1
            bal[base] = bal.get(base, 0.0) + sign * amount
            bal[self.quote] = bal.get(self.quote, 0.0) - sign * cost - fee_quote
            self._balance = (t, bal)

    # -- today's fills -------------------------------------------------------------------------
    # Aggregates per symbol: [buy cost, sell proceeds, fees in quote, net base]. ``_agg`` comes from the
    # exchange's trade list (recomputed when it is re-read: every ``fills_ttl_s`` or after
    # ``refresh_every_orders`` orders); ``_recent`` from the agent's own orders' answers since then (reset
    # on each re-read, which includes them), so nothing is counted twice and nothing waits for a re-read.
    refresh_every_orders = 20

    def _zero(self):
        return [0.0, 0.0, 0.0, 0.0]

    def _aggregate(self, trades) -> list[float]:
        a = self._zero()
        for t in trades:
            amt, px = float(t["amount"]), float(t["price"])
            cost = float(t.get("cost") or amt * px)
            fee = t.get("fee") or {}
            fee_q = float(fee.get("cost") or 0) if fee.get("currency") in (None, self.quote) \
                else float(fee.get("cost") or 0) * px
            if t.get("side") == "buy":
                a[0] += cost
                a[3] += amt
            else:
                a[1] += cost
                a[3] -= amt
            a[2] += fee_q
        return a

    def _load_fills(self, symbol: str, fresh: bool = False) -> dict[str, dict]:
        self._roll_day()
        with self._lock:
            stale = (time.monotonic() - self._fills_at.get(symbol, 0) >= self.fills_ttl_s
                     or self._orders_since.get(symbol, 0) >= self.refresh_every_orders)
            if not fresh and symbol in self._fills and not stale:
                return self._fills[symbol]
        # incremental: only what is new since the last trade seen (one second of overlap, by trade id)
        since = max(self._day, self._last_ts.get(symbol, self._day) - 1000)
        trades: list = []
        for _page in range(50):  # the exchange answers at most `limit` trades from `since` on: page through
            batch = self.client.call("fetch_my_trades", symbol, since, 1000)
            trades += batch
            if len(batch) < 1000:
                break
            since = max(int(t.get("timestamp") or 0) for t in batch)
        with self._lock:
            known = self._fills.setdefault(symbol, {})
            new = [t for t in trades if t.get("id") is not None and int(t.get("timestamp") or 0) >= self._day
                   and str(t["id"]) not in known]
            for t in new:
                known[str(t["id"])] = t
                self._last_ts[symbol] = max(self._last_ts.get(symbol, 0), int(t.get("timestamp") or 0))
            agg = self._agg.setdefault(symbol, self._zero())
            for i, v in enumerate(self._aggregate(new)):
                agg[i] += v
            self._fills_at[symbol] = time.monotonic()
            self._recent[symbol] = self._zero()
            self._orders_since[symbol] = 0
            return known

    def record_order_fill(self, symbol: str, side: str, amount: float, price: float, fee_quote: float) -> None:
        """An order of the agent's that filled: counted in today's numbers at once."""
        fill = {"side": side, "amount": amount, "price": price, "fee": {"cost": fee_quote, "currency": self.quote}}
        with self._lock:
            r = self._recent.setdefault(symbol, self._zero())
            for i, v in enumerate(self._aggregate([fill])):
                r[i] += v
            self._orders_since[symbol] = self._orders_since.get(symbol, 0) + 1

    def _totals(self, symbol: str) -> list[float]:
        self._load_fills(symbol)
        a, r = self._agg.get(symbol) or self._zero(), self._recent.get(symbol) or self._zero()
        return [x + y for x, y in zip(a, r)]

    def day_spend(self) -> float:
        """Today's buy notional: the exchange's fills (and the agent's own since the last re-read), or what
        the agent sent (open orders included), whichever is larger."""
        return max(sum(self._totals(s)[0] for s in self.symbols), self.sent_buy_notional)

    def day_pnl(self) -> float:
        """Today's trading result from the exchange's fills: quote received for sells minus quote paid for
        buys and fees, with the base bought (or sold) today marked at the mid. A sell far below the market
        shows here as a loss, though it reduced exposure."""
        pnl = 0.0
        for s in self.symbols:
            buy, sell, fees, net = self._totals(s)
            pnl += sell - buy - fees
            if abs(net) > 1e-15:
                pnl += net * self.mid(s)
        return pnl
