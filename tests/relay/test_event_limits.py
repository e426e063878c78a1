"""Per-host event budgets: an event over budget waits (a delay), it is never dropped."""

from __future__ import annotations

from atrepo.relay.limits import Budget, EventRateLimiter, budget_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reference_budgets() -> None:
    assert budget_for(100, trusted=False) == Budget(50, 2_600, 21_000)
    assert budget_for(10_000, trusted=False) == Budget(60, 12_500, 120_000)
    assert budget_for(100, trusted=False, per_second=7) == Budget(7, 2_600, 21_000)
    assert budget_for(100, trusted=True).per_second >= 5_000


def test_events_over_the_second_budget_wait() -> None:
    clock = Clock()
    limiter = EventRateLimiter(Budget(5, 1000, 1000), clock=clock)
    assert [limiter.delay() for _ in range(5)] == [0.0] * 5
    wait = limiter.delay()
    assert 0 < wait <= 1.0
    clock.now += wait
    # the sliding window: the previous second still weighs on the start of the next one
    admitted = 0
    for _ in range(100):
        if limiter.delay() == 0.0:
            admitted += 1
        else:
            clock.now += 0.05
    assert admitted >= 5


def test_admitted_rate_converges_to_budget() -> None:
    clock = Clock()
    limiter = EventRateLimiter(Budget(20, 10**6, 10**7), clock=clock)
    admitted = 0
    start = clock.now
    while clock.now - start < 60:
        wait = limiter.delay()
        if wait == 0:
            admitted += 1
        else:
            clock.now += wait
    assert 20 * 60 * 0.9 <= admitted <= 20 * 61


def test_hour_budget_binds() -> None:
    clock = Clock()
    limiter = EventRateLimiter(Budget(1000, 10, 1000), clock=clock)
    for _ in range(10):
        assert limiter.delay() == 0.0
    assert limiter.delay() > 1.0  # the hour window is full: minutes, not a second


def test_changing_the_budget_keeps_counts() -> None:
    clock = Clock()
    limiter = EventRateLimiter(Budget(2, 100, 100), clock=clock)
    assert limiter.delay() == 0.0 and limiter.delay() == 0.0
    assert limiter.delay() > 0
    limiter.set_budget(Budget(10, 100, 100))
    assert limiter.delay() == 0.0
