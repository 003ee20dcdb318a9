"""A token bucket: ``burst`` sends at once, then ``rate_per_s`` sends a second on average."""

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

    def try_take(self, n: float = 1.0) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= n:
                self.tokens -= n
                return True
            return False
