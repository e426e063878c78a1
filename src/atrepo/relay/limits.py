"""Per-host event rate limits: sliding windows that delay events instead of dropping them.

The reference relay counts each host's events in sliding windows of a
second, an hour and a day (sync.md §8), with budgets that grow with the
host's account limit. Its windows *drop* what is over budget, which is how a
busy host silently loses events. Here an event over budget waits: the
host's reader stops, its WebSocket stops being read, and TCP pushes back on
the upstream until the window has room. Nothing is lost, and the host shows
as ``throttled`` while it waits.

A window is approximated as the reference's are: the count of the current
fixed bucket plus the previous bucket's count weighted by how much of it
still overlaps the sliding window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["Budget", "EventRateLimiter", "budget_for"]

#: Reference defaults (sync.md §8): a baseline plus a share of the account limit.
BASE_PER_SECOND: Final = 50
BASE_PER_HOUR: Final = 2_500
BASE_PER_DAY: Final = 20_000
#: Hosts the operator configured or marked trusted. The reference's trusted budget is 5,000/s;
#: ours is higher because a configured host is the operator's own, and a bench replays at full speed.
TRUSTED_PER_SECOND: Final = 50_000
TRUSTED_PER_HOUR: Final = 500_000_000
TRUSTED_PER_DAY: Final = 5_000_000_000
#: Shortest wait ``delay`` answers.
MIN_WAIT_S: Final = 0.001


@dataclass(frozen=True, slots=True)
class Budget:
    """Events a host may send per second, hour and day."""

    per_second: int
    per_hour: int
    per_day: int


def budget_for(
    account_limit: int,
    *,
    trusted: bool,
    per_second: int | None = None,
    per_hour: int | None = None,
    per_day: int | None = None,
) -> Budget:
    """The reference's budget for a host, with the operator's overrides (None = default)."""
    if trusted:
        base = Budget(TRUSTED_PER_SECOND, TRUSTED_PER_HOUR, TRUSTED_PER_DAY)
    else:
        base = Budget(
            BASE_PER_SECOND + account_limit // 1000,
            BASE_PER_HOUR + account_limit,
            BASE_PER_DAY + 10 * account_limit,
        )
    return Budget(
        per_second if per_second is not None else base.per_second,
        per_hour if per_hour is not None else base.per_hour,
        per_day if per_day is not None else base.per_day,
    )


class _Window:
    __slots__ = ("_bucket", "_current", "_previous", "limit", "span")

    def __init__(self, span: float, limit: int) -> None:
        self.span = span
        self.limit = limit
        self._bucket = -1
        self._current = 0
        self._previous = 0

    def _roll(self, now: float) -> float:
        bucket = int(now // self.span)
        if bucket != self._bucket:
            self._previous = self._current if bucket == self._bucket + 1 else 0
            self._current = 0
            self._bucket = bucket
        return (now - bucket * self.span) / self.span  # fraction of the bucket elapsed

    def wait(self, now: float) -> float:
        """Seconds until one more event fits (0 when it fits now)."""
        elapsed = self._roll(now)
        estimate = self._previous * (1.0 - elapsed) + self._current
        if estimate + 1 <= self.limit:
            return 0.0
        if self._current + 1 > self.limit:  # the current bucket alone is full: wait for the next
            return max((1.0 - elapsed) * self.span, MIN_WAIT_S)
        # the previous bucket's weight must shrink by (estimate + 1 - limit)
        if self._previous <= 0:
            return max((1.0 - elapsed) * self.span, MIN_WAIT_S)
        need = (estimate + 1 - self.limit) / self._previous
        # at least a millisecond: a rounding-sized wait would not move a float clock forward
        return max(min(need, 1.0 - elapsed) * self.span, MIN_WAIT_S)

    def count(self, now: float) -> None:
        self._roll(now)
        self._current += 1


class EventRateLimiter:
    """Admits one host's events within its :class:`Budget`; ``delay()`` says how long to wait."""

    def __init__(self, budget: Budget, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: tuple[_Window, ...] = ()
        self.budget = budget
        self.set_budget(budget)
        #: Seconds events of this host have waited for the windows (for /metrics and the status page).
        self.waited_s = 0.0

    def set_budget(self, budget: Budget) -> None:
        """Change the budget (the counts so far are kept)."""
        self.budget = budget
        old = {w.span: w for w in self._windows}
        windows = []
        for span, limit in ((1.0, budget.per_second), (3600.0, budget.per_hour), (86400.0, budget.per_day)):
            window = old.get(span) or _Window(span, limit)
            window.limit = max(1, limit)
            windows.append(window)
        self._windows = tuple(windows)

    def delay(self) -> float:
        """0 and the event counted, or the seconds to wait before asking again (nothing counted)."""
        now = self._clock()
        wait = max(w.wait(now) for w in self._windows)
        if wait > 0:
            return wait
        for window in self._windows:
            window.count(now)
        return 0.0
