"""Calls to a ccxt exchange with the care a live account needs.

* Request rate: ccxt's own limiter (``enableRateLimit``; the exchange factories in agent/main.py and
  market/ccxt_feed.py turn it on) with ccxt's per-endpoint costs (``calculate_rate_limiter_cost``: on
  Binance spot ``cost = weight / 5`` at ``rateLimit`` 50 ms, i.e. the exchange's 6,000 weight a minute).
  ccxt's sync limiter spaces request STARTS by ``rateLimit x cost`` of the next call, so a minute can
  still hold one call's weight too many; ``rate_share`` (default 0.9) stretches ``rateLimit`` to leave
  that headroom. No endpoint weights are kept here.
* What ccxt lacks, kept here: after a 429 / 418 (ccxt raises RateLimitExceeded / DDoSProtection) the
  exchange's ``Retry-After`` is honoured by EVERY later call through this client, order creation
  included (sending during a ban lengthens it on Binance); a ban longer than ``max_pause_s`` is not
  slept through: calls fail at once, without a request, until it is over.
* Retry only what is safe: reads and cancels are retried on NetworkError (timeouts included),
  RateLimitExceeded, DDoSProtection and ExchangeNotAvailable, with exponential backoff and full jitter.
  Order creation is never retried blindly: the live broker looks the order up by its client order id
  instead (see live.py). Never retried: InsufficientFunds, InvalidOrder, AuthenticationError,
  PermissionDenied, BadRequest.
* Every call records ``api_latency_ms`` (successes) or ``api_error`` (failures) in the metrics table:
  the circuit breaker reads them.

A budget SHARED ACROSS PROCESSES does not exist yet: the exchange counts weight per IP (and per account),
while the paper feed, the trading agent and one-off CLI commands each run their own ccxt limiter. It
would go in :meth:`ExchangeClient._before_call`: charge ``exchange.calculate_rate_limiter_cost(...)``
to a token bucket kept in one file under the state home (a row updated under ``fsutil.file_lock``), and
write ``_paused_until`` there too so every process honours a ban one of them received.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time


def retry_after_s(headers) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), or None."""
    for k, v in (headers or {}).items():
        if str(k).lower() != "retry-after":
            continue
        try:
            return max(0.0, float(v))
        except (TypeError, ValueError):
            pass
        try:
            return max(0.0, email.utils.parsedate_to_datetime(str(v)).timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return None


class ExchangeClient:
    def __init__(self, exchange, store=None, retries: int = 4, base_backoff_s: float = 0.25,
                 max_backoff_s: float = 8.0, sleep=time.sleep, clock=time.monotonic, rate_share: float = 0.9,
                 max_pause_s: float = 300.0):
        import ccxt

        if not 0 < rate_share <= 1:
            raise ValueError(f"rate_share: must be in (0, 1], got {rate_share!r}")
        self.ccxt = ccxt
        self.exchange, self.store = exchange, store
        base = getattr(exchange, "_qts_base_rate_limit", None) or getattr(exchange, "rateLimit", None)
        if isinstance(base, (int, float)) and base > 0:
            # remembered on the exchange so two clients over one exchange do not stretch it twice
            exchange._qts_base_rate_limit = base
            exchange.rateLimit = base / rate_share
        self.retries, self.base, self.cap, self.sleep, self.clock = retries, base_backoff_s, max_backoff_s, sleep, clock
        self.max_pause_s = max_pause_s
        self._paused_until = 0.0   # clock() before which nothing is sent (the exchange's Retry-After)
        self._pause_lock = threading.Lock()
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

    def is_retryable(self, e: Exception) -> bool:
        c = self.ccxt
        if isinstance(e, (c.InsufficientFunds, c.InvalidOrder, c.AuthenticationError, c.PermissionDenied,
                          c.BadRequest, c.BadSymbol, c.ArgumentsRequired, c.NotSupported)):
            return False
        return isinstance(e, (c.NetworkError, c.RateLimitExceeded, c.DDoSProtection, c.ExchangeNotAvailable))

    def paused_for(self) -> float:
        """Seconds until the exchange's last Retry-After is over (0: calls may go out)."""
        return max(0.0, self._paused_until - self.clock())

    def _before_call(self, method: str) -> None:
        wait = self.paused_for()
        if wait <= 0:
            return
        if wait > self.max_pause_s:
            raise self.ccxt.DDoSProtection(f"{method} not sent: the exchange asked us to wait another {wait:.0f} s "
                                           "(Retry-After); sending now would lengthen the ban")
        self.sleep(wait)

    def _note_rate_limit(self, e: Exception) -> float | None:
        ra = retry_after_s(getattr(self.exchange, "last_response_headers", None))
        if ra is None:
            return None
        with self._pause_lock:
            self._paused_until = max(self._paused_until, self.clock() + ra)
        return ra

    def call(self, method: str, *args, idempotent: bool = True, **kwargs):
        attempt = 0
        while True:
            self._before_call(method)
            t0 = time.perf_counter()
            try:
                self.calls += 1
                out = getattr(self.exchange, method)(*args, **kwargs)
            except Exception as e:
                self._record("api_error", 1.0, {"method": method, "error": e.__class__.__name__})
                limited = isinstance(e, (self.ccxt.RateLimitExceeded, self.ccxt.DDoSProtection))
                ra = self._note_rate_limit(e) if limited else None
                attempt += 1
                if not idempotent or not self.is_retryable(e) or attempt > self.retries:
                    raise
                if ra is not None and ra > self.max_pause_s:
                    raise
                backoff = min(self.cap, self.base * 2 ** (attempt - 1))
                if limited:
                    backoff = max(backoff, 1.0)
                if ra is None or ra < 1.0:   # (a Retry-After is waited out by _before_call on the next turn)
                    self.sleep(random.uniform(0, backoff))  # full jitter
                continue
            self._record("api_latency_ms", (time.perf_counter() - t0) * 1000, {"method": method})
            return out
