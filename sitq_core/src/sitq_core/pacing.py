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

A pause pays only when something arrives during it. A client that enqueues
and then waits for the result before its next enqueue sends nothing
meanwhile: each paced commit carried the one claim or the one finish it would
have carried at once, and every pickup and every result came a window late
(about 20 ms each on SQLite, against 2-3 ms unpaced). So a paced commit that
carried at most one claim or finish turns pacing off for the next 8 commits,
then 64, then 512 (each later pause checks whether grouping pays again), and
any commit that carries two or more turns it back on at once.

Several such clients at once fill every paced commit with two or more, yet
the pause costs more than it saves: each client has one task in flight, so
a longer pause brings no more work, only a longer round trip (4 clients:
40 ms and 95 round trips/s paced, against 12 ms and 146/s unpaced; 16
clients: 29-39 ms and 420-490/s, against 17 ms and 800/s). Work that
arrives on its own (a producer that does not wait for results) comes at
the same rate whatever the window, and grouping it saves commits. So the
adaptive window tests which case it is in: every so often, 8 paced commits
at the full window are followed by 8 at a quarter of it. When the short
ones moved claims and finishes at a clearly higher rate (30% more), the
pause is what holds the clients back, and pacing goes off for 64 commits,
then 512 and 4096 while the test keeps failing; a test that passes
keeps it on. A window the user set (``batch_window``) is not tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CommitPacer"]

_ADAPTIVE_FACTOR = 20.0
_ADAPTIVE_MIN = 0.0005
_ADAPTIVE_MAX = 0.02
_SMOOTHING = 0.2  # weight of the newest commit time in the moving average
# After a paced commit that grouped nothing, this many commits go unpaced (times this again after each
# further one in a row, at most _UNPACED_MAX): the pause that follows checks whether grouping pays again.
_UNPACED_GROWTH = 8
_UNPACED_MAX = 512
# The window test (adaptive window only): this many paced commits at the full window, then as many at
# _PROBE_SCALE of it; a rate of claims and finishes over _FASTER times the full window's means the pause
# holds the work back. Repeated after _PROBE_EVERY paced commits, and right after every unpaced run it
# caused (which grows up to _PROBED_UNPACED_MAX commits while the tests keep failing).
_PROBE_LENGTH = 8
_PROBE_SCALE = 0.25
_FASTER = 1.3
_PROBE_EVERY = 256
_PROBED_UNPACED_MAX = 4096


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
        self._delayed = False  # the last take() asked for a wait: the next commit observed is a paced one
        self._fruitless = 0  # paced commits in a row that carried at most one claim or finish
        self._unpaced = 0  # commits still let through without pacing (nothing to group lately)
        self._failed_tests = 0  # window tests in a row that found grouping not growing with the window
        self._since_test = _PROBE_EVERY  # paced commits since the last window test ended (test at once)
        self._test_step = -1  # -1: no test; 0.._PROBE_LENGTH-1 full window; then as many at the short one
        self._carried = [0, 0]  # claims and finishes the test's full-window and short-window commits carried
        self._spent = [0.0, 0.0]  # seconds each of those two parts took (from the commit before each)
        self._last_observed = self._last  # clock time of the last commit observed

    @property
    def window(self) -> float:
        """Seconds between paced commits (0: pacing is off)."""
        if self.fixed_window is not None:
            return self.fixed_window
        window = min(_ADAPTIVE_MAX, max(_ADAPTIVE_MIN, _ADAPTIVE_FACTOR * self._commit_time))
        return window * _PROBE_SCALE if self._test_step >= _PROBE_LENGTH else window

    def take(self) -> float:
        """Spend one commit now and return 0, or return the seconds to wait first (nothing spent)."""
        window = self.window
        if window <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) / window)
        self._last = now
        if self._unpaced > 0:  # spends what it can, so the bucket still tells how fast commits came
            self._unpaced -= 1
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        if self._tokens >= 1.0 - 1e-6:  # a timer may fire a hair early
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        self._delayed = True
        return (1.0 - self._tokens) * window

    def observe(self, seconds: float, carried: int | None = None) -> None:
        """Record one backend commit: how long it took (feeds the adaptive window) and what it carried.

        ``carried``: the claims and finishes in it (None: not known, pacing
        goes on as before). A paced one that carried at most one grouped
        nothing, and pacing pauses for a while (see the module's docstring).
        """
        if self._commit_time == 0.0:
            self._commit_time = seconds
        else:
            self._commit_time += (seconds - self._commit_time) * _SMOOTHING
        paced, self._delayed = self._delayed, False
        if carried is None:
            return
        now = self._clock()
        since, self._last_observed = now - self._last_observed, now
        if paced and self.fixed_window is None and self._window_test(carried, since):
            return
        if carried >= 2:  # work arrives faster than single commits: grouping pays
            self._fruitless = 0
            if not self._failed_tests:  # (an unpaced run a window test began is not cut short)
                self._unpaced = 0
        elif paced:
            self._fruitless += 1
            self._unpaced = min(_UNPACED_MAX, _UNPACED_GROWTH**self._fruitless)
            self._test_step = -1  # grouping nothing at the full window: no test needed

    def _window_test(self, carried: int, since: float) -> bool:
        """Count one paced commit in the window test (see the module's docstring); True: a short-window one."""
        if self._test_step < 0:
            self._since_test += 1
            if self._since_test < _PROBE_EVERY:
                return False
            self._test_step, self._carried, self._spent = 0, [0, 0], [0.0, 0.0]
        short = self._test_step >= _PROBE_LENGTH
        self._carried[short] += carried
        self._spent[short] += since
        self._test_step += 1
        if self._test_step == 2 * _PROBE_LENGTH:
            self._test_step, self._since_test = -1, 0
            full_rate = self._carried[0] / max(self._spent[0], 1e-9)
            short_rate = self._carried[1] / max(self._spent[1], 1e-9)
            if short_rate > _FASTER * full_rate:  # the pause holds work back more than it groups it
                self._failed_tests += 1
                self._unpaced = min(_PROBED_UNPACED_MAX, _UNPACED_GROWTH ** (self._failed_tests + 1))
                self._since_test = _PROBE_EVERY  # tested again as soon as pacing resumes
            else:
                self._failed_tests = 0
        return short
