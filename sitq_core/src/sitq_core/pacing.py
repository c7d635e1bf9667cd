"""Group commit for a worker that keeps up with its producers.

A worker that has drained the queue is woken by every enqueue. Committing a
claim (and the previous finishes) for each one doubles the commits the store
must make durable, and on SQLite every commit holds the one write lock for an
fsync, so producers and worker queue up behind each other. The pacer lets the
first few commits of a burst through at once (a lone task is picked up and
finished without delay) and then spaces commits by a window, so each commit
carries everything that arrived and finished meanwhile.

With ``window=None`` the window adapts to the backend: about 20 times its
recent commit time (bounded to 0.5-20 ms), so a caught-up worker spends at
most about 5% of the time holding the store's write lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CommitPacer"]

_ADAPTIVE_FACTOR = 20.0
_ADAPTIVE_MIN = 0.0005
_ADAPTIVE_MAX = 0.02
_SMOOTHING = 0.2  # weight of the newest commit time in the moving average


class CommitPacer:
    """A token bucket over commits: ``burst`` at once, then one per window."""

    def __init__(
        self,
        window: float | None = None,
        *,
        burst: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fixed_window = window
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._commit_time = 0.0  # seconds; moving average of observed commit durations

    @property
    def window(self) -> float:
        """Seconds between paced commits (0: pacing is off)."""
        if self.fixed_window is not None:
            return self.fixed_window
        return min(_ADAPTIVE_MAX, max(_ADAPTIVE_MIN, _ADAPTIVE_FACTOR * self._commit_time))

    def take(self) -> float:
        """Spend one commit now and return 0, or return the seconds to wait first (nothing spent)."""
        window = self.window
        if window <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) / window)
        self._last = now
        if self._tokens >= 1.0 - 1e-6:  # a timer may fire a hair early
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) * window

    def observe(self, seconds: float) -> None:
        """Record how long one backend commit took (feeds the adaptive window)."""
        if self._commit_time == 0.0:
            self._commit_time = seconds
        else:
            self._commit_time += (seconds - self._commit_time) * _SMOOTHING
