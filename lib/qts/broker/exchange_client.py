"""Calls to a ccxt exchange with the care a live account needs.

* Retry only what is safe: reads and cancels are retried on NetworkError (timeouts included),
  RateLimitExceeded, DDoSProtection (429/418) and ExchangeNotAvailable, with exponential backoff and
  full jitter. Order creation is never retried blindly: the live broker looks the order up by its
  client order id instead (see live.py).
* Never retried: InsufficientFunds, InvalidOrder, AuthenticationError, PermissionDenied, BadRequest.
* A token bucket keeps the request rate below the exchange's published limit (for Binance spot,
  6,000 request weight per minute; we budget ``weight_budget`` of it), charging each call its
  endpoint's weight (Binance's: an order lookup costs 4, the trade list and the balance 20), and
  when the exchange's own used-weight header says the next call would pass ``weight_safe`` of the
  limit, waits for the exchange's minute window to roll over.
* Every call records ``api_latency_ms`` (successes) or ``api_error`` (failures) in the metrics table:
  the circuit breaker reads them.
"""

from __future__ import annotations

import random
import time

from ..token_bucket import TokenBucket


# Request weight of the ccxt calls we make, on Binance spot (GET /api/v3/...: order 4, openOrders with a
# symbol 6, myTrades 20, account 20, ticker/24hr 2, klines 2, depth 5 (limit <= 100), exchangeInfo 20).
BINANCE_SPOT_WEIGHTS = {"create_order": 1, "cancel_order": 1, "fetch_order": 4, "fetch_open_orders": 6,
                        "fetch_my_trades": 20, "fetch_balance": 20, "fetch_ticker": 2, "fetch_ohlcv": 2,
                        "fetch_order_book": 5, "load_markets": 20, "fetch_orders": 20, "fetch_closed_orders": 20}


class ExchangeClient:
    def __init__(self, exchange, store=None, weight_limit_per_min: int = 6000, weight_budget: float = 0.5,
                 retries: int = 4, base_backoff_s: float = 0.25, max_backoff_s: float = 8.0, sleep=time.sleep,
                 clock=None, weight_safe: float = 0.8):
        import ccxt

        self.ccxt = ccxt
        self.exchange, self.store = exchange, store
        per_s = weight_limit_per_min * weight_budget / 60
        # the exchange counts weight per minute, not per second: a burst may use a minute's budget (the
        # used-weight header check below keeps the minute itself under the limit)
        self.bucket = TokenBucket(per_s, burst=max(5.0, per_s * 60), clock=clock or time.monotonic, sleep=sleep)
        self.clock = clock or time.time  # wall clock: the exchange counts weight per calendar minute
        self.weight_limit, self.weight_safe = weight_limit_per_min, weight_safe
        self.weights = BINANCE_SPOT_WEIGHTS if str(getattr(exchange, "id", "")).startswith("binance") else {}
        self._header_ts: float | None = None  # when the last used-weight header arrived
        self.retries, self.base, self.cap, self.sleep = retries, base_backoff_s, max_backoff_s, sleep
        self.calls = 0
        self._pending: list = []
        self._flushed = time.monotonic()

    def _record(self, name: str, value: float, tags: dict) -> None:
        """Latency and error metrics (the circuit breaker reads them), written in batches: one insert per
        API call cost as much as a tenth of an order."""
        if self.store is None:
            return
        self._pending.append((name, float(value), tags, int(time.time() * 1000)))
        if len(self._pending) >= 25 or time.monotonic() - self._flushed >= 1.0 or name == "api_error":
            self.flush_metrics()

    def flush_metrics(self) -> None:
        rows, self._pending, self._flushed = self._pending, [], time.monotonic()
        if not rows or self.store is None:
            return
        try:
            import json

            with self.store.tx():
                self.store.conn.executemany(
                    "INSERT INTO metrics (name, value, tags, ts) VALUES (?,?,?,?)",
                    [(n, v, json.dumps(t, sort_keys=True), ts) for n, v, t, ts in rows])
        except Exception:
            pass

    def _used_weight(self) -> int | None:
        h = getattr(self.exchange, "last_response_headers", None) or {}
        for k, v in h.items():
            if k.lower() == "x-mbx-used-weight-1m":
                try:
                    return int(v)
                except ValueError:
                    return None
        return None

    def is_retryable(self, e: Exception) -> bool:
        c = self.ccxt
        if isinstance(e, (c.InsufficientFunds, c.InvalidOrder, c.AuthenticationError, c.PermissionDenied,
                          c.BadRequest, c.BadSymbol, c.ArgumentsRequired, c.NotSupported)):
            return False
        return isinstance(e, (c.NetworkError, c.RateLimitExceeded, c.DDoSProtection, c.ExchangeNotAvailable))

    def _wait_for_window(self, weight: float) -> None:
        """The exchange's header says this call would pass ``weight_safe`` of its limit in the current
        minute: wait until that minute is over (a header from an earlier minute no longer counts)."""
        used = self._used_weight()
        if used is None or self._header_ts is None:
            return
        now = self.clock()
        if int(now // 60) != int(self._header_ts // 60):
            return
        if used + weight > self.weight_safe * self.weight_limit:
            self.sleep(60 - now % 60 + 0.5)  # (+0.5 s: our clock and the exchange's are not the same)

    def call(self, method: str, *args, idempotent: bool = True, weight: float | None = None, **kwargs):
        attempt = 0
        if weight is None:
            weight = self.weights.get(method, 1.0)
        while True:
            self.bucket.acquire(weight)
            self._wait_for_window(weight)
            t0 = time.perf_counter()
            try:
                self.calls += 1
                out = getattr(self.exchange, method)(*args, **kwargs)
            except Exception as e:
                self._header_ts = self.clock()
                self._record("api_error", 1.0, {"method": method, "error": e.__class__.__name__})
                attempt += 1
                if not idempotent or not self.is_retryable(e) or attempt > self.retries:
                    raise
                backoff = min(self.cap, self.base * 2 ** (attempt - 1))
                if isinstance(e, (self.ccxt.RateLimitExceeded, self.ccxt.DDoSProtection)):
                    backoff = max(backoff, 1.0)
                self.sleep(random.uniform(0, backoff))  # full jitter
                continue
            self._header_ts = self.clock()
            self._record("api_latency_ms", (time.perf_counter() - t0) * 1000, {"method": method})
            return out
