"""The one backoff policy: exponential, capped, jittered within the upper half."""

from __future__ import annotations

from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import RetrySettings


def test_delays_double_up_to_the_cap_within_the_upper_half_of_each_step() -> None:
    highest = Backoff(RetrySettings(initial_backoff_s=0.2, max_backoff_s=1.0), uniform=lambda lo, hi: hi)
    lowest = Backoff(RetrySettings(initial_backoff_s=0.2, max_backoff_s=1.0), uniform=lambda lo, hi: lo)
    assert [round(highest.next_delay(), 6) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert [round(lowest.next_delay(), 6) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert highest.attempts == 5


def test_reset_starts_over() -> None:
    backoff = Backoff(RetrySettings(initial_backoff_s=0.1, max_backoff_s=10.0), uniform=lambda lo, hi: hi)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 0.1


def test_real_jitter_stays_in_bounds() -> None:
    backoff = Backoff(RetrySettings(initial_backoff_s=0.2, max_backoff_s=0.2))
    delays = [backoff.next_delay() for _ in range(1000)]
    assert all(0.1 <= d <= 0.2 for d in delays)
    assert len(set(delays)) > 900  # drawn, not fixed
