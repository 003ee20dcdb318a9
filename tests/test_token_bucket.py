"""The one token bucket (qts.token_bucket): the notifier's rate limit, on a fake clock."""

from __future__ import annotations

import pytest

from qts.token_bucket import TokenBucket


def test_the_burst_then_the_rate_and_never_a_wait():
    now = [0.0]
    b = TokenBucket(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [b.try_take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.25  # half a token
    assert not b.try_take()
    now[0] += 0.25
    assert b.try_take() and not b.try_take()
    now[0] += 100  # refills to the burst, not beyond
    assert sum(b.try_take() for _ in range(10)) == 3


def test_a_zero_rate_bucket_spends_its_burst_once_and_bad_settings_are_refused():
    now = [0.0]
    b = TokenBucket(rate_per_s=0.0, burst=1, clock=lambda: now[0])
    now[0] += 1e6
    assert b.try_take() and not b.try_take()
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=-1, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=1, burst=0)
