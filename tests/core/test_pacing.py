"""CommitPacer: a token bucket over a caught-up worker's commits, driven by a clock we control."""

from __future__ import annotations

import pytest

from sitq_core.pacing import CommitPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_through_then_commits_are_spaced_by_the_window() -> None:
    clock = Clock()
    pacer = CommitPacer(0.01, burst=3, clock=clock)
    assert [pacer.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = pacer.take()
    assert wait == pytest.approx(0.01)
    clock.now += wait
    assert pacer.take() == 0.0
    clock.now += 0.004
    assert pacer.take() == pytest.approx(0.006)


def test_idle_time_refills_the_burst_but_never_beyond_it() -> None:
    clock = Clock()
    pacer = CommitPacer(0.01, burst=2, clock=clock)
    pacer.take()
    pacer.take()
    clock.now += 60.0
    assert [pacer.take() for _ in range(2)] == [0.0, 0.0]
    assert pacer.take() > 0


def test_window_zero_never_waits() -> None:
    pacer = CommitPacer(0.0, clock=Clock())
    assert all(pacer.take() == 0.0 for _ in range(100))


def test_adaptive_window_follows_commit_time_within_bounds() -> None:
    pacer = CommitPacer(None, clock=Clock())
    pacer.observe(0.0002)
    assert pacer.window == pytest.approx(0.004)
    for _ in range(50):
        pacer.observe(0.01)
    assert pacer.window == pytest.approx(0.02)  # capped
    fast = CommitPacer(None, clock=Clock())
    fast.observe(0.000001)
    assert fast.window == pytest.approx(0.0005)  # floor
