"""The one token bucket (qts.token_bucket), as the exchange client uses it: ``acquire`` waits on a fake clock."""

from __future__ import annotations

import pytest

from qts.token_bucket import TokenBucket


class FakeTime:
    def __init__(self):
        self.now, self.slept = 0.0, []

    def clock(self):
        return self.now

    def sleep(self, s):
        self.slept.append(s)
        self.now += s


def test_acquire_spends_the_burst_then_waits_for_the_rate():
    t = FakeTime()
    b = TokenBucket(rate_per_s=2.0, burst=4, clock=t.clock, sleep=t.sleep)
    assert [b.acquire() for _ in range(4)] == [0.0] * 4
    assert b.acquire(3) == pytest.approx(1.5)  # 3 tokens at 2 a second
    assert t.now == pytest.approx(1.5)


def test_a_call_heavier_than_the_bucket_waits_for_a_full_bucket_and_leaves_a_debt():
    t = FakeTime()
    b = TokenBucket(rate_per_s=1.0, burst=5, clock=t.clock, sleep=t.sleep)
    assert b.acquire(5) == 0.0
    assert b.acquire(20) == pytest.approx(5.0)  # waits for 5 (a full bucket), then owes 15
    assert b.tokens == pytest.approx(-15.0)
    assert b.acquire(1) == pytest.approx(16.0)  # the debt is waited out first


def test_the_notifier_side_never_waits_and_a_zero_rate_cannot_block_forever():
    t = FakeTime()
    b = TokenBucket(rate_per_s=0.0, burst=1, clock=t.clock, sleep=t.sleep)
    assert b.try_take() and not b.try_take() and t.slept == []
    with pytest.raises(ValueError):
        b.acquire()
