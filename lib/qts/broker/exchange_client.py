"""Calls to a ccxt exchange with the care a live account needs.

* Retry only what is safe: reads and cancels are retried on NetworkError (timeouts included),
  RateLimitExceeded, DDoSProtection (429/418) and ExchangeNotAvailable, with exponential backoff and
  full jitter. Order creation is never retried blindly: the live broker looks the order up by its
  client order id instead (see live.py).
* Never retried: InsufficientFunds, InvalidOrder, AuthenticationError, PermissionDenied, BadRequest.
* A token bucket keeps the request rate below the exchange's published limit (for Binance spot,
  6,000 request weight per minute; we budget ``weight_budget`` of it) and backs off when the
  exchange's own used-weight header says we are close.
* Every call records ``api_latency_ms`` (successes) or ``api_error`` (failures) in the metrics table:
  the circuit breaker reads them.
"""

from __future__ import annotations

import random
import threading
import time


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float, clock=time.monotonic, sleep=time.sleep):
        self.rate, self.burst, self.clock, self.sleep = rate_per_s, burst, clock, sleep
        self.tokens, self.t = burst, clock()
        self.lock = threading.Lock()

    def acquire(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens, sleeping as needed. Returns seconds waited."""
        waited = 0.0
        with self.lock:
            while True:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
                self.t = now
                if self.tokens >= cost:
                    self.tokens -= cost
                    return waited
                need = (cost - self.tokens) / self.rate
                self.sleep(need)
                waited += need


class ExchangeClient:
    RETRYABLE = ("NetworkError", "RateLimitExceeded", "DDoSProtection", "ExchangeNotAvailable", "RequestTimeout",
                 "OnMaintenance")

    def __init__(self, exchange, store=None, weight_limit_per_min: int = 6000, weight_budget: float = 0.5,
                 retries: int = 4, base_backoff_s: float = 0.25, max_backoff_s: float = 8.0, sleep=time.sleep):
        import ccxt

        self.ccxt = ccxt
        self.exchange, self.store = exchange, store
        per_s = weight_limit_per_min * weight_budget / 60
        self.bucket = TokenBucket(per_s, burst=max(5.0, per_s), sleep=sleep)
        self.weight_limit = weight_limit_per_min
        self.retries, self.base, self.cap, self.sleep = retries, base_backoff_s, max_backoff_s, sleep
        self.calls = 0

    def _record(self, name: str, value: float, tags: dict) -> None:
        if self.store is not None:
            try:
                self.store.metric(name, value, tags)
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

    def call(self, method: str, *args, idempotent: bool = True, weight: float = 1.0, **kwargs):
        attempt = 0
        while True:
            self.bucket.acquire(weight)
            used = self._used_weight()
            if used is not None and used > 0.8 * self.weight_limit:
                self.sleep(min(self.cap, 60 - time.time() % 60))  # let the exchange's minute window roll
            t0 = time.perf_counter()
            try:
                self.calls += 1
                out = getattr(self.exchange, method)(*args, **kwargs)
            except Exception as e:
                self._record("api_error", 1.0, {"method": method, "error": e.__class__.__name__})
                attempt += 1
                if not idempotent or not self.is_retryable(e) or attempt > self.retries:
                    raise
                backoff = min(self.cap, self.base * 2 ** (attempt - 1))
                if isinstance(e, (self.ccxt.RateLimitExceeded, self.ccxt.DDoSProtection)):
                    backoff = max(backoff, 1.0)
                self.sleep(random.uniform(0, backoff))  # full jitter
                continue
            self._record("api_latency_ms", (time.perf_counter() - t0) * 1000, {"method": method})
            return out
