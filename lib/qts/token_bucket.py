"""A token bucket: ``burst`` tokens at once, then ``rate_per_s`` tokens a second on average. The one used by the
notifier (``try_take``: drop what is over the rate) and the exchange client (``acquire``: wait for it).
Standard library only."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float, clock=time.monotonic, sleep=time.sleep):
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate, self.capacity, self.clock, self.sleep = float(rate_per_s), float(burst), clock, sleep
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

    def acquire(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens, sleeping as needed; returns the seconds waited. A cost above the capacity waits
        for a full bucket and leaves a debt that later calls wait out (else it would wait forever)."""
        if self.rate <= 0:
            raise ValueError("a bucket with rate 0 never refills: acquire would wait forever")
        waited = 0.0
        ready = min(cost, self.capacity)
        with self._lock:
            while True:
                self._refill()
                if self.tokens >= ready:
                    self.tokens -= cost
                    return waited
                need = (ready - self.tokens) / self.rate
                self.sleep(need)
                waited += need
