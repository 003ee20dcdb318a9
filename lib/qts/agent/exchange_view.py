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
        self._day = day_start(int(clock() * 1000))
        self.sent_buy_notional = 0.0                      # what the agent itself sent today (buys)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _roll_day(self) -> None:
        d = day_start(self.now_ms())
        if d != self._day:
            self._day, self._fills, self._fills_at, self.sent_buy_notional = d, {}, {}, 0.0

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

    def free(self, fresh: bool = True) -> dict[str, float]:
        b = self.client.call("fetch_balance")
        return {k: float(v or 0) for k, v in (b.get("free") or {}).items() if isinstance(v, (int, float))}

    def position(self, symbol: str) -> float:
        return self.balances().get(symbol.split("/")[0], 0.0)

    def cash(self) -> float:
        return self.balances().get(self.quote, 0.0)

    def invalidate(self) -> None:
        with self._lock:
            self._balance = None

    # -- today's fills -------------------------------------------------------------------------
    def _load_fills(self, symbol: str, fresh: bool = False) -> dict[str, dict]:
        self._roll_day()
        with self._lock:
            if not fresh and symbol in self._fills and time.monotonic() - self._fills_at.get(symbol, 0) < self.fills_ttl_s:
                return self._fills[symbol]
        trades = self.client.call("fetch_my_trades", symbol, self._day, None)
        got = {str(t["id"]): t for t in trades if t.get("id") is not None and int(t.get("timestamp") or 0) >= self._day}
        with self._lock:
            known = self._fills.setdefault(symbol, {})
            known.update(got)
            self._fills_at[symbol] = time.monotonic()
            return known

    def add_fills(self, symbol: str, trades: list[dict]) -> None:
        """Fills an order's own answer listed: counted at once, without waiting for the next refresh."""
        self._roll_day()
        with self._lock:
            known = self._fills.setdefault(symbol, {})
            for t in trades or []:
                if t.get("id") is not None and int(t.get("timestamp") or self.now_ms()) >= self._day:
                    known[str(t["id"])] = t

    def day_spend(self) -> float:
        """Today's buy notional: the exchange's fills, or what the agent sent, whichever is larger."""
        total = 0.0
        for s in self.symbols:
            total += sum(float(t.get("cost") or float(t["amount"]) * float(t["price"]))
                         for t in self._load_fills(s).values() if t.get("side") == "buy")
        return max(total, self.sent_buy_notional)

    def day_pnl(self) -> float:
        """Today's trading result from the exchange's fills alone: quote received for sells minus quote
        paid for buys and fees, with the base bought (or sold) today marked at the mid. A sell far below
        the market shows here as a loss, though it reduced exposure."""
        pnl = 0.0
        for s in self.symbols:
            fills = self._load_fills(s)
            if not fills:
                continue
            net_base = 0.0
            for t in fills.values():
                amt, px = float(t["amount"]), float(t["price"])
                cost = float(t.get("cost") or amt * px)
                fee = t.get("fee") or {}
                fee_q = float(fee.get("cost") or 0) if fee.get("currency") in (None, self.quote) \
                    else float(fee.get("cost") or 0) * px
                if t.get("side") == "buy":
                    pnl -= cost + fee_q
                    net_base += amt
                else:
                    pnl += cost - fee_q
                    net_base -= amt
            if abs(net_base) > 0:
                pnl += net_base * self.mid(s)
        return pnl
