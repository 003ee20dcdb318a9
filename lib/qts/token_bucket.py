"""A token bucket: ``burst`` tokens at once, then ``rate_per_s`` tokens a second on average. The notifier's
rate limit (``try_take``: drop what is over the rate, never wait). Exchange calls are paced by ccxt's own
limiter (broker/exchange_client.py). Standard library only."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float, clock=time.monotonic):
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate, self.capacity, self.clock = float(rate_per_s), float(burst), clock
        self.tokens = float(burst)
        self.stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_take(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens if the bucket holds them; never waits."""
        with self._lock:
            self._refill()
            if self.tokens >= n:
                self.tokens -= n
                return True
            return False
